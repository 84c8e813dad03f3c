"""How to fill each system's queue and start one of its worker processes.

Every system runs the same no-op handler (bench.handlers.record, or the same
line written from Node), gets its whole backlog before its worker starts, and
is measured from the handler's first start to its last start.
"""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import os
import resource
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from . import common
from . import redis_time as rtime
from .common import PY, StartLog, WORK

PREFIX = "bench"  # our QUEUE_PREFIX


def version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "not installed"


def node_version(pkg: str) -> str:
    import json

    p = common.NODE_DIR / "node_modules" / pkg / "package.json"
    return json.loads(p.read_text())["version"] if p.exists() else "not installed"


# ---------------------------------------------------------------- ours


def our_queue(url: str):
    from engine import connection
    from engine.keys import Keys
    from engine.queue import Queue, RetryPolicy

    return Queue(connection.client(url), Keys(PREFIX, shards=1), RetryPolicy())


async def our_enqueue_async(url: str, jobs: list[tuple[str, str]], parallel: int = 16) -> None:
    q = our_queue(url)
    by_user: dict[str, list[str]] = {}
    for uid, data in jobs:
        by_user.setdefault(uid, []).append(data)
    sem = asyncio.Semaphore(parallel)

    async def one(uid: str, datas: list[str]) -> None:
        async with sem:
            for i in range(0, len(datas), 1000):
                items = [(uuid.uuid4().hex, d, None) for d in datas[i:i + 1000]]
                await q.enqueue(uid, items, 10**9)

    await asyncio.gather(*(one(u, d) for u, d in by_user.items()))
    await q.redis.aclose()


def ours_env(url: str, log: StartLog, sleep: float = 0.0) -> dict:
    return {"REDIS_URL": url, "QUEUE_PREFIX": PREFIX, "LOG_LEVEL": "WARNING",
            "BENCH_LOG": str(log.path), "BENCH_SLEEP": str(sleep)}


def start_ours(url, log, concurrency, sleep=0.0, handler="noop_async", burst=True, processes=1):
    cmd = [PY, "-m", "workers", "--concurrency", str(concurrency),
           "--handler", f"bench.handlers:{handler}"]
    if processes > 1:  # a supervisor and `processes` workers, each of `concurrency`
        cmd += ["--processes", str(processes)]
    if burst:
        cmd.append("--burst")
    return common.spawn(cmd, ours_env(url, log, sleep), f"worker-ours-{handler}")


# ---------------------------------------------------------------- peers


def peer_env(url: str, log: StartLog, concurrency: int, sleep: float = 0.0) -> dict:
    u = urlparse(url)
    return {"REDIS_URL": url, "REDIS_HOST": u.hostname or "127.0.0.1",
            "REDIS_PORT": str(u.port or 6379), "BENCH_LOG": str(log.path),
            "BENCH_CONCURRENCY": str(concurrency), "BENCH_SLEEP": str(sleep)}


def _in_env(url: str, fn: Callable[[], None]) -> None:
    old = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = url
    try:
        fn()
    finally:
        if old is None:
            os.environ.pop("REDIS_URL", None)
        else:
            os.environ["REDIS_URL"] = old


def enqueue_saq(url, jobs):
    def go():
        from .peers import saq_app
        asyncio.run(saq_app.enqueue([d for _, d in jobs]))
    _in_env(url, go)


def enqueue_arq(url, jobs):
    os.environ["REDIS_URL"] = url  # arq_app reads it at import

    def go():
        from .peers import arq_app
        asyncio.run(arq_app.enqueue([d for _, d in jobs]))
    _in_env(url, go)


def enqueue_dramatiq(url, jobs):
    # dramatiq binds its broker at import: enqueue from a child process
    _child_enqueue(url, "dramatiq_app", jobs)


def enqueue_celery(url, jobs):
    _child_enqueue(url, "celery_app", jobs)


def _child_enqueue(url, module, jobs):
    path = WORK / f"enqueue-{module}.txt"
    path.write_text("\n".join(d for _, d in jobs) + "\n")
    code = (f"from bench.peers import {module} as m; "
            f"m.enqueue(open({str(path)!r}).read().split())")
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(common.ROOT)}
    subprocess.run([PY, "-c", code], env=env, check=True, cwd=common.ROOT,
                   stdout=subprocess.DEVNULL, stderr=open(WORK / f"enqueue-{module}.log", "ab"))


def enqueue_bullmq(url, jobs):
    path = WORK / "enqueue-bullmq.txt"
    path.write_text("\n".join(d for _, d in jobs) + "\n")
    u = urlparse(url)
    common.run_node("produce.mjs", {"REDIS_HOST": u.hostname, "REDIS_PORT": str(u.port),
                                    "BENCH_DATA_FILE": str(path)}, timeout=300)


def start_saq(url, log, concurrency, sleep=0.0):
    return common.spawn([PY, "-m", "bench.peers.saq_app"],
                        peer_env(url, log, concurrency, sleep), "worker-saq")


