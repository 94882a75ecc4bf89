"""Status: every row of DOMAIN.md §3 and its boundaries."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_builders import Story, at

from journey.events import Purchased
from projections.rules.changes import threshold_moments
from projections.rules.facts import Facts
from projections.rules.status import at_risk_moment
from projections.settings import Settings

TICK = timedelta(microseconds=1)


def test_left_until_a_purchase_after_it():
    story = Story()
    story.purchase(0)
    story.left(10)
    story.purchase(20)
    assert story.status(9) == "active"
    assert story.status(10) == "left"
    assert story.status(19) == "left"
    assert story.status(20) == "active"  # left then buy again


def test_left_again_when_the_purchase_after_it_is_fully_refunded():
    story = Story()
    story.left(10)
    story.purchase(20)
    story.refund(30, "o-1", "100")
    assert story.status(25) == "active"
    assert story.status(30) == "left"


def test_left_and_purchase_at_the_same_moment_follow_recording_order():
    before = Story()
    before.purchase(10)
    before.left(10)
    assert before.status(10) == "left"
    after = Story()
    after.left(10)
    after.purchase(10)
    assert after.status(10) == "active"


def test_left_without_purchases():
    story = Story()
    story.left(3)
    assert story.status(3) == "left"


def test_lapsed_more_than_365_days_after_the_last_purchase():
    story = Story()
    story.purchase(0)
    assert story.status(364) == "active"
    assert story.status(365) == "active"  # exactly 365 days: not more
    assert story.status(at(365) + TICK) == "lapsed"
    assert story.status(366) == "lapsed"


def test_a_single_purchase_is_never_at_risk():
    story = Story()
    story.purchase(0)
    assert story.status(300) == "active"


def test_at_risk_after_90_days_when_purchases_were_frequent():
    story = Story()
    story.purchase(0)
    story.purchase(10)  # mean gap 10 days; twice that is under 90
    assert story.status(99) == "active"
    assert story.status(100) == "active"
    assert story.status(at(100) + TICK) == "at_risk"
    assert story.status(101) == "at_risk"


def test_at_risk_after_twice_the_mean_gap_when_that_is_longer():
    story = Story()
    story.purchase(0)
    story.purchase(100)  # mean gap 100 days: at risk after 200 days
    assert story.status(299) == "active"
    assert story.status(300) == "active"
    assert story.status(301) == "at_risk"
    reason = story.answer(301).status
    assert reason.events == (2, 3)


def test_lapsed_outranks_at_risk():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    assert story.status(400) == "lapsed"


def test_active_without_purchases():
    assert Story().status(1000) == "active"


def three_purchases(last_extra: int) -> tuple[Story, datetime]:
    """Purchases at day 0, day 50 and ``last_extra`` microseconds after day 100: the mean
    gap is (100 days + last_extra µs) / 2, a whole number of microseconds only when
    last_extra is even."""
    story = Story()
    story.purchase(0)
    story.purchase(50)
    last = at(100) + last_extra * TICK
    story.add(Purchased, last, order_id="o-3", amount=Decimal("100"))
    return story, last


def test_at_risk_not_yet_when_the_time_since_is_exactly_twice_a_fractional_mean_gap():
    story, last = three_purchases(1)  # twice the mean gap: 100 days + 1 µs exactly
    assert story.status(last + timedelta(days=100) + TICK) == "active"  # equal: not more
    assert story.status(last + timedelta(days=100) + 2 * TICK) == "at_risk"


def test_at_risk_a_microsecond_past_twice_a_fractional_mean_gap():
    story, last = three_purchases(3)  # twice the mean gap: 100 days + 3 µs exactly
    assert story.status(last + timedelta(days=100) + 3 * TICK) == "active"
    assert story.status(last + timedelta(days=100) + 4 * TICK) == "at_risk"


def test_the_gap_factor_is_the_decimal_it_is_written_as():
    rules = Settings(at_risk_min_days=0, at_risk_gap_factor=0.7)  # the float is under 7/10
    story = Story()
    story.purchase(0)
    last = at(0) + 10 * TICK  # 0.7 x the mean gap: 7 µs exactly
    story.add(Purchased, last, order_id="o-2", amount=Decimal("100"))
    assert story.answer(last + 7 * TICK, rules).status.value == "active"
    assert story.answer(last + 8 * TICK, rules).status.value == "at_risk"
    assert at_risk_moment(rules, 2, at(0), last) == last + 8 * TICK


MAX_SPAN = timedelta(days=100) // TICK  # with factors up to 3: at risk before lapsing


@settings(max_examples=150, deadline=None)
@given(
    span=st.one_of(st.integers(0, 1000), st.integers(0, MAX_SPAN)),
    inner=st.lists(st.floats(0, 1), max_size=4),
    factor=st.one_of(
        st.sampled_from([2.0, 1.5, 1.1, 0.7, 0.3, 3.0]), st.floats(0.01, 3, allow_nan=False)
    ),
    min_days=st.sampled_from([0, 1, 90]),
)
def test_status_turns_at_risk_exactly_at_the_moment_the_rule_gives(span, inner, factor, min_days):
    """DOMAIN.md §3 in exact arithmetic: at risk when since > min_days and
    since x (n - 1) > span x factor, in whole microseconds, the factor as the decimal it
    is written as. The status is active a microsecond before ``at_risk_moment`` and at
    risk from it on, and the moment is among the threshold moments."""
    rules = Settings(at_risk_min_days=min_days, at_risk_gap_factor=factor)
    story = Story()
    first, last = at(0), at(0) + span * TICK
    times = [first, *sorted(first + round(span * f) * TICK for f in inner), last]
    for index, moment in enumerate(times):
        story.add(Purchased, moment, order_id=f"o-{index}", amount=Decimal("100"))
    n, exact = len(times), Fraction(repr(factor))

    def by_definition(since: int) -> bool:
        return since > rules.days("at_risk_min_days") // TICK and since * (n - 1) > span * exact

    turns = at_risk_moment(rules, n, first, last)
    assert turns is not None
    since = (turns - last) // TICK
    assert by_definition(since) and not by_definition(since - 1)
    assert story.answer(turns - TICK, rules).status.value == "active"
    assert story.answer(turns, rules).status.value == "at_risk"
    assert turns in threshold_moments(Facts.of(story.events, last, rules))
