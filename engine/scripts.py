"""The Lua scripts of `lua/`, each a single atomic state change, as Redis runs them.

A script names the shared helpers it calls in an include line
(`--@include keys, now_ms, touch`); the loader puts those, and the helpers
they include in turn, in front of it, each once and before its first use.
The helpers are the `--@helper` sections of `lua/_lib.lua`, and `keys`, the
key names of engine/keys.py written as Lua. An include line that differs
from what the code calls is refused at load, so a missing helper fails the
first test that loads the script, not the one code path that calls it.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from .keys import lua_keys

LUA_DIR = Path(__file__).parent / "lua"
LIBRARY = "_lib.lua"
NAMES = ("enqueue", "claim", "finish", "finish_many", "heartbeat", "reclaim", "release", "cancel",
         "dequeue", "archived", "count", "limits", "retry", "purge", "recount", "progress", "watch")

# Numbers the scripts use that no setting changes, written in front of every
# script as `local NAME = value` (settings travel as arguments instead).
CONSTANTS = {
    # tokens a shard's signal list holds: a worker blocks only after a claim
    # found nothing, so one per waiting worker is plenty
    "SIGNAL_TOKENS": 64,
    # entries at the head of an archive list archived.lua looks through for each
    # job it drops (the archiver reads 200 at a time from the head)
    "ARCHIVE_WINDOW": 1000,
    # entries of the due-time index (runAt, retry back-off, start rate) one script promotes
    "PROMOTE_BATCH": 100,
    # expired leases one reclaim handles; a worker's maintenance calls every few seconds
    "RECLAIM_BATCH": 100,
    # priorities run from -PRIORITY_MAX to PRIORITY_MAX (CONTRACT §7; offer_lane ranks by them)
    "PRIORITY_MAX": 100,
    # the throughput history's bucket (adminThroughput: one point per 10 s)...
    "BUCKET_MS": 10_000,
    # ...and how long a shard keeps one: an hour of history and some to spare
    "THROUGHPUT_KEEP_SECONDS": 3900,
    # updates one job's stream keeps (jobUpdates' replay): STARTED, RETRYING and
    # terminal ones are a few per attempt, progress at most 10 a second
    "UPDATES_KEEP": 1000,
}

_HELPER = re.compile(r"^--@helper\s+(\w+)[ \t]*$", re.MULTILINE)
_INCLUDE = re.compile(r"^--@include\s+(.+)$", re.MULTILINE)
_COMMENT = re.compile(r"--[^\n]*")


class ScriptError(Exception):
    """A script or helper whose include line does not match its code."""


@cache
def helpers() -> dict[str, str]:
    """Every helper's Lua text by name: the sections of _lib.lua, and `keys`."""
    text = (LUA_DIR / LIBRARY).read_text()
    marks = list(_HELPER.finditer(text))
    found = {"keys": lua_keys()}
    for mark, following in zip(marks, marks[1:] + [None]):
        end = following.start() if following else len(text)
        found[mark.group(1)] = text[mark.start():end].rstrip() + "\n"
    return found


def includes(text: str) -> list[str]:
    """The helpers a script or helper names on its include line(s)."""
    return [name.strip() for line in _INCLUDE.findall(text)
            for name in line.split(",") if name.strip()]


def calls(text: str) -> set[str]:
    """The helpers a script or helper's code calls (comments left out)."""
    code = _COMMENT.sub("", text)
    found = {name for name in helpers() if name != "keys" and
             re.search(rf"(?<![\w.])(?<!function ){name}\s*\(", code)}
    if re.search(r"(?<![\w.])keys\.", code):
        found.add("keys")
    return found


def check_includes(what: str, text: str) -> list[str]:
    """The helpers `text` includes, once checked against those it calls."""
    named = includes(text)
    unknown = set(named) - set(helpers())
    if unknown:
        raise ScriptError(f"{what} includes unknown helper(s) {sorted(unknown)}")
    called = calls(text)
    if called != set(named):
        missing, unused = called - set(named), set(named) - called
        raise ScriptError(f"{what}: calls {sorted(missing)} without including them"
                          if missing else f"{what}: includes {sorted(unused)} it does not call")
    return named


def _add(name: str, order: list[str], path: tuple[str, ...]) -> None:
    """Append `name` to `order` after the helpers it needs (depth first)."""
    if name in order:
        return
    if name in path:
        raise ScriptError(f"helpers include each other: {' -> '.join(path + (name,))}")
    needs = [] if name == "keys" else check_includes(f"helper {name}", helpers()[name])
    for needed in needs:  # `keys` is generated, and calls nothing
        _add(needed, order, path + (name,))
    order.append(name)


@cache
def source(name: str, user_concurrency: int = 1) -> str:
    """A script's text as Redis runs it: constants, included helpers, the script.

    `user_concurrency` (QUEUE_USER_CONCURRENCY) is written in as the constant
    USER_CONCURRENCY, the concurrency of a user without one of its own: every
    script that places a user needs it, so it is part of the script rather
    than one more argument of each; API and workers must agree on it."""
    text = (LUA_DIR / f"{name}.lua").read_text()
    order: list[str] = []
    for needed in check_includes(f"{name}.lua", text):
        _add(needed, order, (f"{name}.lua",))
    constants = "-- engine/scripts.py (CONSTANTS)\n" + "".join(
        f"local {k} = {v!r}\n" for k, v in
        {**CONSTANTS, "USER_CONCURRENCY": int(user_concurrency)}.items())
    return "\n".join([constants] + [helpers()[h] for h in order] + [text])


def register(redis, user_concurrency: int = 1) -> dict:
    """Script objects bound to a client: EVALSHA, loading the script on a miss."""
    return {name: redis.register_script(source(name, user_concurrency)) for name in NAMES}
