"""The Lua scripts of `lua/`, each a single atomic state change of a job."""

from __future__ import annotations

from functools import cache
from pathlib import Path

LUA_DIR = Path(__file__).parent / "lua"
NAMES = ("enqueue", "claim", "finish", "heartbeat", "reclaim", "release", "cancel",
         "dequeue", "archived")


@cache
def source(name: str) -> str:
    """A script's text with the shared helpers of `_lib.lua` in front."""
    lib = (LUA_DIR / "_lib.lua").read_text()
    return lib + "\n" + (LUA_DIR / f"{name}.lua").read_text()


def register(redis) -> dict:
    """Script objects bound to a client: EVALSHA, loading the script on a miss."""
    return {name: redis.register_script(source(name)) for name in NAMES}
