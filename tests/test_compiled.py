"""A document of `enqueue` fields alone is answered without graphql-core's execution
(graph/http/compiled.py): for any such request, good or failing, one field or
several, the status, media type, body, operation metrics, jobs counted and jobs
stored are the same as by graphql-core on the prepared path and by strawberry's
standard path."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from tests.support import Api
from tests.test_prepared import (  # noqa: F401 (client, view: the same app and view)
    JOB_FIELDS, OTHER_SELECTIONS, client, delta, operations_counted, view)

_ID = re.compile(rb'"[0-9a-f]{24}"')
ENQUEUE = "mutation($d: String!) { enqueue(requestData: $d) { id status } }"
PATHS = ("standard", "prepared", "compiled")


@pytest.fixture
def users(client):
    api = Api(client)
    return {path: api.as_user().token for path in PATHS}


def enqueued_total() -> float:
    return REGISTRY.get_sample_value("queue_jobs_enqueued_total") or 0.0


def queued(client, token: str) -> int:
    return Api(client, token).call("{ queueStats { queued } }")["queueStats"]["queued"]


def answer(client, view, path: str, content: bytes, headers: dict, token: str | None):
    """(status, media type, body with job ids numbered, operations counted, jobs
    counted), and whether the compiled answer was given."""
    prepared = view.prepared
    given = []
    if path == "standard":
        executor, prepared.executor = prepared.executor, None
    elif path == "prepared":
        prepared.compiled.plan = lambda operation: None
    else:
        one, stored = prepared.compiled.answer, prepared.compiled.answer_stored

        async def answer_one(*args):
            given.append(await one(*args))
            return given[-1]

        def answer_stored(*args):
            given.append(stored(*args))
            return given[-1]

        prepared.compiled.answer, prepared.compiled.answer_stored = answer_one, answer_stored
    ops, jobs = operations_counted(), enqueued_total()
    try:
        hs = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        resp = client.post("/graphql", content=content, headers=hs)
    finally:
        if path == "standard":
            prepared.executor = executor
        for name in ("plan", "answer", "answer_stored"):
            vars(prepared.compiled).pop(name, None)
    ids: dict[bytes, bytes] = {}
    body = _ID.sub(lambda m: ids.setdefault(m.group(), b'"job%d"' % len(ids)), resp.content)
    return (resp.status_code, resp.headers["content-type"], body,
            delta(ops, operations_counted()), enqueued_total() - jobs), \
        len(given) == 1 and given[0] is not None


def three_ways(client, view, users, body, headers=None, token="good"):
    """The request by each path, each as its own user (idempotency keys are per user);
    the standard path first (it also caches the document). Also the jobs each stored."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    outcomes, stored = {}, {}
    for path in PATHS:
        before = queued(client, users[path])
        given = {"good": users[path], "none": None, "bad": "not.a.token"}[token]
        outcomes[path], taken = answer(client, view, path, content, headers, given)
        stored[path] = queued(client, users[path]) - before
    return outcomes, stored, taken


def test_an_enqueue_is_answered_by_the_compiled_path_the_same(client, view, users):
    outcomes, stored, taken = three_ways(client, view, users,
                                         {"query": ENQUEUE, "variables": {"d": "x" * 16}})
    assert taken, "a single enqueue of a known document is compiled"
    assert outcomes["compiled"] == outcomes["prepared"] == outcomes["standard"]
    assert b'"status":"QUEUED"' in outcomes["compiled"][2]
    assert outcomes["compiled"][3:] == ({("anonymous", "mutation", "OK"): 1.0}, 1.0)
    assert stored == {"standard": 1, "prepared": 1, "compiled": 1}


# what a variable can be given as: its JSON value (a string most of the time), or absent
ABSENT = object()
VALUES = st.one_of(st.text(max_size=8), st.text(max_size=8), st.text(max_size=8), st.sampled_from(
    ["z" * 80, -1, 0, 2, None, True, ["a"], {"a": "b"}, 1.5, ABSENT]))


SELECTION = st.lists(st.tuples(st.sampled_from(JOB_FIELDS + ["orderingKey", "priority"]),
                               st.booleans()), min_size=1, max_size=5, unique_by=lambda f: f[0])
# (requestData, idempotencyKey, Job fields (aliased or not), a selection that is not plain)
FIELD = st.tuples(
    st.sampled_from(["$d", "$d", "$d", "$o", '"lit\\n\\u00e9"', '"%s"' % ("z" * 80), "null", "5"]),
    st.sampled_from([None, None, "$k", "$k", "$kd", "null", '""', "lit"]),
    SELECTION, st.sampled_from([None] * 8 + OTHER_SELECTIONS))


@hsettings(max_examples=200, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.one_of(st.lists(FIELD, min_size=1, max_size=1),
                        st.lists(FIELD, min_size=2, max_size=4)),
       d=st.one_of(st.text(max_size=8), VALUES), o=VALUES, k=VALUES, x=VALUES,
       alias=st.sampled_from([None, "e", "enqueue", "__a", "same"]),
       name=st.sampled_from([None, "Enq"]),
       token=st.sampled_from(["good"] * 8 + ["none", "bad"]),
       accept=st.sampled_from([None, "application/graphql-response+json"]))
