"""Built-in handlers. A handler takes the request string and returns the
processed string; it may be a plain function (run in a thread) or async."""

from __future__ import annotations

import asyncio
import hashlib


def echo(data: str) -> str:
    return data


def upper(data: str) -> str:
    return data.upper()


def sha256(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


async def sleep(data: str) -> str:
    """For trials: sleeps `data` seconds (a number; 0.1 when not one)."""
    try:
        seconds = min(float(data), 3600.0)
    except ValueError:
        seconds = 0.1
    await asyncio.sleep(max(seconds, 0.0))
    return data
