"""What each Lua script answers, and the one function that reads it.

Every script answers `{status, ...}`. `REPLIES` says, per script and status,
what the rest of the reply becomes: an exception class is raised with it as
arguments; a function turns it into what the `Queue` method returns (as
BullMQ maps its scripts' error codes). A status the table does not list means
the scripts and this file disagree: `UnknownReply` names both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .jobs import Claimed, JobRecord


class QueueFull(Exception):
    """The user already has QUEUE_MAX_PENDING jobs waiting."""

    def __init__(self, index: int):
        super().__init__(f"queue full at item {index}")
        self.index = index


class NotQueued(Exception):
    """Only a QUEUED job can be cancelled."""

    def __init__(self, status: str):
        super().__init__(f"job is {status}")
        self.status = status


class NotFinished(Exception):
    """Only a FAILED or CANCELLED job can be retried."""

    def __init__(self, status: str):
        super().__init__(f"job is {status}")
        self.status = status


class UnknownReply(Exception):
    """A script answered a status engine/replies.py does not know."""

    def __init__(self, script: str, reply: Any):
        status = reply[0] if isinstance(reply, list) and reply else reply
        known = ", ".join(REPLIES.get(script, {})) or "none: no such script"
        super().__init__(f"the {script!r} script answered status {status!r}; "
                         f"engine/replies.py knows {known}")
        self.script, self.reply = script, reply


@dataclass(slots=True)
class Enqueued:
    job_id: str
    created: bool  # False when an idempotency key matched an earlier job
    created_ms: int


@dataclass(slots=True)
class Batch:
    """What a claim or a finish brought back."""

    jobs: list[Claimed]
    next_due_ms: int  # until a retry falls due on that shard; -1: none
    verdict: str | None = None  # a finish's: completed, retry, failed or stale
    verdicts: list[str] | None = None  # finish_many's: one per outcome, in order


def _enqueued(t: int, *pairs) -> list[Enqueued]:
    """`t, jid1, created1, jid2, created2, ...`"""
    return [Enqueued(pairs[i], pairs[i + 1] == 1, int(t)) for i in range(0, len(pairs), 2)]


def _batch(next_due_ms: int, *jobs: list, verdict: str | None = None) -> Batch:
    """`next_due_ms, {uid, jid, data, attempts, token}, ...`"""
    return Batch(jobs=[Claimed(u, j, d, int(a), t) for u, j, d, a, t in jobs],
                 next_due_ms=int(next_due_ms), verdict=verdict)


def _recorded(next_due_ms: int, verdicts: list, *jobs: list) -> Batch:
    """`next_due_ms, {verdict, ...}, {uid, jid, data, attempts, token}, ...`"""
    batch = _batch(next_due_ms, *jobs)
    batch.verdicts = verdicts
    return batch


def _none() -> None:
    return None


@dataclass(slots=True)
class Limits:
    """A user's limits as stored (None: never set, the default applies)."""

    concurrency: int | None
    weight: int | None
    starts_per_minute: int | None
    paused: bool


def _limits(concurrency, weight, spm, paused) -> Limits:
    def number(v):
        return None if v is None else int(v)
    return Limits(number(concurrency), number(weight), number(spm), paused == "1")


@dataclass(slots=True)
class Retried:
    """A redriven job: as it was (None when re-created from MongoDB) and as it is now."""

    before: JobRecord | None
    job: JobRecord


def _retried(before: str, after: str) -> Retried:
    return Retried(JobRecord.from_json(before) if before else None, JobRecord.from_json(after))


# script -> status -> an exception to raise, or what the Queue method returns
REPLIES: dict[str, dict[str, Callable]] = {
    "enqueue": {"ok": _enqueued, "full": QueueFull},
    "claim": {"ok": _batch},
    # the status is the verdict; jobs are claimed whatever it is, a stale one too
    "finish": {v: partial(_batch, verdict=v) for v in ("completed", "retry", "failed", "stale")},
    "finish_many": {"ok": _recorded},
    "heartbeat": {"ok": lambda *lost: list(lost)},
    "reclaim": {"ok": int},
    "release": {"ok": lambda: True, "stale": lambda: False},
    "cancel": {"ok": JobRecord.from_json, "missing": _none, "conflict": NotQueued},
    "dequeue": {"ok": JobRecord.from_json, "empty": _none},
    "archived": {"ok": _none},
    "count": {"ok": int},
    "limits": {"ok": _limits},
    "retry": {"ok": _retried, "missing": _none, "conflict": NotFinished},
    "purge": {"ok": lambda cancelled, left: (int(cancelled), int(left))},
    "recount": {"ok": int},
    # the update's cursor ('' when nobody follows the job); None: the lease
    # was lost, the report discarded
    "progress": {"ok": str, "stale": _none},
    "watch": {"ok": lambda body, cursor: (JobRecord.from_json(body), cursor or None),
              "missing": lambda: (None, None)},
}


def decode(script: str, reply: Any) -> Any:
    """The value of a script's reply, or its exception raised."""
    if not isinstance(reply, list) or not reply:
        raise UnknownReply(script, reply)
    status, *rest = reply
    meaning = REPLIES.get(script, {}).get(status)
    if meaning is None:
        raise UnknownReply(script, reply)
    if isinstance(meaning, type) and issubclass(meaning, Exception):
        raise meaning(*rest)
    return meaning(*rest)
