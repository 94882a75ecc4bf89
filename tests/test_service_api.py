"""The HTTP service in process (FastAPI's TestClient): who may call what, and what bad
input gets back. The store is a real SQLite file (and PostgreSQL where marked)."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from conftest import PG_URL, _conninfo
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from journey.cli import app as cli  # noqa: E402
from journey.storage import Database  # noqa: E402
from projections.readmodels.store import make_engine  # noqa: E402
from projections.rules.window import iso  # noqa: E402
from projections.settings import Settings  # noqa: E402
from service import create_app  # noqa: E402
from service.keys import SCOPES, Keys  # noqa: E402

WHEN = "2025-03-01T10:00:00Z"

#: (method, path, required scope, request options) for every endpoint.
ENDPOINTS = [
    ("POST", "/v1/events", "events:write",
     {"json": {"type": "qualified", "customer_id": "m-1", "occurred_at": WHEN}}),
    ("GET", "/v1/customers/c-1", "customers:read", {}),
    ("GET", "/v1/customers/c-1/history", "history:read", {}),
    ("GET", "/v1/funnel", "customers:read", {}),
    ("GET", "/v1/projections", "projections:admin", {}),
    ("POST", "/v1/projections/purchases/rebuild", "projections:admin", {"params": {"wait": True}}),
    ("GET", "/v1/feed", "feed:read", {}),
    ("GET", "/v1/feed/page", "feed:read", {}),
]


def purchase(customer: str, order: str, amount: str = "10", when: str = WHEN) -> dict:
    return {"type": "purchase", "customer_id": customer, "occurred_at": when,
            "order_id": order, "amount": amount, "category": "books"}


class Api:
    """A TestClient with a key per scope, an all-scopes key and a revoked one."""

    def __init__(self, url: str):
        self.url = url
        database = Database.parse(url)
        database.ensure_schema()
        engine = make_engine(database)
        keys = Keys(engine)
        self.keys = {scope: keys.create(scope.replace(":", "-"), [scope]) for scope in SCOPES}
        self.all = keys.create("all", list(SCOPES))
        self.revoked = keys.create("gone", list(SCOPES))
        keys.revoke("gone")
        engine.dispose()
        self.client = TestClient(create_app(url, keepalive_seconds=0.2, poll_seconds=0.05))

    def as_(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def call(self, method: str, path: str, key: str | None, **options):
        if path == "/v1/feed" and method == "GET":
            return self.first_of_stream(path, key, **options)
        return self.client.request(method, path, headers=self.as_(key), **options)

    def first_of_stream(self, path: str, key: str | None, **options):
        """Open the SSE stream, read its first chunk, close it (the status is what counts)."""
        headers = {**self.as_(key), **options.pop("headers", {})}
        with self.client.stream("GET", path, headers=headers, **options) as response:
            if response.status_code == 200:
                response.first = next(response.iter_text(), "")
            else:
                response.read()
            return response

    def post(self, body, key: str | None = None):
        return self.client.post("/v1/events", headers=self.as_(key or self.all), json=body)

    def get(self, path: str, key: str | None = None, **options):
        return self.client.get(path, headers=self.as_(key or self.all), **options)


@pytest.fixture
def api(sqlite_url) -> Iterator[Api]:
    found = Api(sqlite_url)
    with found.client:
        found.post([purchase("c-1", "o-1")])
        yield found


# -- who may do what -----------------------------------------------------------------------


@pytest.mark.parametrize("method,path,needed,options", ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
@pytest.mark.parametrize("scope", list(SCOPES))
def test_each_endpoint_answers_only_its_scope(api, method, path, needed, options, scope):
    response = api.call(method, path, api.keys[scope], **json.loads(json.dumps(options)))
    if scope == needed:
        assert response.status_code in (200, 201), response.read()
    else:
        assert response.status_code == 403
        assert response.json()["errors"][0]["kind"] == "forbidden"
        assert needed in response.json()["errors"][0]["reason"]


@pytest.mark.parametrize("method,path,needed,options", ENDPOINTS,
                         ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS])
def test_no_endpoint_answers_without_a_valid_key(api, method, path, needed, options):
    for key in (None, "jk_not-a-key", "something", api.revoked):
        response = api.call(method, path, key, **json.loads(json.dumps(options)))
        assert response.status_code == 401, (key, response.status_code)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["errors"][0]["kind"] == "unauthorized"
    wrong_scheme = api.client.request(method, path, headers={"Authorization": f"Basic {api.all}"},
                                      **options)
    assert wrong_scheme.status_code == 401


def test_health_is_the_one_anonymous_endpoint_and_openapi_needs_a_key(api):
    assert api.client.get("/health").json() == {"status": "ok"}
    assert api.client.get("/health", params={"nocache": "1"}).status_code == 200  # monitors
    head = api.client.head("/health")  # load balancers ask so: it was a 405
    assert (head.status_code, head.content) == (200, b"")
    assert api.client.get("/openapi.json").status_code == 401
    # without a key (or its scope) nothing is learnt, not even an endpoint's parameters
    assert api.client.get("/v1/customers/c-1", params={"asof": "x"}).status_code == 401
    wrong = api.get("/v1/customers/c-1", api.keys["feed:read"], params={"asof": "x"})
    assert wrong.status_code == 403
    for scope in SCOPES:  # any valid key may read the document
        assert api.get("/openapi.json", api.keys[scope]).status_code == 200
    assert api.client.get("/docs").status_code == 404


def test_a_key_revoked_while_the_server_runs_stops_working(api, sqlite_url):
    engine = make_engine(Database.parse(sqlite_url))
    try:
        keys = Keys(engine)
        key = keys.create("short-lived", ["customers:read"])
        assert api.get("/v1/customers/c-1", key).status_code == 200
        keys.revoke("short-lived")
        assert api.get("/v1/customers/c-1", key).status_code == 401
    finally:
        engine.dispose()


def test_keys_cli_prints_a_key_once_and_stores_only_its_hash(sqlite_url):
    runner = CliRunner()
    created = runner.invoke(cli, ["--db", sqlite_url, "keys", "create", "svc",
                                  "--scope", "feed:read", "--scope", "customers:read"])
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    assert key.startswith("jk_") and len(key) > 40
    listed = runner.invoke(cli, ["--db", sqlite_url, "keys", "list", "--json"])
    assert key not in listed.output
    (entry,) = json.loads(listed.output)["keys"]
    assert entry["scopes"] == ["customers:read", "feed:read"] and entry["revoked_at"] is None
    engine = make_engine(Database.parse(sqlite_url))
    try:
        with engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT * FROM journey_api_keys").all()
        assert key not in repr(stored)
        assert Keys(engine).verify(key).name == "svc"
        again = runner.invoke(cli, ["--db", sqlite_url, "keys", "create", "svc",
                                    "--scope", "feed:read"])
        assert again.exit_code == 1 and "exists" in again.output
        bad = runner.invoke(cli, ["--db", sqlite_url, "keys", "create", "x", "--scope", "root"])
        assert bad.exit_code == 2 and "unknown scope root" in bad.output
        revoked = runner.invoke(cli, ["--db", sqlite_url, "keys", "revoke", "svc"])
        assert revoked.exit_code == 0
        assert Keys(engine).verify(key) is None
        twice = runner.invoke(cli, ["--db", sqlite_url, "keys", "revoke", "svc"])
        assert twice.exit_code == 1
    finally:
        engine.dispose()


# -- recording -----------------------------------------------------------------------------


def test_events_are_stored_with_positions_and_the_key_as_actor(api):
    response = api.post([purchase("c-2", "o-1"), purchase("c-2", "o-2")])
    assert response.status_code == 201
    body = response.json()
    assert body["stored"] == 3 and body["derived"] == 1 and body["duplicates"] == 0
    assert body["positions"] == sorted(body["positions"]) and len(body["positions"]) == 3
    events = api.client.app.state.service.models.app.customer_events("c-2")
    assert {e.actor for e in events} == {"api:all"}


def test_a_retry_is_a_no_op_and_other_content_is_a_conflict(api):
    again = api.post(purchase("c-1", "o-1"))
    assert again.status_code == 201
    assert again.json() == {"positions": [], "stored": 0, "derived": 0, "duplicates": 1}
    conflict = api.post(purchase("c-1", "o-1", amount="11"))
    assert conflict.status_code == 409
    assert conflict.json() == {"errors": [{"field": "order_id", "kind": "conflict", "reason":
                                           "'o-1' was already recorded with other content"}]}


def test_bad_input_names_every_field_and_stores_nothing(api):
    head = api.client.app.state.service.models.app.max_notification_id()
    response = api.post([
        purchase("c-3", "o-1"),
        {**purchase("c-3", "o-2", amount="-5"), "occurred_at": "2025-03-01T10:00:00"},
        {"type": "erased", "customer_id": "c-3", "occurred_at": WHEN},
        {"type": "feedback", "customer_id": "bad id", "occurred_at": WHEN, "score": 11,
         "extra": 1},
    ])
    assert response.status_code == 422
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert errors == {(1, "amount"), (1, "occurred_at"), (2, "type"), (3, "customer_id"),
                      (3, "score"), (3, "extra")}
    assert all(e["kind"] == "invalid" and e["reason"] for e in response.json()["errors"])
    assert api.client.app.state.service.models.app.max_notification_id() == head


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "not valid JSON"),
    (b'{"type": "feedback", "score": 8, "score": 9}', "duplicate field score"),
    (b"\xff\xfe", "is not UTF-8"),
    (b"[]", "holds no event"),
    (b"42", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
])
def test_a_body_that_is_not_events_is_refused(api, body, reason):
    response = api.client.post("/v1/events", headers=api.as_(api.all), content=body)
    assert response.status_code == 422
    assert reason in response.json()["errors"][0]["reason"]


def test_a_body_with_a_byte_order_mark_is_read_as_the_cli_reads_stdin(api):
    """RFC 8259 lets a reader skip it, `journey record` and import do: it was "not valid
    JSON"; only one, at the start."""
    body = json.dumps(purchase("c-7", "o-1")).encode()
    marked = b"\xef\xbb\xbf" + body
    response = api.client.post("/v1/events", headers=api.as_(api.all), content=marked)
    assert response.status_code == 201, response.text
    plain = api.post(purchase("c-8", "o-1"))  # the same, for another customer
    assert response.json()["stored"] == plain.json()["stored"] > 0
    twice = b"\xef\xbb\xbf" * 2 + body
    response = api.client.post("/v1/events", headers=api.as_(api.all), content=twice)
    assert response.status_code == 422


