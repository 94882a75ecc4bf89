"""The feed's entries for one customer: which classification changed, when, and why.

A summary row is recomputed when new events are applied and when its ``refresh_at`` comes.
Between two computations the state can change several times: by itself (a lapse, a window
closing: ``cause`` None), as an event recorded with a later ``occurred_at`` comes into
effect (``cause`` its position), and through the new events (``cause`` the newest of them
in valid time). Each change is announced at the moment it happened, from the value before
it, so that a subscriber replaying the feed passes through every state the customer had,
whenever the runner noticed (tests/readmodel_support.assert_feed_consistent).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from journey.application import Stream
from projections.rules.answer import Answer, evaluate
from projections.rules.changes import next_change
from projections.rules.window import JUST_AFTER
from projections.settings import Settings

KINDS = ("loyalty_stage", "status", "relationship_level")

#: A customer's classifications, kind by kind (None before the customer exists).
State = Mapping[str, str | None]


def state_of(row: Any) -> dict[str, str | None]:
    """The classifications of a stored summary row (or None: no row yet)."""
    return {kind: getattr(row, kind) if row is not None else None for kind in KINDS}


def changes(
    customer: str,
    was: State,
    now: State,
    reasons: Mapping[str, str],
    occurred_at: datetime,
    cause: int | None,
    recorded_at: datetime,
) -> list[dict[str, Any]]:
    """An entry for each kind whose value differs between ``was`` and ``now``."""
    return [
        {
            "customer_id": customer,
            "kind": kind,
            "from_value": was[kind],
            "to_value": now[kind],
            "occurred_at": occurred_at,
            "recorded_at": recorded_at,
            "reason": reasons[kind],
            "cause": cause,
        }
        for kind in KINDS
        if now[kind] is not None and was[kind] != now[kind]
    ]


def row_changes(
    customer: str,
    was: State,
    row: Mapping[str, Any],
    occurred_at: datetime,
    cause: int | None,
    recorded_at: datetime,
) -> list[dict[str, Any]]:
    """``changes`` to a newly computed summary row."""
    now = {kind: row[kind] for kind in KINDS}
    reasons = {kind: row["reasons"][kind]["rule"] for kind in KINDS if row[kind] is not None}
    return changes(customer, was, now, reasons, occurred_at, cause, recorded_at)


def transitions(
    stream: Stream, was: State, since: datetime, rules: Settings, until: datetime
) -> Iterator[tuple[datetime, int | None, Answer]]:
    """Each moment in (``since``, ``until``] at which the classifications of ``stream``
    (events already applied) move away from the last ones (``was`` first) with no event
    recorded: by themselves (cause None) or as events dated ahead come into effect (cause:
    the last recorded of them), with the answer from that moment on."""
    arrivals = sorted(
        (event.occurred_at, position)
        for event, position in zip(stream.events, stream.positions, strict=True)
        if since < event.occurred_at <= until
    )
    moment, current = since, dict(was)
    while True:
        arrival = next((a for a in arrivals if a[0] > moment), None)
        bound = until if arrival is None else arrival[0]
        later = next_change(stream.events, moment, rules, until=bound)
        if later is not None and (arrival is None or later.as_of < arrival[0]):
            moment, cause = later.as_of, None
        elif arrival is not None:  # the events of that moment count from it on
            moment = arrival[0]
            cause = max(position for at, position in arrivals if at == moment)
            later = evaluate(stream.events, moment, rules)
        else:
            return
        assert later is not None, "an event lies at or before every moment looked at"
        values = {kind: verdict.value for kind, verdict in later.verdicts().items()}
        if values != current:
            yield moment, cause, later
            current = values


def announced(
    customer: str,
    was: State,
    stream: Stream,
    since: datetime,
    rules: Settings,
    until: datetime,
    recorded_at: datetime,
) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """The entries of every ``transitions`` step, and the state after the last."""
    entries: list[dict[str, Any]] = []
    current = dict(was)
    for moment, cause, answer in transitions(stream, was, since, rules, until):
        verdicts = answer.verdicts()
        now = {kind: verdict.value for kind, verdict in verdicts.items()}
        reasons = {kind: verdict.rule for kind, verdict in verdicts.items()}
        entries += changes(customer, current, now, reasons, moment, cause, recorded_at)
        current = now
    return entries, current


def refresh_entries(
    customer: str, before: Any, stream: Stream, rules: Settings, now: datetime
) -> list[dict[str, Any]]:
    """The entries for a row recomputed at ``now`` with no new event."""
    return announced(customer, state_of(before), stream, before.computed_at, rules, now, now)[0]


def page_entries(
    customer: str,
    before: Any,
    row: Mapping[str, Any],
    stream: Stream,
    since: int,
    rules: Settings,
    now: datetime,
) -> list[dict[str, Any]]:
    """The entries for a row recomputed at ``now`` because events after position
    ``since`` were applied. What changed by itself since the row was computed, before the
    first of them took effect, is announced first, as a refresh would have; the rest is
    the new events' doing, caused by the newest of them (in valid time) that is not in the
    future: its position and occurred_at."""
    fresh = [
        (event.occurred_at, event.originator_version, position)
        for event, position in zip(stream.events, stream.positions, strict=True)
        if position > since and event.occurred_at <= now
    ]
    entries: list[dict[str, Any]] = []
    was = state_of(before)
    if before is not None and before.refresh_at <= now:  # a change by itself was due
        known = Stream(
            [e for e, p in zip(stream.events, stream.positions, strict=True) if p <= since],
            [p for p in stream.positions if p <= since],
        )
        until = min(at for at, _, _ in fresh) - JUST_AFTER if fresh else now
        if known.events and until > before.computed_at:
            entries, was = announced(
                customer, was, known, before.computed_at, rules, min(until, now), now
            )
    if not fresh:
        return entries
    occurred_at, _, cause = max(fresh)
    return entries + row_changes(customer, was, row, occurred_at, cause, now)
