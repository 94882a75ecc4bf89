"""Tamper evidence: a hash chain per customer, and a seal over the whole log.

**The customer chain.** Every customer event carries ``content_hash``, a SHA-256 over its
canonical content — topic, customer, version and the whole stored state but that hash
(both times, actor, event_id, the payload with personal data as stored, i.e. sealed, and
``previous_hash``) — and ``previous_hash``, the ``content_hash`` of the customer's previous
event. The aggregate computes both as a batch is prepared for the store, with the time the
store records it (``Customer.chain_pending``). The canonical content is the
stored JSON itself, re-serialised with sorted keys: so a class upgrade (upcasting) never
changes the hash of an old event, and erasure (which only deletes a key) never touches it.

**The log seal.** ``journey_log_seal`` has one row per customer event, in log order:
position, customer, version, event hash, and a running ``chain`` hash over all rows before.
The write path appends to it in the transaction that stores the events
(journey/recorders.py); every save and ``verify`` also seal what another way left unsealed
(an older Journey, rows written behind its back), but only events whose hash and link fit
their customer's chain. A deleted customer leaves its seal rows behind; a deleted seal row
breaks the running chain.

What cannot be detected is said in README.md ("Auditing"): anything done before sealing, and
an attacker who rewrites events, customer chains and the seal consistently; the head of
the seal (position and chain hash) is printed so operators can anchor it elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import takewhile
from typing import Any

import orjson
from eventsourcing.persistence import DatetimeAsISO, DecimalAsStr, JSONTranscoder, UUIDAsHex
from eventsourcing.utils import get_topic

from journey.chunks import chunks
from journey.sidetables import SideTables

SEAL_TABLE = "journey_log_seal"
GENESIS = "0" * 64
PAGE = 20_000
SEAL_COLUMNS = ("position", "customer_id", "version", "event_hash", "chain")
NOT_STATE = ("originator_id", "originator_version", "content_hash")

_transcoder = JSONTranscoder()
for _transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
    _transcoder.register(_transcoding)

_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
#: The mapper's JSON (eventsourcing's JSONTranscoder) for a state already in stored form.
_stored_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def refuse_constant(name: str) -> Any:
    """NaN and Infinity: JSON has neither and the store never writes them, but Python's
    parser reads them, and they would hash as the null orjson writes for them."""
    raise ValueError(f"{name} is not JSON")


def refuse_float(text: str) -> Any:
    """A number with a fraction or an exponent: the store never writes one (amounts are
    decimal text, the rest integers), and one read as a float hashed as something else
    (``1e400`` is infinity, which orjson writes as the ``null`` it replaced: an altered
    event verified clean)."""
    raise ValueError(f"{text} is not a number the store writes")


_loads = functools.partial(json.loads, parse_constant=refuse_constant, parse_float=refuse_float)
_sha256 = hashlib.sha256
_AS_IS = frozenset({str, int, bool})
_MISSING = object()


def hash_state(topic: str, customer_id: str, version: int, state: dict[str, Any]) -> str:
    """The content hash of a stored event from its JSON state (``content_hash`` left out)."""
    if "content_hash" in state:
        state = {k: v for k, v in state.items() if k != "content_hash"}
    return _sha256(canonical_json([topic, customer_id, version, state])).hexdigest()


def canonical_json(value: Any) -> bytes:
    """``value`` as ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` writes it, in UTF-8: what every hash was computed from. orjson
    writes the same bytes for everything a stored state holds (a property test keeps it
    so) many times faster; what it refuses (integers past 64 bits) takes json's road."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _dumps(value).encode()


def stored_json(state: dict[str, Any]) -> bytes:
    """A state in stored form as the mapper would write it (key order aside). Kept until
    the event is saved, so copied to its own size: orjson's buffer holds about 4 KB."""
    try:
        return memoryview(orjson.dumps(state)).tobytes()
    except orjson.JSONEncodeError:
        return _stored_dumps(state).encode()


def encode_new_event(
    event_class: type, customer_id: str, version: int, fields: dict
) -> tuple[str, bytes]:
    """The content hash of an event about to be triggered with ``fields``, and the state
    the mapper would store for it (every dataclass field, ``class_version`` when above 1,
    the hash itself), built once for both: the write path then encodes each event once."""
    topic, defaults, class_version = stored_shape(event_class)
    state = {
        name: as_stored(value)
        for name, default in defaults
        if (value := fields.get(name, default)) is not _MISSING
    }
    if class_version > 1:
        state["class_version"] = class_version
    content_hash = hash_state(topic, customer_id, version, state)
    state["content_hash"] = content_hash
    return content_hash, stored_json(state)


@functools.cache
def stored_shape(event_class: type) -> tuple[str, tuple[tuple[str, Any], ...], int]:
    """The topic, each stored field with its default, and the class version of an event
    class: what ``dataclasses.fields`` would tell each time, at a fraction of the cost."""
    defaults = tuple(
        (f.name, _MISSING if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(event_class)
        if f.name not in NOT_STATE
    )
    return get_topic(event_class), defaults, getattr(event_class, "class_version", 1)


def topic_of(event: Any) -> str:
    """The topic an event is stored under (``get_topic``, remembered per class)."""
    return stored_shape(type(event))[0]


def isoformat(value: datetime) -> str:
    """``value.isoformat()``. orjson writes a UTC time (every recorded time, and most
    valid times) the same way three times faster; a property test holds it to that."""
    if value.tzinfo is UTC:
        return orjson.dumps(value)[1:-1].decode()
    return value.isoformat()


def as_stored(value: Any) -> Any:
    """``value`` as the mapper's JSON will read back, built directly: encoding it and
    parsing it again cost a fifth of an import. Types it does not know take that road."""
    kind = type(value)
    if value is None or kind in _AS_IS:
        return value
    if kind is datetime:
        return {"_type_": "datetime_iso", "_data_": isoformat(value)}
    if kind is Decimal:
        return {"_type_": "decimal_str", "_data_": str(value)}
    if kind is dict:
        return {k: as_stored(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [as_stored(v) for v in value]
    return _loads(_transcoder.encode(value))


def link(previous: str, position: int, customer_id: str, version: int, event_hash: str) -> str:
    """One step of the log's running chain."""
    text = f"{previous}\n{position}\n{customer_id}\n{version}\n{event_hash}"
    return _sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Break:
    """One thing wrong with the store."""

    customer_id: str
    position: int | None
    version: int | None
    kind: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Report:
    """What ``verify`` found."""

    events: int = 0
    customers: int = 0
    sealed_now: int = 0
    head_position: int = 0
    head_chain: str = GENESIS
    breaks: list[Break] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.breaks

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "events": self.events,
            "customers": self.customers,
            "sealed_now": self.sealed_now,
            "head": {"position": self.head_position, "chain": self.head_chain},
            "breaks": [b.as_dict() for b in self.breaks],
        }


class LogSeal:
    """The ``journey_log_seal`` table and the checks over it and the events."""

    def __init__(self, tables: SideTables):
        self.tables = tables
        self.table = tables.name(SEAL_TABLE)
        self._ready = False

    def ensure_table(self) -> None:
        if self._ready:
            return
        index = f"{SEAL_TABLE}_customer"
        with self.tables.transaction(lock="schema") as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "position BIGINT PRIMARY KEY, customer_id TEXT NOT NULL, "
                "version BIGINT NOT NULL, event_hash TEXT NOT NULL, chain TEXT NOT NULL)"
            )
            cur.execute(
                f"CREATE INDEX IF NOT EXISTS {index} ON {self.table} (customer_id, position)"
            )
        self._ready = True

    # -- sealing ---------------------------------------------------------------------

    def seal(self, known: dict[int, tuple[str, int, str]] | None = None) -> int:
        """Append every unsealed customer event to the seal, in log order; returns how
        many. ``known`` gives (customer, version, hash) of events this process just
        saved; any other unsealed event is sealed only if its hash and its link to the
        customer's last sealed event hold (an event that fails stays unsealed, and
        ``verify`` reports it as inserted)."""
        return self._seal(known)[0]

    def seal_within(self, cursor: Any, known: dict[int, tuple[str, int, str]]) -> None:
        """``seal`` in a transaction already open: the one storing the events (see
        journey/recorders.py), so that they and their seal rows commit together."""
        self._append(self.tables.within(cursor, lock="seal"), known)

    def _seal(self, known: dict[int, tuple[str, int, str]] | None) -> tuple[int, int]:
        """Seal; returns how many rows were sealed and the last position looked at."""
        self.ensure_table()
        with self.tables.transaction(lock="seal") as cur:
            return self._append(cur, known or {})

    def _append(self, cur: Any, known: dict[int, tuple[str, int, str]]) -> tuple[int, int]:
        """Append what is unsealed; returns how many rows and the last position looked at."""
        head = cur.execute(
            f"SELECT position, chain FROM {self.table} ORDER BY position DESC LIMIT 1"
        ).fetchone()
        position, chain = (head[0], head[1]) if head else (0, GENESIS)
        pos = self.tables.position
        rows = cur.execute(
            f"SELECT {pos}, originator_id, originator_version FROM "
            f"{self.tables.events_table} WHERE {pos} > ? AND originator_id NOT LIKE ? "
            f"ORDER BY {pos}",
            (position, "~%"),
        ).fetchall()
        unknown = [r[0] for r in rows if r[0] not in known]
        states = self._states(cur, unknown)
        tails: dict[str, tuple[int, str]] = {}
        sealed: list[tuple[int, str, int, str, str]] = []
        for row_position, customer_id, version in rows:
            if row_position in known:
                event_hash = known[row_position][2]
            else:
                topic, raw = states[row_position]
                event_hash = self._fits(cur, tails, customer_id, version, topic, raw)
                if event_hash is None:
                    continue
            tails[customer_id] = (version, event_hash)
            chain = link(chain, row_position, customer_id, version, event_hash)
            sealed.append((row_position, customer_id, version, event_hash, chain))
        cur.append(self.table, SEAL_COLUMNS, sealed)
        return len(sealed), max(position, rows[-1][0] if rows else 0)

    def _states(self, cur: Any, positions: list[int]) -> dict[int, tuple[str, Any]]:
        found: dict[int, tuple[str, Any]] = {}
        pos = self.tables.position
        for chunk in chunks(positions):
            marks = ",".join("?" * len(chunk))
            for row in cur.execute(
                f"SELECT {pos}, topic, state FROM {self.tables.events_table} "
                f"WHERE {pos} IN ({marks})",
                chunk,
            ).fetchall():
                found[row[0]] = (row[1], row[2])
        return found

    def _fits(
        self,
        cur: Any,
        tails: dict[str, tuple[int, str]],
        customer_id: str,
        version: int,
        topic: str,
        raw: Any,
    ) -> str | None:
        """The hash of an unsealed event if it belongs where it stands, else None."""
        try:
            state = parsed(raw)
            event_hash = hash_state(topic, customer_id, version, state)
        except ValueError:  # not JSON the store writes (a UnicodeError is one too)
            return None
        if state.get("content_hash") != event_hash:
            return None
        tail = tails.get(customer_id)
        if tail is None:
            row = cur.execute(
                f"SELECT version, event_hash FROM {self.table} WHERE customer_id = ? "
                "ORDER BY position DESC LIMIT 1",
                (customer_id,),
            ).fetchone()
            tail = (row[0], row[1]) if row else (0, None)
        expected_version, expected_previous = tail[0] + 1, tail[1]
        if version != expected_version or state.get("previous_hash") != expected_previous:
            return None
        return event_hash

    # -- verifying -------------------------------------------------------------------

    def verify(
        self,
        customer_ids: Iterable[str] | None = None,
        *,
        anchors: Iterable[tuple[int, str]] = (),
        seal: bool = True,
        keys: Callable[[], Any] | None = None,
    ) -> Report:
        """Check the seal's running chain, every (asked) customer's events against their
        seal rows and their own chain; report each break. ``anchors`` are (position,
        chain) pairs noted earlier (printed heads): the seal must still show them.
        ``keys()`` gives a check of the key table (personal.KeyCheck), fed every event
        read and asked for its breaks at the end."""
        report = Report()
        # What is checked is the log as the seal step saw it: events saved later by other
        # writers (and sealed by them, or not yet) are left to the next verify.
        upto: int | None = None
        if seal:
            report.sealed_now, upto = self._seal(None)
        else:
            self.ensure_table()
        asked = set(customer_ids) if customer_ids is not None else None
        check = Checker(report, asked, dict(anchors), keys() if keys else None)
        with self.tables.reading() as cur:
            seals = self._seal_rows(cur)
            events = self._event_rows(cur, sorted(asked) if asked is not None else None)
            if upto is not None:
                seals = takewhile(lambda row: row[0] <= upto, seals)
                events = takewhile(lambda row: row[0] <= upto, events)
            for seal_row, event_row in merge(seals, events):
                check.row(seal_row, event_row)
        check.finish()
        return report

    def _seal_rows(self, cur: Any) -> Iterator[tuple]:
        columns = f"SELECT position, customer_id, version, event_hash, chain FROM {self.table}"
        # Positions start at 1; a row below (which no page from 0 reaches) was put there.
        yield from cur.execute(f"{columns} WHERE position <= 0 ORDER BY position").fetchall()
        after = 0
        while True:
            rows = cur.execute(
                f"{columns} WHERE position > ? ORDER BY position LIMIT ?", (after, PAGE)
            ).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def _event_rows(self, cur: Any, ids: list[str] | None) -> Iterator[tuple]:
        pos = self.tables.position
        columns = f"{pos}, originator_id, originator_version, topic, state"
        if ids is not None:  # a few customers: read them whole, then in log order
            ids = [i for i in ids if not i.startswith("~")]  # no customer's: the engine's
            rows: list[tuple] = []
            for chunk in chunks(ids):
                rows += cur.execute(
                    f"SELECT {columns} FROM {self.tables.events_table} "
                    f"WHERE originator_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
            yield from sorted(rows, key=lambda row: row[0])
            return
        table = self.tables.events_table
        customers = f"SELECT {columns} FROM {table} WHERE originator_id NOT LIKE ?"
        # Positions start at 1; an event below (which no page from 0 reaches) was put there.
        yield from cur.execute(f"{customers} AND {pos} <= 0 ORDER BY {pos}", ("~%",)).fetchall()
        after = 0
        while True:
            rows = cur.execute(
                f"{customers} AND {pos} > ? ORDER BY {pos} LIMIT ?", ("~%", after, PAGE)
            ).fetchall()
            if not rows:
                return
            yield from rows
            after = rows[-1][0]


def parsed(raw: Any) -> Any:
    """A stored state as the store's reader takes it: JSON in UTF-8 and nothing else
    (``json.loads`` of bytes would also take UTF-16 or a byte-order mark, which the
    reader refuses: the checks must not pass what no reader can read)."""
    if not isinstance(raw, bytes | memoryview | bytearray):
        raise ValueError(f"the state is {type(raw).__name__}, not bytes")
    return _loads(bytes(raw).decode("utf-8"))


def altered_columns(event: tuple) -> str:
    """Which columns of an event row hold what the store never writes (a NULL, text for
    a number): the row was edited by hand, and no other check can read it."""
    _, customer_id, version, topic, raw = event
    odd = [
        name
        for name, value, kind in (
            ("originator_id", customer_id, str),
            ("originator_version", version, int),
            ("topic", topic, str),
        )
        if type(value) is not kind
    ]
    if not isinstance(raw, bytes | memoryview | bytearray):
        odd.append("state")
    return ", ".join(odd) + (" is" if len(odd) == 1 else " are") if odd else ""


def merge(seals: Iterator[tuple], events: Iterator[tuple]) -> Iterator[tuple[Any, Any]]:
    """Pair seal rows and event rows by position (either may be missing)."""
    s = next(seals, None)
    e = next(events, None)
    while s is not None or e is not None:
        if e is not None and (s is None or e[0] < s[0]):
            yield None, e
            e = next(events, None)
        elif e is None or s[0] < e[0]:
            yield s, None
            s = next(seals, None)
        else:
            yield s, e
            s, e = next(seals, None), next(events, None)


class Checker:
    """The checks of ``verify``, row by row in log order; one break per fault."""

    def __init__(self, report: Report, asked: set[str] | None,
                 anchors: dict[int, str] | None = None, keys: Any = None):
        self.report = report
        self.keys = keys
        self.asked = asked
        self.anchors = dict(anchors or {})
        self.chain = GENESIS
        self.last: dict[str, tuple[int, str]] = {}
        self.faulty: set[tuple[str, int]] = set()
        self.customers: set[str] = set()

    def add(self, customer_id: str, position: int | None, version: int | None, kind: str,
            detail: str, *also: int) -> None:
        self.report.breaks.append(Break(customer_id, position, version, kind, detail))
        for v in (version, *also):
            if v is not None:
                self.faulty.add((customer_id, v))

    def row(self, seal: tuple | None, event: tuple | None) -> None:
        if seal is not None:
            self._seal(seal, present=event is not None)
        if event is not None:
            self._event(seal, event)

    def _seal(self, seal: tuple, present: bool) -> None:
        position, customer_id, version, event_hash, chain = seal
        expected = link(self.chain, position, customer_id, version, event_hash)
        if chain != expected:
            self.add("(log)", position, None, "seal altered",
                     "the seal's running chain does not match at this position: a seal row "
                     "was removed, inserted or changed")
        self.chain = chain
        self.report.head_position, self.report.head_chain = position, chain
        anchored = self.anchors.pop(position, None)
        if anchored is not None and anchored != chain:
            self.add("(log)", position, None, "seal altered",
                     f"the anchored chain at position {position} was {anchored}, "
                     f"it is now {chain}: the log up to there was rewritten")
        if not present and (self.asked is None or customer_id in self.asked):
            self.customers.add(customer_id)
            self.add(customer_id, position, version, "event removed",
                     f"version {version} was sealed at position {position} but is gone")

    def _event(self, seal: tuple | None, event: tuple) -> None:
        position, customer_id, version, topic, raw = event
        self.report.events += 1
        odd = altered_columns(event)
        customer_id = str(customer_id)
        self.customers.add(customer_id)
        if odd:
            known = version if type(version) is int else None
            self.add(customer_id, position, known, "payload changed",
                     f"{odd} not what the store writes: the row was altered")
            if known is not None:  # its place in the chain holds; its hash is unknown
                last_version = self.last.get(customer_id, (0, None))[0]
                self.last[customer_id] = (max(known, last_version), "")
            return
        try:
            state = parsed(raw)
            event_hash = hash_state(topic, customer_id, version, state)
        except ValueError as exc:  # not JSON the store writes (a UnicodeError is one too)
            self.add(customer_id, position, version, "payload changed",
                     f"the state is not JSON the store writes: {exc}")
            return
        if self.keys is not None:
            self.keys.event(customer_id, position, version, topic, state)
        claimed = state.get("content_hash")
        if seal is None:  # not part of the log: it takes no place in the chain either
            self.add(customer_id, position, version, "event inserted",
                     "this event is not in the log seal (it does not fit its customer's "
                     "chain, or was slipped into the sealed part of the log, or its seal "
                     "row was removed: then `seal altered` is reported after it)")
            return
        self._against_seal(seal, customer_id, position, version, event_hash, claimed)
        if claimed != event_hash and (customer_id, version) not in self.faulty:
            self.add(customer_id, position, version, "payload changed",
                     "the stored content no longer matches its content_hash")
        # An event whose version was changed keeps its sealed place in the chain: taken at
        # its new version, every later one read as reordered after it (a break each).
        in_chain = seal[2] if seal[1] == customer_id and type(seal[2]) is int else version
        self._link(customer_id, position, in_chain, state.get("previous_hash"), event_hash)

    def _against_seal(self, seal: tuple, customer_id: str, position: int, version: int,
                      event_hash: str, claimed: str | None) -> None:
        _, sealed_customer, sealed_version, sealed_hash, _ = seal
        if sealed_customer != customer_id:
            self.add(customer_id, position, version, "payload changed",
                     f"sealed as an event of {sealed_customer!r}, now of {customer_id!r}")
            self.faulty.add((sealed_customer, sealed_version))
        elif sealed_version != version:
            self.add(customer_id, position, version, "events reordered",
                     f"sealed as version {sealed_version}, now version {version}",
                     sealed_version)
        elif sealed_hash != event_hash:
            how = ("it matches its own content_hash but not the hash it was sealed with: "
                   "the event was rewritten with its hash recomputed, or the seal row was "
                   "altered (then `seal altered` is reported at this position too)"
                   if claimed == event_hash
                   else "it no longer matches the hash it was sealed with")
            self.add(customer_id, position, version, "payload changed", f"content changed: {how}")

    def _link(self, customer_id: str, position: int, version: int, previous: str | None,
              event_hash: str) -> None:
        last_version, last_hash = self.last.get(customer_id, (0, None))
        self.last[customer_id] = (max(version, last_version), event_hash)
        if version == last_version + 1:
            if previous != last_hash and not self._explained(customer_id, version - 1, version):
                self.add(customer_id, position, version, "chain broken",
                         f"previous_hash does not match version {version - 1}")
        elif version > last_version + 1:
            missing = range(last_version + 1, version)
            if not self._explained(customer_id, *missing, version):
                self.add(customer_id, position, version, "event removed",
                         f"versions {missing.start}..{missing.stop - 1} are missing",
                         *missing)
        elif not self._explained(customer_id, version):
            self.add(customer_id, position, version, "events reordered",
                     f"version {version} is stored after version {last_version}")

    def _explained(self, customer_id: str, *versions: int) -> bool:
        return any((customer_id, v) in self.faulty for v in versions)

    def finish(self) -> None:
        self.report.customers = len(self.customers)
        if self.keys is not None:
            self.report.breaks += self.keys.breaks()
        for customer_id in sorted((self.asked or set()) - self.customers):
            # Neither an event nor a seal row names it: a mistyped id must not read as clean.
            self.add(customer_id, None, None, "unknown customer",
                     "no stored event and no seal row names this customer")
        for position, chain in self.anchors.items():
            if (position, chain) == (0, GENESIS):  # an empty log's head: every seal's start
                continue
            self.add("(log)", position, None, "seal altered",
                     f"the anchored position {position} (chain {chain}) is no longer in the "
                     "seal: the log was cut back or rewritten")
