"""Plain objects completed by compiled steps (graph/http/completion.py) give graphql-core's
own result: the same data and the same errors, nulls where the schema forbids them included."""

from __future__ import annotations

import enum
import json

import pytest
import strawberry
from graphql import parse
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.adapters import graphql_schema, plain_execution
from graph.http.completion import selection_steps, completion_class


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Inner:
    label: str
    size: int | None


@strawberry.type
class Thing:
    name: str
    note: str | None
    colour: Colour
    inner: Inner
    maybe_inner: Inner | None

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


def things(rows) -> list[Thing]:
    return [Thing(name=n, note=note, colour=c, inner=Inner(label=lab, size=sz),
                  maybe_inner=None if mi else Inner(label="m", size=None))
            for n, note, c, lab, sz, mi in rows]


@strawberry.type
class Query:
    @strawberry.field
    def things(self, info: strawberry.Info) -> list[Thing]:
        return info.context["rows"]


SCHEMA = strawberry.Schema(query=Query)
EXECUTE, KWARGS = plain_execution(SCHEMA, known=())
COMPILED = {**KWARGS, "executor_class": completion_class(SCHEMA, KWARGS["executor_class"])}

FIELDS = ["name", "note", "colour", "__typename", "shout", "inner { label size }",
          "maybeInner { label size __typename }", "inner { ... on Inner { label } }",
          "name @skip(if: false)"]


def run(query: str, rows, kwargs) -> str:
    result = EXECUTE(graphql_schema(SCHEMA), parse(query), context_value={"rows": rows},
                     **kwargs)
    return json.dumps({"data": result.data,
                       "errors": [e.formatted for e in result.errors or ()]})


# a None where the schema says non-null (a broken resolver) must give graphql-core's error
row = st.tuples(st.sampled_from(["a", "é\"x", None]), st.sampled_from(["n", None]),
                st.sampled_from([Colour.RED, Colour.BLUE, "not a colour", None]),
                st.sampled_from(["l", None]), st.sampled_from([1, None, "7"]), st.booleans())


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(row, max_size=4),
       fields=st.lists(st.tuples(st.sampled_from(FIELDS), st.booleans()), min_size=1,
                       max_size=6, unique_by=lambda f: f[0]))
def test_the_same_result_as_graphql_core(rows, fields):
    inner = " ".join(f"k{i}: {f}" if alias and not f.startswith("name @") else f
                     for i, (f, alias) in enumerate(fields))
    query = "{ things { %s } }" % inner
    data = things(rows)
    assert run(query, data, COMPILED) == run(query, data, KWARGS)


@pytest.mark.parametrize("selection, plain", [
    ("name colour inner { label } __typename", True),
    ("n: name maybeInner { size }", True),
    ("shout", False),  # a resolver of its own
    ("inner { ... on Inner { label } }", False),
    ("name @skip(if: false)", False),
    ("name name", False),
])
def test_which_selections_are_compiled(selection, plain):
    node = parse("{ things { %s } }" % selection).definitions[0].selection_set.selections[0]
    thing = graphql_schema(SCHEMA).get_type("Thing")
    assert (selection_steps(SCHEMA, thing, node.selection_set.selections) is not None) == plain
