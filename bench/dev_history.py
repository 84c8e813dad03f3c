"""`--dev` with a long history: the archiver under load, and `jobs(first: 20)`.

    python -m bench.dev_history                       # this checkout beside b364248
    python -m bench.dev_history --before REV --jobs 100000 --rate 2000 --seconds 20

What it runs, in one process per side, as `python -m graph --dev` does: the
embedded Redis, the in-memory MongoDB (MONGO_URI unset), the archiver, the
event reader and a worker inside (concurrency 50, the no-op `echo` handler).
It fills the history with --jobs finished jobs of 100 users, then enqueues
--rate jobs a second for --seconds across those users while a reader asks for
user u0's newest 20 jobs every 100 ms (`history_page`, what the `jobs`
resolver runs: it first stores what the archive lists for that user). It prints the
page's latency p50/p99, the jobs the worker ran per second, the archive
backlog (job changes MongoDB has not stored yet) at its highest and at the
end, how long the backlog took to drain after the load stopped, the share of
the load's wall time the archiver spent in its passes (and records stored per
second of it: its capacity, awaits on Redis included), how late a
10 ms timer fires (the event loop's lag: every await in a page waits about
that long when the loop is saturated), and the process's memory before and
after the fill (per 100,000 jobs).

The side "before" is a git worktree of --before under bench/.work/, run with
the same code below (it only uses what both revisions have). Sides alternate
A B A B when --reps > 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

USERS = 100
BEFORE = "b364248"  # the revision before the user-targeted flush and faster upserts


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


async def _child(jobs: int, rate: int, seconds: float) -> dict:
    import psutil
    from bson import ObjectId
    from datetime import datetime, timezone

    import workers.handlers
    from engine.jobs import JobRecord, JobStatus
    from engine.keys import Keys
    from engine.settings import load_settings
    from graph.app import _dev_worker
    from graph.jobs import history_page
    from graph.services import open_services
    from graph.settings import Settings
    from graph.store import save_job_snapshots

    ran = 0

    def echo(data: str) -> str:  # the worker's handler: counts what it ran
        nonlocal ran
        ran += 1
        return data

    workers.handlers.echo = echo
    proc = psutil.Process()
    settings = load_settings(Settings)
    import gc

    gc.freeze()  # as `python -m graph` does before it serves: start-up objects stay out of GC
    users = [f"u{i}" for i in range(USERS)]
    out: dict = {}
    async with open_services(settings) as services:
        queue, archiver = services.queue, services.archiver

        async def backlog() -> int:
            return sum([await queue.redis.llen(Keys.archive(b)) for b in queue.keys.all_bases()])

        # the history: finished jobs, taken by their users, in MongoDB
        rss0 = proc.memory_info().rss
        now = datetime.now(timezone.utc)
        t = time.perf_counter()
        for start in range(0, jobs, 1000):
            await save_job_snapshots([
                JobRecord(id=str(ObjectId()), user_id=users[i % USERS], request_data=f"job {i}",
                          status=JobStatus.COMPLETED, attempts=1, processed_data=f"job {i}",
                          created_at=now, started_at=now, finished_at=now, dequeued_at=now,
                          version=3)
                for i in range(start, min(start + 1000, jobs))])
        out["fill_seconds"] = time.perf_counter() - t
        out["rss_fill_mb_per_100k"] = (proc.memory_info().rss - rss0) / 2**20 * 100_000 / jobs

        # the archiver's own time: wall time inside its passes during the load (a
        # pass still running when the load stops counts up to then), records stored
        busy = {"seconds": 0.0, "records": 0, "from": None, "to": None, "running": None}
        run_once = archiver.run_once

        async def timed_run_once():
            busy["running"] = t = time.perf_counter()
            try:
                done = await run_once()
            finally:
                busy["running"] = None
            if busy["from"] is not None:
                end = time.perf_counter() if busy["to"] is None else busy["to"]
                busy["seconds"] += max(0.0, min(time.perf_counter(), end) - max(t, busy["from"]))
                if busy["to"] is None or t < busy["to"]:
                    busy["records"] += done
            return done

        archiver.run_once = timed_run_once

        async with _dev_worker(settings, services.redis_url):
            latencies: list[float] = []
            highest = 0
            stop = asyncio.Event()

            async def read_pages():
                while not stop.is_set():
                    t0 = time.perf_counter()
                    page, _ = await history_page(queue, archiver, "u0", None, 20, None)
                    latencies.append(time.perf_counter() - t0)
                    assert len(page) == 20
                    await asyncio.sleep(0.1)

            lags: list[float] = []

            async def watch_loop():  # how late a 10 ms timer fires: the loop's own delay
                while not stop.is_set():
                    t0 = time.perf_counter()
                    await asyncio.sleep(0.01)
                    lags.append(time.perf_counter() - t0 - 0.01)

            async def watch_backlog():
                nonlocal highest
                while not stop.is_set():
                    highest = max(highest, await backlog())
                    await asyncio.sleep(0.25)

            tasks = [asyncio.create_task(read_pages()), asyncio.create_task(watch_backlog()),
                     asyncio.create_task(watch_loop())]
            tick, per_user = 0.05, 10  # every 50 ms: rate/20 jobs, 10 per user
            per_tick = max(per_user, int(rate * tick))
            enqueued, k = 0, 0
            t0 = busy["from"] = time.perf_counter()
            ran0 = ran
            while (elapsed := time.perf_counter() - t0) < seconds:
                due = int(elapsed / tick + 1) * per_tick
                while enqueued < due:
                    uid = users[k % USERS]
                    k += 1
                    rows = [(str(ObjectId()), "x", None) for _ in range(per_user)]
                    await queue.enqueue(uid, rows, 10**9)
                    enqueued += per_user
                await asyncio.sleep(max(0.0, t0 + (elapsed // tick + 1) * tick
                                        - time.perf_counter()))
            load_seconds = time.perf_counter() - t0
            busy["to"] = t0 + load_seconds
            if busy["running"] is not None:  # a pass spans the end of the load
                busy["seconds"] += busy["to"] - max(busy["running"], t0)
            out["archiver_busy_share"] = busy["seconds"] / load_seconds
            out["archived_records_per_job"] = busy["records"] / max(1, enqueued)
            out["archiver_records_per_busy_s"] = busy["records"] / max(busy["seconds"], 1e-9)
            out["enqueued_per_s"] = enqueued / load_seconds
            out["worker_per_s"] = (ran - ran0) / load_seconds
            out["backlog_at_end"] = await backlog()
            t1 = time.perf_counter()
            while await backlog() or ran - ran0 < enqueued:
                if time.perf_counter() - t1 > 600:
                    break
                await asyncio.sleep(0.1)
            out["drain_seconds"] = time.perf_counter() - t1
            stop.set()
            await asyncio.gather(*tasks)
            out["backlog_highest"] = highest
            out["pages"] = len(latencies)
            out["page_p50_ms"] = _pct(latencies, 50) * 1000
            out["page_p99_ms"] = _pct(latencies, 99) * 1000
            out["page_max_ms"] = max(latencies) * 1000
            out["loop_lag_p50_ms"] = _pct(lags, 50) * 1000
            out["loop_lag_p99_ms"] = _pct(lags, 99) * 1000
        out["rss_end_mb"] = proc.memory_info().rss / 2**20
    return out


def _run_side(where: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="dev-history-") as data:
        env = {**os.environ, "PYTHONPATH": where, "DATA_DIR": data, "QUEUE_CONCURRENCY": "50",
               "QUEUE_HANDLER": "workers.handlers:echo", "LOG_LEVEL": "WARNING"}
        for name in ("MONGO_URI", "REDIS_URL"):
            env.pop(name, None)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(args.jobs), str(args.rate),
             str(args.seconds)], cwd=where, env=env, capture_output=True, text=True,
            timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"run in {where} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


ROWS = [("page_p50_ms", "jobs(first: 20) p50, ms", 1), ("page_p99_ms", "jobs(first: 20) p99, ms", 1),
        ("page_max_ms", "jobs(first: 20) max, ms", 1), ("pages", "pages read", 0),
        ("loop_lag_p50_ms", "event loop lag p50, ms", 1),
        ("loop_lag_p99_ms", "event loop lag p99, ms", 1),
        ("enqueued_per_s", "enqueued, jobs/s", 0), ("worker_per_s", "worker ran, jobs/s", 0),
        ("archiver_busy_share", "archiver busy (share of load time)", 2),
        ("archived_records_per_job", "records stored per job", 2),
        ("archiver_records_per_busy_s", "records stored per busy second", 0),
        ("backlog_highest", "archive backlog, highest", 0),
        ("backlog_at_end", "archive backlog when load stops", 0),
        ("drain_seconds", "drain after load, s", 1), ("fill_seconds", "fill, s", 1),
        ("rss_fill_mb_per_100k", "memory per 100k jobs, MiB", 0),
        ("rss_end_mb", "process memory at end, MiB", 0)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dev_history",
                                description=__doc__.splitlines()[0])
    p.add_argument("--before", default=BEFORE, help=f"revision to compare (default {BEFORE})")
    p.add_argument("--jobs", type=int, default=100_000, help="jobs in the history (100,000)")
    p.add_argument("--rate", type=int, default=2000, help="jobs enqueued a second (2,000)")
    p.add_argument("--seconds", type=float, default=20, help="seconds of load (20)")
    p.add_argument("--reps", type=int, default=1, help="pairs of runs, A B A B (1)")
    p.add_argument("--only-after", action="store_true", help="this checkout alone")
    args = p.parse_args(argv)
    # here, not at the top: the child runs this file as a script, outside the package
    from .common import ROOT
    from .revisions import checkout  # a worktree of the older revision, made once

    sides = {} if args.only_after else {f"before {args.before}": checkout(args.before)}
    sides["after (this checkout)"] = str(ROOT)
    print(f"--dev history: {args.jobs} jobs filled, then {args.rate} jobs/s for "
          f"{args.seconds:.0f} s; worker concurrency 50, echo handler; in-memory MongoDB")
    results: dict[str, list[dict]] = {s: [] for s in sides}
    for _ in range(args.reps):
        for side, where in sides.items():
            results[side].append(_run_side(where, args))
            print(f"  {side}: {json.dumps(results[side][-1])}", flush=True)
    import statistics

    print(f"{'':38}" + "".join(f"{s:>24}" for s in sides))
    for key, label, digits in ROWS:
        vals = [statistics.median(r[key] for r in results[s]) for s in sides]
        print(f"{label:38}" + "".join(f"{v:>24,.{digits}f}" for v in vals))
    if len(sides) == 2:
        (a, b) = (statistics.median(r["page_p99_ms"] for r in results[s]) for s in sides)
        print(f"p99 ratio before/after: {a / b:.1f}x")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        jobs, rate, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        from engine import loop  # uvloop when installed, as `python -m graph` runs

        async def child():
            print(json.dumps(await _child(jobs, rate, seconds)))

        loop.run(child())
    else:
        sys.exit(main())
