# Reporter, the Ruby part of the polyglot example (weather.json): one job
# that carries every Converter output, reduced to one report: the stations
# from warmest to coldest, and how far apart the extremes were.
require "distribot"

class Reporter
  include Distribot::Worker
  version "1.0.0"
  enumerate_with :enumerate
  process_tasks_with :process

  # One job for the whole phase, in the original gem's callback style.
  def enumerate(context, &callback)
    callback.call([{ "stations" => context.outputs.dig("converting", "Converter") || [] }])
  end

  def process(_context, job)
    stations = job["stations"]
    raise Distribot::Fail, "no station to report on: readings/ has no CSV file" if stations.empty?

    ranked = stations.sort_by { |station| [-station["mean_c"], station["station"]] }
    highest = stations.map { |station| station["max_c"] }.max
    lowest = stations.map { |station| station["min_c"] }.min
    {
      "stations" => stations.size,
      "days" => stations.sum { |station| station["days"] },
      "warmest" => ranked.first["station"],
      "coldest" => ranked.last["station"],
      "ranking" => ranked.map { |station| station.slice("station", "mean_c") },
      "spread_c" => (highest - lowest).round(1)
    }
  end
end

Distribot.run
