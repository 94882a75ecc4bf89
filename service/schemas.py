"""The shapes the service answers with, for the OpenAPI document.

Handlers return the JSON the CLI prints (``Answer.as_dict()``, ``Step.as_dict()``,
``FeedEntry.as_dict()``...); these models describe it field by field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["suspect", "prospect", "disqualified", "first_time", "repeat", "client", "advocate"]
Status = Literal["active", "at_risk", "lapsed", "left"]
Level = Literal["none", "basic", "reactive", "accountable", "proactive", "partnership"]
Kind = Literal["loyalty_stage", "status", "relationship_level"]
Money = str


class ErrorItem(BaseModel):
    field: str = Field(description="The field at fault, e.g. `amount`, `as_of`, `authorization`.")
    reason: str = Field(description="Why it was refused, in words.")
    kind: Literal[
        "invalid",
        "conflict",
        "not_found",
        "unauthorized",
        "forbidden",
        "busy",
        "unavailable",
        "error",
    ] = Field(
        description="`invalid`: bad input; `conflict`: an id sent again with other content; "
        "`not_found`; `unauthorized`: no, bad or revoked key; `forbidden`: outside the key's "
        "scopes; `busy`: another process is doing it; `unavailable`: try again; `error`: the "
        "work failed on the server (logged there)."
    )
    index: int | None = Field(
        None, description="For an array of events: the 0-based index of the event at fault."
    )


class Errors(BaseModel):
    """Every error of a refused request; nothing of it was stored."""

    errors: list[ErrorItem]


class Recorded(BaseModel):
    positions: list[int] = Field(
        description="Log positions of every event stored, in order, including the events "
        "the engine derives (an implicit `identified`, a `referral_converted`)."
    )
    stored: int = Field(description="Events stored, the derived ones (`derived`) included.")
    derived: int = Field(description="Events the engine derived and stored.")
    duplicates: int = Field(description="Inputs already stored (idempotent retries): no-ops.")


class Rfm(BaseModel):
    r: int = Field(ge=1, le=5)
    f: int = Field(ge=1, le=5)
    m: int = Field(ge=1, le=5)


class Nps(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    score: int = Field(ge=0, le=10)
    class_: Literal["promoter", "passive", "detractor"] = Field(alias="class")


class Scores(BaseModel):
    """DOMAIN.md §3 value scores; money as decimal strings."""

    model_config = ConfigDict(extra="allow")
    purchases: int = Field(description="n: purchases not fully refunded.")
    revenue: Money
    margin: Money
    cost_to_serve: Money
    profit: Money
    profitable: bool
    first_purchase_at: str | None
    last_purchase_at: str | None
    recency_days: int | None
    tenure_days: int | None
    frequency_365d: int
    monetary_365d: Money
    rfm: Rfm | None = Field(
        description="Quintiles among customers with a purchase; null if none, and always "
        "null in a history step's `state` (each step would rank the customer among "
        "everyone at that moment)."
    )
    nps: Nps | None
    trust: int = Field(ge=0, le=100)
    commitment: int = Field(ge=0, le=100)
    involvement: int = Field(ge=0, le=100)


class Reason(BaseModel):
    rule: str = Field(description="The rule that holds, with the figures that made it hold.")
    events: list[int] = Field(description="The customer's event numbers (versions) it rests on.")


class CustomerAnswer(BaseModel):
    """A customer at `as_of`, as known at `known_at` (the `journey show --json` object)."""

    customer_id: str
    as_of: str = Field(description="Valid time asked about (ISO 8601, UTC).")
    known_at: str = Field(description="Record time: only events recorded by then count.")
    settings_version: str
    loyalty_stage: Stage
    status: Status
    relationship_level: Level
    scores: Scores
    reasons: dict[str, Reason] = Field(
        description="For `loyalty_stage`, `status` and `relationship_level`: why."
    )


class EventDescription(BaseModel):
    id: int = Field(description="The event's number in the customer's stream.")
    type: str
    occurred_at: str
    recorded_at: str
    actor: str
    payload: dict[str, Any]


class HistoryStep(BaseModel):
    step: int
    at: str = Field(description="When the step happens (valid time).")
    kind: Literal["event", "time"] = Field(description="An event, or a time-driven change.")
    event: EventDescription | None
    changes: dict[str, Any] = Field(description="What moved: {name: {from, to, rule}}, scores.")
    state: CustomerAnswer


class History(BaseModel):
    customer_id: str
    known_at: str = Field(description="The record time replayed as of (now, if not asked).")
    steps: list[HistoryStep]


class Funnel(BaseModel):
    as_of: str
    stages: dict[str, int] = Field(description="Customers per loyalty stage.")
    statuses: dict[str, int] = Field(description="Customers per status.")
    levels: dict[str, int] = Field(description="Customers per relationship level.")


class Building(BaseModel):
    generation: int
    head: int | None
    cursor: str | None
    settings_version: str


class ReadModelStatus(BaseModel):
    name: str
    generation: int
    position: int = Field(description="Last log position applied.")
    head: int = Field(description="Last log position stored.")
    lag_events: int = Field(description="Entries of the log after the position.")
    refresh_due: int = Field(
        description="Summary rows whose time-driven change has come and is not applied yet."
    )
    lag_seconds: float = Field(
        description="How long the oldest unapplied event, or the oldest due change, has waited."
    )
    settings_version: str
    code_version: str
    stale: bool
    stale_reasons: list[str]
    updated_at: str
    building: Building | None


class ProjectionsStatus(BaseModel):
    read_models: list[ReadModelStatus]
    rebuilds: dict[str, dict[str, Any]] = Field(
        description="Rebuilds this server process started: state, progress, result or error."
    )


class RebuildAnswer(BaseModel):
    name: str
    state: Literal["started", "running", "done", "failed"]
    generation: int | None = None
    position: int | None = None
    error: str | None = None


class FeedEntry(BaseModel):
    """One change of a customer's stage, status or level."""

    position: int = Field(description="Strictly increasing; resume after the last one seen.")
    customer_id: str
    kind: Kind
    from_: str | None = Field(alias="from", description="The value before; null when new.")
    to: str
    occurred_at: str = Field(description="Valid time of the change.")
    recorded_at: str
    reason: str
    cause: int | None = Field(
        description="Log position of the event that caused it; null when time-driven."
    )
    cause_id: int | None = Field(
        description="The same event's id in the customer's stream, as the customer's "
        "answer, history and export name events; null when time-driven."
    )


class FeedPage(BaseModel):
    entries: list[FeedEntry]
    next_after: int = Field(description="Pass as `after` for the next page.")
    head: int = Field(description="The last position of the whole feed.")


class Health(BaseModel):
    status: Literal["ok"]
