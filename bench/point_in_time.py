"""Point-in-time queries on one customer with 10,000 events (issue 3).

Prints the median and p99 time of 100 `as_of` queries spread over the history, beside the
baseline of rebuilding the aggregate with the eventsourcing repository in the same run.
"warm" is a long-lived PointInTime (it keeps the decoded stream and reads only newer
events); "cold" starts from nothing each query (decodes the whole stream).

    .venv/bin/python bench/point_in_time.py [--db URL] [--events 10000] [--queries 100]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from results import Row, write_rows  # bench/results.py

from journey.api import connect
from projections.pointintime import PointInTime

START = datetime(2020, 1, 1, tzinfo=UTC)
CUSTOMER = "bench-1"


def history(count: int) -> list[dict]:
    """A mixed history: purchases, refunds, contacts, feedback, complaints."""
    events = []
    for i in range(count - 1):  # the store adds the identification
        when = (START + timedelta(hours=6 * i)).isoformat()
        base = {"customer_id": CUSTOMER, "occurred_at": when}
        kind = i % 5
        if kind in (0, 1):
            events.append({**base, "type": "purchase", "order_id": f"o-{i}", "amount": "25.50",
                           "category": f"cat-{i % 3}"})
        elif kind == 2:
            events.append({**base, "type": "refund", "order_id": f"o-{i - 2}", "amount": "5"})
        elif kind == 3:
            purpose = ("offer", "follow_up", "inquiry", "support")[i % 4]
            events.append({**base, "type": "contact", "channel": "email",
                           "direction": "outbound" if i % 2 else "inbound", "purpose": purpose})
        else:
            events.append({**base, "type": "feedback", "score": i % 11})
    return events


def timed(run: Callable[[], object], times: int) -> list[float]:
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        run()
        spent.append(time.perf_counter() - began)
    return spent


TARGET = 0.2  # median at most 0.2x the repository rebuild


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--events", type=int, default=10_000, help="events of the one customer")
    parser.add_argument("--queries", type=int, default=100, help="as_of queries timed")
    parser.add_argument("--json-out", help="append the figures as JSON lines (bench/results.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        with connect(url, actor="bench") as engine:
            began = time.perf_counter()
            engine.record_many(history(args.events))
            stored = len(engine.events(CUSTOMER))
            print(f"stored {stored} events in {time.perf_counter() - began:.1f} s ({url})")
            span = timedelta(hours=6 * args.events)
            moments = [START + span * (k + 0.5) / args.queries for k in range(args.queries)]
            warm = PointInTime(engine)
            warm.show(CUSTOMER, with_rfm=False)  # fill the stream cache once
            queue = iter(moments * 2)
            results = {
                "baseline: repository.get": timed(
                    lambda: engine.app.repository.get(CUSTOMER), args.queries),
                "show, warm": timed(
                    lambda: warm.show(CUSTOMER, as_of=next(queue), with_rfm=False),
                    args.queries),
                "show, cold": timed(
                    lambda: PointInTime(engine).show(CUSTOMER, as_of=next(queue), with_rfm=False),
                    args.queries),
            }
    baseline = statistics.median(results["baseline: repository.get"])
    print(f"{'':26} {'median ms':>10} {'p99 ms':>10} {'x baseline':>11}")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(f"{name:26} {median * 1e3:10.1f} {p99(samples) * 1e3:10.1f} "
              f"{median / baseline:11.2f}")
    db = "postgres" if args.db and args.db.startswith("postgres") else "sqlite"
    write_rows(args.json_out, [
        Row("point-in-time", db, f"show median ({name.removeprefix('show, ')} cache)",
            statistics.median(results[name]) * 1e3, "ms", "repository.get median",
            baseline * 1e3, TARGET, higher_is_better=False,
            note=f"{args.events:,} events, {args.queries} as_of queries; "
                 f"p99 {p99(results[name]) * 1e3:.1f} ms")
        for name in ("show, warm", "show, cold")
    ])


if __name__ == "__main__":
    main()
