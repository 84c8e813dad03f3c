"""`userqueue admin ...` (client/admin.py): the operators' commands of CONTRACT §9.

The first tests need no server: the arguments and what each action sends, the
confirmation a bulk change asks for, the tables drawn from canned API answers.

The rest run the real command (`python -m client`) as an operator does, against
a real API process started with ADMIN_USERNAME/ADMIN_PASSWORD (the contract's
bootstrap) and real workers. They are skipped while the API lacks the operation
they need (schema.graphql, which tests/test_schema_file.py keeps current, has
no `adminUsers` or `setRole`), and run as soon as it has it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from graphql import build_schema, parse, validate

from client import admin
from client.api import CliError
from client.cli import main, parser
from tests import test_cli
from tests.support import ROOT, ApiProcess, wait_until
from tests.test_cli import PASSWORD, login

cli = test_cli.cli  # the fixture: runs `python -m client` against `api_process`

SCHEMA = (ROOT / "schema.graphql").read_text()
ADMIN = "root_operator"
ADMIN_PASSWORD = "an operator's long password"


def needs(field: str):
    return pytest.mark.skipif(
        field not in SCHEMA,
        reason=f"the API has no `{field}` yet (CONTRACT §9; not in schema.graphql)")


# ---- canned answers, shaped as the contract's types ----

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)

USERS_PAGE = {
    "edges": [
        {"cursor": "c1", "node": {
            "user": {"username": "alice"}, "queued": 1200, "processing": 4, "scheduled": 10,
            "failed": 3, "oldestQueuedAt": "2026-11-30T11:56:55Z",
            "limits": {"concurrency": 4, "weight": 2, "startsPerMinute": 600,
                       "paused": False}}},
        {"cursor": "c2", "node": {
            "user": {"username": "bob"}, "queued": 7, "processing": 0, "scheduled": 0,
            "failed": 0, "oldestQueuedAt": "2026-11-28T09:30:00+00:00",
            "limits": {"concurrency": 1, "weight": 1, "startsPerMinute": 0, "paused": True}}},
        {"cursor": "c3", "node": {
            "user": {"username": "carol"}, "queued": 0, "processing": 0, "scheduled": 0,
            "failed": 0, "oldestQueuedAt": None,
            "limits": {"concurrency": 1, "weight": 1, "startsPerMinute": 0,
                       "paused": False}}},
    ],
    "pageInfo": {"hasNextPage": True, "endCursor": "c3"},
}

FAILED_PAGE = {
    "edges": [
        {"cursor": "f1", "node": {"id": "job-2", "owner": {"username": "bob"},
                                  "finishedAt": "2026-11-30T13:00:01.250000+01:00",
                                  "error": "ValueError: bad input\nTraceback (most recent...)"}},
        {"cursor": "f2", "node": {"id": "job-1", "owner": {"username": "mallory"},
                                  "finishedAt": "2026-11-30T11:59:00Z",
                                  "error": "\x1b]0;owned\x07\x1b[2J<img src=x onerror=alert(1)>"}},
    ],
    "pageInfo": {"hasNextPage": False, "endCursor": "f2"},
}

OVERVIEW = {"users": 120, "usersWaiting": 3, "queued": 1207, "processing": 4, "scheduled": 10,
            "completedLastMinute": 950, "failedLastMinute": 2, "oldestWaitSeconds": 185.4}

LIMITS = {"concurrency": 4, "weight": 2, "startsPerMinute": 0, "paused": True}

ANSWERS = {
    "adminOverview": OVERVIEW, "adminUsers": USERS_PAGE, "adminJobs": FAILED_PAGE,
    "setUserLimits": LIMITS, "retryJob": {"id": "job-1", "status": "QUEUED",
                                          "owner": {"username": "mallory"}},
    "retryFailed": 2, "purgeQueue": 7, "setRole": {"username": "bob", "role": "ADMIN"},
}


class FakeApi:
    """Stands in for the API: records each call, answers from ANSWERS."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    def call(self, query: str, variables: dict | None = None) -> dict:
        field = next(name for name in ANSWERS if name + "(" in query or name + "{" in query)
        self.calls.append((field, variables))
        return {field: ANSWERS[field]}

    def close(self) -> None:
        pass


