"""Inserting many rows at once: what ``conn.execute(insert(table), rows)`` stores, cheaper.

A rebuild writes a row per customer to the summary and several to the timeline and the
purchases. SQLAlchemy's executemany spends more on its per-row bookkeeping than the
database spends storing the row, and psycopg's executemany sends one statement per row.
Here each value is converted by its column's own type, exactly as SQLAlchemy would convert
it for this dialect (so what is stored is the same, byte for byte:
tests/test_readmodels_bulk.py), and the rows go in one executemany on SQLite and one COPY
on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, Table

from projections.readmodels.tables import UTCDateTime

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class Prepared:
    """Rows already converted to driver values for one dialect, in the order of ``names``.
    A rebuild's workers prepare the rows they compute, so that the writer only stores
    them; on SQLite that also means only plain values (not datetimes, decimals and dicts)
    are pickled back to it. (psycopg takes datetimes and decimals as they are, and JSON
    in a wrapper, so on PostgreSQL those travel as before.)"""

    names: tuple[str, ...]
    values: list[tuple[Any, ...]]


def prepare(dialect: Dialect, table: Table, rows: Sequence[Mapping[str, Any]]) -> Prepared:
    """``rows`` (each naming the same columns of ``table``) as ``dialect``'s driver takes
    them."""
    if not rows:
        return Prepared((), [])
    names = tuple(rows[0])
    return Prepared(names, converted(rows, names, processors(dialect, table, names)))


def insert_rows(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]] | Prepared
) -> None:
    """Insert ``rows`` (each naming the same columns, or prepared for this dialect) into
    ``table`` within ``conn``'s transaction."""
    prepared = rows if isinstance(rows, Prepared) else prepare(conn.dialect, table, rows)
    if not prepared.values:
        return
    preparer = conn.dialect.identifier_preparer
    target = preparer.format_table(table)
    columns = ", ".join(preparer.quote(name) for name in prepared.names)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        statement = f"COPY {target} ({columns}) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in prepared.values:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(prepared.names))
    statement = f"INSERT INTO {target} ({columns}) VALUES ({marks})"
    conn.exec_driver_sql(statement, prepared.values)  # type: ignore[arg-type]


def processors(dialect: Dialect, table: Table, names: Sequence[str]) -> list[Processor]:
    """Each column's bind processor for this dialect: the conversion SQLAlchemy applies to
    a value before handing it to the driver (None when it passes values as they are)."""
    return [
        sqlite_utc_text
        if dialect.name == "sqlite" and isinstance(table.c[name].type, UTCDateTime)
        else table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in names
    ]


def sqlite_utc_text(value: datetime | None) -> str | None:
    """What UTCDateTime's processor gives on SQLite, in one step rather than three calls
    (the most frequent value a rebuild writes): the moment in UTC, its zone dropped, in
    SQLite DateTime's storage format ``%04d-%02d-%02d %02d:%02d:%02d.%06d``."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


def converted(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str], processors: Sequence[Processor]
) -> list[tuple[Any, ...]]:
    """The rows as tuples of driver values, in the order of ``names``: taken out and
    converted a column at a time (``map`` and ``itemgetter`` loop in C)."""
    if len(names) == 1:
        raw = [(row[names[0]],) for row in rows]
    else:
        raw = list(map(itemgetter(*names), rows))
    if all(process is None for process in processors):
        return raw
    columns = [
        values if process is None else list(map(process, values))
        for values, process in zip(zip(*raw, strict=True), processors, strict=True)
    ]
    return list(zip(*columns, strict=True))
