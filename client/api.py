"""What every `userqueue` command shares: the kept token and one GraphQL call over HTTP.

Errors come back as CliError with the server's `extensions.code`, which main()
prints the same way for every command.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path

import httpx

DEFAULT_URL = "http://127.0.0.1:8000/graphql"
DEFAULT_TOKEN_FILE = "~/.config/userqueue/token"


class CliError(Exception):
    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


def graphql_error(errors) -> CliError:
    """The first of a GraphQL `errors` list, as the CLI reports it."""
    first = errors[0] if isinstance(errors, list) and errors else {"message": str(errors)}
    return CliError(first.get("message", "error"), (first.get("extensions") or {}).get("code"))


# ---- the token file ----

def token_path(args) -> Path:
    return Path(args.token_file or os.environ.get("USERQUEUE_TOKEN_FILE") or DEFAULT_TOKEN_FILE
                ).expanduser()


def save_token(path: Path, token: str) -> None:
    """Write the token readable by its owner only (0600), atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(token + "\n")
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def load_token(args) -> str:
    token = os.environ.get("USERQUEUE_TOKEN")
    if token:
        return token.strip()
    path = token_path(args)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise CliError(f"not logged in (no token in {path}); run: userqueue login "
                       "USERNAME", "UNAUTHENTICATED") from None


# ---- GraphQL over HTTP ----

class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url
        self.token = token
        self.http = httpx.Client(timeout=timeout)

    def call(self, query: str, variables: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.http.post(self.url, json={"query": query, "variables": variables or {}},
                                      headers=headers)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise CliError(f"{self.url} answered HTTP {response.status_code}, not GraphQL") \
                from None
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            raise graphql_error(errors)
        if response.status_code >= 400 or not isinstance(body, dict) or "data" not in body:
            raise CliError(f"{self.url} answered HTTP {response.status_code}")
        return body["data"]

    def close(self) -> None:
        self.http.close()


def client(args, auth: bool = True) -> Client:
    return Client(args.url, load_token(args) if auth else None)
