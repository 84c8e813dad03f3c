"""The rules of a `processed` or `jobUpdates` subscription, the same on both
paths that serve it.

Strawberry runs the resolver in graph/schema.py; graph/live/fanout.py serves
the documents it can share itself. Both start and end a subscription here:
the token names the user, a cursor (`after`) is checked before anything is
registered, and while its events flow the subscription counts in
`graphql_active_subscriptions`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
import re
from contextlib import aclosing

from engine.jobs import JobRecord, UpdateKind

from ..errors import BadUserInput, NotFound
from ..http.metrics import SUBSCRIPTIONS
from .events import EventHub, parse_cursor


class ProcessedSubscription:
    """A user's accepted subscription to their events, from `after` (None: from now)."""

    def __init__(self, hub: EventHub, user_id: str, after: str | None):
        self.hub = hub
        self.user_id = user_id
        self.after = after

    async def events(self, *, sink: Callable[[str, JobRecord], bool] | None = None,
                     ) -> AsyncIterator[tuple[str, JobRecord]]:
        """The user's events (EventHub.listen, `sink` included), counted as one
        active subscription while they flow. However this ends (the client
        stops, the socket goes, the hub fails), the listener is gone after."""
        SUBSCRIPTIONS.inc()
        try:
            async with aclosing(self.hub.listen(self.user_id, self.after, sink=sink)) as events:
                async for event in events:
                    yield event
        finally:
            SUBSCRIPTIONS.dec()


async def subscribe(context, after: str | None) -> ProcessedSubscription:
    """The caller's subscription (context: graph.context.Context), or the error
    the client is to get: UNAUTHENTICATED without a valid token,
    BAD_USER_INPUT for a cursor that is malformed or no longer retained; a
    store that fails raises its own error. `after` unset or "": from now."""
    user_id = await context.user_id()
    after = after or None
    hub = context.services.hub
    if after is not None:
        await hub.check_cursor(user_id, after)
    return ProcessedSubscription(hub, user_id, after)


# what a job id can look like (the API makes ObjectId hex strings); anything else is
# refused before it reaches a Redis key name
JOB_ID = re.compile(r"[0-9A-Za-z_.:-]{1,128}")


class JobUpdatesSubscription:
    """A user's accepted subscription to one of their jobs' updates (CONTRACT §8)."""

    def __init__(self, hub: EventHub, user_id: str, record: JobRecord, after: str | None):
        self.hub = hub
        self.user_id = user_id
        self.record = record
        self.after = after

    async def events(self, *, sink: Callable[..., bool] | None = None,
                     ) -> AsyncIterator[tuple[str, UpdateKind, JobRecord]]:
        """(cursor, kind, job) until the terminal update (EventHub.job_updates),
        counted as one active subscription meanwhile."""
        SUBSCRIPTIONS.inc()
        try:
            async with aclosing(self.hub.job_updates(self.user_id, self.record, self.after,
                                                     sink=sink)) as events:
                async for event in events:
                    yield event
        finally:
            SUBSCRIPTIONS.dec()


async def subscribe_job(context, job_id: str, after: str | None) -> JobUpdatesSubscription:
    """The caller's subscription to a job's updates, or the error the client is
    to get: UNAUTHENTICATED, BAD_USER_INPUT for an id that cannot be a job's,
    a malformed cursor or one the job's stream no longer holds, NOT_FOUND for
    a job that is not the caller's (or does not exist: the two look the same).
    `after` unset or "": the current state first."""
    user_id = await context.user_id()
    after = after or None
    if not isinstance(job_id, str) or JOB_ID.fullmatch(job_id) is None:
        raise BadUserInput("not a job id", argument="id")
    if after is not None:
        parse_cursor(after)  # malformed: refused before anything is looked up
    record = await context.jobs.get(user_id, str(job_id))
    if record is None:
        raise NotFound("no such job")
    hub = context.services.hub
    if after is not None:
        await hub.check_update_cursor(user_id, record.id, after)
    return JobUpdatesSubscription(hub, user_id, record, after)
