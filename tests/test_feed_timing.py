"""The feed says when each change happened and why, whenever the runner notices it.

A runner that was stopped, a pass that applies new events of a customer whose state moved
by itself meanwhile, an event dated ahead of the clock, a rebuild switched in while the
serving summary was stale: each change is still announced once, at its own moment, from
the value before it, with its cause (the expected moments are asked of ``show``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from readmodel_support import NOW, assert_feed_consistent, models, record_all
from sqlalchemy import select

from projections.feed import Feed
from projections.pointintime import PointInTime
from projections.readmodels.queries import view
from projections.readmodels.rebuild import fold, rebuild, switch_when_caught_up
from projections.readmodels.store import PositionMoved

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)


def purchase(order: str, when, customer: str = "c") -> dict:
    return {
        "type": "purchase",
        "customer_id": customer,
        "occurred_at": when.isoformat(),
        "order_id": order,
        "amount": "10",
    }


def feedback(when) -> dict:
    return {"type": "feedback", "customer_id": "c", "occurred_at": when.isoformat(), "score": 8}


def entries(m, kind: str, after: int = 0) -> list[tuple]:
    return [
        (e.from_value, e.to_value, e.occurred_at, e.cause)
        for e in Feed(m.store).read(after=after, customer_id="c", kinds=[kind])
    ]


def refresh(m) -> None:
    while m.runner.refresh_due():
        pass


def first_moment(m, kind: str, value: str, start, end):
    """When ``show`` starts saying ``value`` for ``kind`` in (start, end], to the µs."""
    queries = PointInTime(m.journey)

    def says(moment) -> bool:
        return getattr(queries.show("c", moment, with_rfm=False), kind).value == value

    assert not says(start) and says(end)
    while end - start > US:
        middle = start + (end - start) / 2
        start, end = (start, middle) if says(middle) else (middle, end)
    return end


@contextmanager
def bought_300_days_ago(db_url) -> Iterator[tuple[Any, list[datetime]]]:
    """Read models of one customer whose one purchase lies 300 days before NOW, the summary
    caught up at NOW; the clock is the list's one moment, for a test to move."""
    clock = [NOW]
    with models(db_url, clock=lambda: clock[0]) as m:
        record_all(m.journey, [purchase("o1", NOW - DAY * 300)])
        m.runner.catch_up("summary")
        yield m, clock


def test_every_change_by_itself_while_the_runner_was_stopped(db_url):
    clock = [NOW]
    with models(db_url, clock=lambda: clock[0]) as m:
        record_all(m.journey, [purchase("o1", NOW - DAY * 200), purchase("o2", NOW - DAY * 100)])
        m.runner.catch_up("summary")
        clock[0] = NOW + DAY * 300  # at risk, then lapsed, while nobody looked
        refresh(m)
        at_risk = first_moment(m, "status", "at_risk", NOW, NOW + DAY * 200)
        lapsed = first_moment(m, "status", "lapsed", at_risk, NOW + DAY * 300)
        assert entries(m, "status")[1:] == [
            ("active", "at_risk", at_risk, None),
            ("at_risk", "lapsed", lapsed, None),
        ]
        assert_feed_consistent(m.store)


def test_a_change_by_itself_noticed_with_a_new_event_is_not_that_events_doing(db_url):
    with bought_300_days_ago(db_url) as (m, clock):
        clock[0] = NOW + DAY * 100
        record_all(m.journey, [feedback(clock[0])])
        m.runner.catch_up("summary")  # a pass applies new events before it refreshes
        refresh(m)
        lapsed = first_moment(m, "status", "lapsed", NOW, clock[0])
        assert entries(m, "status")[1:] == [("active", "lapsed", lapsed, None)]


def test_a_change_by_itself_after_a_new_event_is_not_that_events_doing(db_url):
    with bought_300_days_ago(db_url) as (m, clock):  # lapses 65 days after NOW
        clock[0] = NOW + DAY * 10
        record_all(m.journey, [feedback(clock[0])])  # while the runner is stopped
        clock[0] = NOW + DAY * 100  # and comes back after the lapse
        m.runner.catch_up("summary")
        refresh(m)
        lapsed = first_moment(m, "status", "lapsed", NOW, clock[0])
        assert lapsed > NOW + DAY * 10
        assert entries(m, "status")[1:] == [("active", "lapsed", lapsed, None)]
        assert_feed_consistent(m.store)


