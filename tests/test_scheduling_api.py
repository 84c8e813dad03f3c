"""CONTRACT §7 over GraphQL: the new enqueue arguments, Job fields and
QueueStats.scheduled, and what bad values get (BAD_USER_INPUT, nothing stored)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.support import GraphQLError

FIELDS = "id status orderingKey priority runAt"
ENQUEUE = ("mutation($d:String!,$k:String,$p:Int,$at:DateTime)"
           f"{{enqueue(requestData:$d,orderingKey:$k,priority:$p,runAt:$at){{{FIELDS}}}}}")
MANY = f"mutation($i:[EnqueueInput!]!){{enqueueMany(items:$i){{{FIELDS}}}}}"
STATS = "{queueStats{queued processing ready scheduled}}"


@pytest.fixture
def alice(api):
    return api.as_user()


def later(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def test_a_job_keeps_its_key_priority_and_run_at(alice):
    at = later(3600)
    job = alice.call(ENQUEUE, {"d": "x", "k": "order-7", "p": 5, "at": at})["enqueue"]
    assert (job["status"], job["orderingKey"], job["priority"]) == ("QUEUED", "order-7", 5)
    assert datetime.fromisoformat(job["runAt"]) == datetime.fromisoformat(at).replace(
        microsecond=datetime.fromisoformat(at).microsecond // 1000 * 1000)
    assert alice.job(job["id"])["id"] == job["id"]
    assert alice.call(f"query($id:ID!){{job(id:$id){{{FIELDS}}}}}", {"id": job["id"]})["job"] == job
    assert alice.call(STATS)["queueStats"] == {
        "queued": 1, "processing": 0, "ready": 0, "scheduled": 1}
    assert alice.cancel(job["id"])["status"] == "CANCELLED"
    assert alice.call(STATS)["queueStats"]["scheduled"] == 0


def test_without_the_new_arguments_a_job_looks_as_before(alice):
    job = alice.call(ENQUEUE, {"d": "x"})["enqueue"]
    assert (job["orderingKey"], job["priority"], job["runAt"]) == (None, 0, None)
    [same] = alice.call(MANY, {"i": [{"requestData": "y", "orderingKey": ""}]})["enqueueMany"]
    assert same["orderingKey"] is None, '"" is the default key'


@pytest.mark.parametrize("item, argument", [
    ({"priority": 101}, "priority"),
    ({"priority": -101}, "priority"),
    ({"orderingKey": "k" * 129}, "orderingKey"),
    ({"orderingKey": "é" * 65}, "orderingKey"),  # 130 bytes
    ({"orderingKey": "tab\there"}, "orderingKey"),
    ({"runAt": None}, "runAt"),  # filled in below: past QUEUE_MAX_DELAY_SECONDS
])
def test_bad_values_refuse_the_whole_batch_and_store_nothing(alice, item, argument):
    if argument == "runAt":
        item = {"runAt": later(31 * 86400)}
    items = [{"requestData": "fine"}, {"requestData": "bad", **item}]
    with pytest.raises(GraphQLError) as err:
        alice.call(MANY, {"i": items})
    assert err.value.code == "BAD_USER_INPUT"
    assert err.value.errors[0]["extensions"].get("index") == 1
    with pytest.raises(GraphQLError) as single:
        alice.call(ENQUEUE, {"d": "bad", "k": item.get("orderingKey"), "p": item.get("priority"),
                             "at": item.get("runAt")})
    assert single.value.code == "BAD_USER_INPUT"
    assert alice.call(STATS)["queueStats"]["queued"] == 0, "nothing stored"


def test_the_edges_of_the_bounds_are_accepted(alice):
    items = [{"requestData": "a", "priority": 100}, {"requestData": "b", "priority": -100},
             {"requestData": "c", "orderingKey": "k" * 128},
             {"requestData": "d", "runAt": later(29 * 86400)},
             {"requestData": "e", "runAt": later(-3600)}]
    jobs = alice.call(MANY, {"i": items})["enqueueMany"]
    assert [j["status"] for j in jobs] == ["QUEUED"] * 5
    assert alice.call(STATS)["queueStats"]["scheduled"] == 1, "a past runAt means now"
