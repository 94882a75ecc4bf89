"""How fast the read models rebuild from the whole log, beside what the log can give.

    .venv/bin/python bench/rebuild_speed.py [--events N] [--customers N] [--db sqlite|postgres|both]
    .venv/bin/python bench/rebuild_speed.py --events 100000 --customers 10000   # quick

The default (1,000,000 events) takes several minutes after a load of about as long.

Loads N sample events (journey.sample, through ``record_many`` in batches; the load is not
measured) into a fresh SQLite file or PostgreSQL schema, then measures, each in a fresh
subprocess so that its peak memory (VmHWM: the RSS high-water mark of the whole process,
interpreter and imports included) is its own:

* rebuild: ``projections.readmodels.rebuild.rebuild_many`` of summary, timeline and
  purchases together through ``ReadModels`` (one walk through the log for the three, folded
  by a worker process per core); its peak memory adds the workers' (an upper bound);
* ceiling: reading every notification with ``recorder.select_notifications`` in large pages
  and decoding each with ``mapper.to_domain_event``, and nothing else;
* stock runner: an eventsourcing ``Projection`` that counts each customer's events in a
  ``TrackingRecorder`` view, one transaction per event, run on a slice of the log and
  scaled. It is fed by polling ``select_notifications`` (the SQLite recorder cannot
  subscribe; on PostgreSQL a ``ProjectionRunner`` over this view hung waiting on its
  subscription here, not yet understood), calling ``process_event`` per event as the
  runner's processing loop does.

Targets (issue 4): rebuild ≥ 0.5x the ceiling and ≥ 30x the stock runner, peak memory
under 1 GiB. Events per second count every notification of the log.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection
from eventsourcing.sqlite import SQLiteTrackingRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import Row, write_rows  # bench/results.py
from stores import fresh_store  # bench/stores.py

from journey.api import Journey
from journey.application import JourneyApplication
from journey.collecting import collector_paused
from journey.sample import sample
from journey.storage import Database
from projections.readmodels.operate import ReadModels
from projections.readmodels.rebuild import rebuild_many
from projections.readmodels.store import MODELS
from projections.settings import DEFAULT

LOAD_BATCH = 50_000
PAGE = 10_000
TARGET_CEILING, TARGET_STOCK, TARGET_MEMORY = 0.5, 30.0, 1024**3


# -- the measurements, each run in its own process -------------------------------------------


def measure_rebuild(url: str) -> dict[str, Any]:
    """Rebuild every read model together (one walk through the log); seconds."""
    models = ReadModels.open(url, DEFAULT)
    try:
        started = time.perf_counter()
        rebuild_many(models.runner, list(MODELS), workers=os.cpu_count() or 1)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "per_model": {"all, one walk": seconds}}
    finally:
        models.close()


@collector_paused()  # as the rebuild's fold: neither side pays for the collector
def measure_ceiling(url: str) -> dict[str, Any]:
    """Read and decode the whole log in large pages: what any reader of it must pay."""
    app = JourneyApplication(Database.parse(url))
    try:
        started = time.perf_counter()
        after, count = 0, 0
        while page := app.recorder.select_notifications(after, PAGE, inclusive_of_start=False):
            for notification in page:
                app.mapper.to_domain_event(notification)
            count += len(page)
            after = page[-1].id
        return {"seconds": time.perf_counter() - started, "events": count}
    finally:
        app.close()


class SQLiteCounts(SQLiteTrackingRecorder):
    """The stock runner's view on SQLite: events per customer, tracked."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS bench_counts "
            "(customer_id TEXT PRIMARY KEY, events INTEGER NOT NULL)",
        ]

    def count(self, customer_id: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT INTO bench_counts VALUES (?, 1) "
                "ON CONFLICT (customer_id) DO UPDATE SET events = events + 1",
                (customer_id,),
            )
            self._insert_tracking(c, tracking)


