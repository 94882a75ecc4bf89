"""The `journey` command line: one typer app; each module adds the commands of one job."""

from __future__ import annotations

from journey.cli.app import app
from journey.cli import store  # noqa: F401  (registers import, record, demo)
from journey.cli import query  # noqa: F401


def main() -> None:
    app()
