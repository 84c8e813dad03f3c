"""`python -m graph` as a user runs it: health, GraphiQL, a session, and stopping.

Every wait polls with a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import httpx
import pytest

from graph.settings import Settings
from tests.support import ROOT, Api, ApiProcess, free_port, wait_until

BROWSER = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
}
SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def exit_code_after(proc: subprocess.Popen, sig: int, timeout: float = 20) -> int:
    """Send a signal, then wait (with a deadline) for the process to end."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {timeout}s after signal {sig}") from None


def session(api: Api) -> dict:
    """What the README's example does: register, log in, ask who I am."""
    username, password = f"readme_{uuid.uuid4().hex[:8]}", "a long password"
    api.call("mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}",
             {"u": username, "p": password})
    token = api.call("mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
                     {"u": username, "p": password})["login"]["token"]
    me = api.call("{me{id username createdAt}}", token=token)["me"]
    assert me["username"] == username
    return me


@pytest.fixture
def dev_api(settings_factory, tmp_path):
    """`python -m graph` with APP_ENV=development, as on a developer's machine."""
    proc = ApiProcess(settings_factory(app_env="development"), tmp_path)
    proc.start()
    yield proc
    proc.stop()


def test_healthz_answers_200(api_process):
    r = httpx.get(f"{api_process.url}/healthz", timeout=5)
    assert r.status_code == 200


def test_readyz_answers_200_with_both_stores_up(api_process):
    r = httpx.get(f"{api_process.url}/readyz", timeout=5)
    assert r.status_code == 200, r.text


def test_a_browser_gets_graphiql_in_development(dev_api):
    r = httpx.get(f"{dev_api.url}/graphql", headers=BROWSER, timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
    assert "graphiql" in r.text.lower()


def test_graphiql_can_load_the_schema_without_a_token(dev_api):
    """The explorer introspects before anyone logs in."""
    data = dev_api.client().call("{__schema{queryType{name} mutationType{name}}}")
    assert data["__schema"]["queryType"]["name"] == "Query"
    assert data["__schema"]["mutationType"]["name"] == "Mutation"


def test_a_session_works_over_real_http(api_process):
    session(api_process.client())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_api_with_exit_code_0(api_process, sig):
    session(api_process.client())
    assert exit_code_after(api_process.proc, sig) == 0, api_process.log_path.read_text()


def test_sigterm_with_a_client_connected_still_exits_0(api_process):
    with httpx.Client(base_url=api_process.url, timeout=5) as client:  # a kept-alive connection
        assert client.get("/healthz").status_code == 200
        assert exit_code_after(api_process.proc, signal.SIGTERM) == 0


def test_with_the_embedded_defaults_it_serves_then_stops_cleanly(tmp_path):
    """No REDIS_URL, no MONGO_URI: both embedded, both announced, both stopped at exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}
    env.update(HOST="127.0.0.1", PORT=str(port), PYTHONPATH=str(ROOT))
    log_path = tmp_path / "api.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "graph"], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, message="the API with embedded stores to be ready")
        session(Api(httpx.Client(base_url=url, timeout=20)))
        output = log_path.read_text()
        assert "REDIS_URL" in output and "MONGO_URI" in output, output
        redis_url_file = tmp_path / ".queue" / "redis.url"
        assert redis_url_file.exists(), "the embedded Redis's address is not published"
    finally:
        code = exit_code_after(proc, signal.SIGTERM) if proc.poll() is None else proc.returncode
    assert code == 0, log_path.read_text()
    assert not redis_url_file.exists(), "the embedded Redis was left behind"
