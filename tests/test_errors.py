"""Every error carries a contract code; unexpected ones are masked, with an id in the log.

And every request the view cannot read gets a 4xx with a GraphQL-shaped
JSON body, never strawberry's plain-text 400 or a 500.
"""

from __future__ import annotations

import logging

import pytest

from graph.errors import CODES
from tests.support import GraphQLError

JOB = "id requestData status"


def error_of(api, query: str, variables: dict | None = None) -> GraphQLError:
    with pytest.raises(GraphQLError) as info:
        api.call(query, variables)
    errors = info.value.errors
    assert all(e.get("extensions", {}).get("code") in CODES for e in errors), errors
    return info.value


def assert_graphql_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) <= {"errors", "data"}
    [error] = body["errors"]
    assert error["extensions"]["code"] == code, body
    assert isinstance(error["message"], str) and error["message"]
    return error


# ---- the codes resolvers give ----

def test_unauthenticated(api):
    assert error_of(api, "{me{id}}").code == "UNAUTHENTICATED"


def test_bad_user_input(api):
    user = api.as_user()
    assert error_of(user, "mutation($d:String!){enqueue(requestData:$d){id}}",
                    {"d": "x" * 70_000}).code == "BAD_USER_INPUT"
    assert error_of(user, "{jobs(first:100000){edges{cursor}}}").code == "BAD_USER_INPUT"


def test_not_found_and_conflict(api):
    user = api.as_user()
    assert error_of(user, "mutation{cancel(id:\"0123456789abcdef01234567\"){id}}").code == "NOT_FOUND"
    job = user.enqueue("once")
    user.cancel(job["id"])
    assert error_of(user, "mutation($id:ID!){cancel(id:$id){id}}",
                    {"id": job["id"]}).code == "CONFLICT"


