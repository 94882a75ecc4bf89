"""Journey: an event-sourced customer-journey engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from journey.api import Journey


def connect(url: str | None = None, **options: Any) -> Journey:
    """Open the event store at ``url`` (default: $JOURNEY_DB_URL or sqlite:///journey.db)."""
    from journey.api import Journey

    return Journey(url, **options)


__all__ = ["connect"]
