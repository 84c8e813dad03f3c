"""Both paths of `processed` (strawberry's resolver, and the shared rendering of
graph/live/fanout.py) start and end a subscription by the same rules
(graph/live/subscription.py): one cursor check, one count while it runs."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.support import wait_until

SHARED = "subscription($a: String) { processed(after: $a) { cursor job { id } } }"
STANDARD = ("subscription($a: String) { ...P } "  # a fragment: strawberry's own path
            "fragment P on Subscription { processed(after: $a) { cursor job { id } } }")


def active() -> float:
    return REGISTRY.get_sample_value("graphql_active_subscriptions")


@pytest.mark.parametrize("document", [SHARED, STANDARD], ids=["shared", "strawberry"])
def test_each_path_checks_the_cursor_once_and_counts_the_subscription(
        api, app_client, workers, monkeypatch, document):
    user = api.as_user()
    job = user.enqueue("x")["id"]
    assert workers.run_burst().returncode == 0
    hub = app_client.app.state.services.hub
    checked = []
    check_cursor = hub.check_cursor

    async def counted(uid, after):
        checked.append(after)
        await check_cursor(uid, after)

    monkeypatch.setattr(hub, "check_cursor", counted)
    before = active()
    with app_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init",
                      "payload": {"Authorization": f"Bearer {user.token}"}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe",
                      "payload": {"query": document, "variables": {"a": "0"}}})
        event = ws.receive_json()
        assert event["payload"]["data"]["processed"]["job"]["id"] == job
        assert active() == before + 1
        ws.send_json({"id": "1", "type": "complete"})
        wait_until(lambda: active() == before, 10, message="the subscription no longer counts")
    assert checked == ["0"]
