"""A document seen before runs on graphql-core directly (graph/http/prepared.py): the
answer is the same bytes, with the same status, headers and metrics, as strawberry's
standard path gives, for enqueue mutations of any shape, good or failing."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from graph.http.view import GraphQLView
from graph.jobs import Item
from tests.support import Api

JOB_FIELDS = ["id", "requestData", "status", "processedData", "error", "attempts",
              "startedAt", "finishedAt", "dequeuedAt", "__typename"]
_ID = re.compile(rb'"[0-9a-f]{24}"')


@pytest.fixture
def client(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app

    with TestClient(create_app(settings_factory(queue_max_payload_bytes=64))) as c:
        yield c


@pytest.fixture
def view(client) -> GraphQLView:
    return next(r.endpoint for r in client.app.routes
                if getattr(r, "path", None) == "/graphql" and isinstance(r.endpoint, GraphQLView))


@pytest.fixture
def users(client):
    api = Api(client)
    return api.as_user().token, api.as_user().token


def operations_counted() -> dict:
    return {tuple(s.labels.values()): s.value for m in REGISTRY.collect()
            if m.name == "graphql_operations" for s in m.samples if s.name.endswith("_total")}


def delta(before: dict, after: dict) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def answer(client, view, body: dict, token: str | None, fast: bool, headers: dict):
    """(status, content type, body with job ids numbered in order, metrics counted)."""
    executor = view.prepared.executor
    if not fast:
        view.prepared.executor = None
    before = operations_counted()
    try:
        hs = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
        resp = client.post("/graphql", content=json.dumps(body), headers=hs)
    finally:
        view.prepared.executor = executor
    ids: dict[bytes, bytes] = {}
    numbered = _ID.sub(lambda m: ids.setdefault(m.group(), b'"job%d"' % len(ids)), resp.content)
    return (resp.status_code, resp.headers["content-type"], numbered,
            delta(before, operations_counted()))


def both_ways(client, view, users, body, token_kind="good", headers=None):
    """The same request by the standard path (first: it also caches the document),
    then by the prepared one, each as a different user (idempotency keys are per user)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    tokens = {"good": users, "none": (None, None), "bad": ("not.a.token", "not.a.token")}
    standard = answer(client, view, body, tokens[token_kind][0], False, headers)
    taken = []
    original = view.prepared.execute

    async def spy(*args, **kwargs):
        result = await original(*args, **kwargs)
        taken.append(result is not None)
        return result

    view.prepared.execute = spy
    try:
        prepared = answer(client, view, body, tokens[token_kind][1], True, headers)
    finally:
        del view.prepared.execute
    return standard, prepared, taken == [True]


def test_an_enqueue_takes_the_prepared_path_and_answers_the_same(client, view, users):
    body = {"query": "mutation($d: String!) { enqueue(requestData: $d) { id status } }",
            "variables": {"d": "x" * 16}}
    standard, prepared, taken = both_ways(client, view, users, body)
    assert taken, "a document seen before runs on graphql-core directly"
    assert prepared == standard
    assert b'"status":"QUEUED"' in prepared[2]
    assert prepared[3] == {("anonymous", "mutation", "OK"): 1.0}


def test_the_jobs_are_stored(client, view, users):
    body = {"query": "mutation($d: String!) { a: enqueue(requestData: $d) { id } "
                     "b: enqueue(requestData: $d) { id } }", "variables": {"d": "hello"}}
    for _ in range(2):  # the second by the prepared path
        data = client.post("/graphql", json=body,
                           headers={"Authorization": f"Bearer {users[0]}"}).json()["data"]
    api = Api(client, users[0])
    for key in ("a", "b"):
        job = api.call("query($id: ID!) { job(id: $id) { requestData status } }",
                       {"id": data[key]["id"]})["job"]
        assert job == {"requestData": "hello", "status": "QUEUED"}


@pytest.mark.parametrize("token", ["none", "bad"])
def test_refusals_are_the_same(client, view, users, token):
    body = {"query": "mutation M { a: enqueue(requestData: \"x\") { id } }"}
    standard, prepared, taken = both_ways(client, view, users, body, token)
    assert taken and prepared == standard
    assert b"UNAUTHENTICATED" in prepared[2] and prepared[3] == {
        ("M", "mutation", "UNAUTHENTICATED"): 1.0}


def test_the_spec_media_type_is_answered_the_same(client, view, users):
    body = {"query": "mutation { enqueue(requestData: \"%s\") { id } }" % ("y" * 100)}
    standard, prepared, taken = both_ways(
        client, view, users, body, headers={"Accept": "application/graphql-response+json"})
    assert taken and prepared == standard
    assert prepared[1].startswith("application/graphql-response+json")
    assert b"BAD_USER_INPUT" in prepared[2]


