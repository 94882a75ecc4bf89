"""The engine's own tables beside the event store: the key ring and the log seal.

They live in the same database as the events but are written through a connection of
their own: a plain ``sqlite3`` connection (``BEGIN IMMEDIATE`` so a read-then-append cannot
race another writer) or a psycopg connection (transactions serialised by an advisory lock
where a read-then-append needs it). Statements use ``?`` marks; PostgreSQL gets ``%s``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from journey.storage import Database

#: Seconds of rest after which the PostgreSQL connection is checked before it is used.
PING_AFTER = 1.0


class SideTables:
    """One connection for the engine's side tables, opened on first use."""

    def __init__(self, database: Database, events_table: str, datastore: Any = None):
        self.database = database
        self.pg = database.is_postgres
        #: An in-memory SQLite database exists only in the event store's own connection.
        self.memory = database.in_memory
        self.datastore = datastore
        self._conn: Any = None
        self._used_at = 0.0
        self._lock = threading.RLock()
        self.events_table = self.name(events_table)
        self.position = database.position_column

    def name(self, table: str) -> str:
        """A table name, qualified by the URL's schema on PostgreSQL."""
        return f'"{self.database.schema}"."{table}"' if self.pg else table

    def sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.pg else statement

    def connection(self) -> Any:
        if self.pg and self._conn is not None and not self._usable():
            self._conn.close()  # lost (a server restart, a terminated backend): open anew
            self._conn = None
        self._used_at = time.monotonic()
        if self._conn is None:
            if self.pg:
                self._conn = self.database.connect()
            else:
                self._conn = sqlite3.connect(
                    self.database.sqlite_path,
                    timeout=30,
                    isolation_level=None,
                    check_same_thread=False,
                )
                # Keys are written here: every page this connection frees is zeroed, so no
                # copy of a key left by the B-tree's rebalancing outlives its erasure
                # (SQLite's own default is off; some builds turn it on).
                self._conn.execute("PRAGMA secure_delete=ON")
        return self._conn

    def _usable(self) -> bool:
        """Whether the PostgreSQL connection still works: checked with a round trip after
        a pause (as the event store's pool pre-pings), else a connection the server dropped
        failed every later use, and the service answered 503 until it was restarted."""
        if self._conn.closed:
            return False
        if time.monotonic() - self._used_at < PING_AFTER:
            return True
        try:
            self._conn.execute("SELECT 1")
        except Exception:  # psycopg.OperationalError and kin: any fault means reopen
            return False
        return True

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[Any]:
        """A write transaction; ``lock`` names what it serialises against on PostgreSQL
        (SQLite's BEGIN IMMEDIATE serialises every writer already)."""
        with self._lock:
            conn = self.connection() if self.pg else None
            if conn is not None:
                with conn.transaction(), conn.cursor() as cur:
                    yield self.within(cur, lock)
            else:
                with self._sqlite() as conn:
                    cur = conn.cursor()
                    cur.execute("BEGIN IMMEDIATE")
                    try:
                        yield Cursor(cur, self)
                    except BaseException:
                        conn.rollback()
                        raise
                    conn.commit()

    def within(self, cur: Any, lock: str | None = None) -> Cursor:
        """A cursor of a transaction already open (the event store's own, say, so that
        side-table rows commit with the events); ``lock`` as for ``transaction``."""
        if lock is not None and self.pg:
            key = zlib.crc32(f"journey-side-{lock}:{self.database.schema}".encode())
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        return Cursor(cur, self)

    @contextmanager
    def reading(self) -> Iterator[Any]:
        """A read-only snapshot (one transaction, so every read sees the same store)."""
        with self._lock:
            conn = self.connection() if self.pg else None
            if conn is not None:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield Cursor(cur, self)
            else:
                with self._sqlite() as conn:
                    cur = conn.cursor()
                    cur.execute("BEGIN")
                    try:
                        yield Cursor(cur, self)
                    finally:
                        conn.rollback()

    @contextmanager
    def _sqlite(self) -> Iterator[Any]:
        if self.memory:
            with self.datastore.get_connection(commit=True) as pooled:
                yield pooled._sqlite_conn
        else:
            yield self.connection()

    def autocommit(
        self,
        statement: str,
        lock_timeout: str | None = None,
        params: Any = None,
        fetch: bool = False,
    ) -> list[Any]:
        """A statement that cannot run inside a transaction (VACUUM, checkpoints); with a
        ``lock_timeout`` (PostgreSQL), it waits at most that long for its locks. Its rows
        with ``fetch``."""
        if self.memory:
            return []
        with self._lock:
            conn = self.connection()
            if lock_timeout is not None:
                conn.execute(f"SET lock_timeout = '{lock_timeout}'")
            try:
                cursor = conn.execute(statement, params) if params else conn.execute(statement)
                return cursor.fetchall() if fetch else []
            finally:
                if lock_timeout is not None and not conn.closed:
                    conn.execute("RESET lock_timeout")

    def checkpoint(self, mode: str, busy_ms: int) -> tuple[int, int, int]:
        """SQLite's ``wal_checkpoint(mode)`` on this connection, waiting at most
        ``busy_ms`` for what it waits for (a TRUNCATE holds every writer off meanwhile):
        (busy, frames in the WAL, frames copied into the main file)."""
        with self._lock:
            conn = self.connection()
            conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
            try:
                return tuple(conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone())
            finally:
                conn.execute("PRAGMA busy_timeout = 30000")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class Cursor:
    """A DB-API cursor that takes ``?`` marks on either database."""

    def __init__(self, cur: Any, tables: SideTables):
        self.cur = cur
        self.tables = tables

    def execute(self, statement: str, params: Any = ()) -> Cursor:
        self.cur.execute(self.tables.sql(statement), params)
        return self

    def append(self, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
        """Insert many rows: one COPY stream on PostgreSQL (a pipelined INSERT per row cost
        as much as storing the events), ``executemany`` on SQLite."""
        if not rows:
            return
        names = ", ".join(columns)
        if not self.tables.pg:
            marks = ", ".join("?" * len(columns))
            self.cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            return
        with self.cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self.cur.fetchall()

    def fetchmany(self, size: int) -> list[Any]:
        return self.cur.fetchmany(size)
