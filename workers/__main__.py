"""`python -m workers`: one worker process.

    python -m workers [--concurrency N] [--handler module:function] [--burst]
                      [--isolation thread|process] [--processes N] [--loop auto|asyncio|uvloop]

Exit codes: 0 after SIGTERM or --burst; 75 when every handler thread hung
past the job timeout (restart it: a fresh process has its threads back).
With --processes N a supervisor runs N such processes and starts them again
when they die (workers/supervisor.py); it exits 0 after SIGTERM once they have.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading


def _early_stop(signum, frame) -> None:
    """A SIGTERM (or Ctrl-C) that comes while the process is still importing and
    connecting, before the event loop's handlers exist: remembered, and the
    worker stops as soon as it runs, having taken no job (exit 0), instead of
    dying by the signal. A supervisor or a test that stops a worker right after
    starting it sees the same exit either way."""
    global _stop_requested
    _stop_requested = True


_stop_requested = False
if __name__ == "__main__":  # the entry point only: importing this module installs nothing
    signal.signal(signal.SIGTERM, _early_stop)
    signal.signal(signal.SIGINT, _early_stop)

from engine import connection, logs, loop  # noqa: E402 (after the early signal handlers)
from engine.settings import load_settings  # noqa: E402
from engine.startup import exit_on_startup_error  # noqa: E402

from .app import create_worker  # noqa: E402
from .worker import Worker  # noqa: E402

log = logging.getLogger("workers")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, help="users processed at once (QUEUE_CONCURRENCY)")
    p.add_argument("--handler", help="module:function to call (QUEUE_HANDLER)")
    p.add_argument("--burst", action="store_true",
                   help="exit 0 as soon as no job is waiting or running for any user")
    p.add_argument("--isolation", choices=["thread", "process"],
                   help="run sync handlers in threads, or in child processes that are "
                        "killed at the timeout (QUEUE_ISOLATION)")
    p.add_argument("--processes", type=int, default=0, metavar="N",
                   help="run N worker processes under a supervisor that restarts them "
                        "(one event loop uses one core: N up to the cores free for workers)")
    p.add_argument("--loop", choices=list(loop.LOOPS), default="auto",
                   help="event loop: uvloop when installed (auto), or the named one")
    args = p.parse_args(argv)
    if args.processes < 0:
        p.error("--processes must be 1 or more")
    return args


def child_argv(args: argparse.Namespace) -> list[str]:
    """The options a supervised child gets: these, without --processes."""
    argv = ["--loop", args.loop]
    for name in ("concurrency", "handler", "isolation"):
        if getattr(args, name) is not None:
            argv += [f"--{name}", str(getattr(args, name))]
    return argv + (["--burst"] if args.burst else [])


def supervise(args: argparse.Namespace, settings) -> int:
    from . import supervisor
    from .loader import load_handler

    load_handler(settings.queue_handler)  # a handler that does not load: one line, once
    base_port = settings.metrics_port

    def env_for(index: int) -> dict[str, str]:  # each child its own /metrics port
        return {"METRICS_PORT": str(base_port + index)} if base_port else {}

    return supervisor.Supervisor(
        processes=args.processes,
        command=supervisor.child_command(child_argv(args)),
        stop_seconds=settings.queue_shutdown_grace_seconds + supervisor.STOP_MARGIN,
        env_for=env_for,
    ).run()


async def serve(worker: Worker) -> None:
    event_loop = asyncio.get_running_loop()
    log.info("worker process %d: event loop %s", os.getpid(), type(event_loop).__module__)
    for sig in (signal.SIGTERM, signal.SIGINT):
        event_loop.add_signal_handler(sig, worker.stop)
    if _stop_requested:  # stopped while starting: take no job, exit 0
        worker.stop()
    try:
        await worker.run()
    finally:
        await worker.queue.redis.aclose()
        await worker.blocking_redis.aclose()


def main(argv=None) -> None:
    args = parse_args(argv)
    overrides = {}
    if args.concurrency is not None:
        overrides["queue_concurrency"] = args.concurrency
    if args.handler:
        overrides["queue_handler"] = args.handler
    if args.isolation:
        overrides["queue_isolation"] = args.isolation
    settings = load_settings(**overrides)
    logs.configure(settings.log_level, settings.log_format)
    if _stop_requested:  # stopped while starting: nothing was taken
        sys.exit(0)
    if args.processes:
        sys.exit(supervise(args, settings))
    url = settings.redis_url or connection.embedded_url_for_worker(settings.data_dir)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    worker = create_worker(settings, url, burst=args.burst)
    loop.run(serve(worker), args.loop)
    if any(t.name.startswith("handler") and t.is_alive() for t in threading.enumerate()):
        # A sync handler is still running in a thread: past the grace period (its
        # job was handed back) or past its timeout (its attempt failed). Python
        # would wait for the thread at exit: don't.
        log.warning("abandoning handler threads still running; their jobs were handed back "
                    "or timed out")
        logging.shutdown()
        os._exit(worker.exit_code)
    if worker.exit_code:
        sys.exit(worker.exit_code)


if __name__ == "__main__":
    exit_on_startup_error(main)
