"""The client address that the login throttles count is the connecting peer's,
unless that peer is a proxy named in FORWARDED_ALLOW_IPS (default: none).

Run against `python -m graph`, since uvicorn is what reads the proxy headers.
"""

from __future__ import annotations

import pytest

from tests.support import ApiProcess

MAX_FAILURES = 3
LOGIN = "mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}"


@pytest.fixture
def start_api(settings_factory, tmp_path):
    """Start the API with these environment variables; an HTTP client for it."""
    procs = []

    def start(**env):
        proc = ApiProcess(settings_factory(login_max_failures=MAX_FAILURES), tmp_path, **env)
        procs.append(proc)
        proc.start()
        return proc.client().http

    yield start
    for proc in procs:
        proc.stop()


def failed_login(http, forwarded_for: str) -> str:
    """The error code of a wrong password for one username, sent with this header."""
    body = http.post("/graphql", json={"query": LOGIN, "variables": {"u": "someone",
                                                                     "p": "wrong password"}},
                     headers={"X-Forwarded-For": forwarded_for}).json()
    return body["errors"][0]["extensions"]["code"]


def test_by_default_a_rotated_x_forwarded_for_does_not_escape_the_throttle(start_api):
    http = start_api()
    codes = [failed_login(http, f"198.51.100.{n}") for n in range(1, MAX_FAILURES + 3)]
    assert codes == ["UNAUTHENTICATED"] * MAX_FAILURES + ["RATE_LIMITED"] * 2


def test_x_forwarded_for_from_a_trusted_proxy_is_the_client_address(start_api):
    http = start_api(FORWARDED_ALLOW_IPS="127.0.0.1")
    rotated = [failed_login(http, f"198.51.100.{n}") for n in range(1, MAX_FAILURES + 3)]
    assert rotated == ["UNAUTHENTICATED"] * (MAX_FAILURES + 2)  # each a client of its own
    same = [failed_login(http, "203.0.113.5") for _ in range(MAX_FAILURES + 1)]
    assert same == ["UNAUTHENTICATED"] * MAX_FAILURES + ["RATE_LIMITED"]
