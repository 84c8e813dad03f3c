"""Where everything lives in Redis: the one table of key names.

Every key of a shard starts with its base key, `<prefix>:{s<N>}`, so all of
them (the shard's rotation, leases and streams, and its users' and jobs'
keys) hash to one Redis Cluster slot: each Lua script touches a single slot.
Users are spread over `QUEUE_SHARDS` shards by a stable hash of their id;
changing the number of shards while jobs are queued would strand them, so
choose it up front.

The Lua scripts get the same names as functions of a `keys` table
(`keys.pending(uid)`), written from `LAYOUT` when they are loaded (see
`lua_keys` and engine/scripts.py): Python and Lua cannot disagree.
"""

from __future__ import annotations

import zlib
from string import Formatter

# name -> template. `{base}` is the shard's base key; the other fields are
# the method's arguments, in order.
LAYOUT = {
    # a shard
    "rotation": "{base}:rot",  # list: users with waiting work and nothing running
    "delayed": "{base}:delayed",  # zset, the due-time index: `uid:jid` of jobs waiting for their runAt or a retry, `uid` of users waiting for their start rate, by due time
    "leases": "{base}:leases",  # zset: `uid:jid` of running jobs, by lease deadline
    "signal": "{base}:signal",  # list: wake-up tokens for blocked workers
    "shard_events": "{base}:events",  # stream: every finished job, for the API's fan-out
    "archive": "{base}:archive",  # list: `uid:jid` of changes MongoDB has not stored yet
    "counts": "{base}:counts",  # hash: queued: the shard's QUEUED jobs, kept by the scripts
    "backlog": "{base}:backlog",  # zset: users with QUEUED jobs, scored by how many
    "paused": "{base}:paused",  # set: paused users with work waiting (state p)
    "limited": "{base}:limited",  # set: users with limits of their own (a limits hash)
    "throughput": "{base}:tp:{bucket}",  # hash: one 10 s bucket's e, c, f, q0, dq (expires)
    # a user, in their shard
    "pending": "{base}:u:{uid}:pending",  # list: the default lane: due job ids, oldest first
    "lane": "{base}:u:{uid}:lane:{key}",  # list: the lane of one ordering key, as `pending`
    "lanes": "{base}:u:{uid}:lanes",  # zset: lanes whose head may start now ('' the default), by priority then due time
    "ordering_keys": "{base}:u:{uid}:keys",  # set: ordering keys whose lane holds jobs
    "busy": "{base}:u:{uid}:busy",  # hash: lane -> job id of each running lane ('' the default)
    "scheduled": "{base}:u:{uid}:scheduled",  # set: job ids whose runAt is ahead (in the due-time index)
    "state": "{base}:u:{uid}:state",  # string: r rotation, d waiting for a due time, a busy, p paused; absent: idle
    "limits": "{base}:u:{uid}:limits",  # hash: concurrency, weight, spm, paused (1/0); the engine's credit, next
    "ready": "{base}:u:{uid}:ready",  # list: finished jobs not yet dequeued
    "user_events": "{base}:u:{uid}:events",  # stream: the user's events, for replay
    "idempotency": "{base}:u:{uid}:idem:{idem}",  # string: idempotency key -> job id
    # a job, in its user's shard
    "job": "{base}:j:{jid}",  # hash: data, status, attempts, times, result, token, version
    "updates": "{base}:j:{jid}:up",  # stream: the job's updates (jobUpdates), expires with the job
    # counters outside the shards: one key a command, so no slot to share
    "enqueue_rate": "{prefix}:rate:{uid}:{minute}",  # a user's enqueues in one minute
    "login_throttle": "{prefix}:login:{username}:{client}",  # failed logins, per window
    "auth_attempts": "{prefix}:auth:{client}",  # logins and registrations of an address, a minute
}


def fields(name: str) -> list[str]:
    """The template's fields in order, e.g. ["base", "uid"] for "pending"."""
    return [f for _, f, _, _ in Formatter().parse(LAYOUT[name]) if f is not None]


