"""The operational endpoints: liveness, readiness, metrics."""

import pytest

from tests.support import free_port


def test_healthz_answers_while_up(app_client):
    assert app_client.get("/healthz").status_code == 200


def test_readyz_is_ready_when_both_stores_answer(app_client):
    r = app_client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


def test_readyz_names_redis_when_it_is_gone(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app

    settings = settings_factory()
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services
        # point the client at a port where nothing listens
        from engine import connection

        services.redis = connection.client(f"redis://127.0.0.1:{free_port()}/0")
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["failing"] == ["redis"]


def test_metrics_are_prometheus_text(app_client):
    r = app_client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in r.text


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_show_waiting_work_and_operations(api_process):
    import httpx

    from tests.support import wait_until

    client = api_process.client().as_user()
    client.enqueue("waits")  # no worker runs: it stays queued

    def sampled():
        text = httpx.get(api_process.url + "/metrics").text
        return (metric(text, "queue_users_waiting") or 0) >= 1 and text

    text = wait_until(sampled, timeout=15, message="the queue gauges to be sampled")
    assert metric(text, "queue_next_job_wait_seconds") > 0
    assert metric(text, "queue_jobs_enqueued_total") >= 1
    assert 'graphql_operations_total{code="OK",operation="anonymous",type="mutation"}' in text


def counted(app_client, code: str) -> float:
    """graphql_operations_total summed over operations, for one code."""
    total = 0.0
    for line in app_client.get("/metrics").text.splitlines():
        if line.startswith("graphql_operations_total{") and f'code="{code}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("query, code", [
    ("{ me { id ", "GRAPHQL_PARSE_FAILED"),
    ("{ nope }", "GRAPHQL_VALIDATION_FAILED"),
    ("{ " + "me { id } " * 2000 + "}", "QUERY_TOO_COMPLEX"),  # over the token limit
])
def test_refused_documents_are_counted_with_their_code(app_client, query, code):
    before = counted(app_client, code)
    reply = app_client.post("/graphql", json={"query": query}).json()
    assert reply["errors"][0]["extensions"]["code"] == code
    assert counted(app_client, code) == before + 1
