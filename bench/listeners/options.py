"""What the command line asks for, typed, for every part of the run to read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    users: int
    per_user: int  # listeners per user
    rate: float  # jobs finishing per second in the measured window
    seconds: float
    light_rate: float  # a lighter rate measured first (0: none)
    light_seconds: float
    clients: int  # load-generator processes
    baseline: bool
    profile: bool
    profile_seconds: float
    archive: bool  # leave archiving to the in-memory MongoDB in the measurement
    write: bool  # append the section to bench/RESULTS.md

    @property
    def listeners(self) -> int:
        return self.users * self.per_user

    @property
    def phases(self) -> list[tuple[float, float]]:
        """(events/s, seconds) of ours' measured windows: the light rate first."""
        light = [(self.light_rate, self.light_seconds)] if self.light_rate > 0 else []
        return [*light, (self.rate, self.seconds)]
