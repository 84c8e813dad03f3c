"""One script call after another, as a worker at concurrency 1 makes them:
redis-py's EVALSHA on our pool (a pooled connection per call) beside ours
(engine/scriptline.py: one pipelined connection for script calls), in turn,
A B A B, on the same Redis and event loop. Prints CPU and wall time per call
and the ratio of each pair.

    python -m bench.script_calls [--calls 20000] [--reps 4]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time

from redis.asyncio import Redis

from engine import connection
from engine.loop import run

from .common import RedisServer


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _per_call(script, calls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call, `calls` calls one after the other."""
    await script(args=["warm"])
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(calls):
        await script(args=["x"])
    return (_cpu() - cpu) / calls * 1e6, (time.perf_counter() - wall) / calls * 1e6


async def _main(url: str, calls: int, reps: int) -> None:
    ours = connection.client(url)
    # redis-py's plain client on the same pool settings: every call takes a pooled connection
    plain = Redis(connection_pool=ours.connection_pool)
    body = "return ARGV[1]"
    scripts = {"redis-py": plain.register_script(body), "ours": ours.register_script(body)}
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in scripts}
    for rep in range(reps):
        for name, script in scripts.items():
            figures[name].append(await _per_call(script, calls))
            cpu, wall = figures[name][-1]
            print(f"rep {rep + 1} {name:9s} CPU {cpu:6.1f} µs/call   wall {wall:6.1f} µs/call")
    for i, label in ((0, "CPU"), (1, "wall")):
        pairs = [o[i] / p[i] for o, p in zip(figures["ours"], figures["redis-py"])]
        print(f"{label}: ours/redis-py median {statistics.median(pairs):.2f} "
              f"(pairs {' '.join(f'{x:.2f}' for x in pairs)})")
    await ours.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=4)
    args = p.parse_args()
    server = RedisServer()
    url = server.start()
    try:
        run(_main(url, args.calls, args.reps))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
