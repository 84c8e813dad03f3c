"""`python -m graph`: serve the API with uvicorn.

    python -m graph [--dev]     --dev also runs a worker inside, for trying it out
"""

from __future__ import annotations

import argparse
import gc
import signal

import uvicorn

from engine import logs, loop
from engine.settings import load_settings
from engine.startup import exit_on_startup_error

from .app import create_app
from .settings import Settings
from .http.httpprotocol import TimedHttpProtocol
from .live.wsprotocol import FanoutWebSocketProtocol


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m graph", description=__doc__.splitlines()[0])
    parser.add_argument("--dev", action="store_true", help="run a worker inside the API")
    args = parser.parse_args(argv)

    settings = load_settings(Settings)
    logs.configure(settings.log_level, settings.log_format)
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
        timeout_graceful_shutdown=10,
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
    loop.run(server.serve())


if __name__ == "__main__":
    exit_on_startup_error(main)
