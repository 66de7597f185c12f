"""A handler program that hosts the handlers named in DISTRIBOT_RELAY_HANDLERS
(comma-separated, each at version 1.0.0) and relays every call to the test
process at DISTRIBOT_RELAY (host:port), which answers with the conformance
suite's own Rust handlers.

So the suite's cases run through the whole program path -- the worker's
program handler, the line protocol, the Python SDK, a real process -- while
what each handler does stays the case's to decide.
"""

import json
import os
import socket

import distribot

HOST, PORT = os.environ["DISTRIBOT_RELAY"].rsplit(":", 1)


def relay(op, ctx):
    with socket.create_connection((HOST, int(PORT))) as connection:
        connection.sendall((json.dumps({"op": op, "request": ctx.request}) + "\n").encode())
        answer = json.loads(connection.makefile("rb").readline())
    if "error" in answer:
        error = answer["error"]
        if error["retryable"]:
            raise distribot.Retry(error["message"])
        raise distribot.Fail(error["message"])
    return answer.get("value")


def relayed(name):
    class Relayed(object):
        def enumerate(self, ctx):
            return relay("enumerate", ctx)

        def process(self, ctx, job):
            return relay("process", ctx)

    Relayed.__name__ = name
    return Relayed


for handler_name in os.environ["DISTRIBOT_RELAY_HANDLERS"].split(","):
    distribot.handler(handler_name, version="1.0.0")(relayed(handler_name))

if __name__ == "__main__":
    distribot.run()
