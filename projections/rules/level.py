"""The relationship level of DOMAIN.md §3: what the firm does for the customer."""

from __future__ import annotations

from bisect import bisect_right

from journey.events import BenefitGranted, Contacted, ManagerAssigned
from projections.rules.facts import Facts
from projections.rules.verdict import Verdict
from projections.rules.window import ids, order_key, utc

FOLLOW_UPS = ("follow_up", "feedback_request")


def relationship_level(facts: Facts) -> Verdict:
    if facts.n == 0:
        return Verdict("none", "n = 0: no purchase yet")
    return (
        partnership(facts)
        or proactive(facts)
        or accountable(facts)
        or reactive(facts)
        or Verdict("basic", "sells, no follow-up rule holds")
    )


def contacts(facts: Facts, direction: str | None, *purposes: str) -> list[Contacted]:
    return [
        c
        for c in facts.of_type(Contacted)
        if (direction is None or c.direction == direction) and c.purpose in purposes
    ]


def partnership(facts: Facts) -> Verdict | None:
    managers = facts.of_type(ManagerAssigned)
    if not managers:  # the usual case, decided before looking at more events
        return None
    structural = [b for b in facts.of_type(BenefitGranted) if b.kind == "structural"]
    meetings = facts.recent(contacts(facts, None, "meeting"), "partnership_meeting_days")
    if not (structural and meetings):
        return None
    return Verdict(
        "partnership",
        "a manager is assigned, a structural benefit was granted, and a meeting happened "
        f"in the last {facts.settings.partnership_meeting_days} days",
        ids([managers[-1], structural[-1], meetings[-1]]),
    )


def proactive(facts: Facts) -> Verdict | None:
    offers = facts.recent(contacts(facts, "outbound", "offer"), "proactive_days")
    months = {(utc(c.occurred_at).year, utc(c.occurred_at).month) for c in offers}
    if len(months) < facts.settings.proactive_min_months:
        return None
    return Verdict(
        "proactive",
        f"outbound offers in {len(months)} calendar months of the last "
        f"{facts.settings.proactive_days} days (≥ {facts.settings.proactive_min_months})",
        ids(offers),
    )


def accountable(facts: Facts) -> Verdict | None:
    follow_ups = contacts(facts, "outbound", *FOLLOW_UPS)
    reach = facts.settings.days("accountable_follow_up_days")
    for sale in reversed(facts.recent(facts.purchases, "accountable_days")):
        # The earliest follow-up after the sale decides: a later one is no closer.
        after = bisect_right(follow_ups, order_key(sale), key=order_key)
        if after < len(follow_ups) and follow_ups[after].occurred_at - sale.occurred_at <= reach:
            contact = follow_ups[after]
            return Verdict(
                "accountable",
                f"a purchase in the last {facts.settings.accountable_days} days was "
                f"followed within {facts.settings.accountable_follow_up_days} days by an "
                f"outbound {contact.purpose}",
                ids([sale, contact]),
            )
    return None


def reactive(facts: Facts) -> Verdict | None:
    inbound = facts.recent(contacts(facts, "inbound", "inquiry", "support"), "reactive_days")
    if not inbound:
        return None
    return Verdict(
        "reactive",
        f"an inbound inquiry or support contact in the last {facts.settings.reactive_days} days",
        ids(inbound[-1:]),
    )
