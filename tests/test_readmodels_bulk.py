"""``insert_rows`` stores exactly what SQLAlchemy's ``insert(table)`` executemany stores:
every read model's rows from sample histories (and feed entries), written both ways into
tables of the same shape, read back as the database's own text of each value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from itertools import islice
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy import String as SAString

from journey.api import Journey
from journey.sample import sample
from journey.storage import Database
from projections.readmodels import bulk
from projections.readmodels.bulk import delete_rows, insert_rows, prepare
from projections.readmodels.runner import rows_for
from projections.readmodels.store import ReadModelStore
from projections.readmodels.tables import (
    MONEY,
    TIME,
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


EDGE_TEXT = ["", 'it\'s "quoted"', "back\\slash \\N", "tab\there", "new\nline\r\n", "✓ ünï", "\\."]


def edge_table(metadata: MetaData, name: str) -> Table:
    """A column of every type the read models use."""
    return Table(
        name,
        metadata,
        Column("n", Integer, primary_key=True, autoincrement=False),
        Column("text", SAString(64)),
        Column("long_text", Text),
        Column("money", MONEY),
        Column("at", TIME),
        Column("flag", Boolean),
        Column("big", BigInteger),
        Column("doc", JSON),
    )


def edge_rows() -> list[dict[str, Any]]:
    """None in every column, and values whose spelling is easy to get wrong: decimals
    beyond the column's scale or in exponent form, moments in other zones, text that
    COPY must escape, JSON holding the same text."""
    moments = [
        NOW,
        NOW.astimezone(PLUS_ONE),
        datetime(
            1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-9, minutes=-30))
        ),
        datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    ]
    decimals = [
        Decimal("0"),
        Decimal("-0.00"),
        Decimal("1E+3"),
        Decimal("-12345678901234567890.1234"),
        Decimal("0.00005"),
        Decimal("3.14159"),
    ]
    rows = [dict.fromkeys(("text", "long_text", "money", "at", "flag", "big", "doc"), None)]
    for n, text in enumerate(EDGE_TEXT):
        rows.append(
            {
                "text": text,
                "long_text": text * 3,
                "money": decimals[n % len(decimals)],
                "at": moments[n % len(moments)],
                "flag": bool(n % 2),
                "big": -(2**62) + n,
                "doc": {"text": text, "none": None, "list": [1, 2.5, text], "nested": {"k": text}},
            }
        )
    rows.append({**rows[1], "doc": [], "flag": False, "big": 0})
    rows.append({**rows[1], "doc": "just a string\t"})
    return [{"n": n, **row} for n, row in enumerate(rows)]


@pytest.mark.parametrize("formatter", ["psycopg's", "none"])
def test_edge_values_stored_as_sqlalchemy_stores_them(db_url, formatter, monkeypatch):
    """Driver values and COPY text (PostgreSQL), made here or ahead on another
    connection (as a rebuild's workers do), store what ``insert(table)`` stores; and so
    do driver values alone, if psycopg no longer has the row formatter where we look."""
    if formatter == "none":
        monkeypatch.setattr(bulk, "format_row_text", None)
    rows = edge_rows()
    database = Database.parse(db_url)
    database.ensure_schema()
    store = ReadModelStore(database)
    try:
        metadata = MetaData()
        by_sqlalchemy, by_bulk, ahead = (
            edge_table(metadata, f"edge_{kind}") for kind in ("a", "b", "c")
        )
        metadata.create_all(store.engine)
        with store.engine.connect() as other:
            postgres = store.database.is_postgres
            context = other.connection.driver_connection if postgres else None
            prepared = prepare(store.engine.dialect, ahead, rows, context)
        assert (prepared.copy is not None) == (postgres and formatter != "none")
        with store.engine.begin() as conn:
            conn.execute(insert(by_sqlalchemy), rows)
            insert_rows(conn, by_bulk, rows)
            insert_rows(conn, ahead, prepared)
        with store.engine.connect() as conn:
            expected = stored_text(conn, by_sqlalchemy)
            assert len(expected) == len(rows)
            assert stored_text(conn, by_bulk) == expected
            assert stored_text(conn, ahead) == expected
    finally:
        store.close()


def test_delete_rows_deletes_only_the_customers_named(db_url):
    """Plain-SQL deletes, across the 500-id statements SQLite takes them in."""
    database = Database.parse(db_url)
    database.ensure_schema()
    store = ReadModelStore(database)
    try:
        table = timeline_table(MetaData(), "delete_timeline")
        table.create(store.engine)
        customers = [f"c-{n:04d}" for n in range(1201)] + ["it's", "back\\slash"]
        rows = [
            {
                "customer_id": c,
                "valid_from": NOW,
                "valid_to": None,
                "loyalty_stage": "client",
                "status": "active",
                "relationship_level": "basic",
            }
            for c in customers
        ]
        with store.engine.begin() as conn:
            insert_rows(conn, table, rows)
            delete_rows(conn, table, customers[::2])
            delete_rows(conn, table, [])
        with store.engine.connect() as conn:
            left = [r.customer_id for r in conn.execute(select(table.c.customer_id))]
        assert sorted(left) == sorted(customers[1::2])
    finally:
        store.close()
