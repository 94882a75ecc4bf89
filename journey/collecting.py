"""Pausing Python's cyclic garbage collector over a batch that only allocates.

A bulk import keeps every input, command and aggregate alive until it is saved, so each
full collection rescanned all of them and freed nothing: a quarter of the time of a
100,000-event import went there. Folding a chunk of customers creates hundreds of
thousands of small objects (events, facts, rows) and no reference cycles worth finding;
the collector, triggered by the allocations alone, kept traversing them all and cost an
eighth of the fold. Reference counting still frees everything as usual; a cycle made
meanwhile waits for the next collection after the pause.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block. The collector is enabled again afterwards
    only if this block disabled it, so overlapping pauses (threads) leave it enabled, and
    a program that disabled it itself keeps it so."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
