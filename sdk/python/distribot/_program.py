"""The program side of the long-lived handler protocol (version 1).

The worker keeps many requests outstanding on one program, so this module
runs them concurrently: blocking handlers on a pool of threads sized to the
worker's `in_flight`, `async def` handlers as tasks on one event loop owned by
the SDK. One thread reads requests; answers are written by one writer thread
that drains whatever has accumulated and writes it with a single system call,
which keeps the per-job cost low when thousands of jobs a second go through.
"""

import asyncio
import json
import os
import queue
import sys
import threading
import time
import traceback

from . import __version__
from ._context import Context, current_request, stderr_sink
from ._handlers import Fail, Retry, registered_handlers
from ._stdio import take_over_stdio

__all__ = ["run"]

PROTOCOL_VERSION = 1
LINE_LIMIT = 16 * 1024 * 1024  # the worker refuses longer lines and restarts the program
SHUTDOWN_GRACE_SECONDS = 4.5   # the worker sends SIGTERM 5 s after closing stdin
TRACEBACK_LINES = 12

_TASK_NOT_STARTED = object()

# allow_nan=False: NaN and Infinity are not JSON and the worker would reject
# the whole line. ensure_ascii (the default) keeps every answer plain ASCII.
_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def _error_answer(request_id, message, retryable):
    return '{"id":%d,"error":%s}' % (
        request_id, _encode({"message": message, "retryable": retryable}))


def _output_answer(request_id, output):
    if output is None:
        return '{"id":%d}' % request_id
    try:
        line = '{"id":%d,"output":%s}' % (request_id, _encode(output))
    except (TypeError, ValueError, RecursionError) as exc:
        return _error_answer(request_id, "the output is not JSON-serialisable: %s" % exc, False)
    if len(line) > LINE_LIMIT:
        return _error_answer(request_id, "the output is %d bytes of JSON, more than the "
                                         "protocol's limit of 16 MiB a line" % len(line), False)
    return line


def _jobs_answer(request_id, jobs):
    try:
        line = '{"id":%d,"jobs":%s}' % (request_id, _encode(jobs))
    except (TypeError, ValueError, RecursionError) as exc:
        return _error_answer(request_id, "the jobs are not JSON-serialisable: %s" % exc, False)
    if len(line) > LINE_LIMIT:
        return _error_answer(request_id, "the jobs are %d bytes of JSON, more than the "
                                         "protocol's limit of 16 MiB a line" % len(line), False)
    return line


def _as_job_list(result):
    if isinstance(result, (list, tuple)):
        return result
    if result is None or isinstance(result, (str, bytes, bytearray, dict)) \
            or not hasattr(result, "__iter__"):
        raise Fail("enumerate returned %s; it must return a list of jobs (or another "
                   "iterable that is not str, bytes or dict)" % type(result).__name__)
    return list(result)


def _failure_answer(context, exc):
    if isinstance(exc, Retry):
        return _error_answer(context.id, str(exc) or "Retry", True)
    if isinstance(exc, Fail):
        return _error_answer(context.id, str(exc) or "Fail", False)
    text = str(exc)
    message = "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
    formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    lines = formatted.rstrip("\n").split("\n")
    if len(lines) > TRACEBACK_LINES:
        lines = ["Traceback (last %d lines):" % TRACEBACK_LINES] + lines[-TRACEBACK_LINES:]
    context.log("\n".join(lines))
    return _error_answer(context.id, message, True)


class _AnswerWriter(object):
    """One thread owns the answers descriptor: it takes every answer queued
    since its last write and writes them at once."""

    def __init__(self, fd):
        self._fd = fd
        self._queue = queue.SimpleQueue()
        self.put = self._queue.put
        self._thread = threading.Thread(target=self._run, name="distribot-writer", daemon=True)
        self._thread.start()

    def _run(self):
        get, empty = self._queue.get, self._queue.empty
        broken = False
        while True:
            lines = [get()]
            while not empty():
                lines.append(get())
            closing = None in lines
            if closing:
                lines = [line for line in lines if line is not None]
            if lines and not broken:
                data = ("\n".join(lines) + "\n").encode("utf-8")
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(self._fd, view):]
                except OSError as exc:
                    broken = True  # the worker is gone; stdin will close too
                    stderr_sink.write_line("distribot: cannot write answers: %s" % exc)
            if closing:
                return

    def close(self, timeout):
        self.put(None)
        self._thread.join(timeout)


