"""The ASGI application: GraphQL over HTTP and WebSocket, health, metrics."""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute


from .accounts import check_admin_settings
from .http import admin, graphiql, health
from .settings import Settings
from .http.fastroute import GraphQLPost
from .http.middleware import SizeLimits
from .http.requestid import RequestId
from .schema import build_schema
from .services import open_services
from .http.view import GraphQLView

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, dev_worker: bool = False) -> Starlette:
    check_admin_settings(settings)  # a bad ADMIN_USERNAME stops the start in one line
    graphql = GraphQLView(
        build_schema(settings),
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        max_subscriptions_per_connection=settings.ws_max_subscriptions,
        connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async with open_services(settings) as services:
            app.state.services = services
            await services.accounts.bootstrap_admin(settings.admin_username,
                                                    settings.admin_password)
            async with contextlib.AsyncExitStack() as stack:
                if dev_worker:
                    await stack.enter_async_context(_dev_worker(settings, services.redis_url))
                log.info("ready: http://%s:%s/graphql", settings.host, settings.port)
                yield

    return Api(
        graphql, settings.http_max_body_bytes,
        routes=[
            Route("/graphql", graphql),  # the view answers other methods with a JSON 405
            WebSocketRoute("/graphql", graphql),
            Route("/healthz", health.healthz),
            Route("/readyz", health.readyz),
            Route("/metrics", health.metrics),
            graphiql.asset_route(),
            *admin.routes(settings),  # the operators' dashboard at /admin
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(RequestId),  # X-Request-ID, and request_id in every log line
            # body and WebSocket message sizes, checked before anything parses them
            Middleware(SizeLimits, max_body_bytes=settings.http_max_body_bytes,
                       max_ws_message_bytes=settings.ws_max_message_bytes),
        ],
    )


class Api(Starlette):
    """Starlette, with a POST of a known document answered in front of all its
    layers (graph/http/fastroute.py), before its own error middleware."""

    def __init__(self, view: GraphQLView, max_body_bytes: int, **kwargs):
        self.view, self.max_body_bytes = view, max_body_bytes
        super().__init__(**kwargs)

    def build_middleware_stack(self):
        return GraphQLPost(super().build_middleware_stack(), self.view, self.max_body_bytes)


@contextlib.asynccontextmanager
async def _dev_worker(settings: Settings, redis_url: str):
    """`--dev`: a worker inside the API process, for trying the service out."""
    import asyncio

    from workers.app import create_worker

    worker = create_worker(settings, redis_url)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await task
        await worker.queue.redis.aclose()
        await worker.blocking_redis.aclose()
