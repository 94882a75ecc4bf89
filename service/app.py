"""The HTTP service: Journey's API over the network (issue 5).

Every endpoint but ``/health`` needs an API key (``Authorization: Bearer``) with the
endpoint's scope. Handlers are thin: they parse, call the same code the CLI calls
(``Journey.record_many``, ``PointInTime``, ``ReadModels``, ``Feed``) and shape the answer.
The process holds no state that matters: positions and keys live in the database.

(No ``from __future__ import annotations`` here: FastAPI reads the annotations of the
handlers and dependencies defined inside ``create_app`` at runtime.)
"""

import copy
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import TypeAdapter
from sqlalchemy import text

from commands.models import AnyCommand, check_customer_id
from journey.errors import RetryableConflict
from journey.moments import parse_moment
from projections.feed import KINDS, Feed
from projections.pointintime import NotFound, PointInTime
from projections.readmodels.operate import ReadModels
from projections.readmodels.queries import funnel
from projections.readmodels.rebuild import rebuild
from projections.readmodels.runner import Runner
from projections.readmodels.store import MODELS, LockBusy
from projections.rules.rfm import Population
from projections.settings import DEFAULT, Settings
from service import schemas
from service.feedstream import sse_events
from service.keys import SCOPES, ApiKey, Keys

log = logging.getLogger("journey.service")

MAX_EVENTS = 10_000
POPULATIONS = 8
MAX_POSITION = 2**63 - 1

DESCRIPTION = """Record customer events, ask where a customer stands at any moment, replay
their history, and follow every change of stage, status and level.

Every endpoint but `/health` needs `Authorization: Bearer <key>` (keys come from
`journey keys create NAME --scope ...`). Without a key, or with a bad or revoked one: 401.
Outside the key's scopes: 403. Every error answers `{"errors": [{"field", "reason", "kind"}]}`.
"""


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
    meaning = {
        401: "No API key, or a bad or revoked one.",
        403: "The key lacks this endpoint's scope.",
        404: "Not found (at that moment).",
        409: "Conflict: an id sent again with other content, or the work is already running.",
        422: "Bad input: every field at fault and why.",
        503: "The database is unreachable or busy; retry.",
    }
    return {s: {"model": schemas.Errors, "description": meaning[s]} for s in (401, 403, *statuses)}


class Service:
    """What the handlers share: the read models (with the event store) and the keys.

    Opened on first use and closed when the app shuts down; a later request (an app
    that is started again, as test clients do) opens them anew."""

    def __init__(self, url: str | None, settings: Settings):
        self.url = url
        self.settings = settings
        self._opened: tuple[ReadModels, Keys, Feed] | None = None
        self._open_lock = threading.Lock()
        self._local = threading.local()
        self.rebuilds: dict[str, dict[str, Any]] = {}
        self._rebuild_lock = threading.Lock()
        self._populations: dict[tuple[datetime, int], Population] = {}
        self._population_lock = threading.Lock()
        self._population_compute = threading.Lock()

    def _open(self) -> tuple[ReadModels, Keys, Feed]:
        opened = self._opened
        if opened is None:
            with self._open_lock:
                if self._opened is None:
                    models = ReadModels.open(self.url, self.settings)
                    self._opened = (models, Keys(models.store.engine), Feed(models.store))
                opened = self._opened
        return opened

    @property
    def models(self) -> ReadModels:
        return self._open()[0]

    @property
    def keys(self) -> Keys:
        return self._open()[1]

    @property
    def feed(self) -> Feed:
        return self._open()[2]

    def queries(self) -> PointInTime:
        """A PointInTime per worker thread: its stream cache is not shared between threads."""
        models = self.models
        found = getattr(self._local, "queries", None)
        if found is None or found.app is not models.engine.app:
            found = PointInTime(models.engine, self.settings, populations=self.population)
            self._local.queries = found
        return found

    def population(self, as_of: datetime) -> Population | None:
        """RFM's population at ``as_of`` from the purchases read model, kept while the log
        does not grow: ranking everyone is most of the cost of a customer answer, and
        concurrent requests for "now" (resolved to the second) share one."""
        models = self.models
        key = (as_of, models.engine.app.max_notification_id())
        with self._population_lock:
            if key in self._populations:
                return self._populations[key]
        with self._population_compute:  # one computes, the others then find it
            with self._population_lock:
                if key in self._populations:
                    return self._populations[key]
            found = models.population(as_of)
            if found is not None:
                with self._population_lock:
                    self._populations[key] = found
                    while len(self._populations) > POPULATIONS:
                        del self._populations[next(iter(self._populations))]
        return found

    def close(self) -> None:
        with self._open_lock:
            if self._opened is not None:
                self._opened[0].close()
                self._opened = None


