"""The change feed: Server-Sent Events (``service.feedstream``) and plain JSON pages."""

import re
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse

from commands.models import CUSTOMER_ID_SCHEMA
from projections.feed import KINDS
from service import schemas
from service.auth import ServiceDep, scope
from service.errors import error_responses, problem
from service.feedstream import sse_events
from service.keys import ApiKey
from service.routes.customers import valid_id
from service.state import Service

MAX_POSITION = 2**63 - 1

Reader = Annotated[ApiKey, Depends(scope("feed:read"))]
FeedAfter = Annotated[int, Query(ge=0, le=MAX_POSITION, description="Entries after this position.")]
KIND = "|".join(KINDS)
Kinds = Annotated[
    list[str] | None,
    Query(
        description="Only these kinds: `loyalty_stage`, `status`, "
        "`relationship_level`; repeat the parameter or separate with commas.",
        # Documented, not enforced by FastAPI: kinds_of refuses with the reason.
        json_schema_extra={
            "items": {"type": "string", "pattern": f"^[ ,]*(({KIND})[ ,]*(,[ ,]*({KIND})[ ,]*)*)?$"}
        },
    ),
]
FeedCustomer = Annotated[
    str | None,
    Query(description="Only this customer's changes.", json_schema_extra=CUSTOMER_ID_SCHEMA),
]
LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        description="The last position seen; wins over "
        "`after` (what browsers send when they reconnect).",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(
        alias="lastEventId",
        description="`Last-Event-ID` as a query parameter, for clients that cannot set the "
        "header (EventSource polyfills send it so when they reconnect).",
    ),
]
STREAM = {
    "description": "An endless `text/event-stream`: one event per entry, `id:` its "
    "position and `data:` the entry as JSON (FeedEntry); `: keep-alive` comments "
    "while idle. On reconnect send `Last-Event-ID`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}

router = APIRouter(tags=["feed"])


@router.get(
    "/v1/feed",
    response_class=StreamingResponse,
    responses={200: STREAM, **error_responses(422)},
)
async def follow_feed(
    key: Reader,
    service: ServiceDep,
    after: FeedAfter = 0,
    kinds: Kinds = None,
    customer_id: FeedCustomer = None,
    last_event_id: LastEventId = None,
    last_event_query: LastEventIdQuery = None,
) -> StreamingResponse:
    """Server-Sent Events: every entry after `after` (or `Last-Event-ID`), then each
    new one as it is written. Clients without SSE use `GET /v1/feed/page`."""
    if customer_id is not None:
        valid_id(customer_id)
    # empty, the header or the parameter names no position
    given = "Last-Event-ID" if last_event_id else "lastEventId" if last_event_query else "after"
    start = resume_position(after, last_event_id or last_event_query or None, given)
    within_head(service, start, given)
    chosen = kinds_of(kinds)
    if not service.open_stream():
        reason = (
            f"{service.max_streams} feed streams are open, as many as this server keeps; "
            "retry later, or read /v1/feed/page"
        )
        raise problem(503, "(feed)", reason, "unavailable", {"Retry-After": "5"})
    events = sse_events(
        service.feed,
        start,
        chosen,
        customer_id,
        keepalive_seconds=service.keepalive_seconds,
        poll_seconds=service.poll_seconds,
        allowed=lambda: may_read(service, key.name),
    )
    return ReleasingStream(
        events,
        weakref.finalize(events, service.close_stream),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class ReleasingStream(StreamingResponse):
    """A stream that gives its place back, and stops its follower, however it ends: when
    its response ends (the client gone, the request cancelled mid-send), and, if the
    response never ran, when the stream is dropped (``release`` is a finalizer, which
    runs once)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], Any], **options: Any):
        super().__init__(content, **options)
        self.release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


@router.get("/v1/feed/page", response_model=schemas.FeedPage, responses=error_responses(422))
def feed_page(
    _key: Reader,
    service: ServiceDep,
    after: FeedAfter = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
    kinds: Kinds = None,
    customer_id: FeedCustomer = None,
) -> Any:
    """The feed as plain JSON pages: call again with `after=next_after` until
    `entries` is empty."""
    if customer_id is not None:
        valid_id(customer_id)  # a malformed id names no customer: not an empty answer
    within_head(service, after, "after")
    entries = service.feed.read(after, limit, kinds_of(kinds), customer_id)
    return JSONResponse(
        {
            "entries": [e.as_dict() for e in entries],
            "next_after": entries[-1].position if entries else after,
            "head": service.feed.head(),
        }
    )


def within_head(service: Service, position: int, field: str) -> None:
    """Refuse a position the feed never gave: every position a client saw is at or below
    the head (entries commit in position order). Beyond it, a client would wait for ever
    for entries it has in fact missed (a store restored from a backup, another store's
    position)."""
    head = service.feed.head()
    if position > head:
        reason = (
            f"{position} lies beyond the feed's head ({head}): this feed never gave that "
            "position (was the store restored from a backup, or is it another store's?)"
        )
        raise problem(422, field, reason, "invalid")


def may_read(service: Service, name: str) -> bool:
    """Whether the key ``name`` is still active with ``feed:read``."""
    found = service.keys.named(name)
    return found is not None and found.active and "feed:read" in found.scopes


def resume_position(after: int, last_event_id: str | None, field: str) -> int:
    """Where a stream starts: after the last event id the client saw (sent as ``field``),
    else ``after``."""
    if last_event_id is None:
        return after
    position = last_event_id.strip()
    # ASCII digits only, and few: isdigit() takes "²" (headers are read as latin-1) and
    # int() refuses more than 4,300 digits; either was a 500.
    if not re.fullmatch(r"[0-9]{1,19}", position) or int(position) > MAX_POSITION:
        raise problem(422, field, "must be a feed position (a whole number)", "invalid")
    return int(position)


def kinds_of(kinds: list[str] | None) -> list[str] | None:
    """The kinds asked for, each parameter split at commas; None for all."""
    if not kinds:
        return None
    chosen = [k.strip(" ") for item in kinds for k in item.split(",") if k.strip(" ")]
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        reason = f"unknown kind {', '.join(unknown)}; expected {', '.join(KINDS)}"
        raise problem(422, "kinds", reason, "invalid")
    return chosen or None
