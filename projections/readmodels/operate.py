"""What operators do with read models: open them, see their status, keep them running.

Separate from the CLI so the HTTP service and tests use the same code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from journey.application import JourneyApplication
from journey.errors import JourneyError
from journey.storage import Database
from projections.feed import LISTEN_IDLE
from projections.readmodels.queries import rfm_population
from projections.readmodels.runner import Runner
from projections.readmodels.store import (
    MODELS,
    Generation,
    LockBusy,
    NewerCode,
    PositionMoved,
    ReadModelStore,
    newer_code,
)
from projections.rules.rfm import Population
from projections.rules.window import iso
from projections.settings import Settings, load_settings

log = logging.getLogger("journey.projections")

#: How long a runner starting waits for a read model's lock (then: another runner has
#: it): a reader catching the model up (``ReadModels.refresh``: the HTTP service,
#: ``journey funnel``) holds it for a while. Checked every ``LOCK_RETRY`` seconds.
LOCK_WAIT, LOCK_RETRY = 30.0, 0.5


@dataclass
class ReadModels:
    """An event store, its read-model store and a runner over both."""

    app: JourneyApplication
    store: ReadModelStore
    runner: Runner
    #: Refreshes of this process take turns: a second one (another request of the HTTP
    #: service) would find the lock the first holds and answer from a model not yet
    #: caught up; waiting for the first, it finds the model current.
    refreshing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, url: str | None, settings: Settings, *, sets_rules: bool = True) -> ReadModels:
        """``sets_rules``: whether ``settings`` are the rules of the first generations of
        a store that has none yet (those of a runner or a rebuild). A query's are a
        what-if (``show --settings``): those generations take $JOURNEY_SETTINGS or the
        defaults instead, else every runner would go on applying the query's rules."""
        app = JourneyApplication(Database.parse(url))
        store = ReadModelStore(app.database)
        first = None if sets_rules else load_settings  # read only for a store's first
        return cls(app, store, Runner(app, store, settings, first_rules=first))

    def close(self) -> None:
        self.store.close()
        self.app.close()

    def refresh(self, names: Sequence[str]) -> bool:
        """Catch ``names`` up now unless a runner already keeps them (holds their lock);
        True when this call brought them up to date."""
        try:
            with self.refreshing, ExitStack() as locks:
                for name in names:
                    locks.enter_context(self.store.lock(f"run:{name}"))
                for name in names:
                    self._bring_up(name)
                return True
        except (LockBusy, NewerCode):  # kept by another runner, or a newer Journey's
            return False

    def catch_up_each(
        self, names: Sequence[str], lock_wait: float = LOCK_WAIT
    ) -> dict[str, JourneyError]:
        """Catch each of ``names`` up in turn, waiting up to ``lock_wait`` seconds for its
        lock (a reader may be catching it up); why each it did not catch up was left
        (another runner keeps it, or a newer Journey built it). What ``projections run
        --once`` does: one model left does not stop the others being caught up."""
        left: dict[str, JourneyError] = {}
        for name in names:
            try:
                with runner_locks(self.store, [name], threading.Event(), lock_wait):
                    self._bring_up(name)
            except (LockBusy, NewerCode) as exc:
                left[name] = exc
        return left

    def _bring_up(self, name: str) -> None:
        """Apply what the log holds to ``name`` and, for the summary, the changes whose
        moment has come; its lock held."""
        self.runner.catch_up(name)
        while name == "summary" and self.runner.refresh_due():
            pass

    def population(self, as_of: datetime) -> Population | None:
        """RFM's population at ``as_of`` as known now, from the purchases read model; None
        when it is not up to date and cannot be brought up to date here."""
        self.refresh(["purchases"])
        with self.store.engine.connect() as conn:
            serving = self.store.serving(conn, "purchases")
        if serving is None or serving.position < self.app.max_notification_id():
            return None
        return rfm_population(self.store, as_of, self.runner.settings)

    def status(self) -> list[dict[str, Any]]:
        """Position, head, lag and staleness of each read model's serving generation. A
        rebuild's switch may drop a generation while it is read (its table gone): then
        the models are read again, as they now serve."""
        for _ in range(3):
            with suppress(PositionMoved):
                return self._status()
        return self._status()

    def _status(self) -> list[dict[str, Any]]:
        app = self.app
        head = app.max_notification_id()
        now = datetime.now(UTC)
        rows = []
        for generation in self.store.all_generations():
            if generation.status != "serving":
                continue
            waiting = app.select_notifications(generation.position, 1)
            oldest = app.mapper.to_domain_event(waiting[0]).timestamp if waiting else None
            due, since = 0, None
            if generation.name == "summary":  # rows whose time-driven change has come
                with self.runner.retired_meanwhile(generation):
                    due, since = self.store.overdue(generation.generation, now)
            if since is not None and (oldest is None or since < oldest):
                oldest = since
            reasons = stale_reasons(generation, self.runner.settings)
            building = self._building(generation.name)
            rows.append(
                {
                    "name": generation.name,
                    "generation": generation.generation,
                    "position": generation.position,
                    "head": head,
                    "lag_events": app.count_after(generation.position),
                    "refresh_due": due,
                    "lag_seconds": round((now - oldest).total_seconds(), 3) if oldest else 0.0,
                    "settings_version": generation.settings_version,
                    "code_version": generation.code_version,
                    "stale": bool(reasons),
                    "stale_reasons": reasons,
                    "updated_at": iso(generation.updated_at),
                    "building": building,
                }
            )
        return rows

    def _building(self, name: str) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            found = self.store.building(conn, name)
        if found is None:
            return None
        return {
            "generation": found.generation,
            "head": found.build_head,
            "cursor": found.build_cursor,
            "settings_version": found.settings_version,
        }