def create_app(
    url: str | None = None,
    settings: Settings = DEFAULT,
    *,
    keepalive_seconds: float = 15.0,
    poll_seconds: float = 0.2,
) -> FastAPI:
    """The service over the store at ``url`` (default $JOURNEY_DB_URL or sqlite:///journey.db)."""
    service = Service(url, settings)
    service.models  # noqa: B018  (fail now, not at the first request, on a bad database)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="Journey",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="An API key: `journey keys create`.")

    def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiKey:
        if credentials is None:
            raise problem(401, "authorization", "send Authorization: Bearer <key>", "unauthorized")
        key = service.keys.verify(credentials.credentials)
        if key is None:
            raise problem(401, "authorization", "unknown or revoked API key", "unauthorized")
        return key

    def scope(name: str) -> Callable[..., ApiKey]:
        assert name in SCOPES

        def check(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
            if name not in key.scopes:
                raise problem(
                    403, "authorization", f"the key {key.name!r} lacks the scope {name}",
                    "forbidden",
                )
            return key

        return check

    # -- errors ------------------------------------------------------------------------

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse({"errors": exc.errors}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]),
                "reason": e["msg"],
                "kind": "invalid",
            }
            for e in exc.errors()
        ]
        return JSONResponse({"errors": errors}, 422)

    @app.exception_handler(RetryableConflict)
    async def _busy(_request: Request, exc: RetryableConflict) -> JSONResponse:
        return JSONResponse(
            {"errors": [{"field": "(event)", "reason": str(exc), "kind": "unavailable"}]},
            503,
            headers={"Retry-After": "1"},
        )

    # -- the API -----------------------------------------------------------------------

    @app.get("/health", response_model=schemas.Health, tags=["service"],
             responses={503: {"model": schemas.Errors, "description": "No database."}})
    def health() -> Any:
        """Anonymous: the service is up and reaches its database."""
        try:
            with service.models.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            raise problem(503, "(database)", type(exc).__name__, "unavailable") from None
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_key: Annotated[ApiKey, Depends(caller)]) -> Any:
        return app.openapi()

    events_body = events_request_body()

    @app.post(
        "/v1/events",
        status_code=201,
        response_model=schemas.Recorded,
        tags=["events"],
        responses=error_responses(409, 422, 503),
        openapi_extra={"requestBody": events_body["request_body"]},
    )
    async def record_events(
        request: Request, key: Annotated[ApiKey, Depends(scope("events:write"))]
    ) -> Any:
        """Record one event (a JSON object) or several (a JSON array), as `journey import`
        does: all validated first; any bad one and nothing is stored (422, or 409 when the
        only faults are conflicts). An event already stored is an idempotent no-op."""
        raw = await request.body()
        try:
            body = json.loads(raw, parse_float=Decimal)
        except (ValueError, RecursionError) as exc:
            raise problem(422, "(body)", f"is not JSON: {exc}", "invalid") from None
        many = isinstance(body, list)
        events = body if many else [body]
        if not events:
            raise problem(422, "(body)", "holds no event", "invalid")
        if len(events) > MAX_EVENTS:
            raise problem(422, "(body)", f"holds {len(events)} events; at most {MAX_EVENTS}",
                          "invalid")
        engine = copy.copy(service.models.engine)
        engine.actor = f"api:{key.name}"
        outcome = await run_in_threadpool(engine.record_many, events)
        if outcome.rejected:
            errors = [
                {**e.as_dict(), **({"index": r.line - 1} if many else {})}
                for r in outcome.rejected
                for e in r.errors
            ]
            status = 409 if all(e["kind"] == "conflict" for e in errors) else 422
            raise Problem(status, errors)
        return {
            "positions": outcome.positions,
            "stored": outcome.stored,
            "derived": outcome.derived,
            "duplicates": outcome.duplicates,
        }

    CustomerId = Annotated[
        str, Path(description="The customer id: 1-64 of letters, digits and . _ : @ -")
    ]
    AsOf = Annotated[
        str | None,
        Query(description="Valid time: ISO 8601 with a zone, a date (00:00 UTC) or `now` "
                          "(default)."),
    ]
    KnownAt = Annotated[
        str | None,
        Query(description="Record time: count only events recorded by then. Same forms as "
                          "`as_of`; default now."),
    ]

    @app.get(
        "/v1/customers/{customer_id}",
        response_model=schemas.CustomerAnswer,
        tags=["customers"],
        responses=error_responses(404, 422),
    )
    def show_customer(
        customer_id: CustomerId,
        _key: Annotated[ApiKey, Depends(scope("customers:read"))],
        as_of: AsOf = None,
        known_at: KnownAt = None,
    ) -> Any:
        """Stage, status, level and scores at `as_of` as known at `known_at`, with reasons
        (`journey show --json`). 404 when the customer does not exist at that moment."""
        valid_id(customer_id)
        moment, known = moments(as_of=as_of or "now", known_at=known_at)
        (found,) = service.queries().show_many([customer_id], moment, known)
        if found.error is not None:
            raise problem(404, "customer_id", str(found.error), "not_found")
        return JSONResponse(found.answer.as_dict())

    @app.get(
        "/v1/customers/{customer_id}/history",
        response_model=schemas.History,
        tags=["customers"],
        responses=error_responses(404, 422),
    )
    def customer_history(
        customer_id: CustomerId,
        _key: Annotated[ApiKey, Depends(scope("history:read"))],
        known_at: KnownAt = None,
    ) -> Any:
        """Every event of the customer in valid-time order, with time-driven steps, and
        what each changed and why, as known at `known_at` (`journey history --json`)."""
        valid_id(customer_id)
        (known,) = moments(known_at=known_at)
        try:
            steps = service.queries().history(customer_id, known)
        except NotFound as exc:
            raise problem(404, "customer_id", str(exc), "not_found") from None
        return JSONResponse(
            {
                "customer_id": customer_id,
                "known_at": known.isoformat() if known else None,
                "steps": [step.as_dict(n) for n, step in enumerate(steps, start=1)],
            }
        )

    @app.get(
        "/v1/funnel",
        response_model=schemas.Funnel,
        tags=["customers"],
        responses=error_responses(422),
    )
    def get_funnel(
        _key: Annotated[ApiKey, Depends(scope("customers:read"))], as_of: AsOf = None
    ) -> Any:
        """Customers per stage, status and level at `as_of`, from the timeline read model
        (caught up first unless a runner keeps it)."""
        (moment,) = moments(as_of=as_of or "now")
        service.models.refresh(["timeline"])
        return JSONResponse(funnel(service.models.store, moment))

    @app.get(
        "/v1/projections",
        response_model=schemas.ProjectionsStatus,
        tags=["projections"],
        responses=error_responses(),
    )
    def projections_status(
        _key: Annotated[ApiKey, Depends(scope("projections:admin"))],
    ) -> Any:
        """Each read model's generation, position, the log head, lag and staleness, any
        generation being built, and the rebuilds this process started."""
        return JSONResponse(
            {"read_models": service.models.status(), "rebuilds": dict(service.rebuilds)}
        )

    @app.post(
        "/v1/projections/{name}/rebuild",
        status_code=202,
        response_model=schemas.RebuildAnswer,
        tags=["projections"],
        responses={
            200: {"model": schemas.RebuildAnswer, "description": "Rebuilt (`wait=true`)."},
            **error_responses(404, 409, 422),
        },
    )
    def rebuild_projection(
        name: Annotated[str, Path(description=f"One of {', '.join(MODELS)}.")],
        _key: Annotated[ApiKey, Depends(scope("projections:admin"))],
        wait: Annotated[
            bool, Query(description="Answer when done (200) instead of at once (202).")
        ] = False,
    ) -> Any:
        """Build a new generation from the whole log while the current one serves, then
        switch atomically. Progress shows in `GET /v1/projections`."""
        if name not in MODELS:
            raise problem(404, "name", f"no read model {name!r}; expected "
                          f"{', '.join(MODELS)}", "not_found")
        with service._rebuild_lock:
            if service.rebuilds.get(name, {}).get("state") == "running":
                raise problem(409, "name", f"{name} is already being rebuilt", "busy")
            state: dict[str, Any] = {"name": name, "state": "running", "done": 0, "total": None}
            service.rebuilds[name] = state
        if wait:
            failure = run_rebuild(service, name, state)
            if state.get("busy"):
                raise problem(409, "name", state["error"], "busy")
            if failure is not None:
                raise failure  # a server error: 500, and the state says what it was
            return JSONResponse(answer_of(state), 200)
        threading.Thread(
            target=run_rebuild, args=(service, name, state), name=f"rebuild-{name}", daemon=True
        ).start()
        return JSONResponse({"name": name, "state": "started"}, 202)

    FeedAfter = Annotated[
        int, Query(ge=0, le=MAX_POSITION, description="Entries after this position.")
    ]
    Kinds = Annotated[
        list[str] | None,
        Query(description="Only these kinds: `loyalty_stage`, `status`, "
              "`relationship_level`; repeat the parameter or separate with commas."),
    ]
    FeedCustomer = Annotated[str | None, Query(description="Only this customer's changes.")]

    @app.get(
        "/v1/feed",
        tags=["feed"],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "An endless `text/event-stream`: one event per entry, `id:` its "
                "position and `data:` the entry as JSON (FeedEntry); `: keep-alive` comments "
                "while idle. On reconnect send `Last-Event-ID`.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **error_responses(422),
        },
    )
    async def follow_feed(
        _key: Annotated[ApiKey, Depends(scope("feed:read"))],
        after: FeedAfter = 0,
        kinds: Kinds = None,
        customer_id: FeedCustomer = None,
        last_event_id: Annotated[
            str | None,
            Header(alias="Last-Event-ID", description="The last position seen; wins over "
                   "`after` (what browsers send when they reconnect)."),
        ] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: every entry after `after` (or `Last-Event-ID`), then each
        new one as it is written. Clients without SSE use `GET /v1/feed/page`."""
        start = resume_position(after, last_event_id)
        chosen = kinds_of(kinds)
        return StreamingResponse(
            sse_events(
                service.feed, start, chosen, customer_id,
                keepalive_seconds=keepalive_seconds, poll_seconds=poll_seconds,
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/v1/feed/page",
        response_model=schemas.FeedPage,
        tags=["feed"],
        responses=error_responses(422),
    )
    def feed_page(
        _key: Annotated[ApiKey, Depends(scope("feed:read"))],
        after: FeedAfter = 0,
        limit: Annotated[int, Query(ge=1, le=1000, description="At most this many.")] = 100,
        kinds: Kinds = None,
        customer_id: FeedCustomer = None,
    ) -> Any:
        """The feed as plain JSON pages: call again with `after=next_after` until
        `entries` is empty."""
        entries = service.feed.read(after, limit, kinds_of(kinds), customer_id)
        return JSONResponse(
            {
                "entries": [e.as_dict() for e in entries],
                "next_after": entries[-1].position if entries else after,
                "head": service.feed.head(),
            }
        )

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            document = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            document.setdefault("components", {}).setdefault("schemas", {}).update(
                events_body["definitions"]
            )
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


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


def events_request_body() -> dict[str, Any]:
    """The body of POST /v1/events, from the input models themselves."""
    single = TypeAdapter(AnyCommand).json_schema(ref_template="#/components/schemas/{model}")
    definitions = single.pop("$defs", {})
    for definition in definitions.values():
        for name, field in definition.get("properties", {}).items():
            if name in FIELD_DOCS:
                field.setdefault("description", FIELD_DOCS[name])
            if name in ("customer_id", "referred_by", "referred_customer_id") and "type" in field:
                field.update(pattern="^[A-Za-z0-9._:@-]{1,64}$", maxLength=64)
    definitions["Event"] = {**single, "title": "Event",
                            "description": "One event; `type` chooses its fields."}
    event = {"$ref": "#/components/schemas/Event"}
    schema = {
        "oneOf": [
            event,
            {"type": "array", "items": event, "minItems": 1, "maxItems": MAX_EVENTS},
        ]
    }
    return {
        "definitions": definitions,
        "request_body": {
            "required": True,
            "description": "One event object, or an array of them (DOMAIN.md §2).",
            "content": {"application/json": {"schema": schema}},
        },
    }


def valid_id(customer_id: str) -> None:
    try:
        check_customer_id(customer_id)
    except ValueError as exc:
        raise problem(422, "customer_id", str(exc), "invalid") from None


def moments(**texts: str | None) -> list[datetime | None]:
    """Each time parameter; "now" is the current whole second (so that answers asked in
    the same second share RFM's population)."""
    found = []
    for field, value in texts.items():
        try:
            moment = parse_moment(value)
            if value == "now" and moment is not None:
                moment = moment.replace(microsecond=0)
        except ValueError as exc:
            raise problem(422, field, str(exc), "invalid") from None
        found.append(moment)
    return found


def resume_position(after: int, last_event_id: str | None) -> int:
    if last_event_id is None:
        return after
    text_ = last_event_id.strip()
    if not text_.isdigit() or int(text_) > MAX_POSITION:
        raise problem(422, "Last-Event-ID", "must be a feed position (a whole number)", "invalid")
    return int(text_)


def kinds_of(kinds: list[str] | None) -> list[str] | None:
    if not kinds:
        return None
    chosen = [k.strip() for item in kinds for k in item.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        raise problem(422, "kinds", f"unknown kind {', '.join(unknown)}; expected "
                      f"{', '.join(KINDS)}", "invalid")
    return chosen or None


def run_rebuild(service: Service, name: str, state: dict[str, Any]) -> Exception | None:
    """Rebuild ``name``, keeping ``state`` up to date; the failure, if any (a rebuild that
    failed resumes where it stopped next time)."""

    def progress(done: int, total: int) -> None:
        state.update(done=done, total=total)

    try:
        runner = Runner(service.models.engine.app, service.models.store, service.settings)
        generation = rebuild(runner, name, on_progress=progress)
        state.update(state="done", generation=generation.generation,
                     position=generation.position)
        return None
    except LockBusy as exc:
        state.update(state="failed", error=str(exc), busy=True)
        return exc
    except Exception as exc:
        state.update(state="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        log.exception("rebuilding %s failed", name)
        return exc


def answer_of(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state.get(k) for k in ("name", "state", "generation", "position", "error")}
