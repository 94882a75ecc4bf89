"""The `journey` command line: one typer app; each module adds the commands of one job."""

from __future__ import annotations

import sys

import typer

from journey.cli import (  # noqa: F401  (each registers commands)
    audit,
    cdnow,
    keys,
    projections,
    query,
    serve,
    store,
)
from journey.cli.app import app
from journey.cli.output import USAGE, emit_json

#: The options of ``journey`` itself, which go before the command.
GLOBAL_OPTIONS = ("--db", "--actor")


def main() -> None:
    """The ``journey`` script. With ``--json``, the usage errors click finds before any
    command runs (a missing or unknown option) are one JSON object on stderr too, as
    every other error is: a program parsing the output gets no box drawn for a person."""
    refuse_misplaced_options(sys.argv[1:])
    if "--json" not in sys.argv[1:]:
        app()
        return
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # click's errors (typer keeps its own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        emit_json({"error": message}, stderr=True)
        sys.exit(getattr(exc, "exit_code", USAGE))
    except typer.Abort:
        sys.exit(1)
    sys.exit(code or 0)


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