def test_a_conflict_beside_bad_input_is_422(api):
    response = api.post([purchase("c-1", "o-1", amount="12"), {"type": "nope"}])
    assert response.status_code == 422
    kinds = {e["kind"] for e in response.json()["errors"]}
    assert "invalid" in kinds


# -- reading -------------------------------------------------------------------------------


def test_the_ids_dot_and_dot_dot_are_read_percent_encoded_as_the_readme_says(api):
    """Clients drop dot segments from a path: written as they are, these valid ids reach
    another route."""
    assert api.post([purchase("..", "o-1"), purchase(".", "o-2")]).status_code == 201
    for sent, customer in (("%2E%2E", ".."), ("%2e", ".")):
        shown = api.get(f"/v1/customers/{sent}")
        assert shown.status_code == 200 and shown.json()["customer_id"] == customer
        steps = api.get(f"/v1/customers/{sent}/history").json()["steps"]
        orders = {s["event"]["payload"].get("order_id") for s in steps if s["event"]}
        assert orders == {None, "o-1" if customer == ".." else "o-2"}  # identified, purchase
    assert api.get("/v1/customers/..").status_code == 404  # reached /v1


def test_a_time_whose_plus_came_unencoded_says_to_write_it_2b(api):
    """``?as_of=2025-03-02T10:00:00+01:00`` reaches the server with a space for the +."""
    response = api.get("/v1/customers/c-1?as_of=2025-03-02T10:00:00+01:00")
    assert response.status_code == 422
    assert "write it %2B" in response.json()["errors"][0]["reason"]
    encoded = api.get("/v1/customers/c-1?as_of=2025-03-02T10:00:00%2B01:00")
    assert encoded.status_code == 200
    for other in ("yesterday", "2025-03-02 10:00", "2025-03-02T10:00", "2025-03-02 01"):
        reason = api.get("/v1/customers/c-1", params={"as_of": other}).json()["errors"][0]
        assert "%2B" not in reason["reason"], other


