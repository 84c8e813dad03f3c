"""No-op handlers for every system under test, each recording when it started.

A handler appends one line `<unix time, s> <data>\n` to the file named by
BENCH_LOG (opened O_APPEND once per process: one write(2) a job, a couple of
microseconds, the same for every system, atomic even across the processes of
a celery pool). The harness reads those lines to get throughput (first to
last start) and per-job start times (latency, fairness), so worker start-up
and enqueueing are never inside a measured interval.
"""

from __future__ import annotations

import asyncio
import os
import time

_fd: int | None = None
_sleep = float(os.environ.get("BENCH_SLEEP", "0") or 0)


def record(data: str) -> None:
    global _fd
    if _fd is None:
        path = os.environ.get("BENCH_LOG")
        if not path:
            return
        _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, f"{time.time():.6f} {data}\n".encode())


# ---- ours: `python -m workers --handler bench.handlers:noop_async` ----

async def noop_async(data: str) -> str:
    record(data)
    if _sleep:
        await asyncio.sleep(_sleep)
    return data


def noop(data: str) -> str:  # sync: our worker runs it in its thread pool
    record(data)
    if _sleep:
        time.sleep(_sleep)
    return data


# ---- ours, with the job context (bench/updates.py) ----

async def progress10_async(data: str, job) -> str:
    """Ten progress reports a job (merged by the worker when closer than 100 ms)."""
    record(data)
    for i in range(1, 11):
        await job.progress(i / 10)
    return data


async def progress1000_async(data: str, job) -> str:
    record(data)
    for i in range(1, 1001):
        await job.progress(i / 1000)
    return data


def progress1000_sync(data: str, job) -> str:  # in the worker's thread pool
    record(data)
    for i in range(1, 1001):
        job.progress(i / 1000)
    return data
