"""Tamper evidence (issue 6): each way of changing the stored log behind Journey's back is
caught by `verify`, named, and placed; a clean store verifies with exit 0."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC

import pytest
from audit_support import Raw, populate
from hypothesis import given, settings
from hypothesis import strategies as st
from support import ev, opened, purchase
from typer.testing import CliRunner

from journey.cli import app
from journey.events import Qualified
from journey.integrity import (
    _transcoder,
    as_stored,
    canonical_json,
    encode_new_event,
    hash_state,
    isoformat,
    stored_shape,
)


@pytest.fixture
def store(engine):
    populate(engine)
    raw = Raw(engine)
    yield engine, raw
    raw.close()


def kinds(report) -> list[tuple[str, int | None, str]]:
    return [(b.customer_id, b.version, b.kind) for b in report.breaks]


def cli(db_url: str, *args: str):
    return CliRunner().invoke(app, ["--db", db_url, *args])


def test_a_clean_store_verifies_and_the_cli_exits_0(store, db_url):
    engine, _ = store
    report = engine.verify()
    assert report.clean, report.breaks
    assert (report.events, report.customers, report.sealed_now) == (7, 2, 0)
    assert report.head_position == engine.app.max_notification_id()
    result = cli(db_url, "verify", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["clean"] is True and data["head"]["chain"] == report.head_chain
    assert cli(db_url, "verify").exit_code == 0


def test_every_event_links_to_the_one_before(store):
    engine, raw = store
    events = engine.events("c-1")
    assert events[0].previous_hash is None
    for before, after in itertools.pairwise(events):
        assert after.previous_hash == before.content_hash
    for _, version, topic, state in raw.rows("c-1"):
        assert state["content_hash"] == hash_state(topic, "c-1", version, state)


def test_a_changed_payload_is_detected(store, db_url):
    engine, raw = store
    position, _, _, state = raw.rows("c-1")[1]
    state["amount"]["_data_"] = "1000.00"
    raw.set_state(position, state)
    report = engine.verify()
    assert kinds(report) == [("c-1", 2, "payload changed")]
    assert report.breaks[0].position == position
    result = cli(db_url, "verify", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["breaks"][0]["kind"] == "payload changed"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "\ud800"])
def test_a_value_the_store_never_writes_is_a_changed_payload(store, value):
    """NaN and Infinity hash as null (orjson writes them so) and a lone surrogate cannot
    be encoded at all: neither may pass as the null or text it replaced, nor crash verify."""
    engine, raw = store
    position, _, _, state = raw.rows("c-1")[1]
    field = next(k for k, v in state.items() if v is None)
    state[field] = value
    raw.set_state(position, state)
    assert kinds(engine.verify()) == [("c-1", 2, "payload changed")]
    if isinstance(value, float):  # nor is it read as a number
        with pytest.raises(ValueError, match="is not JSON"):
            engine.app.customer_events("c-1")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5", "2E3", "0.0"])
def test_a_number_the_store_never_writes_in_place_of_a_null_is_detected(store, number):
    """`1e400` in place of a null read as infinity, which hashed as the null it replaced:
    an altered event verified clean, and `show` answered from it (a referred_by). The
    store holds no floats: any fraction or exponent was put there by hand."""
    engine, raw = store
    position, _, _, state = raw.rows("c-1")[1]
    field = next(k for k, v in state.items() if v is None)
    text = json.dumps(state).replace(f'"{field}": null', f'"{field}": {number}')
    raw.run("UPDATE {events} SET state = ? WHERE {pos} = ?", (text.encode(), position))
    assert kinds(engine.verify()) == [("c-1", 2, "payload changed")]
    with pytest.raises(ValueError, match="is not a number the store writes"):
        engine.app.customer_events("c-1")


def test_a_changed_payload_with_its_hash_recomputed_is_detected(store):
    engine, raw = store
    position, version, topic, state = raw.rows("c-1")[1]
    state["amount"]["_data_"] = "1000.00"
    state["content_hash"] = hash_state(topic, "c-1", version, state)
    raw.set_state(position, state)
    report = engine.verify()
    assert kinds(report) == [("c-1", 2, "payload changed")]
    assert "rewritten" in report.breaks[0].detail


def test_a_changed_actor_or_record_time_is_detected(store):
    engine, raw = store
    position, _, _, state = raw.rows("c-1")[3]
    state["actor"] = "someone-else"
    raw.set_state(position, state)
    assert kinds(engine.verify()) == [("c-1", 4, "payload changed")]


def test_a_removed_event_is_detected(store, db_url):
    engine, raw = store
    position = raw.rows("c-1")[2][0]
    raw.run("DELETE FROM {events} WHERE {pos} = ?", (position,))
    report = engine.verify()
    assert kinds(report) == [("c-1", 3, "event removed")]
    assert report.breaks[0].position == position
    assert cli(db_url, "verify", "c-1").exit_code == 1
    assert cli(db_url, "verify", "c-2").exit_code == 0


def test_a_removed_customer_is_detected(store):
    engine, raw = store
    positions = [row[0] for row in raw.rows("c-2")]
    raw.run("DELETE FROM {events} WHERE originator_id = ?", ("c-2",))
    report = engine.verify()
    assert kinds(report) == [("c-2", 1, "event removed"), ("c-2", 2, "event removed")]
    assert [b.position for b in report.breaks] == positions


def test_reordered_events_are_detected(store):
    engine, raw = store
    raw.run("UPDATE {events} SET originator_version = 100 "
            "WHERE originator_id = 'c-1' AND originator_version = 2")
    raw.run("UPDATE {events} SET originator_version = 2 "
            "WHERE originator_id = 'c-1' AND originator_version = 3")
    raw.run("UPDATE {events} SET originator_version = 3 "
            "WHERE originator_id = 'c-1' AND originator_version = 100")
    report = engine.verify()
    assert {b.kind for b in report.breaks} == {"events reordered"}
    assert sorted(b.version for b in report.breaks) == [2, 3]
    assert {b.customer_id for b in report.breaks} == {"c-1"}


def test_an_event_inserted_at_the_end_that_does_not_fit_is_never_sealed(store):
    engine, raw = store
    _, _, topic, state = raw.rows("c-1")[1]
    state["order_id"] = "o-forged"
    raw.run("INSERT INTO {events} (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)", ("c-1", 6, topic, json.dumps(state).encode()))
    report = engine.verify()
    assert kinds(report) == [("c-1", 6, "event inserted")]
    assert report.sealed_now == 0
    assert kinds(engine.verify()) == [("c-1", 6, "event inserted")]  # still, next time


def test_an_event_slipped_into_the_sealed_log_is_detected(store):
    """Even with a perfect hash and link: its position lies inside the sealed log."""
    engine, raw = store
    last_version = raw.rows("c-2")[-1][1]
    _, _, topic, state = raw.rows("c-2")[-1]
    forged = dict(state, order_id="o-forged", previous_hash=state["content_hash"])
    forged["content_hash"] = hash_state(topic, "c-2", last_version + 1, forged)
    raw.run("INSERT INTO {events} ({pos}, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)", (0, "c-2", last_version + 1, topic,
                                       json.dumps(forged).encode()))
    report = engine.verify()
    assert kinds(report) == [("c-2", 3, "event inserted")]
    assert report.breaks[0].position == 0


def test_a_changed_seal_is_detected(store):
    engine, raw = store
    raw.run("DELETE FROM {seal} WHERE position = 3")
    report = engine.verify()
    assert [(b.kind, b.position) for b in report.breaks] == [
        ("event inserted", 3), ("seal altered", 4)
    ]


def test_a_tail_left_unsealed_by_a_crash_is_sealed_by_verify(store, db_url):
    engine, raw = store
    head = engine.verify().head_chain
    raw.run("DELETE FROM {seal} WHERE position > 4")
    said = cli(db_url, "verify")  # as clean, but it says what sealing now may hide
    assert said.exit_code == 0 and "3 events had no seal row" in said.stderr
    assert "--anchor" in said.stderr
    raw.run("DELETE FROM {seal} WHERE position > 4")
    report = engine.verify()
    assert report.clean, report.breaks
    assert report.sealed_now == 3
    assert report.head_chain == head  # the same chain, recomputed from the same events
    assert "had no seal row" not in cli(db_url, "verify").stderr  # none left to seal


def test_the_write_path_seals_as_it_goes(store):
    engine, raw = store
    engine.record(purchase("c-3", "o-1", day=9))
    engine.record_many([ev("qualified", f"n-{i}") for i in range(5)])
    sealed = raw.run("SELECT COUNT(*) FROM {seal}")[0][0]
    assert sealed == 7 + 2 + 10
    assert engine.verify().sealed_now == 0


def test_events_and_their_seal_rows_commit_together(store, monkeypatch):
    """A save whose sealing fails stores nothing: no event is ever left unsealed."""
    engine, raw = store
    before = raw.run("SELECT COUNT(*) FROM {events}")[0][0]

    def broken(*args):
        raise RuntimeError("the seal could not be written")

    monkeypatch.setattr(engine.app.log_seal, "_append", broken)
    with pytest.raises(RuntimeError):
        engine.record(purchase("c-3", "o-1", day=9))
    assert raw.run("SELECT COUNT(*) FROM {events}")[0][0] == before
    monkeypatch.undo()
    engine.record(purchase("c-3", "o-1", day=9))
    assert raw.run("SELECT COUNT(*) FROM {events}")[0][0] == before + 2
    assert engine.verify().sealed_now == 0


def test_verify_of_some_customers_checks_only_them(store):
    engine, raw = store
    position = raw.rows("c-2")[1][0]
    raw.run("DELETE FROM {events} WHERE {pos} = ?", (position,))
    assert engine.verify(["c-1"]).clean
    assert kinds(engine.verify(["c-2"])) == [("c-2", 2, "event removed")]


def test_an_attacker_who_rewrites_both_chains_is_caught_by_an_anchor(store, db_url):
    """Rewriting an event, its customer's chain and the whole seal consistently passes
    every internal check; the head noted elsewhere beforehand does not match any more."""
    engine, raw = store
    anchor = engine.verify()
    rows = raw.rows("c-1")
    previous = None
    for position, version, topic, state in rows:  # rewrite c-1's whole chain
        if version == 2:
            state["amount"]["_data_"] = "1000.00"
        state["previous_hash"] = previous
        state["content_hash"] = previous = hash_state(topic, "c-1", version, state)
        raw.set_state(position, state)
    raw.run("DELETE FROM {seal}")  # and let the seal be rebuilt from the forged events
    forged = engine.verify()
    assert forged.clean and forged.sealed_now == 7
    assert forged.head_chain != anchor.head_chain
    head = f"{anchor.head_position}:{anchor.head_chain}"
    checked = engine.verify(anchors=[(anchor.head_position, anchor.head_chain)])
    assert [(b.kind, b.position) for b in checked.breaks] == [
        ("seal altered", anchor.head_position)
    ]
    assert cli(db_url, "verify", "--anchor", head).exit_code == 1
    assert cli(db_url, "verify", "--anchor", "nonsense").exit_code == 2


def test_the_head_an_empty_log_prints_is_an_anchor_that_holds(engine, db_url):
    """verify printed position 0 and the genesis chain to keep, and --anchor with it
    then said the seal was altered, on a store nobody had touched."""
    empty = engine.verify()
    assert (empty.head_position, empty.events) == (0, 0)
    anchor = (empty.head_position, empty.head_chain)
    assert engine.verify(anchors=[anchor]).clean
    engine.record(purchase("c-1", "o-1"))
    assert engine.verify(anchors=[anchor]).clean  # the log grew from it
    assert not engine.verify(anchors=[(0, "1" * 64)]).clean  # no other chain is at 0
    assert cli(db_url, "verify", "--anchor", f"0:{empty.head_chain}").exit_code == 0


def test_verify_while_another_writer_records_stays_clean(store, db_url):
    """Events saved but not yet sealed by a concurrent writer are not mistaken for
    insertions: verify checks the log as its own seal step saw it."""
    engine, _ = store
    errors: list[BaseException] = []
    halfway, seen_halfway = threading.Event(), threading.Event()

    def write() -> None:
        try:
            with opened(db_url, actor="other") as other:
                for i in range(40):
                    other.record(purchase(f"w-{i % 5}", f"o-{i}", day=1 + i % 20))
                    if i == 19:  # the rest only once a verify has seen this far
                        halfway.set()
                        seen_halfway.wait(30)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    reports = []
    while writer.is_alive():
        was_halfway = halfway.is_set()
        reports.append(engine.verify())
        if was_halfway:
            seen_halfway.set()
    writer.join()
    reports.append(engine.verify())
    assert not errors
    assert all(r.clean for r in reports), [r.breaks for r in reports if not r.clean]
    assert any(7 < r.events < 7 + 40 + 5 for r in reports)  # some saw the log half written
    assert reports[-1].events == 7 + 40 + 5


def containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)


#: What a stored state can hold (no floats: amounts are decimals, stored as text)...
STATE_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.text()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes(timezones=st.just(UTC))
)
STATE_VALUES = st.recursive(STATE_LEAVES, containers, max_leaves=8)


@given(STATE_VALUES)
def test_the_hash_reads_values_as_the_mapper_stores_them(value):
    """The write path hashes ``as_stored(state)``; verify hashes the stored JSON."""
    assert as_stored(value) == json.loads(_transcoder.encode(value))


@settings(max_examples=300)
@given(
    st.text(),
    st.integers(min_value=1, max_value=2**40),
    st.fixed_dictionaries(
        {"actor": st.text(), "event_id": st.none() | st.text(), "note": st.none() | st.text()},
    ),
    st.datetimes(timezones=st.just(UTC) | st.timezones()),
)
def test_a_new_event_is_stored_as_the_mapper_stores_it_with_the_hash_verify_computes(
    customer_id, version, fields, occurred_at
):
    """The write path writes an event's JSON once and splices its hash in; verify hashes
    the stored state decoded. Both must agree, and the state must be the mapper's."""
    fields = {**fields, "occurred_at": occurred_at, "timestamp": occurred_at, "previous_hash": None}
    content_hash, stored = encode_new_event(Qualified, customer_id, version, fields)
    state = json.loads(stored)
    assert state.pop("content_hash") == content_hash
    assert state == json.loads(_transcoder.encode({**fields}))
    assert content_hash == hash_state(stored_shape(Qualified)[0], customer_id, version, state)


