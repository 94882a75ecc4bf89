"""The Python API: what a service imports to record and read customer events.

from journey import connect

with connect("postgresql://postgres@127.0.0.1/journey") as engine:
    engine.record({"type": "purchase", "customer_id": "c-17", ...})
    for event in engine.events("c-17"):
        print(event.TYPE, event.occurred_at, event.recorded_at, event.actor)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from eventsourcing.persistence import IntegrityError

from commands.files import read_records
from commands.handlers import (
    OPENS,
    Clock,
    Outcome,
    Rejected,
    UnitOfWork,
    apply_all,
    attempts,
    default_actor,
    record_batch,
)
from commands.models import MODELS as COMMAND_MODELS
from commands.models import Command, InvalidInput, parse_command, parse_erase_reason
from journey import connect  # noqa: F401  (re-exported: services import it from here)
from journey.application import JourneyApplication, last_erasure
from journey.collecting import collector_paused
from journey.customer import Customer
from journey.errors import (
    InputError,
    JourneyError,
    RetryableConflict,
    UnknownReference,
    utf8_text,
)
from journey.events import CustomerEvent
from journey.integrity import Report
from journey.keycheck import KeyCheck
from journey.moments import utc_now
from journey.personal import KeyDeletion, is_sealed
from journey.storage import Database

Progress = Callable[[int], None]
#: After storing this many events at once, the store's statistics are refreshed: the
#: planner must not go on believing the log is empty (autovacuum may be off, or late).
ANALYZE_AFTER = 10_000


@dataclass
class Recorded:
    """The answer to recording one event."""

    position: int | None
    """The position of the event itself in the log (None for a retry already stored)."""
    positions: list[int]
    """Every position stored, with the engine's derived events."""
    duplicate: bool


def own_position(outcome: Outcome, command: Command) -> int | None:
    """The position of the event the command itself recorded: the one of its customer and
    type. What the engine derives for the same customer (an implicit `identified` before
    it, a `referral_converted` after it) has another type."""
    stored = zip(outcome.customers, outcome.types, outcome.positions, strict=True)
    own = (p for c, t, p in stored if c == command.customer_id and t == command.type)
    return next(own, None)


class RejectedInput(InputError):
    """A single recorded event was refused; ``errors`` lists every reason."""

    def __init__(self, errors: list[InputError]):
        super().__init__(errors[0].field, errors[0].reason)
        self.args = ("; ".join(str(e) for e in errors),)
        self.errors = errors
        self.kind = errors[0].kind


def point_at_refused_openers(
    rejected: list[Rejected], raws: list[Any], sources: list[Source]
) -> None:
    """A refund or resolution whose purchase or complaint was itself refused in the same
    input says where ("no complaint 'k1'" alone sent one looking in the store)."""
    refused: dict[tuple[str, str, str], Source] = {}
    for r in rejected:
        if (named := opened_by(raws[r.line])) is not None:
            refused.setdefault(named, sources[r.line])
    for r in rejected if refused else ():
        raw = raws[r.line]
        for n, error in enumerate(r.errors):
            if not (isinstance(error, UnknownReference) and isinstance(raw, dict)):
                continue  # the guard that raised it read these ids: they are text
            opener = refused.get((raw["customer_id"], error.field, raw[error.field]))
            if opener is not None:
                where = refused_at(opener, sources[r.line])
                r.errors[n] = InputError(error.field, f"{error.reason} ({where})")


def opened_by(raw: Any) -> tuple[str, str, str] | None:
    """(customer, id field, id) of the purchase or complaint an input would open: given
    as text (an id given as an object is no id, and no key of a dict)."""
    type_ = raw.get("type") if isinstance(raw, dict) else None
    field = OPENED_BY_TYPE.get(type_) if isinstance(type_, str) else None
    if field is None:
        return None
    customer, named = raw.get("customer_id"), raw.get(field)
    if isinstance(customer, str) and isinstance(named, str):
        return customer, field, named
    return None


