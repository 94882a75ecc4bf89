"""The event recorders: the library's, storing a batch's events and their seal rows in one
transaction.

``insert_events(stored_events, seal=...)`` calls ``seal(cursor, positions)`` in the
transaction that inserts the events, once their positions are known: the log seal
(journey/integrity.py) commits with the events or not at all, and a batch costs one commit,
not two. The library passes keyword arguments down to these steps for the same purpose
(tracking records).

On PostgreSQL, two more changes:

* eventsourcing inserts a batch as one array of its composite ``stored_event`` type, which
  psycopg sends as text: escaping every event's JSON through regular expressions cost a
  third of an import. The same rows go as four binary arrays, one per column, which psycopg
  writes in C: four times faster to send.
* The library sends the batch in pipeline mode, and psycopg (3.3) then waits forever on a
  statement of more than about 12 MB: 5,000 events of 2.5 KB each hung an import. Sent
  plainly, the lock, the notification and the insert cost three round trips a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from journey.storage import schema_channel

#: Called in the inserting transaction with a cursor of it and the new events' positions.
Seal = Callable[[Any, Sequence[int]], None]


class SealingSQLiteRecorder(SQLiteApplicationRecorder):
    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        positions = super()._insert_events(c, stored_events, **kwargs)
        seal: Seal | None = kwargs.get("seal")
        if seal is not None and positions:
            seal(c.sqlite_cursor, positions)
        return positions


class SealingPostgresRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: Journey's listeners wait on the schema's own channel; the library's (one name for
        #: every schema) is notified too, for its own subscribers.
        self.schema_channel = schema_channel(self.datastore.schema, "journey_events")
        self.insert_columns_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    def _notify_channel(self, curs: Any) -> None:
        super()._notify_channel(curs)
        curs.execute(SQL("NOTIFY {0}").format(Identifier(self.schema_channel)))

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """The library's lock and notification, then the rows as four binary arrays, one
        per column (psycopg dumps those in C; a composite it dumps in Python)."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_columns_statement,
            (
                [s.originator_id for s in stored_events],
                [s.originator_version for s in stored_events],
                [s.topic for s in stored_events],
                [s.state for s in stored_events],
            ),
        )

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The library's steps (lock the table, notify, insert, read the new positions),
        then the seal, in one transaction, statement by statement."""
        if self.datastore.enable_db_functions or not stored_events:
            return super().insert_events(stored_events, **kwargs)
        with (
            self.datastore.get_connection() as conn,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            self._insert_events(curs, stored_events, **kwargs)
            self._insert_stored_events(curs, stored_events, **kwargs)
            positions = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
            seal: Seal | None = kwargs.get("seal")
            if seal is not None and positions:
                with conn.cursor(row_factory=tuple_row) as plain:
                    seal(plain, positions)
            return positions
