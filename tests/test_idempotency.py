"""Retries are no-ops, the same id with other content is a conflict (DOMAIN.md §2),
and re-importing a file stores nothing new (issue 2)."""

from __future__ import annotations

import csv
from decimal import Decimal

import pytest
from support import at, ev, purchase, referral, refund, refused, snapshot, stream, write_jsonl

from journey.api import RejectedInput


def assert_duplicate(engine, event, customers=("c-1",)):
    before = snapshot(engine, customers)
    recorded = engine.record(event)
    assert recorded.duplicate is True
    assert recorded.positions == []
    assert snapshot(engine, customers) == before


@pytest.mark.parametrize("again", ["59.9", "59.90", 59.9, "59.9000", Decimal("59.900"), "5.99e1"])
def test_the_same_purchase_in_any_spelling_of_its_amount_is_a_retry(engine, again):
    engine.record(purchase("c-1", "o-1", "59.90", category="books"))
    assert_duplicate(engine, purchase("c-1", "o-1", again, category="books"))
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "purchase"]


@pytest.mark.parametrize(
    "again", ["2025-03-01T12:00:00+02:00", "2025-03-01T10:00:00+00:00", "2025-03-01T05:00:00-05:00"]
)
def test_the_same_moment_in_another_zone_is_the_same_content(engine, again):
    engine.record(purchase("c-1", "o-1"))  # at 2025-03-01T10:00:00Z
    assert_duplicate(engine, {**purchase("c-1", "o-1"), "occurred_at": again})


def test_a_retried_purchase_with_another_event_id_is_still_a_retry(engine):
    engine.record(purchase("c-1", "o-1", event_id="e-1"))
    assert_duplicate(engine, purchase("c-1", "o-1", event_id="e-2"))


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": "59.91"},
        {"category": "music"},
        {"margin": "1"},
        {"occurred_at": at(2)},
    ],
)
def test_the_same_order_id_with_other_content_is_a_conflict(engine, changed):
    engine.record(purchase("c-1", "o-1", "59.90", category="books"))
    again = {**purchase("c-1", "o-1", "59.90", category="books"), **changed}
    refused(engine, again, "order_id", "o-1", kind="conflict")


def test_an_order_id_is_unique_per_customer_only(engine):
    engine.record(purchase("c-1", "o-1"))
    recorded = engine.record(purchase("c-2", "o-1", "10"))
    assert not recorded.duplicate
    assert stream(engine, "c-2")[-1][2]["amount"] == Decimal("10")


def complaint(**changed):
    return {**ev("complaint", complaint_id="k-1", topic="service", severity="low"), **changed}


def resolution(**changed):
    base = ev("complaint_resolved", occurred_at=at(3), complaint_id="k-1", satisfied=True)
    return {**base, **changed}


def test_the_same_complaint_is_a_retry_and_other_content_a_conflict(engine):
    engine.record(complaint())
    assert_duplicate(engine, complaint())
    refused(engine, complaint(severity="high"), "complaint_id", "k-1", kind="conflict")
    refused(engine, complaint(occurred_at=at(2)), "complaint_id", kind="conflict")


def test_the_same_resolution_is_a_retry_and_other_content_a_conflict(engine):
    engine.record(complaint())
    engine.record(resolution(cost="2.5"))
    assert_duplicate(engine, resolution(cost="2.50"))
    refused(engine, resolution(cost="3"), "complaint_id", kind="conflict")
    refused(engine, resolution(satisfied=False), "complaint_id", kind="conflict")


def test_the_same_event_id_is_a_retry_and_other_content_a_conflict(engine):
    engine.record(ev("feedback", score=7, event_id="fb-1"))
    assert_duplicate(engine, ev("feedback", score=7, event_id="fb-1"))
    refused(engine, ev("feedback", score=8, event_id="fb-1"), "event_id", "fb-1", kind="conflict")
    refused(engine, ev("qualified", event_id="fb-1"), "event_id", kind="conflict")
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "feedback"]


@pytest.mark.parametrize(
    "event",
    [
        ev("qualified", note="budget"),
        ev("disqualified", reason="no budget"),
        ev("contact", channel="chat", direction="inbound", purpose="inquiry",
           personal={"email": "a@b.c"}),
        ev("feedback", score=3),
        ev("manager_assigned", manager="Olga"),
        ev("benefit_granted", kind="social"),
        ev("left"),
        ev("identified", source="fair", acquisition_cost="3.5"),
        referral("c-1", "c-2"),
    ],
    ids=lambda e: e["type"],
)
def test_an_event_without_any_id_sent_again_unchanged_is_a_retry(engine, event):
    engine.record(event)
    assert_duplicate(engine, event, customers=("c-1", "c-2"))


