"""Scenario 5: does a job cost more when much is queued?

Cost per job is one worker hot-path step (finish.lua: record the outcome and
claim the next job, the worker's only round trip per job), run back to back
from one client; measured as client-side time per step and as Redis's own
time per script call (INFO commandstats, CONFIG RESETSTAT before each rep).
Memory: INFO used_memory before and after filling, divided by the jobs,
minus the payload. Peers' memory per queued job comes from the same 16-byte
payload (fewer jobs: their enqueue is slower).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from .common import Figure
from .redis_time import script_calls
from .results import Row
from .systems import all_systems, enqueue_bullmq, enqueue_saq, our_queue

PAYLOAD = "x" * 16
STEPS = 3000


async def _fill(url, users: int, per_user: int, parallel: int = 32) -> None:
    q = our_queue(url)
    sem = asyncio.Semaphore(parallel)

    async def one(uid):
        async with sem:
            for i in range(0, per_user, 1000):
                k = min(1000, per_user - i)
                await q.enqueue(uid, [(uuid.uuid4().hex, PAYLOAD, None) for _ in range(k)], 10**9)

    for start in range(0, users, 5000):  # bounded number of pending coroutines
        await asyncio.gather(*(one(f"u{n}") for n in range(start, min(users, start + 5000))))
    await q.redis.aclose()


async def _steps(url: str, steps: int, warmup: int = 200, block: int = 100) -> float:
    """Seconds per claim+finish step, chained as the worker chains them.

    The queue is topped up between blocks of steps (untimed, and sent as EVAL
    rather than EVALSHA so Redis's own per-call figure for the steps stays
    clean): the number queued stays where the case put it."""
    from engine import scripts
    from engine.queue import IDEMPOTENCY_TTL_SECONDS, NewJob

    q = our_queue(url)
    enqueue_src = scripts.source("enqueue")
    owner, lease = "bench", 30.0
    batch = await q.claim(q.keys.base(0), 1, owner, lease)
    job = batch.jobs[0]
    total = 0.0
    done = 0
    r = q.redis
    while done < warmup + steps:
        users = []
        t = time.perf_counter()
        for _ in range(block):
            batch = await q.finish(job, True, job.data, claim_n=1, owner=owner,
                                   lease_seconds=lease)
            users.append(job.user_id)
            job = batch.jobs[0]
        dt = time.perf_counter() - t
        if done >= warmup:
            total += dt
        done += block
        for uid in users:  # top up: one job back for each one finished
            await r.eval(enqueue_src, 1, q.keys.user_base(uid), uid, 10**9,
                         IDEMPOTENCY_TTL_SECONDS, *NewJob(uuid.uuid4().hex, PAYLOAD).args())
    await q.finish(job, True, job.data, claim_n=0, owner=owner, lease_seconds=lease)
    await q.redis.aclose()
    return total / (done - warmup)


def _case(server, users, per_user, reps, log):
    server.flush()
    r = server.client()
    mem0 = r.info("memory")["used_memory"]
    t = time.time()
    asyncio.run(_fill(server.url, users, per_user))
    jobs = users * per_user
    mem = (r.info("memory")["used_memory"] - mem0) / jobs - len(PAYLOAD)
    log(f"  s5 filled {jobs:,} jobs over {users:,} users in {time.time() - t:.1f}s; "
        f"{mem:.0f} B/job beyond the payload")
    client, server_us = Figure(unit="µs", higher_is_better=False), Figure(unit="µs",
                                                                           higher_is_better=False)
    steps = STEPS
    for rep in range(reps):
        r.config_resetstat()
        per = asyncio.run(_steps(server.url, steps))
        calls, usec = script_calls(r.info("commandstats"))
        client.add(per * 1e6)
        server_us.add(usec / max(1, calls))  # claim + finish calls
        log(f"  s5 rep {rep + 1} {jobs:,} queued / {users:,} users: {per * 1e6:.0f} µs per job "
            f"(client), {server_us.values[-1]:.1f} µs in Redis per script call")
    return client, server_us, mem, steps


def _peer_memory(server, system, enqueue, n):
    server.flush()
    r = server.client()
    mem0 = r.info("memory")["used_memory"]
    enqueue(server.url, [("u", PAYLOAD)] * n)
    return (r.info("memory")["used_memory"] - mem0) / n - len(PAYLOAD)


def scenario5(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    big = max(10_000, int(1_000_000 * scale))
    cases = {"small": (10, 100), "big-10": (10, big // 10), "big-100k": (min(100_000, big // 10), 10)}
    res = {k: _case(server, u, p, reps, log) for k, (u, p) in cases.items()}
    systems = all_systems()
    rows = []
    small_c, small_s, small_mem, _ = res["small"]
    for key, label in (("big-10", f"{big:,} queued, 10 users"),
                       ("big-100k", f"{big:,} queued, {cases['big-100k'][0]:,} users")):
        c, s, mem, steps = res[key]
        row = Row("5. scale", f"cost per job, {label} (client)", c,
                  "ours, 1,000 queued, 10 users", small_c, target="<= 1.2x", notes=[
                      f"{steps} chained finish+claim steps per rep (after 200 warm-up), one client; the "
                      "queue is topped up between blocks of 100 so its size stays put"])
        row.met = row.ratio <= 1.2
        rows.append(row)
        rows.append(Row("5. scale", f"cost per job, {label} (Redis time per call)", s,
                        "ours, 1,000 queued, 10 users", small_s))
    mem_fig = Figure(values=[res["big-10"][2]], unit="B/job", higher_is_better=False)
    mem_fig_u = Figure(values=[res["big-100k"][2]], unit="B/job", higher_is_better=False)
    n_peer = max(2000, int(20_000 * scale))
    peers = [("saq", enqueue_saq)]
    if "bullmq" in systems:
        peers.insert(0, ("bullmq", enqueue_bullmq))
    for name, enq in peers:
        m = _peer_memory(server, systems[name], enq, n_peer)
        log(f"  s5 {name}: {m:.0f} B per queued job beyond the payload ({n_peer:,} jobs)")
        pf = Figure(values=[m], unit="B/job", higher_is_better=False)
        row = Row("5. scale", f"Redis memory per queued job beyond payload ({big:,} jobs, 10 users)",
                  mem_fig, f"{systems[name].name} {systems[name].version} ({n_peer:,} jobs)", pf,
                  target="< 250 B", met=mem_fig.median < 250)
        rows.append(row)
    rows.append(Row("5. scale", f"Redis memory per queued job beyond payload "
                                f"({big:,} jobs, {cases['big-100k'][0]:,} users)",
                    mem_fig_u, "10 users, same count", mem_fig, target="< 250 B",
                    met=mem_fig_u.median < 250))
    return rows
