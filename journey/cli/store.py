"""Commands that write: `import`, `record` and `demo`."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from commands.files import decode_json, is_csv, open_input
from commands.handlers import Outcome
from journey.api import Journey, RejectedInput
from journey.cli.app import Options, app
from journey.cli.output import USAGE, emit_json, err, fail, interruptible, out, reporting
from journey.errors import InputError
from journey.storage import ENV_VAR, Database, StorageError

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output and errors.")]
PROGRESS_MIN_LINES = 5000


def open_engine(ctx: typer.Context, as_json: bool, existing: bool = False) -> Journey:
    """The store of ``--db``; ``existing``: only one Journey has used before (see
    ``must_exist``)."""
    options: Options = ctx.obj
    try:
        if existing:
            must_exist(options.db)
        return Journey(options.db, actor=options.actor)
    except StorageError as exc:
        fail(str(exc), as_json=as_json, code=USAGE)


def must_exist(url: str | None) -> None:
    """For the commands that only read (or erase): a mistyped ``--db`` is a usage error,
    not a new empty store reported on."""
    database = Database.parse(url)
    if not database.holds_a_store():
        raise StorageError(
            f"no Journey store at {database.url.render_as_string()}: check --db (or "
            f"{ENV_VAR}); commands that only read do not create one"
        )


@app.command("import")
def import_files(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="JSONL or CSV (.csv) files; - for stdin.")],
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Store the good lines; write bad ones to --rejects."),
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option("--rejects", metavar="FILE", help="Where --skip-invalid writes bad lines."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate whole files, then store their events (or nothing, if any line is bad)."""
    if skip_invalid and rejects is None:
        fail(
            "--skip-invalid needs --rejects FILE to say where bad lines go",
            as_json=as_json,
            code=USAGE,
        )
    if rejects is not None and not skip_invalid:
        fail(
            "--rejects goes with --skip-invalid (without it a bad line stores nothing, and "
            "every bad line is listed here)",
            as_json=as_json,
            code=USAGE,
        )
    paths = [str(f) for f in files]
    for path in paths:
        if problem := unreadable(path):
            fail(f"{problem}: {path}", as_json=as_json, code=USAGE)
    sink = open_rejects(rejects, paths, ctx.obj.db, as_json) if rejects else nullcontext()
    engine = open_engine(ctx, as_json)
    with sink as handle:
        if handle is not None and emptiable(handle):  # the store opened: now it may be
            handle.truncate(0)
        with reporting(as_json), interruptible(as_json), engine, progress_bar(paths) as bar:
            outcome = engine.import_files(
                paths,
                skip_invalid=skip_invalid,
                on_validated=bar and bar.validated,
                on_stored=bar and bar.stored,
            )
        if handle is not None:
            write_rejects(handle, outcome)
    report_import(outcome, skip_invalid=skip_invalid, rejects=rejects, as_json=as_json)


def unreadable(path: str) -> str | None:
    """Why ``path`` cannot be imported, if it cannot: a pipe (``/dev/stdin``, ``<(zcat
    ...)``) can, though it is no regular file."""
    if path == "-":
        return None
    if not Path(path).exists():
        return "no such file"
    if Path(path).is_dir():
        return "a directory, not a file"
    return None


def open_rejects(
    path: Path, inputs: list[str], url: str | None, as_json: bool
) -> AbstractContextManager[TextIO]:
    """The rejects file, opened before anything is imported: a path that could not be
    written failed only after the good lines were stored. Opened to append, so a usage
    error found later (a bad ``--db``) leaves it as it was; emptied once the store is open.
    Never one of the inputs, nor the SQLite store's own files: opening those emptied them
    (the whole store, while the import reported its events stored)."""
    if any(p != "-" and same_file(Path(p), path) for p in inputs):
        fail(f"--rejects {path} is one of the files to import", as_json=as_json, code=USAGE)
    if any(same_file(store, path) for store in store_files(url)):
        fail(f"--rejects {path} is the store's own file (--db)", as_json=as_json, code=USAGE)
    if (stream := standard_stream(path)) is not None:
        if as_json and stream is sys.stdout:
            fail(
                "--rejects to standard output would come before --json's summary there: "
                "name a file",
                as_json=True,
                code=USAGE,
            )
        return nullcontext(stream)  # never closed here
    try:  # made readable by its owner alone: it holds personal data in plaintext
        return open(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a", encoding="utf-8"
        )
    except OSError as exc:
        fail(f"cannot write --rejects {path}: {exc.strerror}", as_json=as_json, code=USAGE)


