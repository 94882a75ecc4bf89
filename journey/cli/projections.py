"""Operators' commands: `projections run|status|rebuild` and the `funnel`."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import closing
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from journey.cli.app import Options, app
from journey.cli.output import USAGE, emit_json, err, fail, out, reporting
from journey.cli.query import SettingsPath, moments
from journey.cli.store import must_exist
from journey.storage import Database, StorageError
from projections.readmodels.operate import (
    LOCK_WAIT,
    UPGRADE,
    ReadModels,
    model_names,
    run_supervised,
    settings_changed,
    stale_reasons,
)
from projections.readmodels.queries import flow, funnel
from projections.readmodels.rebuild import rebuild_many
from projections.readmodels.store import MODELS, Generation, LockBusy, NewerCode, newer_code
from projections.settings import Settings, SettingsError, load_settings

CORES = os.cpu_count() or 1
#: The width a table is laid out in when it is not shown on a terminal (piped, redirected).
PIPED_WIDTH = 200

projections = typer.Typer(
    help="Read models: keep them up to date, watch them, rebuild them.", no_args_is_help=True
)
app.add_typer(projections, name="projections")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Names = Annotated[
    list[str] | None,
    typer.Argument(metavar="[NAME...]", help=f"Read models ({', '.join(MODELS)}); default all."),
]


def settings_or_fail(path: str | None, as_json: bool) -> Settings:
    try:
        return load_settings(path)
    except SettingsError as exc:
        fail(str(exc), as_json=as_json, code=USAGE)


def open_models(
    ctx: typer.Context,
    settings: Settings,
    as_json: bool,
    existing: bool = True,
    sets_rules: bool = True,
) -> ReadModels:
    """The read models of ``--db``'s store; ``existing``: only a store Journey has used
    (a runner may start before the first event; status, rebuild, funnel may not);
    ``sets_rules``: see ``ReadModels.open`` (runners and rebuilds do, queries not)."""
    options: Options = ctx.obj
    try:
        if existing:
            must_exist(options.db)
        return ReadModels.open(options.db, settings, sets_rules=sets_rules)
    except (StorageError, SettingsError) as exc:  # $JOURNEY_SETTINGS, for a new store's rules
        fail(str(exc), as_json=as_json, code=USAGE)


def names_or_fail(names: list[str] | None, as_json: bool) -> list[str]:
    try:
        return model_names(names)
    except ValueError as exc:
        fail(str(exc), as_json=as_json, code=USAGE)


@projections.command("run")
def run(
    ctx: typer.Context,
    names: Names = None,
    settings: SettingsPath = None,
    once: Annotated[bool, typer.Option("--once", help="Catch up, then exit.")] = False,
    poll: Annotated[
        float,
        typer.Option(
            "--poll",
            min=0.01,
            metavar="SECONDS",
            help="How often to look for new events (SQLite; PostgreSQL is woken).",
        ),
    ] = 0.25,
    lock_wait: Annotated[
        float,
        typer.Option(
            "--lock-wait",
            min=0,
            metavar="SECONDS",
            help="How long to wait for a read model's lock (a reader may be catching it up) "
            "before giving up: another runner has it.",
        ),
    ] = LOCK_WAIT,
) -> None:
    """Keep read models up to date: LISTEN/NOTIFY on PostgreSQL, polling on SQLite."""
    chosen = names_or_fail(names, False)
    rules = settings_or_fail(settings, False)
    options: Options = ctx.obj
    if once:
        with closing(open_models(ctx, rules, False, existing=False)) as models, reporting(False):
            warn_stale(models, chosen, rules)
            left = models.catch_up_each(chosen, lock_wait)
        done = [name for name in chosen if name not in left]
        if done:
            out.print(f"caught up: {', '.join(done)}")
        held = [name for name, why in left.items() if isinstance(why, LockBusy)]
        problems = [str(why) for why in left.values() if isinstance(why, NewerCode)]
        if held:
            them = "them" if len(held) > 1 else "it"
            also = f"another runner holds {', '.join(held)}; it keeps {them} up to date"
            problems.insert(0, also)
        if problems and not done:
            fail("; ".join(problems), as_json=False)
        for problem in problems:
            err.print(problem)
        if any(isinstance(why, NewerCode) for why in left.values()):
            raise typer.Exit(1)
        return
    try:  # out of reach at the start is a mistyped URL more likely than an outage
        Database.parse(options.db).check_reachable()
    except StorageError as exc:
        fail(str(exc), as_json=False, code=USAGE)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def report(done: dict[str, int]) -> None:
        if any(done.values()):
            err.print(", ".join(f"{name} +{count}" for name, count in done.items() if count))

    try:
        run_supervised(
            options.db,
            rules,
            chosen,
            stop,
            on_pass=report,
            poll_seconds=poll,
            lock_wait=lock_wait,
            on_open=lambda models: warn_stale(models, chosen, rules),
            on_start=lambda held: err.print(f"keeping {', '.join(held)} up to date (Ctrl-C stops)"),
        )
    except (LockBusy, NewerCode) as exc:
        fail(str(exc), as_json=False)


def warn_stale(models: ReadModels, names: list[str], rules: Settings) -> None:
    """A runner applies each generation's own settings, and its own code: say what it
    does when either differs from what the generation was built with."""
    for name in names:
        generation = models.runner.serving(name)
        if not (reasons := stale_reasons(generation, rules)):
            continue
        if newer_code(generation):
            err.print(f"note: {name} is stale ({'; '.join(reasons)}); this Journey leaves it be")
            continue
        settings_differ = bool(settings_changed(generation, rules))
        kept = ["it is kept by the settings it was built with"] if settings_differ else []
        if generation.code_version != MODELS[name].code:
            kept.append("rows written from now on follow this projection code, older rows not")
        err.print(
            f"note: {name} is stale ({'; '.join(reasons)}): {'; '.join(kept)} until "
            f"`journey projections rebuild {name}`"
            + (" with these settings" if settings_differ else "")
        )


def state_of(row: dict) -> str:
    """What an operator must know of a read model, every part of it (a stale one may be
    behind too): what to do is in the words."""
    parts = []
    if row["stale"]:
        reasons = "; ".join(row["stale_reasons"])
        parts.append(f"stale: {reasons}" + ("" if UPGRADE in reasons else " (rebuild it)"))
    if row["lag_events"]:
        parts.append(f"behind by {row['lag_events']:,} events")
    if row["refresh_due"]:
        parts.append(f"{row['refresh_due']:,} rows wait for a time-driven change")
    state = "; ".join(parts) or "up to date"
    if row["building"]:
        state += f" (building generation {row['building']['generation']})"
    return state


@projections.command("status")
def status(ctx: typer.Context, settings: SettingsPath = None, as_json: JsonFlag = False) -> None:
    """Each read model's position, the log head, the lag and whether it is stale."""
    rules = settings_or_fail(settings, as_json)
    with closing(open_models(ctx, rules, as_json, sets_rules=False)) as models, reporting(as_json):
        rows = models.status()
    if as_json:
        emit_json({"read_models": rows})
        return
    table = Table("read model", "gen", "position", "head", "lag", "lag s", "settings", "state")
    for row in rows:
        state = state_of(row)
        table.add_row(
            row["name"],
            str(row["generation"]),
            str(row["position"]),
            str(row["head"]),
            str(row["lag_events"]),
            f"{row['lag_seconds']:.1f}",
            row["settings_version"],
            state,
        )
    # Piped or redirected, no terminal's width to keep to: nothing is cut short.
    (out if out.is_terminal else Console(highlight=False, width=PIPED_WIDTH)).print(table)