#: What a stale reason says when only a newer Journey can bring the model up to date.
UPGRADE = "upgrade this Journey to read and keep it"


def stale_reasons(generation: Generation, settings: Settings) -> list[str]:
    """Why a generation no longer says what the current settings and code would: only
    the settings its rows follow count (the timeline's are the classification's)."""
    reasons = []
    if changed := settings_changed(generation, settings):
        reasons.append(
            f"built with settings {generation.settings_version}, now {settings.version} "
            f"({', '.join(changed)})"
        )
    if newer_code(generation):
        reasons.append(
            f"built by projection code {generation.code_version}, newer than this Journey's "
            f"({MODELS[generation.name].code}): {UPGRADE}"
        )
    elif (code := MODELS[generation.name].code) != generation.code_version:
        reasons.append(f"built by projection code {generation.code_version}, now {code}")
    return reasons


def settings_changed(generation: Generation, settings: Settings) -> list[str]:
    """The settings the generation's rows follow that now have other values."""
    names = MODELS[generation.name].settings
    if generation.settings_version == settings.version:
        return []
    try:
        built_with = generation.rules()
    except ValidationError:  # written by an older Journey: say what little is known
        return ["its stored settings are not readable by this Journey"] if names != () else []
    return settings.changed(built_with, names)


def run_supervised(
    url: str | None,
    settings: Settings,
    names: Sequence[str],
    stop: threading.Event,
    on_pass: Callable[[dict[str, int]], None] | None = None,
    retry_seconds: float = 2.0,
    poll_seconds: float = 0.25,
    lock_wait: float = LOCK_WAIT,
    on_open: Callable[[ReadModels], None] | None = None,
    on_start: Callable[[list[str]], None] | None = None,
) -> None:
    """Run until ``stop``; after a lost database connection, reconnect and go on (the
    position lives in the database, so nothing is lost or repeated). ``on_open`` is
    called with the models first opened (to warn of stale ones). ``poll_seconds`` is
    how long it waits for new events before looking again (on PostgreSQL at least
    ``LISTEN_IDLE``, and a NOTIFY ends the wait at once). At the start every lock is
    waited for (``runner_locks``) for ``lock_wait`` seconds, then LockBusy: another runner
    has one. After a reconnection another runner may have taken some meanwhile: the models
    whose locks are free run at once, and the others join as their locks come free
    (``HeldLocks``)."""
    waiting: float | None = lock_wait  # None after it has run: take what is free
    while not stop.is_set():
        try:
            models = ReadModels.open(url, settings)
            if on_open:
                on_open(models)
                on_open = None
            try:
                with held_locks(models.store, names, stop, waiting) as locks:
                    waiting = None
                    if on_start:  # told once its locks are held, not before
                        on_start(list(locks.held))
                        on_start = None
                    with waiter(models) as wait:
                        models.runner.run(
                            locks.held,
                            stop,
                            wait=wait,
                            on_pass=on_pass,
                            poll_seconds=poll_seconds,
                            check=locks.check,
                        )
            finally:
                models.close()
        except (LockBusy, NewerCode):  # reconnecting would not help
            if stop.is_set():
                return
            raise
        except Exception as exc:  # a dropped connection surfaces as many driver errors
            if stop.is_set():
                return
            log.warning("read-model runner lost its database or a lock (%s); reconnecting", exc)
            stop.wait(retry_seconds)


