"""`journey show` and `journey history`: the public contract of issue 3."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from journey.cli import app, output

SCORE_KEYS = [
    "purchases", "revenue", "margin", "cost_to_serve", "profit", "profitable",
    "first_purchase_at", "last_purchase_at", "recency_days", "tenure_days", "frequency_365d",
    "monetary_365d", "rfm", "nps", "trust", "commitment", "involvement",
]


@pytest.fixture
def db(engine, db_url):
    for day, order, amount in (("2025-01-01", "o-1", "59.90"), ("2025-02-01", "o-2", "10")):
        engine.record({"type": "purchase", "customer_id": "c-1", "order_id": order,
                       "occurred_at": day + "T10:00:00Z", "amount": amount})
    engine.record({"type": "feedback", "customer_id": "c-1", "score": 9,
                   "occurred_at": "2025-02-02T10:00:00Z"})
    return db_url


def run(db: str, *args: str):
    return CliRunner().invoke(app, ["--db", db, *args])


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_show_json_has_exactly_the_public_keys(db):
    result = run(db, "show", "c-1", "--as-of", "2025-03-01", "--json")
    assert result.exit_code == 0, result.output
    (answer,) = lines(result.stdout)
    assert list(answer) == [
        "customer_id", "as_of", "known_at", "settings_version", "loyalty_stage", "status",
        "relationship_level", "scores", "reasons",
    ]
    assert list(answer["scores"]) == SCORE_KEYS
    assert answer["as_of"] == "2025-03-01T00:00:00Z"
    assert answer["loyalty_stage"] == "repeat"
    assert answer["scores"]["revenue"] == "69.9"
    assert answer["scores"]["nps"] == {"score": 9, "class": "promoter"}
    assert answer["scores"]["last_purchase_at"] == "2025-02-01T10:00:00Z"
    assert set(answer["reasons"]) == {"loyalty_stage", "status", "relationship_level"}
    assert answer["reasons"]["loyalty_stage"]["events"] == [2, 3]


def test_an_unknown_id_is_an_error_for_that_id_only(db):
    result = run(db, "show", "nobody", "c-1", "--json")
    assert result.exit_code == 1
    assert [a["customer_id"] for a in lines(result.stdout)] == ["c-1"]
    assert "nobody" in result.stderr


def test_time_arguments(db):
    with_zone = run(db, "show", "c-1", "--as-of", "2025-01-15T12:00:00+02:00", "--json")
    assert lines(with_zone.stdout)[0]["as_of"] == "2025-01-15T10:00:00Z"
    now = run(db, "show", "c-1", "--as-of", "now", "--known-at", "now", "--json")
    assert now.exit_code == 0
    too_early = run(db, "show", "c-1", "--known-at", "2000-01-01", "--json")
    assert too_early.exit_code == 1
    for day in ("2025-01-15", "20250115"):  # a bare date, extended or basic: 00:00 UTC
        as_of = lines(run(db, "show", "c-1", "--as-of", day, "--json").stdout)[0]["as_of"]
        assert as_of == "2025-01-15T00:00:00Z"
    too_fine = "2025-01-15T12:00:00.1234567Z"  # was cut to microseconds
    for bad in ("2025-01-15T12:00:00", "20250115T1200", "yesterday", "", too_fine):
        assert run(db, "show", "c-1", "--as-of", bad).exit_code == 2


def test_settings_file(db, tmp_path):
    path = tmp_path / "rules.json"
    path.write_text('{"lapsed_after_days": 10}')
    default = lines(run(db, "show", "c-1", "--as-of", "2025-03-01", "--json").stdout)[0]
    custom = run(db, "show", "c-1", "--as-of", "2025-03-01", "--json", "--settings", str(path))
    answer = lines(custom.stdout)[0]
    assert answer["status"] == "lapsed" and default["status"] == "active"
    assert answer["settings_version"] != default["settings_version"]
    path.write_text('{"lapsed_after_days": -1}')
    assert run(db, "show", "c-1", "--settings", str(path)).exit_code == 2


def test_show_table(db):
    result = run(db, "show", "c-1", "--as-of", "2025-03-01")
    assert result.exit_code == 0
    assert "repeat" in result.stdout and "promoter" in result.stdout


def test_history_json_ends_where_show_does(db):
    result = run(db, "history", "c-1", "--json")
    assert result.exit_code == 0, result.output
    steps = lines(result.stdout)
    events = [s["event"] for s in steps if s["kind"] == "event"]
    assert [e["type"] for e in events] == ["identified", "purchase", "purchase", "feedback"]
    assert set(events[1]) == {"id", "type", "occurred_at", "recorded_at", "actor", "payload"}
    assert events[1]["payload"]["amount"] == "59.9"
    assert any(s["kind"] == "time" and "status" in s["changes"] for s in steps)
    last = steps[-1]
    shown = lines(run(db, "show", "c-1", "--as-of", last["at"], "--json").stdout)[0]
    for answer in (shown, last["state"]):
        answer["scores"]["rfm"] = answer["known_at"] = None
    assert shown == last["state"]


def test_history_table_and_unknown_id(db):
    assert "feedback" in run(db, "history", "c-1").stdout
    missing = run(db, "history", "nobody")
    assert missing.exit_code == 1 and "nobody" in missing.stderr


def test_text_that_looks_like_markup_is_shown_as_written(engine, db_url, monkeypatch):
    monkeypatch.setattr(output.out, "width", 400)  # no wrapping inside the table
    engine.record({"type": "disqualified", "customer_id": "m-1", "reason": "budget [/b] cut",
                   "occurred_at": "2025-01-01T10:00:00Z"})
    engine.record({"type": "identified", "customer_id": "m-2", "source": "fair",
                   "personal": {"name": "[/i]"}, "occurred_at": "2025-01-01T10:00:00Z"})
    result = run(db_url, "history", "m-1")
    assert result.exit_code == 0, result.output
    assert "budget [/b] cut" in result.stdout
    result = run(db_url, "history", "m-2")
    assert result.exit_code == 0, result.output
    assert "name=[/i]" in result.stdout
    assert engine.erase("m-2", "asked").key_destroyed
    assert "name=[erased]" in run(db_url, "history", "m-2").stdout
