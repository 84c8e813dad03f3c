"""The operators' API (CONTRACT §9) as an admin uses it, against real Redis
and real worker processes: who may call it, that its figures are the truth,
and that pausing, redriving and purging do what they say."""

from __future__ import annotations

import json
import random
import signal
import time
import uuid
from datetime import datetime, timezone

import pytest
from bson import ObjectId

from engine.keys import Keys
from graph.store import JobDocument, User
from tests.support import Api, GraphQLError, wait_until

HANDLER = "tests.handlers:record"

# every admin operation, with arguments that would work for an admin
OPERATIONS = {
    "adminOverview": "{adminOverview{queued}}",
    "adminUsers": "{adminUsers{edges{node{queued}}}}",
    "adminJobs": "{adminJobs{edges{node{id}}}}",
    "adminThroughput": "{adminThroughput{at}}",
    "setUserLimits": 'mutation{setUserLimits(username:"%s",limits:{weight:2}){weight}}',
    "retryJob": 'mutation{retryJob(id:"%s"){id}}',
    "retryFailed": "mutation{retryFailed}",
    "purgeQueue": 'mutation{purgeQueue(username:"%s")}',
}
ROW = ("user{id username} queued processing scheduled failed oldestQueuedAt "
       "limits{concurrency weight startsPerMinute paused}")
OVERVIEW = ("users usersWaiting queued processing scheduled completedLastMinute "
            "failedLastMinute oldestWaitSeconds")


@pytest.fixture
def settings(settings_factory):
    # one attempt: a failing job is FAILED at once; workers recount every half second
    return settings_factory(queue_max_attempts=1, queue_recount_seconds=0.5)


class Admin(Api):
    """An Api signed in as an admin, with the operators' calls."""

    def overview(self) -> dict:
        return self.call(f"{{adminOverview{{{OVERVIEW}}}}}")["adminOverview"]

    def users(self, first: int = 50, after: str | None = None, order: str = "BACKLOG"):
        page = self.call(
            f"query($f:Int,$a:String,$o:AdminUserOrder){{adminUsers(first:$f,after:$a,"
            f"orderBy:$o){{edges{{cursor node{{{ROW}}}}} pageInfo{{hasNextPage endCursor}}}}}}",
            {"f": first, "a": after, "o": order})["adminUsers"]
        return [e["node"] for e in page["edges"]], page["pageInfo"]

    def all_users(self, order: str = "BACKLOG", first: int = 3) -> list[dict]:
        rows, after = [], None
        while True:
            page, info = self.users(first, after, order)
            rows += page
            if not info["hasNextPage"]:
                return rows
            after = info["endCursor"]

    def limits(self, username: str, **limits) -> dict:
        return self.call("mutation($u:String!,$l:UserLimitsInput!){setUserLimits(username:$u,"
                         "limits:$l){concurrency weight startsPerMinute paused}}",
                         {"u": username, "l": limits})["setUserLimits"]

    def retry(self, jid: str) -> dict:
        return self.call(f"mutation($id:ID!){{retryJob(id:$id){{{self.JOB}}}}}",
                         {"id": jid})["retryJob"]

    def retry_failed(self, username: str | None = None, after: str | None = None) -> int:
        return self.call("mutation($u:String,$a:DateTime){retryFailed(username:$u,"
                         "finishedAfter:$a)}", {"u": username, "a": after})["retryFailed"]

    def purge(self, username: str) -> int:
        return self.call("mutation($u:String!){purgeQueue(username:$u)}",
                         {"u": username})["purgeQueue"]

    def failed_jobs(self, username: str | None = None) -> list[dict]:
        return [e["node"] for e in self.call(
            "query($u:String){adminJobs(status:FAILED,username:$u,first:100)"
            "{edges{node{id status error attempts}}}}", {"u": username})["adminJobs"]["edges"]]

    def throughput(self, minutes: int = 15) -> list[dict]:
        return self.call("query($m:Int){adminThroughput(minutes:$m){at enqueued completed "
                         "failed queued}}", {"m": minutes})["adminThroughput"]


def in_store(app_client, coroutine_fn, *args):
    """Run a coroutine on the app's event loop, where its MongoDB store lives."""
    return app_client.portal.call(coroutine_fn, *args)


