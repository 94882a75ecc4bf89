"""Rebuilding read models (issue 4): a rebuild equals the incremental catch-up row for row;
a crash mid-rebuild leaves the old generation serving and the next rebuild finishes the
job; readers see the old generation, then the new one, never a mixture."""

from __future__ import annotations

import threading
import time

import pytest
from readmodel_support import (
    NOW,
    all_rows,
    building,
    contacts,
    customer_ids,
    group_left,
    kill,
    log_counts,
    models,
    record_all,
    serving,
    start_script,
    summary_counts,
    summary_rows,
    view_rows,
)
from sqlalchemy import func, inspect, select
from support import seen_blocked_by

from journey.sample import sample
from projections.pointintime import PointInTime
from projections.readmodels import parallel
from projections.readmodels.queries import view
from projections.readmodels.rebuild import Walks, fold, rebuild, rebuild_many
from projections.readmodels.store import PositionMoved, ReadModelStore
from projections.settings import Settings

NAMES = ("summary", "timeline", "purchases")


def test_rebuild_equals_incremental_catch_up_row_for_row(db_url):
    items = list(sample(120, seed=4))
    kinds = {r["type"] for r in items}
    assert {"refund", "referral", "purchase", "left"} <= kinds, kinds
    with models(db_url, page=97) as m:
        # Incremental: half the log, catch up, the rest, catch up again (small pages, so
        # a customer's events arrive across many pages and both loads).
        half = len(items) // 2
        record_all(m.journey, items[:half])
        for name in NAMES:
            m.runner.catch_up(name)
        record_all(m.journey, items[half:])
        for name in NAMES:
            m.runner.catch_up(name)
        incremental = all_rows(m.store)
        positions = {name: serving(m.store, name).position for name in NAMES}
        for name in NAMES:
            generation = rebuild(m.runner, name, chunk=37)
            assert generation.generation == 2
            assert generation.position == positions[name]
        rebuilt = all_rows(m.store)
        head = m.journey.app.max_notification_id()

        for name in NAMES:
            assert rebuilt[name] == incremental[name], name
        # Not vacuous: the sample has backfills, refunds and referrals.
        assert any(row[-1] for row in rebuilt["purchases"]), "no refund in the purchases model"
        customers = log_counts(m.journey, head)
        assert len(rebuilt["summary"]) == len(customers)
        assert summary_counts(m.store) == customers
        # And the summary says what PointInTime says at the runner's clock.
        table = view(m.store, "summary")
        with m.store.engine.connect() as conn:
            found = {
                r.customer_id: (r.loyalty_stage, r.status, r.relationship_level, r.purchases)
                for r in conn.execute(select(table))
            }
        queries = PointInTime(m.journey, m.runner.settings)
        for result in queries.show_many(sorted(customers), NOW, with_rfm=False):
            a = result.unwrap()
            expected = (
                a.loyalty_stage.value,
                a.status.value,
                a.relationship_level.value,
                a.scores["purchases"],
            )
            assert found[result.customer_id] == expected, result.customer_id


def test_a_rebuild_of_all_models_in_worker_processes_equals_the_catch_up(db_url, monkeypatch):
    """One walk of the log for the three models, folded in two spawned processes."""
    pooled = []
    in_order = parallel.in_order
    monkeypatch.setattr(parallel, "in_order", lambda *a, **k: pooled.append(1) or in_order(*a, **k))
    with models(db_url) as m:
        record_all(m.journey, list(sample(60, seed=9)))
        for name in NAMES:
            m.runner.catch_up(name)
        incremental = all_rows(m.store)
        generations = rebuild_many(m.runner, NAMES, chunk=7, workers=2)  # 9 chunks
        assert {g.generation for g in generations.values()} == {2}
        assert all_rows(m.store) == incremental
    assert pooled == [1]  # the chunks really went to the worker processes


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "two-workers"])
def test_a_crash_mid_rebuild_leaves_the_old_generation_serving_and_the_next_resumes(
    db_url, workers
):
    with models(db_url) as m:
        record_all(m.journey, sample(80, seed=5))
        m.runner.catch_up("timeline")
        before = view_rows(m.store, "timeline")
        old = serving(m.store, "timeline")
        # A rebuild in its own process, 5 customers per chunk and a pause after each, is
        # SIGKILLed after a few chunks: well inside the fold.
        process = start_script(db_url, "rebuild", "timeline", chunk=5, pause=0.2, workers=workers)
        try:
            seen = 0
            for line in process.stdout:
                seen += line.startswith("progress")
                if seen == 3:
                    break
            assert seen == 3, process.stderr.read()
            process.kill()
        finally:
            kill(process)
        assert group_left(process) == []  # no worker outlives the killed rebuild

        assert serving(m.store, "timeline").generation == old.generation
        assert view_rows(m.store, "timeline") == before  # old rows, readable via the view
        unfinished = building(m.store, "timeline")
        assert unfinished is not None and unfinished.build_cursor is not None
        assert unfinished.position == 0  # never a half-built generation marked as caught up

        # Meanwhile the log grows; the next rebuild goes on with the same generation.
        record_all(m.journey, contacts([*customer_ids(m.journey)[::3], "c-new-1", "c-new-2"]))
        m.runner.catch_up("timeline")
        current = view_rows(m.store, "timeline")
        resumed = rebuild(m.runner, "timeline")
        assert resumed.generation == unfinished.generation
        assert resumed.position == m.journey.app.max_notification_id()
        assert view_rows(m.store, "timeline") == current
        clean = rebuild(m.runner, "timeline")
        assert clean.generation == resumed.generation + 1
        assert view_rows(m.store, "timeline") == current


