"""The command protocol of distribot, for handlers written in Python.

distribot runs a handler's command with one JSON object on stdin:

  enumerate  {"flow_id", "workflow", "phase", "handler", "data", "outputs", "error"}
             -> prints a JSON array of jobs (a job is any JSON value)
  process    {"flow_id", "workflow", "phase", "handler", "job_id", "attempt", "job", "data"}
             -> prints nothing, or one JSON value: the job's output

A non-zero exit status is a failure; the tail of stderr goes into the error
message. The working directory is the folder of the handlers file, so relative
paths below (like "out/") land beside it.

A handler script calls `run(enumerate=..., process=...)` with two functions that
take the request (a dict) and return what to print.
"""

import json
import os
import re
import sys

OUT_DIR = "out"


def fail(message):
    """Stop with exit status 1; distribot puts `message` into the job's error."""
    print(message, file=sys.stderr)
    sys.exit(1)


def read_request():
    """The JSON object on stdin."""
    raw = sys.stdin.buffer.read()
    try:
        request = json.loads(raw)
    except ValueError as err:
        fail(f"stdin is not valid JSON: {err}")
    if not isinstance(request, dict):
        fail("stdin must hold one JSON object")
    return request


def run(enumerate, process=None):
    """Dispatch on argv[1] ("enumerate" or "process") and print the result as JSON."""
    commands = {"enumerate": enumerate, "process": process}
    command = sys.argv[1] if len(sys.argv) == 2 else None
    if commands.get(command) is None:
        known = "|".join(name for name, fn in commands.items() if fn)
        fail(f"usage: {sys.argv[0]} {known}  (request as JSON on stdin)")

    result = commands[command](read_request())

    if command == "enumerate" and not isinstance(result, list):
        fail(f"internal error: enumerate returned {type(result).__name__}, not a list of jobs")
    if result is not None:  # a process that returns None prints nothing: no output
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")


def outputs_of(request, phase, handler):
    """The outputs of `handler` in an earlier `phase`, in enumeration order."""
    outputs = request.get("outputs") or {}
    return (outputs.get(phase) or {}).get(handler) or []


def flow_dir(request, *parts):
    """out/<flow_id>/<parts...>, with the flow id checked to be a plain name."""
    flow_id = str(request.get("flow_id", ""))
    if not re.fullmatch(r"[A-Za-z0-9._-]+", flow_id) or flow_id in (".", ".."):
        fail(f"flow_id {flow_id!r} cannot be used as a folder name")
    return os.path.join(OUT_DIR, flow_id, *parts)


def write_file(path, content):
    """Write `content` (str or bytes) to `path` all at once.

    Jobs run at least once, so the same file may be written twice: writing to a
    temporary file and renaming it over the target means a reader never sees half
    a file, and a second run leaves the same result as the first.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as file:
        file.write(content)
    os.replace(temporary, path)