class Users:
    """Signed-in users by name, and the admin."""

    def __init__(self, api: Api, app_client):
        self.api, self.app_client = api, app_client
        self.by_name: dict[str, Api] = {}
        self.ids: dict[str, str] = {}

    def add(self, name: str | None = None) -> Api:
        name = name or f"user_{uuid.uuid4().hex[:8]}"
        client = self.api.as_user(name)
        self.by_name[name] = client
        self.ids[name] = client.call("{me{id}}")["me"]["id"]
        return client

    def admin(self) -> Admin:
        name = f"admin_{uuid.uuid4().hex[:8]}"
        client = self.add(name)

        async def promote(uid):  # as the roles branch's ADMIN_USERNAME bootstrap will
            await User.get_pymongo_collection().update_one(
                {"_id": ObjectId(uid)}, {"$set": {"role": "ADMIN"}})
        in_store(self.app_client, promote, self.ids[name])
        return Admin(client.http, client.token)


@pytest.fixture
def people(api, app_client) -> Users:
    return Users(api, app_client)


def item(user: str, i: int, **kw) -> str:
    return json.dumps({"u": user, "i": i, **kw})


# ---- who may ----

@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_admin_operation_is_for_admins_only(people, api, operation):
    alice = people.add()
    [name] = [n for n in people.by_name]
    job = alice.enqueue("x")
    document = OPERATIONS[operation]
    if "%s" in document:
        document %= job["id"] if operation == "retryJob" else name

    with pytest.raises(GraphQLError) as err:
        api.call(document)
    assert err.value.code == "UNAUTHENTICATED"
    with pytest.raises(GraphQLError) as err:
        alice.call(document)
    assert err.value.code == "FORBIDDEN"
    assert alice.job(job["id"])["status"] == "QUEUED", "nothing happened"

    admin = people.admin()
    if operation == "retryJob":  # a QUEUED job: it works, and answers CONFLICT
        with pytest.raises(GraphQLError) as err:
            admin.call(document)
        assert err.value.code == "CONFLICT"
    else:
        assert admin.call(document)


def test_each_admin_mutation_is_written_to_the_log(people, caplog):
    people.add("alice_audit")
    admin = people.admin()
    caplog.set_level("INFO", logger="audit")
    admin.limits("alice_audit", weight=5, paused=True)
    admin.purge("alice_audit")
    admin_id = admin.call("{me{id}}")["me"]["id"]
    lines = [(r.admin_id, r.operation, r.arguments, r.outcome)
             for r in caplog.records if r.name == "audit"]
    assert (admin_id, "setUserLimits",
            {"username": "alice_audit", "limits": {"weight": 5, "paused": True}}, "ok") in lines
    assert (admin_id, "purgeQueue", {"username": "alice_audit"}, "ok") in lines


def test_limits_are_bounded_and_change_only_the_fields_given(people):
    people.add("bounded")
    admin = people.admin()
    assert admin.limits("bounded") == {"concurrency": 1, "weight": 1, "startsPerMinute": 0,
                                       "paused": False}, "the defaults"
    assert admin.limits("bounded", weight=7)["weight"] == 7
    assert admin.limits("bounded", startsPerMinute=100000, concurrency=100) == {
        "concurrency": 100, "weight": 7, "startsPerMinute": 100000, "paused": False}
    for bad in ({"concurrency": 0}, {"concurrency": 101}, {"weight": 0}, {"weight": 101},
                {"startsPerMinute": -1}, {"startsPerMinute": 100001}):
        with pytest.raises(GraphQLError) as err:
            admin.limits("bounded", **bad)
        assert err.value.code == "BAD_USER_INPUT", bad
    with pytest.raises(GraphQLError) as err:
        admin.limits("nobody_by_that_name", weight=2)
    assert err.value.code == "NOT_FOUND"
    assert admin.limits("BOUNDED")["weight"] == 7, "usernames without regard to case"


# ---- the figures are the truth ----

def truth(app_client, redis, settings, users: Users) -> dict:
    """A recount from Redis's lists and leases and MongoDB's history."""
    base = Keys(settings.queue_prefix).base(0)
    queued = {name: redis.llen(Keys.pending(base, uid)) for name, uid in users.ids.items()}
    running = {name: int(redis.get(Keys.state(base, uid)) == "a")
               for name, uid in users.ids.items()}

    async def failed():
        return {uid: await JobDocument.find(JobDocument.user_id == uid,
                                            JobDocument.status == "FAILED").count()
                for uid in users.ids.values()}
    by_id = in_store(app_client, failed)
    return {"queued": queued, "processing": running,
            "leases": redis.zcard(Keys.leases(base)),
            "failed": {name: by_id[uid] for name, uid in users.ids.items()}}