def _key(name: str, **values) -> str:
    return LAYOUT[name].format(**values)


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

    # ---- a shard ----

    @staticmethod
    def rotation(base: str) -> str:
        return _key("rotation", base=base)

    @staticmethod
    def delayed(base: str) -> str:
        return _key("delayed", base=base)

    @staticmethod
    def leases(base: str) -> str:
        return _key("leases", base=base)

    @staticmethod
    def signal(base: str) -> str:
        return _key("signal", base=base)

    @staticmethod
    def shard_events(base: str) -> str:
        return _key("shard_events", base=base)

    @staticmethod
    def archive(base: str) -> str:
        return _key("archive", base=base)

    @staticmethod
    def counts(base: str) -> str:
        return _key("counts", base=base)

    @staticmethod
    def backlog(base: str) -> str:
        return _key("backlog", base=base)

    @staticmethod
    def paused(base: str) -> str:
        return _key("paused", base=base)

    @staticmethod
    def limited(base: str) -> str:
        return _key("limited", base=base)

    @staticmethod
    def throughput(base: str, bucket: int) -> str:
        return _key("throughput", base=base, bucket=bucket)

    # ---- a user ----

    @staticmethod
    def pending(base: str, uid: str) -> str:
        return _key("pending", base=base, uid=uid)

    @staticmethod
    def lane(base: str, uid: str, key: str) -> str:
        return _key("lane", base=base, uid=uid, key=key)

    @staticmethod
    def lanes(base: str, uid: str) -> str:
        return _key("lanes", base=base, uid=uid)

    @staticmethod
    def ordering_keys(base: str, uid: str) -> str:
        return _key("ordering_keys", base=base, uid=uid)

    @staticmethod
    def busy(base: str, uid: str) -> str:
        return _key("busy", base=base, uid=uid)

    @staticmethod
    def scheduled(base: str, uid: str) -> str:
        return _key("scheduled", base=base, uid=uid)

    @staticmethod
    def state(base: str, uid: str) -> str:
        return _key("state", base=base, uid=uid)

    @staticmethod
    def limits(base: str, uid: str) -> str:
        return _key("limits", base=base, uid=uid)

    @staticmethod
    def ready(base: str, uid: str) -> str:
        return _key("ready", base=base, uid=uid)

    @staticmethod
    def user_events(base: str, uid: str) -> str:
        return _key("user_events", base=base, uid=uid)

    @staticmethod
    def idempotency(base: str, uid: str, idem: str) -> str:
        return _key("idempotency", base=base, uid=uid, idem=idem)

    # ---- a job ----

    @staticmethod
    def job(base: str, jid: str) -> str:
        return _key("job", base=base, jid=jid)

    @staticmethod
    def updates(base: str, jid: str) -> str:
        return _key("updates", base=base, jid=jid)

    # ---- counters ----

    def enqueue_rate(self, uid: str, minute: int) -> str:
        return _key("enqueue_rate", prefix=self.prefix, uid=uid, minute=minute)

    def login_throttle(self, username: str, client: str) -> str:
        return _key("login_throttle", prefix=self.prefix, username=username, client=client)

    def auth_attempts(self, client: str) -> str:
        return _key("auth_attempts", prefix=self.prefix, client=client)


def shard_key(name: str, args: list[str], base: str = "base") -> str | None:
    """The Lua expression of a shard key: `shard_key("pending", ["uid"])` is
    `base .. ':u:' .. uid .. ':pending'`, `base` (a Lua expression) being the
    script's KEYS[1]. None for a key outside the shards (a counter)."""
    parts = list(Formatter().parse(LAYOUT[name]))
    if parts[0][:2] != ("", "base"):
        return None
    values = dict(zip([f for f in fields(name) if f != "base"], args))
    expr = []
    for literal, field, _, _ in parts:
        if literal:
            expr.append("'" + literal.replace("\\", "\\\\").replace("'", "\\'") + "'")
        if field is not None:
            expr.append(base if field == "base" else values[field])
    return " .. ".join(expr)


def lua_keys(names=None) -> str:
    """The shard's keys as Lua functions of the script's KEYS[1], the shard's
    base key: `keys.pending(uid)` is `Keys.pending(base, uid)`; `names`: only
    those (None: all). The counters are left out: their scripts get the whole
    key as KEYS[1]."""
    lines = ["-- the key names of engine/keys.py (LAYOUT), of the shard whose base key is KEYS[1]",
             "local base = KEYS[1]"]
    table = []
    for name in LAYOUT:
        args = [f for f in fields(name) if f != "base"]
        expr = shard_key(name, args)
        if expr is None or (names is not None and name not in names):
            continue
        table.append(f"  {name} = function({', '.join(args)}) return {expr} end,")
    return "\n".join(lines + ["local keys = {", *table, "}"])
