# The benchmark's no-op handler on the Ruby SDK: `Noop` 1.0.0 enumerates
# `data.jobs[PHASE]` jobs (one when absent), and does nothing with each, as
# the built-in `noop` handler does.
require "distribot"

class Noop
  include Distribot::Worker
  version "1.0.0"

  def enumerate(context)
    Array.new(Integer((context.data["jobs"] || {}).fetch(context.phase, 1)))
  end

  def process(context, _job)
    sleep_ms = context.data["sleep_ms"]
    sleep(sleep_ms / 1000.0) if sleep_ms
    nil
  end
end

Distribot.run
