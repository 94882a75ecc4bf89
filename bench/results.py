"""One shape for every benchmark's figures, so bench/run_all.py can report them together.

A row is one figure beside one baseline measured in the same run: the ratio and whether it
meets its target. "Higher is better" figures (events/s) meet a target when ratio >= target;
"lower is better" ones (latency, time per query) when ratio <= target.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


PACE_STEPS = 5_000_000


@functools.cache
def pace() -> float:
    """Seconds for a fixed loop of Python additions, timed once per benchmark run: this
    machine's own speed moves between runs (by 2x and more), and a figure's absolute value
    with it; the ratios to baselines of the same run much less."""
    started = time.perf_counter()
    total = 0
    for step in range(PACE_STEPS):
        total += step
    return round(time.perf_counter() - started, 2)


@dataclass
class Row:
    benchmark: str
    db: str
    figure_name: str
    figure: float
    unit: str
    baseline_name: str
    baseline: float
    target: float | None  # None: the baseline is context, with no target on the ratio
    higher_is_better: bool = True
    note: str = ""
    #: When it was measured: a report may hold rows of several runs (run_all.py --only).
    measured: str = field(default_factory=now)
    #: How fast the machine ran then (``pace``: lower is faster).
    pace: float = field(default_factory=pace)

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def write_rows(path: str | Path | None, rows: list[Row]) -> None:
    """Append rows to a JSON-lines file (no-op without a path)."""
    if path is None:
        return
    with Path(path).open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.as_dict()) + "\n")


def read_rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
