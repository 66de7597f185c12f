# Entry point of the Ruby SDK: handler classes written for the original
# distribot gem run, with little change, inside a program that a distribot
# worker starts once and talks to over stdin and stdout. The worker owns the
# queues and the broker configuration; this program only runs handler code.
require "json"
require_relative "distribot/version"
require_relative "distribot/errors"
require_relative "distribot/answer"
require_relative "distribot/context"
require_relative "distribot/captured_output"
require_relative "distribot/handler"
require_relative "distribot/registry"
require_relative "distribot/worker"
require_relative "distribot/program"

module Distribot
  DEFAULT_IN_FLIGHT = 64

  def self.registry
    @registry ||= Registry.new
  end

  # Hosts every class that included Distribot::Worker until the worker
  # closes stdin, then exits 0. Does not return.
  def self.run
    handlers = registry.resolve
    in_flight = in_flight_from(ENV["DISTRIBOT_IN_FLIGHT"])
    input, output = claim_standard_streams
    Program.new(handlers: handlers, in_flight: in_flight, input: input, output: output, log: STDERR).run
    exit 0
  end

  def self.in_flight_from(setting)
    return DEFAULT_IN_FLIGHT if setting.nil? || setting.strip.empty?
    return Integer(setting.strip, 10) if setting.strip.match?(/\A[1-9]\d*\z/)

    raise ArgumentError, "DISTRIBOT_IN_FLIGHT must be a positive integer, not #{setting.inspect}"
  end

  # The protocol keeps private copies of fds 0 and 1; the standard streams
  # are then pointed elsewhere, so neither handler code nor the commands it
  # spawns can read requests meant for the program or write into its answers.
  def self.claim_standard_streams
    STDOUT.flush
    output = STDOUT.dup
    output.binmode
    output.sync = true
    STDOUT.reopen(STDERR)
    input = STDIN.dup
    input.binmode
    STDIN.reopen(File::NULL)
    $stdout = CapturedOutput.new(:stdout, STDERR)
    $stderr = CapturedOutput.new(:stderr, STDERR)
    [input, output]
  end

  # Log and error text must be valid UTF-8 to be JSON; bytes that are not
  # become U+FFFD rather than failing the line that carries them.
  def self.utf8(text)
    text = text.to_s
    case text.encoding
    when Encoding::UTF_8 then text.valid_encoding? ? text : text.scrub
    # Bytes read with no declared encoding (LANG unset gives US-ASCII).
    when Encoding::BINARY, Encoding::US_ASCII then text.dup.force_encoding(Encoding::UTF_8).scrub
    else text.encode(Encoding::UTF_8, invalid: :replace, undef: :replace)
    end
  end
end
