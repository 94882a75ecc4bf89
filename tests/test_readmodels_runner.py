"""Runners (issue 4): exactly-once under SIGKILL, time-driven changes, one writer per read
model, and (PostgreSQL) LISTEN/NOTIFY with reconnection after dropped connections."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from contextlib import ExitStack
from datetime import timedelta

import psycopg
import pytest
from conftest import PG_URL, _conninfo
from readmodel_support import (
    JOURNEY,
    NOW,
    ROOT,
    assert_feed_consistent,
    building,
    cli,
    customer_ids,
    kill,
    log_counts,
    models,
    record_all,
    records,
    serving,
    start_script,
    summary_counts,
    summary_rows,
    view_rows,
)
from sqlalchemy import select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from journey.api import Journey
from journey.cli import app
from journey.storage import Database
from projections.feed import Feed
from projections.pointintime import PointInTime
from projections.readmodels.operate import ReadModels, run_supervised
from projections.readmodels.queries import view
from projections.readmodels.rebuild import rebuild
from projections.readmodels.runner import Runner
from projections.readmodels.store import LockBusy, LockLost, ReadModelStore
from projections.settings import DEFAULT

KILLS = 10


def wait_for(condition, timeout: float = 60.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"], indirect=True
)
def test_exactly_once_under_sigkill_in_a_loop(db_url):
    rng = random.Random(2024)
    items = records(260, seed=12)
    initial, later = items[: len(items) * 2 // 3], items[len(items) * 2 // 3 :]
    size = -(-len(later) // KILLS)
    batches = [later[k * size : (k + 1) * size] for k in range(KILLS)]
    with models(db_url) as m:
        record_all(m.journey, initial)
        progress = []
        for batch in batches:
            process = start_script(db_url, "run", "summary,timeline", page=40)
            try:
                assert process.stdout.readline().strip() == "running", process.stderr.read()
                time.sleep(rng.uniform(0.05, 0.6))
                if rng.random() < 0.5:
                    record_all(m.journey, batch)  # while it runs
                    batch = []
                time.sleep(rng.uniform(0.0, 0.3))
                behind = m.journey.app.max_notification_id()
            finally:
                kill(process)  # SIGKILL
            progress.append((serving(m.store, "summary").position, behind))
            record_all(m.journey, batch)  # between kills
        head = m.journey.app.max_notification_id()
        assert progress[-1][0] > 0, "the runner never committed anything before being killed"
        assert any(p < h for p, h in progress), "no kill landed while the runner had work"
        # One last run to the head of the log.
        process = start_script(db_url, "run", "summary,timeline", page=40)
        try:
            caught_up = wait_for(
                lambda: (
                    serving(m.store, "summary").position == head
                    and serving(m.store, "timeline").position == head
                )
            )
            assert caught_up, process.stderr.read() if process.poll() is not None else "timeout"
        finally:
            kill(process)

        position = serving(m.store, "summary").position
        expected = log_counts(m.journey, position)
        assert summary_counts(m.store) == expected  # none applied twice, none skipped
        assert assert_feed_consistent(m.store) > 0  # no change announced twice or lost
        feed_head = Feed(m.store).head()
        incremental = summary_rows(m.store)
        timeline = view_rows(m.store, "timeline")
        rebuild(m.runner, "summary")
        rebuild(m.runner, "timeline")
        assert summary_rows(m.store) == incremental
        assert view_rows(m.store, "timeline") == timeline
        assert Feed(m.store).head() == feed_head  # a rebuild replays nothing to subscribers


def test_a_customer_lapses_with_no_new_event(db_url):
    start = NOW - timedelta(days=300)
    clock = [NOW]
    with models(db_url, clock=lambda: clock[0]) as m:
        record_all(
            m.journey,
            [
                {
                    "type": "identified",
                    "customer_id": "c-lapse",
                    "occurred_at": (start - timedelta(days=3)).isoformat(),
                },
                {
                    "type": "purchase",
                    "customer_id": "c-lapse",
                    "occurred_at": start.isoformat(),
                    "order_id": "o-1",
                    "amount": "120.00",
                    "category": "books",
                },
            ],
        )
        queries = PointInTime(m.journey)
        for name in ("summary", "timeline"):
            m.runner.catch_up(name)
        row = summary_row(m.store, "c-lapse")
        assert row.status == queries.show("c-lapse", NOW).status.value == "active"
        position, applied = row.last_position, row.applied_events

        later = start + timedelta(days=366)
        clock[0] = later
        assert m.runner.catch_up("summary") == 0  # nothing new in the log
        assert m.runner.refresh_due() >= 1
        row = summary_row(m.store, "c-lapse")
        assert row.status == queries.show("c-lapse", later).status.value == "lapsed"
        assert (row.last_position, row.applied_events) == (position, applied)
        assert row.recency_days == queries.show("c-lapse", later).scores["recency_days"]
        assert m.runner.refresh_due() == 0  # nothing else is due at this moment

        # The timeline already held the lapse, starting exactly when show starts saying it.
        table = view(m.store, "timeline")
        with m.store.engine.connect() as conn:
            spans = conn.execute(
                select(table).where(table.c.customer_id == "c-lapse").order_by(table.c.valid_from)
            ).all()
        (lapse,) = [
            s for s in spans if s.valid_from <= later and (s.valid_to is None or later < s.valid_to)
        ]
        assert lapse.status == "lapsed"
        assert queries.show("c-lapse", lapse.valid_from).status.value == "lapsed"
        just_before = lapse.valid_from - timedelta(microseconds=1)
        assert queries.show("c-lapse", just_before).status.value == "active"


def test_an_event_recorded_ahead_of_its_time_takes_effect_when_it_comes(db_url):
    """A purchase dated in the future changes the summary at its own moment, with no new
    event (the day counters' daily refresh alone would show it up to a day late)."""
    clock = [NOW]
    ahead = NOW + timedelta(days=10, hours=5)
    with models(db_url, clock=lambda: clock[0]) as m:
        *_, position = record_all(
            m.journey,
            [
                {
                    "type": "purchase",
                    "customer_id": "c-ahead",
                    "occurred_at": moment.isoformat(),
                    "order_id": f"o-{index}",
                    "amount": "30.00",
                }
                for index, moment in enumerate([NOW - timedelta(days=2), ahead])
            ],
        )
        *_, newcomer = record_all(  # a customer who exists only from that moment on
            m.journey,
            [
                {
                    "type": "purchase",
                    "customer_id": "c-new",
                    "occurred_at": ahead.isoformat(),
                    "order_id": "o-new",
                    "amount": "30.00",
                }
            ],
        )
        queries = PointInTime(m.journey)
        m.runner.catch_up("summary")
        assert summary_row(m.store, "c-ahead").loyalty_stage == "first_time"
        assert summary_row(m.store, "c-new").loyalty_stage is None
        assert summary_row(m.store, "c-ahead").refresh_at <= ahead

        late = ahead + timedelta(hours=3)  # a runner that was not running at that moment
        for moment in (ahead - timedelta(microseconds=1), late):
            clock[0] = moment
            m.runner.refresh_due()
            row = summary_row(m.store, "c-ahead")
            assert row.loyalty_stage == queries.show("c-ahead", moment).loyalty_stage.value
        assert row.loyalty_stage == "repeat"
        # Announced as that purchase's doing, at its own moment, though noticed later.
        (entry,) = [e for e in Feed(m.store).read(customer_id="c-ahead") if e.to_value == "repeat"]
        assert (entry.from_value, entry.occurred_at, entry.cause) == ("first_time", ahead, position)
        (entry,) = [e for e in Feed(m.store).read(customer_id="c-new") if e.kind == "loyalty_stage"]
        assert (entry.from_value, entry.to_value) == (None, "first_time")
        assert (entry.occurred_at, entry.cause) == (ahead, newcomer)


def summary_row(store: ReadModelStore, customer: str):
    table = view(store, "summary")
    with store.engine.connect() as conn:
        return conn.execute(select(table).where(table.c.customer_id == customer)).one()


def test_one_writer_per_read_model(db_url):
    with models(db_url) as m:
        other = ReadModelStore(Database.parse(db_url))
        try:
            with m.store.lock("run:summary"):
                with pytest.raises(LockBusy), m.store.lock("run:summary"):
                    pass
                with pytest.raises(LockBusy), other.lock("run:summary"):
                    pass
                with other.lock("run:timeline"):  # another read model: its own lock
                    pass
                once = ["--db", db_url, "projections", "run", "--once", "--lock-wait", "0.5"]
                result = CliRunner().invoke(app, [*once, "summary"])
                assert result.exit_code == 1, result.output
                assert "another runner" in result.stderr
                assert "Traceback" not in result.output
                # a model a runner keeps does not stop the others being caught up
                record_all(m.journey, records(3, seed=4))
                result = CliRunner().invoke(app, [*once, "summary", "timeline"])
                assert result.exit_code == 0, result.output
                assert "caught up: timeline" in result.stdout
                assert "another runner holds summary" in result.stderr
                head = m.journey.app.max_notification_id()
                assert m.runner.serving("timeline").position == head
                continuous = cli(
                    "--db", db_url, "projections", "run", "summary", "--lock-wait", "1",
                    timeout=60,
                )
                assert continuous.returncode == 1, continuous.stderr
                assert "another process holds the lock" in continuous.stderr
                assert "keeping summary up to date" not in continuous.stderr  # it does not
                assert "Traceback" not in continuous.stderr
            with other.lock("run:summary"):  # released
                pass
        finally:
            other.close()


def test_a_continuous_run_at_a_server_out_of_reach_is_a_usage_error():
    """A mistyped port retried forever, saying "lost its database ... reconnecting"."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "journey", "--db", "postgresql://nobody@127.0.0.1:1/none",
         "projections", "run"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cannot reach PostgreSQL" in done.stderr and "reconnecting" not in done.stderr


@pytest.mark.postgres
def test_a_lock_whose_session_ended_is_found_lost_before_the_next_pass(pg_url):
    """A PostgreSQL advisory lock lives in one session; a server that ends it (a restart,
    an operator's pg_terminate_backend) frees the lock for another runner, so the holder
    must learn of it before it writes again, not go on beside the new holder."""
    store = ReadModelStore(Database.parse(pg_url))
    try:
        with store.lock("run:summary") as still_held:
            still_held()
            key = store.advisory_key("run:summary") & (2**64 - 1)  # pg_locks: two halves
            with psycopg.connect(_conninfo(pg_url), autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = "
                    "'advisory' AND classid::bigint = %s AND objid::bigint = %s AND "
                    "objsubid = 1 AND pid <> pg_backend_pid()",
                    [key >> 32, key & (2**32 - 1)],
                ).fetchall()
            assert ended == [(True,)]  # this lock's session, and no other
            with store.lock("run:summary"):  # free now: another runner would take it
                pass
            with pytest.raises(LockLost):
                still_held()
            stop = threading.Event()
            with pytest.raises(LockLost):  # the runner stops before its next pass
                Runner(Journey(pg_url).app, store, DEFAULT).run(
                    ["summary"], stop, check=still_held
                )
    finally:
        store.close()


def test_a_runner_checks_its_locks_before_every_page_it_writes(db_url):
    with models(db_url) as m:
        record_all(m.journey, records(20, seed=9))
        runner = Runner(m.journey.app, m.store, DEFAULT, page=5)
        checked = []

        def check() -> None:  # one at the start of the pass, then before each page:
            checked.append(True)  # the lock is lost after two pages
            if len(checked) > 3:
                raise LockLost("the session ended")

        with pytest.raises(LockLost):
            runner.run(["summary"], threading.Event(), check=check)
        two_pages = m.journey.app.select_notifications(0, 10)[-1].id
        assert runner.serving("summary").position == two_pages


def test_a_stopped_runner_leaves_after_the_page_it_is_writing(db_url):
    """Ctrl-C waited for the whole backlog (minutes, over a large import)."""
    with models(db_url) as m:
        record_all(m.journey, records(20, seed=9))
        runner = Runner(m.journey.app, m.store, DEFAULT, page=5)
        stop = threading.Event()
        pages = []

        def check() -> None:  # asked to stop while the second page is read
            pages.append(True)
            if len(pages) == 3:
                stop.set()

        passes: list[dict] = []
        runner.run(["summary", "timeline"], stop, check=check, on_pass=passes.append)
        two_pages = m.journey.app.select_notifications(0, 10)[-1].id
        assert runner.serving("summary").position == two_pages
        assert runner.serving("timeline").position == 0
        assert passes == [{"summary": 10, "timeline": 0}]  # what it did is still reported
        assert runner.catch_up("summary") > 0  # the rest, where it left


@pytest.mark.postgres
def test_an_idle_runner_and_subscriber_on_postgres_wait_for_notifications(pg_url, monkeypatch):
    """They polled as on SQLite, a pass (a dozen queries) four or five times a second
    each, though a NOTIFY wakes them; now they look at most once a LISTEN_IDLE unwoken."""
    from projections import feed as feeds

    with models(pg_url) as m:
        record_all(m.journey, records(3, seed=9))
        m.runner.catch_up("summary")
        stop = threading.Event()
        passes: list[dict] = []
        reads: list[int] = []
        read = Feed.read
        monkeypatch.setattr(Feed, "read", lambda self, *a: reads.append(1) or read(self, *a))

        def subscribe() -> None:
            for _ in Feed(m.store).follow(10**9, stop=stop, poll_seconds=0.2):
                pass

        threads = [
            threading.Thread(
                target=run_supervised,
                args=(pg_url, DEFAULT, ["summary"], stop),
                kwargs={"on_pass": passes.append, "poll_seconds": 0.25},
            ),
            threading.Thread(target=subscribe),
        ]
        for thread in threads:
            thread.start()
        time.sleep(5 * feeds.LISTEN_IDLE)
        stop.set()
        for thread in threads:
            thread.join(30)
        # Polling every 0.25 s made about twenty; about five now (writes to other Journey
        # stores in the database, other tests' or a benchmark's, no longer wake it).
        assert 1 <= len(passes) <= 10, passes
        assert 1 <= len(reads) <= 10, reads


def test_a_runner_waits_for_a_reader_catching_the_model_up(db_url):
    """A read (the service, ``journey funnel``) holds the runner's lock while it catches a
    model up: a runner starting then waits for it, rather than take it for another
    runner's and exit."""
    with models(db_url) as m:
        record_all(m.journey, records(5, seed=1))
        reader = ReadModelStore(Database.parse(db_url))
        passes: list[dict] = []
        stop = threading.Event()
        try:
            with reader.lock("run:summary"):
                runner = threading.Thread(
                    target=run_supervised,
                    args=(db_url, DEFAULT, ["summary"], stop),
                    kwargs={"on_pass": passes.append, "lock_wait": 30},
                )
                runner.start()
                time.sleep(1.5)  # the reader is still catching up
                assert not passes
            deadline = time.monotonic() + 30
            while not passes and time.monotonic() < deadline:
                time.sleep(0.1)
            assert passes and passes[0]["summary"] > 0  # it ran once the lock was free
        finally:
            stop.set()
            runner.join(timeout=30)
            reader.close()
        assert not runner.is_alive()


def test_after_a_reconnection_a_runner_runs_the_models_whose_locks_are_free(db_url, monkeypatch):
    """While a runner was reconnecting, another took one of its models: it runs the others
    at once, and takes that one back when it comes free (not none until all are free)."""
    with models(db_url) as m:
        record_all(m.journey, records(5, seed=5))
        other = ReadModelStore(Database.parse(db_url))
        taken = ExitStack()
        run, open_, failed, took = Runner.run, ReadModels.open, [], []

        def drop_once(self, *args, **kwargs):
            if not failed:
                failed.append(True)
                raise ConnectionError("server closed the connection")
            return run(self, *args, **kwargs)

        def reopen(*args, **kwargs):  # meanwhile another runner took timeline
            if failed and not took:
                took.append(taken.enter_context(other.lock("run:timeline")))
            return open_(*args, **kwargs)

        monkeypatch.setattr(ReadModels, "open", reopen)
        monkeypatch.setattr(Runner, "run", drop_once)
        stop = threading.Event()
        thread = threading.Thread(
            target=run_supervised,
            args=(db_url, DEFAULT, ["summary", "timeline"], stop),
            kwargs={"retry_seconds": 0.1, "poll_seconds": 0.1},
        )
        thread.start()
        try:
            purchase = {
                "type": "purchase",
                "customer_id": "c-new",
                "order_id": "o-new",
                "occurred_at": "2025-06-01T10:00:00Z",
                "amount": "10.00",
            }
            record_all(m.journey, [purchase])
            head = m.journey.app.max_notification_id()
            assert wait_for(lambda: serving(m.store, "summary").position == head, 30)
            assert serving(m.store, "timeline").position < head  # not this runner's now
            taken.close()  # the other runner stops
            assert wait_for(lambda: serving(m.store, "timeline").position == head, 30)
            with pytest.raises(LockBusy), other.lock("run:timeline"):
                pass  # the runner holds it again
        finally:
            stop.set()
            thread.join(timeout=30)
            taken.close()
            other.close()
        assert failed and not thread.is_alive()


def test_run_once_catches_up_when_no_runner_holds_the_lock(db_url):
    with models(db_url) as m:
        record_all(m.journey, records(15, seed=3))
        result = CliRunner().invoke(app, ["--db", db_url, "projections", "run", "--once"])
        assert result.exit_code == 0, result.output
        head = m.journey.app.max_notification_id()
        for name in ("summary", "timeline", "purchases"):
            assert serving(m.store, name).position == head
        assert summary_counts(m.store) == log_counts(m.journey, head)


@pytest.mark.postgres
def test_supervised_runner_listens_and_reconnects_after_its_connections_are_killed(
    pg_url, monkeypatch
):
    """Every connection this process opens from here on is the runner's: they carry an
    application_name of their own (libpq reads PGAPPNAME), so only they are terminated.
    The test records events and reads positions from other processes / named sessions."""
    tag = f"journey-runner-{uuid.uuid4().hex[:8]}"
    schema = make_url(pg_url).query["schema"]
    with models(pg_url) as m:  # creates the schema, tables and a first generation
        record_all(m.journey, records(10, seed=9))
    monkeypatch.setenv("PGAPPNAME", tag)
    verifier = psycopg.connect(_conninfo(PG_URL), application_name="journey-test", autocommit=True)

    def position() -> int:
        return verifier.execute(
            f'SELECT position FROM "{schema}".journey_generations '
            "WHERE name = 'summary' AND status = 'serving'"
        ).fetchone()[0]

    def head() -> int:
        return verifier.execute(
            f'SELECT MAX(notification_id) FROM "{schema}".journey_events'
        ).fetchone()[0]

    def runner_sessions() -> list[int]:
        rows = verifier.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s",
            [tag],
        ).fetchall()
        return [r[0] for r in rows]

    def runner_holds_a_lock() -> bool:
        return bool(
            verifier.execute(
                "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
                [tag],
            ).fetchone()[0]
        )

    def record(customer: str, day: int) -> int:
        event = {
            "type": "purchase",
            "customer_id": customer,
            "order_id": f"o-{uuid.uuid4().hex[:6]}",
            "occurred_at": f"2025-06-{day:02d}T10:00:00Z",
            "amount": "10.00",
        }
        done = cli("--db", pg_url, "record", json.dumps(event), "--json", drop_env=["PGAPPNAME"])
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["position"]

    stop = threading.Event()
    failures: list[BaseException] = []

    def target() -> None:
        try:
            run_supervised(pg_url, DEFAULT, ["summary"], stop, retry_seconds=0.5)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: position() == head(), 30), failures
        assert wait_for(runner_holds_a_lock, 30)
        first = record("c-listen", 1)
        assert wait_for(lambda: position() >= first, 30), failures

        pids = runner_sessions()
        assert pids, "the runner has no session to kill"
        killed = verifier.execute(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s "
            "AND pid <> pg_backend_pid()) t",
            [tag],
        ).fetchone()[0]
        assert killed >= 1  # its sessions may have changed since: one is enough to drop
        assert wait_for(lambda: not set(pids) & set(runner_sessions()), 30)

        second = record("c-listen", 2)
        third = record("c-other", 3)
        assert wait_for(lambda: position() >= max(second, third), 60), failures
        assert thread.is_alive(), failures
        assert wait_for(runner_holds_a_lock, 30)  # the one-writer lock is held again
    finally:
        stop.set()
        thread.join(30)
        verifier.close()
    assert not thread.is_alive()
    assert not failures, failures
    monkeypatch.delenv("PGAPPNAME")
    with models(pg_url) as m:
        done = serving(m.store, "summary").position
        assert summary_counts(m.store) == log_counts(m.journey, done)
        assert "c-listen" in customer_ids(m.journey)
        assert building(m.store, "summary") is None


