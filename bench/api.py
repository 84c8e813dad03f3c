"""Scenario 6: `enqueue` mutations per second over HTTP, one server process each.

Three servers on loopback, each loaded in turn by `wrk` (one thread, in its
own process) with 32 connections and with 1, DURATION seconds a run:
- ours: `python -m graph` (uvicorn, one process; in-memory MongoDB unless
  MONGO_URI is set), the real `enqueue` mutation with a JWT from `login`;
- Apollo Server (Node) answering the same mutation with a trivial resolver;
- a bare Starlette route (uvicorn) that checks the JWT and does the same Redis
  enqueue, without GraphQL.
A run whose answers include an error or a non-2xx status is reported as failed.

Then, one request at a time on one keep-alive connection: 20 aliased `enqueue`
mutations in one request (median latency of ALIAS_REQUESTS) and `enqueueMany`
of 1,000 items (jobs/s from the median of MANY_REQUESTS).

Before each run and series every server's archiver has stored all it had
listed (`_archived`). Otherwise one run's jobs are archived while the next
system's requests are timed, on the same two cores: the 20,000 jobs of an
`enqueueMany` series, and the bare Starlette route's jobs, which share our
QUEUE_PREFIX, so our API archived them during its own 1-connection run.

BENCH_API_BASELINE=<a checkout of this project> also runs `python -m graph`
from that checkout (same Python, its own queue prefix) in turn with ours, in
every measurement, as the before/after of a change (A B A B).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from . import common
from .common import WORK, Figure, free_port, post_json, wait_http
from .results import Row
from .systems import PREFIX, node_version, version

DURATION = 4
CONNECTIONS = (32, 1)
QUERY = "mutation($d: String!) { enqueue(requestData: $d) { id status } }"
SECRET = "bench-secret-bench-secret-bench-secret-0123"
ALIASES, ALIAS_REQUESTS = 20, 200
MANY_ITEMS, MANY_REQUESTS = 1000, 20
ALIASED = ("mutation($d: String!) {" + " ".join(
    f"a{i}: enqueue(requestData: $d) {{ id status }}" for i in range(ALIASES)) + "}")
MANY = "mutation($i: [EnqueueInput!]!) { enqueueMany(items: $i) { id status } }"


def _timed(url: str, token: str, body: dict, n: int) -> list[float]:
    """Seconds per request, n requests one after the other on one connection."""
    host, path = url.split("/")[2], "/" + url.split("/", 3)[3]
    conn = http.client.HTTPConnection(host, timeout=30)
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    times = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            conn.request("POST", path, data, headers)
            answer = json.loads(conn.getresponse().read())
            times.append(time.perf_counter() - t)
            if answer.get("errors"):
                raise RuntimeError(f"{url} answered errors: {answer['errors'][:1]}")
    finally:
        conn.close()
    return times


def _archived(redis_url: str, prefixes: list[str], timeout: float = 120) -> None:
    """Wait until the archive lists of these queue prefixes are empty: every
    server's archiver has stored what its jobs changed."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            keys = [k for p in prefixes for k in client.scan_iter(match=f"{p}:*:archive")]
            if not keys or sum(client.llen(k) for k in keys) == 0:
                return
            time.sleep(0.2)
    finally:
        client.close()


def _login(gql: str, name: str) -> tuple[str, str]:
    user, pw = f"bench{name}{int(time.time())}", "bench-password-1"
    post_json(gql, {"query": "mutation($u:String!,$p:String!){register(username:$u,"
                             "password:$p){id}}", "variables": {"u": user, "p": pw}})
    login = post_json(gql, {"query": "mutation($u:String!,$p:String!){login(username:$u,"
                                     "password:$p){token user{id}}}",
                            "variables": {"u": user, "p": pw}})
    return login["data"]["login"]["token"], login["data"]["login"]["user"]["id"]


def _wrk(url, body, token, conns):
    script = WORK / "wrk-post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{DURATION}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True,
                         timeout=DURATION + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, pct(50), pct(99), (int(bad.group(1)) if bad else 0), errors and errors.group(1)


