"""GraphiQL without a CDN: its browser assets served by the API itself.

Strawberry's GraphiQL page loads React, GraphiQL and the explorer plugin from
unpkg.com, which a machine without internet access (CI, an air-gapped site)
cannot reach: the page then stays on "Loading...". The same files, at exactly
the versions the page names, come from npm:

    npm ci --prefix graph/http/graphiql-assets     # graph/http/graphiql-assets/package.json

When they are installed (or `GRAPHIQL_ASSETS_DIR` names another `node_modules`
holding them), the page's unpkg URLs are rewritten to `graphiql-assets/...`,
relative to the GraphQL path, and served from here with long cache lifetimes.
Each file is checked against the page's own `integrity` (SHA-384) attribute
before it is used, so the browser gets byte for byte what the CDN would have
sent, and keeps checking it. When any file is missing or differs, the page is
left as strawberry wrote it (assets from the CDN), and that is logged once.

The page also opens on this API's own operations (`default_document`)
instead of strawberry's generic welcome text.

`LocalGraphiQL` is a mixin of the GraphQL view; `asset_route()` serves the files.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import error_body

log = logging.getLogger(__name__)

CDN = "https://unpkg.com/"
ROUTE_PREFIX = "graphiql-assets/"  # relative to the GraphQL page: /graphql -> /graphiql-assets/...
DEFAULT_DIR = Path(__file__).resolve().parent / "graphiql-assets" / "node_modules"
INSTALL_HINT = "npm ci --prefix graph/http/graphiql-assets"

# <script src="https://unpkg.com/react@18.2.0/umd/..." integrity="sha384-..."> and <link href=...>
_TAG = re.compile(r"<(?:script|link)\b[^>]*>", re.DOTALL)
_URL = re.compile(r'(?:src|href)="' + re.escape(CDN) + r'((?:@[^/"]+/)?[^@/"]+)@([^/"]+)/([^"]+)"')
_INTEGRITY = re.compile(r'integrity="(sha384-[^"]+)"')
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    url: str        # as the page names it on the CDN
    local: str      # path under /graphiql-assets/
    file: Path


def assets_dir() -> Path:
    return Path(os.environ.get("GRAPHIQL_ASSETS_DIR") or DEFAULT_DIR)


def _sri(path: Path) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


def find_assets(html: str, root: Path) -> tuple[list[Asset], list[str]]:
    """The page's CDN assets found under `root` (a node_modules), and what is wrong."""
    assets, problems = [], []
    for tag in _TAG.findall(html):
        url = _URL.search(tag)
        if not url:
            continue
        package, version, file = url.groups()
        path = root / package / file
        try:
            installed = json.loads((root / package / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            problems.append(f"{package}@{version} is not installed")
            continue
        if installed != version:
            problems.append(f"{package} is {installed}, the page needs {version}")
            continue
        if not path.is_file():
            problems.append(f"{package}/{file} is missing")
            continue
        integrity = _INTEGRITY.search(tag)
        if integrity and _sri(path) != integrity.group(1):
            problems.append(f"{package}/{file} differs from the page's integrity hash")
            continue
        assets.append(Asset(url=CDN + f"{package}@{version}/{file}",
                            local=f"{package}@{version}/{file}", file=path))
    return assets, problems


@functools.lru_cache(maxsize=8)
def _local_page(html: str, root: str) -> tuple[str, tuple[Asset, ...]]:
    assets, problems = find_assets(html, Path(root))
    if problems or not assets:
        if assets or problems:
            log.info("GraphiQL loads its assets from %s (%s; run `%s` to serve them locally)",
                     CDN, "; ".join(problems), INSTALL_HINT)
        return html, ()
    for asset in assets:
        html = html.replace(f'"{asset.url}"', f'"{ROUTE_PREFIX}{asset.local}"')
    return html, tuple(assets)


# What GraphiQL opens on in a browser that has not used it yet (after that it
# shows the person's own last document, which it keeps in localStorage): the
# operations a newcomer needs, each runnable from the Run button's menu.
DOCUMENT_HEADER = """\
# userqueue: a queue of requests per user.
# To run an operation, put the cursor in it and
# press Ctrl+Enter, or pick it from the Run menu.
#
# Register and Login need no token. For the rest,
# put the token that Login answers in the Headers
# tab below (subscriptions send it too):
#   {"Authorization": "Bearer <token>"}"""

DEFAULT_OPERATIONS = (
    """\
mutation Register {
  register(
    username: "alice"
    password: "pick a long passphrase"
  ) {
    id
    username
  }
}""",
    """\
mutation Login {
  login(
    username: "alice"
    password: "pick a long passphrase"
  ) {
    token
    expiresAt
  }
}""",
    """\
mutation Enqueue {
  enqueue(requestData: "hello") {
    id
    status
    createdAt
  }
}""",
    """\
subscription Processed {
  processed {
    cursor
    job {
      id
      status
      processedData
      error
    }
  }
}""",
    """\
subscription JobUpdates {
  jobUpdates(id: "paste the id Enqueue answered") {
    kind
    job {
      id
      status
      progress
      progressMessage
    }
  }
}""",
)


@functools.lru_cache(maxsize=8)
def default_document(schema=None) -> str:
    """The header and each default operation that `schema` (strawberry's or
    graphql-core's) can run, so a newcomer never starts on one that fails;
    without a schema, all of them."""
    from graphql import parse, validate

    schema = getattr(schema, "_schema", schema)  # strawberry.Schema wraps graphql-core's
    operations = [operation for operation in DEFAULT_OPERATIONS
                  if schema is None or not validate(schema, parse(operation))]
    return "\n\n".join([DOCUMENT_HEADER, *operations]) + "\n"


# strawberry's graphiql.html: const EXAMPLE_QUERY = `# Welcome to GraphiQL ...`;
_EXAMPLE_QUERY = re.compile(r"const EXAMPLE_QUERY = `.*?`;", re.DOTALL)


def with_default_document(html: str, document: str) -> str:
    """The page with `document` in place of strawberry's generic welcome text."""
    # a JSON string is a JS string literal; "<" escaped so "</script>" cannot end the script
    literal = json.dumps(document).replace("<", "\\u003c")
    html, found = _EXAMPLE_QUERY.subn(lambda _: f"const EXAMPLE_QUERY = {literal};", html, count=1)
    if not found:
        log.info("GraphiQL opens on its own welcome text: strawberry's page has no EXAMPLE_QUERY")
    return html


def page(html: str, schema=None) -> str:
    """Strawberry's GraphiQL page on our default document (for `schema`), its
    assets served locally when they are installed."""
    return with_default_document(_local_page(html, str(assets_dir()))[0], default_document(schema))


class LocalGraphiQL:
    """Mixin for strawberry's GraphQL view: its GraphiQL page uses the local assets."""

    @property
    def graphql_ide_html(self) -> str:
        return page(super().graphql_ide_html, self.schema)


def _servable() -> dict[str, Path]:
    """Only files that strawberry's GraphiQL page names, found and verified."""
    from strawberry.http.ides import get_graphql_ide_html

    _, assets = _local_page(get_graphql_ide_html("graphiql"), str(assets_dir()))
    return {asset.local: asset.file for asset in assets}


async def serve_asset(request: Request) -> Response:
    file = _servable().get(request.path_params["asset"])
    if file is None:
        return JSONResponse(error_body("No such GraphiQL asset.", "NOT_FOUND"), status_code=404)
    return FileResponse(file, media_type=_TYPES.get(file.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


def asset_route() -> Route:
    """`GET /graphiql-assets/<package>@<version>/<file>`, beside `/graphql`."""
    return Route("/" + ROUTE_PREFIX + "{asset:path}", serve_asset, methods=["GET", "HEAD"])