class PostgresCounts(PostgresTrackingRecorder):
    """The stock runner's view on PostgreSQL: events per customer, tracked."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.table = f'"{self.datastore.schema}".bench_counts'
        self.sql_create_statements.append(
            SQL(  # type: ignore[arg-type]
                f"CREATE TABLE IF NOT EXISTS {self.table} "
                "(customer_id text PRIMARY KEY, events integer NOT NULL)"
            )
        )

    def count(self, customer_id: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                f"INSERT INTO {self.table} VALUES (%s, 1) "  # type: ignore[arg-type]
                "ON CONFLICT (customer_id) DO UPDATE SET events = bench_counts.events + 1",
                (customer_id,),
            )
            self._insert_tracking(curs, tracking)


class EventCounts(Projection[Any]):
    """A stock projection: one view transaction per event."""

    name = "bench_counts"

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.count(str(domain_event.originator_id), tracking)


def measure_stock(url: str, slice_: int) -> dict[str, Any]:
    """Seconds for the stock projection to process the first ``slice_`` notifications."""
    database = Database.parse(url)
    app = JourneyApplication(database)
    try:
        last = app.select_notifications(0, slice_)[-1].id
        count = len(app.select_notifications(0, slice_))
    finally:
        app.close()
    seconds = stock_polling(database, last)
    return {"seconds": seconds, "events": count}


@collector_paused()
def stock_polling(database: Database, last: int) -> float:
    """What ProjectionRunner's processing loop does (process_event per event), fed by
    polling instead of a subscription."""
    app = JourneyApplication(database)
    env = database.eventsourcing_env()
    if not database.is_postgres:
        env["SQLITE_DBNAME"] = f"{database.sqlite_path}.counts"
    factory = InfrastructureFactory.construct(env=Environment(EventCounts.name, env))
    view = factory.tracking_recorder(PostgresCounts if database.is_postgres else SQLiteCounts)
    projection = EventCounts(view=view)
    try:
        started = time.perf_counter()
        after = view.max_tracking_id(app.name) or 0
        while after < last:
            for notification in app.select_notifications(after, 100):
                if notification.id > last:
                    break
                event = app.mapper.to_domain_event(notification)
                projection.process_event(event, Tracking(app.name, notification.id))
                after = notification.id
        return time.perf_counter() - started
    finally:
        app.close()


def measured(kind: str, url: str, slice_: int) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its figures and peak RSS in bytes."""
    command = [sys.executable, __file__, "--measure", kind, "--url", url, "--slice", str(slice_)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the {kind} measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_one(kind: str, url: str, slice_: int) -> None:
    figures = {
        "rebuild": lambda: measure_rebuild(url),
        "ceiling": lambda: measure_ceiling(url),
        "stock": lambda: measure_stock(url, slice_),
    }[kind]()
    figures["peak_rss"] = peak_rss()
    if kind == "rebuild":
        figures["peak_rss_self"] = figures["peak_rss"]
        figures["peak_rss"] += workers_peak_rss()
    print(json.dumps(figures))


def workers_peak_rss() -> int:
    """What the rebuild's worker processes (one per core, if it started any) held at most:
    the largest finished child's ru_maxrss times the cores. An overestimate (Linux carries
    ru_maxrss over from the parent across fork and exec), so the total errs high."""
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return largest * (os.cpu_count() or 1) if largest else 0


def peak_rss() -> int:
    """This process's RSS high-water mark in bytes. VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over from the parent across fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- loading and reporting ---------------------------------------------------------------------


def load(url: str, events: int, customers: int, seed: int, console: Console) -> int:
    """Store the sample; returns how many notifications the log holds."""
    started = time.perf_counter()
    records = sample(customers, events=events, seed=seed)
    with Journey(url, actor="bench") as engine:
        while batch := list(islice(records, LOAD_BATCH)):
            outcome = engine.record_many(batch)
            if outcome.rejected:
                raise SystemExit(f"the sample was rejected: {outcome.rejected[0].as_dict()}")
        head = engine.app.count_after(0)
    console.print(f"loaded {head:,} notifications in {time.perf_counter() - started:.0f} s")
    return head


@dataclass
class Result:
    db: str
    events: int
    rebuild: dict[str, Any]
    ceiling: dict[str, Any]
    stock: dict[str, Any]

    def rate(self, kind: str) -> float:
        figures = getattr(self, kind)
        return figures.get("events", self.events) / figures["seconds"]


def measure(db: str, args: argparse.Namespace, work: Path, console: Console) -> Result:
    with fresh_store(db, work) as url:
        events = load(url, args.events, args.customers, args.seed, console)
        figures = {kind: measured(kind, url, args.slice) for kind in ("ceiling", "stock")}
        figures["rebuild"] = measured("rebuild", url, args.slice)
        console.print(f"{db}: {json.dumps(figures)}")
        return Result(db, events, **figures)


def report(results: list[Result], args: argparse.Namespace, console: Console) -> None:
    table = Table(
        title=f"rebuild of all read models, {args.events:,} events over "
        f"{args.customers:,} customers (events/s; peak RSS)"
    )
    for column in (
        "database",
        "rebuild",
        "ceiling",
        "stock runner*",
        f"x ceiling (≥ {TARGET_CEILING})",
        f"x stock (≥ {TARGET_STOCK:g})",
        "peak rebuild (< 1 GiB)",
        "peak ceiling",
        "peak stock",
    ):
        table.add_column(column, justify="right")
    for r in results:
        rebuild_rate = r.rate("rebuild")
        table.add_row(
            r.db,
            f"{rebuild_rate:,.0f}",
            f"{r.rate('ceiling'):,.0f}",
            f"{r.rate('stock'):,.0f}",
            verdict(rebuild_rate / r.rate("ceiling"), TARGET_CEILING),
            verdict(rebuild_rate / r.rate("stock"), TARGET_STOCK),
            memory(r.rebuild["peak_rss"], TARGET_MEMORY),
            memory(r.ceiling["peak_rss"]),
            memory(r.stock["peak_rss"]),
        )
    console.print(table)
    for r in results:
        parts = ", ".join(f"{name} {s:.1f} s" for name, s in r.rebuild["per_model"].items())
        console.print(f"{r.db}: {r.events:,} notifications; rebuild {parts}")
    console.print(
        f"* stock runner measured on the first {args.slice:,} notifications, one transaction "
        "each; its events/s is assumed to hold for the whole log. Peak memory is VmHWM of "
        "a fresh process per measurement; the rebuild's adds its worker processes' (an "
        "upper bound: largest worker x cores)."
    )


def verdict(ratio: float, target: float) -> str:
    colour = "green" if ratio >= target else "red"
    return f"[{colour}]{ratio:.2f}x[/{colour}]"


def memory(size: int, limit: int | None = None) -> str:
    text = f"{size / 1024**2:,.0f} MiB"
    if limit is None:
        return text
    colour = "green" if size < limit else "red"
    return f"[{colour}]{text}[/{colour}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--customers", type=int, default=100_000, help="over this many customers")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--slice", type=int, default=20_000, help="events for the stock runner")
    parser.add_argument("--seed", type=int, default=0, help="of the sample")
    kinds = ["rebuild", "ceiling", "stock"]
    parser.add_argument("--measure", choices=kinds, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help="append the figures as JSON lines (bench/results.py)")
    args = parser.parse_args(argv)
    if args.measure:
        run_one(args.measure, args.url, args.slice)
        return
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as tmp:
        dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
        results = [measure(db, args, Path(tmp), console) for db in dbs]
        report(results, args, console)
    write_rows(args.json_out, rows(results))


def rows(results: list[Result]) -> list[Row]:
    """The figures for bench/run_all.py's report."""
    found = []
    for r in results:
        common = {
            "benchmark": "rebuild",
            "db": r.db,
            "figure_name": f"rebuild of all read models, {r.events:,} notifications",
            "figure": r.rate("rebuild"),
            "unit": "events/s",
            "note": f"peak RSS {r.rebuild['peak_rss'] / 1024**2:,.0f} MiB (target < 1 GiB)",
        }
        found.append(
            Row(
                **common,
                baseline_name="decode ceiling (select_notifications)",
                baseline=r.rate("ceiling"),
                target=TARGET_CEILING,
            )
        )
        found.append(
            Row(
                **common,
                baseline_name="stock Projection, one transaction per event, polled (scaled)",
                baseline=r.rate("stock"),
                target=TARGET_STOCK,
            )
        )
    return found


if __name__ == "__main__":
    main()