def assert_figures_are_the_truth(admin: Admin, app_client, redis, settings, users: Users):
    admin.call("{adminJobs(first:0){edges{cursor}}}")  # the archiver stores what is listed
    seen = truth(app_client, redis, settings, users)
    overview = admin.overview()
    rows = {r["user"]["username"]: r for r in admin.all_users()}
    assert overview["queued"] == sum(seen["queued"].values())
    assert overview["processing"] == seen["leases"] == sum(seen["processing"].values())
    assert overview["users"] == len(users.ids)
    for name in users.ids:
        row = rows[name]
        assert (row["queued"], row["processing"], row["failed"]) == (
            seen["queued"][name], seen["processing"][name], seen["failed"][name]), name
    backlog = [r["queued"] for r in admin.all_users() if r["queued"]]
    assert backlog == sorted(backlog, reverse=True), "most queued first"
    assert len(backlog) == sum(1 for n in seen["queued"].values() if n)


def test_the_figures_equal_a_recount_after_a_random_mix(
        people, app_client, workers, settings, redis_sync_client):
    rng = random.Random(16)
    names = [f"mix{n}_{uuid.uuid4().hex[:4]}" for n in range(5)]
    clients = {name: people.add(name) for name in names}
    admin = people.admin()
    jobs: dict[str, list[str]] = {name: [] for name in names}
    worker = workers.start("--handler", HANDLER, "--concurrency", "3")
    warm_up = clients[names[0]].enqueue(item("warm", 0))["id"]
    wait_until(lambda: clients[names[0]].job(warm_up)["status"] == "COMPLETED")
    for step in range(60):
        name = rng.choice(names)
        client = clients[name]
        move = rng.random()
        if move < 0.55:
            fail = int(rng.random() < 0.3)
            batch = client.enqueue_many([{"requestData": item(name, f"{step}-{k}", fail=fail,
                                                              sleep=0.02)}
                                         for k in range(rng.randint(1, 4))])
            jobs[name] += [j["id"] for j in batch]
        elif move < 0.75 and jobs[name]:
            try:
                client.cancel(rng.choice(jobs[name]))
            except GraphQLError as err:
                assert err.code == "CONFLICT"
        elif move < 0.9:
            failed = admin.failed_jobs(name)
            if failed:
                admin.retry(failed[0]["id"])
        else:
            admin.limits(name, paused=rng.random() < 0.5)
    # stop the worker: running jobs finish or are handed back, and the queues hold still
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    assert_figures_are_the_truth(admin, people.app_client, redis_sync_client, settings, people)
    for name in names[:3]:  # and with work waiting
        batch = clients[name].enqueue_many([{"requestData": item(name, k)} for k in range(3)])
        clients[name].cancel(batch[1]["id"])
    assert_figures_are_the_truth(admin, people.app_client, redis_sync_client, settings, people)


def test_the_figures_equal_a_recount_after_kill_9s(
        people, app_client, workers, settings, redis_sync_client):
    names = [f"chaos{n}_{uuid.uuid4().hex[:4]}" for n in range(4)]
    for name in names:
        people.add(name).enqueue_many(
            [{"requestData": item(name, i, sleep=0.05)} for i in range(25)])
    admin = people.admin()
    rng = random.Random(9)
    for _ in range(2):
        workers.start("--handler", HANDLER, "--concurrency", "2")
    workers.kill_and_replace(3, 0.5, rng, "--handler", HANDLER, "--concurrency", "2")
    for proc in workers.procs:  # the dead workers' leases are still held: processing counts them
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert_figures_are_the_truth(admin, app_client, redis_sync_client, settings, people)
    assert admin.overview()["processing"] > 0, "killed mid-job: leases are held"

    workers.start("--handler", HANDLER, "--concurrency", "4")  # reclaims, runs the rest
    wait_until(lambda: admin.overview()["queued"] == 0 == admin.overview()["processing"],
               timeout=90, message="every job to finish")
    assert_figures_are_the_truth(admin, app_client, redis_sync_client, settings, people)


