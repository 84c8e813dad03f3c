"""Slow, idle and too many clients, with raw sockets against `python -m graph`:
each connection is cut off at its deadline (graph/http/httpprotocol.py), and
the limits come from the settings (graph/__main__.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
import websockets

from tests.conftest import make_settings
from tests.support import ApiProcess, wait_until

HEAD, BODY, KEEP_ALIVE, MAX_CONNECTIONS = 1, 2, 1, 8
SLACK = 3  # seconds past a deadline before the test calls the connection "kept open"


@pytest.fixture(scope="module")
def server(redis_url, tmp_path_factory):
    api = ApiProcess(make_settings(
        redis_url, http_header_timeout_seconds=HEAD, http_body_timeout_seconds=BODY,
        http_keep_alive_seconds=KEEP_ALIVE, http_max_connections=MAX_CONNECTIONS,
    ), tmp_path_factory.mktemp("api"))
    api.start()
    yield api
    api.stop()


def ws_url(api: ApiProcess) -> str:
    return api.url.replace("http://", "ws://") + "/graphql"


def connect(api: ApiProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=5)


def drip(sock: socket.socket, data: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send `data` a byte each `every` seconds while reading the answer, until the
    server closes the connection: (its answer, seconds it took). AssertionError
    if it is still open after `limit` seconds."""
    start, answer, sent = time.monotonic(), b"", 0
    sock.settimeout(every)
    while time.monotonic() - start < limit:
        try:
            if sent < len(data):
                sock.sendall(data[sent:sent + 1])
                sent += 1
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset by the server
            break
        if not chunk:
            break
        answer += chunk
    else:
        raise AssertionError(f"the connection was still open after {limit} s")
    return answer, time.monotonic() - start


def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(server):
    with connect(server) as sock:
        sock.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100\r\n\r\n")
        answer, took = drip(sock, b"{" * 100, every=0.5, limit=BODY + SLACK)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["errors"][0]["extensions"]["code"] \
        == "BAD_USER_INPUT"
    assert took >= BODY - 0.5


def test_headers_sent_a_byte_at_a_time_are_cut_off(server):
    with connect(server) as sock:
        sock.sendall(b"POST /graphql HTTP/1.1\r\nHost: x\r\n")
        answer, _ = drip(sock, b"x-slow: " + b"a" * 100, every=0.5, limit=HEAD + SLACK)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_slow_body_behind_a_pipelined_request_is_cut_off_too(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\n")
        answer, _ = drip(sock, b"{" * 100, every=0.5, limit=BODY + SLACK)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"HTTP/1.1 408 " in answer, answer


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        drip(sock, b"", every=0.5, limit=HEAD + SLACK)


def test_an_idle_keep_alive_connection_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer, _ = drip(sock, b"", every=0.5, limit=KEEP_ALIVE + SLACK)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


async def test_the_deadlines_cover_arriving_not_answering(server):
    """A long poll answers after the body deadline; a WebSocket outlives both."""
    user = server.client().as_user()
    started = time.monotonic()
    assert user.dequeue(wait=BODY + 1) is None
    assert time.monotonic() - started >= BODY + 1
    async with websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init",
                                  "payload": {"Authorization": f"Bearer {user.token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await asyncio.sleep(HEAD + BODY + 1)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "pong"


async def test_connections_over_the_limit_get_503(server):
    """WebSockets count: MAX_CONNECTIONS of them, and plain requests are refused."""
    sockets = [await websockets.connect(ws_url(server), subprotocols=["graphql-transport-ws"])
               for _ in range(MAX_CONNECTIONS)]
    try:
        response = await asyncio.to_thread(httpx.get, server.url + "/healthz")
    finally:
        for ws in sockets:
            await ws.close()
    assert response.status_code == 503
    await asyncio.to_thread(
        wait_until, lambda: httpx.get(server.url + "/healthz").status_code == 200, 10)
