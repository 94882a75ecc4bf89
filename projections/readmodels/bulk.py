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

from psycopg.abc import AdaptContext
from psycopg.adapt import Transformer
from sqlalchemy import Connection, Dialect, Table

from journey.chunks import chunks
from projections.readmodels.tables import UTCDateTime

try:  # what Copy.write_row formats a row with: private, so a psycopg that moves it
    from psycopg._copy_base import format_row_text  # leaves the writer to format rows
except ImportError:  # pragma: no cover - tested by setting it to None
    format_row_text = None

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class Prepared:
    """Rows already converted for one database, in the order of ``names``: driver values
    (SQLite), or the COPY text of all of them (PostgreSQL, ``copy``). A rebuild's workers
    prepare the rows they compute, so that the writer (one process, the serial part of a
    rebuild) only stores them, and only plain values or bytes (not datetimes, decimals and
    dicts) are pickled back to it."""

    names: tuple[str, ...]
    values: list[tuple[Any, ...]]
    copy: bytes | None = None


def prepare(
    dialect: Dialect,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    copy_context: AdaptContext | None = None,
) -> Prepared:
    """``rows`` (each naming the same columns of ``table``) as ``dialect``'s driver takes
    them; with ``copy_context`` (a psycopg connection) as its COPY text instead."""
    if not rows:
        return Prepared((), [])
    names = tuple(rows[0])
    values = converted(rows, names, processors(dialect, table, names))
    if copy_context is not None and format_row_text is not None:
        return Prepared(names, [], copy_text(values, copy_context))
    return Prepared(names, values)


def copy_text(values: Sequence[Sequence[Any]], context: AdaptContext) -> bytes:
    """Rows of driver values as COPY ... FROM STDIN text: the bytes ``Copy.write_row``
    sends for them, made by the same function with the same adapters (``context``'s)."""
    transformer = Transformer(context)
    out = bytearray()
    for row in values:
        format_row_text(row, transformer, out)
    return bytes(out)


def insert_rows(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]] | Prepared
) -> None:
    """Insert ``rows`` (each naming the same columns, or prepared for this dialect) into
    ``table`` within ``conn``'s transaction."""
    postgres = conn.dialect.name == "postgresql"
    driver = conn.connection.driver_connection
    prepared = (
        rows
        if isinstance(rows, Prepared)
        else prepare(conn.dialect, table, rows, driver if postgres else None)
    )
    if not prepared.values and not prepared.copy:
        return
    preparer = conn.dialect.identifier_preparer
    target = preparer.format_table(table)
    columns = ", ".join(preparer.quote(name) for name in prepared.names)
    if postgres:
        statement = f"COPY {target} ({columns}) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            if prepared.copy is not None:
                copy.write(prepared.copy)
            else:  # driver values, prepared without a connection
                for row in prepared.values:
                    copy.write_row(row)
        return
    marks = ", ".join("?" * len(prepared.names))
    statement = f"INSERT INTO {target} ({columns}) VALUES ({marks})"
    conn.exec_driver_sql(statement, prepared.values)  # type: ignore[arg-type]


def delete_rows(conn: Connection, table: Table, customers: Sequence[str]) -> None:
    """Delete the rows of ``customers`` from ``table`` within ``conn``'s transaction: one
    array parameter on PostgreSQL, a chunk of ids a statement on SQLite, in plain SQL
    (compiling ``delete().where(in_(...))`` cost the writer more than the database's
    delete)."""
    if not customers:
        return
    preparer = conn.dialect.identifier_preparer
    target, column = preparer.format_table(table), preparer.quote("customer_id")
    if conn.dialect.name == "postgresql":
        statement = f"DELETE FROM {target} WHERE {column} = ANY(%s)"
        conn.exec_driver_sql(statement, (list(customers),))
        return
    for chunk in chunks(customers):
        marks = ", ".join("?" * len(chunk))
        conn.exec_driver_sql(f"DELETE FROM {target} WHERE {column} IN ({marks})", tuple(chunk))


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
