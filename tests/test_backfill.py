"""Backfills (DOMAIN.md §2): an event may occur before events already stored. It is stored;
the recording order (versions) and the recorded times keep the order of recording."""

from __future__ import annotations

import itertools

from support import StepClock, at, ev, opened, purchase, refund, when


def test_an_earlier_event_recorded_later_is_stored_in_recording_order(db_url):
    clock = StepClock()
    with opened(db_url, actor="loader", clock=clock) as engine:
        engine.record(purchase("c-1", "o-2", day=20))
        engine.record(ev("feedback", "c-1", at(25), score=8))
        engine.record(purchase("c-1", "o-1", day=5))  # backfill
        engine.record(ev("qualified", "c-1", at(1)))  # further back still
        stored = engine.events("c-1")
    assert [(e.version, e.TYPE, e.occurred_at) for e in stored] == [
        (1, "identified", when(at(20))),
        (2, "purchase", when(at(20))),
        (3, "feedback", when(at(25))),
        (4, "purchase", when(at(5))),
        (5, "qualified", when(at(1))),
    ]
    recorded = [e.recorded_at for e in stored]
    # one save records the implicit identification with the first purchase, at one moment
    assert recorded[0] == recorded[1]
    assert all(a < b for a, b in itertools.pairwise(recorded[1:]))
    assert set(recorded) <= set(clock.readings)
    assert all(e.actor == "loader" for e in stored)


def test_recorded_time_increases_with_the_real_clock(engine):
    for day in (9, 3, 7, 1):
        engine.record(ev("feedback", "c-1", at(day), score=day))
    stored = engine.events("c-1")
    assert [e.payload().get("score") for e in stored[1:]] == [9, 3, 7, 1]
    recorded = [e.recorded_at for e in stored]
    assert recorded[0] == recorded[1]  # the implicit identification, in the first save
    assert all(a < b for a, b in itertools.pairwise(recorded[1:]))
    assert all(e.recorded_at.tzinfo is not None for e in stored)


def test_a_backfilled_purchase_can_then_be_refunded(engine):
    engine.record(purchase("c-1", "o-9", day=20))
    engine.record(purchase("c-1", "o-1", "30", day=2))
    engine.record(refund("c-1", "o-1", "30", day=3))
    types = [e.TYPE for e in engine.events("c-1")]
    assert types == ["identified", "purchase", "purchase", "refund"]


def test_a_backfill_in_one_batch_keeps_the_input_order(engine):
    outcome = engine.record_many(
        [ev("feedback", "c-1", at(day), score=day) for day in (9, 3, 7, 1)]
    )
    assert outcome.rejected == []
    stored = engine.events("c-1")
    assert [e.payload().get("score") for e in stored] == [None, 9, 3, 7, 1]
    assert [e.version for e in stored] == [1, 2, 3, 4, 5]
    # the implicit identification is at the first recorded event's time, not the earliest
    assert stored[0].occurred_at == when(at(9))
    assert outcome.positions == sorted(outcome.positions)