def standard_stream(path: Path) -> TextIO | None:
    """Standard output or error, when ``path`` is ``-`` or names one of them. Written
    through that stream, the rejects share its position in the file: opened anew,
    ``--rejects /dev/stdout > out.txt`` wrote the summary over the first rejects."""
    if str(path) == "-":
        return sys.stdout
    try:
        target = os.stat(path)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError, io.UnsupportedOperation):
            std = os.fstat(stream.fileno())
            if (std.st_dev, std.st_ino) == (target.st_dev, target.st_ino):
                return stream
    return None


def same_file(one: Path, other: Path) -> bool:
    """One file under two names: the same path, a symbolic or a hard link."""
    if one.resolve() == other.resolve():
        return True
    try:
        return one.samefile(other)
    except OSError:  # one of them does not exist yet
        return False


def emptiable(handle: TextIO) -> bool:
    """Whether the rejects file is a regular file of its own: not a device or a pipe, nor
    standard output or error written through (``--rejects /dev/stdout >> log`` emptied
    the log appended to)."""
    if handle is sys.stdout or handle is sys.stderr:
        return False
    return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)


def store_files(url: str | None) -> set[Path]:
    """The files of a SQLite store (its database, journal and write-ahead log)."""
    try:
        database = Database.parse(url)
    except StorageError:
        return set()  # said when the store is opened
    if database.is_postgres or database.in_memory:
        return set()
    store = Path(database.sqlite_path).resolve()
    return {store, *(store.with_name(store.name + end) for end in ("-wal", "-shm", "-journal"))}


class ImportBar:
    """Two phases of a large import on a terminal: the lines validated (and applied),
    then the events stored, batch by batch (a bar that stood full while a long store ran
    looked hung)."""

    def __init__(self, progress: Progress, lines: int):
        self.progress = progress
        self.validating = progress.add_task("validating", total=lines)
        self.storing: TaskID | None = None

    def validated(self, count: int) -> None:
        self.progress.advance(self.validating, count)

    def stored(self, count: int) -> None:
        if self.storing is None:  # validation is over: the bar goes on with storing
            self.progress.update(self.validating, visible=False)
            self.storing = self.progress.add_task("storing", total=None)
        self.progress.advance(self.storing, count)


@contextmanager
def progress_bar(paths: list[str]) -> Iterator[ImportBar | None]:
    """A bar for large files on a terminal; nothing otherwise."""
    if not err.is_terminal:
        yield None
        return
    lines = sum(count_lines(p) for p in paths)
    if lines < PROGRESS_MIN_LINES:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        yield ImportBar(progress, lines)


def count_lines(path: str) -> int:
    if path == "-" or not Path(path).is_file():  # a pipe is read once, by the import
        return 0
    try:
        with open_input(path) as handle:
            lines = sum(1 for _ in handle)
    except (OSError, EOFError, zlib.error):  # not whole gzip data: the import says so
        return 0
    return lines - 1 if is_csv(path) else lines  # a header is no input


def write_rejects(handle: TextIO, outcome: Outcome) -> None:
    """One JSON object a line: where the input was, why it was refused, and the input
    itself, so it can be mended and imported again."""
    for rejected in outcome.rejected:
        raw = rejected.raw
        record = {
            **rejected.as_dict(),
            "input": getattr(raw, "text", None) if isinstance(raw, Exception) else raw,
        }
        handle.write(rejects_line(record) + "\n")


def rejects_line(record: dict[str, Any]) -> str:
    """``record`` as JSON, readable where it can be: a string holding half of a UTF-16
    pair (JSON's escapes allow it) has no UTF-8 form, so that line escapes all it holds."""
    text = json.dumps(record, ensure_ascii=False, default=jsonable)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, default=jsonable)
    return text


