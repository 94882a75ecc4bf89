"""Command handlers: turn valid commands into recorded events.

A ``UnitOfWork`` loads the aggregates a batch of commands touches (a few queries for the
whole batch), applies the commands in input order to those in-memory aggregates, runs the
policies (implicit identification, referral conversion), and saves everything in large
transactions. A command that fails changes nothing: its guards run before any event is
triggered, and a customer it would have created is dropped.
"""

from __future__ import annotations

import getpass
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.persistence import IntegrityError

from commands.models import Command, Complaint, Purchase, Referral, Refund, ResolveComplaint
from journey.application import JourneyApplication
from journey.customer import Customer
from journey.errors import InputError, RetryableConflict
from journey.events import USER_EVENT_CLASSES, CustomerEvent
from journey.moments import utc_now
from journey.personal import CustomerKey
from journey.referrals import Referrers, index_id

log = logging.getLogger("journey.commands")

Clock = Callable[[], datetime]
SAVE_BATCH_EVENTS = 5000
RETRIES = 5


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


@dataclass
class Rejected:
    """One input the engine refused, with every reason."""

    line: int
    errors: list[InputError]
    raw: Any = None
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        where = {"file": self.source} if self.source else {}
        return {**where, "line": self.line, "errors": [e.as_dict() for e in self.errors]}


@dataclass
class Outcome:
    """What became of a batch of inputs."""

    stored: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    derived: int = 0
    #: The input lines that were retries of events already stored.
    duplicate_lines: list[int] = field(default_factory=list)
    #: The customer and the type of each stored event, beside ``positions``.
    customers: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    #: The files of an import that held no input at all (a wrong file, an empty export).
    empty_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": self.stored,
            "derived": self.derived,
            "duplicates": self.duplicates,
            "rejected": len(self.rejected),
            "errors": [r.as_dict() for r in self.rejected],
        }


