"""How commands report: results on stdout, errors on stderr, JSON when asked.

Exit codes are a contract: 0 success, 1 rejected input, 2 usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from eventsourcing.persistence import MapperDeserialisationError
from rich.console import Console
from rich.markup import escape

from journey.errors import InputError, JourneyError

OK, REJECTED, USAGE = 0, 1, 2
#: What a shell reports for a program stopped by SIGINT (128 + 2).
INTERRUPTED = 130

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: Any, *, stderr: bool = False) -> None:
    stream = sys.stderr if stderr else sys.stdout
    stream.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    stream.flush()


def fail(message: str, *, as_json: bool, code: int = REJECTED, **details: Any) -> NoReturn:
    if as_json:
        emit_json({"error": message, **details}, stderr=True)
    else:
        err.print(f"[red]error:[/red] {escape(message)}", markup=True)
    raise typer.Exit(code)


@contextmanager
def interruptible(as_json: bool) -> Iterator[None]:
    """Ctrl-C while storing: say what it leaves behind (an import over one batch is not
    one transaction) rather than end in silence."""
    try:
        yield
    except KeyboardInterrupt:
        fail(
            "interrupted: the batches stored before it stay stored; importing the same "
            "input again stores the rest, and is safe",
            as_json=as_json,
            code=INTERRUPTED,
        )


@contextmanager
def reporting(as_json: bool) -> Iterator[None]:
    """Turn Journey's own errors into a clear message and the right exit code."""
    try:
        yield
    except InputError as exc:
        fail(
            str(exc),
            as_json=as_json,
            code=REJECTED,
            errors=[e.as_dict() for e in getattr(exc, "errors", [exc])],
        )
    except JourneyError as exc:
        fail(str(exc), as_json=as_json, code=REJECTED)
    except MapperDeserialisationError as exc:  # a stored state no reader takes: altered
        fail(
            f"a stored event cannot be read ({exc.__cause__ or exc}): it was altered outside "
            "Journey; journey verify says which",
            as_json=as_json,
            code=REJECTED,
        )
