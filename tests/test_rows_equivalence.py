"""The fast read-model rows equal the straightforward computation they replace.

The timeline (``rows.intervals``) walks each history once; the reference below is the
replay-based version it replaced: evaluate every prefix, search the time-driven changes
after each step. ``next_change`` (behind the summary's ``refresh_at`` and the replay)
looks at later moments through ``Facts.at``; its reference filters and groups the events
again at every candidate. Both pairs must agree on generated and on sample histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rules_builders import at
from test_rules_properties import expand, record, specs

from journey.api import Journey
from journey.events import CustomerEvent
from journey.sample import sample
from projections.history import replay, time_steps
from projections.readmodels.rows import (
    END_OF_TIME,
    Interval,
    intervals,
    state_of,
    summary_row,
)
from projections.rules.answer import Answer, answer_from
from projections.rules.changes import candidates, next_change
from projections.rules.facts import Facts
from projections.rules.window import ordered
from projections.settings import CLASSIFICATION, DEFAULT, Settings

NOW = datetime(2025, 7, 1, tzinfo=UTC)


def reference_intervals(events: Sequence[CustomerEvent], settings: Settings) -> list[Interval]:
    """The timeline as the history replay sees it (the original implementation)."""
    stream = ordered(events)
    steps = replay(stream, settings)
    if steps:
        steps += time_steps(stream, steps[-1].answer, END_OF_TIME, settings)
    last_at_each_moment = {  # of several steps at one moment, the last one's state holds
        step.at: (
            step.answer.loyalty_stage.value,
            step.answer.status.value,
            step.answer.relationship_level.value,
        )
        for step in steps
    }
    found: list[Interval] = []
    for moment, state in last_at_each_moment.items():
        if found and state_of(found[-1]) == state:
            continue
        if found:
            found[-1] = Interval(found[-1].valid_from, moment, *state_of(found[-1]))
        found.append(Interval(moment, None, *state))
    return found


def reference_next_change(
    events: Sequence[CustomerEvent], as_of: datetime, settings: Settings
) -> Answer | None:
    """``next_change`` as first written: every candidate filters the events anew."""
    facts = Facts.of(events, as_of, settings)
    now = answer_from(facts)
    if now is None:
        return None
    for moment in candidates(facts):
        later = answer_from(Facts.of(facts.events, moment, settings))
        if later is not None and later.state() != now.state():
            return later
    return None


def assert_same(events: Sequence[CustomerEvent], moments: Sequence[datetime]) -> None:
    found = intervals(events, DEFAULT)
    assert found == reference_intervals(events, DEFAULT)
    assert_joined(found)
    for moment in moments:
        assert next_change(events, moment, DEFAULT) == reference_next_change(
            events, moment, DEFAULT
        )


@settings(max_examples=150, deadline=None)
@given(st.lists(specs, min_size=1, max_size=14), st.lists(st.floats(0, 1500), max_size=4))
def test_generated_histories(raw, probes):
    story, _ = record(expand(raw))
    assert_same(story.events, [at(p) for p in probes])


@pytest.fixture(scope="module")
def sample_streams(tmp_path_factory) -> dict[str, list[CustomerEvent]]:
    """A few hundred sample customers (with backfilled, out-of-order records), as stored."""
    url = f"sqlite:///{tmp_path_factory.mktemp('rows') / 'sample.db'}"
    records = sample(300, events=3000, seed=7)
    with Journey(url, actor="test") as engine:
        while batch := list(islice(records, 1000)):
            outcome = engine.record_many(batch)
            assert not outcome.rejected, outcome.rejected[0].as_dict()
        streams = engine.app.customer_streams(engine.app.customer_ids())
    assert len(streams) >= 300  # the tests looping over them check something
    return {customer: stream.events for customer, stream in streams.items()}


#: Every window and age threshold distinct (the defaults share 180 and 365 days), so a
#: candidate moment taken from the wrong window cannot pass unnoticed.
DISTINCT_WINDOWS = Settings(
    advocate_referral_days=301,
    client_min_tenure_days=170,
    client_recent_days=333,
    partnership_meeting_days=190,
    proactive_days=350,
    accountable_days=320,
    reactive_days=310,
    frequency_days=300,
    involvement_days=280,
    lapsed_after_days=200,
    at_risk_min_days=60,
)


#: Offers 30 days apart, twice: the first pair's proactive window (350 days) closes at
#: the very moment the third offer renews it. The timeline sampled the closing (basic)
#: and then the offer (proactive) at that one moment, dropped the empty interval between
#: and left proactive cut in two, found by hypothesis in CI.
RENEWED_AT_CLOSING = [
    ("purchase", 0.0, "a", "none", 0), ("offers", 311.5, 2), ("purchase", 0.0, "a", "none", 0),
    ("purchase", 0.0, "a", "none", 0), ("contact", 0.0, "inbound", "inquiry"),
    ("offers", 661.5, 2),
]


@settings(max_examples=150, deadline=None)
@given(st.lists(specs, min_size=1, max_size=14))
@example(RENEWED_AT_CLOSING)
def test_generated_histories_with_distinct_windows(raw):
    story, _ = record(expand(raw))
    found = intervals(story.events, DISTINCT_WINDOWS)
    assert found == reference_intervals(story.events, DISTINCT_WINDOWS)
    assert_joined(found)


def assert_joined(found: list[Interval]) -> None:
    """Each interval ends where the next begins, and no two in a row hold one state."""
    for before, after in pairwise(found):
        assert before.valid_from < before.valid_to == after.valid_from
        assert state_of(before) != state_of(after), (before, after)
    assert found[-1].valid_to is None


def other_settings(name: str) -> st.SearchStrategy[Any]:
    """Any valid value of one setting (their bounds in projections/settings.py)."""
    if name == "default_margin_rate":
        return st.decimals(0, 1, places=2)
    if name.startswith("nps_"):
        return st.integers(0, 10)
    if name.endswith("_days"):
        return st.integers(1, 900)
    return st.integers(1, 100)


#: Every setting the timeline is said not to follow, each drawn anew.
not_classification = st.fixed_dictionaries(
    {name: other_settings(name) for name in Settings.model_fields if name not in CLASSIFICATION}
)


@settings(max_examples=150, deadline=None)
@given(st.lists(specs, min_size=1, max_size=14), not_classification)
def test_the_timeline_follows_the_classification_settings_alone(raw, others):
    """Why `projections status` calls a timeline stale only for a change of CLASSIFICATION:
    any values of every other setting give the same intervals."""
    story, _ = record(expand(raw))
    for rules in (DEFAULT, DISTINCT_WINDOWS):
        changed = rules.model_copy(update=others)
        assert intervals(story.events, changed) == intervals(story.events, rules)


def test_every_classification_setting_is_one():
    assert set(CLASSIFICATION) < set(Settings.model_fields)
    assert len(set(CLASSIFICATION)) == len(CLASSIFICATION)


def test_sample_histories(sample_streams):
    for events in sample_streams.values():
        first = min(e.occurred_at for e in events)
        assert_same(events, [first, first + timedelta(days=200), NOW])
        assert intervals(events, DISTINCT_WINDOWS) == reference_intervals(events, DISTINCT_WINDOWS)


def test_sample_summary_rows_refresh_at_the_reference_change(sample_streams):
    for customer, events in sample_streams.items():
        row = summary_row(customer, events, NOW, DEFAULT)
        later = reference_next_change(events, NOW, DEFAULT)
        if later is not None:
            assert row["refresh_at"] <= later.as_of
