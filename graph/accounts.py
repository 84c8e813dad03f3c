"""Registering, logging in, and knowing who a token belongs to."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from pymongo.errors import DuplicateKeyError

from engine.queue import Queue
from engine.settings import Settings

from . import auth
from .errors import Conflict, RateLimited, Unauthenticated
from .store import User

KNOWN_USER_SECONDS = 30.0  # how long a checked user id is trusted without asking MongoDB


class Accounts:
    def __init__(self, tokens: auth.Tokens, queue: Queue, settings: Settings):
        self.tokens = tokens
        self.queue = queue  # the login throttle's counters live in Redis
        self.max_failures = settings.login_max_failures
        self.window = settings.login_window_seconds
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
        throttle = self.queue.keys.login_throttle(username.casefold()[:64], client)
        # Count the attempt before checking the password, atomically: parallel guesses
        # cannot all pass a read-then-check. A success clears the count.
        attempts = await self.queue.count(throttle, self.window)
        if attempts > self.max_failures:
            raise RateLimited("too many failed logins; try again later")
        user = None
        if len(username) <= 64:
            user = await User.find_one(User.username_key == username.casefold())
        if not await auth.verify_password(password, user.password_hash if user else None):
            raise Unauthenticated("wrong username or password")
        await self.queue.clear_count(throttle)
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
