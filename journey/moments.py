"""The times users give: event times (``occurred_at``) and query moments (``as_of``,
``known_at``), and the calendar the rules can compute in.

Rules look back a year and more from a moment (windows, tenure, lapse), so a moment near
datetime's limits overflows inside them; a year outside 1900-2999 is a typing mistake in
customer data anyway, so it is refused at the boundary with the field named.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

EARLIEST_YEAR, LATEST_YEAR = 1900, 2999
TIME_FORMS = "ISO 8601 with a time zone, a date (start of that day UTC) or 'now'"
TIME_HELP = TIME_FORMS + " (default)."


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, the one spelling of time in answers."""
    if moment is None:
        return None
    return utc(moment).isoformat().replace("+00:00", "Z")


def utc_now() -> datetime:
    """The clock of every writer and reader: aware, in UTC."""
    return datetime.now(UTC)


def within_calendar(moment: datetime) -> datetime:
    """The years count in UTC, where the rules compute (2999-12-31T22:00-05:00 is in 3000);
    the given offset's year is looked at first, so that converting cannot overflow."""
    year = moment.year
    if EARLIEST_YEAR - 1 <= year <= LATEST_YEAR + 1 and moment.utcoffset() is not None:
        year = utc(moment).year
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        raise ValueError(
            f"{moment.isoformat()} must lie between the years {EARLIEST_YEAR} and "
            f"{LATEST_YEAR} (counted in UTC)"
        )
    return moment


#: A fraction of a second (or of an offset's second) in an ISO 8601 time.
FRACTION = re.compile(r"[.,](\d+)", re.ASCII)


#: A character no time holds: fromisoformat stops reading at a NUL, so "…Z\x00junk" was
#: read as the time before it.
NOT_IN_A_TIME = re.compile(r"[\x00-\x1f\x7f]")


def check_microseconds(value: str) -> None:
    """fromisoformat drops digits past the sixth: two instants would become one (and the
    second a duplicate of the first); and it stops reading at a NUL."""
    if NOT_IN_A_TIME.search(value):
        raise ValueError(f"{value!r} is not an ISO 8601 time: it holds a control character")
    if any(len(digits) > 6 for digits in FRACTION.findall(value)):
        raise ValueError(f"{value!r} has more than 6 digits after the point: at most microseconds")


def parse_moment(text: str | None) -> datetime | None:
    """A query moment: ISO 8601 with a zone, a bare date (00:00 UTC), or 'now'."""
    if text is None or text == "now":
        return datetime.now(UTC) if text == "now" else None
    check_microseconds(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {TIME_FORMS}") from None
    if is_date(text):  # a bare date, in any ISO 8601 form (2025-01-15, 20250115)
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset such as +01:00)")
    return within_calendar(moment)


def parse_known_at(text: str | None) -> datetime | None:
    """A ``known_at``: a moment as ``parse_moment`` reads it, and not ahead of now."""
    moment = parse_moment(text)
    return None if moment is None else not_ahead(moment, repr(text))


def not_ahead(moment: datetime, given: str) -> datetime:
    """What will have been recorded by a later moment is not known yet: an answer about
    it would change as events are recorded, where the same T and K must answer the same
    forever."""
    if moment > datetime.now(UTC):
        raise ValueError(
            f"{given} lies ahead: what will be recorded by then is not known yet (use now)"
        )
    return moment


def moment_given(
    name: str, value: object, *, known: bool = False, required: bool = False
) -> datetime | None:
    """A moment given to the Python API: a datetime with a zone, or text read as the CLI
    reads it, held to the same calendar and, for a ``known``-at moment, not ahead of now.
    Anything else failed deep in the rules (a str has no tzinfo), and a naive datetime
    was silently read in this machine's zone. Errors name the parameter."""
    try:
        if isinstance(value, str):
            return (parse_known_at if known else parse_moment)(value)
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                raise ValueError(f"{value.isoformat()} has no time zone (give it one: tzinfo=UTC)")
            within_calendar(value)
            return not_ahead(value, value.isoformat()) if known else value
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if value is None and not required:
        return None
    raise TypeError(
        f"{name} must be a datetime with a time zone or ISO 8601 text, not {type(value).__name__}"
    )


def is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True
