"""arq with its default settings: `arq bench.peers.arq_app.WorkerSettings`."""

import asyncio
import os

from arq import create_pool
from arq.connections import RedisSettings

from bench.handlers import record

_sleep = float(os.environ.get("BENCH_SLEEP", "0") or 0)


async def noop(ctx, data):
    record(data)
    if _sleep:
        await asyncio.sleep(_sleep)
    return data


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["REDIS_URL"])
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", 10))  # arq's default is 10


async def enqueue(datas: list[str], chunk: int = 50) -> None:
    pool = await create_pool(WorkerSettings.redis_settings)
    for i in range(0, len(datas), chunk):
        await asyncio.gather(*(pool.enqueue_job("noop", d) for d in datas[i:i + chunk]))
    await pool.aclose()
