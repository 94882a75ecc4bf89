"""The feed's entries for one customer: which classification changed, when, and why.

A summary row is recomputed when new events are applied and when its ``refresh_at`` comes.
Between two computations the state can change several times: by itself (a lapse, a window
closing: ``cause`` None), as an event recorded with a later ``occurred_at`` comes into
effect or is applied (``cause`` its position). Each change is announced at the moment it
happened, from the value before it, so that a subscriber replaying the feed passes through
every state the customer had, whenever the runner noticed
(tests/readmodel_support.assert_feed_consistent). Events are taken batch by batch, each at
its recording, as a runner applying each batch as it was recorded would have
(tests/test_feed.py compares the two on generated histories); only those dated at or
before what was already known (backfilled) change the past: their net change is one step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from journey.application import Stream
from projections.readmodels.rows import samples
from projections.rules.answer import CLASSIFICATIONS as KINDS
from projections.rules.answer import verdicts_from
from projections.rules.facts import Facts
from projections.rules.verdict import Verdict
from projections.rules.window import of_the_customer, ordered, says_of_the_customer
from projections.settings import Settings

#: Before any event: where a new customer's changes are looked for from.
BEGINNING = datetime.min.replace(tzinfo=UTC)

#: A customer's classifications, kind by kind (None before the customer exists).
State = Mapping[str, str | None]


def state_of(row: Any) -> dict[str, str | None]:
    """The classifications of a stored summary row (or None: no row yet)."""
    return {kind: getattr(row, kind) if row is not None else None for kind in KINDS}


def changes(
    customer: str,
    was: State,
    now: State,
    reasons: Mapping[str, str],
    occurred_at: datetime,
    cause: int | None,
    recorded_at: datetime,
) -> list[dict[str, Any]]:
    """An entry for each kind whose value differs between ``was`` and ``now``."""
    return [
        {
            "customer_id": customer,
            "kind": kind,
            "from_value": was[kind],
            "to_value": now[kind],
            "occurred_at": occurred_at,
            "recorded_at": recorded_at,
            "reason": reasons[kind],
            "cause": cause,
        }
        for kind in KINDS
        if now[kind] is not None and was[kind] != now[kind]
    ]


def transitions(
    stream: Stream, was: State, since: datetime, rules: Settings, until: datetime
) -> Iterator[tuple[datetime, int | None, dict[str, Verdict]]]:
    """Each moment in (``since``, ``until``] at which the classifications of ``stream``
    (events already applied) move away from the last ones (``was`` first) with no event
    recorded: by themselves (cause None) or as events dated ahead come into effect (cause:
    the last recorded of them), with their verdicts from that moment on. The values come
    from the timeline's walk (rows.samples: linear in the moments it looks at), the
    reasons from the rules, at each change only."""
    arrivals: dict[datetime, int] = {}
    for event, position in zip(stream.events, stream.positions, strict=True):
        if since < event.occurred_at <= until and says_of_the_customer(event):
            arrivals[event.occurred_at] = max(position, arrivals.get(event.occurred_at, 0))
    current = tuple(was[kind] for kind in KINDS)
    walked = ordered(of_the_customer(stream.events))
    for moment, state in settled(samples(walked, rules), since, until):
        if state != current:
            yield (
                moment,
                arrivals.get(moment),
                verdicts_from(Facts.of(stream.events, moment, rules)),
            )
            current = state


def settled(
    steps: Iterable[tuple[datetime, tuple[str, str, str]]], since: datetime, until: datetime
) -> Iterator[tuple[datetime, tuple[str, str, str]]]:
    """The state at each moment of ``steps`` in (``since``, ``until``]: where several steps
    share a moment, the last one's."""
    pending = None
    for moment, state in steps:
        if moment > until:
            break
        if moment <= since:
            continue
        if pending is not None and pending[0] != moment:
            yield pending
        pending = (moment, state)
    if pending is not None:
        yield pending


def announced(
    customer: str,
    was: State,
    stream: Stream,
    since: datetime,
    rules: Settings,
    until: datetime,
    recorded_at: datetime,
) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """The entries of every ``transitions`` step, and the state after the last."""
    entries: list[dict[str, Any]] = []
    current = dict(was)
    for moment, cause, verdicts in transitions(stream, was, since, rules, until):
        now, reasons = values(verdicts), reasons_of(verdicts)
        entries += changes(customer, current, now, reasons, moment, cause, recorded_at)
        current = now
    return entries, current


