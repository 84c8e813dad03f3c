"""The job history as users page through it: newest first, every job once, only
their own, with the in-memory MongoDB (its ordered reads, graph/inmemory.py) and
with a real MongoDB when MONGO_URI is set (the same tests, the same answers)."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import pytest
from bson import ObjectId

from engine.jobs import JobRecord, JobStatus
from graph.store import JobDocument, open_store, save_job_snapshots

PAGE = "query($a:String,$s:JobStatus){jobs(first:20,after:$a,status:$s){edges{node{id status}} pageInfo{hasNextPage endCursor}}}"


def every_page(client, status: str | None = None) -> list[list[dict]]:
    pages, after = [], None
    while True:
        page = client.call(PAGE, {"a": after, "s": status})["jobs"]
        pages.append([e["node"] for e in page["edges"]])
        if not page["pageInfo"]["hasNextPage"]:
            return pages
        after = page["pageInfo"]["endCursor"]


def test_pages_are_newest_first_complete_and_the_users_own(api, workers):
    mine, other = api.as_user(), api.as_user()
    ids = [j["id"] for j in mine.enqueue_many([{"requestData": str(i)} for i in range(45)])]
    theirs = [j["id"] for j in other.enqueue_many([{"requestData": "x"}] * 7)]
    queued = every_page(mine)
    assert [len(p) for p in queued] == [20, 20, 5]
    assert [j["id"] for p in queued for j in p] == ids[::-1]
    assert {j["status"] for p in queued for j in p} == {"QUEUED"}

    assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
    done = [j for p in every_page(mine) for j in p]
    assert [j["id"] for j in done] == ids[::-1]
    assert {j["status"] for j in done} == {"COMPLETED"}
    assert [j["id"] for p in every_page(other) for j in p] == theirs[::-1]
    assert every_page(mine, "QUEUED") == [[]]
    assert [j["id"] for p in every_page(mine, "COMPLETED") for j in p] == ids[::-1]


def _record(uid: str, status: JobStatus, version: int, jid: str | None = None) -> JobRecord:
    now = datetime.now(timezone.utc)
    return JobRecord(id=jid or str(ObjectId()), user_id=uid, request_data="r", status=status,
                     attempts=1, created_at=now, version=version)


async def test_queries_answer_as_a_scan_would_after_inserts_updates_and_stale_writes(settings):
    """Random writes, then every query the history runs, against a plain filter and
    sort of what was written: the ordered reads must return exactly that."""
    client = await open_store(settings.mongo_uri, settings.mongo_db)
    try:
        await _check_queries()
    finally:
        client.close()


async def _check_queries() -> None:
    rng = random.Random(17)
    users = [f"history-{rng.random()}" for _ in range(4)]
    latest: dict[str, JobRecord] = {}
    for _ in range(12):
        batch = []
        for _ in range(40):
            if latest and rng.random() < 0.4:  # a newer (or, sometimes, an older) snapshot
                old = rng.choice(list(latest.values()))
                version = old.version + rng.choice([1, 1, -1])
                status = rng.choice(list(JobStatus))
                rec = _record(old.user_id, status, version, old.id)
                if version > old.version:
                    latest[old.id] = rec
            else:
                rec = _record(rng.choice(users), rng.choice(list(JobStatus)), 1)
                latest[rec.id] = rec
            batch.append(rec)
        by_id = {}  # one snapshot per job in a bulk write, as the archiver's
        for rec in batch:
            if rec.id not in by_id or rec.version > by_id[rec.id].version:
                by_id[rec.id] = rec
        await save_job_snapshots(list(by_id.values()))

    records = sorted(latest.values(), key=lambda r: r.id, reverse=True)
    for uid in [*users, None]:
        for status in [None, *JobStatus]:
            expected = [r.id for r in records if (uid is None or r.user_id == uid)
                        and (status is None or r.status == status)]
            after = rng.choice(expected) if expected else None
            for cursor in (None, after):
                query = [] if uid is None else [JobDocument.user_id == uid]
                if status:
                    query.append(JobDocument.status == status)
                if cursor:
                    query.append(JobDocument.id < cursor)
                docs = await JobDocument.find(*query).sort(-JobDocument.id).limit(21).to_list()
                want = [i for i in expected if cursor is None or i < cursor][:21]
                assert [d.id for d in docs] == want
                assert all(d.version == latest[d.id].version for d in docs), "newest wins"


RUNNING = ("query($a:String,$n:Int){jobs(first:$n,after:$a,status:PROCESSING)"
           "{edges{node{id status}} pageInfo{hasNextPage endCursor}}}")


def _claim_all(settings) -> list:
    """Start what may start, as a worker would (its lease held, nothing finished)."""
    from engine import connection
    from engine.queue import Queue

    async def claim():
        redis = connection.client(settings.redis_url)
        try:
            queue = Queue.from_settings(redis, settings)
            return (await queue.claim(queue.keys.base(0), 10, "test-owner", 60)).jobs
        finally:
            await redis.aclose()

    return asyncio.run(claim())


@pytest.fixture
def settings(settings_factory):
    return settings_factory(queue_user_concurrency=3)  # three lanes of a user run at once


def test_processing_pages_list_the_jobs_running_now_newest_first(api, settings):
    """A job's start is not archived: `jobs(status: PROCESSING)` answers from Redis,
    with the same paging as the other statuses, and only the caller's jobs."""
    mine, other = api.as_user(), api.as_user()
    ids = [j["id"] for j in mine.enqueue_many(
        [{"requestData": str(i), "orderingKey": f"k{i}"} for i in range(4)])]
    theirs = other.enqueue("x")["id"]
    assert [j["id"] for p in every_page(mine) for j in p] == ids[::-1]  # archived QUEUED
    started = _claim_all(settings)
    assert sorted(c.job_id for c in started) == sorted([*ids[:3], theirs])

    first = mine.call(RUNNING, {"n": 2})["jobs"]
    assert [e["node"] for e in first["edges"]] == [
        {"id": ids[2], "status": "PROCESSING"}, {"id": ids[1], "status": "PROCESSING"}]
    assert first["pageInfo"]["hasNextPage"]
    rest = mine.call(RUNNING, {"n": 2, "a": first["pageInfo"]["endCursor"]})["jobs"]
    assert [e["node"]["id"] for e in rest["edges"]] == [ids[0]]
    assert not rest["pageInfo"]["hasNextPage"]
    assert [j["id"] for p in every_page(mine, "PROCESSING") for j in p] == ids[2::-1]
    assert every_page(other, "PROCESSING") == [[{"id": theirs, "status": "PROCESSING"}]]
    assert every_page(mine, "QUEUED") == [[{"id": ids[3], "status": "QUEUED"}]]


