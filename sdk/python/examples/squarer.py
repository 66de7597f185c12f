"""The smallest useful handler program: enumerate n jobs, square each one.

Declare it in the worker's handlers.toml:

    [[programs]]
    command = ["python3", "squarer.py"]
"""

import distribot


@distribot.handler("Squarer", version="2.1.0")
class Squarer:
    def enumerate(self, ctx):
        return list(range(ctx.data["n"]))

    def process(self, ctx, job):
        return job * job


if __name__ == "__main__":
    distribot.run()
