"""Documents made to cost the server: fragment fan-out, overlapping fields, large
responses, documents that fill the caches (issue 12, items 1, 2, 7 and 9).

Each is refused within milliseconds by the one pass that measures a document
before validation, or bounded, while the API keeps answering others.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
import tracemalloc
import uuid

import httpx
from starlette.testclient import TestClient

from graph.app import create_app
from tests.support import Api, wait_until


def fan_out(n: int) -> str:
    """The issue's document: fragment F(i) spreads F(i-1) twice, 2^n fields in ~40n bytes."""
    return (f"{{ ...F{n} }}\n" + "fragment F0 on Query { __typename }\n"
            + "\n".join(f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}"
                        for i in range(1, n + 1)))


def overlapping(copies: int, selection: str = "jobs{edges{node{id}}}") -> str:
    """The same field `copies` times, after a random comment so no cache has seen it."""
    return f"# {uuid.uuid4()}\n{{ " + " ".join([selection] * copies) + " }"


def code_of(response: httpx.Response) -> str | None:
    errors = response.json().get("errors")
    return errors[0]["extensions"]["code"] if errors else None


@contextlib.contextmanager
def polling_healthz(url: str):
    """Poll /healthz without pause in a thread; yields the list of each poll's seconds
    (a poll that fails or times out counts with the time it took)."""
    latencies: list[float] = []
    stop = threading.Event()

    def poll():
        with httpx.Client(base_url=url, timeout=5) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    ok = http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.monotonic() - started if ok else float("inf"))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        wait_until(lambda: len(latencies) >= 5, message="the first /healthz polls")
        yield latencies
        count = len(latencies)
        wait_until(lambda: len(latencies) >= count + 5, message="/healthz polls afterwards")
    finally:
        stop.set()
        poller.join(timeout=10)


# ---- items 1 and 2: refused at once, the process keeps answering ----

def test_fan_out_and_overlap_are_refused_at_once_while_healthz_answers(api_process):
    """The issue's documents, and one that the limits accept but whose validation
    spends the overlap budget: none holds up /healthz for 100 ms."""
    with polling_healthz(api_process.url) as latencies, \
            httpx.Client(base_url=api_process.url, timeout=5) as http:
        for query in (fan_out(39), fan_out(20), overlapping(400),
                      overlapping(150, "me{username}")):
            started = time.monotonic()
            response = http.post("/graphql", json={"query": query})
            elapsed = time.monotonic() - started
            assert code_of(response) == "QUERY_TOO_COMPLEX", response.text[:300]
            assert elapsed < 1, (elapsed, query[:60])
    assert max(latencies) < 0.1, sorted(latencies)[-5:]


def test_fan_out_is_refused_by_the_field_count_without_a_token(api):
    response = api.post(fan_out(39))
    assert code_of(response) == "QUERY_TOO_COMPLEX"
    assert "fields" in response.json()["errors"][0]["message"]


def test_a_document_the_limits_accept_is_still_bounded_in_validation(api):
    """800 fields of the same name pass the pass's limits but would take graphql-core's
    overlap rule seconds: its budget stops it, and the answer is QUERY_TOO_COMPLEX."""
    query = overlapping(400, "me{username}")
    started = time.monotonic()
    response = api.post(query)
    assert code_of(response) == "QUERY_TOO_COMPLEX"
    assert "too long" in response.json()["errors"][0]["message"]
    assert time.monotonic() - started < 1
    # a handful of repeated fields is fine
    assert code_of(api.post(overlapping(10, "__typename"))) is None


def test_an_int_literal_of_thousands_of_digits_is_a_validation_error(api):
    """Python reads at most 4300 digits into an int; graphql-core's rules try more."""
    response = api.as_user().post("{jobs(first:" + "9" * 5000 + "){pageInfo{hasNextPage}}}")
    assert code_of(response) == "GRAPHQL_VALIDATION_FAILED"


# ---- item 7: cost (the limits at their edges are in test_limits.py) ----

def test_ten_pages_of_jobs_cost_too_much_one_full_page_does_not(api):
    user = api.as_user()
    ten = "{" + " ".join(f"a{i}:jobs(first:100){{edges{{node{{requestData}}}}}}"
                         for i in range(10)) + "}"
    response = user.post(ten)
    assert code_of(response) == "QUERY_TOO_COMPLEX"
    assert "GRAPHQL_MAX_COST" in response.json()["errors"][0]["message"]
    full = ("{jobs(first:100){edges{cursor node{" + Api.JOB + "}} pageInfo{hasNextPage endCursor}}"
            " queueStats{queued processing ready} me{id username}}")
    assert code_of(user.post(full)) is None
    # a page over the largest one counts as the largest, and is the resolver's
    # BAD_USER_INPUT as before
    assert code_of(user.post("{jobs(first:100000){pageInfo{hasNextPage}}}")) == "BAD_USER_INPUT"


# ---- item 9: the caches ----

def document_cache(app) -> object:
    """The DocumentCache of the app's schema."""
    from graph.http.limits import DocumentLimits

    [view] = [r.endpoint for r in app.routes if r.path == "/graphql" and hasattr(r, "methods")]
    [limits] = [e for e in view.schema.get_extensions() if isinstance(e, DocumentLimits)]
    return limits.cache


def test_large_documents_are_not_cached(settings):
    app = create_app(settings)
    with TestClient(app) as client:
        api = Api(client)
        api.post('{__type(name:"Query"){name}}')
        gc.collect()
        tracemalloc.start()
        try:
            for _ in range(5):  # 1 MB documents, each new
                name = uuid.uuid4().hex + "x" * 1_000_000
                assert code_of(api.post(f'{{__type(name:"{name}"){{name}}}}')) is None
            del name
            # a small new document: the worker thread then lets go of the last large one
            assert code_of(api.post(f"{{__typename}} # {uuid.uuid4()}")) is None
            gc.collect()
            kept, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert kept < 1_000_000, kept  # each one cached would keep 2 MB
        cache = document_cache(app)
        assert '{__type(name:"Query"){name}}' in cache.entries
        assert cache.chars < 10_000 and all(len(query) < 5000 for query in cache.entries)


def test_the_cache_is_bounded_by_the_characters_it_holds():
    from graph.http.limits import DocumentCache

    cache = DocumentCache(max_chars=1000, max_document_chars=300)
    for i in range(100):
        cache.put(f"{{a{i}}}" + " " * 200, None, [])
    assert cache.chars <= 1000 and len(cache) == 4
    assert cache.get("{a99}" + " " * 200) is not None and cache.get("{a0}" + " " * 200) is None
    cache.put("{b}" + " " * 400, None, [])
    assert cache.get("{b}" + " " * 400) is None
