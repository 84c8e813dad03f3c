"""A real Redis Cluster for tests, and a handler that logs to it.

`LocalCluster` starts `redis-server --cluster-enabled yes` on free loopback
ports (3 masters, no replicas), joins them with `redis-cli --cluster create`,
waits for `cluster_state:ok`, and tears it all down again. The handlers below
log each attempt's start and end to the cluster, like tests/handlers.py does
to a single Redis (whose plain client cannot follow MOVED redirects).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis as redis_sync
from redis.cluster import RedisCluster

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def missing_binaries() -> str | None:
    for path in (REDIS_SERVER, REDIS_CLI):
        if not os.access(path, os.X_OK):
            return f"{Path(path).name} is not installed (apt-get install redis-server)"
    return None


def _free_ports(n: int) -> list[int]:
    """n free ports whose cluster bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class LocalCluster:
    def __init__(self, masters: int = 3):
        self.masters = masters
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []
        self.dir: Path | None = None

    @property
    def url(self) -> str:
        """Seed nodes, in the form REDIS_URL takes with REDIS_CLUSTER=1."""
        return "redis://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self, timeout: float = 30) -> "LocalCluster":
        self.dir = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
        self.ports = _free_ports(self.masters)
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.procs.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
                 "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            ))
        try:
            for port in self.ports:
                self._wait(lambda p=port: self._cli(p, "PING").strip() == "PONG", timeout)
            subprocess.run(
                [REDIS_CLI, "--cluster", "create",
                 *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, text=True, timeout=timeout,
            )
            for port in self.ports:
                self._wait(lambda p=port: "cluster_state:ok" in self._cli(p, "CLUSTER", "INFO"),
                           timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _cli(self, port: int, *args: str) -> str:
        out = subprocess.run([REDIS_CLI, "-p", str(port), *args],
                             capture_output=True, text=True, timeout=5)
        return out.stdout

    def _wait(self, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster did not come up in {timeout}s "
                                   f"(logs in {self.dir})")
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a redis-server exited (logs in {self.dir})")
            time.sleep(0.1)

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.ports[0], decode_responses=True)

    def node_clients(self) -> list[redis_sync.Redis]:
        return [redis_sync.Redis(port=p, decode_responses=True) for p in self.ports]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        self.procs.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
