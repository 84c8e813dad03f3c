"""The audit log: one line per admin mutation, naming the admin and the arguments.

Lines go to the `audit` logger, so an operator can route or keep them apart;
with LOG_FORMAT=json they carry `admin_id`, `operation`, `arguments` and
`outcome` as fields. `admin_mutation()` (graph/permissions.py) writes them for
every admin mutation; `audit()` is there for anything else an admin does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from datetime import datetime
from enum import Enum
from typing import Any

from strawberry.extensions import FieldExtension
from strawberry.types import Info
from strawberry.types.unset import UnsetType
from strawberry.utils.await_maybe import await_maybe

from .errors import ApiError

log = logging.getLogger("audit")

# arguments never written, whatever a future mutation takes
SECRET = re.compile(r"password|secret|token", re.IGNORECASE)


def audit(admin_id: str, operation: str, /, *, outcome: str = "ok", **arguments: Any) -> None:
    """Write that `admin_id` ran `operation` with these arguments; `outcome` is "ok"
    or the error code it ended with."""
    plain = {name: "[redacted]" if SECRET.search(name) else _plain(value)
             for name, value in arguments.items() if not isinstance(value, UnsetType)}
    shown = ", ".join(f"{name}={value!r}" for name, value in plain.items())
    log.info("admin %s: %s(%s): %s", admin_id, operation, shown, outcome,
             extra={"admin_id": admin_id, "operation": operation, "arguments": plain,
                    "outcome": outcome})


def _plain(value: Any) -> Any:
    """An argument as JSON can hold it: enums by value, times as ISO text, input
    objects as dicts of the fields given."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not isinstance(getattr(value, f.name), UnsetType)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Audited(FieldExtension):
    """Audit a mutation once it has run, with how it ended. Put it inside the
    permission check (admin_mutation does), so only admins' calls are written."""

    async def resolve_async(self, next_, source: Any, info: Info, **kwargs: Any) -> Any:
        admin_id = await info.context.user_id()
        outcome = "INTERNAL_SERVER_ERROR"
        try:
            result = await await_maybe(next_(source, info, **kwargs))
            outcome = "ok"
            return result
        except ApiError as exc:
            outcome = exc.code
            raise
        except asyncio.CancelledError:  # the client went away: it may have run in part
            outcome = "CANCELLED"
            raise
        finally:
            audit(admin_id, info.field_name, outcome=outcome, **kwargs)
