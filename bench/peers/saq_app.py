"""saq: `python -m bench.peers.saq_app` runs one worker at BENCH_CONCURRENCY."""

import asyncio
import os

from saq import Queue, Worker

from bench.handlers import record

_sleep = float(os.environ.get("BENCH_SLEEP", "0") or 0)


async def noop(ctx, *, data):
    record(data)
    if _sleep:
        await asyncio.sleep(_sleep)
    return data


def queue() -> Queue:
    return Queue.from_url(os.environ["REDIS_URL"], name="bench")


async def enqueue(datas: list[str], chunk: int = 500) -> None:
    q = queue()
    await q.connect()
    for i in range(0, len(datas), chunk):
        await asyncio.gather(*(q.enqueue("noop", data=d) for d in datas[i:i + chunk]))
    await q.disconnect()


async def main() -> None:
    q = queue()
    await q.connect()
    worker = Worker(q, functions=[noop], concurrency=int(os.environ.get("BENCH_CONCURRENCY", 10)))
    await worker.start()


if __name__ == "__main__":
    asyncio.run(main())
