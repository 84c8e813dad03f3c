"""GraphiQL in a real browser: headless Chromium (Debian's `chromium` package,
driven by Playwright from PyPI with the system browser: no browser download)
opens /graphql on a real API process, types queries, runs them, and reads the
result pane.

No request may leave the machine: GraphiQL's scripts and styles are served by
the API itself (graph/http/graphiql.py, from `npm ci --prefix graph/graphiql-assets`).

Skipped only where no Chromium is installed (`apt-get install chromium`);
CHROMIUM_PATH names another binary.
"""

from __future__ import annotations

import uuid

import httpx
import pytest


def run_in_graphiql(page, query: str) -> str:
    """Type `query` into GraphiQL's editor, run it, and return the result pane's text."""
    editor = page.locator(".graphiql-query-editor .CodeMirror").first
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(query)
    page.keyboard.press("Escape")  # close an autocomplete hint, if one is open
    typed = page.evaluate(
        "() => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue()")
    assert typed.split() == query.split(), f"the editor holds {typed!r}"
    result = page.locator(".graphiql-response .CodeMirror").first
    before = page.evaluate(
        "() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()")
    # with one operation the button runs it; GraphiQL counts the operations a moment after an
    # edit, and until then the default document's several make the button a menu
    page.locator("button.graphiql-execute-button:not([aria-haspopup])").click()
    page.wait_for_function(
        "(before) => { const v = document.querySelector('.graphiql-response .CodeMirror')"
        ".CodeMirror.getValue(); return v && v !== before; }", arg=before)
    assert result.is_visible()
    return page.evaluate(
        "() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()")


def test_graphiql_runs_queries_in_headless_chromium(browser_page, api_process):
    page = browser_page
    requests, failures, errors = [], [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failures.append(f"{r.url}: {r.failure}"))
    page.on("pageerror", lambda e: errors.append(str(e)))

    html = httpx.get(f"{api_process.url}/graphql", headers={"Accept": "text/html"}).text
    assert "unpkg.com" not in html, (
        "GraphiQL still loads its assets from the CDN: run `npm ci --prefix graph/graphiql-assets` "
        "(and check the wiring described in graph/http/graphiql.py)")

    page.goto(f"{api_process.url}/graphql", wait_until="load")
    page.wait_for_selector(".graphiql-query-editor .CodeMirror")
    page.wait_for_selector("button.graphiql-execute-button")

    # a query (introspection needs no token)
    text = run_in_graphiql(page, "{ __typename }")
    assert '"__typename": "Query"' in text, text

    # a mutation, typed with its arguments
    username = f"browser_{uuid.uuid4().hex[:8]}"
    text = run_in_graphiql(
        page, f'mutation {{ register(username: "{username}", password: "correct horse") '
              f'{{ username }} }}')
    assert f'"username": "{username}"' in text, text

    # an error reaches the pane with its code
    text = run_in_graphiql(page, "{ me { username } }")
    assert '"UNAUTHENTICATED"' in text, text

    origin = api_process.url
    outside = [url for url in requests if not url.startswith((origin, "data:"))]
    assert outside == [], f"GraphiQL fetched from outside the API: {outside}"
    assert failures == [], failures
    assert errors == [], errors
    # its scripts and styles came from the API, and the page checked their integrity
    assert any("/graphiql-assets/graphiql@" in url for url in requests), requests


def test_graphiql_assets_are_only_the_pages_own(api_process):
    with httpx.Client(base_url=api_process.url) as http:
        html = http.get("/graphql", headers={"Accept": "text/html"}).text
        if "graphiql-assets/" not in html:
            pytest.fail("GraphiQL's assets are not served locally: run "
                        "`npm ci --prefix graph/graphiql-assets`")
        ok = http.get("/graphiql-assets/react@18.2.0/umd/react.production.min.js")
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/javascript")
        assert "immutable" in ok.headers["cache-control"]
        for path in ("/graphiql-assets/react@18.2.0/package.json",
                     "/graphiql-assets/../../pyproject.toml",
                     "/graphiql-assets/react@18.2.0/umd/react.development.js",
                     "/graphiql-assets/%2e%2e/%2e%2e/graphiql.py"):
            assert http.get(path).status_code == 404, path
