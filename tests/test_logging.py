"""Logs as operators read them: with LOG_FORMAT=json every line the API and a
worker write is one JSON object; lines about a job carry `job_id` and
`user_id`; each HTTP request has a `request_id` (also sent back as the
`X-Request-ID` header); and no password, token or JWT secret is ever written,
whatever the client sends."""

from __future__ import annotations

import json
import secrets
import uuid

import httpx
import pytest
from websockets.sync.client import connect

from tests.support import GraphQLError, wait_until

PASSWORD = "pw-" + secrets.token_hex(12)
WRONG_PASSWORD = "wrong-" + secrets.token_hex(12)
SECRET = "jwt-secret-" + secrets.token_hex(24)


@pytest.fixture
def settings(settings_factory):
    """The tests' settings, logging everything at INFO as JSON, with a secret to look for."""
    return settings_factory(log_format="json", log_level="INFO", jwt_secret=SECRET)


def json_lines(text: str, who: str) -> list[dict]:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{who} line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), f"{who} line {number} is not an object: {line!r}"
        assert {"ts", "level", "logger", "msg"} <= record.keys(), record
        records.append(record)
    return records


@pytest.mark.parametrize("handler", ["tests.logging_handlers:chatty",
                                     "tests.logging_handlers:chatty_async"])
def test_json_logs_carry_ids_and_never_secrets(api_process, workers, tmp_path, handler):
    http = httpx.Client(base_url=api_process.url, timeout=40)
    api = api_process.client()
    username = f"log_{uuid.uuid4().hex[:8]}"
    api.call("mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}",
             {"u": username, "p": PASSWORD})
    with pytest.raises(GraphQLError):
        api.call("mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
                 {"u": username, "p": WRONG_PASSWORD})
    with pytest.raises(GraphQLError):  # a password sent to register again (taken username)
        api.call("mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}",
                 {"u": username, "p": WRONG_PASSWORD})
    token = api.call("mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
                     {"u": username, "p": PASSWORD})["login"]["token"]
    user = api.__class__(api.http, token)
    user_id = user.call("{ me { id } }")["me"]["id"]

    # a request id is made per request, or taken from the client when sane
    r1 = http.post("/graphql", json={"query": "{ __typename }"})
    r2 = http.post("/graphql", json={"query": "{ __typename }"})
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]
    given = "client-" + uuid.uuid4().hex[:8]
    r3 = http.post("/graphql", json={"query": "{ me { id } }"},
                   headers={"X-Request-ID": given, "Authorization": f"Bearer {token}"})
    assert r3.headers["x-request-id"] == given
    bad = http.post("/graphql", json={"query": "{ __typename }"},
                    headers={"X-Request-ID": "no spaces or \"quotes\" " + "x" * 100})
    assert bad.headers["x-request-id"] != bad.request.headers["x-request-id"]

    # the token also travels in a query string, a WebSocket init and a forged header
    http.get("/graphql", params={"query": "{ __typename }", "token": token})
    http.get("/graphql", params={  # refused (a mutation by GET), but the URL holds a password
        "query": "mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
        "variables": json.dumps({"u": username, "p": PASSWORD})})
    http.post("/graphql", json={"query": "{ me { id } }"},
              headers={"Authorization": f"Bearer {token}x"})
    ws_url = api_process.url.replace("http://", "ws://") + "/graphql"
    with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization":
                                                                   f"Bearer {token}"}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"

    jobs = [user.enqueue("hello"), user.enqueue("fail please"), user.enqueue("world")]
    workers.start(QUEUE_HANDLER=handler, QUEUE_MAX_ATTEMPTS="2")
    wait_until(lambda: all(user.job(j["id"])["status"] in ("COMPLETED", "FAILED") for j in jobs),
               timeout=30, message="the jobs to finish")
    assert user.job(jobs[1]["id"])["status"] == "FAILED"
    workers.stop_all()
    api_process.stop()

    api_text = api_process.log_path.read_text()
    worker_text = (tmp_path / "worker-0.log").read_text()

    # 1. nothing secret, anywhere, in any form the client sent it
    for name, text in (("API", api_text), ("worker", worker_text)):
        for secret, what in ((PASSWORD, "the password"), (WRONG_PASSWORD, "a wrong password"),
                             (token, "the token"), (token.split(".")[2], "the token's signature"),
                             (SECRET, "JWT_SECRET")):
            assert secret not in text, f"{what} appears in the {name} log"

    # 2. one JSON object per line
    api_records = json_lines(api_text, "API")
    worker_records = json_lines(worker_text, "worker")
    assert api_records and worker_records

    # 3. the worker's lines about a job name the job and its user
    ids = {j["id"] for j in jobs}
    about_jobs = [r for r in worker_records
                  if r.get("job_id") or any(jid in r["msg"] for jid in ids)]
    assert about_jobs, worker_records
    for record in about_jobs:
        assert record.get("job_id") in ids, f"line about a job without its job_id: {record}"
        assert record.get("user_id") == user_id, f"line about a job without user_id: {record}"
    handled = [r for r in worker_records if r["logger"] == "tests.handler"]
    assert len(handled) == 4, handled  # hello, world, and the failing job twice
    assert {r["job_id"] for r in handled} == ids
    failed = [r for r in about_jobs if "failed" in r["msg"]]
    assert failed and all(r["job_id"] == jobs[1]["id"] for r in failed), about_jobs

    # 4. the API's request lines carry a request id, and the user once known
    access = [r for r in api_records if r["logger"] == "uvicorn.access"]
    assert access, api_records
    assert all(r.get("request_id") for r in access), [r for r in access
                                                        if not r.get("request_id")]
    assert {r1.headers["x-request-id"], r2.headers["x-request-id"], given} <= {
        r["request_id"] for r in access}
    mine = [r for r in access if r["request_id"] == given]
    assert mine and all(r.get("user_id") == user_id for r in mine), mine
