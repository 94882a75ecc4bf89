"""`journey load-cdnow` on the first 2,000 lines of the real CDNOW file."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from journey.api import connect
from journey.cdnow import LAST_DAY, quarter_ends
from journey.cli import app
from projections.pointintime import PointInTime

SAMPLE = Path(__file__).parent / "data" / "cdnow_first_2000.txt"
FIRST_DAY = datetime(1997, 1, 1, tzinfo=UTC)  # the sample's first purchase
runner = CliRunner()


def raw_lines() -> list[list[str]]:
    return [line.split() for line in SAMPLE.read_text().splitlines()[1:]]


def load(db_url: str):
    result = runner.invoke(app, ["--db", db_url, "load-cdnow", "--file", str(SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_line_becomes_a_purchase_or_is_skipped_with_a_reason(db_url):
    answer = load(db_url)
    lines = raw_lines()
    worthless = [n for n, cells in enumerate(lines, start=2) if Decimal(cells[3]) == 0]
    assert answer["lines"] == len(lines) == 2000
    assert answer["purchases"] == len(lines) - len(worthless)
    assert [s["line"] for s in answer["skipped"]] == worthless
    with connect(db_url) as engine:
        stored = Counter()
        for customer in engine.app.customer_ids():
            stored[customer] = sum(e.TYPE == "purchase" for e in engine.events(customer))
    expected = Counter(f"cdnow-{c[0]}" for c in lines if Decimal(c[3]) > 0)
    assert +stored == expected


def test_loading_again_stores_nothing_new(db_url):
    load(db_url)
    assert load(db_url)["stored"] == 0


def test_loading_again_says_nothing_new_was_recorded(sqlite_url):
    args = ["--db", sqlite_url, "load-cdnow", "--file", str(SAMPLE), "--json"]
    first, again = runner.invoke(app, args), runner.invoke(app, args)
    purchases = json.loads(first.stdout)["purchases"]
    assert f"recorded 0 new purchases ({purchases} already stored)" in again.stderr
    assert f"recorded {purchases} new purchases (0 already stored)" in first.stderr


def test_a_quarter_ends_at_its_last_microsecond():
    """An as_of counts the events at it, and CDNOW's purchases lie at 00:00 UTC: the next
    quarter's first day must not count in this one."""
    quarters = quarter_ends(datetime(1997, 1, 1, tzinfo=UTC), datetime(1997, 12, 31, tzinfo=UTC))
    assert [(label, end.isoformat()) for label, end in quarters] == [
        ("1997-Q1", "1997-03-31T23:59:59.999999+00:00"),
        ("1997-Q2", "1997-06-30T23:59:59.999999+00:00"),
        ("1997-Q3", "1997-09-30T23:59:59.999999+00:00"),
        ("1997-Q4", "1997-12-31T23:59:59.999999+00:00"),
    ]


def test_quarterly_funnel_and_rfm_agree_with_show(db_url):
    answer = load(db_url)
    with connect(db_url) as engine:
        queries = PointInTime(engine)
        customers = engine.app.customer_ids()
        quarters = quarter_ends(FIRST_DAY, LAST_DAY)
        assert list(answer["quarters"]) == [label for label, _ in quarters]
        for label, end in quarters:
            found = [r.answer for r in queries.show_many(customers, end, with_rfm=False)]
            stages = Counter(a.loyalty_stage.value for a in found if a is not None)
            assert +Counter(answer["quarters"][label]["stages"]) == stages, label
        population = queries.population(LAST_DAY, datetime.now(UTC))
        scored = [r.answer.scores["rfm"] for r in queries.show_many(customers, LAST_DAY)]
        for axis in "rfm":  # each customer's own score, as show gives it (None: n = 0)
            by_show = Counter(str(rfm[axis]) for rfm in scored if rfm is not None)
            assert {s: n for s, n in answer["rfm"][axis].items() if n} == dict(by_show), axis
            assert sum(answer["rfm"][axis].values()) == population.size


def test_cdnow_goes_into_a_store_of_other_customers_only_when_asked(db_url):
    """Events are never removed: CDNOW's customers must not land among real ones by a
    --db or $JOURNEY_DB_URL pointing at the wrong store."""
    with connect(db_url, actor="tester") as engine:
        engine.record({"type": "qualified", "customer_id": "real-1",
                       "occurred_at": "2025-01-01T00:00:00Z"})
    args = ["--db", db_url, "load-cdnow", "--file", str(SAMPLE), "--limit", "10", "--json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    assert "--into-existing" in json.loads(refused.stderr)["error"]
    with connect(db_url) as engine:
        assert engine.app.a_customer_besides("real-") is None  # nothing was stored
    assert runner.invoke(app, [*args, "--into-existing"]).exit_code == 0


@pytest.mark.parametrize(
    "line, said",
    [
        (b"00002 19970101 1\n", "has 3 cells, not 4"),
        (b"00002 1997--0-1 1 2.00\n", "the date '1997--0-1' is not a day written YYYYMMDD"),
        (b"00002 1997013 1 2.00\n", "the date '1997013' is not a day written YYYYMMDD"),
        (b"00002 199711 1 2.00\n", "the date '199711' is not a day written YYYYMMDD"),
        (b"00002 19970101 1 abc\n", "the dollar value 'abc' is not a number"),
        (b"00002 19970101 1 2.\xe900\n", "is not ASCII text"),
    ],
    ids=["cells", "date", "date-7-digits", "date-6-digits", "dollars", "bytes"],
)
def test_a_malformed_line_is_named_and_nothing_is_stored(tmp_path, line, said):
    lines = SAMPLE.read_bytes().splitlines(keepends=True)[:5]
    path = tmp_path / "cdnow.txt"
    path.write_bytes(b"".join(lines) + line)
    store = tmp_path / "journey.db"
    result = runner.invoke(
        app, ["--db", f"sqlite:///{store}", "load-cdnow", "--file", str(path), "--json"]
    )
    assert result.exit_code == 1, result.output
    error = json.loads(result.stderr)["error"]
    assert f"{path}:6:" in error and said in error
    assert not store.exists()  # read whole before anything is stored


def test_the_cdnow_guard_compares_ids_exactly(db_url):
    """SQLite's LIKE ignores case: "CDNOW-9" is someone else's customer, not CDNOW's."""
    with connect(db_url, actor="tester") as engine:
        engine.record({"type": "qualified", "customer_id": "CDNOW-9",
                       "occurred_at": "2025-01-01T00:00:00Z"})
    result = runner.invoke(
        app, ["--db", db_url, "load-cdnow", "--file", str(SAMPLE), "--limit", "5", "--json"]
    )
    assert result.exit_code == 2, result.output
    assert "'CDNOW-9'" in json.loads(result.stderr)["error"]
