"""No-op handlers for every system under test, each recording when it started.

A handler appends `<unix time, s> <data>` to an in-memory buffer; a daemon
thread writes the buffer to the file named by BENCH_LOG every 50 ms in one
write(2) (O_APPEND: atomic even across the processes of a celery pool), and
whatever is left is written at exit. The cost per job is a deque append, the
same for every system (bench/node/worker.mjs does the same in Node), so no
peer pays a syscall per job that another does not. The harness reads those
lines to get throughput (first to last start) and per-job start times
(latency, fairness); the times are taken at the start, so the batching delays
only when the harness sees a line, never the time written on it.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import os
import threading
import time

FLUSH_EVERY = 0.05  # s between writes of the buffered lines

_lines: collections.deque[str] = collections.deque()  # append/popleft are thread-safe
_fd: int | None = None
_lock = threading.Lock()  # one flusher at a time (the thread, or atexit)
_started_pid: int | None = None  # the flusher thread belongs to this process (celery forks)
_sleep = float(os.environ.get("BENCH_SLEEP", "0") or 0)


def flush() -> None:
    """Write every buffered line in one write(2)."""
    global _fd
    with _lock:
        n = len(_lines)
        if not n:
            return
        chunk = "".join(_lines.popleft() for _ in range(n))
        if _fd is None:
            _fd = os.open(os.environ["BENCH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_fd, chunk.encode())


def _flusher() -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        flush()


def record(data: str) -> None:
    global _started_pid
    if _started_pid != os.getpid():
        if not os.environ.get("BENCH_LOG"):
            return
        _started_pid = os.getpid()
        threading.Thread(target=_flusher, name="bench-record", daemon=True).start()
        atexit.register(flush)
    _lines.append(f"{time.time():.6f} {data}\n")


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
