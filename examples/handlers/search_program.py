"""The handlers of the search example (search.json), as one long-lived program.

The worker starts this program once (see handlers.toml) and sends it every
enumerate and process request of the four handlers below, many at a time:

  GoogleSearcher  1.0.0  searching        one job: search the offline corpus for data.query
  PageDownloader  1.2.0  fetching-pages   one job per page found: copy it to out/<flow_id>/pages/
  JobFinisher     1.0.0  finished         one job: write out/<flow_id>/summary.json
  ErrorEmailer    1.0.0  error            one job: append an email about the error to out/outbox.txt

The working directory is the folder of handlers.toml, so "corpus/" and "out/"
are beside it. Jobs run at least once and several run at the same time on
threads, so every side effect can be repeated and shared files are guarded.

A failure raises distribot.Retry, as a non-zero exit status of the one-shot
commands (commands.toml, the same handlers) does: the workflow's retry
policy decides how many attempts it gets.
"""

import json
import os
import re
import tempfile
import threading

import distribot

import corpus

OUT_DIR = "out"
OUTBOX = os.path.join(OUT_DIR, "outbox.txt")
DEFAULT_RECIPIENT = "ops@example.com"
USAGE = "data.query is required: run with --data '{\"query\": \"rust\"}'"


@distribot.handler("GoogleSearcher", version="1.0.0")
class GoogleSearcher:
    def enumerate(self, ctx):
        query = (ctx.data or {}).get("query")
        if not isinstance(query, str) or not query.strip():
            raise distribot.Retry(USAGE)
        return [{"query": query}]

    def process(self, ctx, job):
        query = (job or {}).get("query")
        if not isinstance(query, str) or not query.strip():
            raise distribot.Retry(f"job has no query: {job!r}")
        try:
            return {"query": query, "pages": corpus.search(query)}
        except corpus.CorpusMissing as err:
            raise distribot.Retry(str(err))


@distribot.handler("PageDownloader", version="1.2.0")
class PageDownloader:
    def enumerate(self, ctx):
        page_ids = []
        for result in outputs_of(ctx, "searching", "GoogleSearcher"):
            for page_id in result.get("pages", []) if isinstance(result, dict) else []:
                if page_id not in page_ids:  # the same page twice is fetched once
                    page_ids.append(page_id)
        return [{"page": page_id} for page_id in page_ids]

    def process(self, ctx, job):
        page_id = (job or {}).get("page")
        page = corpus.load(page_id)
        if page is None:
            raise distribot.Retry(f"page {page_id!r} is not in the corpus ({corpus.PAGES_DIR}/)")
        # Same page, same file: running this job twice changes nothing.
        content = page.html.encode("utf-8")
        write_file(flow_dir(ctx, "pages", f"{page.id}.html"), content)
        return {"page": page.id, "title": page.title, "bytes": len(content)}


@distribot.handler("JobFinisher", version="1.0.0")
class JobFinisher:
    # process only sees its job, so enumerate hands it what it needs.
    def enumerate(self, ctx):
        return [{
            "query": (ctx.data or {}).get("query"),
            "pages": outputs_of(ctx, "fetching-pages", "PageDownloader"),
        }]

    def process(self, ctx, job):
        pages = (job or {}).get("pages") or []
        summary = {
            "flow_id": ctx.flow_id,
            "workflow": ctx.workflow,
            "query": (job or {}).get("query"),
            "pages": len(pages),
            "bytes": sum(page.get("bytes", 0) for page in pages),
            "titles": [page.get("title") for page in pages],
        }
        path = flow_dir(ctx, "summary.json")
        write_file(path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
        return {"summary": path}


@distribot.handler("ErrorEmailer", version="1.0.0")
class ErrorEmailer:
    """Nothing is really sent: out/outbox.txt stands in for a mail server.
    The address is data.notify if the flow has one, else ops@example.com."""

    def __init__(self):
        # Reading the outbox and appending to it is one step for the threads
        # of this program.
        self.outbox_lock = threading.Lock()

    def enumerate(self, ctx):
        return [{"error": ctx.error}]

    def process(self, ctx, job):
        error = (job or {}).get("error") or {}
        recipient = (ctx.data or {}).get("notify") or DEFAULT_RECIPIENT
        job_id = error.get("job_id", "?")
        if job_id is None:  # the error came from enumerate, not from a job
            job_id = "(none: enumerate failed)"
        # Named after this very job: a redelivered job finds its message
        # already in the outbox and does not send the same email twice.
        message_id = f"<{ctx.flow_id}.{ctx.job_id}@distribot.example>"
        email = "\n".join([
            f"Message-ID: {message_id}",
            f"To: {recipient}",
            f"Subject: [distribot] {ctx.workflow} flow {ctx.flow_id} failed in phase {error.get('phase', '?')}",
            "",
            f"The {ctx.workflow} flow {ctx.flow_id} stopped with an error.",
            "",
            f"  phase:    {error.get('phase', '?')}",
            f"  handler:  {error.get('handler', '?')}",
            f"  job id:   {job_id}",
            f"  attempts: {error.get('attempts', '?')}",
            "  message:",
            *(f"    {line}" for line in str(error.get("message", "(no message)")).splitlines()),
            "",
            "-" * 72,
            "",
        ])

        os.makedirs(OUT_DIR, exist_ok=True)
        with self.outbox_lock:
            try:
                with open(OUTBOX, encoding="utf-8") as outbox:
                    already_sent = f"Message-ID: {message_id}\n" in outbox.read()
            except FileNotFoundError:
                already_sent = False
            if not already_sent:
                with open(OUTBOX, "a", encoding="utf-8") as outbox:
                    outbox.write(email)
        return {"sent_to": recipient}


def outputs_of(ctx, phase, handler):
    """The outputs of `handler` in an earlier `phase`, in enumeration order."""
    return ((ctx.outputs or {}).get(phase) or {}).get(handler) or []


def flow_dir(ctx, *parts):
    """out/<flow_id>/<parts...>, with the flow id checked to be a plain name."""
    flow_id = str(ctx.flow_id or "")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", flow_id) or flow_id in (".", ".."):
        raise distribot.Fail(f"flow_id {flow_id!r} cannot be used as a folder name")
    return os.path.join(OUT_DIR, flow_id, *parts)


def write_file(path, content):
    """Write `content` (bytes) to `path` all at once: written to a temporary
    file of its own and renamed over the target, so a reader never sees half a
    file, and two runs of one job, even at the same time, leave one result."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as file:
        file.write(content)
    os.replace(file.name, path)


if __name__ == "__main__":
    distribot.run()
