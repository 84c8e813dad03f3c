"""MongoDB through Beanie: user accounts and the job history.

`MONGO_URI` unset gives an in-memory store (mongomock-motor): fine for trying
the service and for tests, nothing persists. Beanie 2 asks the database for
things mongomock does not know; `_patch_mongomock` is the one place that
bridges them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import fields
from datetime import datetime
from enum import Enum

import pymongo
from beanie import Document, init_beanie
from beanie.operators import In
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import IndexModel, UpdateOne
from pymongo.errors import BulkWriteError

from engine.jobs import JobRecord, JobStatus

from . import inmemory

log = logging.getLogger(__name__)

# records the in-memory store writes between two turns of the event loop
IN_MEMORY_SLICE = 25


class Role(str, Enum):
    USER = "USER"
    ADMIN = "ADMIN"


class User(Document):
    username: str
    username_key: str  # case-folded: uniqueness without regard to case
    password_hash: str
    created_at: datetime
    # in every token as `tv`; a password change bumps it, which revokes earlier tokens.
    # Users stored before it existed read as 0, as do tokens without `tv`.
    token_version: int = 0
    # set only by the ADMIN_USERNAME bootstrap and setRole (graph/accounts.py), never
    # by register; users stored before it existed read as USER
    role: Role = Role.USER

    class Settings:
        name = "users"
        indexes = [
            IndexModel("username_key", unique=True),
            IndexModel("role"),  # counting the admins (the last-admin rule)
        ]


class JobDocument(Document):
    """The history of one job in MongoDB; written at enqueue, then by the archiver.

    Its fields are the engine's JobRecord fields of the same names (mapped by
    name below, never copied by hand); `last_error` stays in Redis."""

    id: str  # type: ignore[assignment]  # the engine's job id
    user_id: str
    request_data: str
    status: JobStatus
    attempts: int = 0
    processed_data: str | None = None
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    dequeued_at: datetime | None = None
    idempotency_key: str | None = None
    ordering_key: str | None = None  # CONTRACT §7: its lane; None the default one
    priority: int = 0
    run_at: datetime | None = None
    progress: float | None = None  # the last attempt's last report, as it finished
    progress_message: str | None = None
    version: int = 0  # the Redis record's version; older snapshots never overwrite newer
    # one entry per operator's retry (retryJob, retryFailed): the run it replaced,
    # {status, attempts, error, startedAt, finishedAt, retriedAt, by}. Written by
    # graph/admin.py with $push; the archiver's $set never touches it.
    retries: list[dict] = []

    class Settings:
        name = "jobs"
        indexes = [
            IndexModel([("user_id", pymongo.ASCENDING), ("_id", pymongo.DESCENDING)]),
            IndexModel([("user_id", pymongo.ASCENDING), ("status", pymongo.ASCENDING),
                        ("_id", pymongo.DESCENDING)]),
            # the operators' lists of all users' jobs by status (adminJobs, retryFailed)
            IndexModel([("status", pymongo.ASCENDING), ("_id", pymongo.DESCENDING)]),
        ]

    @classmethod
    def fields_of(cls, job: JobRecord) -> dict:
        """The record's values for this document, by field name (`id` is the key)."""
        return {name: getattr(job, name) for name in _STORED}

    def to_record(self) -> JobRecord:
        return JobRecord(id=self.id, **{name: getattr(self, name) for name in _STORED})


# The record's fields the history keeps: every JobRecord field this document declares.
_STORED = tuple(f.name for f in fields(JobRecord)
                if f.name in JobDocument.model_fields and f.name != "id")


async def users_by_id(ids: list[str]) -> dict[str, User]:
    """The users of these ids, in one query; ids that are not ObjectIds (a queue the
    engine alone made) or name no account are absent."""
    wanted = set()
    for uid in ids:
        try:
            wanted.add(ObjectId(uid))
        except (InvalidId, TypeError):
            continue
    docs = await User.find(In(User.id, list(wanted))).to_list() if wanted else []
    return {str(d.id): d for d in docs}


async def save_job_snapshots(jobs: list[JobRecord]) -> None:
    """Upsert jobs' states unless MongoDB already holds newer versions.

    Idempotent and safe under concurrent archivers: each filter only matches
    an older version; when the record exists at the same or a newer version,
    the upsert's insert hits the unique _id and is ignored.
    """
    if not jobs:
        return
    collection = JobDocument.get_pymongo_collection()
    direct = inmemory.sync_collection(collection)
    if direct is not None:  # the in-memory store: the same writes, applied directly
        jobs = await _upsert_in_memory(direct, jobs)
        if not jobs:
            return
    ops = [
        UpdateOne({"_id": j.id, "version": {"$lt": j.version}},
                  {"$set": JobDocument.fields_of(j)}, upsert=True)
        for j in jobs
    ]
    try:
        await collection.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
        if others:
            raise


