"""Helpers for the read-model tests (issue 4): opening a store with a runner on a fixed
clock, loading samples, reading rows through the views, and a small runner script that
tests start as a subprocess and SIGKILL.

Expected values are computed here from the event store itself (notifications, PointInTime),
never from what the read models return.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from journey.api import Journey
from journey.sample import sample
from projections.readmodels.queries import view
from projections.readmodels.runner import Runner
from projections.readmodels.store import ReadModelStore
from projections.settings import DEFAULT, Settings

ROOT = Path(__file__).resolve().parent.parent
#: Shortly after journey.sample.REFERENCE: every sampled event lies in the past.
NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)

SUMMARY_VOLATILE = ("computed_at", "refresh_at")


def fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


@dataclass
class Models:
    """An event store, its read models and a runner on a clock of the test's choosing."""

    journey: Journey
    store: ReadModelStore
    runner: Runner

    def close(self) -> None:
        self.store.close()
        self.journey.close()


@contextmanager
def models(
    url: str,
    settings: Settings = DEFAULT,
    clock: Callable[[], datetime] | None = None,
    page: int = 2000,
) -> Iterator[Models]:
    journey = Journey(url, actor="tester", clock=clock or fixed(NOW))
    store = ReadModelStore(journey.database)
    try:
        runner = Runner(journey.app, store, settings, page=page, clock=clock or fixed(NOW))
        yield Models(journey, store, runner)
    finally:
        store.close()
        journey.close()


def records(customers: int, seed: int, events: int | None = None) -> list[dict[str, Any]]:
    return list(sample(customers, events=events, seed=seed))


def record_all(journey: Journey, items: Iterable[dict[str, Any]]) -> list[int]:
    outcome = journey.record_many(list(items))
    assert not outcome.rejected, outcome.rejected[:3]
    return list(outcome.positions)


# -- reading the read models ----------------------------------------------------------------


def normal(value: Any) -> Any:
    """A value in a form that compares equal across databases (SQLite keeps money as a float)."""
    if isinstance(value, Decimal | float) and not isinstance(value, bool):
        return Decimal(str(value)).quantize(Decimal("0.0001"))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def view_rows(store: ReadModelStore, name: str, drop: Iterable[str] = ()) -> list[tuple]:
    """Every row readers see through the stable view, minus ``drop``, sorted."""
    table = view(store, name)
    columns = [c for c in table.c if c.name not in set(drop)]
    with store.engine.connect() as conn:
        rows = conn.execute(select(*columns)).all()
    return sorted((tuple(normal(v) for v in row) for row in rows), key=repr)


def summary_rows(store: ReadModelStore) -> list[tuple]:
    return view_rows(store, "summary", SUMMARY_VOLATILE)


def all_rows(store: ReadModelStore) -> dict[str, list[tuple]]:
    return {
        "summary": summary_rows(store),
        "timeline": view_rows(store, "timeline"),
        "purchases": view_rows(store, "purchases", ("id",)),
    }


def summary_counts(store: ReadModelStore) -> dict[str, tuple[int, int]]:
    table = view(store, "summary")
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(table.c.customer_id, table.c.applied_events, table.c.last_position)
        ).all()
    return {r.customer_id: (r.applied_events, r.last_position) for r in rows}


def serving(store: ReadModelStore, name: str):
    with store.engine.connect() as conn:
        return store.serving(conn, name)


def building(store: ReadModelStore, name: str):
    with store.engine.connect() as conn:
        return store.building(conn, name)


# -- what the log says ------------------------------------------------------------------------


def log_counts(journey: Journey, up_to: int) -> dict[str, tuple[int, int]]:
    """For each customer, how many of its events lie at or before ``up_to`` and the last
    one's position: read straight from the notification log."""
    counts: Counter[str] = Counter()
    last: dict[str, int] = {}
    after = 0
    while page := journey.app.select_notifications(after, 5000):
        for n in page:
            if n.id <= up_to and not n.originator_id.startswith("~"):
                counts[n.originator_id] += 1
                last[n.originator_id] = n.id
        after = page[-1].id
    return {c: (counts[c], last[c]) for c in counts}


def customer_ids(journey: Journey) -> list[str]:
    return sorted(log_counts(journey, journey.app.max_notification_id()))


