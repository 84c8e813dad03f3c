"""Every use of strawberry's and uvicorn's undocumented parts, in one place.

The fast subscription path (graph/live/) and the HTTP deadlines
(graph/http/httpprotocol.py) need more of strawberry and uvicorn than their
documented APIs give: strawberry's graphql-core schema and its extensions'
settings, the steps of its WebSocket protocol handlers, and uvicorn's
protocol classes with their connection state. Each such use is written once
here, under a name of ours, saying what it relies on; the rest of graph/
uses those names and never reaches into strawberry or uvicorn itself.

An upgrade that changes one of these breaks this module only, and
tests/test_compat.py says which part, with the installed versions.
pyproject.toml keeps both packages below their next minor release until
that test passes on it.

This module sits at the top of graph/ rather than in graph/live/ because
graph/http uses it as much as graph/live does (the HTTP deadlines, the
view's WebSocket wiring), and the HTTP edge should not import the live-event
package for either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from graphql import GraphQLSchema
from starlette.websockets import WebSocket
from strawberry.extensions import MaxTokensLimiter, SchemaExtension
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

E = TypeVar("E", bound=SchemaExtension)

# ---- strawberry: the schema ----


def graphql_schema(schema) -> GraphQLSchema:
    """The graphql-core schema strawberry built.

    Relies on `strawberry.Schema._schema` (private; there is no public
    accessor): the shared path validates, plans and executes `processed`
    documents against it itself (graph/live/fanout.py, render.py)."""
    return schema._schema


def _extension_instances(schema) -> list[SchemaExtension]:
    """Relies on `Schema.extensions` holding the extensions as they were passed:
    instances, classes or factories (strawberry makes its own per operation)."""
    return [ext if isinstance(ext, SchemaExtension) else ext() for ext in schema.extensions]


def extension_of(schema, cls: type[E]) -> E | None:
    """An instance of the schema's extension `cls` (ours, e.g. the document limits),
    so the shared path checks a document exactly as strawberry's path would."""
    for ext in _extension_instances(schema):
        if isinstance(ext, cls):
            return ext
    return None


def max_tokens(schema) -> int | None:
    """The token limit strawberry's parser applies, for the shared path's own parse.

    Relies on `MaxTokensLimiter.max_token_count`, its constructor argument
    (undocumented)."""
    for ext in _extension_instances(schema):
        if isinstance(ext, MaxTokensLimiter):
            return ext.max_token_count
    return None


def plain_attribute(schema, type_name: str, field_name: str) -> str | None:
    """The Python attribute behind GraphQL field `type_name.field_name` when the
    field only reads it (no resolver, permission or extension of its own), so
    the compiled rendering may read it directly (graph/live/render.py); None
    otherwise.

    Relies on `Schema.get_type_by_name` answering the type's definition with
    its `fields` (StrawberryField: `base_resolver`, `permission_classes`,
    `extensions`, `python_name`) and on `config.name_converter.get_graphql_name`."""
    definition = schema.get_type_by_name(type_name)
    converter = schema.config.name_converter
    for field in getattr(definition, "fields", ()):
        if converter.get_graphql_name(field) == field_name:
            if field.base_resolver is not None or field.permission_classes or field.extensions:
                return None
            return field.python_name
    return None


def plain_execution(schema, known: tuple[type, ...]) -> tuple[Callable, dict] | None:
    """graphql-core's execute function and the arguments strawberry adds to each call
    (graph/http/prepared.py runs cached documents with them), or None when the schema
    has an extension other than `known` or one with a per-field `resolve` hook.

    Relies on `Schema._get_execute_function()` (which graphql-core function runs
    operations), `Schema.execution_context_class`, `SchemaExtension._implements_resolve`
    and strawberry's `optimized_is_awaitable`, as `Schema._execute_operation` uses them."""
    from strawberry.execution import optimized_is_awaitable
    from strawberry.schema._graphql_core import execution_context_class_kwargs

    for ext in _extension_instances(schema):
        if not isinstance(ext, known) or ext._implements_resolve():
            return None
    kwargs = {"is_awaitable": optimized_is_awaitable,
              **execution_context_class_kwargs(schema.execution_context_class)}
    return schema._get_execute_function(), kwargs


# ---- strawberry: the WebSocket protocol handlers ----


SendEvents = Callable[[str], Awaitable["dict | None"]]


