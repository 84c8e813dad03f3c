"""Finish → listener latency, from what the load generators heard."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from ..common import percentile

WARMUP = 2.0  # seconds left out at the start of each window


@dataclass
class Heard:
    """Every message the listeners received: its job's finishedAt and its latency.

    Two flat arrays, not a list of pairs: 10,000 messages a second for half a
    minute stay small in the load generators and cheap to ship back."""

    finished: array  # epoch seconds
    latency_ms: array

    def __len__(self) -> int:
        return len(self.finished)

    def arrived_between(self, t0: float, t1: float) -> int:
        """Messages whose arrival (finishedAt + latency) fell in [t0, t1): those the
        server's CPU in that window was spent on."""
        return sum(1 for f, ms in zip(self.finished, self.latency_ms)
                   if t0 <= f + ms / 1000 < t1)


@dataclass
class Latency:
    """The messages of the jobs that finished in a window [w0, w1)."""

    received: int
    expected: float
    window_s: float
    msgs_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    over_100ms: float  # share of the messages
    by_second: list[tuple]  # (second since the start, messages, p50 ms, max ms)


def window_latency(heard: Heard, w0: float, w1: float, expected: float) -> Latency:
    sel = [ms for f, ms in zip(heard.finished, heard.latency_ms) if w0 <= f < w1]
    return Latency(
        received=len(sel), expected=expected, window_s=w1 - w0,
        msgs_per_s=len(sel) / (w1 - w0) if w1 > w0 else float("nan"),
        p50_ms=percentile(sel, 50), p99_ms=percentile(sel, 99),
        max_ms=max(sel) if sel else float("nan"),
        over_100ms=sum(1 for ms in sel if ms > 100) / len(sel) if sel else float("nan"),
        by_second=by_second(heard, w0 - WARMUP, w1),
    )


def by_second(heard: Heard, start: float, end: float) -> list[tuple]:
    """(second since the start, messages, p50 ms, max ms) by finishedAt: does latency build up?"""
    buckets: dict[int, list[float]] = {}
    for f, ms in zip(heard.finished, heard.latency_ms):
        if start <= f < end:
            buckets.setdefault(int(f - start), []).append(ms)
    return [(s, len(v), round(percentile(v, 50), 1), round(max(v), 1))
            for s, v in sorted(buckets.items())]
