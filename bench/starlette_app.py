"""Scenario 6 baseline: a bare Starlette route doing our enqueue's storage work.

POST /enqueue with {"requestData": ...} and a Bearer token: checks the token
(pyjwt, HS256, as the API does), enqueues one job through the engine (the same
Lua script) and answers the job as JSON. No GraphQL, no MongoDB record.
Run with `uvicorn bench.starlette_app:app` (REDIS_URL, QUEUE_PREFIX, BENCH_JWT_SECRET).
"""

from __future__ import annotations

import json
import os
import uuid

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine import connection
from engine.keys import Keys
from engine.queue import Queue, RetryPolicy

SECRET = os.environ.get("BENCH_JWT_SECRET", "bench-secret-bench-secret-bench-secret")
queue = Queue(connection.client(os.environ["REDIS_URL"]),
              Keys(os.environ.get("QUEUE_PREFIX", "bench"), 1), RetryPolicy())


async def enqueue(request: Request) -> Response:
    auth = request.headers.get("authorization", "")
    try:
        uid = jwt.decode(auth.removeprefix("Bearer "), SECRET, algorithms=["HS256"])["sub"]
    except jwt.PyJWTError:
        return JSONResponse({"error": "unauthenticated"}, status_code=401)
    body = json.loads(await request.body())
    jid = uuid.uuid4().hex
    [placed] = await queue.enqueue(uid, [(jid, body["requestData"], None)], 10**9)
    return JSONResponse({"id": placed.job_id, "status": "QUEUED",
                         "requestData": body["requestData"], "attempts": 0})


app = Starlette(routes=[Route("/enqueue", enqueue, methods=["POST"])])
