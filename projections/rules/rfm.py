"""RFM: each customer's quintile among all customers with a purchase at T.

A score is ``ceil(5 * k / N)`` (at least 1), where N is the population size and k the
number of customers whose value is no better than this one's: the best get 5, ties share
a score, and a population of one scores 5 on every axis. Recency: fewer days is better;
frequency and monetary: more is better.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from projections.rules.answer import Answer

QUINTILES = 5


@dataclass(frozen=True)
class RfmInputs:
    recency_days: int
    frequency: int
    monetary: Decimal

    @classmethod
    def of(cls, answer: Answer) -> RfmInputs | None:
        """What RFM ranks of an answer; None when the customer has no purchase."""
        scores = answer.scores
        if not scores["purchases"]:
            return None
        return cls(scores["recency_days"], scores["frequency_365d"], scores["monetary_365d"])


class Population:
    """The sorted values of every customer with n ≥ 1 at one moment."""

    def __init__(self, members: Iterable[RfmInputs]):
        self.members = list(members)
        members = self.members
        self.size = len(members)
        self.recency = sorted(m.recency_days for m in members)
        self.frequency = sorted(m.frequency for m in members)
        self.monetary = sorted(m.monetary for m in members)

    def scores(self, mine: RfmInputs) -> dict[str, int]:
        if self.size == 0:
            raise ValueError("RFM needs a population that includes the customer")
        no_better_recency = self.size - bisect_left(self.recency, mine.recency_days)
        return {
            "r": quintile(no_better_recency, self.size),
            "f": quintile(bisect_right(self.frequency, mine.frequency), self.size),
            "m": quintile(bisect_right(self.monetary, mine.monetary), self.size),
        }


def quintile(no_better: int, size: int) -> int:
    return max(1, -(-QUINTILES * no_better // size))
