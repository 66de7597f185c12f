# The handler classes the protocol tests talk to, one per behaviour under
# test, all hosted by one program as a real handlers file would be.
require "distribot"

class Squarer
  include Distribot::Worker
  version "2.1.0"
  enumerate_with :enumerate
  process_tasks_with :process

  def enumerate(context) = (0...context.data["n"]).to_a
  def process(context, job) = job * job
end

# The original gem's style: jobs handed to a callback, return value unused.
class CallbackLister
  include Distribot::Worker
  version "1.0"
  enumerate_with :list_jobs
  process_tasks_with :handle

  def list_jobs(context, &callback)
    callback.call(%w[a b c].first(context.data["n"]))
    :ignored
  end

  def handle(_context, job) = nil
end

# No methods at all: one job, nil, that succeeds with no output.
module Storage
  class Placeholder
    include Distribot::Worker
  end
end

class Renamed
  include Distribot::Worker
  handler_name "Relabelled"
end

# Echoes the context so the tests can check every field.
class ContextEcho
  include Distribot::Worker

  def enumerate(context)
    [{ "flow_id" => context.flow_id, "workflow" => context.workflow, "phase" => context.phase,
       "handler" => context.handler, "version" => context.version, "data" => context.data,
       "outputs" => context.outputs, "error" => context.error }]
  end

  def process(context, _job)
    { "flow_id" => context.flow_id, "workflow" => context.workflow, "phase" => context.phase,
      "handler" => context.handler, "version" => context.version, "job_id" => context.job_id,
      "attempt" => context.attempt, "data" => context.data }
  end
end

# Holds each job longer the smaller it is, so answers come back reordered.
class Reverser
  include Distribot::Worker

  def process(_context, job)
    sleep((64 - job) * 0.003)
    job
  end
end

class Failer
  include Distribot::Worker

  def process(_context, job)
    case job
    when "retry" then raise Distribot::Retry, "the page server answered 503"
    when "fail" then raise Distribot::Fail, "the page does not exist"
    when "bug" then raise ArgumentError, "no such page"
    when "unimplemented" then raise NotImplementedError, "later"
    end
  end
end

class Unencodable
  include Distribot::Worker

  class Unserializable
    def to_json(*) = raise(TypeError, "no JSON for this")
  end

  def process(_context, job)
    case job
    when "nan" then { "ratio" => Float::NAN }
    when "bytes" then "caf\xC3".b.force_encoding(Encoding::UTF_8)
    when "object" then [Unserializable.new]
    end
  end
end

class BadEnumerate
  include Distribot::Worker

  def enumerate(context)
    context.data["n"]
  end
end

class Talker
  include Distribot::Worker

  def process(context, job)
    puts "hello from job #{job}"
    print "in "
    print "pieces\n"
    $stdout.write("unterminated")
    warn "a warning"
    $stderr.puts "to stderr"
    STDOUT.puts "to the STDOUT constant"
    system("echo from a child process")
    context.log("through the context")
    job
  end
end

class Waiter
  include Distribot::Worker

  def process(context, _job)
    context.log("started")
    sleep 0.005 until context.cancelled?
    context.log("stopped: #{context.cancel_reason}")
    "too late"
  end
end

Distribot.run
