"""HTTP status codes for the error tree, and the one error body shape of DESIGN.md:
`{"name", "message", "statusCode", "requestId"}`. Nothing outside `api/` maps errors
to statuses."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediamill.schemas import errors as e

log = logging.getLogger(__name__)

# What a client is told to wait before trying again while the database is unreachable.
DATABASE_RETRY_AFTER_S = 5
# The database cannot be reached now (down, restarting, refusing connections, a dropped
# connection, every pooled connection busy): worth trying again, not the request's fault.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError)
# OperationalErrors a request's own size causes, not an outage: SQLite's limits (by
# message; sqlite3 has no error codes on them) and PostgreSQL's SQLSTATE class 54,
# "program limit exceeded". A 503 for them would invite a client to retry for ever.
_SQLITE_LIMIT_MESSAGES = (
    "expression tree is too large",
    "too many sql variables",
    "like or glob pattern too complex",
    "string or blob too big",
    "parser stack overflow",
    "too many terms in compound select",
)


def caused_by_request(exc: Exception) -> bool:
    """Whether a database error is the request's fault (too large), not an outage."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith("54"):
        return True
    message = str(orig if orig is not None else exc).lower()
    return any(limit in message for limit in _SQLITE_LIMIT_MESSAGES)


# Most specific first: the first class an error is an instance of decides.
STATUS_BY_ERROR: list[tuple[type[e.MediaMillError], int]] = [
    (e.AuthenticationError, 401),
    (e.UrlExpiredError, 410),
    (e.PermissionDeniedError, 403),
    (e.BlobNotFoundError, 404),
    (e.ModelNotFoundError, 404),
    (e.ModelNotReadyError, 409),
    (e.LowQualityError, 409),
    (e.ModelInvalidError, 409),
    (e.ConflictError, 409),
    # The Content Automation API answers a missing legacyTrackToken with 409.
    (e.ArgumentNullOrEmptyError, 409),
    (e.PayloadTooLargeError, 413),
    (e.InvalidRequestError, 400),
    (e.FileTooLargeError, 413),
    (e.LimitExceededError, 422),
    (e.MediaError, 422),
    (e.RateLimitedError, 429),
    (e.TransientError, 503),
]
_NAME_BY_STATUS = {
    400: "InvalidRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "ModelNotFoundError",
    405: "MethodNotAllowedError",
    406: "NotAcceptableError",
    409: "ConflictError",
    410: "UrlExpiredError",
    413: "PayloadTooLargeError",
    415: "UnsupportedMediaTypeError",
    429: "RateLimitedError",
    422: "InvalidRequestError",
    503: "ServiceUnavailableError",
}


def status_for(error: e.MediaMillError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "")


MAX_MESSAGE_CHARS = 1000
ECHO_RUN_CHARS = 80
# A run of more characters than this without a space is input (an id, a key, a URL):
# no message of ours has a word that long.
_LONG_RUN = re.compile(rf"\S{{{ECHO_RUN_CHARS + 1},}}")


def bounded_message(message: str, server_paths: Iterable[str] = ()) -> str:
    """`message` as an error body may carry it: each server path in it (the data
    directory, the store's root) named as `<server path>`, a run of over 80 characters
    without a space cut to 80, and the whole to 1,000. The backstop behind the errors
    that quote input with `echo`: no body sends back a 60 KB id or a path of the server."""
    for path in server_paths:
        if len(path) > 1:
            message = re.sub(rf"(?<![\w.-]){re.escape(path)}", "<server path>", message)
    message = _LONG_RUN.sub(lambda m: f"{m.group(0)[:ECHO_RUN_CHARS]}...", message)
    return message if len(message) <= MAX_MESSAGE_CHARS else f"{message[:MAX_MESSAGE_CHARS]}..."


def _server_paths(request: Request) -> list[str]:
    """Directories of this server that an error message must not show."""
    rt = getattr(request.app.state, "runtime", None)
    if rt is None:
        return []
    paths = [str(rt.settings.resolved_data_dir)]
    root = getattr(rt.store, "root", None)
    if root is not None:
        paths.append(str(root))
    return sorted(paths, key=len, reverse=True)


# Routes that keep IBM Video Analytics' shapes answer errors its way too.
IBM_PREFIX = "/analytics/v1/"


def error_response(
    request: Request, status: int, name: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    if request.url.path.startswith(IBM_PREFIX):
        error = {
            "status": status,
            "title": name,
            "detail": bounded_message(message, _server_paths(request)),
        }
        pointer = getattr(request.state, "error_pointer", None)
        if pointer:
            error["source"] = {"pointer": pointer}
        return JSONResponse({"errors": [error]}, status_code=status, headers=headers)
    body = {
        "name": name,
        "message": bounded_message(message, _server_paths(request)),
        "statusCode": status,
        "requestId": request_id(request),
    }
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the DESIGN.md body; a 500 never leaks internals."""

    @app.exception_handler(e.MediaMillError)
    async def _ours(request: Request, exc: e.MediaMillError) -> JSONResponse:
        status = status_for(exc)
        headers = {}
        retried = e.ModelNotReadyError | e.RateLimitedError | e.BufferUnavailableError
        if isinstance(exc, retried | e.AnalyticsBusyError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.context.get("retry_after_s", 5))))
        if status >= 500:
            log.error("request %s failed: %s", request_id(request), exc, exc_info=exc)
        return error_response(request, status, exc.name, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = e.describe_validation(exc.errors(), drop=("body",))
        return error_response(request, 400, "InvalidRequestError", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        name = _NAME_BY_STATUS.get(exc.status_code, "HttpError")
        return error_response(
            request, exc.status_code, name, str(exc.detail), dict(exc.headers or {})
        )

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
        # json.loads (FastAPI's body parsing among others) on a body of nested brackets.
        return error_response(
            request, 400, "InvalidRequestError", "the request nests values too deeply"
        )

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses as data (out of range, not text): the
        # request's fault, not the server's; the validators above should catch it first.
        log.warning("request %s: the database refused a value: %s", request_id(request), exc.orig)
        return error_response(
            request, 400, "InvalidRequestError", "a value in the request cannot be stored"
        )

    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if caused_by_request(exc):
            log.warning("request %s: too large for the database: %s", request_id(request), exc)
            return error_response(
                request,
                400,
                "InvalidRequestError",
                "the request is too large for the database to answer; narrow it",
            )
        # One line, not a traceback per request: the outage is the news, and /ready says it.
        log.warning(
            "request %s: the database is unavailable: %s",
            request_id(request),
            getattr(exc, "orig", None) or exc,
        )
        return error_response(
            request,
            503,
            "ServiceUnavailableError",
            "the database is unavailable; try again shortly",
            {"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s failed", request_id(request))
        return error_response(request, 500, "InternalServerError", "internal server error")
