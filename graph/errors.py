"""The contract's error codes, and turning every error into one of them.

Resolvers raise `ApiError` subclasses. Everything else that reaches the
client is classified here: documents that do not parse, do not fit the
schema, or exceed a limit get their code; anything unexpected is masked as
INTERNAL_SERVER_ERROR with an id that is also in the server's log.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

log = logging.getLogger("graph.errors")


class ApiError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions):
        super().__init__(message)
        self.extensions = {"code": self.code, **extensions}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


class BadUserInput(ApiError):
    code = "BAD_USER_INPUT"


class Conflict(ApiError):
    code = "CONFLICT"


class NotFound(ApiError):
    code = "NOT_FOUND"


class RateLimited(ApiError):
    code = "RATE_LIMITED"


class QueueFull(ApiError):
    code = "QUEUE_FULL"


_TOO_COMPLEX = re.compile(
    r"exceeds maximum operation depth|aliases found|more than \d+ tokens|too complex",
    re.IGNORECASE,
)
_SUGGESTION = re.compile(r" Did you mean .*\?$")


def classify(error: GraphQLError) -> str:
    """The contract code for an error that carries none of its own."""
    if _TOO_COMPLEX.search(error.message):
        return "QUERY_TOO_COMPLEX"
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.original_error is None:
        return "GRAPHQL_VALIDATION_FAILED"
    return "INTERNAL_SERVER_ERROR"


def with_code(error: GraphQLError, suggestions: bool = True) -> GraphQLError:
    original = error.original_error
    if isinstance(original, ApiError):
        extensions = original.extensions
        message = str(original)
    else:
        code = classify(error)
        message = error.message
        extensions = {"code": code}
        if code == "INTERNAL_SERVER_ERROR":
            error_id = uuid.uuid4().hex[:12]
            log.error("unexpected error %s at %s", error_id, error.path,
                      exc_info=(type(original), original, original.__traceback__)
                      if original else None)
            message = f"Internal server error (id {error_id})."
            extensions["errorId"] = error_id
        elif not suggestions:
            message = _SUGGESTION.sub("", message)
    return GraphQLError(
        message, nodes=error.nodes, source=error.source, positions=error.positions,
        path=error.path, original_error=None, extensions=extensions,
    )


class ErrorCodes(SchemaExtension):
    """Give every error a contract code and mask the unexpected ones."""

    def __init__(self, suggestions: bool = True):
        self.suggestions = suggestions

    def _fix(self, result) -> None:
        if result is not None and getattr(result, "errors", None):
            result.errors = [with_code(e, self.suggestions) for e in result.errors]

    def on_operation(self) -> Iterator[None]:
        yield
        self._fix(self.execution_context.result)
