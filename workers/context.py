"""The job context a handler gets as its second parameter (CONTRACT §8).

    def handler(request_data, job):           # sync: runs in a thread
        job.progress(0.5, "half way")          # returns once recorded (or merged, below)

    async def handler(request_data, job):     # async: on the worker's loop
        await job.progress(0.5, "half way")

`job.id` and `job.attempt` (1 for the first attempt) are there too. A handler
that declares one parameter is called with the request data alone, as before.

Reports are merged, not queued: one made less than INTERVAL after the
previous write (or after the attempt started: its STARTED update) is held,
and the latest held one is written INTERVAL after that write, or with the
attempt's outcome, in the same script as its result (`Progress.close` hands
it to `finish`): the last report of an attempt always reaches Redis, never
after its result, and a job that ends within INTERVAL costs no extra call.
A report that is written at once returns (in a sync handler) once Redis has
it; a held one returns at once. A handler that reports 100,000 times a
second costs Redis ten writes a second and itself a lock and a clock read
per call. A report whose attempt has lost
its lease is discarded by progress.lua, like the attempt's result; one made
after the attempt ended (a sync handler still running past its timeout) is
dropped here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable

from .outcomes import storable

log = logging.getLogger("workers")

INTERVAL = 0.1  # seconds between two writes of one attempt's progress
MAX_MESSAGE_CHARS = 1000

Report = tuple[float, "str | None"]


def takes_job(handler: Callable) -> bool:
    """Whether the handler declares a second positional parameter (for the job)."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: one argument, as before
        return False
    positional = [p for p in parameters
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2


def checked(value, message) -> Report:
    """A report as the handler made it, checked: ValueError (in the handler) for a
    value outside 0..1. The message is made storable when written (`storable_report`)."""
    if type(value) is float and 0.0 <= value <= 1.0 and (
            message is None or type(message) is str):
        return value, message  # the common case, in a handler that reports often
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress takes a number from 0 to 1, not {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"progress must be from 0 to 1, not {value!r}")
    if message is not None and not isinstance(message, str):
        raise TypeError(f"progress message must be a str, not {type(message).__name__}")
    return value, message


def storable_report(report: Report) -> Report:
    """A report as Redis stores it: the message valid UTF-8, at most MAX_MESSAGE_CHARS."""
    value, message = report
    return value, None if message is None else storable(str(message))[:MAX_MESSAGE_CHARS]


class Progress:
    """One attempt's progress reports, written in order, at most one per INTERVAL.

    `write(value, message)` records a report (Queue.progress, bound to the
    attempt's lease). Reports come from the loop (async handlers) or from a
    handler's thread; writes always run on the loop, one at a time, each
    taking the latest report held, so a later write never carries an older value.
    """

    def __init__(self, write: Callable[[float, str | None], Awaitable],
                 loop: asyncio.AbstractEventLoop, interval: float = INTERVAL):
        self._write = write
        self._loop = loop
        self._interval = interval
        self._lock = threading.Lock()  # handler thread and loop both touch what follows
        self._held: Report | None = None
        self._last = time.monotonic()  # the last write's start; first: the attempt's
        self._timed = False  # a write of the held report is scheduled
        self._closed = False
        self._writing = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._timer_handle: asyncio.TimerHandle | None = None

    def _offer(self, report: Report, on_loop: bool = False) -> bool:
        """Hold the report; True when the caller is to write it now."""
        with self._lock:
            if self._closed:
                return False
            self._held = report
            if self._timed:
                return False
            now = time.monotonic()
            if now - self._last >= self._interval:
                self._last = now
                return True
            self._timed = True
            delay = self._last + self._interval - now
        if on_loop:
            self._arm(delay)
        else:
            self._loop.call_soon_threadsafe(self._arm, delay)
        return False

    def _arm(self, delay: float) -> None:
        if not self._closed:
            self._timer_handle = self._loop.call_later(delay, self._timer)

    def _timer(self) -> None:
        if self._closed:
            return
        task = self._loop.create_task(self._write_held())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_held(self) -> None:
        async with self._writing:
            with self._lock:
                report, self._held = self._held, None
                if self._timed:
                    self._timed = False
                    self._last = time.monotonic()
            if report is None:
                return  # a write after it took it already
            try:
                if await self._write(*storable_report(report)) is None:
                    log.debug("progress report discarded: the attempt lost its lease")
            except Exception as exc:  # progress is worth a warning, never the job
                log.warning("could not record a progress report: %s", exc)

    async def report(self, value, message=None) -> None:
        """From the loop (an async handler)."""
        if self._offer(checked(value, message), on_loop=True):
            await self._write_held()

    def report_from_thread(self, value, message=None) -> None:
        """From a sync handler's thread: returns once the report is written, or held."""
        if self._offer(checked(value, message)):
            try:
                asyncio.run_coroutine_threadsafe(self._write_held(), self._loop).result()
            except RuntimeError:  # the worker's loop is closed: nobody to record it
                pass

    async def close(self) -> Report | None:
        """The attempt is over: later reports are dropped. Answers the report
        still held, for `finish` to record with the outcome (once a write in
        flight is done, so the order holds)."""
        with self._lock:
            self._closed = True
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        async with self._writing:
            with self._lock:
                report, self._held = self._held, None
        return None if report is None else storable_report(report)

    def abandon(self) -> None:
        """The attempt was cancelled (shutdown hands the job back): write nothing more."""
        with self._lock:
            self._closed = True
            self._held = None
        if self._timer_handle is not None:
            self._timer_handle.cancel()


class JobContext:
    """A sync handler's `job`: its `progress` blocks until the report is recorded."""

    def __init__(self, id: str, attempt: int, progress: Progress):
        self.id = id
        self.attempt = attempt
        self._progress = progress

    def progress(self, value: float, message: str | None = None) -> None:
        """Report progress from 0 to 1 (ValueError outside), with an optional message."""
        self._progress.report_from_thread(value, message)

    def __repr__(self) -> str:
        return f"<job {self.id} attempt {self.attempt}>"


class AsyncJobContext(JobContext):
    """An async handler's `job`: `await job.progress(...)`."""

    async def progress(self, value: float, message: str | None = None) -> None:
        progress = self._progress  # Progress.report, one coroutine less per call
        if progress._offer(checked(value, message), on_loop=True):
            await progress._write_held()
