"""Scenarios 1 and 2: draining a backlog of no-op jobs with one worker process.

Each system gets its whole backlog before its worker starts; throughput is
(jobs - 1) / (last handler start - first handler start), so process start-up
and enqueueing are outside the measurement. Systems run in turn, A B A B.

In the same repetition each peer also runs alone (bench/standalone.py: its own
plain drain script, set up per its docs), so a peer handicapped by the harness
shows as its harness figure falling below its standalone one. Ours and BullMQ
also get their Redis time per job (bench/redis_time.py) from the same drains.
"""

from __future__ import annotations

import statistics
import time

from . import standalone
from .common import Figure
from .results import Row
from .systems import all_systems, drain_run

# jobs per run: sized so each run takes a few seconds on 2 cores (slow peers
# get fewer jobs: a rate over 5 s of steady draining is as good as over 60 s)
S1_JOBS = {"ours": 10_000, "ours-sync": 5_000, "bullmq": 10_000, "saq": 2_000,
           "dramatiq": 1_500}
S2_USERS = 1_000
S2_JOBS = {"ours": 20_000, "ours-2p": 20_000, "bullmq": 20_000, "saq": 5_000, "dramatiq": 5_000,
           "celery": 2_000, "arq": 1_000}
# concurrency as the issue asks: None = the system's own default
S2_CONC = {"ours": 50, "ours-2p": 50, "bullmq": 50, "saq": 50, "dramatiq": 8, "celery": None, "arq": 10}
REDIS_TIMED = ("ours", "bullmq")  # Redis time per job measured on their drains


def _jobs(n: int, users: int) -> list[tuple[str, str]]:
    return [(f"u{i % users}", f"u{i % users}.{i}") for i in range(n)]


def _drain_all(server, reps, scale, scenario, order, jobs_per, users, conc, log):
    """Every system's harness run, each peer's standalone run after it, A B A B.
    Returns (harness figures, standalone figures, Redis time per system, jobs per run)."""
    systems = all_systems()
    alone = standalone.available()
    figs = {s: Figure(unit="jobs/s") for s in order}
    solo = {s: Figure(unit="jobs/s") for s in order if s in alone}
    rtimes: dict[str, list] = {s: [] for s in order if s in REDIS_TIMED}
    counts = {}
    for rep in range(reps):
        for name in order:
            n = max(200, int(jobs_per[name] * scale))
            counts[name] = n
            t = time.time()
            tp, started, _ = drain_run(server, systems[name], _jobs(n, users), conc[name],
                                       timeout=120, redis_time=rtimes.get(name))
            if started < n:
                log(f"  ! {name}: only {started}/{n} jobs started")
                tp = float("nan")
            figs[name].add(tp)
            extra = ""
            if name in rtimes and rtimes[name]:
                rt = rtimes[name][-1]
                extra = (f", Redis {rt.per_job_us:.1f} µs/job (CPU {rt.cpu_us:.1f}), "
                         f"worker CPU {rt.worker_cpu_us:.0f} µs/job")
            log(f"  s{scenario} rep {rep + 1} {name:10s} {tp:8.0f} jobs/s  "
                f"({n} jobs, {time.time() - t:.1f}s{extra})")
            if name in solo:
                t = time.time()
                rate = standalone.run(server, name, n, conc[name] or 1)
                solo[name].add(rate)
                log(f"  s{scenario} rep {rep + 1} {name + ' alone':16s} {rate:8.0f} jobs/s  "
                    f"({n} jobs, {time.time() - t:.1f}s)")
    return figs, solo, rtimes, counts


def _pairs(a: Figure, b: Figure) -> str:
    """Each repetition's a/b (run minutes apart, not hours): the spread a busy machine leaves."""
    return " ".join(f"{x / y:.2f}" for x, y in zip(a.values, b.values) if x == x and y == y and y)


def _setup_rows(label: str, systems, figs, solo, counts) -> list[Row]:
    rows = []
    for name, fig in solo.items():
        s = systems[name]
        row = Row(label, f"{s.name} in this harness (set-up check)", figs[name],
                  f"{s.name} alone: {standalone.SCRIPTS[name]}", fig, "0.8x-1.2x")
        row.met = 0.8 <= row.ratio <= 1.2 if row.ratio == row.ratio else None
        row.notes.append(f"{counts[name]} jobs a run in both, same concurrency; "
                         f"per repetition: {_pairs(figs[name], fig)}")
        rows.append(row)
    return rows


