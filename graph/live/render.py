"""A `processed` event's `data`, built without graphql-core's executor.

graphql-core executes a selection by visiting the document, resolving and
completing each field through several layers: about 200 µs for one event of
the usual subscription, once per event and document. The selections a
`processed` listener makes are plain: fields of ProcessedEvent and Job, maybe
aliased, maybe `__typename`. For those, `compile_selection` turns the
validated document into a list of (response key, getter, serializer) steps,
run in microseconds, with each value serialized by the same GraphQL type
graphql-core would use, so the JSON is the same (tests/test_render.py holds
it to that).

Anything else (fragments, directives, a field selected twice under one key, a
field with its own resolver, a null where the schema says non-null) gives
None here or raises `NotPlain`, and the caller runs graphql-core instead.
"""

from __future__ import annotations

from typing import Any, Callable

from graphql import FieldNode, GraphQLNonNull, GraphQLObjectType, get_named_type, is_leaf_type

from ..adapters import graphql_schema, plain_attribute

Step = tuple[str, Callable[[Any], Any], Any]  # (response key, value of the parent, completion)


class NotPlain(Exception):
    """This event cannot be rendered by the compiled plan (e.g. a null in a non-null field)."""


def compile_selection(strawberry_schema, field: FieldNode) -> Callable[[Any], dict] | None:
    """A function from the root value (a ProcessedEvent) to `{"processed": ...}`, or None."""
    root_type = graphql_schema(strawberry_schema).subscription_type
    steps = selection_steps(strawberry_schema, root_type, [field])
    if steps is None:
        return None
    return lambda root: complete_value(steps, root)


def selection_steps(strawberry_schema, parent: GraphQLObjectType, selections) -> list[Step] | None:
    steps: list[Step] = []
    keys = set()
    for node in selections:
        if not isinstance(node, FieldNode) or node.directives:
            return None
        if node.arguments and parent is not graphql_schema(strawberry_schema).subscription_type:
            return None  # the subscription's own arguments are read elsewhere
        key = node.alias.value if node.alias else node.name.value
        if key in keys:
            return None  # fields merged under one key: graphql-core's business
        keys.add(key)
        name = node.name.value
        if name == "__typename":
            steps.append((key, _constant(parent.name), None))
            continue
        definition = parent.fields.get(name)
        if definition is None:
            return None
        getter = _getter(strawberry_schema, parent, name)
        if getter is None:
            return None
        named = get_named_type(definition.type)
        non_null = isinstance(definition.type, GraphQLNonNull)
        if is_leaf_type(named):
            steps.append((key, getter, (named.serialize, non_null)))
        elif isinstance(named, GraphQLObjectType) and node.selection_set:
            inner = selection_steps(strawberry_schema, named, node.selection_set.selections)
            if inner is None:
                return None
            steps.append((key, getter, (inner, non_null)))
        else:
            return None  # lists, interfaces, unions: none in ProcessedEvent today
    return steps


def is_plain(strawberry_schema, parent: GraphQLObjectType, graphql_name: str) -> bool:
    """Whether a field is read from its parent as it is: no resolver of its own (which
    would need the request's context, and may wait on MongoDB: Job.owner)."""
    return graphql_name == "__typename" or _getter(strawberry_schema, parent, graphql_name) \
        is not None


def _constant(value):
    return lambda _parent: value


def _getter(strawberry_schema, parent: GraphQLObjectType, graphql_name: str):
    """Reads the field from the parent object, when it is a plain attribute."""
    if parent is graphql_schema(strawberry_schema).subscription_type:
        return lambda root: root  # the subscription itself: the root value is the event
    python_name = plain_attribute(strawberry_schema, parent.name, graphql_name)
    if python_name is None:
        return None
    return lambda obj: getattr(obj, python_name)


def complete_value(steps: list[Step], parent) -> dict:
    out = {}
    for key, getter, completion in steps:
        value = getter(parent)
        if completion is None:  # __typename
            out[key] = value
            continue
        how, non_null = completion
        if value is None:
            if non_null:
                raise NotPlain(f"null in non-null field {key}")
            out[key] = None
        elif callable(how):
            out[key] = how(value)
            if out[key] is None:
                raise NotPlain(f"{key} did not serialize")
        else:
            out[key] = complete_value(how, value)
    return out
