"""The queue's guarantees, with worker processes started as a user starts them.

Per-user order with no overlap, users in parallel, fairness, retries, timeouts,
crashes (kill -9), graceful shutdown, exactly one recorded outcome per job.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import defaultdict

import pytest

from tests.handlers import read_log
from tests.support import wait_until

HANDLER = "tests.handlers:record"


def item(user: str, i: int, **kw) -> str:
    return json.dumps({"u": user, "i": i, **kw})


def finished(api, ids) -> bool:
    return all(api.job(j)["status"] in ("COMPLETED", "FAILED", "CANCELLED") for j in ids)


def attempts_by_user(log: list[dict]) -> dict[str, list[dict]]:
    """Each user's attempts that ran to an end, as (start, end) intervals."""
    starts, spans = {}, defaultdict(list)
    for e in log:
        key = (e["u"], e["i"], e["pid"])
        if e["ev"] == "start":
            starts[key] = e["t"]
        elif key in starts:
            spans[e["u"]].append({"i": e["i"], "start": starts.pop(key), "end": e["t"]})
    return spans


def assert_no_overlap(spans: list[dict]) -> None:
    spans = sorted(spans, key=lambda s: s["start"])
    for before, after in zip(spans, spans[1:]):
        assert after["start"] >= before["end"], f"{after} started before {before} ended"


def test_each_user_runs_in_order_without_overlap_across_two_workers(
        api, workers, settings, redis_sync_client):
    users = {f"u{n}": api.as_user() for n in range(4)}
    ids = {name: [j["id"] for j in c.enqueue_many(
        [{"requestData": item(name, i, sleep=0.02)} for i in range(15)])]
        for name, c in users.items()}
    first = workers.start("--handler", HANDLER, "--concurrency", "2")
    workers.start("--handler", HANDLER, "--concurrency", "2")
    # halfway through, the first worker leaves; the second carries every queue on
    wait_until(lambda: sum(c.stats()["ready"] for c in users.values()) >= 20)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    for name, c in users.items():
        wait_until(lambda: finished(c, ids[name]), timeout=60)

    log = read_log(redis_sync_client, settings.queue_prefix)
    assert len({e["pid"] for e in log}) == 2, "both workers took part"
    spans = attempts_by_user(log)
    for name, c in users.items():
        starts = [e["i"] for e in log if e["ev"] == "start" and e["u"] == name]
        assert starts == list(range(15)), "a user's jobs start in enqueue order"
        assert_no_overlap(spans[name])
        results = [c.dequeue()["processedData"] for _ in range(15)]
        assert results == [f"done {name}-{i}" for i in range(15)], "dequeue in enqueue order"
        assert c.dequeue() is None