def test_show_is_the_cli_json_and_404_before_the_first_event(api):
    shown = api.get("/v1/customers/c-1", params={"as_of": "2025-03-02"}).json()
    assert shown["loyalty_stage"] == "first_time" and shown["customer_id"] == "c-1"
    assert shown["as_of"] == "2025-03-02T00:00:00Z" and "reasons" in shown
    before = api.get("/v1/customers/c-1", params={"as_of": "2025-02-01"})
    assert before.status_code == 404 and before.json()["errors"][0]["kind"] == "not_found"
    unknown = api.get("/v1/customers/nobody")
    assert unknown.status_code == 404
    not_yet_known = api.get("/v1/customers/c-1", params={"known_at": "2020-01-01"})
    assert not_yet_known.status_code == 404


def test_known_at_now_counts_an_event_recorded_an_instant_before(api):
    assert api.post(purchase("c-9", "o-9")).status_code == 201
    for path in ("/v1/customers/c-9", "/v1/customers/c-9/history"):
        for params in ({"known_at": "now"}, {}):
            response = api.get(path, params=params)
            assert response.status_code == 200, (path, params, response.json())
            known_at = datetime.fromisoformat(response.json()["known_at"])
            steps = api.get("/v1/customers/c-9/history").json()["steps"]
            last = [step["event"] for step in steps if step["event"]][-1]
            assert known_at >= datetime.fromisoformat(last["recorded_at"])


