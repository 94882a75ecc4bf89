"""The history replay: a customer's events in DOMAIN order, and what each changed.

Between two events the state can change by itself (a lapse, a referral leaving its window);
those changes appear as their own steps, at the moment they happen. Pure: the query layer
reads the events and calls ``replay``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from journey.events import CustomerEvent
from journey.personal import is_sealed, unopened
from projections.rules.answer import Answer, evaluate, jsonable
from projections.rules.changes import next_change
from projections.rules.scores import DAY_COUNTERS
from projections.rules.window import iso, ordered
from projections.settings import DEFAULT, Settings

#: The finest step of time: the last moment before an event is one microsecond earlier.
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Step:
    """The state after one event (``event`` set) or after a time-driven change (None)."""

    at: datetime
    event: CustomerEvent | None
    answer: Answer
    changes: dict[str, Any]

    @property
    def kind(self) -> str:
        return "event" if self.event is not None else "time"

    def as_dict(self, number: int) -> dict[str, Any]:
        return {
            "step": number,
            "at": iso(self.at),
            "kind": self.kind,
            "event": describe(self.event) if self.event is not None else None,
            "changes": self.changes,
            "state": self.answer.as_dict(),
        }


def describe(event: CustomerEvent) -> dict[str, Any]:
    """An event as auditors read it: id, type, both times, actor, payload (personal
    data as read: opened, erased, or by field name only when it was not opened)."""
    payload = event.payload()
    if is_sealed(payload.get("personal")):
        payload["personal"] = unopened(payload["personal"])
    return {
        "id": event.originator_version,
        "type": event.TYPE,
        "occurred_at": iso(event.occurred_at),
        "recorded_at": iso(event.recorded_at),
        "actor": event.actor,
        "payload": jsonable(payload),
    }


def replay(
    events: Iterable[CustomerEvent],
    settings: Settings = DEFAULT,
    until: datetime | None = None,
) -> list[Step]:
    """Every step of the history; time-driven steps run up to ``until`` (if given)."""
    stream = ordered(events)
    steps: list[Step] = []
    previous: Answer | None = None
    for index, event in enumerate(stream):
        prefix = stream[: index + 1]
        if previous is not None:
            # Up to the moment before the event: a change at its very moment is part of
            # the state as of that moment, which holds the event too (DOMAIN: occurred_at
            # <= T), so it belongs to the event's step, never to a state shown without it.
            before = event.occurred_at - MICROSECOND
            steps += time_steps(stream[:index], previous, before, settings)
            previous = steps[-1].answer if steps else previous
        answer = evaluate(prefix, event.occurred_at, settings)
        if answer is None:  # an erasure before the customer's first event: no one yet
            continue
        steps.append(Step(event.occurred_at, event, answer, changes(previous, answer)))
        previous = answer
    if previous is not None and until is not None and until > previous.as_of:
        steps += time_steps(stream, previous, until, settings)
    return steps


def time_steps(
    stream: list[CustomerEvent], start: Answer, until: datetime, settings: Settings
) -> list[Step]:
    """The changes that happen by themselves after ``start`` up to ``until`` (inclusive)."""
    steps: list[Step] = []
    current = start
    while (later := next_change(stream, current.as_of, settings, until)) is not None:
        steps.append(Step(later.as_of, None, later, changes(current, later)))
        current = later
    return steps


def changes(before: Answer | None, after: Answer) -> dict[str, Any]:
    """What moved: each classification that changed (with its reason) and each score
    that moved (day counters excepted: they move every day)."""
    moved: dict[str, Any] = {}
    for name, verdict in after.verdicts().items():
        old = before.verdicts()[name].value if before else None
        if old != verdict.value:
            moved[name] = {
                "from": old,
                "to": verdict.value,
                "rule": verdict.rule,
                "events": list(verdict.events),
            }
    scores = {
        key: {"from": jsonable(before.scores[key] if before else None), "to": jsonable(value)}
        for key, value in after.scores.items()
        if key not in DAY_COUNTERS
        and key != "rfm"
        and (before is None or before.scores[key] != value)
    }
    if scores:
        moved["scores"] = scores
    return moved
