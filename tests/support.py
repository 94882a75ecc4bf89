"""Helpers shared by the write-side tests: inputs, snapshots of the store, and the
"refused, names the field, changed nothing" check."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from journey.api import Journey, RejectedInput, connect


def at(day: int, hour: int = 10, minute: int = 0) -> str:
    """An ISO time in March 2025 (UTC), easy to order by eye."""
    return f"2025-03-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ev(type_: str, customer: str = "c-1", occurred_at: str | None = None, **fields: Any) -> dict:
    return {"type": type_, "customer_id": customer, "occurred_at": occurred_at or at(1), **fields}


def purchase(customer: str, order: str, amount: Any = "59.90", day: int = 1, **fields: Any):
    return ev("purchase", customer, at(day), order_id=order, amount=amount, **fields)


def refund(customer: str, order: str, amount: Any, day: int = 2, **fields: Any) -> dict:
    return ev("refund", customer, at(day), order_id=order, amount=amount, **fields)


def referral(referrer: str, referred: str, day: int = 1, **fields: Any) -> dict:
    return ev("referral", referrer, at(day), referred_customer_id=referred, **fields)


def stream(engine: Journey, customer_id: str) -> list[tuple[int, str, dict]]:
    """What is stored for one customer: (version, type, payload) in recording order."""
    return [(e.version, e.TYPE, e.payload()) for e in engine.events(customer_id)]


def snapshot(engine: Journey, customer_ids: Iterable[str]) -> tuple:
    return (
        engine.app.max_notification_id(),
        {c: stream(engine, c) for c in sorted(set(customer_ids))},
    )


def ids_in(event: Any) -> set[str]:
    """The customer ids an input names (so the check can look at every stream it could touch)."""
    if not isinstance(event, dict):
        return set()
    names = (event.get(k) for k in ("customer_id", "referred_customer_id", "referred_by"))
    return {n for n in names if isinstance(n, str) and n}


def refused(
    engine: Journey,
    event: Any,
    field: str,
    *reason_words: str,
    kind: str = "invalid",
    watch: Iterable[str] = (),
) -> RejectedInput:
    """Record ``event``; it must be refused with an error on ``field`` whose reason contains
    every word of ``reason_words``, and the store must be exactly as before."""
    watched = ids_in(event) | set(watch)
    before = snapshot(engine, watched)
    with pytest.raises(RejectedInput) as info:
        engine.record(event)
    errors = info.value.errors
    named = [e for e in errors if e.field == field]
    assert named, f"no error names {field!r}: {[str(e) for e in errors]} for {event!r}"
    reason = named[0].reason.lower()
    assert reason.strip(), f"the reason is empty for {event!r}"
    for word in reason_words:
        assert word.lower() in reason, f"{word!r} not in {named[0].reason!r} for {event!r}"
    assert named[0].kind == kind, event
    assert snapshot(engine, watched) == before, f"{event!r} was refused but changed the store"
    return info.value


class StepClock:
    """A clock that moves one second per reading, so recorded times can be predicted."""

    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)):
        self.start = start
        self.readings: list[datetime] = []

    def __call__(self) -> datetime:
        now = self.start + timedelta(seconds=len(self.readings))
        self.readings.append(now)
        return now


@contextmanager
def opened(url: str, **options: Any) -> Iterator[Journey]:
    engine = connect(url, **options)
    try:
        yield engine
    finally:
        engine.close()


def write_jsonl(path: Path, records: Iterable[Any]) -> str:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def seen_blocked_by(database: Any, blocker: Any, timeout: float = 30.0) -> bool:
    """Whether, within ``timeout``, a session of this PostgreSQL database waits for a
    lock that the connection ``blocker`` holds: what shows that a test's "it waits" was
    seen waiting, not merely not started yet."""
    with database.connect() as watcher:
        watcher.autocommit = True  # pg_stat_activity is read once per transaction
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                [blocker.info.backend_pid],
            ).fetchone()
            if row[0]:
                return True
            time.sleep(0.02)
    return False
