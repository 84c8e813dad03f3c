"""A user sees, dequeues and cancels their own jobs only (§3).

Another user's job id behaves exactly like an id that does not exist: `job`
answers null, `jobs` does not list it, `cancel` answers NOT_FOUND with the
same message, `dequeue` never returns it, and `queueStats` does not count it.
(The `processed` subscription's isolation is tested with the subscriptions.)
"""

from __future__ import annotations

import pytest

from tests.support import GraphQLError

JOBS = "query($s:JobStatus,$a:String){jobs(status:$s,first:100,after:$a){edges{cursor node{id}}}}"


@pytest.fixture
def alice(api):
    return api.as_user()


@pytest.fixture
def bob(api):
    return api.as_user()


def listed(user, status=None, after=None) -> list[str]:
    edges = user.call(JOBS, {"s": status, "a": after})["jobs"]["edges"]
    return [e["node"]["id"] for e in edges]


def cancel_error(user, job_id: str) -> dict:
    with pytest.raises(GraphQLError) as info:
        user.cancel(job_id)
    [error] = info.value.errors
    return {"code": error["extensions"]["code"],
            "message": error["message"].replace(job_id, "<id>")}


def unknown_id_like(job_id: str) -> str:
    """An id of the same shape that names no job."""
    return job_id[:-4] + ("ffff" if job_id[-4:] != "ffff" else "0000")


def test_another_users_job_is_null_from_job(alice, bob):
    job = alice.enqueue("alice's secret")
    assert alice.job(job["id"])["requestData"] == "alice's secret"
    assert bob.job(job["id"]) is None
    assert bob.job(unknown_id_like(job["id"])) is None


def test_another_users_job_is_absent_from_jobs(alice, bob):
    job = alice.enqueue("alice's")
    mine = bob.enqueue("bob's")
    assert listed(alice) == [job["id"]]
    assert listed(bob) == [mine["id"]]
    assert listed(bob, "QUEUED") == [mine["id"]]
    # a cursor made from alice's job pages through bob's jobs only
    [cursor] = [e["cursor"] for e in alice.call(JOBS, {})["jobs"]["edges"]]
    assert set(listed(bob, after=cursor)) <= {mine["id"]}


def test_cancel_of_another_users_job_is_not_found_like_a_missing_id(alice, bob):
    job = alice.enqueue("alice's")
    refused = cancel_error(bob, job["id"])
    assert refused["code"] == "NOT_FOUND"
    assert refused == cancel_error(bob, unknown_id_like(job["id"]))
    assert alice.job(job["id"])["status"] == "QUEUED"  # untouched
    assert alice.cancel(job["id"])["status"] == "CANCELLED"


def test_dequeue_never_returns_another_users_job(alice, bob, workers):
    job = alice.enqueue("alice's")
    assert bob.dequeue() is None
    result = workers.run_burst()
    assert result.returncode == 0, result.stderr
    assert alice.job(job["id"])["status"] == "COMPLETED"
    assert bob.dequeue() is None
    assert bob.dequeue(wait=0.3) is None
    assert bob.stats() == {"queued": 0, "processing": 0, "ready": 0}
    assert alice.dequeue()["id"] == job["id"]


def test_idempotency_keys_belong_to_their_user(alice, bob):
    first = alice.enqueue("alice's", key="shared-key")
    other = bob.enqueue("bob's", key="shared-key")
    assert other["id"] != first["id"] and other["requestData"] == "bob's"
    assert alice.enqueue("again", key="shared-key")["id"] == first["id"]


def test_queue_stats_count_the_callers_jobs_only(alice, bob):
    alice.enqueue("a1")
    alice.enqueue("a2")
    assert alice.stats()["queued"] == 2
    assert bob.stats() == {"queued": 0, "processing": 0, "ready": 0}
