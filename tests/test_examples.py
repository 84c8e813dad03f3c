"""The example clients in examples/, run as their READMEs say, against a real
API process and a real worker.

The Node listener needs `node` (18 or later) and its packages:
`cd examples && npm ci` (.ci/run does it). Without them it is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid


from tests.support import ROOT, node_or_skip, wait_until

EXAMPLES = ROOT / "examples"
PASSWORD = "correct horse battery"


def example_env(api_process, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERQUEUE_")}
    env.update(USERQUEUE_URL=f"{api_process.url}/graphql", **extra)
    return env


def test_python_client_logs_in_enqueues_and_hears_each_result(api_process, workers):
    workers.start(QUEUE_HANDLER="workers.handlers:upper")
    username = f"py_{uuid.uuid4().hex[:8]}"
    env = example_env(api_process, USERQUEUE_USERNAME=username, USERQUEUE_PASSWORD=PASSWORD)
    cmd = [sys.executable, str(EXAMPLES / "python_client.py"), "--timeout", "60",
           "alpha", "beta", "gamma"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"registered {username}"
    assert sum(line.startswith("enqueued ") for line in lines) == 3
    processed = [line.split() for line in lines if line.startswith("processed ")]
    assert [p[2:4] for p in processed] == [["COMPLETED", "'ALPHA'"], ["COMPLETED", "'BETA'"],
                                           ["COMPLETED", "'GAMMA'"]]

    # run again as the same (now existing) user: it logs in, and skips the old events
    again = subprocess.run(cmd[:-3] + ["delta"], env=env, capture_output=True, text=True,
                           timeout=90, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "registered" not in again.stdout
    assert [line.split()[2:4] for line in again.stdout.splitlines()
            if line.startswith("processed ")] == [["COMPLETED", "'DELTA'"]]


def _node_or_skip() -> str:
    return node_or_skip(EXAMPLES, "graphql-ws", "the Node example")


def test_node_listener_prints_n_events_then_exits(api_process, workers):
    node = _node_or_skip()
    api = api_process.client().as_user(password=PASSWORD)
    listener = subprocess.Popen(
        [node, "node_listener.mjs", "--count", "3", "--timeout", "60"], cwd=EXAMPLES,
        env=example_env(api_process, USERQUEUE_TOKEN=api.token),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # until it has subscribed (live events only: no --after)
        wait_until(lambda: api_process.subscriptions() >= 1 or listener.poll() is not None,
                   timeout=30)
        assert listener.poll() is None, listener.communicate()
        ids = [api.enqueue(f"n{i}")["id"] for i in range(4)]
        workers.start(QUEUE_HANDLER="workers.handlers:upper")
        out, err = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert listener.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["job"]["id"] for e in events] == ids[:3]  # three events, in order, then it exited
    assert [e["job"]["processedData"] for e in events] == ["N0", "N1", "N2"]
    assert f"last cursor {events[-1]['cursor']}" in err

    # --after: replays what followed the first event (N1, N2, N3), then exits
    replay = subprocess.run(
        [node, "node_listener.mjs", "--count", "3", "--after", events[0]["cursor"],
         "--timeout", "60"], cwd=EXAMPLES,
        env=example_env(api_process, USERQUEUE_USERNAME="unused", USERQUEUE_TOKEN=api.token),
        capture_output=True, text=True, timeout=90, check=False)
    assert replay.returncode == 0, replay.stderr
    assert [json.loads(line)["job"]["processedData"] for line in replay.stdout.splitlines()] == [
        "N1", "N2", "N3"]


def test_node_listener_refused_token_exits_non_zero(api_process):
    node = _node_or_skip()
    r = subprocess.run([node, "node_listener.mjs", "--count", "1", "--timeout", "20"],
                       cwd=EXAMPLES, env=example_env(api_process, USERQUEUE_TOKEN="forged"),
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1
    assert "error:" in r.stderr


def run_progress_job_while_following(api_process, workers, follower):
    """Start the progress example's worker once `follower` is subscribed (so it
    hears every update), and wait for the follower's output."""
    try:
        wait_until(lambda: api_process.subscriptions() >= 1, timeout=30)
        workers.start(QUEUE_HANDLER="examples.progress_handler:count_words",
                      EXAMPLE_STEP_SECONDS="0.15")
        return follower.communicate(timeout=90)
    finally:
        if follower.poll() is None:
            follower.kill()


def test_python_client_follows_a_jobs_progress(api_process, workers):
    username = f"py_{uuid.uuid4().hex[:8]}"
    env = example_env(api_process, USERQUEUE_USERNAME=username, USERQUEUE_PASSWORD=PASSWORD)
    follower = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "python_client.py"), "--timeout", "60", "--follow",
         "one two three four"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    out, err = run_progress_job_while_following(api_process, workers, follower)
    assert follower.returncode == 0, out + err
    kinds = [line.split()[0] for line in out.splitlines()
             if line.split()[0] in ("QUEUED", "STARTED", "PROGRESS", "COMPLETED")]
    assert kinds == ["QUEUED", "STARTED"] + ["PROGRESS"] * 4 + ["COMPLETED"]
    assert "[####################] 100% word 4 of 4" in out
    assert "'4 words'" in out.splitlines()[-1]


def test_node_job_updates_follows_a_job_to_its_end_and_resumes(api_process, workers):
    node = _node_or_skip()
    api = api_process.client().as_user(password=PASSWORD)
    job_id = api.enqueue("a b c")["id"]
    env = example_env(api_process, USERQUEUE_TOKEN=api.token)
    cmd = [node, "node_job_updates.mjs", "--id", job_id, "--timeout", "60"]
    follower = subprocess.Popen(cmd, cwd=EXAMPLES, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    out, err = run_progress_job_while_following(api_process, workers, follower)
    assert follower.returncode == 0, err
    updates = [json.loads(line) for line in out.splitlines()]
    assert [u["kind"] for u in updates] == [
        "QUEUED", "STARTED", "PROGRESS", "PROGRESS", "PROGRESS", "COMPLETED"]
    assert updates[-1]["job"]["processedData"] == "3 words"
    assert "100% word 3 of 3" in err
    # the whole story again, from the first update's cursor on: an exact replay
    replay = subprocess.run([*cmd, "--after", updates[0]["cursor"]], cwd=EXAMPLES, env=env,
                            capture_output=True, text=True, timeout=90)
    assert replay.returncode == 0, replay.stderr
    assert [json.loads(line) for line in replay.stdout.splitlines()] == updates[1:]
