"""The `userqueue` command (`python -m client`) run as a user runs it: subprocesses against a real API
process and a real worker, with the token kept in a file of the test's own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

import pytest

from tests.support import ROOT, wait_until

PASSWORD = "correct horse battery"


@pytest.fixture
def cli(api_process, tmp_path):
    token_file = tmp_path / "config" / "userqueue" / "token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("USERQUEUE_")}
    env.update(PYTHONPATH=str(ROOT), USERQUEUE_URL=f"{api_process.url}/graphql",
               USERQUEUE_TOKEN_FILE=str(token_file))

    def run(*args, input=None, timeout=60, **extra_env):
        return subprocess.run([sys.executable, "-m", "client", *args], input=input, check=False,
                              env={**env, **extra_env}, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)

    def popen(*args):
        return subprocess.Popen([sys.executable, "-m", "client", *args], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    run.popen = popen
    run.token_file = token_file
    run.env = env
    return run


def login(cli, username=None) -> str:
    username = username or f"cli_{uuid.uuid4().hex[:8]}"
    r = cli("register", username, "--password-stdin", "--login", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return username


def test_register_and_login_keep_the_token_in_a_0600_file(cli):
    username = login(cli)
    assert cli.token_file.exists()
    assert stat.S_IMODE(cli.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.token_file.parent.stat().st_mode) == 0o700
    token = cli.token_file.read_text().strip()
    assert token.count(".") == 2  # a JWT

    # logging in again rewrites it, still 0600; a token file path of one's own choice works
    other = cli.token_file.parent / "other-token"
    r = cli("--token-file", str(other), "login", username, "--password-stdin",
            input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
    assert PASSWORD not in r.stdout + r.stderr

    r = cli("stats", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"queued": 0, "processing": 0, "ready": 0}


def test_wrong_password_and_no_token_fail_with_the_code(cli):
    username = login(cli)
    r = cli("login", username, "--password-stdin", input="not the password\n")
    assert r.returncode == 1
    assert "UNAUTHENTICATED" in r.stderr

    cli.token_file.unlink()
    r = cli("stats")
    assert r.returncode == 1
    assert "not logged in" in r.stderr

    # no terminal and no --password-stdin: refuses instead of hanging
    r = cli("login", username, input="")
    assert r.returncode == 1
    assert "--password-stdin" in r.stderr


def test_enqueue_from_arguments_and_stdin_then_dequeue(cli, workers):
    login(cli)
    r = cli("enqueue", "one", "two")
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 2

    # stdin: one request per line, blank lines skipped, sent in batches of 2
    lines = [f"line {i}" for i in range(5)]
    r = cli("enqueue", "--batch", "2", "--json", input="\n".join(lines[:3]) + "\n\n"
            + "\n".join(lines[3:]) + "\n")
    assert r.returncode == 0, r.stderr
    jobs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [j["requestData"] for j in jobs] == lines
    assert {j["status"] for j in jobs} == {"QUEUED"}

    workers.start(QUEUE_HANDLER="workers.handlers:upper")
    r = cli("dequeue", "--wait", "20")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ONE\n"

    def rest():
        out = cli("dequeue", "--all", "--wait", "5", "--json")
        return out.stdout.splitlines()

    got = [json.loads(line) for line in rest()]
    while len(got) < 6:
        more = [json.loads(line) for line in rest()]
        assert more, f"only {len(got)} of 6 results came back"
        got += more
    assert [j["processedData"] for j in got] == ["TWO"] + [x.upper() for x in lines]
    assert [j["id"] for j in got] == ids[1:] + [j["id"] for j in jobs]

    r = cli("dequeue")
    assert r.returncode == 3 and r.stdout == ""


def test_enqueue_with_key_prefix_is_idempotent(cli):
    login(cli)
    first = cli("enqueue", "--key-prefix", "import-1-", input="a\nb\n")
    again = cli("enqueue", "--key-prefix", "import-1-", input="a\nb\n")
    assert first.returncode == again.returncode == 0
    assert first.stdout == again.stdout
    assert json.loads(cli("stats", "--json").stdout)["queued"] == 2


def test_enqueue_too_large_reports_the_error(cli, settings):
    login(cli)
    r = cli("enqueue", "x" * (settings.queue_max_payload_bytes + 1))
    assert r.returncode == 1
    assert "BAD_USER_INPUT" in r.stderr


def test_watch_prints_each_event_and_a_progress_line(cli, workers, api_process):
    login(cli)
    watch = cli.popen("watch", "--count", "3", "--json", "--progress", "--timeout", "60")
    try:
        # until it has subscribed: events before that would be missed without --after
        wait_until(lambda: api_process.subscriptions() >= 1, timeout=30)
        r = cli("enqueue", "a", "b", "c")
        assert r.returncode == 0, r.stderr
        workers.start(QUEUE_HANDLER="workers.handlers:upper")
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["job"]["processedData"] for e in events] == ["A", "B", "C"]
    assert all(e["cursor"] for e in events)
    assert "processed 3/3 (3 completed, 0 failed)" in err
    assert f"last cursor: {events[-1]['cursor']}" in err

    # resuming after the first cursor replays the two that followed it
    r = cli("watch", "--after", events[0]["cursor"], "--count", "2", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [line.split()[2:] for line in lines] == [["COMPLETED", "B"], ["COMPLETED", "C"]]
    assert "processed" not in r.stderr  # no progress line when stderr is not a terminal


def test_watch_draws_a_progress_bar_per_running_job(cli, workers, api_process):
    login(cli)
    watch = cli.popen("watch", "--count", "1", "--progress", "--timeout", "60")
    try:
        wait_until(lambda: api_process.subscriptions() >= 1, timeout=30)
        r = cli("enqueue", json.dumps({"steps": 10, "gap": 0.3}))
        assert r.returncode == 0, r.stderr
        workers.start(QUEUE_HANDLER="tests.handlers:progress_sync")
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    assert "COMPLETED" in out
    bars = [line for line in err.replace("\r", "\n").splitlines() if " [#" in line]
    assert bars, err
    assert any("attempt 1: step" in line and "%" in line for line in bars)


def test_watch_with_a_bad_token_exits_with_unauthenticated(cli):
    r = cli("watch", "--timeout", "10", USERQUEUE_TOKEN="not-a-token")
    assert r.returncode == 1
    assert "UNAUTHENTICATED" in r.stderr


def test_unreachable_server_is_a_clear_error(cli):
    r = cli("--url", "http://127.0.0.1:9/graphql", "register", "someone", "--password-stdin",
            input=PASSWORD + "\n")
    assert r.returncode == 1
    assert "cannot reach" in r.stderr
