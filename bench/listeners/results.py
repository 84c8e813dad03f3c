"""What a run measured: one `Run` per server, `OursRun` for `python -m graph`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .latency import Latency
from .probes import CpuUse, Peaks
from .producer import Production
from .pyspy import Profile

NAN = float("nan")


@dataclass
class Window:
    """One stretch of steady load and what it measured."""

    rate: float  # events/s
    seconds: float
    cpu: CpuUse
    latency: Latency | None = None  # once the load generators have reported
    api_cpu_us_per_msg: float = NAN  # server CPU in the window / messages arriving in it
    production: Production | None = None  # ours: the producer's finishes
    peaks: Peaks | None = None  # ours: sampled during the window


@dataclass
class Run:
    """One server under the same listeners and load."""

    name: str  # "ours", or the baseline's
    label: str  # its column's heading in the report
    failed: int = 0  # listeners that did not open
    accept_s: float = NAN  # until the server counted every listener subscribed
    rss_before: int = 0  # server RSS before the listeners
    rss_after: int = 0  # ... with all listeners, idle
    windows: list[Window] = field(default_factory=list)
    received: int = 0  # messages, whole run
    expected: int = 0
    generators: list[dict] = field(default_factory=list)  # each load generator's closing line

    @property
    def window(self) -> Window:
        """The window at the target rate (the last one)."""
        return self.windows[-1]

    @property
    def light(self) -> Window | None:
        """The lighter rate measured first, if any."""
        return self.windows[0] if len(self.windows) > 1 else None


@dataclass
class RedisConnections:
    """Redis' clients around the API: its own (named `queue-api...`) and all of them."""

    clients_before_api: int = 0
    api_idle: int = 0  # the API up, no listeners
    clients_api_idle: int = 0
    api_listening: int = 0  # all listeners open, no events
    clients_listening: int = 0
    clients_api_gone: int = 0  # after the API stopped


@dataclass
class OursRun(Run):
    register_s: float = NAN  # registering the users over HTTP (argon2)
    ready_s: float = NAN  # until the load generators had opened every listener
    rss_end: int = 0
    redis: RedisConnections = field(default_factory=RedisConnections)
    unexpected: list[str] = field(default_factory=list)  # samples of messages that were not events
    profile: Profile | None = None  # None: not asked for, or no py-spy
    profiled: Production | None = None  # the load while py-spy sampled


@dataclass
class RunInfo:
    """Where and when, for the report's header."""

    date: str
    redis: str  # its version
    machine: dict  # bench/report.py machine()
    wall: float = NAN  # seconds, the whole run
