"""Running a process's main coroutine, on uvloop when it is installed."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

LOOPS = ("auto", "asyncio", "uvloop")  # --loop of `python -m workers` and `python -m graph`


def loop_factory(name: str = "auto"):
    """uvloop's loop factory for "uvloop", and for "auto" when uvloop is importable
    (it comes with uvicorn[standard] and the `speed` extra); None: asyncio's own.
    Why uvloop: its loop, transports and timers are in C (libuv), so each job's
    and each request's scheduling costs less Python per iteration."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            from .startup import StartupError

            raise StartupError("--loop uvloop: uvloop is not installed "
                               "(pip install 'userqueue[speed]')") from None
        return None
    return uvloop.new_event_loop


def run(main, name: str = "auto") -> None:
    """asyncio.run, on the event loop `name` chooses (see loop_factory)."""
    factory = loop_factory(name)
    with asyncio.Runner(loop_factory=factory) as runner:
        log.debug("event loop: %s", type(runner.get_loop()).__module__)
        runner.run(main)


async def cancel_and_wait(*tasks: asyncio.Task) -> None:
    """Cancel tasks and wait until they are done.

    Once is not always enough: on Python 3.11 `asyncio.wait_for` can swallow a
    cancellation that lands together with its wake-up, and redis-py may turn
    one that lands in a read into a TimeoutError that a retry loop catches.
    """
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [t for t in pending if not t.done()]
