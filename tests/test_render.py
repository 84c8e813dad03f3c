"""The compiled rendering of `processed` events (graph/live/render.py) gives the same
JSON as graphql-core executing the same document, or steps aside."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from graphql import execute
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.jobs import JobRecord, JobStatus, UpdateKind
from graph.live.fanout import plan_for
from graph.schema import build_schema
from graph.types import Job, JobUpdate, ProcessedEvent

SCHEMA = build_schema()
JOB_FIELDS = ["id", "requestData", "status", "processedData", "error", "attempts",
              "createdAt", "startedAt", "finishedAt", "dequeuedAt", "__typename"]
T0 = datetime(2026, 11, 28, 3, 4, 5, 678000, tzinfo=timezone.utc)


def record(status: JobStatus, **fields) -> JobRecord:
    base = dict(id="j1", user_id="u1", request_data="héllo \"x\"", status=status, attempts=2,
                created_at=T0, started_at=T0 + timedelta(seconds=1),
                finished_at=T0 + timedelta(seconds=2))
    return JobRecord(**{**base, **fields})


RECORDS = [
    record(JobStatus.COMPLETED, processed_data="HÉLLO"),
    record(JobStatus.FAILED, error="boom\nline two", attempts=3),
    record(JobStatus.COMPLETED, processed_data="", dequeued_at=T0 + timedelta(seconds=9)),
]


def by_graphql_core(query: str, cursor: str, rec: JobRecord) -> str:
    plan = plan_for(SCHEMA, query, None, None)
    result = execute(plan.schema, plan.document, root_value=ProcessedEvent(
        cursor=cursor, job=Job.of(rec)))
    assert not result.errors
    return json.dumps({"data": result.data}, separators=(",", ":"))


def rendered(query: str, cursor: str, rec: JobRecord) -> str:
    plan = plan_for(SCHEMA, query, None, None)
    assert plan.compiled is not None, "this document takes the compiled path"
    return plan.render(cursor, rec)


@pytest.mark.parametrize("rec", RECORDS, ids=["completed", "failed", "dequeued"])
@pytest.mark.parametrize("query", [
    "subscription { processed { cursor job { id status finishedAt } } }",
    "subscription { processed { job { " + " ".join(JOB_FIELDS) + " } cursor __typename } }",
    "subscription S($a: String) { p: processed(after: $a) { c: cursor j: job { i: id s: status } }"
    " }",
])
def test_the_same_json_as_graphql_core(query, rec):
    assert rendered(query, "1764299045678-3", rec) == by_graphql_core(query, "1764299045678-3", rec)


selections = st.lists(st.tuples(st.sampled_from(JOB_FIELDS), st.booleans()),
                      min_size=1, max_size=12, unique_by=lambda t: t[0])


@settings(max_examples=60, deadline=None)
@given(fields=selections, outer_typename=st.booleans(), rec=st.sampled_from(RECORDS))
def test_any_plain_selection_matches_graphql_core(fields, outer_typename, rec):
    inner = " ".join(f"a{i}: {name}" if alias else name
                     for i, (name, alias) in enumerate(fields))
    query = "subscription { processed { %s cursor job { %s } } }" % (
        "__typename" if outer_typename else "", inner)
    assert rendered(query, "5-0", rec) == by_graphql_core(query, "5-0", rec)


@pytest.mark.parametrize("query", [
    "subscription { processed { ... on ProcessedEvent { cursor } } }",
    "subscription { processed { cursor @include(if: true) } }",
    "subscription { processed { job { id } job { status } } }",  # merged under one key
    "subscription { processed { ...F } } fragment F on ProcessedEvent { cursor }",
])
def test_other_documents_fall_back_to_graphql_core(query):
    plan = plan_for(SCHEMA, query, None, None)
    assert plan is not None and plan.compiled is None
    rec = RECORDS[0]
    assert plan.render("5-0", rec) == by_graphql_core(query, "5-0", rec)


@pytest.mark.parametrize("kind", list(UpdateKind))
@pytest.mark.parametrize("query", [
    'subscription { jobUpdates(id: "j1") { cursor kind job { id status progress'
    ' progressMessage attempts } } }',
    'subscription S($a: String) { u: jobUpdates(id: "j1", after: $a) { __typename k: kind'
    ' j: job { ' + " ".join(JOB_FIELDS) + ' } } }',
])
def test_job_updates_render_as_graphql_core_does(query, kind):
    rec = record(JobStatus.PROCESSING, progress=0.375, progress_message="ünd \"so\"")
    plan = plan_for(SCHEMA, query, None, None)
    assert plan.compiled is not None, "jobUpdates takes the compiled path too"
    result = execute(plan.schema, plan.document, root_value=JobUpdate(
        cursor="7-1", kind=kind, job=Job.of(rec)))
    assert not result.errors
    assert plan.render("7-1", kind, rec) == json.dumps({"data": result.data}, separators=(",", ":"))
