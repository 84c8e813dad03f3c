"""Input objects built directly (graph/inputs.py) equal what strawberry's own conversion
builds, for every shape of value graphql-core can hand over."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

import strawberry
from hypothesis import given
from hypothesis import strategies as st
from strawberry.types.arguments import convert_argument
from strawberry.types.unset import UNSET

from graph.inputs import plain_input
from graph.schema import build_schema
from graph.types import EnqueueInput

SCHEMA = build_schema()
REGISTRY, CONFIG = SCHEMA.schema_converter.scalar_registry, SCHEMA.config
text = st.one_of(st.none(), st.text(max_size=5))
value = st.fixed_dictionaries({"requestData": st.text(max_size=5)}, optional={
    "idempotencyKey": text, "orderingKey": text,
    "priority": st.one_of(st.none(), st.integers(-100, 100)),
    "runAt": st.one_of(st.none(), st.datetimes(timezones=st.just(timezone.utc)))})


def strawberrys(type_, raw):
    definition = type_.__strawberry_definition__
    hook, definition.from_input = definition.from_input, None
    try:
        return convert_argument(raw, type_, REGISTRY, CONFIG)
    finally:
        definition.from_input = hook


def fields(obj) -> dict:
    return {name: getattr(obj, name) for name in vars(obj)}


@given(value)
def test_enqueue_inputs_are_built_as_strawberry_builds_them(raw):
    ours, theirs = convert_argument(raw, EnqueueInput, REGISTRY, CONFIG), strawberrys(
        EnqueueInput, raw)
    assert type(ours) is EnqueueInput and fields(ours) == fields(theirs)
    if "idempotencyKey" not in raw:
        assert ours.idempotency_key is UNSET


def test_a_list_of_them_too():
    raw = [{"requestData": "a"}, {"requestData": "b", "priority": 3,
                                  "runAt": datetime(2030, 1, 1, tzinfo=timezone.utc)}]
    list_type = SCHEMA.get_type_by_name("Mutation").fields
    items = next(f for f in list_type if f.python_name == "enqueue_many").arguments[0].type
    ours = convert_argument(raw, items, REGISTRY, CONFIG)
    assert [fields(o) for o in ours] == [fields(strawberrys(EnqueueInput, r)) for r in raw]


class Colour(enum.Enum):
    RED = "red"


@strawberry.input
class Inner:
    x: int


def test_a_type_that_is_not_plain_is_converted_by_strawberry():
    @plain_input
    @strawberry.input
    class NotPlain:
        colour: Colour
        inner: Inner | None = None

    registry = SCHEMA.schema_converter.scalar_registry
    got = convert_argument({"colour": Colour.RED, "inner": {"x": 1}}, NotPlain, registry, CONFIG)
    assert got.colour is Colour.RED and isinstance(got.inner, Inner) and got.inner.x == 1
    assert NotPlain.__strawberry_definition__.from_input is None  # strawberry's from now on

