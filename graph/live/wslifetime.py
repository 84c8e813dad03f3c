"""How long a GraphQL WebSocket lives: not past its token, nor long without one.

- Without `connection_init` a socket is closed with 4408 after
  `WS_INIT_TIMEOUT_SECONDS`, on both protocols (strawberry does this for
  graphql-transport-ws; the legacy graphql-ws has no such rule of its own).
- Once authenticated, the socket is closed with 4403 ("token expired") when
  its token expires: at its `exp` plus the clock leeway, the moment the same
  token stops working over HTTP. Subscriptions running on it end with the
  socket (no `complete` is sent): the client logs in again, reconnects and
  resubscribes with `after` set to the last cursor it got, so it misses no
  event. Nothing queued is touched: jobs are not tied to sockets.
- Every new operation checks the token again first, as an HTTP request
  would (expiry; a deleted user once the accounts' user cache lets go of
  it); one that no longer passes closes the socket with 4403 instead of
  running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..errors import ApiError

log = logging.getLogger(__name__)

INIT_TIMEOUT = 4408  # graphql-transport-ws: "Connection initialisation timeout"
FORBIDDEN = 4403  # graphql-transport-ws: the token is missing, invalid or expired


class Deadline:
    """Close a WebSocket at a given time (unix seconds) unless cancelled first."""

    def __init__(self, websocket, at: float, code: int, reason: str):
        self._task = asyncio.create_task(self._close_at(websocket, at, code, reason))

    @staticmethod
    async def _close_at(websocket, at: float, code: int, reason: str) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        with contextlib.suppress(Exception):  # already closed from the other side
            await websocket.close(code=code, reason=reason)

    def cancel(self) -> None:
        self._task.cancel()


class SocketLifetime:
    """The deadlines of one socket; its protocol handler calls these hooks."""

    def __init__(self, websocket, context):  # context: graph.context.Context
        self.websocket = websocket
        self.context = context
        self._init: Deadline | None = None
        self._expiry: Deadline | None = None

    def expect_init(self, seconds: float) -> None:
        """Close the socket unless it authenticates within `seconds`."""
        self._init = Deadline(self.websocket, time.time() + seconds, INIT_TIMEOUT,
                              "Connection initialisation timeout")

    def authenticated(self) -> None:
        """connection_init was accepted: from now on the token's expiry counts."""
        if self._init is not None:
            self._init.cancel()
        if self._expiry is None:
            self._expiry = Deadline(self.websocket, self.context.token_expires_at(),
                                    FORBIDDEN, "token expired")

    async def allows_operation(self) -> bool:
        """Check the token again before an operation runs; close with 4403 if it fails."""
        accounts = self.context.services.accounts
        try:
            await accounts.user_id_for(self.context.token())
        except ApiError as exc:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=FORBIDDEN, reason=str(exc)[:100])
            return False
        except Exception:  # the store is down: the operation meets that itself
            log.warning("could not check a WebSocket's token again", exc_info=True)
        return True

    def end(self) -> None:
        for deadline in (self._init, self._expiry):
            if deadline is not None:
                deadline.cancel()
