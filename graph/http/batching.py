"""Aliased `enqueue` mutations of one request, stored by one script call.

A document of N `enqueue` fields runs them one after the other (mutations are
serial): N resolver calls, N Redis round trips. When every field is an
`enqueue` whose arguments can be read from the document and variables alone,
the items are first stored together, in document order, by one call of the
same all-or-none script that `enqueueMany` uses; then graphql-core executes
the document as always, and each resolver's call of `JobService.enqueue`
is answered with its own job from that batch. Resolvers, metrics, errors and
the answer are those of the serial run (tests/test_prepared.py compares the
bytes), with one difference a client can see: the jobs of one request share
one `createdAt`, as the jobs of one `enqueueMany` do.

When the batch is refused for any reason (an item over a limit, a full
queue, Redis at its memory limit), nothing was stored, and the serial run
goes ahead alone: it stores the items before the failing one and answers
that one's error, as it always did. Not batched: a per-user rate limit
(QUEUE_ENQUEUE_RATE_PER_MINUTE counts each call, and a refused batch would
have counted already), fields that give §7's `orderingKey`, `priority` or
`runAt` (they go the serial way, validated by the resolver), a schema whose
`enqueue` grew an argument this module does not know, and values the
document does not fix (defaults, variables of other types).
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    NamedTypeNode,
    NonNullTypeNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    StringValueNode,
    VariableNode,
)

from ..errors import ApiError

from ..jobs import Item

ARGUMENTS = {"requestData", "idempotencyKey"}  # the ones a batched field may give
SCHEDULING = {"orderingKey", "priority", "runAt"}  # CONTRACT §7: left at their defaults


def enqueue_items(schema, operation: OperationDefinitionNode, variables: Any
                  ) -> list[Item] | None:
    """The Item of each field, in order, as the resolver passes it to
    JobService.enqueue (§7's arguments at their defaults); None when the
    operation is not all plain `enqueue`s (graph/http/grouping.py takes the
    documents of one)."""
    mutation = schema.mutation_type
    if operation.operation != OperationType.MUTATION or mutation is None:
        return None
    field = mutation.fields.get("enqueue")
    if field is None or set(field.args) != ARGUMENTS | SCHEDULING:
        return None
    selections = operation.selection_set.selections
    if variables is not None and not isinstance(variables, dict):
        return None
    types = {d.variable.name.value: d for d in operation.variable_definitions or ()}
    items: list[Item] = []
    keys = set()
    for node in selections:
        if not isinstance(node, FieldNode) or node.name.value != "enqueue" or node.directives:
            return None
        key = node.alias.value if node.alias else node.name.value
        if key in keys:  # fields merged under one key run once: never store one twice
            return None
        keys.add(key)
        given: dict[str, Any] = {}
        for argument in node.arguments or ():
            if argument.name.value not in ARGUMENTS:
                return None
            value = _string(argument.value, types, variables or {})
            if value is _UNKNOWN:
                return None
            if value is not _ABSENT:
                given[argument.name.value] = value
        data = given.get("requestData")
        if not isinstance(data, str):
            return None
        items.append(Item(data, given.get("idempotencyKey") or None))
    return items


_UNKNOWN, _ABSENT = object(), object()


def _string(value, types: dict, variables: dict):
    """A String argument's value as graphql-core coerces it; _ABSENT when it is not
    given (a nullable variable without a value); _UNKNOWN when not sure."""
    if isinstance(value, StringValueNode):
        return value.value
    if isinstance(value, NullValueNode):
        return None
    if not isinstance(value, VariableNode):
        return _UNKNOWN
    definition = types.get(value.name.value)
    if definition is None or definition.default_value is not None:
        return _UNKNOWN
    kind = definition.type
    required = isinstance(kind, NonNullTypeNode)
    if required:
        kind = kind.type
    if not isinstance(kind, NamedTypeNode) or kind.name.value != "String":
        return _UNKNOWN
    name = value.name.value
    if name not in variables:
        return _UNKNOWN if required else _ABSENT
    given = variables[name]
    if given is None:
        return _UNKNOWN if required else None
    return given if isinstance(given, str) else _UNKNOWN


class PreStored:
    """The request's JobService, answering each `enqueue` of one item that is next in
    line with the job already stored for it; everything else goes to the service."""

    def __init__(self, service, uid: str, items: list[Item], jobs: list,
                 error: Exception | None = None):
        self._service = service
        self._uid = uid
        self._queue = list(zip(items, jobs))
        self._error = error  # the batch failed unexpectedly: the first enqueue fails with it

    def __getattr__(self, name):
        return getattr(self._service, name)

    def pending(self) -> list:
        """The jobs stored for the enqueues still to come, in order."""
        return [] if self._error is not None else [job for _, job in self._queue]

    def take_all(self) -> None:
        """Those enqueues were answered (graph/http/compiled.py): none is left."""
        self._queue = []

    async def enqueue(self, uid: str, items: list, *args, **kwargs):
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._queue and uid == self._uid and not args and not kwargs \
                and len(items) == 1 and items[0] == self._queue[0][0]:
            return [self._queue.pop(0)[1]]
        if self._queue:  # out of step with the batch: never store an item twice
            raise RuntimeError("an enqueue of this request did not match the batch stored "
                               "for it")
        return await self._service.enqueue(uid, items, *args, **kwargs)


async def store_together(context, items: list[Item]) -> PreStored | None:
    """Store the items with one script call and make the context's JobService answer
    them (the PreStored returned); None (nothing stored) when the batch does not
    apply or was refused."""
    service = context.jobs
    if service.settings.queue_enqueue_rate_per_minute:
        return None
    try:
        uid = await context.user_id()
    except ApiError:  # the first field answers it, as it would have
        return None
    try:
        jobs = await service.enqueue(uid, items)
    except ApiError:  # nothing stored: the serial run answers it at the field it concerns
        return None
    except Exception as exc:  # Redis went away, say: whether the script ran is unknown, so
        # nothing is tried again; the first field fails with it, as it would have alone
        context.__dict__["jobs"] = PreStored(service, uid, [], [], error=exc)
        return None
    # Context.jobs is cached: the fields' resolvers find the PreStored there
    stored = context.__dict__["jobs"] = PreStored(service, uid, items, jobs)
    return stored
