"""Personal data (issue 6): sealed at rest with a key per customer, retries still
recognised, and erasure that leaves every fact, projection and hash intact while the
personal data (and its key) are gone from the database files."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from audit_support import Raw, populate
from conftest import IN_CI
from eventsourcing.persistence import IntegrityError
from support import at, ev, opened, refused, seen_blocked_by
from typer.testing import CliRunner

from journey.cli import app
from journey.errors import InputError, JourneyError
from journey.integrity import Checker, LogSeal
from journey.keycheck import ERASED_TOPIC, KeyCheck
from journey.personal import (
    ERASED,
    CustomerKey,
    KeyRace,
    Keyring,
    UnreadableSeal,
)
from journey.storage import StorageError
from projections.feed import Feed
from projections.pointintime import PointInTime
from projections.readmodels.operate import ReadModels
from projections.readmodels.queries import funnel
from projections.settings import DEFAULT

NAME, EMAIL, NOTE = "Zofia Quarrington", "zq@example.org", "call after five"
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)


def cli(db_url: str, *args: str):
    return CliRunner().invoke(app, ["--db", db_url, *args])


def answer_of(engine, customer_id: str) -> dict:
    data = PointInTime(engine).show(customer_id, AS_OF).as_dict()
    data.pop("known_at")
    return data


def test_personal_data_is_stored_sealed_and_read_back_opened(engine):
    populate(engine)
    raw = Raw(engine)
    identified, _, contact = (row[3] for row in raw.rows("c-1")[:3])
    raw.close()
    for state, fields in ((identified, ["email", "name"]), (contact, ["note"])):
        sealed = state["personal"]
        assert sealed["fields"] == fields
        assert {"kid", "digest", "nonce", "ciphertext"} <= sealed.keys()
        assert NAME not in json.dumps(state) and EMAIL not in json.dumps(state)
    events = engine.events("c-1")
    assert events[0].payload()["personal"] == {"name": NAME, "email": EMAIL}
    assert events[2].payload()["personal"] == {"note": NOTE}


def test_a_retry_with_personal_data_is_recognised(engine):
    contact = ev("contact", "c-1", at(3), channel="phone", direction="inbound",
                 purpose="inquiry", personal={"note": NOTE})
    assert engine.record(contact).duplicate is False
    assert engine.record(contact).duplicate is True
    with_id = dict(contact, event_id="e-1", occurred_at=at(4))
    assert engine.record(with_id).duplicate is False
    assert engine.record(with_id).duplicate is True
    refused(engine, dict(with_id, personal={"note": "something else"}), "event_id",
            "already", kind="conflict")
    other = dict(contact, personal={"note": "something else"})
    assert engine.record(other).duplicate is False
    assert [e.TYPE for e in engine.events("c-1")] == ["identified", "contact", "contact",
                                                      "contact"]


def test_erasure_keeps_every_fact_projection_and_hash(engine, db_url):
    populate(engine)
    before = {cid: answer_of(engine, cid) for cid in ("c-1", "c-2")}
    history_before = PointInTime(engine).history("c-1")
    done = engine.erase("c-1", "subject asked")
    assert done.key_destroyed and done.position == engine.app.max_notification_id()

    events = engine.events("c-1")
    assert [e.TYPE for e in events][-1] == "erased"
    assert events[-1].payload() == {"reason": "subject asked"}
    assert events[0].payload()["personal"] == {"name": ERASED, "email": ERASED}
    assert events[2].payload()["personal"] == {"note": ERASED}
    assert {cid: answer_of(engine, cid) for cid in ("c-1", "c-2")} == before

    history = PointInTime(engine).history("c-1")
    shown = [step.as_dict(n) for n, step in enumerate(history, start=1)]
    assert json.dumps(shown).count(ERASED) == 3
    assert NAME not in json.dumps(shown)
    # the replay is the same as before erasure, but for the erased event at its end
    assert [s.answer.state() for s in history if s.event is None or s.event.TYPE != "erased"] \
        == [s.answer.state() for s in history_before]

    assert engine.verify().clean
    assert cli(db_url, "verify").exit_code == 0
    again = engine.erase("c-1", "asked twice")
    assert again.position is None
    assert [e.TYPE for e in engine.events("c-1")].count("erased") == 1


def test_a_long_lived_reader_shows_erased_data_as_erased(engine, db_url, monkeypatch):
    """A PointInTime (one per worker of the HTTP service) keeps streams for ever: it keeps
    them sealed, so an erasure in another process reads as one once its key cache lapses
    (made to lapse at once here)."""
    monkeypatch.setattr("journey.personal.CACHE_SECONDS", 0)
    populate(engine)
    reader = PointInTime(engine)
    assert NAME in json.dumps([s.as_dict(n) for n, s in enumerate(reader.history("c-1"))])
    with opened(db_url) as other:  # another process
        other.erase("c-1", "subject asked")
    shown = json.dumps([s.as_dict(n) for n, s in enumerate(reader.history("c-1"))])
    assert NAME not in shown and shown.count(ERASED) == 3


def test_sqlite_zeroes_every_page_its_key_connection_frees(sqlite_url):
    """Not only at erasure: a B-tree page freed while keys were added held copies of them."""
    with opened(sqlite_url) as engine:
        connection = engine.app.tables.connection()
        assert connection.execute("PRAGMA secure_delete").fetchone() == (1,)


def test_read_models_compute_the_same_after_erasure(engine, db_url):
    populate(engine)
    models = ReadModels.open(db_url, DEFAULT)
    try:
        names = ["summary", "timeline"]
        assert models.refresh(names)
        counts = funnel(models.store, AS_OF)
        engine.erase("c-1", "subject asked")
        assert models.refresh(names)
        assert funnel(models.store, AS_OF) == counts
    finally:
        models.close()


def test_erasing_a_customer_whose_events_lie_ahead_does_not_make_them_exist(engine, db_url):
    """The erasure is recorded at the moment it is done: a customer whose events all lay
    ahead existed from then on (a suspect with no reason, counted by the funnel)."""
    engine.record(ev("identified", "y", "2020-01-01T00:00:00Z"))
    engine.record(ev("identified", "z", "2099-01-01T00:00:00Z", personal={"name": NAME}))
    engine.erase("z", "subject asked")
    now = datetime.now(UTC)
    (found,) = PointInTime(engine).show_many(["z"], now)
    assert found.answer is None
    assert "its first event occurs at 2099-01-01T00:00:00Z" in str(found.error)
    steps = PointInTime(engine).history("z")
    assert [s.event.TYPE for s in steps if s.event] == ["identified"]
    assert steps[0].at == datetime(2099, 1, 1, tzinfo=UTC)
    models = ReadModels.open(db_url, DEFAULT)
    try:
        assert models.refresh(["summary", "timeline"])
        assert funnel(models.store, now)["stages"]["suspect"] == 1
        later = funnel(models.store, datetime(2099, 6, 1, tzinfo=UTC))
        assert later["stages"]["suspect"] == 2
        announced = {e.customer_id for e in Feed(models.store).read(0, 1000)}
        assert announced == {"y"}  # z was announced a suspect from its erasure on
    finally:
        models.close()


def test_show_never_prints_personal_data_and_export_opens_it(engine, db_url):
    populate(engine)
    shown = cli(db_url, "show", "c-1", "--json")
    assert shown.exit_code == 0, shown.output
    assert NAME not in shown.output and EMAIL not in shown.output
    exported = cli(db_url, "export", "c-1")
    assert exported.exit_code == 0, exported.output
    dossier = json.loads(exported.stdout)
    assert dossier["events"][0]["payload"]["personal"] == {"name": NAME, "email": EMAIL}
    assert dossier["erased"] is False

    erased = cli(db_url, "erase", "c-1", "--reason", "subject asked", "--json")
    assert erased.exit_code == 0, erased.output
    assert json.loads(erased.stdout)["key_destroyed"] is True
    dossier = json.loads(cli(db_url, "export", "c-1").stdout)
    assert dossier["erased"] is True
    assert dossier["events"][0]["payload"]["personal"] == {"name": ERASED, "email": ERASED}
    assert NAME not in json.dumps(dossier)
    assert cli(db_url, "export", "nobody").exit_code == 1


def test_an_erasure_retried_after_a_conflict_says_the_key_was_destroyed(engine, monkeypatch):
    """The erasure's event and the key's deletion are one transaction: the attempt that
    met another writer's event stored neither (the key is there after it), the retry
    both."""
    populate(engine)
    save = type(engine.app).save
    keys_after_conflict = []

    def conflicting(app, *aggregates, **kwargs):
        if not keys_after_conflict:  # another writer gets to the customer first
            engine.record(ev("feedback", "c-1", at(9), score=8))
            with pytest.raises(IntegrityError):
                save(app, *aggregates, **kwargs)
            keys_after_conflict.append(engine.app.keyring.load({"c-1"}))
            raise IntegrityError("version taken")
        return save(app, *aggregates, **kwargs)

    monkeypatch.setattr(type(engine.app), "save", conflicting)
    done = engine.erase("c-1", "subject asked")
    assert list(keys_after_conflict[0]) == ["c-1"]
    assert done.key_destroyed and done.position is not None
    assert [e.TYPE for e in engine.events("c-1")][-2:] == ["feedback", "erased"]
    assert engine.app.keyring.load({"c-1"}) == {}


def test_an_erasure_finishing_one_that_crashed_says_the_key_went_then(engine, db_url):
    """A crash after the key was destroyed, before the event was stored: the next erase
    records the event, and says the key was destroyed before, not that none existed."""
    populate(engine)
    assert engine.app.keyring.destroy("c-1")  # the crashed erase got this far
    result = CliRunner().invoke(
        app, ["--db", db_url, "erase", "c-1", "--reason", "asked", "--json"]
    )
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert (done["key_destroyed"], done["key_destroyed_before"]) == (False, True)
    assert engine.events("c-1")[-1].TYPE == "erased"
    plain = engine.erase("c-2", "asked")  # c-2 never gave personal data
    assert (plain.key_destroyed, plain.key_destroyed_before) == (False, False)


def test_the_erased_type_is_refused_as_input(engine):
    refused(engine, ev("erased", "c-1", reason="x"), "type", "journey erase")


def key_of(raw: Raw, customer_id: str) -> bytes:
    return bytes(raw.run("SELECT secret FROM {keys} WHERE customer_id = ?", (customer_id,))[0][0])


def files_hold(path: str, needle: bytes) -> list[str]:
    found = []
    for suffix in ("", "-wal", "-shm"):
        file = Path(path + suffix)
        if file.exists() and needle in file.read_bytes():
            found.append(file.name)
    return found


def test_sqlite_files_hold_neither_plaintext_nor_key_after_erasure(sqlite_url):
    with opened(sqlite_url, actor="tester") as engine:
        populate(engine)
        path = engine.app.database.sqlite_path
        raw = Raw(engine)
        key = key_of(raw, "c-1")
        other_key = key_of(raw, "c-2") if raw.run(
            "SELECT 1 FROM {keys} WHERE customer_id = 'c-2'") else None
        raw.close()
        assert files_hold(path, key), "the key should be in the files before erasure"
        for text in (NAME, EMAIL, NOTE):
            assert not files_hold(path, text.encode())
        engine.erase("c-1", "subject asked")
        assert files_hold(path, key) == []
        for text in (NAME, EMAIL, NOTE):
            assert files_hold(path, text.encode()) == []
        assert other_key is None  # c-2 never gave personal data, so it has no key


def test_sqlite_erase_fails_while_a_reader_keeps_the_key_in_the_main_file(sqlite_url, monkeypatch):
    """The key's page is overwritten in the WAL; a reader of an older snapshot keeps the
    checkpoint from copying it over the main file's. Erase said the key was destroyed,
    exit 0, with its bytes in the database file (a data protection officer's walk)."""
    import sqlite3

    import journey.personal

    monkeypatch.setattr(journey.personal, "PURGE_WAIT", 0.0)
    with opened(sqlite_url, actor="tester") as engine:
        populate(engine)
        path = engine.app.database.sqlite_path
        raw = Raw(engine)
        key = key_of(raw, "c-1")
        raw.close()
        engine.app.tables.autocommit("PRAGMA wal_checkpoint(TRUNCATE)")
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a snapshot
            with pytest.raises(JourneyError, match="run the erase again later"):
                engine.erase("c-1", "asked")
            assert Path(path).name in files_hold(path, key)  # what it would have hidden
        finally:
            reader.rollback()
            reader.close()
        assert engine.events("c-1")[-1].TYPE == "erased"  # recorded, with the key deleted
        assert engine.erase("c-1", "asked").position is None  # purges again
        assert files_hold(path, key) == []


def test_sqlite_an_erase_waiting_for_a_reader_holds_no_writer_off(sqlite_url, monkeypatch):
    """Waiting for the reader, the erase retried a checkpoint that holds every writer off
    while it waits (30 s a try, for up to ten minutes): the service and the runners could
    not write meanwhile (a review)."""
    import sqlite3

    import journey.personal

    monkeypatch.setattr(journey.personal, "PURGE_WAIT", 4.0)
    with opened(sqlite_url, actor="tester") as engine:
        populate(engine)
        path = engine.app.database.sqlite_path
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a snapshot
        failed: list[BaseException] = []

        def erase() -> None:
            try:
                engine.erase("c-1", "asked")
            except BaseException as exc:  # looked at below
                failed.append(exc)

        erasing = threading.Thread(target=erase)
        erasing.start()
        writer = sqlite3.connect(path, timeout=1, isolation_level=None)
        try:
            while erasing.is_alive() and not writer.execute(
                "SELECT count(*) FROM stored_events WHERE topic LIKE '%Erased'"
            ).fetchone()[0]:
                time.sleep(0.05)  # until the erasure is recorded: the purge waits now
            for i in range(3):
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
                writer.execute("INSERT INTO scratch VALUES (?)", (i,))
                writer.execute("COMMIT")
            assert erasing.is_alive()  # still waiting for the reader, writers went by
        finally:
            writer.close()
            reader.rollback()
            reader.close()
            erasing.join(30)
        assert not failed, failed
        assert engine.app.keyring.key("c-1", fresh=True) is None


@pytest.mark.postgres
def test_postgres_erase_waits_for_transactions_that_may_still_see_the_key(pg_url, monkeypatch):
    """VACUUM FULL copies a deleted row that a transaction begun before the deletion may
    still see: any snapshot in the database, whatever it reads (here the catalog only).
    Erase said the key was destroyed, exit 0, with its bytes in the new file."""
    import journey.personal

    monkeypatch.setattr(journey.personal, "PURGE_WAIT", 0.5)
    with opened(pg_url, actor="tester") as engine:
        populate(engine)
        with engine.database.connect() as reader:
            reader.autocommit = False
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            reader.execute("SELECT count(*) FROM pg_class").fetchall()
            pid = reader.execute("SELECT pg_backend_pid()").fetchone()[0]
            result = cli(pg_url, "erase", "c-1", "--reason", "asked", "--json")
            reader.rollback()
        assert result.exit_code == 1, result.output
        assert f"pid {pid}" in result.output and "run the erase again later" in result.output
        assert engine.app.keyring.key("c-1", fresh=True) is None  # deleted with its event
        again = cli(pg_url, "erase", "c-1", "--reason", "asked", "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["already_erased"] is True


@pytest.mark.postgres
def test_personal_data_is_read_and_written_again_after_a_lost_connection(pg_url, monkeypatch):
    """The side tables' own connection, once dropped by the server, failed every later
    use (the service answered 503 on personal data until it was restarted)."""
    import journey.sidetables

    with opened(pg_url, actor="tester") as engine:
        engine.record(ev("identified", "c-1", at(1), personal={"name": NAME}))
        engine.events("c-1")[0].payload()  # the key read: the side connection open
        pid = engine.app.tables.connection().info.backend_pid
        with engine.database.connect() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])  # this test's own
        monkeypatch.setattr(journey.sidetables, "PING_AFTER", 0.0)
        engine.record(ev("contact", "c-1", at(2), channel="email", direction="inbound",
                         purpose="inquiry", personal={"note": NOTE}))
        assert engine.events("c-1")[-1].payload()["personal"] == {"note": NOTE}


