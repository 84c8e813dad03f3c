"""`python -m bench.listeners`: ours, then the baselines, then the section on the terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime

from .. import common
from ..common import WORK
from ..report import machine
from . import __doc__ as overview
from .baseline import BASELINES, measure_baseline
from .options import Options
from .ours import measure_ours
from .report import section
from .results import RunInfo


def parse(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench.listeners",
                                description=overview.splitlines()[0])
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--per-user", type=int, default=10, help="listeners per user")
    p.add_argument("--rate", type=float, default=1000.0, help="jobs finishing per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--light-rate", type=float, default=100.0,
                   help="a lighter rate measured first (0: skip)")
    p.add_argument("--light-seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=2, help="load-generator processes")
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--archive", action="store_true",
                   help="leave archiving to the in-memory MongoDB in the measurement")
    p.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    return Options(**vars(p.parse_args(argv)))


async def run(opts: Options) -> int:
    common.raise_nofile()
    server = common.RedisServer()
    server.start()
    t0 = time.time()
    info = RunInfo(date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                   redis=server.version(), machine=machine())
    print(f"Redis {info.redis} at {server.url}", flush=True)
    try:
        ours = await measure_ours(opts, server)
        others = [await measure_baseline(opts, b) for b in BASELINES] if opts.baseline else []
    finally:
        server.stop()
    info.wall = time.time() - t0
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "listeners.json").write_text(json.dumps(
        {"args": asdict(opts), "meta": asdict(info),
         "results": {r.name: asdict(r) for r in [ours, *others]}}, indent=1, default=str))
    text = section(opts, ours, others, info)
    print()
    print(text)
    if ours.unexpected:
        print("unexpected messages (samples):", ours.unexpected)
    if ours.profile:
        print("profile (bench/.work/listeners-profile.txt):")
        print("\n".join(ours.profile.text.splitlines()[:45]))
    if opts.write:
        path = common.BENCH / "RESULTS.md"
        with open(path, "a") as f:  # noqa: ASYNC230 (the run is over)
            f.write("\n" + text)
        print(f"appended to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    loop = common.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(run(opts))


if __name__ == "__main__":
    sys.exit(main())
