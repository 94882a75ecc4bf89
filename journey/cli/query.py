"""Commands that read: `show` (a customer's answer at a moment) and `history` (its replay)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from journey.cli.app import Options, app
from journey.cli.output import OK, REJECTED, USAGE, emit_json, err, fail, out, reporting
from journey.cli.store import must_exist
from journey.moments import TIME_HELP, parse_known_at, parse_moment
from journey.storage import StorageError
from projections.history import Step
from projections.pointintime import PointInTime
from projections.readmodels.operate import ReadModels
from projections.rules.answer import Answer, jsonable
from projections.settings import ENV_VAR as SETTINGS_ENV
from projections.settings import SettingsError, load_settings

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON object a line.")]
KnownAt = Annotated[
    str | None,
    typer.Option(
        "--known-at", metavar="TIME", help="Count only events recorded by then. " + TIME_HELP
    ),
]
SettingsPath = Annotated[
    str | None,
    typer.Option(
        "--settings",
        envvar=SETTINGS_ENV,
        metavar="FILE",
        help="Rule thresholds (JSON or TOML); default: DOMAIN.md's.",
    ),
]


def open_queries(
    ctx: typer.Context, settings_path: str | None, as_json: bool
) -> tuple[PointInTime, ReadModels]:
    """Queries over the store, taking RFM's population from the read models when they can."""
    options: Options = ctx.obj
    try:
        settings = load_settings(settings_path)
        must_exist(options.db)
        models = ReadModels.open(options.db, settings, sets_rules=False)
    except (SettingsError, StorageError) as exc:
        fail(str(exc), as_json=as_json, code=USAGE)
    return PointInTime(models.app, settings, populations=models.population), models


def moments(
    as_json: bool,
    *texts: str | None,
    parse: Callable[[str | None], datetime | None] = parse_moment,
    option: str = "--as-of",
) -> list[datetime | None]:
    """The moments given to ``option``; a usage error naming it if one cannot be read."""
    try:
        return [parse(text) for text in texts]
    except ValueError as exc:
        fail(f"{option}: {exc}", as_json=as_json, code=USAGE)


def known_moments(as_json: bool, *texts: str | None) -> list[datetime | None]:
    """``--known-at`` values: none may lie ahead (``parse_known_at``)."""
    return moments(as_json, *texts, parse=parse_known_at, option="--known-at")


@app.command("show")
def show(
    ctx: typer.Context,
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Customer ids.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", metavar="TIME", help="The moment. " + TIME_HELP)
    ] = None,
    known_at: KnownAt = None,
    settings: SettingsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Each customer's stage, status, level and scores at a moment, with the reasons."""
    (as_of_at,), (known,) = moments(as_json, as_of), known_moments(as_json, known_at)
    queries, models = open_queries(ctx, settings, as_json)
    with reporting(as_json), closing(models):
        results = queries.show_many(ids, as_of_at, known)
    for result in results:
        if result.error is not None:
            report_missing(result.customer_id, str(result.error), as_json)
        elif as_json:
            emit_json(result.answer.as_dict())
        else:
            out.print(answer_table(result.answer))
    raise typer.Exit(REJECTED if any(r.error for r in results) else OK)


@app.command("history")
def history(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID", help="A customer id.")],
    known_at: KnownAt = None,
    settings: SettingsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay a customer's events in occurred_at order, with what each changed and why."""
    (known,) = known_moments(as_json, known_at)
    queries, models = open_queries(ctx, settings, as_json)
    with reporting(as_json), closing(models):
        steps = queries.history(customer_id, known)
    if as_json:
        for number, step in enumerate(steps, start=1):
            emit_json(step.as_dict(number))
    else:
        out.print(history_table(customer_id, steps))


def report_missing(customer_id: str, message: str, as_json: bool) -> None:
    if as_json:
        error = {"field": "customer_id", "reason": message, "kind": "not_found"}
        emit_json({"customer_id": customer_id, "error": message, "errors": [error]}, stderr=True)
    else:
        err.print(f"[red]error:[/red] {escape(message)}", markup=True)


def answer_table(answer: Answer) -> Table:
    data = answer.as_dict()
    table = Table(
        title=f"{answer.customer_id} at {data['as_of']}",
        show_header=False,
        caption=f"known at {data['known_at']} · settings {answer.settings_version}",
    )
    table.add_column(style="bold")
    table.add_column()
    for name, verdict in answer.verdicts().items():
        ids = ", ".join(f"#{i}" for i in verdict.events) or "-"
        table.add_row(name, f"{verdict.value}  [dim]({verdict.rule}; events {ids})[/dim]")
    for name, value in data["scores"].items():
        table.add_row(name, text(value))
    return table


def history_table(customer_id: str, steps: list[Step]) -> Table:
    table = Table(title=f"history of {customer_id}")
    for column in ("#", "at", "event", "recorded / actor", "changes"):
        table.add_column(column)
    for number, step in enumerate(steps, start=1):
        data = step.as_dict(number)
        event = data["event"]
        what = f"#{event['id']} {event['type']} {text(event['payload'])}" if event else "(time)"
        who = escape(f"{event['recorded_at']} {event['actor']}") if event else ""
        table.add_row(str(number), data["at"], what, who, changes_text(data["changes"]))
    return table


def changes_text(changes: dict[str, Any]) -> str:
    lines = [
        f"{name}: {c['from']} → {c['to']} ({c['rule']})"
        for name, c in changes.items()
        if name != "scores"
    ]
    moved = changes.get("scores", {})
    if moved:
        lines.append(", ".join(f"{k} {text(v['from'])}→{text(v['to'])}" for k, v in moved.items()))
    return "\n".join(lines) or "-"


def text(value: Any) -> str:
    """A value for a table cell; what users wrote is escaped, so that a "[b]" in a note is
    shown, not taken for markup."""
    value = jsonable(value)
    if isinstance(value, dict):
        shown = {k: v for k, v in value.items() if v is not None}
        return " ".join(f"{k}={text(v)}" for k, v in shown.items())
    return "-" if value is None else escape(str(value))
