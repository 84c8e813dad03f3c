"""Property-based fuzzing of the HTTP API, as an attacker would (hypothesis).

Four kinds of input are thrown at the in-process app: raw bodies (bytes,
JSON of every shape), generated GraphQL documents (real and made-up fields,
aliases, arguments, fragments, directives, variables, broken syntax),
documents made to be expensive (nested fragments, wide selections; each
answered within a second), and the real operations with variable values of
every type, including another user's job id. For every answer:

- the status is never 5xx, and the body is JSON;
- every error has a contract code, and none is INTERNAL_SERVER_ERROR
  (an unexpected error is a bug even when it is masked);
- no message shows a traceback, a source path or an internal module name
  that the request did not itself contain.

Afterwards a job stored before the fuzzing is intact: same data, still
QUEUED, listed, counted, and finally processed and dequeued by its owner.
"""

from __future__ import annotations

import json
import string
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.errors import CODES
from tests.support import Api

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
LEAKS = ("Traceback", 'File "', "site-packages", ".py\"", ".py,", "graph.", "engine.",
         "workers.", "strawberry.", "graphql.", "redis.", "pymongo", "beanie", "motor.",
         "starlette.", "uvicorn.", "bson.", "0x7f")
JSON = {"content-type": "application/json"}


# ---- checking an answer ----

def check(response, sent: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code != 200:
        assert body.get("errors"), body
    for error in body.get("errors") or ():
        code = error.get("extensions", {}).get("code")
        assert code in CODES, error
        assert code != "INTERNAL_SERVER_ERROR", (error, sent[:500])
        message = error["message"]
        assert isinstance(message, str)
        for leak in LEAKS:
            assert leak not in message or leak in sent, (leak, message, sent[:300])


# ---- strategies ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)

FIELDS = ["me", "job", "jobs", "queueStats", "register", "login", "enqueue", "enqueueMany",
          "dequeue", "cancel", "processed", "id", "username", "createdAt", "requestData",
          "status", "processedData", "error", "attempts", "edges", "node", "cursor",
          "pageInfo", "hasNextPage", "endCursor", "queued", "processing", "ready", "token",
          "user", "expiresAt", "__typename", "__schema", "__type", "types", "name", "fields",
          "kind", "ofType", "nope", "Job", "__foo"]
ARGS = ["id", "status", "first", "after", "requestData", "idempotencyKey", "items",
        "waitSeconds", "username", "password", "name", "x"]
names = st.sampled_from(FIELDS)
graphql_strings = st.text(max_size=15).map(json.dumps)
literals = st.recursive(
    st.one_of(st.integers(-2**40, 2**40).map(str), st.floats(allow_nan=False, allow_infinity=False)
              .map(repr), graphql_strings, st.sampled_from(["true", "false", "null", "QUEUED",
                                                            "DONE", "$v", "$id", '""""""']),
              ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(st.sampled_from(ARGS), inner), max_size=3).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}")),
    max_leaves=6,
)
arguments = st.lists(st.tuples(st.sampled_from(ARGS), literals), max_size=3).map(
    lambda kv: "(" + ", ".join(f"{k}: {v}" for k, v in kv) + ")" if kv else "")
directives = st.sampled_from(["", "", "", " @skip(if: true)", " @include(if: $v)", " @nope",
                              " @skip(if: 1)"])


def selections(depth: int):
    if depth == 0:
        return st.lists(names, min_size=1, max_size=4).map(" ".join)
    field = st.tuples(st.sampled_from(["", "", "a:", "b:", "__typename:"]), names, arguments,
                      directives, st.one_of(st.just(""), selections(depth - 1).map(
                          lambda s: "{" + s + "}")))
    item = st.one_of(field.map("".join), st.just("...F"), selections(depth - 1).map(
        lambda s: "... on Query {" + s + "}"))
    return st.lists(item, min_size=1, max_size=4).map(" ".join)


documents = st.tuples(
    st.sampled_from(["", "query", "mutation", "subscription", "query Q", "query($v: Boolean, $id: ID)",
                     "mutation M($v: Int)", "fragment"]),
    selections(3),
    st.sampled_from(["", " fragment F on Query { __typename }", " fragment F on Job { id }",
                     " fragment F on Query { ...F }", " query Q { __typename }"]),
    st.one_of(st.just(""), st.text(string.punctuation + " {}()[]$@!:=", max_size=5)),
).map(lambda p: f"{p[0]} {{{p[1]}}}{p[2]}{p[3]}")

