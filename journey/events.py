"""The immutable facts of a customer's journey, as stored.

Each class is one event type of DOMAIN.md §2. Events are frozen dataclasses that the
eventsourcing mapper stores as JSON; their ``TYPE`` is the public name used in input files,
projections and reports, so a class may be renamed but a ``TYPE`` never changes.

Two clocks ride on every event: ``occurred_at`` (valid time, given by the caller) and
``timestamp`` (record time, set as the event's batch is prepared for the store, just before
it is stored: ``Customer.chain_pending``), exposed as ``recorded_at``. ``actor`` says who
recorded it.

Each event also carries ``content_hash`` and ``previous_hash``, the links of its
customer's hash chain (journey/integrity.py); events stored before the chain existed read
them as None.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from eventsourcing.domain import (
    CanCreateTimestamp,
    CanInitAggregate,
    CanMutateAggregate,
    MetaDomainEvent,
)

#: Fields every event has, which are not part of its payload.
ENVELOPE = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "occurred_at",
        "actor",
        "event_id",
        "originator_topic",
        "content_hash",
        "previous_hash",
    }
)


@dataclass(frozen=True)
class CustomerEvent(CanMutateAggregate[str], CanCreateTimestamp, metaclass=MetaDomainEvent):
    """Base of every customer event (string ids: the library's DomainEvent insists on UUIDs)."""

    TYPE: ClassVar[str] = ""

    originator_id: str
    originator_version: int
    timestamp: datetime
    occurred_at: datetime
    actor: str
    event_id: str | None
    #: The hash chain (journey/integrity.py): set by the aggregate as its batch is prepared
    #: for the store (``Customer.chain_pending``), with the recorded time.
    content_hash: str | None = field(default=None, kw_only=True)
    previous_hash: str | None = field(default=None, kw_only=True)

    @property
    def customer_id(self) -> str:
        return self.originator_id

    @property
    def recorded_at(self) -> datetime:
        return self.timestamp

    @property
    def version(self) -> int:
        return self.originator_version

    def payload(self) -> dict[str, Any]:
        """The type-specific fields, as given (defaults are applied by projections)."""
        return {f.name: getattr(self, f.name, None) for f in payload_fields(type(self))}

    def apply(self, aggregate: Any) -> None:
        aggregate.remember(self)


@dataclass(frozen=True)
class CustomerCreated(CanInitAggregate[str], CustomerEvent):
    originator_topic: str


@functools.cache
def payload_fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.name not in ENVELOPE)


@dataclass(frozen=True)
class Identified(CustomerCreated):
    """The firm learns the person exists; the first event of every customer."""

    TYPE: ClassVar[str] = "identified"
    source: str | None
    referred_by: str | None
    acquisition_cost: Decimal | None
    personal: dict[str, str] | None


@dataclass(frozen=True)
class Reidentified(CustomerEvent):
    """An `identified` fact about a customer the store already knows (e.g. after an
    implicit identification): same type and fields, but not the aggregate's creation."""

    TYPE: ClassVar[str] = "identified"
    source: str | None
    referred_by: str | None
    acquisition_cost: Decimal | None
    personal: dict[str, str] | None


@dataclass(frozen=True)
class Qualified(CustomerEvent):
    TYPE: ClassVar[str] = "qualified"
    note: str | None


@dataclass(frozen=True)
class Disqualified(CustomerEvent):
    TYPE: ClassVar[str] = "disqualified"
    reason: str


@dataclass(frozen=True)
class Contacted(CustomerEvent):
    """A contact between firm and customer.

    Version 2 added ``cost``; version 1 contacts were free, so upcasting sets it to None.
    """

    TYPE: ClassVar[str] = "contact"
    class_version: ClassVar[int] = 2
    channel: str
    direction: str
    purpose: str
    cost: Decimal | None
    personal: dict[str, str] | None

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        state["cost"] = None


@dataclass(frozen=True)
class Purchased(CustomerEvent):
    TYPE: ClassVar[str] = "purchase"
    order_id: str
    amount: Decimal
    category: str | None
    margin: Decimal | None

    def apply(self, aggregate: Any) -> None:
        super().apply(aggregate)
        aggregate.orders[self.order_id] = OrderState(self.occurred_at, self.amount)


