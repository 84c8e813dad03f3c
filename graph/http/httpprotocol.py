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
in front should still keep its own limits (docs/operations.md). What it
needs of uvicorn's internals is in graph/adapters.py.
"""

from __future__ import annotations

import asyncio
import json

from ..adapters import HttpProtocol
from ..errors import error_body


def _timeout_response(message: str) -> bytes:
    body = json.dumps(error_body(message, "BAD_USER_INPUT")).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)) + body


class TimedHttpProtocol(HttpProtocol):
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    _deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeouts(cls, head: float, body: float) -> type[TimedHttpProtocol]:
        """This protocol with these deadlines (uvicorn makes one per connection)."""
        return type(cls.__name__, (cls,), {"head_timeout": head, "body_timeout": body})

    def _set(self, seconds: float, on_expiry) -> None:
        self._clear()
        self._deadline = asyncio.get_running_loop().call_later(seconds, on_expiry)

    def _clear(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # ---- where the deadlines start and end (the hooks of graph/adapters.py) ----

    def connection_opened(self) -> None:
        self._set(self.head_timeout, self._head_too_slow)

    def request_began(self) -> None:
        if self._deadline is None:  # a later request on a keep-alive connection
            self._set(self.head_timeout, self._head_too_slow)

    def head_arrived(self) -> None:
        self._clear()

    def body_expected(self) -> None:
        if self._deadline is None:  # not while a pipelined request's head is on its way
            self._set(self.body_timeout, self._body_too_slow)

    def body_arrived(self) -> None:
        self._clear()

    def upgrading(self) -> None:
        self._clear()

    def connection_closed(self) -> None:
        self._clear()

    # ---- past a deadline ----

    def _head_too_slow(self) -> None:
        self._deadline = None
        self._refuse(f"The request's headers did not arrive within {self.head_timeout:g} s "
                     "(HTTP_HEADER_TIMEOUT_SECONDS).")

    def _body_too_slow(self) -> None:
        self._deadline = None
        # the app reads "http.disconnect"; its answer goes nowhere
        if not self.abandon_request():  # already answered: just close
            self.close_connection()
            return
        self._refuse(f"The request body did not arrive within {self.body_timeout:g} s "
                     "(HTTP_BODY_TIMEOUT_SECONDS).")

    def _refuse(self, message: str) -> None:
        self.close_connection(_timeout_response(message), f"too slow: {message}")
