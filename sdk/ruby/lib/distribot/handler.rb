# One hosted handler class, and the meaning of a request for it: calling the
# user's method and turning what it returns or raises into an answer line.
# The transport (threads, pipes) lives in Program and knows none of this.
module Distribot
  class Handler
    BACKTRACE_LINES = 10

    attr_reader :handler_class, :name, :version

    def initialize(handler_class)
      @handler_class = handler_class
      @name = handler_class.handler_name
      @version = handler_class.version
      @enumerate_method = handler_class.distribot_enumerate_method
      @process_method = handler_class.distribot_process_method
      # Anonymous classes are known by their handler name in messages.
      @label = handler_class.name || @name
      @enumerate_source = "#{@label}##{@enumerate_method}"
      @process_source = "#{@label}##{@process_method}"
      @instance = new_instance(handler_class)
      check_signature(@enumerate_method, 1, "(context)", "enumerate_with") if @enumerate_method
      check_signature(@process_method, 2, "(context, job)", "process_tasks_with") if @process_method
    end

    # Never raises: whatever the handler does, the request gets a line.
    def answer(context, job)
      if context.is_a?(ProcessContext)
        output = process(context, job)
        output.nil? ? Answer.empty(context.id) : Answer.output(context.id, output, @process_source)
      else
        Answer.jobs(context.id, enumerate(context), @enumerate_source)
      end
    rescue Retry => e
      Answer.error(context.id, e.message, true)
    rescue Fail => e
      Answer.error(context.id, e.message, false)
    rescue Exception => e # a handler bug (even a ScriptError or exit) fails its job, not the program
      message = "#{e.class}: #{e.message}"
      context.log(([message] + Array(e.backtrace).first(BACKTRACE_LINES)).join("\n\tfrom "))
      Answer.error(context.id, message, true)
    end

    private

    def process(context, job)
      return nil unless @process_method

      @instance.__send__(@process_method, context, job)
    end

    # The original gem's enumerate took a callback and called it with the
    # jobs; newer code returns them. A block is always given: if the method
    # called it, what it was given counts (several calls add up), otherwise
    # the return value does.
    def enumerate(context)
      return [nil] unless @enumerate_method

      given = nil
      returned = @instance.__send__(@enumerate_method, context) do |jobs|
        (given ||= []) << jobs
        nil
      end
      return job_list(returned) if given.nil?
      return job_list(given.first) if given.size == 1

      given.flat_map { |jobs| job_list(jobs) }
    end

    # A Hash is Enumerable too, but as a job list it is surely a mistake.
    def job_list(jobs)
      return jobs if jobs.is_a?(Array)
      return jobs.to_a if jobs.is_a?(Enumerable) && !jobs.is_a?(Hash)

      raise Fail, "#{@enumerate_source} gave #{jobs.class}, not an Array of jobs"
    end

    def new_instance(handler_class)
      handler_class.new
    rescue ArgumentError => e
      raise RegistrationError, "#{@label} could not be created with #{@label}.new, without arguments: #{e.message}"
    end

    def check_signature(method_name, arguments, wanted, declaration)
      unless @instance.respond_to?(method_name, true)
        raise RegistrationError, "#{@label} has no method #{method_name} (named by #{declaration})"
      end

      parameters = @instance.method(method_name).parameters
      required = parameters.count { |kind, _| kind == :req }
      optional = parameters.count { |kind, _| kind == :opt }
      splat = parameters.any? { |kind, _| kind == :rest }
      return if required <= arguments && (splat || required + optional >= arguments)

      raise RegistrationError,
            "#{@label}##{method_name} must take #{wanted}; it takes #{required} required argument(s)"
    end
  end
end
