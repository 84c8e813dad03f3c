"""Building a worker from the settings: the one factory for `python -m workers`
and for the worker inside `python -m graph --dev`."""

from __future__ import annotations

import inspect

from engine import connection
from engine.queue import Queue
from engine.settings import QueueSettings

from .context import takes_job
from .loader import BadHandler, load_handler
from .runners import HandlerProcesses
from .worker import Worker, WorkerConfig


def create_worker(settings: QueueSettings, redis_url: str, *, burst: bool = False) -> Worker:
    """A worker as the settings describe it, with its own Redis connections
    (named, so CLIENT LIST tells the workers' connections from the API's).
    A handler that does not load raises BadHandler (a StartupError)."""
    handler = load_handler(settings.queue_handler)
    queue = Queue.from_settings(connection.client(redis_url, client_name="queue-worker"),
                                settings)
    config = WorkerConfig(
        concurrency=settings.queue_concurrency,
        lease_seconds=settings.queue_lease_seconds,
        job_timeout_seconds=settings.queue_job_timeout_seconds,
        shutdown_grace_seconds=settings.queue_shutdown_grace_seconds,
        burst=burst,
        recount_seconds=settings.queue_recount_seconds,
    )
    runner = None
    if settings.queue_isolation == "process" and not inspect.iscoroutinefunction(handler):
        if takes_job(handler):  # its reports would have to cross the process boundary
            raise BadHandler("QUEUE_ISOLATION=process runs handlers of one parameter only; "
                             "a handler that takes the job context runs with `thread`")
        runner = HandlerProcesses(settings.queue_concurrency, handler,
                                  settings.log_level, settings.log_format)
    return Worker(queue, handler, config, blocking_redis=connection.client(
        redis_url, client_name="queue-worker-wait"), runner=runner)
