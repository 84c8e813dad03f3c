"""Operation names become Prometheus label values only from a bounded set (issue 12, item 8).

Each label value is a series kept for the life of the process, and the
client chooses operation names: made-up names must not add series without
bound, nor long names make /metrics large.
"""

from __future__ import annotations

import re
import uuid

import pytest

from graph.http import metrics
from graph.http.metrics import MAX_NAME_CHARS, OperationNames


@pytest.fixture
def names(monkeypatch) -> OperationNames:
    """A fresh set of known names, so that other tests' names do not count here."""
    fresh = OperationNames(limit=100)
    monkeypatch.setattr(metrics, "OPERATION_NAMES", fresh)
    return fresh


def operation_labels(client) -> list[str]:
    text = client.get("/metrics").text
    return re.findall(r'^graphql_operations_total\{[^}]*operation="([^"]*)"', text, re.MULTILINE)


def test_made_up_operation_names_do_not_add_series(app_client, names):
    prefix = "Made" + uuid.uuid4().hex[:8]
    for i in range(300):
        reply = app_client.post("/graphql", json={"query": f"query {prefix}_{i} {{ __typename }}"})
        assert reply.json() == {"data": {"__typename": "Query"}}
    labels = operation_labels(app_client)
    mine = {label for label in labels if label.startswith(prefix)}
    assert len(mine) == 100  # the first 100 that validated; the others are "other"
    assert "other" in labels
    # a known name keeps its label
    assert f"{prefix}_0" in mine


def test_long_and_refused_names_are_not_labels(app_client, names):
    long_name = "L" * 100_000
    app_client.post("/graphql", json={"query": f"query {long_name} {{ __typename }}"})
    refused = "Refused" + uuid.uuid4().hex[:8]
    reply = app_client.post("/graphql", json={"query": f"query {refused} {{ nope }}"})
    assert reply.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    labels = operation_labels(app_client)
    assert "L" * MAX_NAME_CHARS in labels  # cut short
    assert all(len(label) <= MAX_NAME_CHARS for label in labels)
    assert refused not in labels
    assert len(app_client.get("/metrics").text) < 200_000
