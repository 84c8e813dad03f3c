"""POST /graphql of a document seen before, served without the router and strawberry's
request handling.

A POST of a known document (an `enqueue`, say) went through starlette's
exception middleware and router, then strawberry's view: a request adapter,
content-type and streaming-transport checks, the body read through
`Request.body()`, a `GraphQLRequestData`, and the dispatch to our
`execute_single`, before the prepared path (prepared.py) ran the operation.
Per request that was about as much Python as running the operation itself.

`GraphQLPost` sits innermost in the middleware list (after RequestId and
SizeLimits, which still run for every request). For a POST to the view's
path it reads the body (SizeLimits hands it on whole) and asks the view's
`serve_known`, which answers only what it is sure of: a JSON body (`Content-Type:
application/json`) that is an object with a string `query` the prepared path
runs, no `extensions`, an `Accept` that asks for no streaming. Its answer is
built by the same methods the general path ends with (`process_result`,
`create_response`, the size limit, `Vary`), so status, headers and body are
the same (tests/test_fastroute.py compares them). Anything else, errors in the
request included, goes on to the router with the body replayed, and is
answered exactly as before.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class GraphQLPost:
    def __init__(self, app: ASGIApp, view, path: str = "/graphql"):
        self.app, self.view, self.path = app, view, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path \
                or scope.get("root_path") or not self.view.fast_route:
            return await self.app(scope, receive, send)
        message = await receive()
        replay = _replaying(message, receive)
        if message["type"] == "http.request" and not message.get("more_body", False):
            if await self.view.serve_known(scope, replay, send, message.get("body", b"")):
                return
        await self.app(scope, replay, send)


def _replaying(first: Message, receive: Receive) -> Receive:
    """`receive`, giving `first` again before anything else."""
    pending = [first]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay
