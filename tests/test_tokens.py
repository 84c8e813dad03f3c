"""Tokens: only a valid HS256 token of an existing user gets in.

Tokens are made here the way an attacker or a broken client would make them
(pyjwt and hand-built JSON), then sent as a client sends them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from bson import ObjectId

from tests.support import Api, GraphQLError

ME = "{me{id username}}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, claims: dict, secret: str | None, digest=hashlib.sha256) -> str:
    """A JWT built byte by byte: any header, any claims, HMAC-signed or not at all."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    sig = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(sig)}"


@pytest.fixture
def user(api):
    """A registered, logged-in user: (Api with their token, their id, the token)."""
    me = api.as_user()
    uid = me.call(ME)["me"]["id"]
    return me, uid, me.token


@pytest.fixture
def secret(settings) -> str:
    return settings.jwt_secret


def claims_for(uid: str, **changes) -> dict:
    now = int(time.time())
    claims = {"sub": uid, "iat": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def refused(api: Api, token: str | None, headers: dict | None = None) -> str:
    """The error code of `me` called with this token (or these raw headers)."""
    if headers is None:
        headers = {"Authorization": f"Bearer {token}"}
    headers = {k: v.encode() if isinstance(v, str) and not v.isascii() else v
               for k, v in headers.items()}
    body = api.http.post("/graphql", json={"query": ME}, headers=headers).json()
    assert body.get("errors"), f"accepted: {body}"
    assert body.get("data") is None
    return body["errors"][0]["extensions"]["code"]


def accepted(api: Api, token: str) -> dict:
    return api.call(ME, token=token)["me"]


# ---------------------------------------------------------------- what works


def test_the_login_token_works(api, user):
    _, uid, token = user
    assert accepted(api, token)["id"] == uid


def test_a_token_made_with_the_secret_works(api, user, secret):
    """The claims the contract names are all a token needs."""
    _, uid, _ = user
    assert accepted(api, jwt.encode(claims_for(uid), secret, algorithm="HS256"))["id"] == uid


def test_a_little_clock_skew_is_tolerated(api, user, secret):
    _, uid, _ = user
    token = jwt.encode(claims_for(uid, iat=int(time.time()) + 1), secret, algorithm="HS256")
    assert accepted(api, token)["id"] == uid


# ---------------------------------------------------------------- time


def test_an_expired_token_is_refused(api, user, secret):
    _, uid, _ = user
    now = int(time.time())
    token = jwt.encode(claims_for(uid, iat=now - 3600, exp=now - 60), secret, algorithm="HS256")
    assert refused(api, token) == "UNAUTHENTICATED"


def test_expiry_leeway_is_at_most_two_seconds(api, user, secret):
    _, uid, _ = user
    now = int(time.time())
    token = jwt.encode(claims_for(uid, iat=now - 600, exp=now - 5), secret, algorithm="HS256")
    assert refused(api, token) == "UNAUTHENTICATED"


@pytest.mark.parametrize("ahead", [5, 60, 86400 * 365])
def test_a_token_issued_in_the_future_is_refused(api, user, secret, ahead):
    _, uid, _ = user
    now = int(time.time())
    token = jwt.encode(claims_for(uid, iat=now + ahead, exp=now + ahead + 600), secret,
                       algorithm="HS256")
    assert refused(api, token) == "UNAUTHENTICATED"


def test_a_token_past_its_ttl_is_refused(api_factory_short_ttl):
    """A real login token, JWT_TTL_SECONDS=1: refused once its time (and leeway) is over."""
    from tests.support import wait_until

    api = api_factory_short_ttl
    me = api.as_user()
    assert me.call(ME)["me"]["id"]
    exp = jwt.decode(me.token, options={"verify_signature": False})["exp"]

    def refused_now():
        try:
            me.call(ME)
        except GraphQLError as exc:
            return exc.code
        return None

    code = wait_until(refused_now, timeout=15, interval=0.2, message="the token to expire")
    assert code == "UNAUTHENTICATED"
    assert time.time() > exp  # never refused before its exp


@pytest.fixture
def api_factory_short_ttl(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app

    with TestClient(create_app(settings_factory(jwt_ttl_seconds=1))) as client:
        yield Api(client)


# ---------------------------------------------------------------- signature


def test_a_token_signed_with_another_secret_is_refused(api, user):
    _, uid, _ = user
    token = jwt.encode(claims_for(uid), "another secret of a good length, 123456", algorithm="HS256")
    assert refused(api, token) == "UNAUTHENTICATED"


def test_a_token_whose_claims_were_changed_is_refused(api, user):
    """Another user's id pasted into a valid token: the signature no longer fits."""
    _, _, token = user
    other_uid = api.as_user().call(ME)["me"]["id"]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = other_uid
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    assert refused(api, forged) == "UNAUTHENTICATED"


def test_a_token_with_a_changed_signature_is_refused(api, user):
    _, _, token = user
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert refused(api, f"{header}.{payload}.{flipped}") == "UNAUTHENTICATED"
    assert refused(api, f"{header}.{payload}.") == "UNAUTHENTICATED"
    assert refused(api, f"{header}.{payload}") == "UNAUTHENTICATED"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_an_unsigned_alg_none_token_is_refused(api, user, alg):
    _, uid, _ = user
    token = hand_made({"alg": alg, "typ": "JWT"}, claims_for(uid), None)
    assert refused(api, token) == "UNAUTHENTICATED"


def test_alg_none_with_a_signature_is_refused(api, user, secret):
    _, uid, _ = user
    token = hand_made({"alg": "none", "typ": "JWT"}, claims_for(uid), secret)
    assert refused(api, token) == "UNAUTHENTICATED"


@pytest.mark.parametrize("alg,digest", [("HS384", hashlib.sha384), ("HS512", hashlib.sha512)])
def test_other_hmac_algorithms_are_refused_even_with_the_right_secret(api, user, secret, alg,
                                                                      digest):
    _, uid, _ = user
    token = hand_made({"alg": alg, "typ": "JWT"}, claims_for(uid), secret, digest)
    assert refused(api, token) == "UNAUTHENTICATED"


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256", "EdDSA"])
def test_public_key_algorithms_are_refused(api, user, secret, alg):
    """Including the old key-confusion trick: an RS256 header over an HMAC of the secret."""
    _, uid, _ = user
    token = hand_made({"alg": alg, "typ": "JWT"}, claims_for(uid), secret)
    assert refused(api, token) == "UNAUTHENTICATED"


# ---------------------------------------------------------------- claims


@pytest.mark.parametrize("missing", ["sub", "exp", "iat"])
def test_a_token_missing_a_required_claim_is_refused(api, user, secret, missing):
    _, uid, _ = user
    token = jwt.encode(claims_for(uid, **{missing: None}), secret, algorithm="HS256")
    assert refused(api, token) == "UNAUTHENTICATED"


@pytest.mark.parametrize("claim,value", [
    ("sub", 12345),
    ("sub", ""),
    ("sub", ["a", "b"]),
    ("sub", "not-an-object-id"),
    ("exp", "soon"),
    ("exp", "99999999999"),       # a number as a string, far in the future
    ("iat", "yesterday"),
    ("iat", "1"),                 # a number as a string, long ago
    ("iat", [1]),
    ("exp", 1e400),               # JSON infinity is not a time
    ("tv", "0"),                  # the token version is a whole number, nothing else
    ("tv", -1),
    ("tv", 0.0),
    ("tv", True),
    ("tv", None),
    ("tv", [0]),
])
def test_a_token_with_a_malformed_claim_is_refused(api, user, secret, claim, value):
    _, uid, _ = user
    claims = claims_for(uid)
    claims[claim] = value
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims, secret)
    assert refused(api, token) == "UNAUTHENTICATED"


def test_a_token_of_a_user_who_does_not_exist_is_refused(api, user, secret):
    token = jwt.encode(claims_for(str(ObjectId())), secret, algorithm="HS256")
    assert refused(api, token) == "UNAUTHENTICATED"


@pytest.mark.parametrize("garbage", ["x", "a.b.c", "....", "eyJ.eyJ.eyJ", "ü" * 20, "Bearer"])
def test_garbage_tokens_are_refused(api, garbage):
    assert refused(api, garbage) == "UNAUTHENTICATED"


def test_a_refusal_reveals_nothing_of_the_server(api, user, secret):
    _, uid, _ = user
    token = hand_made({"alg": "HS256"}, claims_for(uid, iat="1"), secret)
    body = api.http.post("/graphql", json={"query": ME},
                         headers={"Authorization": f"Bearer {token}"}).json()
    text = json.dumps(body)
    assert "Traceback" not in text and secret not in text


# ---------------------------------------------------------------- the header


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(api, user, scheme):
    _, uid, token = user
    r = api.http.post("/graphql", json={"query": ME}, headers={"Authorization": f"{scheme} {token}"})
    assert r.json()["data"]["me"]["id"] == uid


def test_the_authorization_header_name_is_case_insensitive(api, user):
    _, uid, token = user
    r = api.http.post("/graphql", json={"query": ME}, headers={"AUTHORIZATION": f"Bearer {token}"})
    assert r.json()["data"]["me"]["id"] == uid


def test_without_an_authorization_header_me_is_unauthenticated(api):
    assert refused(api, None, headers={}) == "UNAUTHENTICATED"


@pytest.mark.parametrize("value", [
    "", "Bearer", "Bearer ", "Token {t}", "Basic {t}", "{t}", "JWT {t}", "Bearer{t}",
])
def test_other_authorization_forms_are_unauthenticated(api, user, value):
    _, _, token = user
    assert refused(api, None, headers={"Authorization": value.format(t=token)}) == "UNAUTHENTICATED"


def test_register_and_login_need_no_token_even_with_a_bad_one(api):
    bad = {"Authorization": "Bearer not.a.token"}
    r = api.http.post("/graphql", headers=bad, json={
        "query": "mutation{register(username:\"nobody_needs_a_token\",password:\"long enough\"){id}}"})
    assert r.json()["data"]["register"]["id"]
    r = api.http.post("/graphql", headers=bad, json={
        "query": "mutation{login(username:\"nobody_needs_a_token\",password:\"long enough\"){token}}"})
    assert r.json()["data"]["login"]["token"]


# ---------------------------------------------------------------- revocation


CHANGE = ("mutation($o:String!,$n:String!){changePassword(oldPassword:$o,newPassword:$n)"
          "{token}}")
NEW_PASSWORD = "a brand new passphrase"


def change_password(api: Api, token: str) -> str:
    return api.call(CHANGE, {"o": "correct horse", "n": NEW_PASSWORD},
                    token=token)["changePassword"]["token"]


def test_login_tokens_carry_the_token_version(api, user):
    _, _, token = user
    assert jwt.decode(token, options={"verify_signature": False})["tv"] == 0
    fresh = change_password(api, token)
    assert jwt.decode(fresh, options={"verify_signature": False})["tv"] == 1


def test_tokens_without_a_version_work_until_the_first_password_change(api, user, secret):
    """Tokens issued before `tv` existed are of version 0: valid while the user is."""
    _, uid, token = user
    versionless = jwt.encode(claims_for(uid), secret, algorithm="HS256")
    assert accepted(api, versionless)["id"] == uid
    fresh = change_password(api, token)
    assert refused(api, versionless) == "UNAUTHENTICATED"
    assert refused(api, jwt.encode(claims_for(uid, tv=0), secret, algorithm="HS256")) == \
        "UNAUTHENTICATED"
    assert accepted(api, jwt.encode(claims_for(uid, tv=1), secret, algorithm="HS256"))["id"] == uid
    assert accepted(api, fresh)["id"] == uid


def test_a_token_of_a_version_the_user_never_had_is_refused(api, user, secret):
    _, uid, _ = user
    assert refused(api, jwt.encode(claims_for(uid, tv=1), secret, algorithm="HS256")) == \
        "UNAUTHENTICATED"


def test_a_password_change_through_another_process_revokes_within_the_user_cache_time(
        app_client, api, user, monkeypatch):
    """Each API process remembers a checked user for KNOWN_USER_SECONDS: there an
    earlier token works until that time is up, never after; the fresh token, newer
    than what it remembers, works there at once."""
    from graph import accounts
    from graph.errors import Unauthenticated
    from tests.support import wait_until

    monkeypatch.setattr(accounts, "KNOWN_USER_SECONDS", 1.0)
    services = app_client.app.state.services

    def process():
        """Another API process: the same stores, a user cache of its own."""
        return accounts.Accounts(services.accounts.tokens, services.redis, services.settings)

    def check(there, token):
        try:
            return app_client.portal.call(there.user_id_for, token)
        except Unauthenticated:
            return None

    _, uid, token = user
    lagging, told = process(), process()
    assert check(lagging, token) == check(told, token) == uid  # both remember the user
    fresh = change_password(api, token)
    assert check(told, fresh) == uid
    assert check(told, token) is None
    wait_until(lambda: check(lagging, token) is None, timeout=15,
               message="the other process to refuse the revoked token")
    assert check(lagging, fresh) == uid


def test_a_token_used_again_is_checked_again_for_its_time(secret):
    """Tokens remember the tokens they verified; each use still checks expiry, and a
    token with `nbf` is never remembered (its check stays pyjwt's, every time)."""
    from graph.auth import Tokens
    from graph.errors import Unauthenticated

    tokens = Tokens(secret, ttl_seconds=600, leeway_seconds=0)
    now = int(time.time())
    good = jwt.encode(claims_for("u1", exp=now + 600), secret, algorithm="HS256")
    assert tokens.verify(good).user_id == tokens.verify(good).user_id == "u1"
    soon = jwt.encode(claims_for("u1", exp=now + 1), secret, algorithm="HS256")
    assert tokens.verify(soon).user_id == "u1"
    deadline = time.time() + 10
    while time.time() < now + 1.2 and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(soon)
    later = jwt.encode(claims_for("u1", nbf=now + 3600), secret, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="invalid"):
            tokens.verify(later)
