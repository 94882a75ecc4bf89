"""RFM: each customer's quintile among all customers with a purchase at T.

A customer's rank is its average rank among those tied with it: w customers are worse
and e equal (itself included), so it stands at w + e/2 of the population's N. Its score is
``ceil(5 * (w + e/2) / N)`` (at least 1): distinct values fall in five equal groups, and a
tied block takes the score of the middle of the ranks it spans. (The top of the span, as
before, gave CDNOW's 65% who bought nothing in the last year F = 4 and M = 4, a
block of zeros scoring like the good customers; its bottom would give a whole
population of equals, or a population of one, the worst score.) Recency: fewer days is
better; frequency and monetary: more is better.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

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
        return {
            "r": self._score(self.recency, mine.recency_days, fewer_is_better=True),
            "f": self._score(self.frequency, mine.frequency),
            "m": self._score(self.monetary, mine.monetary),
        }

    def _score(self, values: list[Any], mine: Any, fewer_is_better: bool = False) -> int:
        below, up_to = bisect_left(values, mine), bisect_right(values, mine)
        worse = self.size - up_to if fewer_is_better else below
        return quintile(worse, up_to - below, self.size)


def quintile(worse: int, equal: int, size: int) -> int:
    """ceil(5 * (worse + equal / 2) / size), at least 1, in integers."""
    return max(1, -(-QUINTILES * (2 * worse + equal) // (2 * size)))
