"""With no REDIS_URL, a worker uses the embedded Redis of an API started in the
same directory, and never starts a Redis of its own (CONTRACT §5a)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from tests.support import ROOT, Api, free_port, wait_until


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
