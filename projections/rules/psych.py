"""Trust, commitment and involvement: the psychological determinants of customer value.

Each is an integer 0-100, a capped sum of documented terms (README: "Trust, commitment,
involvement"); every weight and cap is a setting.

* trust = base + per_satisfied * satisfied resolutions - per_unsatisfied * unsatisfied
  resolutions - per_overdue * complaints open more than ``complaint_overdue_days``.
* commitment = per_repeat * min(n - 1, cap) + per_year * min(whole tenure years, cap)
  + per_converted * min(converted referrals, cap).
* involvement = per_contact * min(inbound contacts, cap) + per_feedback * min(feedback,
  cap) + per_referral * min(referrals, cap), each counted over the last
  ``involvement_days``.
"""

from __future__ import annotations

from journey.events import (
    Complained,
    ComplaintResolved,
    Contacted,
    FeedbackGiven,
    ReferralConverted,
    Referred,
)
from projections.rules.facts import Facts
from projections.rules.window import whole_days

YEAR_DAYS = 365


def clamp(value: int) -> int:
    return max(0, min(100, value))


def open_complaints(facts: Facts) -> list[Complained]:
    """Complaints not resolved by T."""
    resolved = {r.complaint_id for r in facts.of_type(ComplaintResolved)}
    return [c for c in facts.of_type(Complained) if c.complaint_id not in resolved]


def overdue_complaints(facts: Facts) -> list[Complained]:
    """Complaints still open at T, opened more than the overdue limit before T."""
    limit = facts.settings.days("complaint_overdue_days")
    return [c for c in open_complaints(facts) if facts.as_of - c.occurred_at > limit]


def trust(facts: Facts) -> int:
    s = facts.settings
    resolutions = facts.of_type(ComplaintResolved)
    satisfied = sum(1 for r in resolutions if r.satisfied)
    unsatisfied = len(resolutions) - satisfied
    return clamp(
        s.trust_base
        + s.trust_per_satisfied * satisfied
        - s.trust_per_unsatisfied * unsatisfied
        - s.trust_per_overdue * len(overdue_complaints(facts))
    )


def tenure_years(facts: Facts) -> int:
    first = facts.first_purchase
    return whole_days(facts.as_of - first.occurred_at) // YEAR_DAYS if first else 0


def commitment(facts: Facts) -> int:
    s = facts.settings
    repeats = max(facts.n - 1, 0)
    converted = len(facts.of_type(ReferralConverted))
    return clamp(
        s.commitment_per_repeat * min(repeats, s.commitment_max_repeats)
        + s.commitment_per_tenure_year * min(tenure_years(facts), s.commitment_max_tenure_years)
        + s.commitment_per_converted * min(converted, s.commitment_max_converted)
    )


def involvement(facts: Facts) -> int:
    s = facts.settings
    inbound = [c for c in facts.of_type(Contacted) if c.direction == "inbound"]
    contacts = len(facts.recent(inbound, "involvement_days"))
    feedback = len(facts.recent(facts.of_type(FeedbackGiven), "involvement_days"))
    referrals = len(facts.recent(facts.of_type(Referred), "involvement_days"))
    return clamp(
        s.involvement_per_contact * min(contacts, s.involvement_max_contacts)
        + s.involvement_per_feedback * min(feedback, s.involvement_max_feedback)
        + s.involvement_per_referral * min(referrals, s.involvement_max_referrals)
    )
