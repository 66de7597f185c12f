# Measures the SDK's own cost per job: a program whose process handler does
# nothing, fed process requests as fast as it answers them, with a fixed
# number outstanding as a worker would keep. Prints jobs/s and the program's
# CPU time per job (user + system, read once the program has exited).
#
#   ruby sdk/ruby/bench/bench_noop.rb [JOBS] [OUTSTANDING]
require "rbconfig"

jobs = Integer(ARGV[0] || 100_000)
outstanding = Integer(ARGV[1] || 64)
lib = File.expand_path("../lib", __dir__)

program = <<~RUBY
  require "distribot"
  class Noop
    include Distribot::Worker
    def process(context, job) = nil
  end
  Distribot.run
RUBY

request_template = '{"id":%d,"op":"process","handler":"Noop","version":"0.0.0",' \
                   '"flow_id":"01a2188b-4230-708d-903b-a4000cc3dbf2","workflow":"bench","phase":"noop",' \
                   '"job_id":"01a2188b-4230-708d-903b-a4000cc3dbf2.1.0.%d","attempt":1,"job":%d,"data":{"n":1}}' + "\n"
requests = Array.new(jobs) { |i| format(request_template, i + 1, i, i) }

to_program, program_stdin = IO.pipe
program_stdout, from_program = IO.pipe
pid = Process.spawn({ "DISTRIBOT_IN_FLIGHT" => outstanding.to_s }, RbConfig.ruby, "-I", lib, "-e", program,
                    in: to_program, out: from_program)
to_program.close
from_program.close
program_stdin.sync = true

hello = program_stdout.gets
raise "no hello: #{hello.inspect}" unless hello&.include?('"op":"hello"')

started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
sent = [outstanding, jobs].min
program_stdin.write(requests[0, sent].join)
answered = 0
pending = +""
# Each answer read frees a slot; the slots freed by one read are refilled
# with one write, as a worker's connection would.
while answered < jobs
  pending << program_stdout.readpartial(1 << 16)
  complete = pending.count("\n")
  next if complete.zero?

  cut = pending.rindex("\n") + 1
  pending = pending[cut..]
  answered += complete
  refill = [complete, jobs - sent].min
  next unless refill.positive?

  program_stdin.write(requests[sent, refill].join)
  sent += refill
end
elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started

program_stdin.close
raise "unexpected output after the last answer" unless program_stdout.read.empty?

_, status = Process.wait2(pid)
raise "program exited with #{status.inspect}" unless status.success?

times = Process.times
cpu = times.cutime + times.cstime
printf("%d jobs, %d outstanding: %.0f jobs/s; program CPU %.2f s (%.1f us/job, including its start)\n",
       jobs, outstanding, jobs / elapsed, cpu, cpu * 1e6 / jobs)
