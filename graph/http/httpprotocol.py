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

And a response's head and body leave in one socket write (`OneWrite`):
uvicorn writes the status line and headers when the app sends
`http.response.start`, and the body at `http.response.body`, two system
calls and often two TCP segments for an answer of a few hundred bytes.

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


class OneWrite:
    """The transport a request's cycle writes to: the response head is held until
    the body's first write and goes out with it, in one `write`. If the body does
    not follow in the same turn of the event loop (a streamed answer waiting for
    its first part), the head goes out alone at the next turn, as before. Closing
    writes what is held first. Everything else is the connection's transport."""

    __slots__ = ("_transport", "_cycle", "_head", "_flush")

    def __init__(self, transport, cycle):
        self._transport, self._cycle, self._head = transport, cycle, None
        self._flush = None

    def write(self, data) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._flush.cancel()
            self._transport.write(head + data)
        elif self._flush is None and self._cycle.response_started \
                and not self._cycle.response_complete and self._cycle.scope["method"] != "HEAD":
            # the first write once the answer started: its head (held once; a HEAD
            # request's answer has no body to wait for)
            self._head = data
            self._flush = asyncio.get_running_loop().call_soon(self._write_head)
        else:
            self._transport.write(data)

    def _write_head(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self._write_head()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class TimedHttpProtocol(HttpProtocol):
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    # The deadline (loop time) and what to do past it, or None. Setting and clearing
    # one costs no timer: a connection keeps at most one timer, which at its time
    # looks at the deadline then in force, and sets itself again for a later one.
    # (A timer armed and cancelled for each request's head and body was about 2 %
    # of the API's CPU under load.)
    _due: float | None = None
    _on_expiry = None
    _timer: asyncio.TimerHandle | None = None
    _timer_at: float = 0.0

    @classmethod
    def with_timeouts(cls, head: float, body: float) -> type[TimedHttpProtocol]:
        """This protocol with these deadlines (uvicorn makes one per connection)."""
        return type(cls.__name__, (cls,), {"head_timeout": head, "body_timeout": body})

    def _set(self, seconds: float, on_expiry) -> None:
        loop = asyncio.get_running_loop()
        self._due, self._on_expiry = loop.time() + seconds, on_expiry
        if self._timer is None or self._timer_at > self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = self._due
            self._timer = loop.call_at(self._due, self._expired)

    def _clear(self) -> None:
        self._due = None

    def _expired(self) -> None:
        self._timer = None
        if self._due is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._due:  # a later deadline replaced the one this timer was for
            self._timer_at = self._due
            self._timer = loop.call_at(self._due, self._expired)
            return
        on_expiry, self._due = self._on_expiry, None
        on_expiry()

    # ---- where the deadlines start and end (the hooks of graph/adapters.py) ----

    def connection_opened(self) -> None:
        self._set(self.head_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before and cycle is not None:  # a new request (not an upgrade)
            cycle.transport = OneWrite(cycle.transport, cycle)

    def request_began(self) -> None:
        if self._due is None:  # a later request on a keep-alive connection
            self._set(self.head_timeout, self._head_too_slow)

    def head_arrived(self) -> None:
        self._clear()

    def body_expected(self) -> None:
        if self._due is None:  # not while a pipelined request's head is on its way
            self._set(self.body_timeout, self._body_too_slow)

    def body_arrived(self) -> None:
        self._clear()

    def upgrading(self) -> None:
        self._clear()

    def connection_closed(self) -> None:
        self._clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- past a deadline ----

    def _head_too_slow(self) -> None:
        self._refuse(f"The request's headers did not arrive within {self.head_timeout:g} s "
                     "(HTTP_HEADER_TIMEOUT_SECONDS).")

    def _body_too_slow(self) -> None:
        # the app reads "http.disconnect"; its answer goes nowhere
        if not self.abandon_request():  # already answered: just close
            self.close_connection()
            return
        self._refuse(f"The request body did not arrive within {self.body_timeout:g} s "
                     "(HTTP_BODY_TIMEOUT_SECONDS).")

    def _refuse(self, message: str) -> None:
        self.close_connection(_timeout_response(message), f"too slow: {message}")
