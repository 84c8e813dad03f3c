"""Ours: `python -m graph` under the listeners, with events from the producer."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from engine import connection
from engine.keys import Keys
from engine.queue import Queue, RetryPolicy

from .. import common
from ..common import PY, free_port, post_json, wait_http
from . import probes
from .latency import WARMUP, window_latency
from .loadgen import LoadGenerators
from .options import Options
from .producer import Producer, Production, fill
from .pyspy import Profile, Recording, find_py_spy
from .results import OursRun, Window

SECRET = "bench-listeners-secret-0123456789abcdef0123"
PASSWORD = "bench-password-1"
REGISTER = "mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}"


async def measure_ours(opts: Options, server: common.RedisServer) -> OursRun:
    """Start the API on `server`, open the listeners, produce each phase's events,
    then read what the listeners heard. Keys go under a prefix of this run's own;
    on a shared server (REDIS_URL) they are deleted afterwards."""
    prefix = f"benchls{os.getpid()}x{int(time.time())}"
    keys = Keys(prefix, shards=1)
    base = keys.base(0)
    archive = Keys.archive(base)
    queue = Queue(connection.client(server.url), keys, RetryPolicy())
    producer = Producer(queue, base, None if opts.archive else archive)
    r = server.client()
    run = OursRun("ours", "ours (`python -m graph`)")
    conns = run.redis

    planned = sum(rate * seconds for rate, seconds in opts.phases) + (
        opts.rate * opts.profile_seconds if opts.profile else 0)
    per_user_jobs = int(planned / opts.users) + 3

    port = free_port()
    env = {"REDIS_URL": server.url, "QUEUE_PREFIX": prefix, "LOG_LEVEL": "WARNING",
           "JWT_SECRET": SECRET, "HOST": "127.0.0.1", "PORT": str(port),
           "QUEUE_MAX_PENDING": str(10**9), "APP_ENV": "development",
           "AUTH_ATTEMPTS_PER_MINUTE": "0"}  # hundreds of registrations from one address
    conns.clients_before_api = probes.redis_clients(r)
    api = common.spawn([PY, "-m", "graph"], env, "listeners-api")
    generators = None
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", api)
        print(f"  API up (pid {api.pid}); registering {opts.users} users ...", flush=True)
        t = time.perf_counter()
        uids = register_users(f"http://127.0.0.1:{port}/graphql", opts.users)
        run.register_s = time.perf_counter() - t
        print(f"  registered in {run.register_s:.1f} s; enqueueing "
              f"{per_user_jobs * opts.users:,} jobs ...", flush=True)
        tokens = mint_tokens(uids)
        await fill(queue, uids, per_user_jobs)
        if not opts.archive:
            await queue.redis.delete(archive)

        await asyncio.sleep(1.0)
        run.rss_before = probes.rss(api.pid)
        conns.api_idle = probes.api_redis_connections(r)
        conns.clients_api_idle = probes.redis_clients(r)

        # listener i belongs to user i % users: a user's listeners spread over the clients
        params = [{"Authorization": f"Bearer {tokens[uids[i % opts.users]]}"}
                  for i in range(opts.listeners)]
        generators = LoadGenerators("ours", f"ws://127.0.0.1:{port}/graphql", params,
                                    opts.clients)
        run.failed, run.ready_s, run.accept_s = await generators.open_all(
            lambda: probes.active_subscriptions(port))

        await asyncio.sleep(2.0)
        run.rss_after = probes.rss(api.pid)
        conns.api_listening = probes.api_redis_connections(r)
        conns.clients_listening = probes.redis_clients(r)

        # the measured windows: a light rate first, then the target rate
        pids = {"api": api.pid, **generators.pids, "driver": os.getpid()}
        if server.proc:
            pids["redis"] = server.proc.pid
        for rate, seconds in opts.phases:
            run.windows.append(await measure_window(producer, rate, seconds, pids, r))
            await asyncio.sleep(3.0)  # stragglers

        if opts.profile:
            run.profile, run.profiled = await profile_api(producer, opts, api.pid)

        heard, infos = await generators.stop()
        run.generators = [{k: v for k, v in i.items() if k != "samples"} for i in infos]
        run.unexpected = [s for i in infos for s in i.get("samples", [])][:3]
        for w in run.windows:
            w0, w1 = w.production.t0 + WARMUP, w.production.t0 + w.seconds
            w.latency = window_latency(heard, w0, w1, w.rate * (w1 - w0) * opts.per_user)
            w.api_cpu_us_per_msg = 1e6 * w.cpu.api_seconds / max(
                1, heard.arrived_between(*w.cpu.wall))
        run.received = len(heard)
        run.expected = (sum(w.production.events for w in run.windows)
                        + (run.profiled.events if run.profiled else 0)) * opts.per_user
        run.rss_end = probes.rss(api.pid)
    finally:
        if generators:
            generators.kill()
        common.stop(api)
        await queue.redis.aclose()
        if server.external:  # leave a shared server as we found it
            for key in r.scan_iter(f"{prefix}:*", count=1000):
                r.delete(key)
    conns.clients_api_gone = probes.redis_clients(r)
    return run


def register_users(graphql_url: str, n: int) -> list[str]:
    """n new users over HTTP, four at a time; their ids. Slow on purpose: argon2."""
    run_id = uuid.uuid4().hex[:6]

    def register(i):
        body = {"query": REGISTER, "variables": {"u": f"ls{run_id}_{i}", "p": PASSWORD}}
        reply = post_json(graphql_url, body, timeout=120)
        if reply.get("errors"):
            raise RuntimeError(f"register: {reply['errors']}")
        return reply["data"]["register"]["id"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(register, range(n)))


def mint_tokens(uids: list[str]) -> dict[str, str]:
    """Tokens as `login` issues them, without paying argon2 again for each user."""
    import jwt

    now = int(time.time())
    return {u: jwt.encode({"sub": u, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")
            for u in uids}


async def measure_window(producer: Producer, rate: float, seconds: float,
                         pids: dict[str, int], r) -> Window:
    """CPU of the named processes and the peaks while the producer finishes `rate`
    jobs a second; the latency is filled in once the load generators have reported."""
    print(f"  producing {rate:,.0f} events/s for {seconds:.0f} s ...", flush=True)
    peaks, meter = probes.Peaks(), probes.CpuMeter(pids)
    meter.start()
    sampler = asyncio.create_task(probes.sample_peaks(pids["api"], r, peaks))
    production = await producer.run(rate, seconds)
    cpu = meter.stop()
    sampler.cancel()
    return Window(rate, seconds, cpu, production=production, peaks=peaks)


async def profile_api(producer: Producer, opts: Options,
                      api_pid: int) -> tuple[Profile | None, Production | None]:
    """py-spy on the API for a few more seconds of the target load (after the
    measured windows, so sampling does not weigh on them)."""
    spy = find_py_spy()
    if spy is None:
        print("  py-spy not found; no profile", flush=True)
        return None, None
    print(f"  profiling the API for {opts.profile_seconds:.0f} s more of the same "
          "load ...", flush=True)
    recording = Recording(spy, api_pid, opts.profile_seconds)
    await asyncio.sleep(0.5)
    production = await producer.run(opts.rate, opts.profile_seconds - 1)
    profile = await recording.profile()
    await asyncio.sleep(1.0)
    return profile, production