# Documents made to be expensive: fragments spread in fragments (fan-out, chains,
# cycles), the same field hundreds of times, many aliases.
QUERY_FIELDS = ["__typename", "me{id username}", "queueStats{queued}", "jobs{edges{node{id}}}",
                "jobs(first:100){edges{cursor}}", "__schema{types{name}}", "nope"]


@st.composite
def expensive_documents(draw) -> str:
    count = draw(st.integers(1, 120))
    items = st.one_of(st.sampled_from(QUERY_FIELDS), st.integers(0, count - 1).map("...F{}".format))
    fragments = []
    for i in range(count):
        selection = draw(st.lists(items, min_size=1, max_size=4)) * draw(st.integers(1, 3))
        fragments.append(f"fragment F{i} on Query {{ {' '.join(selection)} }}")
    field, copies, aliased = draw(st.tuples(st.sampled_from(QUERY_FIELDS), st.integers(1, 800),
                                            st.booleans()))
    wide = " ".join(f"a{k}:{field}" if aliased else field for k in range(copies))
    spreads = " ".join(f"...F{j}" for j in draw(st.lists(st.integers(0, count - 1), max_size=5)))
    # a comment that no cache has seen, as an attacker would add
    return f"# {draw(st.uuids())}\n{{ {wide} {spreads} }} " + " ".join(fragments)


OPERATIONS = {
    "job": "query($id: ID!) { job(id: $id) { id requestData status } }",
    "jobs": "query($s: JobStatus, $f: Int, $a: String) { jobs(status: $s, first: $f, after: $a)"
            " { edges { cursor node { id requestData } } pageInfo { hasNextPage endCursor } } }",
    "cancel": "mutation($id: ID!) { cancel(id: $id) { id status } }",
    "dequeue": "mutation($w: Float) { dequeue(waitSeconds: $w) { id requestData } }",
    "enqueue": "mutation($d: String!, $k: String) { enqueue(requestData: $d, idempotencyKey: $k)"
               " { id status } }",
    "enqueueMany": "mutation($i: [EnqueueInput!]!) { enqueueMany(items: $i) { id } }",
    "queueStats": "{ queueStats { queued processing ready } me { username } }",
    "login": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
    "register": "mutation($u: String!, $p: String!) { register(username: $u, password: $p) { id } }",
}


def variables_for(victim_job: str):
    ids = st.one_of(st.just(victim_job), st.just(victim_job.upper()), st.just(victim_job + " "),
                    st.text(max_size=30), st.text("0123456789abcdef", min_size=24, max_size=24),
                    json_values)
    texts = st.one_of(st.text(max_size=40), json_values)
    # waits stay short: a fuzzer that waits 30 s per example tests nothing more
    waits = st.one_of(st.none(), st.floats(max_value=0.02, allow_nan=False, allow_infinity=False), st.text(max_size=5),
                      st.integers(-10, 0), st.booleans())
    items = st.one_of(
        st.lists(st.fixed_dictionaries({"requestData": texts},
                                       optional={"idempotencyKey": texts, "extra": json_values}),
                 max_size=4),
        json_values)
    return {
        "job": st.fixed_dictionaries({"id": ids}),
        "jobs": st.fixed_dictionaries({}, optional={
            "s": st.one_of(st.sampled_from(["QUEUED", "COMPLETED", "DONE", "queued"]), json_values),
            "f": st.one_of(st.integers(-2**33, 2**33), json_values),
            "a": st.one_of(st.text(max_size=20), st.just("am9iOg=="), json_values)}),
        "cancel": st.fixed_dictionaries({"id": ids}),
        "dequeue": st.fixed_dictionaries({}, optional={"w": waits}),
        "enqueue": st.fixed_dictionaries({"d": texts}, optional={"k": texts}),
        "enqueueMany": st.fixed_dictionaries({"i": items}),
        "queueStats": st.just({}),
        "login": st.fixed_dictionaries({"u": texts, "p": texts}),
        "register": st.fixed_dictionaries({"u": texts, "p": texts}),
    }


# ---- the stored job that must survive ----