def test_different_users_run_at_the_same_time(api, workers, settings, redis_sync_client):
    users = {name: api.as_user() for name in ("ann", "ben")}
    ids = [c.enqueue(item(name, i, sleep=0.3))["id"] for name, c in users.items() for i in range(3)]
    workers.start("--handler", HANDLER, "--concurrency", "2")
    wait_until(lambda: finished(users["ann"], ids[:3]) and finished(users["ben"], ids[3:]),
               timeout=30)
    spans = attempts_by_user(read_log(redis_sync_client, settings.queue_prefix))
    overlapping = [
        (a, b) for a in spans["ann"] for b in spans["ben"]
        if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "ann's and ben's jobs ran side by side"
    for name in users:
        assert_no_overlap(spans[name])


def test_a_heavy_user_does_not_starve_a_light_one(api, workers, settings, redis_sync_client):
    heavy, light = api.as_user(), api.as_user()
    heavy.enqueue_many([{"requestData": item("heavy", i, sleep=0.01)} for i in range(300)])
    workers.start("--handler", HANDLER, "--concurrency", "1")
    wait_until(lambda: heavy.stats()["ready"] >= 5, timeout=30)  # the backlog is being worked
    mine = light.enqueue(item("light", 0))
    wait_until(lambda: light.job(mine["id"])["status"] == "COMPLETED", timeout=30)

    log = read_log(redis_sync_client, settings.queue_prefix)
    starts = [e for e in log if e["ev"] == "start"]
    light_at = next(n for n, e in enumerate(starts) if e["u"] == "light")
    enqueued_at = light.job(mine["id"])["createdAt"]
    from datetime import datetime

    t0 = datetime.fromisoformat(enqueued_at).timestamp()
    heavy_between = [e for e in starts[:light_at] if e["t"] > t0]
    assert len(heavy_between) <= 3, (
        f"{len(heavy_between)} heavy jobs started before the light user's first job")
    assert heavy.stats()["queued"] > 0, "the heavy backlog was still waiting"


def test_retries_then_success(api, workers, settings_factory):
    client = api.as_user()
    job = client.enqueue(item("r", 0, fail=2))
    workers.start("--handler", HANDLER)
    done = wait_until(lambda: (j := client.job(job["id"]))["status"] == "COMPLETED" and j)
    assert done["attempts"] == 3
    assert done["processedData"] == "done r-0"
    assert done["error"] is None


def test_retries_exhausted_then_failed_and_next_job_still_runs(api, workers):
    client = api.as_user()
    doomed = client.enqueue(item("f", 0, fail=99))
    after = client.enqueue(item("f", 1))
    workers.start("--handler", HANDLER)
    wait_until(lambda: client.job(after["id"])["status"] == "COMPLETED", timeout=30)
    failed = client.job(doomed["id"])
    assert failed["status"] == "FAILED"
    assert failed["attempts"] == 3  # QUEUE_MAX_ATTEMPTS
    assert "planned failure 3" in failed["error"]
    assert [client.dequeue()["id"], client.dequeue()["id"]] == [doomed["id"], after["id"]]


def test_a_job_past_its_timeout_fails(api, workers):
    client = api.as_user()
    job = client.enqueue("x")
    workers.start("--handler", "tests.handlers:never_returns",
                  QUEUE_JOB_TIMEOUT_SECONDS="0.3", QUEUE_MAX_ATTEMPTS="2")
    failed = wait_until(lambda: (j := client.job(job["id"]))["status"] == "FAILED" and j)
    assert failed["attempts"] == 2
    assert "timed out" in failed["error"]


def test_a_handler_returning_a_non_string_fails_the_attempt(api, workers):
    client = api.as_user()
    job = client.enqueue("x")
    workers.start("--handler", "tests.handlers:returns_number", QUEUE_MAX_ATTEMPTS="1")
    failed = wait_until(lambda: (j := client.job(job["id"]))["status"] == "FAILED" and j)
    assert "not str" in failed["error"]


def test_kill_9_mid_job_reruns_it_once_and_order_holds(
        api, workers, settings, redis_sync_client):
    client = api.as_user()
    ids = [client.enqueue(item("k", i, sleep=1.0 if i == 0 else 0))["id"] for i in range(4)]
    victim = workers.start("--handler", HANDLER)
    wait_until(lambda: client.job(ids[0])["status"] == "PROCESSING")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    workers.start("--handler", HANDLER)
    wait_until(lambda: finished(client, ids), timeout=60)

    jobs = [client.job(j) for j in ids]
    assert [j["status"] for j in jobs] == ["COMPLETED"] * 4
    assert jobs[0]["attempts"] == 2, "the lost lease counted as an attempt"
    log = read_log(redis_sync_client, settings.queue_prefix)
    ends = [e["i"] for e in log if e["ev"] == "end"]
    assert ends == [0, 1, 2, 3]
    assert_no_overlap(attempts_by_user(log)["k"])
    assert [client.dequeue()["id"] for _ in ids] == ids
    assert client.dequeue() is None


def test_chaos_killing_workers_loses_nothing_and_records_each_job_once(
        api, workers, settings, redis_sync_client):
    users = [api.as_user() for _ in range(6)]
    ids = {}
    for n, client in enumerate(users):
        batch = client.enqueue_many(
            [{"requestData": item(f"u{n}", i, sleep=random.choice([0, 0.01, 0.05]))}
             for i in range(50)])
        ids[n] = [j["id"] for j in batch]
    rng = random.Random(7)
    for _ in range(3):
        workers.start("--handler", HANDLER, "--concurrency", "3")
    # Six kills, one every 0.5 s from the start, whatever the machine's speed: the
    # backlog takes longer than that, so workers die holding jobs (checked below).
    workers.kill_and_replace(6, 0.5, rng, "--handler", HANDLER, "--concurrency", "3")
    for n, client in enumerate(users):
        wait_until(lambda: finished(client, ids[n]), timeout=60)
        outcomes = [client.job(j)["status"] for j in ids[n]]
        assert outcomes == ["COMPLETED"] * 50
        # exactly one recorded outcome per job: one event each, in enqueue order
        seen = [client.dequeue()["id"] for _ in range(50)]
        assert seen == ids[n]
        assert client.dequeue() is None
    attempts = [client.job(j)["attempts"] for n, client in enumerate(users) for j in ids[n]]
    assert max(attempts) >= 2, "no kill hit a running job: the chaos did not happen"
    log = read_log(redis_sync_client, settings.queue_prefix)
    spans = attempts_by_user(log)
    for n in ids:
        assert_no_overlap(spans[f"u{n}"])


def test_concurrent_dequeues_never_return_the_same_job_twice(api, workers):
    from concurrent.futures import ThreadPoolExecutor

    client = api.as_user()
    ids = [j["id"] for j in client.enqueue_many([{"requestData": str(i)} for i in range(40)])]
    result = workers.run_burst("--handler", "workers.handlers:echo")
    assert result.returncode == 0, result.stderr

    def drain():
        got = []
        while (job := client.dequeue()) is not None:
            got.append(job["id"])
        return got

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: drain(), range(8)))
    everything = [j for b in batches for j in b]
    assert sorted(everything) == sorted(ids)
    assert len(everything) == len(set(everything))


