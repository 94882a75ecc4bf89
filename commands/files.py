"""Reading import files: JSON lines or CSV, each record numbered by the line it starts on."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from journey.errors import InputError

Record = tuple[int, dict[str, Any] | InputError]

#: One decoder for every line: json.loads with parse_float builds a new one each call.
#: Numbers with a fraction become Decimals, so 59.90 is never rounded through a float.
DECODER = json.JSONDecoder(parse_float=Decimal)


def read_records(path: str) -> Iterator[Record]:
    """Each record of a file (``-`` is standard input, read as JSON lines). UTF-8, with or
    without the byte-order mark spreadsheet programs write."""
    if path == "-":
        yield from read_jsonl(sys.stdin.buffer)
    elif path.lower().endswith(".csv"):
        yield from read_csv_file(Path(path))
    else:
        with Path(path).open("rb") as handle:
            yield from read_jsonl(handle)


def read_jsonl(lines: Iterable[bytes]) -> Iterator[Record]:
    """JSON lines, read as bytes so that a line that is not UTF-8 is one bad line."""
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, not_utf8(exc)
            continue
        if not line.strip():
            continue
        try:
            yield number, DECODER.decode(line)
        except json.JSONDecodeError as exc:
            error = InputError("(line)", f"not valid JSON: {exc.msg} at column {exc.colno}")
            error.text = line.rstrip("\n")
            yield number, error


def not_utf8(exc: UnicodeDecodeError) -> InputError:
    return InputError("(line)", f"is not UTF-8 text (byte {exc.start + 1} of the line)")


def read_csv_file(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        yield from read_csv(handle)


def read_csv(handle: TextIO) -> Iterator[Record]:
    """CSV with a header of field names; an empty cell is an absent field, and
    ``personal.name``-style columns fill the ``personal`` object."""
    # csv.reader rather than DictReader: DictReader skips blank lines silently, which
    # would shift every later line number. A row starts on the line after the last one read.
    # strict: an unclosed or stray quote is an error, not a cell that swallows the lines
    # after it (or a quote quietly dropped).
    reader = csv.reader(handle, strict=True)
    try:
        yield from csv_rows(reader)
    except UnicodeDecodeError:
        # Text is decoded a block at a time, so the fault is at or a little after here.
        yield (
            reader.line_num + 1,
            InputError("(file)", "is not UTF-8 text from about this line on; save it as UTF-8"),
        )


def csv_rows(reader: Any) -> Iterator[Record]:
    header: list[str] | None = None
    start = 1
    for cells in csv_cells(reader):
        if isinstance(cells, csv.Error):
            yield start, not_csv(cells, start, reader.line_num)
        elif not cells:
            pass
        elif header is None:
            header = cells
        elif len(cells) > len(header):
            yield start, InputError("(line)", "has more cells than the header has names")
        else:
            missing = [None] * (len(header) - len(cells))  # absent, like an empty cell
            yield start, unflatten(dict(zip(header, cells + missing, strict=True)))
        start = reader.line_num + 1


def csv_cells(reader: Any) -> Iterator[list[str] | csv.Error]:
    """Each row's cells, or the error of a row the csv module cannot read (a quote not
    closed or out of place, a cell over its size limit): one bad row, not a crash.
    The reader goes on with the line after the one it stopped at."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield exc


def not_csv(exc: csv.Error, start: int, end: int) -> InputError:
    if end <= start:
        return InputError("(line)", f"is not valid CSV: {exc}")
    return InputError(
        "(line)",
        f"is not valid CSV: {exc} (the row runs from line {start} to line {end}; "
        "is a closing quote missing?)",
    )


def unflatten(row: dict[str, str | None]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or value == "":
            continue
        if "." in name:
            outer, inner = name.split(".", 1)
            record.setdefault(outer, {})[inner] = value
        else:
            record[name] = value
    return record