def scenario6(server, reps: int, scale: float = 1.0, log=print) -> list[Row]:
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    server.flush()
    procs = []
    try:
        env = {"REDIS_URL": server.url, "QUEUE_PREFIX": PREFIX, "LOG_LEVEL": "WARNING",
               "JWT_SECRET": SECRET, "QUEUE_MAX_PENDING": str(10**9),
               "QUEUE_ENQUEUE_RATE_PER_MINUTE": "0", "GRAPHQL_INTROSPECTION": "true",
               "AUTH_ATTEMPTS_PER_MINUTE": "0"}
        p_ours, p_apollo, p_star = free_port(), free_port(), free_port()
        ours = common.spawn([common.PY, "-m", "graph"],
                            {**env, "HOST": "127.0.0.1", "PORT": str(p_ours)}, "api-ours")
        procs.append(ours)
        baseline = os.environ.get("BENCH_API_BASELINE")
        if baseline:
            p_base = free_port()
            base = common.spawn([common.PY, "-m", "graph"],
                                {**env, "HOST": "127.0.0.1", "PORT": str(p_base),
                                 "QUEUE_PREFIX": PREFIX + "base"},
                                "api-baseline", cwd=Path(baseline))  # its modules come first
            procs.append(base)
        star = common.spawn([common.PY, "-m", "uvicorn", "bench.starlette_app:app", "--host",
                             "127.0.0.1", "--port", str(p_star), "--log-level", "warning",
                             "--no-access-log"],
                            {**env, "BENCH_JWT_SECRET": SECRET}, "api-starlette")
        procs.append(star)
        have_apollo = common.node_available() and (
            common.NODE_DIR / "node_modules" / "@apollo" / "server").is_dir()
        if have_apollo:
            apollo = common.spawn(["node", str(common.NODE_DIR / "apollo.mjs")],
                                  {"PORT": str(p_apollo)}, "api-apollo", cwd=common.NODE_DIR)
            procs.append(apollo)
            wait_http(f"http://127.0.0.1:{p_apollo}/", apollo)
        wait_http(f"http://127.0.0.1:{p_ours}/healthz", ours)
        if baseline:
            wait_http(f"http://127.0.0.1:{p_base}/healthz", base)
        wait_http(f"http://127.0.0.1:{p_star}/", star)

        gql = f"http://127.0.0.1:{p_ours}/graphql"
        token, uid = _login(gql, "ours")
        body = {"query": QUERY, "variables": {"d": "x" * 16}}
        check = post_json(gql, body, token)
        if check.get("errors"):
            raise RuntimeError(f"our enqueue answered errors: {check['errors']}")
        import jwt

        star_token = jwt.encode({"sub": uid}, SECRET, algorithm="HS256")
        targets = {"ours": (gql, token)}
        if baseline:
            base_gql = f"http://127.0.0.1:{p_base}/graphql"
            targets["baseline"] = (base_gql, _login(base_gql, "base")[0])
        graphql_targets = [t for t in targets]  # ours, and the baseline checkout
        if have_apollo:
            targets["apollo"] = (f"http://127.0.0.1:{p_apollo}/", "x")
            a = post_json(targets["apollo"][0], body)
            if a.get("errors"):
                raise RuntimeError(f"apollo answered errors: {a['errors']}")
        targets["starlette"] = (f"http://127.0.0.1:{p_star}/enqueue", star_token)
        star_body = {"requestData": "x" * 16}

        figs = {(t, c, k): Figure(unit="req/s" if k == "rps" else "ms",
                                  higher_is_better=(k == "rps"))
                for t in targets for c in CONNECTIONS for k in ("rps", "p50", "p99")}
        prefixes = [PREFIX, PREFIX + "base"]
        for rep in range(reps):
            for c in CONNECTIONS:
                for name, (url, tok) in targets.items():
                    _archived(server.url, prefixes)
                    rps, p50, p99, bad, sock = _wrk(url, star_body if name == "starlette"
                                                    else body, tok, c)
                    if bad:
                        log(f"  ! {name}: {bad} non-2xx answers")
                        rps = float("nan")
                    figs[(name, c, "rps")].add(rps)
                    figs[(name, c, "p50")].add(p50)
                    figs[(name, c, "p99")].add(p99)
                    log(f"  s6 rep {rep + 1} {c:2d} conn {name:9s} {rps:8.0f} req/s  p50 {p50:.2f} "
                        f"ms  p99 {p99:.2f} ms{'  socket errors: ' + sock if sock else ''}")
        # a sample answer after the load: no GraphQL errors hidden behind HTTP 200
        after = post_json(gql, body, token)
        if after.get("errors"):
            raise RuntimeError(f"our enqueue answered errors after the load: {after['errors']}")
        # one request at a time: 20 aliased enqueues, enqueueMany of 1,000 (after all the
        # wrk runs, so that the archive backlog of 20,000 jobs weighs on none of them)
        aliased = {"query": ALIASED, "variables": {"d": "x" * 16}}
        many = {"query": MANY, "variables": {"i": [{"requestData": "x" * 16}] * MANY_ITEMS}}
        for name in graphql_targets:  # warm: each document seen once
            url, tok = targets[name]
            _timed(url, tok, aliased, 3), _timed(url, tok, many, 1)
        for rep in range(reps):
            for name in graphql_targets:
                url, tok = targets[name]
                _archived(server.url, prefixes)
                alias_ms = statistics.median(_timed(url, tok, aliased, ALIAS_REQUESTS)) * 1000
                _archived(server.url, prefixes)
                many_rate = MANY_ITEMS / statistics.median(_timed(url, tok, many, MANY_REQUESTS))
                figs.setdefault((name, "alias"), Figure(unit="ms", higher_is_better=False)
                                ).add(alias_ms)
                figs.setdefault((name, "many"), Figure(unit="jobs/s")).add(many_rate)
                log(f"  s6 rep {rep + 1} {name:9s} {ALIASES} aliased enqueues: p50 {alias_ms:.2f} "
                    f"ms   enqueueMany of {MANY_ITEMS}: {many_rate:8.0f} jobs/s")
    finally:
        for p in procs:
            common.stop(p)
    rows = []
    sw = f"strawberry-graphql {version('strawberry-graphql')}"
    peers = [("apollo", f"Apollo Server {node_version('@apollo/server')} (trivial resolver)")] \
        if "apollo" in targets else []
    peers.append(("starlette", f"bare Starlette {version('starlette')} route, same Redis enqueue"))
    if "baseline" in targets:
        peers.append(("baseline", f"ours at {_describe(baseline)} (before)"))
    for c in CONNECTIONS:
        for peer, label in peers:
            for k, metric in (("rps", "enqueue mutations/s"), ("p50", "latency p50"),
                              ("p99", "latency p99")):
                r = Row("6. over the API", f"{metric}, {c} connection{'s' * (c > 1)}",
                        figs[("ours", c, k)], label, figs[(peer, c, k)],
                        notes=[f"ours: {sw} on uvicorn, one process; wrk -t1, {DURATION}s a run"])
                if peer == "apollo" and k == "rps" and c > 1:
                    r.target, r.met = ">= 0.5x", r.ratio >= 0.5
                if peer == "apollo" and k == "p99" and c > 1:
                    r.target, r.met = "<= 2.0x", r.ratio <= 2.0
                rows.append(r)
    base_label = f"ours at {_describe(baseline)} (before)" if "baseline" in targets else ""
    for key, metric, target in (
            ("alias", f"{ALIASES} aliased enqueues in one request, latency p50", "< 3 ms"),
            ("many", f"enqueueMany of {MANY_ITEMS:,} items, one request at a time",
             ">= 20,000 jobs/s")):
        ours_fig = figs[("ours", key)]
        r = Row("6. over the API", metric, ours_fig, base_label,
                figs.get(("baseline", key)), target=target,
                met=(ours_fig.median < 3) if key == "alias" else (ours_fig.median >= 20_000),
                notes=[f"one request at a time on one connection; median of "
                       f"{ALIAS_REQUESTS if key == 'alias' else MANY_REQUESTS} requests a run"])
        rows.append(r)
    return rows


def _describe(checkout: str) -> str:
    """The commit of a checkout, for the table."""
    try:
        return subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip() \
            or checkout
    except OSError:
        return checkout
