"""GraphQL over HTTP as its spec says: the spec's own audit, and the two media types.

`application/graphql-response+json`, when the client prefers it, is answered
with the spec's status codes: 400 and no `data` for a request that never ran
(parse, validation, variable coercion), 200 for an executed one, errors
included. `application/json` (also no Accept, or `*/*`) is answered as in
version 1: 200 with `"data": null` for those same requests.

The audit needs `node` (18 or later) and graphql-http:
`cd tests/http-audit && npm ci` (`make install` and .ci/run do it). Without
them it is skipped, saying so.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from graph.http.accept import GRAPHQL_RESPONSE, JSON, preferred
from tests.support import ROOT, node_or_skip

AUDIT = ROOT / "tests" / "http-audit"
SPEC = {"accept": GRAPHQL_RESPONSE}
V1 = {"accept": JSON}


def _node_or_skip() -> str:
    return node_or_skip(AUDIT, "graphql-http", "the GraphQL-over-HTTP audit")


def test_the_graphql_over_http_audit_finds_no_error_and_no_warning(api_process):
    node = _node_or_skip()
    run = subprocess.run([node, "audit.mjs", f"{api_process.url}/graphql"], cwd=AUDIT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert len(results) >= 50, results  # the whole audit ran (61 in graphql-http 1.23)
    failing = [r for r in results if r["status"] in ("warn", "error")]
    assert not failing, "\n".join(
        f"{r['id']} {r['status']}: {r['name']}: {r['reason']} "
        f"(HTTP {r['response']['status']} {r['response']['contentType']}: "
        f"{r['response']['body'][:200]})" for r in failing)


# ---- which media type ----

@pytest.mark.parametrize("accept, media_type", [
    (None, JSON),
    ("*/*", JSON),
    ("application/*", JSON),  # both fit equally: version 1's
    ("text/html", JSON),  # neither fits: version 1's, not a 406
    (JSON, JSON),
    (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
    ("APPLICATION/GRAPHQL-RESPONSE+JSON; charset=utf-8", GRAPHQL_RESPONSE),
    # the order of the header decides between equal q-values
    (f"{GRAPHQL_RESPONSE}, {JSON}", GRAPHQL_RESPONSE),
    (f"{JSON}, {GRAPHQL_RESPONSE}", JSON),
    (f"{JSON}, multipart/mixed", JSON),  # GraphiQL's fetcher
    # q-values before order
    (f"{GRAPHQL_RESPONSE}, {JSON};q=0.9", GRAPHQL_RESPONSE),  # the spec's advice to clients
    (f"{JSON};q=0.5, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
    (f"{GRAPHQL_RESPONSE};q=0.5, {JSON}", JSON),
    (f"{GRAPHQL_RESPONSE};q=0.5, */*", JSON),
    (f"*/*;q=0.1, {GRAPHQL_RESPONSE};q=0.2", GRAPHQL_RESPONSE),
    (f"{GRAPHQL_RESPONSE};q=0", JSON),  # refused outright
    (f"*/*, {JSON};q=0", GRAPHQL_RESPONSE),  # the most specific range decides
    # malformed ranges are skipped, quoted commas stay inside their range
    (f"{JSON};q=2, {GRAPHQL_RESPONSE};q=0.1", GRAPHQL_RESPONSE),
    (f"nonsense, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
    (f'text/plain;x="a, {JSON}", {GRAPHQL_RESPONSE}', GRAPHQL_RESPONSE),
])
def test_the_accept_header_picks_the_media_type(accept, media_type):
    assert preferred(accept) == media_type


@pytest.mark.parametrize("accept, media_type", [
    (None, JSON), ("*/*", JSON), (JSON, JSON), (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
    (f"{GRAPHQL_RESPONSE}, {JSON};q=0.9", GRAPHQL_RESPONSE),
])
def test_answers_go_out_in_the_preferred_media_type(api, accept, media_type):
    headers = {"accept": accept} if accept else {}
    response = api.http.post("/graphql", json={"query": "{__typename}"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert "Accept" in response.headers["vary"]  # a cache keeps the two apart
    assert response.json() == {"data": {"__typename": "Query"}}


# ---- status codes ----

REQUEST_ERRORS = [  # (query, variables, code): the operation never runs
    ("{", None, "GRAPHQL_PARSE_FAILED"),
    ("{nope}", None, "GRAPHQL_VALIDATION_FAILED"),
    ("query($id:ID!){job(id:$id){id}}", {"id": None}, "GRAPHQL_VALIDATION_FAILED"),
    ("query($n:Int){jobs(first:$n){pageInfo{hasNextPage}}}", {"n": "x"},
     "GRAPHQL_VALIDATION_FAILED"),
    ("{__schema{types{fields{type{fields{type{fields{name}}}}}}}}", None, "QUERY_TOO_COMPLEX"),
]


@pytest.mark.parametrize("query, variables, code", REQUEST_ERRORS)
def test_request_errors_get_400_and_no_data_when_graphql_response_json_is_preferred(
        api, query, variables, code):
    response = api.http.post("/graphql", json={"query": query, "variables": variables},
                             headers=SPEC)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    body = response.json()
    assert "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == [code] * len(body["errors"])


@pytest.mark.parametrize("query, variables, code", REQUEST_ERRORS)
def test_request_errors_keep_200_and_null_data_for_application_json(api, query, variables, code):
    """Version 1's answer, unchanged."""
    for headers in (V1, {}, {"accept": "*/*"}):
        response = api.http.post("/graphql", json={"query": query, "variables": variables},
                                 headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == JSON
        body = response.json()
        assert body["data"] is None
        assert {e["extensions"]["code"] for e in body["errors"]} == {code}


@pytest.mark.parametrize("headers", [SPEC, V1])
def test_executed_operations_get_200_errors_included(api, headers):
    response = api.http.post("/graphql", json={"query": "{me{id}}"}, headers=headers)
    assert response.status_code == 200
    assert response.json()["data"] is None  # `me` is non-null: the error reached the root
    assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    user = api.as_user()
    response = api.http.post(
        "/graphql", json={"query": '{queueStats{queued} job(id:"0123456789abcdef01234567"){id}}'},
        headers={**headers, "authorization": f"Bearer {user.token}"})
    assert response.status_code == 200
    assert response.json() == {"data": {"queueStats": {"queued": 0}, "job": None}}


@pytest.mark.parametrize("headers", [SPEC, V1])
def test_unreadable_bodies_get_400_in_either_media_type(api, headers):
    response = api.http.post("/graphql", content=b'{"query": ', headers={
        **headers, "content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"] == headers["accept"]
    assert response.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


@pytest.mark.parametrize("headers, status", [(SPEC, 405), (V1, 400)])
def test_a_mutation_by_get_never_runs(api, headers, status):
    """405 with Allow: POST as the spec says; application/json keeps its 400."""
    username = f"get_{uuid.uuid4().hex[:8]}"
    mutation = f'mutation{{register(username:"{username}",password:"correct horse"){{id}}}}'
    response = api.http.get("/graphql", params={"query": mutation}, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == headers["accept"]
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    if status == 405:
        assert response.headers["allow"] == "POST"
    # nothing was registered: the same username is still free
    assert api.call(mutation)["register"]["id"]


def test_a_query_by_get_is_answered_in_the_preferred_media_type(api):
    response = api.http.get("/graphql", params={"query": "{__typename}"}, headers=SPEC)
    assert response.status_code == 200
    assert response.headers["content-type"] == GRAPHQL_RESPONSE
    assert response.json() == {"data": {"__typename": "Query"}}
    response = api.http.get("/graphql", params={"query": "{"}, headers=SPEC)
    assert response.status_code == 400
    assert "data" not in response.json()


def test_a_browser_still_gets_graphiql(api):
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = api.http.get("/graphql", headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


@pytest.mark.parametrize("headers", [SPEC, V1])
def test_a_body_over_the_limit_gets_413_in_the_preferred_media_type(api, headers):
    """SizeLimits answers before the view, in the same media type the view would."""
    response = api.http.post("/graphql", content=b"{}", headers={
        **headers, "content-type": "application/json", "content-length": str(10 * 2**20)})
    assert response.status_code == 413
    assert response.headers["content-type"] == headers["accept"]
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
