"""One database URL chooses where events live: SQLite by default, PostgreSQL for deployments."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from journey.errors import JourneyError

DEFAULT_URL = "sqlite:///journey.db"
ENV_VAR = "JOURNEY_DB_URL"


class StorageError(JourneyError):
    """The database URL cannot be used."""


def resolve_url(url: str | None = None) -> str:
    """The URL given, else $JOURNEY_DB_URL, else a SQLite file in the working directory."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


#: A schema name every layer takes as it is (eventsourcing puts it in type names unquoted).
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def sqlite_has_table(path: Path, table: str) -> bool:
    """Whether the SQLite file at ``path`` holds ``table``, read without creating it."""
    if not path.is_file():
        return False
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
    return found is not None


def check_postgres_query(url: URL) -> None:
    """Only ``?schema=NAME`` is read from a PostgreSQL URL: another parameter (a misspelt
    ``schem``, an ``sslmode``) would be ignored by the event store while the read models
    took it, so it is refused rather than half applied."""
    refuse_parameters(url, {"schema"}, "only ?schema=NAME is read")
    schema = url.query.get("schema")
    if schema is not None and (not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema)):
        raise StorageError(
            f"schema {schema!r}: use letters, digits and _ (not first a digit), at most 63"
        )


def check_sqlite_url(url: URL) -> None:
    """A SQLite URL names a file and nothing else: the event store opens the path alone, so
    a parameter would hold for the read models only. The file's folder must exist: a
    mistyped path would otherwise make a new, empty store wherever it pointed."""
    refuse_parameters(url, set(), "a SQLite URL is sqlite:///FILE and nothing more")
    if url.database and url.database.startswith("file:"):
        # eventsourcing opens such a name as a URI, SQLAlchemy as a path: two stores.
        raise StorageError(
            f"{url.render_as_string()}: SQLite URIs (file:...) are not read; name the file "
            "itself (sqlite:///FILE)"
        )
    if url.host:  # SQLAlchemy reads sqlite://x.db as a host and no file: a store in memory
        meant = "/".join(part for part in (url.host, url.database) if part)
        raise StorageError(
            f"{url.render_as_string()} names no file ({url.host!r} is read as a host "
            f"name): write sqlite:///{meant} (three slashes; four for an absolute path)"
        )
    folder = Path(url.database).parent if url.database and url.database != ":memory:" else None
    if folder is not None and not folder.is_dir():
        raise StorageError(
            f"no Journey store at {url.database!r}: its folder {str(folder)!r} does not exist"
        )