def test_a_crash_while_a_rebuild_catches_up_applies_no_event_twice(db_url):
    """The fold is done and part of the catch-up with events recorded meanwhile is
    committed when the process dies; resuming must not fold back to the build head."""
    with models(db_url, page=7) as m:
        record_all(m.journey, sample(40, seed=7))
        m.runner.catch_up("summary")
        runner, store = m.runner, m.store
        head = m.journey.app.max_notification_id()
        generation = store.start_build("summary", head=head, settings=runner.settings)
        fold(runner, generation, 10, None)
        # Events recorded during the fold, for customers already folded.
        record_all(m.journey, contacts(customer_ids(m.journey)[:30]))
        reloaded = building(store, "summary")
        assert runner.apply_page("summary", reloaded) > 0  # one page of the catch-up, then "crash"
        rebuild(runner, "summary")
        head = m.journey.app.max_notification_id()
        assert serving(store, "summary").position == head
        assert summary_counts(store) == log_counts(m.journey, head)


def fingerprint(store: ReadModelStore) -> tuple:
    table = view(store, "summary")
    with store.engine.connect() as conn:
        return tuple(
            conn.execute(
                select(
                    func.count(),
                    func.count(func.distinct(table.c.settings_version)),
                    func.min(table.c.settings_version),
                    func.sum(func.length(table.c.status)),
                    func.sum(table.c.applied_events),
                )
            ).one()
        )


def test_readers_see_the_old_generation_then_the_new_one_never_a_mixture(db_url):
    changed = Settings(lapsed_after_days=120, at_risk_min_days=30)
    with models(db_url) as m:
        record_all(m.journey, sample(150, seed=8))
        m.runner.catch_up("summary")
        old = fingerprint(m.store)
        old_rows = summary_rows(m.store)
        reader_store = ReadModelStore(m.journey.database)
        seen: list[tuple] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                seen.append(fingerprint(reader_store))

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        try:
            time.sleep(0.2)
            with models(db_url, settings=changed) as other:
                rebuild(other.runner, "summary", chunk=5)
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join(30)
            reader_store.close()
        new = fingerprint(m.store)
        assert summary_rows(m.store) != old_rows  # the settings really changed the rows
        assert old != new
        assert old[1] == new[1] == 1  # each generation is built with one settings version
        assert seen[0] == old and seen[-1] == new
        assert set(seen) <= {old, new}, set(seen) - {old, new}
        # Once the new generation was seen, the old one never came back.
        first_new = seen.index(new)
        assert all(f == new for f in seen[first_new:])


def test_a_runner_reading_a_generation_a_switch_dropped_reads_the_new_one(db_url):
    """The tables of a generation read a moment before a switch dropped them were taken
    for a lost database: the runner reconnected (a stall, and a log line of an outage)."""
    with models(db_url) as m:
        record_all(m.journey, sample(10, seed=8))
        m.runner.catch_up("summary")
        stale = serving(m.store, "summary")
        record_all(m.journey, contacts(customer_ids(m.journey)[:2]))
        rebuild(m.runner, "summary")
        assert m.runner.refresh_due(stale) == 1  # ask again, of the serving generation
        with pytest.raises(PositionMoved), m.runner.retired_meanwhile(stale):
            m.runner.apply_page("summary", stale)
        assert m.runner.catch_up("summary") == 0  # the new generation is where the log is


@pytest.mark.postgres
def test_a_switch_does_not_hold_up_readers_behind_a_long_one(pg_url, monkeypatch):
    """PostgreSQL queues every reader after a waiting DROP VIEW: the switch waited for a
    long reader (a report, a dump) without limit, and the service's reads and the feed
    with it. Now it gives up after a moment, lets the readers through, and tries again."""
    from projections.readmodels import rebuild as rebuilding

    monkeypatch.setattr(rebuilding, "READERS_PAUSE", 0.05)
    with models(pg_url) as m:
        record_all(m.journey, sample(10, seed=8))
        m.runner.catch_up("timeline")
        query = f'SELECT count(*) FROM "{m.journey.database.schema}".customer_timeline'
        long_reader = m.journey.database.connect()
        long_reader.autocommit = False
        long_reader.execute(query).fetchone()  # its transaction holds the view
        done = threading.Thread(target=rebuild, args=(m.runner, "timeline"), daemon=True)
        done.start()
        try:
            assert seen_blocked_by(m.journey.database, long_reader)
            with m.journey.database.connect() as reader:  # came after the switch began
                reader.execute("SET statement_timeout = '20s'")  # blocked: fails, not hangs
                for _ in range(5):
                    time.sleep(0.2)
                    reader.execute(query).fetchone()
            assert done.is_alive()  # it waits for the long reader still
            assert serving(m.store, "timeline").generation == 1
        finally:
            long_reader.rollback()
            long_reader.close()
        done.join(60)
        assert serving(m.store, "timeline").generation == 2


