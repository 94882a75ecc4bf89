"""End to end over real HTTP: `journey serve` and `journey projections run` as processes
on 127.0.0.1 with PostgreSQL; an SSE client that survives the server being killed."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from journey.api import Journey
from journey.storage import Database
from projections.feed import Feed
from projections.readmodels.store import ReadModelStore, make_engine
from service.keys import SCOPES, Keys

pytestmark = pytest.mark.postgres
JOURNEY = str(Path(sys.executable).with_name("journey"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


@contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class Server:
    def __init__(self, url: str, port: int, log: Path):
        self.url, self.port, self.log = url, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [JOURNEY, "--db", self.url, "serve", "--port", str(self.port), "--keepalive", "0.5"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_until(self.healthy, 60, f"journey serve on port {self.port}")

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(self.base + "/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)


class SseClient(threading.Thread):
    """Follows /v1/feed, reconnecting after the server goes away with Last-Event-ID."""

    def __init__(self, server: Server, key: str):
        super().__init__(daemon=True)
        self.server, self.key = server, key
        self.entries: list[dict] = []
        self.ids: list[int] = []
        self.connections = 0
        self.last_event_id: str | None = None
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            headers = {"Authorization": f"Bearer {self.key}"}
            if self.last_event_id is not None:
                headers["Last-Event-ID"] = self.last_event_id
            try:
                with httpx.stream("GET", self.server.base + "/v1/feed", headers=headers,
                                  timeout=httpx.Timeout(5, read=5)) as response:
                    if response.status_code != 200:
                        self.errors.append(f"status {response.status_code}")
                        self.halt.wait(0.2)
                        continue
                    self.connections += 1
                    self.read(response)
            except httpx.HTTPError as exc:
                self.errors.append(type(exc).__name__)
                self.halt.wait(0.1)

    def read(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if self.halt.is_set():
                return
            if not line:
                if "data" in fields:
                    entry = json.loads(fields["data"])
                    assert fields["id"] == str(entry["position"])
                    self.entries.append(entry)
                    self.ids.append(entry["position"])
                    self.last_event_id = fields["id"]
                fields = {}
            elif not line.startswith(":") and ": " in line:
                name, value = line.split(": ", 1)
                fields[name] = value


def purchases(prefix: str, customers: int, orders: int) -> list[dict]:
    return [
        {"type": "purchase", "customer_id": f"{prefix}-{c}", "order_id": f"o-{o}",
         "occurred_at": f"2025-0{1 + o}-0{1 + c % 9}T10:00:00Z", "amount": "20",
         "category": "abc"[o % 3]}
        for c in range(customers)
        for o in range(orders)
    ]


def test_sse_over_http_survives_a_killed_server_without_loss_or_repeats(pg_url, tmp_path):
    database = Database.parse(pg_url)
    database.ensure_schema()
    engine = make_engine(database)
    key = Keys(engine).create("e2e", list(SCOPES))
    engine.dispose()
    headers = {"Authorization": f"Bearer {key}"}
    server = Server(pg_url, free_port(), tmp_path / "serve.log")
    runner_args = [JOURNEY, "--db", pg_url, "projections", "run", "summary"]
    client: SseClient | None = None
    try:
        # The server first: it creates the read-model tables. Two processes creating them
        # at once can fail with DuplicateTable (ReadModelStore.ensure; reported).
        server.start()
        with process(runner_args, tmp_path / "runner.log"):
            first = httpx.post(server.base + "/v1/events", headers=headers,
                               json=purchases("a", 60, 3), timeout=60)
            assert first.status_code == 201, first.text
            client = SseClient(server, key)
            client.start()
            wait_until(lambda: len(client.entries) >= 10, 60, "the first feed entries")
            server.kill()  # mid-stream: the runner is still announcing batch one
            seen_before_kill = len(client.entries)
            with Journey(pg_url, actor="offline") as journey:  # recorded while it is down
                assert not journey.record_many(purchases("b", 30, 2)).rejected
            server.start()
            third = httpx.post(server.base + "/v1/events", headers=headers,
                               json=purchases("c", 30, 2), timeout=60)
            assert third.status_code == 201, third.text
            with Journey(pg_url) as journey:
                store = ReadModelStore(database)
                try:
                    feed = Feed(store)

                    def everything_delivered() -> bool:
                        with store.engine.connect() as conn:
                            applied = store.serving(conn, "summary").position
                        caught_up = applied == journey.app.max_notification_id()
                        return caught_up and client.ids[-1:] == [feed.head()]

                    wait_until(everything_delivered, 120, "every feed entry at the client")
                    expected = [e.as_dict() for e in feed.read(0, 100_000)]
                finally:
                    store.close()
        assert client.connections >= 2, client.errors
        assert seen_before_kill < len(expected)
        assert client.ids == [e["position"] for e in expected]  # none lost, none repeated
        assert client.entries == expected
        assert {e["customer_id"].split("-")[0] for e in client.entries} == {"a", "b", "c"}
    finally:
        if client is not None:
            client.halt.set()
            client.join(10)
        server.close()


def test_serve_refuses_requests_without_keys_over_http(pg_url, tmp_path):
    server = Server(pg_url, free_port(), tmp_path / "serve.log")
    try:
        server.start()
        assert httpx.get(server.base + "/v1/funnel").status_code == 401
        assert httpx.get(server.base + "/openapi.json").status_code == 401
        assert httpx.get(server.base + "/health").json() == {"status": "ok"}
    finally:
        server.close()