def stored_job(api):
    victim = api.as_user()
    job = victim.enqueue("precious \u2603 data")
    return victim, job


def assert_intact(victim, job) -> None:
    stored = victim.job(job["id"])
    assert (stored["requestData"], stored["status"]) == ("precious \u2603 data", "QUEUED")
    ids = [e["node"]["id"] for e in victim.call("{jobs{edges{node{id}}}}")["jobs"]["edges"]]
    assert ids == [job["id"]]
    assert victim.stats()["queued"] == 1


# ---- the properties ----

def test_random_bodies_never_break_the_api(api):
    victim, job = stored_job(api)
    attacker = api.as_user()
    bodies = st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries({}, optional={"query": st.one_of(st.text(max_size=40), documents,
                                                               json_values),
                                            "variables": json_values,
                                            "operationName": json_values,
                                            "extensions": json_values}).map(
            lambda d: json.dumps(d).encode()),
        st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
    headers = st.sampled_from([JSON, {"content-type": "application/json; charset=latin-1"},
                               {"content-type": "text/plain"}, {}, {"content-type": "application/graphql"}])

    @SETTINGS
    @given(body=bodies, extra=headers, auth=st.sampled_from([None, "attacker", "junk"]))
    def post(body, extra, auth):
        headers = dict(extra)
        if auth == "attacker":
            headers["authorization"] = f"Bearer {attacker.token}"
        elif auth == "junk":
            headers["authorization"] = "Bearer x.y.z"
        response = api.http.post("/graphql", content=body, headers=headers)
        check(response, body.decode("utf-8", "replace"))

    post()
    assert_intact(victim, job)


def test_random_documents_never_break_the_api(api):
    victim, job = stored_job(api)
    attacker = api.as_user()

    @SETTINGS
    @given(query=documents, variables=st.one_of(st.just({}), st.dictionaries(
        st.sampled_from(["v", "id", "x"]), json_values, max_size=2)),
        by_get=st.booleans(), auth=st.booleans())
    def post(query, variables, by_get, auth):
        headers = {"authorization": f"Bearer {attacker.token}"} if auth else {}
        if by_get:
            response = api.http.get("/graphql", params={"query": query,
                                                        "variables": json.dumps(variables)},
                                    headers=headers)
        else:
            response = api.http.post("/graphql", json={"query": query, "variables": variables},
                                     headers=headers)
        check(response, query + json.dumps(variables))

    post()
    assert_intact(victim, job)


def test_expensive_documents_are_answered_quickly(api):
    """Each one answered within a second of CPU (refused or not), never with a 5xx.
    CPU time, the work a document costs, since wall time on a loaded machine also
    counts the other processes' turns; the API runs in this process."""
    victim, job = stored_job(api)
    attacker = api.as_user()

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(query=expensive_documents())
    def post(query):
        started, cpu = time.monotonic(), time.process_time()
        response = attacker.post(query)
        used, elapsed = time.process_time() - cpu, time.monotonic() - started
        check(response, query)
        assert used < 1, (used, query[:300])
        assert elapsed < 10, (elapsed, query[:300])  # nothing waits on anything either

    post()
    assert_intact(victim, job)


def test_real_operations_with_random_variables_never_break_the_api(api, workers):
    victim, job = stored_job(api)
    attacker, anonymous = api.as_user(), Api(api.http)
    strategies = variables_for(job["id"])
    # register and login hash with argon2 (~0.1 s): give them a small share
    weighted = ["job", "jobs", "cancel", "dequeue", "enqueue", "enqueueMany", "queueStats"] * 3 + [
        "login", "register"]

    @SETTINGS
    @given(data=st.data(), name=st.sampled_from(weighted), auth=st.sampled_from(
        ["attacker", "attacker", "none"]))
    def post(data, name, auth):
        variables = data.draw(strategies[name])
        client = attacker if auth == "attacker" else anonymous
        response = client.post(OPERATIONS[name], variables)
        check(response, OPERATIONS[name] + json.dumps(variables))

    post()
    assert_intact(victim, job)
    # the stored job is still processed and dequeued by its owner
    result = workers.run_burst(timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    done = victim.dequeue()
    assert done["id"] == job["id"] and done["requestData"] == "precious \u2603 data"
    assert done["processedData"] is not None and victim.dequeue() is None
