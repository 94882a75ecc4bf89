"""``insert_rows`` stores exactly what SQLAlchemy's ``insert(table)`` executemany stores:
every read model's rows from sample histories (and feed entries), written both ways into
tables of the same shape, read back as the database's own text of each value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from typing import Any

from sqlalchemy import Column, MetaData, Table, insert, select
from sqlalchemy import String as SAString

from journey.api import Journey
from journey.sample import sample
from journey.storage import Database
from projections.readmodels.bulk import insert_rows
from projections.readmodels.runner import rows_for
from projections.readmodels.store import ReadModelStore
from projections.readmodels.tables import (
    feed,
    purchases_table,
    summary_table,
    timeline_table,
)
from projections.settings import DEFAULT

NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
PLUS_ONE = timezone(timedelta(hours=1))


def sample_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    """Each model's rows for a few dozen sample customers, with a customer who does not
    exist yet (a summary row of NULLs) and moments in a zone other than UTC."""
    records = sample(40, events=400, seed=3)
    with Journey(url, actor="test") as engine:
        while batch := list(islice(records, 200)):
            engine.record_many(batch)
        streams = engine.app.customer_streams(engine.app.customer_ids())
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in ("summary", "timeline", "purchases"):
        rows[name] = [
            row
            for customer, stream in streams.items()
            for row in rows_for(name, customer, stream, NOW, DEFAULT, len(stream.events))
        ]
    customer, stream = next(iter(streams.items()))
    early = min(e.occurred_at for e in stream.events) - timedelta(days=1)
    rows["summary"].append(
        {**rows_for("summary", customer, stream, early, DEFAULT, 1)[0], "customer_id": "zz"}
    )
    for row in rows["purchases"][:5] + rows["timeline"][:5]:
        for key in ("occurred_at", "valid_from"):
            if key in row:
                row[key] = row[key].astimezone(PLUS_ONE)
    assert rows["summary"][-1]["loyalty_stage"] is None
    return rows


def feed_entries(count: int) -> list[dict[str, Any]]:
    return [
        {
            "customer_id": f"c-{n}",
            "kind": "status",
            "from_value": None if n % 2 else "active",
            "to_value": "lapsed",
            "occurred_at": NOW.astimezone(PLUS_ONE) + timedelta(microseconds=n),
            "recorded_at": NOW,
            "reason": f"rule {n} ✓",
            "cause": n if n % 3 else None,
        }
        for n in range(count)
    ]


def feed_like(metadata: MetaData, name: str) -> Table:
    """The feed's columns (not its indexes, whose names are the schema's own)."""
    return Table(
        name,
        metadata,
        *(
            Column(c.name, c.type, primary_key=c.primary_key, autoincrement=c.autoincrement)
            for c in feed.columns
        ),
    )


def stored_text(conn, table: Table) -> list[tuple[Any, ...]]:
    """Every value as the database spells it, in a fixed order."""
    columns = [t.cast(SAString) for t in table.columns]
    order = [table.c[c.name] for c in table.primary_key.columns] or list(table.columns)
    return [tuple(r) for r in conn.execute(select(*columns).order_by(*order))]


def test_insert_rows_stores_what_executemany_stores(db_url):
    rows = sample_rows(db_url)
    rows["feed"] = feed_entries(50)
    shapes = {
        "summary": summary_table,
        "timeline": timeline_table,
        "purchases": purchases_table,
        "feed": feed_like,
    }
    store = ReadModelStore(Database.parse(db_url))
    try:
        metadata = MetaData()
        pairs = {
            name: (make(metadata, f"bulk_{name}_a"), make(metadata, f"bulk_{name}_b"))
            for name, make in shapes.items()
        }
        metadata.create_all(store.engine)
        with store.engine.begin() as conn:
            for name, (by_sqlalchemy, by_bulk) in pairs.items():
                conn.execute(insert(by_sqlalchemy), rows[name])
                insert_rows(conn, by_bulk, rows[name])
                insert_rows(conn, by_bulk, [])  # nothing to do
        with store.engine.connect() as conn:
            for name, (by_sqlalchemy, by_bulk) in pairs.items():
                expected = stored_text(conn, by_sqlalchemy)
                assert len(expected) == len(rows[name]) > 0
                assert stored_text(conn, by_bulk) == expected, name
    finally:
        store.close()
