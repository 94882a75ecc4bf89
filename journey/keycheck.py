"""``journey verify``'s look at the key table (``journey_keys``), which no hash chain covers.

Personal data recorded after a customer's last erasure must be sealed under the
customer's key, and data sealed before it must not be (an erasure deletes the key it
ends): journey/integrity.py's pass feeds every event's stored state to a ``KeyCheck``.
"""

from __future__ import annotations

from typing import Any

from journey.chunks import chunks
from journey.events import Erased
from journey.integrity import Break, stored_shape
from journey.personal import Keyring, is_sealed
from journey.sidetables import SideTables

#: The topic an ``erased`` event is stored under: what ``KeyCheck`` looks for.
ERASED_TOPIC = stored_shape(Erased)[0]


class KeyCheck:
    """``verify``'s look at the key table, which no chain covers: personal data recorded
    after a customer's last erasure must be sealed under the customer's key (its id: its
    bytes are proven by opening the data, which verify does not do).

    The key ids are read before verify's pass, in a transaction of their own (read in
    the pass, the table's lock was held for all of it, and every key read and write
    queued behind an erase's rewrite waiting for it). The pass feeds every event in log
    order, and only data no key id and no erasure so far accounts for is kept (an
    erasure drops what it accounts for). The customers left are looked at again after
    the pass, as a reader does (``check_unerased``): their keys, then their erasures, so
    an erasure or a new key stored since the ids were read, or beyond the end of
    verify's pass, is no alarm."""

    def __init__(self, keyring: Keyring, customer_ids: list[str] | None = None):
        self.keyring = keyring
        self.kids = keyring.kids(customer_ids)
        self.erased: dict[str, int] = {}
        #: customer -> (position, version, kid) of data no key id or erasure accounts for
        self.unkeyed: dict[str, list[tuple[int, int, Any]]] = {}
        #: customer -> (position, version) of the first data under its present key
        self.first_under_key: dict[str, tuple[int, int]] = {}

    def event(self, customer_id: str, position: int, version: int, topic: str, state: Any) -> None:
        if topic == ERASED_TOPIC:
            self.erased[customer_id] = max(version, self.erased.get(customer_id, 0))
            kept = [e for e in self.unkeyed.pop(customer_id, ()) if e[1] > version]
            if kept:
                self.unkeyed[customer_id] = kept
            return
        personal = state.get("personal") if isinstance(state, dict) else None
        if not is_sealed(personal):
            return
        if personal["kid"] == self.kids.get(customer_id):
            self.first_under_key.setdefault(customer_id, (position, version))
        elif version > self.erased.get(customer_id, 0):
            found = (position, version, personal["kid"])
            self.unkeyed.setdefault(customer_id, []).append(found)

    def breaks(self) -> list[Break]:
        """One break per customer whose data after its last erasure its key does not
        account for (no key, or another one), or whose key sealed data before it (put
        back: an erasure deletes the key it ends), looked at again now."""
        restored = {
            c: first
            for c, first in self.first_under_key.items()
            if first[1] < self.erased.get(c, 0)
        }
        ids = sorted({*self.unkeyed, *restored})
        if not ids:
            return []
        kids = self.keyring.kids(ids)  # first the keys, then the erasures
        erased = last_erasures(self.keyring.tables, ids)
        found = []
        for customer_id in ids:
            key, last = kids.get(customer_id), erased.get(customer_id, 0)
            after = [e for e in self.unkeyed.get(customer_id, ()) if e[1] > last and e[2] != key]
            if after:
                found.append(key_break(customer_id, after, key))
            first = restored.get(customer_id)
            if first and key == self.kids[customer_id] and first[1] < last:
                found.append(restored_break(customer_id, *first, key))
        return found


def restored_break(customer_id: str, position: int, version: int, key: str) -> Break:
    detail = (
        f"the customer's key {key} sealed its personal data at version {version}, before its "
        "last erasure, which deleted that key: it was put back (from a backup?), opens that "
        "data again, and seals new data"
    )
    return Break(customer_id, position, version, "key restored", detail)


def key_break(customer_id: str, after: list[tuple[int, int, Any]], key: str | None) -> Break:
    position, version, kid = after[0]
    count = f"{len(after)} event(s) from version {version} on hold personal data"
    if key is None:
        detail = (
            f"{count} recorded after any erasure, and the customer has no key: it was "
            "deleted from journey_keys outside Journey, or the erased event that deleted it "
            "was removed with the seal rows after it (check with --anchor before erasing "
            "again), or an erase by an older Journey stopped between deleting it and "
            "recording its event (journey erase finishes that)"
        )
        return Break(customer_id, position, version, "key missing", detail)
    detail = (
        f"{count} sealed under key {kid}, after any erasure; the customer's key is {key}: "
        "the key's id or the sealed data was changed outside Journey"
    )
    return Break(customer_id, position, version, "key altered", detail)


def last_erasures(tables: SideTables, customer_ids: list[str]) -> dict[str, int]:
    """The version of each customer's last ``erased`` event (those that have one)."""
    found: dict[str, int] = {}
    with tables.reading() as cur:
        for chunk in chunks(customer_ids):
            marks = ",".join("?" * len(chunk))
            found.update(
                cur.execute(
                    "SELECT originator_id, MAX(originator_version) FROM "
                    f"{tables.events_table} WHERE topic = ? "
                    f"AND originator_id IN ({marks}) GROUP BY originator_id",
                    (ERASED_TOPIC, *chunk),
                ).fetchall()
            )
    return found
