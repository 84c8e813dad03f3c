"""Helpers the tests share: a GraphQL client, processes, polling."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from graph.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def settings_env(settings: Settings, **extra) -> dict:
    """The environment that gives a child process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "MONGO_"))}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env.update({k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = str(ROOT)
    return env


def _polls(predicate, timeout: float, message: str):
    """predicate()'s values until one is truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        yield predicate()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, message: str = ""):
    """Poll until predicate() is truthy; its value, or AssertionError at the deadline."""
    for value in _polls(predicate, timeout, message):
        if value:
            return value
        time.sleep(interval)


async def wait_until_async(predicate, timeout: float = 20.0, interval: float = 0.02,
                           message: str = ""):
    """wait_until for code on the event loop: polls without blocking it. The
    predicate may be a coroutine function: its value is awaited."""
    for value in _polls(predicate, timeout, message):
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GraphQLError(AssertionError):
    def __init__(self, errors):
        super().__init__(errors)
        self.errors = errors
        self.code = errors[0].get("extensions", {}).get("code")


class Api:
    """A GraphQL client over any httpx-like client (TestClient or httpx.Client)."""

    def __init__(self, http, token: str | None = None):
        self.http = http
        self.token = token

    def post(self, query: str, variables: dict | None = None, token: str | None = None):
        headers = {}
        token = token or self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                              headers=headers)

    def call(self, query: str, variables: dict | None = None, token: str | None = None) -> dict:
        """The `data` of a successful operation; GraphQLError (with .code) otherwise."""
        body = self.post(query, variables, token).json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    def as_user(self, username: str | None = None, password: str = "correct horse") -> "Api":
        """Register and log in a fresh user; an Api that sends their token."""
        username = username or f"user_{uuid.uuid4().hex[:8]}"
        self.call("mutation($u:String!,$p:String!){register(username:$u,password:$p){id}}",
                  {"u": username, "p": password})
        data = self.call("mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
                         {"u": username, "p": password})
        return Api(self.http, data["login"]["token"])

    # the queue operations, as a client would write them
    JOB = "id requestData status processedData error attempts createdAt startedAt finishedAt dequeuedAt"

    def enqueue(self, data: str, key: str | None = None) -> dict:
        return self.call(
            f"mutation($d:String!,$k:String){{enqueue(requestData:$d,idempotencyKey:$k){{{self.JOB}}}}}",
            {"d": data, "k": key})["enqueue"]

    def enqueue_many(self, items: list[dict]) -> list[dict]:
        return self.call(
            f"mutation($i:[EnqueueInput!]!){{enqueueMany(items:$i){{{self.JOB}}}}}",
            {"i": items})["enqueueMany"]

    def dequeue(self, wait: float = 0) -> dict | None:
        return self.call(f"mutation($w:Float){{dequeue(waitSeconds:$w){{{self.JOB}}}}}",
                         {"w": wait})["dequeue"]

    def job(self, jid: str) -> dict | None:
        return self.call(f"query($id:ID!){{job(id:$id){{{self.JOB}}}}}", {"id": jid})["job"]

    def cancel(self, jid: str) -> dict:
        return self.call(f"mutation($id:ID!){{cancel(id:$id){{{self.JOB}}}}}", {"id": jid})["cancel"]

    def stats(self) -> dict:
        return self.call("{queueStats{queued processing ready}}")["queueStats"]


class WorkerProcesses:
    """`python -m workers` processes with the test's settings."""

    def __init__(self, settings: Settings, tmp_path: Path):
        self.settings = settings
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, **env) -> subprocess.Popen:
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers", *args],
            env=settings_env(self.settings, **env), cwd=self.tmp_path,
            stdout=log, stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def kill_and_replace(self, kills: int, every: float, rng, *args: str) -> None:
        """Chaos on a clock: `kills` times, every `every` seconds, SIGKILL a running
        worker (chosen by `rng`) and start another with `args`."""
        for _ in range(kills):
            time.sleep(every)
            victim = rng.choice([p for p in self.procs if p.poll() is None])
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            self.start(*args)

    def run_burst(self, *args: str, timeout: float = 60, **env) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "workers", "--burst", *args],
            env=settings_env(self.settings, **env), cwd=self.tmp_path,
            capture_output=True, text=True, timeout=timeout,
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ApiProcess:
    """`python -m graph` as a user starts it, on a free port."""

    def __init__(self, settings: Settings, tmp_path: Path, **env):
        self.settings = settings
        self.tmp_path = tmp_path
        self.port = free_port()
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, *args: str) -> None:
        self.log_path = self.tmp_path / f"api-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "graph", *args],
            env=settings_env(self.settings, HOST="127.0.0.1", PORT=self.port, **self.env),
            cwd=self.tmp_path, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
        )

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"API exited: {self.log_path.read_text()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, message="the API to answer /healthz")

    def client(self) -> Api:
        return Api(httpx.Client(base_url=self.url, timeout=40))

    def subscriptions(self) -> float:
        """Live `processed` subscriptions, as its /metrics counts them."""
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("graphql_active_subscriptions "):
                return float(line.split()[1])
        return 0.0

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None


def node_or_skip(folder: Path, package: str, what: str) -> str:
    """The `node` binary for a test that runs `what` with `package` installed in
    `folder` (by `npm ci`); the test is skipped, saying why, when either is missing."""
    import shutil

    import pytest

    node = shutil.which("node")
    if node is None:
        pytest.skip(f"`node` is not installed: {what} cannot run (apt-get install nodejs)")
    if not (folder / "node_modules" / package).is_dir():
        pytest.skip(f"{folder.relative_to(ROOT)}/node_modules is missing: "
                    f"run `npm ci --prefix {folder.relative_to(ROOT)}` first")
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             check=False).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 18:
        pytest.skip(f"node {version} is too old for {what} (18 or later)")
    return node


# Debian's Chromium, driven by Playwright (never a downloaded browser): no
# background traffic on this closed network.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str | None:
    import shutil

    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
