"""Loyalty stage: every row of DOMAIN.md §3 and its boundaries (day before, of, after)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rules_builders import Story, at, client_story

from journey.events import Identified


def test_advocate_needs_a_conversion_in_the_last_365_days():
    story = client_story()
    story.converted(100)
    assert story.stage(180) == "advocate"
    assert story.stage(464) == "advocate"  # the day before: conversion 364 days ago
    assert story.stage(465) == "client"  # the day of: exactly 365 days before T is outside
    assert story.stage(466) == "client"
    reasons = story.answer(180).loyalty_stage
    assert story.events[-1].originator_version in reasons.events


def test_advocate_needs_to_be_a_client():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    story.converted(20)
    assert story.stage(30) == "repeat"


def test_client_from_the_day_tenure_reaches_180_days():
    story = client_story()
    assert story.stage(179) == "repeat"
    assert story.stage(180) == "client"
    assert story.stage(181) == "client"


def test_client_needs_two_purchases_in_the_last_365_days():
    story = client_story()  # purchases on days 0, 60, 120, 170
    assert story.stage(484) == "client"
    assert story.stage(485) == "repeat"  # day 120 is exactly 365 days before: outside
    assert story.stage(486) == "repeat"


def test_client_needs_four_purchases():
    story = Story()
    for day, category in ((0, "a"), (60, "b"), (120, "a")):
        story.purchase(day, category=category)
    assert story.stage(200) == "repeat"
    story.purchase(190, category="b")
    assert story.stage(189) == "repeat"
    assert story.stage(190) == "client"
    assert story.stage(191) == "client"


def test_client_needs_two_categories():
    story = Story()
    for day in (0, 60, 120, 170):
        story.purchase(day, category="books")
    story.purchase(170, category=None)  # no category is not a second category
    assert story.stage(200) == "repeat"


def test_repeat_from_the_second_purchase_first_time_from_the_first():
    story = Story()
    story.purchase(5)
    story.purchase(10)
    assert story.stage(4) == "suspect"
    assert story.stage(5) == "first_time"
    assert story.stage(9) == "first_time"
    assert story.stage(10) == "repeat"
    assert story.stage(11) == "repeat"


def test_disqualified_while_the_latest_decision_is_disqualified():
    story = Story()
    story.disqualified(10)
    assert story.stage(9) == "suspect"
    assert story.stage(10) == "disqualified"
    assert story.stage(11) == "disqualified"


def test_disqualify_then_qualify_then_buy():
    story = Story()
    story.disqualified(10)
    story.qualified(20)
    story.purchase(30)
    assert [story.stage(day) for day in (15, 19, 20, 29, 30)] == [
        "disqualified",
        "disqualified",
        "prospect",
        "prospect",
        "first_time",
    ]


def test_qualify_then_disqualify_at_the_same_moment_follows_recording_order():
    story = Story()
    story.qualified(10)
    story.disqualified(10)
    assert story.stage(10) == "disqualified"


def test_a_purchase_outranks_disqualification():
    story = Story()
    story.disqualified(10)
    story.purchase(20)
    assert story.stage(20) == "first_time"


@pytest.mark.parametrize(
    ("direction", "purpose", "expected"),
    [
        ("inbound", "inquiry", "prospect"),
        ("outbound", "inquiry", "suspect"),
        ("inbound", "support", "suspect"),
    ],
)
def test_prospect_by_an_inbound_inquiry(direction, purpose, expected):
    story = Story()
    story.contact(10, direction, purpose)
    assert story.stage(9) == "suspect"
    assert story.stage(10) == expected
    assert story.stage(11) == expected


def test_prospect_by_qualification():
    story = Story()
    story.qualified(10)
    assert (story.stage(9), story.stage(10), story.stage(11)) == ("suspect", "prospect", "prospect")


def test_prospect_by_referral():
    story = Story(referred_by="c-7")
    assert story.stage(0) == "prospect"
    assert story.answer(0).loyalty_stage.events == (1,)


def test_prospect_by_a_later_identification_with_referred_by():
    story = Story()
    story.add(Identified, 10, originator_topic="x", referred_by="c-7")
    assert story.stage(9) == "suspect"
    assert story.stage(10) == "prospect"


def test_suspect_otherwise_and_not_found_before_the_first_event():
    story = Story(first=5)
    assert story.stage(5) == "suspect"
    from projections.rules import evaluate

    assert evaluate(story.events, at(5) - timedelta(microseconds=1)) is None


def test_a_full_refund_takes_the_purchase_out_of_p():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    story.refund(20, "o-2", "100")
    assert story.stage(19) == "repeat"
    assert story.stage(20) == "first_time"


def test_a_partial_refund_keeps_the_purchase_in_p():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    story.refund(20, "o-2", "99.99")
    assert story.stage(20) == "repeat"


def books_then_music() -> Story:
    """Four books purchases, then one of music (order o-5) on day 175."""
    story = Story()
    for day in (0, 60, 120, 170):
        story.purchase(day, category="books")
    story.purchase(175, category="music")
    return story


def test_a_fully_refunded_purchase_adds_no_category():
    story = books_then_music()
    story.refund(190, "o-5", "100")
    assert story.stage(185) == "client"  # n = 5, books and music
    assert story.stage(190) == "repeat"  # n = 4, books only


def test_a_partially_refunded_purchase_keeps_its_category():
    story = books_then_music()
    story.refund(190, "o-5", "99")
    assert story.stage(190) == "client"