def test_refreshes_of_one_process_take_turns(db_url, monkeypatch):
    """Two requests of the HTTP service asking at once: the second waits for the first's
    catch-up instead of answering from a model not caught up yet."""
    with models(db_url) as m:
        record_all(m.journey, records(5, seed=2))
        read_models = ReadModels(m.journey, m.store, m.runner)
        catch_up = m.runner.catch_up

        def slow(*args, **kwargs):
            time.sleep(0.5)
            return catch_up(*args, **kwargs)

        monkeypatch.setattr(m.runner, "catch_up", slow)
        answers: list[bool] = []
        threads = [
            threading.Thread(target=lambda: answers.append(read_models.refresh(["timeline"])))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert answers == [True, True]


def test_the_event_stores_notifications_are_each_schemas_own(pg_url):
    """Every schema's event store notified one channel, "journey_events", and woke the
    runners and subscribers of every other Journey store in the database."""
    other = f"other_{uuid.uuid4().hex[:12]}"
    try:
        with Journey(pg_url) as mine, Journey(f"{PG_URL}?schema={other}") as theirs:
            channel = mine.app.recorder.schema_channel
            assert channel != theirs.app.recorder.schema_channel
            with (
                psycopg.connect(_conninfo(PG_URL), autocommit=True) as conn,
                psycopg.connect(_conninfo(PG_URL), autocommit=True) as library,
            ):
                conn.execute(f'LISTEN "{channel}"')
                record_all(theirs, records(2, seed=1))
                assert list(conn.notifies(timeout=0.5, stop_after=1)) == []
                library.execute('LISTEN "journey_events"')  # the library's subscribers' own
                record_all(mine, records(2, seed=1))
                assert len(list(conn.notifies(timeout=5, stop_after=1))) == 1
                assert len(list(library.notifies(timeout=5, stop_after=1))) == 1
    finally:
        with psycopg.connect(_conninfo(PG_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_a_continuous_run_says_it_keeps_the_models_once_it_holds_their_locks(db_url):
    """It said so before taking them: a second runner said "keeping summary up to date",
    then failed on the first one's lock (an operator's walk)."""
    import signal
    import subprocess

    process = subprocess.Popen(
        [JOURNEY, "--db", db_url, "projections", "run", "summary"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # its first word, once the lock is held
        assert line.startswith("keeping summary up to date"), line
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