def test_the_same_refund_sent_again_is_a_retry(engine):
    engine.record(purchase("c-1", "o-1", "59.90"))
    engine.record(refund("c-1", "o-1", "30"))
    assert_duplicate(engine, refund("c-1", "o-1", "30.00"))  # not a second refund of 30
    assert engine.record(refund("c-1", "o-1", "29.90")).duplicate is False  # a different one
    refunds = [Decimal(p["amount"]) for _, t, p in stream(engine, "c-1") if t == "refund"]
    assert refunds == [Decimal("30"), Decimal("29.90")]


CONTACT = {"channel": "email", "direction": "outbound", "purpose": "offer"}


@pytest.mark.parametrize("given, again", [({}, {"cost": "0"}), ({"cost": 0}, {}),
                                          ({"cost": "0.00"}, {"cost": None})])
@pytest.mark.parametrize("event_id", [None, "e-7"])
def test_a_cost_of_0_is_the_same_event_as_no_cost(engine, given, again, event_id):
    """The rules read a missing cost as 0: an export that writes the 0 out sent every
    contact a second time (its involvement counted twice), or, with an event_id, was a
    conflict; with personal data too (compared by its digest)."""
    ids = {"event_id": event_id} if event_id else {}
    engine.record(ev("contact", **CONTACT, **given, **ids))
    assert_duplicate(engine, ev("contact", **CONTACT, **again, **ids))
    personal = {"personal": {"name": "Ann"}, "occurred_at": at(3)}
    if event_id:
        personal["event_id"] = "p-7"
    engine.record(ev("contact", **CONTACT, **given, **personal))
    assert_duplicate(engine, ev("contact", **CONTACT, **again, **personal))
    engine.record(ev("complaint", complaint_id="k-1", topic="service", severity="low"))
    resolved = {"complaint_id": "k-1", "satisfied": True, **ids}
    engine.record(ev("complaint_resolved", occurred_at=at(2), **resolved, **given))
    assert_duplicate(engine, ev("complaint_resolved", occurred_at=at(2), **resolved, **again))


def test_a_cost_other_than_0_and_an_acquisition_cost_of_0_still_count(engine):
    """Only a 0 the rules read as nothing is nothing: an acquisition cost of 0 replaces
    one stated before, so it is a fact of its own."""
    engine.record(ev("contact", **CONTACT))
    assert engine.record(ev("contact", **CONTACT, cost="0.01")).duplicate is False
    engine.record(ev("identified", occurred_at=at(3)))  # stored as reidentified
    assert engine.record(ev("identified", occurred_at=at(3), acquisition_cost="0")).positions


def test_events_without_id_but_with_other_content_are_both_stored(engine):
    engine.record(ev("feedback", score=3))
    engine.record(ev("feedback", score=4))
    engine.record(ev("feedback", occurred_at=at(2), score=3))
    assert [p["score"] for _, t, p in stream(engine, "c-1") if t == "feedback"] == [3, 4, 3]


def test_a_retry_inside_one_batch_is_counted_as_a_duplicate(engine):
    outcome = engine.record_many([purchase("c-1", "o-1"), purchase("c-1", "o-1", "59.9")])
    assert (outcome.stored, outcome.duplicates, outcome.rejected) == (2, 1, [])
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "purchase"]


def test_a_conflict_inside_one_batch_stores_nothing_and_says_so(engine):
    """It said the order "was already recorded", with nothing stored (an operator's walk)."""
    outcome = engine.record_many([purchase("c-1", "o-1"), purchase("c-1", "o-1", "1")])
    assert [r.line for r in outcome.rejected] == [2]
    error = outcome.rejected[0].errors[0]
    assert (error.field, error.kind) == ("order_id", "conflict")
    assert "'o-1' was sent earlier in this input with other content" in error.reason
    assert engine.app.max_notification_id() == 0
    engine.record(purchase("c-1", "o-1"))
    again = engine.record_many([purchase("c-1", "o-1", "1")]).rejected[0].errors[0]
    assert "'o-1' was already recorded with other content" in again.reason
    first = {"type": "identified", "customer_id": "n-1", "occurred_at": at(1), "event_id": "e-1"}
    other = {**first, "referred_by": "c-1"}  # the same event_id, other content
    (refused,) = engine.record_many([first, other]).rejected
    assert "'e-1' was sent earlier in this input" in refused.errors[0].reason


