"""Population questions answered from the serving read models.

The funnel at T is one range query on the timeline (the interval of each customer that
holds at T); the flow between T1 and T2 pairs each customer's interval at both moments;
RFM at T ranks every customer with a purchase at T, from the purchases model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, case, func, or_, select, type_coerce

from projections.readmodels.store import MODELS, ReadModelStore
from projections.readmodels.tables import MONEY, TIME
from projections.rules.rfm import Population, RfmInputs
from projections.rules.window import iso, whole_days
from projections.settings import Settings

STAGES = ("suspect", "prospect", "disqualified", "first_time", "repeat", "client", "advocate")
STATUSES = ("active", "at_risk", "lapsed", "left")
LEVELS = ("none", "basic", "reactive", "accountable", "proactive", "partnership")
NEW = "new"
CENT = Decimal("0.0001")


def view(store: ReadModelStore, name: str) -> Table:
    """The stable view of a read model, as a table to select from."""
    model = MODELS[name]
    key = f"view:{model.view}"
    if key not in store._tables:
        store._tables[key] = model.make_table(store._metadata, model.view)
    return store._tables[key]


def holding_at(timeline: Table, moment: datetime) -> Any:
    return and_(
        timeline.c.valid_from <= moment,
        or_(timeline.c.valid_to.is_(None), timeline.c.valid_to > moment),
    )


def funnel(store: ReadModelStore, as_of: datetime) -> dict[str, Any]:
    """How many customers are in each stage, status and level at ``as_of`` (among the
    customers that exist then). One statement, so one snapshot: three, while customers were
    being added, gave totals that disagreed."""
    timeline = view(store, "timeline")
    kinds = (
        ("stages", STAGES, timeline.c.loyalty_stage),
        ("statuses", STATUSES, timeline.c.status),
        ("levels", LEVELS, timeline.c.relationship_level),
    )
    columns = [column for _, _, column in kinds]
    answer: dict[str, Any] = {"as_of": iso(as_of)}
    answer.update({key: dict.fromkeys(values, 0) for key, values, _ in kinds})
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(*columns, func.count()).where(holding_at(timeline, as_of)).group_by(*columns)
        )
        for *state, count in rows:
            for (key, _, _), value in zip(kinds, state, strict=True):
                answer[key][value] = answer[key].get(value, 0) + count
    return answer


def flow(store: ReadModelStore, start: datetime, end: datetime) -> dict[str, Any]:
    """How many customers moved from each stage at ``start`` to each stage at ``end``
    (``new`` for those who did not exist yet at ``start``)."""
    before = view(store, "timeline").alias("before")
    after = view(store, "timeline").alias("after")
    query = (
        select(before.c.loyalty_stage, after.c.loyalty_stage, func.count())
        .select_from(
            after.outerjoin(
                before, and_(before.c.customer_id == after.c.customer_id, holding_at(before, start))
            )
        )
        .where(holding_at(after, end))
        .group_by(before.c.loyalty_stage, after.c.loyalty_stage)
    )
    moves: dict[str, dict[str, int]] = {}
    with store.engine.connect() as conn:
        for source, target, count in conn.execute(query):
            moves.setdefault(source or NEW, {})[target] = count
    return {"from": iso(start), "to": iso(end), "stages": moves}


def rfm_population(store: ReadModelStore, as_of: datetime, settings: Settings) -> Population:
    """RFM inputs of every customer with n ≥ 1 at ``as_of``: net each order by the refunds
    up to then, keep those not fully refunded, and count the recent ones."""
    purchases = view(store, "purchases")
    window_start = as_of - timedelta(days=settings.frequency_days)
    orders = (
        select(
            purchases.c.customer_id,
            func.min(case((purchases.c.is_refund.is_(False), purchases.c.occurred_at))).label("at"),
            # Rounded to the column's scale: SQLite keeps money as floats, and an order
            # refunded in parts (0.04 - 0.03 - 0.01) must net to exactly zero.
            func.round(func.sum(purchases.c.amount), 4).label("net"),
        )
        .where(purchases.c.occurred_at <= as_of)
        .group_by(purchases.c.customer_id, purchases.c.order_id)
        .subquery()
    )
    recent = orders.c.at > window_start
    query = (
        select(
            type_coerce(func.max(orders.c.at), TIME),
            func.sum(case((recent, 1), else_=0)),
            type_coerce(func.sum(case((recent, orders.c.net), else_=0)), MONEY),
        )
        .where(orders.c.net > 0, orders.c.at.is_not(None))
        .group_by(orders.c.customer_id)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    return Population(
        RfmInputs(whole_days(as_of - last), int(frequency), Decimal(monetary).quantize(CENT))
        for last, frequency, monetary in rows
    )