def test_a_new_customers_history_is_announced_at_its_last_event_then_by_itself(db_url):
    """A customer loaded with its history: one net change at its newest event, then each
    change by itself since at its own moment (not its present state at that event)."""
    with models(db_url) as m:
        *_, position = record_all(m.journey, [purchase("o1", NOW - DAY * 400)])
        m.runner.catch_up("summary")
        lapsed = first_moment(m, "status", "lapsed", NOW - DAY * 400, NOW)
        assert entries(m, "status") == [
            (None, "active", NOW - DAY * 400, position),
            ("active", "lapsed", lapsed, None),
        ]
        assert_feed_consistent(m.store)


def test_a_change_by_itself_is_not_lost_when_the_new_event_is_dated_ahead(db_url):
    with bought_300_days_ago(db_url) as (m, clock):
        clock[0] = NOW + DAY * 100
        record_all(m.journey, [feedback(NOW + DAY * 200)])  # takes effect later
        m.runner.catch_up("summary")
        refresh(m)
        assert [(f, t) for f, t, _, _ in entries(m, "status")] == [
            (None, "active"),
            ("active", "lapsed"),
        ]
        assert_feed_consistent(m.store)


def test_an_event_dated_ahead_is_the_cause_though_another_comes_first(db_url):
    clock = [NOW]
    ahead = NOW + DAY * 10
    with models(db_url, clock=lambda: clock[0]) as m:
        *_, early = record_all(m.journey, [purchase("o1", NOW - DAY * 2), purchase("o2", ahead)])
        m.runner.catch_up("summary")
        clock[0] = ahead + DAY
        record_all(m.journey, [feedback(clock[0])])
        m.runner.catch_up("summary")
        refresh(m)
        assert entries(m, "loyalty_stage")[1:] == [("first_time", "repeat", ahead, early)]


def test_day_counters_follow_show_through_every_hour(db_url):
    """recency_days and tenure_days turn at the time of day of their own purchases."""
    clock = [NOW]
    with models(db_url, clock=lambda: clock[0]) as m:
        first, last = NOW - DAY * 10 - 2 * HOUR, NOW - DAY * 2 + 4 * HOUR
        record_all(m.journey, [purchase("o1", first), purchase("o2", last)])
        m.runner.catch_up("summary")
        queries, table = PointInTime(m.journey), view(m.store, "summary")
        for hours in range(49):
            clock[0] = NOW + hours * HOUR
            refresh(m)
            with m.store.engine.connect() as conn:
                row = conn.execute(select(table).where(table.c.customer_id == "c")).one()
            shown = queries.show("c", clock[0], with_rfm=False).scores
            assert (row.tenure_days, row.recency_days) == (
                shown["tenure_days"],
                shown["recency_days"],
            ), clock[0]


def test_a_rebuild_with_the_same_rules_announces_nothing_of_its_own(db_url):
    with bought_300_days_ago(db_url) as (m, clock):
        head = Feed(m.store).head()
        clock[0] = NOW + DAY * 100  # lapsed meanwhile, and no runner refreshed it
        rebuild(m.runner, "summary")
        refresh(m)
        lapsed = first_moment(m, "status", "lapsed", NOW, clock[0])
        assert entries(m, "status", after=head) == [("active", "lapsed", lapsed, None)]
        assert not any(e.reason.startswith("read model rebuilt") for e in Feed(m.store).read())


def test_a_rebuild_folded_before_a_change_does_not_announce_it_back_and_forth(db_url):
    with bought_300_days_ago(db_url) as (m, clock):
        head = Feed(m.store).head()
        clock[0] = NOW + DAY * 65 - HOUR
        generation = m.store.start_build(
            "summary", head=m.journey.app.max_notification_id(), settings=m.runner.settings
        )
        fold(m.runner, generation, 1000, None)  # an hour before the lapse
        clock[0] = NOW + DAY * 65 + HOUR
        refresh(m)  # the serving runner announces the lapse
        switch_when_caught_up(m.runner, "summary", generation)
        refresh(m)
        assert [(f, t) for f, t, _, _ in entries(m, "status", after=head)] == [("active", "lapsed")]
        assert_feed_consistent(m.store)


