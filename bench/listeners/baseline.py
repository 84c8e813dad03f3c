"""The same listeners and load against bench/broadcast_app.py, in the same run.

No Redis and no auth there, and an event's `finishedAt` is the moment it is
published in-process: what plain strawberry costs per listener, and what
sending one serialization to every listener of a user costs.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from .. import common
from ..common import PY, free_port, get_text, post_json, wait_http
from . import probes
from .latency import WARMUP, window_latency
from .loadgen import LoadGenerators
from .options import Options
from .results import Run, Window


@dataclass(frozen=True)
class Baseline:
    name: str
    path: str  # the WebSocket endpoint on broadcast_app
    label: str  # its column's heading in the report


BASELINES = (
    Baseline("baseline", "/graphql", "plain strawberry, in-memory broadcast"),
    Baseline("shared", "/shared", "same bytes to every listener (no GraphQL per listener)"),
)


async def measure_baseline(opts: Options, baseline: Baseline) -> Run:
    run = Run(baseline.name, baseline.label)
    port = free_port()
    app = common.spawn([PY, "-m", "uvicorn", "bench.broadcast_app:app", "--host", "127.0.0.1",
                        "--port", str(port), "--log-level", "warning", "--no-access-log"],
                       {}, f"listeners-{baseline.name}")
    count = f"http://127.0.0.1:{port}/count"
    generators = None
    try:
        wait_http(count, app)
        await asyncio.sleep(1.0)
        run.rss_before = probes.rss(app.pid)
        params = [{"user": f"u{i % opts.users}"} for i in range(opts.listeners)]
        generators = LoadGenerators(baseline.name, f"ws://127.0.0.1:{port}{baseline.path}",
                                    params, opts.clients)
        run.failed, _, run.accept_s = await generators.open_all(
            lambda: json.loads(get_text(count))["listeners"], f"{baseline.name}: ")
        await asyncio.sleep(2.0)
        run.rss_after = probes.rss(app.pid)
        meter = probes.CpuMeter({"api": app.pid, **generators.pids})
        print(f"  {baseline.name}: publishing {opts.rate:,.0f} events/s for "
              f"{opts.seconds:.0f} s ...", flush=True)
        meter.start()
        post_json(f"http://127.0.0.1:{port}/run?rate={opts.rate}&seconds={opts.seconds}"
                  f"&users={opts.users}", {})
        await asyncio.sleep(opts.seconds + 0.2)
        window = Window(opts.rate, opts.seconds, meter.stop())
        run.windows.append(window)
        await asyncio.sleep(3.0)
        heard, infos = await generators.stop()
        run.generators = [{k: v for k, v in i.items() if k != "samples"} for i in infos]
        start = min(heard.finished) if len(heard) else window.cpu.wall[0]
        w0, w1 = start + WARMUP, start + opts.seconds
        window.latency = window_latency(heard, w0, w1, opts.rate * (w1 - w0) * opts.per_user)
        window.api_cpu_us_per_msg = 1e6 * window.cpu.api_seconds / max(
            1, heard.arrived_between(*window.cpu.wall))
        run.received = len(heard)
        run.expected = int(opts.rate * opts.seconds) * opts.per_user
    finally:
        if generators:
            generators.kill()
        common.stop(app)
    return run
