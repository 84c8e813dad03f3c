"""The baseline for bench/listeners/: a plain strawberry subscription fed
from an in-memory asyncio broadcast, no Redis, no auth, no extensions.

    uvicorn bench.broadcast_app:app

A WebSocket client says which user it is in `connection_init`
(`{"user": "u7"}`) and subscribes to the same `processed` selection as ours.
`/shared` is the fix issue 4 suggests, for comparison: a bare WebSocket
endpoint speaking just enough graphql-transport-ws (init, ack, subscribe,
ping), where each event is serialized once and every listener of its user gets
the same bytes, only the subscription id spliced in; no per-listener GraphQL
execution.

`POST /run?rate=1000&seconds=20&users=500` publishes `rate` events a second,
round-robin over the users, each to every listener of its user; an event's
`finishedAt` is the moment it is published. `GET /count` answers the number of
live listeners.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from datetime import datetime, timezone
from enum import Enum

import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import GraphQL

LISTENERS: dict[str, set[asyncio.Queue]] = defaultdict(set)
SHARED: dict[str, set[tuple[asyncio.Queue, str]]] = defaultdict(set)  # (queue, subscription id)


@strawberry.enum
class JobStatus(Enum):
    COMPLETED = "COMPLETED"


@strawberry.type
class Job:
    id: strawberry.ID
    status: JobStatus
    finished_at: datetime


@strawberry.type
class ProcessedEvent:
    cursor: str
    job: Job


@strawberry.type
class Query:
    @strawberry.field
    def ok(self) -> bool:
        return True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def processed(self, info: strawberry.Info) -> AsyncGenerator[ProcessedEvent, None]:
        user = str((info.context.get("connection_params") or {}).get("user", ""))
        queue: asyncio.Queue = asyncio.Queue()
        LISTENERS[user].add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            LISTENERS[user].discard(queue)


async def _publish(rate: float, seconds: float, users: int) -> None:
    total = int(rate * seconds)
    t0 = time.time()
    for i in range(total):
        wait = t0 + i / rate - time.time()
        if wait > 0:
            await asyncio.sleep(wait)  # open loop: a late event goes out at once
        user = f"u{i % users}"
        finished = datetime.now(timezone.utc)
        listeners = LISTENERS.get(user)
        if listeners:
            event = ProcessedEvent(cursor=str(i), job=Job(
                id=strawberry.ID(str(i)), status=JobStatus.COMPLETED, finished_at=finished))
            for queue in listeners:
                queue.put_nowait(event)
        shared = SHARED.get(user)
        if shared:
            payload = json.dumps({"data": {"processed": {"cursor": str(i), "job": {
                "id": str(i), "status": "COMPLETED", "finishedAt": finished.isoformat()}}}})
            for queue, sid in shared:
                queue.put_nowait(f'{{"id":{sid},"type":"next","payload":{payload}}}')


_tasks: set[asyncio.Task] = set()


async def run(request: Request) -> JSONResponse:
    q = request.query_params
    task = asyncio.create_task(_publish(float(q["rate"]), float(q["seconds"]), int(q["users"])))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return JSONResponse({"started": True})


async def count(request: Request) -> JSONResponse:
    return JSONResponse({"listeners": sum(len(s) for s in LISTENERS.values())
                         + sum(len(s) for s in SHARED.values())})


async def shared(ws: WebSocket) -> None:
    await ws.accept(subprotocol="graphql-transport-ws")
    user, subs, writer = "", [], None
    queue: asyncio.Queue = asyncio.Queue()

    async def write():
        while True:
            await ws.send_text(await queue.get())

    try:
        while True:
            msg = json.loads(await ws.receive_text())
            kind = msg.get("type")
            if kind == "connection_init":
                user = str((msg.get("payload") or {}).get("user", ""))
                await ws.send_text('{"type":"connection_ack"}')
            elif kind == "subscribe":
                entry = (queue, json.dumps(msg["id"]))
                SHARED[user].add(entry)
                subs.append(entry)
                writer = writer or asyncio.create_task(write())
            elif kind == "ping":
                await ws.send_text('{"type":"pong"}')
    except WebSocketDisconnect:
        pass
    finally:
        for entry in subs:
            SHARED[user].discard(entry)
        if writer:
            writer.cancel()


graphql = GraphQL(strawberry.Schema(query=Query, subscription=Subscription))
app = Starlette(routes=[
    Route("/graphql", graphql, methods=["GET", "POST"]),
    WebSocketRoute("/graphql", graphql),
    WebSocketRoute("/shared", shared),
    Route("/run", run, methods=["POST"]),
    Route("/count", count),
])
