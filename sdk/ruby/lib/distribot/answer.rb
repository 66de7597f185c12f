# The lines a program writes: answers on stdout, logs on stderr. They are
# built as strings around JSON.generate, which is what keeps the hot path
# cheap, and every builder turns an unencodable value into an error answer
# instead of raising, so no handler output can break the channel.
require "json"

module Distribot
  module Answer
    module_function

    def empty(id)
      "{\"id\":#{id}}\n"
    end

    def output(id, output, source)
      "{\"id\":#{id},\"output\":#{JSON.generate(output)}}\n"
    rescue StandardError, SystemStackError => e
      error(id, "the output of #{source} cannot be encoded as JSON: #{e.class}: #{e.message}", false)
    end

    def jobs(id, jobs, source)
      "{\"id\":#{id},\"jobs\":#{JSON.generate(jobs)}}\n"
    rescue StandardError, SystemStackError => e
      error(id, "the jobs of #{source} cannot be encoded as JSON: #{e.class}: #{e.message}", false)
    end

    def error(id, message, retryable)
      "{\"id\":#{id},\"error\":{\"message\":#{JSON.generate(Distribot.utf8(message))},\"retryable\":#{retryable}}}\n"
    end

    def log(id, message)
      "{\"id\":#{id},\"log\":#{JSON.generate(Distribot.utf8(message))}}\n"
    end
  end
end
