"""Where a sync handler runs: a thread of the worker (QUEUE_ISOLATION=thread,
the default) or a child process (`process`).

Threads cost nothing to start and share the worker's memory, but one cannot be
stopped: a handler that hangs keeps its thread. A child process costs a
process per slot and a pickled round trip per job, but one that hangs past the
timeout is killed and replaced, and one that crashes (os._exit, a segfault in
a C extension, the OOM killer) fails its own job and nothing else.

Either way the timeout counts from when the handler starts, never from when
the job was handed over, so no job is blamed for waiting behind another.
Async handlers run on the worker's event loop in both modes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import multiprocessing
import pickle
import signal
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from engine import logs

from . import metrics, outcomes
from .loader import BadHandler
from .outcomes import Outcome, check_result


log = logging.getLogger("workers")


class HandlerTimeout(Exception):
    """The handler ran for the job timeout, counted from when its call started."""


class HandlerDied(Exception):
    """The child process running the handler ended in the middle of the job."""


def _nothing() -> None:
    pass


class HandlerThreads:
    """Runs a sync handler in a pool of threads, with a timeout on each call.

    A thread cannot be killed: one whose call timed out keeps its place in the
    pool until the handler returns, maybe never. Such threads are counted
    (`hung`, and the `queue_worker_hung_threads` gauge), and the worker runs at
    most `size - hung` jobs at a time, so every job it runs finds a free
    thread at once. No job is failed for waiting behind a hung thread.
    """

    def __init__(self, size: int):
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="handler")
        self._size = size
        self.on_change: Callable[[], None] = _nothing  # on the event loop, when `hung` changes
        self.hung = 0
        self._busy: set = set()  # futures of calls whose handler has not returned

    async def call(self, handler: Callable, data: str, timeout: float) -> Outcome:
        """handler(data) in a thread; HandlerTimeout `timeout` seconds after it starts."""
        loop = asyncio.get_running_loop()
        started = loop.create_future()
        context = contextvars.copy_context()  # the job's log context, in the handler's thread

        def run():
            _call_soon(loop, _resolve, started)
            return context.run(handler, data)

        future = self._pool.submit(run)
        self._busy.add(future)
        future.add_done_callback(self._busy.discard)
        try:
            await started  # at once: the worker runs no more jobs than it has free threads
        except asyncio.CancelledError:  # shutdown: the job is handed back, never run
            future.cancel()
            raise
        try:
            async with asyncio.timeout(timeout) as deadline:
                result = await asyncio.wrap_future(future)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError
            if not future.done():
                self._hang(loop, future)
            raise HandlerTimeout from None
        return check_result(result)

    def _hang(self, loop: asyncio.AbstractEventLoop, future) -> None:
        self.hung += 1
        metrics.HUNG_THREADS.inc()
        log.warning("the handler is still running in its thread past the timeout; "
                    "%d of %d threads hung", self.hung, self._size)
        future.add_done_callback(lambda _: _call_soon(loop, self._returned))
        self.on_change()

    def _returned(self) -> None:
        self.hung -= 1
        metrics.HUNG_THREADS.dec()
        self.on_change()

    def shutdown(self) -> None:
        """Idle threads are waited for (they end at once), so that the process
        exits normally, its atexit handlers run; threads still running a
        handler are left to `python -m workers` (see __main__)."""
        self._pool.shutdown(wait=not self._busy, cancel_futures=True)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """From a handler thread: run callback on the loop, unless the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the worker has stopped: nobody to tell
        pass


class HandlerProcesses:
    """Runs a sync handler in child processes, one job at a time in each.

    pebble's ProcessPool starts a call's timeout when a child takes the job,
    and at the timeout kills that child and starts another: a hung handler
    costs its own attempt and a process start, and no slot stays lost
    (`hung` is always 0). Children are started with `spawn` (a fresh
    interpreter: forking a process that runs threads and an event loop is
    unsafe), set up logging as the worker's, and log with the job's ids.
    A child sends back an Outcome of plain strs, never the handler's own
    objects: one the worker could not unpickle would break the pool, and so
    every job running in it.
    """

    hung = 0

    def __init__(self, size: int, handler: Callable, log_level: str, log_format: str):
        try:
            pickle.dumps(handler)  # sent to a child with every job: refuse it now, not per job
        except Exception as exc:
            raise BadHandler(f"QUEUE_ISOLATION=process: the handler cannot be sent to a "
                             f"child process ({type(exc).__name__}); use a module-level "
                             "function") from None
        self._size = size
        self._setup = (log_level, log_format)
        self._pool = self._new_pool()
        self.on_change: Callable[[], None] = _nothing

    def _new_pool(self):
        from pebble import ProcessPool  # only this mode needs it

        return ProcessPool(max_workers=self._size, initializer=_child_setup,
                           initargs=self._setup, context=multiprocessing.get_context("spawn"))

    async def call(self, handler: Callable, data: str, timeout: float) -> Outcome:
        """handler(data) in a child; HandlerTimeout once it has run `timeout`
        seconds (the child is killed), HandlerDied if the child ends."""
        from pebble import ProcessExpired

        for _ in range(2):
            if not self._pool.active:  # broken (see below), or stopped
                self._pool.stop()
                self._pool = self._new_pool()
            future = self._pool.schedule(_child_call, args=(handler, data, logs.log_context.get()),
                                         timeout=timeout)
            try:
                return await asyncio.wrap_future(future)
            except asyncio.CancelledError:  # shutdown: the child running it is stopped
                future.cancel()
                raise
            except TimeoutError:
                raise HandlerTimeout from None
            except ProcessExpired as exc:
                raise HandlerDied(f"the handler's process ended ({_exit_status(exc.exitcode)})"
                                  ) from None
            except BrokenProcessPool:  # the pool's own fault (its pipes): run it on a new one
                log.warning("the handler process pool broke; starting a new one")
        raise HandlerDied("the handler's process pool broke twice")

    def shutdown(self) -> None:
        """Stop the children, a job still running in one included (it was handed back)."""
        self._pool.stop()
        self._pool.join(timeout=10)


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def _child_setup(log_level: str, log_format: str) -> None:
    logs.configure(log_level, log_format)


def _child_call(handler: Callable, data: str, log_context: dict) -> Outcome:
    """In the child: the handler's log lines carry the job's ids, as in a thread."""
    logs.log_context.set(log_context)
    return outcomes.run(handler, data)
