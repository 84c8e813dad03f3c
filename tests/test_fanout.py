"""`processed` events are rendered once and sent as the same bytes to every
listener of a user (graph/live/fanout.py), with the same payload strawberry sends."""

from __future__ import annotations

import json

from graph.live.fanout import plan_for
from graph.schema import build_schema

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