def jsonable(value: Any) -> Any:
    """What json cannot write itself: models and Decimals. The nesting is json's to walk
    (in C): a Python walk of an input nested hundreds deep overflowed the stack."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


#: How many bad lines an import that wrote them to a rejects file also shows on stderr.
SHOWN_REJECTS = 20


def report_import(
    outcome: Outcome, *, skip_invalid: bool, rejects: Path | None, as_json: bool
) -> None:
    refused = bool(outcome.rejected) and not skip_invalid
    if as_json:
        summary = outcome.as_dict()
        if refused:
            emit_json(
                {
                    "error": f"{len(outcome.rejected)} bad input line(s); nothing was stored",
                    **summary,
                },
                stderr=True,
            )
        else:
            emit_json({key: value for key, value in summary.items() if key != "errors"})
    else:
        for path in outcome.empty_files:
            err.print(f"note: {escape(path)} holds no events", highlight=False)
        # Written to a rejects file, every bad line is there: a few show what went wrong.
        shown = outcome.rejected if refused else outcome.rejected[:SHOWN_REJECTS]
        for rejected in shown:
            where = (
                f"{rejected.source}:{rejected.line}" if rejected.source else f"line {rejected.line}"
            )
            for error in rejected.errors:
                err.print(
                    f"[red]{escape(where)}[/red]: {escape(f'{error.field}: {error.reason}')}",
                    markup=True,
                    highlight=False,
                )
        if len(shown) < len(outcome.rejected):
            more = len(outcome.rejected) - len(shown)
            err.print(f"... and {more} more bad line(s), each with its errors in the rejects")
        if refused:
            err.print(f"{len(outcome.rejected)} bad line(s); nothing was stored.")
        else:
            where = "standard output" if str(rejects) == "-" else rejects
            written = f" (written to {where})" if outcome.rejected and rejects else ""
            out.print(
                f"stored {outcome.stored} events ({outcome.derived} derived by the engine), "
                f"skipped {outcome.duplicates} duplicates, "
                f"rejected {len(outcome.rejected)}{written}"
            )
    if refused:
        raise typer.Exit(1)


@app.command("record")
def record(
    ctx: typer.Context,
    event: Annotated[
        str | None, typer.Argument(help="The event as a JSON object; read from stdin if absent.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Store one event and print its position in the log."""
    text = event if event is not None else sys.stdin.read().removeprefix("\ufeff")
    if not text.strip():
        where = "the argument is empty" if event is not None else "standard input was empty"
        fail(f"no event given: {where} (give a JSON object)", as_json=as_json, code=USAGE)
    try:
        data = decode_json(text, "(event)")
    except InputError as exc:
        fail(str(exc), as_json=as_json, errors=[exc.as_dict()])
    engine = open_engine(ctx, as_json)
    with reporting(as_json), engine:
        try:
            recorded = engine.record(data)
        except RejectedInput as exc:
            fail(str(exc), as_json=as_json, errors=[e.as_dict() for e in exc.errors])
    if as_json:
        emit_json(
            {
                "position": recorded.position,
                "positions": recorded.positions,
                "duplicate": recorded.duplicate,
                # the counts import and POST /v1/events answer, for one event
                "stored": len(recorded.positions),
                "derived": max(len(recorded.positions) - 1, 0),
                "duplicates": int(recorded.duplicate),
            }
        )
    elif recorded.duplicate:
        out.print("already recorded: nothing stored")
    else:
        derived = len(recorded.positions) - 1
        extra = f" (+{derived} derived by the engine)" if derived else ""
        out.print(f"stored at position {recorded.position}{extra}")


def refuse_if_others(engine: Journey, prefix: str, what: str, as_json: bool = False) -> None:
    """A usage error if the store holds a customer whose id does not start with
    ``prefix``: ``what`` would be added among them for good."""
    other = engine.app.a_customer_besides(prefix)
    if other is not None:
        fail(
            f"{what}, and this store already holds customers ({other!r}, ...): events "
            "are never removed. Use an empty store (--db sqlite:///demo.db), or pass "
            "--into-existing to add them anyway",
            as_json=as_json,
            code=USAGE,
        )


@app.command("demo")
def demo(
    ctx: typer.Context,
    customers: Annotated[int, typer.Option(min=1, help="How many customers to simulate.")] = 300,
    seed: Annotated[int, typer.Option(help="Random seed of the sample.")] = 7,
    into_existing: Annotated[
        bool,
        typer.Option(
            "--into-existing", help="Add the sample to a store that already holds customers."
        ),
    ] = False,
) -> None:
    """Record a realistic sample of customers through the normal import path, bring the
    read models up to date and show today's funnel. Only into an empty store, unless asked:
    events are never removed, and made-up customers would stay among real ones."""
    from journey.cli.projections import print_funnel
    from journey.demo import print_demo_summary, run_demo
    from projections.readmodels.operate import ReadModels
    from projections.readmodels.queries import funnel
    from projections.settings import DEFAULT

    options: Options = ctx.obj
    engine = open_engine(ctx, False)
    with reporting(False), engine:
        if not into_existing:
            refuse_if_others(engine, "", "journey demo records made-up customers")
        summary = run_demo(engine, customers=customers, seed=seed)
        print_demo_summary(summary, out)
    models = ReadModels.open(options.db, DEFAULT)
    with reporting(False), closing(models):
        models.refresh(["summary", "timeline", "purchases"])
        out.print()
        print_funnel(funnel(models.store, datetime.now(UTC)))
    one = f"journey show {summary.busiest} · journey history {summary.busiest} · "
    out.print(
        f"\nTry: {one if summary.busiest else ''}"
        "journey funnel --from 2024-01-01 --to 2025-01-01 · journey projections status"
    )
