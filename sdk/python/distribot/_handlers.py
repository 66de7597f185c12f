"""Handler registration: the decorator, the registry, and the two exceptions
that let handler code choose whether a failure is worth another attempt.

A program hosts each handler once, with a version that lives with the code,
so mistakes (a bad version, a name used twice, a class with nothing to run)
are raised at import time, where the traceback points at the culprit, rather
than surfacing later as a refused hello.
"""

import inspect
import re

__all__ = ["Retry", "Fail", "handler", "registered_handlers"]


class Retry(Exception):
    """Fail this attempt; another attempt may succeed (``retryable: true``)."""


class Fail(Exception):
    """Fail this attempt and the phase at once (``retryable: false``): retrying cannot help."""


_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?$")


def _normalise_version(version, name):
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(
            "handler %r: version %r is not MAJOR.MINOR.PATCH (or MAJOR.MINOR), "
            "e.g. \"1.2.0\"" % (name, version)
        )
    major, minor, patch = _VERSION.match(version).groups()
    # The worker reads "1.2" as "1.2.0"; announcing the full form keeps the
    # hello and the requests' `version` field spelled the same way.
    return "%s.%s.%s" % (major, minor, patch or "0")


class Handler(object):
    """One registered handler. `enumerate` and `process` are unbound until the
    program starts, so that a class is only instantiated when it will serve."""

    __slots__ = ("name", "version", "target", "defined_at", "enumerate", "process",
                 "enumerate_is_async", "process_is_async")

    def __init__(self, name, version, target):
        self.name = name
        self.version = version
        self.target = target
        self.defined_at = "%s.%s" % (getattr(target, "__module__", "?"),
                                     getattr(target, "__qualname__", repr(target)))
        self.enumerate = None
        self.process = None
        self.enumerate_is_async = False
        self.process_is_async = False

    def bind(self):
        """Instantiate a class target and pick its operations; None means the
        protocol's default (one job `null`, or success with no output)."""
        if inspect.isclass(self.target):
            instance = self.target()
            self.enumerate = getattr(instance, "enumerate", None)
            self.process = getattr(instance, "process", None)
        else:
            self.process = self.target
        self.enumerate_is_async = inspect.iscoroutinefunction(self.enumerate)
        self.process_is_async = inspect.iscoroutinefunction(self.process)


_registry = {}


def handler(name, version="0.0.0"):
    """Register a class (with `enumerate(ctx)` and/or `process(ctx, job)`) or a
    function `process(ctx, job)` as the handler `name` at `version`.

    The decorated object is returned unchanged, so it stays usable in tests.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a handler name must be a non-empty string, not %r" % (name,))
    version = _normalise_version(version, name)

    def register(target):
        if inspect.isclass(target):
            operations = [op for op in ("enumerate", "process") if hasattr(target, op)]
            if not operations:
                raise TypeError(
                    "handler %r: class %s defines neither enumerate(self, ctx) nor "
                    "process(self, ctx, job)" % (name, target.__qualname__))
            for op in operations:
                if not callable(getattr(target, op)):
                    raise TypeError("handler %r: %s.%s is not callable"
                                    % (name, target.__qualname__, op))
        elif not callable(target):
            raise TypeError("handler %r: @distribot.handler decorates a class or a "
                            "function process(ctx, job), not %r" % (name, target))
        entry = Handler(name, version, target)
        previous = _registry.get(name)
        if previous is not None:
            raise ValueError(
                "handler %r is registered twice: first by %s, then by %s (a program "
                "hosts each handler once; if the module was imported both as a script "
                "and as a module, import it one way only)"
                % (name, previous.defined_at, entry.defined_at))
        _registry[name] = entry
        return target

    return register


def registered_handlers():
    """The registered handlers, in registration order (the hello's order)."""
    return list(_registry.values())
