# Stands in for $stdout and $stderr while a program runs. Handler code keeps
# its puts, print and warn; what it prints becomes log lines of the request
# its thread is serving, and never reaches the protocol channel. Text printed
# outside any request (a background thread, a shutdown message) goes to the
# real stderr as it is, which the worker logs tagged with the program.
require "stringio"

module Distribot
  class CapturedOutput
    CURRENT_CONTEXT = :distribot_current_context

    # A thread variable, not a fiber-local: code that runs a request inside a
    # Fiber or an Enumerator still logs under the request.
    def self.current_context
      Thread.current.thread_variable_get(CURRENT_CONTEXT)
    end

    def self.serving(context)
      Thread.current.thread_variable_set(CURRENT_CONTEXT, context)
      yield
    ensure
      Thread.current.thread_variable_set(CURRENT_CONTEXT, nil)
      context.flush_captured_output
    end

    def initialize(stream, real_stderr)
      @stream = stream
      @real_stderr = real_stderr
    end

    def write(*objects)
      text = objects.join
      context = CapturedOutput.current_context
      if context
        context.capture(@stream, text)
      else
        @real_stderr.write(text)
      end
      text.bytesize
    end

    # IO's own formatting rules (arrays flattened, newlines added once) come
    # from StringIO rather than being rewritten here.
    def puts(*objects)
      write(format_with { |io| io.puts(*objects) })
      nil
    end

    def print(*objects)
      write(format_with { |io| io.print(*objects) })
      nil
    end

    def printf(format, *arguments)
      write(Kernel.format(format, *arguments))
      nil
    end

    def putc(character)
      write(format_with { |io| io.putc(character) })
      character
    end

    def <<(object)
      write(object)
      self
    end

    def flush = self
    def fsync = 0
    def sync = true
    def sync=(value); end
    def tty? = false
    alias isatty tty?
    def fileno = @real_stderr.fileno
    def close = nil
    def closed? = false
    def external_encoding = nil
    def internal_encoding = nil
    def set_encoding(*) = self
    def binmode = self

    private

    def format_with
      buffer = StringIO.new(+"")
      yield buffer
      buffer.string
    end
  end
end