def test_any_enqueue_document_answers_the_same_by_every_path(client, view, users, fields, d, o,
                                                             k, x, alias, name, token, accept):
    compare(client, view, users, fields, d, o, k, x, alias, name, token, accept)


# several fields that are mostly good: the batch stored, then answered by compiled steps
GOOD_FIELD = st.tuples(
    st.sampled_from(["$d", "$d", "$d", '"lit"', '"%s"' % ("z" * 80)]),
    st.sampled_from([None, None, "$k", "lit", "null", '""']),
    SELECTION,
    st.sampled_from([None] * 12 + OTHER_SELECTIONS))


@hsettings(max_examples=60, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.lists(GOOD_FIELD, min_size=2, max_size=5), d=st.text(max_size=8),
       k=st.one_of(st.text(max_size=8), st.none()), alias=st.sampled_from([None] * 5 + ["same"]),
       token=st.sampled_from(["good"] * 8 + ["none"]))
def test_several_enqueues_answer_the_same_by_every_path(client, view, users, fields, d, k, alias,
                                                        token):
    compare(client, view, users, fields, d, ABSENT, k, ABSENT, alias, None, token, None)


def compare(client, view, users, fields, d, o, k, x, alias, name, token, accept):
    run = uuid.uuid4().hex[:8]  # fresh idempotency keys for each example
    texts = []
    for i, (data, key, selection, other) in enumerate(fields):
        args = f"requestData: {data}"
        if key is not None:
            args += ", idempotencyKey: " + {"lit": f'"{run}-lit"', "$kd": "$k"}.get(key, key)
        inner = " ".join(f"f{j}: {f}" if aliased else f
                         for j, (f, aliased) in enumerate(selection))
        if other:  # a selection graphql-core completes itself
            inner += " " + other
        # one field: any alias or none; several: m0, m1, .., or all under one key
        key_of = alias if len(fields) == 1 or alias == "same" else f"m{i}"
        texts.append((f"{key_of}: " if key_of else "") + f"enqueue({args}) {{ {inner} }}")
    text = " ".join(texts)
    declared = [decl for var, decl in (("$d", "$d: String!"), ("$o", "$o: String"),
                                       ("$k", f'$k: String = "{run}-dflt"' if "$kd" in [
                                           f[1] for f in fields] else "$k: String"))
                if var in text]
    head = f"mutation {name or ''}" + (f"({', '.join(declared)})" if declared else "")
    # x: a variable the document does not declare (graphql-core ignores it)
    variables = {n: (f"{run}-{v}" if n == "k" and isinstance(v, str) else v)
                 for n, v in (("d", d), ("o", o), ("k", k), ("x", x)) if v is not ABSENT}
    body = {"query": head + " { " + text + " }", "variables": variables}
    outcomes, stored, taken = three_ways(client, view, users, body,
                                         {"Accept": accept} if accept else {}, token)
    assert outcomes["compiled"] == outcomes["prepared"] == outcomes["standard"]
    assert stored["compiled"] == stored["prepared"] == stored["standard"]
    answered = json.loads(outcomes["compiled"][2])
    event(f"compiled: {taken}, {'one field' if len(fields) == 1 else 'several'}")
    if taken:
        assert not answered.get("errors")


def test_a_failing_enqueue_fails_as_graphql_core_answers_it(client, view, users, monkeypatch):
    """Redis gone: the compiled path's call fails, and graphql-core answers with that
    error (masked), without a second call."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from engine.queue import Queue

    calls = []

    async def broken(self, uid, items, *args, **kwargs):
        calls.append(len(items))
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(Queue, "enqueue", broken)
    outcomes, _, taken = three_ways(client, view, users, {"query": ENQUEUE,
                                                          "variables": {"d": "x"}})
    assert not taken and calls == [1, 1, 1], "one call by each path"
    masked = re.compile(rb"[0-9a-f]{12}")  # each error's id differs
    bodies = {masked.sub(b"ID", o[2]) for o in outcomes.values()}
    assert len(bodies) == 1 and b"INTERNAL_SERVER_ERROR" in bodies.pop()
    assert outcomes["compiled"][3:] == outcomes["standard"][3:]


def test_a_job_it_cannot_complete_is_completed_by_graphql_core_and_stored_once(
        client, view, users, monkeypatch):
    from graph.http import compiled
    from graph.http.completion import NotPlain

    def refuse(steps, value):
        raise NotPlain

    monkeypatch.setattr(compiled, "complete_value", refuse)
    outcomes, stored, taken = three_ways(client, view, users,
                                         {"query": ENQUEUE, "variables": {"d": "y"}})
    assert not taken
    assert outcomes["compiled"] == outcomes["prepared"] == outcomes["standard"]
    assert stored == {"standard": 1, "prepared": 1, "compiled": 1}
    assert outcomes["compiled"][4] == 1.0, "ENQUEUED counts the job once"

