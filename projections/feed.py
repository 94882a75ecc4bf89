"""The change feed: every change of a customer's stage, status or level, by position.

The summary runner appends entries in the same transaction as the summary rows it writes
(see readmodels/runner.py), so an entry exists exactly when its change was applied; on
PostgreSQL feed writers take turns, so positions commit in order. A subscriber that
remembers the last position it saw and asks for what comes after it therefore gets every
entry exactly once, in order, across restarts of either side. Rebuilds never rewrite the
feed: they only announce, as new entries, the customers whose state the new rules change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import column, func, select, table

from projections.readmodels.store import ReadModelStore
from projections.readmodels.tables import feed
from projections.rules.answer import CLASSIFICATIONS as KINDS
from projections.rules.window import iso

#: Seconds a listener waits for a NOTIFY before it looks again anyway (for ``stop``, and
#: for time-driven work a notification does not announce).
LISTEN_IDLE = 1.0


@dataclass(frozen=True)
class FeedEntry:
    position: int
    customer_id: str
    kind: str
    from_value: str | None
    to_value: str
    occurred_at: datetime
    recorded_at: datetime
    reason: str
    cause: int | None
    #: The causing event's id in its customer's stream, as show, history and export name
    #: events (``cause`` is its log position, as record and import answer).
    cause_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "customer_id": self.customer_id,
            "kind": self.kind,
            "from": self.from_value,
            "to": self.to_value,
            "occurred_at": iso(self.occurred_at),
            "recorded_at": iso(self.recorded_at),
            "reason": self.reason,
            "cause": self.cause,
            "cause_id": self.cause_id,
        }


class Feed:
    """Reads the feed of one database."""

    def __init__(self, store: ReadModelStore):
        self.store = store

    def head(self) -> int:
        with self.store.engine.connect() as conn:
            return conn.execute(select(func.max(feed.c.position))).scalar() or 0

    def read(
        self,
        after: int = 0,
        limit: int = 100,
        kinds: Collection[str] | None = None,
        customer_id: str | None = None,
    ) -> list[FeedEntry]:
        """Up to ``limit`` entries after position ``after``, oldest first."""
        query = select(feed).where(feed.c.position > after)
        if kinds:
            unknown = set(kinds) - set(KINDS)
            if unknown:
                raise ValueError(f"unknown kinds {sorted(unknown)}; expected {', '.join(KINDS)}")
            query = query.where(feed.c.kind.in_(list(kinds)))
        if customer_id is not None:
            query = query.where(feed.c.customer_id == customer_id)
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.order_by(feed.c.position).limit(limit)).all()
            ids = self._event_ids(conn, {row.cause for row in rows if row.cause is not None})
        return [FeedEntry(**row._mapping, cause_id=ids.get(row.cause)) for row in rows]

    def _event_ids(self, conn: Any, positions: set[int]) -> dict[int, int]:
        """Each log position's event id in its customer's stream."""
        if not positions:
            return {}
        database = self.store.database
        position = column(database.position_column)
        events = table(database.events_table, position, column("originator_version"))
        found = conn.execute(
            select(position, events.c.originator_version).where(position.in_(sorted(positions)))
        )
        return {row[0]: row[1] for row in found}

    def follow(
        self,
        after: int,
        *,
        kinds: Collection[str] | None = None,
        customer_id: str | None = None,
        stop: threading.Event,
        poll_seconds: float = 0.2,
        page: int = 500,
    ) -> Iterator[FeedEntry]:
        """Every entry after ``after``, then each new one as it is written, until ``stop``.
        On PostgreSQL it wakes on the writers' NOTIFY (and looks at ``stop`` every
        ``LISTEN_IDLE`` seconds: a subscriber polling there cost a query five times a second
        each); on SQLite it polls every ``poll_seconds``."""
        pg = self.store.database.is_postgres
        idle = max(poll_seconds, LISTEN_IDLE) if pg else poll_seconds
        with listening(self.store) if pg else polling() as wait:
            while not stop.is_set():
                entries = self.read(after, page, kinds, customer_id)
                for entry in entries:
                    yield entry
                    after = entry.position
                if len(entries) < page:
                    wait(stop, idle)


Wait = Callable[[threading.Event, float], None]


@contextmanager
def polling() -> Iterator[Wait]:
    yield lambda stop, seconds: stop.wait(seconds)


@contextmanager
def listening(store: ReadModelStore) -> Iterator[Wait]:
    """Wait for the feed writers' NOTIFY (or the timeout) on a connection of its own."""
    with store.database.connect() as conn:
        conn.execute(f'LISTEN "{store.feed_channel}"')

        def wait(stop: threading.Event, seconds: float) -> None:
            for _ in conn.notifies(timeout=seconds, stop_after=1):
                pass

        yield wait
