"""A POST of a known document skips the router and strawberry's request handling
(graph/http/fastroute.py): every request is answered with the same status, headers,
body and metrics as by the general path, and the ones it does not know go there."""

from __future__ import annotations

import json
import re

import pytest

from graph.http.view import GraphQLView
from tests.support import Api
from tests.test_prepared import delta, operations_counted, users, view  # noqa: F401 (fixtures, with this module's client)

_ID = re.compile(rb'"[0-9a-f]{24}"')
ENQUEUE = "mutation($d: String!) { enqueue(requestData: $d) { id status } }"


@pytest.fixture
def client(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app

    with TestClient(create_app(settings_factory(queue_max_payload_bytes=64,
                                                http_max_response_bytes=4000))) as c:
        yield c


def answer(client, view, content: bytes, headers: dict, fast: bool):
    """(status, headers but the request id, body with job ids numbered, metrics counted,
    whether the fast route answered)."""
    view.fast_route = fast
    taken = []
    original = view.serve_known

    async def spy(*args):
        taken.append(await original(*args))
        return taken[-1]

    view.serve_known = spy
    before = operations_counted()
    try:
        resp = client.post("/graphql", content=content, headers=headers)
    finally:
        view.fast_route = True
        del view.serve_known
    ids: dict[bytes, bytes] = {}
    body = _ID.sub(lambda m: ids.setdefault(m.group(), b'"job%d"' % len(ids)), resp.content)
    head = [(k, v) for k, v in resp.headers.raw if k.lower() != b"x-request-id"]
    assert resp.headers["x-request-id"]
    return resp.status_code, head, body, delta(before, operations_counted()), taken == [True]


def both(client, view, users, body, headers=None, token=True):
    """The request by the general path (first: it also caches the document), then
    by the fast route, each as its own user (idempotency keys are per user)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    base = {"Content-Type": "application/json", **(headers or {})}
    general = answer(client, view, content, {
        **base, **({"Authorization": f"Bearer {users[0]}"} if token else {})}, False)
    fast = answer(client, view, content, {
        **base, **({"Authorization": f"Bearer {users[1]}"} if token else {})}, True)
    assert not general[4]
    return general[:4], fast[:4], fast[4]


def test_an_enqueue_takes_the_fast_route_and_answers_the_same(client, view, users):
    general, fast, taken = both(client, view, users,
                                {"query": ENQUEUE, "variables": {"d": "x" * 16}})
    assert taken and fast == general
    assert general[0] == 200 and b'"status":"QUEUED"' in fast[2]
    assert fast[3] == {("anonymous", "mutation", "OK"): 1.0}


@pytest.mark.parametrize("accept", [None, "application/json",
                                    "application/graphql-response+json",
                                    "application/graphql-response+json, application/json;q=0.9",
                                    "*/*", "text/html", "application/xml"])
@pytest.mark.parametrize("token", [True, False])
@pytest.mark.parametrize("data", ["ok", "x" * 100])  # the second over the payload limit
def test_answers_and_errors_are_the_same(client, view, users, accept, token, data):
    headers = {"Accept": accept} if accept else {}
    general, fast, taken = both(client, view, users, {"query": ENQUEUE, "variables": {
        "d": data}}, headers, token)
    assert taken and fast == general


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/json; charset=UTF-8"])
def test_json_content_types_are_served(client, view, users, content_type):
    general, fast, taken = both(client, view, users, {"query": ENQUEUE, "variables": {
        "d": "y"}}, {"Content-Type": content_type})
    assert taken and fast == general


def test_an_answer_over_the_size_limit_is_refused_the_same(client, view, users):
    query = "mutation($i: [EnqueueInput!]!) { enqueueMany(items: $i) { requestData } }"
    items = [{"requestData": "z" * 60}] * 70
    general, fast, taken = both(client, view, users, {"query": query, "variables": {"i": items}})
    assert taken and fast == general and b"QUERY_TOO_COMPLEX" in fast[2]


@pytest.mark.parametrize("body", [
    {"query": ENQUEUE, "variables": {"d": "x"}, "extensions": {"a": 1}},
    {"query": ENQUEUE, "variables": {"d": "x"}, "operationName": 5},
    {"query": ENQUEUE, "variables": {"d": "x"}, "operationName": "Nope"},
    {"query": ENQUEUE, "variables": ["x"]},
    {"query": ENQUEUE, "variables": {"d": 5}},  # runs, but its variables are refused
    {"query": ENQUEUE},
    [{"query": ENQUEUE, "variables": {"d": "x"}}],
    {"query": 5},
    {"query": "mutation { enqueue(requestData: \"x\") { nope } }"},  # invalid
    {"query": "subscription { processed { cursor } }"},
    "5", "{", b'{"query": "\xff"}',
])
def test_requests_it_does_not_serve_are_answered_as_before(client, view, users, body):
    if isinstance(body, str):
        body = body.encode()
    for _ in range(2):  # the second time, any document is cached
        general, fast, _ = both(client, view, users, body)
        assert fast == general


def test_other_content_types_go_the_general_way(client, view, users):
    body = {"query": ENQUEUE, "variables": {"d": "x"}}
    both(client, view, users, body)
    for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "Application/JSON"},
                    {"Content-Type": "application/json; charset=latin-1"}):
        general, fast, taken = both(client, view, users, body, headers)
        assert not taken and fast == general


@pytest.mark.parametrize("accept", ["text/event-stream", "multipart/mixed",
                                    "multipart/mixed;subscriptionSpec=1.0, application/json"])
def test_streaming_accepts_are_answered_the_same(client, view, users, accept):
    """No streaming transport is configured: these get the JSON answer either way."""
    body = {"query": ENQUEUE, "variables": {"d": "x"}}
    both(client, view, users, body)
    general, fast, _ = both(client, view, users, body, {"Accept": accept})
    assert fast == general


def test_jobs_enqueued_by_the_fast_route_are_stored(client, view, users):
    body = {"query": ENQUEUE, "variables": {"d": "hello"}}
    both(client, view, users, body)
    job = client.post("/graphql", json=body, headers={
        "Authorization": f"Bearer {users[0]}"}).json()["data"]["enqueue"]
    got = Api(client, users[0]).call("query($id: ID!) { job(id: $id) { requestData } }",
                                      {"id": job["id"]})
    assert got == {"job": {"requestData": "hello"}}


def test_an_unexpected_error_is_answered_as_the_general_path_answers_it(
        client, view, users, monkeypatch):
    body = {"query": ENQUEUE, "variables": {"d": "x"}}
    both(client, view, users, body)

    async def broken(self, request, response):
        raise RuntimeError("context broke")

    monkeypatch.setattr(GraphQLView, "get_context", broken)
    general, fast, taken = both(client, view, users, body)
    errid = re.compile(rb"\b[0-9a-f]{12}\b")  # each answer's error id
    assert taken and fast[:2] == general[:2] and errid.sub(b"", fast[2]) == errid.sub(
        b"", general[2])
    assert fast[0] == 500 and b"INTERNAL_SERVER_ERROR" in fast[2]
