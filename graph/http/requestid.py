"""A request id for every HTTP request and WebSocket connection, in the logs.

`RequestId` is ASGI middleware: it takes the client's `X-Request-ID` when it is
a sane token (1 to 64 of `A-Z a-z 0-9 . _ -`), else makes one, puts it in
`engine.logs.log_context` for everything logged while the request is served
(uvicorn's access line included, since uvicorn logs it from the app's `send`),
and returns it in the response's `X-Request-ID` header.

It also takes the query string out of uvicorn's access lines (`GET /graphql?…`):
a GraphQL GET carries the whole document and its variables there, so a client
that sends `login(password: ...)` or a token that way would otherwise have
them written to the log.

`bind(user_id=...)` adds fields to the current request's log context once they
are known (after authentication). The fields live in one dict per request, so
what a resolver binds is seen by every later line of the same request, even
from sibling tasks; outside a request it does nothing.

It belongs outermost in the middleware list, so that it wraps everything.
(The fast route for known documents, in front of the whole stack, does the
same for what it answers with `request_id`, `enter` and `leave`:
graph/http/fastroute.py.)
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.logs import log_context

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_fields: ContextVar[dict | None] = ContextVar("request_log_fields", default=None)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The last value of a header (as `dict(scope["headers"])` gives it), without building
    a dict of them all."""
    found = None
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value
    return found


def bind(**fields) -> None:
    """Add fields to the log context of the request being served, if any."""
    current = _fields.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def current_request_id() -> str | None:
    current = _fields.get()
    return current.get("request_id") if current else None


class DropQueryString(logging.Filter):
    """uvicorn.access records: args are (client, method, path?query, http version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) \
                and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0] + "?…", *args[3:])
        return True


def drop_query_strings_from_access_log() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQueryString) for f in access.filters):
        access.addFilter(DropQueryString())


def request_id(given: bytes | None) -> str:
    """The client's id when it is a sane token, else a new one."""
    # 32 random hex digits: what uuid4().hex gave, without building a UUID (less Python a request)
    return given.decode() if given and _SANE.fullmatch(given) else os.urandom(16).hex()


def enter(rid: str) -> tuple:
    """Make `rid` the request id of every log line from here (and bind()'s target)."""
    fields = {**log_context.get(), "request_id": rid}
    return _fields.set(fields), log_context.set(fields)  # the same dict: bind() shows in every line


def leave(tokens: tuple) -> None:
    log_context.reset(tokens[1])
    _fields.reset(tokens[0])


def sending_id(send: Send, rid: str) -> Send:
    """`send`, with `rid` as the answer's X-Request-ID (replacing any the app set)."""
    value = rid.encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
            message = {**message, "headers": [*headers, (HEADER, value)]}
        await send(message)

    return send_with_id


class RequestId:
    def __init__(self, app: ASGIApp):
        self.app = app
        drop_query_strings_from_access_log()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        rid = request_id(header(scope, HEADER))
        tokens = enter(rid)
        try:
            await self.app(scope, receive, sending_id(send, rid))
        finally:
            leave(tokens)
