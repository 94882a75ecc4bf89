"""The status of DOMAIN.md §3: left, lapsed, at risk or active."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from fractions import Fraction

from journey.events import Left
from projections.rules.facts import Facts
from projections.rules.verdict import Verdict
from projections.rules.window import JUST_AFTER, ids, order_key, whole_days
from projections.settings import Settings


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
    purchases = facts.purchases
    if not purchases:
        return None
    span = purchases[-1].occurred_at - purchases[0].occurred_at
    return at_risk_limit_of(facts.settings, facts.n, span)


def at_risk_limit_of(settings: Settings, n: int, span: timedelta) -> timedelta | None:
    """The longest time since the last purchase at which a customer with ``n`` purchases
    in P, ``span`` apart from first to last, is not yet at risk (None: never, n too small).

    DOMAIN.md §3: at risk when the time since the last purchase exceeds both
    ``at_risk_min_days`` and ``at_risk_gap_factor`` times the mean gap ``span / (n - 1)``.
    Decided exactly, never rounded: a ``timedelta`` divided by ``n - 1`` rounds to the
    microsecond, and a float product rounds again, which moved the boundary by a
    microsecond either way for sub-second times. Times are whole microseconds, so
    ``since > span * factor / (n - 1)`` holds exactly when ``since`` exceeds that bound
    rounded down to the microsecond, worked out here in integers; the customer turns at
    risk one microsecond after the limit (``at_risk_moment``). status.py, walk.py and
    changes.py all ask this, so the rule and its threshold moments cannot drift apart.
    """
    if n < settings.at_risk_min_purchases:
        return None
    factor = gap_factor(settings.at_risk_gap_factor)
    bound = span // JUST_AFTER * factor.numerator // (factor.denominator * (n - 1))
    return max(settings.days("at_risk_min_days"), timedelta(microseconds=bound))


def at_risk_moment(settings: Settings, n: int, first: datetime, last: datetime) -> datetime | None:
    """The first moment at which a customer whose ``n`` purchases of P run from ``first``
    to ``last`` is at risk, barring new events (None: never, n too small): the later of
    the two terms' moments, ``last + at_risk_min_days + 1 µs`` and
    ``last + floor(span * factor / (n - 1)) µs + 1 µs``, span in microseconds."""
    limit = at_risk_limit_of(settings, n, last - first)
    return None if limit is None else last + limit + JUST_AFTER


@functools.cache
def gap_factor(factor: float) -> Fraction:
    """``at_risk_gap_factor`` as an exact fraction: the one its shortest decimal spelling
    (``repr``) names, so ``1.1`` is 11/10, not the binary float's
    1.100000000000000088817841970012523... The setting is written in decimal (JSON, TOML,
    Python literals) and the float only carries it; ``Fraction(float)`` would decide the
    boundary by the carrier's binary error, e.g. 0.7 is a little under 7/10 and would put
    a customer whose bound is exactly a whole microsecond at risk a microsecond early.
    """
    return Fraction(repr(factor))


def at_risk(facts: Facts) -> Verdict | None:
    limit = at_risk_limit(facts)
    last = facts.last_purchase
    if limit is None or last is None or facts.as_of - last.occurred_at <= limit:
        return None
    s, first = facts.settings, facts.purchases[0]
    mean_gap = (last.occurred_at - first.occurred_at) / (facts.n - 1) / timedelta(days=1)
    return Verdict(
        "at_risk",
        f"the last purchase is more than {s.at_risk_min_days} days and more than "
        f"{s.at_risk_gap_factor:g}x the mean gap over P ({mean_gap:g} days) before T "
        f"({whole_days(facts.as_of - last.occurred_at)} whole days)",
        ids([first, last]),
    )


def active(facts: Facts) -> Verdict:
    return Verdict("active", "not left, lapsed or at risk", ids(facts.purchases[-1:]))
