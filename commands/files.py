"""Reading import files: JSON lines or CSV, each record numbered by the line it starts on."""

from __future__ import annotations

import csv
import gzip
import json
import re
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

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
        line = f"line {exc.lineno} " if exc.lineno > 1 else ""  # a text of several lines
        reason = f"not valid JSON: {exc.msg} at {line}column {exc.colno}"
    except DuplicateKey as exc:
        name = exc.args[0]
        raise InputError(name, f"duplicate field {name}: given more than once") from None
    except ValueError:
        reason = f"has a number of more than {sys.get_int_max_str_digits()} digits"
    except RecursionError:
        reason = "is nested too deeply to read"
    raise InputError(where, reason)


def read_records(path: str) -> Iterator[Record]:
    """Each record of a file (``-`` is standard input, read as JSON lines; a name ending in
    ``.gz`` is decompressed, its format named by the rest). UTF-8, with or without the
    byte-order mark spreadsheet programs write. A file in another form (gzip, UTF-16, a
    workbook) is one bad line that says so, not a bad line for each of its lines, none of
    which says why."""
    line = 0
    try:
        with open_input(path) as handle:
            if problem := other_form(handle.peek(16)[:16]):
                yield 1, InputError("(file)", problem)
                return
            for line, record in records_of(path, handle):
                yield line, record
    except (OSError, EOFError, zlib.error) as exc:
        if not path.lower().endswith(".gz"):
            raise
        yield line + 1, InputError("(file)", f"is not whole gzip data: {exc}")


def records_of(path: str, handle: Iterable[bytes]) -> Iterator[Record]:
    if is_csv(path):
        return read_csv(utf8_lines(handle), REQUIRED_COLUMNS)
    return read_jsonl(handle)


def is_csv(path: str) -> bool:
    """CSV is chosen by the file's name (``.csv``, ``.csv.gz``); the rest is JSON lines."""
    return path != "-" and path.lower().removesuffix(".gz").endswith(".csv")


def open_input(path: str) -> ContextManager[Any]:
    """A file's bytes, buffered so that its start can be peeked at."""
    if path == "-":
        return nullcontext(sys.stdin.buffer)
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return Path(path).open("rb")


#: What a file that is not UTF-8 text starts with, and what to do about it.
FORMS = {
    b"\x1f\x8b": "is gzip-compressed: name it .gz (in.csv.gz), or decompress it first",
    b"\xff\xfe": 'is UTF-16 text (Excel\'s "Unicode Text"): save it as UTF-8 ("CSV UTF-8")',
    b"\xfe\xff": "is UTF-16 text: save it as UTF-8",
    b"PK\x03\x04": 'is a zip archive (an Excel workbook?): save it as "CSV UTF-8" first',
    b"SQLite format 3\x00": "is a SQLite database, not a file of events",
}


def other_form(start: bytes) -> str | None:
    return next((why for magic, why in FORMS.items() if start.startswith(magic)), None)


def read_jsonl(lines: Iterable[bytes]) -> Iterator[Record]:
    """JSON lines, read as bytes so that a line that is not UTF-8 is one bad line."""
    for number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield number, not_utf8(exc, raw, number == 1)
            continue
        if not line.strip():
            continue
        try:
            value = decode_json(line, "(line)")
            if not isinstance(value, dict):  # refused as parse_command refuses it, but
                raise InputError("(event)", "must be a JSON object")  # kept as its text
            yield number, value
        except InputError as error:
            if number == 1 and looks_like_csv(line):
                error = InputError(error.field, error.reason + CSV_HINT)
            error.text = line.rstrip("\n")  # for a rejects file
            yield number, error


CSV_HINT = "; if this is CSV, its file name must end in .csv (standard input is JSON lines)"


def looks_like_csv(line: str) -> bool:
    """A header line of names with separators, where a JSON object was expected."""
    return not line.lstrip().startswith(("{", "[")) and any(c in line for c in ",;\t")


def not_utf8(exc: UnicodeDecodeError, raw: bytes, first: bool = False) -> InputError:
    """A line that is not UTF-8, with its text for a rejects file: what is UTF-8 in it as
    it is, the rest as ``\\xe9``-style escapes to mend (a first line without the byte-order
    mark, which the position counts past, as the decoder did)."""
    error = InputError("(line)", f"is not UTF-8 text (byte {exc.start + 1} of the line)")
    text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
    error.text = text.removeprefix("\ufeff") if first else text
    return error