@settings(max_examples=1000)
@given(st.datetimes(timezones=st.none() | st.just(UTC) | st.timezones()))
def test_times_are_written_as_isoformat_writes_them(value):
    """Stored times (and so hashes) are ``isoformat``'s text, whoever writes it."""
    assert isoformat(value) == value.isoformat()


@settings(max_examples=1000)
@given(STATE_VALUES)
def test_hashes_read_json_as_the_standard_library_writes_it(value):
    """Every hash stored so far was computed from ``json.dumps``'s text: the faster
    encoder must write the same bytes, or refuse and leave it to json. (Floats it writes
    otherwise, 1e-7 for 1e-07: no stored state holds one.)"""
    stored = as_stored(value)
    try:
        expected = json.dumps(stored, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        expected_bytes = expected.encode()
    except UnicodeEncodeError:  # a lone surrogate: neither can write it
        with pytest.raises(UnicodeEncodeError):
            canonical_json(stored)
        return
    assert canonical_json(stored) == expected_bytes


def test_an_unknown_id_is_a_break_not_a_clean_check(store, db_url):
    engine, _ = store
    report = engine.verify(["nobody"])
    assert kinds(report) == [("nobody", None, "unknown customer")]
    result = cli(db_url, "verify", "nobody", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["breaks"][0]["kind"] == "unknown customer"


def forged_copy(raw, customer_id: str, position: int) -> None:
    """Copy c-1's purchase (version 2) to ``position`` as version 3 of ``customer_id``,
    its hash left as it was: a row put there by hand."""
    _, _, topic, state = raw.rows("c-1")[1]
    state["amount"]["_data_"] = "99999.00"
    raw.run(
        "INSERT INTO {events} ({pos}, originator_id, originator_version, topic, state) "
        "VALUES (?, ?, ?, ?, ?)",
        (position, customer_id, 3, topic, json.dumps(state).encode()),
    )


@pytest.mark.parametrize("position", [-1, -(2**62)])
def test_an_event_at_a_position_below_the_log_is_detected(store, position):
    """Positions start at 1: a row put below them is read by verify like any other."""
    engine, raw = store
    forged_copy(raw, "c-2", position)
    report = engine.verify()
    assert kinds(report) == [("c-2", 3, "event inserted")]
    assert report.breaks[0].position == position


def test_an_event_under_an_engine_id_counts_for_no_customer(store, db_url):
    """Ids starting with ~ are the engine's indexes, which verify does not seal: a customer
    made up there must not show in any answer."""
    engine, raw = store
    for position, version, topic, state in raw.rows("c-1"):
        raw.run(
            "INSERT INTO {events} ({pos}, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)",
            (position + 1000, "~ghost", version, topic, json.dumps(state).encode()),
        )
    assert engine.events("~ghost") == []
    report = cli(db_url, "report", "--as-of", "now", "--known-at", "now", "--json")
    assert report.exit_code == 0, report.output
    assert "~ghost" not in report.stdout and "c-1" in report.stdout
    assert cli(db_url, "show", "~ghost", "--json").exit_code == 1
    assert kinds(engine.verify(["~ghost"])) == [("~ghost", None, "unknown customer")]


def test_a_state_in_another_encoding_is_a_changed_payload(store):
    """json.loads of bytes takes UTF-16 and a byte-order mark; the store's reader does not,
    so verify must not either."""
    engine, raw = store
    position, _, _, state = raw.rows("c-1")[1]
    text = json.dumps(state)
    for encoded in (text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode()):
        raw.run("UPDATE {events} SET state = ? WHERE {pos} = ?", (encoded, position))
        assert kinds(engine.verify()) == [("c-1", 2, "payload changed")]


@pytest.mark.parametrize("column", ["state", "topic"])
def test_a_column_set_to_null_is_reported_not_a_crash(store, db_url, column):
    engine, raw = store
    position = raw.rows("c-1")[1][0]
    raw.run(f"UPDATE {{events}} SET {column} = NULL WHERE {{pos}} = ?", (position,))
    assert kinds(engine.verify()) == [("c-1", 2, "payload changed")]
    assert cli(db_url, "verify").exit_code == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: NOT NULL
def test_a_version_set_to_null_is_reported_not_a_crash(store, db_url):
    engine, raw = store
    position = raw.rows("c-1")[1][0]
    raw.run("UPDATE {events} SET originator_version = NULL WHERE {pos} = ?", (position,))
    report = engine.verify()
    assert ("c-1", "payload changed") in [(b.customer_id, b.kind) for b in report.breaks]
    assert report.breaks[0].position == position
    assert cli(db_url, "verify").exit_code == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: bytea only
def test_a_state_stored_as_text_is_reported_not_a_crash(store, db_url):
    engine, raw = store
    position, _, _, state = raw.rows("c-1")[1]
    raw.run("UPDATE {events} SET state = ? WHERE {pos} = ?", (json.dumps(state), position))
    assert kinds(engine.verify()) == [("c-1", 2, "payload changed")]


def test_a_customer_id_with_markup_is_printed_as_it_is(store, db_url):
    _, raw = store
    forged_copy(raw, "[/x]", 5000)
    result = cli(db_url, "verify")
    assert result.exit_code == 1
    assert "[/x]" in result.stdout and "Traceback" not in result.output


def test_an_anchor_is_read_in_either_case_and_must_be_hex(store, db_url):
    engine, _ = store
    head = engine.verify()
    upper = f"{head.head_position}:{head.head_chain.upper()}"
    assert cli(db_url, "verify", "--anchor", upper).exit_code == 0
    bad = cli(db_url, "verify", "--anchor", f"{head.head_position}:{'z' * 64}")
    assert bad.exit_code == 2 and "hex" in bad.output


@pytest.mark.parametrize(
    "args",
    [["verify", "--json"], ["report", "--as-of", "now", "--known-at", "now", "--json"],
     ["show", "c-1", "--json"], ["export", "c-1"], ["funnel", "--json"],
     ["projections", "status", "--json"], ["projections", "rebuild", "--all"]],
    ids=["verify", "report", "show", "export", "funnel", "status", "rebuild"],
)
def test_a_mistyped_store_is_a_usage_error_not_a_new_empty_one(tmp_path, args):
    """An empty log verifies as intact: a command that only reads must not make one (nor
    leave one that the next verify would find)."""
    missing = tmp_path / "typo" / "journey.db"
    result = cli(f"sqlite:///{missing}", *args)
    assert result.exit_code == 2, result.output
    assert "no Journey store" in result.output
    assert not missing.parent.exists()
    assert cli(f"sqlite:///{missing}", "verify").exit_code == 2


@pytest.mark.postgres
def test_a_mistyped_schema_is_a_usage_error(pg_url):
    result = cli(pg_url, "verify", "--json")
    assert result.exit_code == 2, result.output
    assert "no Journey store" in result.output


def test_keys_come_before_any_event_and_make_no_store_verify_would_pass(tmp_path):
    """Create a key, then serve: keys need only their table, so listing or revoking them
    works before the first event, and verify still finds no event store there."""
    url = f"sqlite:///{tmp_path / 'journey.db'}"
    assert cli(url, "keys", "create", "crm", "--scope", "events:write").exit_code == 0
    assert cli(url, "keys", "list", "--json").exit_code == 0
    assert cli(url, "keys", "revoke", "crm").exit_code == 0
    assert cli(url, "verify").exit_code == 2


def test_the_librarys_stored_function_insert_is_never_used(pg_url, monkeypatch):
    """With POSTGRES_ENABLE_DB_FUNCTIONS=y in the environment the library inserted through
    its stored function, which neither sealed the log nor notified the schema's channel."""
    from journey.api import Journey

    monkeypatch.setenv("POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    with Journey(pg_url) as engine:
        assert engine.app.recorder.datastore.enable_db_functions is False
        populate(engine)
        report = engine.verify()
        assert report.clean and report.sealed_now == 0, report


def test_a_changed_seal_row_is_not_told_as_a_rewritten_event(store):
    """Only the seal row's hash was changed, and the event was said to be rewritten with
    its hash recomputed: an auditor would look for the wrong culprit."""
    engine, raw = store
    position = raw.rows("c-1")[1][0]
    raw.run("UPDATE {seal} SET event_hash = ? WHERE position = ?", ("00" * 32, position))
    report = engine.verify()
    assert {b.kind for b in report.breaks} >= {"seal altered", "payload changed"}
    (changed,) = [b for b in report.breaks if b.kind == "payload changed"]
    assert "or the seal row was altered" in changed.detail


def test_one_changed_version_is_one_break_not_one_for_every_later_event(store):
    """A version set to 99 made every later event of the customer "reordered" after it
    (an auditor's walk counted 16 breaks for one edit)."""
    engine, raw = store
    rows = raw.rows("c-1")
    assert len(rows) >= 4
    raw.run("UPDATE {events} SET originator_version = 99 WHERE {pos} = ?", (rows[1][0],))
    report = engine.verify()
    assert kinds(report) == [("c-1", 99, "events reordered")], report.breaks
    assert "sealed as version 2" in report.breaks[0].detail
