"""The status of DOMAIN.md §3: left, lapsed, at risk or active."""

from __future__ import annotations

from datetime import timedelta

from journey.events import Left
from projections.rules.facts import Facts
from projections.rules.verdict import Verdict
from projections.rules.window import ids, order_key, whole_days


def status(facts: Facts) -> Verdict:
    return left(facts) or lapsed(facts) or at_risk(facts) or active(facts)


def left(facts: Facts) -> Verdict | None:
    lefts = facts.of_type(Left)
    if not lefts:
        return None
    last_left = lefts[-1]
    if any(order_key(sale) > order_key(last_left) for sale in facts.purchases):
        return None
    return Verdict("left", "the latest left event has no purchase of P after it", ids(lefts[-1:]))


def lapsed(facts: Facts) -> Verdict | None:
    last = facts.last_purchase
    limit = facts.settings.days("lapsed_after_days")
    if last is None or facts.as_of - last.occurred_at <= limit:
        return None
    return Verdict(
        "lapsed",
        f"the last purchase is more than {facts.settings.lapsed_after_days} days before T "
        f"({whole_days(facts.as_of - last.occurred_at)} whole days)",
        ids([last]),
    )


def at_risk_limit(facts: Facts) -> timedelta | None:
    """How long after the last purchase a customer turns at risk (None: never, n too small)."""
    s = facts.settings
    if facts.n < s.at_risk_min_purchases:
        return None
    first, last = facts.purchases[0], facts.purchases[-1]
    mean_gap = (last.occurred_at - first.occurred_at) / (facts.n - 1)
    return max(s.days("at_risk_min_days"), mean_gap * s.at_risk_gap_factor)


def at_risk(facts: Facts) -> Verdict | None:
    limit = at_risk_limit(facts)
    last = facts.last_purchase
    if limit is None or last is None or facts.as_of - last.occurred_at <= limit:
        return None
    s = facts.settings
    return Verdict(
        "at_risk",
        f"{whole_days(facts.as_of - last.occurred_at)} days since the last purchase exceed both "
        f"{s.at_risk_min_days} days and {s.at_risk_gap_factor:g}x the mean gap over P",
        ids([facts.purchases[0], last]),
    )


def active(facts: Facts) -> Verdict:
    return Verdict("active", "not left, lapsed or at risk", ids(facts.purchases[-1:]))
