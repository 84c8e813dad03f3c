"""How long a GraphQL WebSocket lives, and what ends its operations, against
`python -m graph`: a socket without connection_init is closed, an expired
token closes its socket, and every refused `processed` ends with an error
that frees its place (graph/live/wslifetime.py, graph/live/fanout.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import jwt
import pytest
import websockets

from graph.errors import BadUserInput
from graph.live.events import parse_cursor
from tests.conftest import make_settings
from tests.support import ApiProcess, wait_until

TRANSPORT_WS, LEGACY_WS = "graphql-transport-ws", "graphql-ws"
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]

SHARED = "subscription($a: String) { processed(after: $a) { cursor job { id } } }"
# a fragment at the top: not a document the shared path takes (graph/live/fanout.py)
STANDARD = ("subscription($a: String) { ...P } "
            "fragment P on Subscription { processed(after: $a) { cursor job { id } } }")

BAD_CURSORS = [
    "1-1\n", "١-١", "99999999999999999999-0", "18446744073709551616-0",
    "1-18446744073709551616", "１-１", "1−1", " 1-1", "1-1 ", "+1-1", "-1-1", "1-",
    "-1", "1", "1-1-1", "0x1-1", "1_0-1", "garbage", "1-1\x00", "9" * 5000 + "-0",
]


def dev_api(redis_url, tmp_path_factory, **settings):
    """`python -m graph --dev` (a worker inside) with these settings, until the module ends."""
    api = ApiProcess(make_settings(redis_url, **settings), tmp_path_factory.mktemp("api"))
    api.start("--dev")
    yield api
    api.stop()


@pytest.fixture(scope="module")
def server(redis_url, tmp_path_factory):
    """An API with a short wait for connection_init."""
    yield from dev_api(redis_url, tmp_path_factory, ws_init_timeout_seconds=1)


@pytest.fixture(scope="module")
def short_lived(redis_url, tmp_path_factory):
    """An API whose tokens live 2 seconds (plus the 2 s leeway)."""
    yield from dev_api(redis_url, tmp_path_factory, jwt_ttl_seconds=2)


class Socket:
    """A GraphQL WebSocket, either protocol, as a client drives it."""

    def __init__(self, ws, protocol: str):
        self.ws = ws
        self.protocol = protocol

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, api: ApiProcess, protocol: str, token: str | None = None):
        url = api.url.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=[protocol]) as ws:
            socket = cls(ws, protocol)
            if token:
                await socket.send(type="connection_init",
                                  payload={"Authorization": f"Bearer {token}"})
                assert (await socket.receive())["type"] == "connection_ack"
            yield socket

    async def send(self, **message) -> None:
        await self.ws.send(json.dumps(message))

    async def receive(self, timeout: float = 10) -> dict:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] != "ka":  # the legacy protocol's keep-alive
                return message

    async def start(self, op: str, query: str, variables: dict | None = None) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send(id=op, type=kind, payload={"query": query, "variables": variables or {}})

    async def stop(self, op: str) -> None:
        await self.send(id=op, type="complete" if self.protocol == TRANSPORT_WS else "stop")

    async def first_data(self, op: str) -> dict:
        """The first result of operation `op` (messages of others are skipped)."""
        while True:
            message = await self.receive()
            if message.get("id") == op:
                assert message["type"] in ("next", "data"), message
                return message["payload"]

    async def errors(self, op: str) -> list[dict]:
        """The errors operation `op` sent until it ended."""
        errors = []
        while True:
            message = await self.receive()
            assert message.get("id") == op, message
            if message["type"] in ("next", "data"):
                errors += message["payload"].get("errors", [])
            elif message["type"] == "error":
                payload = message["payload"]
                return errors + (payload if isinstance(payload, list) else [payload])
            elif message["type"] == "complete":
                return errors


def a_finished_job(api: ApiProcess):
    """A fresh user (its username and password), with one job its worker finished."""
    username, password = f"user_{uuid.uuid4().hex[:8]}", "correct horse"
    user = api.client().as_user(username, password)
    job = user.enqueue("x")["id"]
    wait_until(lambda: user.job(job)["status"] == "COMPLETED", 20)
    return user, job, (username, password)


# ---- a bad `after` ----

def test_a_cursor_is_what_redis_takes_as_a_stream_id(redis_sync_client):
    top = "18446744073709551615-18446744073709551615"
    for cursor, key in [("0-0", (0, 0)), ("1700000000000-3", (1700000000000, 3)),
                        (top, (2**64 - 1, 2**64 - 1))]:
        assert parse_cursor(cursor) == key
        redis_sync_client.xrange("no-such-stream", min=cursor, max=cursor)  # Redis takes it
    for cursor in BAD_CURSORS:
        with pytest.raises(BadUserInput):
            parse_cursor(cursor)


@pytest.mark.parametrize("query", [SHARED, STANDARD], ids=["shared-path", "standard-path"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bad_cursors_are_bad_user_input_and_free_their_place(server, protocol, query):
    user, job, _ = a_finished_job(server)
    async with Socket.open(server, protocol, user.token) as socket:
        for i in range(20):  # twice WS_MAX_SUBSCRIPTIONS: a leaked place would show
            cursor = BAD_CURSORS[i % len(BAD_CURSORS)]
            await socket.start(str(i), query, {"a": cursor})
            errors = await socket.errors(str(i))
            assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], (cursor,
                                                                                     errors)
        await socket.start("good", query, {"a": "0"})
        event = await socket.first_data("good")
        assert event["data"]["processed"]["job"]["id"] == job


# ---- connection_init ----

@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_without_connection_init_is_closed(server, protocol):
    """WS_INIT_TIMEOUT_SECONDS=1 here; the bound below leaves room for a slow machine."""
    async with Socket.open(server, protocol) as socket:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.receive(timeout=15)
    assert closed.value.rcvd.code == 4408


# ---- token expiry ----

@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_expired_token_closes_its_socket_with_4403(short_lived, protocol):
    user, job, (username, password) = a_finished_job(short_lived)
    token = short_lived.client().call(
        "mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
        {"u": username, "p": password})["login"]["token"]
    expires = jwt.decode(token, options={"verify_signature": False})["exp"] + 2  # + leeway
    async with Socket.open(short_lived, protocol, token) as socket:
        await socket.start("live", SHARED)  # runs until the socket closes
        polls = 0
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:  # new operations run while the token is valid, then are refused
                assert time.time() < expires + 10, "operations still run on an expired token"
                polls += 1
                await socket.start(f"poll{polls}", SHARED, {"a": "0"})
                event = await socket.first_data(f"poll{polls}")
                assert event["data"]["processed"]["job"]["id"] == job
                await socket.stop(f"poll{polls}")
                await asyncio.sleep(0.2)
        assert time.time() >= expires, "closed only once the token expired"
    assert closed.value.rcvd.code == 4403
    assert polls > 1


# ---- a query over the legacy protocol ----

async def test_a_query_on_the_legacy_protocol_is_refused_with_a_code_not_masked(server):
    """The legacy graphql-ws protocol carries subscriptions only (strawberry refuses
    the rest): the client is told so, not given an internal error."""
    user, _, _ = a_finished_job(server)
    async with Socket.open(server, LEGACY_WS, user.token) as socket:
        await socket.start("q", "{ me { id } }")
        errors = await socket.errors("q")
        assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"], errors
