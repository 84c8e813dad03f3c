"""Strawberry's ASGI GraphQL view, with our context and WebSocket auth."""

from __future__ import annotations

from typing import Any

from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError

from .context import Context
from .errors import ApiError


class GraphQLView(GraphQL):
    async def get_context(self, request, response) -> Context:
        return Context(services=request.app.state.services, request=request, response=response)

    async def on_ws_connect(self, context: Context) -> Any:
        """Authenticate from connection_init; refused connections close with 4403
        (graphql-transport-ws) or get connection_error (legacy graphql-ws)."""
        try:
            await context.user_id()
        except ApiError as exc:
            raise ConnectionRejectionError({"message": str(exc), "code": exc.code}) from None
        return None
