"""Keeping read models up to date: follow the log and apply it a page at a time.

Each page's touched customers are recomputed from their streams (up to the page's last
position) and their rows written with the page's last position in one transaction: after a
crash the runner resumes from the last committed position, so no event is applied twice
and none is skipped. The summary also changes with no new event (a customer lapses): rows
whose ``refresh_at`` has come are recomputed on every pass.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from journey.application import JourneyApplication, Stream
from journey.moments import utc_now
from projections.readmodels.entries import page_entries, refresh_entries
from projections.readmodels.rows import purchase_rows, summary_row, timeline_rows
from projections.readmodels.store import (
    MODELS,
    Generation,
    PositionMoved,
    ReadModelStore,
    check_writable,
)
from projections.settings import Settings

PAGE = 2000
REFRESH_BATCH = 2000

Progress = Callable[[int], None]


class Stopped(Exception):
    """The runner was asked to stop: it leaves after the page it is writing."""


class Runner:
    """Applies the log to read models."""

    def __init__(
        self,
        app: JourneyApplication,
        store: ReadModelStore,
        settings: Settings,
        *,
        page: int = PAGE,
        clock: Callable[[], datetime] = utc_now,
        first_rules: Callable[[], Settings] | None = None,
    ):
        """``first_rules``: the rules of a new store's first generations, when they are
        not ``settings`` (operate.ReadModels.open)."""
        self.app = app
        self.store = store
        self.settings = settings
        self.page = page
        self.clock = clock
        store.ensure(first_rules or settings)

    def serving(self, name: str) -> Generation:
        with self.store.engine.connect() as conn:
            generation = self.store.serving(conn, name)
        assert generation is not None, "ensure() creates a serving generation"
        return generation

    def catch_up(
        self,
        name: str,
        generation: Generation | None = None,
        on_progress: Progress | None = None,
        check: Callable[[], None] | None = None,
        now: datetime | None = None,
    ) -> int:
        """Apply every notification after the generation's position; returns how many.
        ``check`` runs before each page is written (see ``run``); ``now``, the moment the
        rows are computed at (default: the clock, page by page)."""
        applied = 0
        while True:
            if check:
                check()
            current = generation or self.serving(name)
            if generation is not None:
                current = self.reload(generation)
            try:
                with self.retired_meanwhile(current):
                    count = self.apply_page(name, current, now)
            except PositionMoved:
                continue  # another writer applied that page: read on from where it got
            if not count:
                return applied
            applied += count
            if on_progress:
                on_progress(count)

    def apply_page(self, name: str, generation: Generation, now: datetime | None = None) -> int:
        check_writable(generation)
        notifications = self.app.select_notifications(generation.position, self.page)
        if not notifications:
            return 0
        last = notifications[-1].id
        touched = Counter(
            n.originator_id for n in notifications if not n.originator_id.startswith("~")
        )
        customers = sorted(touched)
        streams = self.app.customer_streams(customers, up_to=last)
        summary = name == "summary"
        previous = (
            self.store.previous_summaries(generation.generation, customers) if summary else {}
        )
        announce = summary and generation.status == "serving"
        rows: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        now = now or self.clock()
        rules = generation.rules()
        for customer in customers:
            stream, before = streams[customer], previous.get(customer)
            applied = (before.applied_events if before else 0) + touched[customer]
            new_rows = rows_for(name, customer, stream, now, rules, applied)
            if announce:
                since = before.last_position if before else 0
                entries += page_entries(customer, before, stream, since, rules, now)
            rows += new_rows
        self.store.write(
            name,
            generation.generation,
            customers,
            rows,
            expected=generation.position,
            status=generation.status,
            position=last,
            entries=entries,
            # a refresh (moving no position) of a row read above: its change announced
            computed={customer: row.computed_at for customer, row in previous.items()},
        )
        return len(notifications)

    def refresh_due(self, generation: Generation | None = None, now: datetime | None = None) -> int:
        """Recompute the summary rows whose time-driven change has come (of the serving
        generation, announcing each change, unless given another); how many were due."""
        generation = generation or self.serving("summary")
        check_writable(generation)
        now = now or self.clock()
        try:
            with self.retired_meanwhile(generation):
                due = self.store.due_for_refresh(generation.generation, now, REFRESH_BATCH)
                if not due:
                    return 0
                streams = self.app.customer_streams(due, up_to=generation.position)
                previous = self.store.previous_summaries(generation.generation, due)
        except PositionMoved:
            return 1  # the caller asks again, of the generation serving now
        rows: list[dict[str, Any]] = []
        entries: list[dict[str, Any]] = []
        rules = generation.rules()
        serving = generation.status == "serving"
        # A row written since the generation was read (its stream not yet here) is left to
        # the next pass: the write below is refused anyway, the position having moved.
        done = [c for c in due if c in streams and c in previous]
        for customer in done:
            stream, before = streams[customer], previous[customer]
            rows += rows_for("summary", customer, stream, now, rules, before.applied_events)
            if serving:
                entries += refresh_entries(customer, before, stream, rules, now)
        try:
            self.store.write(
                "summary",
                generation.generation,
                done,
                rows,
                expected=generation.position,
                status=generation.status,
                entries=entries,
                computed={customer: previous[customer].computed_at for customer in done},
            )
        except PositionMoved:
            return 1  # new events arrived, or another runner refreshed: the caller asks again
        return len(due)

    def run(
        self,
        names: Sequence[str],
        stop: threading.Event,
        wait: Callable[[float], None] | None = None,
        poll_seconds: float = 1.0,
        on_pass: Callable[[dict[str, int]], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        """Keep ``names`` up to date until ``stop`` is set (heard between pages: each is
        its own transaction, so a runner stopped midway resumes where it left); ``wait``
        blocks until the log may have grown (LISTEN/NOTIFY) or the poll interval passes.
        ``check`` runs before each page and each batch of refreshes is written, and raises
        if this runner lost its right to write (its locks): a backlog is many pages."""
        pause = wait or stop.wait

        def checked() -> None:  # a stop is heard between pages, not after a whole backlog
            if stop.is_set():
                raise Stopped
            if check:  # may change ``names`` (operate.HeldLocks): each pass reads it afresh
                check()

        stopped = False
        while not stopped and not stop.is_set():
            done = Counter(dict.fromkeys(names, 0))  # what the pass wrote, stopped or not
            try:
                checked()
                for name in list(names):
                    self.catch_up(name, check=checked, on_progress=counting(done, name))
                while "summary" in names:
                    checked()
                    if not (refreshed := self.refresh_due()):
                        break
                    done["refreshed"] += refreshed
            except Stopped:
                stopped = True
            if on_pass:
                on_pass(dict(done))
            if not stopped and not done.total():
                pause(poll_seconds)

    @contextmanager
    def retired_meanwhile(self, generation: Generation) -> Iterator[None]:
        """A rebuild's switch may drop ``generation``'s tables between the moment it was
        read and a query of them: that is PositionMoved (read the serving one again), not
        a lost database (the runner reconnected, and said so)."""
        try:
            yield
        except SQLAlchemyError:
            try:
                self.reload(generation)
            except LookupError:
                raise PositionMoved(f"{generation.name} generation was retired") from None
            raise

    def reload(self, generation: Generation) -> Generation:
        """``generation`` as it stands now (its position moves as it is written)."""
        for found in self.store.all_generations():
            if (found.name, found.generation) == (generation.name, generation.generation):
                return found
        raise LookupError(f"generation {generation.generation} of {generation.name} is gone")


def counting(done: Counter[str], name: str) -> Progress:
    def count(applied: int) -> None:
        done[name] += applied

    return count


def rows_for(
    name: str, customer: str, stream: Stream, now: datetime, settings: Settings, applied: int
) -> list[dict[str, Any]]:
    """The rows of read model ``name`` for one customer's stream."""
    if name == "summary":
        row = summary_row(customer, stream.events, now, settings)
        return [{**row, "last_position": stream.positions[-1], "applied_events": applied}]
    if name == "timeline":
        return timeline_rows(customer, stream.events, settings)
    if name == "purchases":
        return purchase_rows(customer, stream.events)
    raise KeyError(f"no read model {name!r}; expected one of {', '.join(MODELS)}")
