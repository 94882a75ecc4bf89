"""What the handlers share, one per app: the read models (with the event store), the
keys, the feed, the settings, and the rebuilds this process started.

Nothing here matters across restarts: positions and keys live in the database.
"""

import logging
import threading
from datetime import datetime
from typing import Any

from projections.feed import Feed
from projections.pointintime import PointInTime
from projections.readmodels.operate import ReadModels, stale_reasons
from projections.readmodels.store import MODELS
from projections.rules.rfm import Population
from projections.settings import Settings
from service.keys import Keys

POPULATIONS = 8
#: Feed streams open at once in one process: each holds a thread and, on PostgreSQL, a
#: connection of its own (LISTEN), so without a bound one client could take every
#: connection the server allows, from every program that uses it.
MAX_STREAMS = 32

log = logging.getLogger("journey.service")


class Service:
    """The app's shared state (``app.state.service``).

    The read models are opened on first use and closed when the app shuts down; a later
    request (an app that is started again, as test clients do) opens them anew."""

    def __init__(
        self,
        url: str | None,
        settings: Settings,
        *,
        keepalive_seconds: float = 15.0,
        poll_seconds: float = 0.2,
        max_streams: int = MAX_STREAMS,
    ):
        self.url = url
        self.settings = settings
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self.max_streams = max_streams
        if max_streams < 1:
            raise ValueError(f"max_streams must be at least 1, not {max_streams}")
        self._streams = 0
        # Reentrant: a dropped stream gives its place back from the garbage collector, which
        # may run on a thread that holds this lock already.
        self._streams_lock = threading.RLock()
        self._opened: tuple[ReadModels, Keys, Feed] | None = None
        self._open_lock = threading.Lock()
        self._local = threading.local()
        self.rebuilds: dict[str, dict[str, Any]] = {}
        self._rebuild_lock = threading.Lock()
        self._populations: dict[tuple[datetime, int], Population] = {}
        self._population_lock = threading.Lock()
        self._population_compute = threading.Lock()

    def open(self) -> tuple[ReadModels, Keys, Feed]:
        opened = self._opened
        if opened is None:
            with self._open_lock:
                if self._opened is None:
                    models = ReadModels.open(self.url, self.settings)
                    self._opened = (models, Keys(models.store.engine), Feed(models.store))
                opened = self._opened
        return opened

    def warn_stale(self) -> None:
        """At start-up, in the server's log: the read models that no longer say what this
        server's settings and code would (the funnel, the feed and RFM read them)."""
        for name in MODELS:
            if reasons := stale_reasons(self.models.runner.serving(name), self.settings):
                log.warning(
                    "read model %s is stale (%s): `journey projections rebuild %s`",
                    name,
                    "; ".join(reasons),
                    name,
                )

    @property
    def models(self) -> ReadModels:
        return self.open()[0]

    @property
    def keys(self) -> Keys:
        return self.open()[1]

    @property
    def feed(self) -> Feed:
        return self.open()[2]

    def open_stream(self) -> bool:
        """Take a place for a feed stream; False when all ``max_streams`` are taken."""
        with self._streams_lock:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def close_stream(self) -> None:
        """Give a place back (once per ``open_stream``: see routes.feed)."""
        with self._streams_lock:
            self._streams -= 1

    def close(self) -> None:
        with self._open_lock:
            if self._opened is not None:
                self._opened[0].close()
                self._opened = None

    def queries(self) -> PointInTime:
        """A PointInTime per worker thread: its stream cache is not shared between threads."""
        models = self.models
        found = getattr(self._local, "queries", None)
        if found is None or found.app is not models.app:
            found = PointInTime(models.app, self.settings, populations=self.population)
            self._local.queries = found
        return found

    def population(self, as_of: datetime) -> Population | None:
        """RFM's population at ``as_of`` from the purchases read model, kept while the log
        does not grow: ranking everyone is most of the cost of a customer answer, and
        concurrent requests for "now" (resolved to the second) share one."""
        models = self.models
        key = (as_of, models.app.max_notification_id())
        with self._population_lock:
            if key in self._populations:
                return self._populations[key]
        with self._population_compute:  # one computes, the others then find it
            with self._population_lock:
                if key in self._populations:
                    return self._populations[key]
            found = models.population(as_of)
            if found is not None:
                self._keep_population(key, found)
        return found

    def _keep_population(self, key: tuple[datetime, int], found: Population) -> None:
        with self._population_lock:
            self._populations[key] = found
            while len(self._populations) > POPULATIONS:
                del self._populations[next(iter(self._populations))]

    def rebuild_states(self) -> dict[str, dict[str, Any]]:
        """A copy of every rebuild's state: their threads update them while a request
        writes them out (iterating one that changes size fails)."""
        with self._rebuild_lock:
            return {name: dict(state) for name, state in self.rebuilds.items()}

    def claim_rebuild(self, name: str) -> dict[str, Any] | None:
        """The state of a new rebuild of ``name`` (shown by ``GET /v1/projections``), or
        None while this process is already rebuilding it."""
        with self._rebuild_lock:
            if self.rebuilds.get(name, {}).get("state") == "running":
                return None
            state: dict[str, Any] = {"name": name, "state": "running", "done": 0, "total": None}
            self.rebuilds[name] = state
            return state
