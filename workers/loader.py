"""Resolving `QUEUE_HANDLER` ("module:function") to a callable, at start-up."""

from __future__ import annotations

import importlib
from typing import Callable

from engine.startup import StartupError


class BadHandler(StartupError):
    """QUEUE_HANDLER does not name a callable we can load."""


def load_handler(path: str) -> Callable:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise BadHandler(f"handler {path!r} must look like 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadHandler(f"handler {path!r}: cannot import {module_name!r}: {exc}") from None
    target = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise BadHandler(f"handler {path!r}: {module_name!r} has no {attr!r}")
    if not callable(target):
        raise BadHandler(f"handler {path!r} is not callable")
    return target
