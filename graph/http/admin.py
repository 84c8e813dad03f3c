"""The operators' dashboard: `GET /admin`, a static page that talks to /graphql.

The page is three files of our own in `admin-assets/` (index.html, app.js,
style.css) and the chart library uPlot, at the version that
`admin-assets/package-lock.json` pins:

    npm ci --prefix graph/http/admin-assets

Nothing comes from a CDN. The routes serve files only and need no token: all
the data comes from the admin operations of /graphql (CONTRACT §9), with the
token an operator gets by signing in on the page, so a stranger sees a
sign-in form. Without uPlot installed the page works, its charts say why they
are missing.

Every answer carries a strict Content-Security-Policy: scripts, styles and
connections to this origin only, nothing inline, no framing. Together with a
page that writes user-supplied strings only as text, a job whose error holds
markup is shown, never run. `ADMIN_DASHBOARD=false` leaves the routes out, so
/admin is a 404.
"""

from __future__ import annotations

import logging
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import error_body

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "admin-assets"
UPLOT = ASSETS / "node_modules" / "uplot" / "dist"
INSTALL_HINT = "npm ci --prefix graph/http/admin-assets"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated (ETag): a deploy's new page is seen at once
}

# the only files served under /admin/, by the name the page uses
FILES = {
    "app.js": ASSETS / "app.js",
    "style.css": ASSETS / "style.css",
    "uPlot.esm.js": UPLOT / "uPlot.esm.js",
    "uPlot.min.css": UPLOT / "uPlot.min.css",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_warned = False


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)


async def page(request: Request) -> Response:
    return _file(ASSETS / "index.html")


async def asset(request: Request) -> Response:
    global _warned
    path = FILES.get(request.path_params["name"])
    if path is None or not path.is_file():
        if path is not None and path.is_relative_to(UPLOT) and not _warned:
            _warned = True
            log.warning("the dashboard's charts are missing: run `%s`", INSTALL_HINT)
        return JSONResponse(error_body("No such dashboard file.", "NOT_FOUND"),
                            status_code=404, headers=HEADERS)
    return _file(path)


def routes(settings) -> list[Route]:
    """`/admin` and its files; none when ADMIN_DASHBOARD=false."""
    if not getattr(settings, "admin_dashboard", True):
        return []
    return [
        Route("/admin", page, methods=["GET", "HEAD"]),
        Route("/admin/{name}", asset, methods=["GET", "HEAD"]),
    ]
