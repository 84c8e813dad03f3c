"""Several API processes on one Redis: each runs an archiver and an event reader.

The event reader only reads (XREAD from its own cursor); the archiver writes,
so two of them must neither lose a job's newest state nor store a job twice.
Two archivers with their own Redis connections over one MongoDB stand for two
API processes here (the in-memory MongoDB lives inside one process); with
MONGO_URI set, real `python -m graph` processes are checked as well.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from bson import ObjectId

from engine import connection
from engine.queue import Queue
from graph.archiver import Archiver
from engine.keys import Keys
from graph.store import JobDocument, open_store, save_job_snapshots
from tests.support import ApiProcess, settings_env, wait_until, wait_until_async

needs_mongo = pytest.mark.skipif(not os.environ.get("MONGO_URI"),
                                 reason="needs a MongoDB that processes share (MONGO_URI)")


async def test_a_change_between_two_archivers_read_and_mark_is_not_lost(settings):
    """Two processes read the same batch; the job changes; both mark it archived.
    Neither mark may drop the entry of the change that came after their read."""
    store = await open_store(settings.mongo_uri, settings.mongo_db)
    clients = [connection.client(settings.redis_url) for _ in range(2)]
    a, b = (Queue.from_settings(c, settings) for c in clients)
    uid, jid = "raced-user", str(ObjectId())
    await a.enqueue(uid, [(jid, "data", None)], 100)
    base = a.keys.user_base(uid)
    read_a, read_b = await a.archive_batch(base), await b.archive_batch(base)
    await save_job_snapshots(read_a)
    await save_job_snapshots(read_b)
    await a.cancel(uid, jid)  # a newer version, listed after what both read
    await a.mark_archived(base, read_a, 60, 60)
    await b.mark_archived(base, read_b, 60, 60)

    await Archiver(a, 60, 60).run_once()  # what the next pass of either process does
    doc = await JobDocument.get(jid)
    assert doc.status.value == "CANCELLED", "the change after both reads reached MongoDB"
    assert (await a.shape()).archive_backlog == 0
    assert await clients[0].ttl(Keys.job(base, jid)) > 0, "archived: Redis may forget it"
    for c in clients:
        await c.aclose()
    store.close()


async def test_two_archivers_lose_and_duplicate_nothing(settings, workers):
    store = await open_store(settings.mongo_uri, settings.mongo_db)
    clients = [connection.client(settings.redis_url) for _ in range(2)]
    queues = [Queue.from_settings(c, settings) for c in clients]
    archivers = [Archiver(q, settings.queue_result_ttl_seconds,
                          settings.queue_finished_retention_seconds) for q in queues]
    for archiver in archivers:
        archiver.start()

    async def prod():  # both wake as often as they can: the most overlap
        while True:
            for archiver in archivers:
                archiver.wake()
            await asyncio.sleep(0.005)

    prodding = asyncio.create_task(prod())
    try:
        users = [f"two-archivers-{n}" for n in range(8)]
        ids: dict[str, list[str]] = {u: [] for u in users}
        for round_ in range(5):
            for n, uid in enumerate(users):
                rows = [(str(ObjectId()), f"{round_}-{i}", None) for i in range(8)]
                await queues[n % 2].enqueue(uid, rows, 10_000)
                ids[uid] += [r[0] for r in rows]
            await asyncio.sleep(0.02)
        burst = await asyncio.to_thread(workers.run_burst, "--handler", "workers.handlers:echo")
        assert burst.returncode == 0, burst.stderr
        for n, uid in enumerate(users[:4]):  # taken: one more change each, while archiving
            while await queues[n % 2].dequeue(uid):
                pass

        async def archived() -> bool:
            return (await queues[0].shape()).archive_backlog == 0
        await wait_until_async(archived, timeout=60, message="both archivers to finish")
    finally:
        prodding.cancel()
        for archiver in archivers:
            await archiver.stop()

    everything = [j for u in users for j in ids[u]]
    docs = await JobDocument.find({"user_id": {"$in": users}}).to_list()
    assert sorted(d.id for d in docs) == sorted(everything), "each job stored once, none lost"
    for doc in docs:
        live = await queues[0].get(doc.user_id, doc.id)
        assert (doc.status, doc.version) == (live.status, live.version), "the newest state"
        assert (doc.dequeued_at is not None) == (doc.user_id in users[:4])
    for c in clients:
        await c.aclose()
    store.close()


def test_processes_with_dev_is_refused_with_a_reason(settings, tmp_path):
    done = subprocess.run([sys.executable, "-m", "graph", "--dev", "--processes", "2"],
                          env=settings_env(settings), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "--processes cannot go with --dev" in done.stderr
    assert "in-memory MongoDB" in done.stderr


@pytest.mark.skipif(bool(os.environ.get("MONGO_URI")), reason="MONGO_URI is set")
def test_processes_without_mongo_uri_is_refused(settings, tmp_path):
    done = subprocess.run([sys.executable, "-m", "graph", "--processes", "2"],
                          env=settings_env(settings), cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: --processes needs MONGO_URI")


@needs_mongo
def test_two_api_processes_on_one_port_share_the_history(settings, tmp_path, workers):
    api = ApiProcess(settings, tmp_path)
    api.start("--processes", "2")
    try:
        client = api.client().as_user()
        ids = [client.enqueue(str(i))["id"] for i in range(30)]  # spread over both processes
        assert workers.run_burst("--handler", "workers.handlers:echo").returncode == 0
        page = "{jobs(first:100){edges{node{id status}}}}"

        def complete():
            nodes = [e["node"] for e in client.call(page)["jobs"]["edges"]]
            return nodes if {n["status"] for n in nodes} == {"COMPLETED"} else None

        for _ in range(6):  # whichever process answers: the same history
            nodes = wait_until(complete, timeout=30)
            assert [n["id"] for n in nodes] == ids[::-1]
    finally:
        assert api.stop() == 0