def lock_timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (psycopg's, or SQLAlchemy's around it) is PostgreSQL's
    ``lock_timeout`` running out: LockNotAvailable, SQLSTATE 55P03."""
    return getattr(getattr(exc, "orig", exc), "sqlstate", None) == "55P03"


def refuse_parameters(url: URL, read: set[str], which: str) -> None:
    if unknown := sorted(set(url.query) - read):
        raise StorageError(
            f"unknown parameter {', '.join(map(repr, unknown))} in the database URL: {which}"
        )


def schema_channel(schema: str, name: str) -> str:
    """A NOTIFY channel of one schema's: channels are the database's, so one named alike
    in every schema woke every Journey store's listeners at each write to any of them.
    Named by a digest of the schema, as a channel name may not reach 64 bytes and a
    schema name may."""
    return f"{name}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Database:
    """A parsed database URL, with what eventsourcing and SQLAlchemy each need from it."""

    url: URL

    @classmethod
    def parse(cls, url: str | None = None) -> Database:
        raw = resolve_url(url)
        try:
            parsed = make_url(raw)
        except Exception as exc:
            raise StorageError(f"cannot parse database URL {raw!r}: {exc}") from None
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StorageError(
                f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///FILE "
                "or postgresql://USER@HOST:PORT/DB"
            )
        if parsed.get_backend_name() == "postgresql":
            check_postgres_query(parsed)
        else:
            check_sqlite_url(parsed)
        return cls(parsed)

    @property
    def is_postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    @property
    def schema(self) -> str:
        return str(self.url.query.get("schema", "public")) if self.is_postgres else ""

    @property
    def sqlite_path(self) -> str:
        return self.url.database or ":memory:"

    @property
    def in_memory(self) -> bool:
        """SQLAlchemy's ``sqlite://`` or ``sqlite:///:memory:``, or any name holding
        ``:memory:``, which eventsourcing reads as memory: a store that lives as long as
        the process (for tests and embedding; the CLI refuses it)."""
        return not self.is_postgres and ":memory:" in self.sqlite_path

    def eventsourcing_env(self) -> dict[str, str]:
        """Settings for the eventsourcing persistence module."""
        common = {"ORIGINATOR_ID_TYPE": "text"}
        if not self.is_postgres:
            path = self.sqlite_path
            return {
                **common,
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "APPLICATION_RECORDER_TOPIC": "journey.recorders:SealingSQLiteRecorder",
                "SQLITE_DBNAME": path,
                "SQLITE_LOCK_TIMEOUT": "30",
            }
        return {
            **common,
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "APPLICATION_RECORDER_TOPIC": "journey.recorders:SealingPostgresRecorder",
            "POSTGRES_DBNAME": self.url.database or "postgres",
            "POSTGRES_HOST": self.url.host or "127.0.0.1",
            "POSTGRES_PORT": str(self.url.port or 5432),
            "POSTGRES_USER": self.url.username or "postgres",
            "POSTGRES_PASSWORD": self.url.password or "",
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_POOL_SIZE": "2",
            "POSTGRES_MAX_OVERFLOW": "4",
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_PRE_PING": "y",  # a connection the server dropped is replaced, not used
            # Never the library's stored-function insert (an environment variable would
            # turn it on): it neither seals the log nor notifies the schema's channel.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
        }

    def sqlalchemy_url(self) -> URL:
        """The same database for SQLAlchemy (psycopg 3 driver on PostgreSQL)."""
        if self.is_postgres:
            return self.url.set(drivername="postgresql+psycopg").difference_update_query(["schema"])
        return self.url

    def connect(self) -> Any:
        """A plain psycopg connection (autocommit) to the PostgreSQL server of this URL,
        for what SQLAlchemy and eventsourcing do not do: locks, LISTEN, creating schemas."""
        import psycopg

        env = self.eventsourcing_env()
        try:
            return psycopg.connect(
                dbname=env["POSTGRES_DBNAME"],
                host=env["POSTGRES_HOST"],
                port=env["POSTGRES_PORT"],
                user=env["POSTGRES_USER"],
                password=env["POSTGRES_PASSWORD"] or None,
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.Error as exc:
            raise StorageError(f"cannot reach PostgreSQL at {self.url!r}: {exc}") from None

    def check_reachable(self) -> None:
        """Raise a StorageError now if the PostgreSQL server is out of reach: where a
        command would otherwise fail later, deep in a library, or retry forever."""
        if self.is_postgres:
            self.connect().close()

    def holds_a_store(self) -> bool:
        """Whether Journey has used this database before. The commands that only read ask
        first: at a mistyped URL they would create an empty store and report on it (and an
        empty log verifies as intact)."""
        if not self.is_postgres:
            return self.in_memory or sqlite_has_table(Path(self.sqlite_path), self.events_table)
        events = f'"{self.schema}".{self.events_table}'
        with self.connect() as conn:
            return conn.execute("SELECT to_regclass(%s)", [events]).fetchone()[0] is not None

    @property
    def events_table(self) -> str:
        """The event store's table, as eventsourcing names it for the application "Journey"
        (and its position column: ``position_column``)."""
        return "journey_events" if self.is_postgres else "stored_events"

    @property
    def position_column(self) -> str:
        return "notification_id" if self.is_postgres else "rowid"

    def ensure_schema(self) -> None:
        """Create the PostgreSQL schema named in the URL, so first use needs no setup; or
        the SQLite file, readable by its owner alone (``create_private``)."""
        if not self.is_postgres:
            if not self.in_memory:  # a symbolic link's target, not the link
                create_private(Path(self.sqlite_path).resolve())
            return
        if self.schema == "public":
            return
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )


def create_private(path: Path) -> None:
    """Create ``path`` (empty) with mode 0600 unless it exists. A store holds personal
    data and, beside it, the keys that open it; made by SQLite under the usual umask it
    was readable by every local user, who could copy the keys that erasure destroys.
    SQLite gives its -wal and -shm files the database file's mode."""
    # One that exists keeps its mode; one that cannot be made (a read-only folder) is
    # said by SQLite as it opens it, as before.
    with suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def search_path(schema: str) -> str:
    """libpq's options for ``schema`` alone on the search path, quoted as an identifier (a
    name in capitals would be folded to lower case) and with spaces escaped for libpq."""
    quoted = '"' + schema.replace('"', '""') + '"'
    return "-csearch_path=" + quoted.replace("\\", "\\\\").replace(" ", "\\ ")


def make_engine(database: Database) -> Engine:
    """A SQLAlchemy engine on the event store's database (its schema, on PostgreSQL)."""
    url = database.sqlalchemy_url()
    if database.is_postgres:
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"options": search_path(database.schema), "connect_timeout": 10},
        )
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, begin transactions, so DDL (repointing a view)
        # is transactional too: SQLAlchemy's documented recipe for SQLite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("writing") else "BEGIN"
        )

    return engine
