"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import store

CHECK_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when MongoDB and Redis answer; 503 naming the parts that do not."""
    services = request.app.state.services
    checks = {"redis": services.redis.ping(), "mongodb": store.ping(services.mongo)}
    failing = []
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT)
        except Exception:
            failing.append(name)
    if failing:
        return JSONResponse({"status": "unavailable", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
