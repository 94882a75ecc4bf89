"""``/health`` (anonymous) and ``/openapi.json`` (any valid key)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import text

from service import schemas
from service.auth import ServiceDep, caller
from service.errors import problem
from service.keys import ApiKey

router = APIRouter()


@router.get(
    "/health",
    response_model=schemas.Health,
    tags=["service"],
    responses={503: {"model": schemas.Errors, "description": "No database."}},
)
def health(service: ServiceDep) -> Any:
    """Anonymous: the service is up and reaches its database."""
    try:
        with service.models.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise problem(503, "(database)", type(exc).__name__, "unavailable") from None
    return {"status": "ok"}


@router.head("/health", include_in_schema=False)
def health_head(service: ServiceDep) -> Response:
    """The same check for load balancers and monitors that ask with HEAD (405 before)."""
    health(service)
    return Response()


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _key: Annotated[ApiKey, Depends(caller)]) -> Any:
    return request.app.openapi()
