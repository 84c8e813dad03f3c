"""Scenario 4: fairness. One user queues 10,000 jobs, then 100 other users one
job each; when does the last light user's job start?

Every job sleeps JOB_MS (async) so "job-lengths" mean something; each worker
runs at concurrency 10 and is up before the heavy user enqueues. The clock
starts just before the first light job is sent. FIFO peers (saq, arq) get the
same arrival order; a run is cut off after CAP seconds (the light jobs are
then still behind the heavy backlog, and the figure is reported as the cap).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from . import common
from .common import Figure, StartLog
from .results import Row
from .systems import all_systems, our_queue, start_arq, start_ours, start_saq

HEAVY = 10_000
LIGHT = 100
JOB_MS = 5.0
CONCURRENCY = 10
CAP = 6.0


async def _enqueue_ours(url, heavy):
    q = our_queue(url)
    for i in range(0, heavy, 1000):
        await q.enqueue("heavy", [(uuid.uuid4().hex, f"heavy.{j}", None)
                                  for j in range(i, min(heavy, i + 1000))], 10**9)
    t0 = time.time()
    for i in range(LIGHT):
        await q.enqueue(f"light{i}", [(uuid.uuid4().hex, f"light.{i}", None)], 10**9)
    await q.redis.aclose()
    return t0


async def _enqueue_saq(url, heavy):
    os.environ["REDIS_URL"] = url
    from .peers import saq_app

    q = saq_app.queue()
    await q.connect()
    for i in range(0, heavy, 500):
        await asyncio.gather(*(q.enqueue("noop", data=f"heavy.{j}")
                               for j in range(i, min(heavy, i + 500))))
    t0 = time.time()
    for i in range(LIGHT):
        await q.enqueue("noop", data=f"light.{i}")
    await q.disconnect()
    return t0


async def _enqueue_arq(url, heavy):
    os.environ["REDIS_URL"] = url
    from .peers import arq_app
    from arq import create_pool

    pool = await create_pool(arq_app.WorkerSettings.redis_settings)
    for i in range(0, heavy, 50):
        await asyncio.gather(*(pool.enqueue_job("noop", f"heavy.{j}")
                               for j in range(i, min(heavy, i + 50))))
    t0 = time.time()
    for i in range(LIGHT):
        await pool.enqueue_job("noop", f"light.{i}")
    await pool.aclose()
    return t0


def _run(server, name, start, enqueue, heavy):
    server.flush()
    log = StartLog(f"starts-s4-{name}")
    proc = start(server.url, log, CONCURRENCY, sleep=JOB_MS / 1000)
    try:
        time.sleep(1.5)
        t0 = asyncio.run(enqueue(server.url, heavy))
        deadline = time.time() + CAP
        while time.time() < deadline:
            log.read()
            if sum(1 for _, d in log.entries if d.startswith("light")) >= LIGHT:
                break
            time.sleep(0.02)
    finally:
        common.stop(proc)
    log.read()
    light = [t for t, d in log.entries if d.startswith("light")]
    heavy_before = sum(1 for t, d in log.entries
                       if d.startswith("heavy") and t >= t0 and (not light or t <= max(light)))
    if len(light) < LIGHT:
        return float("nan"), len(light), heavy_before
    return (max(light) - t0) * 1000, len(light), heavy_before


def scenario4(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    heavy = max(1000, int(HEAVY * scale))
    systems = all_systems()
    def ours(url, log, conc, sleep):
        return start_ours(url, log, conc, sleep=sleep, burst=False)

    runs = {"ours": (ours, _enqueue_ours), "saq": (start_saq, _enqueue_saq),
            "arq": (start_arq, _enqueue_arq)}
    figs = {k: Figure(unit="ms", higher_is_better=False) for k in runs}
    capped = {k: 0 for k in runs}
    for rep in range(reps):
        for name, (start, enq) in runs.items():
            ms, n_light, heavy_before = _run(server, name, start, enq, heavy)
            if ms != ms:
                capped[name] += 1
                ms_show = f"> {CAP * 1000:.0f} (cut off; {n_light}/{LIGHT} light jobs started)"
                figs[name].add(CAP * 1000)
            else:
                ms_show = f"{ms:.0f}"
                figs[name].add(ms)
            log(f"  s4 rep {rep + 1} {name:5s} last light start after {ms_show} ms = "
                f"{ms / JOB_MS if ms == ms else float('nan'):.1f} job-lengths; "
                f"{heavy_before} heavy jobs started meanwhile")
    rows = []
    jl = Figure(values=[v / JOB_MS for v in figs["ours"].values], unit="job-lengths",
                higher_is_better=False)
    for peer in ("saq", "arq"):
        s = systems[peer]
        note = [f"{heavy} heavy + {LIGHT} light jobs of {JOB_MS:g} ms, concurrency {CONCURRENCY}"]
        if capped[peer]:
            note.append(f"{peer}: {capped[peer]}/{reps} runs cut off at {CAP:g} s with light jobs "
                        "still waiting behind the heavy backlog; the cap is the figure, so the "
                        "ratio understates the gap")
        rows.append(Row("4. fairness", "last light user's job starts after", figs["ours"],
                        f"{s.name} {s.version} (FIFO)", figs[peer], notes=note))
    rows.append(Row("4. fairness", "... in job-lengths", jl, "", None, target="<= 100",
                    met=jl.median <= 100))
    return rows