class Session(Protocol):
    """Our side of one GraphQL WebSocket, whichever protocol it speaks; the
    handlers below call it (graph/live/fanout.py's LiveConnection is the one)."""

    def expect_init(self, seconds: float) -> None:
        """graphql-ws only: connection_init should come within `seconds`
        (strawberry times graphql-transport-ws itself)."""

    def authenticated(self) -> None:
        """connection_init was accepted."""

    async def allows_operation(self) -> bool:
        """A new operation on an accepted socket; False refuses it (the session
        has closed the socket)."""

    async def shared_stream(self, query: Any, variables: Any,
                            operation_name: Any) -> SendEvents | None:
        """A coroutine function sending this operation's events itself, each
        message as its argument (a protocol prefix) + payload + "}", and
        answering the error that ended it (None: nothing to tell); or None,
        and strawberry runs the operation."""

    def end(self) -> None:
        """The socket is done."""


async def _quietly(send) -> None:
    """Send a closing message if the socket still takes it."""
    with contextlib.suppress(Exception):
        await send


class TransportWSHandler(BaseGraphQLTransportWSHandler):
    """graphql-transport-ws: strawberry's handler, calling a Session.

    Relies on, besides the constructor strawberry's view calls:
    `handle_connection_init(message)`, after which `connection_acknowledged`
    says whether it was accepted; `handle_subscribe(message)`, which starts
    an operation; `shutdown()` once the socket ends; `run_operation(operation)`,
    the operation's task, with `operation.id`, `.query`, `.variables`,
    `.operation_name` and `.send_operation_message(message)` (which
    de-registers the operation on `complete`); `operations` (id: operation);
    `send_message(message)`, through which every message goes;
    `websocket.ws` (starlette's WebSocket); `view`, `context`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session: Session = self.view.websocket_session(self.websocket.ws, self.context)

    async def handle_connection_init(self, message) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self.session.authenticated()

    async def handle_subscribe(self, message) -> None:
        if self.connection_acknowledged and not await self.session.allows_operation():
            return
        await super().handle_subscribe(message)

    async def shutdown(self) -> None:
        self.session.end()
        await super().shutdown()

    async def send_message(self, message) -> None:
        await super().send_message(self.view.websocket_message(message))

    async def run_operation(self, operation) -> None:
        send_events = await self.session.shared_stream(
            operation.query, operation.variables, operation.operation_name)
        if send_events is None:
            return await super().run_operation(operation)
        # a `complete` from the client cancels this task: strawberry has de-registered it
        error = await send_events('{"id":%s,"type":"next","payload":' % json.dumps(operation.id))
        if error is not None:
            await _quietly(operation.send_operation_message(
                {"id": operation.id, "type": "next", "payload": {"data": None, "errors": [error]}}))
        # the operation is over: `complete` de-registers it, so its slot is free again
        await _quietly(operation.send_operation_message({"id": operation.id, "type": "complete"}))
        self.operations.pop(operation.id, None)  # also when that could not be sent


class LegacyWSHandler(BaseGraphQLWSHandler):
    """graphql-ws (the legacy protocol): strawberry's handler, calling a Session.

    Relies on, besides the constructor strawberry's view calls: `handle()`,
    which runs the whole connection; `handle_connection_init(message)` and
    `connection_acknowledged`; `handle_start(message)`;
    `handle_async_results(operation_id, query, operation_name, variables)`,
    each operation's task, cancelled by `stop`; `tasks` (id: task);
    `send_message(message)`, through which every message goes;
    `view.connection_init_wait_timeout`; `websocket.ws`; `context`.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.session: Session = self.view.websocket_session(self.websocket.ws, self.context)

    async def handle(self) -> None:
        self.session.expect_init(self.view.connection_init_wait_timeout.total_seconds())
        try:
            await super().handle()
        finally:
            self.session.end()

    async def handle_connection_init(self, message) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self.session.authenticated()

    async def handle_start(self, message) -> None:
        if self.connection_acknowledged and not await self.session.allows_operation():
            return
        await super().handle_start(message)

    async def send_message(self, message) -> None:
        await super().send_message(self.view.websocket_message(message))

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        send_events = await self.session.shared_stream(query, variables, operation_name)
        if send_events is None:
            return await super().handle_async_results(operation_id, query, operation_name,
                                                      variables)
        try:
            error = await send_events('{"type":"data","id":%s,"payload":' % json.dumps(operation_id))
            if error is not None:
                await _quietly(self.send_message(
                    {"type": "data", "id": operation_id,
                     "payload": {"data": None, "errors": [error]}}))
        except asyncio.CancelledError:  # `stop` from the client: answered with `complete`
            pass
        finally:  # the operation is over, however it ended: its slot is free again
            self.tasks.pop(operation_id, None)
        await _quietly(self.send_message({"type": "complete", "id": operation_id}))