@pytest.mark.postgres
def test_an_erasure_waiting_for_a_long_reader_of_the_keys_lets_writers_through(pg_url):
    """VACUUM FULL queued every writer of personal data behind it for as long as any
    reader of the key table ran (a 20 s report held writes for 20 s)."""
    import threading

    with opened(pg_url, actor="tester") as engine, opened(pg_url, actor="writer") as other:
        engine.record(ev("identified", "c-1", at(1), personal={"name": NAME}))
        long_reader = engine.database.connect()
        long_reader.autocommit = False
        long_reader.execute(f'SELECT count(*) FROM "{engine.database.schema}".journey_keys')
        erasing = threading.Thread(target=engine.erase, args=("c-1", "asked"), daemon=True)
        erasing.start()
        try:
            assert seen_blocked_by(engine.database, long_reader)
            other.app.tables.autocommit("SET statement_timeout = '20s'")  # blocked: fails
            for i in range(3):  # each needs a new key: an insert into the key table
                other.record(ev("identified", f"w-{i}", at(1), personal={"name": "W"}))
            assert erasing.is_alive()  # it waits for the long reader still
        finally:
            long_reader.rollback()
            long_reader.close()
        erasing.join(60)
        assert not erasing.is_alive()
        assert answer_of(engine, "c-1")["customer_id"] == "c-1"
        assert engine.events("c-1")[-1].TYPE == "erased"


