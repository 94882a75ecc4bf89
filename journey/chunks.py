"""Asking the database about many ids: a bounded number in each statement."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Ids in one statement: within the oldest SQLite limit on parameters (999), and few enough
#: that one statement's rows stay small.
IDS_PER_STATEMENT = 500


def chunks(items: Sequence[T], size: int = IDS_PER_STATEMENT) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
