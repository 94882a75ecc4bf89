"""`journey load-cdnow`: load the CDNOW purchase log and show what the engine makes of it."""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlalchemy import func, select

from journey.api import Journey
from journey.cdnow import LAST_DAY, CdnowError, Conversion, fetch, purchases, quarter_ends
from journey.cli.app import Options, app
from journey.cli.output import REJECTED, USAGE, emit_json, err, fail, out, reporting
from journey.cli.projections import rebuild_with_progress
from journey.cli.store import refuse_if_others
from projections.readmodels.operate import ReadModels
from projections.readmodels.queries import funnel, rfm_population, view
from projections.readmodels.store import MODELS
from projections.settings import DEFAULT

BATCH = 20_000


@app.command("load-cdnow")
def load_cdnow(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            metavar="PATH",
            help="CDNOW_master.txt; default: fetched from the lifetimes wheel.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N lines.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    into_existing: Annotated[
        bool,
        typer.Option(
            "--into-existing", help="Load into a store that already holds other customers."
        ),
    ] = False,
) -> None:
    """Load the CDNOW purchase log, rebuild the read models, print the funnel at the end of
    each quarter and the RFM distribution on the last day. Only into a store holding no
    other customers, unless asked (loading again is a no-op)."""
    options: Options = ctx.obj
    try:
        path = fetch(file)
    except CdnowError as exc:
        fail(str(exc), as_json=as_json, code=USAGE)
    conversion = Conversion()
    try:  # the whole file is read first: a bad line stores nothing
        records = list(purchases(path, limit, conversion))
    except CdnowError as exc:
        fail(str(exc), as_json=as_json, code=REJECTED)
    models = ReadModels.open(options.db, DEFAULT)
    with closing(models), reporting(as_json):
        journey = Journey(app=models.app, actor=options.actor)
        if not into_existing:
            refuse_if_others(journey, "cdnow-", "load-cdnow stores CDNOW's customers", as_json)
        stored = load(journey, records)
        rebuild_with_progress(models, list(MODELS))
        quarters = [
            (label, funnel(models.store, end))
            for label, end in quarter_ends(datetime_of_first(models), LAST_DAY)
        ]
        rfm = rfm_distribution(models)
    result = {
        "file": str(path),
        "lines": conversion.lines,
        "purchases": conversion.purchases,
        "skipped": [{"line": n, "reason": r} for n, r in conversion.skipped],
        "stored": stored,
        "quarters": {label: answer for label, answer in quarters},
        "rfm": rfm,
    }
    if as_json:
        emit_json(result)
    else:
        print_result(result)


def load(journey: Journey, records: Any) -> int:
    """Record the purchases in large batches (each validated whole)."""
    stored, batch = 0, []
    for record in records:
        batch.append(record)
        if len(batch) >= BATCH:
            stored += record_batch(journey, batch)
            batch = []
    if batch:
        stored += record_batch(journey, batch)
    return stored


def record_batch(journey: Journey, batch: list[dict[str, Any]]) -> int:
    outcome = journey.record_many(batch)
    if outcome.rejected:
        first = outcome.rejected[0]
        raw = first.raw if isinstance(first.raw, dict) else {}
        line = str(raw.get("order_id", "?")).removeprefix("cdnow-")
        reasons = "; ".join(f"{e.field}: {e.reason}" for e in first.errors)
        raise CdnowError(f"line {line}: refused as a purchase: {reasons}")
    new = len(batch) - outcome.duplicates  # a reload records none: it must not say it did
    err.print(f"recorded {new} new purchases ({outcome.duplicates} already stored)")
    return outcome.stored


def datetime_of_first(models: ReadModels) -> datetime:
    """When the first stored purchase happened: where the quarters start."""
    purchases_view = view(models.store, "purchases")
    with models.store.engine.connect() as conn:
        first = conn.execute(select(func.min(purchases_view.c.occurred_at))).scalar()
    return first or LAST_DAY


def rfm_distribution(models: ReadModels) -> dict[str, dict[str, int]]:
    """How many customers have each R, F and M score on the last day of the data."""
    population = rfm_population(models.store, LAST_DAY, DEFAULT)
    counts: dict[str, Counter[int]] = {"r": Counter(), "f": Counter(), "m": Counter()}
    for member in population.members:
        for axis, score in population.scores(member).items():
            counts[axis][score] += 1
    return {axis: {str(s): counts[axis][s] for s in range(1, 6)} for axis in counts}


def print_result(result: dict[str, Any]) -> None:
    skipped = len(result["skipped"])
    out.print(
        f"{result['file']}: {result['lines']} lines, {result['purchases']} purchases "
        f"({skipped} lines worth $0.00 skipped), {result['stored']} events stored"
    )
    quarters = result["quarters"]
    table = Table("at the end of", *quarters, title="funnel")
    for key in ("stages", "statuses"):
        for value in next(iter(quarters.values()))[key]:
            table.add_row(value, *(str(answer[key][value]) for answer in quarters.values()))
        table.add_section()
    out.print(table)
    rfm = Table("score", "R", "F", "M", title=f"RFM on {LAST_DAY.date()}")
    for score in map(str, range(1, 6)):
        rfm.add_row(score, *(str(result["rfm"][axis][score]) for axis in "rfm"))
    out.print(rfm)
