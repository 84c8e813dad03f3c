"""Redis time per job from `INFO commandstats` (and Redis's own CPU from `INFO cpu`).

Redis counts a command run by a script twice: in the script's own row
(EVALSHA's usec includes every `redis.call` it makes) and in the command's row
(`cmdstat_hset` counts the HSETs called from scripts too). So the time a drain
cost Redis is the scripts' rows plus the commands clients send themselves that
no script runs (blocking pops, connection set-up), not the sum of every row.
Both systems measured here (ours and BullMQ) do all per-job work in scripts.

Usage: `reset(client)` before the measured drain, `measure(client, jobs, before)`
after it; `before` is what `reset` returned (Redis's CPU counters then).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# rows whose usec includes the commands their script or function calls
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
# sent by clients themselves, never from a script (blocking commands cannot block in one)
CLIENT_COMMANDS = frozenset({
    "blpop", "brpop", "blmove", "brpoplpush", "blmpop", "bzpopmin", "bzpopmax", "bzmpop",
    "xread", "xreadgroup", "hello", "ping", "select", "auth", "quit",
    "client|setname", "client|setinfo", "client|id", "script|load", "script|exists",
    "function|load",
})
# the harness's own calls around the drain: never counted
HARNESS_COMMANDS = frozenset({"info", "config|resetstat"})


@dataclass
class RedisTime:
    """What one drain cost Redis, per job, in µs."""

    jobs: int
    scripts_us: float                 # EVAL/EVALSHA/FCALL rows (inner commands included)
    client_us: float                  # commands clients sent outside scripts
    cpu_us: float = float("nan")      # Redis main thread CPU (user + sys): also I/O, parsing
    worker_cpu_us: float = float("nan")  # not Redis: the worker process's CPU (user + sys)
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # name: (calls, usec)

    @property
    def per_job_us(self) -> float:
        return self.scripts_us + self.client_us


def parse_commandstats(info: dict) -> dict[str, tuple[int, int]]:
    """`INFO commandstats` as redis-py returns it ({'cmdstat_evalsha': {'calls': .., 'usec': ..}})
    or as raw text lines (`cmdstat_evalsha:calls=3,usec=90,...`): {name: (calls, usec)}."""
    if isinstance(info, str):
        parsed = {}
        for line in info.splitlines():
            if line.startswith("cmdstat_"):
                key, _, rest = line.partition(":")
                parsed[key] = dict(kv.split("=", 1) for kv in rest.split(","))
        info = parsed
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for k, v in info.items() if k.startswith("cmdstat_")}


def script_calls(info: dict) -> tuple[int, int]:
    """(calls, usec) of every script row (EVALSHA, FCALL...) in `INFO commandstats`."""
    rows = parse_commandstats(info)
    return (sum(calls for name, (calls, _) in rows.items() if name in SCRIPT_COMMANDS),
            sum(us for name, (_, us) in rows.items() if name in SCRIPT_COMMANDS))


def per_job(rows: dict[str, tuple[int, int]], jobs: int) -> RedisTime:
    scripts = sum(us for name, (_, us) in rows.items() if name in SCRIPT_COMMANDS)
    client = sum(us for name, (_, us) in rows.items() if name in CLIENT_COMMANDS)
    return RedisTime(jobs, scripts / jobs, client / jobs, rows=rows)


def _cpu(client) -> float:
    cpu = client.info("cpu")
    if "used_cpu_user_main_thread" in cpu:
        return cpu["used_cpu_user_main_thread"] + cpu["used_cpu_sys_main_thread"]
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def reset(client) -> float:
    """Zero the command statistics; returns Redis's CPU seconds so far."""
    client.config_resetstat()
    return _cpu(client)


def measure(client, jobs: int, before: float) -> RedisTime:
    rt = per_job(parse_commandstats(client.info("commandstats")), jobs)
    rt.cpu_us = (_cpu(client) - before) / jobs * 1e6
    return rt
