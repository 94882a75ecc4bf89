"""API keys: created and revoked by operators, stored hashed beside the events.

A key is ``jk_`` and 32 random bytes (URL-safe base64). Only its SHA-256 is stored, in
``journey_api_keys`` in the event store's database, so a copy of the database gives no
usable key. A key carries scopes; each endpoint needs one of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from journey.errors import JourneyError
from journey.moments import iso

SCOPES = {
    "events:write": "record events (POST /v1/events)",
    "customers:read": "read customers' answers and the funnel",
    "history:read": "replay a customer's history (auditors)",
    "feed:read": "read the change feed",
    "projections:admin": "see read models' status and rebuild them",
}
PREFIX = "jk_"
NAME = re.compile(r"[A-Za-z0-9._:@-]{1,64}")

metadata = MetaData()
api_keys = Table(
    "journey_api_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)


class KeyProblem(JourneyError):
    """A key cannot be created or revoked as asked."""


class KeyExists(KeyProblem):
    """The name is taken: the input clashes with what is stored (exit 1, not a usage
    error)."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at) if self.revoked_at else None,
        }


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Keys:
    """The API keys of one database (a SQLAlchemy engine on it)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        metadata.create_all(engine, checkfirst=True)

    def create(self, name: str, scopes: list[str]) -> str:
        """Store a new key named ``name`` and return it: the only time it is shown."""
        if not NAME.fullmatch(name):
            raise KeyProblem("a key name is 1-64 letters, digits or . _ : @ -")
        expected = f"expected {', '.join(SCOPES)}"
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise KeyProblem(f"unknown scope {', '.join(unknown)}; {expected}")
        if not scopes:
            raise KeyProblem(f"give at least one scope; {expected}")
        key = PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(api_keys).values(
                        name=name,
                        key_hash=digest(key),
                        scopes=sorted(set(scopes), key=list(SCOPES).index),
                        created_at=datetime.now(UTC),
                        revoked_at=None,
                    )
                )
        except IntegrityError:
            raise KeyExists(f"a key named {name!r} exists (names are never reused)") from None
        return key

    def revoke(self, name: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            ).rowcount
        if not done:
            raise KeyProblem(f"no active key named {name!r}")

    def all(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.name)).all()
        return [of(row) for row in rows]

    def named(self, name: str) -> ApiKey | None:
        """The key named ``name`` as it stands now (revoked or not), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.name == name)).first()
        return None if row is None else of(row)

    def verify(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None (unknown, malformed or revoked)."""
        if not key.startswith(PREFIX) or len(key) > 200:
            return None
        wanted = digest(key)
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == wanted)).first()
        if row is None or not hmac.compare_digest(row.key_hash, wanted):
            return None
        found = of(row)
        return found if found.active else None


def of(row: object) -> ApiKey:
    data = row._mapping  # type: ignore[attr-defined]
    return ApiKey(
        name=data["name"],
        scopes=tuple(data["scopes"]),
        created_at=aware(data["created_at"]),
        revoked_at=aware(data["revoked_at"]) if data["revoked_at"] else None,
    )


def aware(moment: datetime) -> datetime:
    """SQLite hands times back without their zone; every time stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
