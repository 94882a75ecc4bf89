"""How fast `journey import` stores events, beside what plain eventsourcing can do.

    .venv/bin/python bench/import_speed.py [--events N] [--customers N] [--db sqlite|postgres|both]

Generates N sample events (journey.sample) to a JSONL file, then on each database measures:

* journey import: ``Journey.import_files`` in this process, the code path behind the CLI
  command: reading the file, validating every line, the aggregate's guards, the policies,
  batched saves;
* batched baseline: a plain eventsourcing application with a minimal aggregate, the same
  number of events per customer carrying the same fields, saved many aggregates per save();
* per-event baseline: the same application with one save() per event, measured on a slice
  and scaled (one transaction per event is too slow to run in full).

Targets (issue 2): journey import ≥ 0.8x the batched baseline and ≥ 10x the per-event one.
Each run uses a fresh SQLite file or a fresh PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import (
    BaseAggregate,
    CanCreateTimestamp,
    CanInitAggregate,
    CanMutateAggregate,
    MetaDomainEvent,
)
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import Row, write_rows  # bench/results.py
from stores import fresh_store  # bench/stores.py

from commands import handlers
from journey.api import Journey
from journey.application import JourneyApplication
from journey.collecting import collector_paused
from journey.sample import sample
from journey.storage import Database

BATCH_EVENTS = 5000
TARGET_BATCHED, TARGET_PER_EVENT = 0.8, 10.0


@dataclass(frozen=True)
class Noted(CanMutateAggregate[str], CanCreateTimestamp, metaclass=MetaDomainEvent):
    """The baseline's one event: an input record's fields, stored as they came."""

    originator_id: str
    originator_version: int
    timestamp: datetime
    fields: dict[str, Any]

    def apply(self, aggregate: Any) -> None:
        pass


@dataclass(frozen=True)
class Opened(CanInitAggregate[str], Noted):
    originator_topic: str


class Plain(BaseAggregate[str]):
    """The baseline's aggregate: no state, no guards."""

    @classmethod
    def open(cls, customer_id: str, fields: dict[str, Any]) -> Plain:
        return cls._create(Opened, id=customer_id, fields=fields)

    def note(self, fields: dict[str, Any]) -> None:
        self.trigger_event(Noted, fields=fields)


class PlainApplication(Application[str]):
    name = "Plain"


@collector_paused()  # as Journey's import: the baseline must not pay for what it does not
def batched_baseline(url: str, records: list[dict[str, Any]]) -> float:
    """Seconds to build every aggregate in memory and save them ~BATCH_EVENTS at a time."""
    app = open_plain(url)
    try:
        started = time.perf_counter()
        aggregates = list(build(records).values())
        batch: list[Plain] = []
        size = 0
        for aggregate in aggregates:
            batch.append(aggregate)
            size += len(aggregate.pending_events)
            if size >= BATCH_EVENTS:
                app.save(*batch)
                batch, size = [], 0
        if batch:
            app.save(*batch)
        return time.perf_counter() - started
    finally:
        app.close()


@collector_paused()
def per_event_baseline(url: str, records: list[dict[str, Any]]) -> float:
    """Seconds to store ``records`` with one save() (one transaction) per event."""
    app = open_plain(url)
    try:
        started = time.perf_counter()
        known: dict[str, Plain] = {}
        for record in records:
            customer_id, fields = split(record)
            aggregate = known.get(customer_id)
            if aggregate is None:
                aggregate = known[customer_id] = Plain.open(customer_id, fields)
            else:
                aggregate.note(fields)
            app.save(aggregate)
        return time.perf_counter() - started
    finally:
        app.close()


def build(records: list[dict[str, Any]]) -> dict[str, Plain]:
    aggregates: dict[str, Plain] = {}
    for record in records:
        customer_id, fields = split(record)
        if customer_id in aggregates:
            aggregates[customer_id].note(fields)
        else:
            aggregates[customer_id] = Plain.open(customer_id, fields)
    return aggregates