def _redis_rows(label: str, systems, rtimes) -> list[Row]:
    if not all(rtimes.get(s) for s in REDIS_TIMED):
        return []
    rows = []
    for what, attr in (("Redis time per job (INFO commandstats)", "per_job_us"),
                       ("Redis main-thread CPU per job (INFO cpu)", "cpu_us"),
                       ("worker process CPU per job (user + sys)", "worker_cpu_us")):
        ours = Figure([getattr(r, attr) for r in rtimes["ours"]], unit="µs",
                      higher_is_better=False)
        peer = Figure([getattr(r, attr) for r in rtimes["bullmq"]], unit="µs",
                      higher_is_better=False)
        row = Row(label, what, ours, f"{systems['bullmq'].name} {systems['bullmq'].version}",
                  peer)
        if attr == "per_job_us":
            row.target, row.met = "<= 1.0x", row.ratio <= 1.0
            scripts = statistics.median(r.scripts_us for r in rtimes["ours"])
            row.notes.append(
                f"scripts (EVALSHA or FCALL, inner commands included) {scripts:.1f} µs/job ours, "
                f"{statistics.median(r.scripts_us for r in rtimes['bullmq']):.1f} BullMQ; "
                "CONFIG RESETSTAT after the enqueue, read when every job finished")
        rows.append(row)
    return rows


def scenario1(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    systems = all_systems()
    order = [s for s in ("ours", "bullmq", "saq", "dramatiq", "ours-sync") if s in systems]
    conc = {s: 1 for s in order}
    figs, solo, rtimes, counts = _drain_all(server, reps, scale, 1, order, S1_JOBS, 1, conc, log)
    label = "1. one user, concurrency 1"
    rows = []
    for name in order:
        if name in ("ours", "ours-sync"):
            continue
        target = ">= 1.0x" if name == "bullmq" else ""
        row = Row(label, "throughput", figs["ours"],
                  f"{systems[name].name} {systems[name].version}", figs[name], target)
        if name == "bullmq":
            row.met = row.ratio >= 1.0
            row.notes.append(f"per repetition: {_pairs(figs['ours'], figs[name])}")
        row.notes.append(f"jobs per run: ours {counts['ours']}, {name} {counts[name]}")
        rows.append(row)
    if "ours-sync" in figs:
        rows.append(Row(label, "throughput, our sync handler (thread pool)",
                        figs["ours-sync"], "ours, async handler", figs["ours"],
                        notes=[f"jobs per run: {counts['ours-sync']}"]))
    return rows + _setup_rows(label, systems, figs, solo, counts) + \
        _redis_rows(label, systems, rtimes)


def scenario2(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    systems = all_systems()
    order = [s for s in ("ours", "bullmq", "saq", "dramatiq", "celery", "arq", "ours-2p")
             if s in systems]
    figs, solo, rtimes, counts = _drain_all(server, reps, scale, 2, order, S2_JOBS, S2_USERS,
                                            S2_CONC, log)
    label = "2. 1,000 users, concurrency 50"
    python_peers = [s for s in ("saq", "dramatiq", "celery", "arq") if s in figs]
    fastest = max(python_peers, key=lambda s: figs[s].median)
    rows = []
    for name in order:
        if name in ("ours", "ours-2p"):
            continue
        conc = S2_CONC[name]
        label_peer = f"{systems[name].name} {systems[name].version}, " + (
            f"concurrency {conc}" if name in ("bullmq", "saq") else
            f"{conc} threads (default)" if name == "dramatiq" else
            "default prefork pool" if name == "celery" else "default settings")
        row = Row(label, "throughput", figs["ours"], label_peer, figs[name])
        if name == "bullmq":
            row.target, row.met = ">= 0.5x", row.ratio >= 0.5
            row.notes.append(f"per repetition: {_pairs(figs['ours'], figs[name])}")
        elif name == fastest:
            row.target, row.met = ">= 2x (fastest Python peer)", row.ratio >= 2.0
        row.notes.append(f"jobs per run: ours {counts['ours']}, {name} {counts[name]}")
        rows.append(row)
    if "ours-2p" in figs and "bullmq" in figs:  # its own row: never the single-process ratio
        rows.append(Row(label, "throughput, ours with --processes 2 (two worker processes, "
                               "concurrency 50 each)", figs["ours-2p"],
                        f"{systems['bullmq'].name} {systems['bullmq'].version}, one process",
                        figs["bullmq"],
                        notes=[f"per repetition: {_pairs(figs['ours-2p'], figs['bullmq'])}"]))
    return rows + _setup_rows(label, systems, figs, solo, counts) + \
        _redis_rows(label, systems, rtimes)