class UnitOfWork:
    """In-memory aggregates for one batch of commands, saved together."""

    def __init__(self, app: JourneyApplication, actor: str, clock: Clock = utc_now):
        self.app = app
        self.actor = actor
        self.clock = clock
        #: Told how many events each stored batch held (a progress bar's second phase).
        self.on_stored: Callable[[int], None] | None = None
        self.aggregates: dict[str, Any] = {}
        self.looked_up: set[str] = set()
        #: (referrer, referred) pairs to check once the whole batch is applied, so a
        #: conversion lands on the first purchase however the batch is ordered.
        self.to_convert: dict[tuple[str, str], None] = {}
        #: Customers' keys for personal data: those stored, and those made in this batch
        #: (stored before its events, see ``save``).
        self.keys: dict[str, CustomerKey] = {}
        self.new_keys: dict[str, CustomerKey] = {}
        self.keys_looked_up: set[str] = set()
        #: The input lines whose events each aggregate holds, and what ``save`` has
        #: committed so far (kept if a later batch fails: see ``record_batch``).
        self.lines: dict[str, list[int]] = defaultdict(list)
        self.committed: list[tuple[str, str, int]] = []
        self.committed_lines: set[int] = set()
        #: The buyers and the referrals of the batch (referrer, referred): where another
        #: writer's events could make a conversion due that this batch could not see.
        self.buyers: set[str] = set()
        self.referrals: set[tuple[str, str]] = set()

    def preload(self, commands: Iterable[Command]) -> None:
        """Load every aggregate the commands may touch, in a few queries."""
        wanted: set[str] = set()
        personal: set[str] = set()
        for command in commands:
            wanted.add(command.customer_id)
            if vars(command).get("personal") is not None:  # getattr would raise inside pydantic
                personal.add(command.customer_id)
            if isinstance(command, Purchase):
                wanted.add(index_id(command.customer_id))
            elif isinstance(command, Referral):
                wanted.add(command.referred_customer_id)
                wanted.add(index_id(command.referred_customer_id))
        self._load(wanted - self.looked_up)
        self._load_keys(personal)

    def _load_keys(self, customer_ids: set[str]) -> None:
        missing = {c for c in customer_ids if c not in self.keys_looked_up}
        if missing:
            self.keys.update(self.app.keyring.load(missing))
            self.keys_looked_up |= missing

    def _has_key(self, customer_id: str) -> bool:
        self._load_keys({customer_id})
        return customer_id in self.keys or customer_id in self.new_keys

    def _key(self, customer_id: str) -> CustomerKey:
        """The customer's key for sealing personal data (a new one if it has none)."""
        self._load_keys({customer_id})
        key = self.keys.get(customer_id) or self.new_keys.get(customer_id)
        if key is None:
            key = self.new_keys[customer_id] = CustomerKey.new(customer_id)
        return key

    def handle(self, command: Command) -> bool:
        """Apply one command; False when it is a retry of an event already recorded."""
        customer = self._get(command.customer_id)
        new = customer is None
        payload = command.payload()
        key, made = None, False
        if payload.get("personal") is not None:
            made = not self._has_key(command.customer_id)
            key = self._key(command.customer_id)
        if new and command.type == "identified":
            if key is not None:
                payload["personal"] = key.seal(payload["personal"])
            customer = Customer.identify(command.customer_id, **self._envelope(command), **payload)
            self.aggregates[customer.id] = customer
            return True
        if new:
            customer = self._implicit(command.customer_id, command.occurred_at)
        recorded = False
        try:
            event_class = USER_EVENT_CLASSES[command.type]
            envelope = self._envelope(command)
            recorded = customer.record(event_class, **envelope, payload=payload, key=key)
        finally:
            if made and not recorded:  # refused, or a retry: nothing was sealed with it
                del self.new_keys[command.customer_id]
        if new:
            self.aggregates[customer.id] = customer
        # The policies run for a retry too: what they derive is idempotent, and an input
        # whose own event was stored by an interrupted save may still lack its derived
        # events (they can lie in a batch that was never stored).
        if isinstance(command, Referral):
            self._after_referral(customer, command)
        elif isinstance(command, Purchase):
            self._after_purchase(customer)
        return recorded

    def pending(self) -> int:
        return sum(len(a.pending_events) for a in self.aggregates.values())

    def save(self, batch_events: int = SAVE_BATCH_EVENTS) -> list[tuple[str, str, int]]:
        """Save every pending event, many per transaction; returns (customer, type,
        position) for each customer event stored.

        Each batch is stamped with the time it is recorded, chained and encoded (``prepare``)
        while the one before it is being stored, by one writer thread taking them in order
        (the log seal chains one batch to the next): the database's work and Python's
        overlap. After a failed batch nothing more is stored."""
        self.app.keyring.store(list(self.new_keys.values()))
        self.keys.update(self.new_keys)
        self.new_keys.clear()
        batches = self._batches(batch_events)
        if not batches:
            return []
        if len(batches) == 1:
            pending = self.app.prepare(*batches[0], recorded_at=self.clock())
            self._committed(batches[0], self.app.store(pending))
            return self.committed
        with ThreadPoolExecutor(1, thread_name_prefix="journey-save") as writer:
            storing: tuple[list[Any], Future[list[Any]]] | None = None
            for batch in batches:
                pending = self.app.prepare(*batch, recorded_at=self.clock())
                if storing is not None:
                    self._committed(storing[0], storing[1].result())
                storing = batch, writer.submit(self.app.store, pending)
            if storing is not None:
                self._committed(storing[0], storing[1].result())
        return self.committed

    def _committed(self, batch: list[Any], recordings: list[Any]) -> None:
        stored = self._stored(recordings)  # customer events: not the referrer index's
        if self.on_stored:
            self.on_stored(len(stored))
        self.committed += stored
        self.committed_lines.update(line for a in batch for line in self.lines.get(a.id, ()))

    def _batches(self, batch_events: int) -> list[list[Any]]:
        """The aggregates with events to save, about ``batch_events`` events a batch."""
        batches: list[list[Any]] = []
        batch: list[Any] = []
        size = 0
        for aggregate in self.aggregates.values():
            if aggregate.pending_events:
                batch.append(aggregate)
                size += len(aggregate.pending_events)
            if size >= batch_events:
                batches.append(batch)
                batch, size = [], 0
        if batch:
            batches.append(batch)
        return batches

    @staticmethod
    def _stored(recordings: list[Any]) -> list[tuple[str, str, int]]:
        return [
            (r.domain_event.originator_id, r.domain_event.TYPE, r.notification.id)
            for r in recordings
            if isinstance(r.domain_event, CustomerEvent)
        ]

    def _envelope(self, command: Command) -> dict[str, Any]:
        return {
            "occurred_at": command.occurred_at,
            "actor": self.actor,
            "timestamp": self.clock(),
            "event_id": command.event_id,
        }

    def _implicit(self, customer_id: str, occurred_at: datetime, **fields: Any) -> Customer:
        """The `identified` the store records first for a customer it has not seen."""
        identity = {
            "source": "implicit",
            "referred_by": None,
            "acquisition_cost": None,
            "personal": None,
            **fields,
        }
        return Customer.identify(
            customer_id,
            occurred_at=occurred_at,
            actor=self.actor,
            timestamp=self.clock(),
            event_id=None,
            **identity,
        )

    def _after_referral(self, referrer: Customer, command: Referral) -> None:
        referred_id = command.referred_customer_id
        referred = self._get(referred_id)
        if referred is None:
            referred = self._implicit(
                referred_id, command.occurred_at, source="referral", referred_by=referrer.id
            )
            self.aggregates[referred_id] = referred
        index = self._get(index_id(referred_id))
        if index is None:
            index = Referrers.open(referred_id, referrer.id, command.occurred_at)
            self.aggregates[index.id] = index
        else:
            index.note(referrer.id, command.occurred_at)
        self.to_convert[(referrer.id, referred_id)] = None
        self.referrals.add((referrer.id, referred_id))

    def _after_purchase(self, buyer: Customer) -> None:
        self.buyers.add(buyer.id)
        index = self._get(index_id(buyer.id))
        if index is None:
            return
        for referrer_id in index.referrers:
            self.to_convert[(referrer_id, buyer.id)] = None

    def convert_referrals(self) -> None:
        """Record the conversions the batch's referrals and purchases made due."""
        for referrer_id, referred_id in self.to_convert:
            self._convert(self._get(referrer_id), self._get(referred_id))
        self.to_convert.clear()

    def unseen(self) -> tuple[set[tuple[str, str]], set[str]]:
        """After ``save``: the referrals (referrer, referred) and the buyers whose
        conversions another writer may have made due meanwhile, unseen by this batch: a
        referral and the purchase that converts it, saved at once by two writers, touch no
        common aggregate, so neither save fails. Read from the versions stored now: a
        referred customer not yet converted who gained events, a buyer's index of referrers
        that gained one. Both empty unless another writer moved one of them."""
        pending = {(a, b) for a, b in self.referrals if b not in self._get(a).converted}
        indexes = {index_id(buyer): buyer for buyer in self.buyers}
        watched = {b for _, b in pending} | set(indexes)
        if not watched:
            return set(), set()
        stored = self.app.versions(watched)
        moved = {i for i in watched if stored.get(i, 0) != self._version(i)}
        return {(a, b) for a, b in pending if b in moved}, {
            indexes[i] for i in moved & indexes.keys()
        }

    def convert_again(self, pairs: set[tuple[str, str]], buyers: set[str]) -> None:
        """The conversions ``unseen`` found may be due, as the store has them now: each
        referral of ``pairs``, every referrer of each of ``buyers``."""
        self._load({index_id(b) for b in buyers} | {a for a, _ in pairs} | {b for _, b in pairs})
        for buyer in buyers:
            self.to_convert.update(
                dict.fromkeys((r, buyer) for r in self._get(index_id(buyer)).referrers)
            )
        self.to_convert.update(dict.fromkeys(pairs))
        self.convert_referrals()

    def _version(self, aggregate_id: str) -> int:
        aggregate = self.aggregates.get(aggregate_id)
        return aggregate.version if aggregate is not None else 0

    def _convert(self, referrer: Customer, referred: Customer) -> None:
        """The conversion is due from the referrer's own ``referral`` event, not from the
        index that found it (an index row is no fact: verify does not seal it)."""
        referred_at = referrer.referrals.get(referred.id)
        if referred_at is None:
            log.warning(
                "the referrers index names %r for %r, who has no such referral",
                referrer.id,
                referred.id,
            )
            return
        bought_at = referred.first_purchase_since(referred_at)
        if bought_at is not None:
            referrer.convert_referral(
                referred.id, occurred_at=bought_at, actor=self.actor, timestamp=self.clock()
            )

    def _get(self, aggregate_id: str) -> Any:
        if aggregate_id not in self.looked_up:
            self._load({aggregate_id})
        return self.aggregates.get(aggregate_id)

    def _load(self, ids: set[str]) -> None:
        if ids:
            self.aggregates.update(self.app.load_many(ids))
            self.looked_up |= ids


