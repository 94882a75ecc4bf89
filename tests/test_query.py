"""Point-in-time queries over a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from projections.pointintime import NotFound, PointInTime, history, show
from projections.settings import Settings


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def buy(engine, customer: str, when: str, order: str, amount: str = "100", **more) -> None:
    engine.record({"type": "purchase", "customer_id": customer, "occurred_at": when + "T10:00:00Z",
                   "order_id": order, "amount": amount, **more})


def test_show_answers_at_a_moment(engine):
    buy(engine, "c-1", "2025-01-01", "o-1", category="books")
    buy(engine, "c-1", "2025-02-01", "o-2", category="music")
    queries = PointInTime(engine)
    assert queries.show("c-1", as_of=t("2025-01-15")).loyalty_stage.value == "first_time"
    answer = queries.show("c-1", as_of=t("2025-03-01"))
    assert answer.loyalty_stage.value == "repeat"
    assert answer.loyalty_stage.events == (2, 3)
    assert answer.scores["revenue"] == Decimal(200)
    assert answer.known_at is not None
    assert answer.settings_version == Settings().version


def test_backfill_counts_for_as_of_after_it_but_not_for_known_at_before_its_recording(engine):
    buy(engine, "c-1", "2025-03-01", "o-1")
    known_before = datetime.now(UTC)
    buy(engine, "c-1", "2025-02-01", "o-0")  # a backfill: occurred earlier, recorded later
    queries = PointInTime(engine)
    april = t("2025-04-01")
    assert queries.show("c-1", as_of=april).scores["purchases"] == 2
    assert queries.show("c-1", as_of=april, known_at=known_before).scores["purchases"] == 1
    assert queries.show("c-1", as_of=t("2025-02-15")).loyalty_stage.value == "first_time"
    with pytest.raises(NotFound, match="not found at 2025-02-15"):
        queries.show("c-1", as_of=t("2025-02-15"), known_at=known_before)


def test_unknown_and_not_yet_known_customers(engine):
    buy(engine, "c-1", "2025-03-01", "o-1")
    queries = PointInTime(engine)
    with pytest.raises(NotFound, match="unknown"):
        queries.show("nobody")
    with pytest.raises(NotFound, match="not yet known"):
        queries.show("c-1", known_at=t("2000-01-01"))
    results = queries.show_many(["nobody", "c-1"])
    assert results[0].error is not None and results[1].answer is not None


def test_rfm_ranks_among_customers_with_purchases_at_t(engine):
    buy(engine, "a", "2025-01-01", "o-1", amount="10")
    buy(engine, "b", "2025-01-02", "o-1", amount="20")
    buy(engine, "b", "2025-01-03", "o-2", amount="20")
    buy(engine, "late", "2025-06-01", "o-1", amount="999")
    engine.record({"type": "qualified", "customer_id": "p", "occurred_at": "2025-01-01T00:00:00Z"})
    queries = PointInTime(engine)
    results = queries.show_many(["a", "b", "p"], as_of=t("2025-02-01"))
    a, b, p = (r.answer for r in results)
    # two customers ("late" does not count yet): ceil(5 * (worse + equal / 2) / 2)
    assert a.scores["rfm"] == {"r": 2, "f": 2, "m": 2}
    assert b.scores["rfm"] == {"r": 4, "f": 4, "m": 4}
    assert p.scores["rfm"] is None
    later = queries.show("a", as_of=t("2025-07-01")).scores["rfm"]
    # among three now: the oldest purchase and the least money; one purchase, as "late"
    assert later == {"r": 1, "f": 2, "m": 1}


def test_history_last_step_equals_show(engine):
    buy(engine, "c-1", "2025-01-01", "o-1")
    engine.record({"type": "refund", "customer_id": "c-1", "occurred_at": "2025-01-05T00:00:00Z",
                   "order_id": "o-1", "amount": "40"})
    engine.record({"type": "left", "customer_id": "c-1", "occurred_at": "2025-02-01T00:00:00Z"})
    steps = history(engine, "c-1")
    assert [s.event.TYPE for s in steps if s.event] == ["identified", "purchase", "refund", "left"]
    last = steps[-1]
    shown = show(engine, "c-1", as_of=last.at).as_dict()
    expected = last.answer.as_dict()
    shown["scores"]["rfm"] = expected["scores"]["rfm"] = None
    shown["known_at"] = expected["known_at"] = None
    assert shown == expected


def test_history_with_known_at_hides_later_recordings(engine):
    buy(engine, "c-1", "2025-03-01", "o-1")
    known_before = datetime.now(UTC)
    buy(engine, "c-1", "2025-02-01", "o-0")
    queries = PointInTime(engine)
    assert sum(1 for s in queries.history("c-1", known_before) if s.event) == 2
    assert sum(1 for s in queries.history("c-1") if s.event) == 3


def test_new_events_are_seen_by_a_long_lived_query_object(engine):
    buy(engine, "c-1", "2025-01-01", "o-1")
    queries = PointInTime(engine)
    assert queries.show("c-1").scores["purchases"] == 1
    buy(engine, "c-1", "2025-01-02", "o-2")
    assert queries.show("c-1").scores["purchases"] == 2


def test_referral_conversion_makes_an_advocate(engine):
    for month, category in (("01", "a"), ("03", "b"), ("05", "a"), ("08", "b")):
        buy(engine, "c-1", f"2024-{month}-01", f"o-{month}", category=category)
    engine.record({"type": "referral", "customer_id": "c-1", "occurred_at": "2024-09-01T00:00:00Z",
                   "referred_customer_id": "c-2"})
    buy(engine, "c-2", "2024-09-10", "o-1")
    answer = show(engine, "c-1", as_of=t("2024-10-01"))
    assert answer.loyalty_stage.value == "advocate"
    assert show(engine, "c-2", as_of=t("2024-10-01")).scores["rfm"] is not None


def test_the_python_api_takes_moments_as_text_as_the_cli_does(engine):
    buy(engine, "c-1", "2025-01-01", "o-1")
    queries = PointInTime(engine)
    now = datetime.now(UTC)
    shown = queries.show("c-1", as_of="2025-07-01T00:00:00Z", known_at=now)
    assert shown == queries.show("c-1", as_of=t("2025-07-01"), known_at=now)
    assert queries.show("c-1", as_of=t("2025-07-01"), known_at=now.isoformat()) == shown
    assert [r.answer for r in queries.show_many(["c-1"], "2025-07-01", now.isoformat())] == [shown]
    replayed = queries.history("c-1", known_at=now.isoformat(), until="2025-07-01")
    assert replayed == queries.history("c-1", known_at=now, until=t("2025-07-01"))
    assert queries.population("2025-07-01", "now").size == 1
    with pytest.raises(ValueError, match="as_of: '2025-07-01T00:00' has no time zone"):
        queries.show("c-1", as_of="2025-07-01T00:00")
    with pytest.raises(ValueError, match="known_at: '2999-01-01' lies ahead"):
        queries.history("c-1", known_at="2999-01-01")


def test_a_moment_that_is_not_a_datetime_with_a_zone_is_refused_at_the_boundary(engine):
    """A naive datetime was read in this machine's zone; a date or a number failed deep in
    the rules (no tzinfo)."""
    buy(engine, "c-1", "2025-01-01", "o-1")
    queries = PointInTime(engine)
    for value in (date(2025, 7, 1), 1751328000):
        with pytest.raises(TypeError, match="as_of must be a datetime with a time zone"):
            queries.show("c-1", as_of=value)
    naive = datetime(2025, 7, 1)
    with pytest.raises(ValueError, match="as_of: 2025-07-01T00:00:00 has no time zone"):
        queries.show("c-1", as_of=naive)
    with pytest.raises(ValueError, match="known_at: 2025-07-01T00:00:00 has no time zone"):
        queries.show_many(["c-1"], known_at=naive)
    with pytest.raises(ValueError, match="until: 2025-07-01T00:00:00 has no time zone"):
        queries.history("c-1", until=naive)
    with pytest.raises(TypeError, match="known_at must be a datetime"):
        queries.population(t("2025-07-01"), None)


def test_a_datetime_is_held_to_what_text_is_held_to(engine):
    """Text ahead of now as known_at, or outside the rules' calendar, was refused; the
    same moment as a datetime was taken (an answer "as known" in 2999)."""
    buy(engine, "c-1", "2025-01-01", "o-1")
    queries = PointInTime(engine)
    ahead = datetime(2999, 1, 1, tzinfo=UTC)
    for given in ("2999-01-01", ahead):
        with pytest.raises(ValueError, match=r"known_at: .* lies ahead"):
            queries.show("c-1", known_at=given)
    with pytest.raises(ValueError, match=r"as_of: 9999-01-01.* between the years 1900 and 2999"):
        queries.show("c-1", as_of=datetime(9999, 1, 1, tzinfo=UTC))
    assert queries.show("c-1", as_of=ahead).loyalty_stage.value  # as_of may lie ahead
