"""A bad handler fails its own job, never the worker or another user's job.

Each test runs `python -m workers` with a handler that misbehaves on one
user's job (tests/handlers.py: `misbehaves`), beside another user's ordinary
jobs, and checks that only the guilty job pays: the innocent ones complete at
their first attempt and the worker process carries on (or, when hung threads
fill its pool, exits for its supervisor to restart it, handing nothing lost).
"""

from __future__ import annotations

import secrets
import signal

import httpx
import pytest

from tests.support import free_port, wait_until
from tests.test_logging import json_lines
from tests.test_workers import finished, item

SYNC, ASYNC = "tests.handlers:misbehaves", "tests.handlers:misbehaves_async"
EXIT_HUNG_HANDLERS = 75  # workers/worker.py: EX_TEMPFAIL, "restart me"


def assert_completed_first_time(client, ids: list[str]) -> None:
    jobs = [client.job(j) for j in ids]
    assert [(j["status"], j["attempts"], j["error"]) for j in jobs] == [
        ("COMPLETED", 1, None)] * len(ids), jobs


@pytest.mark.parametrize("handler, how, error", [
    (SYNC, "exit", "SystemExit"),
    (SYNC, "interrupt", "KeyboardInterrupt"),
    (SYNC, "cancelled", "CancelledError"),
    (ASYNC, "exit", "SystemExit"),
    (ASYNC, "exit 3", "SystemExit: 3"),
    (ASYNC, "interrupt", "KeyboardInterrupt"),
    (ASYNC, "generator exit", "GeneratorExit"),
    (ASYNC, "cancelled", "CancelledError"),
])
def test_a_handler_ending_the_process_fails_only_its_own_job(api, workers, handler, how, error):
    guilty, innocent = api.as_user(), api.as_user()
    doomed = guilty.enqueue(how)
    beside = [innocent.enqueue(item("b", i, sleep=0.05))["id"] for i in range(5)]
    proc = workers.start("--handler", handler, "--concurrency", "2")

    failed = wait_until(lambda: (j := guilty.job(doomed["id"]))["status"] == "FAILED" and j,
                        timeout=30, message="the guilty job to fail")
    assert failed["attempts"] == 3, failed  # QUEUE_MAX_ATTEMPTS, each one its own failure
    assert failed["error"] == error
    assert proc.poll() is None, "the worker process ended"

    # the same process goes on serving everyone else
    after = [innocent.enqueue(item("b", i, sleep=0))["id"] for i in range(5, 8)]
    wait_until(lambda: finished(innocent, beside + after), timeout=30)
    assert_completed_first_time(innocent, beside + after)
    assert proc.poll() is None, "the worker process ended"


def hung_threads(metrics_url: str) -> float | None:
    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("queue_worker_hung_threads "):
            return float(line.split()[1])
    return None


def test_a_hung_sync_handler_never_fails_another_users_job(api, workers):
    """Two threads. A's hang keeps one for good; B's jobs run on the other and
    complete. C's hang takes the last: the worker exits 75, B's waiting jobs
    stay queued, and the worker that replaces it completes them."""
    a, b, c = api.as_user(), api.as_user(), api.as_user()
    port = free_port()
    env = dict(QUEUE_JOB_TIMEOUT_SECONDS="0.5", QUEUE_MAX_ATTEMPTS="1", METRICS_PORT=str(port))
    a_job = a.enqueue("hang")
    b_ids = [b.enqueue(item("b", i, sleep=0.1))["id"] for i in range(5)]
    first = workers.start("--handler", SYNC, "--concurrency", "2", **env)

    failed = wait_until(lambda: (j := a.job(a_job["id"]))["status"] == "FAILED" and j)
    assert failed["error"] == "timed out after 0.5s"
    wait_until(lambda: hung_threads(f"http://127.0.0.1:{port}/metrics") == 1,
               message="the hung thread to be counted")
    wait_until(lambda: finished(b, b_ids), timeout=30)
    assert_completed_first_time(b, b_ids)

    c_job = c.enqueue("hang")
    b_ids += [b.enqueue(item("b", i, sleep=0.1))["id"] for i in range(5, 15)]
    assert first.wait(timeout=30) == EXIT_HUNG_HANDLERS
    assert c.job(c_job["id"])["error"] == "timed out after 0.5s"
    assert b.stats()["processing"] == 0, "B's job was handed back, not left under a lease"

    workers.start("--handler", SYNC, "--concurrency", "2", **env)  # as a supervisor does
    wait_until(lambda: finished(b, b_ids), timeout=30)
    assert_completed_first_time(b, b_ids)


