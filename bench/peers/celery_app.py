"""celery: `celery -A bench.peers.celery_app worker` (default pool: prefork, one child a core)."""

import os
import time

from celery import Celery

from bench.handlers import record

app = Celery("bench", broker=os.environ["REDIS_URL"])
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True)
_sleep = float(os.environ.get("BENCH_SLEEP", "0") or 0)


@app.task(name="noop", ignore_result=True)
def noop(data):
    record(data)
    if _sleep:
        time.sleep(_sleep)


def enqueue(datas: list[str]) -> None:
    with app.producer_or_acquire() as producer:
        for d in datas:
            noop.apply_async((d,), producer=producer)
