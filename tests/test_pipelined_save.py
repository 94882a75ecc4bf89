"""A save of many batches stores them one after another while the next is encoded
(commands/handlers.py): in order, each once, and nothing after a batch that failed."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import IntegrityError
from support import StepClock, at, ev, opened, stream

from commands.handlers import UnitOfWork, apply_all
from commands.models import parse_command
from journey.application import JourneyApplication

CUSTOMERS = [f"c-{i}" for i in range(10)]


def applied(engine, customers=CUSTOMERS) -> UnitOfWork:
    """A unit of work holding, per new customer, its implicit identification and a
    qualification: two events each."""
    uow = UnitOfWork(engine.app, engine.actor, engine.clock)
    commands = [(n, parse_command(ev("qualified", c, at(2)))) for n, c in enumerate(customers)]
    assert not apply_all(uow, commands).rejected
    return uow


def test_batches_are_stored_in_order_each_once_and_sealed(engine):
    saved = applied(engine).save(batch_events=4)  # five batches of two customers
    assert [customer for customer, _, _ in saved] == [c for c in CUSTOMERS for _ in range(2)]
    assert [type_ for _, type_, _ in saved] == ["identified", "qualified"] * len(CUSTOMERS)
    positions = [position for _, _, position in saved]
    assert positions == sorted(set(positions))
    assert engine.app.max_notification_id() == positions[-1]
    for customer in CUSTOMERS:
        assert [t for _, t, _ in stream(engine, customer)] == ["identified", "qualified"]
    report = engine.verify()
    assert report.clean and report.sealed_now == 0 and report.events == len(CUSTOMERS) * 2


def test_each_batch_is_recorded_when_it_is_stored_not_when_validated(db_url):
    clock = StepClock()
    with opened(db_url, clock=clock) as engine:
        uow = applied(engine)
        last_applied = clock.readings[-1]  # every line is applied before any is stored
        uow.save(batch_events=4)
        streams = [engine.events(customer) for customer in CUSTOMERS]
        report = engine.verify()
    stamps = [{e.recorded_at for e in events} for events in streams]
    assert all(len(one) == 1 for one in stamps)  # a customer's events: one batch, one moment
    by_batch = [stamps[i].pop() for i in range(0, len(CUSTOMERS), 2)]
    assert by_batch == [stamps[i + 1].pop() for i in range(0, len(CUSTOMERS), 2)]
    assert last_applied < by_batch[0] and by_batch == sorted(set(by_batch))
    assert report.clean  # each hash covers the time the store recorded


def test_nothing_is_stored_after_a_batch_that_failed(engine):
    uow = applied(engine)
    engine.record(ev("qualified", "c-5", at(2)))  # another writer got to c-5 first
    with pytest.raises(IntegrityError):  # the batch holding c-4 and c-5
        uow.save(batch_events=4)
    stored = {c for c in CUSTOMERS if stream(engine, c)}
    assert stored == {"c-0", "c-1", "c-2", "c-3", "c-5"}  # batches 1 and 2, and the other writer

    again = engine.record_many([ev("qualified", c, at(2)) for c in CUSTOMERS])
    assert again.duplicates == 5  # c-0 to c-3, and c-5's from the other writer
    for customer in CUSTOMERS:
        assert [t for _, t, _ in stream(engine, customer)] == ["identified", "qualified"]
    assert engine.verify().clean


# -- an import whose save stopped partway ----------------------------------------------------


def referred_buyer_and_others(engine) -> list[dict]:
    """ref-A referred ref-B (stored); the input: ref-B's first purchase (which converts
    ref-A's referral) and a qualification for each of ten new customers."""
    engine.record(ev("referral", "ref-A", at(1), referred_customer_id="ref-B"))
    buy = ev("purchase", "ref-B", at(3), order_id="o-1", amount="10")
    return [buy] + [ev("qualified", c, at(2)) for c in CUSTOMERS]


def small_batches(monkeypatch, fail_after: int | None = None, then=None) -> None:
    """Saves in batches of four events; after batch ``fail_after`` is stored, ``then()``."""
    save, store = UnitOfWork.save, JourneyApplication.store
    stored = [0]

    def storing(self, pending):
        recordings = store(self, pending)
        stored[0] += 1
        if stored[0] == fail_after:
            then()
        return recordings

    monkeypatch.setattr(UnitOfWork, "save", lambda self: save(self, batch_events=4))
    monkeypatch.setattr(JourneyApplication, "store", storing)


def conversions(engine, customer: str) -> int:
    return sum(t == "referral_converted" for _, t, _ in stream(engine, customer))


def test_a_save_retried_after_a_partial_store_counts_what_it_stored(engine, monkeypatch):
    inputs = referred_buyer_and_others(engine)
    head = engine.app.max_notification_id()
    other = "c-9"  # in a later batch: another writer gets to it first
    small_batches(monkeypatch, 1, lambda: engine.record(ev("qualified", other, at(2))))
    outcome = engine.record_many(inputs)
    added = engine.app.count_after(head) - 2  # less the other writer's two events
    assert outcome.stored == added
    assert outcome.duplicates == 1  # c-9's qualification, which the other writer stored
    assert outcome.derived == added - (len(inputs) - 1)  # identifications, the conversion
    assert conversions(engine, "ref-A") == 1
    assert engine.verify().clean


class Crash(BaseException):
    """The process dying between two batches (SIGKILL, Ctrl-C)."""


def test_an_import_cut_off_between_batches_is_completed_by_importing_it_again(
    engine, monkeypatch
):
    inputs = referred_buyer_and_others(engine)
    head = engine.app.max_notification_id()

    def crash() -> None:
        raise Crash

    small_batches(monkeypatch, 1, crash)
    with pytest.raises(Crash):
        engine.record_many(inputs)
    first = engine.app.count_after(head)
    assert first > 0 and conversions(engine, "ref-A") == 0  # the conversion was not reached

    monkeypatch.undo()
    again = engine.record_many(inputs)
    assert conversions(engine, "ref-A") == 1  # derived though its purchase was a retry
    assert again.stored == engine.app.count_after(head) - first
    for customer in CUSTOMERS:
        assert [t for _, t, _ in stream(engine, customer)] == ["identified", "qualified"]
    assert engine.verify().clean
