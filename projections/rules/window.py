"""Time and order: which events count at a moment, and the windows rules look through.

DOMAIN.md §3 orders a customer's events by ``occurred_at``, ties broken by recording order
(the event's ``originator_version``, which is also its id in every answer). "The last D
days" at T is the half-open window (T - D days, T].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from journey.events import CustomerEvent, Erased
from journey.moments import iso, utc  # noqa: F401  (re-exported: the answers' spelling of time)

DAY = timedelta(days=1)

#: The smallest step of time: a rule that holds "more than D after x" first holds here
#: after ``x + D`` (datetimes have microsecond resolution).
JUST_AFTER = timedelta(microseconds=1)


#: The order of DOMAIN.md: valid time, then recording order for ties. An ``attrgetter``
#: (its tuple made in C) rather than a function: every fold sorts every history by it.
order_key: Callable[[Any], tuple[datetime, int]] = attrgetter("occurred_at", "originator_version")


def ordered(events: Iterable[CustomerEvent]) -> list[CustomerEvent]:
    return sorted(events, key=order_key)


def of_the_customer(events: Iterable[CustomerEvent]) -> list[CustomerEvent]:
    """The events that say something of the customer (``says_of_the_customer``)."""
    return [e for e in events if says_of_the_customer(e)]


def says_of_the_customer(event: CustomerEvent) -> bool:
    """All but an erasure, the firm's own bookkeeping, which the rules ignore and which
    must not make a customer exist from the moment it was done (one whose events all lay
    ahead counted from then on)."""
    return type(event) is not Erased


def known(events: Iterable[CustomerEvent], known_at: datetime) -> list[CustomerEvent]:
    """The events the firm had recorded at ``known_at``."""
    return [e for e in events if e.recorded_at <= known_at]


def within(moment: datetime, as_of: datetime, window: timedelta) -> bool:
    """Whether ``moment`` is in the last ``window`` before ``as_of``: (T - D, T]."""
    return as_of - window < moment <= as_of


def whole_days(delta: timedelta) -> int:
    return delta // DAY


def ids(events: Iterable[Any]) -> tuple[int, ...]:
    """The ids of events (or sales) as answers name them."""
    return tuple(sorted({e.originator_version for e in events}))