class WebSocketView:
    """A mixin for strawberry's ASGI view: its GraphQL WebSockets run with the
    handlers above, which ask the view for a Session per connection.

    Relies on strawberry's view (AsyncBaseHTTPView.run) building, for each
    WebSocket, `graphql_transport_ws_handler_class(...)` or
    `graphql_ws_handler_class(...)`: class attributes, undocumented."""

    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def websocket_session(self, socket: WebSocket, context) -> Session:
        raise NotImplementedError

    def websocket_message(self, message: dict) -> dict:
        """Each message strawberry's handlers send, on its way out."""
        return message


# ---- uvicorn: the WebSocket protocol ----


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (on websockets' sans-I/O core), with a
    synchronous send for the event fan-out (graph/live/wsprotocol.py).

    Relies on `handle_connect(event)`, which answers the upgrade request and,
    when it accepts it, sets `scope` before the app runs; and on the state
    `close_sent`, `disconnected`, `handshake_complete`, `initial_response`
    (an HTTP answer instead of the upgrade), `writable` (an asyncio.Event
    cleared while the transport is over its high-water mark), `conn`
    (websockets' ServerProtocol) and `transport`."""

    def accepted(self, scope: dict) -> None:
        """An upgrade was accepted: the app runs next, with this scope."""

    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:
            self.accepted(scope)

    def send_now(self, text: str) -> bool:
        """Write one text message now. True once written, or when nothing will
        go out any more (the socket is closing: the app hears of it from
        `receive`); False when it should go later through the awaited send."""
        if self.disconnected or self.close_sent:
            return True
        if (not self.handshake_complete or self.initial_response is not None
                or not self.writable.is_set()):
            return False
        try:
            self.conn.send_text(text.encode())
        except InvalidState:  # the peer started closing
            return True
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True


# ---- uvicorn: the HTTP protocol ----


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol (httptools), with a hook at each step of a
    request's arrival (graph/http/httpprotocol.py times them).

    Relies on uvicorn's parser callbacks and what they do: `on_message_begin`,
    `on_headers_complete` (which starts the app, or queues a pipelined
    request behind the one being answered), `on_message_complete`,
    `on_response_complete`; on `connection_made`, `connection_lost` and
    `handle_websocket_upgrade`; and on the state `cycle` (the request being
    read: `response_complete`, `more_body`, `response_started`,
    `disconnected`, `message_event`), `parser.should_upgrade()`,
    `_should_upgrade()`, `transport`, `logger` and `client`."""

    # ---- the hooks ----

    def connection_opened(self) -> None:
        """A new connection: a request's head may start arriving."""

    def request_began(self) -> None:
        """The first byte of a request arrived."""

    def head_arrived(self) -> None:
        """The request line and headers are in; the app starts next (unless pipelined)."""

    def body_expected(self) -> None:
        """The app now waits for this request's body: after its head, or, for a
        pipelined request, once the answer before it is complete."""

    def body_arrived(self) -> None:
        """The whole request is in."""

    def upgrading(self) -> None:
        """The connection becomes a WebSocket; nothing more arrives as HTTP."""

    def connection_closed(self) -> None:
        """The connection is gone."""

    # ---- what the hooks may do ----

    def abandon_request(self) -> bool:
        """End the request the app is reading: it reads `http.disconnect` next,
        and whatever it answers goes nowhere. False when there is none, or its
        answer has started."""
        cycle = self.cycle
        if cycle is None or cycle.response_started:
            return False
        cycle.disconnected = True
        cycle.message_event.set()
        return True

    def close_connection(self, answer: bytes = b"", reason: str = "") -> None:
        """Write `answer` (raw HTTP), then close, unless the connection is closing
        already; `reason` goes to uvicorn's error log at debug level."""
        if self.transport.is_closing():
            return
        if reason:
            self.logger.debug("closing a connection from %s: %s",
                              self.client and self.client[0], reason)
        if answer:
            self.transport.write(answer)
        self.transport.close()

    # ---- uvicorn's callbacks, calling the hooks ----

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connection_opened()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.request_began()

    def on_headers_complete(self) -> None:
        self.head_arrived()
        pipelined = self.cycle is not None and not self.cycle.response_complete
        super().on_headers_complete()
        if not pipelined and not (self.parser.should_upgrade() and self._should_upgrade()):
            self.body_expected()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle  # a pipelined request starts now
        if (cycle is not None and cycle.more_body and not cycle.response_started
                and not self.transport.is_closing()):
            self.body_expected()

    def on_message_complete(self) -> None:
        self.body_arrived()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self.upgrading()
        super().handle_websocket_upgrade()

    def connection_lost(self, exc) -> None:
        self.connection_closed()
        super().connection_lost(exc)
