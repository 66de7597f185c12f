"""PageDownloader: fetch every page the search found, one job per page.

enumerate  one job {"page": id} per page id in the GoogleSearcher outputs
process    copies corpus/pages/<id>.html to out/<flow_id>/pages/<id>.html
           and outputs {"page": id, "title": ..., "bytes": n}
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402
from protocol import fail, flow_dir, outputs_of, run, write_file  # noqa: E402


def enumerate_jobs(request):
    page_ids = []
    for result in outputs_of(request, "searching", "GoogleSearcher"):
        pages = result.get("pages", []) if isinstance(result, dict) else []
        for page_id in pages:
            if page_id not in page_ids:  # the same page twice is fetched once
                page_ids.append(page_id)
    return [{"page": page_id} for page_id in page_ids]


def process(request):
    page_id = (request.get("job") or {}).get("page")
    page = corpus.load(page_id)
    if page is None:
        fail(f"page {page_id!r} is not in the corpus ({corpus.PAGES_DIR}/)")

    # Same page, same file: running this job twice changes nothing.
    content = page.html.encode("utf-8")
    write_file(flow_dir(request, "pages", f"{page.id}.html"), content)
    return {"page": page.id, "title": page.title, "bytes": len(content)}


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
