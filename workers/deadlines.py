"""The job timeout of async handlers: one timer for all of a worker's slots.

`asyncio.timeout` arms a timer when a handler starts and cancels it when it
returns: about 5 µs a job on uvloop, as much as the rest of a slot's step at
high concurrency. Every job of a worker has the same timeout, so the running
handlers' deadlines fall in the order they started: one timer, armed for the
oldest, is enough. When it fires it cancels the handlers whose deadline has
passed and is armed again for the oldest left; a job that starts and ends
between two firings costs a dict entry, nothing more.

Cancelling and telling a timeout from a shutdown are done as asyncio.timeout
does them: the handler's task is cancelled at its deadline, and the
CancelledError that comes out of the handler becomes HandlerTimeout only if
no other cancel (the worker stopping) is pending on the task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from .runners import HandlerTimeout


class Deadlines:
    def __init__(self, timeout: float):
        self.timeout = timeout
        self._running: dict[asyncio.Task, float] = {}  # task -> loop time of its deadline
        self._expired: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, call: Awaitable):
        """Await `call` (a handler's coroutine, run in this task) for at most
        `timeout` seconds; HandlerTimeout after that."""
        task = asyncio.current_task()
        loop = task.get_loop()
        cancelling = task.cancelling()
        deadline = loop.time() + self.timeout
        self._running[task] = deadline
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._fire, loop)
        try:
            result = await call
        except asyncio.CancelledError:
            if self._took_cancel(task) and task.uncancel() <= cancelling:
                raise HandlerTimeout from None
            raise  # the worker's own cancel (shutdown): it passes through
        except BaseException:
            if self._took_cancel(task):  # the handler swallowed our cancel, then failed
                task.uncancel()
            raise
        finally:
            self._running.pop(task, None)
        if self._took_cancel(task):  # cancelled at the deadline, and returned all the same
            task.uncancel()
        return result

    def _took_cancel(self, task: asyncio.Task) -> bool:
        """Was `task` cancelled at its deadline? (asked once, when its handler is done)"""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time()
        for task, deadline in list(self._running.items()):
            if deadline <= now:
                del self._running[task]
                self._expired.add(task)
                task.cancel()
        if self._running:
            self._timer = loop.call_at(min(self._running.values()), self._fire, loop)
