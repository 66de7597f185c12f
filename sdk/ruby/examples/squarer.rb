# The smallest useful program: one handler that enumerates the numbers below
# data["n"] and squares each. Run it from a handlers.toml:
#
#   [[programs]]
#   command = ["ruby", "-I", "../sdk/ruby/lib", "squarer.rb"]
#
# or by hand, typing requests (one JSON object per line) on stdin.
require "distribot"

class Squarer
  include Distribot::Worker
  version "2.1.0"
  enumerate_with :enumerate
  process_tasks_with :process

  def enumerate(context)
    (0...context.data.fetch("n")).to_a
  end

  def process(context, job)
    context.log("squaring #{job}") if context.attempt > 1
    job * job
  end
end

Distribot.run
