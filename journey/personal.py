"""Personal data: sealed with a key per customer, held apart from the events.

``personal`` (name, email, phone, address, note) is stored on ``identified`` and
``contact`` events as a *sealed* object: the field names, an AES-GCM ciphertext of the
canonical JSON of the fields, its nonce, the id of the key (``kid``) and an HMAC digest
of the same plaintext under the customer's key. The key lives in ``journey_keys``, one
row per customer, never in the events. Erasure deletes that row: the ciphertext can no
longer be opened, and the digest (keyed) can no longer be tested against guesses.

Reading through the decrypting mapper turns a sealed object into a ``PersonalData``: a
dict of the plaintext fields, or of ``ERASED`` markers once the key is gone, which still
remembers the sealed form it came from (so idempotency and hashes never need the key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import IntegrityError

from journey.chunks import chunks
from journey.errors import JourneyError
from journey.integrity import canonical_json
from journey.sidetables import SideTables
from journey.storage import lock_timed_out

ERASED = "[erased]"
#: What bulk readers (reports, diffs) show for a field they did not open.
SEALED = "[sealed]"
KEYS_TABLE = "journey_keys"
#: VACUUM FULL waits for every reader of the key table, and every writer queues behind
#: it: so it waits a moment at a time (writers go between), up to PURGE_WAIT seconds.
PURGE_LOCK_WAIT, PURGE_LOCK_PAUSE, PURGE_WAIT = "500ms", 0.5, 600.0
#: How long a SQLite checkpoint that empties the WAL may hold writers off, a try.
CHECKPOINT_WAIT_MS = 200
#: How long a reading process trusts a key it fetched (erasure elsewhere wins after that).
CACHE_SECONDS = 5.0
CACHE_SIZE = 4096


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def canonical_plaintext(personal: dict[str, Any]) -> bytes:
    """What is sealed and digested: the same bytes for the same fields, in any order."""
    return canonical_json({k: v for k, v in personal.items() if v is not None})


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and "ciphertext" in value and "kid" in value


def unopened(sealed: dict[str, Any]) -> dict[str, str]:
    """Sealed personal data as shown without opening it: its field names only (the
    ciphertext, key id and digest are the store's business, not a reader's)."""
    return dict.fromkeys(sealed["fields"], SEALED)


@dataclass(frozen=True)
class CustomerKey:
    """A customer's secret: 32 bytes for AES-GCM, 32 for the HMAC digest."""

    customer_id: str
    kid: str
    secret: bytes

    @classmethod
    def new(cls, customer_id: str) -> CustomerKey:
        return cls(customer_id, secrets.token_hex(8), os.urandom(64))

    def digest(self, personal: dict[str, Any]) -> str:
        return self._mac(canonical_plaintext(personal))

    def seal(self, personal: dict[str, Any]) -> dict[str, Any]:
        nonce = os.urandom(12)
        plaintext = canonical_plaintext(personal)
        ciphertext = AESGCM(self.secret[:32]).encrypt(nonce, plaintext, self._aad())
        return {
            "kid": self.kid,
            "fields": sorted(k for k, v in personal.items() if v is not None),
            "digest": self._mac(plaintext),
            "nonce": b64(nonce),
            "ciphertext": b64(ciphertext),
        }

    def open(self, sealed: dict[str, Any]) -> dict[str, str]:
        plaintext = AESGCM(self.secret[:32]).decrypt(
            unb64(sealed["nonce"]), unb64(sealed["ciphertext"]), self._aad()
        )
        return json.loads(plaintext)

    def _mac(self, plaintext: bytes) -> str:
        return b64(hmac.new(self.secret[32:], plaintext, hashlib.sha256).digest())

    def _aad(self) -> bytes:
        return f"{self.customer_id}\x00{self.kid}".encode()


