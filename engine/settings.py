"""The settings every process reads: Redis, the queue, logs.

Workers need these only (they hold no secret and never see MongoDB); the API
adds its own in graph/settings.py. One object is built at start-up and passed
down; nothing deeper reads the environment. Names match the contract's table
(`../shared/CONTRACT.md` §6).
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .startup import StartupError

MIN_SECRET_BYTES = 32


class QueueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    app_env: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"

    # Only the API signs tokens, but CONTRACT §5a has every process refuse to start in
    # production without a strong one, workers included: so it is checked here.
    jwt_secret: str | None = None

    # Redis
    redis_url: str | None = None
    # Redis Cluster: REDIS_URL names seed node(s), comma-separated; the same as a
    # `redis+cluster://` URL, to which the scheme is rewritten (engine/connection.py)
    redis_cluster: bool = False
    data_dir: str = ".queue"  # where the embedded Redis keeps its socket and files

    # queue
    queue_prefix: str = "q"  # key namespace in Redis; lets tests and tenants share a server
    queue_shards: int = Field(1, ge=1, le=1024)
    queue_handler: str = "workers.handlers:echo"
    queue_concurrency: int = Field(10, ge=1, le=10_000)
    queue_max_attempts: int = Field(3, ge=1)
    queue_retry_base_seconds: float = Field(1.0, ge=0)
    queue_job_timeout_seconds: float = Field(30, gt=0)
    queue_lease_seconds: float = Field(30, ge=1)
    queue_shutdown_grace_seconds: float = Field(20, ge=0)
    queue_max_payload_bytes: int = Field(65536, ge=1)
    queue_max_pending: int = Field(10000, ge=1)
    queue_max_batch: int = Field(1000, ge=1)
    queue_enqueue_rate_per_minute: int = Field(0, ge=0)  # 0: no per-user rate limit
    queue_events_keep: int = Field(1000, ge=1000)  # per-user events kept for replay
    queue_result_ttl_seconds: int = Field(7 * 86400, ge=60)  # finished, not yet dequeued
    queue_finished_retention_seconds: int = Field(3600, ge=0)  # after dequeue and archive

    metrics_port: int | None = None  # a worker's own /metrics port; unset: none

    # Redis memory bounds (CONTRACT §10; docs/operations.md, "Redis memory per user")
    queue_max_ready: int = Field(10000, ge=1)  # finished jobs of a user waiting for dequeue
    queue_shard_events_keep: int = Field(10000, ge=100)  # entries of the stream the API tails
    # job bodies up to this size ride in that stream; larger ones are read from the
    # user's own stream
    queue_event_inline_bytes: int = Field(1024, ge=0, le=65536)

    # workers: where sync handlers run (workers/runners.py); `process` can kill a hung one
    queue_isolation: Literal["thread", "process"] = "thread"

    # operators (CONTRACT §9): per-user limits' defaults, the counters' self-healing
    queue_user_concurrency: int = Field(1, ge=1, le=100)  # a user's default concurrency
    # how far ahead an enqueue's runAt may be (CONTRACT §7); 30 days
    queue_max_delay_seconds: int = Field(30 * 86400, ge=1)
    # how often each worker recounts the shards' counters and backlog sets (recount.lua)
    queue_recount_seconds: float = Field(60, gt=0)

    @model_validator(mode="after")
    def _cluster_url(self) -> "QueueSettings":
        if self.redis_cluster:
            if not self.redis_url:
                raise ValueError("REDIS_CLUSTER needs REDIS_URL (the embedded Redis is one node)")
            from .connection import as_cluster_url

            self.redis_url = as_cluster_url(self.redis_url)
        return self

    @model_validator(mode="after")
    def _production_has_a_secret(self) -> "QueueSettings":
        if self.production and len((self.jwt_secret or "").encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"JWT_SECRET must be set to at least {MIN_SECRET_BYTES} bytes "
                "when APP_ENV=production"
            )
        return self

    @property
    def production(self) -> bool:
        return self.app_env == "production"


S = TypeVar("S", bound=QueueSettings)


def load_settings(cls: type[S] = QueueSettings, **overrides) -> S:
    """Build the settings, or a StartupError with one line naming what is wrong."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"{where}: {err['msg']}".replace("Value error, ", ""))
        raise StartupError("invalid settings: " + "; ".join(lines)) from None
