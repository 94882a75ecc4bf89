"""Where read models live: SQLAlchemy tables beside the events, in generations.

The store knows which generation of each read model serves, writes a batch of customers'
rows together with the generation's new log position in one transaction (so a crash
never applies an event twice nor skips one), and switches generations atomically.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    MetaData,
    Table,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.schema import CreateTable

from journey.application import first_use_lock
from journey.chunks import chunks
from journey.errors import JourneyError
from journey.moments import utc_now
from journey.storage import Database, lock_timed_out, make_engine, schema_channel
from projections.readmodels.announce import append_rebuild_changes
from projections.readmodels.bulk import Prepared, delete_rows, insert_rows, prepare
from projections.readmodels.tables import (
    deferred_indexes,
    feed,
    generations,
    purchases_table,
    state_metadata,
    summary_table,
    timeline_table,
)
from projections.settings import CLASSIFICATION, Settings


class LockBusy(JourneyError):
    """Another process already writes this read model."""


class NewerCode(JourneyError):
    """A generation built by a newer Journey's projection code: an older Journey left
    running through an upgrade (a runner, a server) would write its older rows into it,
    unseen, under the newer label."""

    def __init__(self, generation: Generation):
        mine = MODELS[generation.name].code
        super().__init__(
            f"{generation.name} generation {generation.generation} was built by projection "
            f"code {generation.code_version}, newer than this Journey's ({mine}): it does "
            f"not write into it; stop this Journey and run the newer one"
        )


def newer_code(generation: Generation) -> bool:
    """Whether the generation was built by projection code newer than this Journey's (or
    code it cannot order: not a version it knows)."""
    mine, built_by = MODELS[generation.name].code, generation.code_version
    if built_by.isdigit() and mine.isdigit():
        return int(built_by) > int(mine)
    return built_by != mine


def check_writable(generation: Generation) -> None:
    """Raise NewerCode unless this Journey's code is at least the generation's."""
    if newer_code(generation):
        raise NewerCode(generation)


class LockLost(JourneyError):
    """A lock held was released behind its holder's back (its database session ended)."""


class PositionMoved(JourneyError):
    """The generation's position is not where this writer read from: another writer got
    there first. Nothing was written; read again from the new position."""


class ReadersBusy(JourneyError):
    """A switch waited ``SWITCH_LOCK_WAIT`` for the readers of a view (a long report, a
    dump) and gave up for now: nothing was changed; try again after a pause."""


#: How long a switch waits for a view's readers before it gives up and tries again later.
#: PostgreSQL queues every reader that comes after a waiting DROP VIEW behind it, so an
#: unbounded wait froze the service's reads and the feed for as long as the longest reader.
SWITCH_LOCK_WAIT = "500ms"


@dataclass(frozen=True)
class Model:
    """A read model: its public name, the view readers query, its table shape, the rule
    settings its rows depend on (None: every one) and the version of the code that writes
    them (``code``), each generation keeping the one it was built by."""

    name: str
    view: str
    make_table: Any
    settings: tuple[str, ...] | None = None
    code: str = "2"

    def table_name(self, generation: int) -> str:
        return f"{self.view}_g{generation}"


#: ``code`` is bumped, model by model, whenever the projection code changes what a model
#: writes: a generation built by another version is stale until rebuilt, and one built by
#: a newer version is not written by an older Journey (``Runner.writable``). 2 (2026-12-07,
#: every model): the at-risk reason's words, and summary rows due again when a reason
#: changes. 3 (timeline): an interval no longer cut in two where a window closed at the
#: very moment an event renewed it; 3 (summary, timeline): an erasure makes no customer
#: exist.
MODELS: dict[str, Model] = {
    "summary": Model("summary", "customer_summary", summary_table, code="3"),
    "timeline": Model("timeline", "customer_timeline", timeline_table, CLASSIFICATION, "3"),
    "purchases": Model("purchases", "customer_purchases", purchases_table, ()),
}


@dataclass(frozen=True)
class Generation:
    name: str
    generation: int
    status: str
    position: int
    build_head: int | None
    build_cursor: str | None
    settings_version: str
    settings: dict[str, Any]
    code_version: str
    updated_at: datetime

    @classmethod
    def of(cls, row: Any) -> Generation:
        return cls(**{k: row._mapping[k] for k in cls.__dataclass_fields__})

    def rules(self) -> Settings:
        """The settings this generation's rows were computed with."""
        return Settings.model_validate(self.settings)