@dataclass(frozen=True)
class Refunded(CustomerEvent):
    TYPE: ClassVar[str] = "refund"
    order_id: str
    amount: Decimal

    def apply(self, aggregate: Any) -> None:
        super().apply(aggregate)
        aggregate.orders[self.order_id].refunded += self.amount


@dataclass(frozen=True)
class Complained(CustomerEvent):
    TYPE: ClassVar[str] = "complaint"
    complaint_id: str
    topic: str
    severity: str

    def apply(self, aggregate: Any) -> None:
        super().apply(aggregate)
        aggregate.complaints[self.complaint_id] = self.occurred_at


@dataclass(frozen=True)
class ComplaintResolved(CustomerEvent):
    TYPE: ClassVar[str] = "complaint_resolved"
    complaint_id: str
    satisfied: bool
    cost: Decimal | None


@dataclass(frozen=True)
class Referred(CustomerEvent):
    TYPE: ClassVar[str] = "referral"
    referred_customer_id: str

    def apply(self, aggregate: Any) -> None:
        super().apply(aggregate)
        known = aggregate.referrals.get(self.referred_customer_id)
        if known is None or self.occurred_at < known:
            aggregate.referrals[self.referred_customer_id] = self.occurred_at


@dataclass(frozen=True)
class FeedbackGiven(CustomerEvent):
    TYPE: ClassVar[str] = "feedback"
    score: int


@dataclass(frozen=True)
class ManagerAssigned(CustomerEvent):
    TYPE: ClassVar[str] = "manager_assigned"
    manager: str


@dataclass(frozen=True)
class BenefitGranted(CustomerEvent):
    TYPE: ClassVar[str] = "benefit_granted"
    kind: str
    description: str | None


@dataclass(frozen=True)
class Left(CustomerEvent):
    TYPE: ClassVar[str] = "left"
    reason: str | None


@dataclass(frozen=True)
class ReferralConverted(CustomerEvent):
    """Recorded by the engine, never by a user: a customer this one referred has bought."""

    TYPE: ClassVar[str] = "referral_converted"
    referred_customer_id: str

    def apply(self, aggregate: Any) -> None:
        super().apply(aggregate)
        aggregate.converted.add(self.referred_customer_id)


@dataclass(frozen=True)
class Erased(CustomerEvent):
    """Recorded by `journey erase`, never accepted as input: the customer's personal data
    was made unreadable (its key destroyed). The rules ignore it; every other fact stays."""

    TYPE: ClassVar[str] = "erased"
    reason: str

    def apply(self, aggregate: Any) -> None:
        super().apply(aggregate)
        aggregate.forget_keys()


@dataclass
class OrderState:
    """What the aggregate must remember of an order to guard its refunds."""

    occurred_at: datetime
    amount: Decimal
    refunded: Decimal = Decimal(0)


#: The classes a user's input can become, by public type name.
USER_EVENT_CLASSES: dict[str, type[CustomerEvent]] = {
    cls.TYPE: cls
    for cls in (
        Identified,
        Qualified,
        Disqualified,
        Contacted,
        Purchased,
        Refunded,
        Complained,
        ComplaintResolved,
        Referred,
        FeedbackGiven,
        ManagerAssigned,
        BenefitGranted,
        Left,
    )
}

#: Every stored customer event class.
ALL_EVENT_CLASSES: tuple[type[CustomerEvent], ...] = (
    *USER_EVENT_CLASSES.values(),
    Reidentified,
    ReferralConverted,
    Erased,
)


def is_customer_event(event: object) -> bool:
    """An event of a customer: a customer event class on a customer id. Ids starting with
    ``~`` are the engine's own indexes (journey/referrals.py), which no customer id may
    start with: an event shaped like a customer's there is no customer's, and the log
    seal does not cover it, so no answer may count it."""
    return isinstance(event, CustomerEvent) and not event.originator_id.startswith("~")
