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