@pytest.mark.postgres
def test_an_erasure_that_cannot_rewrite_the_keys_says_what_to_do(pg_url, monkeypatch):
    import journey.personal

    monkeypatch.setattr(journey.personal, "PURGE_WAIT", 0.0)
    with opened(pg_url, actor="tester") as engine:
        engine.record(ev("identified", "c-1", at(1), personal={"name": NAME}))
        with engine.database.connect() as reader:
            reader.autocommit = False
            reader.execute(f'SELECT count(*) FROM "{engine.database.schema}".journey_keys')
            result = cli(pg_url, "erase", "c-1", "--reason", "asked", "--json")
            reader.rollback()
        assert result.exit_code == 1, result.output
        assert "run the erase again later" in result.output
        assert engine.app.keyring.key("c-1") is None  # deleted all the same
        assert cli(pg_url, "erase", "c-1", "--reason", "asked").exit_code == 0


@pytest.mark.postgres
def test_postgres_holds_neither_plaintext_nor_key_after_erasure(pg_url):
    with opened(pg_url, actor="tester") as engine:
        populate(engine)
        raw = Raw(engine)
        try:
            # c-3's key row is the last inserted, so it sits lowest in the page: after a
            # plain VACUUM its bytes would stay in the page's free space.
            engine.record(ev("identified", "c-3", at(1), personal={"name": "Someone Else"}))
            key = key_of(raw, "c-3")
            states = raw.run("SELECT state FROM {events}")
            assert not any(NAME.encode() in bytes(s[0]) for s in states)
            pages = raw_pages(raw)
            if pages is None:  # as a PostgreSQL that cannot be reached: a failure in CI
                (pytest.fail if IN_CI else pytest.skip)(
                    "pageinspect (postgresql-contrib, superuser) is needed to look at the "
                    "keys table's pages"
                )
            assert any(key in page for page in pages)
            engine.erase("c-3", "subject asked")
            assert raw.run("SELECT COUNT(*) FROM {keys} WHERE customer_id = 'c-3'") == [(0,)]
            states = raw.run("SELECT state FROM {events}")
            assert not any(b"Someone Else" in bytes(s[0]) for s in states)
            pages = raw_pages(raw)
            for _ in range(20):
                # VACUUM removes the dead row only once no transaction older than the delete
                # runs anywhere in the database (other tests' sessions may): vacuum again
                if not any(key in page for page in pages):
                    break
                time.sleep(0.5)
                engine.app.keyring.purge()
                pages = raw_pages(raw)
            assert pages and not any(key in page for page in pages)
            assert key_of(raw, "c-1")  # the other customer's key is still there
        finally:
            raw.close()


