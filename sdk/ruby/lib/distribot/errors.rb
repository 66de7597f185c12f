# Handlers say whether a failed attempt is worth repeating by the exception
# they raise; the worker decides from that whether to spend another attempt.
module Distribot
  # Base of the exceptions a handler raises on purpose.
  class JobError < StandardError; end

  # The attempt failed, but another one may succeed (a server answered 503).
  class Retry < JobError; end

  # No attempt can succeed (the input is wrong): the phase fails at once.
  class Fail < JobError; end

  # A handler class that cannot be hosted as written: raised before the
  # hello, so the worker reports it instead of routing jobs to it.
  class RegistrationError < StandardError; end
end
