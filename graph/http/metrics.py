"""The API's Prometheus metrics (served at /metrics).

Workers count their own attempts (see workers/metrics.py, on METRICS_PORT);
the queue's shape (waiting users, running jobs, archive backlog) is read
from Redis here every few seconds, so any one API process can report it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from graphql import GraphQLError
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError
from strawberry.extensions import SchemaExtension

from engine.queue import Queue

from ..errors import classify

log = logging.getLogger(__name__)

OPERATIONS = Counter(
    "graphql_operations_total", "GraphQL operations by name, type and outcome code",
    ["operation", "type", "code"],
)
ENQUEUED = Counter("queue_jobs_enqueued_total", "Jobs created by enqueue and enqueueMany")
SUBSCRIPTIONS = Gauge("graphql_active_subscriptions", "Live `processed` subscriptions")
CATCH_UPS = Counter("graphql_subscription_catch_ups_total",
                    "Times a `processed` listener fell behind (full buffer) and caught up "
                    "from its user's stream")
USERS_WAITING = Gauge("queue_users_waiting", "Users with jobs waiting (in rotation or back-off)")
JOBS_RUNNING = Gauge("queue_jobs_running", "Jobs held under a lease by a worker")
ARCHIVE_BACKLOG = Gauge("queue_archive_backlog", "Job changes not yet stored in MongoDB")
HEAD_WAIT = Gauge("queue_next_job_wait_seconds",
                  "How long the job that runs next (head of the rotation) has waited")

SAMPLE_SECONDS = 5.0


class OperationMetrics(SchemaExtension):
    """Count each operation with the contract code of its first error, or OK."""

    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except GraphQLError as error:  # a hook refused the document (ParserCache parses
            self._count(classify(error))  # in on_parse): strawberry answers it as an error
            raise
        errors = getattr(self.execution_context.result, "errors", None) or []
        code = "OK"
        if errors:
            code = (errors[0].extensions or {}).get("code", "INTERNAL_SERVER_ERROR")
        self._count(code)

    def _count(self, code: str) -> None:
        ctx = self.execution_context
        try:
            op_type = ctx.operation_type.value
        except RuntimeError:  # the document did not parse: there is no operation
            op_type = "unknown"
        OPERATIONS.labels(ctx.operation_name or "anonymous", op_type, code).inc()


async def sample_queue(queue: Queue) -> None:
    """Refresh the queue gauges from Redis, forever."""
    while True:
        try:
            shape = await queue.shape()
            USERS_WAITING.set(shape.users_waiting)
            JOBS_RUNNING.set(shape.running)
            ARCHIVE_BACKLOG.set(shape.archive_backlog)
            HEAD_WAIT.set(await queue.head_wait())
        except (RedisError, OSError) as exc:
            log.debug("metrics sample skipped: %s", exc)
        await asyncio.sleep(SAMPLE_SECONDS)