def raw_pages(raw: Raw) -> list[bytes] | None:
    """The keys table's pages as stored (pageinspect), or None when it cannot be used.
    The extension is made in the test's own schema, which the test drops with it: a test
    leaves nothing behind in the database."""
    found = raw.run("SELECT extnamespace::regnamespace::text FROM pg_extension "
                    "WHERE extname = 'pageinspect'")
    if not found:
        try:
            raw.run(f"CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA {raw.schema}")
        except Exception:
            return None
        found = [(raw.schema,)]
    get_raw_page = f"{found[0][0]}.get_raw_page"
    table = raw.keys
    count = raw.run(f"SELECT pg_relation_size('{table}') / 8192")[0][0]
    return [bytes(raw.run(f"SELECT {get_raw_page}('{table}', ?)", (i,))[0][0])
            for i in range(count)]


def test_an_in_memory_store_seals_and_erases_too():
    with opened("sqlite://", actor="tester") as engine:
        populate(engine)
        assert engine.verify().clean
        assert engine.erase("c-1", "subject asked").key_destroyed
        assert engine.events("c-1")[0].payload()["personal"] == {"name": ERASED, "email": ERASED}
        assert engine.verify().clean


def test_a_refused_batch_stores_no_key(engine):
    good = ev("identified", "k-1", at(1), personal={"name": NAME})
    outcome = engine.record_many([good, ev("feedback", "k-1", at(2), score=11)])
    assert outcome.rejected and outcome.stored == 0
    assert engine.app.keyring.load({"k-1"}) == {}
    engine.record(good)
    key = engine.app.keyring.load({"k-1"})["k-1"]
    assert engine.events("k-1")[0].personal.sealed["kid"] == key.kid


