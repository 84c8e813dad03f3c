"""`processed` events are rendered once and sent as the same bytes to every
listener of a user (graph/live/fanout.py), with the same payload strawberry sends."""

from __future__ import annotations

import json

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from graph.live.fanout import plan_for
from graph.schema import build_schema
from graph.settings import Settings

SUB = "subscription($a: String) { processed(after: $a) { cursor job { id processedData } } }"


def test_only_valid_processed_subscriptions_take_the_shared_path():
    schema = build_schema()
    assert plan_for(schema, SUB, {"a": "0"}, None).after == "0"
    assert plan_for(schema, SUB, None, None).after is None
    assert plan_for(schema, "subscription { processed { nope } }", None, None) is None
    assert plan_for(schema, "query { me { id } }", None, None) is None
    assert plan_for(schema, "subscription { processed {", None, None) is None
    assert plan_for(schema, SUB, {"a": 5}, None) is None  # a variable of the wrong type
    deep = "subscription { processed { job { " + "id " * 3 + "} } }"
    assert plan_for(schema, deep, None, None) is not None


def listen(ws, token, sub_id="1"):
    ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    assert ws.receive_json()["type"] == "connection_ack"
    ws.send_json({"id": sub_id, "type": "subscribe",
                  "payload": {"query": SUB, "variables": {"a": "0"}}})


def test_two_listeners_of_a_user_get_identical_bytes(api, app_client, workers):
    client = api.as_user()
    job = client.enqueue("same")
    assert workers.run_burst("--handler", "workers.handlers:upper").returncode == 0
    protocol = ["graphql-transport-ws"]
    with app_client.websocket_connect("/graphql", subprotocols=protocol) as one, \
            app_client.websocket_connect("/graphql", subprotocols=protocol) as two:
        listen(one, client.token)
        listen(two, client.token)
        first, second = one.receive_text(), two.receive_text()
    assert first == second
    message = json.loads(first)
    assert message["type"] == "next"
    assert message["payload"]["data"]["processed"]["job"] == {
        "id": job["id"], "processedData": "SAME"}
    assert len(app_client.app.state.services.renderings._done) == 1, "rendered once"


def test_events_of_two_users_with_the_same_cursor_are_not_mixed_up():
    """Cursors are ids in each user's own stream, so two users can have equal ones."""
    from datetime import datetime, timezone

    from engine.jobs import JobRecord, JobStatus
    from graph.live.fanout import Renderings

    def finished(uid, jid):
        return JobRecord(id=jid, user_id=uid, request_data="x", status=JobStatus.COMPLETED,
                         attempts=1, created_at=datetime.now(timezone.utc), processed_data=jid)

    plan = plan_for(build_schema(), SUB, None, None)
    renderings = Renderings()
    ann = renderings.get(plan, "1700000000000-0", finished("ann", "job-of-ann"))
    bob = renderings.get(plan, "1700000000000-0", finished("bob", "job-of-bob"))
    assert "job-of-ann" in ann and "job-of-bob" in bob


def test_legacy_graphql_ws_listeners_share_the_rendering_too(api, app_client, workers):
    client = api.as_user()
    job = client.enqueue("old")
    assert workers.run_burst().returncode == 0

    def next_data(ws):
        while True:
            message = ws.receive_json()
            if message["type"] != "ka":  # the legacy protocol's keep-alive
                return message

    with app_client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as one, \
            app_client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as two:
        for ws in (one, two):
            ws.send_json({"type": "connection_init",
                          "payload": {"Authorization": f"Bearer {client.token}"}})
            assert next_data(ws)["type"] == "connection_ack"
            ws.send_json({"id": "7", "type": "start",
                          "payload": {"query": SUB, "variables": {"a": "0"}}})
        first, second = next_data(one), next_data(two)
        one.send_json({"id": "7", "type": "stop"})
        assert next_data(one) == {"type": "complete", "id": "7"}
    assert first == second == {"type": "data", "id": "7", "payload": {"data": {"processed": {
        "cursor": first["payload"]["data"]["processed"]["cursor"],
        "job": {"id": job["id"], "processedData": "old"}}}}}
    assert len(app_client.app.state.services.renderings._done) == 1, "rendered once"