def test_a_result_that_redis_cannot_store_fails_the_job_at_once(api, workers):
    cases = {  # what the handler does: the job's error
        "surrogate": "handler returned a string that is not valid UTF-8 "
                     "(surrogates not allowed at index 0)",
        "surrogate error": "ValueError: bad input \\ud800",
        "bytes": "handler returned bytes, not str",
        "none": "handler returned NoneType, not str",
    }
    users = {how: api.as_user() for how in cases}
    jobs = {how: client.enqueue(how)["id"] for how, client in users.items()}
    innocent = api.as_user()
    beside = [innocent.enqueue(item("b", i))["id"] for i in range(3)]
    # a lease longer than the test waits: a crashed slot would not be noticed in time
    proc = workers.start("--handler", SYNC, QUEUE_MAX_ATTEMPTS="1", QUEUE_LEASE_SECONDS="120")

    for how, client in users.items():
        failed = wait_until(lambda: (j := client.job(jobs[how]))["status"] == "FAILED" and j,
                            timeout=20, message=f"the {how!r} job to fail")
        assert failed["error"] == cases[how]
    wait_until(lambda: finished(innocent, beside))
    assert_completed_first_time(innocent, beside)
    assert proc.poll() is None


def test_the_worker_logs_the_error_type_never_its_text(api, workers, tmp_path):
    client = api.as_user()
    secret = "secret " + secrets.token_hex(8)
    job = client.enqueue(secret)["id"]
    workers.start("--handler", SYNC, QUEUE_MAX_ATTEMPTS="2", LOG_FORMAT="json", LOG_LEVEL="INFO")
    failed = wait_until(lambda: (j := client.job(job))["status"] == "FAILED" and j)
    assert secret in failed["error"], "the job's error keeps the message"
    proc = workers.procs[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0

    text = (tmp_path / "worker-0.log").read_text()
    assert secret.split()[1] not in text, "the handler's error text was logged"
    records = json_lines(text, "worker")
    failures = [r for r in records if r.get("job_id") == job and "failed" in r["msg"]]
    assert len(failures) == 2, records
    assert all("ValueError" in r["msg"] for r in failures), failures


def test_with_process_isolation_a_hung_or_dying_handler_costs_its_job_only(
        api, workers, tmp_path):
    """QUEUE_ISOLATION=process, one slot: a handler that hangs is killed at the
    timeout, one that kills its process fails its own job, and the worker, its
    one slot intact, goes on; the handler's log lines carry the job's ids."""
    cases = {  # what the handler does: the job's error
        "hang": "timed out after 1s",
        "die": "HandlerDied: the handler's process ended (exit code 3)",
        "kill": "HandlerDied: the handler's process ended (killed by SIGKILL)",
        "exit": "SystemExit",
        "surrogate": "handler returned a string that is not valid UTF-8 "
                     "(surrogates not allowed at index 0)",
        "two-part error": "TwoPartError: bad input",
    }
    users = {how: api.as_user() for how in cases}
    jobs = {how: client.enqueue(how)["id"] for how, client in users.items()}
    innocent = api.as_user()
    beside = [innocent.enqueue(item("b", i, sleep=0.05))["id"] for i in range(6)]
    logged = innocent.enqueue("log")["id"]
    proc = workers.start("--handler", SYNC, "--concurrency", "1", "--isolation", "process",
                         QUEUE_JOB_TIMEOUT_SECONDS="1", QUEUE_MAX_ATTEMPTS="2",
                         LOG_FORMAT="json", LOG_LEVEL="INFO")

    for how, client in users.items():
        failed = wait_until(lambda: (j := client.job(jobs[how]))["status"] == "FAILED" and j,
                            timeout=60, message=f"the {how!r} job to fail")
        assert (failed["attempts"], failed["error"]) == (2, cases[how])
    wait_until(lambda: finished(innocent, beside + [logged]), timeout=30)
    assert_completed_first_time(innocent, beside + [logged])
    assert proc.poll() is None, "the worker process ended"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    records = json_lines((tmp_path / "worker-0.log").read_text(), "worker")
    handled = [r for r in records if r["logger"] == "tests.handler"]
    assert [r.get("job_id") for r in handled] == [logged], records
    assert f"process {proc.pid}" not in handled[0]["msg"], "ran in the worker's own process"
