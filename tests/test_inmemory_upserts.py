"""The archiver's writes into the in-memory MongoDB, applied directly
(graph/inmemory.py `upsert_versions`), leave exactly what mongomock's bulk write
of the same version-guarded upserts leaves: new records, newer versions, and
stale or repeated snapshots that must change nothing."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from engine.jobs import JobRecord, JobStatus
from graph import inmemory, store
from graph.store import JobDocument, open_store, save_job_snapshots


def _snapshots(rng: random.Random, n: int) -> list[JobRecord]:
    ids = [str(ObjectId()) for _ in range(n // 3)]
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    out = []
    for _ in range(n):
        status = rng.choice(list(JobStatus))
        when = start + timedelta(microseconds=rng.randrange(10**9))
        out.append(JobRecord(
            id=rng.choice(ids), user_id=f"u{rng.randrange(4)}", request_data="r",
            status=status, attempts=rng.randrange(3),
            processed_data=rng.choice([None, "done", "ünï"]), created_at=start,
            started_at=rng.choice([None, when]), finished_at=rng.choice([None, when]),
            priority=rng.randrange(3), progress=rng.choice([None, 0.5]),
            version=rng.randrange(1, 6)))
    return out


def _bulk(collection, jobs: list[JobRecord]) -> None:
    """What save_job_snapshots does for a MongoDB that is not in memory."""
    ops = [UpdateOne({"_id": j.id, "version": {"$lt": j.version}},
                     {"$set": JobDocument.fields_of(j)}, upsert=True) for j in jobs]
    try:
        collection.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        assert all(e.get("code") == 11000 for e in exc.details["writeErrors"])


def _contents(collection) -> list:
    return [(key, list(doc.items())) for key, doc in collection._store._documents.items()]


async def test_direct_upserts_leave_what_the_bulk_write_leaves():
    client = await open_store(None, "upserts")
    database = client["upserts"]
    direct = inmemory.sync_collection(JobDocument.get_pymongo_collection())
    assert direct is not None  # the in-memory store takes the direct way
    plain = inmemory.sync_collection(database["plain"])
    rng = random.Random(17)
    for _ in range(20):
        batch = _snapshots(rng, 60)
        await save_job_snapshots(batch)
        _bulk(plain, batch)
        assert _contents(direct) == _contents(plain)
    assert len(_contents(direct)) > 10


async def test_a_stale_snapshot_changes_nothing():
    await open_store(None, "stale")
    collection = inmemory.sync_collection(JobDocument.get_pymongo_collection())
    now = datetime.now(timezone.utc)
    jid = str(ObjectId())
    done = JobRecord(id=jid, user_id="u", request_data="r", status=JobStatus.COMPLETED,
                     attempts=1, created_at=now, version=3)
    queued = JobRecord(id=jid, user_id="u", request_data="r", status=JobStatus.QUEUED,
                       attempts=0, created_at=now, version=1)
    await save_job_snapshots([done])
    await save_job_snapshots([queued, done])
    stored = collection._store._documents[jid]
    assert stored["status"] == "COMPLETED" and stored["version"] == 3
    found = await JobDocument.get(jid)
    assert found.status == JobStatus.COMPLETED


async def test_a_long_batch_lets_requests_run_between_slices():
    """The in-memory store is CPU work in the API's own thread: a batch is stored
    IN_MEMORY_SLICE records at a time, and other tasks (requests) run in between."""
    await open_store(None, "slices")
    collection = inmemory.sync_collection(JobDocument.get_pymongo_collection())
    now = datetime.now(timezone.utc)
    jobs = [JobRecord(id=str(ObjectId()), user_id="u", request_data="r",
                      status=JobStatus.QUEUED, attempts=0, created_at=now, version=1)
            for _ in range(8 * store.IN_MEMORY_SLICE)]
    turns = 0

    async def request():
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(request())
    await asyncio.sleep(0)
    before = turns
    await save_job_snapshots(jobs)
    other.cancel()
    assert turns - before >= 7  # one turn between each two slices
    assert all(j.id in collection._store._documents for j in jobs)
