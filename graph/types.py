"""The GraphQL types of the contract (`../shared/CONTRACT.md` §2)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import strawberry

from engine.jobs import JobRecord
from engine.jobs import JobStatus as _EngineJobStatus
from engine.jobs import UpdateKind as _EngineUpdateKind

from .errors import NotFound
from .inputs import plain_input
from .store import Role as _StoredRole

# One enum for the engine, the history and the schema: the engine's, exposed as is.
JobStatus = strawberry.enum(_EngineJobStatus, name="JobStatus")
JobUpdateKind = strawberry.enum(_EngineUpdateKind, name="JobUpdateKind")
# and one for roles: the stored one
Role = strawberry.enum(_StoredRole, name="Role")


@strawberry.type
class User:
    id: strawberry.ID
    username: str
    created_at: datetime
    role: Role = strawberry.field(description=(
        "ADMIN also uses the operators' API. Set by ADMIN_USERNAME and setRole, "
        "never by register."))

    @classmethod
    def of(cls, user) -> "User":
        return cls(id=strawberry.ID(str(user.id)), username=user.username,
                   created_at=user.created_at, role=user.role)


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
    ordering_key: str | None = strawberry.field(description=(
        "Jobs of one user and key run one at a time, in due order; null: the default key."))
    priority: int = strawberry.field(description=(
        "-100..100: which of the user's keys goes next at its turn (higher first)."))
    run_at: datetime | None = strawberry.field(description=(
        "Not started before this moment; null when enqueued without one."))
    progress: float | None = strawberry.field(description=(
        "0..1, the running attempt's last recorded report; null until the handler "
        "reports, and again when a new attempt starts"))
    progress_message: str | None = strawberry.field(description=(
        "the message of that report, if it had one"))
    user_id: strawberry.Private[str]

    @strawberry.field(description="The user who enqueued it.")
    async def owner(self, info: strawberry.Info) -> User:
        user = await info.context.users.load(self.user_id)
        if user is None:
            raise NotFound("the account that enqueued this job no longer exists")
        return User.of(user)

    @classmethod
    def of(cls, job: JobRecord) -> "Job":
        """The GraphQL view of an engine record: every field of this type, by name."""
        return cls(**{name: getattr(job, name) for name in _JOB_FIELDS})


# Job's fields, read from JobRecord attributes of the same names (those it is made
# with: not `owner`, which has its own resolver).
_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job) if f.init)


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
    scheduled: int = strawberry.field(
        description="the part of `queued` whose runAt is still ahead")


@strawberry.type
class ProcessedEvent:
    cursor: str
    job: Job


@strawberry.type(description=(
    "One change of a job (jobUpdates): `job` as it was right after it. The cursor "
    "resumes the subscription after this update."))
class JobUpdate:
    cursor: str
    kind: JobUpdateKind
    job: Job


@plain_input  # built directly: enqueueMany converts 1,000 of them (graph/inputs.py)
@strawberry.input
class EnqueueInput:
    request_data: str
    idempotency_key: str | None = strawberry.UNSET
    ordering_key: str | None = strawberry.field(default=strawberry.UNSET, description=(
        "Jobs of one key run one at a time, in due order; absent or \"\": the default key. "
        "At most 128 bytes, no control characters."))
    priority: int | None = strawberry.field(default=0, description=(
        "-100..100, higher first: which of your keys goes next at your turn."))
    run_at: datetime | None = strawberry.field(default=strawberry.UNSET, description=(
        "Not before this moment (at most QUEUE_MAX_DELAY_SECONDS ahead); past: now."))
