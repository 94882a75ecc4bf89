# ruff: noqa: RUF001 -- the report writes ratios with a real multiplication sign
"""Run every benchmark on SQLite and PostgreSQL and write one report: bench/RESULTS.md.

Each benchmark runs in its own process, measures its figure beside its baselines in the same
run, and appends rows (bench/results.py) to a shared file; this script turns the rows into a
table per benchmark (figure, baseline, ratio, target), with the machine and the date, and
plots events per second per benchmark next to the report (bench/RESULTS.png).

    python bench/run_all.py            # the sizes the issues name (takes a long while)
    python bench/run_all.py --quick    # small sizes, a few minutes, for a smoke run
    python bench/run_all.py --report-only   # redraw the report from bench/RESULTS.jsonl
    python bench/run_all.py --only import   # measure one benchmark again, keep the others
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from results import PACE_STEPS, read_rows
from stores import POSTGRES  # one server for every benchmark (JOURNEY_TEST_POSTGRES_URL)

HERE = Path(__file__).resolve().parent

#: (benchmark, script, full-size arguments, quick arguments); "{pg}" is a fresh schema URL.
PLAN = [
    ("import", "import_speed.py", [], ["--events", "20000", "--customers", "4000"]),
    ("point-in-time", "point_in_time.py", [], ["--events", "2000", "--queries", "30"]),
    (
        "point-in-time",
        "point_in_time.py",
        ["--db", "{pg}"],
        ["--db", "{pg}", "--events", "2000", "--queries", "30"],
    ),
    (
        "rebuild",
        "rebuild_speed.py",
        [],
        ["--events", "50000", "--customers", "5000", "--slice", "5000"],
    ),
    ("feed latency", "feed_latency.py", [], ["--events", "100"]),
    ("verify", "verify_speed.py", [], ["--events", "50000"]),
    ("verify", "verify_speed.py", ["--db", "{pg}"], ["--db", "{pg}", "--events", "50000"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--only",
        action="append",
        help="run only these benchmarks, keeping the other rows of --rows (each row says "
        "when it was measured)",
    )
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument(
        "--rows", default=str(HERE / "RESULTS.jsonl"), help="where the raw figures are kept"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="write the report from --rows; run nothing"
    )
    args = parser.parse_args()
    rows_file = Path(args.rows)
    missing = []
    if not args.report_only:
        kept = []
        if args.only and rows_file.exists():
            kept = [r for r in read_rows(rows_file) if r["benchmark"] not in args.only]
        rows_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
        for name, script, full, quick in PLAN:
            if args.only and name not in args.only:
                continue
            if not run(script, quick if args.quick else full, rows_file):
                missing.append(name)
    order = {name: index for index, (name, *_) in enumerate(PLAN)}
    rows = sorted(read_rows(rows_file), key=lambda r: order.get(r["benchmark"], len(order)))
    out = Path(args.out)
    out.write_text(report(rows, missing, quick=args.quick))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def run(script: str, arguments: list[str], rows_file: Path) -> bool:
    """Run one benchmark script; False when it is missing or failed."""
    path = HERE / script
    if not path.exists():
        print(f"-- {script}: not there, skipped")
        return False
    schema = f"bench_all_{os.getpid()}_{int(time.time())}"
    argv = [a.replace("{pg}", f"{POSTGRES}?schema={schema}") for a in arguments]
    print(f"-- {script} {' '.join(argv)}", flush=True)
    try:
        done = subprocess.run([sys.executable, str(path), *argv, "--json-out", str(rows_file)])
    finally:
        drop_schema(schema)
    return done.returncode == 0


def drop_schema(schema: str) -> None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception:  # no server: nothing was created there
        pass


def machine() -> list[str]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return [
        f"* report written: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} (each "
        "benchmark says when it was measured)",
        f"* machine: {os.cpu_count()} cores, {memory:.0f} GiB, {platform.machine()}, "
        f"{platform.system()} {platform.release()}",
        f"* Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"PostgreSQL {postgres_version()}",
    ]


def postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES, connect_timeout=5) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"


def report(rows: list[dict], missing: list[str], *, quick: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        *machine(),
        f"* sizes: each figure names its own (this run: {'quick' if quick else 'full'}); "
        "every baseline was measured in the same run as its figure",
        "",
    ]
    by_benchmark: dict[str, list[dict]] = {name: [] for name, *_ in PLAN}
    for row in rows:
        by_benchmark.setdefault(row["benchmark"], []).append(row)
    for name, found in by_benchmark.items():
        if not found:
            continue
        runs = sorted({(r.get("measured", "before 2026-11-24"), r.get("pace")) for r in found})
        lines += [
            f"## {name}",
            "",
            f"measured {', '.join(when_and_pace(*run) for run in runs)}",
            "",
            "| db | figure | value | baseline | baseline value | ratio | target | met | note |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in found:
            lines.append(
                f"| {r['db']} | {r['figure_name']} | {r['figure']:,.1f} {r['unit']} | "
                f"{r['baseline_name']} | {r['baseline']:,.1f} {r['unit']} | "
                f"{r['ratio']:.2f}× | {target_of(r)} | {MET[r['met']]} | {r.get('note', '')} |"
            )
        lines.append("")
    if missing:
        lines += [
            "## Not measured",
            "",
            *(f"* {m}: the script is missing or failed" for m in missing),
            "",
        ]
    lines += ["![events per second](RESULTS.png)", ""]
    return "\n".join(lines)


MET = {True: "yes", False: "**no**", None: "–"}


def when_and_pace(measured: str, pace: float | None) -> str:
    if pace is None:
        return measured
    return f"{measured} (machine pace: {PACE_STEPS:,} Python additions in {pace:.2f} s)"


def target_of(row: dict) -> str:
    if row["target"] is None:
        return "– (context)"
    return f"{'≥' if row['higher_is_better'] else '≤'} {row['target']:g}×"


def plot(rows: list[dict], path: Path) -> None:
    """Events per second of each benchmark beside its baselines, per database."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [r for r in rows if r["unit"] == "events/s"]
    if not rates:
        return
    bars: dict[str, float] = {}
    for r in rates:
        bars[f"{r['benchmark']} ({r['db']})"] = r["figure"]
        bars[f"  {r['baseline_name']} ({r['db']})"] = r["baseline"]
    figure, axes = plt.subplots(figsize=(10, 0.4 * len(bars) + 1.5))
    labels = list(bars)
    colours = ["tab:blue" if not label.startswith("  ") else "tab:gray" for label in labels]
    axes.barh(labels, [bars[k] for k in labels], color=colours)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("events per second (log scale); blue: Journey, grey: baselines")
    axes.set_title("Journey benchmarks")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
