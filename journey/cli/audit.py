"""Commands for auditors and data protection: `verify`, `report`, `diff`, `export`, `erase`."""

from __future__ import annotations

import csv
import re
import sys
from contextlib import closing
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from journey.cli.app import app
from journey.cli.output import OK, REJECTED, USAGE, emit_json, err, fail, out, reporting
from journey.cli.projections import settings_or_fail
from journey.cli.query import SettingsPath, known_moments, moments
from journey.cli.store import open_engine
from journey.integrity import Report
from journey.moments import TIME_FORMS
from projections import report as reports

AsOf = Annotated[str, typer.Option("--as-of", metavar="TIME", help=f"The moment: {TIME_FORMS}.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("verify")
def verify(
    ctx: typer.Context,
    ids: Annotated[
        list[str] | None, typer.Argument(metavar="[ID...]", help="Only these customers.")
    ] = None,
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            "--anchor",
            metavar="POSITION:CHAIN",
            help="A head printed by an earlier verify, kept elsewhere; repeatable.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Check the hash chains: exit 0 when the store is intact, 1 with each break."""
    anchors = []
    for text in anchor or []:
        position, _, chain = text.strip().lower().partition(":")
        if not re.fullmatch(r"[0-9]{1,19}", position) or not re.fullmatch(r"[0-9a-f]{64}", chain):
            fail(
                f"--anchor {text!r}: expected POSITION:CHAIN (64 hex digits)",
                as_json=as_json,
                code=USAGE,
            )
        anchors.append((int(position), chain))
    engine = open_engine(ctx, as_json, existing=True)
    with reporting(as_json), closing(engine):
        result = engine.verify(ids or None, anchors)
    if as_json:
        emit_json(result.as_dict())
    else:
        print_verification(result)
    raise typer.Exit(OK if result.clean else REJECTED)


def print_verification(result: Report) -> None:
    if result.breaks:
        table = Table(title=f"{len(result.breaks)} break(s)")
        for column in ("customer", "position", "version", "what", "detail"):
            table.add_column(column)
        for b in result.breaks:
            table.add_row(  # escaped: a tampered row may hold anything, "[/x]" too
                escape(b.customer_id), dash(b.position), dash(b.version), b.kind, escape(b.detail)
            )
        out.print(table)
    verdict = "[green]intact[/green]" if result.clean else "[red]BROKEN[/red]"
    out.print(
        f"{verdict}: {result.events} events of {result.customers} customers checked; "
        f"{result.sealed_now} sealed now",
        markup=True,
    )
    if result.sealed_now:
        err.print(
            f"note: {result.sealed_now} events had no seal row and were sealed now. Journey's "
            "write path leaves none unsealed: they were stored some other way (an older "
            "Journey, another program), or their seal rows were removed. Only a head "
            "anchored earlier (--anchor) tells the two apart"
        )
    out.print(
        f"head of the log seal: position {result.head_position} chain {result.head_chain}\n"
        "(keep it somewhere else; later: journey verify --anchor POSITION:CHAIN)"
    )


def dash(number: int | None) -> str:
    return "-" if number is None else str(number)


@app.command("report")
def report(
    ctx: typer.Context,
    as_of: AsOf,
    known_at: Annotated[
        str, typer.Option("--known-at", metavar="TIME", help="What was recorded by then.")
    ],
    settings: SettingsPath = None,
    as_json: JsonFlag = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="One CSV row per customer.")] = False,
) -> None:
    """The funnel and every customer's stage, status and level at --as-of, as known at
    --known-at, computed from the events alone (reproducible forever)."""
    if as_json and as_csv:
        fail("give --json or --csv, not both", as_json=True, code=USAGE)
    (moment,), (known,) = moments(as_json, as_of), known_moments(as_json, known_at)
    rules = settings_or_fail(settings, as_json)
    engine = open_engine(ctx, as_json, existing=True)
    with reporting(as_json), closing(engine):
        result = reports.report(engine.app, moment, known, rules)
    if as_json:
        emit_json(result.as_dict())
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["customer_id", "loyalty_stage", "status", "relationship_level"])
        for row in result.rows:
            writer.writerow([row.customer_id, *row.values()])
    else:
        data = result.as_dict()
        out.print(
            f"as of {data['as_of']}, as known at {data['known_at']}: {data['customers']} customers"
        )
        for key, counts in data["funnel"].items():
            out.print(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        table = Table("customer", "stage", "status", "level")
        for row in result.rows:
            table.add_row(row.customer_id, *row.values())
        out.print(table)


@app.command("diff")
def diff(
    ctx: typer.Context,
    as_of: AsOf,
    known_at: Annotated[
        list[str],
        typer.Option("--known-at", metavar="TIME", help="Give it twice: the two moments."),
    ],
    settings: SettingsPath = None,
    as_json: JsonFlag = False,
) -> None:
    """Which customers' answers at --as-of changed between two --known-at moments, and the
    events recorded in between that changed them."""
    if len(known_at) != 2:
        fail("give --known-at exactly twice", as_json=as_json, code=USAGE)
    (moment,), (first, second) = moments(as_json, as_of), known_moments(as_json, *known_at)
    rules = settings_or_fail(settings, as_json)
    engine = open_engine(ctx, as_json, existing=True)
    with reporting(as_json), closing(engine):
        changes = reports.diff(engine.app, moment, first, second, rules)
    if as_json:
        for change in changes:
            emit_json(change.as_dict())
        return
    if not changes:
        out.print("no customer's answer changed")
    for change in changes:
        data = change.as_dict()
        before = data["before"] or {}
        after = data["after"] or {}
        moves = ", ".join(
            f"{name} {before.get(name, '(unknown)')} → {after.get(name, '(unknown)')}"
            for name in data["changed"]
        )
        out.print(f"[bold]{change.customer_id}[/bold]: {moves}", markup=True)
        for event in data["events"]:
            line = (
                f"    #{event['id']} {event['type']} occurred {event['occurred_at']} "
                f"recorded {event['recorded_at']} by {event['actor']}"
            )
            out.print(escape(line))


@app.command("export")
def export(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID", help="A customer id.")],
    settings: SettingsPath = None,
) -> None:
    """The customer's whole dossier as one JSON document: events with both times and
    actors (personal data opened, or shown as erased), the history replay with reasons,
    and the answer now."""
    rules = settings_or_fail(settings, True)
    engine = open_engine(ctx, True, existing=True)
    with reporting(True), closing(engine):
        events = engine.events(customer_id)
        if not events:
            fail(f"customer {customer_id!r} is unknown", as_json=True)
        stored = engine.app.stored_states(customer_id)
        document = reports.dossier(events, customer_id, datetime.now(UTC), rules, stored)
    emit_json(document)


@app.command("erase")
def erase(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID", help="A customer id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the event).")],
    as_json: JsonFlag = False,
) -> None:
    """Record an `erased` event and destroy the customer's personal-data key with it."""
    engine = open_engine(ctx, as_json, existing=True)
    with reporting(as_json), closing(engine):
        done = engine.erase(customer_id, reason)
    if as_json:
        emit_json(
            {
                "customer_id": done.customer_id,
                "key_destroyed": done.key_destroyed,
                "position": done.position,
                "already_erased": done.position is None,
                "key_destroyed_before": done.key_destroyed_before,
            }
        )
    elif done.position is None:
        out.print(f"{customer_id} was already erased; nothing to do")
    else:
        what = (
            "key destroyed"
            if done.key_destroyed
            else "key already destroyed by an older Journey's erase that did not finish"
            if done.key_destroyed_before
            else "no personal data key existed"
        )
        out.print(f"{customer_id}: {what}; `erased` recorded at position {done.position}")
