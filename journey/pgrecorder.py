"""The PostgreSQL event recorder: the library's, sending new events in binary.

eventsourcing inserts a batch as one array of its composite ``stored_event`` type, which
psycopg sends as text unless told otherwise: escaping every event's JSON through regular
expressions cost a third of an import into PostgreSQL. The same statement with a binary
parameter (``%b``) stores the same rows, three times faster to send.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL


class BinaryInsertRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        statement = self.insert_events_statement.as_string(None)
        if statement.count("%s") != 1:  # a library change this class does not know
            raise RuntimeError(f"unexpected insert statement: {statement}")
        self.insert_events_statement = SQL(statement.replace("%s", "%b"))  # type: ignore[arg-type]
