"""saq alone, as its own benchmark (benchmarks/simple.py in saq's repository) runs it:
enqueue BENCH_JOBS jobs with `Queue.enqueue` in a gather, then one `Worker` at
BENCH_CONCURRENCY drains them in this process. The handler only counts.
Prints JSON: jobs/s from the first start to the last start (the harness's window).

    REDIS_URL=redis://... BENCH_JOBS=2000 BENCH_CONCURRENCY=10 python -m bench.peers.saq_standalone
"""

import asyncio
import json
import os
import time

from saq import Queue, Worker

starts: list[float] = []
done = asyncio.Event()
total = int(os.environ.get("BENCH_JOBS", 2000))


async def noop(ctx, *, data):
    starts.append(time.time())
    if len(starts) == total:
        done.set()
    return data


async def main() -> None:
    queue = Queue.from_url(os.environ["REDIS_URL"], name="standalone")
    await queue.connect()
    for i in range(0, total, 500):
        await asyncio.gather(*(queue.enqueue("noop", data=f"u.{k}")
                               for k in range(i, min(total, i + 500))))
    worker = Worker(queue, functions=[noop], concurrency=int(os.environ.get("BENCH_CONCURRENCY", 10)))
    task = asyncio.create_task(worker.start())
    await done.wait()
    await worker.stop()
    task.cancel()
    await queue.disconnect()
    rate = (len(starts) - 1) / (max(starts) - min(starts))
    print(json.dumps({"jobs": len(starts), "rate": rate}))


if __name__ == "__main__":
    asyncio.run(main())
