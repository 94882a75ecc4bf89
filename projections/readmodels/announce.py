"""What switching to a rebuilt summary announces on the feed, found and written by the
database.

New settings can change any customer's stage, status or level, and the switch appends a
feed entry for each change in its own transaction. After a first rebuild (from the empty
generation ``ReadModelStore.ensure`` creates) that is an entry per customer and kind.
Made in Python, each cost a joined row fetched, its reasons decoded, a dict built,
converted and sent back, all in the rebuilding process once the workers are done (one
core idle, readers waiting for the switch). One ``INSERT ... SELECT`` makes the same
entries where the rows are: tests/test_readmodels_announce.py checks it against the
Python it replaced.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Select,
    String,
    Table,
    cast,
    func,
    insert,
    literal,
    null,
    select,
    union_all,
)

from projections.readmodels.tables import TIME, feed
from projections.rules.answer import CLASSIFICATIONS as KINDS

COLUMNS = (
    "customer_id",
    "kind",
    "from_value",
    "to_value",
    "occurred_at",
    "recorded_at",
    "reason",
    "cause",
)


def append_rebuild_changes(
    conn: Connection, before: Table, after: Table, version: str, now: datetime
) -> int:
    """Append to the feed a change for each customer and kind set in ``after`` (the new
    summary, built with settings ``version``) that differs from ``before`` (the old one;
    a customer absent there had nothing); returns how many."""
    query = rebuild_changes(before, after, version, now)
    return conn.execute(insert(feed).from_select(COLUMNS, query)).rowcount


def rebuild_changes(before: Table, after: Table, version: str, now: datetime) -> Select:
    """The feed rows ``append_rebuild_changes`` appends, by customer, then kind in the
    order of ``KINDS``. The reason names the settings and the new verdict's rule (empty
    when the row keeps no reasons)."""
    joined = after.outerjoin(before, before.c.customer_id == after.c.customer_id)
    prefix = literal(f"read model rebuilt with settings {version}: ", String)
    parts = [
        select(
            after.c.customer_id,
            literal(kind, String).label("kind"),
            before.c[kind].label("from_value"),
            after.c[kind].label("to_value"),
            literal(now, TIME).label("occurred_at"),
            literal(now, TIME).label("recorded_at"),
            (prefix + func.coalesce(after.c.reasons[(kind, "rule")].as_string(), "")).label(
                "reason"
            ),
            cast(null(), BigInteger).label("cause"),
            literal(order, Integer).label("kind_order"),
        )
        .select_from(joined)
        .where(after.c[kind].is_not(None), before.c[kind].is_distinct_from(after.c[kind]))
        for order, kind in enumerate(KINDS)
    ]
    changes = union_all(*parts).subquery()
    return select(*(changes.c[name] for name in COLUMNS)).order_by(
        changes.c.customer_id, changes.c.kind_order
    )