def test_a_key_another_writer_made_first_fails_the_whole_batch_of_keys(engine):
    """Two writers making a key for one customer: the later one's batch stores no key
    (KeyRace; its whole batch of events is then applied again and finds the key)."""
    keyring = engine.app.keyring
    keyring.store([CustomerKey.new(f"r-{i}") for i in range(300, 310)])
    batch = [CustomerKey.new(f"r-{i}") for i in range(600)]  # r-300..r-309 are taken
    with pytest.raises(KeyRace) as raised:
        keyring.store(batch)
    assert raised.value.customer_id == "r-300"
    assert set(keyring.load({k.customer_id for k in batch})) == {f"r-{i}" for i in range(300, 310)}


@pytest.mark.parametrize("reason", ["", "   ", "x" * 2001, "bad \udcff byte", "a NUL \x00"])
def test_erase_needs_a_reason_of_at_most_2000_characters(engine, reason):
    """(A command line's byte that is not UTF-8 arrives as a lone surrogate.)"""
    populate(engine)
    before = len(engine.events("c-1"))
    with pytest.raises(InputError) as info:
        engine.erase("c-1", reason)
    assert info.value.field == "reason"
    assert len(engine.events("c-1")) == before
    assert engine.app.keyring.load({"c-1"})  # the key is still there


def test_an_actor_that_is_not_text_is_a_usage_error(engine, db_url):
    from typer.testing import CliRunner

    from journey.cli import app

    populate(engine)
    result = CliRunner().invoke(
        app, ["--db", db_url, "--actor", "ro\udcffot", "erase", "c-1", "--reason", "asked"]
    )
    assert result.exit_code == 2, result.output
    assert "UTF-8" in result.output and "Traceback" not in result.output
    assert engine.app.keyring.load({"c-1"})  # the key is still there


def test_a_second_interrupted_erasure_is_finished_too(engine):
    """After an erasure, new personal data is sealed under a new key: an erase interrupted
    after destroying that one is finished by the next, not taken for already done."""
    populate(engine)
    engine.erase("c-1", "asked")
    engine.record(ev("contact", "c-1", at(20), channel="phone", direction="inbound",
                     purpose="inquiry", personal={"note": "call again"}))
    assert engine.app.keyring.destroy("c-1")  # the second erase crashed after this
    done = engine.erase("c-1", "asked again")
    assert done.position is not None and done.key_destroyed_before
    assert [e.TYPE for e in engine.events("c-1")][-2:] == ["contact", "erased"]
    again = engine.erase("c-1", "asked a third time")
    assert again.position is None  # now it is done


def test_an_input_sent_again_after_its_customers_erasure_is_a_retry(engine, tmp_path):
    """A file re-imported after an erasure stored its personal-data events a second time
    (their digests were made with the destroyed key): costs counted twice, the erased name
    readable again under a new key; with an event_id, the whole file was a conflict."""
    lines = [
        ev("identified", "c-1", at(1), personal={"name": "Ann"}),
        ev("contact", "c-1", at(2), channel="visit", direction="outbound", purpose="offer",
           cost="35", personal={"note": NOTE}),
        ev("contact", "c-1", at(3), channel="phone", direction="inbound", purpose="inquiry",
           event_id="crm-3", personal={"note": "call back"}),
    ]
    path = tmp_path / "crm.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert engine.import_files([str(path)]).stored == 3
    engine.erase("c-1", "asked")
    before = [(e.TYPE, e.originator_version) for e in engine.events("c-1")]
    cost = PointInTime(engine).show("c-1").scores["cost_to_serve"]
    again = engine.import_files([str(path)])
    assert (again.stored, again.duplicates, again.rejected) == (0, 3, [])
    assert [(e.TYPE, e.originator_version) for e in engine.events("c-1")] == before
    assert PointInTime(engine).show("c-1").scores["cost_to_serve"] == cost
    assert engine.app.keyring.load({"c-1"}) == {}  # no new key: nothing was sealed again
    changed = dict(lines[1], cost="40")  # not the same event: a new one, under a new key
    assert engine.record(changed).duplicate is False
    refused(engine, dict(lines[2], channel="email"), "event_id", "already", kind="conflict")


