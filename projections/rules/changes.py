"""When a customer's state next changes with no new event.

A state is piecewise constant in valid time. It can change by itself only where an event
leaves a window, a threshold of age is crossed (tenure, lapse, at risk, an overdue
complaint) or a whole tenure year is completed; ``candidates`` lists those moments and
``next_change`` evaluates them in order. The history replay and the summary read model
rely on it; the timeline, which keeps only the classifications, looks at just their own
moments (``leaving_moments`` and ``threshold_moments``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from journey.events import Contacted, CustomerEvent, Purchased, ReferralConverted
from projections.rules.answer import Answer, answer_from
from projections.rules.facts import Facts
from projections.rules.level import relationship_level
from projections.rules.psych import YEAR_DAYS, commitment, involvement, open_complaints, trust
from projections.rules.scores import recent_sales
from projections.rules.stage import loyalty_stage
from projections.rules.status import at_risk_moment, status
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
        turns = at_risk_moment(s, facts.n, first.occurred_at, last.occurred_at)
        if turns is not None:
            yield turns
    if first is not None:
        for year in range(1, s.commitment_max_tenure_years + 1):
            yield first.occurred_at + timedelta(days=YEAR_DAYS * year)
    for complaint in open_complaints(facts):
        yield complaint.occurred_at + s.days("complaint_overdue_days") + JUST_AFTER


def leaving_moments(events: Iterable[CustomerEvent], settings: Settings) -> list[datetime]:
    """When each event leaves the window of a classification rule that counts it, in
    order: with ``threshold_moments``, every moment after T at which the stage, status or
    level (not the scores) might change by itself, far fewer than ``candidates``, for the
    timeline. They depend on no other event, so a history's are listed once, not at every
    step; a purchase counts even if a later refund takes it out of P (a moment that then
    changes nothing). A rule that gains a window must gain it here or in
    ``threshold_moments`` (tests/test_rows_equivalence.py checks the timeline against the
    replay, with every window distinct)."""
    return sorted({event.occurred_at + settings.days(w) for event in events for w in counts(event)})


def counts(event: CustomerEvent) -> tuple[str, ...]:
    """The windows of the classification rules that count ``event`` (see stage.py and
    level.py): the settings naming their lengths."""
    if isinstance(event, Purchased):
        return ("client_recent_days", "accountable_days")
    if isinstance(event, ReferralConverted):
        return ("advocate_referral_days",)
    if not isinstance(event, Contacted):
        return ()
    found = ("partnership_meeting_days",) if event.purpose == "meeting" else ()
    if event.direction == "outbound" and event.purpose == "offer":
        found += ("proactive_days",)
    if event.direction == "inbound" and event.purpose in ("inquiry", "support"):
        found += ("reactive_days",)
    return found


def threshold_moments(facts: Facts) -> list[datetime]:
    """The ages at which a classification might change, which depend on P at T: the
    client's tenure, lapsing, turning at risk. The timeline asks ``Walk.thresholds``
    (rules/walk.py), kept equal to this by tests/test_rules_walk.py."""
    s, first, last = facts.settings, facts.first_purchase, facts.last_purchase
    if first is None or last is None:
        return []
    moments = [
        first.occurred_at + s.days("client_min_tenure_days"),
        last.occurred_at + s.days("lapsed_after_days") + JUST_AFTER,
    ]
    turns = at_risk_moment(s, facts.n, first.occurred_at, last.occurred_at)
    if turns is not None:
        moments.append(turns)
    return moments


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
    return change_after(facts, answer_from(facts), until)


def change_after(facts: Facts, now: Answer | None, until: datetime | None = None) -> Answer | None:
    """``next_change`` from facts and their answer already at hand, so neither is computed
    twice."""
    moment = moment_of_change(facts, now, until)
    return None if moment is None else answer_from(facts.at(moment))


def moment_of_change(
    facts: Facts, now: Answer | None, until: datetime | None = None, reasons: bool = False
) -> datetime | None:
    """When ``change_after`` finds its answer: the candidates are compared by
    ``moving_state``, not by whole answers. With ``reasons``, a classification whose
    reason changes (its rule's words or its events, as when an event leaves a window and
    the value holds by others) changes too: what a stored summary row shows."""
    if now is None:
        return None
    verdicts = tuple(now.verdicts().values())
    classified = verdicts if reasons else tuple(v.value for v in verdicts)
    current = (*classified, *(now.scores[k] for k in TIMED))
    for moment in candidates(facts):
        if until is not None and moment > until:
            return None
        if moving_state(facts.at(moment), reasons) != current:
            return moment
    return None


#: The scores that look through a window or at an age, in ``moving_state``'s order.
TIMED = ("frequency_365d", "monetary_365d", "trust", "commitment", "involvement")


def moving_state(facts: Facts, reasons: bool = False) -> tuple[Any, ...]:
    """The part of ``Answer.state()`` that can differ between ``facts`` and
    ``facts.at(later)``: the classifications and the ``TIMED`` scores. Every other score
    it compares depends on the events alone, which ``at`` keeps, so two moments' states
    differ exactly when these do (tests/test_rows_equivalence.py checks ``next_change``
    against whole answers compared). With ``reasons``, the classifications' whole verdicts."""
    verdicts = (loyalty_stage(facts), status(facts), relationship_level(facts))
    return (
        *(verdicts if reasons else (v.value for v in verdicts)),
        *recent_sales(facts),
        trust(facts),
        commitment(facts),
        involvement(facts),
    )