def test_an_admin_sees_every_users_running_jobs_newest_first(api, app_client, settings):
    """adminJobs(status: PROCESSING): the leases of all users, read in one round trip."""
    from tests.test_admin_api import Users

    people = Users(api, app_client)
    ann, bob = people.add(), people.add()
    ann_ids = [j["id"] for j in ann.enqueue_many(
        [{"requestData": str(i), "orderingKey": f"k{i}"} for i in range(2)])]
    bob_id = bob.enqueue("x")["id"]
    waiting = bob.enqueue("y")["id"]  # bob's one lane is busy: this one waits
    _claim_all(settings)
    admin = people.admin()
    page = admin.call("{adminJobs(status: PROCESSING, first: 10)"
                      "{edges{node{id status}}}}")["adminJobs"]["edges"]
    assert [e["node"] for e in page] == [
        {"id": i, "status": "PROCESSING"} for i in sorted([*ann_ids, bob_id], reverse=True)]
    assert waiting not in {e["node"]["id"] for e in page}


async def test_a_page_stores_its_users_listed_changes_and_leaves_them_listed(settings,
                                                                              monkeypatch):
    """flush_user: the user's records reach MongoDB at once, others' wait for a pass,
    and the entries stay listed for it; a long list (a lagging archiver) is a pass."""
    from engine import connection
    from engine.keys import Keys
    from engine.queue import NewJob, Queue
    from graph import archiver as archiving

    client = await open_store(settings.mongo_uri, settings.mongo_db)
    redis = connection.client(settings.redis_url)
    try:
        queue = Queue.from_settings(redis, settings)
        archive = Keys.archive(queue.keys.base(0))
        mine = [str(ObjectId()) for _ in range(3)]
        theirs = [str(ObjectId()) for _ in range(2)]
        await queue.enqueue("ann", [NewJob(j, "x") for j in mine], 100)
        await queue.enqueue("ann:x", [NewJob(j, "y") for j in theirs], 100)  # a uid with a colon
        archiver = archiving.Archiver(queue, 60, 60)

        await archiver.flush_user("ann")
        stored = await JobDocument.find(JobDocument.user_id == "ann").to_list()
        assert sorted(d.id for d in stored) == sorted(mine)
        assert {d.status for d in stored} == {JobStatus.QUEUED}
        assert await JobDocument.find(JobDocument.user_id == "ann:x").count() == 0
        assert await redis.llen(archive) == 5, "entries stay listed for the next pass"

        monkeypatch.setattr(archiving, "USER_FLUSH_LIMIT", 4)  # 5 listed: a pass instead
        await archiver.flush_user("ann:x")
        assert await JobDocument.find(JobDocument.user_id == "ann:x").count() == 2
        assert await redis.llen(archive) == 0
    finally:
        await redis.aclose()
        client.close()