def test_only_events_sealed_with_the_destroyed_key_are_matched_without_personal_data(engine):
    """After an erasure every input with personal data was matched, personal data aside,
    against every stored event: new data after the erasure was dropped as a retry, an
    event_id sent with other data was no conflict, and data added to an event stored
    without any was thrown away."""
    contact = ev("contact", "c-1", at(2), channel="phone", direction="inbound",
                 purpose="inquiry")
    engine.record(contact)  # stored without personal data
    engine.record(ev("identified", "c-1", at(1), personal={"name": "Ann"}))
    engine.erase("c-1", "asked")
    later = dict(contact, occurred_at=at(5), event_id="e-5", personal={"note": "first"})
    assert engine.record(later).duplicate is False  # after the erasure: its own key
    refused(engine, dict(later, personal={"note": "other"}), "event_id", "already",
            kind="conflict")
    assert engine.record(dict(later, event_id=None, personal={"note": "other"})).duplicate is False
    assert engine.record(dict(contact, personal={"note": "added"})).duplicate is False
    assert engine.record(ev("identified", "c-1", at(1), personal={"name": "A"})).duplicate is True


def altered_outside(engine, statement: str, params: tuple) -> None:
    """A change to the store made outside Journey; the reader's key cache emptied."""
    raw = Raw(engine)
    try:
        raw.run(statement, params)
    finally:
        raw.close()
    engine.app.keyring._cache.clear()


def reads_fail(db_url: str, *said: str) -> None:
    """export and history of c-1 fail (exit 1) saying each of ``said``, no traceback."""
    for command in (["export", "c-1"], ["history", "c-1"]):
        result = cli(db_url, *command)
        assert result.exit_code == 1, (command, result.output)
        assert all(words in result.stderr for words in said), result.stderr
        assert "Traceback" not in result.output


@pytest.mark.parametrize("change, said, verify_says", [
    (("UPDATE {keys} SET secret = ? WHERE customer_id = ?", (bytes(64), "c-1")),
     "cannot be opened with its key", None),  # a traceback, once; verify opens nothing
    # read as an erasure: [erased] beside the export's own "erased": false, exit 0
    (("UPDATE {keys} SET kid = ? WHERE customer_id = ?", ("0" * 16, "c-1")),
     "is sealed under another key than the customer's, after any erasure", "key altered"),
    # read as an erasure no event recorded, and verify passed
    (("DELETE FROM {keys} WHERE customer_id = ?", ("c-1",)),
     "has no key, and no erasure accounts for it", "key missing"),
], ids=["key bytes", "key id", "key deleted"])
def test_a_key_altered_outside_journey_is_said_so(engine, db_url, change, said, verify_says):
    populate(engine)
    assert cli(db_url, "verify").exit_code == 0
    altered_outside(engine, *change)
    reads_fail(db_url, said)
    assert cli(db_url, "show", "c-2").exit_code == 0  # others read as before
    result = cli(db_url, "verify", "--json")
    breaks = json.loads(result.stdout)["breaks"]
    assert [(b["customer_id"], b["kind"]) for b in breaks] == (
        [("c-1", verify_says)] if verify_says else []
    )
    assert result.exit_code == (1 if verify_says else 0)
    assert cli(db_url, "verify", "c-2").exit_code == 0  # only the customers asked


def test_a_key_put_back_after_an_erasure_is_said_so(engine, db_url):
    """A key restored from a backup after its erasure passed verify; readers show the old
    data erased all the same, but new data is sealed under it (a data protection
    officer's walk)."""
    populate(engine)
    raw = Raw(engine)
    try:
        row = raw.run(
            "SELECT customer_id, kid, secret, created_at FROM {keys} WHERE customer_id = ?",
            ("c-1",),
        )[0]
        engine.erase("c-1", "asked")
        assert cli(db_url, "verify").exit_code == 0
        raw.run("INSERT INTO {keys} (customer_id, kid, secret, created_at) VALUES (?, ?, ?, ?)",
                (row[0], row[1], bytes(row[2]), row[3]))
    finally:
        raw.close()
    engine.app.keyring._cache.clear()
    result = cli(db_url, "verify", "--json")
    assert result.exit_code == 1, result.output
    (found,) = json.loads(result.stdout)["breaks"]
    assert (found["customer_id"], found["kind"]) == ("c-1", "key restored")
    assert row[1] in found["detail"]
    assert cli(db_url, "verify", "c-2").exit_code == 0
    export = cli(db_url, "export", "c-1")
    assert export.exit_code == 0 and NAME not in export.stdout


def test_verify_takes_keys_gone_with_an_erasure_or_new_after_it_as_they_should_be(engine, db_url):
    """Data sealed before an erasure has no key by right; data after it has a new one.
    An erase by an older Journey, stopped between deleting the key and recording its event,
    shows as a key missing until ``erase`` finishes it."""
    populate(engine)
    engine.erase("c-1", "asked")
    engine.record(ev("contact", "c-1", at(20), channel="phone", direction="inbound",
                     purpose="inquiry", personal={"note": "call again"}))
    assert cli(db_url, "verify").exit_code == 0
    last = engine.events("c-1")[-1].originator_version
    assert engine.app.keyring.destroy("c-1")  # as an older Journey's erase, stopped here
    result = cli(db_url, "verify", "--json")
    assert result.exit_code == 1
    (found,) = json.loads(result.stdout)["breaks"]
    assert (found["kind"], found["version"]) == ("key missing", last)
    assert "journey erase finishes that" in found["detail"]
    assert engine.erase("c-1", "asked again").key_destroyed_before
    assert cli(db_url, "verify").exit_code == 0


