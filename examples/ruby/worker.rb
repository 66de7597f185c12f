# The original distribot gem's search worker, ported to a long-lived handler
# program: the four handlers of search.json, written the way the gem wrote
# them (include Distribot::Worker, enumerate_with, process_tasks_with, jobs
# handed to a callback). The distribot worker starts this program once (see
# handlers.toml) and sends it every request; the SDK runs them on threads.
#
# It runs in this folder: the offline corpus it searches is ../corpus/pages,
# shared with the Python example, and what it writes lands in out/.
require "distribot"
require "cgi"
require "fileutils"
require "json"

# The offline "web": a folder of HTML pages, and a search engine over it.
module Corpus
  PAGES = File.join("..", "corpus", "pages")
  Page = Struct.new(:id, :html, :title, :text)

  def self.ids
    Dir.children(PAGES).grep(/\.html\z/).map { |name| name.delete_suffix(".html") }.sort
  end

  # The page with this id, or nil when the corpus has none.
  def self.load(id)
    return nil unless id.is_a?(String) && id.match?(/\A[a-z0-9][a-z0-9-]*\z/)

    path = File.join(PAGES, "#{id}.html")
    return nil unless File.file?(path)

    html = File.read(path, encoding: "UTF-8")
    title = html[%r{<title>(.*?)</title>}m, 1].to_s
    body = html.sub(%r{<title>.*?</title>}m, " ").gsub(%r{<(script|style)\b.*?</\1>}m, " ").gsub(/<[^>]*>/, " ")
    Page.new(id, html, plain(title), plain(body))
  end

  # Pages with every word of the query as a whole word, ignoring case; the
  # pages that mention them most come first, ties by id.
  def self.search(query)
    words = query.downcase.scan(/\w+/)
    hits = ids.filter_map do |id|
      haystack = load(id).then { |page| "#{page.title} #{page.text}".downcase }
      counts = words.map { |word| haystack.scan(/\b#{Regexp.escape(word)}\b/).size }
      [id, counts.sum] if counts.all?(&:positive?)
    end
    hits.sort_by { |id, count| [-count, id] }.map(&:first)
  end

  def self.plain(html) = CGI.unescapeHTML(html).split.join(" ")
end

# out/<flow_id>/..., written whole: a temporary file renamed over the target,
# so a job that runs twice (jobs run at least once) leaves the same file.
module Out
  def self.write(flow_id, *parts, content)
    unless flow_id.to_s.match?(/\A[A-Za-z0-9._-]+\z/) && ![".", ".."].include?(flow_id)
      raise Distribot::Fail, "flow_id #{flow_id.inspect} cannot be used as a folder name"
    end

    path = File.join("out", flow_id, *parts)
    FileUtils.mkdir_p(File.dirname(path))
    temporary = "#{path}.#{Process.pid}.#{Thread.current.object_id}.tmp"
    File.write(temporary, content)
    File.rename(temporary, path)
    path
  end
end

class GoogleSearcher
  include Distribot::Worker
  version "1.0.0"
  enumerate_with :enumerate
  process_tasks_with :process

  def enumerate(context, &callback)
    query = (context.data || {})["query"]
    # Another attempt would find the same data: fail the phase at once.
    unless query.is_a?(String) && !query.strip.empty?
      raise Distribot::Fail, %(data.query is required: run with --data '{"query": "rust"}')
    end

    callback.call([{ "query" => query }])
  end

  def process(_context, job)
    { "query" => job["query"], "pages" => Corpus.search(job["query"]) }
  end
end

class PageDownloader
  include Distribot::Worker
  version "1.2.0"
  enumerate_with :enumerate
  process_tasks_with :process

  # One job per page found; a page found twice is fetched once.
  def enumerate(context, &callback)
    results = context.outputs.dig("searching", "GoogleSearcher") || []
    callback.call(results.flat_map { |result| result["pages"] }.uniq.map { |id| { "page" => id } })
  end

  def process(context, job)
    page = Corpus.load(job["page"])
    raise Distribot::Fail, "page #{job["page"].inspect} is not in the corpus" unless page

    Out.write(context.flow_id, "pages", "#{page.id}.html", page.html)
    { "page" => page.id, "title" => page.title, "bytes" => page.html.bytesize }
  end
end

class JobFinisher
  include Distribot::Worker
  version "1.0.0"
  enumerate_with :enumerate
  process_tasks_with :process

  # process only sees its job, so the job carries what it needs.
  def enumerate(context, &callback)
    pages = context.outputs.dig("fetching-pages", "PageDownloader") || []
    callback.call([{ "query" => (context.data || {})["query"], "pages" => pages }])
  end

  def process(context, job)
    pages = job["pages"]
    summary = {
      "flow_id" => context.flow_id, "workflow" => context.workflow, "query" => job["query"],
      "pages" => pages.size, "bytes" => pages.sum { |page| page["bytes"] },
      "titles" => pages.map { |page| page["title"] }
    }
    { "summary" => Out.write(context.flow_id, "summary.json", "#{JSON.pretty_generate(summary)}\n") }
  end
end

# "Sends" an email about the error that brought the flow here, by appending
# it to out/outbox.txt, once per job however often the job runs.
class ErrorEmailer
  include Distribot::Worker
  version "1.0.0"
  enumerate_with :enumerate
  process_tasks_with :process

  OUTBOX = File.join("out", "outbox.txt")

  def initialize
    @outbox = Mutex.new # requests run on several threads
  end

  def enumerate(context, &callback)
    callback.call([{ "error" => context.error }])
  end

  def process(context, job)
    error = job["error"] || {}
    recipient = (context.data || {})["notify"] || "ops@example.com"
    message_id = "<#{context.flow_id}.#{context.job_id}@distribot.example>"
    email = <<~EMAIL
      Message-ID: #{message_id}
      To: #{recipient}
      Subject: [distribot] #{context.workflow} flow #{context.flow_id} failed in phase #{error["phase"]}

      #{error["handler"]} failed after #{error["attempts"]} attempt(s): #{error["message"]}
      #{"-" * 72}
    EMAIL
    @outbox.synchronize do
      FileUtils.mkdir_p(File.dirname(OUTBOX))
      sent = File.exist?(OUTBOX) && File.read(OUTBOX).include?("Message-ID: #{message_id}\n")
      File.write(OUTBOX, email, mode: "a") unless sent
    end
    { "sent_to" => recipient }
  end
end

Distribot.run
