"""The table on the terminal, bench/RESULTS.md, and bench/results.png."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone

from .common import BENCH
from .results import Row, cell


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    node = ""
    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": platform.platform(),
            "python": platform.python_version(), "node": node or "absent"}


def _digits(row: Row) -> int:
    return 2 if row.ours.unit in ("ms", "job-lengths") or row.ours.median < 100 else 0


def table(rows: list[Row]) -> str:
    head = ["scenario", "metric", "ours: median [min–max]", "peer / baseline",
            "peer: median [min–max]", "ours/peer", "target"]
    body = []
    for r in rows:
        d = _digits(r)
        verdict = "" if r.met is None else (" MET" if r.met else " MISSED")
        body.append([r.scenario, r.metric, cell(r.ours, d), r.peer or "—",
                     cell(r.peer_fig, d) if r.peer_fig else "—", r.ratio_text(),
                     (r.target + verdict).strip() or "—"])
    return "\n".join("| " + " | ".join(x) + " |" for x in
                     [head, ["---"] * len(head)] + body)


def note_lines(rows: list[Row]) -> list[str]:
    """Each row's notes (jobs per run, per-repetition ratios), once each."""
    notes = []
    for r in rows:
        for n in r.notes:
            line = f"- {r.scenario} / {r.metric} vs {r.peer or 'baseline'}: {n}"
            if line not in notes:
                notes.append(line)
    return notes


def plot(rows: list[Row], path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    tp = [r for r in rows if r.ours.unit == "jobs/s" and r.peer_fig is not None
          and "sync" not in r.metric]
    lat = [r for r in rows if r.ours.unit == "ms" and r.peer_fig is not None]
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    for ax, sel, title, unit in ((axes[0], tp, "Throughput (higher is better)", "jobs/s"),
                                 (axes[1], lat, "Latency (lower is better, log scale)", "ms")):
        labels, ours, peer, err_o, err_p = [], [], [], [[], []], [[], []]
        for r in sel:
            labels.append(f"{r.scenario.split('.')[0]}: {r.metric}\nvs {r.peer.split(',')[0]}")
            ours.append(r.ours.median)
            peer.append(r.peer_fig.median)
            err_o[0].append(r.ours.median - r.ours.lo)
            err_o[1].append(r.ours.hi - r.ours.median)
            err_p[0].append(r.peer_fig.median - r.peer_fig.lo)
            err_p[1].append(r.peer_fig.hi - r.peer_fig.median)
        y = range(len(labels))
        ax.barh([i - 0.2 for i in y], ours, 0.4, xerr=err_o, label="ours", color="#2a7ae2")
        ax.barh([i + 0.2 for i in y], peer, 0.4, xerr=err_p, label="peer", color="#aaaaaa")
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(unit)
        ax.set_title(title)
        if unit == "ms":
            ax.set_xscale("log")
        ax.legend()
    fig.suptitle("userqueue vs established queues: median of the repetitions, bars min–max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(rows: list[Row], meta: dict, analysis: str = "") -> str:
    m = machine()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    png = BENCH / "results.png"
    has_plot = plot(rows, png)
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    notes = note_lines(rows)
    md = f"""# Benchmark results

Produced by `python -m bench` ({meta['args']}) on {now}; every figure below comes
from that run. Median of {meta['reps']} repetitions with [min–max]; systems ran in
turn within each repetition (A B A B). Ratio = ours / peer: above 1 is better
for throughput, below 1 is better for latency, time and memory.

- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {m['os']}
- Python {m['python']}, Node {m['node']}, Redis {meta['redis_version']} ({meta['redis_how']})
- Versions: {versions}
- Wall time of the run: {meta['elapsed']:.0f} s

{table(rows)}

{'![throughput and latency by scenario](results.png)' if has_plot else '(matplotlib missing: no plot)'}

## How each figure was measured

See `bench/README.md`. Per-row details:

{chr(10).join(notes)}

{analysis}
"""
    (BENCH / "RESULTS.md").write_text(md)
    return md
