"""A handler for tests/test_logging.py: it logs while it works, as real handlers
do, so the test can check that such lines carry the job's and user's ids."""

from __future__ import annotations

import logging

log = logging.getLogger("tests.handler")


def chatty(data: str) -> str:
    """Sync (runs in the worker's thread pool): logs, then fails on `fail...`."""
    log.info("handling a request of %d characters", len(data))
    if data.startswith("fail"):
        raise RuntimeError("planned failure")
    return data.upper()


async def chatty_async(data: str) -> str:
    log.info("handling a request of %d characters (async)", len(data))
    if data.startswith("fail"):
        raise RuntimeError("planned failure")
    return data.upper()
