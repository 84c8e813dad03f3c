"""Progress reports and `jobUpdates` (issue 15): what they cost the queue, and their fan-out.

    python -m bench.updates cost [--old 2d7dd69] [--reps 3] [--jobs 10000]
    python -m bench.updates listeners [--listeners 5000] [--rate 1000] [--seconds 20]
    python -m bench.updates calls

calls: a handler calling `job.progress` as fast as it can for 1 s, async and
sync (in a thread), against a stand-in write that takes 1 ms: calls/s the
handler makes and the writes they become (the coalescing of workers/context.py).

cost: scenario 2 (1,000 users, concurrency 50) drained by one worker, in turn:
  old        the `--old` revision's worker and no-op handler (before this feature)
  none       this tree, the same no-op handler (one parameter: no job context)
  10/job     this tree, a handler that calls `job.progress` 10 times a job
  1000/job   this tree, 1,000 calls a job (async, then sync in the thread pool)
Each prints jobs/s (first to last handler start) and the Redis CPU of the
worker's script calls per job (INFO commandstats: far steadier than the rate
on a shared machine), and the ratios to `none` and to `old`.

listeners: one API process; N users, each with one running job and one
`jobUpdates` listener (on 2 load-generator processes, graph-transport-ws); a
producer records progress reports with the engine's `progress` script, as a
worker's job context writes them, R a second spread over the jobs, and puts
the time of each report in its message. Latency = arrival at the listener −
that time. Redis connections of the API: idle, with the listeners open, and the
most seen during the load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from . import common
from .admin_users import checkout
from .common import PY, ROOT, RedisServer, StartLog, free_port, wait_http
from .systems import PREFIX, our_enqueue_async
from .throughput import S2_CONC, S2_USERS, _jobs

VARIANTS = {  # name: (handler, this tree or the old one)
    "old": ("noop_async", "old"),
    "none": ("noop_async", "this"),
    "10/job": ("progress10_async", "this"),
    "1000/job async": ("progress1000_async", "this"),
    "1000/job sync": ("progress1000_sync", "this"),
}

JOB_UPDATES = ("subscription($id: ID!) { jobUpdates(id: $id) { cursor kind "
               "job { id progress progressMessage } } }")


# ---- cost: scenario 2 with and without progress ----

def drain(server: RedisServer, root, handler: str, jobs: int, users: int = S2_USERS,
          concurrency: int = S2_CONC["ours"]) -> tuple[float, float]:
    """Scenario 2 once with `handler` and the worker's code from `root`: jobs/s,
    and the Redis CPU time of script calls per job."""
    server.flush()
    asyncio.run(our_enqueue_async(server.url, _jobs(jobs, users)))
    redis = server.client()
    redis.config_resetstat()
    log = StartLog(f"updates-cost-{handler}")
    env = {**os.environ, "REDIS_URL": server.url, "QUEUE_PREFIX": PREFIX,
           "LOG_LEVEL": "WARNING", "BENCH_LOG": str(log.path), "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [PY, "-m", "workers", "--burst", "--concurrency", str(concurrency),
         "--handler", f"bench.handlers:{handler}"], env=env, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        log.wait_for(jobs, 300, proc)
        proc.wait(30)  # burst: it exits once the last finishes are recorded
    finally:
        common.stop(proc)
    if len(log.entries) < jobs:
        raise RuntimeError(f"only {len(log.entries)} of {jobs} jobs started")
    stats = redis.info("commandstats")
    usec = sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval"))
    return log.throughput(), usec / jobs


def cost(args) -> None:
    server = RedisServer()
    server.start()
    old = checkout(args.old)
    roots = {"old": old, "this": ROOT}
    variants = {v: VARIANTS[v] for v in args.variants.split(",")} if args.variants else VARIANTS
    rates: dict[str, list[float]] = {v: [] for v in variants}
    lua: dict[str, list[float]] = {v: [] for v in variants}
    users, concurrency = (1, 1) if args.scenario == 1 else (S2_USERS, S2_CONC["ours"])
    print(f"scenario {args.scenario}: {users} users, {args.jobs} jobs, concurrency "
          f"{concurrency}, one worker; old = {args.old}; {args.reps} rounds, variants in turn")
    try:
        for rep in range(args.reps):
            for name, (handler, where) in variants.items():
                rate, usec = drain(server, roots[where], handler, args.jobs, users, concurrency)
                rates[name].append(rate)
                lua[name].append(usec)
                print(f"  round {rep + 1} {name:<15} {rate:8.0f} jobs/s   "
                      f"Redis script time {usec:6.1f} us/job", flush=True)
    finally:
        server.stop()
    base_rate, base_lua = (statistics.median(rates["none"]), statistics.median(lua["none"]))
    old_rate, old_lua = (statistics.median(rates["old"]), statistics.median(lua["old"]))
    print("medians (ratio to `none`, to `old`):")
    for name in variants:
        r, u = statistics.median(rates[name]), statistics.median(lua[name])
        print(f"  {name:<15} {r:8.0f} jobs/s ({r / base_rate:.3f}, {r / old_rate:.3f})   "
              f"{u:6.1f} us/job ({u / base_lua:.2f}, {u / old_lua:.2f})")


# ---- listeners: 5,000 jobUpdates listeners, one API ----

async def listeners(args) -> None:
    from bson import ObjectId

    from engine import connection
    from engine.keys import Keys
    from engine.queue import Queue, RetryPolicy

    from .listeners import probes
    from .listeners.latency import WARMUP, window_latency
    from .listeners.loadgen import LoadGenerators
    from .listeners.ours import SECRET, mint_tokens

    common.raise_nofile()
    server = RedisServer()
    server.start()
    prefix = f"benchup{os.getpid()}"
    keys = Keys(prefix, shards=1)
    base = keys.base(0)
    queue = Queue(connection.client(server.url), keys, RetryPolicy())
    r = server.client()
    uids = [str(ObjectId()) for _ in range(args.listeners)]
    common.WORK.mkdir(parents=True, exist_ok=True)
    ids_file = common.WORK / "updates-users.txt"
    ids_file.write_text("\n".join(uids))
    port = free_port()
    env = {"REDIS_URL": server.url, "QUEUE_PREFIX": prefix, "LOG_LEVEL": "WARNING",
           "JWT_SECRET": SECRET, "HOST": "127.0.0.1", "PORT": str(port),
           "APP_ENV": "development", "BENCH_USER_IDS": str(ids_file)}
    clients_before = probes.redis_clients(r)
    api = common.spawn([PY, "-m", "bench.updates_api"], env, "updates-api")
    generators = None
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", api, timeout=120)
        # one job a user, all of them running: claimed as workers would
        sem = asyncio.Semaphore(32)

        async def one(uid):
            async with sem:
                return (await queue.enqueue(uid, [(str(ObjectId()), "x" * 16, None)], 10))[0]
        await asyncio.gather(*(one(u) for u in uids))
        running = []
        while len(running) < len(uids):
            batch = await queue.claim(base, 500, "bench-updates", 3600)
            if not batch.jobs:
                raise RuntimeError(f"only {len(running)} jobs claimed")
            running += batch.jobs
        await queue.redis.delete(Keys.archive(base))  # MongoDB's copies: not measured here
        await asyncio.sleep(1.0)
        idle = probes.api_redis_connections(r)

        tokens = mint_tokens(uids)
        params = [{"Authorization": f"Bearer {tokens[j.user_id]}"} for j in running]
        variables = [{"id": j.job_id} for j in running]
        generators = LoadGenerators("updates", f"ws://127.0.0.1:{port}/graphql", params,
                                    args.clients, query=JOB_UPDATES, variables=variables)
        failed, ready_s, accept_s = await generators.open_all(
            lambda: probes.active_subscriptions(port))
        await asyncio.sleep(2.0)
        listening = probes.api_redis_connections(r)
        rss = probes.rss(api.pid)

        print(f"  producing {args.rate:,.0f} progress reports/s for {args.seconds:.0f} s ...",
              flush=True)
        pids = {"api": api.pid, **generators.pids}
        meter = probes.CpuMeter(pids)
        meter.start()
        peak = [listening]

        async def sample():
            while True:
                peak[0] = max(peak[0], probes.api_redis_connections(r))
                await asyncio.sleep(0.5)
        sampler = asyncio.create_task(sample())
        t0, t1, sent = await produce(queue, running, args.rate, args.seconds)
        cpu = meter.stop()
        sampler.cancel()
        await asyncio.sleep(3.0)  # stragglers
        heard, infos = await generators.stop()
        w0 = t0 + WARMUP
        lat = window_latency(heard, w0, t1, args.rate * (t1 - w0))
        print(f"listeners: {len(uids) - failed:,} jobUpdates subscriptions on one API process "
              f"({failed} failed; open in {ready_s:.1f} s, all counted in {accept_s:.1f} s), "
              f"API RSS {rss / 2**20:.0f} MiB")
        print(f"reports: {sent:,} at {args.rate:,.0f}/s over {t1 - t0:.1f} s; heard "
              f"{len(heard):,} (in the measured window {lat.received:,} of "
              f"{lat.expected:,.0f}), {lat.msgs_per_s:,.0f}/s")
        print(f"report -> listener: p50 {lat.p50_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms, "
              f"max {lat.max_ms:.1f} ms, over 100 ms {lat.over_100ms:.2%} (target: p99 < 100 ms)")
        print(f"API Redis connections: idle {idle}, with the listeners open {listening}, "
              "most during "
              f"the load {peak[0]} (Redis clients before the API: {clients_before})")
        print("CPU during the load, % of one core: " + ", ".join(
            f"{name} {pct:.0f}" for name, pct in cpu.percent.items())
            + f"; tasks waited for a core {cpu.pressure_pct:.0f}% of the time")
        print(f"other messages: {[i.get('other') for i in infos]}")
    finally:
        if generators:
            generators.kill()
        common.stop(api)
        await queue.redis.aclose()
        server.stop()


async def produce(queue, running, rate: float, seconds: float) -> tuple[float, float, int]:
    """`rate` progress reports a second, round robin over the running jobs, each
    tick's due reports in one pipeline of the engine's `progress` script (each
    call atomic on its own), the report's time as its message."""
    script = queue._scripts["progress"]
    bounds = queue.bounds.args()
    total = int(rate * seconds)
    t0 = time.time() + 0.05
    done = 0
    while done < total:
        due = min(total, int((time.time() - t0) * rate) + 1)
        if due <= done:
            await asyncio.sleep(max(0.0, min(0.002, t0 + done / rate - time.time())))
            continue
        pipe = queue.redis.pipeline(transaction=False)
        now = f"{time.time():.6f}"
        for k in range(done, due):
            job = running[k % len(running)]
            await script(keys=[queue.keys.user_base(job.user_id)],
                         args=[job.user_id, job.job_id, job.token, repr((k % 100) / 100),
                               "1", now, *bounds], client=pipe)
        await pipe.execute()
        done = due
    return t0, time.time(), done


