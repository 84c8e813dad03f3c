"""The `processed` subscription over real WebSockets, against `python -m graph`.

Clients: gql's websockets transport (both sub-protocols) and, for the exact
close codes of refused connections, the plain `websockets` library.
"""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
import websockets
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.support import ApiProcess, wait_until

PROCESSED = gql("""
subscription($after: String) {
  processed(after: $after) { cursor job { id status requestData processedData } }
}""")

TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # "graphql-transport-ws"
LEGACY_WS = WebsocketsTransport.APOLLO_SUBPROTOCOL  # "graphql-ws"


def ws_url(api: ApiProcess) -> str:
    return api.url.replace("http://", "ws://") + "/graphql"


def transport(api, token, protocol=TRANSPORT_WS, payload=None):
    return WebsocketsTransport(
        url=ws_url(api), subprotocols=[protocol],
        init_payload=payload if payload is not None else {"Authorization": f"Bearer {token}"},
    )


async def collect(api, token, count, after=None, protocol=TRANSPORT_WS, payload=None,
                  started: asyncio.Event | None = None, timeout=60):
    """The first `count` events a listener hears."""
    events = []
    async with Client(transport=transport(api, token, protocol, payload)) as session:
        async def listen():
            agen = session.subscribe(PROCESSED, variable_values={"after": after})
            if started:
                started.set()
            async for result in agen:
                events.append(result["processed"])
                if len(events) >= count:
                    return

        await asyncio.wait_for(listen(), timeout)
    return events


@pytest.fixture
def client(api_process):
    return api_process.client().as_user()


async def listening(task_started: asyncio.Event, api_process):
    """Wait until the server counts the new subscription."""
    await task_started.wait()
    await asyncio.to_thread(
        wait_until, lambda: api_process.subscriptions() >= 1, 10, 0.05, "subscription")


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_events_arrive_in_finishing_order_with_cursors(
        api_process, client, workers, protocol):
    ids = [client.enqueue(f"job {i}")["id"] for i in range(5)]
    started = asyncio.Event()
    listener = asyncio.create_task(collect(api_process, client.token, 5, protocol=protocol,
                                           started=started))
    await listening(started, api_process)
    workers.start("--handler", "workers.handlers:upper")
    events = await listener
    assert [e["job"]["id"] for e in events] == ids
    assert [e["job"]["processedData"] for e in events] == [f"JOB {i}" for i in range(5)]
    assert all(e["job"]["status"] == "COMPLETED" for e in events)
    cursors = [e["cursor"] for e in events]
    assert len(set(cursors)) == 5


async def test_reconnecting_with_after_misses_nothing_and_repeats_nothing(
        api_process, client, workers):
    items = [json.dumps({"u": "r", "i": i, "sleep": 0.02}) for i in range(60)]
    ids = [j["id"] for j in client.enqueue_many([{"requestData": d} for d in items])]
    started = asyncio.Event()
    first = asyncio.create_task(collect(api_process, client.token, 15, started=started))
    await listening(started, api_process)
    workers.start("--handler", "tests.handlers:record")
    part1 = await first  # the listener goes away while jobs keep finishing
    assert client.stats()["queued"] > 0, "jobs were still finishing when it reconnected"
    part2 = await collect(api_process, client.token, 45, after=part1[-1]["cursor"])
    heard = [e["job"]["id"] for e in part1 + part2]
    assert heard == ids


async def test_after_replays_history_then_goes_live(api_process, client, workers):
    ids = [client.enqueue(str(i))["id"] for i in range(3)]
    assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
    history = await collect(api_process, client.token, 3, after="0")
    assert [e["job"]["id"] for e in history] == ids
    later = client.enqueue("later")["id"]
    assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
    replay = await collect(api_process, client.token, 1, after=history[0]["cursor"] )
    assert replay[0]["job"]["id"] == ids[1]
    tail = await collect(api_process, client.token, 1, after=history[-1]["cursor"])
    assert tail[0]["job"]["id"] == later


async def test_a_listener_hears_only_its_own_user(api_process, workers):
    http = api_process.client()
    alice, bob = http.as_user(), http.as_user()
    started = asyncio.Event()
    bobs_ears = asyncio.create_task(collect(api_process, bob.token, 1, started=started))
    await listening(started, api_process)
    for i in range(5):
        alice.enqueue(f"alice {i}")
    assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
    mine = bob.enqueue("bob's")["id"]  # finishes after all of alice's
    assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
    heard = await bobs_ears
    assert [e["job"]["id"] for e in heard] == [mine]


@pytest.mark.parametrize("cursor", ["garbage", "1-1"])
async def test_a_bad_or_unknown_cursor_is_bad_user_input(api_process, client, cursor):
    with pytest.raises(TransportQueryError) as err:
        await collect(api_process, client.token, 1, after=cursor, timeout=10)
    assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("payload", [
    {"Authorization": "Bearer {token}"},
    {"authorization": "Bearer {token}"},
    {"token": "{token}"},
])
async def test_each_connection_init_form_authenticates(api_process, client, workers, payload):
    filled = {k: v.format(token=client.token) for k, v in payload.items()}
    job = client.enqueue("x")["id"]
    assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
    events = await collect(api_process, None, 1, after="0", payload=filled)
    assert events[0]["job"]["id"] == job


