"""The run as a Markdown section for bench/RESULTS.md: ours beside the baselines."""

from __future__ import annotations

from ..common import fmt
from .latency import WARMUP
from .options import Options
from .results import OursRun, Run, RunInfo, Window


def _ms(v: float) -> str:
    return fmt(v, 1) + " ms"


def _cpu(w: Window) -> str:
    c = w.cpu.percent
    clients = " + ".join(f"{v:.0f}" for k, v in c.items() if k.startswith("client"))
    return (f"{c['api']:.0f} / {clients} / {c.get('driver', float('nan')):.0f} / "
            f"{c.get('redis', float('nan')):.0f}").replace("nan", "—")


def _rows(opts: Options, ours: OursRun, others: list[Run]) -> list[list[str]]:
    n = opts.listeners
    conns, peaks = ours.redis, ours.window.peaks

    def row(label, show, target="—", show_other=None):
        """A metric of the whole run: ours, then each baseline (`show_other` where it differs)."""
        return [label, show(ours), *[(show_other or show)(x) for x in others], target]

    def at(w: Window, label, show, target, show_other=None):
        """A metric of one window; the baselines ran at the target rate only."""
        other = (show_other or show) if w is ours.window else (lambda _: "—")
        return [label, show(w), *[other(x.window) for x in others], target]

    def kib(x: Run) -> str:
        return f"{(x.rss_after - x.rss_before) / max(1, n - x.failed) / 1024:.1f} KiB"

    rows = [
        row("listeners subscribed (failed)", lambda x: f"{n - x.failed:,} ({x.failed})"),
        row("time to accept and subscribe all", lambda x: f"{x.accept_s:.1f} s",
            "issue: 17 s (plain strawberry)"),
        row("server RSS before → after listeners",
            lambda x: f"{x.rss_before / 2**20:.0f} → {x.rss_after / 2**20:.0f} MiB"),
        row("memory per idle listener (server RSS delta / listeners)", kib, "issue: ~51 KiB"),
        row("API's Redis connections: no listeners / all listeners / peak under load",
            lambda _: f"{conns.api_idle} / {conns.api_listening} / "
                      f"{peaks.api_redis_connections}",
            "must not grow with listeners", lambda _: "— (no Redis)"),
        row("Redis `connected_clients`, all clients: before the API / API idle / "
            "all listeners / peak",
            lambda _: f"{conns.clients_before_api} / {conns.clients_api_idle} / "
                      f"{conns.clients_listening} / {peaks.redis_clients}",
            show_other=lambda _: "—"),
    ]
    for w, kind in ((ours.light, "light"), (ours.window, "target")):
        if w is None:
            continue
        tag = f"{w.rate:,.0f} ev/s"
        rows += [
            at(w, f"**{tag}** ({kind}): finishes achieved",
               lambda x: f"{x.production.events:,} in {x.production.seconds:.1f} s",
               f"{w.rate * opts.per_user:,.0f} messages/s to deliver",
               lambda _: f"{int(opts.rate * opts.seconds):,} published"),
            at(w, f"{tag}: messages delivered/s (window)",
               lambda x: f"{x.latency.msgs_per_s:,.0f}",
               "issue: plain strawberry 10–15k/s at best"),
            at(w, f"{tag}: finish → listener p50", lambda x: _ms(x.latency.p50_ms), "—"),
            at(w, f"{tag}: finish → listener p99", lambda x: _ms(x.latency.p99_ms),
               "< 100 ms at 1,000 ev/s"),
            at(w, f"{tag}: finish → listener max", lambda x: _ms(x.latency.max_ms), "—"),
            at(w, f"{tag}: server CPU per message (CPU in the window / messages arriving in it)",
               lambda x: f"{x.api_cpu_us_per_msg:.0f} µs", "—"),
            at(w, f"{tag}: CPU, % of one core: server / clients / producer / Redis", _cpu,
               "2 cores in all"),
            at(w, f"{tag}: CPU pressure (some task waiting for a core)",
               lambda x: f"{x.cpu.pressure_pct:.0f}% of the time", "—"),
        ]
    rows.append(row("delivered / expected, whole run",
                    lambda x: f"{x.received:,} / {x.expected:,}"))
    return rows


