"""`python -m workers --processes N`: a supervisor and its worker processes, for real.

N children share the work; a child killed with kill -9 is replaced and its job
runs again elsewhere; SIGTERM stops the children gracefully (running jobs are
handed back) and the supervisor exits 0. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

from tests.handlers import read_log
from tests.support import settings_env, wait_until

HANDLER = "tests.handlers:record"


def item(user: str, i: int, **kw) -> str:
    return json.dumps({"u": user, "i": i, **kw})


def finished(api, ids) -> bool:
    return all(api.job(j)["status"] in ("COMPLETED", "FAILED", "CANCELLED") for j in ids)


@pytest.fixture
def supervised(settings, tmp_path):
    """Start `python -m workers --processes ...`; stopped (SIGTERM, then kill) at the end."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, **env) -> subprocess.Popen:
        log = open(tmp_path / f"supervisor-{len(procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "workers", *args],
                                env=settings_env(settings, **env), cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            children = psutil.Process(proc.pid).children()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for child in children:
                    child.kill()
                proc.kill()
                proc.wait()


def children(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children()


def test_n_children_share_the_work_and_sigterm_exits_0(api, supervised, settings,
                                                       redis_sync_client):
    users = [api.as_user() for _ in range(4)]
    ids = [j["id"] for n, u in enumerate(users)
           for j in u.enqueue_many([{"requestData": item(f"u{n}", i, sleep=0.05)}
                                    for i in range(10)])]
    sup = supervised("--processes", "2", "--handler", HANDLER, "--concurrency", "2")
    wait_until(lambda: len(children(sup)) == 2, message="two worker processes")
    wait_until(lambda: all(finished(u, ids[n * 10:(n + 1) * 10]) for n, u in enumerate(users)),
               timeout=60)
    log = read_log(redis_sync_client, settings.queue_prefix)
    pids = {e["pid"] for e in log if e["ev"] == "end"}
    assert pids == {c.pid for c in children(sup)}, "both children ran jobs"
    assert sorted((e["u"], e["i"]) for e in log if e["ev"] == "end") == sorted(
        (f"u{n}", i) for n in range(4) for i in range(10)), "each job ran once"

    kids = children(sup)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)


def test_a_child_killed_with_kill_9_is_replaced_and_no_job_is_lost(
        api, supervised, settings, redis_sync_client):
    client = api.as_user()
    ids = [j["id"] for j in client.enqueue_many(
        [{"requestData": item("k", i, sleep=1.0 if i == 0 else 0.02)} for i in range(20)])]
    sup = supervised("--processes", "2", "--handler", HANDLER)
    wait_until(lambda: client.job(ids[0])["status"] == "PROCESSING")
    running = wait_until(lambda: [e["pid"] for e in read_log(redis_sync_client,
                                                             settings.queue_prefix)])[0]
    before = {c.pid for c in children(sup)}
    assert running in before
    psutil.Process(running).kill()  # kill -9 the child that holds job 0

    wait_until(lambda: len(set(c.pid for c in children(sup)) - before) == 1
               and len(children(sup)) == 2, message="a new child in the dead one's place")
    wait_until(lambda: finished(client, ids), timeout=60)
    jobs = [client.job(j) for j in ids]
    assert [j["status"] for j in jobs] == ["COMPLETED"] * 20
    assert jobs[0]["attempts"] == 2, "the killed child's lease ran out; job 0 ran again"
    assert [client.dequeue()["id"] for _ in ids] == ids, "one outcome per job, in order"
    assert client.dequeue() is None
    assert sup.poll() is None, "the supervisor itself keeps running"


def test_sigterm_hands_running_jobs_back_and_exits_0(api, supervised):
    clients = [api.as_user() for _ in range(2)]
    jobs = [c.enqueue(item(f"h{n}", 0, sleep=30))["id"] for n, c in enumerate(clients)]
    sup = supervised("--processes", "2", "--handler", HANDLER,
                     QUEUE_SHUTDOWN_GRACE_SECONDS="0.2")
    wait_until(lambda: all(c.job(j)["status"] == "PROCESSING" for c, j in zip(clients, jobs)))
    kids = children(sup)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=30) == 0
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)
    for client, jid in zip(clients, jobs):
        back = client.job(jid)
        assert (back["status"], back["attempts"]) == ("QUEUED", 0), "handed back, not lost"


def test_a_handler_that_does_not_load_stops_the_start_with_one_line(settings, tmp_path):
    done = subprocess.run([sys.executable, "-m", "workers", "--processes", "2",
                           "--handler", "no.such.module:fn"], env=settings_env(settings),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "no.such.module" in done.stderr


def test_burst_children_end_and_the_supervisor_exits_0(api, settings, tmp_path):
    client = api.as_user()
    ids = [j["id"] for j in client.enqueue_many([{"requestData": str(i)} for i in range(10)])]
    done = subprocess.run([sys.executable, "-m", "workers", "--processes", "2", "--burst",
                           "--handler", "workers.handlers:upper"], env=settings_env(settings),
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [client.job(j)["status"] for j in ids] == ["COMPLETED"] * 10