def test_queue_full(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app
    from tests.support import Api

    with TestClient(create_app(settings_factory(queue_max_pending=1))) as client:
        user = Api(client).as_user()
        user.enqueue("first")
        assert error_of(user, "mutation{enqueue(requestData:\"second\"){id}}").code == "QUEUE_FULL"


def test_rate_limited(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app
    from tests.support import Api

    with TestClient(create_app(settings_factory(login_max_failures=1))) as client:
        api = Api(client)
        api.as_user("throttled_user")
        login = 'mutation{login(username:"throttled_user",password:"wrong password"){token}}'
        assert error_of(api, login).code == "UNAUTHENTICATED"
        assert error_of(api, login).code == "RATE_LIMITED"


# ---- the codes of documents ----

@pytest.mark.parametrize("query", ["{", "query {me{id}", "{me{id}}}", "mutation{enqueue(requestData:\"x)}",
                                   "\u00ff", "{ me { id } } fragment", "{me{id}} \"unterminated"])
def test_a_document_that_does_not_parse(api, query):
    assert error_of(api, query).code == "GRAPHQL_PARSE_FAILED"


@pytest.mark.parametrize("query, variables", [
    ("{nope}", None),                                                   # unknown field
    ("{me{nope}}", None),
    ("{me}", None),                                                     # object without selection
    ("{job{id}}", None),                                                # missing argument
    ("{job(id:1, other:2){id}}", None),                                 # unknown argument
    ("{jobs(status:DONE){edges{cursor}}}", None),                       # unknown enum value
    ("query($f:Int){jobs(first:$f){edges{cursor}}}", {"f": "many"}),   # wrong variable type
    ("query($f:Int){jobs(first:$f){edges{cursor}}}", {"f": 2 ** 40}),  # Int out of range
    ("query($id:ID!){job(id:$id){id}}", {}),                           # missing variable
    ("query($id:ID!){job(id:$id){id}}", {"id": None}),
    ("mutation($i:[EnqueueInput!]!){enqueueMany(items:$i){id}}",
     {"i": [{"requestData": 5}]}),                                      # wrong field type inside
    ("mutation($i:[EnqueueInput!]!){enqueueMany(items:$i){id}}",
     {"i": [{"requestData": "x", "extra": 1}]}),                        # unknown input field
    ("query($x:Int){__typename}", None),                                # unused variable
    ("{...Missing}", None),                                             # unknown fragment
    ("query A{__typename} query A{__typename}", None),                  # duplicate operation
    ("{__typename} {__typename}", None),                                # two anonymous
])
def test_a_document_that_does_not_fit_the_schema(api, query, variables):
    user = api.as_user()
    assert error_of(user, query, variables).code == "GRAPHQL_VALIDATION_FAILED"


def test_an_unknown_operation_name_is_a_validation_error(api):
    response = api.http.post("/graphql", json={"query": "query A{__typename}", "operationName": "B"})
    assert_graphql_error(response, 400, "GRAPHQL_VALIDATION_FAILED")


def test_suggestions_are_given_while_introspection_is_on(api):
    assert "Did you mean" in error_of(api, "{queueStat{queued}}").errors[0]["message"]


def test_introspection_off_turns_off_schema_introspection_and_suggestions(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app
    from tests.support import Api

    with TestClient(create_app(settings_factory(graphql_introspection=False))) as client:
        api = Api(client)
        for query in ("{__schema{types{name}}}", '{__type(name:"Job"){name}}'):
            assert error_of(api, query).code == "GRAPHQL_VALIDATION_FAILED"
        assert api.call("{__typename}") == {"__typename": "Query"}
        user = api.as_user()
        for query in ("{queueStat{queued}}", "{jobs(statu:QUEUED){edges{cursor}}}",
                      "{jobs(status:QUEUE){edges{cursor}}}", "{me{usernam}}",
                      "mutation($i:[EnqueueInput!]!){enqueueMany(items:$i){id}}"):
            error = error_of(user, query, {"i": [{"requestDat": "x"}]} if "$i" in query else None)
            assert error.code == "GRAPHQL_VALIDATION_FAILED"
            assert "Did you mean" not in error.errors[0]["message"], error.errors


# ---- masking ----

def test_an_unexpected_error_is_masked_and_logged_with_its_id(api, monkeypatch, caplog):
    from graph.jobs import JobService

    async def broken(self, uid):
        raise RuntimeError("connection to mongodb://admin:hunter2@db:27017 lost")

    monkeypatch.setattr(JobService, "stats", broken)
    user = api.as_user()
    with caplog.at_level(logging.ERROR, logger="graph.errors"):
        error = error_of(user, "{queueStats{queued}}")
    [body] = error.errors
    assert error.code == "INTERNAL_SERVER_ERROR"
    error_id = body["extensions"]["errorId"]
    assert error_id in body["message"]
    assert "hunter2" not in str(body) and "mongodb" not in str(body)
    assert "Traceback" not in str(body) and "RuntimeError" not in str(body)
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert logged and logged[0].exc_info and "hunter2" in str(logged[0].exc_info[1])


def test_a_masked_error_leaves_the_other_fields_answered(api, monkeypatch):
    from graph.jobs import JobService

    async def broken(self, uid):
        raise KeyError("internal")

    monkeypatch.setattr(JobService, "stats", broken)
    user = api.as_user()
    body = user.post("{me{username} queueStats{queued}}").json()
    assert body["data"] is None or body["data"].get("me")
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INTERNAL_SERVER_ERROR"]


def test_an_error_outside_graphql_is_a_masked_json_500(api, monkeypatch):
    """A bug in the view itself still answers JSON with an id, not a bare 500 page."""
    from graph.http.view import GraphQLView

    async def broken(self, request, response):
        raise RuntimeError("secret")

    monkeypatch.setattr(GraphQLView, "get_context", broken)
    response = api.http.post("/graphql", json={"query": "{__typename}"})
    error = assert_graphql_error(response, 500, "INTERNAL_SERVER_ERROR")
    assert "secret" not in response.text and error["extensions"]["errorId"] in error["message"]


# ---- requests the view cannot read: 4xx, GraphQL-shaped ----

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("body", [
    b'{"query":"\xff\xfe"}',                     # invalid UTF-8
    b"\xc3\x28",
    b"[" * 100_000 + b"]" * 100_000,              # deeply nested JSON
    b'{"query":"{__typename}","variables":{"a":' + b"[" * 70 + b"]" * 70 + b"}}",
    b"5", b"-1.5e300", b'"query"', b"null", b"true",  # JSON that is not an object
    b"{", b"", b"   ", b"{'query':'x'}", b'{"query":"x",}',  # not JSON
    b'{"query":"{__typename}"}garbage',
    b"NaN", b'{"query":"{__typename}","variables":{"x":Infinity}}',
    b'{"query":"{__typename}","variables":{"x":' + b"9" * 5000 + b"}}",  # a too-long integer
    b'{"query":"{__typename}","variables":{"x":"\\ud800"}}',            # a lone surrogate
    b'{"query":"{__typename}","variables":{"\\uDFFF":[1]}}',             # ... in a key
    b"[]", b'[{"query":"{__typename}"}]',          # batches are not enabled
    b'{"query":5}', b'{"query":["{me{id}}"]}', b'{"query":{}}',
    b'{"query":"{__typename}","variables":[1]}', b'{"query":"{__typename}","variables":"{}"}',
    b'{"query":"{__typename}","extensions":7}',
    b'{"query":"{__typename}","operationName":5}', b'{"query":"{__typename}","operationName":{}}',
    b"{}", b'{"query":null}', b'{"query":""}',
])
def test_unreadable_bodies_get_a_400(api, body):
    response = api.http.post("/graphql", content=body, headers=JSON)
    assert_graphql_error(response, 400, "GRAPHQL_PARSE_FAILED")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/graphql"])
def test_other_content_types_get_a_400(api, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = api.http.post("/graphql", content=b'{"query":"{__typename}"}', headers=headers)
    assert_graphql_error(response, 400, "GRAPHQL_PARSE_FAILED")


def test_a_json_content_type_with_a_charset_is_fine(api):
    response = api.http.post("/graphql", content=b'{"query":"{__typename}"}',
                             headers={"content-type": "application/json; charset=utf-8"})
    assert response.json() == {"data": {"__typename": "Query"}}


def test_a_mutation_by_get_is_refused(api):
    response = api.http.get("/graphql", params={"query": "mutation{dequeue{id}}"})
    assert_graphql_error(response, 400, "BAD_USER_INPUT")


def test_a_query_by_get_works_and_bad_get_parameters_get_a_400(api):
    assert api.http.get("/graphql", params={"query": "{__typename}"}).json() == {
        "data": {"__typename": "Query"}}
    response = api.http.get("/graphql", params={"query": "{__typename}", "variables": "{"})
    assert_graphql_error(response, 400, "GRAPHQL_PARSE_FAILED")
    response = api.http.get("/graphql", params={"query": "{"})
    assert_graphql_error(response, 200, "GRAPHQL_PARSE_FAILED")


def test_a_subscription_over_plain_http_is_refused(api):
    user = api.as_user()
    response = user.post("subscription{processed{cursor}}")
    assert_graphql_error(response, 400, "BAD_USER_INPUT")


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_get_a_405(api, method):
    response = api.http.request(method, "/graphql", json={"query": "{__typename}"})
    assert response.status_code == 405


# ---- WebSocket ----

def ws_subscribe(client, token: str, query: str, protocol="graphql-transport-ws") -> dict:
    with client.websocket_connect("/graphql", subprotocols=[protocol]) as ws:
        if protocol == "graphql-transport-ws":
            ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            assert ws.receive_json()["type"] == "connection_ack"
            ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        else:
            ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
            assert ws.receive_json()["type"] == "connection_ack"
            ws.send_json({"id": "1", "type": "start", "payload": {"query": query}})
        return ws.receive_json()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize("query, code", [
    ("subscription{processed{nope}}", "GRAPHQL_VALIDATION_FAILED"),
    ("subscription{processed(after:5){cursor}}", "GRAPHQL_VALIDATION_FAILED"),
])
def test_websocket_errors_have_codes(api, protocol, query, code):
    user = api.as_user()
    message = ws_subscribe(api.http, user.token, query, protocol)
    assert message["type"] == "error", message
    payload = message["payload"]
    errors = payload if isinstance(payload, list) else [payload]
    assert [e["extensions"]["code"] for e in errors] == [code]
