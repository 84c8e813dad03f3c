"""The operators' queries and mutations (CONTRACT §9), merged into the schema's
Query and Mutation. Every field is for admins only, and every mutation writes
an audit line: both through graph/permissions.py, the one place roles are checked."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

import strawberry
from strawberry.types import Info
from strawberry.types.unset import UNSET

from .admin import Overview, UserRow
from .permissions import admin_mutation, admin_only
from .context import Context
from .jobs import encode_cursor
from .types import Job, JobConnection, JobEdge, JobStatus, PageInfo, User

CtxInfo = Info[Context, None]


@strawberry.type
class UserLimits:
    concurrency: int
    weight: int
    starts_per_minute: int
    paused: bool

    @classmethod
    def of(cls, limits) -> "UserLimits":
        return cls(concurrency=limits.concurrency, weight=limits.weight,
                   starts_per_minute=limits.starts_per_minute, paused=limits.paused)


@strawberry.input
class UserLimitsInput:
    concurrency: int | None = UNSET
    weight: int | None = UNSET
    starts_per_minute: int | None = UNSET
    paused: bool | None = UNSET


@strawberry.type
class AdminUserRow:
    user: User
    queued: int = strawberry.field(description="scheduled ones included")
    processing: int
    scheduled: int
    failed: int = strawberry.field(description="FAILED jobs of this user still in the history")
    oldest_queued_at: datetime | None = strawberry.field(
        description="the created time of its oldest QUEUED job")
    limits: UserLimits

    @classmethod
    def of(cls, row: UserRow) -> "AdminUserRow":
        q = row.queue
        oldest = (datetime.fromtimestamp(q.oldest_queued_ms / 1000, tz=timezone.utc)
                  if q.oldest_queued_ms else None)
        return cls(user=User.of(row.user), queued=q.queued, processing=q.processing,
                   scheduled=q.scheduled, failed=row.failed, oldest_queued_at=oldest,
                   limits=UserLimits.of(row.limits))


@strawberry.type
class AdminUserEdge:
    cursor: str
    node: AdminUserRow


@strawberry.type
class AdminUserConnection:
    edges: list[AdminUserEdge]
    page_info: PageInfo


@strawberry.type
class AdminOverview:
    users: int = strawberry.field(description="accounts, the ADMIN_USERNAME one included")
    users_waiting: int = strawberry.field(
        description="users with at least one QUEUED job that is due")
    queued: int = strawberry.field(description="scheduled ones included")
    processing: int
    scheduled: int
    completed_last_minute: int
    failed_last_minute: int
    oldest_wait_seconds: float | None = strawberry.field(
        description="how long the longest-waiting due job has waited")

    @classmethod
    def of(cls, o: Overview) -> "AdminOverview":
        return cls(**{name: getattr(o, name) for name in Overview.__slots__})


@strawberry.type
class ThroughputPoint:
    at: datetime = strawberry.field(description="the start of its 10 s interval")
    enqueued: int
    completed: int
    failed: int
    queued: int = strawberry.field(description="QUEUED jobs at the end of the interval")


@strawberry.enum
class AdminUserOrder(enum.Enum):
    BACKLOG = "BACKLOG"
    USERNAME = "USERNAME"


def _jobs(records, has_next: bool) -> JobConnection:
    edges = [JobEdge(cursor=encode_cursor(r.id), node=Job.of(r)) for r in records]
    return JobConnection(edges=edges, page_info=PageInfo(
        has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None))


def _given(value):
    return None if value is UNSET else value


@strawberry.type
class AdminQuery:
    @strawberry.field(extensions=admin_only())
    async def admin_overview(self, info: CtxInfo) -> AdminOverview:
        return AdminOverview.of(await info.context.admin.overview())

    @strawberry.field(extensions=admin_only())
    async def admin_users(self, info: CtxInfo, first: int | None = 50, after: str | None = UNSET,
                          order_by: AdminUserOrder | None = AdminUserOrder.BACKLOG
                          ) -> AdminUserConnection:
        rows, has_next = await info.context.admin.users(
            50 if first is None else first, after or None, order_by != AdminUserOrder.USERNAME)
        edges = [AdminUserEdge(cursor=c, node=AdminUserRow.of(r)) for c, r in rows]
        return AdminUserConnection(edges=edges, page_info=PageInfo(
            has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None))

    @strawberry.field(extensions=admin_only())
    async def admin_jobs(self, info: CtxInfo, status: JobStatus | None = UNSET,
                         username: str | None = UNSET, first: int | None = 50,
                         after: str | None = UNSET) -> JobConnection:
        return _jobs(*await info.context.admin.jobs(
            status.value if status else None, _given(username),
            50 if first is None else first, after or None))

    @strawberry.field(extensions=admin_only(), description=(
        "One point per 10 s, oldest first; `at` starts its interval."))
    async def admin_throughput(self, info: CtxInfo, minutes: int | None = 15
                               ) -> list[ThroughputPoint]:
        points = await info.context.admin.throughput(15 if minutes is None else minutes)
        return [ThroughputPoint(at=datetime.fromtimestamp(p.at, tz=timezone.utc),
                                enqueued=p.enqueued, completed=p.completed, failed=p.failed,
                                queued=p.queued) for p in points]


@strawberry.type
class AdminMutation:
    @strawberry.mutation(extensions=admin_mutation())
    async def set_user_limits(self, info: CtxInfo, username: str,
                              limits: UserLimitsInput) -> UserLimits:
        changes = {name: _given(getattr(limits, name))
                   for name in ("concurrency", "weight", "starts_per_minute", "paused")}
        return UserLimits.of(await info.context.admin.set_limits(username, **changes))

    @strawberry.mutation(extensions=admin_mutation())
    async def retry_job(self, info: CtxInfo, id: strawberry.ID) -> Job:
        return Job.of(await info.context.admin.retry_job(str(id)))

    @strawberry.mutation(extensions=admin_mutation())
    async def retry_failed(self, info: CtxInfo, username: str | None = UNSET,
                           finished_after: datetime | None = UNSET) -> int:
        return await info.context.admin.retry_failed(_given(username), _given(finished_after))

    @strawberry.mutation(extensions=admin_mutation())
    async def purge_queue(self, info: CtxInfo, username: str) -> int:
        return await info.context.admin.purge(username)
