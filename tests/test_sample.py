"""The sample generator gives valid, varied, reproducible input, streamed."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import get_args

import pytest

from commands.models import MODELS, Contact, Purchase, parse_command
from journey.sample import REFERENCE, sample


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return list(sample(300, seed=11))


@pytest.fixture(scope="module")
def commands(records) -> list:
    return [parse_command(record) for record in records]


def literal_values(model, name: str) -> set[str]:
    return set(get_args(model.model_fields[name].annotation))


def test_every_record_is_valid_input_and_every_type_occurs(commands):
    assert {c.type for c in commands} == set(MODELS)


@pytest.mark.parametrize("name", ["channel", "direction", "purpose"])
def test_every_kind_of_contact_occurs(commands, name):
    seen = {getattr(c, name) for c in commands if isinstance(c, Contact)}
    assert seen == literal_values(Contact, name)


def test_every_enum_of_the_other_types_occurs(commands):
    def values(type_: str, name: str) -> set:
        return {getattr(c, name) for c in commands if c.type == type_}

    assert values("complaint", "topic") == literal_values(MODELS["complaint"], "topic")
    assert values("complaint", "severity") == literal_values(MODELS["complaint"], "severity")
    assert values("benefit_granted", "kind") == literal_values(MODELS["benefit_granted"], "kind")
    assert values("complaint_resolved", "satisfied") == {True, False}
    assert len(values("purchase", "category")) > 1
    assert any(c.personal for c in commands if c.type == "identified")
    assert any(c.acquisition_cost for c in commands if c.type == "identified")
    assert any(c.margin for c in commands if isinstance(c, Purchase))
    assert any(c.margin is None for c in commands if isinstance(c, Purchase))


def test_same_seed_same_records_other_seed_other_records():
    assert list(sample(40, seed=3)) == list(sample(40, seed=3))
    assert list(sample(40, seed=3)) != list(sample(40, seed=4))


@pytest.mark.parametrize(("customers", "events"), [(200, 1000), (50, 50), (7, 1234)])
def test_exact_sizes_for_benchmarks(customers, events):
    records = list(sample(customers, events=events, seed=1))
    assert len(records) == events
    assert len({r["customer_id"] for r in records}) == customers


def test_impossible_sizes_are_refused():
    with pytest.raises(ValueError):
        next(sample(10, events=9))


def test_streams_without_building_the_whole_sample():
    first = next(sample(10**9, seed=0))  # a whole sample this size would never finish
    assert first["customer_id"].startswith("c-")


def test_histories_span_the_years_before_the_reference(commands):
    times = [c.occurred_at for c in commands]
    assert max(times) < REFERENCE
    assert min(times) > REFERENCE - timedelta(days=3 * 366)
    assert max(times) - min(times) > timedelta(days=2 * 365)


def test_dependent_records_follow_what_they_depend_on(commands):
    paid: dict[tuple, Purchase] = {}
    refunded: dict[tuple, Decimal] = defaultdict(Decimal)
    opened: dict[tuple, object] = {}
    resolved: set[tuple] = set()
    for c in commands:
        if c.type == "purchase":
            paid[c.customer_id, c.order_id] = c
        elif c.type == "refund":
            purchase = paid[c.customer_id, c.order_id]
            refunded[c.customer_id, c.order_id] += c.amount
            assert refunded[c.customer_id, c.order_id] <= purchase.amount
            assert c.occurred_at >= purchase.occurred_at
        elif c.type == "complaint":
            opened[c.customer_id, c.complaint_id] = c.occurred_at
        elif c.type == "complaint_resolved":
            key = (c.customer_id, c.complaint_id)
            assert c.occurred_at >= opened[key] and key not in resolved
            resolved.add(key)
    full = sum(refunded[key] == paid[key].amount for key in refunded)
    assert 0 < full < len(refunded), "both full and partial refunds"


def test_some_records_are_backfilled(commands):
    latest: dict[str, object] = {}
    backfilled = 0
    for c in commands:
        seen = latest.get(c.customer_id)
        backfilled += seen is not None and c.occurred_at < seen
        latest[c.customer_id] = max(seen or c.occurred_at, c.occurred_at)
    assert backfilled > len(commands) * 0.01


def test_referrals_bring_customers_some_of_whom_buy(commands):
    by_customer = defaultdict(list)
    for c in commands:
        by_customer[c.customer_id].append(c)
    referrals = [c for c in commands if c.type == "referral"]
    referred_in_sample = [r for r in referrals if r.referred_customer_id in by_customer]
    outsiders = [r for r in referrals if r.referred_customer_id not in by_customer]
    converting = [
        r
        for r in referred_in_sample
        if any(
            e.type == "purchase" and e.occurred_at >= r.occurred_at
            for e in by_customer[r.referred_customer_id]
        )
    ]
    assert outsiders and converting and len(converting) < len(referrals)


def test_some_customers_come_back_after_leaving(commands):
    history = sorted(commands, key=lambda c: (c.customer_id, c.occurred_at))
    came_back = {
        a.customer_id
        for a, b in itertools.pairwise(history)
        if a.customer_id == b.customer_id and a.type == "left" and b.type == "purchase"
    }
    assert came_back


def test_some_customers_are_first_seen_without_identification(records):
    firsts: dict[str, str] = {}
    for record in records:
        firsts.setdefault(record["customer_id"], record["type"])
    assert set(firsts.values()) - {"identified"}
