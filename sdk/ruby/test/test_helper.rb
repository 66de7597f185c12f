# Runs handler programs as the worker does: a real child process, requests
# on its stdin, answers read from its stdout and logs from its stderr. Every
# read waits with a deadline, so a broken program fails a test instead of
# hanging it, and no test sleeps to let something happen.
require "minitest/autorun"
require "json"
require "rbconfig"
require "distribot"

module ProgramTesting
  LIB = File.expand_path("../lib", __dir__)
  PROGRAMS = File.expand_path("programs", __dir__)
  TIMEOUT_SECONDS = 10

  # Splits a pipe into lines, waiting at most until a deadline for each.
  class LineReader
    def initialize(io)
      @io = io
      @buffer = +""
      @eof = false
    end

    def next_line(timeout: TIMEOUT_SECONDS)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      until (newline = @buffer.index("\n"))
        return nil if @eof && @buffer.empty?
        raise "the program ended a line without a newline: #{@buffer.inspect}" if @eof

        fill(deadline)
      end
      @buffer.slice!(0, newline + 1).chomp
    end

    # Everything up to end of file, for checking what a program wrote last.
    def rest(timeout: TIMEOUT_SECONDS)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
      fill(deadline) until @eof
      @buffer.slice!(0..)
    end

    private

    def fill(deadline)
      remaining = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
      raise "timed out waiting for the program" if remaining <= 0 || IO.select([@io], nil, nil, remaining).nil?

      @buffer << @io.read_nonblock(1 << 16)
    rescue IO::WaitReadable
      nil
    rescue EOFError
      @eof = true
    end
  end

  class ProgramProcess
    attr_reader :hello, :stdout, :stderr

    def initialize(program, env: {})
      to_program, @stdin = IO.pipe
      stdout, from_program = IO.pipe
      stderr, errors_from_program = IO.pipe
      @pid = Process.spawn(env, RbConfig.ruby, "-I", LIB, File.join(PROGRAMS, program),
                           in: to_program, out: from_program, err: errors_from_program)
      [to_program, from_program, errors_from_program].each(&:close)
      @stdin.sync = true
      @stdout = LineReader.new(stdout)
      @stderr = LineReader.new(stderr)
      @status = nil
    end

    def start
      @hello = JSON.parse(@stdout.next_line || raise("no hello; stderr: #{@stderr.rest}"))
      self
    end

    def send_request(request)
      @stdin.write(request.is_a?(String) ? "#{request}\n" : "#{JSON.generate(request)}\n")
    end

    def next_answer
      line = @stdout.next_line
      line && JSON.parse(line)
    end

    # The answers to the given ids, whatever order they come in.
    def answers_to(ids)
      answers = {}
      ids.size.times do
        answer = next_answer || raise("stdout closed with #{ids.size - answers.size} answers missing")
        raise "answered twice: #{answer}" if answers.key?(answer["id"])

        answers[answer["id"]] = answer
      end
      answers
    end

    # Skips the stderr lines that do not match; returns the first that does.
    def log_line_matching(pattern)
      loop do
        line = @stderr.next_line || raise("stderr closed before a line matching #{pattern.inspect}")
        return line if line.match?(pattern)
      end
    end

    def close_stdin
      @stdin.close unless @stdin.closed?
    end

    def wait_for_exit(timeout: TIMEOUT_SECONDS)
      waiter = Thread.new { Process.wait2(@pid).last }
      raise "the program did not exit" unless waiter.join(timeout)

      @status = waiter.value
    end

    def stop
      close_stdin
      return if @status

      Process.kill(:KILL, @pid)
      Process.wait(@pid)
    rescue Errno::ESRCH, Errno::ECHILD
      nil
    end
  end

  def start_program(program = "handlers.rb", env: {})
    process = ProgramProcess.new(program, env: env).start
    (@programs ||= []) << process
    process
  end

  def teardown
    (@programs || []).each(&:stop)
    super
  end

  def process_request(id, handler, job, extra = {})
    { "id" => id, "op" => "process", "handler" => handler, "version" => "1.0.0", "flow_id" => "f1",
      "workflow" => "tests", "phase" => "testing", "job_id" => "f1.1.0.#{id}", "attempt" => 1,
      "job" => job, "data" => { "n" => 3 } }.merge(extra)
  end

  def enumerate_request(id, handler, extra = {})
    { "id" => id, "op" => "enumerate", "handler" => handler, "version" => "1.0.0", "flow_id" => "f1",
      "workflow" => "tests", "phase" => "testing", "data" => { "n" => 3 }, "outputs" => {},
      "error" => nil }.merge(extra)
  end
end
