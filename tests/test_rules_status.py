"""Status: every row of DOMAIN.md §3 and its boundaries."""

from __future__ import annotations

from datetime import timedelta

from rules_builders import Story, at

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