#: The input types that open a purchase or complaint (``handlers.OPENS``), by type name:
#: the id field each opens.
OPENED_BY_TYPE = {name: OPENS[model][1] for name, model in COMMAND_MODELS.items() if model in OPENS}


def refused_at(opener: Source, here: Source) -> str:
    """Where the refused purchase or complaint was: a line of a file, or (a batch given
    in Python or over HTTP, whose positions each caller counts its own way) the batch."""
    if opener.path is None:
        return "it was refused in the same batch"
    where = f"line {opener.line}" + (f" of {opener.path}" if opener.path != here.path else "")
    return f"the one on {where} was refused"


class Journey:
    """One event store, opened from a database URL."""

    def __init__(
        self,
        url: str | None = None,
        *,
        actor: str | None = None,
        clock: Clock = utc_now,
        app: JourneyApplication | None = None,
    ):
        """``app``: an application already open to record through, instead of ``url``
        (a service's, which its read models share; closing this closes it)."""
        self.app = app or JourneyApplication(Database.parse(url))
        self.database = self.app.database
        self.actor = utf8_text("actor", actor or default_actor())
        self.clock = clock

    def record(self, event: dict[str, Any] | Command) -> Recorded:
        """Validate and store one event (and what the engine derives from it)."""
        try:
            command = parse_command(event)
        except InvalidInput as exc:
            raise RejectedInput(exc.errors) from None
        outcome = record_batch(
            self.app, [(1, command)], actor=self.actor, skip_invalid=False, clock=self.clock
        )
        if outcome.rejected:
            raise RejectedInput(outcome.rejected[0].errors)
        return Recorded(
            own_position(outcome, command), outcome.positions, duplicate=outcome.duplicates == 1
        )

    def record_many(
        self,
        events: Iterable[Any],
        *,
        skip_invalid: bool = False,
        on_validated: Progress | None = None,
    ) -> Outcome:
        """Validate a whole batch, then store it, or store nothing if any input is bad
        (unless ``skip_invalid``, which stores the good ones). Inputs are numbered from 1."""
        return self._record_sourced(
            ((Source(None, line), raw) for line, raw in enumerate(events, start=1)),
            skip_invalid,
            on_validated,
        )

    def import_files(
        self,
        paths: list[str],
        *,
        skip_invalid: bool = False,
        on_validated: Progress | None = None,
        on_stored: Progress | None = None,
    ) -> Outcome:
        """Import JSONL/CSV files as one input; errors name the file and its line.
        ``on_validated`` is told of each input validated, ``on_stored`` of each batch of
        events stored (their number)."""
        read: set[str] = set()

        def sourced(path: str) -> Iterator[tuple[Source, Any]]:
            for line, record in read_records(path):
                read.add(path)
                yield Source(path, line), record

        records = chain.from_iterable(sourced(path) for path in paths)
        outcome = self._record_sourced(records, skip_invalid, on_validated, on_stored)
        outcome.empty_files = [path for path in paths if path not in read]
        return outcome

    @collector_paused()
    def _record_sourced(
        self,
        records: Iterable[tuple[Source, Any]],
        skip_invalid: bool,
        on_validated: Progress | None,
        on_stored: Progress | None = None,
    ) -> Outcome:
        sources: list[Source] = []
        raws: list[Any] = []
        commands: list[tuple[int, Command]] = []
        invalid: list[Rejected] = []
        for seq, (source, raw) in enumerate(records):
            sources.append(source)
            raws.append(raw)
            try:
                if isinstance(raw, InputError):
                    raise InvalidInput([raw])
                commands.append((seq, parse_command(raw)))
            except InvalidInput as exc:
                invalid.append(Rejected(seq, exc.errors))
                if on_validated:
                    on_validated(1)
        if invalid and not skip_invalid:
            outcome = Outcome()
            uow = UnitOfWork(self.app, self.actor, self.clock)
            outcome.rejected = apply_all(uow, commands, on_validated).rejected
        else:
            outcome = record_batch(
                self.app,
                commands,
                actor=self.actor,
                clock=self.clock,
                skip_invalid=skip_invalid,
                on_progress=on_validated,
                on_stored=on_stored,
            )
            if outcome.stored >= ANALYZE_AFTER:
                self.app.analyze()
        outcome.rejected = sorted(invalid + outcome.rejected, key=lambda r: r.line)
        point_at_refused_openers(outcome.rejected, raws, sources)
        for rejected in outcome.rejected:
            seq = rejected.line
            rejected.raw = raws[seq]
            rejected.source, rejected.line = sources[seq].path, sources[seq].line
        return outcome

    def events(self, customer_id: str) -> list[CustomerEvent]:
        """A customer's stored events in recording order, each with ``occurred_at``,
        ``recorded_at``, ``actor``, ``TYPE`` and ``payload()``; empty when unknown."""
        return self.app.customer_events(customer_id)

    def erase(self, customer_id: str, reason: str) -> Erasure:
        """Make the customer's personal data unreadable: record an ``erased`` event and
        delete its key in one transaction, then push the key's bytes out of the database
        files. Safe to repeat: a customer already erased (an ``erased`` event after any
        sealed data) only has the files purged again (a purge that gave up). A key made
        since for data not yet stored is left alone: deleting it outside the transaction
        of an event would race the writer about to store that data."""
        reason = parse_erase_reason(reason)
        keyring = self.app.keyring
        keyring.ensure_table()  # before the erasure's transaction takes its locks
        for _ in attempts():
            customer = self.app.load_many({customer_id}).get(customer_id)
            if not isinstance(customer, Customer):
                raise JourneyError(f"customer {customer_id!r} is unknown")
            unerased = self._sealed_since_erasure(customer_id)
            if customer.erased and not unerased:
                keyring.purge()
                return Erasure(customer_id, key_destroyed=False, position=None)
            now = self.clock()
            customer.erase(reason, occurred_at=now, actor=self.actor, timestamp=now)
            deletion = KeyDeletion(keyring, customer_id)
            try:
                recordings = self.app.save(customer, within=deletion)
            except IntegrityError:
                continue
            keyring.purge()
            # Sealed data and no key: an older Journey's erase stopped after deleting it.
            earlier = unerased and not deletion.deleted
            position = recordings[-1].notification.id
            return Erasure(customer_id, deletion.deleted, position, earlier)
        raise RetryableConflict("another writer kept changing the customer; erase again")

    def _sealed_since_erasure(self, customer_id: str) -> bool:
        """Whether events since the customer's last ``erased`` (or ever) hold sealed
        personal data: a key existed for them, and if this erase found none, an erase by
        an older Journey destroyed it and did not finish (its event is still to record)."""
        events = list(self.app.sealed_events.get(customer_id))
        last = last_erasure(events)
        return any(
            e.originator_version > last and is_sealed(vars(e).get("personal")) for e in events
        )

    def verify(
        self, customer_ids: Iterable[str] | None = None, anchors: Iterable[tuple[int, str]] = ()
    ) -> Report:
        """Check the hash chains (journey/integrity.py), and that personal data recorded
        after each customer's last erasure is sealed under its key; seals an unsealed tail
        first. ``anchors``: (position, chain) heads noted earlier, which must still hold."""
        ids = sorted(set(customer_ids)) if customer_ids is not None else None
        return self.app.log_seal.verify(
            ids, anchors=anchors, keys=lambda: KeyCheck(self.app.keyring, ids)
        )

    def close(self) -> None:
        self.app.close()

    def __enter__(self) -> Journey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Erasure:
    """What ``erase`` did: whether a key was destroyed, and where the event was stored
    (None when the customer was already erased)."""

    customer_id: str
    key_destroyed: bool
    position: int | None
    #: The key was already gone though personal data was sealed with it: an erase by a
    #: Journey older than this one (which deleted the key, then recorded the event) was
    #: interrupted in between, and this one finished it.
    key_destroyed_before: bool = False


@dataclass(frozen=True)
class Source:
    """Where an input came from: a file (None for a Python batch) and its line."""

    path: str | None
    line: int
