"""The schema: queries, mutations and the subscription of the contract."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime
from contextlib import aclosing

import strawberry
from strawberry.types import Info
from strawberry.types.unset import UNSET


from .settings import Settings
from .context import Context
from .http.metrics import ENQUEUED, OperationMetrics
from .live.subscription import subscribe, subscribe_job
from .permissions import admin_mutation
from .types import (
    AuthPayload,
    EnqueueInput,
    Job,
    JobConnection,
    JobEdge,
    JobStatus,
    JobUpdate,
    PageInfo,
    ProcessedEvent,
    QueueStats,
    Role,
    User,
)
from .admin_schema import AdminMutation, AdminQuery
from .jobs import Item, encode_cursor
from .http.limits import schema_extensions

CtxInfo = Info[Context, None]


@strawberry.type
class Query(AdminQuery):
    @strawberry.field
    async def me(self, info: CtxInfo) -> User:
        ctx = info.context
        return User.of(await ctx.services.accounts.get(await ctx.user_id()))

    @strawberry.field
    async def job(self, info: CtxInfo, id: strawberry.ID) -> Job | None:
        ctx = info.context
        record = await ctx.jobs.get(await ctx.user_id(), str(id))
        return Job.of(record) if record else None

    @strawberry.field
    async def jobs(
        self, info: CtxInfo, status: JobStatus | None = UNSET, first: int | None = 20,
        after: str | None = UNSET,
    ) -> JobConnection:
        ctx = info.context
        records, has_next = await ctx.jobs.page(
            await ctx.user_id(), status.value if status else None,
            20 if first is None else first, after or None)
        edges = [JobEdge(cursor=encode_cursor(r.id), node=Job.of(r)) for r in records]
        return JobConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=has_next,
                               end_cursor=edges[-1].cursor if edges else None),
        )

    @strawberry.field
    async def queue_stats(self, info: CtxInfo) -> QueueStats:
        ctx = info.context
        s = await ctx.jobs.stats(await ctx.user_id())
        return QueueStats(queued=s.queued, processing=s.processing, ready=s.ready,
                          scheduled=s.scheduled)


@strawberry.type
class Mutation(AdminMutation):
    @strawberry.mutation
    async def register(self, info: CtxInfo, username: str, password: str) -> User:
        ctx = info.context
        return User.of(await ctx.services.accounts.register(username, password, ctx.client_address))

    @strawberry.mutation
    async def login(self, info: CtxInfo, username: str, password: str) -> AuthPayload:
        ctx = info.context
        token, user = await ctx.services.accounts.login(username, password, ctx.client_address)
        return AuthPayload(token=token.value, expires_at=token.expires_at, user=User.of(user))

    @strawberry.mutation(description=(
        "Set a new password (the same rules as register) and revoke every token issued "
        "before; answers a fresh token. A wrong old password gets UNAUTHENTICATED, like login."))
    async def change_password(self, info: CtxInfo, old_password: str,
                              new_password: str) -> AuthPayload:
        ctx = info.context
        token, user = await ctx.services.accounts.change_password(
            await ctx.user_id(), old_password, new_password, ctx.client_address)
        return AuthPayload(token=token.value, expires_at=token.expires_at, user=User.of(user))

    @strawberry.mutation
    async def enqueue(
        self, info: CtxInfo, request_data: str, idempotency_key: str | None = UNSET,
        ordering_key: str | None = UNSET, priority: int | None = 0,
        run_at: datetime | None = UNSET,
    ) -> Job:
        ctx = info.context
        [job] = await ctx.jobs.enqueue(await ctx.user_id(), [Item(
            request_data, idempotency_key or None, ordering_key or None, priority or 0,
            run_at or None)])
        ENQUEUED.inc()
        return Job.of(job)

    @strawberry.mutation
    async def enqueue_many(self, info: CtxInfo, items: list[EnqueueInput]) -> list[Job]:
        ctx = info.context
        uid = await ctx.user_id()
        if not items:
            return []
        jobs = await ctx.jobs.enqueue(uid, [Item(
            i.request_data, i.idempotency_key or None, i.ordering_key or None, i.priority or 0,
            i.run_at or None) for i in items])
        ENQUEUED.inc(len(jobs))
        return [Job.of(j) for j in jobs]

    @strawberry.mutation
    async def dequeue(self, info: CtxInfo, wait_seconds: float | None = 0) -> Job | None:
        ctx = info.context
        record = await ctx.jobs.dequeue(await ctx.user_id(), wait_seconds or 0)
        if record is not None:
            ctx.services.archiver.wake()
        return Job.of(record) if record else None

    @strawberry.mutation
    async def cancel(self, info: CtxInfo, id: strawberry.ID) -> Job:
        ctx = info.context
        record = await ctx.jobs.cancel(await ctx.user_id(), str(id))
        ctx.services.archiver.wake()
        return Job.of(record)

    # ---- operators (CONTRACT §9): admin_mutation() checks the role and audits ----

    @strawberry.mutation(extensions=admin_mutation(), description=(
        "Give an account a role (admins only). Demoting the last admin is a CONFLICT."))
    async def set_role(self, info: CtxInfo, username: str, role: Role) -> User:
        return User.of(await info.context.services.accounts.set_role(username, role))


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def processed(
        self, info: CtxInfo, after: str | None = UNSET
    ) -> AsyncGenerator[ProcessedEvent, None]:
        # the rules the shared path (graph/live/fanout.py) follows too
        subscription = await subscribe(info.context, after)
        async with aclosing(subscription.events()) as events:
            async for cursor, record in events:
                yield ProcessedEvent(cursor=cursor, job=Job.of(record))

    @strawberry.subscription(description=(
        "One job's updates: without `after` its current state first, then STARTED, "
        "PROGRESS, RETRYING and the terminal update, after which it completes. With "
        "`after` (an update's cursor) every update after it, then live ones."))
    async def job_updates(
        self, info: CtxInfo, id: strawberry.ID, after: str | None = UNSET
    ) -> AsyncGenerator[JobUpdate, None]:
        # the rules the shared path (graph/live/fanout.py) follows too
        subscription = await subscribe_job(info.context, id, after)
        async with aclosing(subscription.events()) as events:
            async for cursor, kind, record in events:
                yield JobUpdate(cursor=cursor, kind=kind, job=Job.of(record))


class Schema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        """Expected errors are the client's business; ErrorCodes logs unexpected ones."""


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # OperationMetrics first: it sees the codes that ErrorCodes assigns
    extensions = [OperationMetrics, *schema_extensions(settings)]
    return Schema(query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions)


def export_sdl() -> str:
    """The text of schema.graphql."""
    return build_schema().as_str() + "\n"
