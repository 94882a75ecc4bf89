"""A save of many batches stores them one after another while the next is encoded
(commands/handlers.py): in order, each once, and nothing after a batch that failed."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import IntegrityError
from support import at, ev, stream

from commands.handlers import UnitOfWork, apply_all
from commands.models import parse_command

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
