"""The GraphQL types of the contract (`../shared/CONTRACT.md` §2)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from engine.jobs import JobRecord

JobStatus = strawberry.enum(
    Enum("JobStatus", {s: s for s in ("QUEUED", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED")})
)


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
        return cls(
            id=strawberry.ID(job.id), request_data=job.request_data,
            status=JobStatus[job.status.value], processed_data=job.processed_data,
            error=job.error, attempts=job.attempts, created_at=job.created_at,
            started_at=job.started_at, finished_at=job.finished_at,
            dequeued_at=job.dequeued_at,
        )


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
