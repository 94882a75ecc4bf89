"""`journey serve`: the HTTP service (FastAPI under uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from journey.cli.app import Options, app
from journey.cli.output import USAGE, fail
from journey.cli.query import SettingsPath
from journey.storage import StorageError
from projections.settings import SettingsError, load_settings
from service.state import MAX_STREAMS


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8000,
    settings: SettingsPath = None,
    keepalive: Annotated[
        float,
        typer.Option(
            "--keepalive", metavar="SECONDS", min=0.1, help="Feed keep-alive interval."
        ),
    ] = 15.0,
    max_streams: Annotated[
        int,
        typer.Option(
            "--max-streams",
            min=1,
            help="Feed streams open at once (each holds a thread and, on PostgreSQL, a "
            "connection); more get 503.",
        ),
    ] = MAX_STREAMS,
) -> None:
    """Serve the HTTP API (events, customers, funnel, feed, projections; see /openapi.json).
    Every endpoint but /health needs a key from `journey keys create`."""
    import uvicorn

    from service import create_app

    options: Options = ctx.obj
    try:
        rules = load_settings(settings)
        application = create_app(
            options.db, rules, keepalive_seconds=keepalive, max_streams=max_streams
        )
    except (SettingsError, StorageError) as exc:
        fail(str(exc), as_json=False, code=USAGE)
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=3,
    )
