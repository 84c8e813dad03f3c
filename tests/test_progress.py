"""Progress reports and `jobUpdates` (CONTRACT §8), against `python -m graph`
and `python -m workers` as a user runs them.

Handlers: tests/handlers.py (progress_sync, progress_async, progress_flood).
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportQueryError

from tests.support import wait_until
from tests.test_events import LEGACY_WS, TRANSPORT_WS, collect, listening, transport

JOB_UPDATES = gql("""
subscription($id: ID!, $after: String) {
  jobUpdates(id: $id, after: $after) {
    cursor kind job { id status attempts progress progressMessage requestData processedData }
  }
}""")


async def updates(api, token, job_id, after=None, count=None, protocol=TRANSPORT_WS,
                  started: asyncio.Event | None = None, timeout=60):
    """The updates a listener hears: the first `count`, or all until the subscription completes."""
    heard = []
    async with Client(transport=transport(api, token, protocol)) as session:
        async def listen():
            agen = session.subscribe(JOB_UPDATES, variable_values={"id": job_id, "after": after})
            if started:
                started.set()
            async for result in agen:
                heard.append(result["jobUpdates"])
                if count is not None and len(heard) >= count:
                    return

        await asyncio.wait_for(listen(), timeout)
    return heard


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, seq = cursor.split("-")
    return int(ms), int(seq)


@pytest.fixture
def client(api_process):
    return api_process.client().as_user()


@pytest.mark.parametrize("handler, result", [
    ("workers.handlers:upper", "A"),  # sync, one parameter
    ("tests.handlers:one_param_async", "A"),  # async, one parameter
    ("tests.handlers:progress_sync", "{id} done"),  # sync, the job too
    ("tests.handlers:progress_async", "{id} done"),  # async, the job too
])
def test_sync_and_async_handlers_with_one_or_two_parameters(client, workers, handler, result):
    data = json.dumps({"steps": 3}) if "progress" in handler else "a"
    job_id = client.enqueue(data)["id"]
    assert workers.run_burst("--handler", handler).returncode == 0
    job = client.call("query($id: ID!){job(id: $id){status processedData progress "
                      "progressMessage}}",
                      {"id": job_id})["job"]
    assert (job["status"], job["processedData"]) == ("COMPLETED", result.format(id=job_id))
    if "progress" in handler:
        assert (job["progress"], job["progressMessage"]) == (1.0, "step 3 of attempt 1")
    else:
        assert (job["progress"], job["progressMessage"]) == (None, None)


def test_a_value_outside_0_to_1_raises_value_error_in_the_handler(client, workers):
    job_id = client.enqueue("x")["id"]
    assert workers.run_burst("--handler", "tests.handlers:progress_out_of_range").returncode == 0
    job = client.call("query($id: ID!){job(id: $id){processedData progress}}",
                      {"id": job_id})["job"]
    assert job["processedData"].startswith("ValueError: progress must be from 0 to 1")
    assert job["progress"] is None


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_every_update_once_in_order_across_two_reconnects(
        api_process, client, workers, protocol):
    job_id = client.enqueue(json.dumps({"steps": 50, "gap": 0.15}))["id"]
    started = asyncio.Event()
    first = asyncio.create_task(updates(api_process, client.token, job_id, count=12,
                                        protocol=protocol, started=started))
    await listening(started, api_process)
    workers.start("--handler", "tests.handlers:progress_sync")
    part1 = await first  # goes away mid-way, twice, and comes back with its last cursor
    part2 = await updates(api_process, client.token, job_id, after=part1[-1]["cursor"],
                          count=20, protocol=protocol)
    assert part2[-1]["kind"] == "PROGRESS", "it left while the job was still reporting"
    part3 = await updates(api_process, client.token, job_id, after=part2[-1]["cursor"],
                          protocol=protocol)  # until the subscription completes
    heard = part1 + part2 + part3
    assert [u["kind"] for u in heard] == ["QUEUED", "STARTED"] + ["PROGRESS"] * 50 + ["COMPLETED"]
    assert [u["job"]["progress"] for u in heard[2:52]] == [i / 50 for i in range(1, 51)]
    assert heard[-1]["job"]["processedData"] == f"{job_id} done"
    assert all(u["job"]["requestData"] == heard[0]["job"]["requestData"] for u in heard)
    cursors = [cursor_key(u["cursor"]) for u in heard[1:]]
    assert cursors == sorted(set(cursors)), "each cursor once, increasing"


async def test_first_update_is_the_current_state_and_a_finished_job_completes(
        api_process, client, workers):
    job_id = client.enqueue(json.dumps({"steps": 2, "fail": 1, "gap": 0.2}))["id"]
    started = asyncio.Event()
    live = asyncio.create_task(updates(api_process, client.token, job_id, started=started))
    await listening(started, api_process)
    assert workers.run_burst("--handler", "tests.handlers:progress_async").returncode == 0
    heard = await live  # until the subscription completes
    assert [(u["kind"], u["job"]["attempts"], u["job"]["progress"]) for u in heard] == [
        ("QUEUED", 0, None),
        ("STARTED", 1, None), ("PROGRESS", 1, 0.5), ("PROGRESS", 1, 1.0), ("RETRYING", 1, 1.0),
        ("STARTED", 2, None), ("PROGRESS", 2, 0.5), ("PROGRESS", 2, 1.0), ("COMPLETED", 2, 1.0)]
    assert heard[0]["cursor"] == "0-0", "no update yet: the cursor replays them all"
    [only] = await updates(api_process, client.token, job_id)  # finished: one, then complete
    assert (only["kind"], only["job"]["status"], only["job"]["progress"]) == (
        "COMPLETED", "COMPLETED", 1.0)
    assert only["cursor"] == heard[-1]["cursor"]
    replay = await updates(api_process, client.token, job_id, after="0-0")
    assert replay == heard[1:]
    tail = await updates(api_process, client.token, job_id, after=heard[4]["cursor"])
    assert tail == heard[5:], "an exact replay from any cursor"


async def test_a_job_nobody_followed_gets_its_final_state_only(api_process, client, workers):
    job_id = client.enqueue(json.dumps({"steps": 2}))["id"]
    assert workers.run_burst("--handler", "tests.handlers:progress_sync").returncode == 0
    for after in (None, "0-0"):
        [only] = await updates(api_process, client.token, job_id, after=after)
        assert (only["kind"], only["job"]["processedData"]) == ("COMPLETED", f"{job_id} done")


async def test_a_cancelled_job_ends_its_updates(api_process, client):
    job_id = client.enqueue("never runs")["id"]
    started = asyncio.Event()
    heard = asyncio.create_task(updates(api_process, client.token, job_id, started=started))
    await listening(started, api_process)
    client.call("mutation($id: ID!){cancel(id: $id){status}}", {"id": job_id})
    assert [u["kind"] for u in await heard] == ["QUEUED", "CANCELLED"]


async def test_reports_closer_than_100ms_are_merged_and_the_last_is_kept(
        api_process, client, workers):
    job_id = client.enqueue(json.dumps({"seconds": 0.5}))["id"]
    started = asyncio.Event()
    live = asyncio.create_task(updates(api_process, client.token, job_id, started=started))
    await listening(started, api_process)
    assert workers.run_burst("--handler", "tests.handlers:progress_flood").returncode == 0
    assert (await live)[-1]["kind"] == "COMPLETED"
    job = client.call("query($id: ID!){job(id: $id){processedData progress progressMessage}}",
                      {"id": job_id})["job"]
    calls = int(job["processedData"])
    assert calls > 1000, "the handler was not slowed down to Redis's pace"
    assert (job["progress"], job["progressMessage"]) == (1.0, f"{calls} reports")
    replay = await updates(api_process, client.token, job_id, after="0-0")
    progress = [u for u in replay if u["kind"] == "PROGRESS"]
    assert 2 <= len(progress) <= 10, "about one write per 100 ms"
    assert progress[-1]["job"]["progressMessage"] == f"{calls} reports"


async def test_processed_listeners_hear_finishes_only(api_process, client, workers):
    ids = [client.enqueue(json.dumps({"steps": 3}))["id"] for _ in range(3)]
    started = asyncio.Event()
    listener = asyncio.create_task(collect(api_process, client.token, 3, started=started))
    await listening(started, api_process)
    assert workers.run_burst("--handler", "tests.handlers:progress_sync").returncode == 0
    heard = await listener
    assert [(e["job"]["id"], e["job"]["status"]) for e in heard] == [
        (i, "COMPLETED") for i in ids]


async def test_another_users_job_or_an_unknown_id_is_not_found(api_process, client):
    other = api_process.client().as_user()
    theirs = other.enqueue("private")["id"]
    for job_id in (theirs, "no-such-job", "6566f0f0f0f0f0f0f0f0f0f0"):
        with pytest.raises(TransportQueryError) as err:
            await updates(api_process, client.token, job_id, timeout=10)
        assert err.value.errors[0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("job_id", ["x" * 129, "a\nb", "", "ü"])
async def test_a_value_that_cannot_be_a_job_id_is_bad_user_input(api_process, client, job_id):
    with pytest.raises(TransportQueryError) as err:
        await updates(api_process, client.token, job_id, timeout=10)
    assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    await asyncio.to_thread(wait_until, lambda: api_process.subscriptions() == 0, 10)


@pytest.mark.parametrize("cursor", [
    "garbage", "1-x", "-1-1", " 1-1", "1-1\n", "١-1", "18446744073709551616-0", "1-1"])
@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_malformed_or_unknown_cursor_is_bad_user_input_and_frees_the_slot(
        api_process, client, cursor, protocol):
    job_id = client.enqueue("x")["id"]
    with pytest.raises(TransportQueryError) as err:
        await updates(api_process, client.token, job_id, after=cursor, protocol=protocol,
                      timeout=10)
    assert err.value.errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    wait_until(lambda: api_process.subscriptions() == 0, 10, message="the slot freed")


async def test_a_report_of_a_worker_whose_lease_was_lost_is_discarded(
        api_process, client, workers, settings):
    """The first worker is frozen (SIGSTOP) mid-job past its 1 s lease, a second
    reclaims and runs the job again; thawed, the first reports on: discarded."""
    job_id = client.enqueue(json.dumps({"steps": 8, "gap": 0.5}))["id"]
    started = asyncio.Event()
    live = asyncio.create_task(updates(api_process, client.token, job_id, started=started,
                                       timeout=120))
    await listening(started, api_process)
    frozen = workers.start("--handler", "tests.handlers:progress_sync", QUEUE_LEASE_SECONDS="1")
    await asyncio.to_thread(
        wait_until, lambda: (client.call("query($id: ID!){job(id: $id){progress}}",
                                         {"id": job_id})["job"]["progress"] or 0) >= 0.25,
        30, message="the first attempt reports")
    frozen.send_signal(signal.SIGSTOP)
    try:
        workers.start("--handler", "tests.handlers:progress_sync", QUEUE_LEASE_SECONDS="1")
        await asyncio.to_thread(
            wait_until, lambda: client.call("query($id: ID!){job(id: $id){attempts}}",
                                            {"id": job_id})["job"]["attempts"] == 2,
            30, message="the second worker reclaims it")
    finally:
        frozen.send_signal(signal.SIGCONT)  # it reports on, under its lost lease
    heard = await live
    assert heard == [heard[0]] + await updates(api_process, client.token, job_id, after="0-0")
    retried = next(i for i, u in enumerate(heard) if u["kind"] == "RETRYING")
    later = heard[retried + 1:]
    assert [u["kind"] for u in later] == ["STARTED"] + ["PROGRESS"] * 8 + ["COMPLETED"]
    assert all(u["job"]["attempts"] == 2 for u in later)
    assert all("attempt 1" not in (u["job"]["progressMessage"] or "") for u in later)
    job = client.call("query($id: ID!){job(id: $id){progress progressMessage}}",
                      {"id": job_id})["job"]
    assert job == {"progress": 1.0, "progressMessage": "step 8 of attempt 2"}


def test_process_isolation_refuses_a_handler_that_takes_the_job(workers):
    """Its reports would have to cross the process boundary: the worker says so at start."""
    done = workers.run_burst("--handler", "tests.handlers:progress_sync",
                             "--isolation", "process", timeout=60)
    assert done.returncode != 0
    assert "QUEUE_ISOLATION=process" in done.stdout + done.stderr
