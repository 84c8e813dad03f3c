"""Accounts as a client meets them: register, login, `me`, throttled failures.

Checks on what MongoDB holds go through the Beanie documents of graph/store.py,
run on the app's own event loop, so they hold for the in-memory store and for
a real MongoDB (MONGO_URI) alike.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from starlette.testclient import TestClient

from tests.support import Api, GraphQLError

MAX_FAILURES = 3
TTL = 1234

REGISTER = "mutation($u:String!,$p:String!){register(username:$u,password:$p){id username createdAt}}"
LOGIN = ("mutation($u:String!,$p:String!){login(username:$u,password:$p)"
         "{token expiresAt user{id username createdAt}}}")
ME = "{me{id username createdAt}}"
PASSWORD = "correct horse battery"


@pytest.fixture
def settings(settings_factory):
    """This module's settings: a small failure budget and a TTL that is not the default."""
    return settings_factory(login_max_failures=MAX_FAILURES, jwt_ttl_seconds=TTL)


def name(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def register(api: Api, username: str, password: str = PASSWORD) -> dict:
    return api.call(REGISTER, {"u": username, "p": password})["register"]


def login(api: Api, username: str, password: str = PASSWORD) -> dict:
    return api.call(LOGIN, {"u": username, "p": password})["login"]


def error_of(fn, *args) -> GraphQLError:
    with pytest.raises(GraphQLError) as info:
        fn(*args)
    return info.value


def stored_user(app_client, username: str) -> dict | None:
    """The raw MongoDB document of a user, read on the app's own event loop."""
    from graph.store import User

    async def find():
        return await User.get_pymongo_collection().find_one({"username_key": username.casefold()})

    return app_client.portal.call(find)


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.tzinfo is not None, f"{value!r} has no time zone"
    return parsed


# ---------------------------------------------------------------- register


@pytest.mark.parametrize("username", ["abc", "A" * 64, "Some.User_name-42", "0.-_", "___"])
def test_register_accepts_usernames_within_the_rules(api, username):
    user = register(api, username)
    assert user["username"] == username
    assert user["id"]
    created = parse_time(user["createdAt"])
    assert abs(created - datetime.now(timezone.utc)) < timedelta(minutes=1)


@pytest.mark.parametrize("username", [
    "ab",                       # too short
    "a" * 65,                   # too long
    "",
    "has space",
    "semi;colon",
    "slash/name",
    "at@sign",
    "émile",                    # non-ASCII letter
    "ｆｕｌｌwidth",              # non-ASCII letters that look like ASCII
    "trailing\n",               # a newline is not one of the allowed characters
    "new\nline",
    "tab\tname",
    "null\x00byte",
])
def test_register_refuses_usernames_outside_the_rules(api, username):
    err = error_of(register, api, username)
    assert err.code == "BAD_USER_INPUT", err.errors


def test_register_refuses_a_trailing_newline_and_keeps_the_name_free(api):
    base = name()
    assert error_of(register, api, base + "\n").code == "BAD_USER_INPUT"
    assert register(api, base)["username"] == base


@pytest.mark.parametrize("length", [8, 1024])
def test_register_accepts_passwords_of_8_to_1024_characters(api, length):
    username = name()
    password = ("pässwörd" * 200)[:length]
    register(api, username, password)
    assert login(api, username, password)["user"]["username"] == username


@pytest.mark.parametrize("length", [0, 7, 1025, 5000])
def test_register_refuses_passwords_outside_8_to_1024_characters(api, length):
    err = error_of(register, api, name(), "p" * length)
    assert err.code == "BAD_USER_INPUT"


def test_usernames_are_unique_without_regard_to_case(api):
    username = name("Alice")
    register(api, username)
    for variant in (username, username.upper(), username.lower(), username.swapcase()):
        err = error_of(register, api, variant)
        assert err.code == "CONFLICT", variant


def test_simultaneous_registrations_of_one_name_give_one_user(api):
    username = name("Race")
    variants = [username, username.upper(), username.lower(), username.swapcase()] * 2

    def attempt(variant):
        try:
            return register(api, variant)
        except GraphQLError as exc:
            return exc.code

    with ThreadPoolExecutor(len(variants)) as pool:
        results = list(pool.map(attempt, variants))
    created = [r for r in results if isinstance(r, dict)]
    assert len(created) == 1, results
    assert sorted(r for r in results if not isinstance(r, dict)) == ["CONFLICT"] * (len(variants) - 1)


def test_the_password_is_stored_as_an_argon2_hash_never_in_clear(api, app_client):
    from passlib.hash import argon2

    username, password = name(), "a secret nobody else knows"
    register(api, username, password)
    doc = stored_user(app_client, username)
    assert doc is not None
    assert password not in repr(doc)
    assert doc["password_hash"].startswith("$argon2")
    assert argon2.verify(password, doc["password_hash"])
    assert not argon2.verify(password + "!", doc["password_hash"])


def test_register_returns_what_me_later_returns(api):
    username = name()
    user = register(api, username)
    token = login(api, username)["token"]
    assert api.call(ME, token=token)["me"] == user


# ---------------------------------------------------------------- login


def test_login_gives_a_token_that_me_accepts(api):
    username = name()
    user = register(api, username)
    payload = login(api, username)
    assert payload["user"] == user
    me = Api(api.http, payload["token"]).call(ME)["me"]
    assert me == user


def test_login_is_case_insensitive_on_the_username_but_not_the_password(api):
    username = name("Mixed")
    register(api, username, "Case Matters Here")
    assert login(api, username.upper(), "Case Matters Here")["user"]["username"] == username
    assert error_of(login, api, username, "case matters here").code == "UNAUTHENTICATED"


def test_wrong_username_and_wrong_password_get_the_same_error(api):
    username = name()
    register(api, username)
    wrong_password = error_of(login, api, username, "not the password")
    wrong_username = error_of(login, api, name("nobody"), PASSWORD)
    assert wrong_password.code == wrong_username.code == "UNAUTHENTICATED"
    assert wrong_password.errors[0]["message"] == wrong_username.errors[0]["message"]
    assert wrong_password.errors[0].get("extensions") == wrong_username.errors[0].get("extensions")


@pytest.mark.parametrize("username,password", [
    ("x" * 5000, PASSWORD),          # longer than any username could be
    ("bad name!", PASSWORD),         # not a possible username
    ("", ""),
    ("someone", "p" * 100_000),      # longer than any password could be
])
def test_impossible_credentials_are_just_wrong(api, username, password):
    assert error_of(login, api, username, password).code == "UNAUTHENTICATED"


def test_auth_payload_expires_after_jwt_ttl_seconds(api, settings):
    assert settings.jwt_ttl_seconds == TTL
    username = name()
    register(api, username)
    before = datetime.now(timezone.utc)
    payload = login(api, username)
    after = datetime.now(timezone.utc)
    expires = parse_time(payload["expiresAt"])
    assert before + timedelta(seconds=TTL - 1) <= expires <= after + timedelta(seconds=TTL)
    claims = jwt.decode(payload["token"], options={"verify_signature": False})
    header = jwt.get_unverified_header(payload["token"])
    assert header["alg"] == "HS256"
    assert claims["sub"] == payload["user"]["id"]
    assert claims["exp"] == int(expires.timestamp())
    assert claims["exp"] - claims["iat"] == TTL


def test_me_needs_a_token(api):
    assert error_of(api.call, ME).code == "UNAUTHENTICATED"


def test_each_user_sees_only_themselves(api):
    alice, bob = name("alice"), name("bob")
    register(api, alice)
    register(api, bob)
    assert api.call(ME, token=login(api, alice)["token"])["me"]["username"] == alice
    assert api.call(ME, token=login(api, bob)["token"])["me"]["username"] == bob


# ---------------------------------------------------------------- throttling


def fail(api: Api, username: str) -> str:
    return error_of(login, api, username, "wrong password!").code


def test_repeated_failures_are_rate_limited_even_with_the_right_password(api):
    username = name()
    register(api, username)
    assert [fail(api, username) for _ in range(MAX_FAILURES)] == ["UNAUTHENTICATED"] * MAX_FAILURES
    assert fail(api, username) == "RATE_LIMITED"
    assert error_of(login, api, username).code == "RATE_LIMITED"
    assert error_of(login, api, username.upper()).code == "RATE_LIMITED"


def test_unknown_usernames_are_throttled_like_known_ones(api):
    ghost = name("ghost")
    codes = [fail(api, ghost) for _ in range(MAX_FAILURES + 1)]
    assert codes == ["UNAUTHENTICATED"] * MAX_FAILURES + ["RATE_LIMITED"]


def test_a_throttled_username_does_not_block_other_usernames_from_that_address(api):
    blocked, other = name("blocked"), name("other")
    register(api, blocked)
    register(api, other)
    for _ in range(MAX_FAILURES):
        fail(api, blocked)
    assert fail(api, blocked) == "RATE_LIMITED"
    assert login(api, other)["user"]["username"] == other
    assert fail(api, other) == "UNAUTHENTICATED"


def test_a_throttled_username_can_still_log_in_from_another_address(settings):
    from graph.app import create_app

    app = create_app(settings)

    async def from_address(scope, receive, send):
        """The app, with the client address taken from a test header."""
        if scope["type"] == "http":
            address = dict(scope["headers"]).get(b"x-test-client")
            if address:
                scope = dict(scope, client=(address.decode(), 4000))
        await app(scope, receive, send)

    with TestClient(from_address) as http:
        here = Api(_WithHeaders(http, {"x-test-client": "198.51.100.1"}))
        elsewhere = Api(_WithHeaders(http, {"x-test-client": "203.0.113.9"}))
        username = name()
        register(here, username)
        for _ in range(MAX_FAILURES):
            fail(here, username)
        assert error_of(login, here, username).code == "RATE_LIMITED"
        assert login(elsewhere, username)["user"]["username"] == username
        assert error_of(login, here, username).code == "RATE_LIMITED"


class _WithHeaders:
    """An HTTP client that adds fixed headers to each POST."""

    def __init__(self, http, headers: dict):
        self.http, self.headers = http, headers

    def post(self, url, headers=None, **kwargs):
        return self.http.post(url, headers={**self.headers, **(headers or {})}, **kwargs)


def test_a_successful_login_resets_the_failure_count(api):
    username = name()
    register(api, username)
    for _round in range(3):
        for _ in range(MAX_FAILURES - 1):
            assert fail(api, username) == "UNAUTHENTICATED"
        assert login(api, username)["user"]["username"] == username
    for _ in range(MAX_FAILURES):
        assert fail(api, username) == "UNAUTHENTICATED"
    assert fail(api, username) == "RATE_LIMITED"


def test_simultaneous_failures_cannot_get_past_the_throttle(api):
    """A burst of parallel guesses gets no more tries than one guess after another."""
    username = name()
    register(api, username)
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: fail(api, username), range(12)))
    assert codes.count("UNAUTHENTICATED") == MAX_FAILURES, codes
    assert codes.count("RATE_LIMITED") == 12 - MAX_FAILURES, codes
    assert error_of(login, api, username).code == "RATE_LIMITED"


def test_the_throttle_lives_in_redis_with_an_expiry(api, settings, redis_sync_client):
    """Failures are counted where every API process sees them, and forgotten in time."""
    username = name()
    register(api, username)
    fail(api, username)
    keys = [k for k in redis_sync_client.scan_iter(f"{settings.queue_prefix}:*")
            if username in k]
    assert keys, "no failure counter in Redis"
    for key in keys:
        ttl = redis_sync_client.ttl(key)
        assert 0 < ttl <= settings.login_window_seconds
