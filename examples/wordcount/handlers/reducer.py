"""Reducer: fan in the counts of every file into one result.

enumerate  one job carrying every WordCounter output of the counting phase
process    {"files": n, "words": total, "top": [[word, count], ...]},
           also written to out/<flow_id>/result.json

The overall top list is merged from each file's own top list, so a word that
is common overall but never in any file's top 10 can be missed: good enough
for an example, and it keeps the messages between phases small.
"""

import json
import os
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
# words.py is here; protocol.py is shared with the search example.
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "handlers")]
from words import top  # noqa: E402
from protocol import flow_dir, outputs_of, run, write_file  # noqa: E402


def enumerate_jobs(request):
    return [{"counts": outputs_of(request, "counting", "WordCounter")}]


def process(request):
    counts = (request.get("job") or {}).get("counts") or []
    merged = Counter()
    for count in counts:
        for word, n in count.get("top", []):
            merged[word] += n
    result = {
        "files": len(counts),
        "words": sum(count.get("words", 0) for count in counts),
        "top": top(merged),
    }
    write_file(flow_dir(request, "result.json"), json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