def test_record_of_a_conflict_raises_with_kind_conflict(engine):
    engine.record(purchase("c-1", "o-1"))
    with pytest.raises(RejectedInput) as info:
        engine.record(purchase("c-1", "o-1", "1"))
    assert info.value.kind == "conflict"


# --- re-import ---------------------------------------------------------------------------

LINES = [
    ev("identified", "a", at(1), source="fair", personal={"name": "Ann"}),
    purchase("a", "o-1", 59.9, day=2, category="books"),
    refund("a", "o-1", "9.90", day=3),
    ev("complaint", "a", at(4), complaint_id="k-1", topic="product", severity="high"),
    ev("complaint_resolved", "a", at(5), complaint_id="k-1", satisfied=False, cost="1.5"),
    referral("a", "b", day=6),
    purchase("b", "o-9", "10", day=7),
    ev("feedback", "b", at(8), score=10, event_id="fb-1"),
    ev("contact", "c", at(8), channel="email", direction="outbound", purpose="offer"),
    ev("left", "c", at(9)),
]
#: Events the engine adds on the first import: b identified by the referral, c implicitly,
#: and a's referral_converted when b buys.
DERIVED = 3


def test_reimporting_the_same_jsonl_file_stores_nothing_new(engine, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", LINES)
    first = engine.import_files([path])
    assert first.rejected == []
    assert (first.stored, first.derived, first.duplicates) == (len(LINES) + DERIVED, DERIVED, 0)
    before = snapshot(engine, ["a", "b", "c"])
    again = engine.import_files([path])
    assert again.rejected == []
    assert (again.stored, again.derived, again.duplicates) == (0, 0, len(LINES))
    assert again.positions == []
    assert snapshot(engine, ["a", "b", "c"]) == before


def test_reimporting_the_same_csv_file_stores_nothing_new(engine, tmp_path):
    path = tmp_path / "events.csv"
    names = ["type", "customer_id", "occurred_at", "order_id", "amount", "category",
             "personal.name", "score"]
    rows = [
        {"type": "identified", "customer_id": "a", "occurred_at": at(1), "personal.name": "Ann"},
        {"type": "purchase", "customer_id": "a", "occurred_at": at(2), "order_id": "o-1",
         "amount": "59.90", "category": "books"},
        {"type": "refund", "customer_id": "a", "occurred_at": at(3), "order_id": "o-1",
         "amount": "9.9"},
        {"type": "feedback", "customer_id": "a", "occurred_at": at(4), "score": "9"},
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        writer.writerows(rows)
    first = engine.import_files([str(path)])
    assert (first.stored, first.rejected) == (4, [])
    again = engine.import_files([str(path)])
    assert (again.stored, again.duplicates, again.rejected) == (0, 4, [])
    assert len(engine.events("a")) == 4


def test_a_changed_line_on_reimport_is_a_conflict_and_nothing_is_stored(engine, tmp_path):
    engine.import_files([write_jsonl(tmp_path / "v1.jsonl", LINES)])
    changed = [*LINES, purchase("d", "o-1", "5", day=9)]
    changed[1] = purchase("a", "o-1", "69.90", day=2, category="books")
    before = snapshot(engine, ["a", "b", "c", "d"])
    outcome = engine.import_files([write_jsonl(tmp_path / "v2.jsonl", changed)])
    assert [(r.line, r.errors[0].field, r.errors[0].kind) for r in outcome.rejected] == [
        (2, "order_id", "conflict")
    ]
    assert outcome.stored == 0
    assert snapshot(engine, ["a", "b", "c", "d"]) == before


def test_an_overlapping_import_stores_only_the_new_lines(engine, tmp_path):
    engine.import_files([write_jsonl(tmp_path / "part1.jsonl", LINES[:5])])
    outcome = engine.import_files([write_jsonl(tmp_path / "all.jsonl", LINES)])
    assert outcome.duplicates == 5
    assert outcome.stored == len(LINES) - 5 + DERIVED
