"""Journey over HTTP: a FastAPI app (``create_app``) served by ``journey serve``."""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``create_app``, imported on first use: the CLI's key commands import ``service.keys``
    and would otherwise load FastAPI and every route (two seconds) to list a key."""
    if name == "create_app":
        from service.app import create_app

        return create_app
    raise AttributeError(f"module 'service' has no attribute {name!r}")
