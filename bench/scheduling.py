"""CONTRACT §7 benchmarks: runAt, many scheduled jobs, keys with concurrency, memory.

    python -m bench.scheduling                 # everything, full size
    python -m bench.scheduling --scale 0.2     # smaller fills (the 1,000,000 and 100,000 shrink)
    python -m bench.scheduling --only runat,scheduled,keys,memory

- runat: 1,000 jobs of 100 users with runAt spread over 5 s, one worker of
  concurrency 50 already waiting: start time (handler) minus runAt, p50/p99/max.
- scheduled: scenario 5's hot path (chained finish+claim steps, bench/scale.py)
  beside 1,000 and beside 1,000,000 jobs scheduled a day ahead, and beside
  1,000 scheduled plus 1,000,000 other keys (the same keyspace size), filled in
  one server (databases 1-3) and measured in turn: cost per step.
- keys: 1,000 users x 3 ordering keys x 10 jobs, concurrency 3 per user, one
  worker of concurrency 50: throughput, and max/min starts per user over the
  first half of the starts (all users still have work then).
- memory: Redis memory per queued job beyond the payload: 10 users, default
  key; 100,000 users x 3 keys.
The machine may be shared: run it twice when figures matter.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

from . import common
from .common import RedisServer, StartLog
from .redis_time import script_calls
from .scale import PAYLOAD, _steps
from .common import PY
from .systems import PREFIX, ours_env


def _queue(url: str, user_concurrency: int = 1):
    from engine import connection
    from engine.keys import Keys
    from engine.queue import Queue

    # generous timeouts: a fill of a million jobs on a busy machine
    return Queue(connection.client(url, socket_timeout=120, socket_connect_timeout=120),
                 Keys(PREFIX, shards=1),
                 user_concurrency=user_concurrency)


async def _fill(url: str, users: int, per_user: int, *, keys=("",), run_at_ms=None,
                user_concurrency: int = 1, data=None, parallel: int = 8) -> None:
    from engine.queue import NewJob

    q = _queue(url, user_concurrency)
    sem = asyncio.Semaphore(parallel)

    async def one(uid: str) -> None:
        async with sem:
            jobs = [NewJob(uuid.uuid4().hex, data(uid, i) if data else PAYLOAD, None,
                           keys[i % len(keys)] or None, 0,
                           run_at_ms(i) if run_at_ms else None) for i in range(per_user)]
            for i in range(0, len(jobs), 1000):
                await q.enqueue(uid, jobs[i:i + 1000], 10**9)

    for start in range(0, users, 5000):
        await asyncio.gather(*(one(f"u{n}") for n in range(start, min(users, start + 5000))))
    await q.redis.aclose()


def _worker(url: str, log: StartLog, concurrency: int, user_concurrency: int = 1,
            burst: bool = True):
    cmd = [PY, "-m", "workers", "--concurrency", str(concurrency),
           "--handler", "bench.handlers:noop_async"] + (["--burst"] if burst else [])
    env = {**ours_env(url, log), "QUEUE_USER_CONCURRENCY": str(user_concurrency)}
    return common.spawn(cmd, env, "worker-ours-scheduling")


def runat(server: RedisServer, n: int = 1000, users: int = 100, spread: float = 5.0) -> dict:
    server.flush()
    log = StartLog("scheduling-runat")
    # the worker waits first: a runAt job must wake it, not a claim of its own
    q = _queue(server.url)
    asyncio.run(_fill(server.url, 1, 1))  # one due job: the worker is up and idle after it
    proc = _worker(server.url, log, 50, burst=False)
    log.wait_for(1, 30, proc)
    t0 = int((time.time() + 1.0) * 1000)
    per = n // users
    at = lambda i: t0 + int((i * users) * spread * 1000 / n)  # noqa: E731
    asyncio.run(_fill(server.url, users, per, run_at_ms=lambda i: at(i) + 0,
                      data=lambda uid, i: f"{at(i)}"))
    ok = log.wait_for(n + 1, 60, proc)
    common.stop(proc)
    asyncio.run(q.redis.aclose())
    delays = sorted((t * 1000 - int(d)) for t, d in log.entries[1:] if d.isdigit())
    early = sum(1 for d in delays if d < 0)
    return {"jobs": len(delays), "complete": ok, "early": early,
            "p50_ms": statistics.median(delays),
            "p99_ms": delays[int(len(delays) * 0.99) - 1], "max_ms": delays[-1]}


def _database(url: str, n: int) -> str:
    """The same server's database n: `redis://host:port/n`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{n}"))


