"""Computing a rebuild's rows on every core.

Folding a customer's history by the rules is pure CPU work, a chunk of customers at a
time, and the chunks do not depend on each other: worker processes (each with its own
connection to the event store) read, decode and fold chunks, while the rebuilding process
writes the rows they return, in order. Only the writer touches the read models, so what a
rebuild commits, and where it resumes after a crash, is the same as folding in-process.

Workers are started with "spawn" (a fresh interpreter: no connection or lock inherited from
a threaded server), which imports the main script again: a script that rebuilds must keep
its work under ``if __name__ == "__main__":``, as multiprocessing requires.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from multiprocessing import get_context
from typing import Any

from journey.application import JourneyApplication
from journey.collecting import collector_paused
from journey.storage import Database
from projections.readmodels.bulk import Prepared
from projections.readmodels.runner import rows_for
from projections.readmodels.store import ReadModelStore
from projections.settings import Settings

#: Below this many chunks a rebuild folds in its own process: starting the workers
#: (a fresh interpreter each) would cost more than they save.
PARALLEL_FROM_CHUNKS = 4

Rows = dict[str, Prepared]


@dataclass(frozen=True)
class Fold:
    """What folding a chunk needs, small enough to send to a worker with every chunk."""

    names: tuple[str, ...]
    head: int
    now: datetime
    settings: Settings

    def rows(
        self, app: JourneyApplication, store: ReadModelStore, customers: Sequence[str]
    ) -> tuple[Rows, int]:
        """Each read model's rows for ``customers`` up to the head, prepared for
        ``store``'s database, and how many events they were folded from. Every customer's
        events are read and decoded once."""
        with collector_paused():
            return self._rows(app, store, customers)

    def _rows(
        self, app: JourneyApplication, store: ReadModelStore, customers: Sequence[str]
    ) -> tuple[Rows, int]:
        streams = app.customer_streams(customers, up_to=self.head)
        rows = {
            name: store.prepare(
                name,
                [
                    row
                    for customer in customers
                    for row in rows_for(
                        name,
                        customer,
                        streams[customer],
                        self.now,
                        self.settings,
                        len(streams[customer].events),
                    )
                ],
            )
            for name in self.names
        }
        return rows, sum(len(stream.events) for stream in streams.values())


def folded(
    fold: Fold,
    app: JourneyApplication,
    store: ReadModelStore,
    chunks: Sequence[Sequence[str]],
    workers: int = 1,
) -> Iterator[tuple[Rows, int]]:
    """``fold.rows`` of each chunk, in order: in up to ``workers`` processes when there
    are enough chunks, else here with ``app`` and ``store``."""
    workers = min(workers, len(chunks))
    # An in-memory store cannot be opened by another process.
    if workers < 2 or len(chunks) < PARALLEL_FROM_CHUNKS or app.database.in_memory:
        yield from (fold.rows(app, store, customers) for customers in chunks)
        return
    executor = ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=start_worker,
        initargs=(app.database, os.getpid()),
    )
    try:
        yield from in_order(executor, partial(fold_in_worker, fold), chunks, ahead=2 * workers)
    finally:
        executor.shutdown(cancel_futures=True)


def in_order(
    executor: ProcessPoolExecutor, task: Any, items: Iterable[Any], ahead: int
) -> Iterator[Any]:
    """``executor.map``, but with at most ``ahead`` results waiting: the writer may be
    slower than the workers, and a whole log's rows must not pile up in memory."""
    pending: deque[Future[Any]] = deque()
    for item in items:
        pending.append(executor.submit(task, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# -- in a worker process -----------------------------------------------------------------

_app: JourneyApplication | None = None
_store: ReadModelStore | None = None


def start_worker(database: Database, parent: int) -> None:
    """Open the event store once per worker (and the read models' engine, connected
    once so that its dialect converts values as the writer's does), and end the worker
    with its parent: a rebuild killed mid-fold must leave no process behind (an idle
    worker would otherwise wait for its next chunk forever)."""
    global _app, _store
    _app = JourneyApplication(database)
    _store = ReadModelStore(database)
    with _store.engine.connect():
        pass
    threading.Thread(target=exit_with, args=(parent,), daemon=True).start()


def exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def fold_in_worker(fold: Fold, customers: Sequence[str]) -> tuple[Rows, int]:
    assert _app is not None and _store is not None, "start_worker opens the stores"
    return fold.rows(_app, _store, customers)
