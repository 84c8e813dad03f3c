"""What one attempt of a handler gives: a result to store, or an error.

Whatever the handler does (returns anything, raises anything) becomes an
`Outcome` that Redis can store, so a handler's fault is its job's failure and
never crashes the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MAX_ERROR_CHARS = 2000


@dataclass(slots=True)
class Outcome:
    """The result, or the error for the job's `error` and its kind (an
    exception's type, "timeout"...) for the log, which never gets the text."""

    ok: bool
    value: str
    kind: str = ""
    # the attempt's last progress report not yet written (workers/context.py):
    # recorded with the outcome, in the same script
    progress: tuple[float, str | None] | None = None


def run(handler: Callable, data: str) -> Outcome:
    """handler(data), whatever it does, as an Outcome."""
    try:
        result = handler(data)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt... in user code too
        return failure(exc)
    return check_result(result)


def failure(exc: BaseException) -> Outcome:
    return Outcome(False, describe(exc), type(exc).__name__)


def describe(exc: BaseException) -> str:
    """A handler's exception as the job's `error`: "Type: message", storable."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # a __str__ that raises is the handler's bug, not ours
        text = "<unprintable>"
    return storable(f"{name}: {text}" if text else name)[:MAX_ERROR_CHARS]


def storable(text: str) -> str:
    """`text` as valid UTF-8 (Redis and JSON need it): lone surrogates escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_result(result) -> Outcome:
    """A handler's return value as the job's result, or why it cannot be one."""
    if not isinstance(result, str):
        return Outcome(False, f"handler returned {type(result).__name__}, not str", "bad result")
    try:
        str.encode(result, "utf-8")
    except UnicodeEncodeError as exc:
        return Outcome(False, "handler returned a string that is not valid UTF-8 "
                              f"({exc.reason} at index {exc.start})", "bad result")
    return Outcome(True, str.__str__(result))  # a plain str, even from a subclass of str