def test_documents_it_does_not_know_go_the_standard_way(client, view, users):
    cases = [
        {"query": "mutation { enqueue(requestData: \"x\") { nope } }"},  # invalid
        {"query": "mutation { enqueue(requestData: \"x\") { id } }", "operationName": "Z"},
    ]
    for body in cases:
        standard, prepared, taken = both_ways(client, view, users, body)
        assert not taken and prepared[:3] == standard[:3]


def test_of_two_operations_without_a_name_the_first_runs_as_strawberry_runs_it(
        client, view, users):
    body = {"query": "mutation A { a: enqueue(requestData: \"x\") { requestData } } "
                     "mutation B { b: enqueue(requestData: \"y\") { requestData } }"}
    standard, prepared, taken = both_ways(client, view, users, body)
    assert taken and prepared == standard
    assert json.loads(prepared[2]) == {"data": {"a": {"requestData": "x"}}}


# beside plain fields, selections that graphql-core completes itself (a field with its own
# resolver, a fragment, a directive, a field merged under one key)
OTHER_SELECTIONS = ["owner { __typename }", "... on Job { status }", "id @include(if: true)",
                    "status status"]
field = st.tuples(st.sampled_from(JOB_FIELDS + OTHER_SELECTIONS), st.booleans())
argument = st.sampled_from(["var", "literal", "long", "int-var"])
key = st.sampled_from([None, "null", "k1", "k2", "empty", "var"])


@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(argument, key, st.lists(field, min_size=1, max_size=5,
                                                             unique_by=lambda f: f[0])),
                          min_size=1, max_size=4),
       many=st.booleans(), name=st.sampled_from([None, "Enq"]), give_name=st.booleans(),
       token=st.sampled_from(["good", "good", "good", "none"]))
def test_any_enqueue_document_answers_the_same(client, view, users, mutations, many, name,
                                               give_name, token):
    run = uuid.uuid4().hex[:8]  # fresh idempotency keys for each example
    variables = {"d": "data", "n": 5, "k": f"{run}-kv"}
    fields = []
    for i, (arg, idem, selection) in enumerate(mutations):
        data = {"var": "$d", "literal": '"lit\\n\\u00e9"', "long": '"%s"' % ("z" * 80),
                "int-var": "$n"}[arg]
        args = f"requestData: {data}"
        if idem is not None:
            args += ", idempotencyKey: " + {"null": "null", "empty": '""', "var": "$k"}.get(
                idem, f'"{run}-{idem}"')
        inner = " ".join(f"f{j}: {f}" if alias and f not in OTHER_SELECTIONS[1:] else f
                         for j, (f, alias) in enumerate(selection))
        fields.append(f"m{i}: enqueue({args}) {{ {inner} }}")
    if many:
        fields.append('many: enqueueMany(items: [{requestData: "a"}, {requestData: $d, '
                      'idempotencyKey: "%s-k1"}]) { id status __typename }' % run)
    text = " ".join(fields)
    declared = ", ".join(d for v, d in (("$d", "$d: String!"), ("$n", "$n: Int"),
                                        ("$k", "$k: String")) if v in text)
    head = f"mutation {name or ''}" + (f"({declared})" if declared else "")
    body = {"query": head + " { " + text + " }", "variables": variables}
    if give_name and name:
        body["operationName"] = name
    standard, prepared, taken = both_ways(client, view, users, body, token)
    assert prepared == standard
    valid = not any(arg == "int-var" for arg, _, _ in mutations)
    assert taken == valid, "valid documents take the prepared path, the others do not"


def aliased(*data: str) -> dict:
    return {"query": "mutation { %s }" % " ".join(
        f'm{i}: enqueue(requestData: "{d}") {{ id requestData }}' for i, d in enumerate(data))}


def queued(client, token) -> int:
    return Api(client, token).call("{ queueStats { queued } }")["queueStats"]["queued"]


def count_enqueue_calls(monkeypatch) -> list[int]:
    """The number of items of each Queue.enqueue call (one script call each), as they come."""
    from engine.queue import Queue

    calls: list[int] = []
    original = Queue.enqueue

    async def counted(self, uid, items, *args, **kwargs):
        calls.append(len(items))
        return await original(self, uid, items, *args, **kwargs)

    monkeypatch.setattr(Queue, "enqueue", counted)
    return calls


def test_aliased_enqueues_are_stored_by_one_script_call(client, view, users, monkeypatch):
    calls = count_enqueue_calls(monkeypatch)
    body = aliased("a", "b", "c")
    headers = {"Authorization": f"Bearer {users[0]}"}
    client.post("/graphql", json=body, headers=headers)  # first sight: the standard path
    assert calls == [1, 1, 1]
    calls.clear()
    answer = client.post("/graphql", json=body, headers=headers).json()
    assert calls == [3]
    assert [answer["data"][f"m{i}"]["requestData"] for i in range(3)] == ["a", "b", "c"]
    assert len({answer["data"][f"m{i}"]["id"] for i in range(3)}) == 3
    assert queued(client, users[0]) == 6