async def _upsert_in_memory(direct, jobs: list[JobRecord]) -> list[JobRecord]:
    """Store jobs in the in-memory MongoDB, IN_MEMORY_SLICE at a time with a turn of
    the event loop between slices: this is CPU work in the API's own thread, and
    200 records in one stretch held every request in flight up to ~10 ms (scenario
    6's p99). Each record is written whole or not at all, so a request that reads
    between two slices sees each record old or new. Cancelled between slices (the
    archiver stopping), the slices done stay stored and the rest stay listed in
    Redis, unmarked, for the next pass. Returns the jobs left to store the general
    way (a collection that needs mongomock's own checks)."""
    for start in range(0, len(jobs), IN_MEMORY_SLICE):
        part = jobs[start:start + IN_MEMORY_SLICE]
        if not inmemory.upsert_versions(
                direct, [(j.id, j.version, JobDocument.fields_of(j)) for j in part]):
            return jobs[start:]
        if start + IN_MEMORY_SLICE < len(jobs):
            await asyncio.sleep(0)
    return []


async def count_by_user(uids: list[str], status: JobStatus) -> dict[str, int]:
    """How many jobs of each user have this status: one aggregate over the
    (user_id, status) index. (pymongo's async aggregate is awaited for its
    cursor, mongomock-motor's is not: the one place that tells them apart.)"""
    cursor = JobDocument.get_pymongo_collection().aggregate([
        {"$match": {"status": status.value, "user_id": {"$in": uids}}},
        {"$group": {"_id": "$user_id", "n": {"$sum": 1}}},
    ])
    if inspect.isawaitable(cursor):
        cursor = await cursor
    return {row["_id"]: row["n"] for row in await cursor.to_list(None)}


def _patch_mongomock() -> None:
    """mongomock lags the pymongo that Beanie 2 needs: Beanie calls
    list_collection_names(authorizedCollections=..., nameOnly=...), and pymongo's
    UpdateOne passes sort= to bulk writes. Drop the options mongomock does not know."""
    import mongomock.collection
    import mongomock.database
    from mongomock.filtering import filter_applies

    if getattr(mongomock.database.Database, "_patched_for_beanie", False):
        return
    list_names = mongomock.database.Database.list_collection_names
    add_update = mongomock.collection.BulkOperationBuilder.add_update

    def list_collection_names(self, filter=None, session=None, **_ignored):
        return list_names(self, filter=filter, session=session)

    def add_update_without_sort(self, *args, sort=None, **kwargs):
        return add_update(self, *args, **kwargs)

    iter_documents = mongomock.collection.Collection._iter_documents

    def iter_documents_by_id(self, filter):
        """mongomock scans every document for every query; a query that names one
        _id (each archiver upsert, each User.get) looks that one up instead."""
        key = filter.get("_id") if isinstance(filter, dict) else None
        if isinstance(key, (str, ObjectId)):
            doc = self._store[key] if key in self._store else None
            return iter([doc] if doc is not None and filter_applies(filter, doc) else [])
        if isinstance(key, dict) and set(key) == {"$in"}:  # a page of users by id
            docs = (self._store[k] for k in key["$in"] if k in self._store)
            return iter([d for d in docs if filter_applies(filter, d)])
        return iter_documents(self, filter)

    mongomock.database.Database.list_collection_names = list_collection_names
    mongomock.collection.BulkOperationBuilder.add_update = add_update_without_sort
    mongomock.collection.Collection._iter_documents = iter_documents_by_id
    mongomock.database.Database._patched_for_beanie = True


def mongo_client(uri: str | None):
    """A client for MONGO_URI, or an in-memory one when it is unset."""
    if uri:
        # majority writes and retryable writes: a replica set loses no acknowledged job record
        return pymongo.AsyncMongoClient(
            uri, w="majority", retryWrites=True, tz_aware=True, serverSelectionTimeoutMS=5000
        )
    from mongomock_motor import AsyncMongoMockClient

    _patch_mongomock()
    inmemory.install(ordered_by={JobDocument.Settings.name: ("user_id",)})
    log.warning("MONGO_URI is not set: users and job history live in memory and "
                "are lost when the process stops")
    return AsyncMongoMockClient(tz_aware=True)


async def open_store(uri: str | None, db_name: str):
    client = mongo_client(uri)
    await init_beanie(database=client[db_name], document_models=[User, JobDocument])
    return client


async def ping(client) -> None:
    await client.admin.command("ping")
