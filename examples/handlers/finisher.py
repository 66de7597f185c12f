"""JobFinisher: write a summary of a finished search.

enumerate  one job carrying the query and every PageDownloader output
           (process only sees its job, so enumerate hands it what it needs)
process    writes out/<flow_id>/summary.json, outputs {"summary": path}
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from protocol import flow_dir, outputs_of, run, write_file  # noqa: E402


def enumerate_jobs(request):
    return [{
        "query": (request.get("data") or {}).get("query"),
        "pages": outputs_of(request, "fetching-pages", "PageDownloader"),
    }]


def process(request):
    job = request.get("job") or {}
    pages = job.get("pages") or []
    summary = {
        "flow_id": request.get("flow_id"),
        "workflow": request.get("workflow"),
        "query": job.get("query"),
        "pages": len(pages),
        "bytes": sum(page.get("bytes", 0) for page in pages),
        "titles": [page.get("title") for page in pages],
    }
    path = flow_dir(request, "summary.json")
    write_file(path, json.dumps(summary, indent=2) + "\n")
    return {"summary": path}


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
