"""Query parameters an endpoint does not take are refused, not ignored.

FastAPI reads the parameters a route declares and drops the rest, so ``?asof=2025-01-01``
(for ``as_of``) answered for now: a plausible, wrong answer. The CLI refuses an unknown
option; the API refuses an unknown parameter the same way (422, naming it), on every
endpoint behind a key (the health check takes whatever a monitor adds). A parameter that
takes one value and is given twice (``?as_of=2024-01-01&as_of=2025-01-01``) is refused
too: FastAPI kept the last one, silently.
"""

from typing import Any, get_args, get_origin

from fastapi import Request

from service.errors import problem


def refuse_unknown_query(request: Request) -> None:
    """Raise a 422 naming the first query parameter the request's route does not take, or
    else one given twice that takes one value. Called by each endpoint's scope check
    (service.auth.scope), after the key and its scope: a caller without them learns
    nothing, not even the parameters' names."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    taken = parameters(route)
    unknown = sorted(set(request.query_params) - set(taken))
    if unknown:
        expected = ", ".join(sorted(taken)) or "none"
        reason = f"is not a parameter of this endpoint (it takes: {expected})"
        raise problem(422, unknown[0], reason, "invalid")
    query = request.query_params
    repeated = sorted(n for n, listed in taken.items() if not listed and len(query.getlist(n)) > 1)
    if repeated:
        raise problem(422, repeated[0], "is given more than once; it takes one value", "invalid")


def parameters(route: Any) -> dict[str, bool]:
    """The query parameters a route takes, by the names a client sends, each with whether
    it takes a list (kept on the route: they never change)."""
    found = getattr(route, "journey_query_parameters", None)
    if found is None:
        found = {f.alias: takes_list(f) for f in query_fields(route.dependant)}
        route.journey_query_parameters = found
    return found


def takes_list(field: Any) -> bool:
    """Whether a parameter is a list (``kinds``): the one kind that may be repeated."""
    annotation = field.field_info.annotation
    return list in {get_origin(a) for a in (annotation, *get_args(annotation))}


def query_fields(dependant: Any) -> list[Any]:
    """A dependant's query parameters and those of every dependency under it."""
    found = list(dependant.query_params)
    for inner in dependant.dependencies:
        found += query_fields(inner)
    return found
