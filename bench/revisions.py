"""Scenarios 1 and 2 of this queue at two git revisions, in turn (A B A B), in one run.

    python -m bench.revisions a10a8c6                  # that revision (A) beside this checkout (B)
    python -m bench.revisions a10a8c6 --reps 3 --scale 0.5
    python -m bench.revisions a10a8c6 324efe6          # two revisions, neither this checkout

Why: a change that reorganises the engine must not slow it. Absolute rates on a
shared machine mean little; the same scenario run at both revisions side by side,
alternating, gives a ratio that does.

Revision A is checked out with `git worktree` under bench/.work/; B is this
working tree. One redis-server serves both. Each run is a child process started
in its revision's checkout (its own `bench`, engine and `python -m workers`),
draining a backlog of no-op jobs as bench/throughput.py does: scenario 1 is one
user at concurrency 1, scenario 2 is 1,000 users at concurrency 50.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from .common import ROOT, WORK, RedisServer
from .throughput import S1_JOBS, S2_CONC, S2_JOBS, S2_USERS

# Run in the revision's checkout: its own bench.systems and bench.throughput.
CHILD = """
import json, sys
from bench import common
from bench.systems import all_systems, drain_run
from bench.throughput import _jobs
n, users, concurrency = (int(a) for a in sys.argv[1:4])
server = common.RedisServer()
server.start()  # REDIS_URL is set: the parent's server, flushed before the run
rate, started, _ = drain_run(server, all_systems()["ours"], _jobs(n, users), concurrency, 300)
print(json.dumps({"rate": rate, "started": started}))
"""

# Scenario 5's hot path (bench/scale.py): chained finish+claim steps from one
# client, with `users` x `per_user` queued; client µs per step, Redis µs per call.
CHILD_STEPS = """
import asyncio, json, sys
from bench import common
from bench.scale import _fill, _steps
users, per_user = int(sys.argv[1]), int(sys.argv[2])
server = common.RedisServer()
url = server.start()
server.flush()
asyncio.run(_fill(url, users, per_user))
r = server.client()
r.config_resetstat()
step = asyncio.run(_steps(url, 3000))
st = [r.info("commandstats").get(f"cmdstat_{c}", {}) for c in ("evalsha", "fcall")]
calls, usec = sum(s.get("calls", 0) for s in st), sum(s.get("usec", 0) for s in st)
print(json.dumps({"client_us": step * 1e6, "redis_us": usec / max(1, calls)}))
"""

STEP_CASES = {"5 steps (10 users x 100 queued)": (10, 100),
              "5 steps (1,000 users x 10 queued)": (1000, 10)}

SCENARIOS = {  # name: (jobs, users, concurrency)
    "1 (one user, concurrency 1)": (S1_JOBS["ours"], 1, 1),
    "2 (1,000 users, concurrency 50)": (S2_JOBS["ours"], S2_USERS, S2_CONC["ours"]),
}


def checkout(rev: str) -> str:
    """A worktree of `rev` under bench/.work/, made once."""
    path = WORK / f"rev-{rev}"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
                       check=True, capture_output=True)
    return str(path)


def run_once(where: str, url: str, n: int, users: int, concurrency: int) -> float:
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": where}
    done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(users), str(concurrency)],
                          cwd=where, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"run in {where} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["rate"]


def run_steps(where: str, url: str, users: int, per_user: int) -> dict:
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": where}
    done = subprocess.run([sys.executable, "-c", CHILD_STEPS, str(users), str(per_user)],
                          cwd=where, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"steps in {where} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__.splitlines()[0])
    p.add_argument("old", help="the revision to compare against (A)")
    p.add_argument("new", nargs="?", help="the revision measured (B); default: this checkout")
    p.add_argument("--reps", type=int, default=3, help="pairs of runs per scenario (default 3)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply job counts (default 1)")
    p.add_argument("--steps", action="store_true",
                   help="also scenario 5's finish+claim steps: client µs per step, Redis µs per call")
    args = p.parse_args(argv)

    sides = {f"A {args.old}": checkout(args.old),
             f"B {args.new or 'this checkout'}": checkout(args.new) if args.new else str(ROOT)}
    server = RedisServer()
    url = server.start()
    print(f"Redis at {url}; {args.reps} pairs per scenario, A B A B; jobs/s from first to last start")
    try:
        for name, (jobs, users, concurrency) in SCENARIOS.items():
            n = max(200, int(jobs * args.scale))
            rates: dict[str, list[float]] = {side: [] for side in sides}
            for _ in range(args.reps):
                for side, where in sides.items():
                    rates[side].append(run_once(where, url, n, users, concurrency))
            (a, ra), (b, rb) = rates.items()
            ratios = [y / x for x, y in zip(ra, rb)]
            print(f"scenario {name}, {n} jobs:")
            for side, values in rates.items():
                print(f"  {side:<24} median {statistics.median(values):8.0f}   "
                      f"runs {' '.join(f'{v:.0f}' for v in values)}")
            print(f"  B/A ratio              median {statistics.median(ratios):.3f}   "
                  f"pairs {' '.join(f'{r:.3f}' for r in ratios)}")
        for name, (users, per_user) in (STEP_CASES.items() if args.steps else ()):
            got: dict[str, list[dict]] = {side: [] for side in sides}
            for _ in range(args.reps):
                for side, where in sides.items():
                    got[side].append(run_steps(where, url, users, per_user))
            print(f"scenario {name}:")
            for field in ("client_us", "redis_us"):
                (a, ra), (b, rb) = ((side, [r[field] for r in rows]) for side, rows in got.items())
                ratios = [y / x for x, y in zip(ra, rb)]
                print(f"  {field:<10} A median {statistics.median(ra):7.1f}  B median "
                      f"{statistics.median(rb):7.1f}  B/A median {statistics.median(ratios):.3f}"
                      f"  pairs {' '.join(f'{r:.3f}' for r in ratios)}  (lower is better)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
