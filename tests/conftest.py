"""Shared fixtures: every storage test runs on SQLite and on a real PostgreSQL.

PostgreSQL is found through JOURNEY_TEST_POSTGRES_URL (default: the local server). Each
test gets its own schema, dropped afterwards. Without a server the PostgreSQL cases skip
with a message saying how to enable them, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("JOURNEY_TEST_POSTGRES_URL", DEFAULT_PG)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_problem: str | None = None
_pg_checked = False


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (None when it can); checked once per run."""
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            import psycopg

            with psycopg.connect(_conninfo(PG_URL), connect_timeout=5):
                pass
        except Exception as exc:
            _pg_problem = f"{type(exc).__name__}: {exc}".strip()
    return _pg_problem


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    message = (
        f"PostgreSQL at {PG_URL} is not reachable ({problem}). Start it, or point "
        "JOURNEY_TEST_POSTGRES_URL at a server you may create schemas in."
    )
    if IN_CI:
        pytest.fail(message + " CI=true: PostgreSQL tests must run, not skip.")
    pytest.skip(message)


def _conninfo(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    parts = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": parsed.database or "postgres",
    }
    if parsed.password:
        parts["password"] = parsed.password
    return " ".join(f"{k}={v}" for k, v in parts.items())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL with a schema of this test's own, dropped afterwards."""
    require_postgres()
    import psycopg
    from psycopg import sql

    schema = f"jt_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    with psycopg.connect(_conninfo(PG_URL), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'journey.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """The same test against SQLite and against PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url) -> Iterator:
    """A Journey engine on each database, closed afterwards."""
    from journey.api import connect

    journey = connect(db_url, actor="tester")
    yield journey
    journey.close()
