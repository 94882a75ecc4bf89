"""Point-in-time queries: one customer's answer at (as_of, known_at), and its history.

``known_at`` keeps the events recorded at or before it (what the firm knew then);
``as_of`` keeps those that occurred at or before it and is the moment every time rule is
evaluated at. Both default to now. Only the customer's own events are read, except for
RFM, which ranks the customer among everyone: it comes from the purchases read model when
one is given and up to date for what is asked (``known_at`` now), and otherwise from a scan
of the notification log (correct for any ``known_at``, slow on big stores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from journey.application import JourneyApplication
from journey.errors import JourneyError
from journey.events import CustomerEvent, is_customer_event
from journey.moments import moment_given, utc_now
from projections.history import Step, replay
from projections.report import all_streams
from projections.rules.answer import Answer, evaluate
from projections.rules.rfm import Population, RfmInputs
from projections.rules.window import iso, known, of_the_customer
from projections.settings import DEFAULT, Settings

#: Gives RFM's population at a moment from a read model, or None when it cannot.
PopulationSource = Callable[[datetime], Population | None]
CACHED_STREAMS = 256


class NotFound(JourneyError):
    """The customer does not exist at that moment (or at all)."""

    def __init__(self, customer_id: str, reason: str):
        super().__init__(f"customer {customer_id!r} {reason}")
        self.customer_id = customer_id


class HasApp(Protocol):
    """What holds the event store's application: ``journey.api.Journey``, for one (the
    read side does not import the write side's facade)."""

    app: JourneyApplication


class PointInTime:
    """Queries over one event store.

    It keeps the decoded streams of recently asked customers and reads only events newer
    than those it holds: streams are append-only, so what it holds never goes stale, and a
    repeated question costs one small query instead of decoding the whole stream. It keeps
    personal data sealed, opening it only for what it shows (a history), so that an
    erasure is honoured however long it lives.
    """

    def __init__(
        self,
        source: JourneyApplication | HasApp,
        settings: Settings = DEFAULT,
        populations: PopulationSource | None = None,
    ):
        """``source``: the event store's application, or what holds one (a ``Journey``)."""
        self.app = source if isinstance(source, JourneyApplication) else source.app
        self.settings = settings
        self.populations = populations
        self._streams: dict[str, list[CustomerEvent]] = {}

    def events(self, customer_id: str) -> list[CustomerEvent]:
        """Every stored event of the customer, in recording order."""
        held = self._streams.pop(customer_id, [])
        after = held[-1].originator_version if held else None
        fresh = self.app.sealed_events.get(customer_id, gt=after)
        stream = held + [e for e in fresh if is_customer_event(e)]
        if stream:
            self._streams[customer_id] = stream
            while len(self._streams) > CACHED_STREAMS:
                del self._streams[next(iter(self._streams))]
        return stream

    def show(
        self,
        customer_id: str,
        as_of: datetime | str | None = None,
        known_at: datetime | str | None = None,
        *,
        with_rfm: bool = True,
    ) -> Answer:
        """The answer at ``as_of`` as known at ``known_at`` (datetimes with a zone, or text
        as ``journey show`` takes it); raises NotFound."""
        return self.show_many([customer_id], as_of, known_at, with_rfm=with_rfm)[0].unwrap()

    def show_many(
        self,
        customer_ids: Iterable[str],
        as_of: datetime | str | None = None,
        known_at: datetime | str | None = None,
        *,
        with_rfm: bool = True,
    ) -> list[Found]:
        """One result per id, in order: an answer, or why there is none. RFM's population
        is computed once for all of them."""
        as_of = moment_given("as_of", as_of)
        known_at = moment_given("known_at", known_at, known=True)
        moment = utc_now()
        asked_known_at = known_at
        as_of, known_at = as_of or moment, known_at or moment
        results = [self._answer(cid, as_of, known_at) for cid in customer_ids]
        if with_rfm and any(r.answer and r.answer.scores["purchases"] for r in results):
            population = None
            if self.populations is not None and asked_known_at is None:
                population = self.populations(as_of)
            if population is None:
                population = self.population(as_of, known_at)
            results = [r.with_rfm(population) for r in results]
        return results

    def history(
        self,
        customer_id: str,
        known_at: datetime | str | None = None,
        until: datetime | str | None = None,
    ) -> list[Step]:
        """The replay of what was known at ``known_at``, with time-driven steps up to
        ``until`` (default: ``known_at``, itself defaulting to now)."""
        known_at = moment_given("known_at", known_at, known=True) or utc_now()
        until = moment_given("until", until)
        stream = self.events(customer_id)
        if not stream:
            raise NotFound(customer_id, "is unknown")
        counted = known(stream, known_at)
        if not counted:
            raise NotFound(customer_id, f"was not yet known at {iso(known_at)}")
        opened = [self.app.opened(event) for event in counted]  # now: not once erased
        opened = self.app.check_unerased(customer_id, opened, stream)
        steps = replay(opened, self.settings, until or known_at)
        return [replace(s, answer=replace(s.answer, known_at=known_at)) for s in steps]

    def population(self, as_of: datetime | str, known_at: datetime | str) -> Population:
        """RFM inputs of every customer with a purchase at ``as_of``, from the whole log."""
        as_of = moment_given("as_of", as_of, required=True)
        known_at = moment_given("known_at", known_at, known=True, required=True)
        streams = all_streams(self.app, known_at)
        answers = (evaluate(events, as_of, self.settings) for events in streams.values())
        members = (RfmInputs.of(answer) for answer in answers if answer is not None)
        return Population(m for m in members if m is not None)

    def _answer(self, customer_id: str, as_of: datetime, known_at: datetime) -> Found:
        stream = self.events(customer_id)
        if not stream:
            return Found(customer_id, None, NotFound(customer_id, "is unknown"))
        counted = known(stream, known_at)
        if not counted:
            reason = f"was not yet known at {iso(known_at)}"
            return Found(customer_id, None, NotFound(customer_id, reason))
        answer = evaluate(counted, as_of, self.settings)
        if answer is None:
            first = min(e.occurred_at for e in of_the_customer(counted))
            reason = f"not found at {iso(as_of)}: its first event occurs at {iso(first)}"
            return Found(customer_id, None, NotFound(customer_id, reason))
        return Found(customer_id, replace(answer, known_at=known_at), None)


class Found:
    """The result for one asked id: an answer or the reason there is none."""

    def __init__(self, customer_id: str, answer: Answer | None, error: NotFound | None):
        self.customer_id = customer_id
        self.answer = answer
        self.error = error

    def unwrap(self) -> Answer:
        if self.answer is None:
            assert self.error is not None
            raise self.error
        return self.answer

    def with_rfm(self, population: Population) -> Found:
        inputs = RfmInputs.of(self.answer) if self.answer else None
        if inputs is None:
            return self
        scores = {**self.answer.scores, "rfm": population.scores(inputs)}
        return Found(self.customer_id, replace(self.answer, scores=scores), None)


def show(
    source: JourneyApplication | HasApp,
    customer_id: str,
    as_of: datetime | str | None = None,
    known_at: datetime | str | None = None,
    settings: Settings = DEFAULT,
) -> Answer:
    """One answer, without keeping a PointInTime around."""
    return PointInTime(source, settings).show(customer_id, as_of, known_at)


def history(
    source: JourneyApplication | HasApp,
    customer_id: str,
    known_at: datetime | str | None = None,
    settings: Settings = DEFAULT,
) -> list[Step]:
    return PointInTime(source, settings).history(customer_id, known_at)
