"""A job as the engine stores it: one Redis hash, also sent as JSON in events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum


class UpdateKind(str, Enum):
    """What changed, in an update of jobUpdates (CONTRACT §8)."""

    QUEUED = "QUEUED"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (UpdateKind.COMPLETED, UpdateKind.FAILED, UpdateKind.CANCELLED)

    @classmethod
    def of_status(cls, status: "JobStatus") -> "UpdateKind":
        """The kind that names a job's current status (a subscription's first update)."""
        return cls.STARTED if status == JobStatus.PROCESSING else cls(status.value)


class JobStatus(str, Enum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def ms_to_datetime(value) -> datetime | None:
    if value in (None, "", False):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)


@dataclass(slots=True)
class JobRecord:
    id: str
    user_id: str
    request_data: str
    status: JobStatus
    attempts: int
    created_at: datetime
    processed_data: str | None = None
    error: str | None = None
    last_error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dequeued_at: datetime | None = None
    idempotency_key: str | None = None
    progress: float | None = None  # 0..1, the running attempt's last report (CONTRACT §8)
    progress_message: str | None = None
    version: int = 0
    ordering_key: str | None = None  # None: the user's default lane
    priority: int = 0
    run_at: datetime | None = None  # None: enqueued without one
    scheduled: bool = False  # its runAt is still ahead (it waits in the due-time index)

    @classmethod
    def from_fields(cls, f: dict, job_id: str | None = None) -> "JobRecord":
        """From a Redis hash (HGETALL) or its JSON copy in an event. A waiting
        job's hash omits id, status, attempts and version (see _lib.lua)."""
        values = {attr: convert(f[name]) for attr, (name, convert) in HASH_FIELDS.items()
                  if f.get(name) is not None}
        return cls(id=f.get("id") or job_id, user_id=f["uid"],
                   status=JobStatus(f.get("status", "QUEUED")),
                   **{"request_data": "", "attempts": 0, **values})

    @classmethod
    def from_json(cls, body: str) -> "JobRecord":
        return cls.from_fields(json.loads(body))


# JobRecord attribute -> (its field in the Redis hash, how to read it): the one
# place the engine's short hash names meet the record's names.
HASH_FIELDS = {
    "request_data": ("data", str),
    "attempts": ("attempts", int),
    "created_at": ("created", ms_to_datetime),
    "processed_data": ("result", str),
    "error": ("error", str),
    "last_error": ("last_error", str),
    "started_at": ("started", ms_to_datetime),
    "finished_at": ("finished", ms_to_datetime),
    "dequeued_at": ("dequeued", ms_to_datetime),
    "idempotency_key": ("idem", str),
    "progress": ("progress", float),
    "progress_message": ("pmsg", str),
    "version": ("v", int),
    "ordering_key": ("k", str),
    "priority": ("p", int),
    "run_at": ("at", ms_to_datetime),
    "scheduled": ("w", lambda v: v == "1" or v == 1),
}


@dataclass(slots=True)
class Claimed:
    """A job a worker holds a lease on."""

    user_id: str
    job_id: str
    data: str
    attempts: int
    token: str

    @property
    def member(self) -> str:
        return f"{self.user_id}:{self.job_id}"


@dataclass(slots=True)
class Update:
    """One update of a job (jobUpdates): its cursor in the job's stream, what
    changed, and the job right after the change."""

    cursor: str
    kind: UpdateKind
    job: JobRecord
