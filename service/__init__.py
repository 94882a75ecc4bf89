"""Journey over HTTP: a FastAPI app (``create_app``) served by ``journey serve``."""

from service.app import create_app

__all__ = ["create_app"]
