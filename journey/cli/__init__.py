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
from journey.cli.app import app, refuse_misplaced_options
from journey.cli.output import USAGE, emit_json


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