def refresh_entries(
    customer: str, before: Any, stream: Stream, rules: Settings, now: datetime
) -> list[dict[str, Any]]:
    """The entries for a row recomputed at ``now`` with no new event."""
    return announced(customer, state_of(before), stream, before.computed_at, rules, now, now)[0]


def page_entries(
    customer: str, before: Any, stream: Stream, since: int, rules: Settings, now: datetime
) -> list[dict[str, Any]]:
    """The entries for a row recomputed at ``now`` because events after position
    ``since`` were applied: what a runner that had applied each batch of them as it was
    recorded (and refreshed nothing in between) would have announced, however late this
    one comes (it announced the net change of a page, blamed on its newest event).

    Batch by batch (events recorded together, in log order), at the moment it was
    recorded: new events dated at or before what was already known (the row's last
    computation, then the batch before) changed the past, and their net change is one
    entry, at the newest of them, caused by it; a customer's first batch is announced
    from its first event on. Then every change up to the batch's recording, and from the
    last one up to ``now``, is announced at its own moment (``transitions``): by itself,
    or as an event takes effect, caused by it. So a lapse that came after a new event is
    not blamed on it."""
    entries: list[dict[str, Any]] = []
    was: State = state_of(before)
    known_at = None if before is None else min(before.computed_at, now)
    for end, until in spans(stream, since, known_at, now):
        known = Stream(stream.events[:end], stream.positions[:end])
        if known_at is None:  # the customer's first events: every change from the first
            found, was = announced(customer, was, known, BEGINNING, rules, until, now)
        else:
            found, was = backfilled(customer, was, known, since, known_at, rules, now)
            more, was = announced(customer, was, known, known_at, rules, until, now)
            found += more
        entries += found
        known_at, since = until, known.positions[-1]
    if known_at is not None and known_at < now:  # no new event: what time brought
        entries += announced(customer, was, stream, known_at, rules, now, now)[0]
    return entries


def spans(
    stream: Stream, since: int, known_at: datetime | None, now: datetime
) -> Iterator[tuple[int, datetime]]:
    """The batches after position ``since``, each with the moment it is announced up to:
    its recording (never before what was known, nor after ``now``; the last up to
    ``now``). A batch none of whose events is dated at or before the moment of the one
    before changes nothing up to it: the two are announced in one walk, as one (events
    recorded one by one as they happen were walked once each, from the first event)."""
    pending: tuple[int, datetime] | None = None
    for end, recorded in batches(stream, since):
        until = now if end == len(stream.events) else min(recorded, now)
        until = until if known_at is None else max(known_at, until)
        if (
            pending is not None
            and any(  # it changes the past: a walk of its own
                e.occurred_at <= pending[1] and says_of_the_customer(e)
                for e in stream.events[pending[0] : end]
            )
        ):
            yield pending
        pending, known_at = (end, until), until  # else the one before walks on to it
    if pending is not None:
        yield pending


def batches(stream: Stream, since: int) -> Iterator[tuple[int, datetime]]:
    """Where each batch of the events after position ``since`` ends in ``stream`` (an
    index), and when it was recorded: consecutive events recorded at one moment."""
    count = len(stream.events)
    for index, (event, position) in enumerate(zip(stream.events, stream.positions, strict=True)):
        if position <= since:
            continue
        last = index + 1 == count
        if last or stream.events[index + 1].timestamp != event.timestamp:
            yield index + 1, event.timestamp


def backfilled(
    customer: str,
    was: State,
    known: Stream,
    since: int,
    known_at: datetime,
    rules: Settings,
    now: datetime,
) -> tuple[list[dict[str, Any]], State]:
    """The net change of the events after position ``since`` dated at or before
    ``known_at`` (what they changed of what was known then), at the newest of them."""
    fresh = [
        (event.occurred_at, event.originator_version, position)
        for event, position in zip(known.events, known.positions, strict=True)
        if position > since and event.occurred_at <= known_at and says_of_the_customer(event)
    ]
    if not fresh:
        return [], was
    occurred_at, _, cause = max(fresh)
    verdicts = verdicts_from(Facts.of(known.events, known_at, rules))
    now_state = values(verdicts)
    found = changes(customer, was, now_state, reasons_of(verdicts), occurred_at, cause, now)
    return found, now_state


def values(verdicts: dict[str, Verdict]) -> dict[str, str]:
    return {kind: verdict.value for kind, verdict in verdicts.items()}


def reasons_of(verdicts: dict[str, Verdict]) -> dict[str, str]:
    return {kind: verdict.rule for kind, verdict in verdicts.items()}