def split(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    fields = dict(record)
    return fields.pop("customer_id"), fields


def open_plain(url: str) -> PlainApplication:
    """The plain application, on the library's own recorder (Journey's sends new events to
    PostgreSQL in binary: journey/recorders.py)."""
    database = Database.parse(url)
    database.ensure_schema()
    env = database.eventsourcing_env()
    env.pop("APPLICATION_RECORDER_TOPIC", None)
    return PlainApplication(env=env)


def journey_import(url: str, path: Path) -> tuple[float, int, dict[str, float]]:
    """Seconds for ``Journey.import_files`` on the file, the events it stored, and the
    seconds of each phase (see ``phases``)."""
    with Journey(url, actor="bench") as engine, phases() as spent:
        started = time.perf_counter()
        outcome = engine.import_files([str(path)])
        seconds = time.perf_counter() - started
    if outcome.rejected:
        raise SystemExit(f"the sample was rejected: {outcome.rejected[0].as_dict()}")
    spent["read and validate"] = seconds - sum(spent.values())
    return seconds, outcome.stored, spent


@contextmanager
def phases() -> Iterator[dict[str, float]]:
    """Where an import's time goes: applying the commands to the aggregates (loading what
    the store knows of their customers, guards, idempotency keys, hashes, policies),
    storing (batches inserted with their seal rows), refreshing PostgreSQL's statistics
    after a bulk load; the rest is reading and validating the lines. Timed around a few
    calls per import, so the timing costs nothing measurable."""
    spent = {"aggregate": 0.0, "store": 0.0, "analyze": 0.0}
    apply_all, save = handlers.apply_all, handlers.UnitOfWork.save
    analyze = JourneyApplication.analyze

    def timing(phase: str, run: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return run(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - started

        return timed

    handlers.apply_all = timing("aggregate", apply_all)
    handlers.UnitOfWork.save = timing("store", save)
    JourneyApplication.analyze = timing("analyze", analyze)
    try:
        yield spent
    finally:
        handlers.apply_all, handlers.UnitOfWork.save = apply_all, save
        JourneyApplication.analyze = analyze


@dataclass
class Result:
    db: str
    journey: float  # events/s
    stored: int
    batched: float
    per_event: float
    #: µs per input event of each phase of the (best) import: ``phases``.
    micros: dict[str, float]

    def breakdown(self) -> str:
        """The import's phases beside the batched baseline's whole event, and what the
        import would come to without its aggregate: the floor of this design."""
        floor = self.micros["read and validate"] + self.micros["store"]
        whole = 1e6 / self.batched
        parts = ", ".join(f"{phase} {us:.0f}" for phase, us in self.micros.items())
        return (
            f"µs per event: {parts}; the batched baseline's whole event {whole:.0f}. "
            f"Reading, validating and storing alone: {whole / floor:.2f}x the baseline"
        )


def measure(
    db: str, path: Path, records: list[dict[str, Any]], slice_: int, work: Path, repeat: int
) -> Result:
    """Each run on a fresh store; the best of ``repeat`` runs, as other load only slows."""

    def timed(run: Callable[[str], Any]) -> Any:
        def once() -> Any:
            with fresh_store(db, work) as url:
                return run(url)

        return min((once() for _ in range(repeat)), key=seconds_of)

    n = len(records)
    seconds, stored, spent = timed(lambda url: journey_import(url, path))
    batched = timed(lambda url: batched_baseline(url, records))
    per_event = timed(lambda url: per_event_baseline(url, records[:slice_]))
    micros = {phase: s / n * 1e6 for phase, s in spent.items()}
    return Result(db, n / seconds, stored, n / batched, min(slice_, n) / per_event, micros)


def seconds_of(result: Any) -> float:
    """A run's seconds: the result itself, or its first item."""
    return result[0] if isinstance(result, tuple) else result


def report(
    results: list[Result], n: int, customers: int, slice_: int, repeat: int, console: Console
) -> None:
    best = f", best of {repeat} runs" if repeat > 1 else ""
    table = Table(title=f"{n:,} events over {customers:,} customers (events/s{best})")
    for column in (
        "database",
        "journey import",
        "batched baseline",
        "per-event baseline*",
        f"x batched (≥ {TARGET_BATCHED})",
        f"x per-event (≥ {TARGET_PER_EVENT:g})",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.db,
            f"{r.journey:,.0f}",
            f"{r.batched:,.0f}",
            f"{r.per_event:,.0f}",
            verdict(r.journey / r.batched, TARGET_BATCHED),
            verdict(r.journey / r.per_event, TARGET_PER_EVENT),
        )
    console.print(table)
    console.print(
        f"journey import = Journey.import_files in this process (read, validate, guards, "
        f"policies, save); it stored {', '.join(f'{r.stored:,} on {r.db}' for r in results)} "
        f"events (input + implicit identifications + referral conversions). The baselines "
        f"store the same records with no reading, validation or guards; all three run with "
        f"Python's cyclic garbage collector paused (journey.collecting), as an import does.\n"
        f"* per-event baseline measured on the first {min(slice_, n):,} events, one save() "
        f"each; its events/s is assumed to hold for all {n:,}."
    )
    for r in results:
        console.print(f"{r.db}: {r.breakdown()}")


def verdict(ratio: float, target: float) -> str:
    colour = "green" if ratio >= target else "red"
    return f"[{colour}]{ratio:.2f}x[/{colour}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="events to import")
    parser.add_argument("--customers", type=int, default=20_000, help="over this many customers")
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--slice", type=int, default=5000, help="events for the per-event run")
    parser.add_argument("--seed", type=int, default=0, help="of the sample")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the best counts")
    parser.add_argument("--json-out", help="append the figures as JSON lines (bench/results.py)")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "events.jsonl"
        started = time.perf_counter()
        with path.open("w", encoding="utf-8") as out:
            for record in sample(args.customers, events=args.events, seed=args.seed):
                out.write(json.dumps(record) + "\n")
        console.print(f"generated {path.name} in {time.perf_counter() - started:.1f} s")
        records = [json.loads(line) for line in path.open(encoding="utf-8")]
        dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
        results = [measure(db, path, records, args.slice, work, args.repeat) for db in dbs]
        report(results, len(records), args.customers, args.slice, args.repeat, console)
        write_rows(args.json_out, rows(results, len(records)))


def rows(results: list[Result], n: int) -> list[Row]:
    """The figures for bench/run_all.py's report."""
    found = []
    for r in results:
        common = {
            "benchmark": "import",
            "db": r.db,
            "figure_name": f"journey import of {n:,}",
            "figure": r.journey,
            "unit": "events/s",
        }
        found.append(
            Row(
                **common,
                baseline_name="batched eventsourcing saves",
                baseline=r.batched,
                target=TARGET_BATCHED,
                note=r.breakdown(),
            )
        )
        found.append(
            Row(
                **common,
                baseline_name="one save() per event",
                baseline=r.per_event,
                target=TARGET_PER_EVENT,
            )
        )
    return found


if __name__ == "__main__":
    main()
