"""uvicorn's HTTP protocol (httptools), plus deadlines for a request's head and body.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has
no limit on how long a request may take to arrive: a client sending its
headers, or its body, a byte every few seconds holds a connection (and,
for a body, a running request) for as long as it likes. Here:

- the request line and headers must arrive within `head_timeout` seconds
  of the connection opening or of the request's first byte;
- the whole body must arrive within `body_timeout` seconds of the headers.

Past either deadline the client gets 408 and the connection is closed. The
request never reached GraphQL, so nothing it asked for ran: no job was
enqueued or touched. WebSocket upgrades are timed up to their headers only.

`python -m graph` runs uvicorn with this class (graph/__main__.py); a proxy
in front should still keep its own limits (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..errors import error_body


def _timeout_response(message: str) -> bytes:
    body = json.dumps(error_body(message, "BAD_USER_INPUT")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)) + body


class TimedHttpProtocol(HttpToolsProtocol):
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    _deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeouts(cls, head: float, body: float) -> type[TimedHttpProtocol]:
        """This protocol with these deadlines (uvicorn makes one per connection)."""
        return type(cls.__name__, (cls,), {"head_timeout": head, "body_timeout": body})

    def _set(self, seconds: float, on_expiry) -> None:
        self._clear()
        self._deadline = self.loop.call_later(seconds, on_expiry)

    def _clear(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # ---- where the deadlines start and end ----

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._set(self.head_timeout, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a keep-alive connection
            self._set(self.head_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._clear()
        queued = self.cycle is not None and not self.cycle.response_complete  # pipelined
        super().on_headers_complete()
        if not queued and not (self.parser.should_upgrade() and self._should_upgrade()):
            self._set(self.body_timeout, self._body_too_slow)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle  # a pipelined request starts now, and its body deadline with it
        if (self._deadline is None and cycle is not None and cycle.more_body
                and not cycle.response_started and not self.transport.is_closing()):
            self._set(self.body_timeout, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._clear()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._clear()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc) -> None:
        self._clear()
        super().connection_lost(exc)

    # ---- past a deadline ----

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._refuse(f"The request's headers did not arrive within {self.head_timeout:g} s "
                     "(HTTP_HEADER_TIMEOUT_SECONDS).")

    def _body_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is None or cycle.response_started:  # already answered: just close
            self.transport.close()
            return
        cycle.disconnected = True  # the app reads "http.disconnect"; its answer goes nowhere
        cycle.message_event.set()
        self._refuse(f"The request body did not arrive within {self.body_timeout:g} s "
                     "(HTTP_BODY_TIMEOUT_SECONDS).")

    def _refuse(self, message: str) -> None:
        if not self.transport.is_closing():
            self.logger.debug("closing a slow connection from %s: %s",
                             self.client and self.client[0], message)
            self.transport.write(_timeout_response(message))
            self.transport.close()
