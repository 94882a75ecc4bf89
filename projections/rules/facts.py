"""What the rules look at: a customer's events up to T, grouped, and the purchases P.

``Facts.of(events, as_of, settings)`` is the one place events are filtered by valid time
and refunds are netted against their purchases, so every rule sees the same P.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from journey.events import CustomerEvent, Purchased, Refunded
from projections.rules.window import order_key, ordered
from projections.settings import Settings

E = TypeVar("E", bound=CustomerEvent)


@dataclass(frozen=True)
class Sale:
    """A purchase of P: its amount and margin net of the refunds up to T."""

    purchase: Purchased
    refunded: Decimal
    default_margin_rate: Decimal

    @property
    def originator_version(self) -> int:
        return self.purchase.originator_version

    @property
    def occurred_at(self) -> datetime:
        return self.purchase.occurred_at

    @property
    def category(self) -> str | None:
        return self.purchase.category

    @property
    def amount(self) -> Decimal:
        """What the customer paid and kept: the amount minus refunds."""
        return self.purchase.amount - self.refunded

    @property
    def margin(self) -> Decimal:
        """The margin (defaulted at read time) scaled down by the refunded share."""
        full = self.purchase.margin
        if full is None:
            full = self.purchase.amount * self.default_margin_rate
        return full * self.amount / self.purchase.amount


@dataclass
class Facts:
    """A customer's events with ``occurred_at <= as_of``, in DOMAIN order."""

    as_of: datetime
    settings: Settings
    events: list[CustomerEvent]
    purchases: list[Sale] = field(default_factory=list)
    _by_type: dict[type, list[CustomerEvent]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, events: Iterable[CustomerEvent], as_of: datetime, settings: Settings) -> Facts:
        counted = [e for e in ordered(events) if e.occurred_at <= as_of]
        return cls.of_ordered(counted, as_of, settings)

    @classmethod
    def of_ordered(cls, counted: list[CustomerEvent], as_of: datetime, settings: Settings) -> Facts:
        """``of`` for events already in DOMAIN order and none after ``as_of``, such as each
        prefix of an ordered history the timeline walks: not sorted and filtered again."""
        facts = cls(as_of, settings, counted)
        by_type: dict[type, list[CustomerEvent]] = defaultdict(list)
        for event in counted:
            by_type[type(event)].append(event)
        facts._by_type = by_type
        facts.purchases = sales(by_type[Purchased], by_type[Refunded], settings)
        return facts

    def at(self, moment: datetime) -> Facts:
        """The same events seen at a later ``moment``: equal to ``Facts.of(self.events,
        moment, ...)``, without filtering and grouping them again (every event already lies
        at or before ``moment``). What the search for time-driven changes asks many times."""
        assert moment >= self.as_of, "a moment before as_of could drop events"
        return Facts(moment, self.settings, self.events, self.purchases, self._by_type)

    def of_type(self, *classes: type[E]) -> list[E]:
        """Events of the given classes, in DOMAIN order."""
        if len(classes) == 1:
            return list(self._by_type.get(classes[0], ()))
        found = [e for c in classes for e in self._by_type.get(c, ())]
        return sorted(found, key=order_key)

    def recent(self, events: Iterable[E], days_setting: str) -> list[E]:
        """The events in the last D days, D being the named setting."""
        as_of = self.as_of
        start = as_of - self.settings.days(days_setting)
        return [e for e in events if start < e.occurred_at <= as_of]  # window.within, inlined

    @property
    def n(self) -> int:
        return len(self.purchases)

    @property
    def first_purchase(self) -> Sale | None:
        return self.purchases[0] if self.purchases else None

    @property
    def last_purchase(self) -> Sale | None:
        return self.purchases[-1] if self.purchases else None


def sales(purchases: list[Purchased], refunds: list[Refunded], settings: Settings) -> list[Sale]:
    """P: the purchases not fully refunded, each net of its refunds."""
    refunded: dict[str, Decimal] = defaultdict(Decimal)
    for refund in refunds:
        refunded[refund.order_id] += refund.amount
    found = (Sale(p, refunded[p.order_id], settings.default_margin_rate) for p in purchases)
    return [sale for sale in found if sale.amount > 0]
