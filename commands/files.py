"""Reading import files: JSON lines or CSV, each record numbered by the line it starts on."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from journey.errors import InputError

Record = tuple[int, dict[str, Any] | InputError]


class DuplicateKey(Exception):
    """An object of a JSON text names a key twice."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused if it names a key twice: json would keep the last silently."""
    data = dict(pairs)
    if len(data) < len(pairs):
        raise DuplicateKey(twice(key for key, _ in pairs))
    return data


def twice(names: Iterable[str]) -> str:
    """The first name of ``names`` that comes more than once."""
    return next(name for name, count in Counter(names).items() if count > 1)


#: One decoder for every line: json.loads with parse_float builds a new one each call.
#: Numbers with a fraction become Decimals, so 59.90 is never rounded through a float.
DECODER = json.JSONDecoder(parse_float=Decimal, object_pairs_hook=unique_keys)


def decode_json(text: str, where: str) -> Any:
    """One JSON value, or an InputError (on ``where``, or on a key given twice) for
    everything the decoder raises: beyond JSONDecodeError, a ValueError for an integer
    over Python's limit on digits and a RecursionError for deep nesting, which crashed."""
    try:
        return DECODER.decode(text)
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON: {exc.msg} at column {exc.colno}"
    except DuplicateKey as exc:
        name = exc.args[0]
        raise InputError(name, f"duplicate field {name}: given more than once") from None
    except ValueError:
        reason = f"has a number of more than {sys.get_int_max_str_digits()} digits"
    except RecursionError:
        reason = "is nested too deeply to read"
    raise InputError(where, reason)


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
            yield number, decode_json(line, "(line)")
        except InputError as error:
            error.text = line.rstrip("\n")  # for a rejects file
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
            if problem := header_problem(header):
                yield start, problem
                return
        elif len(cells) > len(header):
            yield start, InputError("(line)", "has more cells than the header has names")
        else:
            missing = [None] * (len(header) - len(cells))  # absent, like an empty cell
            yield start, unflatten(dict(zip(header, cells + missing, strict=True)))
        start = reader.line_num + 1


def header_problem(header: list[str]) -> InputError | None:
    """Why a header cannot be read unambiguously (then no row of it is): a name given
    twice, or ``personal`` beside ``personal.name``, whose values would overwrite each
    other (or crash)."""
    if len(set(header)) < len(header):
        name = twice(header)
        return InputError(
            name, f"duplicate field {name}: the header names it twice, so no row was read"
        )
    for name in header:
        outer = name.split(".", 1)[0]
        if outer != name and outer in header:
            return InputError(
                outer, f"is a column and so is {name}: use one or the other (no row was read)"
            )
    return None


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
