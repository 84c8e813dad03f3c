"""Passwords (argon2 through passlib) and tokens (JWT, HS256 only)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import jwt
from passlib.context import CryptContext

from .errors import BadUserInput, Unauthenticated

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[A-Za-z0-9_.\-]{3,64}")  # used with fullmatch: `$` would allow "name\n"
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
ALGORITHM = "HS256"

_passwords = CryptContext(schemes=["argon2"], deprecated="auto")
# Verified against when the username is unknown, so both failures cost the same time.
_DUMMY_HASH = _passwords.hash("not a real password, only for timing")


def check_credentials_shape(username: str, password: str) -> None:
    if not USERNAME.fullmatch(username):
        raise BadUserInput(
            "username must be 3 to 64 characters from A-Z a-z 0-9 _ . -", field="username"
        )
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise BadUserInput(
            f"password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters", field="password"
        )


async def hash_password(password: str) -> str:
    """argon2 takes about 0.1 s of CPU: off the event loop."""
    return await asyncio.to_thread(_passwords.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    if len(password) > PASSWORD_MAX:
        return False
    ok = await asyncio.to_thread(_passwords.verify, password, password_hash or _DUMMY_HASH)
    return ok and password_hash is not None


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: datetime


class Tokens:
    """Issues and checks JWTs: HS256, `sub`, `iat`, `exp`, a little clock leeway."""

    def __init__(self, secret: str | None, ttl_seconds: int, leeway_seconds: float = 2.0):
        if not secret:
            secret = secrets.token_urlsafe(48)
            log.warning("JWT_SECRET is not set: using a random secret; tokens end "
                        "with this process. Set JWT_SECRET for production.")
        self._secret = secret
        self.ttl = timedelta(seconds=ttl_seconds)
        self.leeway = leeway_seconds

    def issue(self, user_id: str) -> Token:
        now = datetime.now(timezone.utc)
        expires = now + self.ttl
        claims = {"sub": user_id, "iat": int(now.timestamp()), "exp": int(expires.timestamp())}
        return Token(jwt.encode(claims, self._secret, algorithm=ALGORITHM),
                     expires.replace(microsecond=0))

    def verify(self, token: str) -> str:
        """The user id in a valid token; Unauthenticated otherwise."""
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
        if (not isinstance(claims["sub"], str) or not _numeric(claims["exp"])
                or not _numeric(claims["iat"]) or claims["iat"] > now + self.leeway):
            raise Unauthenticated("invalid token")
        return claims["sub"]


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
