"""Rebuilding a read model from the whole log while the current one keeps serving.

A rebuild fills a new generation: it walks the customers in id order, a chunk at a time,
folding each one's events up to the log head it started from, and writes each chunk with
the last customer done (so a crashed rebuild resumes after it). Then it catches up with
what was recorded meanwhile and switches the view in one transaction. Readers see the old
generation until that moment, the new one after it. Several read models rebuilt together
share the walk, so the log is read and decoded once for all of them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing

from projections.readmodels.bulk import Prepared
from projections.readmodels.parallel import Fold, folded
from projections.readmodels.runner import Runner
from projections.readmodels.store import (
    MODELS,
    Generation,
    PositionMoved,
    ReadersBusy,
    ReadModelStore,
)

CHUNK = 1000
#: Seconds between a switch that gave up on a long reader and its next try.
READERS_PAUSE = 1.0

log = logging.getLogger(__name__)

#: How far behind the log a serving summary may be for a rebuild's switch to catch it up
#: first (a few seconds of applying), so that those events' changes are announced with
#: their causes rather than as the new generation's.
REPLAY_LIMIT = 10_000

Progress = Callable[[int, int], None]


def rebuild(
    runner: Runner,
    name: str,
    on_progress: Progress | None = None,
    chunk: int = CHUNK,
    workers: int = 1,
) -> Generation:
    """Build ``name`` anew and serve it; ``on_progress(done, total)`` counts events."""
    return rebuild_many(runner, [name], on_progress, chunk, workers)[name]


def rebuild_many(
    runner: Runner,
    names: Sequence[str],
    on_progress: Progress | None = None,
    chunk: int = CHUNK,
    workers: int = 1,
) -> dict[str, Generation]:
    """Build each of ``names`` anew and serve it. Builds that fold up to the same head from
    the same cursor (all of them, unless one resumes) walk the log together: each
    customer's events are read and decoded once for all of them.

    ``workers`` above 1 folds in that many processes (parallel.py). The Python API folds
    in-process unless asked (the CLI asks for one per core), because workers are spawned:
    a script that asks for them must keep its work under ``if __name__ == "__main__":``,
    as multiprocessing requires."""
    store, app = runner.store, runner.app
    with ExitStack() as locks:
        for name in names:
            locks.enter_context(store.lock(f"rebuild:{name}"))
        head = app.max_notification_id()
        builds = [
            resumable(store, name, runner.settings.version)
            or store.start_build(name, head=head, settings=runner.settings)
            for name in names
        ]
        walks = Walks(on_progress) if on_progress else None
        for together in alike(builds):
            fold_together(runner, together, chunk, walks, workers)
            if walks:
                walks.next()
        for generation in builds:
            switch_when_caught_up(runner, generation.name, generation)
    return {name: runner.serving(name) for name in names}


class Walks:
    """One progress count over several walks through the log (builds resumed from other
    points walk apart): each walk's count goes on from those before it, never back."""

    def __init__(self, on_progress: Progress):
        self.on_progress = on_progress
        self.before = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.total = total
        self.on_progress(self.before + done, self.before + total)

    def next(self) -> None:
        self.before, self.total = self.before + self.total, 0


def alike(builds: Sequence[Generation]) -> list[list[Generation]]:
    """The builds grouped by where their folds start and end."""
    groups: dict[tuple[int | None, str | None], list[Generation]] = defaultdict(list)
    for generation in builds:
        groups[generation.build_head, generation.build_cursor].append(generation)
    return list(groups.values())


def switch_when_caught_up(runner: Runner, name: str, generation: Generation) -> None:
    """Catch the new generation up and switch to it; a runner still advancing the old one
    can move ahead in between, so catch up again until the switch accepts.

    The summary's switch announces what the new rules change, so both generations must
    first say the same of everything else. The serving one is refreshed, and caught up
    unless it is far behind (``REPLAY_LIMIT``; the empty first one too), its changes
    announced as a runner would; the new one, folded some time ago, is refreshed silently
    at the same moment. One far behind is not replayed event by event, which a rebuild is
    there to avoid: the switch announces the difference. The new generation's indexes are
    made first: a runner refreshing the serving one meanwhile would send the switch round
    again."""
    runner.store.finish_indexes(name, generation.generation, analyze=True)
    waited = False
    while True:
        now = runner.clock()
        in_step = False
        if name == "summary":
            position = runner.serving(name).position
            in_step = position > 0 and runner.app.count_after(position) <= REPLAY_LIMIT
            if in_step:  # at ``now`` too: a row computed later would refuse the switch
                runner.catch_up(name, now=now)
            while runner.refresh_due(now=now):
                pass
        runner.catch_up(name, generation, now=now)
        if name == "summary":
            while runner.refresh_due(runner.reload(generation), now=now):
                pass
        try:
            runner.store.switch(name, generation.generation, now, in_step=in_step)
            return
        except PositionMoved:
            continue
        except ReadersBusy:  # a long reader: let the readers queued behind the switch go
            if not waited:
                log.warning("the switch of %s waits for a long reader of it to finish", name)
            waited = True
            time.sleep(READERS_PAUSE)


def resumable(store: ReadModelStore, name: str, settings_version: str) -> Generation | None:
    """An unfinished build made with the same settings and code, to go on with."""
    with store.engine.connect() as conn:
        found = store.building(conn, name)
    same_code = found is not None and found.code_version == MODELS[name].code
    if found and found.settings_version == settings_version and same_code:
        return found
    return None


def fold(runner: Runner, generation: Generation, chunk: int, on_progress: Progress | None) -> None:
    """Write every customer's rows up to the build head, a chunk of customers per transaction."""
    fold_together(runner, [generation], chunk, on_progress, workers=1)


def fold_together(
    runner: Runner,
    builds: Sequence[Generation],
    chunk: int,
    on_progress: Progress | None,
    workers: int = 1,
) -> None:
    """``fold`` for builds with the same head and cursor, reading each chunk's streams once
    (on every core: see parallel.py); each build's rows go in its own transaction, with its
    own cursor."""
    app, first = runner.app, builds[0]
    head, cursor = first.build_head or 0, first.build_cursor
    ids = app.customer_ids(after=cursor, up_to=head) if head else []
    total = app.count_customer_events(up_to=head) if on_progress else 0
    done = (
        total - app.count_customer_events(up_to=head, among_after=cursor)
        if on_progress and cursor
        else 0
    )
    chunks = [ids[start : start + chunk] for start in range(0, len(ids), chunk)]
    if on_progress:  # the total at once, while the workers start
        on_progress(done, total)
    fold = Fold(tuple(g.name for g in builds), head, runner.clock(), runner.settings)
    with closing(folded(fold, app, runner.store, chunks, workers)) as results:  # stops any workers
        for index, (rows, events) in enumerate(results):
            last = index == len(chunks) - 1
            for generation in builds:
                rows_of = rows[generation.name]
                write_chunk(runner, generation, chunks[index], rows_of, head if last else None)
            done += events
            if on_progress:
                on_progress(done, total)
    for generation in builds:
        if not ids and generation.position < head:  # resumed after the fold: keep the catch-up
            write_chunk(runner, generation, [], Prepared((), []), head)


def write_chunk(
    runner: Runner,
    generation: Generation,
    customers: Sequence[str],
    rows: Prepared,
    position: int | None,
) -> None:
    """One chunk of a build's rows, with the last customer done as its cursor."""
    runner.store.write(
        generation.name,
        generation.generation,
        customers,
        rows,
        expected=generation.position,
        status="building",
        build_cursor=customers[-1] if customers else None,
        position=position,
    )
