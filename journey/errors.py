"""Errors a user can act on: each names the field at fault and the reason."""

from __future__ import annotations


class JourneyError(Exception):
    """Base of the errors Journey reports to users rather than crashing on."""


class InputError(JourneyError):
    """An input the engine refuses; nothing of it was stored."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason, "kind": self.kind}

    kind = "invalid"


class ConflictError(InputError):
    """An id sent again with different content."""

    kind = "conflict"


class UnknownReference(InputError):
    """A refund or resolution naming a purchase or complaint the customer does not have
    (so an import can say when that purchase or complaint was itself refused)."""


class RetryableConflict(JourneyError):
    """Another writer changed the same customer at the same moment, more often than we retry.
    Sending the same input again is safe."""


def utf8_text(field: str, value: str) -> str:
    """``value``, if it can be stored: bytes on a command line that are not UTF-8 reach
    Python as lone surrogates, which no store can encode (checked before anything is done,
    so that nothing is half done)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(field, "is not valid UTF-8 text") from None
    return value
