"""One user's single `enqueue` requests, served at the same time, stored by one script call.

Under load the requests of one client (32 connections, say) reach their
`enqueue` resolver in the same turn of the event loop. Each would make its own
script call: Python's share of a Redis call (packing, the connection pool,
a socket write and read) is most of an enqueue's cost. Here each such request's
JobService call joins its user's group; once the loop has run everything ready
(`call_soon`, no timer: a request alone waits for nothing), the group goes to
Redis as one call of the all-or-none `enqueue` script, items in the order they
came, and each request gets its own job. Resolvers, metrics and answers are
those of the call alone; jobs stored together share one `createdAt`.

When the group is refused (an item over a limit, a full queue, Redis at its
memory limit), nothing was stored, and each request's item is tried alone, in
order: each gets what its own call would have answered. When the call fails
otherwise (Redis gone), whether the script ran is unknown: nothing is tried
again, and every request of the group fails with that error, as each alone
would have. A request cancelled while its group is on its way (the client
left) still has its job stored, as when its own call was already sent.

Not grouped: with a per-user rate limit (QUEUE_ENQUEUE_RATE_PER_MINUTE counts
each call), and calls other than one item of the document's own arguments.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import ApiError
from ..jobs import Item


class EnqueueGroups:
    """The groups being gathered, by user; one per API process."""

    def __init__(self):
        self.gathering: dict[str, list[tuple[Any, Item, asyncio.Future]]] = {}
        self.tasks: set[asyncio.Task] = set()  # stores under way (held: not collected early)

    def join(self, context, item: Item) -> None:
        """Make this request's JobService send `item` with its user's group."""
        service = context.jobs
        if not service.settings.queue_enqueue_rate_per_minute:
            context.__dict__["jobs"] = Grouped(service, self, item)  # Context.jobs is cached

    async def enqueue(self, service, uid: str, item: Item):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        future.add_done_callback(_retrieved)
        group = self.gathering.get(uid)
        if group is None:
            group = self.gathering[uid] = []
            loop.call_soon(self._send, uid)
        group.append((service, item, future))
        if len(group) >= service.settings.queue_max_batch:
            self._send(uid)
        return await asyncio.shield(future)  # a cancelled request leaves the group whole

    def _send(self, uid: str) -> None:
        group = self.gathering.pop(uid, None)
        if group:
            task = asyncio.get_running_loop().create_task(_store(uid, group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


async def _store(uid: str, group: list) -> None:
    service = group[0][0]
    if len(group) > 1:
        try:
            jobs = await service.enqueue(uid, [item for _, item, _ in group])
        except ApiError:
            pass  # nothing stored: each item alone, below
        except Exception as exc:  # whether the script ran is unknown: never twice
            for _, _, future in group:
                _settle(future, error=exc)
            return
        else:
            for (_, _, future), job in zip(group, jobs):
                _settle(future, job)
            return
    for own_service, item, future in group:
        try:
            [job] = await own_service.enqueue(uid, [item])
        except Exception as exc:
            _settle(future, error=exc)
        else:
            _settle(future, job)


def _retrieved(future: asyncio.Future) -> None:
    """A request cancelled meanwhile never reads its outcome: not a lost error."""
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future, job=None, error: Exception | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(job)


class Grouped:
    """The request's JobService, sending its one `enqueue` item with its user's group;
    everything else goes to the service."""

    def __init__(self, service, groups: EnqueueGroups, item: Item):
        self._service, self._groups, self._item = service, groups, item

    def __getattr__(self, name):
        return getattr(self._service, name)

    async def enqueue(self, uid: str, items: list, *args, **kwargs):
        if self._item is not None and not args and not kwargs and len(items) == 1 \
                and items[0] == self._item:
            item, self._item = self._item, None
            return [await self._groups.enqueue(self._service, uid, item)]
        return await self._service.enqueue(uid, items, *args, **kwargs)
