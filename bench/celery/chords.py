"""Starts CHORDS chords of TASKS no-op tasks at once, waits for every
callback, and prints one JSON line: tasks, seconds, tasks per second."""

import json
import os
import sys
import time

from celery import chord

from tasks import gathered, noop

CHORDS = int(os.environ.get("CHORDS", "10"))
TASKS = int(os.environ.get("TASKS", "1000"))

started = time.monotonic()
results = [chord(noop.s(i) for i in range(TASKS))(gathered.s()) for _ in range(CHORDS)]
for result in results:
    assert result.get(timeout=600) == TASKS
seconds = time.monotonic() - started
total = CHORDS * (TASKS + 1)
print(json.dumps({"tool": "celery", "chords": CHORDS, "tasks": total,
                  "seconds": round(seconds, 3), "tasks_per_second": round(total / seconds, 1)}))
sys.stdout.flush()
