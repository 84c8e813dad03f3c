"""Every setting of the service, read once from the environment and `.env`.

One object is built at start-up and passed down; nothing deeper reads the
environment. Names match the contract's table (`../shared/CONTRACT.md` §6).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .startup import StartupError

MIN_SECRET_BYTES = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    app_env: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"

    # stores
    mongo_uri: str | None = None
    mongo_db: str = "queue"
    redis_url: str | None = None
    # Redis Cluster: REDIS_URL names seed node(s), comma-separated; the same as a
    # `redis+cluster://` URL, to which the scheme is rewritten (engine/connection.py)
    redis_cluster: bool = False
    data_dir: str = ".queue"  # where the embedded Redis keeps its socket and files

    # accounts
    jwt_secret: str | None = None
    jwt_ttl_seconds: int = Field(3600, ge=1)
    jwt_leeway_seconds: float = Field(2.0, ge=0, le=2.0)
    login_max_failures: int = Field(10, ge=1)
    login_window_seconds: int = Field(900, ge=1)

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    http_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    graphiql: bool | None = None  # None: on in development, off in production
    graphql_introspection: bool = True
    graphql_max_depth: int = Field(15, ge=1)
    graphql_max_aliases: int = Field(30, ge=1)
    graphql_max_tokens: int = Field(5000, ge=10)
    graphql_max_fields: int = Field(2000, ge=1)  # fields selected, fragments expanded
    ws_max_message_bytes: int = Field(64 * 1024, ge=1024)
    ws_max_subscriptions: int = Field(10, ge=1)

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

    # accounts: floods of logins and registrations, and the client address
    auth_attempts_per_minute: int = Field(30, ge=0)  # logins + registrations per address; 0: off
    # argon2 runs at once per API process, 19 MiB each; default: the cores, at most 8
    auth_max_concurrent_hashes: int = Field(default_factory=lambda: min(os.cpu_count() or 1, 8),
                                            ge=1)
    auth_max_waiting_hashes: int = Field(16, ge=0)  # may wait for a slot; more: RATE_LIMITED
    # proxies whose X-Forwarded-For is believed (uvicorn's syntax: "10.0.0.1,10.1.0.0/16", "*");
    # empty: none, the client address is the connecting peer's
    forwarded_allow_ips: str = ""

    # connection lifetimes: idle, slow or unauthenticated clients (graph/__main__.py)
    ws_init_timeout_seconds: float = Field(10, gt=0)  # a WebSocket without connection_init
    http_keep_alive_seconds: int = Field(5, ge=1)  # an idle keep-alive connection
    http_header_timeout_seconds: float = Field(10, gt=0)  # a request's line and headers
    http_body_timeout_seconds: float = Field(30, gt=0)  # a request's whole body: 408 after
    http_max_connections: int = Field(10_000, ge=0)  # HTTP and WebSocket; over it: 503; 0: off

    # workers: where sync handlers run (workers/runners.py); `process` can kill a hung one
    queue_isolation: Literal["thread", "process"] = "thread"

    # operators (CONTRACT §9): per-user limits' defaults, the counters' self-healing
    queue_user_concurrency: int = Field(1, ge=1, le=100)  # a user's default concurrency
    # how often each worker recounts the shards' counters and backlog sets (recount.lua)
    queue_recount_seconds: float = Field(60, gt=0)

    @model_validator(mode="after")
    def _cluster_url(self) -> "Settings":
        if self.redis_cluster:
            if not self.redis_url:
                raise ValueError("REDIS_CLUSTER needs REDIS_URL (the embedded Redis is one node)")
            from .connection import as_cluster_url

            self.redis_url = as_cluster_url(self.redis_url)
        return self

    @model_validator(mode="after")
    def _production_is_strict(self) -> "Settings":
        if self.app_env == "production":
            if not self.jwt_secret or len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"JWT_SECRET must be set to at least {MIN_SECRET_BYTES} bytes "
                    "when APP_ENV=production"
                )
        return self

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def graphiql_enabled(self) -> bool:
        return (not self.production) if self.graphiql is None else self.graphiql


def load_settings(**overrides) -> Settings:
    """Build the settings, or a StartupError with one line naming what is wrong."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            lines.append(f"{where}: {err['msg']}".replace("Value error, ", ""))
        raise StartupError("invalid settings: " + "; ".join(lines)) from None
