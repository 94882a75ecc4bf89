"""Every error answers one shape: ``{"errors": [{"field", "reason", "kind"}]}``.

Handlers raise :class:`Problem`; bad parameters (``RequestValidationError``), a
database that stays busy (``RetryableConflict``) and one that cannot be reached are turned
into the same shape here, so no endpoint answers FastAPI's own ``{"detail": ...}`` or a
bare 500.
"""

from typing import Any

import eventsourcing.persistence
import psycopg
import sqlalchemy.exc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from journey.errors import RetryableConflict
from service import schemas

#: What each error status means, for the OpenAPI document.
MEANINGS = {
    401: "No API key, or a bad or revoked one.",
    403: "The key lacks this endpoint's scope.",
    404: "Not found (at that moment).",
    409: "Conflict: an id sent again with other content, or the work is already running.",
    413: "The body is too large.",
    422: "Bad input: every field at fault and why.",
    500: "The work failed on the server (logged there); the error says what failed.",
    503: "The database is unreachable or busy; retry.",
}


class Problem(Exception):
    """An error answer: status and every (field, reason, kind)."""

    def __init__(self, status: int, errors: list[dict[str, Any]], headers: Any = None):
        self.status = status
        self.errors = errors
        self.headers = headers


def problem(status: int, field: str, reason: str, kind: str) -> Problem:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Problem(status, [{"field": field, "reason": reason, "kind": kind}], headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of an endpoint behind a key: 401, 403 and ``statuses``."""
    return {s: {"model": schemas.Errors, "description": MEANINGS[s]} for s in (401, 403, *statuses)}


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


#: What a lost or refused database connection raises, through each layer.
UNREACHABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    eventsourcing.persistence.OperationalError,
    eventsourcing.persistence.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


async def unreachable_answer(_request: Request, exc: Exception) -> JSONResponse:
    """The database could not be reached or answer: retryable, like a busy one. Its pools
    check a connection before handing it out, so the retry after it is back succeeds."""
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    reason = f"the database is unreachable or busy ({type(exc).__name__}: {first_line})"
    return JSONResponse(
        {"errors": [{"field": "(database)", "reason": reason, "kind": "unavailable"}]},
        503,
        headers={"Retry-After": "1"},
    )


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
    **dict.fromkeys(UNREACHABLE, unreachable_answer),
}