def test_data_sealed_before_an_erasure_reads_erased_beside_new_data(engine):
    """After an erasure, new personal data gets a key of its own: the old events' data
    reads as erased, by right, and the new opens; new data under another key than the
    customer's, after the erasure, is an altered store."""
    engine.record(ev("identified", "c-1", at(1), personal={"name": "Ann"}))
    engine.erase("c-1", "asked")
    engine.record(ev("contact", "c-1", at(5), channel="phone", direction="inbound",
                     purpose="inquiry", personal={"note": "new"}))
    people = [e.payload().get("personal") for e in engine.events("c-1")]
    assert people[0] == {"name": ERASED} and people[-1] == {"note": "new"}
    altered_outside(engine, "UPDATE {keys} SET kid = ? WHERE customer_id = ?", ("0" * 16, "c-1"))
    with pytest.raises(UnreadableSeal, match="another key than the customer's"):
        engine.events("c-1")


def test_a_key_deleted_outside_journey_is_said_so_until_an_erase_records_it(engine, db_url):
    """A key deleted read as an erasure no event recorded, as it had to while an erase
    deleted the key, then recorded its event: now both are one transaction, so a missing
    key no erasure accounts for is an altered store, or an older Journey's erase that
    stopped half way, which ``erase`` finishes."""
    populate(engine)
    altered_outside(engine, "DELETE FROM {keys} WHERE customer_id = ?", ("c-1",))
    reads_fail(db_url, "has no key, and no erasure accounts for it", "journey erase finishes that")
    assert cli(db_url, "erase", "c-1", "--reason", "asked").exit_code == 0
    result = cli(db_url, "export", "c-1")
    assert result.exit_code == 0, result.output
    assert ERASED in result.stdout and NAME not in result.stdout


def test_a_reader_that_found_no_key_finds_the_one_made_since(engine, db_url):
    """A reader caches keys for a moment, their absence too: data recorded after it looked
    (a new key, after an erasure) would have read as keyless, an altered store."""
    populate(engine)
    engine.erase("c-1", "asked")
    reader = PointInTime(engine)
    assert NAME not in json.dumps([s.as_dict(n) for n, s in enumerate(reader.history("c-1"))])
    with opened(db_url) as other:  # another process
        other.record(ev("contact", "c-1", at(20), channel="phone", direction="inbound",
                        purpose="inquiry", personal={"note": "call again"}))
    assert engine.events("c-1")[-1].payload()["personal"] == {"note": "call again"}
    shown = json.dumps([s.as_dict(n) for n, s in enumerate(reader.history("c-1"))])
    assert "call again" in shown


def erase_as_the_key_is_fetched(monkeypatch, engine, db_url):
    """Another process's erase commits after ``engine`` read the events, before it
    fetches the key (its cache cold)."""
    real = Keyring.load
    done = []

    def load(self, ids):
        if not done and self is engine.app.keyring:
            done.append(1)
            with opened(db_url) as other:
                other.erase("c-1", "asked")
        return real(self, ids)

    monkeypatch.setattr(Keyring, "load", load)


@pytest.mark.parametrize("read", ["events", "history"])
def test_a_read_overlapping_an_erase_reads_erased_not_altered(engine, db_url, monkeypatch, read):
    """Events read before an erase, the key after it: no key, and no erasure among the
    events read. A fresh look finds the erasure (a review found readers failing, over
    HTTP a 500 saying the store was altered)."""
    populate(engine)
    reader = PointInTime(engine)
    reader.events("c-1")  # kept sealed: opened when shown
    engine.app.keyring._cache.clear()
    erase_as_the_key_is_fetched(monkeypatch, engine, db_url)
    if read == "events":
        people = [e.payload().get("personal") for e in engine.events("c-1")]
    else:
        people = [s.event.payload().get("personal") for s in reader.history("c-1") if s.event]
    assert NAME not in json.dumps(people) and ERASED in json.dumps(people)


def test_an_erase_between_a_readers_two_looks_again_is_no_alarm(engine, db_url, monkeypatch):
    """A reader that finds no key looks again: the key first, then the erasures. An erase
    committing between the two leaves it the key it had (the other order, erasures
    first, found neither the key nor the erasure and took the store for altered)."""
    populate(engine)
    app = engine.app
    app.keyring._cache["c-1"] = (time.monotonic(), None)  # as if looked up before its data
    real = app.sealed_events.get
    done = []

    def get(customer_id, *args, **kwargs):
        found = list(real(customer_id, *args, **kwargs))  # then the erase commits
        if not done:
            done.append(1)
            with opened(db_url) as other:
                other.erase("c-1", "asked")
        return found

    monkeypatch.setattr(app.sealed_events, "get", get)
    engine.events("c-1")  # read before the erase: as it was then, and no alarm
    assert done
    people = json.dumps([e.payload().get("personal") for e in engine.events("c-1")])
    assert NAME not in people and ERASED in people


def test_a_reader_with_a_key_cached_before_an_erasure_it_reads_shows_the_data_erased(
    engine, db_url
):
    """A process trusts a key for a few seconds; data sealed before an erasure that the
    reader itself read is shown erased all the same."""
    populate(engine)
    assert NAME in json.dumps([e.payload().get("personal") for e in engine.events("c-1")])
    with opened(db_url) as other:  # another process
        other.erase("c-1", "asked")
    events = engine.events("c-1")
    assert events[-1].TYPE == "erased"
    assert NAME not in json.dumps([e.payload().get("personal") for e in events])
    steps = PointInTime(engine).history("c-1")
    assert NAME not in json.dumps([s.as_dict(n) for n, s in enumerate(steps)])


