"""The Customer aggregate: the one place the write-side invariants are guarded.

It remembers only what its guards need (orders and what was refunded, open complaints,
the content of every event by its idempotency key, converted referrals); everything a
report shows is computed by the projections from the events themselves.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import BaseAggregate

from journey.errors import ConflictError, InputError, UnknownReference
from journey.events import (
    ComplaintResolved,
    CustomerEvent,
    Erased,
    Identified,
    OrderState,
    ReferralConverted,
    Referred,
    Refunded,
    Reidentified,
)
from journey.integrity import encode_new_event
from journey.personal import CustomerKey, personal_marker

Key = tuple[Any, ...]

#: The natural id of each type whose input names one: resending it is a retry or a conflict.
NATURAL_KEYS = {
    "purchase": "order_id",
    "complaint": "complaint_id",
    "complaint_resolved": "complaint_id",
}


def canonical(value: Any) -> Any:
    """A value in one spelling, so equal content compares equal however it was written.
    Times and amounts need nothing: Python compares (and hashes) an aware datetime by its
    instant and a Decimal by its number, so 10:00Z equals 12:00+02:00 and 59.9 equals
    59.90 as they are."""
    if isinstance(value, dict):
        return tuple(sorted((k, canonical(v)) for k, v in value.items() if v is not None))
    return value


#: The field whose 0 the rules read as its absence (a contact's or resolution's cost): an
#: export that writes ``"cost": "0"`` where the first left it out sends the same event.
ZERO_IS_ABSENT = "cost"


def content_of(
    type_: str, occurred_at: datetime, payload: dict[str, Any], marker: Any = None
) -> Key:
    """An event's content for idempotency. Personal data counts by its keyed digest (the
    ciphertext differs on every sealing), or as plaintext if stored before sealing; an
    input's, not yet sealed, by ``marker`` (its digest under the customer's key)."""
    if payload.get(ZERO_IS_ABSENT) == 0:
        payload = {**payload, ZERO_IS_ABSENT: None}
    if payload.get("personal") is not None:
        payload = {**payload, "personal": marker or personal_marker(payload["personal"])}
    fields = tuple(sorted((k, canonical(v)) for k, v in payload.items()))
    return (type_, canonical(occurred_at), fields)


def spaced(name: str) -> str:
    """A hint for an id not found that has white space around it (ids are given without)."""
    return " (it has white space at its start or end)" if name != name.strip() else ""


def has_personal(content: Key) -> bool:
    return any(name == "personal" and value is not None for name, value in content[2])


def sealed(content: Key) -> bool:
    """Whether the content's personal data is known by its keyed digest (not plaintext
    an older store kept, which can still be compared)."""
    return any(
        name == "personal" and isinstance(value, tuple) and value[:1] == ("digest",)
        for name, value in content[2]
    )


def without_personal(content: Key) -> Key:
    type_, occurred_at, fields = content
    return (type_, occurred_at, tuple((k, v) for k, v in fields if k != "personal"))


def idempotency_key(type_: str, event_id: str | None, payload: dict[str, Any], content: Key) -> Key:
    """What makes two inputs "the same event": a natural id, an event_id, or the content."""
    natural = NATURAL_KEYS.get(type_)
    if natural:
        return (type_, natural, payload[natural])
    if event_id is not None:
        return ("event_id", event_id)
    return ("content", content)


class Customer(BaseAggregate[str]):
    """One customer's stream of events, and the guards that keep it consistent."""

    def __init__(self) -> None:
        self.orders: dict[str, OrderState] = {}
        self.complaints: dict[str, datetime] = {}
        self.seen: dict[Key, Key] = {}
        self.converted: set[str] = set()
        #: The customers this one referred, each at its earliest referral.
        self.referrals: dict[str, datetime] = {}
        #: The content hash of the last event linked into the chain (stored, or prepared
        #: for the store by ``chain_pending``): the next one's ``previous_hash``.
        self.last_hash: str | None = None
        #: Whether an ``erased`` event is stored (personal data may have come since).
        self.erased = False
        #: The content, all but the personal data, of each event whose personal data was
        #: sealed with a key since destroyed (``forget_keys``): an input matching one is
        #: that event sent again, which its digest can no longer tell.
        self.erased_copies: set[Key] = set()
        #: The idempotency key and content ``record`` worked out for the event it is
        #: about to trigger, so that ``remember`` need not work them out again.
        self.next_seen: tuple[Key, Key] | None = None
        #: The idempotency keys of the events ``record`` made here, not loaded: a conflict
        #: with one is with an earlier input of the same batch, nothing stored.
        self.recorded_keys: set[Key] = set()

    @classmethod
    def identify(cls, customer_id: str, **fields: Any) -> Customer:
        """A new customer; personal data in ``fields`` must already be sealed."""
        customer = cls._create(Identified, id=customer_id, **fields)
        customer.recorded_keys.update(customer.seen)  # made here, as ``record`` notes
        return customer

    def chain_pending(self, recorded_at: datetime | None = None) -> dict[int, bytes]:
        """Complete the events not yet saved for the store: each stamped with the time the
        store records it (``recorded_at``; without it, the time it was triggered) and linked
        into the customer's hash chain (``previous_hash``, ``content_hash``). Returns each
        one's stored state by version, encoded once with its hash.

        Done as a batch is prepared for the store rather than as each event is triggered:
        an import validates every line before it stores any, so a recorded time taken then
        would say the event was known long before it was (``known_at`` answers would change
        after the fact), and the encoding now overlaps the database's work on the batch
        before. The events are not yet anyone's record, so they are completed in place.
        """
        encoded: dict[int, bytes] = {}
        for event in self.pending_events:
            completed = {**vars(event), "previous_hash": self.last_hash}
            if recorded_at is not None:
                completed["timestamp"] = recorded_at
            version = event.originator_version
            content_hash, encoded[version] = encode_new_event(
                type(event), self.id, version, completed
            )
            for name in ("timestamp", "previous_hash"):
                object.__setattr__(event, name, completed[name])
            object.__setattr__(event, "content_hash", content_hash)
            self.last_hash = content_hash
        return encoded

    def remember(self, event: CustomerEvent) -> None:
        if self.next_seen is not None:
            key, content = self.next_seen
            self.next_seen = None
        else:
            payload = event.payload()
            content = content_of(event.TYPE, event.occurred_at, payload)
            key = idempotency_key(event.TYPE, event.event_id, payload, content)
        self.seen[key] = content
        if event.content_hash is not None:  # stored; a new event is linked when prepared
            self.last_hash = event.content_hash

    def record(
        self,
        event_class: type[CustomerEvent],
        *,
        occurred_at: datetime,
        actor: str,
        timestamp: datetime,
        event_id: str | None,
        payload: dict[str, Any],
        key: CustomerKey | None = None,
    ) -> bool:
        """Record one event unless it is a retry of one already stored.

        Returns False for a retry (same id, same content); raises ConflictError for the same
        id with different content and InputError when a guard fails. Nothing changes then.
        Personal data in ``payload`` is plaintext; it is stored sealed with ``key``.
        """
        if event_class is Identified:
            event_class = Reidentified
        contents = self._contents(event_class.TYPE, occurred_at, payload, key)
        for content in contents:
            id_key = idempotency_key(event_class.TYPE, event_id, payload, content)
            if id_key in self.seen:
                if self.seen[id_key] in contents or self._erased_copy(self.seen[id_key], content):
                    return False
                raise self._conflict(event_class.TYPE, id_key)
        if self._erased_copy_of_any(contents[0]):
            return False
        self._guard(event_class, occurred_at, payload)
        content = contents[0]  # how ``remember`` will see the stored event
        seen = (idempotency_key(event_class.TYPE, event_id, payload, content), content)
        if payload.get("personal") is not None:
            if key is None:
                raise ValueError("personal data needs the customer's key to be sealed")
            payload = {**payload, "personal": key.seal(payload["personal"])}
        self.next_seen = seen
        self.recorded_keys.add(seen[0])
        try:
            self.trigger_event(
                event_class,
                occurred_at=occurred_at,
                actor=actor,
                timestamp=timestamp,
                event_id=event_id,
                **payload,
            )
        finally:
            self.next_seen = None
        return True

    def forget_keys(self) -> None:
        """The customer's key was destroyed (an ``erased`` event): what its digests told
        apart is now told by the rest of each event's content (``erased_copies``)."""
        self.erased = True
        self.erased_copies.update(
            without_personal(content) for content in self.seen.values() if sealed(content)
        )

    def _erased_copy(self, stored: Key, content: Key) -> bool:
        """Whether ``content`` is ``stored`` sent again after the erasure of its personal
        data, whose digest can no longer be compared (its key is destroyed). Stored again,
        it was a second event (counted twice) that brought back the very data erased."""
        rest = without_personal(stored)
        return (
            sealed(stored)
            and has_personal(content)
            and rest in self.erased_copies
            and (rest == without_personal(content))
        )

    def _erased_copy_of_any(self, content: Key) -> bool:
        """``_erased_copy`` for an input known by its content alone (no id)."""
        return has_personal(content) and without_personal(content) in self.erased_copies

    @staticmethod
    def _contents(
        type_: str, occurred_at: datetime, payload: dict[str, Any], key: CustomerKey | None
    ) -> list[Key]:
        """The content of an input as the store may know it: with personal data, by its
        digest under the customer's key, or as plaintext (stored before sealing existed)."""
        personal = payload.get("personal")
        plain = content_of(type_, occurred_at, payload)
        if personal is None or key is None:
            return [plain]
        digest = ("digest", key.digest(personal))
        return [content_of(type_, occurred_at, payload, digest), plain]

    def erase(self, reason: str, *, occurred_at: datetime, actor: str, timestamp: datetime) -> None:
        """Note that the customer's personal data was made unreadable."""
        self.trigger_event(
            Erased,
            occurred_at=occurred_at,
            actor=actor,
            timestamp=timestamp,
            event_id=None,
            reason=reason,
        )

    def convert_referral(
        self, referred_customer_id: str, *, occurred_at: datetime, actor: str, timestamp: datetime
    ) -> bool:
        """Note that a customer this one referred has bought: once per referred customer."""
        if referred_customer_id in self.converted:
            return False
        self.trigger_event(
            ReferralConverted,
            occurred_at=occurred_at,
            actor=actor,
            timestamp=timestamp,
            event_id=None,
            referred_customer_id=referred_customer_id,
        )
        return True

    def first_purchase_since(self, moment: datetime) -> datetime | None:
        """When this customer first bought at or after ``moment`` (for referral conversion)."""
        times = [order.occurred_at for order in self.orders.values() if order.occurred_at >= moment]
        return min(times) if times else None

    def _guard(
        self, event_class: type[CustomerEvent], occurred_at: datetime, payload: dict
    ) -> None:
        if event_class is Refunded:
            self._guard_refund(occurred_at, payload["order_id"], payload["amount"])
        elif event_class is ComplaintResolved:
            self._guard_resolution(occurred_at, payload["complaint_id"])
        elif event_class is Referred and payload["referred_customer_id"] == self.id:
            raise InputError("referred_customer_id", "a customer cannot refer themselves")

    def _guard_refund(self, occurred_at: datetime, order_id: str, amount: Decimal) -> None:
        order = self.orders.get(order_id)
        if order is None:
            raise UnknownReference(
                "order_id", f"no purchase {order_id!r} for customer {self.id!r}{spaced(order_id)}"
            )
        if occurred_at < order.occurred_at:
            raise InputError(
                "occurred_at",
                f"the refund precedes its purchase {order_id!r} ({order.occurred_at.isoformat()})",
            )
        if order.refunded + amount > order.amount:
            raise InputError(
                "amount",
                f"would refund {order.refunded + amount} of the {order.amount} paid "
                f"for {order_id!r}",
            )

    def _guard_resolution(self, occurred_at: datetime, complaint_id: str) -> None:
        opened = self.complaints.get(complaint_id)
        if opened is None:
            raise UnknownReference(
                "complaint_id",
                f"no complaint {complaint_id!r} for customer {self.id!r}{spaced(complaint_id)}",
            )
        if occurred_at < opened:
            raise InputError(
                "occurred_at", f"the resolution precedes its complaint ({opened.isoformat()})"
            )

    def _conflict(self, type_: str, key: Key) -> ConflictError:
        field, value = ("event_id", key[1]) if key[0] == "event_id" else key[1:]
        earlier = key in self.recorded_keys  # nothing stored: an earlier input says otherwise
        if type_ == "complaint_resolved" and field == "complaint_id":
            where = " by an earlier input" if earlier else ""
            return ConflictError(field, f"complaint {value!r} is already resolved{where}")
        if earlier:
            reason = f"{value!r} was sent earlier in this input with other content"
            return ConflictError(field, reason)
        return ConflictError(field, f"{value!r} was already recorded with other content")
