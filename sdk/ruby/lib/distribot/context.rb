# What a handler knows about the request it serves: the fields of the
# request, whether the worker still wants the answer, and a log tagged with
# the request. A context also collects what handler code prints while it
# runs, so each printed line reaches the worker's log as that request's.
module Distribot
  class Context
    # request is the request as the worker sent it, for fields a later
    # protocol version adds before this SDK names them.
    attr_reader :id, :request, :cancel_reason

    def initialize(id, request, log_io)
      @id = id
      @request = request
      @log_io = log_io
      @cancel_reason = nil
      @partial_lines = nil
    end

    def flow_id = @request["flow_id"]
    def workflow = @request["workflow"]
    def phase = @request["phase"]
    def handler = @request["handler"]
    def version = @request["version"]
    def data = @request["data"]

    # Long handlers poll this and stop early: their answer would be dropped.
    def cancelled?
      !@cancel_reason.nil?
    end
    alias canceled? cancelled?

    def cancel(reason)
      @cancel_reason = reason || "canceled"
    end

    def log(message)
      @log_io.write(Answer.log(@id, message.to_s))
      nil
    end

    # Text printed by handler code, which may come in pieces ("print 'a'",
    # then "puts 'b'"): a log line is written per complete line, per stream.
    def capture(stream, text)
      @partial_lines ||= {}
      pending = @partial_lines[stream]
      text = pending ? pending + Distribot.utf8(text) : Distribot.utf8(text)
      while (newline = text.index("\n"))
        log(text[0, newline])
        text = text[(newline + 1)..]
      end
      @partial_lines[stream] = text.empty? ? nil : text
    end

    # The request is over: an unterminated last line is still a line.
    def flush_captured_output
      return unless @partial_lines

      @partial_lines.each_value { |text| log(text) if text }
      @partial_lines = nil
    end
  end

  class EnumerateContext < Context
    def outputs = @request["outputs"]
    def error = @request["error"]
  end

  class ProcessContext < Context
    def job_id = @request["job_id"]
    def attempt = @request["attempt"]
    # The W3C trace context of this call while the worker traces, else nil.
    def traceparent = @request["traceparent"]
  end
end
