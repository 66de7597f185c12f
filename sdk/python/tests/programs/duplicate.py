"""A program that registers one handler name twice: it must fail before its hello."""

import distribot


@distribot.handler("Twice", version="1.0.0")
def first(ctx, job):
    return 1


@distribot.handler("Twice", version="1.1.0")
def second(ctx, job):
    return 2


distribot.run()