@projections.command("rebuild")
def rebuild_command(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="NAME", help="The read model.")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Rebuild every read model.")] = False,
    settings: SettingsPath = None,
    workers: Annotated[
        int,
        typer.Option("--workers", min=1, help="Processes that fold histories (default: cores)."),
    ] = CORES,
) -> None:
    """Build a new generation from the whole log while the current one serves, then switch."""
    if (name is None) == (not all_models):
        which = "not both" if all_models else "neither was given"
        fail(f"name one read model or give --all ({which})", as_json=False, code=USAGE)
    chosen = names_or_fail(None if all_models else [name], False)
    rules = settings_or_fail(settings, False)
    with closing(open_models(ctx, rules, False)) as models, reporting(False):
        generations = rebuild_with_progress(models, chosen, workers)
    for model, generation in generations.items():
        out.print(
            f"{model}: serving generation {generation.generation} at position {generation.position}"
        )


def rebuild_with_progress(
    models: ReadModels, names: list[str], workers: int = CORES
) -> dict[str, Generation]:
    """All of ``names`` in one walk of the log (each event read and decoded once)."""
    columns = (
        TextColumn(f"rebuilding {', '.join(names)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task("rebuild", total=None, rate="")

        def advance(done: int, total: int) -> None:
            speed = bar.tasks[0].speed
            bar.update(
                task, completed=done, total=total, rate=f"{speed:,.0f} events/s" if speed else ""
            )

        try:
            return rebuild_many(models.runner, names, on_progress=advance, workers=workers)
        except LockBusy as exc:
            fail(str(exc), as_json=False)


@app.command("funnel")
def funnel_command(
    ctx: typer.Context,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", metavar="TIME", help="Count the population then (default now)."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", metavar="T1", help="With --to: the flow between stages from T1."),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", metavar="T2", help="With --from: ... to T2.")
    ] = None,
    settings: SettingsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Customers per stage, status and level at a moment; or the flow between two."""
    if (start is None) != (end is None) or (as_of is not None and start is not None):
        fail("give --as-of TIME, or both --from T1 and --to T2", as_json=as_json, code=USAGE)
    (moment,) = moments(as_json, as_of if as_of is not None or start else "now")
    (first,), (last,) = (
        moments(as_json, start, option="--from"),
        moments(as_json, end, option="--to"),
    )
    if first is not None and last is not None and first > last:
        fail("--from must not be later than --to", as_json=as_json, code=USAGE)
    rules = settings_or_fail(settings, as_json)
    with closing(open_models(ctx, rules, as_json, sets_rules=False)) as models, reporting(as_json):
        current = models.refresh(["timeline"])  # else a runner keeps it
        answer = funnel(models.store, moment) if start is None else flow(models.store, first, last)
        serving = models.runner.serving("timeline")
        stale = stale_reasons(serving, rules)
        behind = 0 if current else models.app.count_after(serving.position)
    if behind:
        err.print(
            f"note: the timeline read model these counts come from is {behind} entries of the "
            "log behind (the runner that keeps it is catching up)"
        )
    if stale:  # the counts are the timeline's, by the rules it was built with
        err.print(
            f"note: the timeline read model these counts come from is stale ({'; '.join(stale)}): "
            "they follow its rules until `journey projections rebuild timeline`"
        )
    if as_json:
        emit_json(answer)
    elif start is None:
        print_funnel(answer)
    else:
        print_flow(answer)


def print_funnel(answer: dict) -> None:
    out.print(f"funnel at {answer['as_of']}")
    for key in ("stages", "statuses", "levels"):
        table = Table(key[:-1] if key != "statuses" else "status", "customers")
        for value, count in answer[key].items():
            table.add_row(value, str(count))
        out.print(table)


def print_flow(answer: dict) -> None:
    table = Table(f"from ({answer['from']})", f"to ({answer['to']})", "customers")
    for source, targets in sorted(answer["stages"].items()):
        for target, count in sorted(targets.items()):
            table.add_row(source, target, str(count))
    out.print(table)
