"""Strawberry's ASGI GraphQL view, with our context, WebSocket auth, and strict
request parsing.

Strawberry's own view answers 500 to a body that is not UTF-8, JSON nested
too deeply, or JSON that is not an object (`5`, `"x"`, `null`), and answers
its 400s as plain text. Here every refused request gets a 4xx with a
GraphQL-shaped JSON body and a contract code:

- the body cannot be read as a GraphQL request (bad JSON or UTF-8, not an
  object, no query, wrong content type): 400 GRAPHQL_PARSE_FAILED;
- `operationName` names no operation of the document: 400 GRAPHQL_VALIDATION_FAILED;
- the operation is not allowed on this transport (a mutation by GET, a
  subscription over plain HTTP, a method other than GET or POST): 400 or
  405 BAD_USER_INPUT.

Anything unexpected is logged with an id and answered as a masked
INTERNAL_SERVER_ERROR.

Answers go out in the media type the client's `Accept` prefers (`accept.py`).
`application/json`, the default, is answered as it always was: a document
that does not parse or validate, or variables that do not fit, get 200 with
`"data": null`. `application/graphql-response+json` follows the
GraphQL-over-HTTP spec: such a request error gets 400 and no `data` entry
(500 if it was our fault), an executed operation 200, errors included; a
mutation by GET gets 405.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.http import process_result as strawberry_process_result
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from ..adapters import WebSocketView
from ..context import Context
from ..errors import CODES, ApiError, error_body, fix_all, log_unexpected
from ..live.fanout import LiveConnection
from . import requestid
from .accept import GRAPHQL_RESPONSE, JSON, preferred
from .graphiql import LocalGraphiQL
from .prepared import PreparedDocuments


_JSON_TYPES = {b"application/json", b"application/json; charset=utf-8",
               b"application/json;charset=utf-8", b"application/json; charset=UTF-8"}
_POST_ALLOWED = frozenset({OperationType.QUERY, OperationType.MUTATION})
MAX_ACCEPT_VALUES = 256
MAX_JSON_DEPTH = 64  # far above any real request; deeper is refused before GraphQL sees it
_SURROGATE = re.compile("[\ud800-\udfff]")
# the only way a surrogate gets into decoded JSON (UTF-8 cannot carry one): an escape.
# Also matches an escaped backslash before "ud8..": then every string is looked at.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class RequestError(Exception):
    """A request refused before GraphQL runs: an HTTP status and a contract code."""

    def __init__(self, message: str, code: str = "GRAPHQL_PARSE_FAILED", status: int = 400,
                 headers: dict | None = None):
        super().__init__(message)
        self.message, self.code, self.status, self.headers = message, code, status, headers


def error_response(message: str, code: str, status: int, headers: dict | None = None,
                   media_type: str = JSON, **extensions) -> JSONResponse:
    return JSONResponse(error_body(message, code, **extensions), status_code=status,
                        headers=headers, media_type=media_type)


def is_request_error(result) -> bool:
    """The spec's request error: the operation never ran (the document did not
    parse or validate, or the variables did not fit). An operation that ran has
    data, or errors with a path (a non-null field that failed up to the root)."""
    return result.data is None and bool(result.errors) and not any(
        error.path for error in result.errors)


def _from_strawberry(exc: HTTPException) -> RequestError:
    """Strawberry's plain-text refusals, each with its code."""
    if exc.status_code == 404:
        return RequestError(exc.reason, "NOT_FOUND", 404)
    if exc.status_code == 405:
        return RequestError(exc.reason, "BAD_USER_INPUT", 405, {"Allow": "GET, POST"})
    return RequestError(exc.reason, "GRAPHQL_PARSE_FAILED", 400)


