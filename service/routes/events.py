"""``POST /v1/events``: record events, and the OpenAPI description of its body (built
from the input models themselves, which FastAPI cannot do for a raw body)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter

from commands.files import decode_json
from commands.handlers import Rejected
from commands.models import CUSTOMER_ID_SCHEMA, AnyCommand
from journey.api import Journey
from journey.errors import InputError
from service import schemas
from service.auth import ServiceDep, scope
from service.errors import Problem, error_responses, problem
from service.keys import ApiKey

MAX_EVENTS = 10_000
#: Room for MAX_EVENTS events with long free text; a larger body is refused unread.
MAX_BODY = 32 * 1024 * 1024

#: What the input models' fields mean (DOMAIN.md §2), added to their generated schemas.
FIELD_DOCS = {
    "type": "The event type; it chooses the other fields.",
    "customer_id": "1-64 of letters, digits and . _ : @ -",
    "occurred_at": "When it happened in the world: ISO 8601 with a time zone.",
    "event_id": "Optional idempotency key of the event.",
    "order_id": "Unique per customer; the same order sent again with the same content is a "
    "no-op, with other content a conflict.",
    "amount": "A decimal > 0 with at most 4 places, as a JSON string or number.",
    "margin": "Default: amount times the default margin rate (0.30).",
    "cost": "A decimal ≥ 0; default 0.",
    "acquisition_cost": "A decimal ≥ 0; default 0.",
    "complaint_id": "Unique per customer, like order_id.",
    "referred_by": "The customer id of the referrer.",
    "referred_customer_id": "The customer recommended; identified by this if unknown.",
    "score": "0-10: promoter 9-10, passive 7-8, detractor 0-6.",
    "personal": "Personal data: the one thing that can later be erased.",
    "satisfied": "Whether the customer was satisfied with the resolution.",
}
ID_FIELDS = ("customer_id", "referred_by", "referred_customer_id")


def events_request_body() -> dict[str, Any]:
    """The body of POST /v1/events: ``request_body`` for the operation and the
    ``definitions`` it refers to (added to the document's components by ``service.app``)."""
    single = TypeAdapter(AnyCommand).json_schema(ref_template="#/components/schemas/{model}")
    definitions = single.pop("$defs", {})
    for definition in definitions.values():
        for name, field in definition.get("properties", {}).items():
            if name in FIELD_DOCS:
                field.setdefault("description", FIELD_DOCS[name])
            for branch in strings_of(field):
                if name in ID_FIELDS:
                    branch.update(CUSTOMER_ID_SCHEMA)
            documented_bounds(field)
    definitions["Event"] = {
        **single,
        "title": "Event",
        "description": "One event; `type` chooses its fields.",
    }
    event = {"$ref": "#/components/schemas/Event"}
    many = {"type": "array", "items": event, "minItems": 1, "maxItems": MAX_EVENTS}
    return {
        "definitions": definitions,
        "request_body": {
            "required": True,
            "description": "One event object, or an array of them (DOMAIN.md §2).",
            "content": {"application/json": {"schema": {"oneOf": [event, many]}}},
        },
    }


def strings_of(field: dict[str, Any]) -> list[dict[str, Any]]:
    """The string schemas of a field: itself, or its branches (an optional field is
    ``anyOf`` of its type and null; ``referred_by`` went undocumented so)."""
    if field.get("type") == "string":
        return [field]
    return [b for branch in field.get("anyOf", []) for b in strings_of(branch)]


#: A decimal as text, as the document states it: ASCII digits with at most 4 places (the
#: server reads more spellings, "+15" or "1E+2", and counts 19 digits in all).
DECIMAL_TEXT = r"[0-9]{1,15}(\.[0-9]{1,4})?"
POSITIVE_TEXT = f"^(?!0*(\\.0*)?$){DECIMAL_TEXT}$"
NOT_NEGATIVE_TEXT = f"^{DECIMAL_TEXT}$"
#: pydantic's bounds, which JSON Schema does not know, by the keyword it does.
NUMBER_BOUNDS = {
    "gt": "exclusiveMinimum",
    "ge": "minimum",
    "lt": "exclusiveMaximum",
    "le": "maximum",
}


def documented_bounds(field: dict[str, Any]) -> None:
    """pydantic writes a bound as ``gt``/``ge``/``lt``/``le``, which JSON Schema does not
    know: a client validating against the document took 0 or -5 as an amount. Stated
    instead on what each applies to: a number's minimum or maximum, a decimal text's
    pattern."""
    for branch in field.get("anyOf", []):
        documented_bounds(branch)
    bounds = {key: field.pop(key) for key in NUMBER_BOUNDS if key in field}
    if not bounds:
        return
    for target in field.get("anyOf", []) or [field]:
        if target.get("type") in ("number", "integer"):
            target.update({NUMBER_BOUNDS[key]: value for key, value in bounds.items()})
        elif target.get("type") == "string" and bounds in ({"gt": 0}, {"ge": 0}):
            target["pattern"] = POSITIVE_TEXT if "gt" in bounds else NOT_NEGATIVE_TEXT


BODY = events_request_body()
router = APIRouter()


@router.post(
    "/v1/events",
    status_code=201,
    response_model=schemas.Recorded,
    tags=["events"],
    responses=error_responses(409, 413, 422, 503),
    openapi_extra={"requestBody": BODY["request_body"]},
)
async def record_events(
    request: Request,
    key: Annotated[ApiKey, Depends(scope("events:write"))],
    service: ServiceDep,
) -> Any:
    """Record one event (a JSON object) or several (a JSON array), as `journey import`
    does: all validated first; any bad one and nothing is stored (422, or 409 when the
    only faults are conflicts). An event already stored is an idempotent no-op."""
    # Decoded in a thread: a body of 32 MiB takes seconds, which held every request up.
    events, many = await run_in_threadpool(parse_events, await body_of(request))
    engine = Journey(app=service.models.app, actor=f"api:{key.name}")  # the key is the actor
    outcome = await run_in_threadpool(engine.record_many, events)
    if outcome.rejected:
        raise refusal(outcome.rejected, many)
    return {
        "positions": outcome.positions,
        "stored": outcome.stored,
        "derived": outcome.derived,
        "duplicates": outcome.duplicates,
    }


async def body_of(request: Request) -> bytes:
    """The body, refused (413) as soon as it is known to exceed MAX_BODY: from its
    declared length, or while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def too_large() -> Problem:
    reason = f"is larger than {MAX_BODY:,} bytes; send fewer events"
    return problem(413, "(body)", reason, "invalid")


def parse_events(raw: bytes) -> tuple[list[Any], bool]:
    """The events of a body and whether it was an array. Decimals stay exact; each
    event's own fields are validated by ``record_many``."""
    try:  # a byte-order mark (PowerShell writes one) is skipped, as `journey record` does
        body = decode_json(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"), "(body)")
    except UnicodeDecodeError:
        raise problem(422, "(body)", "is not UTF-8", "invalid") from None
    except InputError as exc:  # not JSON, a key given twice, a number too long, too deep
        raise problem(422, exc.field, exc.reason, "invalid") from None
    many = isinstance(body, list)
    events = body if many else [body]
    if not events:
        raise problem(422, "(body)", "holds no event", "invalid")
    if len(events) > MAX_EVENTS:
        reason = f"holds {len(events)} events; at most {MAX_EVENTS}"
        raise problem(422, "(body)", reason, "invalid")
    return events, many


def refusal(rejected: list[Rejected], many: bool) -> Problem:
    """Every fault of the rejected events (with its event's index in an array): 409 when
    all are conflicts, else 422."""
    errors = [
        {**e.as_dict(), **({"index": r.line - 1} if many else {})}
        for r in rejected
        for e in r.errors
    ]
    status = 409 if all(e["kind"] == "conflict" for e in errors) else 422
    return Problem(status, errors)