@pytest.mark.parametrize("path,params,field", [
    ("/v1/customers/c-1", {"as_of": "yesterday"}, "as_of"),
    ("/v1/customers/c-1", {"known_at": "2025-03-01T10:00:00"}, "known_at"),
    ("/v1/customers/c-1", {"as_of": "0001-01-01"}, "as_of"),
    ("/v1/customers/bad%20id", {}, "customer_id"),
    ("/v1/customers/c-1/history", {"known_at": "x"}, "known_at"),
    ("/v1/funnel", {"as_of": "2025-13-01"}, "as_of"),
    ("/v1/feed/page", {"after": "-1"}, "after"),
    ("/v1/feed/page", {"limit": "0"}, "limit"),
    ("/v1/feed/page", {"kinds": "stage"}, "kinds"),
    ("/v1/feed/page", {"customer_id": ""}, "customer_id"),
    ("/v1/feed/page", {"customer_id": "bad id"}, "customer_id"),  # as /v1/customers/{id}
    # a misspelt or foreign parameter is refused, not ignored (it answered for now)
    ("/v1/customers/c-1", {"asof": "2025-01-01"}, "asof"),
    ("/v1/customers/c-1/history", {"as_of": "2025-01-01"}, "as_of"),
    ("/v1/funnel", {"from": "2025-01-01"}, "from"),
    ("/v1/feed/page", {"kind": "status"}, "kind"),
])
def test_bad_query_parameters_get_field_errors(api, path, params, field):
    response = api.get(path, params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("path, name", [
    ("/v1/customers/c-1", "as_of"), ("/v1/customers/c-1", "known_at"),
    ("/v1/customers/c-1/history", "known_at"), ("/v1/funnel", "as_of"),
    ("/v1/feed/page", "after"), ("/v1/feed/page", "limit"), ("/v1/feed/page", "customer_id"),
])
def test_a_one_value_parameter_given_twice_is_refused(api, path, name):
    """FastAPI kept the last of ``?as_of=A&as_of=B``: an answer for B to a caller who
    may have meant A."""
    value = {"as_of": "now", "known_at": "now", "customer_id": "c-1", "after": "0"}.get(name, "1")
    response = api.get(path, params=[(name, value), (name, value)])
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["field"] == name
    assert error["reason"] == "is given more than once; it takes one value"
    assert api.get(path, params=[(name, value)]).status_code == 200


def test_kinds_may_be_repeated(api):
    params = [("kinds", "status"), ("kinds", "loyalty_stage,relationship_level")]
    assert api.get("/v1/feed/page", params=params).status_code == 200


def test_history_and_funnel(api):
    history = api.get("/v1/customers/c-1/history").json()
    assert history["customer_id"] == "c-1"
    assert [s["event"]["type"] for s in history["steps"] if s["event"]] == [
        "identified", "purchase"]
    assert api.get("/v1/customers/nobody/history").status_code == 404
    from service.schemas import History  # the OpenAPI document's own model of it

    History.model_validate(history)
    known = datetime.now(UTC)  # after both were recorded; asked in another zone
    text = known.astimezone(timezone(timedelta(hours=2))).isoformat()
    asked = api.get("/v1/customers/c-1/history", params={"known_at": text})
    assert History.model_validate(asked.json()).known_at == iso(known)
    assert {s["state"]["known_at"] for s in asked.json()["steps"]} == {iso(known)}
    ahead = api.get("/v1/customers/c-1/history", params={"known_at": "2999-01-01"})
    assert ahead.status_code == 422 and ahead.json()["errors"][0]["field"] == "known_at"
    counted = api.get("/v1/funnel", params={"as_of": "2025-03-02"})
    assert "journey-stale" not in counted.headers  # built with the service's own settings
    funnel = counted.json()
    assert funnel["stages"]["first_time"] == 1 and sum(funnel["statuses"].values()) == 1
    assert api.get("/v1/funnel", params={"as_of": "2025-01-01"}).json()["stages"][
        "first_time"] == 0


def test_a_funnel_counted_by_other_rules_says_so(api, sqlite_url, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text('{"lapsed_after_days": 30}')
    rebuilt = CliRunner().invoke(
        cli, ["--db", sqlite_url, "projections", "rebuild", "timeline", "--settings", str(rules)]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    counted = api.get("/v1/funnel")
    assert counted.status_code == 200 and "settings" in counted.headers["journey-stale"]


def test_projections_status_and_rebuild(api):
    status = api.get("/v1/projections").json()
    assert {m["name"] for m in status["read_models"]} == {"summary", "timeline", "purchases"}
    done = api.client.post("/v1/projections/timeline/rebuild", params={"wait": True},
                           headers=api.as_(api.all))
    assert done.status_code == 200 and done.json()["state"] == "done"
    assert done.json()["generation"] == 2
    started = api.client.post("/v1/projections/summary/rebuild", headers=api.as_(api.all))
    assert started.status_code == 202 and started.json() == {"name": "summary",
                                                             "state": "started"}
    unknown = api.client.post("/v1/projections/nope/rebuild", headers=api.as_(api.all))
    assert unknown.status_code == 404


def test_a_rebuild_that_fails_answers_in_the_error_shape(api, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr("service.routes.projections.rebuild", broken)
    failed = api.client.post("/v1/projections/timeline/rebuild", params={"wait": True},
                             headers=api.as_(api.all))
    assert failed.status_code == 500
    (error,) = failed.json()["errors"]
    assert error["kind"] == "error" and "the disk is full" in error["reason"]
    from service.schemas import Errors  # the OpenAPI document's own model of it

    Errors.model_validate(failed.json())
    documented = api.get("/openapi.json").json()["paths"]["/v1/projections/{name}/rebuild"]
    assert "500" in documented["post"]["responses"]
    assert api.get("/v1/projections").json()["rebuilds"]["timeline"]["state"] == "failed"


# -- the feed ------------------------------------------------------------------------------


def refresh_summary(api: Api) -> None:
    assert api.client.app.state.service.models.refresh(["summary"])


def test_feed_pages_walk_every_entry_once_with_filters(api):
    api.post([purchase("c-2", "o-1"), purchase("c-2", "o-2"), purchase("c-3", "o-1")])
    refresh_summary(api)
    seen, after = [], 0
    for _ in range(100):
        page = api.get("/v1/feed/page", params={"after": after, "limit": 2}).json()
        if not page["entries"]:
            break
        seen += page["entries"]
        after = page["next_after"]
    positions = [e["position"] for e in seen]
    assert positions == sorted(set(positions)) and positions[-1] == page["head"]
    assert {e["customer_id"] for e in seen} == {"c-1", "c-2", "c-3"}
    stages = api.get("/v1/feed/page", params={"kinds": "loyalty_stage", "customer_id": "c-2",
                                              "limit": 1000}).json()["entries"]
    assert [(e["from"], e["to"]) for e in stages] == [(None, "repeat")]
    both = api.get("/v1/feed/page", params=[("kinds", "status"), ("kinds", "loyalty_stage")])
    assert {e["kind"] for e in both.json()["entries"]} == {"status", "loyalty_stage"}


def read_sse(api: Api, params: dict, headers: dict, wanted: int) -> list[dict]:
    """Read SSE events until ``wanted`` entries arrived (bounded by keep-alives seen)."""
    entries: list[dict] = []
    buffer = ""
    with api.client.stream("GET", "/v1/feed", params=params,
                           headers={**api.as_(api.all), **headers}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        idle = 0
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.splitlines()
                              if not line.startswith(":") and ": " in line)
                if "data" in fields:
                    entry = json.loads(fields["data"])
                    assert fields["id"] == str(entry["position"])
                    entries.append(entry)
                elif block.startswith(": keep-alive"):
                    idle += 1
            if len(entries) >= wanted or idle > 20:
                break
    return entries


def test_sse_resumes_after_last_event_id_and_filters(api):
    api.post([purchase("c-2", "o-1"), purchase("c-2", "o-2")])
    refresh_summary(api)
    everything = api.get("/v1/feed/page", params={"limit": 1000}).json()["entries"]
    streamed = read_sse(api, {}, {}, len(everything))
    assert streamed == everything
    middle = everything[2]["position"]
    resumed = read_sse(api, {"after": 0}, {"Last-Event-ID": str(middle)}, len(everything) - 3)
    assert resumed == everything[3:]
    polyfilled = read_sse(api, {"lastEventId": str(middle)}, {}, len(everything) - 3)
    assert polyfilled == everything[3:]  # as EventSource polyfills send it on reconnect
    stages = read_sse(api, {"kinds": "loyalty_stage"}, {}, 2)
    assert stages == [e for e in everything if e["kind"] == "loyalty_stage"]
    for bad_id in ("x", "\u00b2".encode("latin-1"), "9" * 5000):  # letter, superscript 2, long
        headers = {**api.as_(api.all), "Last-Event-ID": bad_id}
        bad = api.client.get("/v1/feed", headers=headers)
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "Last-Event-ID"
    polyfill = api.client.get("/v1/feed", params={"lastEventId": "x"}, headers=api.as_(api.all))
    assert polyfill.status_code == 422  # named as the client sent it
    assert polyfill.json()["errors"][0]["field"] == "lastEventId"
    # empty, the parameter names no position, as the empty header does
    assert read_sse(api, {"lastEventId": ""}, {}, len(everything)) == everything


def test_a_position_beyond_the_feed_s_head_is_refused_not_waited_on(api):
    """A position this feed never gave (a store restored from a backup, another store's):
    the page answered it as caught up and a stream waited, for entries the client had in
    fact missed (an operator's walk)."""
    refresh_summary(api)
    head = api.get("/v1/feed/page").json()["head"]
    assert head > 0
    at_head = api.get("/v1/feed/page", params={"after": head}).json()
    assert (at_head["entries"], at_head["next_after"]) == ([], head)
    beyond = api.get("/v1/feed/page", params={"after": head + 1})
    assert beyond.status_code == 422
    error = beyond.json()["errors"][0]
    assert error["field"] == "after" and f"beyond the feed's head ({head})" in error["reason"]
    for params, headers, field in (
        ({"after": head + 5}, {}, "after"),
        ({}, {"Last-Event-ID": str(head + 1)}, "Last-Event-ID"),
        ({"lastEventId": str(head + 1)}, {}, "lastEventId"),
    ):
        streamed = api.client.get("/v1/feed", params=params,
                                  headers={**api.as_(api.all), **headers})
        assert streamed.status_code == 422, params
        assert streamed.json()["errors"][0]["field"] == field


def test_an_open_stream_ends_when_its_key_is_revoked(api, sqlite_url, monkeypatch):
    """A stream never ends by itself: a key revoked after it opened kept receiving every
    customer's changes for as long as the connection lasted."""
    from service import feedstream

    monkeypatch.setattr(feedstream, "KEY_CHECK_SECONDS", 0.3)
    engine = make_engine(Database.parse(sqlite_url))
    keys = Keys(engine)
    key = keys.create("leaked", ["feed:read"])
    said = ""
    try:
        with api.client.stream("GET", "/v1/feed", headers=api.as_(key)) as response:
            assert response.status_code == 200
            for chunk in response.iter_text():
                said += chunk
                if "keep-alive" in said and "leaked" not in said:
                    keys.revoke("leaked")
                    said += "(leaked revoked)"
                if "stream ends" in said or said.count("keep-alive") > 40:
                    break
    finally:
        engine.dispose()
    assert "(leaked revoked)" in said and ": the key is revoked" in said


def test_sse_delivers_entries_written_after_it_opened(api):
    refresh_summary(api)
    head = api.get("/v1/feed/page").json()["head"]
    import threading

    def later() -> None:
        api.post(purchase("c-1", "o-2"))
        refresh_summary(api)

    timer = threading.Timer(0.5, later)
    timer.start()
    try:
        fresh = read_sse(api, {"after": head}, {}, 1)
    finally:
        timer.join()
    assert [(e["customer_id"], e["kind"], e["to"]) for e in fresh] == [
        ("c-1", "loyalty_stage", "repeat")]


@pytest.mark.postgres
def test_the_service_on_postgresql(pg_url):
    api = Api(pg_url)
    with api.client:
        assert api.post([purchase("c-1", "o-1")]).status_code == 201
        assert api.get("/v1/customers/c-1").json()["loyalty_stage"] == "first_time"
        refresh_summary(api)
        streamed = read_sse(api, {}, {}, 4)  # bought in March 2025: lapsed a year later
        assert [(e["kind"], e["to"]) for e in streamed] == [
            ("loyalty_stage", "first_time"), ("status", "active"),
            ("relationship_level", "basic"), ("status", "lapsed"),
        ]
        assert streamed[-1]["occurred_at"].startswith("2026-03-01T10:00:00.000001")
        assert api.post(purchase("c-1", "o-1", amount="3")).status_code == 409


def pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


class Proxy:
    """A TCP proxy to a server, which a test cuts as a network or a restarting server
    would: every connection through it ends, and new ones are refused."""

    def __init__(self, target: tuple[str, int], port: int = 0):
        self.target, self.ends = target, []
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.ends += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=pipe, args=(source, sink), daemon=True).start()

    def cut(self) -> None:
        with suppress(OSError):  # wakes the accepting thread (close alone would not)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for end in self.ends:
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


@pytest.mark.postgres
def test_a_database_out_of_reach_answers_503_and_the_next_request_after_it_works(pg_url):
    url = make_url(pg_url)
    proxy = Proxy((url.host, url.port or 5432))
    api = Api(url.set(port=proxy.port).render_as_string(hide_password=False))
    with api.client:
        assert api.post([purchase("c-1", "o-1")]).status_code == 201
        proxy.cut()
        for answer in (
            api.post([purchase("c-2", "o-2")]),
            api.get("/v1/customers/c-1"),
            api.get("/v1/funnel"),
            api.get("/v1/feed/page"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "1"
            (error,) = answer.json()["errors"]
            assert (error["field"], error["kind"]) == ("(database)", "unavailable")
        proxy = Proxy((url.host, url.port or 5432), port=proxy.port)  # the server is back
        try:
            assert api.post([purchase("c-2", "o-2")]).status_code == 201
            assert api.get("/v1/customers/c-2").status_code == 200
        finally:
            proxy.cut()


def test_a_database_fault_is_a_logged_500_not_a_retryable_503(api, sqlite_url, caplog):
    """A missing table is no outage: retrying will not help, and the operator must see it."""
    with sqlite3.connect(Database.parse(sqlite_url).sqlite_path) as conn:
        conn.execute("DROP TABLE journey_feed")
    with caplog.at_level("ERROR", logger="journey.service"):
        answer = api.get("/v1/feed/page")
    assert answer.status_code == 500, answer.text
    assert "Retry-After" not in answer.headers
    (error,) = answer.json()["errors"]
    assert (error["field"], error["kind"]) == ("(database)", "error")
    assert "no such table" in caplog.text


def test_events_outside_the_rules_calendar_are_refused_with_the_rest_of_the_batch(api):
    response = api.post([purchase("c-4", "o-1", when="0001-01-01T00:00:00Z"),
                         purchase("c-4", "o-2", amount="0")])
    assert response.status_code == 422
    assert {(e["index"], e["field"]) for e in response.json()["errors"]} == {
        (0, "occurred_at"), (1, "amount")}
    assert api.get("/v1/customers/c-4").status_code == 404


def test_now_is_the_end_of_the_current_second(api):
    """Cut to the second's start, "now" missed what occurred earlier in that second: a
    customer recorded a moment before was "not found", and the funnel did not count it."""
    before = datetime.now(UTC)
    occurred = iso(datetime.now(UTC))
    assert api.post([purchase("c-now", "o-1", when=occurred)]).status_code == 201
    shown = api.get("/v1/customers/c-now")
    assert shown.status_code == 200, shown.text
    as_of = datetime.fromisoformat(shown.json()["as_of"])
    assert as_of.microsecond == 999_999 and as_of.replace(microsecond=0) >= before.replace(
        microsecond=0)  # one answer, one population, for the whole second
    funnel_as_of = api.get("/v1/funnel").json()["as_of"]
    assert datetime.fromisoformat(funnel_as_of).microsecond == 999_999
    assert "." in api.get("/v1/customers/c-1", params={"as_of": "2025-03-02T10:00:00.5Z"}
                          ).json()["as_of"]


@pytest.mark.parametrize("path, name", [("/v1/customers/c-1", "as_of"),
                                        ("/v1/customers/c-1", "known_at"),
                                        ("/v1/customers/c-1/history", "known_at"),
                                        ("/v1/funnel", "as_of")])
def test_an_empty_time_is_refused_not_read_as_now(api, path, name):
    response = api.get(path, params={name: ""})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == name


@pytest.mark.parametrize(
    "args", [["--port", "99999"], ["--port", "0"], ["--keepalive", "0"], ["--keepalive", "-1"]]
)
def test_serve_refuses_impossible_options_as_a_usage_error(args):
    result = CliRunner().invoke(cli, ["serve", *args])
    assert result.exit_code == 2, result.output


def test_unknown_paths_and_methods_answer_in_the_one_error_shape(api):
    response = api.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["errors"][0]["kind"] == "not_found"
    response = api.call("DELETE", "/v1/funnel", api.all)
    assert response.status_code == 405
    assert response.json()["errors"][0]["field"] == "(path)"


def test_a_server_says_at_start_which_read_models_are_stale(api, sqlite_url, caplog):
    """Only /v1/funnel said so (a header): the feed and RFM served stale models unnoticed."""
    rules = Settings(lapsed_after_days=30)
    with caplog.at_level(logging.WARNING, logger="journey.service"):
        create_app(sqlite_url).state.service.close()
        assert caplog.records == []  # built with this server's settings and code
        create_app(sqlite_url, settings=rules).state.service.close()
    stale = sorted(r.getMessage().split(" is stale")[0] for r in caplog.records)
    assert stale == ["read model summary", "read model timeline"]
    assert all("lapsed_after_days: 365 -> 30" in r.getMessage() for r in caplog.records)


@pytest.mark.postgres
def test_a_missing_table_on_postgres_is_a_shaped_500_too(pg_url, caplog):
    """PostgreSQL's missing table is a ProgrammingError, which no handler took: a plain
    text 500 and a dropped connection, where README promised the one error shape."""
    found = Api(pg_url)
    with found.client:
        found.post([purchase("c-1", "o-1")])
        with psycopg.connect(_conninfo(PG_URL), autocommit=True) as conn:
            schema = Database.parse(pg_url).schema
            conn.execute(f'DROP TABLE "{schema}".journey_feed')
        with caplog.at_level("ERROR", logger="journey.service"):
            answer = found.get("/v1/feed/page")
    assert answer.status_code == 500, answer.text
    (error,) = answer.json()["errors"]
    assert (error["field"], error["kind"]) == ("(database)", "error")


def test_an_id_given_as_an_object_is_a_422_not_a_500(api):
    """The check that points a refund at its refused purchase used the raw ids as keys."""
    for body in (
        {**purchase("c-9", "o-1"), "order_id": {}},
        [{**purchase("c-9", "o-1"), "order_id": [1]},
         {**purchase("c-9", "o-2"), "customer_id": {}}],
        {"type": "complaint", "customer_id": "c-9", "occurred_at": "2025-03-01T10:00:00Z",
         "complaint_id": {}, "topic": "product", "severity": "low"},
    ):
        answer = api.post(body)
        assert answer.status_code == 422, answer.text


def test_a_time_with_a_control_character_is_refused(api):
    """fromisoformat stops at a NUL: "…Z\\x00junk" was stored as the time before it."""
    answer = api.post({**purchase("c-9", "o-1"), "occurred_at": "2025-03-01T10:00:00Z\x00junk"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "occurred_at"
    shown = api.get("/v1/customers/c-1", params={"as_of": "2025-03-01T10:00:00Z\x00junk"})
    assert shown.status_code == 422, shown.text


def test_feed_streams_are_bounded_and_their_places_given_back(sqlite_url):
    """Each stream holds a thread and, on PostgreSQL, a connection: one client opened
    as many as it liked (30 took 30 of the server's connections)."""
    from contextlib import ExitStack

    api = Api(sqlite_url)
    api.client = TestClient(create_app(sqlite_url, keepalive_seconds=0.2, poll_seconds=0.05,
                                       max_streams=2))
    headers = api.as_(api.all)
    with api.client, ExitStack() as open_streams:
        for _ in range(2):
            response = open_streams.enter_context(
                api.client.stream("GET", "/v1/feed", headers=headers))
            assert response.status_code == 200
            assert next(response.iter_text(), "").startswith("retry:")
        refused = api.client.get("/v1/feed", headers=headers)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        error = refused.json()["errors"][0]
        assert (error["field"], error["kind"]) == ("(feed)", "unavailable")
        assert "2 feed streams are open" in error["reason"]
        assert api.get("/v1/feed/page").status_code == 200  # pages are not streams
        open_streams.close()  # the clients go away: their places come back
        deadline = time.monotonic() + 30
        while (again := api.first_of_stream("/v1/feed", api.all)).status_code != 200:
            assert time.monotonic() < deadline, again.text
            time.sleep(0.1)
        assert again.first.startswith("retry:")


def test_a_store_altered_outside_journey_is_a_shaped_500(api, sqlite_url):
    """History of a customer whose key id was changed in the database: a bare 500 (or,
    before, [erased] where no erasure was recorded)."""
    identified = {"type": "identified", "customer_id": "p-1", "occurred_at": WHEN,
                  "personal": {"name": "Ann"}}
    assert api.post(identified).status_code == 201
    path = make_url(sqlite_url).database
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE journey_keys SET kid = ? WHERE customer_id = 'p-1'", ("0" * 16,))
    api.client.app.state.service.models.app.keyring._cache.clear()
    response = api.get("/v1/customers/p-1/history")
    assert response.status_code == 500
    error = response.json()["errors"][0]
    assert (error["field"], error["kind"]) == ("(store)", "error")
    assert "sealed under another key than the customer's" in error["reason"]
    assert api.get("/v1/customers/p-1").status_code == 200  # show reads no personal data
