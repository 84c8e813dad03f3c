"""CONTRACT §7 with worker processes: ordering keys and per-user concurrency
under kill -9 chaos (trace of starts and ends, checked for overlap and order)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from engine import connection
from engine.queue import Queue
from tests.handlers import read_log
from tests.support import wait_until
from tests.test_workers import HANDLER, assert_no_overlap, attempts_by_user, finished, item

KEYS = ("a", "b", "c")
CONCURRENCY = 2


def set_limits(settings, uid: str, **limits) -> None:
    """The operators' engine call (setUserLimits uses it too)."""
    async def go():
        client = connection.client(settings.redis_url)
        try:
            await Queue.from_settings(client, settings).set_limits(uid, **limits)
        finally:
            await client.aclose()
    asyncio.run(go())


def most_at_once(spans: list[dict]) -> int:
    """The most attempts running at one moment."""
    edges = sorted([(s["start"], 1) for s in spans] + [(s["end"], -1) for s in spans],
                   key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def test_chaos_keys_run_in_order_one_at_a_time_and_the_user_at_most_its_concurrency(
        api, workers, settings, redis_sync_client):
    users = [api.as_user() for _ in range(4)]
    ids: dict[str, list[str]] = {}  # "u<n>/<key>" -> job ids in enqueue order
    for n, client in enumerate(users):
        set_limits(settings, client.call("{me{id}}")["me"]["id"], concurrency=CONCURRENCY)
        items, lanes = [], []
        for i in range(45):
            key = KEYS[i % 3]
            lane = f"u{n}/{key}"
            items.append({"requestData": item(lane, i, sleep=random.choice([0, 0.01, 0.05])),
                          "orderingKey": key})
            lanes.append(lane)
        for lane, job in zip(lanes, client.enqueue_many(items)):
            ids.setdefault(lane, []).append(job["id"])
    rng = random.Random(11)
    # 8 slots a worker: even the first worker alone (the others may still be
    # starting on a loaded machine) has room for every user's 2 lanes at once
    slots = str(len(users) * CONCURRENCY)
    for _ in range(3):
        workers.start("--handler", HANDLER, "--concurrency", slots)
    workers.kill_and_replace(6, 0.5, rng, "--handler", HANDLER, "--concurrency", slots)

    for n, client in enumerate(users):
        mine = [j for lane, jids in ids.items() if lane.startswith(f"u{n}/") for j in jids]
        wait_until(lambda: finished(client, mine), timeout=90)
        assert {client.job(j)["status"] for j in mine} == {"COMPLETED"}
    log = read_log(redis_sync_client, settings.queue_prefix)
    spans = attempts_by_user(log)  # by lane: the handler's "u" is "u<n>/<key>"
    per_user = defaultdict(list)
    for lane, lane_spans in spans.items():
        assert_no_overlap(lane_spans)  # never two jobs of one user and key at once
        per_user[lane.split("/")[0]] += lane_spans
        # start order = due order (enqueue order here): each job's first start
        first = {}
        for e in log:
            if e["ev"] == "start" and e["u"] == lane:
                first.setdefault(e["i"], len(first))
        assert sorted(first, key=first.get) == sorted(first), f"{lane} started out of order"
    for user, user_spans in per_user.items():
        assert most_at_once(user_spans) <= CONCURRENCY, f"{user} ran more than {CONCURRENCY}"
    assert max(most_at_once(s) for s in per_user.values()) == CONCURRENCY, \
        "keys of one user ran side by side"
