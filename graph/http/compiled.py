"""A document of `enqueue` fields alone, answered without graphql-core's execution.

Under load most requests are the same small mutation: one `enqueue` whose
arguments come from String variables or literals, selecting plain `Job`
fields. graphql-core runs it through its executor (variable coercion, field
collection, resolve info, strawberry's resolver wrapper and argument
conversion, value completion): about as much Python, and as many objects for
the garbage collector, as the rest of the request.

For such a document (`plan`) this does what that execution does: the
resolver's steps (`Mutation.enqueue`: the caller's id, the job service's
enqueue of the one item, the `ENQUEUED` count, `Job.of`), then the selection
completed by the same compiled steps graph/http/completion.py uses, under
the field's response key. The answer is the same `data` graphql-core gives.
Several such fields (aliased) are answered once batching.store_together has
stored their jobs: each field's job is the one its resolver would get.

When a step does not succeed (no valid token, an item refused, Redis gone, a
value the compiled steps cannot complete), `answer` returns None and
graphql-core runs the document after all, with the context made to repeat
what already happened instead of doing it again: the same error raised by
the same call, or the job already stored. So errors are graphql-core's own,
nothing is stored twice, and `ENQUEUED` counts each job once.
tests/test_compiled.py compares the bytes with both other paths.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    GraphQLNonNull,
    GraphQLObjectType,
    NamedTypeNode,
    NonNullTypeNode,
    OperationDefinitionNode,
)

from ..jobs import Item
from ..types import Job
from .batching import PreStored
from .completion import Step, complete_value, selection_steps
from .metrics import ENQUEUED

MAX_PLANS = 1024  # operations remembered; then all forgotten at once

Plan = tuple[str, list[Step]]  # (response key, the Job selection's steps)


class EnqueueFields:
    """The compiled answers of one schema's documents of `enqueue` fields alone."""

    def __init__(self, strawberry_schema, core_schema):
        self.strawberry_schema = strawberry_schema
        mutation = core_schema.mutation_type
        field = mutation.fields.get("enqueue") if mutation else None
        kind = field.type if field else None
        self.job_type = kind.of_type if isinstance(kind, GraphQLNonNull) and isinstance(
            kind.of_type, GraphQLObjectType) and kind.of_type.is_type_of is None else None
        self.plans: dict[int, tuple[OperationDefinitionNode, list[Plan] | None]] = {}

    def plan(self, operation: OperationDefinitionNode) -> list[Plan] | None:
        """A plan per field of an operation whose selections are `enqueue` fields
        that graph/http/batching.py's `enqueue_items` read (so their arguments are
        known), each under its own response key with a plain selection, and whose
        variables are Strings; None for any other."""
        known = self.plans.get(id(operation))
        if known is not None and known[0] is operation:  # kept: its id stays its own
            return known[1]
        plan = self._compile(operation)
        if len(self.plans) >= MAX_PLANS:
            self.plans.clear()
        self.plans[id(operation)] = (operation, plan)
        return plan

    def _compile(self, operation: OperationDefinitionNode) -> list[Plan] | None:
        if self.job_type is None or operation.directives:
            return None
        for definition in operation.variable_definitions or ():
            kind = definition.type
            if isinstance(kind, NonNullTypeNode):
                kind = kind.type
            if definition.directives or definition.default_value is not None \
                    or not isinstance(kind, NamedTypeNode) or kind.name.value != "String":
                return None
        plans: list[Plan] = []
        # enqueue_items has read every selection: `enqueue` fields without
        # directives, each under its own response key
        for node in operation.selection_set.selections:
            if not node.selection_set:
                return None
            steps = selection_steps(self.strawberry_schema, self.job_type,
                                    node.selection_set.selections)
            if steps is None:
                return None
            plans.append(((node.alias.value if node.alias else node.name.value), steps))
        return plans or None

    @staticmethod
    def variables_fit(operation: OperationDefinitionNode, variables: Any) -> bool:
        """graphql-core would coerce these variables without an error: each declared
        one (all String, none with a default) a string, or absent or null if nullable."""
        variables = variables or {}
        for definition in operation.variable_definitions or ():
            value = variables.get(definition.variable.name.value)
            if value is None:
                if isinstance(definition.type, NonNullTypeNode):
                    return False
            elif not isinstance(value, str):
                return False
        return True

    @staticmethod
    async def answer(plan: Plan, context, item: Item) -> dict | None:
        """The `data` of one field's operation; None when graphql-core must answer,
        the context then repeating what was done (see the module's docstring)."""
        key, steps = plan
        try:
            uid = await context.user_id()
        except Exception as exc:
            context.user_id = _raising(exc)
            return None
        service = context.jobs
        try:
            [job] = await service.enqueue(uid, [item])
        except Exception as exc:
            context.__dict__["jobs"] = PreStored(service, uid, [], [], error=exc)
            return None
        try:
            value = complete_value(steps, Job.of(job))
        except Exception:  # NotPlain, or Job.of itself: graphql-core's completion says how
            context.__dict__["jobs"] = PreStored(service, uid, [item], [job])
            return None
        ENQUEUED.inc()
        return {key: value}

    @staticmethod
    def answer_stored(plans: list[Plan], stored: PreStored) -> dict | None:
        """The `data` of fields whose jobs batching.store_together stored, each
        answered as its resolver's call of the context's PreStored would be; None
        (nothing taken from it) when graphql-core must complete them."""
        jobs = stored.pending()
        if len(jobs) != len(plans):
            return None
        try:
            data = {key: complete_value(steps, Job.of(job))
                    for (key, steps), job in zip(plans, jobs)}
        except Exception:  # as in `answer`
            return None
        stored.take_all()
        ENQUEUED.inc(len(jobs))
        return data


def _raising(exc: Exception):
    """`Context.user_id`, failing again as it did."""
    async def user_id() -> str:
        raise exc

    return user_id

