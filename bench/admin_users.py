"""Issue 16's two figures, printed (not written to RESULTS.md):

1. `adminUsers` with 100,000 accounts of which 10,000 have a backlog: the
   answer's time over HTTP (the app in-process, MongoDB the in-memory store,
   the queue state made through the engine itself). Target: < 50 ms.
2. What the counters and the throughput history cost the transitions:
   scenario 2 (1,000 users x 20 no-op jobs, one worker at concurrency 50)
   with this checkout's scripts and with an older revision's (`--old`: a
   `git archive` of it in a temp dir, its worker run from there; give the
   last revision before the counters, e.g. 18c7512), alternating A B A B in
   one run. Target: at most 10% slower.

    python -m bench.admin_users [--users 100000] [--backlog 10000] [--reps 2] [--old REV]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from . import common
from .common import ROOT, RedisServer, StartLog
from .systems import PREFIX, our_enqueue_async
from .throughput import S2_CONC, S2_USERS, _jobs

S2_JOB_COUNT = 20_000
CALLS = 30  # adminUsers calls timed


# ---- 1. adminUsers ----

def admin_users_latency(url: str, users: int, backlog: int) -> list[float]:
    from bson import ObjectId
    from starlette.testclient import TestClient

    from engine.keys import Keys
    from engine.queue import Queue
    from graph.settings import Settings
    from graph.app import create_app
    from graph.store import User

    prefix = f"b{uuid.uuid4().hex[:8]}"
    settings = Settings(app_env="test", redis_url=url, queue_prefix=prefix,
                        jwt_secret="bench-" + "x" * 40, log_level="WARNING",
                        auth_attempts_per_minute=0)

    async def fill() -> list[str]:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        docs = [{"_id": ObjectId(), "username": f"user{i:06d}", "username_key": f"user{i:06d}",
                 "password_hash": "-", "created_at": now, "token_version": 0}
                for i in range(users)]
        # mongomock checks a unique index by scanning every document per insert
        # (quadratic at 100,000); the bench's names are unique by construction
        await User.get_pymongo_collection().drop_index("username_key_1")
        for i in range(0, len(docs), 10_000):
            await User.get_pymongo_collection().insert_many(docs[i:i + 10_000])
        return [str(d["_id"]) for d in docs[:backlog]]

    async def queue_up(uids: list[str]) -> None:
        from engine import connection

        redis = connection.client(url)
        queue = Queue(redis, Keys(prefix))
        sem = asyncio.Semaphore(32)

        async def one(i: int, uid: str) -> None:
            async with sem:  # 1 to 5 jobs each: the order has something to sort
                await queue.enqueue(uid, [(uuid.uuid4().hex, "x", None)
                                          for _ in range(1 + i % 5)], 100)
        await asyncio.gather(*(one(i, u) for i, u in enumerate(uids)))
        # The jobs' MongoDB records are left out (the archive list dropped): the
        # in-memory store answers the page's FAILED aggregate by a Python scan of
        # every job document (about 15 us each), where MongoDB reads an index
        # range per user. See the report for that cost on its own.
        await redis.delete(Keys.archive(Keys(prefix).base(0)))
        await redis.aclose()

    with TestClient(create_app(settings)) as client:
        t = time.perf_counter()
        uids = client.portal.call(fill)
        # no background archiving while the jobs are made (see queue_up)
        client.portal.call(client.app.state.services.archiver.stop)
        asyncio.run(queue_up(uids))
        print(f"  made {users} accounts, {backlog} with a backlog, in "
              f"{time.perf_counter() - t:.1f}s")
        post = lambda q, v=None, tok=None: client.post(  # noqa: E731
            "/graphql", json={"query": q, "variables": v or {}},
            headers={"Authorization": f"Bearer {tok}"} if tok else {}).json()
        name, password = "bench_admin", "a bench password"
        post("mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}",
             {"u": name, "p": password})
        token = post("mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
                     {"u": name, "p": password})["data"]["login"]["token"]

        async def promote():
            await User.get_pymongo_collection().update_one(
                {"username_key": name}, {"$set": {"role": "ADMIN"}})
        client.portal.call(promote)
        query = ("{adminUsers(first:50){edges{node{user{id username} queued processing "
                 "scheduled failed oldestQueuedAt limits{concurrency weight paused}}} "
                 "pageInfo{hasNextPage}}}")
        for _ in range(3):  # warm up: first calls load scripts, build caches
            post(query, tok=token)
        times = []
        for _ in range(CALLS):
            t = time.perf_counter()
            body = post(query, tok=token)
            times.append((time.perf_counter() - t) * 1000)
        edges = body["data"]["adminUsers"]["edges"]
        assert len(edges) == 50 and edges[0]["node"]["queued"] == 5, body
    return times


# ---- 2. the counters' cost ----

def checkout(revision: str) -> Path:
    """A revision's tree in a temp dir (no worktree, nothing stashed)."""
    where = Path(tempfile.mkdtemp(prefix="userqueue-old-"))
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where


