"""The benchmark's no-op handler on the Python SDK: `Noop` 1.0.0 enumerates
`data.jobs[PHASE]` jobs (one when absent), and does nothing with each, as
the built-in `noop` handler does."""

import time

import distribot


@distribot.handler("Noop", version="1.0.0")
class Noop:
    def enumerate(self, ctx):
        return [None] * int((ctx.data.get("jobs") or {}).get(ctx.phase, 1))

    def process(self, ctx, job):
        sleep_ms = ctx.data.get("sleep_ms")
        if sleep_ms:
            time.sleep(sleep_ms / 1000.0)
        return None


if __name__ == "__main__":
    distribot.run()
