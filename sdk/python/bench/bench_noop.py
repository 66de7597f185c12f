"""How many jobs a second one Python handler program answers.

Spawns a program hosting a no-op process handler, pushes requests through it
with a fixed number outstanding (as the worker does with `in_flight`), checks
that every id is answered exactly once, and prints the rate and the CPU time
the program used. The SDK's target is 20,000 jobs/s on a 2-core machine.

    python3 sdk/python/bench/bench_noop.py [--jobs 100000] [--in-flight 64] [--async]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
import distribot

@distribot.handler("Noop", version="1.0.0")
%sdef noop(ctx, job):
    return None

distribot.run()
"""


def request_line(request_id):
    # The size and shape of a real process request.
    return ('{"id":%d,"op":"process","handler":"Noop","version":"1.0.0",'
            '"flow_id":"01a2188b-4230-708d-903b-a4000cc3dbf2","workflow":"bench",'
            '"phase":"working","job_id":"01a2188b-4230-708d-903b-a4000cc3dbf2.1.0.%d",'
            '"attempt":1,"job":%d,"data":{"jobs":{"working":100000}}}\n'
            % (request_id, request_id, request_id)).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--async", dest="use_async", action="store_true",
                        help="make the handler `async def`")
    args = parser.parse_args()

    environment = dict(os.environ, PYTHONPATH=SDK, DISTRIBOT_IN_FLIGHT=str(args.in_flight))
    program = subprocess.Popen(
        [sys.executable, "-c", PROGRAM % ("async " if args.use_async else "")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment, bufsize=0)
    answers_fd = program.stdout.fileno()

    pending = b""
    while b"\n" not in pending:
        pending += os.read(answers_fd, 65536)
    hello, pending = pending.split(b"\n", 1)
    assert json.loads(hello)["op"] == "hello", hello

    answered = bytearray(args.jobs + 1)
    next_id = 1
    done = 0
    started = time.monotonic()
    first = min(args.in_flight, args.jobs)
    program.stdin.write(b"".join(request_line(i) for i in range(1, first + 1)))
    next_id = first + 1
    while done < args.jobs:
        chunk = pending + os.read(answers_fd, 1 << 20)
        if chunk == pending:
            raise SystemExit("the program closed its stdout after %d answers" % done)
        lines = chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            answer = json.loads(line)
            request_id = answer["id"]
            if answered[request_id] or "error" in answer:
                raise SystemExit("bad answer: %r" % line)
            answered[request_id] = 1
        done += len(lines)
        more = min(len(lines), args.jobs + 1 - next_id)
        if more > 0:
            program.stdin.write(b"".join(request_line(i) for i in range(next_id, next_id + more)))
            next_id += more
    elapsed = time.monotonic() - started
    program.stdin.close()
    status = program.wait()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    print("%d jobs, %d in flight, %s handler: %.0f jobs/s; program CPU %.2f s "
          "(%.1f us/job, startup included); exit status %d"
          % (args.jobs, args.in_flight, "async" if args.use_async else "blocking",
             args.jobs / elapsed, cpu, cpu / args.jobs * 1e6, status))


if __name__ == "__main__":
    main()
