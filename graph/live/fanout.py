"""`processed` over WebSockets, rendered once per event, sent as is.

Strawberry executes a subscription's selection set again for every listener
and every event, then encodes the JSON again: with ten listeners of one user
that is ten times the same work (bench/RESULTS.md, "listeners": about 300 µs
of CPU per message, most of it there). Here a valid `processed` subscription
skips that: each event is executed once per distinct document and variables,
and every listener of it sends the same bytes.

Once a listener has caught up, the event hub hands it each new event itself
and the connection writes it at once (graph/live/wsprotocol.py): no task switch
and no middleware per listener and message.

Anything else (other operations, documents with errors, a bad `after`, a
missing token, a store that fails the first check) goes through strawberry's
own path, so errors, codes and limits stay exactly as they are there. However
a shared subscription ends (its stream fails, the client stops it, the socket
goes away), it is de-registered, so it no longer counts against
WS_MAX_SUBSCRIPTIONS, and the client is told when it still listens.

The handlers also keep the socket's lifetime: graph/live/wslifetime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from functools import lru_cache

from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    execute,
    parse,
    specified_rules,
    validate,
    visit,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.language import FieldNode
from starlette.websockets import WebSocket, WebSocketState
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import CompleteMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    CompleteMessage as LegacyComplete,
)

from ..errors import fix
from ..http.metrics import OPERATIONS, SUBSCRIPTIONS
from ..types import Job, ProcessedEvent
from .render import NotPlain, compile_selection, is_plain
from .wslifetime import SocketLifetime
from .wsprotocol import SEND_NOW

log = logging.getLogger(__name__)

RENDERED_KEEP = 4096  # recent (event, document) renderings shared by listeners


class Plan:
    """A validated `processed` subscription document and its variables."""

    def __init__(self, strawberry_schema, document: DocumentNode,
                 operation: OperationDefinitionNode, variables: dict, coerced):
        schema: GraphQLSchema = strawberry_schema._schema
        self.schema = schema
        self.document = document
        self.operation_name = operation.name.value if operation.name else None
        self.variables = variables
        field: FieldNode = operation.selection_set.selections[0]  # checked in plan_for
        definition = schema.subscription_type.fields["processed"]
        self.after = get_argument_values(definition, field, coerced).get("after")
        self.key = (id(document), json.dumps(variables, sort_keys=True))
        self.compiled = compile_selection(strawberry_schema, field)  # None: graphql-core's way

    def render(self, cursor: str, record) -> str:
        """The `payload` of a `next` message for one event, as JSON text."""
        event = ProcessedEvent(cursor=cursor, job=Job.of(record))
        if self.compiled is not None:
            try:
                return json.dumps({"data": self.compiled(event)}, separators=(",", ":"))
            except NotPlain:
                pass
        result = execute(self.schema, self.document, root_value=event,
                         variable_values=self.variables, operation_name=self.operation_name)
        return json.dumps({"data": result.data}, separators=(",", ":"))


class Renderings:
    """The last few thousand renderings, so each is made once for all listeners."""

    def __init__(self, keep: int = RENDERED_KEEP):
        self.keep = keep
        self._done: OrderedDict = OrderedDict()

    def get(self, plan: Plan, cursor: str, record) -> str:
        # cursors are per-user stream ids: two users' events can share one
        key = (record.user_id, cursor, plan.key)
        text = self._done.get(key)
        if text is None:
            text = self._done[key] = plan.render(cursor, record)
            if len(self._done) > self.keep:
                self._done.popitem(last=False)
        return text


def _extensions(strawberry_schema) -> list:
    """The schema's extensions as instances (it may hold classes or factories)."""
    return [ext if isinstance(ext, SchemaExtension) else ext()
            for ext in strawberry_schema.extensions]


def _rules(strawberry_schema) -> tuple:
    """graphql-core's rules plus every rule the schema's extensions add (limits)."""
    extra = []
    for ext in _extensions(strawberry_schema):
        if isinstance(ext, AddValidationRules):
            extra += ext.validation_rules
    return tuple(specified_rules) + tuple(extra)


def _max_tokens(strawberry_schema) -> int | None:
    for ext in _extensions(strawberry_schema):
        if isinstance(ext, MaxTokensLimiter):
            return ext.max_token_count
    return None


@lru_cache(maxsize=256)
def _checked(strawberry_schema, query: str, operation_name: str | None):
    """(document, operation) of a valid single-field `processed` subscription, or None."""
    try:
        document = parse(query, max_tokens=_max_tokens(strawberry_schema))
    except Exception:
        return None
    schema = strawberry_schema._schema
    if validate(schema, document, _rules(strawberry_schema)):
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return None
    operation = operations[0]
    selections = operation.selection_set.selections
    if (operation.operation != OperationType.SUBSCRIPTION or len(selections) != 1
            or not isinstance(selections[0], FieldNode)
            or selections[0].name.value != "processed" or selections[0].directives):
        return None
    if _selects_resolvers(strawberry_schema, document):
        return None
    return document, operation


def _selects_resolvers(strawberry_schema, document: DocumentNode) -> bool:
    """Whether a field with a resolver of its own is selected below `processed` (such
    as Job.owner): a shared rendering has no request context to run it with."""
    schema = strawberry_schema._schema
    type_info = TypeInfo(schema)
    found = []

    class Finder(Visitor):
        def enter_field(self, node: FieldNode, *_):
            parent = type_info.get_parent_type()
            if parent is not schema.subscription_type and not is_plain(
                    strawberry_schema, parent, node.name.value):
                found.append(node)
                return self.BREAK
            return None

    visit(document, TypeInfoVisitor(type_info, Finder()))
    return bool(found)


