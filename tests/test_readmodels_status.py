"""`journey projections status`: position, head, lag and staleness after a settings change
(issue 4, Operators)."""

from __future__ import annotations

import json
import threading
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from readmodel_support import contacts, customer_ids, models, record_all, records
from sqlalchemy import func, select
from typer.testing import CliRunner

from journey.api import Journey
from journey.cli import app
from projections.readmodels.operate import UPGRADE, ReadModels, run_supervised
from projections.readmodels.queries import view
from projections.readmodels.store import MODELS, NewerCode
from projections.readmodels.tables import generations
from projections.settings import DEFAULT, Settings

NAMES = ("summary", "timeline", "purchases")
KEYS = {
    "name",
    "generation",
    "position",
    "head",
    "lag_events",
    "refresh_due",
    "lag_seconds",
    "settings_version",
    "stale",
    "stale_reasons",
    "building",
}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def status(url: str, *extra: str) -> dict[str, dict]:
    result = invoke("--db", url, "projections", "status", "--json", *extra)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["read_models"]
    assert sorted(r["name"] for r in rows) == sorted(NAMES)
    for row in rows:
        assert set(row) >= KEYS, KEYS - set(row)
    return {r["name"]: r for r in rows}


def test_status_lag_and_staleness_follow_the_log_and_the_settings(db_url, tmp_path):
    changed = {"lapsed_after_days": 200}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(changed))
    new_version = Settings(**changed).version
    assert new_version != DEFAULT.version
    with models(db_url) as m:
        record_all(m.journey, records(15, seed=41))
        done = invoke("--db", db_url, "projections", "run", "--once")
        assert done.exit_code == 0, done.output
        head = m.journey.app.max_notification_id()
        for row in status(db_url).values():
            assert (row["position"], row["head"], row["lag_events"]) == (head, head, 0)
            # 0, unless a summary row's day counter turned between the run and now
            assert row["lag_seconds"] == 0 or row["refresh_due"] > 0, row
            assert row["stale"] is False and row["stale_reasons"] == []
            assert row["settings_version"] == DEFAULT.version
            assert row["building"] is None

        more = record_all(m.journey, contacts([*customer_ids(m.journey)[:3], "c-brand-new"]))
        new_head = m.journey.app.max_notification_id()
        for row in status(db_url).values():
            assert row["position"] == head and row["head"] == new_head
            assert row["lag_events"] == len(more) == new_head - head
            assert row["lag_seconds"] >= 0
            assert row["stale"] is False

        for name, row in status(db_url, "--settings", str(path)).items():
            assert row["settings_version"] == DEFAULT.version
            if name == "purchases":  # its rows do not depend on the rule settings
                assert row["stale"] is False and row["stale_reasons"] == [], name
                continue
            assert row["stale"] is True, name
            assert row["stale_reasons"] and "settings" in row["stale_reasons"][0]

        rebuilt = invoke("--db", db_url, "projections", "rebuild", "--all", "--settings", str(path))
        assert rebuilt.exit_code == 0, rebuilt.output
        for row in status(db_url, "--settings", str(path)).values():
            assert row["stale"] is False and row["stale_reasons"] == []
            assert row["settings_version"] == new_version
            assert (row["position"], row["lag_events"]) == (new_head, 0)
            assert row["generation"] == 2
        back = status(db_url)  # under the default settings again
        assert all(row["stale"] for name, row in back.items() if name != "purchases")
        assert back["purchases"]["stale"] is False
        # the funnel counts from the timeline, by its rules: it says so when asked by others
        counted = invoke("--db", db_url, "funnel", "--json")
        assert counted.exit_code == 0 and "stale" in counted.stderr
        assert set(json.loads(counted.stdout)) == {"as_of", "stages", "statuses", "levels"}
        same_rules = invoke("--db", db_url, "funnel", "--json", "--settings", str(path))
        assert same_rules.exit_code == 0 and "stale" not in same_rules.stderr
        text = invoke("--db", db_url, "projections", "status")  # 80 columns, not a terminal
        assert new_version in text.stdout  # whole, not cut short

        summary = view(m.store, "summary")
        with m.store.engine.connect() as conn:
            versions = conn.execute(select(func.distinct(summary.c.settings_version))).scalars()
            assert set(versions) == {new_version}

        text = invoke("--db", db_url, "projections", "status", "--settings", str(path))
        assert text.exit_code == 0 and "up to date" in text.stdout


