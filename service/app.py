"""The HTTP service: Journey's API over the network (issue 5).

Every endpoint but ``/health`` needs an API key (``Authorization: Bearer``) with the
endpoint's scope (``service.auth``). Handlers (``service.routes``) are thin: they parse,
call the same code the CLI calls (``Journey.record_many``, ``PointInTime``,
``ReadModels``, ``Feed``) and shape the answer; every error has one shape
(``service.errors``). The process holds no state that matters (``service.state``):
positions and keys live in the database.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from projections.settings import DEFAULT, Settings
from service.errors import EXCEPTION_HANDLERS
from service.routes import customers, events, feed, health, projections
from service.state import MAX_STREAMS, Service

DESCRIPTION = """Record customer events, ask where a customer stands at any moment, replay
their history, and follow every change of stage, status and level.

Every endpoint but `/health` needs `Authorization: Bearer <key>` (keys come from
`journey keys create NAME --scope ...`). Without a key, or with a bad or revoked one: 401.
Outside the key's scopes: 403. Every error answers `{"errors": [{"field", "reason", "kind"}]}`.
"""


def create_app(
    url: str | None = None,
    settings: Settings = DEFAULT,
    *,
    keepalive_seconds: float = 15.0,
    poll_seconds: float = 0.2,
    max_streams: int = MAX_STREAMS,
) -> FastAPI:
    """The service over the store at ``url`` (default $JOURNEY_DB_URL or sqlite:///journey.db)."""
    service = Service(
        url,
        settings,
        keepalive_seconds=keepalive_seconds,
        poll_seconds=poll_seconds,
        max_streams=max_streams,
    )
    service.open()  # fail now, not at the first request, on a bad database
    service.warn_stale()
    app = FastAPI(
        title="Journey",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_url=None,  # served by routes.health, behind a key
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    for routes in (health, events, customers, projections, feed):
        app.include_router(routes.router)
    app.openapi = partial(openapi_document, app)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        app.state.service.close()


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, built once, with the input models that the events body
    (``routes.events.BODY``, a raw body FastAPI does not describe) refers to."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(events.BODY["definitions"])
        app.openapi_schema = document
    return app.openapi_schema
