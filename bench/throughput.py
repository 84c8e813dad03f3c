"""Scenarios 1 and 2: draining a backlog of no-op jobs with one worker process.

Each system gets its whole backlog before its worker starts; throughput is
(jobs - 1) / (last handler start - first handler start), so process start-up
and enqueueing are outside the measurement. Systems run in turn, A B A B.
"""

from __future__ import annotations

import time

from .common import Figure
from .results import Row
from .systems import all_systems, drain_run

# jobs per run: sized so each run takes a few seconds on 2 cores (slow peers
# get fewer jobs: a rate over 5 s of steady draining is as good as over 60 s)
S1_JOBS = {"ours": 10_000, "ours-sync": 5_000, "bullmq": 10_000, "saq": 2_000,
           "dramatiq": 1_500}
S2_USERS = 1_000
S2_JOBS = {"ours": 20_000, "bullmq": 20_000, "saq": 5_000, "dramatiq": 5_000,
           "celery": 2_000, "arq": 1_000}
# concurrency as the issue asks: None = the system's own default
S2_CONC = {"ours": 50, "bullmq": 50, "saq": 50, "dramatiq": 8, "celery": None, "arq": 10}


def _jobs(n: int, users: int) -> list[tuple[str, str]]:
    return [(f"u{i % users}", f"u{i % users}.{i}") for i in range(n)]


def scenario1(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    systems = all_systems()
    order = [s for s in ("ours", "bullmq", "saq", "dramatiq", "ours-sync") if s in systems]
    figs = {s: Figure(unit="jobs/s") for s in order}
    counts = {}
    for rep in range(reps):
        for name in order:
            n = max(200, int(S1_JOBS[name] * scale))
            counts[name] = n
            t = time.time()
            tp, started, _ = drain_run(server, systems[name], _jobs(n, 1), 1, timeout=120)
            if started < n:
                log(f"  ! {name}: only {started}/{n} jobs started")
                tp = float("nan")
            figs[name].add(tp)
            log(f"  s1 rep {rep + 1} {name:10s} {tp:8.0f} jobs/s  ({n} jobs, {time.time() - t:.1f}s)")
    rows = []
    for name in order:
        if name in ("ours", "ours-sync"):
            continue
        target = ">= 1.0x" if name == "bullmq" else ""
        row = Row("1. one user, concurrency 1", "throughput", figs["ours"],
                  f"{systems[name].name} {systems[name].version}", figs[name], target)
        if name == "bullmq":
            row.met = row.ratio >= 1.0
        row.notes.append(f"jobs per run: ours {counts['ours']}, {name} {counts[name]}")
        rows.append(row)
    if "ours-sync" in figs:
        rows.append(Row("1. one user, concurrency 1", "throughput, our sync handler (thread pool)",
                        figs["ours-sync"], "ours, async handler", figs["ours"],
                        notes=[f"jobs per run: {counts['ours-sync']}"]))
    return rows


def scenario2(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    systems = all_systems()
    order = [s for s in ("ours", "bullmq", "saq", "dramatiq", "celery", "arq") if s in systems]
    figs = {s: Figure(unit="jobs/s") for s in order}
    counts = {}
    for rep in range(reps):
        for name in order:
            n = max(200, int(S2_JOBS[name] * scale))
            counts[name] = n
            t = time.time()
            tp, started, _ = drain_run(server, systems[name], _jobs(n, S2_USERS),
                                       S2_CONC[name], timeout=120)
            if started < n:
                log(f"  ! {name}: only {started}/{n} jobs started")
                tp = float("nan")
            figs[name].add(tp)
            log(f"  s2 rep {rep + 1} {name:10s} {tp:8.0f} jobs/s  ({n} jobs, {time.time() - t:.1f}s)")
    python_peers = [s for s in ("saq", "dramatiq", "celery", "arq") if s in figs]
    fastest = max(python_peers, key=lambda s: figs[s].median)
    rows = []
    for name in order:
        if name == "ours":
            continue
        conc = S2_CONC[name]
        label = f"{systems[name].name} {systems[name].version}, " + (
            f"concurrency {conc}" if name in ("bullmq", "saq") else
            f"{conc} threads (default)" if name == "dramatiq" else
            "default prefork pool" if name == "celery" else "default settings")
        row = Row("2. 1,000 users, concurrency 50", "throughput", figs["ours"], label, figs[name])
        if name == "bullmq":
            row.target, row.met = ">= 0.5x", row.ratio >= 0.5
        elif name == fastest:
            row.target, row.met = ">= 2x (fastest Python peer)", row.ratio >= 2.0
        row.notes.append(f"jobs per run: ours {counts['ours']}, {name} {counts[name]}")
        rows.append(row)
    return rows
