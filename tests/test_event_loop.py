"""The worker runs on uvloop when it is installed, and on asyncio's loop without it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import settings_env


@pytest.mark.parametrize("args, hide_uvloop, expected", [
    ((), False, "uvloop"),                    # the default: uvloop, installed here
    (("--loop", "asyncio"), False, "asyncio"),
    ((), True, "asyncio"),                    # uvloop not installed: asyncio's loop
])
def test_the_worker_runs_jobs_on_either_loop(api, settings, tmp_path, args, hide_uvloop,
                                             expected):
    client = api.as_user()
    ids = [j["id"] for j in client.enqueue_many([{"requestData": f"job {i}"} for i in range(5)])]
    env = settings_env(settings, LOG_LEVEL="INFO")
    if hide_uvloop:  # a uvloop that fails to import, ahead of the installed one
        (tmp_path / "uvloop.py").write_text("raise ImportError('not installed')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "workers", "--burst", *args,
                           "--handler", "workers.handlers:upper"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"event loop {expected}" in done.stderr + done.stdout
    assert [client.job(j)["processedData"] for j in ids] == [f"JOB {i}" for i in range(5)]


def test_asking_for_uvloop_where_it_is_missing_stops_the_start(settings, tmp_path):
    (tmp_path / "uvloop.py").write_text("raise ImportError('not installed')\n")
    env = settings_env(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    done = subprocess.run([sys.executable, "-m", "workers", "--burst", "--loop", "uvloop"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "uvloop is not installed" in done.stderr
