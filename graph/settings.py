"""The API's settings: the shared ones (engine/settings.py) and what only the
API uses: MongoDB, tokens, HTTP and GraphQL limits, accounts, operators."""

from __future__ import annotations

import os

from pydantic import Field, model_validator

from engine.settings import QueueSettings

MIN_ADMIN_PASSWORD = 12  # characters, for ADMIN_PASSWORD when APP_ENV=production


class Settings(QueueSettings):
    # stores
    mongo_uri: str | None = None
    mongo_db: str = "queue"

    # accounts
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

    # operators (CONTRACT §9): the account made ADMIN at API start (graph/accounts.py
    # bootstrap_admin), and the /admin dashboard
    admin_username: str | None = None
    admin_password: str | None = None  # creates the account if missing; never changes it
    admin_dashboard: bool = True

    # GraphQL documents and results (graph/http/limits.py)
    graphql_max_fragments: int = Field(100, ge=1)  # fragment definitions, and spreads, per document
    graphql_max_cost: int = Field(3000, ge=1)  # fields times list sizes, see graph/http/limits.py
    http_max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # one GraphQL answer by HTTP

    @model_validator(mode="after")
    def _production_is_strict(self) -> "Settings":
        if self.app_env == "production":
            if self.admin_username and len(self.admin_password or "") < MIN_ADMIN_PASSWORD:
                raise ValueError(
                    f"ADMIN_PASSWORD must be set to at least {MIN_ADMIN_PASSWORD} characters "
                    "when ADMIN_USERNAME is set and APP_ENV=production"
                )
        return self

    @property
    def graphiql_enabled(self) -> bool:
        return (not self.production) if self.graphiql is None else self.graphiql
