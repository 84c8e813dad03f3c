"""Each peer alone: its own plain drain script, nothing of the harness around it.

Why: a peer set up badly in the harness makes every ratio look better than it
is. Each script adds N jobs and drains them with one worker configured as the
peer's docs recommend, counts starts in memory and prints jobs/s over the same
window the harness measures (first start to last start). The harness runs it
in the same repetition as the peer's harness run and prints both; the peer's
harness figure should be within 20% of it.
"""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import urlparse

from . import common
from .common import PY, WORK

SCRIPTS = {  # system key: how to run its standalone script
    "bullmq": "bench/node/standalone.mjs",
    "saq": "bench/peers/saq_standalone.py",
    "dramatiq": "bench/peers/dramatiq_standalone.py",
}


def available() -> list[str]:
    return [k for k in SCRIPTS if k != "bullmq" or common.node_available()]


def run(server, name: str, jobs: int, concurrency: int, timeout: float = 180) -> float:
    """Flush, run the peer's standalone drain of `jobs` at `concurrency`; its jobs/s."""
    server.flush()
    u = urlparse(server.url)
    env = {**os.environ, "REDIS_URL": server.url, "REDIS_HOST": u.hostname or "127.0.0.1",
           "REDIS_PORT": str(u.port or 6379), "BENCH_JOBS": str(jobs),
           "BENCH_CONCURRENCY": str(concurrency), "PYTHONPATH": str(common.ROOT)}
    if name == "bullmq":
        cmd, cwd = ["node", str(common.NODE_DIR / "standalone.mjs")], common.NODE_DIR
    else:
        module = SCRIPTS[name].removesuffix(".py").replace("/", ".")
        cmd, cwd = [PY, "-m", module], common.ROOT
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / f"standalone-{name}.log", "ab") as err:
        done = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=err,
                              timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPTS[name]} failed; see bench/.work/standalone-{name}.log")
    out = json.loads(done.stdout.decode().strip().splitlines()[-1])
    if out["jobs"] < jobs:
        return float("nan")
    return out["rate"]
