"""The operators' dashboard at /admin (CONTRACT §9, "The dashboard").

Its files and headers are checked over HTTP; the page itself in headless
Chromium (Debian's, driven by Playwright as in tests/test_browser.py; skipped
only where no Chromium is installed) against a real API process: it runs
under its own strict Content-Security-Policy, fetches nothing from outside,
tells a non-admin so and shows them nothing, and lets an admin watch and act:
tiles, both charts, pause and resume, limits, retry, retry all of a user. A
FAILED job whose error is markup shows the characters and runs nothing.

Screenshots at 1280x800 and 390x844 go to tests/artifacts/ (ARTIFACTS_DIR).
"""

from __future__ import annotations

import os
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from graph.settings import Settings
from graph.http import admin
from tests.support import ROOT, Api, ApiProcess, wait_until

ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "tests" / "artifacts")
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
MARKUP = "<img src=x onerror=alert(1)>"
ADMIN = SimpleNamespace(username="operator", password="operator-password-long-enough")

# The admin API and roles are built beside this page; these tests run once the
# schema has them (schema.graphql is the schema, kept in sync by test_schema_file).
SCHEMA = (ROOT / "schema.graphql").read_text()
needs_roles = pytest.mark.skipif(not re.search(r"\brole: Role!", SCHEMA),
                                 reason="the schema has no User.role yet (CONTRACT §9)")
needs_admin_api = pytest.mark.skipif("adminOverview" not in SCHEMA,
                                     reason="the schema has no adminOverview yet (CONTRACT §9)")


def handler(data: str) -> str:
    """The workers' handler here: "fail:<text>" fails with <text> in its error; else an echo."""
    if data.startswith("fail:"):
        raise RuntimeError(data.removeprefix("fail:"))
    return data


# ---------------------------------------------------------------- over HTTP


class _Markup(HTMLParser):
    """What of a page could run or style it inline."""

    def __init__(self):
        super().__init__()
        self.scripts, self.inline, self.urls = [], [], []
        self._tag = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._tag = tag
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "style":
            self.inline.append("<style>")
        for name in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith("data:"):
                self.urls.append(attrs[name])

    def handle_data(self, data):
        if self._tag == "script" and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")

    def handle_endtag(self, tag):
        self._tag = None


def test_page_and_files_carry_a_strict_csp_and_nothing_inline(app_client):
    page = app_client.get("/admin")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == POLICY
    assert page.headers["x-content-type-options"] == "nosniff"

    markup = _Markup()
    markup.feed(page.text)
    assert markup.inline == [], "inline script or style, which the CSP would block"
    assert [s.get("src") for s in markup.scripts] == ["admin/app.js"]
    assert markup.scripts[0].get("type") == "module"
    assert "admin/uPlot.min.css" in markup.urls and "admin/style.css" in markup.urls
    if not (admin.UPLOT / "uPlot.esm.js").is_file():
        pytest.fail(f"the dashboard's charts are not installed: run `{admin.INSTALL_HINT}`")

    types = {".js": "text/javascript", ".css": "text/css"}
    for url in [*markup.urls, "admin/uPlot.esm.js"]:  # app.js imports uPlot
        answer = app_client.get("/" + url)
        assert answer.status_code == 200, url
        assert answer.headers["content-type"].startswith(types[Path(url).suffix]), url
        assert answer.headers["content-security-policy"] == POLICY, url
        assert answer.headers["x-content-type-options"] == "nosniff", url

    # only the page's own files: not the lockfile, not node_modules, not the server's code
    for path in ("/admin/package.json", "/admin/package-lock.json", "/admin/index.html",
                 "/admin/admin.py", "/admin/../graph/http/admin.py",
                 "/admin/node_modules/uplot/package.json", "/admin/%2e%2e/admin.py"):
        assert app_client.get(path).status_code == 404, path


def test_the_script_writes_no_html():
    """User-supplied strings reach the page as text only: the script has no way to write HTML."""
    script = (admin.ASSETS / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "localStorage", "document.cookie"):
        assert sink not in script, sink


def test_admin_dashboard_false_leaves_the_routes_out():
    assert admin.routes(SimpleNamespace(admin_dashboard=False)) == []
    assert {r.path for r in admin.routes(SimpleNamespace())} == {"/admin", "/admin/{name}"}


@pytest.mark.skipif("admin_dashboard" not in Settings.model_fields,
                    reason="Settings has no admin_dashboard yet (ADMIN_DASHBOARD, CONTRACT §9)")
def test_admin_dashboard_false_is_a_404(settings_factory):
    from starlette.testclient import TestClient

    from graph.app import create_app

    with TestClient(create_app(settings_factory(admin_dashboard=False))) as client:
        assert client.get("/admin").status_code == 404
        assert client.get("/admin/app.js").status_code == 404
    with TestClient(create_app(settings_factory())) as client:
        assert client.get("/admin").status_code == 200


