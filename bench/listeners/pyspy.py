"""py-spy on the API under load: where its CPU goes, by kind of work."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field

from ..common import ROOT, WORK

RAW = WORK / "listeners-profile.raw"  # py-spy's collapsed stacks
SUMMARY = WORK / "listeners-profile.txt"

CATEGORIES = [  # (name, substrings of a frame's file), matched from the innermost frame out
    ("JSON encoding of each message", ("json/encoder", "json/__init__")),
    ("WebSocket send path (starlette, uvicorn, websockets, socket write)",
     ("graph/live/wsprotocol.py", "starlette/websockets", "uvicorn/protocols/websockets", "websockets/",
      "selector_events.py", "asyncio/streams")),
    ("GraphQL execution per listener (graphql-core, strawberry schema/extensions)",
     ("graphql/", "strawberry/schema/", "strawberry/extensions/", "strawberry/types/",
      "strawberry/utils/", "strawberry/annotation", "strawberry/types")),
    ("strawberry's graphql-transport-ws handler", ("strawberry/subscriptions/", "strawberry/asgi",
                                                   "strawberry/http/")),
    ("rendering each event once (graph/live/render.py, graph/live/fanout.py)",
     ("graph/live/render.py", "graph/live/fanout.py")),
    ("hub: reader, dispatch, JobRecord parsing (graph/live/events.py, engine/jobs.py)",
     ("graph/live/events.py", "engine/jobs.py")),
    ("subscription resolver and types (graph/schema.py, graph/types.py)",
     ("graph/schema.py", "graph/types.py", "graph/http/metrics.py")),
    ("archiver and MongoDB", ("graph/archiver.py", "graph/store.py", "mongomock", "beanie",
                              "motor")),
    ("redis-py", ("redis/",)),
    ("rest of graph/ (view, middleware, ...)", ("graph/",)),
    ("asyncio event loop itself", ("asyncio/",)),
]


@dataclass
class Profile:
    text: str  # the summary as written to SUMMARY, or why there is none
    samples: int = 0
    categories: list[tuple[str, float]] = field(default_factory=list)  # (kind, % of samples)


def find_py_spy() -> str | None:
    cand = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    return cand if os.path.exists(cand) else None


class Recording:
    """py-spy sampling a process for `seconds`, 100 times a second, without pausing it."""

    def __init__(self, spy: str, pid: int, seconds: float):
        RAW.unlink(missing_ok=True)  # a failed recording must not summarize the last run's
        self.proc = subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(seconds)),
                                      "-r", "100", "-f", "raw", "-o", str(RAW), "--nonblocking"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def profile(self) -> Profile:
        """Once py-spy is done: the summary (also written to SUMMARY)."""
        err = (await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.proc.communicate(timeout=60)[1])) or b""
        if not RAW.exists():
            return Profile(f"py-spy failed: {err.decode()[-500:]}")
        return summarize(RAW, SUMMARY)


def categorize(frames: list[str]) -> str:
    for fr in reversed(frames):
        where = fr[fr.rfind("(") + 1:]
        for name, needles in CATEGORIES:
            if any(n in where for n in needles):
                return name
    return "other"


def summarize(raw_path, out_path) -> Profile:
    """Self and inclusive shares of the samples, from py-spy's collapsed stacks."""
    cats: Counter = Counter()
    self_c: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(n)
            total += n
            frames = stack.split(";")
            self_c[frames[-1]] += n
            cats[categorize(frames)] += n
            for fr in set(frames):
                incl[fr] += n
    if not total:
        return Profile("no samples")
    lines = [f"{total} samples", "", "by kind (innermost matching frame):"]
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in cats.most_common()]
    lines += ["", "self time (top 25):"]
    lines += [f"  {100 * n / total:5.1f}%  {fr}" for fr, n in self_c.most_common(25)]
    lines += ["", "inclusive time (top 60):"]
    lines += [f"  {100 * n / total:5.1f}%  {fr}" for fr, n in incl.most_common(60)]
    text = "\n".join(lines)
    out_path.write_text(text + "\n")
    return Profile(text, total, [(k, 100 * v / total) for k, v in cats.most_common()])