class PersonalData(dict):
    """Personal fields as read: plaintext, or ``ERASED`` for each field once the key is
    gone. ``sealed`` is the stored form it was opened from."""

    sealed: dict[str, Any]
    erased: bool
    #: Sealed under another key than the customer's present one: by right only for data
    #: sealed before an erasure (whose key was destroyed); else the key's id or the data
    #: was altered (application.check_unerased says which).
    other_key: bool = False
    #: The customer has no key: by right only for data sealed before an erasure (which
    #: deletes the key in the transaction recording it); else the key was deleted.
    no_key: bool = False

    @classmethod
    def opened(
        cls,
        sealed: dict[str, Any],
        plain: dict[str, str] | None,
        other_key: bool = False,
        no_key: bool = False,
    ) -> PersonalData:
        data = cls(plain if plain is not None else dict.fromkeys(sealed["fields"], ERASED))
        data.sealed = sealed
        data.erased = plain is None
        data.other_key = other_key
        data.no_key = no_key
        return data

    def erased_copy(self) -> PersonalData:
        """The same sealed data as it reads without its key."""
        return PersonalData.opened(self.sealed, None)


def personal_marker(value: Any) -> tuple[str, Any] | None:
    """What identifies personal data for idempotency: the keyed digest of a sealed value,
    else (data stored before sealing existed) the plaintext itself."""
    if value is None:
        return None
    sealed = getattr(value, "sealed", None)
    if sealed is None and is_sealed(value):
        sealed = value
    if sealed is not None:
        return ("digest", sealed["digest"])
    return ("plain", tuple(sorted((k, v) for k, v in value.items() if v is not None)))


