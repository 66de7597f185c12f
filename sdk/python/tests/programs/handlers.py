"""A handler program exercising every path of the SDK, driven by the tests over pipes."""

import asyncio
import logging
import os
import sys
import time

import distribot

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")


@distribot.handler("Squarer", version="2.1.0")
class Squarer:
    def enumerate(self, ctx):
        return list(range(ctx.data["n"]))

    def process(self, ctx, job):
        return job * job


@distribot.handler("Describer", version="1.2")
class Describer:
    def enumerate(self, ctx):
        return [{"flow_id": ctx.flow_id, "workflow": ctx.workflow, "phase": ctx.phase,
                 "handler": ctx.handler, "version": ctx.version, "data": ctx.data,
                 "outputs": ctx.outputs, "error": ctx.error}]

    def process(self, ctx, job):
        return {"flow_id": ctx.flow_id, "workflow": ctx.workflow, "phase": ctx.phase,
                "handler": ctx.handler, "version": ctx.version, "job_id": ctx.job_id,
                "attempt": ctx.attempt, "data": ctx.data, "job": job}


@distribot.handler("Echo")
def echo(ctx, job):
    return job


@distribot.handler("EnumerateOnly", version="1.0.0")
class EnumerateOnly:
    def enumerate(self, ctx):
        return ("a", "b")


@distribot.handler("ProcessOnly", version="1.0.0")
class ProcessOnly:
    def process(self, ctx, job):
        return "processed"


@distribot.handler("AsyncSquarer", version="1.0.0")
class AsyncSquarer:
    async def enumerate(self, ctx):
        await asyncio.sleep(0)
        return (i for i in range(ctx.data["n"]))

    async def process(self, ctx, job):
        await asyncio.sleep(0)
        return job * job


@distribot.handler("Sleeper", version="1.0.0")
def sleeper(ctx, job):
    time.sleep(job["ms"] / 1000.0)
    return job["i"]


@distribot.handler("AsyncSleeper", version="1.0.0")
async def async_sleeper(ctx, job):
    await asyncio.sleep(job["ms"] / 1000.0)
    return job["i"]


@distribot.handler("Failing", version="1.0.0")
def failing(ctx, job):
    if job == "retry":
        raise distribot.Retry("the page server answered 503")
    if job == "fail":
        raise distribot.Fail("the page does not exist")
    if job == "other":
        raise ValueError("bad value")
    if job == "nan":
        return float("nan")
    if job == "object":
        return object()
    return job


@distribot.handler("AsyncFailing", version="1.0.0")
async def async_failing(ctx, job):
    await asyncio.sleep(0)
    return failing(ctx, job)


@distribot.handler("BadEnumerate", version="1.0.0")
class BadEnumerate:
    def enumerate(self, ctx):
        return ctx.data["return"]


@distribot.handler("Printer", version="1.0.0")
def printer(ctx, job):
    print("printed by print")
    sys.stdout.write("written in ")
    sys.stdout.write("two parts\n")
    sys.stderr.write("written to stderr\n")
    logging.getLogger("handler").info("logged by logging")
    ctx.log("logged by ctx.log")
    os.write(1, b"written to file descriptor 1\n")
    return "printed"


@distribot.handler("BlockingWaiter", version="1.0.0")
def blocking_waiter(ctx, job):
    ctx.log("started")
    if ctx.wait_cancelled(30):
        ctx.log("saw the cancel: cancelled=%s" % ctx.cancelled)
        return "answer after cancel"
    return "finished"


@distribot.handler("AsyncWaiter", version="1.0.0")
async def async_waiter(ctx, job):
    ctx.log("started")
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        ctx.log("task cancelled: cancelled=%s" % ctx.cancelled)
        raise
    return "finished"


if __name__ == "__main__":
    distribot.run()