# ---- calls: a handler that reports as fast as it can ----

async def calls(args) -> None:
    from workers.context import AsyncJobContext, JobContext, Progress

    loop = asyncio.get_running_loop()
    writes: list = []

    async def write(value, message):  # stands in for Queue.progress: about a round trip
        writes.append(value)
        await asyncio.sleep(0.001)
        return "1-0"

    progress = Progress(write, loop)
    job = AsyncJobContext("job", 1, progress)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < args.seconds:
        for i in range(1000):
            await job.progress(i / 1000)
        n += 1000
        await asyncio.sleep(0)  # let the timer's writes run, as a real handler's awaits do
    elapsed = time.perf_counter() - t
    last = await progress.close()
    print(f"async handler: {n / elapsed:,.0f} progress calls/s for {elapsed:.1f} s -> "
          f"{len(writes)} writes, and the last report ({last[0]}) held for the outcome")

    writes.clear()
    progress = Progress(write, loop)
    job = JobContext("job", 1, progress)

    def flood() -> tuple[int, float]:
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < args.seconds:
            job.progress((n % 1000) / 1000)
            n += 1
        return n, time.perf_counter() - t

    n, elapsed = await asyncio.to_thread(flood)
    last = await progress.close()
    print(f"sync handler (thread): {n / elapsed:,.0f} progress calls/s for {elapsed:.1f} s -> "
          f"{len(writes)} writes, and the last report ({last[0]}) held for the outcome")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.updates", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--old", default="2d7dd69")
    c.add_argument("--reps", type=int, default=3)
    c.add_argument("--jobs", type=int, default=10_000)
    c.add_argument("--scenario", type=int, choices=(1, 2), default=2,
                   help="1: one user at concurrency 1; 2 (default): 1,000 users at 50")
    c.add_argument("--variants", help="comma-separated names (default: all)")
    l_ = sub.add_parser("listeners")
    l_.add_argument("--listeners", type=int, default=5000)
    l_.add_argument("--rate", type=float, default=1000.0)
    l_.add_argument("--seconds", type=float, default=20.0)
    l_.add_argument("--clients", type=int, default=2)
    k = sub.add_parser("calls")
    k.add_argument("--seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.what == "cost":
        cost(args)
    elif args.what == "calls":
        asyncio.run(calls(args))
    else:
        asyncio.run(listeners(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