@contextmanager
def held_locks(
    store: ReadModelStore, names: Sequence[str], stop: threading.Event, wait: float | None
) -> Iterator[HeldLocks]:
    """Every lock of ``names`` (``runner_locks``) when ``wait`` is given, else those free
    now, the rest taken as they come free."""
    with ExitStack() as stack:
        locks = HeldLocks(store, names, stack)
        if wait is None:
            locks.take_free()
        else:
            locks.hold_all(stack.enter_context(runner_locks(store, names, stop, wait)))
        yield locks


class HeldLocks:
    """The runner locks a runner holds. ``held`` (in the order of ``names``) is what the
    runner runs, read afresh each pass; ``check`` raises if a held lock was lost, and
    tries the missing ones again at most every ``LOCK_RETRY`` seconds."""

    def __init__(self, store: ReadModelStore, names: Sequence[str], stack: ExitStack):
        self.store, self.names, self.stack = store, list(names), stack
        self.held: list[str] = []
        self.checks: list[Callable[[], None]] = []
        self.tried: float | None = None  # when the missing ones were last tried

    def hold_all(self, check: Callable[[], None]) -> None:
        self.held[:] = self.names
        self.checks.append(check)

    def take_free(self) -> None:
        first = self.tried is None
        self.tried = time.monotonic()
        for name in self.missing():
            try:
                self.checks.append(self.stack.enter_context(self.store.lock(f"run:{name}")))
            except LockBusy:
                continue
            self.held[:] = [n for n in self.names if n in self.held or n == name]
        if first and self.missing():
            log.warning("another runner holds %s; running the others", ", ".join(self.missing()))

    def missing(self) -> list[str]:
        return [n for n in self.names if n not in self.held]

    def check(self) -> None:
        every(self.checks)()
        retry = self.tried is not None and time.monotonic() - self.tried >= LOCK_RETRY
        if retry and self.missing():
            self.take_free()


@contextmanager
def runner_locks(
    store: ReadModelStore, names: Sequence[str], stop: threading.Event, wait: float
) -> Iterator[Callable[[], None]]:
    """The runner locks of ``names``, waited for while busy (a reader may be catching a
    model up) for ``wait`` seconds, then LockBusy. Yields a check that raises if any of
    them was lost (see ``ReadModelStore.lock``)."""
    deadline = time.monotonic() + wait
    while True:
        locks = ExitStack()
        try:
            checks = [locks.enter_context(store.lock(f"run:{name}")) for name in names]
        except LockBusy:
            locks.close()
            if stop.is_set() or time.monotonic() >= deadline:
                raise
            stop.wait(LOCK_RETRY)
            continue
        with locks:
            yield every(checks)
        return


def every(checks: list[Callable[[], None]]) -> Callable[[], None]:
    """One check that runs each of ``checks``."""

    def check() -> None:
        for one in checks:
            one()

    return check


@contextmanager
def waiter(models: ReadModels) -> Iterator[Callable[[float], None] | None]:
    """On PostgreSQL, block until the event store NOTIFYs, or ``LISTEN_IDLE`` seconds
    pass at least (time-driven changes come a second late at most; an idle runner that
    looked four times a second cost a core's twentieth); on SQLite, None: the runner
    polls."""
    database = models.app.database
    if not database.is_postgres:
        yield None
        return
    with database.connect() as conn:
        channel = models.app.recorder.schema_channel
        conn.execute(f'LISTEN "{channel}"')

        def wait(timeout: float) -> None:
            for _ in conn.notifies(timeout=max(timeout, LISTEN_IDLE), stop_after=1):
                pass

        yield wait


def model_names(names: Sequence[str] | None) -> list[str]:
    """The models named, each once (a name given twice waited for its own lock)."""
    chosen = list(dict.fromkeys(names or MODELS))
    unknown = [n for n in chosen if n not in MODELS]
    if unknown:
        raise ValueError(
            f"no read model {', '.join(map(repr, unknown))}; expected {', '.join(MODELS)}"
        )
    return chosen
