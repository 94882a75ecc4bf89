"""`journey keys create|revoke|list`: the API keys of the HTTP service."""

from __future__ import annotations

from contextlib import closing
from typing import Annotated

import typer
from rich.table import Table

from journey.cli.app import Options, app
from journey.cli.output import REJECTED, USAGE, emit_json, fail, out
from journey.storage import Database, StorageError, make_engine
from service.keys import SCOPES, KeyExists, KeyProblem, Keys

keys = typer.Typer(help="API keys for `journey serve`.", no_args_is_help=True)
app.add_typer(keys, name="keys")

JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


class _Opened:
    def __init__(self, ctx: typer.Context, as_json: bool = False):
        """Keys may come before any event (create a key, then serve): their own table is
        all they need, and it makes no event store that verify would find empty."""
        options: Options = ctx.obj
        try:
            database = Database.parse(options.db)
            database.check_reachable()  # said as every command says it
            database.ensure_schema()
            self.engine = make_engine(database)
            self.keys = Keys(self.engine)
        except StorageError as exc:
            fail(str(exc), as_json=as_json, code=USAGE)

    def close(self) -> None:
        self.engine.dispose()


@keys.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A name for the key (who or what uses it).")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help=f"Repeatable: {', '.join(SCOPES)}."),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Create a key and print it: it is shown this once, and only its hash is stored."""
    with closing(_Opened(ctx, as_json)) as opened:
        try:
            key = opened.keys.create(name, scope)
        except KeyExists as exc:
            fail(str(exc), as_json=as_json, code=REJECTED)
        except KeyProblem as exc:
            fail(str(exc), as_json=as_json, code=USAGE)
    if as_json:
        emit_json({"name": name, "scopes": scope, "key": key})
    else:
        out.print(key)


@keys.command("revoke")
def revoke(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.")]
) -> None:
    """Revoke a key: requests with it get 401 from then on."""
    with closing(_Opened(ctx)) as opened:
        try:
            opened.keys.revoke(name)
        except KeyProblem as exc:
            fail(str(exc), as_json=False)
    out.print(f"revoked {name}")


@keys.command("list")
def list_keys(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Every key's name, scopes and dates (never the key itself)."""
    with closing(_Opened(ctx, as_json)) as opened:
        found = opened.keys.all()
    if as_json:
        emit_json({"keys": [k.as_dict() for k in found]})
        return
    table = Table("name", "scopes", "created", "revoked")
    for key in found:
        table.add_row(
            key.name,
            " ".join(key.scopes),
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    out.print(table)
