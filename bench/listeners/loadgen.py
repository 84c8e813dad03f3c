"""The load generators: processes that open the listeners and time what they hear.

Separate processes, so that the listeners' own work is not the driver's; the
driver (`LoadGenerators`) talks to each over its stdin and stdout, one JSON
line at a time:

    driver → process   {"url", "params" (one connection_init payload per listener), "out",
                        optionally "query" and "variables" (one dict per listener)}
    process → driver   {"ready", "failed", "seconds", "first_error"} once all subscribed
    driver → process   stop
    process → driver   {"done", "closed", "other", "samples"} after writing what it heard to "out"

    python -m bench.listeners.loadgen          # what the driver starts, once per process
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from array import array
from collections import Counter
from datetime import datetime

from ..common import PY, ROOT, WORK, new_event_loop, raise_nofile
from .latency import Heard
from .probes import seconds_until

QUERY = "subscription { processed { cursor job { id status finishedAt } } }"


class Frames(asyncio.Protocol):
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


async def listen() -> None:
    """One load-generator process: the protocol in the module's docstring."""
    from websockets.asyncio.client import connect

    raise_nofile()
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    fin, lat = array("d"), array("d")
    kinds: Counter = Counter()
    samples: list[str] = []
    closed = [0]
    sem = asyncio.Semaphore(cfg.get("concurrency", 100))
    query = cfg.get("query", QUERY)
    variables = cfg.get("variables") or [None] * len(cfg["params"])
    parse = datetime.fromisoformat

    def sent_at(data: dict) -> float | None:
        """When the event was made: a finish's finishedAt, or (jobUpdates, see
        bench/updates.py) the epoch time the producer wrote as the report's message."""
        if "processed" in data:
            return parse(data["processed"]["job"]["finishedAt"]).timestamp()
        update = data["jobUpdates"]
        if update["kind"] != "PROGRESS":
            kinds["update-" + update["kind"]] += 1
            return None
        return float(update["job"]["progressMessage"])

    async def open_one(params, variables=None):
        async with sem:
            ws = await connect(cfg["url"], subprotocols=["graphql-transport-ws"],
                               ping_interval=None, compression=None, open_timeout=120,
                               max_queue=None)
            await ws.send(json.dumps({"type": "connection_init", "payload": params}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if ack.get("type") != "connection_ack":
                raise RuntimeError(f"no ack: {ack}")
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": query, "variables": variables}}))
            return ws

    def on_text(raw: bytes, reply) -> None:
        now = time.time()
        m = json.loads(raw)
        kind = m.get("type")
        if kind == "next":
            try:
                t = sent_at(m["payload"]["data"])
                if t is None:
                    return
            except (KeyError, TypeError, ValueError):
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
        """From here on the socket is read by `Frames`, not by the library."""
        ws.transport.set_protocol(Frames(ws.transport, on_text, closed))

    t0 = time.perf_counter()
    results = await asyncio.gather(*(open_one(p, v) for p, v in zip(cfg["params"], variables)),
                                   return_exceptions=True)
    seconds = time.perf_counter() - t0
    socks = [r for r in results if not isinstance(r, BaseException)]
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    for ws in socks:
        take_over(ws)
    print(json.dumps({"ready": len(socks), "failed": len(errors), "seconds": seconds,
                      "first_error": errors[0] if errors else None}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    with open(cfg["out"], "wb") as f:  # noqa: ASYNC230 (the measurement is over)
        fin.tofile(f)
        lat.tofile(f)
    print(json.dumps({"done": len(fin), "closed": closed[0], "other": dict(kinds),
                      "samples": samples}), flush=True)
    os._exit(0)  # the server sees 2,500 abrupt disconnects; it must cope with those anyway


class LoadGenerators:
    """The load-generator processes of one run, driven over their stdin/stdout."""

    def __init__(self, name: str, url: str, params: list[dict], processes: int,
                 query: str | None = None, variables: list[dict] | None = None):
        self.name, self.url, self.listeners = name, url, len(params)
        self.parts = [params[i::processes] for i in range(processes)]
        self.query = query
        self.variables = [variables[i::processes] for i in range(processes)] if variables \
            else [None] * processes
        self.procs: list[asyncio.subprocess.Process] = []
        self.outs = [WORK / f"listeners-{name}-{i}.bin" for i in range(processes)]

    async def start(self) -> None:
        WORK.mkdir(parents=True, exist_ok=True)
        with open(WORK / f"listeners-{self.name}-clients.log", "ab") as log:  # noqa: ASYNC230
            for part, variables, out in zip(self.parts, self.variables, self.outs):
                p = await asyncio.create_subprocess_exec(
                    PY, "-m", "bench.listeners.loadgen", cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)},
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    limit=2**20, start_new_session=True)
                cfg = {"url": self.url, "params": part, "out": str(out), "concurrency": 100}
                if self.query:
                    cfg |= {"query": self.query, "variables": variables}
                p.stdin.write((json.dumps(cfg) + "\n").encode())
                await p.stdin.drain()
                self.procs.append(p)

    async def ready(self, timeout: float) -> list[dict]:
        return [json.loads(await asyncio.wait_for(p.stdout.readline(), timeout))
                for p in self.procs]

    async def open_all(self, subscribed, label: str = "") -> tuple[int, float, float]:
        """Start the processes and wait until the server's own count, `subscribed()`,
        shows every listener that opened. Returns (failed, seconds until the load
        generators were ready, seconds until the server counted them all)."""
        target = self.listeners
        print(f"  {label}opening {target:,} listeners ...", flush=True)
        t = time.perf_counter()
        await self.start()
        infos = await self.ready(300)
        ready_s = time.perf_counter() - t
        failed = sum(i["failed"] for i in infos)
        if failed:
            print(f"  ! {failed} listeners failed: {infos}", flush=True)
        accept_s = (time.perf_counter() - t) + await seconds_until(subscribed, target - failed,
                                                                   120)
        print(f"  {target - failed:,} subscribed in {accept_s:.1f} s", flush=True)
        return failed, ready_s, accept_s

    async def stop(self) -> tuple[Heard, list[dict]]:
        """What every listener heard, and each process's closing line."""
        infos = []
        for p in self.procs:
            p.stdin.write(b"stop\n")
            await p.stdin.drain()
        for p in self.procs:
            line = await asyncio.wait_for(p.stdout.readline(), 60)
            infos.append(json.loads(line) if line else {"done": 0, "error": "no answer"})
            await asyncio.wait_for(p.wait(), 30)
        heard = Heard(array("d"), array("d"))
        for out in self.outs:
            data = array("d")
            with open(out, "rb") as f:  # noqa: ASYNC230 (the measurement is over)
                data.frombytes(f.read())
            half = len(data) // 2
            heard.finished.extend(data[:half])
            heard.latency_ms.extend(data[half:])
            out.unlink()
        return heard, infos

    def kill(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass

    @property
    def pids(self) -> dict[str, int]:
        """By the names the report's CPU row shows: client0, client1, ..."""
        return {f"client{i}": p.pid for i, p in enumerate(self.procs)}


if __name__ == "__main__":
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(listen())
