"""What was known (issue 6): `report` at (as_of, known_at) from the events alone, `diff`
between two knowledge moments naming the recorded events behind each change, `export`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime

import pytest
from support import ev, purchase
from typer.testing import CliRunner

from journey.api import connect
from journey.cli import app
from projections import report as reports
from projections.pointintime import PointInTime

T = datetime(2025, 4, 1, tzinfo=UTC)
K1 = datetime(2026, 1, 10, tzinfo=UTC)
K2 = datetime(2026, 2, 10, tzinfo=UTC)
K3 = datetime(2026, 3, 10, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = K1

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def story(db_url):
    clock = Clock()
    engine = connect(db_url, actor="loader", clock=clock)
    engine.record(ev("identified", "a", "2025-03-01T10:00:00Z", source="fair"))
    engine.record(purchase("a", "o-1", "30", day=2, category="books"))
    engine.record(purchase("b", "o-1", "12", day=3))
    clock.now = K2
    engine.actor = "backfill"
    engine.record(purchase("a", "o-2", "15", day=5, category="music"))  # backfilled, before T
    engine.record(ev("qualified", "c", "2025-03-20T10:00:00Z"))  # a customer new at K2
    engine.record({**purchase("b", "o-2", "9"), "occurred_at": "2025-05-01T10:00:00Z"})
    clock.now = K3
    engine.record(ev("feedback", "a", "2025-03-06T10:00:00Z", score=3))  # after K2
    yield engine, clock
    engine.close()


def cli(db_url: str, *args: str):
    return CliRunner().invoke(app, ["--db", db_url, *args])


def expected(engine, known_at: datetime) -> dict[str, tuple[str, str, str]]:
    found = PointInTime(engine).show_many(["a", "b", "c"], T, known_at, with_rfm=False)
    return {
        f.customer_id: (f.answer.loyalty_stage.value, f.answer.status.value,
                        f.answer.relationship_level.value)
        for f in found if f.answer is not None
    }


def test_a_report_is_what_was_known_then(story):
    engine, _ = story
    early = reports.report(engine.app, T, K1)
    assert {r.customer_id: r.values() for r in early.rows} == expected(engine, K1)
    assert [r.customer_id for r in early.rows] == ["a", "b"]
    assert early.funnel()["stages"]["first_time"] == 2
    late = reports.report(engine.app, T, K2)
    assert {r.customer_id: r.values() for r in late.rows} == expected(engine, K2)
    assert dict((r.customer_id, r.values()[0]) for r in late.rows) == {
        "a": "repeat", "b": "first_time", "c": "prospect"
    }
    assert sum(late.funnel()["stages"].values()) == 3


def test_a_report_is_reproducible_after_later_recordings(story):
    engine, clock = story
    before = reports.report(engine.app, T, K2).as_dict()
    clock.now = datetime(2026, 4, 1, tzinfo=UTC)
    engine.record(purchase("a", "o-3", "50", day=7))
    engine.record(purchase("d", "o-1", "50", day=7))
    assert reports.report(engine.app, T, K2).as_dict() == before


def test_diff_names_the_changed_customers_and_the_events_that_changed_them(story):
    engine, _ = story
    changes = {c.customer_id: c for c in reports.diff(engine.app, T, K1, K2)}
    assert sorted(changes) == ["a", "c"]
    a = changes["a"].as_dict()
    assert a["changed"] == ["loyalty_stage"]
    assert (a["before"]["loyalty_stage"], a["after"]["loyalty_stage"]) == ("first_time", "repeat")
    assert [(e["type"], e["payload"]["order_id"], e["actor"]) for e in a["events"]] == [
        ("purchase", "o-2", "backfill")
    ]
    c = changes["c"].as_dict()
    assert c["before"] is None and c["after"]["loyalty_stage"] == "prospect"
    assert [e["type"] for e in c["events"]] == ["identified", "qualified"]
    # the order of the two moments does not matter; and nothing changed after K3
    assert [x.customer_id for x in reports.diff(engine.app, T, K2, K1)] == ["a", "c"]
    assert reports.diff(engine.app, T, K3, datetime(2027, 1, 1, tzinfo=UTC)) == []


def test_report_and_diff_on_the_command_line(story, db_url):
    result = cli(db_url, "report", "--as-of", "2025-04-01", "--known-at", K1.isoformat(),
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["customer_id"] for r in data["rows"]] == ["a", "b"]
    assert data["rows"][0]["reasons"]["loyalty_stage"]["events"]
    result = cli(db_url, "report", "--as-of", "2025-04-01", "--known-at", K2.isoformat(), "--csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["customer_id"], r["loyalty_stage"]) for r in rows] == [
        ("a", "repeat"), ("b", "first_time"), ("c", "prospect")
    ]
    result = cli(db_url, "diff", "--as-of", "2025-04-01", "--known-at", K1.isoformat(),
                 "--known-at", K2.isoformat(), "--json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["customer_id"] for line in lines] == ["a", "c"]
    once = cli(db_url, "diff", "--as-of", "2025-04-01", "--known-at", K1.isoformat())
    assert once.exit_code == 2


def test_export_is_the_whole_dossier(story, db_url):
    engine, _ = story
    result = cli(db_url, "export", "a")
    assert result.exit_code == 0, result.output
    dossier = json.loads(result.stdout)
    events = engine.events("a")
    assert [(e["id"], e["type"], e["actor"]) for e in dossier["events"]] == [
        (e.version, e.TYPE, e.actor) for e in events
    ]
    assert all(e["recorded_at"] and e["occurred_at"] for e in dossier["events"])
    assert dossier["events"][1]["content_hash"] == dossier["events"][2]["previous_hash"]
    history = PointInTime(engine).history("a", until=None)
    assert len(dossier["history"]) >= len([s for s in history if s.event is not None])
    assert all(step["state"]["reasons"] for step in dossier["history"])
    assert dossier["current"]["loyalty_stage"] == PointInTime(engine).show("a").loyalty_stage.value
    known = {dossier["current"]["known_at"], *(s["state"]["known_at"] for s in dossier["history"])}
    assert known == {dossier["generated_at"]}


def test_each_hash_in_a_dossier_can_be_recomputed_without_journey(story, db_url):
    """The payload a dossier shows is read (amounts normalised, times in UTC), not what was
    hashed: an auditor could not check a content_hash from it. The recipe README gives,
    followed here with hashlib and json alone."""
    engine, _ = story
    engine.record(purchase("a", "o-spelt", "99.00", day=9))  # shown as 99, stored as spelt
    dossier = json.loads(cli(db_url, "export", "a").stdout)
    for event in dossier["events"]:
        state = dict(event["stored"]["state"])
        assert state.pop("content_hash") == event["content_hash"]
        hashed = [event["stored"]["topic"], "a", event["id"], state]
        text = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == event["content_hash"]
    assert '"99.00"' in json.dumps(dossier["events"][-1]["stored"])


def test_diff_shows_personal_data_by_field_name_only(story):
    engine, clock = story
    clock.now = datetime(2026, 4, 10, tzinfo=UTC)
    engine.record(ev("identified", "p", "2025-03-01T10:00:00Z",
                     personal={"name": "Pia Secret", "email": "pia@example.com"}))
    (change,) = reports.diff(engine.app, T, K3, clock.now)
    (event,) = change.as_dict()["events"]
    assert event["payload"]["personal"] == {"email": "[sealed]", "name": "[sealed]"}


@pytest.mark.parametrize(
    "args",
    [
        ["report", "--as-of", "2025-06-01", "--known-at", "2999-01-01"],
        ["diff", "--as-of", "2025-06-01", "--known-at", "now", "--known-at", "2999-01-01"],
        ["show", "c-1", "--known-at", "2999-01-01"],
        ["history", "c-1", "--known-at", "2999-01-01"],
    ],
    ids=["report", "diff", "show", "history"],
)
def test_a_known_at_ahead_of_now_is_a_usage_error(story, db_url, args):
    """What will be recorded by then is not known yet: an answer would change later,
    where the same T and K must give the same answer forever."""
    result = cli(db_url, *args, "--json")
    assert result.exit_code == 2, result.output
    assert "lies ahead" in result.output
