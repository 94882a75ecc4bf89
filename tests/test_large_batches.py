"""A batch of large events is stored like any other.

psycopg 3.3 in pipeline mode waits forever on a statement of more than about 12 MB, and
eventsourcing sent each batch of events that way: 6,000 events of 2 KB for one customer
(one batch) hung `journey import` on PostgreSQL (journey/recorders.py). The import runs
in a subprocess with a time limit, so a hang fails the test instead of the whole run.
"""

from __future__ import annotations

import subprocess
import sys

from support import at, ev, opened, write_jsonl

EVENTS = 6000
NOTE = "n" * 1990


def test_an_import_of_more_than_12_mb_in_one_batch_stores_every_event(db_url, tmp_path):
    records = [
        ev("qualified", "c-big", at(1 + i // 1440, (i // 60) % 24, i % 60), note=f"{i:05d} {NOTE}")
        for i in range(EVENTS)
    ]
    path = write_jsonl(tmp_path / "big.jsonl", records)
    command = [sys.executable, "-m", "journey", "--db", db_url, "import", path, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    with opened(db_url) as engine:
        stored = engine.events("c-big")
    assert len(stored) == EVENTS + 1  # and the implicit identification
    assert [e.note[:5] for e in stored[1:4]] == ["00000", "00001", "00002"]


def test_a_bulk_import_leaves_postgresql_statistics_of_the_log(pg_url, monkeypatch):
    """With no statistics (autovacuum off, or not yet run) the planner scanned the whole
    log to read a few customers; a large import refreshes them."""
    import journey.api

    monkeypatch.setattr(journey.api, "ANALYZE_AFTER", 20)
    with opened(pg_url) as engine:
        engine.record_many([ev("qualified", f"c-{i}", at(1)) for i in range(5)])
        assert tuples_known(engine) == -1  # never analysed: 10 events is a small load
        engine.record_many([ev("qualified", f"d-{i}", at(1)) for i in range(10)])
        assert tuples_known(engine) == 30


def tuples_known(engine) -> float:
    """PostgreSQL's estimate of the log's rows (-1: never analysed)."""
    app = engine.app
    with app.database.connect() as conn:
        return conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (app.tables.events_table,)
        ).fetchone()[0]
