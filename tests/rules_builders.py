"""Building customer histories for rule tests: real event classes, no store.

``Story`` numbers events in recording order (``originator_version``) and stamps each with
a record time; ``at(days)`` is a moment counted in days from a fixed start.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from journey.events import (
    BenefitGranted,
    Complained,
    ComplaintResolved,
    Contacted,
    CustomerEvent,
    Disqualified,
    FeedbackGiven,
    Identified,
    Left,
    ManagerAssigned,
    Purchased,
    Qualified,
    ReferralConverted,
    Referred,
    Refunded,
)
from projections.rules import Answer, evaluate
from projections.settings import DEFAULT, Settings

START = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def at(days: float) -> datetime:
    return START + timedelta(days=days)


class Story:
    """One customer's events, appended in recording order."""

    def __init__(self, customer_id: str = "c-1", first: float = 0, **identity: Any):
        self.customer_id = customer_id
        self.events: list[CustomerEvent] = []
        self.recorded = datetime(2030, 1, 1, tzinfo=UTC)
        self.orders = 0
        self.add(Identified, first, originator_topic="journey.customer:Customer", **identity)

    def add(self, cls: type[CustomerEvent], when: float | datetime, **fields: Any) -> CustomerEvent:
        self.recorded += timedelta(seconds=1)
        values = {f.name: None for f in dataclasses.fields(cls)}
        values.update(
            originator_id=self.customer_id,
            originator_version=len(self.events) + 1,
            timestamp=fields.pop("recorded_at", self.recorded),
            occurred_at=when if isinstance(when, datetime) else at(when),
            actor="tester",
            **fields,
        )
        event = cls(**values)
        self.events.append(event)
        return event

    def purchase(self, when: float, amount: str = "100", **fields: Any) -> Purchased:
        self.orders += 1
        fields.setdefault("order_id", f"o-{self.orders}")
        return self.add(Purchased, when, amount=Decimal(amount), **fields)

    def refund(self, when: float, order_id: str, amount: str) -> Refunded:
        return self.add(Refunded, when, order_id=order_id, amount=Decimal(amount))

    def contact(self, when: float, direction: str, purpose: str, **fields: Any) -> Contacted:
        fields.setdefault("channel", "email")
        return self.add(Contacted, when, direction=direction, purpose=purpose, **fields)

    def qualified(self, when: float) -> Qualified:
        return self.add(Qualified, when)

    def disqualified(self, when: float) -> Disqualified:
        return self.add(Disqualified, when, reason="no budget")

    def left(self, when: float) -> Left:
        return self.add(Left, when)

    def converted(self, when: float, referred: str = "c-9") -> ReferralConverted:
        return self.add(ReferralConverted, when, referred_customer_id=referred)

    def referral(self, when: float, referred: str = "c-9") -> Referred:
        return self.add(Referred, when, referred_customer_id=referred)

    def manager(self, when: float) -> ManagerAssigned:
        return self.add(ManagerAssigned, when, manager="ann")

    def benefit(self, when: float, kind: str) -> BenefitGranted:
        return self.add(BenefitGranted, when, kind=kind)

    def complaint(self, when: float, complaint_id: str = "k-1") -> Complained:
        return self.add(Complained, when, complaint_id=complaint_id, topic="service",
                        severity="low")

    def resolved(self, when: float, satisfied: bool, complaint_id: str = "k-1", **kw: Any):
        return self.add(ComplaintResolved, when, complaint_id=complaint_id,
                        satisfied=satisfied, **kw)

    def feedback(self, when: float, score: int) -> FeedbackGiven:
        return self.add(FeedbackGiven, when, score=score)

    def answer(self, when: float | datetime, settings: Settings = DEFAULT) -> Answer:
        moment = when if isinstance(when, datetime) else at(when)
        found = evaluate(self.events, moment, settings)
        assert found is not None
        return found

    def stage(self, when: float | datetime) -> str:
        return self.answer(when).loyalty_stage.value

    def status(self, when: float | datetime) -> str:
        return self.answer(when).status.value

    def level(self, when: float | datetime) -> str:
        return self.answer(when).relationship_level.value


def client_story(**identity: Any) -> Story:
    """A client from day 180: four purchases in two categories, two of them recent."""
    story = Story(**identity)
    story.purchase(0, category="books")
    story.purchase(60, category="books")
    story.purchase(120, category="music")
    story.purchase(170, category="music")
    return story
