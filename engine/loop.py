"""Running a process's main coroutine, on uvloop when it is installed."""

from __future__ import annotations

import asyncio


def run(main) -> None:
    """asyncio.run, with uvloop's faster event loop (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
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
