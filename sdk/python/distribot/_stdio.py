"""Taking the process's stdin and stdout for the protocol.

The worker reads answers from stdout, so a stray print, a library's banner or
a C extension writing to file descriptor 1 would corrupt the channel. The
program keeps private duplicates of fds 0 and 1 for the protocol, points fd 1
at stderr and fd 0 at /dev/null, and replaces sys.stdout/sys.stderr with
streams that turn what handler code prints into log lines tagged with its
request.
"""

import io
import logging
import os
import sys

from ._context import current_request, stderr_sink

__all__ = ["take_over_stdio"]


class _RequestLogStream(io.TextIOBase):
    """A text stream whose lines become `{"id": N, "log": line}` when written
    while serving request N, and plain stderr lines otherwise."""

    def __init__(self, name):
        super(_RequestLogStream, self).__init__()
        self.name = name

    encoding = "utf-8"
    errors = "backslashreplace"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        # Code that writes to the descriptor itself (faulthandler, subprocess
        # with stdout=sys.stdout) lands on stderr, never on the channel.
        return 2

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        context = current_request.get()
        if context is None:
            stderr_sink.write_untagged(text)
        else:
            context._write_printed(text)
        return len(text)


def _retarget_logging_handlers(old_streams, new_stream):
    """logging.basicConfig() run before the takeover holds the old stderr; point such handlers at the new one."""
    loggers = [logging.getLogger()]
    loggers.extend(logger for logger in logging.Logger.manager.loggerDict.values()
                   if isinstance(logger, logging.Logger))
    for logger in loggers:
        for log_handler in logger.handlers:
            if isinstance(log_handler, logging.StreamHandler) and any(
                    log_handler.stream is old for old in old_streams):
                log_handler.setStream(new_stream)


def _flush(stream):
    try:
        stream.flush()
    except (AttributeError, OSError, ValueError):
        pass


def take_over_stdio():
    """Returns (requests_fd, answers_fd), private to the protocol."""
    _flush(sys.stderr)
    requests_fd = os.dup(0)
    answers_fd = os.dup(1)
    os.dup2(2, 1)
    # Printed before run() but still buffered: it now goes to stderr, not
    # ahead of the hello.
    _flush(sys.stdout)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    old_streams = [s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None]
    sys.stdout = _RequestLogStream("<stdout>")
    sys.stderr = _RequestLogStream("<stderr>")
    _retarget_logging_handlers(old_streams, sys.stderr)
    return requests_fd, answers_fd