def test_burst_exits_when_done_and_results_are_visible(api, workers):
    client = api.as_user()
    ids = [client.enqueue(f"job {i}")["id"] for i in range(5)]
    result = workers.run_burst("--handler", "workers.handlers:upper")
    assert result.returncode == 0, result.stderr
    assert [client.job(j)["processedData"] for j in ids] == [f"JOB {i}" for i in range(5)]
    assert client.stats() == {"queued": 0, "processing": 0, "ready": 5}


async def test_idle_handler_threads_are_gone_once_the_pool_is_shut_down():
    """Idle handler threads are no reason for the hard exit kept for hung ones
    (workers/__main__.py): shutdown waits for them, so the process ends
    normally and its atexit handlers run (a bench's start log lost its last
    lines when they did not)."""
    import threading

    from workers.handlers import upper
    from workers.runners import HandlerThreads

    threads = HandlerThreads(4)
    outcomes = await asyncio.gather(*(threads.call(upper, f"job {i}", 5) for i in range(8)))
    assert [o.value for o in outcomes] == [f"JOB {i}" for i in range(8)]
    threads.shutdown()
    assert not [t for t in threading.enumerate() if t.name.startswith("handler")]


def test_sigterm_lets_the_running_job_finish_and_exits_0(api, workers):
    client = api.as_user()
    job = client.enqueue(item("t", 0, sleep=1.0))
    proc = workers.start("--handler", HANDLER)
    wait_until(lambda: client.job(job["id"])["status"] == "PROCESSING")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert client.job(job["id"])["status"] == "COMPLETED"


def test_sigterm_past_the_grace_period_hands_the_job_back(api, workers):
    client = api.as_user()
    job = client.enqueue(item("h", 0, sleep=30))
    proc = workers.start("--handler", HANDLER, QUEUE_SHUTDOWN_GRACE_SECONDS="0.2")
    wait_until(lambda: client.job(job["id"])["status"] == "PROCESSING")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    back = client.job(job["id"])
    assert back["status"] == "QUEUED"
    assert back["attempts"] == 0, "a handed-back attempt is not counted"
    assert client.stats()["queued"] == 1


def test_a_bad_handler_path_fails_at_start(workers):
    result = workers.run_burst("--handler", "no.such.module:fn", timeout=30)
    assert result.returncode != 0
    assert "no.such.module" in result.stderr


@pytest.mark.parametrize("handler", ["tests.handlers:record", "tests.handlers:record_async"])
def test_sync_and_async_handlers_both_work(api, workers, handler):
    client = api.as_user()
    job = client.enqueue(item("s", 0))
    assert workers.run_burst("--handler", handler).returncode == 0
    assert client.job(job["id"])["processedData"] == "done s-0"
