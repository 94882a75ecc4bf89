"""The event-sourced application: stores and loads Customer aggregates.

It adds to eventsourcing's Application only what bulk work needs: loading many aggregates
with a few queries instead of one per aggregate, and reading a customer's events for the
projections. Deciding what to record is the command handlers' job (commands/handlers.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.persistence import Notification, StoredEvent

from journey.customer import Customer
from journey.events import CustomerEvent
from journey.referrals import Referrers
from journey.storage import Database, StorageError

LOAD_CHUNK = 500


class JourneyApplication(Application[str]):
    """The customer event store."""

    name = "Journey"

    def __init__(self, database: Database):
        database.ensure_schema()
        self.database = database
        try:
            super().__init__(env=database.eventsourcing_env())
        except Exception as exc:  # the library raises plain errors for a bad connection
            raise StorageError(f"cannot open the event store at {database.url!r}: {exc}") from exc

    def load_many(self, ids: Iterable[str]) -> dict[str, Customer | Referrers]:
        """Reconstruct every stored aggregate among ``ids``, a chunk of ids per query."""
        ids = sorted(set(ids))
        found: dict[str, Any] = {}
        for start in range(0, len(ids), LOAD_CHUNK):
            rows = self._select_streams(ids[start : start + LOAD_CHUNK])
            for aggregate_id, stored in rows.items():
                found[aggregate_id] = self._reconstruct(stored)
        return found

    def customer_events(self, customer_id: str) -> list[CustomerEvent]:
        """A customer's stored events in recording order (empty when unknown)."""
        return [e for e in self.events.get(customer_id) if isinstance(e, CustomerEvent)]

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

    def _select_streams(self, ids: list[str]) -> dict[str, list[StoredEvent]]:
        recorder = self.recorder
        if self.database.is_postgres:
            from psycopg.sql import SQL, Identifier

            statement = SQL(
                "SELECT originator_id, originator_version, topic, state FROM {}.{} "
                "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
            ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
            with recorder.datastore.transaction(commit=False) as curs:
                curs.execute(statement, (ids,), prepare=False)
                rows = curs.fetchall()
        else:
            marks = ",".join("?" * len(ids))
            statement = (
                "SELECT originator_id, originator_version, topic, state FROM "
                f"{recorder.events_table_name} WHERE originator_id IN ({marks}) "
                "ORDER BY originator_id, originator_version"
            )
            with recorder.datastore.transaction(commit=False) as curs:
                curs.execute(statement, ids)
                rows = curs.fetchall()
        streams: dict[str, list[StoredEvent]] = defaultdict(list)
        for row in rows:
            state = row["state"]
            streams[row["originator_id"]].append(
                StoredEvent(
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(state) if isinstance(state, memoryview) else state,
                )
            )
        return streams
