"""POST /graphql of a document seen before, served in front of the whole ASGI stack.

A POST of a known document (an `enqueue`, say) went through starlette's
error middleware, RequestId, SizeLimits, the exception middleware and the
router, then strawberry's view: a request adapter, content-type and
streaming-transport checks, the body read through `Request.body()`, a
`GraphQLRequestData`, the dispatch to our `execute_single`, and a starlette
`Response` built, its headers edited and sent, each layer wrapping `send`.
Per request that was about as much Python as running the operation itself.

`GraphQLPost` is the outermost layer (graph/app.py puts it in front of
starlette's own). For a POST to the view's path whose `Content-Length` is
within HTTP_MAX_BODY_BYTES and whose body came in one piece, it does what
the layers it skips do for such a request, and no more:

- RequestId: the request id (the client's sane `X-Request-ID`, or a new
  one) in the log context while the request is served, and in the answer;
- SizeLimits: the body is within the limit (any other request, chunked
  bodies included, goes through SizeLimits as before);
- the view: `serve_known` answers only what it is sure of: a JSON body
  (`Content-Type: application/json`) that is an object with a string
  `query` the prepared path runs, no `extensions`, an `Accept` that asks for
  no streaming. The answer is built as the general path builds it (the same
  `process_result`, JSON encoding, status, size limit, headers in the same
  order), so status, headers and body are the same (tests/test_fastroute.py
  compares them).

Anything else, errors in the request included, goes on to the stack with
the body replayed, and is answered exactly as before.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import requestid


class GraphQLPost:
    def __init__(self, app: ASGIApp, view, max_body_bytes: int, path: str = "/graphql"):
        self.app, self.view, self.max_body, self.path = app, view, max_body_bytes, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path \
                or scope.get("root_path") or not self.view.fast_route:
            return await self.app(scope, receive, send)
        length = given = None
        for name, value in scope["headers"]:  # the last of each, as the layers skipped read them
            if name == b"content-length":
                length = value
            elif name == b"x-request-id":
                given = value
        if length is None or not length.isdigit() or int(length) > self.max_body:
            return await self.app(scope, receive, send)  # SizeLimits answers these
        message = await receive()
        replay = _replaying(message, receive)
        body = message.get("body", b"")
        if message["type"] == "http.request" and not message.get("more_body", False) \
                and len(body) <= self.max_body:
            rid = requestid.request_id(given)
            tokens = requestid.enter(rid)
            try:
                if await self.view.serve_known(scope, replay, send, body, rid):
                    return
            finally:
                requestid.leave(tokens)
        await self.app(scope, replay, send)


def _replaying(first: Message, receive: Receive) -> Receive:
    """`receive`, giving `first` again before anything else."""
    pending = [first]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
