"""The loyalty stage of DOMAIN.md §3: the first rule that holds, top down."""

from __future__ import annotations

from journey.events import (
    Contacted,
    Disqualified,
    Identified,
    Qualified,
    ReferralConverted,
    Reidentified,
)
from projections.rules.facts import Facts
from projections.rules.verdict import Verdict
from projections.rules.window import ids, whole_days


def loyalty_stage(facts: Facts) -> Verdict:
    as_client = client(facts)  # asked once: advocate builds on it
    return (
        advocate(facts, as_client)
        or as_client
        or repeat(facts)
        or first_time(facts)
        or disqualified(facts)
        or prospect(facts)
        or suspect(facts)
    )


def advocate(facts: Facts, as_client: Verdict | None = None) -> Verdict | None:
    as_client = as_client or client(facts)
    if as_client is None:
        return None
    converted = facts.recent(facts.of_type(ReferralConverted), "advocate_referral_days")
    if not converted:
        return None
    days = facts.settings.advocate_referral_days
    return Verdict(
        "advocate",
        f"a client ({as_client.rule}) with {len(converted)} converted referral(s) "
        f"in the last {days} days",
        tuple(sorted({*as_client.events, *ids(converted)})),
    )


def client(facts: Facts) -> Verdict | None:
    s = facts.settings
    first = facts.first_purchase
    if first is None or facts.n < s.client_min_purchases:
        return None
    tenure = facts.as_of - first.occurred_at
    if tenure < s.days("client_min_tenure_days"):  # the cheapest test first
        return None
    categories = {sale.category for sale in facts.purchases if sale.category is not None}
    recent = facts.recent(facts.purchases, "client_recent_days")
    if len(categories) < s.client_min_categories or len(recent) < s.client_min_recent_purchases:
        return None
    return Verdict(
        "client",
        f"n = {facts.n} ≥ {s.client_min_purchases}, {len(categories)} categories "
        f"≥ {s.client_min_categories}, first purchase {whole_days(tenure)} days ago "
        f"≥ {s.client_min_tenure_days}, {len(recent)} purchases in the last "
        f"{s.client_recent_days} days ≥ {s.client_min_recent_purchases}",
        ids(facts.purchases),
    )


def repeat(facts: Facts) -> Verdict | None:
    minimum = facts.settings.repeat_min_purchases
    if facts.n < minimum:
        return None
    return Verdict("repeat", f"n = {facts.n} ≥ {minimum}", ids(facts.purchases))


def first_time(facts: Facts) -> Verdict | None:
    if facts.n < 1:
        return None
    return Verdict("first_time", f"n = {facts.n}", ids(facts.purchases))


def disqualified(facts: Facts) -> Verdict | None:
    decisions = facts.of_type(Qualified, Disqualified)
    if facts.n or not decisions or not isinstance(decisions[-1], Disqualified):
        return None
    return Verdict(
        "disqualified",
        "n = 0 and the latest qualified/disqualified event is disqualified",
        ids(decisions[-1:]),
    )


def prospect(facts: Facts) -> Verdict | None:
    if facts.n:
        return None
    qualified = facts.of_type(Qualified)
    inquiries = [
        c for c in facts.of_type(Contacted) if c.direction == "inbound" and c.purpose == "inquiry"
    ]
    referred = [e for e in facts.of_type(Identified, Reidentified) if e.referred_by]
    grounds = [
        name
        for name, found in (
            ("qualified", qualified),
            ("an inbound inquiry", inquiries),
            ("referred_by set", referred),
        )
        if found
    ]
    if not grounds:
        return None
    return Verdict(
        "prospect", "n = 0 and " + ", ".join(grounds), ids([*qualified, *inquiries, *referred])
    )


def suspect(facts: Facts) -> Verdict:
    return Verdict(
        "suspect",
        "n = 0, not qualified, no inbound inquiry, not referred",
        ids(facts.of_type(Identified, Reidentified)),
    )
