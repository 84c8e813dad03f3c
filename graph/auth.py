"""Passwords (argon2 through passlib) and tokens (JWT, HS256 only)."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from passlib.context import CryptContext

from .errors import BadUserInput, RateLimited, Unauthenticated

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,64}")  # used with fullmatch: `$` would allow "name\n"
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
ALGORITHM = "HS256"
VERIFIED_TOKENS = 10_000  # tokens remembered as verified (Tokens.verify), then all forgotten

# argon2id at OWASP's first recommended setting (m=19 MiB, t=2, p=1). Side by side on
# this project's 2-core machine (busy at the time), the median hash took 22-47 ms,
# against 172-465 ms at passlib's default (64 MiB, t=3, p=4). Hashes made with other
# parameters still verify and are re-hashed at the next login (`needs_rehash`).
_passwords = CryptContext(schemes=["argon2"], deprecated="auto", argon2__type="ID",
                          argon2__memory_cost=19 * 1024, argon2__rounds=2,
                          argon2__parallelism=1)
# Verified against when the username is unknown, so both failures cost the same time.
_DUMMY_HASH = _passwords.hash("not a real password, only for timing")


# Every password of at least PASSWORD_MIN characters from the list of 20,000 common
# passwords that Django ships (Royce Williams' list, lower-cased; BSD licence), in
# the list's order of frequency. Made with:
#   pip download django==5.2.19 --no-deps
#   unzip -p django-5.2.19-py3-none-any.whl django/contrib/auth/common-passwords.txt.gz \
#     | gunzip | python3 -c 'import sys; sys.stdout.writelines(l for l in sys.stdin if len(l) > 8)'
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")


@functools.cache
def common_passwords() -> frozenset[str]:
    return frozenset(COMMON_PASSWORDS_FILE.read_text("utf-8").casefold().split("\n")) - {""}


def needs_rehash(password_hash: str) -> bool:
    """A hash made with older parameters: replace it once its password is known."""
    return _passwords.needs_update(password_hash)


def check_credentials_shape(username: str, password: str) -> None:
    check_username(username)
    check_new_password(password)


def check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise BadUserInput(
            "username must be 3 to 64 characters from A-Z a-z 0-9 _ . -", field="username"
        )


def check_new_password(password: str) -> None:
    """The rules for a password being set (register, changePassword)."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise BadUserInput(
            f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters", field="password"
        )
    # the first guesses of every attacker, whatever their case
    if password.strip().casefold() in common_passwords():
        raise BadUserInput("this password is too common: choose another", field="password")


class Passwords:
    """argon2 hashing and checking, off the event loop and bounded.

    Each argon2 run takes 19 MiB and tens of milliseconds of CPU: a flood of logins must
    not queue them without end (a real user's login then waits for all of them).
    At most `concurrent` run at once, at most `waiting` more wait for a slot; any
    request beyond that is refused at once with RATE_LIMITED.
    """

    def __init__(self, concurrent: int, waiting: int):
        self._slots = asyncio.Semaphore(concurrent)
        self._room = concurrent + waiting
        self._admitted = 0  # running or waiting

    async def hash(self, password: str) -> str:
        return await self._run(_passwords.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        if len(password) > PASSWORD_MAX:
            return False
        ok = await self._run(_passwords.verify, password, password_hash or _DUMMY_HASH)
        return ok and password_hash is not None

    async def _run(self, fn, *args):
        if self._admitted >= self._room:
            raise RateLimited("the server is busy checking passwords; try again in a moment")
        self._admitted += 1
        try:
            await self._slots.acquire()
        except BaseException:
            self._admitted -= 1
            raise
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        # the slot is free when the thread is, even if the caller is cancelled meanwhile
        work.add_done_callback(self._release)
        return await asyncio.shield(work)

    def _release(self, work: asyncio.Future) -> None:
        self._slots.release()
        self._admitted -= 1
        if not work.cancelled():
            work.exception()  # retrieved: a cancelled caller's error is not logged as lost


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: datetime


@dataclass(frozen=True)
class Claims:
    """What a valid token says: whose it is, and the user's token version at issue."""

    user_id: str
    version: int  # `tv`; tokens issued before it existed have none: version 0


class Tokens:
    """Issues and checks JWTs: HS256, `sub`, `iat`, `exp`, a little clock leeway, and
    `tv`, the user's token version, which a password change bumps to revoke them."""

    def __init__(self, secret: str | None, ttl_seconds: int, leeway_seconds: float = 2.0):
        if not secret:
            secret = secrets.token_urlsafe(48)
            log.warning("JWT_SECRET is not set: using a random secret; tokens end "
                        "with this process. Set JWT_SECRET for production.")
        self._secret = secret
        self.ttl = timedelta(seconds=ttl_seconds)
        self.leeway = leeway_seconds
        self._verified: dict[str, tuple[Claims, int]] = {}  # token -> (claims, exp)

    def issue(self, user_id: str, version: int = 0) -> Token:
        now = datetime.now(timezone.utc)
        expires = now + self.ttl
        claims = {"sub": user_id, "iat": int(now.timestamp()), "exp": int(expires.timestamp()),
                  "tv": version}
        return Token(jwt.encode(claims, self._secret, algorithm=ALGORITHM),
                     expires.replace(microsecond=0))

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; Unauthenticated otherwise.

        A token checked once is remembered (VERIFIED_TOKENS of them): a client sends
        the same token with every request, and the signature check and claim parsing
        cost more than the rest of a small mutation's authentication. What can change
        with time is checked on every use: `exp`, as pyjwt checks it (`iat` was at most
        now plus the leeway when first checked, and stays so). Revocation (`tv`) is
        the caller's check, on every use too."""
        known = self._verified.get(token)
        if known is not None:
            claims, expires = known
            if expires <= datetime.now(timezone.utc).timestamp() - self.leeway:
                del self._verified[token]
                raise Unauthenticated("token expired")
            return claims
        claims, expires = self._check(token)
        if expires is not None:
            if len(self._verified) >= VERIFIED_TOKENS:
                self._verified.clear()
            self._verified[token] = (claims, expires)
        return claims

    def _check(self, token: str) -> tuple[Claims, int | None]:
        """Verify the signature and every claim: (claims, `exp` as pyjwt compares it,
        or None when the token may not be remembered)."""
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM], leeway=self.leeway,
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        now = datetime.now(timezone.utc).timestamp()
        # pyjwt accepts numbers sent as strings ("exp": "99999999999"); a NumericDate is a number
        version = claims.get("tv", 0)
        if (not isinstance(claims["sub"], str) or not _numeric(claims["exp"])
                or not _numeric(claims["iat"]) or claims["iat"] > now + self.leeway
                or type(version) is not int or version < 0):
            raise Unauthenticated("invalid token")
        if "nbf" in claims:  # ours carry none; not remembered, its check is pyjwt's each time
            return Claims(claims["sub"], version), None
        return Claims(claims["sub"], version), int(claims["exp"])


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bearer(value: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` value."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def token_from_connection_params(params) -> str | None:
    """connection_init payload: {"Authorization": "Bearer t"}, lower-case, or {"token": t}."""
    if not isinstance(params, dict):
        return None
    for key in ("Authorization", "authorization"):
        if isinstance(params.get(key), str):
            return bearer(params[key])
    token = params.get("token")
    return token if isinstance(token, str) and token else None
