"""Relationship level: every row of DOMAIN.md §3 and its boundaries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from rules_builders import Story, at


def partner(meeting_day: float = 10) -> Story:
    story = Story()
    story.purchase(0)
    story.manager(1)
    story.benefit(2, "structural")
    story.contact(meeting_day, "outbound", "meeting")
    return story


def test_none_while_no_purchase():
    story = partner()
    story.events = [e for e in story.events if e.TYPE != "purchase"]
    assert story.level(20) == "none"


def test_partnership_while_a_meeting_is_in_the_last_180_days():
    story = partner(meeting_day=10)
    assert story.level(189) == "partnership"
    assert story.level(190) == "basic"  # the meeting is exactly 180 days before T
    assert story.level(191) == "basic"


def test_partnership_from_the_day_of_the_meeting():
    story = partner(meeting_day=10)
    assert story.level(9) == "basic"
    assert story.level(10) == "partnership"


def test_partnership_needs_a_structural_benefit_and_a_manager():
    story = Story()
    story.purchase(0)
    story.manager(1)
    story.benefit(2, "financial")
    story.contact(3, "inbound", "meeting")
    assert story.level(4) == "basic"
    story.benefit(5, "structural")
    assert story.level(5) == "partnership"
    no_manager = Story()
    no_manager.purchase(0)
    no_manager.benefit(2, "structural")
    no_manager.contact(3, "inbound", "meeting")
    assert no_manager.level(4) == "basic"


def test_proactive_needs_offers_in_two_calendar_months():
    story = Story()  # day 0 is 2024-01-01
    story.purchase(0)
    story.contact(10, "outbound", "offer")  # January
    story.contact(20, "outbound", "offer")  # January
    assert story.level(25) == "basic"
    story.contact(40, "outbound", "offer")  # February
    assert story.level(39) == "basic"
    assert story.level(40) == "proactive"
    assert story.level(41) == "proactive"


def test_proactive_ends_when_an_offer_month_leaves_the_365_days():
    story = Story()
    story.purchase(0)
    story.contact(10, "outbound", "offer")
    story.contact(40, "outbound", "offer")
    assert story.level(374) == "proactive"
    assert story.level(375) == "basic"  # day 10 is exactly 365 days before T
    assert story.level(376) == "basic"


def test_inbound_offers_do_not_make_it_proactive():
    story = Story()
    story.purchase(0)
    story.contact(10, "inbound", "offer")
    story.contact(40, "inbound", "offer")
    assert story.level(50) == "basic"


@pytest.mark.parametrize("purpose", ["follow_up", "feedback_request"])
def test_accountable_when_followed_up_within_14_days(purpose):
    story = Story()
    story.purchase(0)
    story.contact(14, "outbound", purpose)  # the 14th day: inclusive
    assert story.level(13) == "basic"
    assert story.level(14) == "accountable"
    late = Story()
    late.purchase(0)
    late.add(type(story.events[-1]), at(14) + timedelta(microseconds=1), channel="phone",
             direction="outbound", purpose=purpose)
    assert late.level(15) == "basic"


def test_accountable_needs_the_contact_after_the_purchase_and_outbound():
    story = Story()
    story.contact(0, "outbound", "follow_up")
    story.purchase(1)
    story.contact(2, "inbound", "follow_up")
    assert story.level(3) == "basic"


def test_accountable_while_the_purchase_is_in_the_last_365_days():
    story = Story()
    story.purchase(0)
    story.contact(1, "outbound", "follow_up")
    assert story.level(364) == "accountable"
    assert story.level(365) == "basic"
    assert story.level(366) == "basic"


@pytest.mark.parametrize(
    ("direction", "purpose", "expected"),
    [
        ("inbound", "inquiry", "reactive"),
        ("inbound", "support", "reactive"),
        ("outbound", "support", "basic"),
        ("inbound", "offer", "basic"),
    ],
)
def test_reactive_by_an_inbound_inquiry_or_support(direction, purpose, expected):
    story = Story()
    story.purchase(0)
    story.contact(5, direction, purpose)
    assert story.level(4) == "basic"
    assert story.level(5) == expected
    assert story.level(369) == expected
    assert story.level(370) == "basic"  # exactly 365 days later: outside


def test_the_highest_level_that_holds_wins():
    story = partner()
    story.contact(11, "outbound", "offer")
    story.contact(50, "outbound", "offer")
    story.contact(12, "inbound", "support")
    assert story.level(60) == "partnership"
    assert story.level(200) == "proactive"


#: 2024-01-31T23:30-05:00 is 2024-02-01T04:30Z: January on the offer's clock, February in UTC.
LATE_JANUARY_IN_NEW_YORK = datetime(2024, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))


def test_proactive_counts_calendar_months_in_utc():
    story = Story()  # day 0 is 2024-01-01T12:00Z
    story.purchase(0)
    story.contact(14, "outbound", "offer")  # 2024-01-15Z: January
    story.contact(LATE_JANUARY_IN_NEW_YORK, "outbound", "offer")  # February (UTC)
    assert story.level(32) == "proactive"  # January and February
    same_month = Story()
    same_month.purchase(0)
    same_month.contact(LATE_JANUARY_IN_NEW_YORK, "outbound", "offer")  # February (UTC)
    same_month.contact(40, "outbound", "offer")  # 2024-02-10Z: February
    assert same_month.level(41) == "basic"  # one month only


def test_a_follow_up_at_the_moment_of_the_purchase_counts_if_recorded_after_it():
    # "after" is strict, ties broken by recording order (DOMAIN §3)
    after = Story()
    after.purchase(1)
    after.contact(1, "outbound", "follow_up")
    assert after.level(1) == "accountable"
    assert after.level(2) == "accountable"
    before = Story()
    before.contact(1, "outbound", "follow_up")
    before.purchase(1)
    assert before.level(1) == "basic"
    assert before.level(2) == "basic"
