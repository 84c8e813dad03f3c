"""dramatiq alone: enqueue BENCH_JOBS messages to its RedisBroker, then drain them
with one `dramatiq.Worker` of BENCH_CONCURRENCY threads in this process (what
`dramatiq APP --processes 1 --threads N` runs in each worker process; the CLI's
default is 8 threads a process), default middleware. The actor only counts.
Prints JSON: jobs/s from the first start to the last start (the harness's window).

    REDIS_URL=redis://... BENCH_JOBS=2000 BENCH_CONCURRENCY=8 python -m bench.peers.dramatiq_standalone
"""

import json
import os
import threading
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["REDIS_URL"], namespace="standalone")
dramatiq.set_broker(broker)
starts: list[float] = []  # list.append is atomic under the GIL
done = threading.Event()
total = int(os.environ.get("BENCH_JOBS", 2000))


@dramatiq.actor(max_retries=0)
def noop(data):
    starts.append(time.time())
    if len(starts) >= total:
        done.set()


def main() -> None:
    for i in range(total):
        noop.send(f"u.{i}")
    worker = dramatiq.Worker(broker, worker_threads=int(os.environ.get("BENCH_CONCURRENCY", 8)))
    worker.start()
    done.wait()
    worker.stop()
    broker.close()
    rate = (len(starts) - 1) / (max(starts) - min(starts))
    print(json.dumps({"jobs": len(starts), "rate": rate}))


if __name__ == "__main__":
    main()
