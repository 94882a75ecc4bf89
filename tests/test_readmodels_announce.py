"""A switch announces on the feed what the Python before announce.py announced: for each
customer and kind set in the new summary and different in the old one, the same entry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from readmodel_support import NOW
from sqlalchemy import Table, select

from journey.storage import Database
from projections.feed import Feed
from projections.readmodels.bulk import insert_rows
from projections.readmodels.store import ReadModelStore
from projections.settings import DEFAULT, Settings

KINDS = ("loyalty_stage", "status", "relationship_level")
ODD_RULES = ['it\'s "quoted"', "back\\slash", "tab\tnew\nline", "✓ ünï", "100% ? :x %(y)s", ""]


def summary(
    customer: str,
    stage: str | None,
    status: str | None,
    level: str | None,
    reasons: Any = "default",
) -> dict[str, Any]:
    values = {"loyalty_stage": stage, "status": status, "relationship_level": level}
    if reasons == "default":
        reasons = {
            k: {"value": v, "rule": f"{k} rule for {customer}", "events": [1]}
            for k, v in values.items()
        }
    return {
        "customer_id": customer,
        **values,
        "reasons": reasons,
        "computed_at": NOW,
        "refresh_at": NOW + timedelta(days=1),
        "last_position": 1,
        "applied_events": 1,
    }


OLD = [
    summary("same", "client", "active", "basic"),
    summary("one-differs", "client", "active", "basic"),
    summary("now-future", "client", "active", "basic"),
    summary("gone", "client", "active", "basic"),
    summary("was-null", None, None, None, reasons=None),
]
NEW = [
    summary("same", "client", "active", "basic"),
    summary("one-differs", "client", "lapsed", "basic"),
    summary("now-future", None, None, None, reasons=None),
    summary("was-null", "prospect", "active", "none"),
    summary("fresh", "suspect", "active", "none"),
    summary("no-reasons", "suspect", "active", "none", reasons=None),
    summary(
        "some-reasons",
        "suspect",
        "active",
        "none",
        reasons={"status": {"value": "active"}, "loyalty_stage": {"rule": "only this"}},
    ),
    *(
        summary(
            f"odd-{n}", "repeat", "at_risk", "reactive", reasons={k: {"rule": rule} for k in KINDS}
        )
        for n, rule in enumerate(ODD_RULES)
    ),
]


def python_changes(conn, before: Table, after: Table, version: str) -> list[tuple]:
    """The entries ReadModelStore._rebuild_changes made before announce.py (less the
    moment, which the test compares apart)."""
    columns = KINDS
    query = select(
        after.c.customer_id,
        after.c.reasons,
        *(before.c[c].label(f"old_{c}") for c in columns),
        *(after.c[c] for c in columns),
    ).select_from(after.outerjoin(before, before.c.customer_id == after.c.customer_id))
    entries = []
    for row in conn.execute(query):
        for kind in columns:
            was, now_is = row._mapping[f"old_{kind}"], row._mapping[kind]
            if now_is is not None and was != now_is:
                rule = (row.reasons or {}).get(kind, {}).get("rule", "")
                reason = f"read model rebuilt with settings {version}: {rule}"
                entries.append((row.customer_id, kind, was, now_is, reason, None))
    return entries


def switched(db_url: str, old: list[dict], new: list[dict]) -> tuple[list, list]:
    """The feed entries a switch from ``old`` to ``new`` summary rows appends, and those
    the Python before it would have made."""
    database = Database.parse(db_url)
    database.ensure_schema()
    store = ReadModelStore(database)
    try:
        store.ensure(DEFAULT)
        settings = Settings(lapsed_after_days=200)
        building = store.start_build("summary", head=0, settings=settings)
        before, after = store.table("summary", 1), store.table("summary", building.generation)
        with store.engine.begin() as conn:
            insert_rows(conn, before, old)
            insert_rows(conn, after, new)
        with store.engine.connect() as conn:
            expected = python_changes(conn, before, after, settings.version)
        head = Feed(store).head()
        store.switch("summary", building.generation)
        entries = Feed(store).read(after=head, limit=10**6)
        found = [
            (e.customer_id, e.kind, e.from_value, e.to_value, e.reason, e.cause) for e in entries
        ]
        moments = {(e.occurred_at, e.recorded_at) for e in entries}
        assert len(moments) <= 1 and all(a == b for a, b in moments)
        order = [(e.customer_id, KINDS.index(e.kind)) for e in entries]
        assert order == sorted(order), "by customer, then kind"
        return found, expected
    finally:
        store.close()


def test_the_switch_announces_what_the_python_did(db_url):
    found, expected = switched(db_url, OLD, NEW)
    assert sorted(found, key=repr) == sorted(expected, key=repr)
    assert {e[0] for e in found} >= {"one-differs", "was-null", "fresh", "odd-0", "no-reasons"}
    assert not any(e[0] in ("same", "now-future", "gone") for e in found)


def test_a_first_rebuild_announces_every_customer(db_url):
    new = [summary(f"c-{n:03d}", "client", "active", "basic") for n in range(300)]
    found, expected = switched(db_url, [], new)
    assert len(found) == 900
    assert sorted(found, key=repr) == sorted(expected, key=repr)


def test_nothing_to_announce(db_url):
    found, expected = switched(db_url, OLD[:2], OLD[:2])
    assert found == expected == []
