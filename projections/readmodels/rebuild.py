"""Rebuilding a read model from the whole log while the current one keeps serving.

A rebuild fills a new generation: it walks the customers in id order, a chunk at a time,
folding each one's events up to the log head it started from, and writes each chunk with
the last customer done (so a crashed rebuild resumes after it). Then it catches up with
what was recorded meanwhile and switches the view in one transaction. Readers see the old
generation until that moment, the new one after it.
"""

from __future__ import annotations

from collections.abc import Callable

from projections.readmodels.runner import Runner, rows_for
from projections.readmodels.store import Generation, PositionMoved, ReadModelStore
from projections.readmodels.tables import CODE_VERSION

CHUNK = 1000

Progress = Callable[[int, int], None]


def rebuild(
    runner: Runner, name: str, on_progress: Progress | None = None, chunk: int = CHUNK
) -> Generation:
    """Build ``name`` anew and serve it; ``on_progress(done, total)`` counts events."""
    store, app = runner.store, runner.app
    with store.lock(f"rebuild:{name}"):
        generation = resumable(store, name, runner.settings.version) or store.start_build(
            name, head=app.max_notification_id(), settings=runner.settings
        )
        fold(runner, generation, chunk, on_progress)
        switch_when_caught_up(runner, name, generation)
    return runner.serving(name)


def switch_when_caught_up(runner: Runner, name: str, generation: Generation) -> None:
    """Catch the new generation up and switch to it; a runner still advancing the old one
    can move ahead in between, so catch up again until the switch accepts."""
    while True:
        runner.catch_up(name, generation)
        try:
            runner.store.switch(name, generation.generation)
            return
        except PositionMoved:
            continue


def resumable(store: ReadModelStore, name: str, settings_version: str) -> Generation | None:
    """An unfinished build made with the same settings and code, to go on with."""
    with store.engine.connect() as conn:
        found = store.building(conn, name)
    if found and found.settings_version == settings_version and found.code_version == CODE_VERSION:
        return found
    return None


def fold(runner: Runner, generation: Generation, chunk: int, on_progress: Progress | None) -> None:
    """Write every customer's rows up to the build head, a chunk of customers per transaction."""
    app, store, head = runner.app, runner.store, generation.build_head or 0
    ids = app.customer_ids(after=generation.build_cursor, up_to=head) if head else []
    total = app.count_customer_events(up_to=head) if on_progress else 0
    done = (
        total - app.count_customer_events(up_to=head, among_after=generation.build_cursor)
        if on_progress and generation.build_cursor
        else 0
    )
    now = runner.clock()
    for start in range(0, len(ids), chunk):
        customers = ids[start : start + chunk]
        streams = app.customer_streams(customers, up_to=head)
        rows = []
        for customer in customers:
            stream = streams[customer]
            rows += rows_for(
                generation.name, customer, stream, now, runner.settings, len(stream.events)
            )
            done += len(stream.events)
        last = start + chunk >= len(ids)
        store.write(
            generation.name,
            generation.generation,
            customers,
            rows,
            expected=generation.position,
            status="building",
            build_cursor=customers[-1],
            position=head if last else None,
        )
        if on_progress:
            on_progress(done, total)
    if not ids and generation.position < head:  # resumed after the fold: keep the catch-up
        store.write(
            generation.name,
            generation.generation,
            [],
            [],
            expected=generation.position,
            status="building",
            position=head,
        )
