"""Who may run an operation: the one place roles are checked.

Admin fields declare it and never check a role by hand:

    @strawberry.field(extensions=admin_only())
    async def admin_overview(self, info) -> AdminOverview: ...

    @strawberry.mutation(extensions=admin_mutation())  # also written to the audit log
    async def set_role(self, info, username: str, role: Role) -> User: ...

The extensions are strawberry's PermissionExtension (what `permission_classes=`
turns into, and the way strawberry recommends now), given fresh per field.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types import Info

from .audit import Audited
from .errors import Forbidden
from .store import Role


class IsAdmin(BasePermission):
    """Role ADMIN. No token (or a bad one): UNAUTHENTICATED, raised by
    Context.user_id; another signed-in user: FORBIDDEN.

    The role is read from MongoDB at each check, not taken from the token, so a
    demotion holds at once in every API process. A subscription is checked when
    it starts."""

    message = "this operation needs role ADMIN"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        ctx = info.context
        user = await ctx.services.accounts.get(await ctx.user_id())
        return user.role == Role.ADMIN

    def on_unauthorized(self) -> None:
        raise Forbidden(self.message)


def admin_only() -> list[FieldExtension]:
    """The extensions of a field only admins may use."""
    # no schema directive: schema.graphql stays as the contract writes it
    return [PermissionExtension(permissions=[IsAdmin()], use_directives=False)]


def admin_mutation() -> list[FieldExtension]:
    """admin_only, and each call written to the audit log (graph/audit.py)."""
    # strawberry runs the last extension first: the permission, then the audit
    return [Audited(), *admin_only()]