def test_a_runner_refreshing_between_a_rebuilds_refresh_and_its_switch(db_url, monkeypatch):
    """The switch compares generations brought to one moment; a runner that refreshed the
    serving one later must not have its lapse undone and announced again by the switch."""
    with bought_300_days_ago(db_url) as (m, clock):
        head = Feed(m.store).head()
        clock[0] = NOW + DAY * 65 - HOUR  # the rebuild starts an hour before the lapse
        switch = type(m.store).switch

        def runner_passes_first(self, *args, **kwargs):
            clock[0] = NOW + DAY * 65 + HOUR
            refresh(m)  # the runner's pass, two hours later
            return switch(self, *args, **kwargs)

        monkeypatch.setattr(type(m.store), "switch", runner_passes_first)
        rebuild(m.runner, "summary")
        monkeypatch.setattr(type(m.store), "switch", switch)
        refresh(m)
        assert [(f, t) for f, t, _, _ in entries(m, "status", after=head)] == [("active", "lapsed")]
        assert_feed_consistent(m.store)


def test_a_page_applied_beside_a_refresh_of_its_rows_is_refused(db_url, monkeypatch):
    """Two writers of the serving summary (a runner, a rebuild's switch catching it up):
    a page whose rows were refreshed after it read them is read again, not announced twice."""
    with bought_300_days_ago(db_url) as (m, clock):  # lapses 65 days after NOW
        head = Feed(m.store).head()
        clock[0] = NOW + DAY * 100
        record_all(m.journey, [feedback(clock[0])])
        store_class = type(m.store)
        write = store_class.write

        def refreshed_first(self, name, *args, **kwargs):
            if kwargs.get("position") is not None:  # the page, about to be written
                monkeypatch.setattr(store_class, "write", write)
                refresh(m)  # the other writer refreshes the row this page read
            return write(self, name, *args, **kwargs)

        monkeypatch.setattr(store_class, "write", refreshed_first)
        m.runner.catch_up("summary")
        assert [(f, t) for f, t, _, _ in entries(m, "status", after=head)] == [("active", "lapsed")]
        assert_feed_consistent(m.store)


def test_events_only_the_rebuild_applied_are_announced_with_their_cause(db_url):
    with models(db_url) as m:
        record_all(m.journey, [purchase("o1", NOW - DAY * 30)])
        m.runner.catch_up("summary")
        head = Feed(m.store).head()
        *_, second = record_all(m.journey, [purchase("o2", NOW - DAY * 10)])
        rebuild(m.runner, "summary")  # the runner had not applied o2
        m.runner.catch_up("summary")
        assert entries(m, "loyalty_stage", after=head) == [
            ("first_time", "repeat", NOW - DAY * 10, second)
        ]
        assert_feed_consistent(m.store)


def test_a_refresh_written_after_another_one_is_refused(db_url):
    """Two refreshers of one row (a runner and a rebuild's switch) cannot both announce."""
    with bought_300_days_ago(db_url) as (m, clock):
        serving = m.runner.serving("summary")
        (stale,) = m.store.previous_summaries(serving.generation, ["c"]).values()
        clock[0] = NOW + DAY * 100
        refresh(m)
        head = Feed(m.store).head()
        with pytest.raises(PositionMoved):
            m.store.write(
                "summary",
                serving.generation,
                ["c"],
                [],
                expected=serving.position,
                status="serving",
                entries=[
                    {
                        "customer_id": "c",
                        "kind": "status",
                        "from_value": "active",
                        "to_value": "lapsed",
                        "occurred_at": clock[0],
                        "recorded_at": clock[0],
                        "reason": "again",
                        "cause": None,
                    }
                ],
                computed={"c": stale.computed_at},
            )
        assert Feed(m.store).head() == head


def test_a_rebuild_switches_while_events_keep_arriving(db_url):
    """The switch's own catch-up of the serving summary computes at the switch's moment:
    rows it wrote a moment later would refuse it, pass after pass, while events arrive."""
    moment = [NOW]

    def ticking() -> datetime:
        moment[0] += timedelta(milliseconds=1)
        return moment[0]

    with models(db_url, clock=ticking) as m:
        record_all(m.journey, [purchase("o1", NOW - DAY * 30), feedback(NOW - DAY * 20)])
        m.runner.catch_up("summary")
        catch_up, switch, attempts = m.runner.catch_up, m.store.switch, []

        def traffic_first(name, generation=None, **options):
            if generation is None:  # an event has arrived since the last pass
                record_all(m.journey, [purchase(f"t{len(attempts)}", NOW - DAY, "t")])
            return catch_up(name, generation, **options)

        def counted(*args, **options):
            attempts.append(True)
            assert len(attempts) <= 5, "the switch was refused pass after pass"
            return switch(*args, **options)

        m.runner.catch_up, m.store.switch = traffic_first, counted
        rebuild(m.runner, "summary")
        assert len(attempts) == 1
        assert_feed_consistent(m.store)