# ---------------------------------------------------------------- in the browser


class Watched:
    """A page with what it did recorded: requests, console errors, page errors, dialogs."""

    def __init__(self, browser, origin: str, width: int = 1280, height: int = 800):
        self.origin = origin
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.requests, self.errors, self.dialogs = [], [], []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self):
        self.page.goto(f"{self.origin}/admin", wait_until="load")
        self.page.locator("#signin").wait_for()  # shown by the script: it ran under the CSP
        return self.page

    def sign_in(self, username: str, password: str):
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        self.page.click("#signin-submit")

    def graphql_bodies(self) -> list[str]:
        return [r.post_data or "" for r in self.requests if r.url.endswith("/graphql")]

    def check_clean(self):
        outside = [r.url for r in self.requests if not r.url.startswith((self.origin, "data:"))]
        assert outside == [], f"the page fetched from outside the API: {outside}"
        assert self.errors == [], self.errors  # CSP violations are console errors
        assert self.dialogs == [], f"a dialog opened: {self.dialogs}"


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def test_page_runs_under_its_csp_and_tells_a_bad_password(browser, api_process):
    watched = Watched(browser, api_process.url)
    page = watched.open()
    response = watched.page.request.get(f"{api_process.url}/admin")
    assert response.headers["content-security-policy"] == POLICY

    assert page.locator("#dashboard").is_hidden()
    watched.sign_in("nobody_" + uuid.uuid4().hex[:8], "wrong password here")
    page.locator("#signin-error").wait_for()
    assert text(page, "#signin-error").strip()
    assert page.locator("#dashboard").is_hidden()
    assert page.evaluate("sessionStorage.length") == 0

    loaded = [r.url for r in watched.requests]
    assert f"{api_process.url}/admin/app.js" in loaded
    assert f"{api_process.url}/admin/uPlot.esm.js" in loaded  # the charts' library, from here
    watched.check_clean()


@needs_roles
def test_a_non_admin_is_told_and_sees_no_data(browser, api_process):
    username = "plain_" + uuid.uuid4().hex[:8]
    api_process.client().as_user(username)
    watched = Watched(browser, api_process.url)
    page = watched.open()
    watched.sign_in(username, "correct horse")

    page.locator("#denied").wait_for()
    assert "not an admin" in text(page, "#denied")
    assert page.locator("#dashboard").is_hidden()
    assert not any("admin" in body for body in watched.graphql_bodies()), "asked for admin data"
    assert page.evaluate("sessionStorage.length") == 0  # a non-admin's token is not kept
    watched.check_clean()


@pytest.fixture
def admin_api(settings_factory, tmp_path):
    """The API with a worker inside (`--dev`), an ADMIN account from the environment,
    and this module's handler; one attempt per job, so a failure is final at once."""
    settings = settings_factory(queue_handler="tests.test_admin_dashboard:handler",
                                queue_max_attempts=1)
    proc = ApiProcess(settings, tmp_path, ADMIN_USERNAME=ADMIN.username,
                      ADMIN_PASSWORD=ADMIN.password)
    proc.start("--dev")
    yield proc
    proc.stop()


def login(api: Api, username: str, password: str) -> Api:
    data = api.call("mutation($u:String!,$p:String!){login(username:$u,password:$p){token}}",
                    {"u": username, "p": password})
    return Api(api.http, data["login"]["token"])


