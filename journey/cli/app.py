"""The typer app and the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

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


def in_memory(url: str) -> bool:
    """Whether ``url`` is a SQLite store in memory (a bad URL is said when it is opened)."""
    try:
        return Database.parse(url).in_memory
    except StorageError:
        return False
