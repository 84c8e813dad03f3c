"""The GraphQL types of the contract (`../shared/CONTRACT.md` §2)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import strawberry

from engine.jobs import JobRecord
from engine.jobs import JobStatus as _EngineJobStatus

# One enum for the engine, the history and the schema: the engine's, exposed as is.
JobStatus = strawberry.enum(_EngineJobStatus, name="JobStatus")


@strawberry.type
class User:
    id: strawberry.ID
    username: str
    created_at: datetime

    @classmethod
    def of(cls, user) -> "User":
        return cls(id=strawberry.ID(str(user.id)), username=user.username,
                   created_at=user.created_at)


@strawberry.type
class AuthPayload:
    token: str
    expires_at: datetime
    user: User


@strawberry.type
class Job:
    id: strawberry.ID
    request_data: str
    status: JobStatus
    processed_data: str | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    dequeued_at: datetime | None

    @classmethod
    def of(cls, job: JobRecord) -> "Job":
        """The GraphQL view of an engine record: every field of this type, by name."""
        return cls(**{name: getattr(job, name) for name in _JOB_FIELDS})


# Job's fields, read from JobRecord attributes of the same names.
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


@strawberry.type
class JobEdge:
    cursor: str
    node: Job


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo


@strawberry.type
class QueueStats:
    queued: int = strawberry.field(description="waiting to be processed")
    processing: int = strawberry.field(description="0 or 1 per user at the default settings")
    ready: int = strawberry.field(description="COMPLETED or FAILED and not yet dequeued")


@strawberry.type
class ProcessedEvent:
    cursor: str
    job: Job


@strawberry.input
class EnqueueInput:
    request_data: str
    idempotency_key: str | None = strawberry.UNSET