def test_maintenance_heals_a_corrupted_counter_and_backlog_set(
        people, workers, settings, redis_sync_client):
    admin = people.admin()
    for name, n in (("heal_alice", 3), ("heal_bob", 1)):
        people.add(name)
        admin.limits(name, paused=True)  # nothing runs: the figures hold still
        people.by_name[name].enqueue_many([{"requestData": item(name, i)} for i in range(n)])
    base = Keys(settings.queue_prefix).base(0)
    redis_sync_client.hset(Keys.counts(base), "queued", 1000)
    redis_sync_client.zadd(Keys.backlog(base), {"ghost": 50, people.ids["heal_alice"]: 1,
                                                people.ids["heal_bob"]: 9})
    assert admin.overview()["queued"] == 1000
    assert admin.users(1)[0][0]["user"]["username"] == "heal_bob", "the corrupted order"

    workers.start("--handler", HANDLER)  # its maintenance recounts every 0.5 s

    wait_until(lambda: admin.overview()["queued"] == 4, message="the recount")
    [first], _ = admin.users(1)
    assert (first["user"]["username"], first["queued"]) == ("heal_alice", 3)


# ---- pause, redrive, purge ----

def test_a_paused_user_s_jobs_do_not_start_until_resumed(people, workers, settings):
    alice, bob = people.add("pause_alice"), people.add("pause_bob")
    admin = people.admin()
    assert admin.limits("pause_alice", paused=True)["paused"] is True
    mine = [j["id"] for j in alice.enqueue_many([{"requestData": item("a", i)}
                                                 for i in range(3)])]
    theirs = bob.enqueue(item("b", 0))["id"]
    workers.start("--handler", HANDLER)

    wait_until(lambda: bob.job(theirs)["status"] == "COMPLETED", message="bob's job")
    deadline = time.monotonic() + 1.5  # the worker is idle: would it start alice's?
    while time.monotonic() < deadline:
        assert all(alice.job(j)["status"] == "QUEUED" for j in mine), "a paused job started"
        time.sleep(0.1)
    row = next(r for r in admin.all_users() if r["user"]["username"] == "pause_alice")
    assert (row["queued"], row["limits"]["paused"]) == (3, True)
    assert admin.overview()["usersWaiting"] == 0

    admin.limits("pause_alice", paused=False)
    wait_until(lambda: all(alice.job(j)["status"] == "COMPLETED" for j in mine),
               message="alice's jobs after resume")


def test_retry_job_runs_a_failed_job_again_at_the_back_of_its_lane(
        people, app_client, workers, settings):
    alice = people.add("retry_alice")
    admin = people.admin()
    failing = alice.enqueue(item("r", 0, fail=1))["id"]  # fails its first attempt only
    worker = workers.start("--handler", HANDLER)
    wait_until(lambda: alice.job(failing)["status"] == "FAILED")
    assert alice.dequeue()["id"] == failing
    [dead] = admin.failed_jobs("retry_alice")
    assert dead["id"] == failing and "planned failure" in dead["error"]
    worker.send_signal(signal.SIGTERM)  # hold the queue still while we line it up
    worker.wait(timeout=30)
    later = alice.enqueue(item("r", 1))["id"]

    retried = admin.retry(failing)

    assert (retried["status"], retried["attempts"], retried["error"]) == ("QUEUED", 0, None)
    with pytest.raises(GraphQLError) as err:
        admin.retry(failing)
    assert err.value.code == "CONFLICT", "a QUEUED job is not retried"
    with pytest.raises(GraphQLError) as err:
        admin.retry(str(ObjectId()))
    assert err.value.code == "NOT_FOUND"
    workers.start("--handler", HANDLER)
    wait_until(lambda: alice.job(failing)["status"] == "COMPLETED")
    assert [alice.dequeue()["id"], alice.dequeue()["id"]] == [later, failing], \
        "the retried job ran after the one enqueued before the retry"
    assert admin.failed_jobs("retry_alice") == []

    async def history():
        return (await JobDocument.find_one(JobDocument.id == failing)).retries
    [earlier] = in_store(app_client, history)
    assert (earlier["status"], earlier["attempts"]) == ("FAILED", 1)
    assert "planned failure" in earlier["error"]


