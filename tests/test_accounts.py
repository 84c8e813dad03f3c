"""Accounts as a client meets them: register, login, `me`, throttled failures.

Checks on what MongoDB holds go through the Beanie documents of graph/store.py,
run on the app's own event loop, so they hold for the in-memory store and for
a real MongoDB (MONGO_URI) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
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


@pytest.fixture
def client_at(settings_factory):
    """The app, and clients that it sees coming from the addresses they are given for."""
    from graph.app import create_app

    with contextlib.ExitStack() as stack:
        def start(**overrides):
            app = create_app(settings_factory(login_max_failures=MAX_FAILURES,
                                              jwt_ttl_seconds=TTL, **overrides))

            async def from_address(scope, receive, send):
                """The app, with the client address taken from a test header."""
                if scope["type"] == "http":
                    address = dict(scope["headers"]).get(b"x-test-client")
                    if address:
                        scope = dict(scope, client=(address.decode(), 4000))
                await app(scope, receive, send)

            http = stack.enter_context(TestClient(from_address))
            return lambda address: Api(_WithHeaders(http, {"x-test-client": address}))

        yield start


def test_a_throttled_username_can_still_log_in_from_another_address(client_at):
    at = client_at()
    here, elsewhere = at("198.51.100.1"), at("203.0.113.9")
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


# ---------------------------------------------------------------- floods


def code_of(fn, *args) -> str | None:
    try:
        fn(*args)
    except GraphQLError as exc:
        return exc.code
    return None


def test_a_login_flood_from_one_address_is_refused_while_others_log_in(client_at):
    """40 logins at once with random usernames: each is a first failure for its
    username, so only the count per address can stop them before they hash."""
    at = client_at(auth_attempts_per_minute=5)
    flooder, user = at("198.51.100.7"), at("203.0.113.20")
    username = name()
    register(user, username)
    with ThreadPoolExecutor(20) as pool:
        flood = pool.map(lambda _: code_of(login, flooder, name("random")), range(40))
        real = login(user, username)
        codes = list(flood)
    assert codes.count("UNAUTHENTICATED") == 5, codes
    assert codes.count("RATE_LIMITED") == 35, codes
    assert real["user"]["username"] == username


def test_registrations_count_against_the_same_budget_per_address(client_at,
                                                                 redis_sync_client):
    at = client_at(auth_attempts_per_minute=3)
    here, elsewhere = at("198.51.100.33"), at("203.0.113.33")
    username = name()
    for n in range(3):
        register(here, username if n == 0 else name())
    assert error_of(register, here, name()).code == "RATE_LIMITED"
    assert error_of(login, here, username).code == "RATE_LIMITED"  # right password, too late
    assert register(elsewhere, name())
    assert login(elsewhere, username)["user"]["username"] == username
    # counted in Redis, where every API process sees it, and forgotten within a minute
    keys = list(redis_sync_client.scan_iter("*:auth:198.51.100.33"))
    assert keys
    assert all(0 < redis_sync_client.ttl(k) <= 60 for k in keys)


def test_an_ipv6_client_is_counted_by_its_64_network(client_at):
    """One host commonly holds a whole /64: rotating within it is one client."""
    at = client_at(auth_attempts_per_minute=3)
    codes = [code_of(login, at(f"2001:db8:1:2::{n:x}"), name("random")) for n in range(1, 6)]
    assert codes == ["UNAUTHENTICATED"] * 3 + ["RATE_LIMITED"] * 2
    assert code_of(login, at("2001:db8:1:3::1"), name("random")) == "UNAUTHENTICATED"


def test_password_hashing_is_bounded_and_refuses_when_full(settings_factory, monkeypatch):
    """One hash at a time and none waiting: while a registration hashes, a login and
    another registration are refused at once, and work again when the slot is free."""
    from graph import auth
    from graph.app import create_app

    settings = settings_factory(auth_max_concurrent_hashes=1, auth_max_waiting_hashes=0,
                                login_max_failures=MAX_FAILURES)
    with TestClient(create_app(settings)) as http:
        api = Api(http)
        username = name()
        register(api, username)
        hashing, release = threading.Event(), threading.Event()
        real_hash = auth._passwords.hash

        def slow_hash(password):
            hashing.set()
            release.wait(10)
            return real_hash(password)

        monkeypatch.setattr(auth._passwords, "hash", slow_hash)
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(register, api, name("slow"))
            assert hashing.wait(10), "the registration never reached the hash"
            assert error_of(login, api, username).code == "RATE_LIMITED"
            assert error_of(register, api, name()).code == "RATE_LIMITED"
            release.set()
            assert slow.result(timeout=30)["username"].startswith("slow_")
        # a login refused for being busy checked no password: it is no failed login
        for _ in range(MAX_FAILURES - 1):
            assert fail(api, username) == "UNAUTHENTICATED"
        assert login(api, username)["user"]["username"] == username


async def test_hashing_lets_a_few_wait_for_a_slot_and_refuses_the_rest(monkeypatch):
    from graph import auth
    from graph.errors import RateLimited

    release = threading.Event()
    monkeypatch.setattr(auth._passwords, "hash", lambda password: release.wait(10) and "h")
    passwords = auth.Passwords(concurrent=1, waiting=1)
    running = asyncio.create_task(passwords.hash("first password"))
    waiting = asyncio.create_task(passwords.hash("second password"))
    await asyncio.sleep(0)  # both tasks are in: one hashing, one waiting for the slot
    with pytest.raises(RateLimited):
        await passwords.hash("third password")
    release.set()
    assert await running == await waiting == "h"
    assert await passwords.hash("fourth password") == "h"  # the slots are free again


# ---------------------------------------------------------------- password policy


@pytest.mark.parametrize("password", [
    "12345678", "password1", "PASSWORD1", "Qwertyuiop", "iloveyou", " sunshine ", "1q2w3e4r5t",
])
def test_register_refuses_the_most_common_passwords(api, password):
    err = error_of(register, api, name(), password)
    assert err.code == "BAD_USER_INPUT"
    assert err.errors[0]["extensions"].get("field") == "password"


def test_a_strong_password_is_accepted(api):
    username = name()
    register(api, username, "violet kettle drums 42")
    assert login(api, username, "violet kettle drums 42")["user"]["username"] == username


# ---------------------------------------------------------------- changePassword


CHANGE = ("mutation($o:String!,$n:String!){changePassword(oldPassword:$o,newPassword:$n)"
          "{token expiresAt user{id username createdAt}}}")


def change_password(api: Api, token: str, old: str, new: str) -> dict:
    return api.call(CHANGE, {"o": old, "n": new}, token=token)["changePassword"]


def test_change_password_revokes_every_earlier_token_and_answers_a_fresh_one(api):
    username = name()
    user = register(api, username)
    first, second = login(api, username)["token"], login(api, username)["token"]
    changed = change_password(api, first, PASSWORD, "a brand new passphrase")
    assert changed["user"] == user
    assert parse_time(changed["expiresAt"]) > datetime.now(timezone.utc)
    for old in (first, second):
        assert error_of(api.call, ME, None, old).code == "UNAUTHENTICATED"
    assert api.call(ME, token=changed["token"])["me"] == user
    assert error_of(login, api, username).code == "UNAUTHENTICATED"
    assert api.call(ME, token=login(api, username, "a brand new passphrase")["token"])["me"] == user


def test_change_password_refuses_a_wrong_old_password_like_login_does(api):
    username = name()
    register(api, username)
    token = login(api, username)["token"]
    err = error_of(change_password, api, token, "not the password", "a brand new passphrase")
    wrong_login = error_of(login, api, username, "not the password")
    assert err.code == wrong_login.code == "UNAUTHENTICATED"
    assert api.call(ME, token=token)["me"]["username"] == username  # nothing changed
    assert login(api, username)["user"]["username"] == username


def test_wrong_old_passwords_are_throttled_like_failed_logins(api):
    username = name()
    register(api, username)
    token = login(api, username)["token"]
    codes = [code_of(change_password, api, token, f"guess number {n}", "a brand new passphrase")
             for n in range(MAX_FAILURES + 1)]
    assert codes == ["UNAUTHENTICATED"] * MAX_FAILURES + ["RATE_LIMITED"]
    assert error_of(change_password, api, token, PASSWORD, "a brand new passphrase").code == \
        "RATE_LIMITED"
    assert error_of(login, api, username).code == "RATE_LIMITED"


@pytest.mark.parametrize("new", ["12345678", "Password1", "short", "p" * 1025])
def test_the_new_password_follows_the_rules_of_register(api, new):
    username = name()
    register(api, username)
    token = login(api, username)["token"]
    assert error_of(change_password, api, token, PASSWORD, new).code == "BAD_USER_INPUT"
    assert api.call(ME, token=token)["me"]["username"] == username


def test_change_password_needs_a_token(api):
    username = name()
    register(api, username)
    err = error_of(api.call, CHANGE, {"o": PASSWORD, "n": "a brand new passphrase"})
    assert err.code == "UNAUTHENTICATED"
    assert login(api, username)["user"]["username"] == username


# ---------------------------------------------------------------- hash parameters

def test_new_hashes_use_owasp_argon2id_parameters(api, app_client):
    register(api, "hash_params")
    assert stored_user(app_client, "hash_params")["password_hash"].startswith(
        "$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_hash_made_with_older_parameters_still_logs_in_and_is_upgraded(api, app_client):
    from passlib.context import CryptContext

    from graph.store import User

    register(api, "old_hash")
    old_hash = CryptContext(schemes=["argon2"], argon2__memory_cost=65536, argon2__rounds=3,
                            argon2__parallelism=4).hash(PASSWORD)

    async def store_old_hash():
        await User.get_pymongo_collection().update_one(
            {"username_key": "old_hash"}, {"$set": {"password_hash": old_hash}})

    app_client.portal.call(store_old_hash)

    assert login(api, "old_hash")["token"]
    upgraded = stored_user(app_client, "old_hash")["password_hash"]
    assert upgraded != old_hash and upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert login(api, "old_hash")["token"], "the upgraded hash checks the same password"
