"""The event-sourced application: stores and loads Customer aggregates.

It adds to eventsourcing's Application only what bulk work needs: loading many aggregates
with a few queries instead of one per aggregate, and reading a customer's events for the
projections. Deciding what to record is the command handlers' job (commands/handlers.py).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from eventsourcing.application import Application
from eventsourcing.persistence import (
    EventStore,
    Mapper,
    Notification,
    Recording,
    StoredEvent,
    Transcoder,
)
from psycopg.rows import tuple_row

from journey.chunks import chunks
from journey.customer import Customer
from journey.events import CustomerEvent, Erased, is_customer_event
from journey.integrity import LogSeal, parsed, topic_of
from journey.personal import Keyring, PersonalData, UnreadableSeal, is_sealed
from journey.referrals import Referrers
from journey.sidetables import SideTables
from journey.storage import Database, StorageError
from journey.transcoding import FastJSONTranscoder

#: A step of the transaction storing a batch, given a side-table cursor of it.
Within = Callable[[Any], None]


class Sealing:
    """Appends a batch's customer events to the log seal, in the transaction that stores
    them, once their positions are known; and does ``also`` there (an erasure deletes the
    customer's key)."""

    def __init__(self, log_seal: LogSeal, events: list[Any], also: Within | None = None):
        log_seal.ensure_table()  # before the events' transaction takes its locks
        self.log_seal = log_seal
        self.also = also
        self.links = [
            (event.originator_id, event.originator_version, event.content_hash)
            if isinstance(event, CustomerEvent) and event.content_hash
            else None
            for event in events
        ]
        self.done = False

    def known(self, positions: Sequence[int]) -> dict[int, tuple[str, int, str]]:
        return {p: link for p, link in zip(positions, self.links, strict=True) if link}

    def __call__(self, cursor: Any, positions: Sequence[int]) -> None:
        self.log_seal.seal_within(cursor, self.known(positions))
        if self.also is not None:
            self.also(self.log_seal.tables.within(cursor))
        self.done = True


class Pending(NamedTuple):
    """Events taken from their aggregates and encoded, not yet stored."""

    events: list[Any]
    stored: list[StoredEvent]
    sealing: Sealing


class Stream(NamedTuple):
    """A customer's events in recording order, with each one's position in the log."""

    events: list[CustomerEvent]
    positions: list[int]


@contextmanager
def first_use_lock(database: Database) -> Iterator[None]:
    """Let one process at a time create the schema and tables of a PostgreSQL store.

    PostgreSQL's ``CREATE ... IF NOT EXISTS`` is not safe against itself: two processes
    opening a store at once fail with "duplicate key" or "tuple concurrently updated".
    """
    if not database.is_postgres:
        yield
        return
    conn = database.connect()
    with conn:  # closing the session releases the lock
        key = zlib.crc32(f"journey-schema:{database.schema}".encode())
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield


class OpeningMapper(Mapper):
    """Decodes events with their personal data opened: plaintext while the customer's key
    exists, ``[erased]`` fields after (see journey/personal.py)."""

    def __init__(self, mapper: Mapper, keyring: Keyring):
        super().__init__(mapper.transcoder, mapper.compressor, mapper.cipher)
        self.keyring = keyring

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event = super().to_domain_event(stored_event)
        personal = vars(event).get("personal")
        if is_sealed(personal):
            vars(event)["personal"] = self.keyring.open(event.originator_id, personal)
        return event


class JourneyApplication(Application[str]):
    """The customer event store.

    ``events`` (what ``events.get`` and ``customer_events`` read) opens personal data;
    ``mapper`` (notification scans, read models, the aggregates) leaves it sealed, so
    bulk readers never touch a key. Every save seals the log in the same transaction.
    """

    name = "Journey"

    def __init__(self, database: Database):
        self.database = database
        with first_use_lock(database):
            database.ensure_schema()
            try:
                super().__init__(env=database.eventsourcing_env())
            except Exception as exc:  # the library raises plain errors for a bad connection
                raise StorageError(
                    f"cannot open the event store at {database.url!r}: {exc}"
                ) from exc
        self.tables = SideTables(database, self.recorder.events_table_name, self.recorder.datastore)
        self.keyring = Keyring(self.tables)
        self.log_seal = LogSeal(self.tables)
        self.events = EventStore(OpeningMapper(self.mapper, self.keyring), self.recorder)
        #: The same events with personal data left sealed: for what keeps events a while
        #: (an opened copy kept would outlive an erasure), opening it when shown (``opened``).
        self.sealed_events = EventStore(self.mapper, self.recorder)

    def opened(self, event: Any) -> Any:
        """``event`` with its personal data opened, if it holds any sealed."""
        personal = vars(event).get("personal")
        if not is_sealed(personal):
            return event
        return dataclasses.replace(event, personal=self.keyring.open(event.originator_id, personal))

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder, decoding faster (journey/transcoding.py)."""
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def save(self, *aggregates: Any, within: Within | None = None) -> list[Recording]:
        """Store the aggregates' new events and append the customer events among them to
        the log seal, in one transaction (journey/recorders.py).

        The library's ``save`` less what this application never uses (snapshots, an
        aggregate cache, followers), and storing each customer event with the state its
        hash was computed from (``Customer.chain_pending``): encoding it again was a fifth
        of an import. ``within`` is done in that transaction too.
        """
        return self.store(self.prepare(*aggregates, within=within))

    def prepare(
        self, *aggregates: Any, recorded_at: datetime | None = None, within: Within | None = None
    ) -> Pending:
        """The aggregates' new events, taken from them, stamped ``recorded_at`` (if given),
        chained and encoded: the half of ``save`` that needs no database, so that a bulk
        load can prepare one batch while the previous one is being stored
        (commands/handlers.py)."""
        events, stored = [], []
        for aggregate in aggregates:
            encoded = self._encoded(aggregate, recorded_at)
            for event in aggregate.collect_events():
                state = encoded.get(event.originator_version)
                events.append(event)
                stored.append(
                    self.mapper.to_stored_event(event)
                    if state is None
                    else StoredEvent(
                        event.originator_id, event.originator_version, topic_of(event), state
                    )
                )
        return Pending(events, stored, Sealing(self.log_seal, events, within))

    def store(self, pending: Pending) -> list[Recording]:
        """Insert prepared events and their seal rows in one transaction."""
        events, stored, sealing = pending
        # The library's database functions insert without Journey's steps: no seal, no
        # ``also``, which must not then happen apart (an erasure's key deletion).
        if sealing.also is not None and getattr(
            self.recorder.datastore, "enable_db_functions", False
        ):
            raise StorageError(
                "this store inserts events through database functions: an erasure cannot "
                "delete the key in the same transaction"
            )
        positions = self.recorder.insert_events(stored, seal=sealing) or []
        if stored and not sealing.done:  # a recorder that does not seal in its transaction
            self.log_seal.seal(sealing.known(positions))
        return [
            Recording(
                event,
                Notification(s.originator_id, s.originator_version, s.topic, s.state, position),
            )
            for event, s, position in zip(events, stored, positions, strict=True)
        ]

    def _encoded(self, aggregate: Any, recorded_at: datetime | None) -> dict[int, bytes]:
        """A customer's new events chained, and encoded as the store keeps them unless it
        would compress or encrypt them (the mapper encodes them then)."""
        if not isinstance(aggregate, Customer):
            return {}
        encoded = aggregate.chain_pending(recorded_at)
        plain = self.mapper.compressor is None and self.mapper.cipher is None
        return encoded if plain else {}

    def analyze(self) -> None:
        """Refresh PostgreSQL's statistics of the log and its seal after a bulk load, as
        its manual advises: with none, the planner scans the whole log to read a few
        customers (SQLite plans without them)."""
        if self.database.is_postgres:
            self.tables.autocommit(f"ANALYZE {self.tables.events_table}, {self.log_seal.table}")

    def close(self) -> None:
        self.tables.close()
        super().close()

    def load_many(self, ids: Iterable[str]) -> dict[str, Customer | Referrers]:
        """Reconstruct every stored aggregate among ``ids``, a chunk of ids per query."""
        ids = sorted(set(ids))
        found: dict[str, Any] = {}
        for chunk in chunks(ids):
            rows = self._select_streams(list(chunk))
            for aggregate_id, stored in rows.items():
                found[aggregate_id] = self._reconstruct([s for _, s in stored])
        return found

    def customer_streams(self, ids: Iterable[str], up_to: int | None = None) -> dict[str, Stream]:
        """The decoded events of many customers, a chunk of ids per query; with ``up_to``
        only those at or before that position of the log."""
        ids = sorted(set(ids))
        found: dict[str, Stream] = {}
        for chunk in chunks(ids):
            for customer_id, rows in self._select_streams(list(chunk), up_to).items():
                events = [self.mapper.to_domain_event(stored) for _, stored in rows]
                found[customer_id] = Stream(events, [position for position, _ in rows])
        return found

    def versions(self, ids: Iterable[str]) -> dict[str, int]:
        """The stored version of each aggregate among ``ids`` that has events: what a
        writer compares with the versions it saw, to learn whether another moved them."""
        ids = sorted(set(ids))
        pg = self.database.is_postgres
        table = self._qualified(self.recorder.events_table_name)
        found: dict[str, int] = {}
        with self.recorder.datastore.transaction(commit=False) as curs:
            for chunk in chunks(ids):
                among = "= ANY(%s)" if pg else f"IN ({','.join('?' * len(chunk))})"
                curs.execute(
                    f"SELECT originator_id, MAX(originator_version) AS version FROM {table} "
                    f"WHERE originator_id {among} GROUP BY originator_id",
                    [chunk] if pg else chunk,
                )
                found.update({row["originator_id"]: row["version"] for row in curs.fetchall()})
        return found

    def customer_ids(self, after: str | None = None, up_to: int | None = None) -> list[str]:
        """Every customer id in order (those after ``after``; with events at or before
        ``up_to``): what a rebuild walks through."""
        mark = "%s" if self.database.is_postgres else "?"
        where, params = [f"originator_id NOT LIKE {mark}"], ["~%"]
        if after is not None:
            where.append(f"originator_id > {mark}")
            params.append(after)
        if up_to is not None:
            where.append(f"{self.database.position_column} <= {mark}")
            params.append(up_to)
        table = self._qualified(self.recorder.events_table_name)
        statement = (
            f"SELECT DISTINCT originator_id FROM {table} "
            f"WHERE {' AND '.join(where)} ORDER BY originator_id"
        )
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(statement, params)
            return [row["originator_id"] for row in curs.fetchall()]

    def a_customer_besides(self, prefix: str = "") -> str | None:
        """One customer id not starting with ``prefix`` (any, without one), or None: whether
        a store holds someone else's customers (see ``journey demo``, ``load-cdnow``)."""
        mark = "%s" if self.database.is_postgres else "?"
        table = self._qualified(self.recorder.events_table_name)
        prefixes = ["~", prefix] if prefix else ["~"]  # compared as text: LIKE ignores case
        where = " AND ".join(  # in SQLite, so "CDNOW-9" would pass for "cdnow-"
            f"substr(originator_id, 1, {len(p)}) <> {mark}" for p in prefixes
        )
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT originator_id FROM {table} WHERE {where} LIMIT 1", prefixes)
            row = curs.fetchone()
            return row["originator_id"] if row else None

    def count_customer_events(self, up_to: int, among_after: str | None = None) -> int:
        """How many customer events lie at or before ``up_to`` (of customers after
        ``among_after``): the total a rebuild's progress counts towards."""
        mark = "%s" if self.database.is_postgres else "?"
        where = [f"originator_id NOT LIKE {mark}", f"{self.database.position_column} <= {mark}"]
        params: list[Any] = ["~%", up_to]
        if among_after is not None:
            where.append(f"originator_id > {mark}")
            params.append(among_after)
        table = self._qualified(self.recorder.events_table_name)
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT COUNT(*) AS n FROM {table} WHERE {' AND '.join(where)}", params)
            return curs.fetchone()["n"]

    def count_after(self, position: int) -> int:
        """How many notifications lie after ``position`` (a reader's lag in events)."""
        column, mark = self.database.position_column, "%s" if self.database.is_postgres else "?"
        table = self._qualified(self.recorder.events_table_name)
        with self.recorder.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT COUNT(*) AS n FROM {table} WHERE {column} > {mark}", [position])
            return curs.fetchone()["n"]

    def _qualified(self, table: str) -> str:
        if self.database.is_postgres:
            return f'"{self.recorder.datastore.schema}"."{table}"'
        return table

    def customer_events(self, customer_id: str) -> list[CustomerEvent]:
        """A customer's stored events in recording order (empty when unknown), personal
        data opened (``check_unerased``)."""
        events = [e for e in self.events.get(customer_id) if is_customer_event(e)]
        return self.check_unerased(customer_id, events)

    def check_unerased(
        self,
        customer_id: str,
        events: list[CustomerEvent],
        recorded: list[CustomerEvent] | None = None,
    ) -> list[CustomerEvent]:
        """``events`` (opened), unless one holds personal data recorded after the
        customer's last erasure (in ``recorded``, default ``events``: all the customer's
        events when ``events`` are those known at a past moment) that its key does not
        open: sealed under another key than the customer's, or with no key at all.

        Data sealed before an erasure reads as erased by right: an erasure deletes the key
        in the transaction that records it, and new data has a key of its own. But the
        events and the key were read at two moments (the key maybe cached): an erasure or
        a new key may have been stored in between. So the key is read again, then the
        customer's erasures: a key missing at that read because of an erasure was deleted
        with it, so the read after finds that erasure. Only what is still unexplained is
        an altered store (the key's id or the sealed data changed, or the key deleted),
        which read as an erasure no event records."""
        last = last_erasure(recorded or events)
        events = erased_before(last, events)
        suspect = [e for e in events if e.originator_version > last and unopened_key(e)]
        if not suspect:
            return events
        key = self.keyring.key(customer_id, fresh=True)
        erased = last_erasure(self.sealed_events.get(customer_id))
        reopened = {}
        for event in suspect:
            sealed = event.personal.sealed  # type: ignore[attr-defined]
            if event.originator_version < erased:
                continue  # erased meanwhile: it reads as erased, as it now is
            if key is None:
                raise UnreadableSeal(
                    customer_id, "has no key, and no erasure accounts for it", NO_KEY
                )
            if key.kid != sealed["kid"]:
                raise UnreadableSeal(
                    customer_id,
                    "is sealed under another key than the customer's, after any erasure",
                )
            reopened[event.originator_version] = self.keyring.open(customer_id, sealed)
        return [
            dataclasses.replace(e, personal=reopened[e.originator_version])
            if e.originator_version in reopened
            else e
            for e in events
        ]

    def stored_states(self, customer_id: str) -> dict[int, tuple[str, Any]]:
        """Each of the customer's events as stored, by version: its topic and its JSON
        state (personal data sealed; both hashes in it), what its ``content_hash`` was
        computed from, so that an auditor can recompute it without Journey."""
        return {
            stored.originator_version: (stored.topic, parsed(stored.state))
            for stored in self.recorder.select_events(customer_id)
        }

    def all_customer_events(self, after: int = 0, page: int = 5000) -> Iterator[CustomerEvent]:
        """Every customer event after log position ``after``, in the log's order, read a
        page at a time (the engine's own records left out)."""
        while notifications := self.select_notifications(after, page):
            for notification in notifications:
                event = self.mapper.to_domain_event(notification)
                if is_customer_event(event):
                    yield event
            after = notifications[-1].id

    def select_notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Notifications with id greater than ``after`` (ids can have gaps)."""
        return self.recorder.select_notifications(after, limit, inclusive_of_start=False)

    def max_notification_id(self) -> int:
        return self.recorder.max_notification_id() or 0

    def _reconstruct(self, stored: list[StoredEvent]) -> Any:
        aggregate = None
        for item in stored:
            aggregate = self.mapper.to_domain_event(item).mutate(aggregate)
        return aggregate

    def _select_streams(
        self, ids: list[str], up_to: int | None = None
    ) -> dict[str, list[tuple[int, StoredEvent]]]:
        table = self._qualified(self.recorder.events_table_name)
        position = self.database.position_column
        columns = f"{position} AS position, originator_id, originator_version, topic, state"
        order = "ORDER BY originator_id, originator_version"
        if self.database.is_postgres:
            # The position bound is applied below, not here: with it in SQL, on a table
            # not yet analysed (a freshly loaded log) the planner scanned the whole log by
            # position for every batch of ids instead of looking the ids up.
            statement = f"SELECT {columns} FROM {table} WHERE originator_id = ANY(%s) {order}"
            params: list[Any] = [ids]
        else:
            limit = "AND rowid <= ? " if up_to is not None else ""
            marks = ",".join("?" * len(ids))
            statement = (
                f"SELECT {columns} FROM {table} WHERE originator_id IN ({marks}) {limit}{order}"
            )
            params = [*ids] + ([up_to] if up_to is not None else [])
        with self.recorder.datastore.transaction(commit=False) as curs:
            if self.database.is_postgres:
                curs.row_factory = tuple_row  # read by position: no dict made per row
            curs.execute(statement, params)
            rows = curs.fetchall()
        streams: dict[str, list[tuple[int, StoredEvent]]] = defaultdict(list)
        for position, originator_id, version, topic, state in rows:
            if up_to is not None and position > up_to:
                continue
            if type(state) is memoryview:
                state = bytes(state)
            stored = StoredEvent(originator_id, version, topic, state)
            streams[originator_id].append((position, stored))
        return streams


def last_erasure(events: Iterable[Any]) -> int:
    """The version of the customer's last ``erased`` event (0 for none)."""
    return max((e.originator_version for e in events if type(e) is Erased), default=0)


def erased_before(erasure: int, events: list[CustomerEvent]) -> list[CustomerEvent]:
    """``events`` with personal data sealed before the ``erasure`` (a version) as erased,
    though opened: by a key cached before the erasure, which the reader sees (its process
    trusts a key for a few seconds)."""
    return [
        dataclasses.replace(e, personal=e.personal.erased_copy())  # type: ignore[attr-defined]
        if e.originator_version < erasure and is_opened(getattr(e, "personal", None))
        else e
        for e in events
    ]


def is_opened(personal: Any) -> bool:
    return isinstance(personal, PersonalData) and not personal.erased


def unopened_key(event: Any) -> bool:
    """Whether the event holds personal data no key opened (none, or another)."""
    personal = getattr(event, "personal", None)
    return getattr(personal, "other_key", False) or getattr(personal, "no_key", False)


#: Why sealed data recorded after the last erasure has no key.
NO_KEY = (
    "the key was deleted from journey_keys outside Journey, or the erased event that deleted "
    "it was removed from the log (journey verify --anchor shows that), or an erase by a "
    "Journey older than this one stopped between deleting the key and recording its event "
    "(journey erase finishes that)"
)
