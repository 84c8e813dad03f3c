"""GraphiQL opens on this API's own operations, not on a generic welcome text
(graph/http/graphiql.py, `default_document`), and they run as they stand."""

from __future__ import annotations

import httpx

from graph.http.graphiql import DEFAULT_OPERATIONS, default_document
from graph.schema import build_schema

V1_OPERATIONS = ("mutation Register", "mutation Login", "mutation Enqueue", "subscription Processed")


def test_the_document_has_every_operation_the_schema_can_run():
    schema = build_schema()
    document = default_document(schema)
    for operation in V1_OPERATIONS:  # the contract's own: never dropped
        assert operation in document
    # jobUpdates (CONTRACT §8) is offered exactly when the schema has it, and then it validates
    assert ("subscription JobUpdates" in document) == ("jobUpdates(" in schema.as_str())
    assert '"Authorization": "Bearer <token>"' in document
    assert all(operation in default_document() for operation in DEFAULT_OPERATIONS)  # no schema: all


def test_graphiql_opens_on_it_and_runs_register(browser_page, api_process):
    page = browser_page
    html = httpx.get(f"{api_process.url}/graphql", headers={"Accept": "text/html"}).text
    assert "Welcome to GraphiQL" not in html

    page.goto(f"{api_process.url}/graphql", wait_until="load")
    page.wait_for_selector(".graphiql-query-editor .CodeMirror")
    editor = "document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror"
    shown = page.evaluate(f"() => {editor}.getValue()")
    assert shown == default_document(build_schema())

    # Run, then Register from its menu: it registers "alice" as written
    page.locator("button.graphiql-execute-button").click()
    page.get_by_role("menuitem", name="Register").click()
    page.wait_for_function(
        "() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
        ".includes('alice')")
    result = page.evaluate(
        "() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()")
    assert '"username": "alice"' in result, result
