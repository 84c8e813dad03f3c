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
MAX_OPERATION_NAMES = 100
MAX_NAME_CHARS = 64


class OperationNames:
    """The `operation` label: the first `limit` distinct names of operations that passed
    validation, cut to MAX_NAME_CHARS; any other name is "other", no name "anonymous".

    Every label value is a series that Prometheus keeps forever, and operation names
    are the client's to choose: 300 made-up names must not make 300 series.
    """

    def __init__(self, limit: int = MAX_OPERATION_NAMES):
        self.limit = limit
        self.known: set[str] = set()

    def label(self, name: str | None, validated: bool) -> str:
        if not name:
            return "anonymous"
        name = name[:MAX_NAME_CHARS]
        if name in self.known:
            return name
        if validated and len(self.known) < self.limit:
            self.known.add(name)
            return name
        return "other"


OPERATION_NAMES = OperationNames()


class OperationMetrics(SchemaExtension):
    """Count each operation with the contract code of its first error, or OK."""

    validated = False  # set when execution starts, which only a valid document reaches

    def on_execute(self) -> Iterator[None]:
        self.validated = True
        yield

    def on_operation(self) -> Iterator[None]:
        try:
            yield
        except GraphQLError as error:  # a hook refused the document (limits.DocumentLimits
            self._count(classify(error))  # parses in on_parse): strawberry answers it as an error
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
        name = OPERATION_NAMES.label(ctx.operation_name, self.validated)
        OPERATIONS.labels(name, op_type, code).inc()


async def sample_queue(queue: Queue) -> None:
    """Refresh the queue gauges from Redis, forever."""
    while True:
        try:
            shape = await queue.shape()
            head_wait = await queue.head_wait()
            # set together, after every read: a scrape between two reads would
            # pair a fresh queue_users_waiting with the last sample's wait
            USERS_WAITING.set(shape.users_waiting)
            JOBS_RUNNING.set(shape.running)
            ARCHIVE_BACKLOG.set(shape.archive_backlog)
            HEAD_WAIT.set(head_wait)
        except (RedisError, OSError) as exc:
            log.debug("metrics sample skipped: %s", exc)
        await asyncio.sleep(SAMPLE_SECONDS)
