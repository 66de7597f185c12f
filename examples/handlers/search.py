"""GoogleSearcher: search the offline corpus for the flow's query.

enumerate  one job, {"query": data.query}
process    {"query": ..., "pages": [page id, ...]}, best match first
"""

import os
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

    try:
        ranked = corpus.search(query)
    except corpus.CorpusMissing as err:
        fail(str(err))
    return {"query": query, "pages": ranked}


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