def test_a_retried_job_emits_a_second_processed_event(people, app_client, workers):
    alice = people.add("events_alice")
    admin = people.admin()
    jid = alice.enqueue(item("e", 0, fail=1))["id"]
    workers.start("--handler", HANDLER)
    wait_until(lambda: alice.job(jid)["status"] == "FAILED")
    admin.retry(jid)
    wait_until(lambda: alice.job(jid)["status"] == "COMPLETED")

    with app_client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init",
                      "payload": {"Authorization": f"Bearer {alice.token}"}})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {
            "query": 'subscription{processed(after:"0"){job{id status attempts}}}'}})
        got = [ws.receive_json()["payload"]["data"]["processed"]["job"] for _ in range(2)]
    assert got == [{"id": jid, "status": "FAILED", "attempts": 1},
                   {"id": jid, "status": "COMPLETED", "attempts": 1}]


def test_retry_failed_and_purge_queue_answer_how_many(people, workers, settings):
    alice, bob = people.add("bulk_alice"), people.add("bulk_bob")
    admin = people.admin()
    for client, name in ((alice, "ba"), (bob, "bb")):
        client.enqueue_many([{"requestData": item(name, i, fail=1)} for i in range(4)])
    worker = workers.start("--handler", HANDLER, "--concurrency", "2")
    wait_until(lambda: len(admin.failed_jobs()) == 8, message="eight FAILED jobs")
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)

    future = datetime.now(timezone.utc).replace(year=2100).isoformat()
    assert admin.retry_failed("bulk_alice", future) == 0, "none finished after then"
    assert admin.retry_failed("bulk_alice") == 4
    assert admin.retry_failed("bulk_alice") == 0, "they are QUEUED now"
    assert len(admin.failed_jobs("bulk_bob")) == 4
    assert admin.retry_failed() == 4, "every user's: bob's four"
    assert admin.purge("bulk_alice") == 4
    assert admin.purge("bulk_alice") == 0
    assert alice.stats()["queued"] == 0 and bob.stats()["queued"] == 4
    with pytest.raises(GraphQLError) as err:
        admin.purge("nobody_by_that_name")
    assert err.value.code == "NOT_FOUND"


# ---- history ----

def test_throughput_has_a_point_per_10_s_for_15_minutes_and_counts_what_happened(
        people, workers):
    alice = people.add("tp_alice")
    admin = people.admin()
    alice.enqueue_many([{"requestData": item("t", i, fail=int(i < 2))} for i in range(5)])
    workers.start("--handler", HANDLER)
    wait_until(lambda: admin.overview()["completedLastMinute"] == 3, message="the jobs")
    people.add("tp_bob")
    admin.limits("tp_bob", paused=True)  # two jobs that stay queued
    people.by_name["tp_bob"].enqueue_many([{"requestData": item("b", i)} for i in range(2)])

    points = admin.throughput()

    assert len(points) == 90
    starts = [datetime.fromisoformat(p["at"]).timestamp() for p in points]
    assert all(b - a == 10 for a, b in zip(starts, starts[1:])), "every 10 s, oldest first"
    assert starts[-1] <= time.time() < starts[-1] + 10 + 1, "the last one has just started"
    assert sum(p["enqueued"] for p in points) == 7
    assert (sum(p["completed"] for p in points), sum(p["failed"] for p in points)) == (3, 2)
    assert (points[0]["queued"], points[-1]["queued"]) == (0, 2), "queued then, and now"
    overview = admin.overview()
    assert (overview["failedLastMinute"], overview["queued"]) == (2, 2)
    with pytest.raises(GraphQLError) as err:
        admin.throughput(61)
    assert err.value.code == "BAD_USER_INPUT"


def test_admin_users_pages_through_the_backlog_then_everybody_else_by_name(people):
    admin = people.admin()
    queued = {"pg_d": 3, "pg_b": 1, "pg_e": 2, "pg_a": 0, "pg_c": 0}
    for name, n in queued.items():
        client = people.add(name)
        if n:
            client.enqueue_many([{"requestData": item(name, i)} for i in range(n)])
    admin_name = next(n for n in people.by_name if n.startswith("admin_"))

    for first in (1, 2, 50):
        by_backlog = [(r["user"]["username"], r["queued"])
                      for r in admin.all_users("BACKLOG", first=first)]
        assert by_backlog == [("pg_d", 3), ("pg_e", 2), ("pg_b", 1),
                              (admin_name, 0), ("pg_a", 0), ("pg_c", 0)], first
        by_name = [r["user"]["username"] for r in admin.all_users("USERNAME", first=first)]
        assert by_name == sorted(people.by_name), first
    with pytest.raises(GraphQLError) as err:
        admin.users(after="not a cursor")
    assert err.value.code == "BAD_USER_INPUT"
