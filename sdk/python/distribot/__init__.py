"""distribot: write distribot handlers in Python.

A handler program registers handlers with ``@distribot.handler(name,
version=...)`` and calls ``distribot.run()``; the distribot worker starts it
once and sends it requests over stdin/stdout (the long-lived handler
protocol, version 1, in docs/command-protocol.md).
"""

__version__ = "0.1.0"

from ._context import Context  # noqa: E402
from ._handlers import Fail, Retry, handler  # noqa: E402
from ._program import run  # noqa: E402

__all__ = ["Context", "Fail", "Retry", "handler", "run", "__version__"]
