"""dramatiq: `dramatiq bench.peers.dramatiq_app --processes 1 --threads N`."""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.handlers import record

broker = RedisBroker(url=os.environ["REDIS_URL"])
dramatiq.set_broker(broker)
_sleep = float(os.environ.get("BENCH_SLEEP", "0") or 0)


@dramatiq.actor(max_retries=0)
def noop(data):
    record(data)
    if _sleep:
        time.sleep(_sleep)


def enqueue(datas: list[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(noop.send, datas, chunksize=256))
