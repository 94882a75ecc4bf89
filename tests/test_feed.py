"""The change feed: what becomes an entry, with which cause and time, and resuming."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readmodel_support import (
    NOW,
    assert_feed_consistent,
    models,
    record_all,
    records,
    view_rows,
)

from projections.feed import Feed
from projections.readmodels.rebuild import rebuild
from projections.settings import Settings

DAY = timedelta(days=1)


def at(days_before_now: float) -> str:
    return (NOW - DAY * days_before_now).isoformat()


def purchase(customer: str, order: str, days_before_now: float, category: str = "a") -> dict:
    return {"type": "purchase", "customer_id": customer, "occurred_at": at(days_before_now),
            "order_id": order, "amount": "10", "category": category}


def catch_up(m) -> None:
    m.runner.catch_up("summary")


def changes(entries):
    return [(e.customer_id, e.kind, e.from_value, e.to_value) for e in entries]


def test_new_events_announce_each_change_with_its_cause(db_url):
    with models(db_url) as m:
        feed = Feed(m.store)
        first = record_all(m.journey, [purchase("c-1", "o1", 30)])
        catch_up(m)
        assert changes(feed.read()) == [
            ("c-1", "loyalty_stage", None, "first_time"),
            ("c-1", "status", None, "active"),
            ("c-1", "relationship_level", None, "basic"),
        ]
        assert {e.cause for e in feed.read()} == {first[-1]}
        head = feed.head()
        second = record_all(m.journey, [purchase("c-1", "o2", 10)])
        catch_up(m)
        fresh = feed.read(after=head)
        assert changes(fresh) == [("c-1", "loyalty_stage", "first_time", "repeat")]
        assert fresh[0].cause == second[-1]
        assert fresh[0].occurred_at.isoformat() == at(10)
        assert fresh[0].reason.startswith("n = 2")
        # the same event as show, history and export name it: the second purchase is id 3
        assert [e.TYPE for e in m.journey.events("c-1")][fresh[0].cause_id - 1] == "purchase"
        assert (fresh[0].cause_id, fresh[0].as_dict()["cause_id"]) == (3, 3)
        assert {e.cause_id for e in feed.read(limit=3)} == {2}  # the first purchase


def test_a_new_customer_s_events_applied_together_announce_what_following_each_does(db_url):
    """A runner that came late to a new customer's events (stopped meanwhile, or the events
    sent in one request) announced their net change only, at the newest of them and caused
    by it: no subscriber saw `first_time`, and a contact was named as the cause of `repeat`
    (an operator's walk). It announces what a runner that had followed each event does."""
    clock = [NOW]

    def history(customer: str) -> list[dict]:
        return [
            purchase(customer, f"{customer}-o1", 300),
            purchase(customer, f"{customer}-o2", 200),
            {"type": "contact", "customer_id": customer, "occurred_at": at(100),
             "channel": "email", "direction": "outbound", "purpose": "offer"},
        ]

    with models(db_url, clock=lambda: clock[0]) as m:
        for event in history("live"):  # the runner follows each event as it is recorded
            clock[0] = datetime.fromisoformat(event["occurred_at"]) + timedelta(seconds=1)
            record_all(m.journey, [event])
            catch_up(m)
        clock[0] = NOW
        while m.runner.refresh_due():
            pass
        record_all(m.journey, history("late"))  # all at once, the runner late
        catch_up(m)
        feed = Feed(m.store)

        def seen(customer: str) -> list[tuple]:
            return [(e.kind, e.from_value, e.to_value, e.occurred_at, e.cause_id, e.reason)
                    for e in feed.read(limit=1000, customer_id=customer)]

        assert seen("late") == seen("live")
        stages = [(e[1], e[2], e[4]) for e in seen("late") if e[0] == "loyalty_stage"]
        assert stages[:2] == [(None, "first_time", 2), ("first_time", "repeat", 3)]
        assert_feed_consistent(m.store)


def test_a_backfill_that_changes_nothing_now_announces_nothing(db_url):
    with models(db_url) as m:
        feed = Feed(m.store)
        record_all(m.journey, [purchase("c-1", "o1", 30)])
        catch_up(m)
        head = feed.head()
        record_all(m.journey, [{"type": "qualified", "customer_id": "c-1", "occurred_at": at(90)}])
        catch_up(m)
        assert feed.read(after=head) == []


def test_a_backfill_that_changes_the_present_is_announced_with_its_cause(db_url):
    with models(db_url) as m:
        feed = Feed(m.store)
        record_all(m.journey, [purchase("c-1", "o2", 10)])
        catch_up(m)
        head = feed.head()
        backfilled = record_all(m.journey, [purchase("c-1", "o1", 200)])  # earlier, later
        catch_up(m)
        fresh = feed.read(after=head)
        assert changes(fresh) == [("c-1", "loyalty_stage", "first_time", "repeat")]
        assert fresh[0].cause == backfilled[-1]


def test_a_time_driven_change_has_no_cause_and_its_own_moment(db_url):
    clock = [NOW]
    with models(db_url, clock=lambda: clock[0]) as m:
        feed = Feed(m.store)
        record_all(m.journey, [purchase("c-1", "o1", 300)])
        catch_up(m)
        head = feed.head()
        clock[0] = NOW + DAY * 100  # 400 days after the purchase
        while m.runner.refresh_due():
            pass
        fresh = feed.read(after=head)
        assert changes(fresh) == [("c-1", "status", "active", "lapsed")]
        assert fresh[0].cause is None and fresh[0].cause_id is None
        lapse = NOW - DAY * 300 + DAY * 365
        assert lapse <= fresh[0].occurred_at <= lapse + DAY  # when it lapsed, not when seen


def test_resuming_after_a_position_gets_each_entry_once_in_order(db_url):
    with models(db_url) as m:
        feed = Feed(m.store)
        record_all(m.journey, records(25, seed=5))
        catch_up(m)
        everything = feed.read(limit=10**6)
        assert len(everything) > 20
        middle = everything[len(everything) // 2].position
        resumed = feed.read(after=middle, limit=10**6)
        assert resumed == [e for e in everything if e.position > middle]
        pages, after = [], 0
        while page := feed.read(after=after, limit=7):
            pages += page
            after = page[-1].position
        assert pages == everything
        assert assert_feed_consistent(m.store) == len(everything)


def test_filters_by_kind_and_customer(db_url):
    with models(db_url) as m:
        feed = Feed(m.store)
        record_all(m.journey, records(10, seed=8))
        catch_up(m)
        everything = feed.read(limit=10**6)
        statuses = feed.read(limit=10**6, kinds=["status"])
        assert statuses == [e for e in everything if e.kind == "status"]
        one = everything[0].customer_id
        assert feed.read(limit=10**6, customer_id=one) == [
            e for e in everything if e.customer_id == one
        ]


def test_follow_blocks_then_yields_new_entries(db_url):
    with models(db_url) as m:
        feed = Feed(m.store)
        stop = threading.Event()
        seen = []

        def follow():
            for entry in feed.follow(0, stop=stop, poll_seconds=0.05):
                seen.append(entry)
                if len(seen) >= 3:
                    stop.set()

        thread = threading.Thread(target=follow)
        thread.start()
        record_all(m.journey, [purchase("c-9", "o1", 5)])
        catch_up(m)
        thread.join(timeout=20)
        stop.set()
        assert not thread.is_alive()
        assert changes(seen) == changes(feed.read())


def test_a_rebuild_announces_only_what_new_settings_change(db_url):
    with models(db_url) as m:
        record_all(m.journey, [purchase("c-1", "o1", 300), purchase("c-2", "o1", 30)])
        catch_up(m)
        feed = Feed(m.store)
        head = feed.head()
        rebuild(m.runner, "summary")  # same settings: nothing to announce
        assert feed.head() == head
    stricter = Settings(lapsed_after_days=200)  # c-1's purchase 300 days ago now lapses
    with models(db_url, settings=stricter) as m:
        rebuild(m.runner, "summary")
        fresh = Feed(m.store).read(after=head)
        assert changes(fresh) == [("c-1", "status", "active", "lapsed")]
        assert "rebuilt" in fresh[0].reason and fresh[0].cause is None
        assert_feed_consistent(m.store)


def test_a_customer_whose_first_event_is_in_the_future_does_not_break_the_runner(db_url):
    future = (NOW + DAY * 3650).isoformat()
    with models(db_url) as m:
        record_all(m.journey, [
            {"type": "qualified", "customer_id": "f-2", "occurred_at": future},
            {"type": "qualified", "customer_id": "f-1", "occurred_at": at(10)},
        ])
        catch_up(m)
        rows = {row[0]: row for row in view_rows(m.store, "summary")}
        assert set(rows) == {"f-1", "f-2"}
        assert changes(Feed(m.store).read()) == [
            ("f-1", "loyalty_stage", None, "prospect"),
            ("f-1", "status", None, "active"),
            ("f-1", "relationship_level", None, "none"),
        ]
        rebuild(m.runner, "summary")
        assert {row[0] for row in view_rows(m.store, "summary")} == {"f-1", "f-2"}


def test_a_schema_named_at_postgresql_s_limit_has_a_feed(pg_url):
    """A NOTIFY channel name may not reach 64 bytes; a schema name of 63 may."""
    import psycopg
    from conftest import PG_URL, _conninfo
    from psycopg import sql

    schema = pg_url.rsplit("=", 1)[1].ljust(63, "x")
    try:
        with models(f"{PG_URL}?schema={schema}") as m:
            record_all(m.journey, [purchase("c-9", "o1", 5)])
            catch_up(m)
            assert changes(Feed(m.store).read()) == [
                ("c-9", kind, None, value)
                for kind, value in (
                    ("loyalty_stage", "first_time"),
                    ("status", "active"),
                    ("relationship_level", "basic"),
                )
            ]
    finally:
        with psycopg.connect(_conninfo(PG_URL), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


BASE = NOW - DAY * 1000


@st.composite
def batched_histories(draw) -> list[list[dict]]:
    """Events of two customers, recorded in batches 100 days apart: each dated anywhere
    in the 1,000 days (backfilled, current, or ahead of its recording)."""
    kinds = st.sampled_from(["purchase", "purchase", "contact", "left", "qualified"])
    made = []
    for n in range(draw(st.integers(1, 10))):
        customer = draw(st.sampled_from(["x", "y"]))
        when = (BASE + DAY * draw(st.integers(0, 999))).isoformat()
        base = {"customer_id": customer, "occurred_at": when}
        kind = draw(kinds)
        if kind == "purchase":
            made.append({**base, "type": "purchase", "order_id": f"o-{n}", "amount": "10"})
        elif kind == "contact":
            made.append({**base, "type": "contact", "channel": "phone",
                         "direction": "inbound", "purpose": "inquiry", "event_id": f"e-{n}"})
        else:
            made.append({**base, "type": kind, "event_id": f"e-{n}"})
    cuts = sorted(draw(st.lists(st.integers(1, len(made)), max_size=4, unique=True)))
    return [made[a:b] for a, b in zip([0, *cuts], [*cuts, len(made)], strict=True) if made[a:b]]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batched_histories())
def test_a_late_runner_announces_what_one_following_each_batch_does(tmp_path_factory, batches):
    """However late the runner comes, when a customer's events fall in one of its pages,
    the feed is the one a runner applying each batch as it was recorded (and refreshing
    nothing in between) writes: a new customer's changes over several requests, or over
    a runner stopped meanwhile, were announced as one net change, blamed on the newest
    event."""
    folder = tmp_path_factory.mktemp("feeds")
    clock = [BASE]
    moments = [BASE + DAY * 100 * (k + 1) for k in range(len(batches))]
    seen = []
    for late in (False, True):
        url = f"sqlite:///{folder}/{'late' if late else 'live'}.db"
        with models(url, clock=lambda: clock[0]) as m:
            for moment, batch in zip(moments, batches, strict=True):
                clock[0] = moment
                record_all(m.journey, batch)
                if not late:
                    catch_up(m)
            clock[0] = NOW
            catch_up(m)
            while m.runner.refresh_due():
                pass
            assert_feed_consistent(m.store)
            seen.append(sorted(
                (e.customer_id, e.position, e.kind, e.from_value, e.to_value, e.occurred_at,
                 e.cause_id)
                for e in Feed(m.store).read(limit=10**6)
            ))
    live, late = ([e[:1] + e[2:] for e in found] for found in seen)
    assert late == live


def test_batches_that_change_nothing_before_them_are_walked_as_one(db_url):
    """Each batch was walked from the customer's first event: a customer's events sent
    one request each as they happen, while the runner was stopped, cost the square of
    their number (2,000 in a page: 13 s, a review)."""
    from projections.readmodels.entries import spans

    clock = [BASE]
    with models(db_url, clock=lambda: clock[0]) as m:
        for day in (10, 20, 30):  # each recorded a day after it happened
            clock[0] = BASE + DAY * (day + 1)
            record_all(m.journey, [purchase("z", f"z-{day}", (NOW - BASE).days - day)])
        stream = m.journey.app.customer_streams(["z"])["z"]
        assert list(spans(stream, 0, None, NOW)) == [(len(stream.events), NOW)]
        clock[0] = BASE + DAY * 40
        record_all(m.journey, [purchase("z", "z-late", (NOW - BASE).days - 15)])  # backfilled
        stream = m.journey.app.customer_streams(["z"])["z"]
        found = list(spans(stream, 0, None, NOW))
        assert [end for end, _ in found] == [len(stream.events) - 1, len(stream.events)]
        assert found[0][1] == BASE + DAY * 31  # the batch before it, up to its recording
