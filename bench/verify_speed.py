"""How fast `journey verify` checks the whole log (issue 6: 1,000,000 events in under a
minute), beside reading every notification and decoding it into events
(``select_notifications`` in large pages + ``mapper.to_domain_event``): context, not a
floor, since verify parses the stored JSON itself and builds no event objects.

    .venv/bin/python bench/verify_speed.py                  # 1,000,000 events, SQLite
    .venv/bin/python bench/verify_speed.py --quick          # 100,000 events
    .venv/bin/python bench/verify_speed.py --db postgresql://postgres@127.0.0.1/test?schema=bench

The store is filled through the real write path (aggregates, ``save`` in large batches,
sealing after each save): customers of ten events (identified, then purchases).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results import Row, write_rows  # bench/results.py

from journey.api import Journey
from journey.customer import Customer
from journey.events import Purchased

#: Issue 6: verify 1,000,000 events in under a minute.
BUDGET_EVENTS_PER_SECOND = 1_000_000 / 60
EVENTS_PER_CUSTOMER = 10
BATCH_EVENTS = 5_000
START = datetime(2024, 1, 1, tzinfo=UTC)


def fill(engine: Journey, events: int) -> None:
    customers = events // EVENTS_PER_CUSTOMER
    batch: list[Customer] = []
    pending = 0
    started = time.perf_counter()
    for number in range(customers):
        moment = START + timedelta(minutes=number)
        envelope = {"occurred_at": moment, "actor": "bench", "timestamp": moment,
                    "event_id": None}
        customer = Customer.identify(f"b-{number:07d}", source="bench", referred_by=None,
                                     acquisition_cost=None, personal=None, **envelope)
        for order in range(EVENTS_PER_CUSTOMER - 1):
            when = {**envelope, "occurred_at": moment + timedelta(days=order)}
            payload = {"order_id": f"o-{order}", "amount": Decimal("9.90"),
                       "category": "books", "margin": None}
            customer.record(Purchased, **when, payload=payload)
        batch.append(customer)
        pending += EVENTS_PER_CUSTOMER
        if pending >= BATCH_EVENTS:
            engine.app.save(*batch)
            batch, pending = [], 0
            done = (number + 1) * EVENTS_PER_CUSTOMER
            print(f"\r  stored {done:,} events ({time.perf_counter() - started:.0f} s)",
                  end="", flush=True)
    if batch:
        engine.app.save(*batch)
    print()


def decode_all(engine: Journey) -> int:
    count, after = 0, 0
    app = engine.app
    while page := app.recorder.select_notifications(after, 5000, inclusive_of_start=False):
        for notification in page:
            app.mapper.to_domain_event(notification)
        count += len(page)
        after = page[-1].id
    return count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    parser.add_argument("--json-out", help="append the figures as JSON lines (bench/results.py)")
    args = parser.parse_args()
    events = 100_000 if args.quick else args.events
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'verify.db'}"
        engine = Journey(url, actor="bench")
        try:
            if engine.app.max_notification_id() == 0:
                print(f"filling {url} with {events:,} events ...")
                fill(engine, events)
            started = time.perf_counter()
            decoded = decode_all(engine)
            decode_s = time.perf_counter() - started
            started = time.perf_counter()
            report = engine.verify()
            verify_s = time.perf_counter() - started
        finally:
            engine.close()
    print(f"raw decode of all notifications: {decoded:,} in {decode_s:.1f} s "
          f"({decoded / decode_s:,.0f} events/s)")
    print(f"verify: {report.events:,} events in {verify_s:.1f} s "
          f"({report.events / verify_s:,.0f} events/s), clean={report.clean}, "
          f"breaks={len(report.breaks)}")
    print(f"head: position {report.head_position} chain {report.head_chain}")
    db = "postgres" if args.db and args.db.startswith("postgres") else "sqlite"
    write_rows(args.json_out, rows(db, report.events / verify_s, decoded / decode_s,
                                   report.events))


def rows(db: str, verify_rate: float, decode_rate: float, events: int) -> list[Row]:
    note = f"{events:,} events; customers of {EVENTS_PER_CUSTOMER} events each"
    return [
        Row("verify", db, "verify", verify_rate, "events/s",
            "budget: 1,000,000 events a minute", BUDGET_EVENTS_PER_SECOND, 1.0, note=note),
        Row("verify", db, "verify", verify_rate, "events/s",
            "raw decode of every notification", decode_rate, None, note=note),
    ]


if __name__ == "__main__":
    main()
