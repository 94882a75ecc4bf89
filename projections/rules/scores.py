"""The value scores of DOMAIN.md §3 (all but RFM, which needs the population: rfm.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from journey.events import (
    ComplaintResolved,
    Contacted,
    FeedbackGiven,
    Identified,
    Reidentified,
)
from projections.rules.facts import Facts
from projections.rules.psych import commitment, involvement, trust
from projections.rules.window import whole_days

#: Money is kept to the 4 decimal places DOMAIN.md allows for amounts.
CENT_FRACTION = Decimal("0.0001")

#: Scores that change every day by themselves; change detection ignores them.
DAY_COUNTERS = frozenset({"recency_days", "tenure_days"})


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT_FRACTION)


def value_scores(facts: Facts) -> dict[str, Any]:
    """Every per-customer score, in the order issue 3 lists them (``rfm`` is filled in by
    the query layer, which sees the population)."""
    margin = money(sum((sale.margin for sale in facts.purchases), Decimal(0)))
    cost = cost_to_serve(facts)
    first, last = facts.first_purchase, facts.last_purchase
    frequency, monetary = recent_sales(facts)
    return {
        "purchases": facts.n,
        "revenue": money(sum((sale.amount for sale in facts.purchases), Decimal(0))),
        "margin": margin,
        "cost_to_serve": cost,
        "profit": margin - cost,
        "profitable": margin - cost > 0,
        "first_purchase_at": first.occurred_at if first else None,
        "last_purchase_at": last.occurred_at if last else None,
        "recency_days": whole_days(facts.as_of - last.occurred_at) if last else None,
        "tenure_days": whole_days(facts.as_of - first.occurred_at) if first else None,
        "frequency_365d": frequency,
        "monetary_365d": monetary,
        "rfm": None,
        "nps": nps(facts),
        "trust": trust(facts),
        "commitment": commitment(facts),
        "involvement": involvement(facts),
    }


def recent_sales(facts: Facts) -> tuple[int, Decimal]:
    """How many purchases of P lie in the frequency window, and what they came to."""
    recent = facts.recent(facts.purchases, "frequency_days")
    return len(recent), money(sum((sale.amount for sale in recent), Decimal(0)))


def cost_to_serve(facts: Facts) -> Decimal:
    """Acquisition cost (the latest one stated) + contact costs + resolution costs."""
    stated = [e.acquisition_cost for e in facts.of_type(Identified, Reidentified)]
    stated = [c for c in stated if c is not None]
    acquisition = stated[-1] if stated else Decimal(0)
    costs = [e.cost for e in facts.of_type(Contacted, ComplaintResolved) if e.cost is not None]
    return money(acquisition + sum(costs, Decimal(0)))


def nps(facts: Facts) -> dict[str, Any] | None:
    """The latest feedback score and its class (None without feedback)."""
    feedback = facts.of_type(FeedbackGiven)
    if not feedback:
        return None
    score = feedback[-1].score
    s = facts.settings
    kind = (
        "promoter"
        if score >= s.nps_promoter_min
        else "passive"
        if score >= s.nps_passive_min
        else "detractor"
    )
    return {"score": score, "class": kind}
