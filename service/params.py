"""Query parameters an endpoint does not take are refused, not ignored.

FastAPI reads the parameters a route declares and drops the rest, so ``?asof=2025-01-01``
(for ``as_of``) answered for now: a plausible, wrong answer. The CLI refuses an unknown
option; the API refuses an unknown parameter the same way (422, naming it), on every
endpoint behind a key (the health check takes whatever a monitor adds).
"""

from typing import Any

from fastapi import Request

from service.errors import problem


def refuse_unknown_query(request: Request) -> None:
    """Raise a 422 naming the first query parameter the request's route does not take.
    Called by each endpoint's scope check (service.auth.scope), after the key and its
    scope: a caller without them learns nothing, not even the parameters' names."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    unknown = sorted(set(request.query_params) - declared(route))
    if unknown:
        expected = ", ".join(sorted(declared(route))) or "none"
        reason = f"is not a parameter of this endpoint (it takes: {expected})"
        raise problem(422, unknown[0], reason, "invalid")


def declared(route: Any) -> frozenset[str]:
    """The query parameters a route takes, by the names a client sends (kept on the
    route: they never change)."""
    names = getattr(route, "journey_query_names", None)
    if names is None:
        names = frozenset(field.alias for field in query_fields(route.dependant))
        route.journey_query_names = names
    return names


def query_fields(dependant: Any) -> list[Any]:
    """A dependant's query parameters and those of every dependency under it."""
    found = list(dependant.query_params)
    for inner in dependant.dependencies:
        found += query_fields(inner)
    return found
