"""The Celery side of the comparison in BENCHMARKS.md: a no-op task and a
chord callback, on the same RabbitMQ (broker) and Redis (result backend)
as distribot's distributed benchmark."""

import os

from celery import Celery

app = Celery(
    "distribot_comparison",
    broker=os.environ.get("CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("CELERY_BACKEND", "redis://127.0.0.1:6379/15"),
)
app.conf.update(
    task_acks_late=True,  # as distribot acknowledges after the result is kept
    worker_prefetch_multiplier=64,
    result_expires=600,
    broker_connection_retry_on_startup=True,
)


@app.task
def noop(index):
    return None


@app.task
def gathered(results):
    return len(results)