@pytest.mark.parametrize("payload", [{}, {"Authorization": "Bearer forged.token.here"}])
async def test_transport_ws_without_a_valid_token_closes_4403(api_process, payload):
    async with websockets.connect(ws_url(api_process), subprotocols=[TRANSPORT_WS]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert message["type"] != "next", "no event before authentication"
    assert closed.value.rcvd.code == 4403


async def test_legacy_graphql_ws_without_a_token_gets_connection_error(api_process):
    async with websockets.connect(ws_url(api_process), subprotocols=[LEGACY_WS]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert message["type"] == "connection_error"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)


async def test_legacy_start_before_connection_init_is_refused(api_process):
    async with websockets.connect(ws_url(api_process), subprotocols=[LEGACY_WS]) as ws:
        await ws.send(json.dumps({"type": "start", "id": "1",
                                  "payload": {"query": "subscription{processed{cursor}}"}}))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert message["type"] not in ("data", "next")


async def test_pings_are_answered(api_process, client):
    async with websockets.connect(ws_url(api_process), subprotocols=[TRANSPORT_WS]) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {client.token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"


async def test_two_api_processes_both_deliver_to_their_listeners(
        api_process, client, settings, tmp_path, workers):
    second = ApiProcess(settings, tmp_path)
    second.start()
    try:
        # accounts live in each API's in-memory store unless MONGO_URI is set:
        # the same user id must exist on both, so register on the second too
        other = second.client().as_user() if not settings.mongo_uri else client
        ids_first = [client.enqueue(f"a{i}")["id"] for i in range(3)]
        s1, s2 = asyncio.Event(), asyncio.Event()
        l1 = asyncio.create_task(collect(api_process, client.token, 3, started=s1))
        l2 = asyncio.create_task(collect(second, other.token, 3, started=s2))
        await listening(s1, api_process)
        await listening(s2, second)
        ids_second = [other.enqueue(f"b{i}")["id"] for i in range(3)]
        workers.start("--handler", "workers.handlers:echo")
        assert [e["job"]["id"] for e in await l1] == ids_first
        assert [e["job"]["id"] for e in await l2] == ids_second
    finally:
        assert second.stop() == 0


async def test_listeners_that_vanish_leave_no_subscription_or_connection(
        api_process, client, redis_sync_client):
    before_clients = len(redis_sync_client.client_list())
    sockets = []
    for _ in range(20):
        ws = await websockets.connect(ws_url(api_process), subprotocols=[TRANSPORT_WS])
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {client.token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": "subscription{processed{cursor}}"}}))
        sockets.append(ws)
    await asyncio.to_thread(wait_until, lambda: api_process.subscriptions() == 20, 10)
    during_clients = len(redis_sync_client.client_list())
    assert during_clients - before_clients <= 3, "listeners share the API's few connections"
    for ws in sockets:
        ws.transport.abort()  # vanish: no close frame
    await asyncio.to_thread(wait_until, lambda: api_process.subscriptions() == 0, 20)
    assert len(redis_sync_client.client_list()) <= during_clients


def catch_ups(api_process) -> float:
    for line in httpx.get(api_process.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("graphql_subscription_catch_ups_total "):
            return float(line.split()[1])
    return 0.0


async def test_a_listener_that_stops_reading_gets_everything_once_it_reads_again(
        api_process, client, workers):
    """Events go out as they come while the client keeps up; when it stops reading
    the server's buffer fills, the listener falls back and later catches up from
    the stream: every event arrives once, in order."""
    big = "x" * 60_000  # 250 of these are more than the socket buffers hold
    n = 250
    sock = socket.create_connection(("127.0.0.1", int(api_process.port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # no autotuning
    async with websockets.connect(ws_url(api_process), sock=sock, subprotocols=[TRANSPORT_WS],
                                  max_queue=1, max_size=None, compression=None,
                                  ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {client.token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription{processed{cursor job{id requestData}}}"}}))
        await asyncio.to_thread(wait_until, lambda: api_process.subscriptions() >= 1, 10)
        before = catch_ups(api_process)
        ids = [client.enqueue(big)["id"] for _ in range(n)]
        assert (await asyncio.to_thread(workers.run_burst)).returncode == 0
        # not reading: the server's buffer fills and the listener falls behind
        await asyncio.to_thread(wait_until, lambda: catch_ups(api_process) > before, 30,
                                0.1, "the listener to fall behind")
        heard = []
        while len(heard) < n:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert message["type"] == "next", message
            heard.append(message["payload"]["data"]["processed"]["job"]["id"])
    assert heard == ids, "every event once, in finishing order"