def numbers(line: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", line)]


@needs_admin_api
def test_an_admin_watches_and_acts(browser, admin_api):
    api = admin_api.client()
    operator = login(api, ADMIN.username, ADMIN.password)
    alice_name, bob_name = (f"{n}_{uuid.uuid4().hex[:6]}" for n in ("alice", "bob"))
    alice, bob = api.as_user(alice_name), api.as_user(bob_name)

    # history for the charts: three jobs done, one FAILED with markup for its error
    broken = alice.enqueue("fail:" + MARKUP)
    done = [bob.enqueue(f"job {i}") for i in range(3)]
    wait_until(lambda: alice.job(broken["id"])["status"] == "FAILED", message="the job to fail")
    wait_until(lambda: all(bob.job(j["id"])["status"] == "COMPLETED" for j in done))
    assert MARKUP in alice.job(broken["id"])["error"]

    watched = Watched(browser, admin_api.url)
    page = watched.open()
    watched.sign_in(ADMIN.username, ADMIN.password)
    page.locator("#dashboard").wait_for()
    page.locator('#status[data-state="live"]').wait_for()
    # the token is in sessionStorage, and nowhere else
    assert page.evaluate("sessionStorage.getItem('userqueue.admin.token')")
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""

    # tiles and both charts, with data
    assert numbers(text(page, '[data-key="users"] .tile-value')) == [3]
    def counted():
        summary = text(page, "#throughput-summary")  # "Last 15 min: 4 enqueued · 3 completed · 1 failed"
        return {kind: int(n.replace(",", "")) for n, kind in re.findall(r"([\d,]+) (\w+)", summary)}
    wait_until(lambda: counted() == {"min": 15, "enqueued": 4, "completed": 3, "failed": 1},
               message="the throughput chart to count 4 enqueued, 3 completed, 1 failed")
    for chart in ("#throughput-chart", "#queued-chart"):
        page.locator(f"{chart} canvas").first.wait_for()
        assert int(page.locator(chart).get_attribute("data-points")) > 0, chart

    # the FAILED job's markup is shown as text, and nothing ran
    failed = page.locator(f'#failed-list li[data-job-id="{broken["id"]}"]')
    assert MARKUP in failed.locator(".error-text").inner_text()
    assert failed.locator(".username").inner_text() == alice_name
    assert page.locator("#failed-list img").count() == 0

    # pause: alice's jobs stop starting while bob's run
    row = page.locator(f'#users-body tr[data-username="{alice_name}"]')
    row.locator('[data-action="pause"]').click()
    row.locator(".badge-paused").wait_for()
    limits = operator.call("{adminUsers(first:100){edges{node{user{username} limits{paused}}}}}")
    paused = {e["node"]["user"]["username"]: e["node"]["limits"]["paused"]
              for e in limits["adminUsers"]["edges"]}
    assert paused[alice_name] is True and paused[bob_name] is False
    held = alice.enqueue("held")
    after = [bob.enqueue(f"later {i}") for i in range(2)]
    wait_until(lambda: all(bob.job(j["id"])["status"] == "COMPLETED" for j in after))
    job = alice.job(held["id"])
    assert job["status"] == "QUEUED" and job["startedAt"] is None, job
    wait_until(lambda: numbers(row.locator('[data-label="Queued"]').inner_text()) == [1])

    # resume: it runs
    row.locator('[data-action="resume"]').click()
    wait_until(lambda: alice.job(held["id"])["status"] == "COMPLETED", message="resume to start it")
    row.locator('[data-action="pause"]').wait_for()

    # limits editor
    page.locator(f'#users-body tr[data-username="{bob_name}"] [data-action="limits"]').click()
    page.fill("#limit-concurrency", "2")
    page.fill("#limit-weight", "3")
    page.fill("#limit-starts", "120")
    page.click("#limits-save")
    page.locator("#limits-dialog").wait_for(state="hidden")
    rows = operator.call("{adminUsers(first:100){edges{node{user{username} "
                         "limits{concurrency weight startsPerMinute paused}}}}}")
    bob_limits = next(e["node"]["limits"] for e in rows["adminUsers"]["edges"]
                      if e["node"]["user"]["username"] == bob_name)
    assert bob_limits == {"concurrency": 2, "weight": 3, "startsPerMinute": 120, "paused": False}

    # retry one FAILED job: it runs again (and fails again, with a new finish time)
    first_finish = alice.job(broken["id"])["finishedAt"]
    failed.locator('[data-action="retry"]').click()
    wait_until(lambda: alice.job(broken["id"])["finishedAt"] not in (None, first_finish),
               message="the retried job to run again")
    assert alice.job(broken["id"])["status"] == "FAILED"

    # retry all failed of a user, after a confirmation
    second_finish = alice.job(broken["id"])["finishedAt"]
    row.locator('[data-action="retry-failed"]:not([disabled])').click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for()
    assert alice_name in dialog.inner_text()
    page.click("#confirm-ok")
    dialog.wait_for(state="hidden")
    wait_until(lambda: alice.job(broken["id"])["finishedAt"] not in (None, second_finish),
               message="retry all to run the job again")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(f'#failed-list li[data-job-id="{broken["id"]}"]').wait_for()
    from playwright.sync_api import expect

    expect(page.locator("#toasts .toast")).to_have_count(0, timeout=30_000)
    page.mouse.wheel(0, -20_000)  # back to the tiles and charts, as an operator opens it
    expect(page.locator("#tiles")).to_be_in_viewport()
    page.screenshot(path=str(ARTIFACTS / "admin-dashboard-1280x800.png"))
    page.screenshot(path=str(ARTIFACTS / "admin-dashboard-1280-full.png"), full_page=True)
    watched.check_clean()

    # on a phone: everything fits the width
    phone = Watched(browser, admin_api.url, 390, 844)
    small = phone.open()
    phone.sign_in(ADMIN.username, ADMIN.password)
    small.locator('#status[data-state="live"]').wait_for()
    small.locator("#queued-chart canvas").first.wait_for()
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(ARTIFACTS / "admin-dashboard-390x844.png"))
    phone.check_clean()
