"""What was known: reports computed from the events alone, reproducible forever.

``report(app, as_of, known_at)`` reads the whole log once (personal data left sealed),
keeps each customer's events recorded at or before ``known_at`` and evaluates the rules at
``as_of``: the funnel and every customer's stage, status and level, with the rules and
event ids behind them. No read model is consulted, so the same (as_of, known_at) gives the
same answer however the read models or the settings cache stand; later recordings cannot
change it because they are filtered out by their record time.

``diff`` compares two knowledge moments about one ``as_of`` and names, for each customer
whose answer changed, the events recorded in between (those that occurred by ``as_of``).

``dossier`` is one customer's whole file for an auditor or a subject-access request.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from journey.application import JourneyApplication
from journey.events import CustomerEvent
from projections.history import describe, replay
from projections.readmodels.queries import LEVELS, STAGES, STATUSES
from projections.rules.answer import CLASSIFICATIONS, Answer, evaluate
from projections.rules.window import iso
from projections.settings import DEFAULT, Settings


def all_streams(app: JourneyApplication, known_at: datetime) -> dict[str, list[CustomerEvent]]:
    """Every customer's events recorded at or before ``known_at``, in recording order."""
    streams: dict[str, list[CustomerEvent]] = defaultdict(list)
    for event in app.all_customer_events():
        if event.recorded_at <= known_at:
            streams[event.originator_id].append(event)
    return streams


@dataclass(frozen=True)
class Row:
    """One customer's answer in a report."""

    customer_id: str
    answer: Answer

    def values(self) -> tuple[str, str, str]:
        a = self.answer
        return (a.loyalty_stage.value, a.status.value, a.relationship_level.value)

    def as_dict(self) -> dict[str, Any]:
        verdicts = self.answer.verdicts()
        return {
            "customer_id": self.customer_id,
            **{name: verdicts[name].value for name in CLASSIFICATIONS},
            "reasons": {
                name: {"rule": v.rule, "events": list(v.events)} for name, v in verdicts.items()
            },
        }


@dataclass(frozen=True)
class Report:
    as_of: datetime
    known_at: datetime
    settings_version: str
    rows: list[Row]

    def funnel(self) -> dict[str, dict[str, int]]:
        counts = {
            "stages": dict.fromkeys(STAGES, 0),
            "statuses": dict.fromkeys(STATUSES, 0),
            "levels": dict.fromkeys(LEVELS, 0),
        }
        for row in self.rows:
            for kind, value in zip(counts, row.values(), strict=True):
                counts[kind][value] += 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": iso(self.as_of),
            "known_at": iso(self.known_at),
            "settings_version": self.settings_version,
            "customers": len(self.rows),
            "funnel": self.funnel(),
            "rows": [row.as_dict() for row in self.rows],
        }


def answers(
    streams: dict[str, list[CustomerEvent]],
    as_of: datetime,
    known_at: datetime,
    settings: Settings,
) -> dict[str, Answer]:
    found: dict[str, Answer] = {}
    for customer_id in sorted(streams):
        counted = [e for e in streams[customer_id] if e.recorded_at <= known_at]
        answer = evaluate(counted, as_of, settings) if counted else None
        if answer is not None:
            found[customer_id] = answer
    return found


def report(
    app: JourneyApplication, as_of: datetime, known_at: datetime, settings: Settings = DEFAULT
) -> Report:
    """The funnel and every customer's answer at ``as_of``, as known at ``known_at``."""
    found = answers(all_streams(app, known_at), as_of, known_at, settings)
    rows = [Row(cid, answer) for cid, answer in found.items()]
    return Report(as_of, known_at, settings.version, rows)


@dataclass(frozen=True)
class Change:
    """A customer whose answer about ``as_of`` differs between two knowledge moments."""

    customer_id: str
    before: tuple[str, str, str] | None
    after: tuple[str, str, str] | None
    events: list[CustomerEvent]

    def as_dict(self) -> dict[str, Any]:
        def named(values: tuple[str, str, str] | None) -> dict[str, str] | None:
            return dict(zip(CLASSIFICATIONS, values, strict=True)) if values else None

        return {
            "customer_id": self.customer_id,
            "before": named(self.before),
            "after": named(self.after),
            "changed": [
                name
                for i, name in enumerate(CLASSIFICATIONS)
                if (self.before[i] if self.before else None)
                != (self.after[i] if self.after else None)
            ],
            "events": [describe(e) for e in self.events],
        }


def diff(
    app: JourneyApplication,
    as_of: datetime,
    first: datetime,
    second: datetime,
    settings: Settings = DEFAULT,
) -> list[Change]:
    """Customers whose stage, status or level at ``as_of`` differ as known at ``first``
    and at ``second``, with the events recorded in between that occurred by ``as_of``."""
    early, late = sorted((first, second))
    streams = all_streams(app, late)
    before = answers(streams, as_of, early, settings)
    after = answers(streams, as_of, late, settings)
    changes: list[Change] = []
    for customer_id in sorted(before.keys() | after.keys()):
        old = Row(customer_id, before[customer_id]).values() if customer_id in before else None
        new = Row(customer_id, after[customer_id]).values() if customer_id in after else None
        if old == new:
            continue
        events = [
            e
            for e in streams[customer_id]
            if early < e.recorded_at <= late and e.occurred_at <= as_of
        ]
        changes.append(Change(customer_id, old, new, events))
    return changes


def as_stored(found: tuple[str, Any] | None) -> dict[str, Any]:
    return {} if found is None else {"stored": {"topic": found[0], "state": found[1]}}


def dossier(
    events: Iterable[CustomerEvent],
    customer_id: str,
    now: datetime,
    settings: Settings = DEFAULT,
    stored: dict[int, tuple[str, Any]] | None = None,
) -> dict[str, Any]:
    """One customer's file: every event with both times, its actor and payload (personal
    data as the events were read: opened, or ``[erased]``), the history replay with its
    reasons, and the answer now; every answer in it was made from what was known ``now``.
    ``stored`` (``JourneyApplication.stored_states``) adds each event as stored, its hash's
    input: the payload shown is read (amounts normalised, times in UTC), not hashed."""
    stored = stored or {}
    stream = list(events)
    steps = replay(stream, settings, now)
    steps = [replace(s, answer=replace(s.answer, known_at=now)) for s in steps]
    current = evaluate(stream, now, settings)
    if current is not None:
        current = replace(current, known_at=now)
    return {
        "customer_id": customer_id,
        "generated_at": iso(now),
        "settings_version": settings.version,
        "erased": any(e.TYPE == "erased" for e in stream),
        "events": [
            {
                **describe(e),
                "content_hash": e.content_hash,
                "previous_hash": e.previous_hash,
                **as_stored(stored.get(e.originator_version)),
            }
            for e in stream
        ],
        "history": [step.as_dict(n) for n, step in enumerate(steps, start=1)],
        "current": current.as_dict() if current is not None else None,
    }