def drain(server: RedisServer, root: Path) -> tuple[float, float]:
    """Scenario 2 once, the worker's code (its Lua scripts) from `root`: jobs/s,
    and the Redis CPU time the worker's script calls took per job (INFO
    commandstats: far steadier than the rate on a shared machine)."""
    server.flush()
    asyncio.run(our_enqueue_async(server.url, _jobs(S2_JOB_COUNT, S2_USERS)))
    redis = server.client()
    redis.config_resetstat()
    log = StartLog(f"admin-cost-{root.name}")
    env = {**os.environ, "REDIS_URL": server.url, "QUEUE_PREFIX": PREFIX,
           "LOG_LEVEL": "WARNING", "BENCH_LOG": str(log.path), "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [common.PY, "-m", "workers", "--burst", "--concurrency", str(S2_CONC["ours"]),
         "--handler", "bench.handlers:noop_async"], env=env, cwd=root,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        log.wait_for(S2_JOB_COUNT, 120, proc)
    finally:
        common.stop(proc)
    if len(log.entries) < S2_JOB_COUNT:
        raise RuntimeError(f"only {len(log.entries)} of {S2_JOB_COUNT} jobs started")
    stats = redis.info("commandstats")
    usec = sum(stats.get(f"cmdstat_{c}", {}).get("usec", 0) for c in ("evalsha", "eval"))
    return log.throughput(), usec / S2_JOB_COUNT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--old", default="main", help="the revision to compare with")
    args = parser.parse_args()
    server = RedisServer()
    url = server.start()
    try:
        print(f"1. adminUsers(first: 50), {args.users} accounts, {args.backlog} with a backlog")
        times = admin_users_latency(url, args.users, args.backlog)
        times.sort()
        print(f"   median {statistics.median(times):.1f} ms, p90 "
              f"{times[int(len(times) * 0.9)]:.1f} ms, max {times[-1]:.1f} ms "
              f"over {len(times)} calls (target < 50 ms)")
        if args.skip_cost:
            return
        print(f"2. scenario 2 ({S2_USERS} users x {S2_JOB_COUNT // S2_USERS} jobs, "
              f"concurrency {S2_CONC['ours']}): {args.old}'s scripts vs these, A B A B")
        old = checkout(args.old)
        figures: dict[str, list[float]] = {"old": [], "this": []}
        lua: dict[str, list[float]] = {"old": [], "this": []}
        for rep in range(args.reps):
            for label, root in (("old", old), ("this", ROOT)):
                rate, usec = drain(server, root)
                figures[label].append(rate)
                lua[label].append(usec)
                print(f"   rep {rep + 1} {label:5s} {rate:8.0f} jobs/s, "
                      f"Redis script time {usec:5.1f} us/job")
        before, after = (statistics.median(figures[k]) for k in ("old", "this"))
        print(f"   median: old {before:.0f} jobs/s, with counters {after:.0f} jobs/s, "
              f"ratio {after / before:.3f} (target >= 0.90)")
        before, after = (statistics.median(lua[k]) for k in ("old", "this"))
        print(f"   Redis script time per job: old {before:.1f} us, with counters "
              f"{after:.1f} us (+{(after / before - 1) * 100:.0f}%)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