class Keyring:
    """The ``journey_keys`` table: one live key per customer."""

    def __init__(self, tables: SideTables):
        self.tables = tables
        self.table = tables.name(KEYS_TABLE)
        self._ready = False
        self._cache: dict[str, tuple[float, CustomerKey | None]] = {}

    def ensure_table(self) -> None:
        if self._ready:
            return
        blob = "BYTEA" if self.tables.pg else "BLOB"
        with self.tables.transaction(lock="schema") as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "customer_id TEXT PRIMARY KEY, kid TEXT NOT NULL, "
                f"secret {blob} NOT NULL, created_at TEXT NOT NULL)"
            )
        self._ready = True

    def load(self, customer_ids: set[str]) -> dict[str, CustomerKey]:
        """The live keys of these customers (those that have one)."""
        self.ensure_table()
        with self.tables.reading() as cur:
            rows = self._select(cur, "customer_id, kid, secret", sorted(customer_ids))
        return {cid: CustomerKey(cid, kid, bytes(secret)) for cid, kid, secret in rows}

    def _select(self, cur: Any, columns: str, ids: list[str]) -> list[Any]:
        """``columns`` of the keys of ``ids``, a chunk of ids per statement."""
        rows: list[Any] = []
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows += cur.execute(
                f"SELECT {columns} FROM {self.table} WHERE customer_id IN ({marks})", chunk
            ).fetchall()
        return rows

    def store(self, keys: list[CustomerKey]) -> None:
        """Store new keys before the events they sealed; raises KeyRace when another
        writer gave one of these customers a key first (the batch is then retried)."""
        if not keys:
            return
        self.ensure_table()
        keys = sorted(keys, key=lambda k: k.customer_id)  # two writers lock rows in one order
        now = datetime.now(UTC).isoformat()
        with self.tables.transaction() as cur:
            taken = (
                self._store_pg(cur, keys, now)
                if self.tables.pg
                else self._store_sqlite(cur, keys, now)
            )
            if taken:
                raise KeyRace(min(taken))

    def _store_pg(self, cur: Any, keys: list[CustomerKey], now: str) -> set[str]:
        """One statement of four arrays; a key another writer stored first is skipped
        (and waited for while it is uncommitted). Returns the customers skipped."""
        stored = cur.execute(
            f"INSERT INTO {self.table} (customer_id, kid, secret, created_at) "
            "SELECT * FROM unnest(?::text[], ?::text[], ?::bytea[], ?::text[]) "
            "ON CONFLICT (customer_id) DO NOTHING RETURNING customer_id",
            [
                [k.customer_id for k in keys],
                [k.kid for k in keys],
                [k.secret for k in keys],
                [now] * len(keys),
            ],
        ).fetchall()
        return {k.customer_id for k in keys} - {row[0] for row in stored}

    def _store_sqlite(self, cur: Any, keys: list[CustomerKey], now: str) -> set[str]:
        """Look, then insert: BEGIN IMMEDIATE keeps every other writer out in between (and
        needs neither RETURNING nor more than 999 parameters a statement, for the older
        SQLite some Pythons come with). Returns the customers that have a key already."""
        taken = {row[0] for row in self._select(cur, "customer_id", [k.customer_id for k in keys])}
        if not taken:
            rows = [(k.customer_id, k.kid, k.secret, now) for k in keys]
            cur.append(self.table, ("customer_id", "kid", "secret", "created_at"), rows)
        return taken

    def kids(self, customer_ids: list[str] | None = None) -> dict[str, str]:
        """Each key's id (of these customers, or all), in a short transaction of its own."""
        self.ensure_table()
        with self.tables.reading() as cur:
            if customer_ids is None:
                rows = cur.execute(f"SELECT customer_id, kid FROM {self.table}").fetchall()
            else:
                rows = self._select(cur, "customer_id, kid", sorted(customer_ids))
        return {customer_id: kid for customer_id, kid in rows}

    def key(self, customer_id: str, fresh: bool = False) -> CustomerKey | None:
        """The live key of one customer, for reading (briefly cached; ``fresh``: read
        again, and cached anew)."""
        now = time.monotonic()
        cached = self._cache.get(customer_id)
        if not fresh and cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        key = self.load({customer_id}).get(customer_id)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[customer_id] = (now, key)
        return key

    def open(self, customer_id: str, sealed: dict[str, Any]) -> PersonalData:
        """The data, or ``[erased]`` fields without the key it was sealed under, flagged
        for ``check_unerased`` (which knows whether an erasure accounts for it)."""
        key = self.key(customer_id)
        try:
            if key is None:
                return PersonalData.opened(sealed, None, no_key=True)
            if key.kid != sealed["kid"]:
                return PersonalData.opened(sealed, None, other_key=True)
            return PersonalData.opened(sealed, key.open(sealed))
        except (InvalidTag, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UnreadableSeal(customer_id) from exc  # altered: not the shape sealed

    def delete_within(self, cur: Any, customer_id: str) -> bool:
        """Delete the customer's key in a transaction already open: the one recording its
        ``erased`` event, so that neither is ever stored without the other (a key missing
        where no erasure accounts for it was deleted outside Journey). ``purge`` once it
        has committed. Returns whether there was a key."""
        if not self.tables.pg:  # on the event store's connection: zero what it frees
            cur.execute("PRAGMA secure_delete=ON")
        cur.execute(f"DELETE FROM {self.table} WHERE customer_id = ?", (customer_id,))
        self._cache.pop(customer_id, None)
        return cur.cur.rowcount == 1

    def destroy(self, customer_id: str) -> bool:
        """Delete the customer's key so that its bytes leave the database files: SQLite
        overwrites the deleted row (secure_delete) and checkpoints the WAL into the main
        file; PostgreSQL rewrites the table. Returns whether there was a key."""
        self.ensure_table()
        with self.tables.transaction() as cur:
            deleted = self.delete_within(cur, customer_id)
        self.purge()
        return deleted

    def purge(self) -> None:
        """Push deleted keys out of the database files, or fail saying why they may still
        be there (erase said a key was destroyed while its bytes stayed in the files).

        SQLite overwrote the row in a new page in the WAL: the checkpoint copies it over
        the old page in the main file, once no reader still reads that old page.
        PostgreSQL's plain VACUUM frees a dead row but leaves its bytes in the page's free
        space, so the table is rewritten into a new file (VACUUM FULL; the old file is
        truncated and unlinked); the rewrite copies a dead row that a transaction begun
        before the deletion may still see, so it waits for those to end first."""
        deadline = time.monotonic() + PURGE_WAIT
        if not self.tables.pg:
            while not self._checkpointed():
                if time.monotonic() > deadline:
                    raise JourneyError(
                        "the key is deleted, but a reader of the database kept SQLite from "
                        "writing its page over the old one in the main file for "
                        f"{PURGE_WAIT:.0f} s: run the erase again later"
                    )
                time.sleep(PURGE_LOCK_PAUSE)
            return
        since = self.tables.autocommit("SELECT statement_timestamp()", fetch=True)[0][0]
        while True:
            older = self._older_transactions(since)
            if not older:
                try:
                    self.tables.autocommit(
                        f"VACUUM FULL {self.table}", lock_timeout=PURGE_LOCK_WAIT
                    )
                    return
                except Exception as exc:  # LockNotAvailable is waited out; others are raised
                    if not lock_timed_out(exc):
                        raise
                    why = f"readers of {self.table} kept it from being rewritten"
            else:
                why = (
                    f"transactions begun before it (pid {', '.join(older)}) may still see "
                    "it, so a rewrite would copy it"
                )
            if time.monotonic() > deadline:
                raise JourneyError(
                    f"the key is deleted, but {why} for {PURGE_WAIT:.0f} s: run the erase "
                    "again later"
                )
            time.sleep(PURGE_LOCK_PAUSE)  # the writers queued behind it go first

    def _checkpointed(self) -> bool:
        """Whether the WAL is now copied into the main file and emptied. A passive
        checkpoint copies what no reader still reads, without holding writers off; only
        once it has copied every frame is the WAL truncated, which holds writers off while
        it waits for readers, so briefly (the key's bytes may be in older frames)."""
        if self.tables.memory:
            return True
        _, frames, copied = self.tables.checkpoint("PASSIVE", busy_ms=0)
        if frames != copied:  # a reader of an older snapshot still reads an old page
            return False
        busy, _, _ = self.tables.checkpoint("TRUNCATE", busy_ms=CHECKPOINT_WAIT_MS)
        return busy == 0

    def _older_transactions(self, since: datetime) -> list[str]:
        """The sessions of this database (and prepared transactions) whose transaction
        began before ``since`` and holds a snapshot or a transaction id: VACUUM keeps a
        row deleted after such a transaction began (a plain VACUUM's excepted, which
        PostgreSQL does not count). Sessions of other roles show only to
        a role with pg_read_all_stats."""
        rows = self.tables.autocommit(
            "SELECT pid::text FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start < %(since)s "
            "AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL) "
            # a plain VACUUM's snapshot keeps nothing from being removed (PROC_IN_VACUUM)
            "AND pid NOT IN (SELECT pid FROM pg_stat_progress_vacuum) "
            "UNION ALL SELECT 'prepared ' || gid FROM pg_prepared_xacts "
            "WHERE database = current_database() AND prepared < %(since)s",
            params={"since": since},
            fetch=True,
        )
        return [row[0] for row in rows]


@dataclass
class KeyDeletion:
    """``Keyring.delete_within`` as a step of another transaction (``Sealing.also``),
    remembering whether there was a key."""

    keyring: Keyring
    customer_id: str
    deleted: bool = False

    def __call__(self, cur: Any) -> None:
        self.deleted = self.keyring.delete_within(cur, self.customer_id)


class UnreadableSeal(JourneyError):
    """Sealed personal data its key does not open: the key or the ciphertext was altered
    outside Journey (a traceback was all an auditor got)."""

    def __init__(
        self,
        customer_id: str,
        why: str = "cannot be opened with its key",
        cause: str = "the key (journey_keys) or the sealed data was altered outside Journey "
        "(journey verify)",
    ):
        super().__init__(f"the personal data of {customer_id!r} {why}: {cause}")


class KeyRace(IntegrityError):
    """Another writer created a key for the same customer at the same moment."""

    def __init__(self, customer_id: str):
        super().__init__(f"a key for {customer_id!r} was created concurrently")
        self.customer_id = customer_id
