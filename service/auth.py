"""Who calls: the API key sent as ``Authorization: Bearer`` and the scope each endpoint
needs (dependencies), and the app's :class:`Service` for the handlers.

A key is looked up in the database on every request, so one revoked while the server runs
stops working at once.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import problem
from service.keys import SCOPES, ApiKey
from service.params import refuse_unknown_query
from service.state import Service

bearer = HTTPBearer(auto_error=False, description="An API key: `journey keys create`.")


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def caller(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    service: ServiceDep,
) -> ApiKey:
    """The active key of the request; 401 without one (or another scheme than Bearer)."""
    if credentials is None:
        raise problem(401, "authorization", "send Authorization: Bearer <key>", "unauthorized")
    key = service.keys.verify(credentials.credentials)
    if key is None:
        raise problem(401, "authorization", "unknown or revoked API key", "unauthorized")
    return key


def scope(name: str) -> Callable[..., ApiKey]:
    """A dependency: the caller's key, which must carry the scope ``name`` (else 403);
    then no query parameter the endpoint does not take (else 422: service.params)."""
    assert name in SCOPES

    def check(request: Request, key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
        if name not in key.scopes:
            reason = f"the key {key.name!r} lacks the scope {name}"
            raise problem(403, "authorization", reason, "forbidden")
        refuse_unknown_query(request)
        return key

    return check
