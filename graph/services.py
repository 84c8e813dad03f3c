"""Everything a request needs, opened once at start-up and closed at exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from engine import connection
from engine.loop import cancel_and_wait
from engine.queue import Queue

from .settings import Settings
from . import store
from .http import metrics
from .accounts import Accounts
from .archiver import Archiver
from .auth import Tokens
from .live.events import EventHub
from .live.fanout import Renderings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    redis: Redis
    redis_url: str
    queue: Queue
    hub: EventHub
    accounts: Accounts
    archiver: Archiver
    mongo: Any
    renderings: Renderings = field(default_factory=Renderings)  # shared by listeners


@contextlib.asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with contextlib.AsyncExitStack() as stack:
        url = settings.redis_url
        if not url:
            url, embedded = connection.start_embedded(settings.data_dir)
            stack.callback(embedded.stop)
        # named, so CLIENT LIST tells the API's connections from the workers'
        redis = connection.client(url, client_name="queue-api")
        stack.push_async_callback(redis.aclose)
        blocking = connection.client(url, client_name="queue-api-events")
        stack.push_async_callback(blocking.aclose)

        mongo = await store.open_store(settings.mongo_uri, settings.mongo_db)
        stack.callback(mongo.close)

        queue = Queue.from_settings(redis, settings)
        hub = EventHub(queue, blocking)
        await hub.start()
        stack.push_async_callback(hub.stop)

        archiver = Archiver(queue, settings.queue_result_ttl_seconds,
                            settings.queue_finished_retention_seconds)
        hub.on_event(archiver.wake)
        archiver.start()
        stack.push_async_callback(archiver.stop)

        sampler = asyncio.create_task(metrics.sample_queue(queue))
        stack.push_async_callback(cancel_and_wait, sampler)

        tokens = Tokens(settings.jwt_secret, settings.jwt_ttl_seconds, settings.jwt_leeway_seconds)
        accounts = Accounts(tokens, queue, settings)
        yield Services(settings, redis, url, queue, hub, accounts, archiver, mongo)