def plan_for(strawberry_schema, query, variables, operation_name) -> Plan | None:
    if not isinstance(query, str) or not (variables is None or isinstance(variables, dict)):
        return None
    checked = _checked(strawberry_schema, query, operation_name)
    if checked is None:
        return None
    document, operation = checked
    variables = variables or {}
    try:
        coerced = get_variable_values(strawberry_schema._schema,
                                      operation.variable_definitions or [], variables)
        if isinstance(coerced, list):  # variable errors: the standard path reports them
            return None
        return Plan(strawberry_schema, document, operation, variables, coerced)
    except Exception:
        log.debug("no shared rendering for this subscription", exc_info=True)
        return None


async def _caller(context, plan: Plan) -> str | None:
    """The listener's user id once the checks the standard path would make pass;
    None lets the standard path run and report the error (token, cursor, a
    failing store): it meets the same error, sends it and ends the operation."""
    try:
        uid = await context.user_id()
        if plan.after is not None:
            await context.services.hub.check_cursor(uid, plan.after)
    except Exception:
        log.debug("processed subscription takes the standard path", exc_info=True)
        return None
    return uid


def _gone(ws: WebSocket) -> bool:
    return WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state)


async def _quietly(send) -> None:
    """Send a closing message if the socket still takes it."""
    with contextlib.suppress(Exception):
        await send


def _error(exc: Exception) -> dict:
    """An error that ended a shared subscription, as strawberry would send it:
    an ApiError with its code, anything else masked (and logged with an id)."""
    return fix(GraphQLError(str(exc), original_error=exc)).formatted


async def _stream(ws, services, plan: Plan, uid: str, prefix: str) -> None:
    """Send the user's events to one listener, each message `prefix` + payload + "}".

    Returns if the event stream ends; raises when the socket goes away."""
    renderings = services.renderings

    def message(cursor, record) -> str:
        return prefix + renderings.get(plan, cursor, record) + "}"

    sink = None
    send_now = ws.scope.get("extensions", {}).get(SEND_NOW)
    if send_now is not None:  # under `python -m graph`: see graph/live/wsprotocol.py
        def sink(cursor, record) -> bool:
            return send_now(message(cursor, record))
    OPERATIONS.labels(plan.operation_name or "anonymous", "subscription", "OK").inc()
    SUBSCRIPTIONS.inc()
    try:
        async for cursor, record in services.hub.listen(uid, plan.after, sink=sink):
            await ws.send_text(message(cursor, record))
    finally:
        SUBSCRIPTIONS.dec()


class FanoutTransportWSHandler(BaseGraphQLTransportWSHandler):
    """graphql-transport-ws with the shared-rendering path for `processed`,
    and the socket's lifetime (graph/live/wslifetime.py; strawberry itself closes
    a socket without connection_init)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lifetime = SocketLifetime(self.websocket, self.context)

    async def handle_connection_init(self, message) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self.lifetime.authenticated()

    async def handle_subscribe(self, message) -> None:
        if self.connection_acknowledged and not await self.lifetime.allows_operation():
            return
        await super().handle_subscribe(message)

    async def shutdown(self) -> None:
        self.lifetime.end()
        await super().shutdown()

    async def run_operation(self, operation) -> None:
        plan = plan_for(self.schema, operation.query, operation.variables,
                        operation.operation_name)
        uid = plan and await _caller(self.context, plan)
        if uid is None:
            return await super().run_operation(operation)
        prefix = '{"id":%s,"type":"next","payload":' % json.dumps(operation.id)
        ws = self.websocket.ws
        try:
            await _stream(ws, self.context.services, plan, uid, prefix)
        except Exception as exc:  # the socket went away, the hub failed, the cursor was trimmed
            if not _gone(ws):
                await _quietly(operation.send_operation_message(
                    {"id": operation.id, "type": "next",
                     "payload": {"data": None, "errors": [_error(exc)]}}))
        # the operation is over: `complete` de-registers it, so its slot is free again
        await _quietly(operation.send_operation_message(
            CompleteMessage(id=operation.id, type="complete")))
        self.operations.pop(operation.id, None)  # also when that could not be sent


class FanoutGraphQLWSHandler(BaseGraphQLWSHandler):
    """The legacy graphql-ws protocol with the same path for `processed`, and
    the same lifetime, its init timeout included."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lifetime = SocketLifetime(self.websocket, self.context)

    async def handle(self) -> None:
        self.lifetime.expect_init(self.view.connection_init_wait_timeout.total_seconds())
        try:
            await super().handle()
        finally:
            self.lifetime.end()

    async def handle_connection_init(self, message) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self.lifetime.authenticated()

    async def handle_start(self, message) -> None:
        if self.connection_acknowledged and not await self.lifetime.allows_operation():
            return
        await super().handle_start(message)

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        plan = plan_for(self.schema, query, variables, operation_name)
        uid = plan and await _caller(self.context, plan)
        if uid is None:
            return await super().handle_async_results(operation_id, query, operation_name,
                                                      variables)
        prefix = '{"type":"data","id":%s,"payload":' % json.dumps(operation_id)
        ws = self.websocket.ws
        try:
            await _stream(ws, self.context.services, plan, uid, prefix)
        except asyncio.CancelledError:  # `stop` from the client: answered with `complete`
            pass
        except Exception as exc:  # the socket went away, the hub failed, the cursor was trimmed
            if not _gone(ws):
                await _quietly(self.send_message(
                    {"type": "data", "id": operation_id,
                     "payload": {"data": None, "errors": [_error(exc)]}}))
        finally:  # the operation is over, however it ended: its slot is free again
            self.tasks.pop(operation_id, None)
        await _quietly(self.send_message(LegacyComplete(type="complete", id=operation_id)))