def test_an_erasure_refuses_a_store_that_would_delete_the_key_apart(engine):
    """The library's database functions insert events without Journey's own steps in
    the transaction: the key's deletion would then happen on its own."""
    populate(engine)
    before = [e.TYPE for e in engine.events("c-1")]
    engine.app.recorder.datastore.enable_db_functions = True
    try:
        with pytest.raises(StorageError, match="cannot delete the key in the same transaction"):
            engine.erase("c-1", "asked")
    finally:
        engine.app.recorder.datastore.enable_db_functions = False
    assert [e.TYPE for e in engine.events("c-1")] == before
    assert engine.app.keyring.load({"c-1"})


@pytest.mark.parametrize("then_new", [False, True], ids=["erase", "erase and new data"])
def test_verify_is_clean_beside_an_erase_past_its_pass(engine, db_url, monkeypatch, then_new):
    """An erase committing after verify's sealing step, which ends its pass: the key is
    gone (and a new one made) while the pass stops before the erasure. Verify looks at
    such customers again, as a reader does (it took an intact store for altered)."""
    populate(engine)
    real = LogSeal._seal
    done = []

    def seal(self, known):
        out = real(self, known)
        if not done:
            done.append(1)
            with opened(db_url) as other:
                other.erase("c-1", "asked")
                if then_new:
                    other.record(ev("contact", "c-1", at(20), channel="phone",
                                    direction="inbound", purpose="inquiry",
                                    personal={"note": "call again"}))
        return out

    monkeypatch.setattr(LogSeal, "_seal", seal)
    report = engine.verify()
    assert done and report.breaks == []


def test_verify_keeps_only_what_no_erasure_accounts_for(engine):
    """Data sealed before an erasure is dropped as the erasure is read: a log of erased
    customers does not pile up in verify's memory."""
    populate(engine)
    check = KeyCheck(engine.app.keyring, ["c-9"])
    sealed = {"kid": "gone", "fields": ["name"], "ciphertext": "x", "nonce": "y", "digest": "z"}
    for version in range(1, 101):
        check.event("c-9", version, version, "journey.events:Contacted", {"personal": sealed})
    assert len(check.unkeyed["c-9"]) == 100
    check.event("c-9", 101, 101, ERASED_TOPIC, {})
    assert check.unkeyed == {} and check.breaks() == []


@pytest.mark.postgres
def test_an_erase_beside_a_running_verify_waits_for_it_then_purges(pg_url):
    """Verify's pass is one long snapshot, which may still see the key's row: a rewrite
    of the key table then would copy the row's bytes into the new file, so the erase
    waits for the pass to end (reading the key ids inside it also held the table's lock,
    which queued every key read and write behind the erase's rewrite)."""
    with opened(pg_url) as engine:
        populate(engine)
        real = Checker.row
        rows = threading.Event()
        read: list[float] = []  # when verify's pass read each row

        def slow(self, *args):
            rows.set()
            time.sleep(0.2)
            read.append(time.monotonic())
            return real(self, *args)

        verifying = threading.Thread(target=engine.verify)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Checker, "row", slow)
            verifying.start()
            try:
                assert rows.wait(10)
                with opened(pg_url) as other:
                    done = other.erase("c-1", "asked")
                    erased_at = time.monotonic()
                    assert other.app.keyring.key("c-1", fresh=True) is None
            finally:
                verifying.join(60)
        assert done.key_destroyed and done.position is not None
        assert len(read) > 3 and max(read) < erased_at  # it waited for the whole pass


def test_an_event_id_stored_without_personal_data_stays_a_conflict_after_an_erasure(engine):
    """Another event, alike but for its personal data, made the erasure's matching take an
    event_id sent again with new personal data for a retry: dropped, where it was a 409."""
    plain = ev("contact", "c-1", at(2), channel="phone", direction="inbound",
               purpose="inquiry", event_id="e-1")
    engine.record(plain)
    engine.record(dict(plain, event_id=None, personal={"note": "n"}))
    engine.erase("c-1", "asked")
    refused(engine, dict(plain, personal={"note": "new data"}), "event_id", "already",
            kind="conflict")


@pytest.mark.parametrize("tamper", ["no nonce", "a number", "a float"])
def test_sealed_data_altered_in_the_event_is_said_so_not_a_traceback(engine, db_url, tamper):
    populate(engine)
    raw = Raw(engine)
    try:
        position, _, _, state = next(r for r in raw.rows("c-1") if r[3].get("personal"))
        personal = state["personal"].get("_data_", state["personal"])
        if tamper == "no nonce":
            personal.pop("nonce")
        elif tamper == "a number":
            personal["ciphertext"] = 7
        raw.set_state(position, state)
        if tamper == "a float":
            text = json.dumps(state).replace('"previous_hash": null', '"previous_hash": 1.5')
            text = text.replace('"event_id": null', '"event_id": 1.5')
            raw.run("UPDATE {events} SET state = ? WHERE {pos} = ?", (text.encode(), position))
    finally:
        raw.close()
    result = cli(db_url, "export", "c-1")
    assert result.exit_code == 1, result.output
    assert "altered outside Journey" in result.stderr and "Traceback" not in result.output
