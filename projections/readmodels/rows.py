"""What a read model stores for one customer, computed from its events by the rules.

Pure: the runners read events and write rows; this module only turns one into the other,
so an incremental catch-up and a rebuild can never disagree.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from journey.events import CustomerEvent, Purchased, Refunded
from projections.rules.answer import Answer, answer_from
from projections.rules.changes import leaving_moments, moment_of_change
from projections.rules.facts import Facts
from projections.rules.walk import State, Walk
from projections.rules.window import of_the_customer, ordered
from projections.settings import Settings

#: Far enough ahead that every time-driven change of a history has happened by then.
END_OF_TIME = datetime(9000, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)

SCORE_COLUMNS = (
    "purchases",
    "revenue",
    "margin",
    "cost_to_serve",
    "profit",
    "profitable",
    "first_purchase_at",
    "last_purchase_at",
    "recency_days",
    "tenure_days",
    "frequency_365d",
    "monetary_365d",
    "trust",
    "commitment",
    "involvement",
)


def summary_row(
    customer_id: str, events: Sequence[CustomerEvent], now: datetime, settings: Settings
) -> dict[str, Any]:
    """The customer as of ``now``, and when that row must be computed again without a new
    event recorded: a time-driven change, the next day for the day counters, or an event
    dated ahead of ``now`` coming into effect."""
    facts = Facts.of(events, now, settings)
    answer = answer_from(facts)
    row: dict[str, Any] = {"customer_id": customer_id, "computed_at": now}
    ahead = min((e.occurred_at for e in events if e.occurred_at > now), default=END_OF_TIME)
    if answer is None:  # every event lies in the future: the customer does not exist yet
        return {**row, **dict.fromkeys(ANSWER_COLUMNS), "refresh_at": ahead}
    return {**row, **answer_columns(answer), "refresh_at": min(refresh_at(answer, facts), ahead)}


#: Every column an answer fills; all NULL for a customer who does not exist yet (a batch
#: insert needs every row to name the same columns).
ANSWER_COLUMNS = (
    "loyalty_stage",
    "status",
    "relationship_level",
    *SCORE_COLUMNS,
    "nps_score",
    "nps_class",
    "reasons",
    "settings_version",
)


def answer_columns(answer: Answer) -> dict[str, Any]:
    nps = answer.scores["nps"] or {}
    reasons = {name: v.as_dict() for name, v in answer.verdicts().items()}
    return {
        "loyalty_stage": answer.loyalty_stage.value,
        "status": answer.status.value,
        "relationship_level": answer.relationship_level.value,
        **{name: answer.scores[name] for name in SCORE_COLUMNS},
        "nps_score": nps.get("score"),
        "nps_class": nps.get("class"),
        "reasons": reasons,
        "settings_version": answer.settings_version,
    }


def refresh_at(answer: Answer, facts: Facts) -> datetime:
    later = moment_of_change(facts, answer, reasons=True)  # the row shows the reasons
    moments = [later] if later is not None else []
    scores = answer.scores
    for since, days in (("last_purchase_at", "recency_days"), ("first_purchase_at", "tenure_days")):
        if scores[since] is not None:  # whole days since a purchase: the next one's start
            moments.append(scores[since] + DAY * (scores[days] + 1))
    return min(moments, default=END_OF_TIME)


@dataclass(frozen=True)
class Interval:
    valid_from: datetime
    valid_to: datetime | None
    loyalty_stage: str
    status: str
    relationship_level: str


def timeline_rows(
    customer_id: str, events: Sequence[CustomerEvent], settings: Settings
) -> list[dict[str, Any]]:
    """The customer's (stage, status, level) as intervals of valid time, time-driven
    changes included; the last interval is open (valid_to NULL)."""
    return [
        {"customer_id": customer_id, **vars(interval)} for interval in intervals(events, settings)
    ]


def intervals(events: Sequence[CustomerEvent], settings: Settings) -> list[Interval]:
    return collapse(samples(ordered(of_the_customer(events)), settings))


def samples(stream: list[CustomerEvent], settings: Settings) -> Iterator[tuple[datetime, State]]:
    """The (stage, status, level) after each event, and at every moment between events
    (and after the last) at which the rules say one of the three might change by itself.

    The history replay steps at a subset of these moments (where any part of the state
    changes), so both give the same intervals; this one is linear in the candidates, where
    the replay evaluates every prefix and searches the candidates again after each step.
    Only the classifications' own candidates are sampled (not those of the scores, which
    the timeline does not keep): most moments change nothing the timeline shows. The
    values come from a ``Walk`` (rules/walk.py), which keeps what the rules read as the
    events are added; an event none of them reads leaves the state as the last sample
    (taken at or after the previous event's last candidate before this event).
    """
    leaving = leaving_moments(stream, settings)
    walk = Walk(settings)
    state: State | None = None
    for index, event in enumerate(stream):
        if walk.add(event) or state is None:
            state = walk.state(event.occurred_at)
        yield event.occurred_at, state
        until = stream[index + 1].occurred_at if index + 1 < len(stream) else END_OF_TIME
        for moment in between(leaving, walk.thresholds(), event.occurred_at, until):
            state = walk.state(moment)
            yield moment, state


def between(
    leaving: list[datetime], thresholds: list[datetime], after: datetime, until: datetime
) -> list[datetime]:
    """The moments in (``after``, ``until``] at which a prefix ending at ``after`` might
    change its classifications by itself before the next event (at ``until``): the
    history's leaving moments in that span (a later event's all lie after ``until``) and
    the prefix's own thresholds."""
    found = leaving[bisect_right(leaving, after) : bisect_right(leaving, until)]
    own = [m for m in thresholds if after < m <= until]
    return sorted({*found, *own}) if own else found  # leaving is sorted, each moment once


def collapse(steps: Iterable[tuple[datetime, State]]) -> list[Interval]:
    """Consecutive equal states as one interval; the last is open. Of several steps at one
    moment only the last one's state holds there: an earlier one's interval would be empty,
    and is taken back, so the states on either side of it join again (a window closing at
    the very moment an event renews it changes nothing)."""
    found: list[Interval] = []
    current: State | None = None  # the last interval's state
    for at, state in steps:
        if state == current:
            continue
        if found and found[-1].valid_from == at:  # an earlier step at this moment
            found.pop()
            current = state_of(found[-1]) if found else None
            if current is not None:
                found[-1] = Interval(found[-1].valid_from, None, *current)
            if state == current:
                continue
        if found:
            found[-1] = Interval(found[-1].valid_from, at, *current)
        found.append(Interval(at, None, *state))
        current = state
    return found


def state_of(interval: Interval) -> tuple[str, str, str]:
    return interval.loyalty_stage, interval.status, interval.relationship_level


def purchase_rows(customer_id: str, events: Sequence[CustomerEvent]) -> list[dict[str, Any]]:
    """Purchases and refunds as they happened, so RFM over the population can be asked of
    SQL at any moment (a refund counts only from its own occurred_at)."""
    return [
        {
            "customer_id": customer_id,
            "order_id": e.order_id,
            "occurred_at": e.occurred_at,
            "amount": e.amount if isinstance(e, Purchased) else -e.amount,
            "is_refund": isinstance(e, Refunded),
        }
        for e in events
        if isinstance(e, Purchased | Refunded)
    ]
