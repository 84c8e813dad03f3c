"""A row of the results table: our figure, the peer's beside it, and the ratio."""

from __future__ import annotations

from dataclasses import dataclass, field

from .common import Figure, fmt


@dataclass
class Row:
    scenario: str
    metric: str
    ours: Figure
    peer: str = ""                 # name and version of the peer or baseline
    peer_fig: Figure | None = None
    target: str = ""               # e.g. ">= 1.0x" or "< 5 ms"
    met: bool | None = None        # the target, judged on the medians
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        if self.peer_fig is None or not self.peer_fig.values:
            return float("nan")
        p = self.peer_fig.median
        if p != p or p == 0:
            return float("nan")
        return self.ours.median / p

    def ratio_text(self) -> str:
        r = self.ratio
        if r != r:
            return "n/a"
        word = "" if self.ours.higher_is_better else " (lower is better)"
        return f"{r:.2f}x{word}"


def cell(fig: Figure | None, digits: int = 0) -> str:
    if fig is None or not fig.values:
        return "n/a"
    if len(fig.values) == 1:
        return f"{fmt(fig.median, digits)} {fig.unit}".strip()
    return f"{fmt(fig.median, digits)} [{fmt(fig.lo, digits)}–{fmt(fig.hi, digits)}] {fig.unit}".strip()
