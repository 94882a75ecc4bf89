"""The typer app and the options every command shares."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated

import typer

from journey.cli.output import USAGE, emit_json
from journey.errors import InputError, utf8_text
from journey.storage import ENV_VAR, Database, StorageError

app = typer.Typer(
    name="journey",
    help="Journey: an event-sourced customer-journey engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class Options:
    """Global options, passed to commands through the typer context."""

    db: str | None
    actor: str | None


@app.callback()
def configure(
    ctx: typer.Context,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", envvar=ENV_VAR, metavar="URL",
            help="Database URL: sqlite:///FILE (default sqlite:///journey.db) or "
                 "postgresql://USER@HOST:PORT/DB[?schema=NAME].",
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--actor", help="Who records the events (default: the OS user)."),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=lambda given: print_version(given),
            help="Print Journey's version and exit.",
        ),
    ] = False,
) -> None:
    if actor is not None:
        try:
            utf8_text("actor", actor)
        except InputError as exc:
            raise typer.BadParameter(exc.reason, param_hint="--actor") from None
        if not actor.strip():  # it was recorded as the OS user, silently
            reason = "must name who records (or leave it out)"
            raise typer.BadParameter(reason, param_hint="--actor")
    if db is not None and in_memory(db):
        raise typer.BadParameter(
            "an in-memory store keeps nothing once this command ends: name a file "
            "(sqlite:///journey.db)",
            param_hint="--db",
        )
    ctx.obj = Options(db=db, actor=actor)


def print_version(given: bool) -> None:
    """``journey --version``: the installed distribution's version, for a bug report."""
    if given:
        typer.echo(f"journey {metadata.version('journey')}")
        raise typer.Exit()


def in_memory(url: str) -> bool:
    """Whether ``url`` is a SQLite store in memory (a bad URL is said when it is opened)."""
    try:
        return Database.parse(url).in_memory
    except StorageError:
        return False


#: The options of ``journey`` itself, which go before the command.
GLOBAL_OPTIONS = ("--db", "--actor")


def refuse_misplaced_options(args: list[str]) -> None:
    """Exit 2 naming a global option given after the command, with where it goes."""
    if (misplaced := global_option_after_command(args)) is None:
        return
    message = (
        f"{misplaced} is an option of journey itself: give it before the command "
        f"(journey {misplaced} ... COMMAND ...)"
    )
    if "--json" in args:
        emit_json({"error": message}, stderr=True)
    else:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE)


def global_option_after_command(args: list[str]) -> str | None:
    """``--db`` or ``--actor`` given after the command (``journey import f --db URL``),
    which click answers with only "No such option: --db"."""
    index = 0
    while index < len(args) and args[index].startswith("-"):  # journey's own options
        index += 2 if args[index] in GLOBAL_OPTIONS else 1
    for arg in args[index + 1 :]:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            return name
    return None
