"""When a customer's state next changes with no new event.

A state is piecewise constant in valid time. It can change by itself only where an event
leaves a window, a threshold of age is crossed (tenure, lapse, at risk, an overdue
complaint) or a whole tenure year is completed; ``candidates`` lists those moments and
``next_change`` evaluates them in order. The history replay and the timeline read model
both rely on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta

from journey.events import CustomerEvent
from projections.rules.answer import Answer, answer_from
from projections.rules.facts import Facts
from projections.rules.psych import YEAR_DAYS, open_complaints
from projections.rules.status import at_risk_limit
from projections.rules.window import JUST_AFTER
from projections.settings import DEFAULT, Settings


def candidates(facts: Facts) -> list[datetime]:
    """Every moment after T at which the state at T might change by itself."""
    return sorted({m for m in _moments(facts) if m > facts.as_of})


def _moments(facts: Facts) -> Iterator[datetime]:
    s = facts.settings
    windows = s.windows()
    horizon = facts.as_of - windows[-1]
    for event in facts.events:
        if event.occurred_at > horizon:
            for window in windows:
                yield event.occurred_at + window
    first, last = facts.first_purchase, facts.last_purchase
    if last is not None:
        yield last.occurred_at + s.days("lapsed_after_days") + JUST_AFTER
        limit = at_risk_limit(facts)
        if limit is not None:
            yield last.occurred_at + limit + JUST_AFTER
    if first is not None:
        for year in range(1, s.commitment_max_tenure_years + 1):
            yield first.occurred_at + timedelta(days=YEAR_DAYS * year)
    for complaint in open_complaints(facts):
        yield complaint.occurred_at + s.days("complaint_overdue_days") + JUST_AFTER


def next_change(
    events: Iterable[CustomerEvent],
    as_of: datetime,
    settings: Settings = DEFAULT,
    until: datetime | None = None,
) -> Answer | None:
    """The answer at the first moment after ``as_of`` (and at or before ``until``) at which
    the state differs from the one at ``as_of``, counting only events up to ``as_of``;
    None when it never changes (in that span)."""
    facts = Facts.of(events, as_of, settings)
    now = answer_from(facts)
    if now is None:
        return None
    for moment in candidates(facts):
        if until is not None and moment > until:
            return None
        later = answer_from(facts.at(moment))
        if later is not None and later.state() != now.state():
            return later
    return None
