"""Issue 4's benchmark: thousands of `processed` listeners on one API process.

    python -m bench.listeners                  # 500 users x 10 listeners, 1,000 events/s, 20 s
    python -m bench.listeners --write          # ... and append the section to bench/RESULTS.md
    python -m bench.listeners --users 50 --seconds 5 --no-baseline --no-profile   # a quick try

One `python -m graph` (uvicorn, one process, in-memory MongoDB) on a Redis of
our own (or REDIS_URL, under a unique QUEUE_PREFIX; nothing is flushed). Users
are registered over HTTP (argon2: ~0.2 s of CPU each, so a few hundred users,
each with several listeners); their tokens are minted with the API's
JWT_SECRET, as `login` would issue them. Load generators (separate processes,
graphql-transport-ws, no compression) open the listeners with `websockets`,
each subscribed to `processed { cursor job { id status finishedAt } }`, then
read them with a minimal frame parser (`_Frames`).

Events: jobs are enqueued through the engine before the API starts, then a
producer in this process finishes them at a steady rate the way a worker does
(`Queue.finish_many`: each job's `finish` claims the next job in the same
call, as a worker's does; the jobs due each 2 ms go in one pipeline, open
loop); the engine's fair rotation spreads the finishes evenly over the users.
Latency = the client's receive time - the job's `finishedAt` (Redis `TIME` at
the finish, ms resolution, same machine clock); the first WARMUP seconds are
left out.

The in-memory MongoDB (mongomock) scans every stored document per upsert
(see scenario 6 in RESULTS.md), so at 1,000 finishes/s the archiver would
measure mongomock, not the event path: the producer empties the shard's
archive list after each batch of finishes (the archiver still wakes after events and
reads the list). `--archive` leaves it in place.

Baseline (same run, same clients, same load): a plain strawberry subscription
fed from an in-memory asyncio broadcast (bench/broadcast_app.py), where
`finishedAt` is the moment of publishing (no Redis hop).

With `--profile` (default on) py-spy samples the API for a few more seconds
of the same load after the measured window; the summary goes to
bench/.work/listeners-profile.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from array import array
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from . import common
from .api import _post, _wait_http
from .common import PY, ROOT, WORK, fmt, free_port, percentile

QUERY = "subscription { processed { cursor job { id status finishedAt } } }"
SECRET = "bench-listeners-secret-0123456789abcdef0123"
OWNER = "bench-listeners-producer"
LEASE = 120.0
IN_HAND = 64  # jobs the producer holds claimed, as workers with 64 slots in all would
TICK = 0.002  # the producer finishes what fell due every TICK seconds
WARMUP = 2.0
PASSWORD = "bench-password-1"


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _new_loop():
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


# ================================================================ load generator process


class _Frames(asyncio.Protocol):
    """A listener's socket after the handshake, read without the websockets library.

    At 10,000 messages/s on the machine the API runs on, the library's
    per-message work in the load generators takes CPU from the server being
    measured; this parses the server's frames (unmasked, unfragmented: what
    uvicorn sends) in a few lines and answers pings. Texts go to `on_text`.
    """

    def __init__(self, transport, on_text, closed: list):
        self.transport, self.on_text, self.closed = transport, on_text, closed
        self.buf = bytearray()

    def reply(self, opcode: int, payload: bytes) -> None:
        # client frames are masked; an all-zero key leaves the payload as it is
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < pos + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[pos:pos + n])
            del buf[:pos + n]
            if opcode == 0x1:
                self.on_text(payload, self.reply)
            elif opcode == 0x9:
                self.reply(0xA, payload)
            elif opcode == 0x8:
                self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed[0] += 1


async def _client_main() -> None:
    """`python -m bench.listeners client`: config on stdin's first line; prints
    {"ready": ...} once every listener is subscribed; on "stop" writes what it
    heard (finishedAt epoch s, latency ms) to cfg["out"] and prints {"done": ...}."""
    from websockets.asyncio.client import connect

    _raise_nofile()
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    fin, lat = array("d"), array("d")
    kinds: Counter = Counter()
    samples: list[str] = []
    closed = [0]
    sem = asyncio.Semaphore(cfg.get("concurrency", 100))
    subscribe = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}})
    parse = datetime.fromisoformat

    async def open_one(params):
        async with sem:
            ws = await connect(cfg["url"], subprotocols=["graphql-transport-ws"],
                               ping_interval=None, compression=None, open_timeout=120,
                               max_queue=None)
            await ws.send(json.dumps({"type": "connection_init", "payload": params}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no ack: {ack}")
            await ws.send(subscribe)
            return ws

    def on_text(raw: bytes, reply) -> None:
        now = time.time()
        m = json.loads(raw)
        kind = m.get("type")
        if kind == "next":
            try:
                t = parse(m["payload"]["data"]["processed"]["job"]["finishedAt"]).timestamp()
            except (KeyError, TypeError):
                kinds["next-with-errors"] += 1
                if len(samples) < 3:
                    samples.append(raw[:300].decode(errors="replace"))
                return
            fin.append(t)
            lat.append((now - t) * 1000)
        elif kind == "ping":
            reply(0x1, b'{"type":"pong"}')
        else:
            kinds[kind] += 1
            if len(samples) < 3:
                samples.append(raw[:300].decode(errors="replace"))

    def take_over(ws) -> None:
        """From here on the socket is read by `_Frames`, not by the library."""
        ws.transport.set_protocol(_Frames(ws.transport, on_text, closed))

    t0 = time.perf_counter()
    results = await asyncio.gather(*(open_one(p) for p in cfg["params"]), return_exceptions=True)
    seconds = time.perf_counter() - t0
    socks = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    for ws in socks:
        take_over(ws)
    print(json.dumps({"ready": len(socks), "failed": len(errors), "seconds": seconds,
                      "first_error": errors[0] if errors else None}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    with open(cfg["out"], "wb") as f:
        fin.tofile(f)
        lat.tofile(f)
    print(json.dumps({"done": len(fin), "closed": closed[0], "other": dict(kinds),
                      "samples": samples}), flush=True)
    os._exit(0)  # the server sees 2,500 abrupt disconnects; it must cope with those anyway


class Clients:
    """The load-generator processes, driven over their stdin/stdout."""

    def __init__(self, name: str, url: str, params: list[dict], processes: int):
        self.name, self.url = name, url
        self.parts = [params[i::processes] for i in range(processes)]
        self.procs: list[asyncio.subprocess.Process] = []
        self.outs = [WORK / f"listeners-{name}-{i}.bin" for i in range(processes)]

    async def start(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        log = open(WORK / f"listeners-{self.name}-clients.log", "ab")
        for part, out in zip(self.parts, self.outs):
            p = await asyncio.create_subprocess_exec(
                PY, "-m", "bench.listeners", "client", cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                limit=2**20, start_new_session=True)
            p.stdin.write((json.dumps({"url": self.url, "params": part, "out": str(out),
                                       "concurrency": 100}) + "\n").encode())
            await p.stdin.drain()
            self.procs.append(p)

    async def ready(self, timeout: float) -> list[dict]:
        return [json.loads(await asyncio.wait_for(p.stdout.readline(), timeout))
                for p in self.procs]

    async def stop(self) -> tuple[array, array, list[dict]]:
        infos = []
        for p in self.procs:
            p.stdin.write(b"stop\n")
            await p.stdin.drain()
        for p in self.procs:
            line = await asyncio.wait_for(p.stdout.readline(), 60)
            infos.append(json.loads(line) if line else {"done": 0, "error": "no answer"})
            await asyncio.wait_for(p.wait(), 30)
        fin, lat = array("d"), array("d")
        for out in self.outs:
            data = array("d")
            with open(out, "rb") as f:
                data.frombytes(f.read())
            half = len(data) // 2
            fin.extend(data[:half])
            lat.extend(data[half:])
            out.unlink()
        return fin, lat, infos

    def kill(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


# ================================================================ measuring


def _rss(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def _cpu(pids: list[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            out[pid] = float("nan")
    return out


def _redis_conns(r) -> int:
    """Connections the API holds to Redis: it names them `queue-api...`
    (CLIENT LIST; cheap beside reading the socket table of 5,000 listeners)."""
    return sum(1 for c in r.client_list() if c.get("name", "").startswith("queue-api"))


def _get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def _subscriptions(port: int) -> int:
    m = re.search(r"^graphql_active_subscriptions (\S+)$",
                  _get(f"http://127.0.0.1:{port}/metrics"), re.M)
    return int(float(m.group(1))) if m else -1


async def _until(check, target: int, timeout: float) -> float:
    """Seconds until check() >= target (polled off the loop), nan on timeout."""
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if await loop.run_in_executor(None, check) >= target:
                return time.perf_counter() - t0
        except OSError:
            pass
        await asyncio.sleep(0.1)
    return float("nan")


def _latency_stats(fin: array, lat: array, w0: float, w1: float, expected: float) -> dict:
    sel = [l for f, l in zip(fin, lat) if w0 <= f < w1]
    return {
        "received": len(sel), "expected": expected, "window_s": w1 - w0,
        "msgs_per_s": len(sel) / (w1 - w0) if w1 > w0 else float("nan"),
        "p50": percentile(sel, 50), "p99": percentile(sel, 99),
        "max": max(sel) if sel else float("nan"),
        "over_100ms": sum(1 for l in sel if l > 100) / len(sel) if sel else float("nan"),
        "total_received": len(fin),
        "by_second": _by_second(fin, lat, w0 - WARMUP, w1),
    }


def _received_between(fin: array, lat: array, t0: float, t1: float) -> int:
    """Messages whose arrival (finishedAt + latency) fell in [t0, t1)."""
    return sum(1 for f, l in zip(fin, lat) if t0 <= f + l / 1000 < t1)


def _by_second(fin: array, lat: array, start: float, end: float) -> list[tuple]:
    """(second since the start, messages, p50 ms, max ms) by finishedAt: does latency build up?"""
    buckets: dict[int, list[float]] = {}
    for f, l in zip(fin, lat):
        if start <= f < end:
            buckets.setdefault(int(f - start), []).append(l)
    return [(s, len(v), round(percentile(v, 50), 1), round(max(v), 1))
            for s, v in sorted(buckets.items())]


# ================================================================ the producer


async def _produce(q, base: str, rate: float, seconds: float, drain_key: str | None) -> dict:
    """Finish `rate * seconds` queued jobs on a fixed schedule; returns timing.

    Each tick finishes the jobs that have fallen due, in one pipeline (each
    `finish` script still claims the next job, as a worker's does), so the
    producer's own CPU stays small beside the API it shares the machine with.
    """
    total = int(rate * seconds)
    in_hand = (await q.claim(base, IN_HAND, OWNER, LEASE)).jobs
    late = 0.0
    done = 0
    t0 = time.time() + 0.05
    while done < total:
        due = min(total, int((time.time() - t0) * rate) + 1)
        if due <= done:
            await asyncio.sleep(max(0.0, min(TICK, t0 + done / rate - time.time())))
            continue
        if not in_hand:
            raise RuntimeError("the queue ran dry: enqueue more jobs")
        late = max(late, time.time() - (t0 + done / rate))
        batch, in_hand = in_hand[:due - done], in_hand[due - done:]
        more = done + len(batch) + len(in_hand) < total  # claim replacements while jobs remain
        for b in await q.finish_many([(job, True, "ok") for job in batch],
                                     claim_n=1 if more else 0, owner=OWNER, lease_seconds=LEASE):
            in_hand.extend(b.jobs)
        if drain_key:
            await q.redis.delete(drain_key)
        done += len(batch)
    return {"t0": t0, "t1": time.time(), "events": done, "max_late_ms": late * 1000}


async def _prefill(q, uids: list[str], per_user: int) -> None:
    sem = asyncio.Semaphore(16)

    async def one(uid):
        async with sem:
            await q.enqueue(uid, [(uuid.uuid4().hex, "x" * 16, None) for _ in range(per_user)],
                            10**9)

    await asyncio.gather(*(one(u) for u in uids))


# ================================================================ py-spy


def _py_spy() -> str | None:
    cand = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    return cand if os.path.exists(cand) else None


CATEGORIES = [  # (name, substrings of a frame's file), matched from the innermost frame out
    ("JSON encoding of each message", ("json/encoder", "json/__init__")),
    ("WebSocket send path (starlette, uvicorn, websockets, socket write)",
     ("graph/wsprotocol.py", "starlette/websockets", "uvicorn/protocols/websockets", "websockets/",
      "selector_events.py", "asyncio/streams")),
    ("GraphQL execution per listener (graphql-core, strawberry schema/extensions)",
     ("graphql/", "strawberry/schema/", "strawberry/extensions/", "strawberry/types/",
      "strawberry/utils/", "strawberry/annotation", "strawberry/types")),
    ("strawberry's graphql-transport-ws handler", ("strawberry/subscriptions/", "strawberry/asgi",
                                                   "strawberry/http/")),
    ("rendering each event once (graph/render.py, graph/fanout.py)",
     ("graph/render.py", "graph/fanout.py")),
    ("hub: reader, dispatch, JobRecord parsing (graph/events.py, engine/jobs.py)",
     ("graph/events.py", "engine/jobs.py")),
    ("subscription resolver and types (graph/schema.py, graph/types.py)",
     ("graph/schema.py", "graph/types.py", "graph/metrics.py")),
    ("archiver and MongoDB", ("graph/archiver.py", "graph/store.py", "mongomock", "beanie",
                              "motor")),
    ("redis-py", ("redis/",)),
    ("rest of graph/ (view, middleware, ...)", ("graph/",)),
    ("asyncio event loop itself", ("asyncio/",)),
]


def _categorize(frames: list[str]) -> str:
    for fr in reversed(frames):
        where = fr[fr.rfind("(") + 1:]
        for name, needles in CATEGORIES:
            if any(n in where for n in needles):
                return name
    return "other"


def _summarize_profile(raw_path, out_path, res: dict | None = None) -> str:
    """Self and inclusive shares of the samples, from py-spy's collapsed stacks."""
    cats: Counter = Counter()
    self_c: Counter = Counter()
    incl: Counter = Counter()
    total = 0
    for line in open(raw_path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        n = int(n)
        total += n
        frames = stack.split(";")
        self_c[frames[-1]] += n
        cats[_categorize(frames)] += n
        for fr in set(frames):
            incl[fr] += n
    if not total:
        return "no samples"
    if res is not None:
        res["profile_samples"] = total
        res["profile_categories"] = [(k, 100 * v / total) for k, v in cats.most_common()]
    lines = [f"{total} samples", "", "by kind (innermost matching frame):"]
    lines += [f"  {100 * v / total:5.1f}%  {k}" for k, v in cats.most_common()]
    lines += ["", "self time (top 25):"]
    lines += [f"  {100 * n / total:5.1f}%  {fr}" for fr, n in self_c.most_common(25)]
    lines += ["", "inclusive time (top 60):"]
    lines += [f"  {100 * n / total:5.1f}%  {fr}" for fr, n in incl.most_common(60)]
    text = "\n".join(lines)
    out_path.write_text(text + "\n")
    return text


# ================================================================ the run


async def _ours(args, server, results: dict) -> None:
    import jwt

    from engine import connection
    from engine.keys import Keys
    from engine.queue import Queue, RetryPolicy

    prefix = f"benchls{os.getpid()}x{int(time.time())}"
    keys = Keys(prefix, shards=1)
    base = keys.base(0)
    archive_key = f"{base}:archive"
    q = Queue(connection.client(server.url), keys, RetryPolicy())
    r = server.client()
    n_listeners = args.users * args.per_user
    res = results["ours"] = {}

    run_id = uuid.uuid4().hex[:6]
    phases = [(args.light_rate, args.light_seconds)] if args.light_rate > 0 else []
    phases.append((args.rate, args.seconds))
    planned = sum(r * t for r, t in phases) + (
        args.rate * args.profile_seconds if args.profile else 0)
    per_user_jobs = int(planned / args.users) + 3

    port = free_port()
    env = {"REDIS_URL": server.url, "QUEUE_PREFIX": prefix, "LOG_LEVEL": "WARNING",
           "JWT_SECRET": SECRET, "HOST": "127.0.0.1", "PORT": str(port),
           "QUEUE_MAX_PENDING": str(10**9), "APP_ENV": "development"}
    res["redis_clients_before_api"] = int(r.info("clients")["connected_clients"])
    api = common.spawn([PY, "-m", "graph"], env, "listeners-api")
    clients = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", api)
        gql = f"http://127.0.0.1:{port}/graphql"
        print(f"  API up (pid {api.pid}); registering {args.users} users ...", flush=True)

        def register(i):
            body = {"query": "mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}",
                    "variables": {"u": f"ls{run_id}_{i}", "p": PASSWORD}}
            reply = _post(gql, body, timeout=120)
            if reply.get("errors"):
                raise RuntimeError(f"register: {reply['errors']}")
            return reply["data"]["register"]["id"]

        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            uids = list(pool.map(register, range(args.users)))
        res["register_s"] = time.perf_counter() - t
        print(f"  registered in {res['register_s']:.1f} s; enqueueing "
              f"{per_user_jobs * args.users:,} jobs ...", flush=True)
        now = int(time.time())
        tokens = {u: jwt.encode({"sub": u, "iat": now, "exp": now + 3600}, SECRET,
                                algorithm="HS256") for u in uids}
        await _prefill(q, uids, per_user_jobs)
        await r_async_del(q, archive_key, args.archive)

        await asyncio.sleep(1.0)
        res["api_rss_before"] = _rss(api.pid)
        res["api_redis_conns_before"] = _redis_conns(r)
        res["redis_clients_before"] = int(r.info("clients")["connected_clients"])

        # listener i belongs to user i % users: a user's listeners spread over the clients
        params = [{"Authorization": f"Bearer {tokens[uids[i % args.users]]}"}
                  for i in range(n_listeners)]
        clients = Clients("ours", f"ws://127.0.0.1:{port}/graphql", params, args.clients)
        print(f"  opening {n_listeners:,} listeners ...", flush=True)
        t = time.perf_counter()
        await clients.start()
        infos = await clients.ready(300)
        res["client_ready_s"] = time.perf_counter() - t
        res["failed"] = sum(i["failed"] for i in infos)
        if res["failed"]:
            print(f"  ! {res['failed']} listeners failed: {infos}", flush=True)
        res["accept_s"] = (time.perf_counter() - t) + await _until(
            lambda: _subscriptions(port), n_listeners - res["failed"], 120)
        print(f"  {n_listeners - res['failed']:,} subscribed in {res['accept_s']:.1f} s",
              flush=True)

        await asyncio.sleep(2.0)
        res["api_rss_after"] = _rss(api.pid)
        res["api_redis_conns_after"] = _redis_conns(r)
        res["redis_clients_after"] = int(r.info("clients")["connected_clients"])

        # ---- the measured windows: a light rate first, then the target rate
        pids = {"api": api.pid, **{f"client{i}": p for i, p in enumerate(clients.pids)},
                "driver": os.getpid()}
        if server.proc:
            pids["redis"] = server.proc.pid
        res["phases"] = []
        for rate, seconds in phases:
            print(f"  producing {rate:,.0f} events/s for {seconds:.0f} s ...", flush=True)
            ph = {"rate": rate, "seconds": seconds}
            c0, tc0, psi0, wc0 = _cpu(list(pids.values())), time.perf_counter(), _psi(), time.time()
            sampler = asyncio.create_task(_sample(api.pid, r, res))
            prod = await _produce(q, base, rate, seconds, None if args.archive else archive_key)
            c1, tc1, psi1, wc1 = _cpu(list(pids.values())), time.perf_counter(), _psi(), time.time()
            ph["cpu_window"] = (wc0, wc1)
            sampler.cancel()
            ph["producer"] = prod
            ph["cpu_pct"] = {name: 100 * (c1[pid] - c0[pid]) / (tc1 - tc0)
                             for name, pid in pids.items()}
            ph["api_cpu_s"] = c1[api.pid] - c0[api.pid]
            ph["cpu_pressure_pct"] = 100 * (psi1 - psi0) / 1e6 / (tc1 - tc0)
            res["phases"].append(ph)
            await asyncio.sleep(3.0)  # stragglers
        prod = res["phases"][-1]["producer"]

        if args.profile:
            spy = _py_spy()
            if spy is None:
                print("  py-spy not found; no profile", flush=True)
            else:
                raw = WORK / "listeners-profile.raw"
                print(f"  profiling the API for {args.profile_seconds:.0f} s more of the same "
                      "load ...", flush=True)
                sp = subprocess.Popen([spy, "record", "-p", str(api.pid), "-d",
                                       str(int(args.profile_seconds)), "-r", "100", "-f", "raw",
                                       "-o", str(raw), "--nonblocking"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                await asyncio.sleep(0.5)
                res["profile_producer"] = await _produce(
                    q, base, args.rate, args.profile_seconds - 1,
                    None if args.archive else archive_key)
                err = (await asyncio.get_running_loop().run_in_executor(
                    None, lambda: sp.communicate(timeout=60)[1])) or b""
                if raw.exists():
                    res["profile"] = _summarize_profile(raw, WORK / "listeners-profile.txt", res)
                else:
                    res["profile"] = f"py-spy failed: {err.decode()[-500:]}"
                await asyncio.sleep(1.0)

        fin, lat, infos = await clients.stop()
        res["client_infos"] = [{k: v for k, v in i.items() if k != "samples"} for i in infos]
        res["client_samples"] = [s for i in infos for s in i.get("samples", [])][:3]
        for ph in res["phases"]:
            t0p = ph["producer"]["t0"]
            w0, w1 = t0p + WARMUP, t0p + ph["seconds"]
            ph["latency"] = _latency_stats(fin, lat, w0, w1, ph["rate"] * (w1 - w0) * args.per_user)
            ph["api_cpu_us_per_msg"] = 1e6 * ph["api_cpu_s"] / max(
                1, _received_between(fin, lat, *ph["cpu_window"]))
        res["latency"] = res["phases"][-1]["latency"]
        res["cpu_pct"] = res["phases"][-1]["cpu_pct"]
        res["producer"] = prod
        res["total_received"] = len(fin)
        res["expected_total"] = (sum(ph["producer"]["events"] for ph in res["phases"])
                                 + res.get("profile_producer", {}).get("events", 0)) * args.per_user
        res["api_rss_end"] = _rss(api.pid)
    finally:
        if clients:
            clients.kill()
        common.stop(api)
        await q.redis.aclose()
        if server.external:  # leave a shared server as we found it
            for key in r.scan_iter(f"{prefix}:*", count=1000):
                r.delete(key)
    res["redis_clients_api_gone"] = int(r.info("clients")["connected_clients"])


def _psi() -> float:
    """Microseconds some task waited for a CPU (Linux pressure stall information)."""
    try:
        for line in open("/proc/pressure/cpu"):
            if line.startswith("some"):
                return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


async def r_async_del(q, key: str, keep: bool) -> None:
    if not keep:
        await q.redis.delete(key)


async def _sample(api_pid: int, r, res: dict) -> None:
    """Peaks during the window: the API's Redis connections, Redis clients, RSS."""
    res["peak_api_redis_conns"] = res["peak_redis_clients"] = res["peak_api_rss"] = 0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1.0)
        conns = await loop.run_in_executor(None, _redis_conns, r)
        clients = await loop.run_in_executor(None, lambda: int(r.info("clients")["connected_clients"]))
        res["peak_api_redis_conns"] = max(res["peak_api_redis_conns"], conns)
        res["peak_redis_clients"] = max(res["peak_redis_clients"], clients)
        res["peak_api_rss"] = max(res["peak_api_rss"], _rss(api_pid))


async def _baseline(args, results: dict, name: str, path: str) -> None:
    res = results[name] = {}
    n_listeners = args.users * args.per_user
    port = free_port()
    app = common.spawn([PY, "-m", "uvicorn", "bench.broadcast_app:app", "--host", "127.0.0.1",
                        "--port", str(port), "--log-level", "warning", "--no-access-log"],
                       {}, f"listeners-{name}")
    clients = None
    try:
        _wait_http(f"http://127.0.0.1:{port}/count", app)
        await asyncio.sleep(1.0)
        res["api_rss_before"] = _rss(app.pid)
        params = [{"user": f"u{i % args.users}"} for i in range(n_listeners)]
        clients = Clients(name, f"ws://127.0.0.1:{port}{path}", params, args.clients)
        print(f"  {name}: opening {n_listeners:,} listeners ...", flush=True)
        t = time.perf_counter()
        await clients.start()
        infos = await clients.ready(300)
        res["failed"] = sum(i["failed"] for i in infos)
        res["accept_s"] = (time.perf_counter() - t) + await _until(
            lambda: json.loads(_get(f"http://127.0.0.1:{port}/count"))["listeners"],
            n_listeners - res["failed"], 120)
        print(f"  {n_listeners - res['failed']:,} subscribed in {res['accept_s']:.1f} s",
              flush=True)
        await asyncio.sleep(2.0)
        res["api_rss_after"] = _rss(app.pid)
        pids = {"api": app.pid, **{f"client{i}": p for i, p in enumerate(clients.pids)}}
        print(f"  {name}: publishing {args.rate:,.0f} events/s for {args.seconds:.0f} s ...",
              flush=True)
        c0, tc0, psi0 = _cpu(list(pids.values())), time.perf_counter(), _psi()
        t0 = wc0 = time.time()
        _post(f"http://127.0.0.1:{port}/run?rate={args.rate}&seconds={args.seconds}"
              f"&users={args.users}", {})
        await asyncio.sleep(args.seconds + 0.2)
        c1, tc1, psi1, wc1 = _cpu(list(pids.values())), time.perf_counter(), _psi(), time.time()
        res["cpu_pct"] = {k: 100 * (c1[pid] - c0[pid]) / (tc1 - tc0) for k, pid in pids.items()}
        res["cpu_pressure_pct"] = 100 * (psi1 - psi0) / 1e6 / (tc1 - tc0)
        api_cpu_s = c1[app.pid] - c0[app.pid]
        await asyncio.sleep(3.0)
        fin, lat, infos = await clients.stop()
        res["client_infos"] = [{k: v for k, v in i.items() if k != "samples"} for i in infos]
        start = min(fin) if fin else t0
        w0, w1 = start + WARMUP, start + args.seconds
        res["latency"] = _latency_stats(fin, lat, w0, w1, args.rate * (w1 - w0) * args.per_user)
        res["api_cpu_us_per_msg"] = 1e6 * api_cpu_s / max(1, _received_between(fin, lat, wc0, wc1))
        res["expected_total"] = int(args.rate * args.seconds) * args.per_user
    finally:
        if clients:
            clients.kill()
        common.stop(app)


# ================================================================ report


def _report(args, results: dict, meta: dict) -> str:
    o = results["ours"]
    others = [results[k] for k in ("baseline", "shared") if k in results]
    n = args.users * args.per_user
    main, light = o["phases"][-1], (o["phases"][0] if len(o["phases"]) > 1 else None)

    def kib(x):
        return f"{(x['api_rss_after'] - x['api_rss_before']) / max(1, n - x['failed']) / 1024:.1f} KiB"

    def ms(v):
        return fmt(v, 1) + " ms"

    def cpu(x):
        c = x["cpu_pct"]
        cl = " + ".join(f"{v:.0f}" for k, v in c.items() if k.startswith("client"))
        return (f"{c['api']:.0f} / {cl} / {c.get('driver', float('nan')):.0f} / "
                f"{c.get('redis', float('nan')):.0f}").replace("nan", "—")

    def row(label, f_ours, f_other, target="—"):
        cells = [f_ours(o)] + [f_other(x) for x in others]
        return [label, *cells, target]

    lat = lambda x: x["latency"]  # noqa: E731
    rows = [
        row("listeners subscribed (failed)", lambda x: f"{n - x['failed']:,} ({x['failed']})",
            lambda x: f"{n - x['failed']:,} ({x['failed']})"),
        row("time to accept and subscribe all", lambda x: f"{x['accept_s']:.1f} s",
            lambda x: f"{x['accept_s']:.1f} s", "issue: 17 s (plain strawberry)"),
        row("server RSS before → after listeners",
            lambda x: f"{x['api_rss_before'] / 2**20:.0f} → {x['api_rss_after'] / 2**20:.0f} MiB",
            lambda x: f"{x['api_rss_before'] / 2**20:.0f} → {x['api_rss_after'] / 2**20:.0f} MiB"),
        row("memory per idle listener (server RSS delta / listeners)", kib, kib,
            "issue: ~51 KiB"),
        row("API's Redis connections: no listeners / all listeners / peak under load",
            lambda x: f"{x['api_redis_conns_before']} / {x['api_redis_conns_after']} / "
                      f"{x['peak_api_redis_conns']}",
            lambda x: "— (no Redis)", "must not grow with listeners"),
        row("Redis `connected_clients`, all clients: before the API / API idle / "
            "all listeners / peak",
            lambda x: f"{x['redis_clients_before_api']} / {x['redis_clients_before']} / "
                      f"{x['redis_clients_after']} / {x['peak_redis_clients']}",
            lambda x: "—"),
    ]
    for ph, label in ((light, "light"), (main, "target")):
        if ph is None:
            continue
        pr = ph["producer"]
        tag = f"{ph['rate']:,.0f} ev/s"
        oth = (lambda f: f) if label == "target" else (lambda f: (lambda x: "—"))
        rows += [
            [f"**{tag}** ({label}): finishes achieved",
             f"{pr['events']:,} in {pr['t1'] - pr['t0']:.1f} s",
             *[oth(lambda x: f"{int(args.rate * args.seconds):,} published")(x) for x in others],
             f"{ph['rate'] * args.per_user:,.0f} messages/s to deliver"],
            [f"{tag}: messages delivered/s (window)", f"{ph['latency']['msgs_per_s']:,.0f}",
             *[oth(lambda x: f"{lat(x)['msgs_per_s']:,.0f}")(x) for x in others],
             "issue: plain strawberry 10–15k/s at best"],
            [f"{tag}: finish → listener p50", ms(ph["latency"]["p50"]),
             *[oth(lambda x: ms(lat(x)["p50"]))(x) for x in others], "—"],
            [f"{tag}: finish → listener p99", ms(ph["latency"]["p99"]),
             *[oth(lambda x: ms(lat(x)["p99"]))(x) for x in others],
             "< 100 ms at 1,000 ev/s"],
            [f"{tag}: finish → listener max", ms(ph["latency"]["max"]),
             *[oth(lambda x: ms(lat(x)["max"]))(x) for x in others], "—"],
            [f"{tag}: server CPU per message (CPU in the window / messages arriving in it)",
             f"{ph['api_cpu_us_per_msg']:.0f} µs",
             *[oth(lambda x: f"{x['api_cpu_us_per_msg']:.0f} µs")(x) for x in others], "—"],
            [f"{tag}: CPU, % of one core: server / clients / producer / Redis", cpu(ph),
             *[oth(cpu)(x) for x in others], "2 cores in all"],
            [f"{tag}: CPU pressure (some task waiting for a core)",
             f"{ph['cpu_pressure_pct']:.0f}% of the time",
             *[oth(lambda x: f"{x['cpu_pressure_pct']:.0f}% of the time")(x) for x in others],
             "—"],
        ]
    rows.append(row("delivered / expected, whole run",
                    lambda x: f"{x['total_received']:,} / {x['expected_total']:,}",
                    lambda x: f"{lat(x)['total_received']:,} / {x['expected_total']:,}"))
    p99_ok = main["latency"]["p99"] < 100
    conns_ok = (o["api_redis_conns_after"] <= o["api_redis_conns_before"]
                and o["peak_api_redis_conns"] <= o["api_redis_conns_before"] + 2)
    heads = ["ours (`python -m graph`)"] + [
        {"baseline": "plain strawberry, in-memory broadcast",
         "shared": "same bytes to every listener (no GraphQL per listener)"}[k]
        for k in ("baseline", "shared") if k in results]
    out = [
        f"## Listeners: {n:,} `processed` subscriptions on one API process (issue 4)",
        "",
        f"Produced by `python -m bench.listeners` on {meta['date']}; one run, every figure "
        "below is from it. "
        f"{args.users} users registered over HTTP (argon2, {o['register_s']:.0f} s) × "
        f"{args.per_user} listeners each, opened from {args.clients} load-generator processes "
        "(graphql-transport-ws, no compression; `websockets` for the handshake, then a "
        "minimal frame reader); jobs finish at a steady rate "
        "(the producer finishes the jobs due every 2 ms in one pipeline of the engine's "
        "`finish` scripts, each claiming the next job as a worker's does), spread evenly over "
        "the users by the engine's rotation, and each event goes to the "
        f"{args.per_user} listeners of its user. Latency = receive time − `finishedAt` (Redis "
        f"clock at the finish, ms resolution); the first {WARMUP:.0f} s of each window left out. "
        "Baselines, same machine, same clients, same load, same run (`bench/broadcast_app.py`, "
        "no Redis, `finishedAt` = publish time): a plain strawberry subscription fed from an "
        "in-memory asyncio broadcast, and a bare WebSocket endpoint that serializes each event "
        "once and sends the same bytes to every listener of its user. \"issue:\" figures are "
        "quoted from issue 4's text, not measured here. "
        + ("Archiving to the in-memory MongoDB was left in. " if args.archive else
           "The producer empties the shard's archive list after each batch of finishes, so "
           "the in-memory MongoDB (mongomock, which scans every document per upsert) is not "
           "what gets "
           "measured; the archiver still reads the list after events (at most every 50 ms)."),
        "",
        f"- Machine: {meta['cpu']}, {meta['cores']} cores, shared with other work during the "
        f"run (see CPU pressure), {meta['memory']}; Python {meta['python']}, Redis "
        f"{meta['redis']}",
        f"- Wall time of the run: {meta['wall']:.0f} s",
        "",
        "| metric | " + " | ".join(heads) + " | target / orientation |",
        "| --- | " + " | ".join("---" for _ in heads) + " | --- |",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["",
            f"Targets: p99 < 100 ms at {args.rate:,.0f} events/s: "
            f"**{'MET' if p99_ok else 'MISSED'}** (p99 {fmt(main['latency']['p99'], 1)} ms"
            + (f"; at {light['rate']:,.0f} events/s p99 {fmt(light['latency']['p99'], 1)} ms"
               if light else "") + "); "
            "Redis connections that do not grow with listeners: "
            f"**{'MET' if conns_ok else 'MISSED'}** "
            f"({o['api_redis_conns_before']} with no listener, {o['api_redis_conns_after']} with "
            f"{n - o['failed']:,}, at most {o['peak_api_redis_conns']} under load)."]
    if "profile_categories" in o:
        out += ["", f"py-spy on the API, {args.profile_seconds:.0f} s more at "
                f"{args.rate:,.0f} events/s after the window ({o['profile_samples']} samples, "
                "each attributed to the innermost frame of a known kind):", ""]
        out += [f"- {share:.0f}% {name}" for name, share in o["profile_categories"]]
    return "\n".join(out) + "\n"


async def _main(args) -> int:
    _raise_nofile()
    server = common.RedisServer()
    server.start()
    results: dict = {}
    t0 = time.time()
    from .report import machine

    meta = {**machine(), "redis": server.version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print(f"Redis {meta['redis']} at {server.url}", flush=True)
    try:
        await _ours(args, server, results)
        if args.baseline:
            await _baseline(args, results, "baseline", "/graphql")
            await _baseline(args, results, "shared", "/shared")
    finally:
        server.stop()
    meta["wall"] = time.time() - t0
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "listeners.json").write_text(json.dumps({"args": vars(args), "meta": meta,
                                                     "results": results}, indent=1, default=str))
    text = _report(args, results, meta)
    print()
    print(text)
    if results["ours"].get("client_samples"):
        print("unexpected messages (samples):", results["ours"]["client_samples"])
    if "profile" in results["ours"]:
        print("profile (bench/.work/listeners-profile.txt):")
        print("\n".join(results["ours"]["profile"].splitlines()[:45]))
    if args.write:
        path = common.BENCH / "RESULTS.md"
        with open(path, "a") as f:
            f.write("\n" + text)
        print(f"appended to {path}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        loop = _new_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_client_main())
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.listeners", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--per-user", type=int, default=10, help="listeners per user")
    p.add_argument("--rate", type=float, default=1000.0, help="jobs finishing per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--light-rate", type=float, default=100.0,
                   help="a lighter rate measured first (0: skip)")
    p.add_argument("--light-seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=2, help="load-generator processes")
    p.add_argument("--no-baseline", dest="baseline", action="store_false")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--profile-seconds", type=float, default=8.0)
    p.add_argument("--archive", action="store_true",
                   help="leave archiving to the in-memory MongoDB in the measurement")
    p.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    args = p.parse_args(argv)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    return loop.run_until_complete(_main(args))


if __name__ == "__main__":
    sys.exit(main())
