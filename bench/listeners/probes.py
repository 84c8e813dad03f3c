"""What the run reads off the processes and Redis: RSS, CPU, connections, subscriptions."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from ..common import get_text


def rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU of each process so far (nan once it is gone)."""
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = float("nan")
    return out


def cpu_pressure_us() -> float:
    """Microseconds some task waited for a CPU (Linux pressure stall information)."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some"):
                    return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


@dataclass
class CpuUse:
    """CPU over a window: % of one core by process, and how long tasks waited for a core."""

    percent: dict[str, float]  # by the names CpuMeter was given
    api_seconds: float
    pressure_pct: float  # of the window
    wall: tuple[float, float]  # epoch seconds, to count the messages the API's CPU served


class CpuMeter:
    """Reads CPU at a window's start and end; `pids` names the processes, "api" among them."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def start(self) -> None:
        self.c0, self.t0 = cpu_seconds(list(self.pids.values())), time.perf_counter()
        self.psi0, self.wall0 = cpu_pressure_us(), time.time()

    def stop(self) -> CpuUse:
        c1, t1 = cpu_seconds(list(self.pids.values())), time.perf_counter()
        psi1, wall1 = cpu_pressure_us(), time.time()
        span = t1 - self.t0
        api = self.pids["api"]
        return CpuUse(
            percent={name: 100 * (c1[pid] - self.c0[pid]) / span
                     for name, pid in self.pids.items()},
            api_seconds=c1[api] - self.c0[api],
            pressure_pct=100 * (psi1 - self.psi0) / 1e6 / span,
            wall=(self.wall0, wall1),
        )


def api_redis_connections(r) -> int:
    """Connections the API holds to Redis: it names them `queue-api...`
    (CLIENT LIST; cheap beside reading the socket table of 5,000 listeners)."""
    return sum(1 for c in r.client_list() if c.get("name", "").startswith("queue-api"))


def redis_clients(r) -> int:
    """Every client connected to Redis (`INFO clients`)."""
    return int(r.info("clients")["connected_clients"])


def active_subscriptions(port: int) -> int:
    """The API's own count, from its /metrics."""
    m = re.search(r"^graphql_active_subscriptions (\S+)$",
                  get_text(f"http://127.0.0.1:{port}/metrics"), re.MULTILINE)
    return int(float(m.group(1))) if m else -1


async def seconds_until(check, target: int, timeout: float) -> float:
    """Seconds until check() >= target (polled off the loop), nan on timeout."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if await loop.run_in_executor(None, check) >= target:
                return time.perf_counter() - t0
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return float("nan")


@dataclass
class Peaks:
    """The highest readings during a window, sampled every second."""

    api_redis_connections: int = 0
    redis_clients: int = 0
    api_rss: int = 0


async def sample_peaks(api_pid: int, r, peaks: Peaks) -> None:
    """Raise `peaks` every second until cancelled (Redis is read off the loop)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        conns = await loop.run_in_executor(None, api_redis_connections, r)
        clients = await loop.run_in_executor(None, redis_clients, r)
        peaks.api_redis_connections = max(peaks.api_redis_connections, conns)
        peaks.redis_clients = max(peaks.redis_clients, clients)
        peaks.api_rss = max(peaks.api_rss, rss(api_pid))
