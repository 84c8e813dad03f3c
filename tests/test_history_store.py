"""The job history as users page through it: newest first, every job once, only
their own, with the in-memory MongoDB (its ordered reads, graph/inmemory.py) and
with a real MongoDB when MONGO_URI is set (the same tests, the same answers)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

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
