"""Per-request context: the services, and who is calling."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jwt
from starlette.requests import HTTPConnection
from strawberry.dataloader import DataLoader

from .http import requestid
from .auth import bearer, token_from_connection_params
from .admin import AdminService
from .jobs import JobService
from .services import Services
from .store import User


@dataclass
class Context:
    services: Services
    request: HTTPConnection
    response: Any = None
    connection_params: dict | None = None  # set by strawberry on WebSocket connection_init
    _user_id: str | None = None

    @cached_property
    def jobs(self) -> JobService:
        s = self.services
        return JobService(s.queue, s.hub, s.archiver, s.settings)

    @cached_property
    def users(self) -> DataLoader[str, User | None]:
        """Users by id, batched: the owners of a page of jobs cost one MongoDB query.
        Nothing is kept between batches, since a WebSocket's context lasts as long as
        its connection and a user's role can change meanwhile."""
        return DataLoader(load_fn=self.services.accounts.get_many, cache=False)

    @cached_property
    def admin(self) -> AdminService:
        s = self.services
        return AdminService(s.queue, s.archiver, s.settings)

    @property
    def client_address(self) -> str:
        client = self.request.client
        return client.host if client else "unknown"

    def token(self) -> str | None:
        if self.connection_params is not None:
            return token_from_connection_params(self.connection_params)
        return bearer(self.request.headers.get("authorization"))

    async def user_id(self) -> str:
        """The caller's user id; UNAUTHENTICATED without a valid token."""
        if self._user_id is None:
            self._user_id = await self.services.accounts.user_id_for(self.token())
            requestid.bind(user_id=self._user_id)
        return self._user_id

    def token_expires_at(self) -> float:
        """When the caller's token stops being accepted (unix time): its `exp` plus
        the clock leeway. A WebSocket is closed then (graph/live/wslifetime.py).
        Only after user_id() has verified the token, so its claims are not checked here."""
        claims = jwt.decode(self.token(), options={"verify_signature": False})
        return claims["exp"] + self.services.settings.jwt_leeway_seconds
