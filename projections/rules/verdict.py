"""A classification with its reason: the value, the rule that holds, the events behind it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """``rule`` says in words (with the settings' numbers) why ``value`` holds; ``events``
    are the ids (``originator_version``) of the events that make it hold."""

    value: str
    rule: str
    events: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "rule": self.rule, "events": list(self.events)}