class ReadModelStore:
    """The read models of one database."""

    def __init__(self, database: Database):
        self.database = database
        self.engine = make_engine(database)
        self._tables: dict[str, Table] = {}
        self._shapes: dict[str, Table] = {}  # each model's columns, for prepare
        self._metadata = MetaData()

    def close(self) -> None:
        self.engine.dispose()

    # -- generations -------------------------------------------------------------------

    def ensure(self, settings: Settings | Callable[[], Settings]) -> None:
        """Create the state table and a first, empty serving generation of every model
        (with ``settings``, or those it makes: asked only then), and sweep the tables of
        generations a crash left retired. Safe when several processes open a new store at
        once."""
        with first_use_lock(self.database):
            state_metadata.create_all(self.engine)
            with self.writing() as conn:
                for model in MODELS.values():
                    if self.serving(conn, model.name) is None:
                        if callable(settings):
                            settings = settings()
                        self._create_generation(conn, model, 1, "serving", settings)
                        self._point_view(conn, model, 1)
        with suppress(ReadersBusy), self.readers_waited_for(), self.writing() as conn:
            self._bound_lock_waits(conn)  # a reader of one: left for the next time
            retired = select(generations).where(generations.c.status == "retired")
            for row in conn.execute(retired.with_for_update(skip_locked=True)).all():
                self._drop_generation(conn, MODELS[row.name], row.generation)

    def serving(self, conn: Connection, name: str) -> Generation | None:
        row = conn.execute(
            select(generations).where(generations.c.name == name, generations.c.status == "serving")
        ).first()
        return Generation.of(row) if row else None

    def building(self, conn: Connection, name: str) -> Generation | None:
        row = conn.execute(
            select(generations).where(
                generations.c.name == name, generations.c.status == "building"
            )
        ).first()
        return Generation.of(row) if row else None

    def all_generations(self) -> list[Generation]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(generations).order_by(generations.c.name, generations.c.generation)
            )
            return [Generation.of(r) for r in rows]

    def start_build(self, name: str, head: int, settings: Settings) -> Generation:
        """A fresh building generation (dropping an unfinished one) that folds up to ``head``."""
        model = MODELS[name]
        with self.writing() as conn:
            old = self.building(conn, name)
            if old is not None:
                self._drop_generation(conn, model, old.generation)
            latest = (
                conn.execute(
                    select(generations.c.generation)
                    .where(generations.c.name == name)
                    .order_by(generations.c.generation.desc())
                ).scalar()
                or 0
            )
            self._create_generation(conn, model, latest + 1, "building", settings, head)
            return self.building(conn, name)

    def switch(
        self, name: str, generation: int, now: datetime | None = None, in_step: bool = False
    ) -> None:
        """Serve ``generation`` from now on: one transaction repoints the view and, for the
        summary, announces on the feed (at ``now``) each customer whose state the new
        generation changes (new rules). Raises PositionMoved while the new generation is
        behind the serving one (the feed would announce changes backwards), or, ``in_step``,
        anywhere but where the serving one is (ahead, it would announce new events' changes
        as the rules' doing): catch the one behind up first. Likewise when a serving
        summary row was computed after ``now`` (a runner's refresh since both generations
        were brought to ``now``): the new rules would be credited with a change of time.
        Writers of either generation wait for this transaction, then find theirs retired."""
        model = MODELS[name]
        self.finish_indexes(name, generation)
        with self.readers_waited_for(), self.writing() as conn:
            conn.execute(  # first: a runner's write waits from here on, or went before
                update(generations).where(generations.c.name == name).values(updated_at=utc_now())
            )
            old = self.serving(conn, name)
            new = next(g for g in self._generations(conn, name) if g.generation == generation)
            if old is not None and (
                new.position < old.position or (in_step and new.position != old.position)
            ):
                raise PositionMoved(f"{name} generation {generation} is not where the serving is")
            if self._refreshed_since(conn, name, old, now):
                raise PositionMoved("the serving summary was refreshed meanwhile")
            self._set_status(conn, name, generation, "serving")
            self._bound_lock_waits(conn)  # for the view's readers, not the writers above
            self._point_view(conn, model, generation)
            if old is not None:
                self._set_status(conn, name, old.generation, "retired")
                if name == "summary":
                    self._announce_rebuild(conn, old, new, now or utc_now())
        if old is not None:
            with suppress(ReadersBusy), self.readers_waited_for(), self.writing() as conn:
                self._bound_lock_waits(conn)  # else left retired, swept by a later ensure()
                self._drop_generation(conn, model, old.generation)

    def _bound_lock_waits(self, conn: Connection) -> None:
        if self.database.is_postgres:
            conn.execute(text(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_WAIT}'"))

    @contextmanager
    def readers_waited_for(self) -> Iterator[None]:
        """PostgreSQL's lock timeout, as ReadersBusy."""
        try:
            yield
        except OperationalError as exc:
            if not lock_timed_out(exc):
                raise
            raise ReadersBusy("readers held the read model longer than a switch waits") from None

    def finish_indexes(self, name: str, generation: int, analyze: bool = False) -> None:
        """The indexes a generation's build did without, in a transaction of their own:
        building them takes a while on a large log, and readers wait for the transaction
        that repoints their view. ``analyze``: on PostgreSQL the table's statistics too
        (once, before the switch's tries): without them (autovacuum may come much later,
        or be off) the planner scans where an index would serve."""
        table = self.table(name, generation)
        with self.writing() as conn:
            for index in deferred_indexes(table):
                index.create(conn, checkfirst=True)
            if analyze and self.database.is_postgres:  # a bulk-built table has no statistics
                conn.execute(text(f'ANALYZE "{table.name}"'))

    def _refreshed_since(
        self, conn: Connection, name: str, old: Generation | None, now: datetime | None
    ) -> bool:
        """Whether a serving summary row was computed after ``now``."""
        if name != "summary" or old is None or now is None:
            return False
        table = self.table("summary", old.generation)
        later = select(table.c.customer_id).where(table.c.computed_at > now).limit(1)
        return conn.execute(later).first() is not None

    # -- writing -------------------------------------------------------------------------

    def write(
        self,
        name: str,
        generation: int,
        customers: Sequence[str],
        rows: Sequence[Mapping[str, Any]] | Prepared,
        *,
        expected: int,
        status: str,
        position: int | None = None,
        build_cursor: str | None = None,
        entries: Sequence[Mapping[str, Any]] = (),
        computed: Mapping[str, datetime] | None = None,
    ) -> None:
        """Replace the rows of ``customers``, append feed ``entries`` and advance the
        generation, in one transaction, provided the generation still has ``status`` and is
        still at ``expected`` (its position when the rows were read), and each row named in
        ``computed`` was still computed at that moment (a refresh, which moves no position);
        otherwise write nothing and raise PositionMoved. This fence, not the runner lock, is
        what makes applying a page twice (or announcing its changes twice) impossible: the
        fencing update locks the generation's row, so writers of one generation take turns
        and each sees what the one before committed."""
        table = self.table(name, generation)
        with self.writing() as conn:
            fenced = conn.execute(
                update(generations)
                .where(
                    generations.c.name == name,
                    generations.c.generation == generation,
                    generations.c.position == expected,
                    generations.c.status == status,
                )
                .values(updated_at=utc_now())
            )
            if fenced.rowcount != 1:
                raise PositionMoved(
                    f"{name} generation {generation} is no longer {status} at {expected}"
                )
            if computed and self._computed_at(conn, table, list(computed)) != computed:
                raise PositionMoved(f"{name} rows were computed again meanwhile")
            self._append_feed(conn, entries)
            delete_rows(conn, table, customers)
            insert_rows(conn, table, rows)
            changes: dict[str, Any] = {"updated_at": utc_now()}
            if position is not None:
                changes["position"] = position
            if build_cursor is not None:
                changes["build_cursor"] = build_cursor
            conn.execute(
                update(generations)
                .where(generations.c.name == name, generations.c.generation == generation)
                .values(**changes)
            )

    @staticmethod
    def _computed_at(conn: Connection, table: Table, customers: list[str]) -> dict[str, Any]:
        return {
            r.customer_id: r.computed_at
            for r in by_customer(conn, table, customers, table.c.computed_at)
        }

    def prepare(self, name: str, rows: Sequence[Mapping[str, Any]]) -> Prepared:
        """Rows of read model ``name`` as this database's driver takes them (bulk.py): what
        ``write`` stores, made ahead, where the rows are computed."""
        if name not in self._shapes:
            self._shapes[name] = MODELS[name].make_table(MetaData(), MODELS[name].view)
        shape, dialect = self._shapes[name], self.engine.dialect
        if not self.database.is_postgres or not rows:
            return prepare(dialect, shape, rows)
        with self.engine.connect() as conn:  # its adapters make the COPY text
            return prepare(dialect, shape, rows, conn.connection.driver_connection)

    def previous_summaries(self, generation: int, customers: Sequence[str]) -> dict[str, Any]:
        """The summary rows of ``customers`` as they stand (what a change is measured from)."""
        table = self.table("summary", generation)
        columns = (
            "applied_events",
            "last_position",
            "loyalty_stage",
            "status",
            "relationship_level",
            "refresh_at",
            "computed_at",
        )
        with self.engine.connect() as conn:
            rows = by_customer(conn, table, customers, *(table.c[c] for c in columns))
            return {r.customer_id: r for r in rows}

    def _generations(self, conn: Connection, name: str) -> list[Generation]:
        rows = conn.execute(select(generations).where(generations.c.name == name))
        return [Generation.of(r) for r in rows]

    def _announce_rebuild(
        self, conn: Connection, old: Generation, new: Generation, now: datetime
    ) -> None:
        """Feed entries for the customers whose state differs between two generations
        (announce.py). The feed is locked first even if none differs: that is known only
        once they are appended."""
        self._lock_feed(conn)
        before, after = self.table("summary", old.generation), self.table("summary", new.generation)
        if append_rebuild_changes(conn, before, after, new.settings_version, now):
            self._notify_feed(conn)

    def _append_feed(self, conn: Connection, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append feed entries; on PostgreSQL, one feed writer at a time (so positions
        commit in order and a reader never skips one) and a NOTIFY for followers."""
        if not entries:
            return
        self._lock_feed(conn)
        self._notify_feed(conn)
        insert_rows(conn, feed, entries)

    def _lock_feed(self, conn: Connection) -> None:
        if self.database.is_postgres:
            conn.execute(text("LOCK TABLE journey_feed IN EXCLUSIVE MODE"))

    def _notify_feed(self, conn: Connection) -> None:
        """Wake the feed's followers when ``conn``'s transaction commits (PostgreSQL)."""
        if self.database.is_postgres:
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self.feed_channel})

    @property
    def feed_channel(self) -> str:
        """The NOTIFY channel of this schema's feed (named by digest: pg_notify refused a
        long schema's name, and no feed entry could be written)."""
        return schema_channel(self.database.schema, "journey_feed")

    def due_for_refresh(self, generation: int, now: datetime, limit: int) -> list[str]:
        table = self.table("summary", generation)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.customer_id)
                .where(table.c.refresh_at <= now)
                .order_by(table.c.refresh_at)
                .limit(limit)
            )
            return [r.customer_id for r in rows]

    def overdue(self, generation: int, now: datetime) -> tuple[int, datetime | None]:
        """How many summary rows' time-driven change has come and is not applied yet, and
        the earliest moment one came: what a runner not running leaves behind."""
        table = self.table("summary", generation)
        with self.engine.connect() as conn:
            count, earliest = conn.execute(
                select(func.count(), func.min(table.c.refresh_at)).where(table.c.refresh_at <= now)
            ).one()
        return count, earliest

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction that writes, committed at the end. On SQLite it takes the write
        lock at once (``BEGIN IMMEDIATE``), waiting its turn: one that read first could not
        take it later once another writer had committed meanwhile, and failed at once with
        "database is locked", whatever the busy timeout (a rebuild beside a runner)."""
        with self.engine.connect() as conn, conn.execution_options(writing=True).begin():
            yield conn

    def table(self, name: str, generation: int) -> Table:
        model = MODELS[name]
        table_name = model.table_name(generation)
        if table_name not in self._tables:
            self._tables[table_name] = model.make_table(self._metadata, table_name)
        return self._tables[table_name]

    # -- locks ---------------------------------------------------------------------------

    @contextmanager
    def lock(self, key: str) -> Iterator[Callable[[], None]]:
        """Hold the one-writer lock ``key`` (a PostgreSQL advisory lock, or a lock file
        beside the SQLite database); raise LockBusy if another process holds it. Yields a
        check to call before writing, which raises if the lock was lost meanwhile."""
        if self.database.is_postgres:
            with self._advisory_lock(key) as check:
                yield check
        else:
            with self._file_lock(key):
                yield lambda: None  # held by this process's open file, until it closes it

    def advisory_key(self, key: str) -> int:
        """The PostgreSQL advisory lock number of ``key`` in this store's schema."""
        digest = hashlib.sha256(f"{self.database.schema}:{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def _advisory_lock(self, key: str) -> Iterator[Callable[[], None]]:
        """The lock lives in the session of one connection, idle while its holder works
        through others: if the server ends that session (a restart, an operator's
        ``pg_terminate_backend``), the lock goes with it, and only using the connection
        tells. The check does."""
        number = self.advisory_key(key)
        with self.engine.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": number}).scalar():
                raise LockBusy(f"another process holds the lock {key!r}")
            conn.commit()

            def check() -> None:
                try:
                    conn.execute(text("SELECT 1"))
                    conn.commit()
                except SQLAlchemyError as exc:
                    raise LockLost(f"the lock {key!r} was lost with its session: {exc}") from exc

            try:
                yield check
            finally:
                with suppress(SQLAlchemyError):  # a session that ended took the lock with it
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": number})
                    conn.commit()

    @contextmanager
    def _file_lock(self, key: str) -> Iterator[None]:
        path = Path(f"{self.database.sqlite_path}.{key.replace(':', '-')}.lock")
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockBusy(f"another process holds the lock {key!r} ({path})") from None
            try:
                handle.truncate(0)
                handle.write(str(os.getpid()))
                handle.flush()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- helpers -------------------------------------------------------------------------

    def _create_generation(
        self,
        conn: Connection,
        model: Model,
        generation: int,
        status: str,
        settings: Settings,
        head: int | None = None,
    ) -> None:
        table = self.table(model.name, generation)
        if status == "building":
            conn.execute(CreateTable(table, if_not_exists=True))
            later = deferred_indexes(table)
            for index in sorted(table.indexes, key=lambda index: str(index.name)):
                if index not in later:
                    index.create(conn, checkfirst=True)
        else:
            table.create(conn, checkfirst=True)
        now = utc_now()
        conn.execute(
            insert(generations).values(
                name=model.name,
                generation=generation,
                status=status,
                position=0,
                build_head=head,
                build_cursor=None,
                settings_version=settings.version,
                settings=settings.model_dump(mode="json"),
                code_version=model.code,
                created_at=now,
                updated_at=now,
            )
        )

    def _drop_generation(self, conn: Connection, model: Model, generation: int) -> None:
        self.table(model.name, generation).drop(conn, checkfirst=True)
        conn.execute(
            delete(generations).where(
                generations.c.name == model.name, generations.c.generation == generation
            )
        )

    def _set_status(self, conn: Connection, name: str, generation: int, status: str) -> None:
        conn.execute(
            update(generations)
            .where(generations.c.name == name, generations.c.generation == generation)
            .values(status=status, updated_at=utc_now())
        )

    def _point_view(self, conn: Connection, model: Model, generation: int) -> None:
        target = model.table_name(generation)
        conn.execute(text(f'DROP VIEW IF EXISTS "{model.view}"'))
        conn.execute(text(f'CREATE VIEW "{model.view}" AS SELECT * FROM "{target}"'))


def by_customer(
    conn: Connection, table: Table, customers: Sequence[str], *columns: Any
) -> Iterator[Any]:
    """``columns`` (and the id) of the rows of ``customers``, a chunk of ids a query."""
    for chunk in chunks(customers):
        yield from conn.execute(
            select(table.c.customer_id, *columns).where(table.c.customer_id.in_(list(chunk)))
        )
