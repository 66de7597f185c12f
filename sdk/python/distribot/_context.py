"""The per-request context handed to handler code, and the stderr log sink.

Log lines must be whole lines tagged with the request they belong to, even
when many handlers write at once, so every write to stderr goes through one
sink that holds a lock around whole lines. The request being served is kept
in a contextvar, which follows both threads and asyncio tasks.
"""

import contextvars
import json
import os
import threading

__all__ = ["Context", "current_request", "stderr_sink"]

# The request the running code serves: read by the stdout/stderr replacements
# to tag what handler code prints.
current_request = contextvars.ContextVar("distribot_current_request", default=None)

_cancel_lock = threading.Lock()


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _StderrSink(object):
    """Whole lines to file descriptor 2, so concurrent writers never interleave."""

    def __init__(self, fd=2):
        self._fd = fd
        self._lock = threading.Lock()
        self._untagged_partial = ""  # text printed outside any request, awaiting its newline

    def write_line(self, line):
        data = (line + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            try:
                _write_all(self._fd, data)
            except OSError:
                pass  # stderr gone: logging must never fail the handler

    def log(self, request_id, message):
        self.write_line(json.dumps({"id": request_id, "log": message}))

    def write_untagged(self, text):
        with self._lock:
            text = self._untagged_partial + text
            complete, newline, self._untagged_partial = text.rpartition("\n")
            if newline:
                try:
                    _write_all(self._fd, (complete + "\n").encode("utf-8", "backslashreplace"))
                except OSError:
                    pass

    def flush_untagged(self):
        with self._lock:
            text, self._untagged_partial = self._untagged_partial, ""
        if text:
            self.write_line(text)


stderr_sink = _StderrSink()


def _request_field(name, doc):
    return property(lambda self: self.request.get(name), doc=doc)


class Context(object):
    """What a handler knows about the request it serves.

    Fields come straight from the request; `request` holds the whole of it,
    including fields added by later protocol versions.
    """

    __slots__ = ("id", "request", "_cancelled", "_cancel_event", "_task", "_log_partial")

    def __init__(self, request_id, request):
        self.id = request_id
        self.request = request
        self._cancelled = False
        self._cancel_event = None
        self._task = None
        self._log_partial = ""

    flow_id = _request_field("flow_id", "The flow's id.")
    workflow = _request_field("workflow", "The workflow's name.")
    phase = _request_field("phase", "The phase being visited.")
    handler = _request_field("handler", "The handler's name.")
    version = _request_field("version", "The handler's version, as the worker chose it.")
    data = _request_field("data", "The flow's input.")
    outputs = _request_field("outputs", "enumerate: {PHASE: {HANDLER: [output, ...]}} of earlier phases.")
    error = _request_field("error", "enumerate: what failed when an error transition led here, else None.")
    job_id = _request_field("job_id", "process: stable across attempts; key side effects on it.")
    attempt = _request_field("attempt", "process: the attempt number, from 1.")
    job = _request_field("job", "process: the job (also passed as the second argument).")
    traceparent = _request_field(
        "traceparent", "The W3C trace context of this call while the worker traces, else None."
    )

    @property
    def cancelled(self):
        """True once the worker has cancelled this request: stop and return."""
        return self._cancelled

    def wait_cancelled(self, timeout=None):
        """Sleep until the request is cancelled or `timeout` seconds pass;
        returns whether it was cancelled. An interruptible `time.sleep`."""
        event = self._cancel_event
        if event is None:
            with _cancel_lock:
                if self._cancel_event is None:
                    self._cancel_event = threading.Event()
                    if self._cancelled:
                        self._cancel_event.set()
                event = self._cancel_event
        return event.wait(timeout)

    def log(self, message):
        """Log `message` as this request's, tagged by the worker with its handler, flow and job."""
        stderr_sink.log(self.id, str(message))

    def _cancel(self):
        with _cancel_lock:
            self._cancelled = True
            if self._cancel_event is not None:
                self._cancel_event.set()

    def _write_printed(self, text):
        text = self._log_partial + text
        if "\n" not in text:
            self._log_partial = text
            return
        lines = text.split("\n")
        self._log_partial = lines.pop()
        for line in lines:
            stderr_sink.log(self.id, line)

    def _flush_printed(self):
        if self._log_partial:
            text, self._log_partial = self._log_partial, ""
            stderr_sink.log(self.id, text)

    def __repr__(self):
        return "<distribot.Context id=%r handler=%r>" % (self.id, self.handler)
