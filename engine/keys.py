"""Where a user's data lives in Redis.

Every key of a user starts with its shard's base key, `<prefix>:{s<N>}`, so
all of them, and the shard's rotation, leases and event stream, hash to one
Redis Cluster slot: each Lua script touches a single slot. Users are spread
over `QUEUE_SHARDS` shards by a stable hash of their id; changing the number
of shards while jobs are queued would strand them, so choose it up front.
"""

from __future__ import annotations

import zlib


class Keys:
    def __init__(self, prefix: str = "q", shards: int = 1):
        self.prefix = prefix
        self.shards = shards

    def shard_of(self, uid: str) -> int:
        return zlib.crc32(uid.encode()) % self.shards if self.shards > 1 else 0

    def base(self, shard: int) -> str:
        return f"{self.prefix}:{{s{shard}}}"

    def user_base(self, uid: str) -> str:
        return self.base(self.shard_of(uid))

    def all_bases(self) -> list[str]:
        return [self.base(s) for s in range(self.shards)]

    # names below mirror the Lua helpers in lua/_lib.lua
    @staticmethod
    def user(base: str, uid: str, what: str) -> str:
        return f"{base}:u:{uid}:{what}"

    @staticmethod
    def job(base: str, jid: str) -> str:
        return f"{base}:j:{jid}"

    @staticmethod
    def shard(base: str, what: str) -> str:
        return f"{base}:{what}"
