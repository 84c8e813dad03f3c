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

from .keys import LAYOUT, lua_keys, shard_key

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
    # entries at the head of an archive list archived.lua walks once a call to drop
    # the jobs it was given (the archiver reads 200 at a time from the head)
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
_KEY_CALL = re.compile(r"(?<![\w.])keys\.(\w+)\(")


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


@cache
def variables() -> frozenset[str]:
    """The helpers that are a variable rather than a function (`deferred`)."""
    return frozenset(name for name, text in helpers().items() if name != "keys" and
                     re.search(rf"^local {name}\s*=", text, re.MULTILINE))


def includes(text: str) -> list[str]:
    """The helpers a script or helper names on its include line(s)."""
    return [name.strip() for line in _INCLUDE.findall(text)
            for name in line.split(",") if name.strip()]


def calls(text: str) -> set[str]:
    """The helpers a script or helper's code calls (comments left out); a
    helper that is a variable (`local NAME = ...`) is used where it is named."""
    code = _COMMENT.sub("", text)
    found = {name for name in helpers() if name != "keys" and (
             re.search(rf"(?<![\w.])(?<!function ){name}\s*\(", code) or
             (name in variables() and re.search(rf"(?<![\w.])(?<!local ){name}(?!\w)", code)))}
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


def check_returns(what: str, text: str) -> None:
    """A script that defers writes (defer() in _lib.lua) has them made by
    done(): each of its returns must go through it, or they are lost."""
    code = _COMMENT.sub("", text)
    if len(re.findall(r"\breturn\b", code)) != len(re.findall(r"\breturn done\(", code)):
        raise ScriptError(f"{what} defers writes: each return must be `return done(...)`")


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


def _call_args(code: str, start: int) -> tuple[list[str], int]:
    """The arguments of the call whose `(` is at code[start - 1], and the index
    after its `)`; strings and nested brackets are skipped over whole."""
    args, i, arg_start = [], start, start
    closing = {"(": ")", "[": "]", "{": "}"}
    stack = []  # the closing brackets awaited, innermost last
    while i < len(code):
        c = code[i]
        if c in "'\"":
            i += 1
            while code[i] != c:
                i += 2 if code[i] == "\\" else 1
        elif c in closing:
            stack.append(closing[c])
        elif stack and c == stack[-1]:
            stack.pop()
        elif c == ")":
            args.append(code[arg_start:i].strip())
            return [a for a in args if a], i + 1
        elif c == "," and not stack:
            args.append(code[arg_start:i].strip())
            arg_start = i + 1
        i += 1
    raise ScriptError(f"unclosed call in {code[start - 40:start + 40]!r}")


def expand_keys(code: str) -> str:
    """A helper's `keys.NAME(args)` calls written as the keys themselves
    (`KEYS[1] .. ':j:' .. jid`). A script builds its helpers on every call:
    a table of closures, one a key, cost as much as the rest of a short
    script's prelude, and every helper that captured it (an upvalue) paid a
    walk of Lua's open upvalues (bench/RESULTS.md, "Redis time per job").
    Comments are left as they are."""
    out = []
    for line in code.split("\n"):
        cut = _code_end(line)
        out.append(_expand_line(line[:cut]) + line[cut:])
    return "\n".join(out)


def _code_end(line: str) -> int:
    """Where a line's comment starts (outside strings), or its length."""
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif line.startswith("--", i):
            return i
        i += 1
    return len(line)


def _expand_line(code: str) -> str:
    out, i = [], 0
    for m in _KEY_CALL.finditer(code):
        if m.start() < i:
            continue  # inside a call expanded already
        if m.group(1) not in LAYOUT:
            raise ScriptError(f"no key named {m.group(1)!r}")
        args, end = _call_args(code, m.end())
        args = [a if a.isidentifier() else f"({_expand_line(a)})" for a in args]
        expr = "(" + shard_key(m.group(1), args, base="KEYS[1]") + ")"
        out.append(code[i:m.start()] + expr)
        i = end
    return "".join(out) + code[i:]


def helpers_of(name: str, text: str) -> list[str]:
    """The helpers script `name` runs, each after those it needs, its include
    line checked (and its returns, when it defers writes)."""
    order: list[str] = []
    for needed in check_includes(f"{name}.lua", text):
        _add(needed, order, (f"{name}.lua",))
    if "defer" in order:
        check_returns(f"{name}.lua", text)
    return order


def script_text(name: str) -> str:
    """A script's own text, as lua/ holds it."""
    return (LUA_DIR / f"{name}.lua").read_text()


def constants(user_concurrency: int = 1) -> str:
    """CONSTANTS and USER_CONCURRENCY, as Lua locals."""
    return "-- engine/scripts.py (CONSTANTS)\n" + "".join(
        f"local {k} = {v!r}\n" for k, v in
        {**CONSTANTS, "USER_CONCURRENCY": int(user_concurrency)}.items())


@cache
def source(name: str, user_concurrency: int = 1) -> str:
    """A script's text as Redis runs it: constants, included helpers, the script.

    `user_concurrency` (QUEUE_USER_CONCURRENCY) is written in as the constant
    USER_CONCURRENCY, the concurrency of a user without one of its own: every
    script that places a user needs it, so it is part of the script rather
    than one more argument of each; API and workers must agree on it."""
    text = script_text(name)
    order = helpers_of(name, text)
    # the helpers' keys are written out (expand_keys); the script's own keep
    # their `keys` functions (its text is run as written), only those it names
    used = set(_KEY_CALL.findall(_COMMENT.sub("", text)))
    return "\n".join([constants(user_concurrency)] +
                     [lua_keys(used) if h == "keys" else expand_keys(helpers()[h])
                      for h in order] + [text])
