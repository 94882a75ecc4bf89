"""Value scores, NPS, RFM, and trust, commitment and involvement: their directions and
exact values at and past every cap."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rules_builders import Story, at

from journey.events import Reidentified
from projections.rules.rfm import Population, RfmInputs
from projections.settings import Settings


def scores(story: Story, day: float) -> dict:
    return story.answer(day).scores


def test_revenue_and_margin_net_of_a_partial_refund():
    story = Story()
    story.purchase(0, amount="100", margin=Decimal("40"))
    story.refund(5, "o-1", "25")
    before, after = scores(story, 4), scores(story, 5)
    assert (before["revenue"], before["margin"]) == (Decimal(100), Decimal(40))
    assert (after["revenue"], after["margin"]) == (Decimal(75), Decimal(30))
    assert after["purchases"] == 1


def test_margin_defaults_to_the_margin_rate_at_read_time():
    story = Story()
    story.purchase(0, amount="59.90")
    assert scores(story, 0)["margin"] == Decimal("17.97")
    cheaper = story.answer(0, Settings(default_margin_rate=Decimal("0.5")))
    assert cheaper.scores["margin"] == Decimal("29.95")


def test_a_full_refund_removes_the_purchase_from_every_score():
    story = Story()
    story.purchase(0, amount="10")
    story.purchase(1, amount="30")
    story.refund(2, "o-2", "30")
    got = scores(story, 2)
    assert (got["purchases"], got["revenue"], got["margin"]) == (1, Decimal(10), Decimal(3))
    assert got["last_purchase_at"] == at(0)


def test_cost_to_serve_and_profit_up_to_t():
    story = Story(acquisition_cost=Decimal("20"))
    story.purchase(0, amount="100")  # margin 30
    story.contact(1, "outbound", "offer", cost=Decimal("5"))
    story.complaint(2)
    story.resolved(3, True, cost=Decimal("4.5"))
    story.contact(10, "outbound", "offer", cost=Decimal("1"))
    at_3 = scores(story, 3)
    assert at_3["cost_to_serve"] == Decimal("29.5")
    assert at_3["profit"] == Decimal("0.5")
    assert at_3["profitable"] is True
    at_10 = scores(story, 10)
    assert at_10["profit"] == Decimal("-0.5")
    assert at_10["profitable"] is False


def test_profit_of_exactly_zero_is_not_profitable():
    story = Story(acquisition_cost=Decimal("30"))
    story.purchase(0, amount="100")
    assert scores(story, 0)["profit"] == 0
    assert scores(story, 0)["profitable"] is False


def test_recency_and_tenure_are_whole_days():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    got = scores(story, 12.9)
    assert (got["recency_days"], got["tenure_days"]) == (2, 12)
    assert got["first_purchase_at"] == at(0)
    assert got["last_purchase_at"] == at(10)
    assert scores(Story(), 5)["recency_days"] is None


def test_frequency_and_monetary_over_the_last_365_days():
    story = Story()
    story.purchase(0, amount="10")
    story.purchase(100, amount="20")
    for day, expected in ((364, (2, 30)), (365, (1, 20)), (366, (1, 20))):
        got = scores(story, day)
        assert (got["frequency_365d"], got["monetary_365d"]) == (expected[0], Decimal(expected[1]))


@pytest.mark.parametrize(
    ("score", "kind"),
    [(10, "promoter"), (9, "promoter"), (8, "passive"), (7, "passive"), (6, "detractor"),
     (0, "detractor")],
)
def test_nps_class(score, kind):
    story = Story()
    story.feedback(1, 3)
    story.feedback(2, score)
    assert scores(story, 2)["nps"] == {"score": score, "class": kind}
    assert scores(story, 1)["nps"] == {"score": 3, "class": "detractor"}
    assert scores(story, 0)["nps"] is None


def test_rfm_quintiles_among_five_distinct_customers():
    members = [RfmInputs(recency_days=r, frequency=f, monetary=Decimal(m))
               for r, f, m in ((1, 5, 50), (2, 4, 40), (3, 3, 30), (4, 2, 20), (5, 1, 10))]
    population = Population(members)
    got = [population.scores(m) for m in members]
    assert [g["r"] for g in got] == [5, 4, 3, 2, 1]
    assert [g["f"] for g in got] == [5, 4, 3, 2, 1]
    assert [g["m"] for g in got] == [5, 4, 3, 2, 1]


def test_rfm_ties_share_the_score_of_the_middle_of_their_ranks():
    same = RfmInputs(3, 2, Decimal(10))
    assert Population([same, same]).scores(same) == {"r": 3, "f": 3, "m": 3}
    assert Population([same]).scores(same) == {"r": 3, "f": 3, "m": 3}


def test_rfm_a_block_of_customers_who_bought_nothing_lately_does_not_score_high():
    """78 of 100 customers with no purchase in the last year (most of CDNOW's on its last day)
    took the top of the ranks they span: F = 4, beside 5 for those who did buy."""
    counts = {0: 78, 1: 15, 2: 7}
    members = [RfmInputs(400, f, Decimal(f * 10)) for f, n in counts.items() for _ in range(n)]
    population = Population(members)
    by_frequency = {m.frequency: population.scores(m) for m in members}
    assert {f: s["f"] for f, s in by_frequency.items()} == {0: 2, 1: 5, 2: 5}
    assert {f: s["m"] for f, s in by_frequency.items()} == {0: 2, 1: 5, 2: 5}
    assert {s["r"] for s in by_frequency.values()} == {3}  # all alike: the middle


@given(st.lists(st.integers(0, 6), min_size=1, max_size=40))
def test_rfm_scores_rise_with_the_value_and_stay_within_the_ranks_ties_span(values):
    members = [RfmInputs(30 - v, v, Decimal(v)) for v in values]
    population = Population(members)
    n = len(values)
    for member in members:
        got = population.scores(member)
        worse = sum(v < member.frequency for v in values)
        equal = values.count(member.frequency)
        # the block spans (worse, worse + equal] of the population's (0, n]
        lowest, highest = max(1, -(-5 * worse // n)), -(-5 * (worse + equal) // n)
        assert lowest <= got["f"] <= highest
        assert got["f"] == got["m"] == got["r"]  # the same order on every axis
    ordered = sorted(members, key=lambda m: m.frequency)
    scores = [population.scores(m)["f"] for m in ordered]
    assert scores == sorted(scores)


def test_rfm_of_ten_customers_are_quintiles():
    members = [RfmInputs(i, i, Decimal(i)) for i in range(10)]
    population = Population(members)
    assert [population.scores(m)["f"] for m in members] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [population.scores(m)["r"] for m in members] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


# Trust, commitment, involvement: each direction DOMAIN.md names.


def test_trust_rises_with_satisfied_resolutions():
    story = Story()
    story.complaint(1)
    story.resolved(2, True)
    assert scores(story, 2)["trust"] > scores(story, 1)["trust"]


def test_trust_falls_with_unsatisfied_resolutions():
    story = Story()
    story.complaint(1)
    story.resolved(2, False)
    assert scores(story, 2)["trust"] < scores(story, 1)["trust"]


def test_trust_falls_with_a_complaint_open_over_30_days():
    story = Story()
    story.complaint(1)
    assert scores(story, 31)["trust"] == scores(story, 1)["trust"]  # exactly 30 days
    later = story.answer(at(31) + timedelta(microseconds=1)).scores["trust"]
    assert later < scores(story, 1)["trust"]
    story.resolved(40, True)
    assert scores(story, 40)["trust"] > later


def test_commitment_rises_with_repeat_purchases():
    story = Story()
    story.purchase(0)
    story.purchase(1)
    assert scores(story, 1)["commitment"] > scores(story, 0)["commitment"]


def test_commitment_rises_with_tenure():
    story = Story()
    story.purchase(0)
    assert scores(story, 365)["commitment"] > scores(story, 364)["commitment"]


def test_commitment_rises_with_converted_referrals():
    story = Story()
    story.purchase(0)
    story.converted(5)
    assert scores(story, 5)["commitment"] > scores(story, 4)["commitment"]


def test_involvement_rises_with_customer_initiated_contacts_only():
    story = Story()
    story.contact(1, "outbound", "offer")
    assert scores(story, 1)["involvement"] == scores(story, 0)["involvement"]
    story.contact(2, "inbound", "inquiry")
    assert scores(story, 2)["involvement"] > scores(story, 1)["involvement"]


def test_involvement_rises_with_feedback_and_referrals():
    story = Story()
    story.feedback(1, 5)
    story.referral(2)
    assert scores(story, 1)["involvement"] > scores(story, 0)["involvement"]
    assert scores(story, 2)["involvement"] > scores(story, 1)["involvement"]


@pytest.mark.parametrize("day", [30, 400, 4000])
def test_psychological_scores_stay_within_0_and_100(day):
    story = Story()
    for i in range(10):
        story.complaint(i, complaint_id=f"k-{i}")
        story.purchase(i)
        story.contact(i, "inbound", "support")
        story.feedback(i, 10)
        story.referral(i, referred=f"c-{i + 10}")
        story.converted(i, referred=f"c-{i + 10}")
    for i in range(5):
        story.resolved(20 + i, False, complaint_id=f"k-{i}")
    got = scores(story, day)
    for name in ("trust", "commitment", "involvement"):
        assert 0 <= got[name] <= 100


# Trust, commitment, involvement: the exact formulas of README ("Trust, commitment,
# involvement"), at and past every cap, worked out by hand from the defaults.


def test_trust_weights_satisfied_and_unsatisfied_resolutions():
    story = Story()
    for i in (1, 2, 3):
        story.complaint(1, complaint_id=f"k-{i}")
    story.resolved(2, True, complaint_id="k-1")
    story.resolved(3, True, complaint_id="k-2")
    story.resolved(4, False, complaint_id="k-3")
    assert scores(story, 1)["trust"] == 50
    assert scores(story, 2)["trust"] == 60  # 50 + 10
    assert scores(story, 3)["trust"] == 70  # 50 + 2 x 10
    assert scores(story, 4)["trust"] == 55  # 50 + 2 x 10 - 15


def test_trust_of_unsatisfied_resolutions_only_and_its_floor():
    story = Story()
    for i in range(4):
        story.complaint(1, complaint_id=f"k-{i}")
        story.resolved(2 + i, False, complaint_id=f"k-{i}")
    assert [scores(story, day)["trust"] for day in (2, 3, 4, 5)] == [35, 20, 5, 0]  # 50 - 60 → 0


def test_trust_counts_each_overdue_complaint():
    story = Story()
    story.complaint(1, complaint_id="k-1")
    story.complaint(2, complaint_id="k-2")
    assert scores(story, 31)["trust"] == 50  # k-1 is exactly 30 days old
    assert scores(story, 31.5)["trust"] == 40  # k-1 overdue
    assert scores(story, 32.5)["trust"] == 30  # both overdue


def test_a_complaint_resolved_after_40_days_is_no_longer_overdue():
    story = Story()
    story.complaint(1)
    story.resolved(41, True)
    assert scores(story, 40)["trust"] == 40  # open for 39 days: 50 - 10
    assert scores(story, 41)["trust"] == 60  # resolved, satisfied: 50 + 10, nothing overdue
    assert scores(story, 100)["trust"] == 60


def test_commitment_repeats_are_capped_at_five():
    story = Story()
    for day in range(8):
        story.purchase(day)  # n = day + 1, no whole year of tenure yet
    got = [scores(story, day)["commitment"] for day in range(8)]
    assert got == [0, 8, 16, 24, 32, 40, 40, 40]  # 8 x min(n - 1, 5)


def test_commitment_tenure_years_are_whole_and_capped_at_three():
    story = Story()
    story.purchase(0)
    days = (364, 365, 729, 730, 1094, 1095, 1460, 4000)
    got = [scores(story, day)["commitment"] for day in days]
    assert got == [0, 10, 10, 20, 20, 30, 30, 30]  # 10 x min(whole years, 3)


def test_commitment_converted_referrals_are_capped_at_two():
    story = Story()
    story.purchase(0)
    for day in (1, 2, 3):
        story.converted(day, referred=f"c-{day + 10}")
    got = [scores(story, day)["commitment"] for day in (0, 1, 2, 3)]
    assert got == [0, 15, 30, 30]  # 15 x min(converted, 2)


def test_commitment_sums_its_three_terms():
    story = Story()
    for day in range(7):
        story.purchase(day)
    story.converted(8, referred="c-11")
    assert scores(story, 8)["commitment"] == 55  # 8 x min(6, 5) + 15 x 1
    assert scores(story, 800)["commitment"] == 75  # and 10 x 2 whole years


def test_involvement_inbound_contacts_are_capped_at_four():
    story = Story()
    for day in range(1, 7):
        story.contact(day, "inbound", "support")
    got = [scores(story, day)["involvement"] for day in range(1, 7)]
    assert got == [10, 20, 30, 40, 40, 40]  # 10 x min(contacts, 4)


def test_involvement_feedback_is_capped_at_three():
    story = Story()
    for day in range(1, 6):
        story.feedback(day, 8)
    got = [scores(story, day)["involvement"] for day in range(1, 6)]
    assert got == [10, 20, 30, 30, 30]  # 10 x min(feedback, 3)


def test_involvement_referrals_are_capped_at_two():
    story = Story()
    for day in range(1, 5):
        story.referral(day, referred=f"c-{day + 10}")
    got = [scores(story, day)["involvement"] for day in range(1, 5)]
    assert got == [15, 30, 30, 30]  # 15 x min(referrals, 2)


def test_involvement_counts_the_direction_not_the_purpose():
    story = Story()
    story.contact(1, "outbound", "inquiry")  # the firm asks: not customer-initiated
    story.contact(2, "inbound", "offer")  # the customer comes to the firm: counts
    assert scores(story, 1)["involvement"] == 0
    assert scores(story, 2)["involvement"] == 10


def test_involvement_counts_only_the_last_365_days():
    story = Story()
    story.contact(0, "inbound", "inquiry")
    story.feedback(10, 9)
    story.referral(20)
    assert scores(story, 364)["involvement"] == 10 + 10 + 15
    assert scores(story, 365)["involvement"] == 10 + 15  # the contact is exactly 365 days old
    assert scores(story, 375)["involvement"] == 15  # the feedback too
    assert scores(story, 385)["involvement"] == 0  # and the referral


def test_cost_to_serve_takes_the_latest_stated_acquisition_cost():
    story = Story(acquisition_cost=Decimal("20"))
    story.add(Reidentified, 5, acquisition_cost=Decimal("35"))
    story.add(Reidentified, 6, source="web")  # states no cost: the latest stated stays
    assert scores(story, 4)["cost_to_serve"] == Decimal("20")
    assert scores(story, 5)["cost_to_serve"] == Decimal("35")
    assert scores(story, 6)["cost_to_serve"] == Decimal("35")