def test_status_counts_summary_rows_whose_time_driven_change_has_come(db_url):
    """Every event applied, but a lapse (or the next day's counters) due and not applied:
    the summary is behind the clock, and status said "up to date"."""
    with models(db_url) as m:  # rows computed at the support's fixed moment, long past
        record_all(m.journey, records(15, seed=41))
        m.runner.catch_up("summary")
        m.runner.catch_up("purchases")
        m.runner.catch_up("timeline")
        due, since = m.store.overdue(m.runner.serving("summary").generation, datetime.now(UTC))
        assert due > 0
        row = status(db_url)["summary"]
        assert (row["lag_events"], row["refresh_due"]) == (0, due)
        assert row["lag_seconds"] >= (datetime.now(UTC) - since).total_seconds() - 5
        assert "wait for a time-driven change" in invoke(
            "--db", db_url, "projections", "status"
        ).stdout
        assert status(db_url)["timeline"]["refresh_due"] == 0
        assert invoke("--db", db_url, "projections", "run", "--once").exit_code == 0
        row = status(db_url)["summary"]
        assert (row["refresh_due"], row["lag_seconds"]) == (0, 0)


def test_a_what_if_query_on_a_new_store_does_not_set_the_runners_rules(db_url, tmp_path):
    """``show --settings`` first on a store made generation 1 with its rules, which every
    runner then applied, saying nothing."""
    path = tmp_path / "what-if.json"
    path.write_text(json.dumps({"lapsed_after_days": 200}))
    with Journey(db_url) as journey:  # no read model yet
        record_all(journey, records(5, seed=41))
        first = customer_ids(journey)[0]
    shown = invoke("--db", db_url, "show", first, "--settings", str(path), "--json")
    assert shown.exit_code == 0, shown.output
    assert {r["settings_version"] for r in status(db_url).values()} == {DEFAULT.version}
    ran = invoke("--db", db_url, "projections", "run", "--once", "--settings", str(path))
    assert ran.exit_code == 0
    assert "note: summary is stale (built with settings" in ran.stderr
    assert "note: purchases" not in ran.stderr  # it has no rules
    plain = invoke("--db", db_url, "projections", "run", "--once")
    assert "note:" not in plain.stderr


def test_journey_settings_are_read_only_for_a_new_stores_first_rules(db_url, tmp_path, monkeypatch):
    """A what-if query took $JOURNEY_SETTINGS each time it opened the read models: a bad
    file there broke every query, even one given --settings, with a traceback."""
    good = tmp_path / "good.json"
    good.write_text("{}")
    with Journey(db_url) as journey:
        record_all(journey, records(3, seed=41))
    monkeypatch.setenv("JOURNEY_SETTINGS", str(tmp_path / "missing.json"))
    fresh = invoke("--db", db_url, "projections", "status", "--settings", str(good), "--json")
    assert fresh.exit_code == 2 and "missing.json" in json.loads(fresh.stderr)["error"]
    monkeypatch.delenv("JOURNEY_SETTINGS")
    assert invoke("--db", db_url, "projections", "status").exit_code == 0  # generations made
    monkeypatch.setenv("JOURNEY_SETTINGS", str(tmp_path / "missing.json"))
    again = invoke("--db", db_url, "projections", "status", "--settings", str(good), "--json")
    assert again.exit_code == 0, again.output


def test_status_shows_an_unfinished_build(db_url):
    with models(db_url) as m:
        record_all(m.journey, records(5, seed=42))
        head = m.journey.app.max_notification_id()
        started = m.store.start_build("timeline", head=head, settings=DEFAULT)
        rows = status(db_url)
        assert rows["timeline"]["building"]["generation"] == started.generation
        assert rows["timeline"]["building"]["head"] == head
        assert rows["summary"]["building"] is None
        assert rows["timeline"]["lag_events"] == head


def test_a_read_model_built_by_other_projection_code_is_stale(db_url, monkeypatch):
    """Code versions are each model's: a change to the summary's code called the timeline
    and purchases stale too, and upgraders rebuilt them for nothing."""
    with models(db_url) as m:
        record_all(m.journey, records(3, seed=2))
        assert invoke("--db", db_url, "projections", "run", "--once").exit_code == 0
        built_by = status(db_url)["summary"]["code_version"]
        newer = replace(MODELS["summary"], code=str(int(built_by) + 1))
        monkeypatch.setitem(MODELS, "summary", newer)
        rows = status(db_url)
        assert rows["summary"]["stale"] is True
        assert rows["summary"]["stale_reasons"] == [
            f"built by projection code {built_by}, now {newer.code}"
        ]
        assert not rows["timeline"]["stale"] and not rows["purchases"]["stale"]
        record_all(m.journey, contacts(customer_ids(m.journey)[:1]))
        text = invoke("--db", db_url, "projections", "status").stdout
        assert "stale: built by projection code" in text and "behind by 1 events" in text
        ran = invoke("--db", db_url, "projections", "run", "--once")
        assert ran.exit_code == 0, ran.output
        assert "rows written from now on follow this projection code" in ran.stderr
        assert "with these settings" not in ran.stderr  # the settings are the same


