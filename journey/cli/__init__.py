"""The `journey` command line: one typer app; each module adds the commands of one job."""

from __future__ import annotations

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


def main() -> None:
    app()
