"""Scenario 3: latency at a steady 500 jobs/s.

A producer sends one job at a time on a fixed schedule (open loop: a late send
goes out at once, the schedule does not slip); the data is the send time, so
the handler's start log gives enqueue->start (client clock, including the
enqueue round trip). A subscriber reads the finish events and measures
finish->subscriber from each event's stream id, the millisecond Redis wrote
it at finish. The first half second is warm-up and left out.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlparse

from . import common
from .common import Figure, StartLog, percentile
from .results import Row
from .systems import all_systems, our_queue, start_ours, start_saq

RATE = 500
SECONDS = 5.0
USERS = 100
CONCURRENCY = 10
WARMUP = 0.5


def _split(entries, t_start):
    """enqueue->start in ms for jobs sent after the warm-up."""
    out = []
    for t, data in entries:
        sent = float(data.rsplit(":", 1)[1])
        if sent - t_start >= WARMUP:
            out.append((t - sent) * 1000)
    return out


async def _ours(url: str, total: int):
    from engine import connection

    q = our_queue(url)
    sub = connection.client(url)
    base = q.keys.base(0)
    fin: list[tuple[float, float]] = []  # (event ms, latency ms)
    engine_side: list[float] = []  # started - created, Redis clock (ms)
    done = asyncio.Event()

    async def subscriber():
        last = "$"
        while len(fin) < total:
            events = await q.read_shard_events(base, last, count=500, block_ms=1000, client=sub)
            now = time.time() * 1000
            for event in events:  # bodies are small here: each rides in the shard stream
                last = event.entry_id
                ms = int(event.entry_id.split("-")[0])
                fin.append((ms, now - ms))
                j = json.loads(event.body)
                engine_side.append(int(j["started"]) - int(j["created"]))
            if done.is_set() and not events:
                break

    task = asyncio.create_task(subscriber())
    await asyncio.sleep(0.2)
    t0 = time.time()
    for i in range(total):
        wait = t0 + i / RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        uid = f"u{i % USERS}"
        import uuid

        await q.enqueue(uid, [(uuid.uuid4().hex, f"{uid}:{time.time():.6f}", None)], 10**9)
    done.set()
    try:
        await asyncio.wait_for(task, 15)
    except asyncio.TimeoutError:
        pass
    await q.redis.aclose()
    await sub.aclose()
    cut = (t0 + WARMUP) * 1000
    return t0, [lat for ms, lat in fin if ms >= cut], engine_side


async def _saq_produce(url: str, total: int) -> float:
    import os

    os.environ["REDIS_URL"] = url
    from .peers import saq_app

    q = saq_app.queue()
    await q.connect()
    t0 = time.time()
    for i in range(total):
        wait = t0 + i / RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        await q.enqueue("noop", data=f"u{i % USERS}:{time.time():.6f}")
    await q.disconnect()
    return t0


def _run_ours(server, total):
    server.flush()
    log = StartLog("starts-s3-ours")
    proc = start_ours(server.url, log, CONCURRENCY, burst=False)
    try:
        time.sleep(1.0)  # the worker is up and blocked on its signal list
        t0, fin, engine_side = asyncio.run(_ours(server.url, total))
        log.wait_for(total, 10, proc)
    finally:
        common.stop(proc)
    return _split(log.entries, t0), fin, engine_side


def _run_saq(server, total):
    server.flush()
    log = StartLog("starts-s3-saq")
    proc = start_saq(server.url, log, CONCURRENCY)
    try:
        time.sleep(1.5)
        t0 = asyncio.run(_saq_produce(server.url, total))
        log.wait_for(total, 10, proc)
    finally:
        common.stop(proc)
    return _split(log.entries, t0)


def _run_bullmq(server, total):
    from .systems import start_bullmq

    server.flush()
    log = StartLog("starts-s3-bullmq")
    proc = start_bullmq(server.url, log, CONCURRENCY)
    u = urlparse(server.url)
    try:
        time.sleep(1.0)
        t_start = time.time()
        out = common.run_node("latency.mjs", {"REDIS_HOST": u.hostname, "REDIS_PORT": str(u.port),
                                              "BENCH_RATE": str(RATE),
                                              "BENCH_SECONDS": str(total / RATE)}, timeout=60)
        log.wait_for(total, 10, proc)
    finally:
        common.stop(proc)
    fin = json.loads(out.strip().splitlines()[-1])["finishToSubscriber"]
    # the node producer starts ~0.3 s after t_start (module load): skip a generous warm-up
    starts = _split(log.entries, t_start + 0.5)
    return starts, fin[int(RATE * WARMUP):]


def scenario3(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    total = max(200, int(RATE * SECONDS * scale))
    systems = all_systems()
    have_bull = "bullmq" in systems
    F = lambda: Figure(unit="ms", higher_is_better=False)  # noqa: E731
    figs = {k: F() for k in ("ours_s50", "ours_s99", "ours_f50", "ours_f99", "eng50", "eng99",
                             "saq_s50", "saq_s99", "bull_s50", "bull_s99", "bull_f50", "bull_f99")}
    for rep in range(reps):
        starts, fin, eng = _run_ours(server, total)
        for key, vals in (("ours_s", starts), ("ours_f", fin), ("eng", eng)):
            figs[f"{key}50"].add(percentile(vals, 50))
            figs[f"{key}99"].add(percentile(vals, 99))
        log(f"  s3 rep {rep + 1} ours     start p50 {percentile(starts, 50):.2f} p99 "
            f"{percentile(starts, 99):.2f} ms; finish->sub p50 {percentile(fin, 50):.2f} "
            f"p99 {percentile(fin, 99):.2f} ms ({len(starts)}/{len(fin)} samples)")
        if have_bull:
            bs, bf = _run_bullmq(server, total)
            for key, vals in (("bull_s", bs), ("bull_f", bf)):
                figs[f"{key}50"].add(percentile(vals, 50))
                figs[f"{key}99"].add(percentile(vals, 99))
            log(f"  s3 rep {rep + 1} bullmq   start p50 {percentile(bs, 50):.2f} p99 "
                f"{percentile(bs, 99):.2f} ms; finish->sub p50 {percentile(bf, 50):.2f} "
                f"p99 {percentile(bf, 99):.2f} ms ({len(bs)}/{len(bf)} samples)")
        ss = _run_saq(server, total)
        figs["saq_s50"].add(percentile(ss, 50))
        figs["saq_s99"].add(percentile(ss, 99))
        log(f"  s3 rep {rep + 1} saq      start p50 {percentile(ss, 50):.2f} p99 "
            f"{percentile(ss, 99):.2f} ms ({len(ss)} samples)")
    sc = f"3. steady {RATE} jobs/s"
    bull = f"{systems['bullmq'].name} {systems['bullmq'].version}" if have_bull else ""
    saq = f"{systems['saq'].name} {systems['saq'].version}"
    note = (f"{total} jobs per run over {USERS} users, worker concurrency {CONCURRENCY}; "
            f"first {WARMUP}s left out")
    rows = []
    for pct in ("50", "99"):
        for peer, key in ((bull, "bull_s"), (saq, "saq_s")):
            if not peer:
                continue
            r = Row(sc, f"enqueue->start p{pct}", figs[f"ours_s{pct}"], peer, figs[f"{key}{pct}"],
                    notes=[note])
            if pct == "99" and key == "bull_s":
                r.target, r.met = "< 5 ms", figs["ours_s99"].median < 5
            rows.append(r)
        if bull:
            r = Row(sc, f"finish->subscriber p{pct}", figs[f"ours_f{pct}"], bull + " QueueEvents",
                    figs[f"bull_f{pct}"], notes=[note])
            if pct == "99":
                r.target, r.met = "< 20 ms", figs["ours_f99"].median < 20
            rows.append(r)
    rows.append(Row(sc, "enqueue->start p50 / p99, Redis clock (job's created/started, ms "
                        "resolution)", figs["eng50"], "p99 (same runs)", figs["eng99"],
                    notes=["engine-side: excludes the enqueue reply and the handler call"]))
    return rows
