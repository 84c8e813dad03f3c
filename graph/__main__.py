"""`python -m graph`: serve the API with uvicorn.

    python -m graph [--dev]     --dev also runs a worker inside, for trying it out
    python -m graph --processes N [--loop auto|asyncio|uvloop]

--processes N: a supervisor (workers/supervisor.py) binds the port once and
runs N API processes that accept on it, restarting any that dies. Each runs
its own archiver and event reader; both are safe N times (graph/archiver.py).
It needs MONGO_URI: with MongoDB in memory each process would have its own.
"""

from __future__ import annotations

import argparse
import gc
import signal
import socket
import sys

import uvicorn

from engine import logs, loop
from engine.settings import load_settings
from engine.startup import EXIT_STARTUP, StartupError, exit_on_startup_error

from .app import create_app
from .settings import Settings
from .http.httpprotocol import TimedHttpProtocol
from .live.wsprotocol import FanoutWebSocketProtocol


UVICORN_STARTUP_FAILURE = 3  # uvicorn's exit status when the app's start-up failed
GRACEFUL_SHUTDOWN_SECONDS = 10  # uvicorn's wait for open requests and WebSockets at SIGTERM
# Young-generation threshold of the cycle collector (CPython's default: 700). With
# 32 requests in flight, their live objects alone come near 700: young collections
# ran every ~27 requests, moved those objects on to older generations, and full
# collections (5-15 ms, every request in flight waiting) followed about every
# second. At 5,000, under 16 s of `wrk -c32`: 144 young collections instead of
# 2,974, one full one instead of 23; p99 9.8 ms against 14.6, req/s 1.2x.
GC_YOUNG_THRESHOLD = 5000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m graph", description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="run a worker inside the API")
    parser.add_argument("--processes", type=int, default=0, metavar="N",
                        help="serve from N processes on one port (needs MONGO_URI, not --dev)")
    parser.add_argument("--loop", choices=list(loop.LOOPS), default="auto",
                        help="event loop: uvloop when installed (auto), or the named one")
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a --processes child's socket
    args = parser.parse_args(argv)
    if args.processes and args.dev:
        parser.error("--processes cannot go with --dev: --dev keeps users and job history in "
                     "an in-memory MongoDB of each process, so N processes would each have "
                     "their own. Use --dev alone, or set MONGO_URI and run without --dev.")
    if args.processes < 0:
        parser.error("--processes must be 1 or more")

    settings = load_settings(Settings)
    logs.configure(settings.log_level, settings.log_format)
    if args.processes:
        sys.exit(serve_processes(args, settings))
    if args.dev:  # a handler that does not load stops the start with one line
        from workers.loader import load_handler

        load_handler(settings.queue_handler)
    app = create_app(settings, dev_worker=args.dev)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None,
        lifespan="on", ws_max_size=settings.ws_max_message_bytes,
        # X-Forwarded-For sets the client address (which the login throttles count)
        # only from the proxies named in FORWARDED_ALLOW_IPS; by default from none
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ws=FanoutWebSocketProtocol,  # uvicorn's own, plus a direct send for the fan-out
        # slow and idle clients: uvicorn times idle keep-alive connections only;
        # the request's head and body get deadlines of their own here (408 after)
        http=TimedHttpProtocol.with_timeouts(settings.http_header_timeout_seconds,
                                             settings.http_body_timeout_seconds),
        timeout_keep_alive=settings.http_keep_alive_seconds,
        limit_concurrency=settings.http_max_connections or None,  # 503 over it
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down
    # gracefully; with these no-op handlers that ends the process with 0, not -15.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    gc.freeze()  # start-up objects stay out of the collector's way (shorter pauses)
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    # a --processes child accepts on the supervisor's socket (the kernel spreads connections)
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    loop.run(server.serve(sockets=sockets), args.loop)


def serve_processes(args: argparse.Namespace, settings: Settings) -> int:
    """Bind the port once, then supervise N API processes accepting on it."""
    from workers.supervisor import Supervisor

    if not settings.mongo_uri:
        raise StartupError("--processes needs MONGO_URI: without it each process keeps its "
                           "own in-memory MongoDB (users and history would differ between "
                           "processes)")
    embedded = None
    env = {}
    if not settings.redis_url:  # one embedded Redis for all, started here
        from engine import connection

        url, embedded = connection.start_embedded(settings.data_dir)
        env["REDIS_URL"] = url
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    try:
        return Supervisor(
            processes=args.processes,
            command=[sys.executable, "-m", "graph", "--fd", str(sock.fileno()),
                     "--loop", args.loop],
            stop_seconds=GRACEFUL_SHUTDOWN_SECONDS + 10,
            env_for=lambda index: env,
            pass_fds=(sock.fileno(),),
            name="API process",
            startup_codes=(EXIT_STARTUP, UVICORN_STARTUP_FAILURE),
        ).run()
    finally:
        sock.close()
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    exit_on_startup_error(main)
