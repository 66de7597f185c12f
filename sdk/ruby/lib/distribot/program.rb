# The program side of the worker's line protocol: the hello, then requests
# read from one stream and answered on another, many at once. Handler calls
# run on a pool of threads so handlers that wait on I/O overlap; a single
# writer thread owns the answer stream and writes whatever answers are ready
# in one go, which keeps the channel's lines whole and the syscalls few.
require "json"

module Distribot
  class Program
    PROTOCOL_VERSION = 1
    DRAIN_TIMEOUT_SECONDS = 5
    # The worker's data comes from serde_json, which nests at most 128 deep;
    # the json gem would stop at 100.
    PARSE_OPTIONS = { max_nesting: 512 }.freeze

    def initialize(handlers:, in_flight:, input:, output:, log:)
      @handlers = handlers
      @max_threads = in_flight
      @input = input
      @output = output
      @log = log
      @requests = Queue.new
      @answers = Queue.new
      @threads = []
      @in_flight = {}
      @in_flight_lock = Mutex.new
      @drained = ConditionVariable.new
    end

    def hello_line
      handlers = @handlers.values.map { |handler| { "name" => handler.name, "version" => handler.version } }
      JSON.generate({ "op" => "hello", "protocol" => PROTOCOL_VERSION, "handlers" => handlers,
                      "program" => "distribot-ruby #{VERSION}" }) << "\n"
    end

    # Returns once the input has closed and the work it asked for is answered
    # (or DRAIN_TIMEOUT_SECONDS have passed, since the worker stops waiting
    # for the program soon after).
    def run
      @output.write(hello_line)
      writer = Thread.new { write_answers }
      writer.name = "distribot-writer"
      while (line = @input.gets)
        accept(line)
      end
      wait_for_outstanding_work
      @answers.close
      writer.join(DRAIN_TIMEOUT_SECONDS)
    end

    private

    def accept(line)
      request = JSON.parse(line, PARSE_OPTIONS)
      id = request["id"] if request.is_a?(Hash)
      return log_unusable_line(line, "it has no integer id") unless id.is_a?(Integer)

      case request["op"]
      when "process" then start(id, request, ProcessContext)
      when "enumerate" then start(id, request, EnumerateContext)
      when "cancel" then cancel(id, request["reason"])
      # A later protocol may add operations that name an outstanding request,
      # as cancel does: answering one would answer that request.
      else log_unusable_line(line, "its op #{request['op'].inspect} is unknown (this program speaks protocol #{PROTOCOL_VERSION})")
      end
    rescue JSON::ParserError => e
      log_unusable_line(line, "it is not JSON (#{e.message.lines.first&.strip})")
    rescue StandardError => e # nothing a request holds may stop the reader
      log_unusable_line(line, "#{e.class}: #{e.message}")
    end

    def start(id, request, context_class)
      unless @handlers.key?(request["handler"])
        return refuse(id, "this program hosts no handler #{request['handler'].inspect} (it hosts #{@handlers.keys.join(', ')})")
      end

      context = context_class.new(id, request, @log)
      registered = @in_flight_lock.synchronize do
        next false if @in_flight.key?(id)

        @in_flight[id] = context
      end
      # Answering would answer the first request too, under the same id.
      return @log.write("distribot-ruby: ignored request #{id}: a request with that id is outstanding\n") unless registered

      @requests.push(context)
      add_thread_if_all_busy
    end

    # Threads are started only when no idle one is waiting, so a program that
    # is never busy keeps one thread, and a busy one stops at in_flight.
    def add_thread_if_all_busy
      return if @requests.num_waiting.positive? || @threads.size >= @max_threads

      thread = Thread.new { serve_requests }
      thread.name = "distribot-handler"
      @threads << thread
    end

    def serve_requests
      while (context = @requests.pop)
        serve(context)
      end
    end

    def serve(context)
      unless context.cancelled?
        handler = @handlers[context.handler]
        line = CapturedOutput.serving(context) { handler.answer(context, context.request["job"]) }
        @answers.push(line) unless context.cancelled?
      end
    rescue Exception => e # the pool must outlive any request
      @log.write("distribot-ruby: request #{context.id}: #{e.class}: #{e.message}\n")
    ensure
      finished(context)
    end

    # A request canceled before a thread took it never runs; one that is
    # running sees context.cancelled? and its answer is not sent.
    def cancel(id, reason)
      context = @in_flight_lock.synchronize { @in_flight[id] }
      context&.cancel(reason)
    end

    def finished(context)
      @in_flight_lock.synchronize do
        @in_flight.delete(context.id)
        @drained.broadcast if @in_flight.empty?
      end
    end

    def wait_for_outstanding_work
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + DRAIN_TIMEOUT_SECONDS
      @in_flight_lock.synchronize do
        until @in_flight.empty?
          remaining = deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC)
          break if remaining <= 0

          @drained.wait(@in_flight_lock, remaining)
        end
      end
    end

    def write_answers
      batch = String.new(capacity: 1 << 16, encoding: Encoding::UTF_8)
      while (line = @answers.pop)
        batch << line
        batch << @answers.pop until @answers.empty?
        @output.write(batch)
        batch.clear
      end
    rescue IOError, SystemCallError => e
      # The worker stopped reading: it has given up on this copy and will
      # start another, so carrying on would only compute unread answers.
      @log.write("distribot-ruby: the answer stream is closed (#{e.class}: #{e.message}); exiting\n")
      exit!(1)
    end

    # Another copy of the program would refuse the same way: not retryable.
    def refuse(id, message)
      @answers.push(Answer.error(id, message, false))
    end

    def log_unusable_line(line, why)
      @log.write("distribot-ruby: ignored a request line because #{why}: #{Distribot.utf8(line[0, 200]).inspect}\n")
    end
  end
end
