"""When the state changes with no new event, and the history replay built on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from rules_builders import Story, at, client_story

from journey.events import Purchased
from projections.history import replay
from projections.readmodels.rows import summary_row
from projections.rules import evaluate, next_change
from projections.settings import DEFAULT

TICK = timedelta(microseconds=1)


def test_windows_then_the_lapse():
    story = Story()
    story.purchase(0)
    window = next_change(story.events, at(200), DEFAULT)
    assert window.as_of == at(365)  # the purchase leaves the 365-day window
    assert window.scores["frequency_365d"] == 0
    assert window.status.value == "active"
    lapse = next_change(story.events, window.as_of, DEFAULT)
    assert lapse.as_of == at(365) + TICK
    assert lapse.status.value == "lapsed"


def test_a_referral_leaving_its_window_ends_advocacy():
    story = client_story()
    story.converted(200)
    story.purchase(400, category="books")
    story.purchase(450, category="books")
    change = next_change(story.events, at(460), DEFAULT)
    while change.loyalty_stage.value == "advocate":
        change = next_change(story.events, change.as_of, DEFAULT)
    assert change.as_of == at(565)  # the conversion is exactly 365 days before
    assert change.loyalty_stage.value == "client"
    assert evaluate(story.events, at(565) - TICK).loyalty_stage.value == "advocate"


def test_no_change_within_until():
    story = Story()
    story.purchase(0)
    assert next_change(story.events, at(1), DEFAULT, until=at(300)) is None


def test_events_after_the_moment_are_not_counted():
    story = Story()
    story.purchase(0)
    story.purchase(100)
    # counting the day-100 purchase, it would turn at risk; alone, the first one only
    # leaves its window at day 365
    assert next_change(story.events, at(50), DEFAULT).as_of == at(365)


def test_history_shows_each_event_and_time_driven_steps():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    steps = replay(story.events, DEFAULT, until=at(500))
    kinds = [(step.kind, step.event.TYPE if step.event else None) for step in steps[:3]]
    assert kinds == [("event", "identified"), ("event", "purchase"), ("event", "purchase")]
    assert steps[2].changes["loyalty_stage"] == {
        "from": "first_time",
        "to": "repeat",
        "rule": "n = 2 ≥ 2",
        "events": [2, 3],
    }
    status_changes = [(s.at, s.changes["status"]["to"]) for s in steps if "status" in s.changes]
    assert status_changes[1:] == [(at(100) + TICK, "at_risk"), (at(375) + TICK, "lapsed")]
    assert all(step.kind == "time" for step in steps[3:])


def test_history_steps_at_ties_count_only_the_events_before():
    story = Story()
    story.purchase(5)
    story.purchase(5)
    steps = replay(story.events, DEFAULT)
    assert [s.answer.loyalty_stage.value for s in steps] == ["suspect", "first_time", "repeat"]


def test_a_change_due_at_an_events_moment_belongs_to_that_events_step():
    # the lapse is due one microsecond after day 365; a purchase at that very moment
    # means the customer never shows lapsed: as of that moment the purchase counts too
    story = Story(first=-10)  # no two events at one moment
    story.purchase(0)
    story.add(Purchased, at(365) + TICK, order_id="o-2", amount=Decimal("10"))
    steps = replay(story.events, DEFAULT)
    assert [s.answer.status.value for s in steps] == ["active"] * len(steps)
    for step in steps:  # every step is what show answers at its moment
        assert step.answer.as_dict() == evaluate(story.events, step.at).as_dict()
    event_step = next(s for s in steps if s.event is not None and s.at == at(365) + TICK)
    assert event_step.changes["scores"]["frequency_365d"] == {"from": 0, "to": 1}


def test_a_summary_row_is_due_again_when_a_reason_changes_though_the_value_holds():
    # proactive holds by offers in three months, then by two: the level stays, its reason
    # (the months counted, the events) changes when the first offer leaves the window
    story = Story()
    story.purchase(0)
    first = story.contact(at(10) - timedelta(hours=6), "outbound", "offer")
    story.contact(40, "outbound", "offer")
    story.contact(70, "outbound", "offer")
    now = at(375) - timedelta(hours=10)
    row = summary_row("c-1", story.events, now, DEFAULT)
    leaves = first.occurred_at + DEFAULT.days("proactive_days")
    assert row["refresh_at"] <= leaves
    stored = row["reasons"]["relationship_level"]
    later = evaluate(story.events, leaves).relationship_level
    assert later.value == stored["value"] and later.as_dict() != stored


def test_the_at_risk_reason_says_what_it_compares():
    story = Story()
    story.purchase(0)
    story.purchase(10)
    verdict = story.answer(at(100) + TICK).status
    assert verdict.value == "at_risk"
    assert verdict.rule == (
        "the last purchase is more than 90 days and more than 2x the mean gap over P "
        "(10 days) before T (90 whole days)"
    )


def test_windows_are_elapsed_time_whatever_zone_as_of_is_given_in():
    story = Story(first=datetime(2024, 3, 1, tzinfo=UTC))
    story.purchase(datetime(2024, 3, 30, 10, 30, tzinfo=UTC))
    later = datetime(2025, 3, 30, 10, 0, tzinfo=UTC)  # 364 days 23.5 hours on: in the window
    warsaw = later.astimezone(ZoneInfo("Europe/Warsaw"))  # its clocks moved on 2025-03-30
    assert story.answer(warsaw).scores["frequency_365d"] == 1
    assert story.answer(warsaw).as_dict() == story.answer(later).as_dict()


def test_an_open_complaint_turns_overdue_just_after_30_days():
    # DOMAIN: trust falls with a complaint left open *more than* 30 days: the state
    # changes by itself one microsecond after day 1 + 30 days, with no new event
    story = Story()
    story.purchase(0)
    story.complaint(1)
    assert evaluate(story.events, at(2)).scores["trust"] == 50
    change = next_change(story.events, at(2), DEFAULT)
    assert change.as_of == at(31) + TICK
    assert change.scores["trust"] == 40  # 50 - 10 for one overdue complaint
    assert evaluate(story.events, at(31)).scores["trust"] == 50  # exactly 30 days: not yet