def _filler(url: str, count: int) -> None:
    """`count` hashes shaped like a queued job's (uid, data, created) that no
    script touches: a keyspace as big as the scheduled jobs make it."""
    r = common.redis_sync.Redis.from_url(url)
    now = int(time.time() * 1000)
    for start in range(0, count, 10_000):
        with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + 10_000)):
                pipe.hset(f"filler:{i}", mapping={"uid": f"u{i % 10}", "data": PAYLOAD,
                                                 "created": now})
            pipe.execute()


def scheduled_cost(server: RedisServer, big: int, reps: int = 5) -> dict:
    """Three cases filled side by side, in databases 1-3 of one server, then
    measured in turn (A B C A B C): the same server state and machine load for
    all. The third holds as many keys as the second but no scheduled jobs: a
    bigger keyspace costs every Redis command a little (its hash table
    outgrows the CPU caches), so the second against the third is what the
    due-time index itself costs a claim."""
    cases = {"1,000 scheduled": (_database(server.url, 1), 1000, 0),
             f"{big:,} scheduled": (_database(server.url, 2), big, 0),
             f"1,000 scheduled + {big:,} other keys": (_database(server.url, 3), 1000, big)}
    day = int((time.time() + 86400) * 1000)
    for url, count, filler in cases.values():
        common.redis_sync.Redis.from_url(url).flushdb()
        asyncio.run(_fill(url, 10, 100))  # the due work the steps chain through
        asyncio.run(_fill(url, 10, count // 10, run_at_ms=lambda i: day + i))
        _filler(url, filler)
    r = server.client()
    got = {label: ([], []) for label in cases}
    for _ in range(reps):
        for label, (url, _, _) in cases.items():
            r.config_resetstat()
            got[label][0].append(asyncio.run(_steps(url, 3000)) * 1e6)
            calls, usec = script_calls(r.info("commandstats"))
            got[label][1].append(usec / max(1, calls))
    out = {label: {"client_us": round(statistics.median(c), 1),
                   "redis_us": round(statistics.median(rs), 1), "runs": [round(x) for x in c]}
           for label, (c, rs) in got.items()}
    (_, (c1, r1)), (_, (c2, r2)), (_, (c3, r3)) = got.items()
    for name, (ca, ra) in (("big/small", (c1, r1)), ("big/same-size keyspace", (c3, r3))):
        out[f"ratio {name} (pairs)"] = {
            "client": [round(b / a, 3) for a, b in zip(ca, c2)],
            "redis": [round(b / a, 3) for a, b in zip(ra, r2)]}
    return out


def keys_scenario(server: RedisServer, users: int = 1000, per_key: int = 10) -> dict:
    server.flush()
    asyncio.run(_fill(server.url, users, 3 * per_key, keys=("a", "b", "c"), user_concurrency=3,
                      data=lambda uid, i: uid))
    n = users * 3 * per_key
    log = StartLog("scheduling-keys")
    proc = _worker(server.url, log, 50, user_concurrency=3)
    ok = log.wait_for(n, 300, proc)
    common.stop(proc)
    entries = sorted(log.entries)
    half = Counter(d for _, d in entries[:len(entries) // 2])
    counts = [half.get(f"u{i}", 0) for i in range(users)]
    return {"jobs": len(entries), "complete": ok, "throughput": log.throughput(),
            "max_starts": max(counts), "min_starts": min(counts),
            "max_over_min": max(counts) / max(1, min(counts))}


def memory(server: RedisServer, scale: float) -> dict:
    out = {}
    cases = {"10 users, default key": (10, max(1000, int(100_000 * scale)), ("",)),
             "100,000 users x 3 keys": (max(1000, int(100_000 * scale)), 3, ("a", "b", "c"))}
    for label, (users, per_user, keys) in cases.items():
        server.flush()
        r = server.client()
        mem0 = r.info("memory")["used_memory"]
        asyncio.run(_fill(server.url, users, per_user, keys=keys))
        jobs = users * per_user
        out[label] = {"jobs": jobs, "bytes_per_job":
                      (r.info("memory")["used_memory"] - mem0) / jobs - len(PAYLOAD)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scheduling", description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--only", default="runat,scheduled,keys,memory")
    args = p.parse_args(argv)
    server = RedisServer()
    server.start()
    try:
        for part in args.only.split(","):
            t = time.time()
            if part == "runat":
                result = runat(server)
            elif part == "scheduled":
                result = scheduled_cost(server, max(10_000, int(1_000_000 * args.scale)))
            elif part == "keys":
                result = keys_scenario(server)
            elif part == "memory":
                result = memory(server, args.scale)
            else:
                raise SystemExit(f"unknown part {part!r}")
            print(f"{part} ({time.time() - t:.0f} s): {result}", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