def section(opts: Options, ours: OursRun, others: list[Run], info: RunInfo) -> str:
    n = opts.listeners
    main, light, conns = ours.window, ours.light, ours.redis
    m = info.machine
    p99_ok = main.latency.p99_ms < 100
    conns_ok = (conns.api_listening <= conns.api_idle
                and main.peaks.api_redis_connections <= conns.api_idle + 2)
    heads = [ours.label] + [x.label for x in others]
    out = [
        f"## Listeners: {n:,} `processed` subscriptions on one API process (issue 4)",
        "",
        f"Produced by `python -m bench.listeners` on {info.date}; one run, every figure "
        "below is from it. "
        f"{opts.users} users registered over HTTP (argon2, {ours.register_s:.0f} s) × "
        f"{opts.per_user} listeners each, opened from {opts.clients} load-generator processes "
        "(graphql-transport-ws, no compression; `websockets` for the handshake, then a "
        "minimal frame reader); jobs finish at a steady rate "
        "(the producer finishes the jobs due every 2 ms in one pipeline of the engine's "
        "`finish` scripts, each claiming the next job as a worker's does), spread evenly over "
        "the users by the engine's rotation, and each event goes to the "
        f"{opts.per_user} listeners of its user. Latency = receive time − `finishedAt` (Redis "
        f"clock at the finish, ms resolution); the first {WARMUP:.0f} s of each window left out. "
        "Baselines, same machine, same clients, same load, same run (`bench/broadcast_app.py`, "
        "no Redis, `finishedAt` = publish time): a plain strawberry subscription fed from an "
        "in-memory asyncio broadcast, and a bare WebSocket endpoint that serializes each event "
        "once and sends the same bytes to every listener of its user. \"issue:\" figures are "
        "quoted from issue 4's text, not measured here. "
        + ("Archiving to the in-memory MongoDB was left in. " if opts.archive else
           "The producer empties the shard's archive list after each batch of finishes, so "
           "the in-memory MongoDB (mongomock, which scans every document per upsert) is not "
           "what gets "
           "measured; the archiver still reads the list after events (at most every 50 ms)."),
        "",
        (f"- Machine: {m['cpu']}, {m['cores']} cores, shared with other work during the "
         f"run (see CPU pressure), {m['memory']}; Python {m['python']}, Redis "
         f"{info.redis}"),
        f"- Wall time of the run: {info.wall:.0f} s",
        "",
        "| metric | " + " | ".join(heads) + " | target / orientation |",
        "| --- | " + " | ".join("---" for _ in heads) + " | --- |",
    ]
    out += ["| " + " | ".join(r) + " |" for r in _rows(opts, ours, others)]
    out += ["",
            f"Targets: p99 < 100 ms at {opts.rate:,.0f} events/s: "
            f"**{'MET' if p99_ok else 'MISSED'}** (p99 {fmt(main.latency.p99_ms, 1)} ms"
            + (f"; at {light.rate:,.0f} events/s p99 {fmt(light.latency.p99_ms, 1)} ms"
               if light else "") + "); "
            "Redis connections that do not grow with listeners: "
            f"**{'MET' if conns_ok else 'MISSED'}** "
            f"({conns.api_idle} with no listener, {conns.api_listening} with "
            f"{n - ours.failed:,}, at most {main.peaks.api_redis_connections} under load)."]
    if ours.profile and ours.profile.samples:
        out += ["", (f"py-spy on the API, {opts.profile_seconds:.0f} s more at "
                     f"{opts.rate:,.0f} events/s after the window ({ours.profile.samples} "
                     "samples, each attributed to the innermost frame of a known kind):"), ""]
        out += [f"- {share:.0f}% {kind}" for kind, share in ours.profile.categories]
    return "\n".join(out) + "\n"
