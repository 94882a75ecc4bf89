"""The endpoints, one ``APIRouter`` per concern; ``service.app`` includes them in order.

Handlers are thin: they parse, call the same code the CLI calls and shape the answer.
(No ``from __future__ import annotations`` in these modules: FastAPI reads the
annotations of handlers and dependencies at runtime.)
"""
