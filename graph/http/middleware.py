"""ASGI middleware for the size limits that must hold before any parsing.

`SizeLimits` answers 413 to an HTTP body over `HTTP_MAX_BODY_BYTES`:
at once when Content-Length says so, otherwise (chunked bodies) as soon as
the bytes received pass the limit. The body is read here, up to the limit,
and handed on whole, so nothing behind it ever holds more than the limit.

It also closes a WebSocket (1009, "message too big") on a message over
`WS_MAX_MESSAGE_BYTES`. Under uvicorn, its `ws_max_size` (set from the same
setting in `graph.__main__`) already refuses those frames; this is the same
rule for the app run any other way (in-process tests, another server).
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import error_body
from .accept import preferred
from .requestid import header

WS_MESSAGE_TOO_BIG = 1009


async def _refuse(scope: Scope, send: Send, status: int, message: str,
                  code: str = "BAD_USER_INPUT") -> None:
    """A GraphQL-shaped error answer, in the media type the client prefers (as the
    GraphQL view answers), sent without reading the rest of the request."""
    body = json.dumps(error_body(message, code)).encode()
    media_type = preferred(Headers(scope=scope).get("accept"))
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"vary", b"Accept"), (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})


def _too_large(scope: Scope, send: Send, limit: int):
    return _refuse(scope, send, 413,
                   f"The request body is over {limit} bytes (HTTP_MAX_BODY_BYTES).")


def _text_size(text: str, limit: int) -> int:
    """UTF-8 size of `text`, encoding it only when the length alone cannot tell."""
    if len(text) > limit or len(text) * 4 <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


class SizeLimits:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_ws_message_bytes: int):
        self.app = app
        self.max_body = max_body_bytes
        self.max_ws_message = max_ws_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():  # uvicorn refuses these itself; other servers may not
                return await _refuse(scope, send, 400, "Content-Length is not a number.")
            if int(length) > self.max_body:
                return await _too_large(scope, send, self.max_body)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return await _too_large(scope, send, self.max_body)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        closed = False

        async def limited_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                size = _text_size(data, self.max_ws_message) if data is not None else len(
                    message.get("bytes") or b"")
                if size > self.max_ws_message:
                    closed = True
                    await send({"type": "websocket.close", "code": WS_MESSAGE_TOO_BIG,
                                "reason": "message too big"})
                    return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG}
            return message

        async def guarded_send(message: Message) -> None:
            if not closed:  # nothing more goes out once this layer closed the socket
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
