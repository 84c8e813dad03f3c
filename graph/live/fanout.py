"""`processed` and `jobUpdates` over WebSockets, rendered once per event, sent as is.

Strawberry executes a subscription's selection set again for every listener
and every event, then encodes the JSON again: with ten listeners of one user
that is ten times the same work (bench/RESULTS.md, "listeners": about 300 µs
of CPU per message, most of it there). Here a valid `processed` subscription
skips that: each event is executed once per distinct document and variables,
and every listener of it sends the same bytes. `jobUpdates` (CONTRACT §8)
goes the same way: the same hub, the same renderings, the same sockets.

Once a listener has caught up, the event hub hands it each new event itself
and the connection writes it at once (graph/live/wsprotocol.py): no task switch
and no middleware per listener and message.

Anything else (other operations, documents with errors, a bad `after`, a
missing token, a store that fails the first check) goes through strawberry's
own path, so errors, codes and limits stay exactly as they are there. However
a shared subscription ends (its stream fails, the client stops it, the socket
goes away), it is de-registered, so it no longer counts against
WS_MAX_SUBSCRIPTIONS, and the client is told when it still listens. Both
paths start and end a subscription the same way: graph/live/subscription.py.

strawberry's protocol handlers (graph/adapters.py) call a LiveConnection for
each socket, which also keeps the socket's lifetime (graph/live/wslifetime.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import OrderedDict
from functools import lru_cache, partial

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
    visit,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.language import FieldNode
from starlette.websockets import WebSocket, WebSocketState

from ..adapters import SendEvents, extension_of, graphql_schema, max_tokens
from ..errors import fix
from ..http.limits import DocumentLimits, bounded
from ..http.metrics import OPERATIONS
from ..types import Job, JobUpdate, ProcessedEvent
from .render import NotPlain, compile_selection, is_plain
from .subscription import subscribe, subscribe_job
from .wslifetime import SocketLifetime
from .wsprotocol import SEND_NOW

log = logging.getLogger(__name__)

RENDERED_KEEP = 4096  # recent (event, document) renderings shared by listeners
SHARED = ("processed", "jobUpdates")  # the subscriptions this path serves


class Plan:
    """A validated `processed` or `jobUpdates` subscription document and its variables."""

    def __init__(self, strawberry_schema, document: DocumentNode,
                 operation: OperationDefinitionNode, variables: dict, coerced):
        schema: GraphQLSchema = graphql_schema(strawberry_schema)
        self.schema = schema
        self.document = document
        self.operation_name = operation.name.value if operation.name else None
        self.variables = variables
        field: FieldNode = operation.selection_set.selections[0]  # checked in plan_for
        self.field = field.name.value
        definition = schema.subscription_type.fields[self.field]
        arguments = get_argument_values(definition, field, coerced)
        self.after = arguments.get("after")
        self.job_id = arguments.get("id")  # jobUpdates
        self.key = (id(document), json.dumps(variables, sort_keys=True))
        self.compiled = compile_selection(strawberry_schema, field)  # None: graphql-core's way

    def render(self, *event) -> str:
        """The `payload` of a `next` message for one event, (cursor, job) of
        `processed` or (cursor, kind, job) of `jobUpdates`, as JSON text."""
        if self.field == "processed":
            cursor, record = event
            event = ProcessedEvent(cursor=cursor, job=Job.of(record))
        else:
            cursor, kind, record = event
            event = JobUpdate(cursor=cursor, kind=kind, job=Job.of(record))
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

    def get(self, plan: Plan, *event) -> str:
        # cursors are ids in a user's (processed) or a job's (jobUpdates) stream:
        # two users' or jobs' events can share one
        record = event[-1]
        key = (record.user_id, record.id, event[0], plan.key)
        text = self._done.get(key)
        if text is None:
            text = self._done[key] = plan.render(*event)
            if len(self._done) > self.keep:
                self._done.popitem(last=False)
        return text


@lru_cache(maxsize=256)
def _checked(strawberry_schema, query: str, operation_name: str | None):
    """(document, operation) of a valid single-field `processed` or `jobUpdates`
    subscription, or None."""
    try:
        document = parse(query, max_tokens=max_tokens(strawberry_schema))
    except Exception:
        return None
    schema = graphql_schema(strawberry_schema)
    # the same checks as strawberry's path: the limits' one pass first (a document over
    # a limit is never validated), then graphql-core's rules, overlap bounded
    limits = extension_of(strawberry_schema, DocumentLimits)
    if limits is None or limits.validate(document, schema, None, bounded(specified_rules))[0]:
        return None  # strawberry's path answers it, with the error
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return None
    operation = operations[0]
    selections = operation.selection_set.selections
    if (operation.operation != OperationType.SUBSCRIPTION or len(selections) != 1
            or not isinstance(selections[0], FieldNode)
            or selections[0].name.value not in SHARED or selections[0].directives):
        return None
    if _selects_resolvers(strawberry_schema, document):
        return None
    return document, operation


def _selects_resolvers(strawberry_schema, document: DocumentNode) -> bool:
    """Whether a field with a resolver of its own is selected below the subscription (such
    as Job.owner): a shared rendering has no request context to run it with."""
    schema = graphql_schema(strawberry_schema)
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
        coerced = get_variable_values(graphql_schema(strawberry_schema),
                                      operation.variable_definitions or [], variables)
        if isinstance(coerced, list):  # variable errors: the standard path reports them
            return None
        return Plan(strawberry_schema, document, operation, variables, coerced)
    except Exception:
        log.debug("no shared rendering for this subscription", exc_info=True)
        return None


def _gone(ws: WebSocket) -> bool:
    return WebSocketState.DISCONNECTED in (ws.client_state, ws.application_state)


def _error(exc: Exception) -> dict:
    """An error that ended a shared subscription, as strawberry would send it:
    an ApiError with its code, anything else masked (and logged with an id)."""
    return fix(GraphQLError(str(exc), original_error=exc)).formatted


async def _send_events(ws: WebSocket, services, plan: Plan, subscription, prefix: str
                       ) -> dict | None:
    """Send the user's events to one listener, each message `prefix` + payload + "}",
    until the event stream ends. Answers the error that ended it when the
    client can still hear of it."""
    renderings = services.renderings

    def message(event: tuple) -> str:
        return prefix + renderings.get(plan, *event) + "}"

    sink = None
    send_now = ws.scope.get("extensions", {}).get(SEND_NOW)
    if send_now is not None:  # under `python -m graph`: see graph/live/wsprotocol.py
        def sink(*event) -> bool:
            return send_now(message(event))
    OPERATIONS.labels(plan.operation_name or "anonymous", "subscription", "OK").inc()
    try:
        async with contextlib.aclosing(subscription.events(sink=sink)) as events:
            async for event in events:
                await ws.send_text(message(event))
    except Exception as exc:  # the socket went away, the hub failed, the cursor was trimmed
        if not _gone(ws):
            return _error(exc)
    return None


class LiveConnection(SocketLifetime):
    """One GraphQL WebSocket, either protocol, as strawberry's handlers see it
    (graph/adapters.py's Session): its lifetime, and the shared path for
    `processed`."""

    def __init__(self, socket: WebSocket, context, strawberry_schema):
        super().__init__(socket, context)
        self.schema = strawberry_schema

    async def shared_stream(self, query, variables, operation_name) -> SendEvents | None:
        """The events of a `processed` or `jobUpdates` subscription this path serves, once the
        checks the standard path would make pass. None lets the standard path
        run, and report the error (token, cursor, a failing store): it meets
        the same error, sends it and ends the operation."""
        plan = plan_for(self.schema, query, variables, operation_name)
        if plan is None:
            return None
        try:
            if plan.field == "processed":
                subscription = await subscribe(self.context, plan.after)
            else:
                subscription = await subscribe_job(self.context, plan.job_id, plan.after)
        except Exception:
            log.debug("%s subscription takes the standard path", plan.field, exc_info=True)
            return None
        return partial(_send_events, self.websocket, self.context.services, plan, subscription)
