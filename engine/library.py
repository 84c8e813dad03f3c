"""The worker's per-job scripts as one Redis Functions library (Redis 7 and later).

Redis runs an EVALSHA script's whole text on every call: each helper of
_lib.lua is a closure built again, about 40 of them for a finish, a tenth of
the Redis time a job costs at concurrency 1 (bench/RESULTS.md). A function
library's text runs once, when it is loaded: its helpers are built then, and
a call (FCALL) runs only the function's own body.

Only the scripts a worker calls for every job (HOT) go this way. The others
keep EVALSHA, and with it their behaviour when Redis is full: a function is
refused whole at `maxmemory` (the same "OOM command not allowed" error), where
a script that frees memory (dequeue, archived, purge) must still run.

What differs from a script, and how the library keeps a script's meaning:
- KEYS and ARGV are arguments of the function, not globals: the library keeps
  them in two of its own locals, set first thing in every call.
- The helpers' state (`deferred`, the memo tables of `int` and `bucket`, the
  limits read) lives as long as the library, not one call: every call starts
  by setting each of them as the helper's own text sets it (STATE), so no
  call sees another's, even one that ended in an error.

Where FCALL is not there (Redis 6.2, such as the embedded server, or a
server whose ACL refuses FUNCTION LOAD), the same scripts run by EVALSHA:
the first refusal switches this client to them for good. A server that lost
the library (restarted, FUNCTION FLUSH) answers "Function not found": it is
loaded again and the call made again, as redis-py does for NOSCRIPT; the call
that was refused did not run.

The library's name and its functions' carry a hash of its text, so workers of
two versions (or two QUEUE_USER_CONCURRENCY settings) share a Redis without
replacing each other's; `FUNCTION DELETE q_<hash>` removes an old one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from functools import cache
from typing import NoReturn

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from . import scripts

log = logging.getLogger(__name__)

HOT = ("claim", "finish", "finish_many")  # a worker's calls for each job

# a helper's state: `local NAME = nil` or `local NAME = {}` at the start of a line
_STATE = re.compile(r"^local (\w+) = (.*?)\s*(?:--.*)?$", re.MULTILINE)


class LibraryError(scripts.ScriptError):
    """A helper whose state the library cannot set again at each call."""


def state(helper: str, text: str) -> list[tuple[str, str]]:
    """The variables a helper keeps between its calls, with their first value."""
    found = []
    for name, value in _STATE.findall(text):
        if value not in ("nil", "{}"):
            raise LibraryError(
                f"helper {helper}: `local {name} = {value}` would be shared by every call of "
                "the function library; start such state as nil or {} (engine/library.py)")
        found.append((name, value))
    return found


@cache
def source(user_concurrency: int = 1) -> tuple[str, dict[str, str]]:
    """The library's text, and the function name of each HOT script."""
    order: list[str] = []  # each script's helpers in turn: each still after those it needs
    bodies = {}
    for name in HOT:
        text = scripts.script_text(name)
        order += [h for h in scripts.helpers_of(name, text) if h not in order]
        bodies[name] = scripts.expand_keys(text)
    helpers = [scripts.expand_keys(scripts.helpers()[h]) for h in order if h != "keys"]
    resets = [f"{var} = {value}" for h in order if h != "keys"
              for var, value in state(h, scripts.helpers()[h])]
    code = "\n".join([scripts.constants(user_concurrency),
                      "local KEYS, ARGV  -- set by each function, first thing", *helpers])
    digest = hashlib.sha1(code.encode() + repr(sorted(bodies.items())).encode()).hexdigest()[:16]
    lib = f"q_{digest}"
    names = {name: f"{lib}_{name}" for name in HOT}
    functions = [
        f"redis.register_function('{names[name]}', function(keys, args)\n"
        f"KEYS, ARGV = keys, args\n{'; '.join(resets)}\n{body}\nend)\n"
        for name, body in bodies.items()]
    return "\n".join([f"#!lua name={lib}", code, *functions]), names


class Library:
    """The library on one client: loaded on first need, or found missing."""

    def __init__(self, redis, user_concurrency: int = 1):
        self.redis = redis
        self.code, self.names = source(user_concurrency)
        self.usable = True  # False: this server has no functions for us; scripts instead

    async def call(self, name: str, keys: list, args: list):
        """FCALL the HOT script `name`; Unusable when this server has no functions."""
        function = self.names[name]
        try:
            return await self.redis.fcall(function, len(keys), *keys, *args)
        except ResponseError as exc:
            if _no_functions(exc):
                self._give_up(exc)
            if "Function not found" not in str(exc):
                raise
        await self._load()
        # the refused call did not run: it runs now
        return await self.redis.fcall(function, len(keys), *keys, *args)

    async def _load(self) -> None:
        try:
            await self.redis.function_load(self.code)
        except ResponseError as exc:
            if "already exists" in str(exc):  # another caller loaded it first
                return
            if _no_functions(exc):
                self._give_up(exc)
            raise  # Redis is full, say: the call fails as a script's would, and is tried again

    def _give_up(self, exc: ResponseError) -> NoReturn:
        if self.usable:
            reason = str(exc).split(", with args")[0]  # Redis quotes the call's arguments
            log.info("Redis functions unavailable (%s): the worker's scripts run by EVALSHA", reason)
        self.usable = False
        raise Unusable from exc


class Unusable(Exception):
    """This server runs no function of ours: the script runs by EVALSHA instead."""


def _no_functions(exc: ResponseError) -> bool:
    """Redis refused FCALL itself: older than 7, or an ACL without it."""
    text = str(exc).lower()
    return "unknown command" in text or "noperm" in text or "no permissions" in text


class HotScript:
    """A HOT script, called as redis-py's Script objects are (keys=, args=,
    client=): by FCALL while the library is usable, by EVALSHA otherwise and
    on a pipeline (`client`), where redis-py loads the script when it runs."""

    def __init__(self, name: str, library: Library, script):
        self.name = name
        self.library = library
        self.script = script  # redis-py's Script: EVALSHA, loading on NOSCRIPT

    async def __call__(self, keys: list, args: list, client=None):
        if self.library.usable and client is None:
            try:
                return await self.library.call(self.name, keys, args)
            except Unusable:
                pass
        return await self.script(keys=keys, args=args, client=client)


def register(redis, user_concurrency: int = 1) -> dict:
    """Every script bound to a client, each called as `(keys=[...], args=[...])`:
    redis-py's Script objects (EVALSHA, loading the script on a miss), and for
    the HOT ones on one Redis, this library with the same scripts to fall back on."""
    found = {name: redis.register_script(scripts.source(name, user_concurrency))
             for name in scripts.NAMES}
    if not isinstance(redis, RedisCluster):  # a cluster would need the library on every node
        library = Library(redis, user_concurrency)
        found.update({name: HotScript(name, library, found[name]) for name in HOT})
    return found
