"""Who referred a customer: the index the referral-conversion policy needs.

A `referral` event lives on the referrer's stream, but the purchase that converts it lives
on the referred customer's. This small aggregate, one per referred customer, lets the
write side find the referrers from the purchase without reading any read model.
Its id starts with ``~``, which no customer id may contain, so the two never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.domain import (
    BaseAggregate,
    CanCreateTimestamp,
    CanInitAggregate,
    CanMutateAggregate,
    MetaDomainEvent,
)

PREFIX = "~referrers/"


def index_id(referred_customer_id: str) -> str:
    return PREFIX + referred_customer_id


@dataclass(frozen=True)
class ReferrerNoted(CanMutateAggregate[str], CanCreateTimestamp, metaclass=MetaDomainEvent):
    originator_id: str
    originator_version: int
    timestamp: datetime
    referrer_id: str
    referred_at: datetime

    def apply(self, aggregate: Any) -> None:
        known = aggregate.referrers.get(self.referrer_id)
        if known is None or self.referred_at < known:
            aggregate.referrers[self.referrer_id] = self.referred_at


@dataclass(frozen=True)
class ReferrersOpened(CanInitAggregate[str], ReferrerNoted):
    originator_topic: str


class Referrers(BaseAggregate[str]):
    """The customers who referred one customer, each with their earliest referral time."""

    def __init__(self) -> None:
        self.referrers: dict[str, datetime] = {}

    @classmethod
    def open(cls, referred_customer_id: str, referrer_id: str, referred_at: datetime) -> Referrers:
        return cls._create(
            ReferrersOpened,
            id=index_id(referred_customer_id),
            referrer_id=referrer_id,
            referred_at=referred_at,
        )

    def note(self, referrer_id: str, referred_at: datetime) -> None:
        known = self.referrers.get(referrer_id)
        if known is None or referred_at < known:
            self.trigger_event(ReferrerNoted, referrer_id=referrer_id, referred_at=referred_at)