@pytest.fixture
def api(monkeypatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(admin, "client", lambda args: fake)
    monkeypatch.setenv("USERQUEUE_TOKEN", "a-token")
    return fake


class Terminal(io.StringIO):
    """stdin as a person at a terminal types it."""

    def isatty(self) -> bool:
        return True


# ---- no server ----

@pytest.mark.parametrize("argv, field, variables", [
    (["users"], "adminUsers", {"order": "BACKLOG"}),  # first left out: the API's default
    (["users", "--order", "username", "--first", "5", "--after", "c9"], "adminUsers",
     {"order": "USERNAME", "first": 5, "after": "c9"}),
    (["pause", "bob"], "setUserLimits", {"username": "bob", "limits": {"paused": True}}),
    (["resume", "bob"], "setUserLimits", {"username": "bob", "limits": {"paused": False}}),
    (["limits", "bob"], "setUserLimits", {"username": "bob", "limits": {}}),  # only reads
    (["limits", "bob", "--concurrency", "4", "--starts-per-minute", "0"], "setUserLimits",
     {"username": "bob", "limits": {"concurrency": 4, "startsPerMinute": 0}}),
    (["failed"], "adminJobs", {}),
    (["failed", "--user", "bob", "--first", "2"], "adminJobs", {"username": "bob", "first": 2}),
    (["retry", "job-1"], "retryJob", {"id": "job-1"}),
    (["retry-failed", "--yes"], "retryFailed", {}),
    (["retry-failed", "--user", "bob", "--finished-after", "2026-11-30T10:00:00Z", "--yes"],
     "retryFailed", {"username": "bob", "finishedAfter": "2026-11-30T10:00:00+00:00"}),
    (["purge", "bob", "--yes"], "purgeQueue", {"username": "bob"}),
    (["role", "bob", "ADMIN"], "setRole", {"username": "bob", "role": "ADMIN"}),
    (["role", "bob", "user"], "setRole", {"username": "bob", "role": "USER"}),
    (["overview"], "adminOverview", {}),
])
def test_each_action_sends_its_operation(api, capsys, argv, field, variables):
    assert main(["admin", *argv]) == 0
    assert api.calls == [(field, variables)]
    assert capsys.readouterr().out


def test_json_prints_what_the_api_answered(api, capsys):
    for argv, answer in [(["users"], USERS_PAGE), (["failed"], FAILED_PAGE),
                         (["overview"], OVERVIEW), (["limits", "bob"], LIMITS),
                         (["purge", "bob", "--yes"], 7)]:
        assert main(["admin", *argv, "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == answer


def test_arguments_out_of_shape_are_refused_before_any_call(api, capsys):
    for argv in (["users", "--first", "0"], ["users", "--order", "newest"],
                 ["role", "bob", "root"], ["retry-failed", "--finished-after", "yesterday"],
                 ["limits", "bob", "--weight", "two"], ["purge"], []):
        with pytest.raises(SystemExit) as exit:
            parser().parse_args(["admin", *argv])
        assert exit.value.code == 2, argv
    assert api.calls == []


def test_finished_after_without_an_offset_is_local_time():
    args = parser().parse_args(["admin", "retry-failed", "--finished-after", "2026-11-30T10:00"])
    sent = datetime.fromisoformat(args.finished_after)
    assert sent.utcoffset() is not None
    assert sent == datetime(2026, 11, 30, 10, 0).astimezone()


@pytest.mark.parametrize("argv", [["purge", "bob"], ["retry-failed", "--user", "bob"]])
def test_a_bulk_change_without_a_terminal_needs_yes(api, capsys, monkeypatch, argv):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # piped in: not a person's answer
    assert main(["admin", *argv]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert api.calls == []


def test_a_bulk_change_on_a_terminal_asks_first(api, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    assert main(["admin", "purge", "bob"]) == 1
    err = capsys.readouterr().err
    assert "Cancel every QUEUED job of bob, scheduled ones included? [y/N]" in err
    assert "nothing was changed" in err
    assert api.calls == []

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    assert main(["admin", "purge", "bob"]) == 0
    out = capsys.readouterr()
    assert out.out == "cancelled 7 queued job(s) of bob\n"  # the question went to stderr
    assert api.calls == [("purgeQueue", {"username": "bob"})]


def test_the_command_refuses_a_bulk_change_from_a_pipe_before_calling_the_server():
    # the real command, stdin not a terminal, and a server that is not there
    r = subprocess.run([sys.executable, "-m", "client", "--url", "http://127.0.0.1:9/graphql",
                        "admin", "retry-failed"], stdin=subprocess.DEVNULL, capture_output=True,
                       check=False,
                       text=True, timeout=60, env={"PYTHONPATH": str(ROOT),
                                                   "USERQUEUE_TOKEN": "a-token"})
    assert r.returncode == 1
    assert "Retry every FAILED job of every user?" in r.stderr and "pass --yes" in r.stderr
    assert "cannot reach" not in r.stderr


def test_users_table_from_a_canned_page():
    assert admin.users_table(USERS_PAGE, NOW).splitlines() == [
        "USERNAME  QUEUED  PROCESSING  SCHEDULED  FAILED  OLDEST QUEUED  LIMITS",
        ("alice       1200           4         10       3  3m05s          "
         "concurrency 4, weight 2, 600 starts/min"),
        ("bob            7           0          0       0  2d02h          "
         "PAUSED, concurrency 1, weight 1, no start rate limit"),
        ("carol          0           0          0       0  -              "
         "concurrency 1, weight 1, no start rate limit"),
    ]


def test_users_says_where_the_next_page_starts(api, capsys):
    assert main(["admin", "users"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("USERNAME")
    assert err == "more: --after c3\n"


def test_failed_table_shows_the_error_s_first_line_and_no_terminal_controls():
    lines = admin.failed_table(FAILED_PAGE).splitlines()
    assert lines[:2] == [
        "ID     OWNER    FINISHED              ERROR",
        "job-2  bob      2026-11-30 12:00:01Z  ValueError: bad input",
    ]
    # a handler's error is anybody's text: shown, never acted on by the terminal
    assert lines[2] == ("job-1  mallory  2026-11-30 11:59:00Z  "
                        r"\x1b]0;owned\x07\x1b[2J<img src=x onerror=alert(1)>")
    assert "\x1b" not in admin.failed_table(FAILED_PAGE)


def test_overview_text():
    assert admin.overview_text(OVERVIEW).splitlines() == [
        "users                   120 (3 waiting)",
        "queued                  1207 (10 scheduled)",
        "processing              4",
        "completed, last minute  950",
        "failed, last minute     2",
        "longest wait            3m05s",
    ]
    assert admin.overview_text({**OVERVIEW, "oldestWaitSeconds": None}).endswith(
        "longest wait            -")


def test_limits_are_shown_for_the_user(api, capsys):
    assert main(["admin", "pause", "bob"]) == 0
    assert capsys.readouterr().out == (
        "bob: PAUSED, concurrency 4, weight 2, no start rate limit\n")


def test_api_errors_print_their_code(api, capsys, monkeypatch):
    def forbidden(query, variables=None):
        raise CliError("the operation needs role ADMIN", "FORBIDDEN")

    monkeypatch.setattr(api, "call", forbidden)
    assert main(["admin", "users"]) == 1
    assert capsys.readouterr().err == "error: FORBIDDEN: the operation needs role ADMIN\n"


@needs("adminUsers")
def test_every_admin_document_is_valid_against_the_served_schema():
    schema = build_schema(SCHEMA)
    for name in ("OVERVIEW", "USERS", "FAILED", "SET_LIMITS", "RETRY", "RETRY_FAILED", "PURGE",
                 "SET_ROLE"):
        assert validate(schema, parse(getattr(admin, name))) == [], name


# ---- against the real API ----

@pytest.fixture
def settings(settings_factory):
    return settings_factory(queue_max_attempts=1)  # a planned failure is FAILED at once


@pytest.fixture
def api_process(settings, tmp_path):
    """The API with an admin account made at start (CONTRACT §9's bootstrap)."""
    proc = ApiProcess(settings, tmp_path, ADMIN_USERNAME=ADMIN, ADMIN_PASSWORD=ADMIN_PASSWORD)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def as_admin(cli):
    r = cli("login", ADMIN, "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    return cli


@pytest.fixture
def users(cli, tmp_path):
    """Run the command as another user, each with a token file of their own."""

    def as_user(username, *args, input=None):
        token = tmp_path / f"token-{username}"
        return cli("--token-file", str(token), *args, input=input)

    def new(label):
        username = f"{label}_{uuid.uuid4().hex[:6]}"
        r = as_user(username, "register", username, "--password-stdin", "--login",
                    input=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
        return lambda *args, input=None: as_user(username, *args, input=input), username

    return new


def ok(r) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def as_json(r):
    return json.loads(ok(r))


@needs("adminUsers")
def test_a_normal_user_is_forbidden_every_action(cli):
    username = login(cli)
    for argv in (["overview"], ["users"], ["pause", username], ["resume", username],
                 ["limits", username], ["failed"], ["retry", "0" * 24],
                 ["retry-failed", "--yes"], ["purge", username, "--yes"],
                 ["role", username, "admin"]):
        r = cli("admin", *argv)
        assert r.returncode == 1, argv
        assert "FORBIDDEN" in r.stderr, (argv, r.stderr)

    r = cli("admin", "users", USERQUEUE_TOKEN="not-a-token")
    assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr


@needs("adminUsers")
def test_users_limits_overview_and_purge(as_admin, users):
    bob, bob_name = users("bob")
    carol, carol_name = users("carol")
    ok(bob("enqueue", "1", "2", "3"))
    ok(carol("enqueue", "1"))

    # most queued first; the table and --json say the same
    table = ok(as_admin("admin", "users")).splitlines()
    assert table[0].split()[:6] == ["USERNAME", "QUEUED", "PROCESSING", "SCHEDULED", "FAILED",
                                    "OLDEST"]
    assert [line.split()[:3] for line in table[1:3]] == [[bob_name, "3", "0"],
                                                        [carol_name, "1", "0"]]
    rows = [e["node"] for e in as_json(as_admin("admin", "users", "--json"))["edges"]]
    assert [(r["user"]["username"], r["queued"]) for r in rows] == [
        (bob_name, 3), (carol_name, 1), (ADMIN, 0)]
    assert rows[0]["oldestQueuedAt"] and rows[2]["oldestQueuedAt"] is None

    # by username, one a page: the next page's cursor is on stderr
    first = as_admin("admin", "users", "--order", "username", "--first", "1")
    assert ok(first).splitlines()[1].split()[0] == min(bob_name, carol_name, ADMIN)
    cursor = first.stderr.removeprefix("more: --after ").strip()
    second = ok(as_admin("admin", "users", "--order", "username", "--first", "1",
                         "--after", cursor))
    assert second.splitlines()[1].split()[0] == sorted([bob_name, carol_name, ADMIN])[1]

    overview = as_json(as_admin("admin", "overview", "--json"))
    assert (overview["users"], overview["usersWaiting"], overview["queued"],
            overview["processing"]) == (3, 2, 4, 0)

    # limits: pause, change some, resume; the rest stays as it was
    assert "PAUSED" in ok(as_admin("admin", "pause", bob_name))
    assert as_json(as_admin("admin", "limits", bob_name, "--concurrency", "2", "--weight", "3",
                            "--starts-per-minute", "60", "--json")) == {
        "concurrency": 2, "weight": 3, "startsPerMinute": 60, "paused": True}
    assert as_json(as_admin("admin", "resume", bob_name, "--json")) == {
        "concurrency": 2, "weight": 3, "startsPerMinute": 60, "paused": False}
    assert ok(as_admin("admin", "limits", bob_name)) == (
        f"{bob_name}: concurrency 2, weight 3, 60 starts/min\n")
    r = as_admin("admin", "limits", bob_name, "--concurrency", "0")
    assert r.returncode == 1 and "BAD_USER_INPUT" in r.stderr
    r = as_admin("admin", "pause", "nobody_" + uuid.uuid4().hex[:6])
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr

    # purge: refused from a pipe without --yes, done with it
    r = as_admin("admin", "purge", carol_name, input="y\n")
    assert r.returncode == 1 and "--yes" in r.stderr
    assert ok(as_admin("admin", "purge", carol_name, "--yes")) == (
        f"cancelled 1 queued job(s) of {carol_name}\n")
    assert as_json(carol("stats", "--json"))["queued"] == 0
    assert as_json(bob("stats", "--json"))["queued"] == 3


@needs("adminUsers")
def test_failed_jobs_listed_and_retried(as_admin, users, workers):
    bob, bob_name = users("bob")
    carol, carol_name = users("carol")
    # tests.handlers:record fails the first attempt of each (and QUEUE_MAX_ATTEMPTS=1), so a
    # retry by an operator completes
    bob_jobs = ok(bob("enqueue", '{"u": "b", "i": 0, "fail": 1}',
                      '{"u": "b", "i": 1, "fail": 1}')).split()
    carol_jobs = ok(carol("enqueue", '{"u": "c", "i": 0, "fail": 1}')).split()
    workers.start(QUEUE_HANDLER="tests.handlers:record")

    def failed(*args):
        return [e["node"] for e in as_json(as_admin("admin", "failed", *args, "--json"))["edges"]]

    wait_until(lambda: len(failed()) == 3, timeout=60, message="three FAILED jobs")
    table = ok(as_admin("admin", "failed", "--user", bob_name)).splitlines()
    assert table[0].split() == ["ID", "OWNER", "FINISHED", "ERROR"]
    assert sorted(line.split()[0] for line in table[1:]) == sorted(bob_jobs)
    assert all(line.split()[1] == bob_name and "planned failure 1" in line
               for line in table[1:])

    # one job: back in the queue, and it runs again
    # now QUEUED, unless the worker was quicker than the answer
    out = ok(as_admin("admin", "retry", bob_jobs[0]))
    assert out.startswith(f"{bob_jobs[0]} retried, now ") and f"(owner {bob_name})" in out
    wait_until(lambda: as_json(bob("job", bob_jobs[0], "--json"))["status"] == "COMPLETED",
               timeout=60, message="the retried job to complete")
    r = as_admin("admin", "retry", bob_jobs[0])
    assert r.returncode == 1 and "CONFLICT" in r.stderr
    r = as_admin("admin", "retry", "0" * 24)
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr

    # all of one user's; none finished after a time still to come
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ok(as_admin("admin", "retry-failed", "--finished-after", future, "--yes")) == (
        "retried 0 FAILED job(s) of every user\n")
    assert ok(as_admin("admin", "retry-failed", "--user", carol_name, "--yes")) == (
        f"retried 1 FAILED job(s) of {carol_name}\n")
    wait_until(lambda: as_json(carol("job", carol_jobs[0], "--json"))["status"] == "COMPLETED",
               timeout=60, message="carol's job to complete")
    assert [job["id"] for job in failed()] == [bob_jobs[1]]


@needs("setRole")
def test_role_makes_and_unmakes_an_admin(as_admin, users):
    bob, bob_name = users("bob")
    assert ok(as_admin("admin", "role", bob_name, "admin")) == f"{bob_name} is now ADMIN\n"
    assert as_json(as_admin("admin", "role", bob_name, "user", "--json")) == {
        "username": bob_name, "role": "USER"}
    r = bob("admin", "role", ADMIN, "user")
    assert r.returncode == 1 and "FORBIDDEN" in r.stderr
    r = as_admin("admin", "role", ADMIN, "user")  # the last admin
    assert r.returncode == 1 and "CONFLICT" in r.stderr
