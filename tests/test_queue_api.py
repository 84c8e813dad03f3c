"""The queue's mutations and queries as a client uses them (CONTRACT §4)."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from starlette.testclient import TestClient

from graph.app import create_app
from tests.support import Api, GraphQLError, WorkerProcesses, wait_until


@pytest.fixture
def alice(api):
    return api.as_user()


@pytest.fixture
def user_of():
    """user_of(settings): a fresh user of an app built with those settings (its
    lifespan runs until the test ends)."""
    with contextlib.ExitStack() as apps:
        yield lambda settings: Api(apps.enter_context(TestClient(create_app(settings)))).as_user()


def test_enqueue_returns_the_stored_job_queued(alice):
    job = alice.enqueue("hello")
    assert job["status"] == "QUEUED"
    assert job["requestData"] == "hello"
    assert job["attempts"] == 0
    assert job["createdAt"].endswith("+00:00")
    assert alice.job(job["id"]) == job
    assert alice.stats() == {"queued": 1, "processing": 0, "ready": 0}


def test_jobs_are_listed_newest_first_in_relay_pages(alice):
    ids = [alice.enqueue(f"job {i}")["id"] for i in range(5)]
    q = "query($a:String){jobs(first:2, after:$a){edges{cursor node{id}} pageInfo{hasNextPage endCursor}}}"
    seen, after = [], None
    while True:
        page = alice.call(q, {"a": after})["jobs"]
        seen += [e["node"]["id"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ids[::-1]


def test_jobs_filter_by_status(alice):
    first = alice.enqueue("a")
    alice.enqueue("b")
    alice.cancel(first["id"])
    q = "query($s:JobStatus){jobs(status:$s){edges{node{id status}}}}"
    cancelled = alice.call(q, {"s": "CANCELLED"})["jobs"]["edges"]
    assert [e["node"]["id"] for e in cancelled] == [first["id"]]
    queued = alice.call(q, {"s": "QUEUED"})["jobs"]["edges"]
    assert [e["node"]["status"] for e in queued] == ["QUEUED"]


def test_a_malformed_page_cursor_is_bad_user_input(alice):
    with pytest.raises(GraphQLError) as err:
        alice.call('{jobs(after:"not a cursor"){edges{cursor}}}')
    assert err.value.code == "BAD_USER_INPUT"


def test_payload_over_the_limit_is_refused_and_nothing_is_stored(user_of, settings_factory):
    client = user_of(settings_factory(queue_max_payload_bytes=10))
    client.enqueue("é" * 5)  # 10 bytes in UTF-8: at the limit
    with pytest.raises(GraphQLError) as err:
        client.enqueue("é" * 5 + "x")
    assert err.value.code == "BAD_USER_INPUT"
    assert client.stats()["queued"] == 1


def test_a_full_queue_refuses_with_queue_full(user_of, settings_factory):
    client = user_of(settings_factory(queue_max_pending=3))
    for i in range(3):
        client.enqueue(str(i))
    with pytest.raises(GraphQLError) as err:
        client.enqueue("one too many")
    assert err.value.code == "QUEUE_FULL"
    # enqueueMany is all or none, naming the item that did not fit
    client.cancel(client.call("{jobs(first:1){edges{node{id}}}}")["jobs"]["edges"][0]["node"]["id"])
    with pytest.raises(GraphQLError) as err:
        client.enqueue_many([{"requestData": "x"}, {"requestData": "y"}])
    assert err.value.code == "QUEUE_FULL"
    assert err.value.errors[0]["extensions"]["index"] == 1
    assert client.stats()["queued"] == 2


def test_the_same_idempotency_key_returns_the_first_job(alice):
    first = alice.enqueue("once", key="order-17")
    again = alice.enqueue("other data", key="order-17")
    assert again["id"] == first["id"]
    assert again["requestData"] == "once", "the first job, unchanged"
    assert alice.stats()["queued"] == 1


def test_idempotency_keys_are_per_user(api):
    a, b = api.as_user(), api.as_user()
    assert a.enqueue("x", key="k")["id"] != b.enqueue("x", key="k")["id"]


def test_enqueue_many_keeps_order_and_honours_keys(alice):
    earlier = alice.enqueue("earlier", key="k1")
    jobs = alice.enqueue_many([
        {"requestData": "a"},
        {"requestData": "dup", "idempotencyKey": "k1"},
        {"requestData": "b", "idempotencyKey": "k2"},
        {"requestData": "b again", "idempotencyKey": "k2"},
    ])
    assert [j["requestData"] for j in jobs] == ["a", "earlier", "b", "b"]
    assert jobs[1]["id"] == earlier["id"]
    assert jobs[2]["id"] == jobs[3]["id"]
    assert alice.stats()["queued"] == 3


def test_enqueue_many_with_one_bad_item_stores_nothing(user_of, settings_factory):
    client = user_of(settings_factory(queue_max_payload_bytes=5))
    with pytest.raises(GraphQLError) as err:
        client.enqueue_many([{"requestData": "ok"}, {"requestData": "too long"}])
    assert err.value.code == "BAD_USER_INPUT"
    assert err.value.errors[0]["extensions"]["index"] == 1
    assert client.stats()["queued"] == 0


def test_enqueue_many_over_the_batch_limit_is_refused(user_of, settings_factory):
    client = user_of(settings_factory(queue_max_batch=2))
    with pytest.raises(GraphQLError) as err:
        client.enqueue_many([{"requestData": str(i)} for i in range(3)])
    assert err.value.code == "BAD_USER_INPUT"


def test_cancel_a_queued_job(alice, workers):
    a, b, c = (alice.enqueue(x)["id"] for x in "abc")
    cancelled = alice.cancel(b)
    assert cancelled["status"] == "CANCELLED"
    with pytest.raises(GraphQLError) as err:
        alice.cancel(b)
    assert err.value.code == "CONFLICT"
    assert workers.run_burst("--handler", "workers.handlers:upper").returncode == 0
    assert [alice.dequeue()["id"], alice.dequeue()["id"]] == [a, c]
    assert alice.dequeue() is None, "a cancelled job is never dequeued"
    assert alice.job(b)["processedData"] is None, "and never processed"
    with pytest.raises(GraphQLError) as err:
        alice.cancel(a)
    assert err.value.code == "CONFLICT"


def test_cancel_of_an_unknown_id_is_not_found(alice):
    with pytest.raises(GraphQLError) as err:
        alice.cancel("nope")
    assert err.value.code == "NOT_FOUND"


def test_a_job_waiting_for_its_retry_can_be_cancelled_and_the_next_one_runs(
        user_of, settings_factory, tmp_path):
    settings = settings_factory(queue_retry_base_seconds=30)
    client = user_of(settings)
    flaky = client.enqueue('{"u": "c", "i": 0, "fail": 1}')
    after = client.enqueue('{"u": "c", "i": 1}')
    workers = WorkerProcesses(settings, tmp_path)
    try:
        workers.start("--handler", "tests.handlers:record")
        waiting = wait_until(lambda: (j := client.job(flaky["id"]))["attempts"] == 1
                             and j["status"] == "QUEUED" and j)
        assert waiting["status"] == "QUEUED"
        assert client.cancel(flaky["id"])["status"] == "CANCELLED"
        wait_until(lambda: client.job(after["id"])["status"] == "COMPLETED", timeout=20)
    finally:
        workers.stop_all()


def test_dequeue_with_nothing_ready_returns_null(alice):
    assert alice.dequeue() is None


def test_dequeue_wait_wakes_when_a_job_finishes(alice, workers):
    job = alice.enqueue("wake me")
    got = {}

    def wait():
        got["job"] = alice.dequeue(wait=20)

    waiter = threading.Thread(target=wait)
    waiter.start()
    workers.start("--handler", "workers.handlers:upper")
    waiter.join(timeout=30)
    assert got["job"]["id"] == job["id"]
    assert got["job"]["processedData"] == "WAKE ME"
    assert got["job"]["dequeuedAt"] is not None


def test_dequeue_wait_gives_null_after_the_wait(alice):
    started = time.monotonic()
    assert alice.dequeue(wait=0.3) is None
    assert time.monotonic() - started >= 0.3


def test_a_negative_wait_is_bad_user_input(alice):
    with pytest.raises(GraphQLError) as err:
        alice.dequeue(wait=-1)
    assert err.value.code == "BAD_USER_INPUT"


def test_history_survives_redis_forgetting_finished_jobs(alice, workers, app_client,
                                                        settings, redis_sync_client):
    job = alice.enqueue("keep me")
    assert workers.run_burst("--handler", "workers.handlers:upper").returncode == 0
    alice.dequeue()
    services = app_client.app.state.services
    # the archiver stores it in MongoDB, then Redis may drop it
    wait_until(lambda: redis_sync_client.llen(f"{settings.queue_prefix}:{{s0}}:archive") == 0)
    redis_sync_client.delete(f"{settings.queue_prefix}:{{s0}}:j:{job['id']}")
    from_history = alice.job(job["id"])
    assert from_history["status"] == "COMPLETED"
    assert from_history["processedData"] == "KEEP ME"
    assert from_history["dequeuedAt"] is not None
    listed = alice.call("{jobs{edges{node{id status}}}}")["jobs"]["edges"]
    assert listed == [{"node": {"id": job["id"], "status": "COMPLETED"}}]
    assert services is not None
