"""`python -m workers --processes N`: one supervisor process, N worker processes.

As gunicorn's arbiter and dramatiq's main process do: the supervisor runs no
jobs. It starts N children (`python -m workers` each, the same options), starts
a child again when one dies (after a back-off that grows while children keep
dying young), and on SIGTERM or SIGINT passes SIGTERM to every child and exits 0
once they have all exited.

One signal path: the handlers do nothing; `signal.set_wakeup_fd` writes each
signal's number to a pipe, and the main loop, which sleeps in `select` on that
pipe, reads them and acts (stop, or look at the children after SIGCHLD).

A child that gets SIGTERM stops as `python -m workers` always does: it takes no
new job, lets running jobs finish within QUEUE_SHUTDOWN_GRACE_SECONDS and hands
back the ones still running (workers/worker.py), so they run again elsewhere.
A child that is killed outright (kill -9, out of memory) hands back nothing: its
leases expire and any worker reclaims its jobs (QUEUE_LEASE_SECONDS), so no job
is lost either way; the supervisor only makes sure N children keep running.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.startup import EXIT_STARTUP

log = logging.getLogger("workers.supervisor")

BACKOFF_FIRST = 0.5  # seconds before the first restart of a child that died
BACKOFF_MAX = 30.0  # doubling per early death, up to this
STABLE_SECONDS = 30.0  # a child that ran this long starts its slot's back-off afresh
STOP_MARGIN = 10.0  # past the children's own grace period: then SIGKILL (leases bring jobs back)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Slot:
    """One of the N places a child runs in: the child, or when the next one starts."""

    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float | None = 0.0  # None: not to be started again (ended by itself)
    deaths: int = 0  # early deaths in a row: the back-off's exponent


@dataclass
class Supervisor:
    processes: int
    command: list[str]  # a child's command line
    stop_seconds: float  # how long children may take to stop before SIGKILL
    env_for: Callable[[int], dict[str, str]] = lambda index: {}
    pass_fds: tuple[int, ...] = ()  # inherited by the children (the API's listening socket)
    name: str = "worker process"  # in the log lines: "worker process 2 (pid 123) died"
    # a child's exit status that means "cannot start" (bad settings, no Redis): stop
    # all rather than restart forever; the process manager above decides what next
    startup_codes: tuple[int, ...] = (EXIT_STARTUP,)
    slots: list[Slot] = field(default_factory=list)
    stopping_since: float | None = None
    halt_status: int = 0  # a child's startup_codes status once it could not start

    def run(self) -> int:
        """Supervise until stopped; the exit status for the supervisor."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        previous = signal.set_wakeup_fd(write_fd)
        handlers = {sig: signal.signal(sig, _note) for sig in (*STOP_SIGNALS, signal.SIGCHLD)}
        self.slots = [Slot(i) for i in range(self.processes)]
        try:
            log.info("supervisor %d: starting %d x %s", os.getpid(), self.processes, self.name)
            while True:
                now = time.monotonic()
                status = self._step(now)
                if status is not None:
                    return status
                for sig in _wait_for_signals(read_fd, self._next_wake(now)):
                    if sig in STOP_SIGNALS:
                        self._stop(sig)
        finally:
            signal.set_wakeup_fd(previous)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(read_fd)
            os.close(write_fd)

    # ---- one turn of the loop ----

    def _step(self, now: float) -> int | None:
        """Reap, restart or finish; the exit status once there is nothing left to do."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is not None:
                status = self._ended(slot, now)
                if status is not None:
                    self.halt_status = status
                    self._stop(signal.SIGTERM)
        alive = [s for s in self.slots if s.proc is not None]
        if self.stopping_since is not None:
            if not alive:
                log.info("supervisor: all processes stopped")
                return self.halt_status
            if now - self.stopping_since > self.stop_seconds:
                for slot in alive:  # its jobs come back when their leases expire
                    log.warning("%s %d (pid %d) did not stop in %.0f s: killing it",
                                self.name, slot.index, slot.proc.pid, self.stop_seconds)
                    slot.proc.kill()
                self.stopping_since = now  # wait for the kills to be reaped
            return None
        for slot in self.slots:
            if slot.proc is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot, now)
        if all(s.proc is None and s.restart_at is None for s in self.slots):
            log.info("supervisor: every process ended by itself")
            return 0
        return None

    def _ended(self, slot: Slot, now: float) -> int | None:
        """A child exited; a status when the supervisor must stop too."""
        code, pid, ran = slot.proc.returncode, slot.proc.pid, now - slot.started
        slot.proc = None
        if self.stopping_since is not None:
            log.info("%s %d (pid %d) stopped with status %s", self.name, slot.index, pid, code)
            return None
        if code == 0:  # --burst: nothing left to do; not started again
            log.info("%s %d (pid %d) ended with status 0", self.name, slot.index, pid)
            slot.restart_at = None
            return None
        if code in self.startup_codes and ran < STABLE_SECONDS:
            log.error("%s %d (pid %d) could not start (status %d, see its error above): "
                      "stopping", self.name, slot.index, pid, code)
            return code
        slot.deaths = 1 if ran >= STABLE_SECONDS else slot.deaths + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.deaths - 1))
        slot.restart_at = now + delay
        log.warning("%s %d (pid %d) died (%s) after %.1f s; starting another in %.1f s",
                    self.name, slot.index, pid, _describe(code), ran, delay)
        return None

    def _start(self, slot: Slot, now: float) -> None:
        env = {**os.environ, **self.env_for(slot.index)}
        slot.proc = subprocess.Popen(self.command, env=env, pass_fds=self.pass_fds)
        slot.started, slot.restart_at = now, 0.0
        log.info("%s %d started: pid %d", self.name, slot.index, slot.proc.pid)

    def _stop(self, sig: int) -> None:
        """Pass SIGTERM to every child (their graceful stop hands back running jobs)."""
        if self.stopping_since is None:
            log.info("supervisor: %s: stopping %d processes",
                     signal.Signals(sig).name, sum(s.proc is not None for s in self.slots))
            self.stopping_since = time.monotonic()
        for slot in self.slots:
            slot.restart_at = None
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)

    def _next_wake(self, now: float) -> float:
        """Seconds until the loop must look again without a signal."""
        times = [s.restart_at for s in self.slots if s.proc is None and s.restart_at is not None]
        wake = min([max(0.0, t - now) for t in times], default=1.0)
        return min(wake, 1.0)  # and every second: a child reaped before SIGCHLD was handled


def _note(signum, frame) -> None:
    """Nothing: set_wakeup_fd already wrote the signal's number for the main loop."""


def _wait_for_signals(read_fd: int, timeout: float) -> list[int]:
    """The signals that arrived, waiting up to `timeout` seconds for one."""
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout)
    except InterruptedError:
        ready = [read_fd]
    if not ready:
        return []
    try:
        return list(os.read(read_fd, 4096))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return []
        raise


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def child_command(argv: list[str]) -> list[str]:
    """`python -m workers` with these options (all but --processes)."""
    return [sys.executable, "-m", "workers", *argv]
