"""Input objects of plain scalar fields, built from graphql-core's coerced value directly.

strawberry builds each input object by looking at every field's type
(`convert_argument`: its annotation resolved, generics and leaf checks, the
GraphQL name worked out) for every item; for an `enqueueMany` of 1,000
`EnqueueInput`s that was about 40% of the request's Python. When every
field is a scalar or an optional scalar (no enum, list, nested input,
`Maybe` or GlobalID, which strawberry converts), its conversion leaves the
value as graphql-core coerced it, so the object is the class called with
the given fields, the fields without a default set to None first, exactly
as strawberry does. That plan is made once, at the first value; a type
that is not plain goes back to strawberry's conversion for good.
tests/test_inputs.py compares both.
"""

from __future__ import annotations

from dataclasses import MISSING
from typing import Any

from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryMaybe, StrawberryOptional
from strawberry.scalars import is_scalar


def plain_input(cls: type) -> type:
    """Build `cls` (a strawberry input type) the direct way when its fields allow it."""
    definition = cls.__strawberry_definition__
    if not hasattr(definition, "from_input"):  # a strawberry without the hook: as before
        return cls
    plan: list[Any] = []  # [(graphql name, python name)], or [None]: not plain

    def from_input(type_, value, context):
        if not plan:
            plan.extend(_plan(definition, context) or [None])
        if plan[0] is None:
            definition.from_input = None  # strawberry's conversion from now on
            return convert_argument(value, type_, context.scalar_registry, context.config,
                                    context.info, path=context.path)
        kwargs = dict.fromkeys(unset)
        for graphql_name, python_name in plan:
            if graphql_name in value:
                kwargs[python_name] = value[graphql_name]
        return type_(**kwargs)

    unset = [f.python_name for f in definition.fields
             if f.default_value is MISSING and f.default_factory is MISSING]
    definition.from_input = from_input
    return cls


def _plan(definition, context) -> list[tuple[str, str]] | None:
    from strawberry.relay.types import GlobalID

    plan = []
    for field in definition.fields:
        kind = field.resolve_type(type_definition=definition)
        if isinstance(kind, StrawberryMaybe):
            return None
        if isinstance(kind, StrawberryOptional):
            kind = kind.of_type
        if kind is GlobalID or not isinstance(kind, type) \
                or not is_scalar(kind, context.scalar_registry):
            return None
        plan.append((context.config.name_converter.from_field(field), field.python_name))
    return plan
