"""A first end-to-end check of the store on both databases."""

import json

import pytest


def test_record_and_read_back(engine):
    recorded = engine.record({
        "type": "purchase", "customer_id": "c-1", "occurred_at": "2025-03-01T10:00:00Z",
        "order_id": "o-1", "amount": "59.90",
    })
    assert len(recorded.positions) == 2  # the implicit identification, then the purchase
    types = [e.TYPE for e in engine.events("c-1")]
    assert types == ["identified", "purchase"]
    assert all(e.actor == "tester" for e in engine.events("c-1"))


@pytest.mark.postgres
def test_a_schema_named_in_capitals_works_end_to_end(pg_url):
    """PostgreSQL folds an unquoted name to lower case: every connection must quote it."""
    import psycopg
    from conftest import PG_URL, _conninfo
    from psycopg import sql
    from typer.testing import CliRunner

    from journey.cli import app

    schema = "Jt_" + pg_url.rsplit("jt_", 1)[1]
    url = f"{PG_URL}?schema={schema}"
    try:
        record = {"type": "purchase", "customer_id": "c-1", "occurred_at": "2025-03-01T10:00:00Z",
                  "order_id": "o-1", "amount": "59.90"}
        runner = CliRunner()
        stored = runner.invoke(app, ["--db", url, "record", json.dumps(record)])
        assert stored.exit_code == 0, stored.output
        shown = runner.invoke(app, ["--db", url, "show", "c-1", "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["loyalty_stage"] == "first_time"
    finally:
        with psycopg.connect(_conninfo(PG_URL), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
