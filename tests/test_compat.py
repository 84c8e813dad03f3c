"""graph/adapters.py against the strawberry-graphql and uvicorn installed.

graph/adapters.py uses parts of both that they do not document; pyproject.toml
keeps them below their next minor release. Before raising a pin, install the
new release and run this file: each failure names the installed versions and
what changed, and checks real objects (the schema, the app, a running uvicorn)
rather than names alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from datetime import timedelta
from importlib.metadata import version

import pytest
import uvicorn
import websockets
from graphql import GraphQLSchema
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from graph import adapters
from graph.http.limits import DocumentLimits
from graph.settings import Settings
from graph.context import Context
from graph.http.httpprotocol import TimedHttpProtocol
from graph.live.fanout import LiveConnection
from graph.live.wsprotocol import SEND_NOW, FanoutWebSocketProtocol
from graph.schema import build_schema
from tests.support import wait_until, wait_until_async

VERSIONS = ", ".join(f"{name} {version(name)}"
                     for name in ("strawberry-graphql", "uvicorn", "websockets"))


def broken(what: str) -> str:
    return (f"with {VERSIONS}: {what}. graph/adapters.py relies on it: adapt it there "
            "before raising the pin in pyproject.toml.")


@contextlib.contextmanager
def relying_on(what: str):
    """Any failure inside is reported as `what` having changed, with the versions."""
    try:
        yield
    except Exception as exc:
        pytest.fail(broken(f"{what} changed ({type(exc).__name__}: {exc})"), pytrace=False)


# ---- strawberry: the schema ----

def test_the_schema_internals_answer_for_our_schema():
    settings = Settings()
    schema = build_schema(settings)
    with relying_on("strawberry.Schema._schema (the graphql-core schema)"):
        core = adapters.graphql_schema(schema)
        assert isinstance(core, GraphQLSchema)
        assert "after" in core.subscription_type.fields["processed"].args
    with relying_on("Schema.extensions (the extensions as they were passed)"):
        assert isinstance(adapters.extension_of(schema, DocumentLimits), DocumentLimits), \
            "the document limits are not found among the schema's extensions"
    with relying_on("Schema.extensions / MaxTokensLimiter.max_token_count"):
        assert adapters.max_tokens(schema) == settings.graphql_max_tokens
    with relying_on("get_type_by_name / StrawberryField / config.name_converter"):
        assert adapters.plain_attribute(schema, "Job", "processedData") == "processed_data"
        assert adapters.plain_attribute(schema, "ProcessedEvent", "cursor") == "cursor"
        assert adapters.plain_attribute(schema, "Query", "me") is None  # it has a resolver


# ---- what the adapter's classes override ----

# (ours, theirs, {method we override: the parameters we call it with})
OVERRIDES = [
    (adapters.TransportWSHandler, BaseGraphQLTransportWSHandler, {
        "__init__": "self, view, websocket, context, root_value, schema, "
                    "connection_init_wait_timeout, max_subscriptions_per_connection",
        "handle_connection_init": "self, message",
        "handle_subscribe": "self, message",
        "shutdown": "self",
        "send_message": "self, message",
        "run_operation": "self, operation",
    }),
    (adapters.LegacyWSHandler, BaseGraphQLWSHandler, {
        "__init__": "self, view, websocket, context, root_value, schema, keep_alive, "
                    "keep_alive_interval, max_subscriptions_per_connection",
        "handle": "self",
        "handle_connection_init": "self, message",
        "handle_start": "self, message",
        "send_message": "self, message",
        "handle_async_results": "self, operation_id, query, operation_name, variables",
    }),
    (adapters.WebSocketProtocol, WebSocketsSansIOProtocol, {
        "handle_connect": "self, event",
    }),
    (adapters.HttpProtocol, HttpToolsProtocol, {
        "connection_made": "self, transport",
        "on_message_begin": "self",
        "on_headers_complete": "self",
        "on_response_complete": "self",
        "on_message_complete": "self",
        "handle_websocket_upgrade": "self",
        "connection_lost": "self, exc",
        "_should_upgrade": "self",  # called, not overridden
    }),
]


def _parameters(function) -> str:
    return ", ".join(inspect.signature(function).parameters)


def check_overrides(ours: type, theirs: type, expected: dict[str, str]) -> None:
    """AssertionError (with the versions) unless `theirs` still has each method
    `ours` overrides or calls, taking the same parameters, and has none of the
    names `ours` adds (which would override something unknowingly)."""
    where = theirs.__qualname__
    for name, parameters in expected.items():
        upstream = getattr(theirs, name, None)
        assert upstream is not None, broken(f"{where}.{name} is gone")
        assert _parameters(upstream) == parameters, broken(
            f"{where}.{name} takes ({_parameters(upstream)}), not ({parameters})")
        if name in vars(ours):
            assert (inspect.iscoroutinefunction(upstream)
                    == inspect.iscoroutinefunction(vars(ours)[name])), broken(
                f"{where}.{name} changed between a function and a coroutine function")
    for name, member in vars(ours).items():
        if callable(member) and name not in expected and not name.startswith("__"):
            assert not hasattr(theirs, name), broken(
                f"{where} now has a `{name}` of its own, which {ours.__name__} would override")


@pytest.mark.parametrize("ours, theirs, expected", OVERRIDES,
                         ids=[ours.__name__ for ours, _, _ in OVERRIDES])
def test_what_the_adapter_overrides_is_still_there(ours, theirs, expected):
    check_overrides(ours, theirs, expected)


def test_a_change_upstream_fails_with_the_versions():
    class Changed(BaseGraphQLTransportWSHandler):
        async def run_operation(self, operation, priority):  # a new parameter
            pass

    with pytest.raises(AssertionError) as failure:
        check_overrides(adapters.TransportWSHandler, Changed, OVERRIDES[0][2])
    assert f"strawberry-graphql {version('strawberry-graphql')}" in str(failure.value)
    assert f"uvicorn {version('uvicorn')}" in str(failure.value)
    assert "run_operation takes (self, operation, priority)" in str(failure.value)


# ---- strawberry: the WebSocket handlers, in the running app ----

SHARED = "subscription($a: String) { processed(after: $a) { cursor job { id } } }"
STANDARD = ("subscription($a: String) { ...P } "  # a fragment: strawberry's own path
            "fragment P on Subscription { processed(after: $a) { cursor job { id } } }")


def _view(app):
    [route] = [r for r in app.routes if isinstance(r, WebSocketRoute)]
    return route.app


def _next_message(ws) -> dict:
    while (message := ws.receive_json())["type"] == "ka":  # graphql-ws keep-alive
        pass
    return message


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_the_websocket_handlers_run_both_paths(api, app_client, workers, monkeypatch, protocol):
    """Both paths of `processed` on a real socket, with the handler strawberry built
    for it: its state is what graph/adapters.py reads."""
    user = api.as_user()
    job = user.enqueue("x")["id"]
    assert workers.run_burst().returncode == 0
    handler_class = (adapters.TransportWSHandler if protocol == "graphql-transport-ws"
                     else adapters.LegacyWSHandler)
    handlers, shared = [], []
    original_init = handler_class.handle_connection_init
    original_stream = LiveConnection.shared_stream

    async def handle_connection_init(self, message):
        handlers.append(self)
        await original_init(self, message)

    async def shared_stream(self, *args):
        shared.append(await original_stream(self, *args))
        return shared[-1]

    monkeypatch.setattr(handler_class, "handle_connection_init", handle_connection_init)
    monkeypatch.setattr(LiveConnection, "shared_stream", shared_stream)
    start, stop = (("subscribe", "complete") if protocol == "graphql-transport-ws"
                   else ("start", "stop"))
    with relying_on(f"strawberry's {protocol} handler"), \
            app_client.websocket_connect("/graphql", subprotocols=[protocol]) as ws:
        ws.send_json({"type": "connection_init",
                      "payload": {"Authorization": f"Bearer {user.token}"}})
        assert _next_message(ws)["type"] == "connection_ack"
        for op, query in (("1", SHARED), ("2", STANDARD)):
            ws.send_json({"id": op, "type": start,
                          "payload": {"query": query, "variables": {"a": "0"}}})
            event = _next_message(ws)
            assert event["id"] == op and event["type"] in ("next", "data"), event
            assert event["payload"]["data"]["processed"]["job"]["id"] == job
            ws.send_json({"id": op, "type": stop})
            if protocol == "graphql-ws":  # it answers `stop` with `complete`
                assert _next_message(ws) == {"type": "complete", "id": op}
        [handler] = handlers
        assert isinstance(handler, handler_class)
        assert handler.connection_acknowledged is True
        assert handler.view is _view(app_client.app)
        assert isinstance(handler.websocket.ws, WebSocket)
        assert isinstance(handler.context, Context)
        assert isinstance(handler.session, LiveConnection)
        if protocol == "graphql-transport-ws":
            assert isinstance(handler.operations, dict)
        else:
            assert isinstance(handler.tasks, dict)
            assert isinstance(handler.view.connection_init_wait_timeout, timedelta)
            wait_until(lambda: not handler.tasks, 10, message="both operations ended")
    assert shared[0] is not None and shared[1] is None, "SHARED took the shared path, STANDARD not"


# ---- uvicorn: both protocols, in a running server ----

@contextlib.asynccontextmanager
async def uvicorn_serving(app, **config):
    """uvicorn in this event loop, on a free port, with these protocol classes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off",
                                           timeout_graceful_shutdown=1, **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until_async(lambda: server.started or task.done(), 10, message="uvicorn")
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_send_now_writes_at_once_and_refuses_when_the_buffer_is_full():
    protocols, closed = [], asyncio.Event()

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        send_now = scope["extensions"][SEND_NOW]
        protocols.append(send_now.__self__)
        assert send_now("first") is True
        protocols[0].writable.clear()  # as uvicorn does over the high-water mark
        assert send_now("held back") is False
        protocols[0].writable.set()
        assert send_now("second") is True
        assert (await receive())["type"] == "websocket.disconnect"
        assert send_now("too late") is True  # closing: nothing goes out any more
        closed.set()

    with relying_on("uvicorn's websockets-sansio protocol"):
        async with uvicorn_serving(app, ws=FanoutWebSocketProtocol) as port:
            async with websockets.connect(f"ws://127.0.0.1:{port}/") as client:
                assert [await client.recv(), await client.recv()] == ["first", "second"]
            await asyncio.wait_for(closed.wait(), 10)
        [protocol] = protocols
        assert isinstance(protocol, adapters.WebSocketProtocol)
        assert protocol.disconnected or protocol.close_sent
        assert protocol.handshake_complete and protocol.initial_response is None


async def test_the_http_hooks_time_a_request_and_end_it():
    """A slow body: the deadline starts at the head and ends the app's request."""
    disconnects = []

    async def app(scope, receive, send):
        message = await receive()
        while message["type"] == "http.request" and message.get("more_body"):
            message = await receive()
        disconnects.append(message["type"] == "http.disconnect")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with relying_on("uvicorn's httptools protocol"):
        http = TimedHttpProtocol.with_timeouts(head=5, body=0.3)
        async with uvicorn_serving(app, http=http) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n")
                writer.write(b"1")  # the whole body: answered as usual
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200"), head
                await asyncio.wait_for(reader.readexactly(2), 10)
                writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n1")
                answer = await asyncio.wait_for(reader.read(), 10)  # until it closes
            finally:
                writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert disconnects == [False, True], "the app heard the slow request end"