@pytest.mark.postgres
def test_an_old_generation_a_reader_holds_is_left_retired_then_swept(pg_url):
    """The switch leaves an old generation whose table a reader still holds; a later start
    sweeps it, without waiting for that reader (every command's start hung behind it)."""
    with models(pg_url) as m:
        record_all(m.journey, sample(10, seed=8))
        m.runner.catch_up("timeline")
        reader = m.journey.database.connect()
        reader.autocommit = False
        schema = m.journey.database.schema
        reader.execute(f'SELECT count(*) FROM "{schema}".customer_timeline_g1').fetchone()
        try:
            rebuild(m.runner, "timeline")
            assert serving(m.store, "timeline").generation == 2
            start = threading.Thread(target=m.store.ensure, args=(m.runner.settings,))
            start.start()  # the reader still holds g1: left for later, not waited for
            start.join(20)
            assert not start.is_alive()
            assert [g.status for g in m.store.all_generations() if g.name == "timeline"] == [
                "retired", "serving"]
        finally:
            reader.rollback()
            reader.close()
        m.store.ensure(m.runner.settings)
        assert [g.generation for g in m.store.all_generations() if g.name == "timeline"] == [2]


@pytest.mark.parametrize("name", NAMES)
def test_a_rebuild_with_nothing_recorded_serves_an_empty_generation(db_url, name):
    with models(db_url) as m:
        generation = rebuild(m.runner, name)
        assert generation.generation == 2 and generation.position == 0
        assert view_rows(m.store, name) == []


def index_names(store: ReadModelStore, name: str, generation: int) -> set[str]:
    """The indexes the database holds on a generation's table, without its name prefix."""
    table = store.table(name, generation).name
    with store.engine.connect() as conn:
        found = inspect(conn).get_indexes(table)
    return {index["name"].removeprefix(table) for index in found}


def test_a_generation_gets_the_indexes_its_build_did_without_when_it_serves(db_url):
    every = {"summary": {"_refresh"}, "timeline": {"_span"}, "purchases": {"_customer", "_time"}}
    with models(db_url) as m:
        record_all(m.journey, sample(20, seed=5))
        for name in NAMES:  # the first generations serve from the start: all their indexes
            assert index_names(m.store, name, 1) == every[name]
        for name in NAMES:
            assert m.store.start_build(name, head=1, settings=m.runner.settings).generation == 2
        assert index_names(m.store, "summary", 2) == index_names(m.store, "timeline", 2) == set()
        assert index_names(m.store, "purchases", 2) == {"_customer"}  # writers delete by it
        rebuild_many(m.runner, NAMES)  # goes on with the builds started
        for name in NAMES:
            assert serving(m.store, name).generation == 2
            assert index_names(m.store, name, 2) == every[name]
        if m.journey.database.is_postgres:  # and statistics, for the planner to use them
            with m.journey.database.connect() as conn:
                analyzed = conn.execute(
                    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = %s "
                    "AND relname LIKE '%%_g2' AND last_analyze IS NOT NULL",
                    [m.journey.database.schema],
                ).fetchall()
            assert len(analyzed) == len(NAMES), analyzed


def test_progress_over_walks_that_resume_apart_never_goes_back():
    # builds resumed from other points walk the log apart, one after the other
    seen: list[tuple[int, int]] = []
    walks = Walks(lambda done, total: seen.append((done, total)))
    for done in (0, 6, 10):
        walks(done, 10)
    walks.next()
    for done in (4, 8):  # this walk resumed: 4 of its 8 were done before
        walks(done, 8)
    assert seen == [(0, 10), (6, 10), (10, 10), (14, 18), (18, 18)]


def test_a_write_that_read_first_waits_for_another_writer_instead_of_failing(sqlite_url):
    """SQLite: a deferred transaction that has read cannot take the write lock once another
    writer committed meanwhile ("database is locked" at once, whatever the busy timeout),
    which failed rebuilds beside a runner. A write transaction takes the lock first."""
    from sqlalchemy import update

    from journey.storage import Database
    from projections.readmodels.tables import generations
    from projections.settings import DEFAULT

    store, other = (ReadModelStore(Database.parse(sqlite_url)) for _ in range(2))
    store.ensure(DEFAULT)
    done = threading.Event()

    def other_writes() -> None:
        with other.writing() as conn:
            conn.execute(update(generations).values(position=generations.c.position))
        done.set()

    try:
        with store.writing() as conn:
            conn.execute(select(generations)).all()  # reads first, as building() does
            writer = threading.Thread(target=other_writes)
            writer.start()
            time.sleep(0.5)
            assert not done.is_set()  # it waits for this transaction
            conn.execute(update(generations).values(position=generations.c.position))
        writer.join(timeout=30)
        assert done.is_set()
    finally:
        store.close()
        other.close()
