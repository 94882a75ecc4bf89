"""Journey's per-customer figures on CDNOW against the peer users already trust: lifetimes.

For every customer on the last day of the data (1998-06-30), Journey's `purchases`,
`tenure_days` and `recency_days` are compared with the frequency / recency / T summary that
`lifetimes.utils.summary_data_from_transaction_data` computes from the same transactions
(the lines Journey stored). The mapping:

* lifetimes groups a customer's transactions by day and counts *repeat* days:
  ``frequency = distinct purchase days - 1``. Journey stores one purchase per CDNOW line, so
  ``purchases = frequency + 1 + (lines on days that already had a line)``, the last term
  counted from the raw file;
* ``T`` is the whole days from the first purchase to the end of observation: Journey's
  ``tenure_days``;
* lifetimes' ``recency`` is the whole days from the first to the last purchase day, so
  Journey's ``recency_days`` (last purchase to T) is ``T - recency``.

lifetimes is old: it runs in a virtual environment of its own (``bench/.lifetimes``, made on
first use with the pandas and numpy it needs); it is a benchmark dependency, never a runtime
one. Usage: ``python bench/cdnow_check.py [--file CDNOW_master.txt] [--db URL]``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from journey.api import Journey
from journey.cdnow import LAST_DAY, Conversion, fetch, purchases
from projections.pointintime import PointInTime

HERE = Path(__file__).resolve().parent
VENV = HERE / ".lifetimes"
PACKAGES = ["lifetimes==0.11.3", "pandas<2", "numpy<1.27", "scipy<1.12"]

LIFETIMES_SCRIPT = """
import sys
import pandas as pd
from lifetimes.utils import summary_data_from_transaction_data
tx = pd.read_csv(sys.argv[1], dtype={"customer_id": str})
tx["date"] = pd.to_datetime(tx["date"])
summary = summary_data_from_transaction_data(
    tx, "customer_id", "date", observation_period_end=sys.argv[3], freq="D")
summary.to_csv(sys.argv[2])
"""


def lifetimes_python() -> Path:
    """The interpreter of lifetimes' own virtual environment, made on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def lifetimes_summary(transactions: list[tuple[str, str]], folder: Path) -> dict[str, tuple]:
    """customer -> (frequency, recency, T) as lifetimes computes them."""
    given, answer = folder / "transactions.csv", folder / "summary.csv"
    with given.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer_id", "date"])
        writer.writerows(transactions)
    subprocess.run(
        [
            str(lifetimes_python()),
            "-c",
            LIFETIMES_SCRIPT,
            str(given),
            str(answer),
            LAST_DAY.date().isoformat(),
        ],
        check=True,
    )
    with answer.open() as handle:
        return {
            row["customer_id"]: (
                int(float(row["frequency"])),
                int(float(row["recency"])),
                int(float(row["T"])),
            )
            for row in csv.DictReader(handle)
        }


def journey_figures(url: str, path: Path) -> tuple[dict[str, tuple], list[dict], Conversion]:
    """Load the file into Journey; customer -> (purchases, tenure_days, recency_days)."""
    conversion = Conversion()
    records = list(purchases(path, report=conversion))
    with Journey(url, actor="cdnow-check") as engine:
        for start in range(0, len(records), 20_000):
            outcome = engine.record_many(records[start : start + 20_000])
            assert not outcome.rejected, outcome.rejected[0].as_dict()
        customers = engine.app.customer_ids()
        found = PointInTime(engine).show_many(customers, LAST_DAY, with_rfm=False)
    figures = {}
    for result in found:
        scores = result.unwrap().scores
        figures[result.customer_id.removeprefix("cdnow-")] = (
            scores["purchases"],
            scores["tenure_days"],
            scores["recency_days"],
        )
    return figures, records, conversion


def compare(journey: dict[str, tuple], peer: dict[str, tuple], records: list[dict]) -> dict:
    lines = Counter(r["customer_id"].removeprefix("cdnow-") for r in records)
    days = Counter(
        c
        for c, _ in {
            (r["customer_id"].removeprefix("cdnow-"), r["occurred_at"][:10]) for r in records
        }
    )
    mismatches: dict[str, list[str]] = {"purchases": [], "tenure_days": [], "recency_days": []}
    for customer, (frequency, recency, age) in peer.items():
        n, tenure, recency_days = journey.get(customer, (None, None, None))
        if n != frequency + 1 + (lines[customer] - days[customer]):
            mismatches["purchases"].append(customer)
        if tenure != age:
            mismatches["tenure_days"].append(customer)
        if recency_days != age - recency:
            mismatches["recency_days"].append(customer)
    missing = sorted(set(journey) ^ set(peer))
    return {
        "customers_journey": len(journey),
        "customers_lifetimes": len(peer),
        "only_in_one": missing[:10],
        "mismatches": mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", help="CDNOW_master.txt (default: fetched and cached)")
    parser.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    path = fetch(args.file)
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{Path(folder) / 'cdnow.db'}"
        started = time.perf_counter()
        journey, records, conversion = journey_figures(url, path)
        loaded = time.perf_counter() - started
        transactions = [
            (r["customer_id"].removeprefix("cdnow-"), r["occurred_at"][:10]) for r in records
        ]
        peer = lifetimes_summary(transactions, Path(folder))
    result = compare(journey, peer, records)
    print(
        f"CDNOW: {conversion.lines} lines, {conversion.purchases} purchases stored "
        f"({len(conversion.skipped)} lines worth $0.00 skipped); Journey load + show "
        f"{loaded:.1f} s"
    )
    print(
        f"customers: Journey {result['customers_journey']}, "
        f"lifetimes {result['customers_lifetimes']}, in only one: {result['only_in_one']}"
    )
    for figure, customers in result["mismatches"].items():
        agree = result["customers_lifetimes"] - len(customers)
        print(
            f"{figure:>13}: {agree} of {result['customers_lifetimes']} customers agree"
            + (f"; first disagreements: {customers[:10]}" if customers else "")
        )
    failed = result["only_in_one"] or any(result["mismatches"].values())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
