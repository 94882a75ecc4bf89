"""Helpers for the audit tests: a small store, and raw SQL straight at its tables (the way
someone with database access would tamper with it, past every line of Journey's code)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from support import at, ev, purchase

from journey.api import Journey


def populate(engine: Journey) -> None:
    """Two customers: c-1 with five events (personal data on two), c-2 with two."""
    engine.record(ev("identified", "c-1", at(1), source="fair",
                     personal={"name": "Zofia Quarrington", "email": "zq@example.org"}))
    engine.record(purchase("c-1", "o-1", "10.00", day=2, category="books"))
    engine.record(ev("contact", "c-1", at(3), channel="phone", direction="inbound",
                     purpose="inquiry", personal={"note": "call after five"}))
    engine.record(purchase("c-1", "o-2", "20.00", day=4, category="music"))
    engine.record(purchase("c-2", "o-9", "5.00", day=5))
    engine.record(ev("feedback", "c-1", at(6), score=9))


class Raw:
    """A plain connection to the store's database, outside Journey."""

    def __init__(self, engine: Journey):
        app = engine.app
        self.pg = app.database.is_postgres
        self.events = app.tables.events_table
        self.seal = app.tables.name("journey_log_seal")
        self.keys = app.tables.name("journey_keys")
        self.schema = f'"{app.database.schema}"' if self.pg else ""
        self.pos = app.tables.position
        if self.pg:
            self.conn = app.database.connect()
        else:
            self.conn = sqlite3.connect(app.database.sqlite_path, isolation_level=None)

    def run(self, statement: str, params: Any = ()) -> list[tuple]:
        statement = statement.format(events=self.events, seal=self.seal, pos=self.pos,
                                     keys=self.keys)
        if self.pg:
            statement = statement.replace("?", "%s")
        cur = self.conn.execute(statement, params)
        return cur.fetchall() if cur.description else []

    def rows(self, customer_id: str) -> list[tuple[int, int, str, dict]]:
        """(position, version, topic, state) of a customer's events, by version."""
        found = self.run(
            "SELECT {pos}, originator_version, topic, state FROM {events} "
            "WHERE originator_id = ? ORDER BY originator_version",
            (customer_id,),
        )
        return [(p, v, t, json.loads(bytes(s))) for p, v, t, s in found]

    def set_state(self, position: int, state: dict) -> None:
        self.run("UPDATE {events} SET state = ? WHERE {pos} = ?",
                 (json.dumps(state).encode(), position))

    def close(self) -> None:
        self.conn.close()
