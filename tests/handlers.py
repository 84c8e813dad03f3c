"""Handlers for the tests: they log what they do to Redis so tests can check
order, overlap and attempts across worker processes.

The request data is JSON: {"u": user label, "i": index, "sleep": seconds,
"fail": number of attempts that raise first}. Each attempt appends a "start"
and (unless the process dies) an "end" entry to `<QUEUE_PREFIX>:log`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time

import redis as redis_sync

from engine.connection import is_cluster_url

_client = None


def _redis():
    """A client for REDIS_URL: one Redis, or a cluster (its first seed node)."""
    global _client
    if _client is None:
        url = os.environ["REDIS_URL"]
        if is_cluster_url(url):
            host, _, port = url.partition("://")[2].split(",")[0].rpartition(":")
            _client = redis_sync.RedisCluster(host=host, port=int(port), decode_responses=True)
        else:
            _client = redis_sync.Redis.from_url(url, decode_responses=True)
    return _client


def log_key(prefix: str) -> str:
    return f"{prefix}:log"


def _log(kind: str, d: dict) -> None:
    entry = {"ev": kind, "u": d.get("u"), "i": d.get("i"), "t": time.time(), "pid": os.getpid()}
    _redis().rpush(log_key(os.environ["QUEUE_PREFIX"]), json.dumps(entry))


def record(data: str) -> str:
    """Sync handler (runs in a thread)."""
    d = json.loads(data)
    _log("start", d)
    attempt = _redis().incr(f"{os.environ['QUEUE_PREFIX']}:attempt:{d.get('u')}:{d.get('i')}")
    time.sleep(d.get("sleep", 0))
    if attempt <= d.get("fail", 0):
        _log("fail", d)
        raise RuntimeError(f"planned failure {attempt}")
    _log("end", d)
    return f"done {d.get('u')}-{d.get('i')}"


async def record_async(data: str) -> str:
    d = json.loads(data)
    _log("start", d)
    await asyncio.sleep(d.get("sleep", 0))
    _log("end", d)
    return f"done {d.get('u')}-{d.get('i')}"


def read_log(client, prefix: str) -> list[dict]:
    return [json.loads(x) for x in client.lrange(log_key(prefix), 0, -1)]


async def never_returns(data: str) -> str:
    await asyncio.sleep(3600)
    return data


def returns_number(data: str):
    return 42


# ---- handlers that misbehave, for tests/test_worker_faults.py ----

_BEHAVES = object()


class TwoPartError(Exception):
    """Cannot be unpickled (its args are not its __init__'s): must not break a process pool."""

    def __init__(self, first: str, second: str):
        super().__init__(first + second)


def _misbehave(how: str):
    """Do what a buggy handler does; _BEHAVES when `how` names nothing."""
    if how == "exit":
        sys.exit()  # user code calling sys.exit()
    if how == "exit 3":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "generator exit":
        raise GeneratorExit
    if how == "cancelled":
        raise asyncio.CancelledError
    if how.startswith("secret "):  # an error whose text holds request data
        raise ValueError(f"cannot parse {how!r}")
    if how == "surrogate error":
        raise ValueError("bad input \ud800")
    if how == "surrogate":
        return "\ud800"
    if how == "bytes":
        return b"ok"
    if how == "none":
        return None  # forgot to return
    # only with QUEUE_ISOLATION=process, where the handler has a process of its own:
    if how == "die":
        os._exit(3)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "two-part error":
        raise TwoPartError("bad", " input")
    if how == "log":
        logging.getLogger("tests.handler").warning("handled in process %d", os.getpid())
        return "logged"
    return _BEHAVES


def misbehaves(data: str):
    """Sync: misbehaves as `data` says (see _misbehave), or sleeps for the JSON
    request's "sleep" and returns "done <u>-<i>" like `record`."""
    if data == "hang":
        threading.Event().wait()  # never returns; the thread cannot be stopped
    if (bad := _misbehave(data)) is not _BEHAVES:
        return bad
    d = json.loads(data)
    time.sleep(d.get("sleep", 0))
    return f"done {d.get('u')}-{d.get('i')}"


async def misbehaves_async(data: str):
    """`misbehaves` as an async handler (on the worker's event loop)."""
    if (bad := _misbehave(data)) is not _BEHAVES:
        return bad
    d = json.loads(data)
    await asyncio.sleep(d.get("sleep", 0))
    return f"done {d.get('u')}-{d.get('i')}"


# ---- the job context (CONTRACT §8) ----

def progress_sync(data: str, job) -> str:
    """Sync, two parameters: reports {"steps": n} values `gap` seconds apart."""
    d = json.loads(data)
    steps, gap = d.get("steps", 4), d.get("gap", 0)
    for i in range(1, steps + 1):
        job.progress(i / steps, f"step {i} of attempt {job.attempt}")
        time.sleep(gap)
    if job.attempt <= d.get("fail", 0):
        raise RuntimeError(f"planned failure {job.attempt}")
    return f"{job.id} done"


async def progress_async(data: str, job) -> str:
    """Async, two parameters: as progress_sync."""
    d = json.loads(data)
    steps, gap = d.get("steps", 4), d.get("gap", 0)
    for i in range(1, steps + 1):
        await job.progress(i / steps, f"step {i} of attempt {job.attempt}")
        await asyncio.sleep(gap)
    if job.attempt <= d.get("fail", 0):
        raise RuntimeError(f"planned failure {job.attempt}")
    return f"{job.id} done"


def progress_flood(data: str, job) -> str:
    """Sync: reports as fast as it can for `seconds`, then 1.0 last."""
    d = json.loads(data)
    end = time.monotonic() + d.get("seconds", 0.5)
    n = 0
    while time.monotonic() < end:
        n += 1
        job.progress((n % 1000) / 1000)
    job.progress(1.0, f"{n} reports")
    return str(n)


def progress_out_of_range(data: str, job) -> str:
    try:
        job.progress(1.5)
    except ValueError as exc:
        return f"ValueError: {exc}"
    return "accepted"


async def one_param_async(data: str) -> str:
    return data.upper()
