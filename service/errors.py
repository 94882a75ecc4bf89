"""Every error answers one shape: ``{"errors": [{"field", "reason", "kind"}]}``.

Handlers raise :class:`Problem`; bad parameters (``RequestValidationError``), a
database that stays busy (``RetryableConflict``) and one that cannot be reached are turned
into the same shape here, so no endpoint answers FastAPI's own ``{"detail": ...}`` or a
bare 500.
"""

import logging
import sqlite3
from typing import Any

import eventsourcing.persistence
import psycopg
import sqlalchemy.exc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from journey.errors import RetryableConflict
from journey.personal import UnreadableSeal
from service import schemas

log = logging.getLogger("journey.service")

#: What each error status means, for the OpenAPI document.
MEANINGS = {
    401: "No API key, or a bad or revoked one.",
    403: "The key lacks this endpoint's scope.",
    404: "Not found (at that moment).",
    409: "Conflict: an id sent again with other content, or the work is already running.",
    413: "The body is too large.",
    422: "Bad input: every field at fault and why.",
    500: "The work failed on the server (logged there); the error says what failed.",
    503: "The database is unreachable or busy, or (the feed) as many streams are open as "
    "the server keeps; retry (see Retry-After).",
}


class Problem(Exception):
    """An error answer: status and every (field, reason, kind)."""

    def __init__(self, status: int, errors: list[dict[str, Any]], headers: Any = None):
        self.status = status
        self.errors = errors
        self.headers = headers


def problem(status: int, field: str, reason: str, kind: str, headers: Any = None) -> Problem:
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return Problem(status, [{"field": field, "reason": reason, "kind": kind}], headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an endpoint behind a key: 401, 403, ``statuses``, and the
    database's 503 (out of reach) and 500 (a fault) that any of them may give."""
    every = sorted({401, 403, *statuses, 500, 503})
    return {
        s: {"model": schemas.Errors, "description": MEANINGS[s], **HEADERS.get(s, {})}
        for s in every
    }


#: The headers an error answer carries, for the OpenAPI document.
HEADERS = {
    401: {"headers": {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}},
    503: {
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying (a busy database, a full feed).",
                "schema": {"type": "integer"},
            }
        }
    },
}


async def problem_answer(_request: Request, exc: Problem) -> JSONResponse:
    return JSONResponse({"errors": exc.errors}, exc.status, headers=exc.headers)


async def invalid_answer(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors, each named by its field (the location without
    ``query``/``path``/``header``)."""
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
            "reason": e["msg"],
            "kind": "invalid",
        }
        for e in exc.errors()
    ]
    return JSONResponse({"errors": errors}, 422)


async def busy_answer(_request: Request, exc: RetryableConflict) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"field": "(event)", "reason": str(exc), "kind": "unavailable"}]},
        503,
        headers={"Retry-After": "1"},
    )


#: What a database error surfaces as, through each layer (SQLAlchemy, eventsourcing, the
#: drivers); ``database_answer`` tells an unreachable or busy database from a real fault.
DATABASE_ERRORS = (
    sqlalchemy.exc.DatabaseError,  # a missing table (ProgrammingError) too: a 500, shaped
    sqlalchemy.exc.InterfaceError,
    eventsourcing.persistence.DatabaseError,
    eventsourcing.persistence.InterfaceError,
    psycopg.DatabaseError,
    psycopg.InterfaceError,
)

#: PostgreSQL's "the server is going away or not yet there" (class 08 is the connection's).
SERVER_GONE = ("57P01", "57P02", "57P03")


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception under the layers that wrapped it."""
    for _ in range(5):
        inner = getattr(exc, "orig", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def unreachable(exc: BaseException) -> bool:
    """A lost or refused connection, or a busy database: retrying helps. Other operational
    errors (a missing table, a full disk, a cancelled query) are faults to look into."""
    if getattr(exc, "connection_invalidated", False):
        return True
    cause = driver_error(exc)
    if isinstance(cause, sqlite3.OperationalError):
        return "locked" in str(cause)  # busy past the timeout
    if isinstance(cause, psycopg.Error):
        state = cause.sqlstate
        return state is None or state.startswith("08") or state in SERVER_GONE
    return False


async def database_answer(request: Request, exc: Exception) -> JSONResponse:
    """An unreachable or busy database: 503, retryable (its pools check a connection
    before handing it out, so the retry after it is back succeeds). Any other database
    error: a 500 in the one shape, its traceback in the server's log."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    if unreachable(exc):
        reason = f"the database is unreachable or busy ({type(exc).__name__}: {first_line})"
        error, status, headers = "unavailable", 503, {"Retry-After": "1"}
    else:
        log.error("%s %s: the database failed", request.method, request.url.path, exc_info=exc)
        reason = f"the database failed ({type(exc).__name__}); the server's log has the rest"
        error, status, headers = "error", 500, None
    return JSONResponse(
        {"errors": [{"field": "(database)", "reason": reason, "kind": error}]},
        status,
        headers=headers,
    )


async def store_answer(request: Request, exc: Exception) -> JSONResponse:
    """A store altered outside Journey (personal data its key does not open, a stored
    state no reader takes): a 500 that says so, in the one shape, not a bare one."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    reason = (
        str(exc)
        if isinstance(exc, UnreadableSeal)
        else ("a stored event cannot be read: it was altered outside Journey (journey verify)")
    )
    return JSONResponse({"errors": [{"field": "(store)", "reason": reason, "kind": "error"}]}, 500)


#: Kinds for the HTTP errors the framework raises itself (no such path, method).
HTTP_KINDS = {404: "not_found", 405: "invalid"}


async def http_answer(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Errors the router raises (an unknown path, a method the path lacks) in the one
    error shape, like every other answer."""
    error = {
        "field": "(path)",
        "reason": f"{request.method} {request.url.path}: {exc.detail}",
        "kind": HTTP_KINDS.get(exc.status_code, "invalid"),
    }
    return JSONResponse({"errors": [error]}, exc.status_code, headers=exc.headers)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    StarletteHTTPException: http_answer,
    Problem: problem_answer,
    RequestValidationError: invalid_answer,
    RetryableConflict: busy_answer,
    UnreadableSeal: store_answer,
    eventsourcing.persistence.MapperDeserialisationError: store_answer,
    **dict.fromkeys(DATABASE_ERRORS, database_answer),
}
