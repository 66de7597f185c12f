"""WordCounter: fan out over the files of a folder, one job per file.

enumerate  one job {"file": path} per file of data.dir (default: texts/)
process    {"file": path, "words": n, "top": [[word, count], ...]}
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# words.py is here; protocol.py is shared with the search example.
sys.path[:0] = [HERE, os.path.join(HERE, "..", "..", "handlers")]
from words import count_words, top  # noqa: E402
from protocol import fail, run  # noqa: E402

DEFAULT_DIR = "texts"


def enumerate_jobs(request):
    folder = (request.get("data") or {}).get("dir", DEFAULT_DIR)
    if not isinstance(folder, str) or not os.path.isdir(folder):
        fail(f"data.dir: {folder!r} is not a folder "
             f"(a relative path starts at the folder of handlers.toml: {os.getcwd()})")
    names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    paths = [os.path.join(folder, name) for name in names]
    return [{"file": path} for path in paths if os.path.isfile(path)]


def process(request):
    path = (request.get("job") or {}).get("file")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, TypeError, UnicodeDecodeError) as err:
        fail(f"cannot read {path!r}: {err}")
    total, counts = count_words(text)
    return {"file": path, "words": total, "top": top(counts)}


if __name__ == "__main__":
    run(enumerate=enumerate_jobs, process=process)