def record_batch(
    app: JourneyApplication,
    commands: list[tuple[int, Command]],
    *,
    actor: str,
    skip_invalid: bool,
    clock: Clock = utc_now,
    on_progress: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> Outcome:
    """Record a batch of numbered commands as one validated whole (``on_progress`` told
    of each command applied, ``on_stored`` of each batch of events stored).

    Every command is applied in memory first; if any fails and ``skip_invalid`` is off,
    nothing is saved. A concurrent writer that got to a customer first makes the save
    fail; the whole batch is then applied again from the store, where the other writer's
    events count as already recorded.
    """
    earlier: list[tuple[str, str, int]] = []  # stored by attempts whose save then failed
    earlier_lines: set[int] = set()
    for _ in attempts():
        uow = UnitOfWork(app, actor, clock)
        uow.on_stored = on_stored
        outcome = apply_all(uow, commands, on_progress)
        if outcome.rejected and not skip_invalid:  # nothing more is stored
            return settled(outcome, 0, earlier, earlier_lines)
        try:
            saved = uow.save()
        except IntegrityError:
            earlier += uow.committed
            earlier_lines |= uow.committed_lines
            continue
        recorded = sum(len(lines) for lines in uow.lines.values())
        pairs, buyers = uow.unseen()
        if pairs or buyers:
            saved += reconcile(app, actor, clock, pairs, buyers)
        return settled(outcome, recorded, earlier + saved, earlier_lines)
    stored = f" ({len(earlier)} of its events were stored before it gave up)" if earlier else ""
    raise RetryableConflict(
        f"another writer kept changing the same customers{stored}; "
        "sending the same input again is safe"
    )


def reconcile(
    app: JourneyApplication,
    actor: str,
    clock: Clock,
    pairs: set[tuple[str, str]],
    buyers: set[str],
) -> list[tuple[str, str, int]]:
    """Record the conversions ``UnitOfWork.unseen`` found may be due
    (``UnitOfWork.convert_again``): of two writers that raced, the one that saved last sees
    the other's events and records the conversion; a referrer's conversion is recorded
    once (``Customer.convert_referral``), and two reconciling at once meet on its version."""
    for _ in attempts():
        uow = UnitOfWork(app, actor, clock)
        uow.convert_again(pairs, buyers)
        try:
            return uow.save()
        except IntegrityError:
            continue
    raise RetryableConflict(
        "another writer kept changing the same customers while a referral's conversion was "
        "recorded; the input itself is stored, and sending it again is safe"
    )


def settled(
    outcome: Outcome, recorded: int, saved: list[tuple[str, str, int]], earlier_lines: set[int]
) -> Outcome:
    """The outcome of the last attempt, which stored ``saved`` (with what earlier attempts
    stored before their save failed) and recorded ``recorded`` input lines: inputs that
    earlier attempts stored are no duplicates, and the events stored beyond one per input
    line stored are the engine's own."""
    outcome.customers = [customer for customer, _, _ in saved]
    outcome.types = [type_ for _, type_, _ in saved]
    outcome.positions = [position for _, _, position in saved]
    outcome.stored = len(saved)
    ours = earlier_lines.intersection(outcome.duplicate_lines)
    outcome.duplicates -= len(ours)
    outcome.derived = outcome.stored - recorded - len(ours)
    return outcome


def attempts() -> Iterator[int]:
    """The tries of a write that may lose a race to another writer: each after the first
    waits a random while, longer each time, so that writers that collided do not collide
    again in step."""
    for attempt in range(RETRIES):
        if attempt:
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
        yield attempt


def apply_all(
    uow: UnitOfWork,
    commands: list[tuple[int, Command]],
    on_progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Apply every command in input order, but a refund or resolution whose purchase or
    complaint comes later in the input: it waits for it, and follows it, in input order
    with the others that waited (the first of two refunds too large together is the one
    kept). The input is validated whole, so a file of refunds imported before the file of
    purchases is no fault."""
    outcome = Outcome()
    uow.preload(command for _, command in commands)
    opened = opened_at(commands)
    waiting: dict[tuple[str, str, str], list[tuple[int, Command]]] = {}
    for index, (line, command) in enumerate(commands):
        if (key := needed_key(command)) is not None and opened.get(key, -1) > index:
            waiting.setdefault(key, []).append((line, command))
            continue
        apply_one(uow, outcome, line, command, on_progress)
        if (key := opened_key(command)) is not None and opened[key] == index:
            for waited_line, waited in waiting.pop(key, []):
                apply_one(uow, outcome, waited_line, waited, on_progress)
    uow.convert_referrals()
    return outcome


def apply_one(
    uow: UnitOfWork,
    outcome: Outcome,
    line: int,
    command: Command,
    on_progress: Callable[[int], None] | None,
) -> None:
    try:
        if uow.handle(command):
            uow.lines[command.customer_id].append(line)
        else:
            outcome.duplicates += 1
            outcome.duplicate_lines.append(line)
    except InputError as error:
        outcome.rejected.append(Rejected(line, [error]))
    if on_progress:
        on_progress(1)


def opened_at(commands: list[tuple[int, Command]]) -> dict[tuple[str, str, str], int]:
    """Where in the input each purchase and complaint first comes, by (customer, kind, id)."""
    found: dict[tuple[str, str, str], int] = {}
    for index, (_, command) in enumerate(commands):
        if (key := opened_key(command)) is not None:
            found.setdefault(key, index)
    return found


#: The purchase or complaint each type opens, and each that needs one: (kind, id field).
OPENS = {Purchase: ("order", "order_id"), Complaint: ("complaint", "complaint_id")}
NEEDS = {Refund: ("order", "order_id"), ResolveComplaint: ("complaint", "complaint_id")}


def opened_key(command: Command) -> tuple[str, str, str] | None:
    """The purchase or complaint ``command`` opens, by (customer, kind, id)."""
    return keyed(OPENS, command)


def needed_key(command: Command) -> tuple[str, str, str] | None:
    """The purchase or complaint a refund or resolution needs, keyed alike."""
    return keyed(NEEDS, command)


def keyed(table: dict[type, tuple[str, str]], command: Command) -> tuple[str, str, str] | None:
    found = table.get(type(command))
    return None if found is None else (command.customer_id, found[0], getattr(command, found[1]))
