"""The typer app and the options every command shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from journey.errors import InputError, utf8_text
from journey.storage import ENV_VAR

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
    ctx.obj = Options(db=db, actor=actor)
