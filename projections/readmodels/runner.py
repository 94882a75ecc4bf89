"""Keeping read models up to date: follow the log and apply it a page at a time.

Each page's touched customers are recomputed from their streams (up to the page's last
position) and their rows written with the page's last position in one transaction: after a
crash the runner resumes from the last committed position, so no event is applied twice
and none is skipped. The summary also changes with no new event (a customer lapses): rows
whose ``refresh_at`` has come are recomputed on every pass.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from journey.application import JourneyApplication, Stream
from projections.readmodels.rows import purchase_rows, summary_row, timeline_rows
from projections.readmodels.store import (
    MODELS,
    Generation,
    PositionMoved,
    ReadModelStore,
    utc_now,
)
from projections.rules.answer import Answer, evaluate
from projections.rules.changes import next_change
from projections.settings import Settings

PAGE = 2000
REFRESH_BATCH = 2000

Progress = Callable[[int], None]


class Runner:
    """Applies the log to read models."""

    def __init__(
        self,
        app: JourneyApplication,
        store: ReadModelStore,
        settings: Settings,
        *,
        page: int = PAGE,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.app = app
        self.store = store
        self.settings = settings
        self.page = page
        self.clock = clock
        store.ensure(settings)

    def serving(self, name: str) -> Generation:
        with self.store.engine.connect() as conn:
            generation = self.store.serving(conn, name)
        assert generation is not None, "ensure() creates a serving generation"
        return generation

    def catch_up(
        self, name: str, generation: Generation | None = None, on_progress: Progress | None = None
    ) -> int:
        """Apply every notification after the generation's position; returns how many."""
        applied = 0
        while True:
            current = generation or self.serving(name)
            if generation is not None:
                current = self._reload(generation)
            try:
                count = self.apply_page(name, current)
            except PositionMoved:
                continue  # another writer applied that page: read on from where it got
            if not count:
                return applied
            applied += count
            if on_progress:
                on_progress(count)

    def apply_page(self, name: str, generation: Generation) -> int:
        notifications = self.app.select_notifications(generation.position, self.page)
        if not notifications:
            return 0
        last = notifications[-1].id
        touched = Counter(
            n.originator_id for n in notifications if not n.originator_id.startswith("~")
        )
        customers = sorted(touched)
        streams = self.app.customer_streams(customers, up_to=last)
        summary = name == "summary"
        previous = (
            self.store.previous_summaries(generation.generation, customers) if summary else {}
        )
        announce = summary and generation.status == "serving"
        rows: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        now = self.clock()
        rules = generation.rules()
        for customer in customers:
            stream, before = streams[customer], previous.get(customer)
            applied = (before.applied_events if before else 0) + touched[customer]
            new_rows = rows_for(name, customer, stream, now, rules, applied)
            if announce:
                since = before.last_position if before else 0
                entries += event_changes(customer, before, new_rows[0], stream, since, now)
            rows += new_rows
        self.store.write(
            name,
            generation.generation,
            customers,
            rows,
            expected=generation.position,
            status=generation.status,
            position=last,
            entries=entries,
        )
        return len(notifications)

    def refresh_due(self) -> int:
        """Recompute the summary rows whose time-driven change has come."""
        generation = self.serving("summary")
        now = self.clock()
        due = self.store.due_for_refresh(generation.generation, now, REFRESH_BATCH)
        if not due:
            return 0
        streams = self.app.customer_streams(due, up_to=generation.position)
        previous = self.store.previous_summaries(generation.generation, due)
        rows: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        rules = generation.rules()
        for customer in due:
            stream, before = streams.get(customer), previous.get(customer)
            if stream is not None and before is not None:
                row = rows_for("summary", customer, stream, now, rules, before.applied_events)[0]
                changed_at, cause = changed_since(stream, before, rules, now)
                entries += changes(customer, before, row, changed_at, cause, now)
                rows.append(row)
        try:
            self.store.write(
                "summary",
                generation.generation,
                due,
                rows,
                expected=generation.position,
                status="serving",
                entries=entries,
            )
        except PositionMoved:
            return 1  # new events arrived meanwhile: the caller asks again
        return len(due)

    def run(
        self,
        names: Sequence[str],
        stop: threading.Event,
        wait: Callable[[float], None] | None = None,
        poll_seconds: float = 1.0,
        on_pass: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        """Keep ``names`` up to date until ``stop`` is set; ``wait`` blocks until the log
        may have grown (LISTEN/NOTIFY) or the poll interval passes."""
        pause = wait or stop.wait
        while not stop.is_set():
            done = {name: self.catch_up(name) for name in names}
            if "summary" in names:
                while refreshed := self.refresh_due():
                    done["refreshed"] = done.get("refreshed", 0) + refreshed
            if on_pass:
                on_pass(done)
            if not any(done.values()):
                pause(poll_seconds)

    def _reload(self, generation: Generation) -> Generation:
        for found in self.store.all_generations():
            if (found.name, found.generation) == (generation.name, generation.generation):
                return found
        raise LookupError(f"generation {generation.generation} of {generation.name} is gone")


KINDS = ("loyalty_stage", "status", "relationship_level")


def changes(
    customer: str,
    before: Any,
    row: dict[str, Any],
    occurred_at: datetime,
    cause: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Feed entries for what differs between a customer's old and new summary row."""
    found = []
    for kind in KINDS:
        was = getattr(before, kind) if before is not None else None
        if row[kind] is not None and was != row[kind]:
            found.append(
                {
                    "customer_id": customer,
                    "kind": kind,
                    "from_value": was,
                    "to_value": row[kind],
                    "occurred_at": occurred_at,
                    "recorded_at": now,
                    "reason": row["reasons"][kind]["rule"],
                    "cause": cause,
                }
            )
    return found


def changed_since(
    stream: Stream, before: Any, rules: Settings, now: datetime
) -> tuple[datetime, int | None]:
    """When, after the row was computed, a classification first changed with no event
    recorded since (not when the runner noticed), and the cause: None for a change by
    itself, else the position of an event dated ahead that came into effect then."""
    arrivals = sorted(
        (event.occurred_at, position)
        for event, position in zip(stream.events, stream.positions, strict=True)
        if before.computed_at < event.occurred_at <= now
    )
    moment = before.computed_at
    while True:
        arrival = next((a for a in arrivals if a[0] > moment), None)
        until = now if arrival is None else arrival[0]
        later = next_change(stream.events, moment, rules, until=until)
        if later is not None and (arrival is None or later.as_of < arrival[0]):
            moment, cause = later.as_of, None
        elif arrival is not None:  # the events of that moment count from it on
            moment = arrival[0]
            cause = max(position for at, position in arrivals if at == moment)
            later = evaluate(stream.events, moment, rules)
        else:
            return now, None
        if later is not None and differs(later, before):
            return moment, cause


def differs(answer: Answer, before: Any) -> bool:
    return any(answer.verdicts()[kind].value != getattr(before, kind) for kind in KINDS)


def event_changes(
    customer: str, before: Any, row: dict[str, Any], stream: Stream, since: int, now: datetime
) -> list[dict[str, Any]]:
    """The changes new events made to the customer's present state, caused by the newest of
    them (in valid time) that is not in the future: its position and occurred_at."""
    fresh = [
        (event.occurred_at, event.originator_version, position)
        for event, position in zip(stream.events, stream.positions, strict=True)
        if position > since and event.occurred_at <= now
    ]
    if not fresh:
        return []
    occurred_at, _, cause = max(fresh)
    return changes(customer, before, row, occurred_at, cause, now)


def rows_for(
    name: str, customer: str, stream: Stream, now: datetime, settings: Settings, applied: int
) -> list[dict[str, Any]]:
    """The rows of read model ``name`` for one customer's stream."""
    if name == "summary":
        row = summary_row(customer, stream.events, now, settings)
        return [{**row, "last_position": stream.positions[-1], "applied_events": applied}]
    if name == "timeline":
        return timeline_rows(customer, stream.events, settings)
    if name == "purchases":
        return purchase_rows(customer, stream.events)
    raise KeyError(f"no read model {name!r}; expected one of {', '.join(MODELS)}")