def test_aliased_enqueues_with_scheduling_arguments_go_one_by_one(client, view, users,
                                                                   monkeypatch):
    """§7's orderingKey/priority/runAt are validated by the resolver: such a
    document is not batched, and each job keeps what its field gave."""
    calls = count_enqueue_calls(monkeypatch)
    body = {"query": 'mutation { a: enqueue(requestData: "x", orderingKey: "k1", priority: 5)'
                     ' { orderingKey priority } b: enqueue(requestData: "y")'
                     ' { orderingKey priority } }'}
    headers = {"Authorization": f"Bearer {users[0]}"}
    for _ in range(2):  # the standard path, then the prepared one
        calls.clear()
        answer = client.post("/graphql", json=body, headers=headers).json()
        assert answer["data"] == {"a": {"orderingKey": "k1", "priority": 5},
                                  "b": {"orderingKey": None, "priority": 0}}
        assert calls == [1, 1]


def test_a_refused_batch_stores_what_the_serial_run_stores(client, view, users):
    """The third item is over QUEUE_MAX_PAYLOAD_BYTES: the first two are stored, the
    third answers BAD_USER_INPUT, the fourth never runs (data is null: enqueue is non-null)."""
    body = aliased("a", "b", "z" * 100, "d")
    headers = {"Authorization": f"Bearer {users[1]}"}
    for n in (1, 2):  # the standard path, then the prepared one
        answer = client.post("/graphql", json=body, headers=headers).json()
        assert answer["data"] is None
        assert [e["path"] for e in answer["errors"]] == [["m2"]]
        assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert queued(client, users[1]) == 2 * n


def test_a_batch_that_fails_unexpectedly_fails_as_the_first_enqueue_would(
        client, view, users, monkeypatch, caplog):
    """Redis gone in the middle of the batch: nothing is tried again (whether the script
    ran is unknown); the first field fails with that error, masked, as it would alone."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from engine.queue import Queue

    calls = []

    async def broken(self, uid, items, *args, **kwargs):
        calls.append(len(items))
        raise RedisConnectionError("connection lost")

    monkeypatch.setattr(Queue, "enqueue", broken)
    body = aliased("a", "b")
    standard, prepared, taken = both_ways(client, view, users, body)
    assert taken and calls == [1, 2], "one call each way: the serial run's first, the batch"
    masked = re.compile(rb"[0-9a-f]{12}")  # each error's id differs
    assert masked.sub(b"ID", prepared[2]) == masked.sub(b"ID", standard[2])
    assert prepared[:2] == standard[:2] and prepared[3] == standard[3]
    answer = json.loads(prepared[2])
    assert answer["data"] is None and answer["errors"][0]["path"] == ["m0"]
    assert answer["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"


# ---- one user's single enqueues at the same moment: one script call (grouping.py) ----


async def test_single_enqueues_of_one_user_at_once_are_stored_together(settings, monkeypatch):
    import asyncio

    from graph.context import Context
    from graph.http.grouping import EnqueueGroups
    from graph.services import open_services

    calls = count_enqueue_calls(monkeypatch)
    async with open_services(settings) as services:
        groups = EnqueueGroups()

        async def one_request(data: str, key: str | None = None):
            context = Context(services=services, request=None)
            groups.join(context, Item(data, key))
            [job] = await context.jobs.enqueue("u1", [Item(data, key)])  # as the resolver calls it
            return job

        jobs = await asyncio.gather(*(one_request(f"d{i}") for i in range(5)),
                                    one_request("k", "key-1"), one_request("k2", "key-1"))
        assert calls == [7], "one script call for the requests of this turn of the loop"
        assert [j.request_data for j in jobs[:6]] == ["d0", "d1", "d2", "d3", "d4", "k"]
        assert jobs[6].id == jobs[5].id, "the same idempotency key: the first job"
        assert len({j.id for j in jobs[:6]}) == 6
        assert (await services.queue.stats("u1")).queued == 6

        # one item over QUEUE_MAX_PAYLOAD_BYTES: the group is refused, each item alone
        calls.clear()
        big = "z" * (settings.queue_max_payload_bytes + 1)
        outcomes = await asyncio.gather(one_request("e0"), one_request(big), one_request("e2"),
                                        return_exceptions=True)
        assert calls == [1, 1]  # the group was refused before Redis; then e0 and e2 alone
        assert [o.request_data for o in (outcomes[0], outcomes[2])] == ["e0", "e2"]
        assert getattr(outcomes[1], "code", None) == "BAD_USER_INPUT"
        assert (await services.queue.stats("u1")).queued == 8


def test_fields_merged_under_one_key_store_one_job(client, view, users):
    """graphql-core runs two identical fields under one response key once: one job by
    either path (the batch of aliased enqueues stored two)."""
    body = {"query": 'mutation { a: enqueue(requestData: "x") { id } '
                     'a: enqueue(requestData: "x") { status } }'}
    before = [queued(client, token) for token in users]
    standard, prepared, _ = both_ways(client, view, users, body)
    assert prepared == standard
    assert [queued(client, token) - n for token, n in zip(users, before)] == [1, 1]
