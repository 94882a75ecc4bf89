"""``Walk`` (rules/walk.py), the timeline's second implementation of stage, status and
level, answers what the rules themselves answer from ``Facts``: after every event of a
history, at every moment the timeline samples, and at moments in between; and its
threshold moments are ``threshold_moments``'. Generated and sample histories, with the
default settings and with every window distinct.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from rules_builders import Story, at
from test_rows_equivalence import DISTINCT_WINDOWS, sample_streams  # noqa: F401 (fixture)
from test_rules_properties import expand, record, specs

from journey.events import BenefitGranted, CustomerEvent, Reidentified
from projections.readmodels.rows import END_OF_TIME, between
from projections.rules.changes import leaving_moments, threshold_moments
from projections.rules.facts import Facts
from projections.rules.level import relationship_level
from projections.rules.stage import loyalty_stage
from projections.rules.status import status
from projections.rules.walk import Walk
from projections.rules.window import ordered
from projections.settings import DEFAULT, Settings


def by_the_rules(prefix: list[CustomerEvent], moment: datetime, rules: Settings):
    """The reference: the three rules, asked through ``Facts`` as the query layer asks."""
    facts = Facts.of_ordered(prefix, moment, rules)
    return loyalty_stage(facts).value, status(facts).value, relationship_level(facts).value


def assert_walk_agrees(events: Sequence[CustomerEvent], rules: Settings) -> None:
    stream = ordered(events)
    leaving = leaving_moments(stream, rules)
    walk = Walk(rules)
    for index, event in enumerate(stream):
        walk.add(event)
        prefix = stream[: index + 1]
        facts = Facts.of_ordered(prefix, event.occurred_at, rules)
        assert walk.thresholds() == threshold_moments(facts)
        until = stream[index + 1].occurred_at if index + 1 < len(stream) else END_OF_TIME
        sampled = between(leaving, walk.thresholds(), event.occurred_at, until)
        halfway = [m + (n - m) / 2 for m, n in pairwise([event.occurred_at, *sampled])]
        later = [event.occurred_at + timedelta(days=d) for d in (1, 100, 400, 1000)]
        for moment in [event.occurred_at, *sampled, *halfway, *later]:
            assert walk.state(moment) == by_the_rules(prefix, moment, rules), (index, moment)


#: Beside the shared specs: identities referred or not, re-identifications, and benefits
#: that are not structural (what Walk reads or ignores by a field's value).
identity = st.sampled_from([{}, {"referred_by": "c-7"}, {"referred_by": ""}])
extras = st.lists(
    st.tuples(
        st.sampled_from(["reidentified", "referred again", "benefit"]),
        st.integers(0, 700),
    ),
    max_size=3,
)


def with_extras(story: Story, added: list[tuple[str, int]]) -> Story:
    for kind, day in added:
        if kind == "benefit":
            story.add(BenefitGranted, day, kind="discount")
        else:
            referred = "c-8" if kind == "referred again" else None
            story.add(Reidentified, day, referred_by=referred)
    return story


@settings(max_examples=200, deadline=None)
@given(st.lists(specs, min_size=1, max_size=14), identity, extras)
def test_generated_histories(raw, who, added):
    story, _ = record(expand(raw))
    story = with_extras(story, added)
    if who:
        story.events[0] = Story(**who).events[0]
    assert_walk_agrees(story.events, DEFAULT)
    assert_walk_agrees(story.events, DISTINCT_WINDOWS)


def test_sample_histories(sample_streams):  # noqa: F811 (the fixture)
    for events in sample_streams.values():
        assert_walk_agrees(events, DEFAULT)
        assert_walk_agrees(events, DISTINCT_WINDOWS)


def test_an_early_refund_takes_its_later_purchase_out_of_p():
    story = Story()
    story.refund(10, "o-1", "100")
    story.purchase(20, order_id="o-1")
    story.purchase(30)
    assert_walk_agrees(story.events, DEFAULT)
    walk = Walk(DEFAULT)
    for event in ordered(story.events):
        walk.add(event)
    assert [sale.order_id for sale in walk.sales] == ["o-2"]
    assert walk.state(at(31)) == ("first_time", "active", "basic")


def test_follow_ups_at_the_edge_of_their_reach():
    for gap in (13.5, 14, 14.5):
        story = Story()
        story.purchase(10)
        story.contact(10 + gap, "outbound", "follow_up")
        assert_walk_agrees(story.events, DEFAULT)


def walked(story: Story, moment: datetime) -> tuple[str, str, str]:
    """(stage, status, level) the walk answers at ``moment`` after the whole story."""
    walk = Walk(DEFAULT)
    for event in ordered(story.events):
        walk.add(event)
    return walk.state(moment)


def test_offer_months_are_utc_calendar_months():
    # 2024-01-31T23:30-05:00 is February in UTC: with a January offer, two months
    late_january_in_new_york = datetime(2024, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    story = Story()
    story.purchase(0)
    story.contact(14, "outbound", "offer")
    story.contact(late_january_in_new_york, "outbound", "offer")
    assert_walk_agrees(story.events, DEFAULT)
    assert walked(story, at(32)) == ("first_time", "active", "proactive")
    same_month = Story()
    same_month.purchase(0)
    same_month.contact(late_january_in_new_york, "outbound", "offer")
    same_month.contact(40, "outbound", "offer")
    assert_walk_agrees(same_month.events, DEFAULT)
    assert walked(same_month, at(41)) == ("first_time", "active", "basic")


def test_a_follow_up_tied_with_its_purchase_counts_if_recorded_after_it():
    after = Story()
    after.purchase(1)
    after.contact(1, "outbound", "follow_up")
    assert_walk_agrees(after.events, DEFAULT)
    assert walked(after, at(2))[2] == "accountable"
    before = Story()
    before.contact(1, "outbound", "follow_up")
    before.purchase(1)
    assert_walk_agrees(before.events, DEFAULT)
    assert walked(before, at(2))[2] == "basic"


def test_a_fully_refunded_purchase_adds_no_category_to_the_walk():
    story = Story()
    for day in (0, 60, 120, 170):
        story.purchase(day, category="books")
    story.purchase(175, category="music")
    story.refund(190, "o-5", "100")
    assert_walk_agrees(story.events, DEFAULT)
    assert walked(story, at(200))[0] == "repeat"