def utf8_lines(handle: Iterable[bytes]) -> Iterator[str | InputError]:
    """Each line of a file as text, or why it is not UTF-8 text: one bad line, where
    decoding the file as a whole lost every line after it. Lines end where the csv module
    ends them when it reads a file itself: at a line feed, or a carriage return not
    followed by one (files saved with carriage returns alone, or ``\\r\\r\\n``)."""
    first = True
    for raw in handle:
        for line in LINE.findall(raw) if raw.count(b"\r") > raw.endswith(b"\r\n") else (raw,):
            try:
                yield line.decode("utf-8-sig" if first else "utf-8")
            except UnicodeDecodeError as exc:
                yield not_utf8(exc, line, first)
            first = False


LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def read_csv(lines: Iterable[str | InputError], required: tuple[str, ...] = ()) -> Iterator[Record]:
    """CSV with a header of field names; an empty cell is an absent field, and
    ``personal.name``-style columns fill the ``personal`` object. ``lines`` are text, or
    the error of a line that could not be read as text."""
    yield from csv_rows(Lines(lines), required)


class Lines:
    """A file's lines as the csv module reads them, counted (a row starts on the line after
    the last one read), keeping the lines of the row being read so that the lines after
    the first of a row it could not read can be read again, as rows of their own. A line
    that is no text reads as an empty one, its error kept in ``unreadable``."""

    def __init__(self, lines: Iterable[str | InputError]):
        self.source = iter(lines)
        self.again: list[str | InputError] = []  # lines put back, the next one last
        self.number = 0
        self.row: list[str | InputError] = []
        self.unreadable: list[tuple[int, InputError]] = []

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        line = self.again.pop() if self.again else next(self.source)
        self.number += 1
        self.row.append(line)
        if isinstance(line, InputError):
            self.unreadable.append((self.number, line))
            return "\n"
        return line

    def start_row(self) -> int:
        self.row, self.unreadable = [], []
        return self.number + 1

    def read_again_after_first(self) -> None:
        rest = self.row[1:]
        self.again.extend(reversed(rest))
        self.number -= len(rest)


def csv_rows(lines: Lines, required: tuple[str, ...] = ()) -> Iterator[Record]:
    """Each row as a record, or why it is a bad line. csv.reader rather than DictReader:
    DictReader skips blank lines silently, which would shift every later line number.
    Strict: a quote not closed or out of place is an error, not a cell that swallows the
    lines after it (or a quote quietly dropped); its first line is the bad line and the
    reading goes on with the line after it, with a new reader (the old one is mid-cell).
    A line that is not text is a bad line, and so is a row that runs on into one."""
    header: list[str] | None = None
    unusable: str | None = None  # once the header cannot be used: why each later row is bad
    reader = csv.reader(lines, strict=True)
    while True:
        start = lines.start_row()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if unusable:
                yield start, bad_row(unusable, lines)
            else:
                spans = lines.number > start
                quote = f"a quote opened on line {start} is not closed by line {lines.number}"
                yield start, bad_start(f"is not valid CSV: {exc}", lines, spans and quote, header)
        else:
            if unusable:  # each row under a header that cannot be used, counted and kept
                if any(cells) or lines.unreadable:
                    yield start, bad_row(unusable, lines)
                continue
            if lines.unreadable and len(lines.row) > 1:
                into = f"it runs on into line {lines.unreadable[0][0]}, which is not UTF-8 text"
                yield start, bad_start("is not a row", lines, into, header)
            elif lines.unreadable:  # a line that is no text, read alone (as a blank row)
                yield from lines.unreadable
                if header is None:  # a header not read is no header: no row of it is read
                    unusable = unread(start)
                continue
            elif not any(cells):  # blank, or only separators: a spreadsheet's empty row
                continue
            elif header is None:
                if problem := stray_quote_error(lines) or header_problem(cells, required):
                    if not hasattr(problem, "text"):
                        problem.text = bad_row("", lines).text  # the header, for rejects
                    yield start, problem
                    unusable = unread(start)
                    continue
                header = cells
                continue
            else:
                yield start, row_of(cells, lines, header)
                continue
        lines.read_again_after_first()  # the lines after the first, as rows of their own
        reader = csv.reader(lines, strict=True)  # the old one is mid-cell
        if header is None and unusable is None:  # the header could not be read
            unusable = unread(start)


def unread(header_line: int) -> str:
    """Why a row under a header that cannot be used is a bad line of its own: so that
    each is counted and reaches the rejects file (as read, or unreadable)."""
    return f"was not read: the header on line {header_line} cannot be used"


