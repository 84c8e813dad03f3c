"""Scenario 6: `enqueue` mutations per second over HTTP, one server process each.

Three servers on loopback, each loaded in turn by `wrk` (one thread, in its
own process) with 32 connections and with 1, DURATION seconds a run:
- ours: `python -m graph` (uvicorn, one process; in-memory MongoDB unless
  MONGO_URI is set), the real `enqueue` mutation with a JWT from `login`;
- Apollo Server (Node) answering the same mutation with a trivial resolver;
- a bare Starlette route (uvicorn) that checks the JWT and does the same Redis
  enqueue, without GraphQL.
A run whose answers include an error or a non-2xx status is reported as failed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

from . import common
from .common import WORK, Figure, free_port, post_json, wait_http
from .results import Row
from .systems import PREFIX, node_version, version

DURATION = 4
CONNECTIONS = (32, 1)
QUERY = "mutation($d: String!) { enqueue(requestData: $d) { id status } }"
SECRET = "bench-secret-bench-secret-bench-secret-0123"


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
        wait_http(f"http://127.0.0.1:{p_star}/", star)

        gql = f"http://127.0.0.1:{p_ours}/graphql"
        user, pw = f"bench{int(time.time())}", "bench-password-1"
        post_json(gql, {"query": "mutation($u:String!,$p:String!){register(username:$u,"
                                 "password:$p){id}}",
                        "variables": {"u": user, "p": pw}})
        login = post_json(gql, {"query": "mutation($u:String!,$p:String!){login(username:$u,"
                                         "password:$p){token user{id}}}",
                                "variables": {"u": user, "p": pw}})
        token = login["data"]["login"]["token"]
        uid = login["data"]["login"]["user"]["id"]
        body = {"query": QUERY, "variables": {"d": "x" * 16}}
        check = post_json(gql, body, token)
        if check.get("errors"):
            raise RuntimeError(f"our enqueue answered errors: {check['errors']}")
        import jwt

        star_token = jwt.encode({"sub": uid}, SECRET, algorithm="HS256")
        targets = {"ours": (gql, token)}
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
        for rep in range(reps):
            for c in CONNECTIONS:
                for name, (url, tok) in targets.items():
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
    finally:
        for p in procs:
            common.stop(p)
    rows = []
    sw = f"strawberry-graphql {version('strawberry-graphql')}"
    peers = [("apollo", f"Apollo Server {node_version('@apollo/server')} (trivial resolver)")] \
        if "apollo" in targets else []
    peers.append(("starlette", f"bare Starlette {version('starlette')} route, same Redis enqueue"))
    for c in CONNECTIONS:
        for peer, label in peers:
            for k, metric in (("rps", "enqueue mutations/s"), ("p50", "latency p50"),
                              ("p99", "latency p99")):
                r = Row("6. over the API", f"{metric}, {c} connection{'s' * (c > 1)}",
                        figs[("ours", c, k)], label, figs[(peer, c, k)],
                        notes=[f"ours: {sw} on uvicorn, one process; wrk -t1, {DURATION}s a run"])
                if peer == "apollo" and k == "rps":
                    r.target, r.met = ">= 0.5x", r.ratio >= 0.5
                rows.append(r)
    return rows
