"""The read-model tables, one set per generation, and the state that says which serves.

Readers use the stable names (``customer_summary``, ``customer_timeline``,
``customer_purchases``): views over the serving generation's tables. A rebuild fills the
next generation's tables, then repoints the views in one transaction, so a reader sees the
old generation or the new one, never a mixture.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator):
    """A moment stored in UTC and read back with its zone, on every database (SQLite keeps
    no zone: without this, +01:00 and Z times would sort by their wall clocks)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not UTC:  # most moments already are UTC: skip the conversion
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


MONEY = Numeric(24, 4)
TIME = UTCDateTime()


state_metadata = MetaData()

#: One row per (read model, generation): its progress through the log and how it was built.
generations = Table(
    "journey_generations",
    state_metadata,
    Column("name", String(32), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # building | serving | retired
    Column("position", BigInteger, nullable=False),  # last notification applied
    Column("build_head", BigInteger),  # the log head a rebuild folds up to
    Column("build_cursor", String(80)),  # the last customer a rebuild has written
    Column("settings_version", String(32), nullable=False),
    Column("settings", JSON, nullable=False),  # the thresholds its rows were computed with
    Column("code_version", String(16), nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
)


#: The change feed: every change of a customer's stage, status or level, in the order the
#: summary runner found them. Positions only grow; rebuilds never rewrite it.
feed = Table(
    "journey_feed",
    state_metadata,
    Column(
        "position",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("customer_id", String(64), nullable=False),
    Column("kind", String(24), nullable=False),  # loyalty_stage | status | relationship_level
    Column("from_value", String(16)),
    Column("to_value", String(16), nullable=False),
    Column("occurred_at", TIME, nullable=False),  # valid time of the change
    Column("recorded_at", TIME, nullable=False),  # when the feed learnt it
    Column("reason", Text, nullable=False),
    Column("cause", BigInteger),  # log position of the causing event; NULL if time-driven
    Index("journey_feed_customer", "customer_id", "position"),
)


#: Marks the indexes a generation being built does without: those readers use, and the
#: summary's ``refresh_at`` index, which the runner reads only on the serving generation
#: (a refresh of a generation still being built would scan it whole). A rebuild creates
#: them when it switches to its new generation, not before filling it (keeping them sorted
#: row by row cost more than building them at once); on SQLite that one transaction holds
#: the database's write lock while they are built. The indexes the writers look customers
#: up by stay.
AFTER_BUILD = {"after_build": True}


def deferred_indexes(table: Table) -> list[Index]:
    """The indexes of ``table`` that a generation being built does without."""
    return sorted(
        (index for index in table.indexes if index.info.get("after_build")),
        key=lambda index: str(index.name),
    )


def summary_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("customer_id", String(64), primary_key=True),
        Column("loyalty_stage", String(16)),
        Column("status", String(16)),
        Column("relationship_level", String(16)),
        Column("purchases", Integer),
        Column("revenue", MONEY),
        Column("margin", MONEY),
        Column("cost_to_serve", MONEY),
        Column("profit", MONEY),
        Column("profitable", Boolean),
        Column("first_purchase_at", TIME),
        Column("last_purchase_at", TIME),
        Column("recency_days", Integer),
        Column("tenure_days", Integer),
        Column("frequency_365d", Integer),
        Column("monetary_365d", MONEY),
        Column("nps_score", Integer),
        Column("nps_class", String(16)),
        Column("trust", Integer),
        Column("commitment", Integer),
        Column("involvement", Integer),
        Column("reasons", JSON),
        Column("settings_version", String(32)),
        Column("computed_at", TIME, nullable=False),
        Column("refresh_at", TIME, nullable=False),
        Column("last_position", BigInteger, nullable=False),
        Column("applied_events", Integer, nullable=False),
        Index(f"{name}_refresh", "refresh_at", info=AFTER_BUILD),
    )


def timeline_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("customer_id", String(64), primary_key=True),
        Column("valid_from", TIME, primary_key=True),
        Column("valid_to", TIME),
        Column("loyalty_stage", String(16), nullable=False),
        Column("status", String(16), nullable=False),
        Column("relationship_level", String(16), nullable=False),
        Index(f"{name}_span", "valid_from", "valid_to", info=AFTER_BUILD),
    )


def purchases_table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("customer_id", String(64), nullable=False),
        Column("order_id", String(128), nullable=False),
        Column("occurred_at", TIME, nullable=False),
        Column("amount", MONEY, nullable=False),
        Column("is_refund", Boolean, nullable=False),
        Index(f"{name}_customer", "customer_id"),
        Index(f"{name}_time", "occurred_at", info=AFTER_BUILD),
    )
