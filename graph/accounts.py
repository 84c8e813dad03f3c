"""Registering, logging in, changing a password, and knowing who a token belongs to."""

from __future__ import annotations

import ipaddress
import logging
import time
from datetime import datetime, timezone

from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from engine.queue import Queue
from engine.startup import StartupError

from .settings import Settings
from . import auth
from .errors import BadUserInput, Conflict, NotFound, RateLimited, Unauthenticated
from .store import Role, User, users_by_id

log = logging.getLogger(__name__)

# How long a checked user (that it exists, and its token version) is trusted
# without asking MongoDB. So a deleted user's token, and a token revoked by a
# password change made through another API process, work for up to this long;
# a change made through this process revokes at once.
KNOWN_USER_SECONDS = 30.0

class Accounts:
    def __init__(self, tokens: auth.Tokens, queue: Queue, settings: Settings):
        self.tokens = tokens
        self.queue = queue  # the throttles' counters live in Redis, shared by every API process
        self.max_failures = settings.login_max_failures
        self.window = settings.login_window_seconds
        self.attempts_per_minute = settings.auth_attempts_per_minute
        self.passwords = auth.Passwords(settings.auth_max_concurrent_hashes,
                                        settings.auth_max_waiting_hashes)
        self._known: dict[str, tuple[float, int]] = {}  # user id: (trusted until, token version)
        # ADMIN_USERNAME is never registered, only made by bootstrap_admin: else whoever
        # registers it first would be made an admin at the next start
        self._reserved = (settings.admin_username or "").casefold() or None

    async def register(self, username: str, password: str, client: str) -> User:
        auth.check_credentials_shape(username, password)
        await self._count_attempt(client)
        key = username.casefold()
        if key == self._reserved or await User.find_one(User.username_key == key):
            raise Conflict("username is taken")
        user = User(  # role USER: register takes no role
            username=username,
            username_key=key,
            password_hash=await self.passwords.hash(password),
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
        await self._count_attempt(client)
        user = None
        if len(username) <= 64:
            user = await User.find_one(User.username_key == username.casefold())
        throttle = self._failures_key(username.casefold()[:64], client)
        if not await self._check_guess(throttle, password, user.password_hash if user else None):
            raise Unauthenticated("wrong username or password")
        if auth.needs_rehash(user.password_hash):
            await self._rehash(user, password)
        return self.tokens.issue(str(user.id), user.token_version), user

    async def _rehash(self, user: User, password: str) -> None:
        """Store the password under today's hash parameters (the old hash still
        verified). Best effort: when hashing is busy, the next login does it."""
        try:
            new_hash = await self.passwords.hash(password)
        except RateLimited:
            return
        await User.get_pymongo_collection().update_one(
            {"_id": user.id, "password_hash": user.password_hash},  # unless changed meanwhile
            {"$set": {"password_hash": new_hash}})
        user.password_hash = new_hash

    async def change_password(self, uid: str, old: str, new: str,
                              client: str) -> tuple[auth.Token, User]:
        """Set a new password and revoke every token issued before: the user's token
        version goes up (checked by this process at once, by others within
        KNOWN_USER_SECONDS). A wrong old password counts as a failed login."""
        auth.check_new_password(new)
        await self._count_attempt(client)
        user = await self.get(uid)
        throttle = self._failures_key(user.username_key, client)
        if not await self._check_guess(throttle, old, user.password_hash):
            raise Unauthenticated("wrong password")
        new_hash = await self.passwords.hash(new)
        changed = await User.get_pymongo_collection().find_one_and_update(
            # only if the password is still the one just checked: of two changes at
            # once, the second finds it changed and is refused like a wrong password
            {"_id": user.id, "password_hash": user.password_hash},
            {"$set": {"password_hash": new_hash}, "$inc": {"token_version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if changed is None:
            raise Unauthenticated("wrong password")
        user.password_hash, user.token_version = new_hash, changed["token_version"]
        self._remember(uid, user.token_version)
        return self.tokens.issue(uid, user.token_version), user

    async def user_id_for(self, token: str | None) -> str:
        """The id of the (still existing) user a token was issued to, if not revoked since."""
        if not token:
            raise Unauthenticated("missing token: send Authorization: Bearer <token>")
        claims = self.tokens.verify(token)
        if claims.version != await self._token_version(claims.user_id, claims.version):
            raise Unauthenticated("token revoked: log in again")
        return claims.user_id

    async def get(self, uid: str) -> User:
        user = await self._find(uid)
        if user is None:
            raise Unauthenticated("unknown user")
        return user

    async def get_many(self, ids: list[str]) -> list[User | None]:
        """Users by id in the order asked (None for an unknown one), in one query: the
        batch function of Context.users, so a page of jobs asks for its owners once."""
        found = await users_by_id(ids)
        return [found.get(uid) for uid in ids]

    # ---- roles (CONTRACT §9) ----

    async def bootstrap_admin(self, username: str | None, password: str | None) -> None:
        """Make ADMIN_USERNAME an admin at start (Grafana's convention): create it with
        ADMIN_PASSWORD if it does not exist, else give it role ADMIN, its password
        unchanged. So it is an admin again after each start, even if demoted meanwhile.

        Safe when several API processes start at once: one upsert on the unique
        username index; the one that loses an insert race matches on its retry."""
        if not username:
            return
        key = username.casefold()
        users = User.get_pymongo_collection()
        if not password:
            found = await users.update_one({"username_key": key},
                                           {"$set": {"role": Role.ADMIN.value}})
            if found.matched_count:
                log.info("admin account %s: role ADMIN", username)
            else:
                log.warning("ADMIN_USERNAME %s does not exist and ADMIN_PASSWORD is not set: "
                            "no admin account was made", username)
            return
        new = {"username": username, "username_key": key, "token_version": 0,
               "password_hash": await self.passwords.hash(password),
               "created_at": datetime.now(timezone.utc).replace(microsecond=0)}
        for attempt in (1, 2):
            try:
                done = await users.update_one(
                    {"username_key": key},
                    {"$set": {"role": Role.ADMIN.value}, "$setOnInsert": new}, upsert=True)
                break
            except DuplicateKeyError:  # inserted by another process between match and insert
                if attempt == 2:
                    raise
        log.info("admin account %s: %s", username,
                 "created with role ADMIN" if done.upserted_id else "role ADMIN")

    async def set_role(self, username: str, role: Role) -> User:
        """Give an account a role. The last admin cannot be demoted (CONFLICT).

        Without a lock or a transaction: a demotion is written first, then the
        admins are counted, and one that left none is undone. Of several demotions
        at once, whichever counts last after the last demotion sees what remains, so
        at least one admin is left once they are done (all may be refused). A process
        that dies between the two leaves its demotion; ADMIN_USERNAME makes an admin
        again at the next start."""
        role = Role(role)
        key = username.casefold()
        users = User.get_pymongo_collection()
        if role is Role.ADMIN:
            doc = await users.find_one_and_update(
                {"username_key": key}, {"$set": {"role": Role.ADMIN.value}},
                return_document=ReturnDocument.AFTER)
        else:
            doc = await users.find_one_and_update(
                {"username_key": key, "role": Role.ADMIN.value},
                {"$set": {"role": role.value}}, return_document=ReturnDocument.AFTER)
            if doc is not None and not await users.count_documents({"role": Role.ADMIN.value}):
                await users.update_one({"_id": doc["_id"], "role": role.value},
                                       {"$set": {"role": Role.ADMIN.value}})
                raise Conflict(f"{doc['username']} is the last admin: make another "
                               "account ADMIN first")
            if doc is None:  # not an admin already, or no such account
                doc = await users.find_one({"username_key": key})
        if doc is None:
            raise NotFound(f"no user {username!r}")
        return User.model_validate(doc)

    async def _token_version(self, uid: str, seen: int) -> int:
        """The user's token version, from MongoDB at most every KNOWN_USER_SECONDS, and at
        once for a token newer than what is remembered (changed through another process)."""
        trusted_until, version = self._known.get(uid, (0.0, 0))
        if trusted_until < time.monotonic() or version < seen:
            version = (await self.get(uid)).token_version
            self._remember(uid, version)
        return version

    def _remember(self, uid: str, version: int) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[uid] = (time.monotonic() + KNOWN_USER_SECONDS, version)

    async def _count_attempt(self, client: str) -> None:
        """Logins, registrations and password changes per client address and minute, in
        Redis (all API processes): a flood from one address, random usernames and all,
        is refused before it costs any password hashing."""
        if not self.attempts_per_minute:
            return
        key = self.queue.keys.auth_attempts(_address_key(client))
        if await self.queue.count(key, 60) > self.attempts_per_minute:
            raise RateLimited("too many login attempts from this address; try again in a minute")

    def _failures_key(self, username_key: str, client: str) -> str:
        return self.queue.keys.login_throttle(username_key, _address_key(client))

    async def _check_guess(self, throttle: str, password: str, password_hash: str | None) -> bool:
        """Check a password, throttling failures under the key `throttle`.

        The guess is counted before it is checked, atomically: parallel guesses
        cannot all pass a read-then-check. A right one clears the count.
        """
        if await self.queue.count(throttle, self.window) > self.max_failures:
            raise RateLimited("too many failed logins; try again later")
        try:
            ok = await self.passwords.verify(password, password_hash)
        except RateLimited:  # too busy to check it: no guess was made, none is counted
            await self.queue.count(throttle, self.window, by=-1)
            raise
        if ok:
            await self.queue.clear_count(throttle)
        return ok

    @staticmethod
    async def _find(uid: str) -> User | None:
        from beanie import PydanticObjectId

        try:
            return await User.get(PydanticObjectId(uid))
        except (InvalidId, TypeError, ValueError):
            return None


def check_admin_settings(settings: Settings) -> None:
    """ADMIN_USERNAME and ADMIN_PASSWORD follow register's rules; else the start stops
    with one line (StartupError), before anything is served."""
    if not settings.admin_username:
        return
    try:
        auth.check_username(settings.admin_username)
        if settings.admin_password:
            auth.check_new_password(settings.admin_password)
    except BadUserInput as exc:
        raise StartupError(f"ADMIN_{exc.extensions['field'].upper()}: {exc}") from None


def _address_key(address: str) -> str:
    """A client address as the throttles count it: an IPv6 client by its /64 network
    (one host is commonly given all of it), anything else as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
