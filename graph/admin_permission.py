"""Who may use the operators' API, and the audit line of each admin mutation.

TEMPORARY, until the roles branch (Role, User.role, graph/permissions.py,
graph/audit.py) is merged: then `IsAdmin` and `audit_log` here give way to
theirs, and this module goes. Every admin field names `IsAdmin` and every
admin mutation calls `audit_log`, so the swap touches the imports only.
"""

from __future__ import annotations

import logging
from typing import Any

from strawberry.permission import BasePermission

from .errors import Forbidden
from .store import User

log = logging.getLogger("graph.audit")

ADMIN = "ADMIN"


async def role_of(uid: str) -> str | None:
    """The user document's `role`, read raw: the User model has no such field yet."""
    from bson import ObjectId

    doc = await User.get_pymongo_collection().find_one({"_id": ObjectId(uid)}, {"role": 1})
    return (doc or {}).get("role")


class IsAdmin(BasePermission):
    """UNAUTHENTICATED without a valid token, FORBIDDEN for a user not ADMIN."""

    message = "this operation is for admins only"

    async def has_permission(self, source: Any, info, **kwargs) -> bool:
        uid = await info.context.user_id()  # raises Unauthenticated
        if await role_of(uid) != ADMIN:
            raise Forbidden(self.message)
        return True


def audit_log(admin_id: str, action: str, **arguments: Any) -> None:
    """One line per admin mutation: who, what, with which arguments."""
    log.info("admin %s: %s %s", admin_id, action,
             " ".join(f"{k}={v!r}" for k, v in arguments.items()),
             extra={"admin_id": admin_id, "action": action, "arguments": arguments})
