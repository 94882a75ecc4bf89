"""Reading customers: an answer at a moment, a history, the funnel."""

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from commands.models import CUSTOMER_ID_SCHEMA, check_customer_id
from journey.moments import parse_known_at, parse_moment
from projections.pointintime import NotFound
from projections.readmodels.operate import stale_reasons
from projections.readmodels.queries import funnel
from projections.rules.window import iso
from service import schemas
from service.auth import ServiceDep, scope
from service.errors import error_responses, problem
from service.keys import ApiKey

ID_DOC = "The customer id: 1-64 of letters, digits and . _ : @ -"
# The pattern is documented, not enforced by FastAPI: valid_id refuses with the reason.
CustomerId = Annotated[str, Path(description=ID_DOC, json_schema_extra=CUSTOMER_ID_SCHEMA)]
#: What a time parameter takes, for the OpenAPI document (journey.moments parses it).
MOMENT_EXAMPLES = ["now", "2025-03-01", "2025-03-01T10:00:00Z", "2025-03-01T11:00:00+01:00"]
AsOf = Annotated[
    str | None,
    Query(
        description="Valid time: ISO 8601 with a zone, a date (00:00 UTC) or `now` (default).",
        examples=MOMENT_EXAMPLES,
    ),
]
KnownAt = Annotated[
    str | None,
    Query(
        description="Record time: count only events recorded by then. Same forms as "
        "`as_of`, not ahead of now; default now.",
        examples=MOMENT_EXAMPLES,
    ),
]
#: The funnel's answer when the timeline was built by other rules than the service's.
STALE_HEADER = {
    "Journey-Stale": {
        "description": "Present when the timeline was built with other settings or code "
        "than the service's: each reason (`setting: old -> new`), separated by `; `.",
        "schema": {"type": "string"},
    }
}

router = APIRouter(tags=["customers"])


@router.get(
    "/v1/customers/{customer_id}",
    response_model=schemas.CustomerAnswer,
    responses=error_responses(404, 422),
)
def show_customer(
    customer_id: CustomerId,
    _key: Annotated[ApiKey, Depends(scope("customers:read"))],
    service: ServiceDep,
    as_of: AsOf = None,
    known_at: KnownAt = None,
) -> Any:
    """Stage, status, level and scores at `as_of` as known at `known_at`, with reasons
    (`journey show --json`). 404 when the customer does not exist at that moment."""
    valid_id(customer_id)
    moment, known = moments(as_of=now_if_absent(as_of), known_at=known_at)
    (found,) = service.queries().show_many([customer_id], moment, known)
    if found.error is not None:
        raise problem(404, "customer_id", str(found.error), "not_found")
    return JSONResponse(found.answer.as_dict())


@router.get(
    "/v1/customers/{customer_id}/history",
    response_model=schemas.History,
    responses=error_responses(404, 422),
)
def customer_history(
    customer_id: CustomerId,
    _key: Annotated[ApiKey, Depends(scope("history:read"))],
    service: ServiceDep,
    known_at: KnownAt = None,
) -> Any:
    """Every event of the customer in valid-time order, with time-driven steps, and
    what each changed and why, as known at `known_at` (`journey history --json`)."""
    valid_id(customer_id)
    (known,) = moments(known_at=now_if_absent(known_at))
    try:
        steps = service.queries().history(customer_id, known)
    except NotFound as exc:
        raise problem(404, "customer_id", str(exc), "not_found") from None
    return JSONResponse(
        {
            "customer_id": customer_id,
            "known_at": iso(known),
            "steps": [step.as_dict(n) for n, step in enumerate(steps, start=1)],
        }
    )


@router.get(
    "/v1/funnel",
    response_model=schemas.Funnel,
    responses={200: {"headers": STALE_HEADER}, **error_responses(422)},
)
def get_funnel(
    _key: Annotated[ApiKey, Depends(scope("customers:read"))],
    service: ServiceDep,
    as_of: AsOf = None,
) -> Any:
    """Customers per stage, status and level at `as_of`, from the timeline read model
    (caught up first unless a runner keeps it). Counted by the rules the timeline was built
    with: when those are not the service's, the `Journey-Stale` header says why."""
    (moment,) = moments(as_of=now_if_absent(as_of))
    service.models.refresh(["timeline"])
    stale = stale_reasons(service.models.runner.serving("timeline"), service.settings)
    headers = {"Journey-Stale": "; ".join(stale)} if stale else None
    return JSONResponse(funnel(service.models.store, moment), headers=headers)


def valid_id(customer_id: str) -> None:
    try:
        check_customer_id(customer_id)
    except ValueError as exc:
        raise problem(422, "customer_id", str(exc), "invalid") from None


def now_if_absent(value: str | None) -> str:
    """A time parameter left out means now; given empty (``?as_of=``) it is refused, as
    the CLI refuses an empty ``--as-of``, not read as now."""
    return "now" if value is None else value


#: A zone offset whose + came as a space: a bare + in a URL's query reads as one.
OFFSET_AS_SPACE = re.compile(r"[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)? \d{2}(:?\d{2})?$")


def plus_sent_bare(value: str | None) -> str:
    """A hint for the offset +01:00 sent unencoded (``?as_of=...T10:00:00+01:00``)."""
    if value and OFFSET_AS_SPACE.search(value):
        return "; a + in a URL's query reads as a space: write it %2B"
    return ""


def moments(**texts: str | None) -> list[datetime | None]:
    """Each time parameter. "now" as ``as_of`` is the end of the current second: answers
    asked in the same second share RFM's population, and an event that occurred earlier
    in that second counts (cut to the second's start, it did not: a customer recorded a
    moment before was "not found"). As ``known_at`` it is this very moment, so that an
    event recorded an instant before counts."""
    found = []
    for field, value in texts.items():
        try:
            moment = (parse_known_at if field == "known_at" else parse_moment)(value)
        except ValueError as exc:
            raise problem(422, field, str(exc) + plus_sent_bare(value), "invalid") from None
        if value == "now" and field == "as_of" and moment is not None:
            moment = moment.replace(microsecond=999_999)
        found.append(moment)
    return found