def _check_json(value: Any, text: str | None = None) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH and strings that are not Unicode
    (lone surrogates from `\\ud800` escapes): walked iteratively, no recursion.
    Given the JSON `text` without such an escape, only the depth is checked, one
    level at a time over the containers alone (a 1,000-item enqueueMany: 0.3 ms, not 3)."""
    if text is not None and not _SURROGATE_ESCAPE.search(text) and not _SURROGATE.search(text):
        return _check_depth(value)
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise RequestError("The request holds a string that is not valid Unicode.")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_JSON_DEPTH:
            raise RequestError(f"The request's JSON is nested deeper than {MAX_JSON_DEPTH}.")
        if isinstance(item, dict):
            stack.extend((k, depth) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)


def _check_depth(value: Any) -> None:
    level, depth = [value], 1
    while level:
        inner = []
        for item in level:
            if isinstance(item, dict):
                inner += [v for v in item.values() if isinstance(v, (dict, list))]
            elif isinstance(item, list):
                inner += [v for v in item if isinstance(v, (dict, list))]
        if inner and depth + 1 > MAX_JSON_DEPTH:
            raise RequestError(f"The request's JSON is nested deeper than {MAX_JSON_DEPTH}.")
        level, depth = inner, depth + 1


def _within_size_limit(response, request: Request):
    """An answer over HTTP_MAX_RESPONSE_BYTES is replaced by a QUERY_TOO_COMPLEX error
    (HTTP 200, `data` null). The operation did run: a mutation's changes stand, only its
    answer is not sent. Checked on the encoded body: exact, and no second encoding."""
    services = getattr(request.app.state, "services", None)
    body = getattr(response, "body", None)  # None for streamed responses
    if services is None or body is None:
        return response
    limit = services.settings.http_max_response_bytes
    if len(body) <= limit:
        return response
    message = (f"Query too complex: the response is {len(body)} bytes; the limit is {limit} "
               "(HTTP_MAX_RESPONSE_BYTES). Ask for fewer jobs or fields.")
    return JSONResponse({"data": None, **error_body(message, "QUERY_TOO_COMPLEX")},
                        media_type=response.media_type or JSON)  # the type negotiated


async def _raising(exc: Exception):
    raise exc


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class GraphQLView(WebSocketView, LocalGraphiQL, GraphQL):
    def __init__(self, schema, *args, **kwargs):
        super().__init__(schema, *args, **kwargs)
        self.prepared = PreparedDocuments(schema)
        self.fast_route = True  # serve_known answers what it can (off: all by `run`)
        self._accepts: dict[bytes | None, tuple[str, bool]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        request = Request(scope=scope, receive=receive)
        request.state.media_type = preferred(request.headers.get("accept"))
        await self.answer(request, self.run(request), send)

    async def answer(self, request: Request, running: Awaitable, send) -> None:
        """Send the response that `running` makes, or the error answer of what it raised."""
        media_type = request.state.media_type
        try:
            response = _within_size_limit(await running, request)
        except HTTPException as exc:
            exc = _from_strawberry(exc)
            response = error_response(exc.message, exc.code, exc.status, exc.headers, media_type)
        except RequestError as exc:
            response = error_response(exc.message, exc.code, exc.status, exc.headers, media_type)
        except Exception as exc:
            error_id, message = log_unexpected(
                exc, f"while serving {request.scope.get('path')}")
            response = error_response(message, "INTERNAL_SERVER_ERROR", 500,
                                      media_type=media_type, errorId=error_id)
        response.headers.add_vary_header("Accept")  # the answer (GraphiQL or which JSON) follows it
        await response(request.scope, request.receive, send)

    async def serve_known(self, scope, receive, send, body: bytes, rid: str) -> bool:
        """Answer a JSON POST of a document the prepared path runs, as `run` would,
        with `rid` as its X-Request-ID (graph/http/fastroute.py); False, having done
        nothing, for any other request."""
        content_type = accept = None
        for name, value in scope["headers"]:  # the first of each, as starlette's Headers.get
            if name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"accept" and accept is None:
                accept = value
        if content_type not in _JSON_TYPES:  # as sent: strawberry's check is case-sensitive
            return False
        negotiated = self._accepts.get(accept)
        if negotiated is None:
            negotiated = self._negotiate(accept)
        media_type, streaming = negotiated
        if streaming:
            return False
        try:
            data = self.decode_json(body)
        except RequestError:
            return False  # the general path answers the error
        if not isinstance(data, dict):
            return False
        query, variables = data.get("query"), data.get("variables")
        name, extensions = data.get("operationName"), data.get("extensions")
        if not isinstance(query, str) or not isinstance(variables, (dict, type(None))) \
                or not isinstance(name, (str, type(None))) or extensions is not None:
            return False
        if self.prepared.operation(query, name) is None:
            return False  # not a document the prepared path knows
        request = Request(scope=scope, receive=receive)
        services = request.app.state.services
        sub_response = _SubResponse(media_type)  # what get_sub_response gives, built directly
        try:
            context = await self.get_context(request, sub_response)
            result = await self.prepared.execute(query, variables, name, context, None,
                                                 _POST_ALLOWED)
        except Exception as exc:  # answered as the general path answers what run() raises
            request.state.media_type = media_type
            await self.answer(request, _raising(exc), requestid.sending_id(send, rid))
            return True
        if result is None:
            return False  # nothing ran (see PreparedDocuments.execute)
        response_data = self.result_body(result, media_type, services)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        content = self.encode_json(response_data)
        if isinstance(content, str):
            content = content.encode("utf-8")
        if sub_response.raw_headers or sub_response.status_code or sub_response.background \
                or len(content) > services.settings.http_max_response_bytes:
            # a resolver shaped the answer, or it is over the size limit: starlette's way
            request.state.media_type = media_type
            await self.answer(request, self._created(response_data, sub_response),
                              requestid.sending_id(send, rid))
            return True
        await send({"type": "http.response.start", "status": _status(response_data),
                    "headers": [(b"content-length", b"%d" % len(content)),
                                (b"content-type", media_type.encode("latin-1")),
                                (b"vary", b"Accept"),
                                (requestid.HEADER, rid.encode())]})
        await send({"type": "http.response.body", "body": content})
        return True

    async def _created(self, response_data, sub_response):
        return self.create_response(response_data, sub_response)

    def _negotiate(self, accept: bytes | None) -> tuple[str, bool]:
        """(the media type of the answer, whether the client asks for a streaming
        transport) for an Accept header; remembered, a few hundred values at most."""
        text = accept.decode("latin-1") if accept is not None else None
        negotiated = (preferred(text),
                      self._get_stream_transport_from_headers({"accept": text or ""}) is not None)
        if len(self._accepts) >= MAX_ACCEPT_VALUES:
            self._accepts.clear()
        self._accepts[accept] = negotiated
        return negotiated

    async def get_context(self, request, response) -> Context:
        return Context(services=request.app.state.services, request=request, response=response)

    # ---- WebSockets (both protocols: graph/adapters.py) ----

    def websocket_session(self, socket, context: Context) -> LiveConnection:
        """Each socket's lifetime and the shared path for `processed` (graph/live/)."""
        return LiveConnection(socket, context, self.schema)

    def websocket_message(self, message: dict) -> dict:
        """Strawberry's WebSocket handlers send a few errors of their own ("Subscription
        limit reached", from WS_MAX_SUBSCRIPTIONS) without a code: give them one."""
        if message.get("type") == "error":
            payload = message.get("payload")
            for error in payload if isinstance(payload, list) else [payload]:
                if isinstance(error, dict):
                    extensions = error.setdefault("extensions", {})
                    if extensions.get("code") not in CODES:
                        limit = "limit reached" in str(error.get("message"))
                        extensions["code"] = "RATE_LIMITED" if limit else "BAD_USER_INPUT"
        return message

    async def on_ws_connect(self, context: Context) -> Any:
        """Authenticate from connection_init; refused connections close with 4403
        (graphql-transport-ws) or get connection_error (legacy graphql-ws)."""
        try:
            await context.user_id()
        except ApiError as exc:
            raise ConnectionRejectionError({"message": str(exc), "code": exc.code}) from None
        return None

    # ---- reading the request ----

    def decode_json(self, data: str | bytes) -> object:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("The request body is not valid UTF-8.") from None
        try:
            value = json.loads(data, parse_constant=_no_constant)
        except RecursionError:
            raise RequestError(f"The request's JSON is nested deeper than {MAX_JSON_DEPTH}.") \
                from None
        except ValueError:  # JSONDecodeError, NaN/Infinity, integers of over 4300 digits
            raise RequestError("The request is not valid JSON.") from None
        _check_json(value, data)
        return value

    def parse_json(self, data: str | bytes) -> Any:
        value = self.decode_json(data)
        if not isinstance(value, (dict, list)):  # lists: strawberry refuses batches itself
            raise RequestError("The request must be a JSON object.")
        return value

    async def parse_http_body(self, request):
        data = await super().parse_http_body(request)
        name = getattr(data, "operation_name", None)
        if name is not None and not isinstance(name, str):
            raise RequestError("operationName must be a string or null.")
        return data

    async def execute_single(self, request, request_adapter, sub_response, context, root_value,
                             request_data):
        """Strawberry's, minus subscriptions over plain HTTP (they need the WebSocket)
        and with its refusals given contract codes."""
        method = request_adapter.method
        allowed = {OperationType.QUERY} if method == "GET" else {
            OperationType.QUERY, OperationType.MUTATION}
        result = await self.prepared.execute(
            request_data.query, request_data.variables, request_data.operation_name, context,
            root_value, allowed, request_data.extensions)
        if result is not None:  # a document seen before: graphql-core runs it directly
            return result
        try:
            return await self.schema.execute(
                request_data.query, root_value=root_value, variable_values=request_data.variables,
                context_value=context, operation_name=request_data.operation_name,
                allowed_operation_types=allowed, operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as exc:
            raise RequestError(exc.as_http_error_reason(), "GRAPHQL_VALIDATION_FAILED") from None
        except InvalidOperationTypeError as exc:
            message = exc.as_http_error_reason(method)
            if exc.operation_type == OperationType.SUBSCRIPTION:
                message += "; subscribe over the WebSocket at this path"
            elif request.state.media_type == GRAPHQL_RESPONSE:  # a mutation by GET: the spec's 405
                raise RequestError(message, "BAD_USER_INPUT", 405, {"Allow": "POST"}) from None
            raise RequestError(message, "BAD_USER_INPUT") from None
        except MissingQueryError:
            raise RequestError("No GraphQL query found in the request.") from None

    async def process_result(self, request, result):
        """The last pass over errors before they leave: every one has its code."""
        return self.result_body(result, request.state.media_type,
                                getattr(request.app.state, "services", None))

    def result_body(self, result, media_type: str, services) -> dict:
        fix_all(result.errors, suggestions=bool(
            services and services.settings.graphql_introspection))
        body = strawberry_process_result(result)  # what strawberry's process_result returns
        if media_type == GRAPHQL_RESPONSE and is_request_error(result):
            del body["data"]  # the spec's request error: no data entry (create_response: 400)
        return body

    # ---- answering ----

    async def get_sub_response(self, request):
        """Strawberry's, noting the media type the answer goes out in (for create_response)."""
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = request.state.media_type
        return sub_response

    def create_response(self, response_data, sub_response):
        """Strawberry's, in the negotiated media type. An answer with no `data`
        entry (a request error, application/graphql-response+json only) gets 400,
        or 500 when what went wrong was ours."""
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = sub_response.media_type
        if isinstance(response_data, dict) and "data" not in response_data:
            response.status_code = _status(response_data)
        return response


def _status(response_data: dict) -> int:
    """200, or for an answer with no `data` entry (a request error, as
    application/graphql-response+json has it) 400, or 500 when the fault was ours."""
    if "data" in response_data:
        return 200
    codes = {(error.get("extensions") or {}).get("code")
             for error in response_data.get("errors") or ()}
    return 500 if "INTERNAL_SERVER_ERROR" in codes else 400


class _SubResponse(Response):
    """strawberry's sub-response (`get_sub_response`): no status, no headers, plus the
    media type the answer goes out in; made without starlette's header set-up."""

    def __init__(self, media_type: str):
        self.status_code = None
        self.background = None
        self.body = b""
        self.raw_headers = []
        self.media_type = media_type

