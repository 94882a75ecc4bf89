"""The demo stores what it says it stored, and the engine derives what the sample implies."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime

import pytest
from rich.console import Console

from commands.models import parse_command
from journey.demo import print_demo_summary, run_demo
from journey.sample import sample

REFERENCE = datetime(2025, 1, 31, tzinfo=UTC)
CUSTOMERS, SEED = 60, 5


@pytest.fixture
def demo(engine):
    summary = run_demo(engine, customers=CUSTOMERS, seed=SEED, reference=REFERENCE)
    records = [parse_command(r) for r in sample(CUSTOMERS, seed=SEED, reference=REFERENCE)]
    ids = {c.customer_id for c in records} | {
        c.referred_customer_id for c in records if c.type == "referral"
    }
    stored = {customer_id: engine.events(customer_id) for customer_id in ids}
    return summary, records, stored


def test_the_summary_counts_what_the_store_holds(demo):
    summary, records, stored = demo
    events = [e for history in stored.values() for e in history]
    assert summary.inputs == len(records)
    assert summary.stored == len(events) == summary.inputs + summary.derived
    assert summary.duplicates == 0
    assert summary.by_type == Counter(e.TYPE for e in events)
    assert summary.customers == sum(1 for history in stored.values() if history)
    assert len(stored[summary.busiest]) == max(len(history) for history in stored.values())


def test_every_referral_followed_by_a_purchase_is_converted_once(demo):
    summary, records, stored = demo
    expected = {
        (r.customer_id, r.referred_customer_id)
        for r in records
        if r.type == "referral"
        and any(
            e.type == "purchase" and e.occurred_at >= r.occurred_at
            for e in records
            if e.customer_id == r.referred_customer_id
        )
    }
    converted = [
        (e.customer_id, e.referred_customer_id)
        for history in stored.values()
        for e in history
        if e.TYPE == "referral_converted"
    ]
    assert expected and sorted(converted) == sorted(expected)
    assert summary.conversions == len(converted)


def test_backfilled_events_arrive_after_later_ones(demo):
    summary, _, stored = demo
    backfilled = 0
    for history in stored.values():
        for i, event in enumerate(history):
            backfilled += any(e.occurred_at > event.occurred_at for e in history[:i])
    assert summary.backfilled == backfilled > 0


def test_refunds_and_complaints_are_tallied(demo):
    summary, records, _ = demo
    assert summary.full_refunds + summary.partial_refunds == summary.by_type["refund"] > 0
    resolutions = [r for r in records if r.type == "complaint_resolved"]
    assert summary.resolved_satisfied == sum(r.satisfied for r in resolutions)
    assert summary.resolved_unsatisfied == sum(not r.satisfied for r in resolutions)


def test_a_second_run_stores_nothing_new(engine):
    run_demo(engine, customers=20, seed=SEED, reference=REFERENCE)
    again = run_demo(engine, customers=20, seed=SEED, reference=REFERENCE)
    assert again.stored == 0 and again.duplicates == again.inputs
    assert sum(again.by_type.values()) == 0


def test_the_printed_summary_shows_the_figures(demo):
    summary, _, _ = demo
    buffer = io.StringIO()
    print_demo_summary(summary, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert f"{summary.stored} events stored for {summary.customers} customers" in text
    assert f"Referral conversions recorded by the engine: {summary.conversions}" in text
    for type_ in summary.by_type:
        assert type_ in text


def test_the_demo_goes_into_a_store_with_customers_only_when_asked(db_url):
    from typer.testing import CliRunner

    from journey.api import connect
    from journey.cli import app

    with connect(db_url, actor="tester") as engine:
        engine.record({"type": "qualified", "customer_id": "real-1",
                       "occurred_at": "2025-01-01T00:00:00Z"})
    args = ["--db", db_url, "demo", "--customers", "3"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "--into-existing" in refused.stderr and "'real-1'" in refused.stderr
    with connect(db_url) as engine:
        assert engine.app.a_customer_besides("real-") is None  # nothing was stored
    assert CliRunner().invoke(app, [*args, "--into-existing"]).exit_code == 0


@pytest.mark.parametrize("customers", ["0", "-3"])
def test_a_demo_of_no_customers_is_a_usage_error(tmp_path, customers):
    """It was a ValueError traceback (exit 1)."""
    from typer.testing import CliRunner

    from journey.cli import app

    url = f"sqlite:///{tmp_path / 'j.db'}"
    result = CliRunner().invoke(app, ["--db", url, "demo", "--customers", customers])
    assert result.exit_code == 2, result.output
    assert "--customers" in result.output
    assert not (tmp_path / "j.db").exists()