def start_dramatiq(url, log, concurrency, sleep=0.0):
    # one process; --threads is dramatiq's concurrency (its default is 8)
    exe = str(common.Path(PY).parent / "dramatiq")
    return common.spawn([exe, "bench.peers.dramatiq_app", "--processes", "1",
                         "--threads", str(concurrency)],
                        peer_env(url, log, concurrency, sleep), "worker-dramatiq")


def start_celery(url, log, concurrency, sleep=0.0):
    exe = str(common.Path(PY).parent / "celery")
    cmd = [exe, "-A", "bench.peers.celery_app", "worker", "--loglevel", "WARNING"]
    if concurrency:  # None/0: celery's default (prefork, one child per core)
        cmd += ["--concurrency", str(concurrency)]
    return common.spawn(cmd, peer_env(url, log, concurrency or 0, sleep), "worker-celery")


def start_arq(url, log, concurrency, sleep=0.0):
    exe = str(common.Path(PY).parent / "arq")
    return common.spawn([exe, "bench.peers.arq_app.WorkerSettings"],
                        peer_env(url, log, concurrency or 10, sleep), "worker-arq")


def start_bullmq(url, log, concurrency, sleep=0.0):
    return common.spawn(["node", str(common.NODE_DIR / "worker.mjs")],
                        peer_env(url, log, concurrency, sleep), "worker-bullmq",
                        cwd=common.NODE_DIR)


@dataclass
class System:
    name: str
    version: str
    enqueue: Callable
    start: Callable


def all_systems() -> dict[str, System]:
    s = {
        "ours": System("ours", version("userqueue"),
                       lambda url, jobs: asyncio.run(our_enqueue_async(url, jobs)), start_ours),
        "ours-sync": System("ours (sync handler)", version("userqueue"),
                            lambda url, jobs: asyncio.run(our_enqueue_async(url, jobs)),
                            lambda *a, **k: start_ours(*a, handler="noop", **k)),
        "ours-2p": System("ours, --processes 2", version("userqueue"),
                          lambda url, jobs: asyncio.run(our_enqueue_async(url, jobs)),
                          lambda *a, **k: start_ours(*a, processes=2, **k)),
        "saq": System("saq", version("saq"), enqueue_saq, start_saq),
        "dramatiq": System("dramatiq", version("dramatiq"), enqueue_dramatiq, start_dramatiq),
        "celery": System("celery", version("celery"), enqueue_celery, start_celery),
        "arq": System("arq", version("arq"), enqueue_arq, start_arq),
    }
    if common.node_available():
        s["bullmq"] = System("BullMQ", node_version("bullmq"), enqueue_bullmq, start_bullmq)
    return s


def drain_run(server, system: System, jobs, concurrency, timeout: float, sleep=0.0,
              redis_time: list | None = None):
    """Fill the queue, start one worker, wait for every job to start. Returns
    (jobs/s from first to last start, jobs started, the start log). With a
    `redis_time` list, appends what the drain cost Redis (bench.redis_time):
    statistics reset after the enqueue, read once every job has finished."""
    server.flush()
    system.enqueue(server.url, jobs)
    log = StartLog(f"starts-{system.name.split()[0]}")
    if redis_time is not None:
        client = server.client()
        cpu_before = rtime.reset(client)
        children_before = _children_cpu()
    proc = system.start(server.url, log, concurrency, sleep=sleep)
    try:
        if redis_time is not None:  # the worker's CPU from its first start on
            log.wait_for(1, timeout, proc)
            at_first, jobs_then = _cpu_of(proc), len(log.entries)
        log.wait_for(len(jobs), timeout, proc)
        if redis_time is not None:
            at_last = _cpu_of(proc)  # nan if it has exited already (ours, --burst)
        if system.name.startswith("ours"):  # burst: let it record the last finishes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if redis_time is not None:
            _wait_finished(server, system)
            redis_time.append(rtime.measure(client, len(jobs), cpu_before))
    finally:
        common.stop(proc)
    if redis_time is not None:
        # its CPU from the first start seen to the last; if it had exited by then, all
        # its CPU (known once waited for) minus that up to the first start: that
        # window also holds its exit, a few ms
        used = at_last - at_first
        if used != used:
            used = _children_cpu() - children_before - at_first
        redis_time[-1].worker_cpu_us = used / max(1, len(jobs) - jobs_then) * 1e6
    return log.throughput(), len(log.entries), log


def _children_cpu() -> float:
    """CPU seconds of this process's children that have been waited for."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_of(proc: subprocess.Popen) -> float:
    """CPU seconds a running worker process (and its children) has used so far."""
    import psutil

    try:
        p = psutil.Process(proc.pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for q in procs:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _wait_finished(server, system: System, timeout: float = 10) -> None:
    """Until the last started jobs have finished too (a job's finish is part of
    its Redis time). Ours exits when drained; for BullMQ, until its wait and
    active lists are empty."""
    if system.name.startswith("ours"):
        return
    client = server.client()
    deadline = time.time() + timeout
    while time.time() < deadline:
        active = client.llen("bull:bench:active") + client.llen("bull:bench:wait")
        if active == 0:
            return
        time.sleep(0.05)