def bad_start(reason: str, lines: Lines, why: str | bool, header: list[str] | None) -> InputError:
    """The first line of a row that could not be read whole: the bad line (its own error,
    if it is no text), with its text for a rejects file; the lines after it are read again,
    as rows of their own, unless it was the header."""
    first = lines.row[0]
    if isinstance(first, InputError):
        return first
    if why:
        after = "the lines after it were read as rows of their own" if header else "no row was read"
        reason += f" ({why}; {after})"
    return bad_row(reason, lines)


def row_of(cells: list[str], lines: Lines, header: list[str]) -> dict[str, Any] | InputError:
    """A row read whole, as a record, or why it is a bad line."""
    if problem := stray_quote_error(lines):
        return problem
    extra = len(cells) - len(header)
    if extra > 0 and any(cells[len(header) :]):
        return whole_row(InputError("(line)", "has more cells than the header has names"), lines)
    cells = cells[: len(header)] + [""] * -extra  # beyond the row: absent, as an empty cell
    named = {}
    for column, (name, cell) in enumerate(zip(header, cells, strict=True), start=1):
        if name:
            named[name] = cell
        elif cell:
            reason = f"has a value in column {column}, which the header does not name"
            return whole_row(InputError("(line)", reason), lines)
    return unflatten(named)


def whole_row(error: InputError, lines: Lines) -> InputError:
    """``error`` with the text of its whole row (cells over several lines too), to mend."""
    error.text = "".join(lines.row).rstrip("\r\n")
    return error


def stray_quote_error(lines: Lines) -> InputError | None:
    if not stray_quote(lines.row):
        return None
    reason = "is not valid CSV: a quote inside a cell that does not begin with one"
    return bad_row(reason + " (quote the whole cell, doubling its quotes)", lines)


def bad_row(reason: str, lines: Lines) -> InputError:
    """A row that is no record, with its first line's text for a rejects file."""
    error = InputError("(line)", reason)
    first = lines.row[0] if lines.row else ""
    error.text = first.rstrip("\r\n") if isinstance(first, str) else first.text
    return error


def stray_quote(row: list[str]) -> bool:
    """Whether the text of a row holds a quote inside a cell that does not begin with one,
    which the csv module keeps as text: RFC 4180 allows quotes only around a whole cell,
    doubled inside it."""
    text = "".join(row)
    if '"' not in text:
        return False
    inside = quoted = False  # within a quoted cell's quotes; the cell began with a quote
    at_start = True
    for char in text:
        if inside:
            inside = char != '"'
        elif char == '"':
            if not (at_start or quoted):
                return True
            inside = quoted = True  # opening, or a doubled quote going on with the cell
        elif char in ",\r\n":
            quoted = False
        at_start = char in ",\r\n"
    return False


def header_problem(header: list[str], required: tuple[str, ...] = ()) -> InputError | None:
    """Why a header cannot be read unambiguously (then no row of it is): a name given
    twice, or ``personal`` beside ``personal.name``, whose values would overwrite each
    other (or crash). Columns without a name are allowed while they stay empty."""
    named = [name for name in header if name]  # spreadsheets add empty columns after the last
    if len(set(named)) < len(named):
        name = twice(named)
        return InputError(
            name, f"duplicate field {name}: the header names it twice, so no row was read"
        )
    for name in header:
        outer = name.split(".", 1)[0]
        if outer != name and outer in header:
            return InputError(
                outer, f"is a column and so is {name}: use one or the other (no row was read)"
            )
    return missing_columns(header, required)


#: The columns every row needs: without them in the header, no row can be read.
REQUIRED_COLUMNS = ("type", "customer_id", "occurred_at")


def missing_columns(header: list[str], required: tuple[str, ...]) -> InputError | None:
    """A header without a required column is the fault, said once (not "type: is
    required" on every row): most often names in other letters, or another delimiter."""
    missing = [name for name in required if name not in header]
    if not missing:
        return None
    near = [
        f"{name!r} for {plain!r}" for name in header if (plain := name.strip().lower()) in missing
    ]
    if near:
        hint = f"; names are lower case, with no spaces around them: {', '.join(near)}"
    elif len(header) == 1 and (delimiter := next((d for d in ";\t|" if d in header[0]), None)):
        hint = f"; the file seems to use {delimiter!r} between cells, not ','"
    else:
        hint = f"; the header names {', '.join(map(repr, header))}"
    return InputError("(header)", f"has no column {', '.join(missing)}{hint} (no row was read)")


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
