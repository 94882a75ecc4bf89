"""Where a benchmark keeps what it loads: a database nobody has used, gone afterwards.

Every benchmark measures on fresh storage, so that no earlier run's rows, indexes or
statistics help or hinder it: a new SQLite file, or a new PostgreSQL schema (on the server
``JOURNEY_TEST_POSTGRES_URL`` names, as the tests do) dropped when the run ends.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

POSTGRES = os.environ.get("JOURNEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def fresh_store(db: str, workdir: Path | None = None) -> Iterator[str]:
    """The URL of a database nobody has used: for ``db`` "sqlite" a new file (in
    ``workdir``, else in a temporary folder removed afterwards), else a new PostgreSQL
    schema, dropped afterwards."""
    if db == "sqlite":
        if workdir is not None:
            yield f"sqlite:///{workdir / f'{uuid.uuid4().hex}.db'}"
            return
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/journey.db"
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{POSTGRES}?schema={schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
