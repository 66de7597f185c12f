"""GoogleSearcher: search the offline corpus for the flow's query.

enumerate  one job, {"query": data.query}
process    {"query": ..., "pages": [page id, ...]}, best match first
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
from protocol import fail, run  # noqa: E402

USAGE = "data.query is required: run with --data '{\"query\": \"rust\"}'"


def enumerate_jobs(request):
    query = (request.get("data") or {}).get("query")
    if not isinstance(query, str) or not query.strip():
        fail(USAGE)
    return [{"query": query}]


def process(request):
    query = (request.get("job") or {}).get("query")
    if not isinstance(query, str) or not query.strip():
        fail(f"job has no query: {request.get('job')!r}")

    # A page matches when every word of the query appears in its title or body
    # as a whole word, ignoring case ("rust" matches "Rust's", not "trust").
    words = re.findall(r"\w+", query.lower())
    hits = {}
    for page_id in corpus.page_ids():
        page = corpus.load(page_id)
        haystack = f"{page.title} {page.text}".lower()
        counts = [len(re.findall(rf"\b{re.escape(word)}\b", haystack)) for word in words]
        if all(counts):
            hits[page_id] = sum(counts)

    ranked = sorted(hits, key=lambda page_id: (-hits[page_id], page_id))
    return {"query": query, "pages": ranked}


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