class _Program(object):
    def __init__(self, handlers, in_flight, answers_fd):
        self.handlers = {entry.name: entry for entry in handlers}
        self.in_flight = in_flight
        # id -> Context, from the request until its answer is queued. A
        # cancelled async request leaves at once; a cancelled blocking one
        # stays until its function returns, as it still holds a thread.
        self.outstanding = {}
        self.writer = _AnswerWriter(answers_fd)
        self.jobs_queue = queue.SimpleQueue()
        self.threads = []
        self.closing = False
        self.drained = threading.Event()
        self.loop = None
        if any(entry.enumerate_is_async or entry.process_is_async for entry in handlers):
            self.loop = asyncio.new_event_loop()
            threading.Thread(target=self._run_loop, name="distribot-asyncio", daemon=True).start()

    def _run_loop(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    # Reading ---------------------------------------------------------------

    def serve(self, requests):
        for line in requests:
            try:
                request = json.loads(line)
            except Exception:
                if line.strip():
                    stderr_sink.write_line("distribot: ignored a request line that is not "
                                           "JSON: %r" % line[:200])
                continue
            if type(request) is not dict or type(request.get("id")) is not int:
                stderr_sink.write_line("distribot: ignored a request line that is not a JSON "
                                       "object with an integer id: %r" % line[:200])
                continue
            op = request.get("op")
            if op == "process" or op == "enumerate":
                self.start(request["id"], request, op == "process")
            elif op == "cancel":
                self.cancel(request["id"])
            else:
                # A later protocol may add operations that name an
                # outstanding request, as cancel does: answering one would
                # answer that request. So an unknown op is only logged.
                stderr_sink.write_line("distribot: ignored a request with an unknown op %r"
                                       % (op,))

    def start(self, request_id, request, is_process):
        entry = self.handlers.get(request.get("handler"))
        if entry is None:
            self.writer.put(_error_answer(
                request_id, "this program hosts no handler named %r (it hosts %s)"
                % (request.get("handler"), ", ".join(sorted(self.handlers))), False))
            return
        if is_process:
            function, is_async = entry.process, entry.process_is_async
            if function is None:
                self.writer.put('{"id":%d}' % request_id)
                return
        else:
            function, is_async = entry.enumerate, entry.enumerate_is_async
            if function is None:
                self.writer.put('{"id":%d,"jobs":[null]}' % request_id)
                return
        context = Context(request_id, request)
        self.outstanding[request_id] = context
        if is_async:
            context._task = _TASK_NOT_STARTED
            self.loop.call_soon_threadsafe(self._start_task, function, context, is_process)
        else:
            self.jobs_queue.put((function, context, is_process))
            # A thread per outstanding request, up to in_flight: blocking
            # handlers really run concurrently, and an idle program holds no
            # more threads than it ever needed.
            if len(self.threads) < self.in_flight and len(self.threads) < len(self.outstanding):
                thread = threading.Thread(target=self._run_blocking, daemon=True,
                                          name="distribot-handler-%d" % len(self.threads))
                self.threads.append(thread)
                thread.start()

    def cancel(self, request_id):
        context = self.outstanding.get(request_id)
        if context is None:
            return  # answered already, or never sent: nothing to stop
        context._cancel()
        if context._task is not None:
            # An async task stops at its next await; its answer is not wanted.
            self.outstanding.pop(request_id, None)
            self.loop.call_soon_threadsafe(self._cancel_task, context)
            self._note_finished()

    # Running ---------------------------------------------------------------

    def _run_blocking(self):
        get = self.jobs_queue.get
        while True:
            function, context, is_process = get()
            if context._cancelled:
                self._finish(context, None)
                continue
            token = current_request.set(context)
            try:
                if is_process:
                    line = _output_answer(context.id, function(context, context.request.get("job")))
                else:
                    line = _jobs_answer(context.id, _as_job_list(function(context)))
            except BaseException as exc:
                line = _failure_answer(context, exc)
            finally:
                current_request.reset(token)
            self._finish(context, line)

    def _start_task(self, function, context, is_process):
        if not context._cancelled:
            context._task = self.loop.create_task(self._run_async(function, context, is_process))

    def _cancel_task(self, context):
        # Runs after _start_task (call_soon keeps order), which saw the
        # cancel and created no task if it came first.
        if context._task is not _TASK_NOT_STARTED:
            context._task.cancel()

    async def _run_async(self, function, context, is_process):
        current_request.set(context)  # the task runs in its own copy of the context
        try:
            if is_process:
                line = _output_answer(context.id, await function(context, context.request.get("job")))
            else:
                line = _jobs_answer(context.id, _as_job_list(await function(context)))
        except asyncio.CancelledError:
            if context._cancelled:
                context._flush_printed()
                return
            line = _error_answer(context.id, "the handler was cancelled (asyncio.CancelledError) "
                                             "without a cancel from the worker", True)
        except BaseException as exc:
            line = _failure_answer(context, exc)
        self._finish(context, line)

    def _finish(self, context, line):
        context._flush_printed()
        # Queue the answer before leaving `outstanding`: the shutdown closes
        # the writer once nothing is outstanding, and must not overtake it.
        if not context._cancelled:
            self.writer.put(line)
        self.outstanding.pop(context.id, None)
        self._note_finished()

    def _note_finished(self):
        if self.closing and not self.outstanding:
            self.drained.set()

    # Stopping --------------------------------------------------------------

    def shut_down(self):
        """stdin closed: let outstanding work finish, for a bounded time."""
        self.closing = True
        self._note_finished()
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        finished = self.drained.wait(SHUTDOWN_GRACE_SECONDS)
        self.writer.close(max(0.1, deadline - time.monotonic()))
        stderr_sink.flush_untagged()
        if not finished:
            stderr_sink.write_line("distribot: stdin closed; exiting with %d requests unfinished "
                                   "after %.1f s" % (len(self.outstanding), SHUTDOWN_GRACE_SECONDS))
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        return finished


def _in_flight_from_environment():
    value = os.environ.get("DISTRIBOT_IN_FLIGHT", "64")
    try:
        in_flight = int(value)
    except ValueError:
        in_flight = 0
    if in_flight < 1:
        raise SystemExit("distribot: DISTRIBOT_IN_FLIGHT must be a positive integer, not %r" % value)
    return in_flight


def run():
    """Serve the registered handlers over stdin/stdout until stdin closes.

    Sends the hello, answers requests concurrently, and returns once stdin is
    closed and outstanding work has finished (the process exits at once, with
    status 0, if some is still running after 4.5 s).
    """
    handlers = registered_handlers()
    if not handlers:
        raise SystemExit("distribot: no handlers registered; decorate a class or function "
                         "with @distribot.handler(NAME, version=...) before calling run()")
    in_flight = _in_flight_from_environment()
    for entry in handlers:
        entry.bind()  # instantiate classes before the hello: a failing __init__ is a failed start

    requests_fd, answers_fd = take_over_stdio()
    hello = _encode({
        "op": "hello",
        "protocol": PROTOCOL_VERSION,
        "handlers": [{"name": entry.name, "version": entry.version} for entry in handlers],
        "program": "distribot-python %s" % __version__,
    })
    os.write(answers_fd, (hello + "\n").encode("utf-8"))

    program = _Program(handlers, in_flight, answers_fd)
    with os.fdopen(requests_fd, "rb", buffering=1 << 16) as requests:
        program.serve(requests)
    if not program.shut_down():
        sys.stdout.flush()
        os._exit(0)
