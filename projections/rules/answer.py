"""One customer's answer at a moment: stage, status, level, scores and their reasons."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from journey.events import CustomerEvent
from projections.rules.facts import Facts
from projections.rules.level import relationship_level
from projections.rules.scores import DAY_COUNTERS, value_scores
from projections.rules.stage import loyalty_stage
from projections.rules.status import status
from projections.rules.verdict import Verdict
from projections.rules.window import iso
from projections.settings import DEFAULT, Settings

CLASSIFICATIONS = ("loyalty_stage", "status", "relationship_level")


@dataclass(frozen=True)
class Answer:
    customer_id: str
    as_of: datetime
    settings_version: str
    loyalty_stage: Verdict
    status: Verdict
    relationship_level: Verdict
    scores: dict[str, Any]
    known_at: datetime | None = field(default=None, compare=False)

    def verdicts(self) -> dict[str, Verdict]:
        return {name: getattr(self, name) for name in CLASSIFICATIONS}

    def state(self) -> tuple[Any, ...]:
        """What "the state changed" means: the classifications and every score but the
        day counters (which move every day) and RFM (which depends on others)."""
        moving = tuple(
            (k, v) for k, v in self.scores.items() if k not in DAY_COUNTERS and k != "rfm"
        )
        return (*(v.value for v in self.verdicts().values()), moving)

    def as_dict(self) -> dict[str, Any]:
        """The public JSON shape of issue 3 (money as decimal strings, times ISO UTC)."""
        return {
            "customer_id": self.customer_id,
            "as_of": iso(self.as_of),
            "known_at": iso(self.known_at),
            "settings_version": self.settings_version,
            **{name: v.value for name, v in self.verdicts().items()},
            "scores": {k: jsonable(v) for k, v in self.scores.items()},
            "reasons": {
                name: {"rule": v.rule, "events": list(v.events)}
                for name, v in self.verdicts().items()
            },
        }


def evaluate(
    events: Iterable[CustomerEvent], as_of: datetime, settings: Settings = DEFAULT
) -> Answer | None:
    """The answer at ``as_of`` from a customer's events (any order; later ones are ignored),
    or None when the customer does not exist yet at that moment."""
    facts = Facts.of(events, as_of, settings)
    return answer_from(facts)


def verdicts_from(facts: Facts) -> dict[str, Verdict]:
    """The classifications alone, with their reasons (what the feed announces)."""
    return {
        "loyalty_stage": loyalty_stage(facts),
        "status": status(facts),
        "relationship_level": relationship_level(facts),
    }


def answer_from(facts: Facts) -> Answer | None:
    if not facts.events:
        return None
    return Answer(
        customer_id=facts.events[0].originator_id,
        as_of=facts.as_of,
        settings_version=facts.settings.version,
        loyalty_stage=loyalty_stage(facts),
        status=status(facts),
        relationship_level=relationship_level(facts),
        scores=value_scores(facts),
    )


def money_text(value: Decimal) -> str:
    """A decimal in its shortest exact spelling, never in exponent form."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def jsonable(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
