"""What the rules look at: a customer's events up to T, grouped, and the purchases P.

``Facts.of(events, as_of, settings)`` is the one place events are filtered by valid time
and refunds are netted against their purchases, so every rule sees the same P.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from journey.events import CustomerEvent, Purchased, Refunded
from projections.rules.window import order_key, ordered, says_of_the_customer
from projections.settings import Settings

E = TypeVar("E", bound=CustomerEvent)


@dataclass(frozen=True, slots=True)
class Sale:
    """A purchase of P: its amount and margin net of the refunds up to T (worked out once,
    in ``sale``: every score and rule reads them)."""

    purchase: Purchased
    refunded: Decimal
    amount: Decimal  # what the customer paid and kept: the amount minus refunds
    margin: Decimal  # the margin (defaulted at read time) scaled down by the refunded share

    @property
    def originator_version(self) -> int:
        return self.purchase.originator_version

    @property
    def occurred_at(self) -> datetime:
        return self.purchase.occurred_at

    @property
    def category(self) -> str | None:
        return self.purchase.category


def sale(purchase: Purchased, refunded: Decimal, default_margin_rate: Decimal) -> Sale:
    full = purchase.margin
    if full is None:
        full = purchase.amount * default_margin_rate
    if not refunded:  # the whole margin (full * amount / amount would give it exactly)
        return Sale(purchase, refunded, purchase.amount, full)
    kept = purchase.amount - refunded
    return Sale(purchase, refunded, kept, full * kept / purchase.amount)


@dataclass
class Facts:
    """A customer's events with ``occurred_at <= as_of``, in DOMAIN order."""

    as_of: datetime
    settings: Settings
    events: list[CustomerEvent]
    purchases: list[Sale] = field(default_factory=list)
    _by_type: dict[Any, Sequence[CustomerEvent]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, events: Iterable[CustomerEvent], as_of: datetime, settings: Settings) -> Facts:
        # In UTC: "T - D days" in a zone with daylight saving is wall-clock arithmetic,
        # an hour off across a change of clocks.
        as_of = as_of if as_of.tzinfo is UTC else as_of.astimezone(UTC)
        counted = [e for e in ordered(events) if e.occurred_at <= as_of and says_of_the_customer(e)]
        return cls.of_ordered(counted, as_of, settings)

    @classmethod
    def of_ordered(cls, counted: list[CustomerEvent], as_of: datetime, settings: Settings) -> Facts:
        """``of`` for events already in DOMAIN order and none after ``as_of``, such as each
        prefix of an ordered history the timeline walks: not sorted and filtered again."""
        facts = cls(as_of, settings, counted)
        by_type: dict[type, list[CustomerEvent]] = defaultdict(list)
        for event in counted:
            by_type[type(event)].append(event)
        facts._by_type = dict(by_type)  # not a defaultdict: asking must not add types
        facts.purchases = sales(by_type[Purchased], by_type[Refunded], settings)
        return facts

    def at(self, moment: datetime) -> Facts:
        """The same events seen at a later ``moment``: equal to ``Facts.of(self.events,
        moment, ...)``, without filtering and grouping them again (every event already lies
        at or before ``moment``). What the search for time-driven changes asks many times."""
        assert moment >= self.as_of, "a moment before as_of could drop events"
        return Facts(moment, self.settings, self.events, self.purchases, self._by_type)

    def of_type(self, *classes: type[E]) -> Sequence[E]:
        """Events of the given classes, in DOMAIN order: grouped once for these events and
        shared by every ``at`` of them (the rules ask many times), so not to be changed."""
        key: Any = classes[0] if len(classes) == 1 else classes
        found = self._by_type.get(key)
        if found is None:
            if len(classes) == 1:
                return ()
            found = tuple(sorted((e for c in classes for e in self.of_type(c)), key=order_key))
            self._by_type[key] = found
        return found  # type: ignore[return-value]

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


def sales(
    purchases: Sequence[Purchased], refunds: Sequence[Refunded], settings: Settings
) -> list[Sale]:
    """P: the purchases not fully refunded, each net of its refunds."""
    refunded: dict[str, Decimal] = defaultdict(Decimal)
    for refund in refunds:
        refunded[refund.order_id] += refund.amount
    rate = settings.default_margin_rate
    return [
        sale(p, refunded[p.order_id], rate) for p in purchases if p.amount > refunded[p.order_id]
    ]