# -- subprocesses -----------------------------------------------------------------------------

#: A runner (or a rebuild) as its own process, on a fixed clock, with small pages so a
#: SIGKILL lands between and inside many transactions.
SCRIPT = r"""
import sys, threading, time
from contextlib import ExitStack
from datetime import datetime
from journey.api import Journey
from projections.readmodels.store import LockBusy, ReadModelStore
from projections.readmodels.runner import Runner
from projections.readmodels.rebuild import rebuild
from projections.settings import load_settings

url, action, name, now, page, chunk, settings, pause, workers = sys.argv[1:]
moment = datetime.fromisoformat(now)
engine = Journey(url)
store = ReadModelStore(engine.database)
runner = Runner(engine.app, store, load_settings(settings or None), page=int(page),
                clock=lambda: moment)
if action == "run":
    names = name.split(",")
    deadline = time.monotonic() + 20
    while True:  # the killed runner's PostgreSQL session may take a moment to go away
        try:
            with ExitStack() as locks:
                for one in names:
                    locks.enter_context(store.lock("run:" + one))
                print("running", flush=True)
                runner.run(names, threading.Event(), poll_seconds=0.05)
        except LockBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
elif action == "rebuild":
    def progress(done, total):
        print("progress", done, total, flush=True)
        time.sleep(float(pause))
    generation = rebuild(
        runner, name, on_progress=progress, chunk=int(chunk), workers=int(workers)
    )
    print("done", generation.generation, flush=True)
"""


def start_script(
    url: str,
    action: str,
    name: str,
    *,
    now: datetime = NOW,
    page: int = 2000,
    chunk: int = 1000,
    settings: str = "",
    pause: float = 0.0,
    env: dict[str, str] | None = None,
    workers: int = 1,
) -> subprocess.Popen:
    """The script in a process group of its own (its worker processes join it)."""
    args = [url, action, name, now.isoformat(), str(page), str(chunk), settings, str(pause),
            str(workers)]
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def group_left(process: subprocess.Popen, seconds: float = 10) -> list[int]:
    """Processes still in the killed ``process``'s group after ``seconds`` at most."""
    deadline = time.monotonic() + seconds
    while True:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == process.pid and fields[0] != "Z":
                left.append(int(stat.parent.name))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


JOURNEY = str(Path(sys.executable).with_name("journey"))


def cli(
    *args: str, timeout: float = 120, drop_env: Iterable[str] = ()
) -> subprocess.CompletedProcess:
    """The installed ``journey`` entry point as its own process."""
    env = {k: v for k, v in os.environ.items() if k not in set(drop_env)}
    return subprocess.run(
        [JOURNEY, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def contacts(ids: Iterable[str], when: str = "2025-06-15T09:00:00Z") -> list[dict[str, Any]]:
    """One inbound inquiry per id: more events for customers that may already exist."""
    return [
        {
            "type": "contact",
            "customer_id": c,
            "occurred_at": when,
            "channel": "email",
            "direction": "inbound",
            "purpose": "inquiry",
        }
        for c in ids
    ]


def assert_feed_consistent(store: ReadModelStore) -> int:
    """Every customer's feed entries, kind by kind, chain from nothing to the summary's
    current value: each entry's ``from`` is the previous entry's ``to``, and no entry
    repeats a value. A change announced twice, or one lost, breaks the chain. Returns the
    number of entries checked."""
    from projections.feed import KINDS, Feed

    entries = Feed(store).read(after=0, limit=10**9)
    positions = [e.position for e in entries]
    assert positions == sorted(set(positions)), "feed positions must strictly increase"
    last: dict[tuple[str, str], str | None] = {}
    for entry in entries:
        key = (entry.customer_id, entry.kind)
        assert entry.from_value == last.get(key), (entry, last.get(key))
        assert entry.to_value != entry.from_value, entry
        last[key] = entry.to_value
    current = {row[0]: row for row in view_rows(store, "summary")}
    summary = view(store, "summary")
    columns = [c.name for c in summary.columns]
    for customer, row in current.items():
        for kind in KINDS:
            value = row[columns.index(kind)]
            if value is not None:
                assert last.get((customer, kind)) == value, (customer, kind, value)
    return len(entries)
