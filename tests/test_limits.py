"""The contract's limits (§5), each at its edge: just under passes, just over is refused.

Document limits (depth, aliases, tokens, fields, fragments, cost) answer
QUERY_TOO_COMPLEX and hold for introspection too; GraphiQL's own
introspection query passes at the defaults. An answer over the response size
limit is a QUERY_TOO_COMPLEX error too. The HTTP body limit answers 413
before anything parses the body, chunked bodies included; WebSocket messages
and subscriptions per connection are bounded as well.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time

import httpx
import pytest
from graphql import get_introspection_query
from starlette.testclient import TestClient

from graph.app import create_app
from tests.support import Api, GraphQLError

MiB = 1024 * 1024


def _schema_uses_graph_limits() -> bool:
    from graph.schema import build_schema

    return "schema_extensions" in inspect.getsource(build_schema)


needs_graph_limits = pytest.mark.skipif(
    not _schema_uses_graph_limits(),
    reason="graph/schema.py build_schema does not use graph.http.limits.schema_extensions yet")


@pytest.fixture
def app_with(settings_factory):
    """An in-process app with some settings changed: `with app_with(...) as api:`."""
    import contextlib

    @contextlib.contextmanager
    def make(**overrides):
        with TestClient(create_app(settings_factory(**overrides))) as client:
            yield Api(client)

    return make


def code_of(api: Api, query: str, variables: dict | None = None) -> str | None:
    """The code of the first error, None when the operation succeeds."""
    try:
        api.call(query, variables)
    except GraphQLError as exc:
        return exc.code
    return None


def nested_introspection(levels: int) -> str:
    """An introspection query `levels` deep (top-level fields are depth 0)."""
    of_types = levels - 4
    return ("{__schema{types{fields{type{" + "ofType{" * of_types + "name"
            + "}" * of_types + "}}}}}")


GRAPHIQL_QUERY = get_introspection_query(
    descriptions=True, specified_by_url=True, directive_is_repeatable=True,
    schema_description=True, input_value_deprecation=True, one_of=True)


# ---- introspection at the defaults ----

def test_graphiqls_introspection_query_passes_at_the_defaults(api):
    body = api.post(GRAPHIQL_QUERY).json()
    assert "errors" not in body, body
    names = {t["name"] for t in body["data"]["__schema"]["types"]}
    assert {"Job", "JobStatus", "Query", "Mutation", "Subscription"} <= names


def test_graphiqls_default_introspection_query_passes_too(api):
    body = api.post(get_introspection_query()).json()
    assert "errors" not in body, body


# ---- depth ----

def test_depth_at_the_limit_passes_and_one_more_level_is_refused(app_with):
    with app_with(graphql_max_depth=3) as api:
        user = api.as_user()
        assert code_of(user, "{jobs{edges{node{id}}}}") is None  # id is at depth 3
    with app_with(graphql_max_depth=2) as api:
        user = api.as_user()
        assert code_of(user, "{jobs{edges{cursor}}}") is None
        assert code_of(user, "{jobs{edges{node{id}}}}") == "QUERY_TOO_COMPLEX"
        # fragments and inline fragments count where they are spread
        assert code_of(user, "{jobs{...E}} fragment E on JobConnection{edges{node{id}}}") \
            == "QUERY_TOO_COMPLEX"
        assert code_of(user, "{jobs{... on JobConnection{edges{node{id}}}}}") \
            == "QUERY_TOO_COMPLEX"
        # and the limit holds without a token: it is checked before anything runs
        assert code_of(api, "{jobs{edges{node{id}}}}") == "QUERY_TOO_COMPLEX"


@needs_graph_limits
def test_depth_counts_introspection_fields(api):
    assert code_of(api, nested_introspection(15)) is None
    assert code_of(api, nested_introspection(16)) == "QUERY_TOO_COMPLEX"


@needs_graph_limits
def test_introspection_cannot_nest_lists_of_fields(api):
    query = "{__schema{types{fields{type{fields{type{fields{name}}}}}}}}"
    assert code_of(api, query) == "QUERY_TOO_COMPLEX"


# ---- aliases ----

def aliases(n: int, field: str = "__typename") -> str:
    return "{" + " ".join(f"a{i}:{field}" for i in range(n)) + "}"


def test_aliases_at_the_limit_pass_and_one_more_is_refused(api):
    assert code_of(api, aliases(30)) is None
    assert code_of(api, aliases(31)) == "QUERY_TOO_COMPLEX"


def test_aliases_count_in_introspection_and_fragments(api):
    assert code_of(api, "{__schema{" + aliases(31, "types{name}")[1:] + "}") == "QUERY_TOO_COMPLEX"
    spread = "{...F ...G} fragment F on Query" + aliases(16) + " fragment G on Query" + aliases(
        15).replace("a", "b")
    assert code_of(api, spread) == "QUERY_TOO_COMPLEX"


def test_the_alias_limit_is_a_setting(app_with):
    with app_with(graphql_max_aliases=2) as api:
        assert code_of(api, aliases(2)) is None
        assert code_of(api, aliases(3)) == "QUERY_TOO_COMPLEX"


# ---- tokens ----

def tokens(n: int) -> str:
    """A valid document of exactly n tokens."""
    return "{" + " __typename" * (n - 2) + "}"


def test_tokens_at_the_limit_pass_and_one_more_is_refused(app_with):
    with app_with(graphql_max_tokens=100) as api:
        assert code_of(api, tokens(100)) is None
        assert code_of(api, tokens(101)) == "QUERY_TOO_COMPLEX"
        assert code_of(api, "{__schema{" + " types{name}" * 30 + "}}") == "QUERY_TOO_COMPLEX"


def test_the_default_token_limit_is_5000(api):
    # 5000 tokens in a document that does not hit the other limits: a long list literal
    items = ",".join(['{requestData:"x"}'] * 997)
    query = "mutation{enqueueMany(items:[" + items + "]){id}}"  # 13 + 5 * 997 = 4998 tokens
    at_limit, over = query.replace("{id}", "{id id id}"), query.replace("{id}", "{id id id id}")
    assert code_of(api, at_limit) == "UNAUTHENTICATED"  # 5000 tokens: parsed and validated
    assert code_of(api, over) == "QUERY_TOO_COMPLEX"  # 5001


def test_comments_cannot_hide_a_huge_document(api):
    response = api.post("# " + "x" * 10_000 + "\n" + tokens(5001))
    assert response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"


def test_a_document_nested_past_the_parsers_guard_is_too_complex(api):
    query = "{" + "a{" * 1500 + "b" + "}" * 1501
    assert code_of(api, query) == "QUERY_TOO_COMPLEX"


# ---- breadth ----

@needs_graph_limits
def test_fields_expanded_through_fragments_are_bounded(api):
    """Fragments spread in fragments multiply fields without adding tokens."""
    fragments = ("fragment F on Query{" + " __typename" * 20 + "}"
                 " fragment G on Query{" + " ...F" * 10 + "}"
                 " fragment H on Query{" + " ...G" * 10 + "}")  # H selects 2000 fields
    assert code_of(api, "{...H} " + fragments) is None
    body = api.post("{...H __typename} " + fragments).json()
    [error] = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX" and "fields" in error["message"]


def test_many_repeated_fields_are_too_complex_not_slow(api):
    started = time.monotonic()
    assert code_of(api, tokens(4000)) == "QUERY_TOO_COMPLEX"
    assert time.monotonic() - started < 5


def message_of(api: Api, query: str, variables: dict | None = None) -> str:
    return api.post(query, variables).json()["errors"][0]["message"]


def test_fragment_definitions_and_spreads_are_capped(app_with):
    with app_with(graphql_max_fragments=3) as api:
        three = " ".join(f"fragment F{i} on Query {{ __typename }}" for i in range(3))
        assert code_of(api, "{...F0 ...F1 ...F2} " + three) is None
        four = "{...F0 ...F1 ...F2 ...F3} " + three + " fragment F3 on Query { __typename }"
        assert code_of(api, four) == "QUERY_TOO_COMPLEX"
        assert "GRAPHQL_MAX_FRAGMENTS" in message_of(api, four)
        # spreads are counted where they are written, not expanded
        one = " fragment F0 on Query {__typename}"
        assert code_of(api, "{...F0 ...F0 ...F0}" + one) is None
        assert code_of(api, "{...F0 ...F0 ...F0 a:__typename ...F0}" + one) == "QUERY_TOO_COMPLEX"


# ---- cost: fields times page sizes ----

def test_the_cost_at_the_limit_passes_and_counts_page_sizes_from_variables(app_with):
    with app_with(graphql_max_cost=500) as api:
        user = api.as_user()
        query = "query($n:Int){jobs(first:$n){edges{node{id}}}}"  # 1 + n * (10 + 3)
        assert code_of(user, query, {"n": 38}) is None  # 495
        assert code_of(user, query, {"n": 39}) == "QUERY_TOO_COMPLEX"  # 508
        assert "GRAPHQL_MAX_COST" in message_of(user, query, {"n": 39})
        # the schema's default (20) without a value; a variable's default with one
        assert code_of(user, "{jobs{edges{node{id}}}}") is None
        assert code_of(user, "query($n:Int=39){jobs(first:$n){edges{node{id}}}}") \
            == "QUERY_TOO_COMPLEX"


# ---- response size ----

def test_a_response_over_the_size_limit_is_an_error_with_a_code(app_with):
    with app_with(http_max_response_bytes=4096) as api:
        user = api.as_user()
        # the answer to this mutation (every job with its data) is too large, but the
        # mutation ran: its jobs are stored
        with pytest.raises(GraphQLError) as info:
            user.enqueue_many([{"requestData": "x" * 1000} for _ in range(5)])
        assert info.value.code == "QUERY_TOO_COMPLEX"
        assert len(user.call("{jobs{edges{node{id}}}}")["jobs"]["edges"]) == 5
        response = user.post("{jobs{edges{node{requestData}}}}")  # over 5000 bytes
        assert response.status_code == 200, response.text[:300]
        assert response.json()["data"] is None
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert "HTTP_MAX_RESPONSE_BYTES" in error["message"]


# ---- introspection switch ----

def test_introspection_can_be_turned_off(app_with):
    with app_with(graphql_introspection=False) as api:
        assert code_of(api, GRAPHIQL_QUERY) == "GRAPHQL_VALIDATION_FAILED"
        assert code_of(api, '{__type(name:"Query"){name}}') == "GRAPHQL_VALIDATION_FAILED"
        assert code_of(api, "{__typename}") is None


# ---- GraphiQL ----

HTML = {"accept": "text/html"}


@pytest.mark.parametrize("overrides, shown", [
    ({}, True),                                        # development: on
    ({"app_env": "production"}, False),                # production: off
    ({"app_env": "production", "graphiql": True}, True),
    ({"graphiql": False}, False),
])
def test_graphiql_is_off_in_production_unless_asked_for(app_with, overrides, shown):
    overrides.setdefault("app_env", "development")
    with app_with(**overrides) as api:
        response = api.http.get("/graphql", headers=HTML)
        if shown:
            assert response.status_code == 200 and "graphiql" in response.text.lower()
        else:
            assert response.status_code == 404
            assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert api.call("{__typename}") == {"__typename": "Query"}  # the API itself works


# ---- HTTP body ----

def padded_body(size: int) -> bytes:
    """A valid GraphQL request of exactly `size` bytes (JSON allows trailing spaces)."""
    body = json.dumps({"query": "{__typename}"}).encode()
    return body + b" " * (size - len(body))


def test_a_body_at_the_limit_passes_and_one_byte_more_gets_413(api):
    headers = {"content-type": "application/json"}
    response = api.http.post("/graphql", content=padded_body(MiB), headers=headers)
    assert response.json() == {"data": {"__typename": "Query"}}
    response = api.http.post("/graphql", content=padded_body(MiB + 1), headers=headers)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_the_body_limit_is_a_setting(app_with):
    with app_with(http_max_body_bytes=2048) as api:
        headers = {"content-type": "application/json"}
        assert api.http.post("/graphql", content=padded_body(2048), headers=headers).status_code == 200
        assert api.http.post("/graphql", content=padded_body(2049), headers=headers).status_code == 413


def test_a_lying_content_length_is_refused_before_the_body_is_read(api):
    response = api.http.post("/graphql", content=b"{}", headers={
        "content-type": "application/json", "content-length": str(10 * MiB)})
    assert response.status_code == 413


def run_asgi(wrap, chunks: list[bytes], headers=()) -> tuple[int, bytes, bool]:
    """Drive an ASGI app with a body in chunks, as a server does with a chunked upload."""
    sent, messages = [], [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)]
    called = []

    async def inner(scope, receive, send):
        called.append(True)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": list(headers)}
    asyncio.run(wrap(inner)(scope, receive, send))
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:]), bool(called)


def test_a_chunked_body_is_cut_off_at_the_limit_before_the_app_sees_it():
    from graph.http.middleware import SizeLimits

    def wrap(inner):
        return SizeLimits(inner, max_body_bytes=10_000, max_ws_message_bytes=10_000)

    status, body, called = run_asgi(wrap, [b"x" * 1000] * 10)
    assert (status, body, called) == (200, b"10000", True)
    status, body, called = run_asgi(wrap, [b"x" * 1000] * 10 + [b"x"])
    assert status == 413 and not called
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_the_running_server_refuses_large_and_chunked_bodies(api_process, settings):
    """`python -m graph` under uvicorn: Content-Length and chunked uploads alike."""
    url = f"{api_process.url}/graphql"
    headers = {"content-type": "application/json"}
    assert httpx.post(url, content=padded_body(MiB), headers=headers).json() == {
        "data": {"__typename": "Query"}}
    response = httpx.post(url, content=padded_body(MiB + 1), headers=headers)
    assert response.status_code == 413

    def chunked(size: int, chunk: int = 64 * 1024):
        body = padded_body(size)
        for i in range(0, len(body), chunk):
            yield body[i:i + chunk]

    response = httpx.post(url, content=chunked(MiB), headers=headers)
    assert response.json() == {"data": {"__typename": "Query"}}
    response = httpx.post(url, content=chunked(MiB + 1), headers=headers)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    # and the server is fine afterwards
    assert httpx.post(url, json={"query": "{__typename}"}).status_code == 200


def test_the_running_server_closes_a_websocket_on_a_message_over_the_limit(api_process, settings):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    token = api_process.client().as_user().token
    ws_url = api_process.url.replace("http", "ws") + "/graphql"
    limit = settings.ws_max_message_bytes

    def init(size: int) -> str:
        payload = {"Authorization": f"Bearer {token}", "x": ""}
        empty = len(json.dumps({"type": "connection_init", "payload": payload}))
        payload["x"] = "y" * (size - empty)
        return json.dumps({"type": "connection_init", "payload": payload})

    with connect(ws_url, subprotocols=["graphql-transport-ws"], max_size=None) as ws:
        ws.send(init(limit))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
    with connect(ws_url, subprotocols=["graphql-transport-ws"], max_size=None) as ws:
        ws.send(init(limit + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


# ---- WebSocket, in-process ----

def ping(size: int) -> str:
    """A graphql-transport-ws ping message of exactly `size` bytes."""
    message = json.dumps({"type": "ping", "payload": {"x": ""}})
    return json.dumps({"type": "ping", "payload": {"x": "y" * (size - len(message))}})


def test_a_websocket_message_over_the_limit_closes_the_connection(api, settings):
    from starlette.websockets import WebSocketDisconnect

    user = api.as_user()
    limit = settings.ws_max_message_bytes
    with api.http.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {user.token}"}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_text(ping(limit))
        assert ws.receive_json()["type"] == "pong"
        ws.send_text(ping(limit + 1))
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 1009


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_subscriptions_per_connection_are_bounded(app_with, protocol):
    with app_with(ws_max_subscriptions=2) as api:
        user = api.as_user()
        start = "subscribe" if protocol == "graphql-transport-ws" else "start"
        with api.http.websocket_connect("/graphql", subprotocols=[protocol]) as ws:
            ws.send_json({"type": "connection_init",
                          "payload": {"Authorization": f"Bearer {user.token}"}})
            assert ws.receive_json()["type"] == "connection_ack"
            for i in range(3):
                ws.send_json({"id": str(i), "type": start,
                              "payload": {"query": "subscription{processed{cursor}}"}})
            message = ws.receive_json()
            while message.get("type") == "ka":
                message = ws.receive_json()
            assert message["type"] == "error" and message["id"] == "2", message
            payload = message["payload"]
            [error] = payload if isinstance(payload, list) else [payload]
            assert error["extensions"]["code"] == "RATE_LIMITED"


# ---- enqueue rate ----

def test_the_enqueue_rate_limit(app_with):
    if time.time() % 60 > 55:  # the window is a clock minute: do not straddle two
        time.sleep(61 - time.time() % 60)
    with app_with(queue_enqueue_rate_per_minute=3) as api:
        user = api.as_user()
        user.enqueue_many([{"requestData": "a"}, {"requestData": "b"}])
        user.enqueue("c")
        with pytest.raises(GraphQLError) as info:
            user.enqueue("d")
        assert info.value.code == "RATE_LIMITED"