# ---- every way an operation ends frees its place ----

def ws_operation_end(ws, op: str) -> tuple[list, list]:
    """The results and error codes of operation `op`, read until it ended."""
    data, codes = [], []
    while True:
        message = ws.receive_json()
        if message["type"] == "ka":
            continue
        assert message.get("id") == op, message
        if message["type"] in ("next", "data"):
            data.append(message["payload"].get("data"))
            codes += [e["extensions"]["code"] for e in message["payload"].get("errors", [])]
        elif message["type"] == "error":
            payload = message["payload"]
            return data, codes + [e["extensions"]["code"] for e in (
                payload if isinstance(payload, list) else [payload])]
        elif message["type"] == "complete":
            return data, codes


def connect(ws, token) -> None:
    ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    assert ws.receive_json()["type"] == "connection_ack"


@pytest.mark.timeout(60)  # before the fix: no answer at all
@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_a_failing_store_ends_each_subscription_with_an_error(api, app_client, monkeypatch,
                                                             protocol):
    user = api.as_user()

    async def down(*args):
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(app_client.app.state.services.hub, "check_cursor", down)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    with app_client.websocket_connect("/graphql", subprotocols=[protocol]) as ws:
        connect(ws, user.token)
        for i in range(12):  # more than WS_MAX_SUBSCRIPTIONS
            ws.send_json({"id": str(i), "type": start,
                          "payload": {"query": SUB, "variables": {"a": "1-1"}}})
            assert ws_operation_end(ws, str(i))[1] == ["INTERNAL_SERVER_ERROR"]


@pytest.mark.timeout(60)  # before the fix: no answer after the event
@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_a_hub_failing_mid_stream_ends_the_subscription_with_an_error(
        api, app_client, monkeypatch, protocol):
    from datetime import datetime, timezone

    from engine.jobs import JobRecord, JobStatus

    user = api.as_user()
    job = JobRecord(id="j1", user_id="u", request_data="x", status=JobStatus.COMPLETED,
                    attempts=1, created_at=datetime.now(timezone.utc), processed_data="y")

    async def listen(uid, after=None, *, sink=None):
        yield "1-1", job
        raise RedisConnectionError("Redis went away")

    monkeypatch.setattr(app_client.app.state.services.hub, "listen", listen)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    with app_client.websocket_connect("/graphql", subprotocols=[protocol]) as ws:
        connect(ws, user.token)
        for i in range(12):  # more than WS_MAX_SUBSCRIPTIONS
            ws.send_json({"id": str(i), "type": start, "payload": {"query": SUB}})
            data, codes = ws_operation_end(ws, str(i))
            assert data[0]["processed"]["job"] == {"id": "j1", "processedData": "y"}
            assert codes == ["INTERNAL_SERVER_ERROR"]


def test_the_shared_path_takes_no_document_over_the_limits():
    """A `processed` document over a limit is left to strawberry's path, which
    refuses it; the shared path never validates it (overlap rule included)."""
    schema = build_schema(Settings(graphql_max_fields=50))
    narrow = "subscription { processed { job { " + " ".join(["id"] * 40) + " } } }"
    wide = "subscription { processed { job { " + " ".join(["id"] * 60) + " } } }"
    assert plan_for(schema, narrow, None, None) is not None
    assert plan_for(schema, wide, None, None) is None


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
def test_a_processed_document_over_the_limits_is_refused_on_the_shared_path_too(
        api, app_client, protocol):
    """The shared path checks documents as strawberry's does: the limits' one pass
    first, so a wide `processed` selection is QUERY_TOO_COMPLEX, never validated."""
    user = api.as_user()
    wide = "subscription { processed { job { " + " ".join(["id"] * 2500) + " } } }"
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    with app_client.websocket_connect("/graphql", subprotocols=[protocol]) as ws:
        connect(ws, user.token)
        ws.send_json({"id": "wide", "type": start, "payload": {"query": wide}})
        assert ws_operation_end(ws, "wide")[1] == ["QUERY_TOO_COMPLEX"]
