"""`python -m graph` serves with the cycle collector tuned for requests in flight:
with CPython's young threshold (700) their live objects alone set off young
collections every few dozen requests, and full ones (milliseconds, every request
waiting) about every second under load (graph/__main__.py)."""

from __future__ import annotations

import gc
import signal

import graph.__main__ as api_main


def test_the_api_serves_with_a_young_threshold_above_what_requests_in_flight_hold(
        monkeypatch):
    seen = {}

    def serve(main, loop_name):  # instead of serving: look at the collector
        seen["threshold"] = gc.get_threshold()
        main.close()

    monkeypatch.setattr(api_main.loop, "run", serve)
    before = gc.get_threshold()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        api_main.main([])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert seen["threshold"][0] == api_main.GC_YOUNG_THRESHOLD >= 5000
    assert seen["threshold"][1:] == before[1:]  # the older generations: CPython's own