def test_a_generation_built_by_newer_code_is_not_written_by_older_code(db_url, monkeypatch):
    """An old runner left running through an upgrade wrote its older rows (and feed
    entries) into the generation the new Journey had just built, and status said "up to
    date"."""
    with models(db_url) as m:
        record_all(m.journey, records(3, seed=3))
        assert invoke("--db", db_url, "projections", "run", "--once").exit_code == 0
        with m.store.engine.begin() as conn:
            conn.execute(
                generations.update().where(generations.c.name == "summary").values(code_version="9")
            )
        before = m.runner.serving("summary").position
        record_all(m.journey, contacts(customer_ids(m.journey)[:1]))
        ran = invoke("--db", db_url, "projections", "run", "--once", "summary")
        assert ran.exit_code == 1
        assert "built by projection code 9, newer than this Journey's" in ran.output
        assert m.runner.serving("summary").position == before
        with pytest.raises(NewerCode):
            m.runner.refresh_due()
        with closing(ReadModels.open(db_url, DEFAULT)) as reader:
            assert reader.refresh(["summary"]) is False  # a reader reads it as it is
        every = invoke("--db", db_url, "projections", "run", "--once")  # the others go on
        assert every.exit_code == 1 and "caught up: timeline, purchases" in every.stdout
        assert "newer than this Journey's" in every.stderr
        assert "this Journey leaves it be" in every.stderr  # not "rows ... follow this code"
        rows = status(db_url)
        assert rows["timeline"]["lag_events"] == rows["purchases"]["lag_events"] == 0
        assert rows["summary"]["stale_reasons"][0].endswith(UPGRADE)
        text = invoke("--db", db_url, "projections", "status").stdout
        assert "upgrade this Journey" in text and "(rebuild it)" not in text
        stop = threading.Event()
        threading.Timer(10, stop.set).start()  # retried, it would not end: fail, not hang
        with pytest.raises(NewerCode):  # not retried as a lost connection would be
            run_supervised(db_url, DEFAULT, ["summary"], stop, retry_seconds=0.01)


def test_a_score_setting_leaves_the_timeline_serving_and_each_reason_names_the_setting(
    db_url, tmp_path
):
    """The timeline holds stage, status and level only: a change of `trust_base` called it
    stale, the funnel warned and operators rebuilt it for nothing."""
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"trust_base": 60}))
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"trust_base": 60, "lapsed_after_days": 200}))
    with models(db_url) as m:
        record_all(m.journey, records(5, seed=43))
        assert invoke("--db", db_url, "projections", "run", "--once").exit_code == 0
    rows = status(db_url, "--settings", str(scores))
    assert (rows["timeline"]["stale"], rows["timeline"]["stale_reasons"]) == (False, [])
    assert rows["summary"]["stale"] is True
    assert rows["summary"]["stale_reasons"][0].endswith("(trust_base: 50 -> 60)")
    counted = invoke("--db", db_url, "funnel", "--json", "--settings", str(scores))
    assert counted.exit_code == 0 and "stale" not in counted.stderr

    rows = status(db_url, "--settings", str(both))
    assert rows["timeline"]["stale_reasons"][0].endswith("(lapsed_after_days: 365 -> 200)")
    assert rows["summary"]["stale_reasons"][0].endswith(
        "(lapsed_after_days: 365 -> 200, trust_base: 50 -> 60)"
    )
    assert rows["purchases"]["stale"] is False


def test_a_generation_whose_stored_settings_this_journey_cannot_read_is_stale(db_url):
    """Settings written by another Journey (a setting since removed) cannot be compared
    value by value: say so rather than fail or call it fresh."""
    with models(db_url) as m:
        record_all(m.journey, records(3, seed=44))
        assert invoke("--db", db_url, "projections", "run", "--once").exit_code == 0
        with m.store.engine.begin() as conn:
            conn.execute(
                generations.update().values(
                    settings={**DEFAULT.model_dump(mode="json"), "retired_setting": 1},
                    settings_version="0123456789ab",
                )
            )
    rows = status(db_url)
    for name in ("summary", "timeline"):
        assert rows[name]["stale"] is True
        assert "not readable by this Journey" in rows[name]["stale_reasons"][0]
    assert rows["purchases"]["stale"] is False


def test_status_read_across_a_rebuilds_switch_reads_the_models_as_they_now_serve(db_url):
    """The switch dropped the generation status was reading (its table gone): GET
    /v1/projections answered 500 while a rebuild finished."""
    with models(db_url) as m:
        record_all(m.journey, records(5, seed=45))
        assert invoke("--db", db_url, "projections", "run", "--once").exit_code == 0
    with closing(ReadModels.open(db_url, DEFAULT)) as reader:
        overdue, tries = reader.store.overdue, []

        def switched_meanwhile(generation, now):
            if not tries:  # the rebuild switches (and drops this generation) right now
                rebuilt = invoke("--db", db_url, "projections", "rebuild", "summary")
                assert rebuilt.exit_code == 0, rebuilt.output
            tries.append(generation)
            return overdue(generation, now)

        reader.store.overdue = switched_meanwhile
        rows = {row["name"]: row for row in reader.status()}
    assert rows["summary"]["generation"] == 2
    assert tries == [1, 2]  # the first read failed on the dropped table, the second is new
