"""The contract's error codes, and turning every error into one of them.

Resolvers raise `ApiError` subclasses. Everything else that reaches the
client is classified here: documents that do not parse, do not fit the
schema, or exceed a limit get their code; anything unexpected is masked as
INTERNAL_SERVER_ERROR with an id that is also in the server's log.

Errors are fixed *in place* (message and extensions of the GraphQLError),
and fixing is idempotent. That lets several layers apply it without
coordination: the `ErrorCodes` extension (HTTP and WebSocket results, and
parse errors that strawberry's ParserCache raises past `on_operation`), and
the HTTP view as a last pass over every response.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import InvalidOperationTypeError

log = logging.getLogger("graph.errors")

CODES = frozenset({
    "UNAUTHENTICATED", "FORBIDDEN", "BAD_USER_INPUT", "CONFLICT", "NOT_FOUND", "RATE_LIMITED",
    "QUEUE_FULL", "QUERY_TOO_COMPLEX", "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED", "INTERNAL_SERVER_ERROR",
})


def error_body(message: str, code: str, **extensions) -> dict:
    """The body of an answer that is only an error: GraphQL's shape, our code.

    The one place it is built, for answers given before or instead of GraphQL
    execution (bad bodies, size limits, missing assets)."""
    return {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}


class ApiError(Exception):
    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions):
        super().__init__(message)
        self.extensions = {"code": self.code, **extensions}


class Unauthenticated(ApiError):
    code = "UNAUTHENTICATED"


class Forbidden(ApiError):
    code = "FORBIDDEN"


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


class QueryTooComplex(ApiError):
    code = "QUERY_TOO_COMPLEX"


# Messages of the limits: strawberry's extensions, graphql-core's parser
# (tokens, nesting), its introspection-depth rule and validation complexity
# budget ("Validation aborted."), and graph.http.limits.
_TOO_COMPLEX = re.compile(
    r"exceeds maximum operation depth|aliases found|more than \d+ tokens|too complex"
    r"|nested too deeply|maximum introspection depth|fields selected|^Validation aborted\.$",
    re.IGNORECASE,
)
_SUGGESTION = re.compile(r"\s*Did you mean .*$", re.DOTALL)


def classify(error: GraphQLError) -> str:
    """The contract code for an error that carries none of its own."""
    original = error.original_error
    if isinstance(original, ApiError):
        return original.code
    if isinstance(original, InvalidOperationTypeError):
        # a query or mutation sent over the legacy graphql-ws protocol (subscriptions only)
        return "BAD_USER_INPUT"
    if isinstance(original, RecursionError) or _TOO_COMPLEX.search(error.message):
        return "QUERY_TOO_COMPLEX"
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if original is None:
        # validation rules, and variables that are missing or of the wrong type
        return "GRAPHQL_VALIDATION_FAILED"
    if isinstance(original, GraphQLError) and not error.path:
        # graphql-core coercing a variable value ("Int cannot represent ...")
        return "GRAPHQL_VALIDATION_FAILED"
    return "INTERNAL_SERVER_ERROR"


def log_unexpected(exc: BaseException, where: str) -> tuple[str, str]:
    """The one place an unexpected error is masked: logged in full with a fresh
    id; the client gets only (that id, a message naming it)."""
    error_id = uuid.uuid4().hex[:12]
    log.error("unexpected error %s %s", error_id, where,
              exc_info=(type(exc), exc, exc.__traceback__))
    return error_id, f"Internal server error (id {error_id})."


def mask(error: GraphQLError) -> str:
    """Mask an unexpected GraphQL error in place; its id."""
    error_id, error.message = log_unexpected(
        error.original_error or error, f"at {error.path}: {error.message}")
    error.extensions = {"code": "INTERNAL_SERVER_ERROR", "errorId": error_id}
    return error_id


def fix(error: GraphQLError, suggestions: bool = True) -> GraphQLError:
    """Give `error` its contract code (in place); idempotent."""
    current = (error.extensions or {}).get("code")
    if current not in CODES or isinstance(error.original_error, ApiError):
        original = error.original_error
        if isinstance(original, ApiError):
            error.message = str(original)
            error.extensions = dict(original.extensions)
        elif (code := classify(error)) == "INTERNAL_SERVER_ERROR":
            mask(error)
        else:
            error.extensions = {"code": code}
        error.original_error = None  # classified: later passes keep the code as it is
    if not suggestions and error.extensions["code"] != "INTERNAL_SERVER_ERROR":
        error.message = _SUGGESTION.sub("", error.message)
    return error


def fix_all(errors: Iterable[GraphQLError] | None, suggestions: bool = True) -> None:
    for error in errors or ():
        fix(error, suggestions)


class ErrorCodes(SchemaExtension):
    """Give every error a contract code and mask the unexpected ones.

    The execution context is captured when the operation starts: strawberry
    may share one extension instance between concurrent requests, and the
    attribute it sets would then belong to another request by the time this
    operation ends.
    """

    def __init__(self, suggestions: bool = True):
        self.suggestions = suggestions

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        try:
            yield
        except GraphQLError as exc:
            # ParserCache parses while *entering* on_parse, outside strawberry's
            # try: the syntax error (or the token limit) passes through here and
            # becomes the result after this hook is done. Fix it on the way out.
            fix(exc, self.suggestions)
            raise
        except RecursionError as exc:
            raise GraphQLError("The document is nested too deeply: too complex.",
                               extensions={"code": "QUERY_TOO_COMPLEX"}) from exc
        fix_all(getattr(context.result, "errors", None), self.suggestions)
        fix_all(context.pre_execution_errors, self.suggestions)

    def on_stream_result(self, result) -> Iterator[None]:
        """Each result of a subscription (WebSocket), before it is sent."""
        fix_all(getattr(result, "errors", None), self.suggestions)
        yield
