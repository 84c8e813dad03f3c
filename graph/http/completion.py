"""Completing plain objects without graphql-core's per-field machinery.

graphql-core completes an object by collecting its sub-selections and
executing each field: resolve info, strawberry's resolver, value completion,
serialization. For an object whose selected fields only read attributes
(`Job` in `enqueue` and `enqueueMany` answers: 1,000 jobs made that about 40%
of the request), the same answer comes from a list of (response key,
attribute, serializer) steps compiled once per selection, each value
serialized by the GraphQL type graphql-core would use.

A selection is plain when every node is a field without arguments or
directives, each under its own response key (no fragments, no merging),
each field read from an attribute (adapters.plain_attribute: no resolver,
permission or extension) and either a leaf or a plain object type (no
lists, interfaces or unions, no `is_type_of`). Anything else, and any value
the steps cannot complete as is (a null in a non-null field, a serializer
that refuses or raises), goes to graphql-core's own completion of that
object: completing has no side effects, so doing it again gives graphql-core's
answer and errors. tests/test_prepared.py compares the bytes.
"""

from __future__ import annotations

from typing import Any

from graphql import FieldNode, GraphQLNonNull, GraphQLObjectType, Undefined, is_leaf_type

from ..adapters import plain_attribute

MAX_PLANS = 1024  # selections remembered; then all forgotten at once

Step = tuple[str, "str | None", Any, bool]  # (key, attribute or None for __typename, how, non-null)


class NotPlain(Exception):
    """This value needs graphql-core's completion."""


def completion_class(strawberry_schema, base: type) -> type:
    """`base` (the schema's graphql-core execution context class), completing
    plain objects by compiled steps."""
    plans: dict[int, tuple[Any, list[Step] | None]] = {}  # id(node) -> (node, steps)

    class PlainCompletion(base):
        def complete_object_value(self, return_type, field_details_list, info, path, result,
                                  position_context):
            steps = _plan(plans, strawberry_schema, return_type, field_details_list)
            if steps is not None:
                try:
                    return complete_value(steps, result)
                except NotPlain:
                    pass
            return super().complete_object_value(return_type, field_details_list, info, path,
                                                 result, position_context)

    return PlainCompletion


def _plan(plans, strawberry_schema, return_type, field_details_list) -> list[Step] | None:
    if len(field_details_list) != 1 or return_type.is_type_of is not None:
        return None
    details = field_details_list[0]
    if getattr(details, "defer_usage", None) is not None or getattr(
            details, "fragment_variable_values", None) is not None:
        return None
    node = details.node
    known = plans.get(id(node))
    if known is not None and known[0] is node:  # the node itself is kept: its id stays its own
        return known[1]
    steps = selection_steps(strawberry_schema, return_type, node.selection_set.selections) \
        if node.selection_set else None
    if len(plans) >= MAX_PLANS:
        plans.clear()
    plans[id(node)] = (node, steps)
    return steps


def selection_steps(strawberry_schema, parent: GraphQLObjectType, selections) -> list[Step] | None:
    steps: list[Step] = []
    keys = set()
    for node in selections:
        if not isinstance(node, FieldNode) or node.directives or node.arguments:
            return None
        key = node.alias.value if node.alias else node.name.value
        if key in keys:
            return None  # fields merged under one key: graphql-core's business
        keys.add(key)
        name = node.name.value
        if name == "__typename":
            steps.append((key, None, parent.name, True))
            continue
        definition = parent.fields.get(name)
        attribute = plain_attribute(strawberry_schema, parent.name, name) if definition else None
        if attribute is None:
            return None
        kind = definition.type
        non_null = isinstance(kind, GraphQLNonNull)
        if non_null:
            kind = kind.of_type
        if is_leaf_type(kind):
            if node.selection_set:
                return None
            steps.append((key, attribute, kind.serialize, non_null))
        elif (isinstance(kind, GraphQLObjectType) and kind.is_type_of is None
              and node.selection_set):
            inner = selection_steps(strawberry_schema, kind, node.selection_set.selections)
            if inner is None:
                return None
            steps.append((key, attribute, inner, non_null))
        else:
            return None  # lists, interfaces, unions
    return steps


def complete_value(steps: list[Step], parent) -> dict:
    out = {}
    try:
        for key, attribute, how, non_null in steps:
            if attribute is None:  # __typename
                out[key] = how
                continue
            value = getattr(parent, attribute)
            if value is None or value is Undefined:
                if non_null:
                    raise NotPlain  # graphql-core's error, at its path
                out[key] = None
            elif isinstance(value, Exception):
                raise NotPlain
            elif callable(how):
                serialized = how(value)
                if serialized is None or serialized is Undefined:
                    raise NotPlain
                out[key] = serialized
            else:
                out[key] = complete_value(how, value)
    except NotPlain:
        raise
    except Exception:  # a property or serializer that raises: graphql-core says how
        raise NotPlain from None
    return out
