"""Population questions from the read models (issue 4): the funnel at any moment and the
flow between two equal counting ``PointInTime.show`` over every customer; RFM's population
from the purchases model equals the scan of the whole log."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from readmodel_support import NOW, contacts, customer_ids, models, record_all, records
from typer.testing import CliRunner

from journey.cli import app
from projections.pointintime import PointInTime
from projections.readmodels.operate import model_names
from projections.readmodels.queries import (
    LEVELS,
    NEW,
    STAGES,
    STATUSES,
    flow,
    funnel,
    rfm_population,
)
from projections.rules.window import iso

BASE = datetime(2023, 1, 1, 9, 0, tzinfo=UTC)


def shown(queries: PointInTime, ids: list[str], moment: datetime) -> dict[str, tuple]:
    """Each customer that exists at ``moment``: (stage, status, level), from show."""
    found = {}
    for result in queries.show_many(ids, moment, with_rfm=False):
        if result.answer is not None:
            a = result.answer
            found[result.customer_id] = (
                a.loyalty_stage.value,
                a.status.value,
                a.relationship_level.value,
            )
    return found


def expected_funnel(states: dict[str, tuple], moment: datetime) -> dict:
    answer: dict = {"as_of": iso(moment)}
    for index, (key, values) in enumerate(
        (("stages", STAGES), ("statuses", STATUSES), ("levels", LEVELS))
    ):
        counts = Counter(state[index] for state in states.values())
        answer[key] = {value: counts[value] for value in values}
    return answer


def expected_flow(before: dict[str, tuple], after: dict[str, tuple]) -> dict:
    moves: dict[str, dict[str, int]] = {}
    for customer, state in after.items():
        source = before[customer][0] if customer in before else NEW
        targets = moves.setdefault(source, {})
        targets[state[0]] = targets.get(state[0], 0) + 1
    return moves


# -- generated histories -------------------------------------------------------------------

CATEGORIES = ("books", "garden", "toys")
day = st.floats(min_value=0, max_value=900, allow_nan=False).map(
    lambda d: BASE + timedelta(days=round(d, 3))
)


@st.composite
def histories(draw):
    """A few customers' events in recording order, occurred_at in any order (backfills)."""
    customers = draw(st.integers(1, 4))
    out = []
    for c in range(customers):
        cid = f"c{c}"
        orders: list[tuple[str, datetime, int]] = []
        for k in range(draw(st.integers(1, 7))):
            kind = draw(
                st.sampled_from(
                    [
                        "purchase",
                        "purchase",
                        "purchase",
                        "refund",
                        "left",
                        "inquiry",
                        "qualified",
                        "disqualified",
                        "offer",
                        "follow_up",
                        "referral",
                    ]
                )
            )
            moment = draw(day)
            event = {"customer_id": cid, "occurred_at": moment.isoformat()}
            if kind == "purchase":
                cents = draw(st.integers(1, 20000))
                order = f"o{c}-{k}"
                orders.append((order, moment, cents))
                event |= {
                    "type": "purchase",
                    "order_id": order,
                    "amount": f"{cents / 100:.2f}",
                    "category": draw(st.sampled_from(CATEGORIES)),
                }
            elif kind == "refund" and orders:
                order, bought, cents = draw(st.sampled_from(orders))
                later = bought + timedelta(days=draw(st.integers(0, 60)))
                part = draw(st.sampled_from([cents, max(1, cents // 2)]))
                event |= {
                    "type": "refund",
                    "order_id": order,
                    "amount": f"{part / 100:.2f}",
                    "occurred_at": later.isoformat(),
                }
            elif kind in ("inquiry", "offer", "follow_up"):
                direction = "inbound" if kind == "inquiry" else "outbound"
                event |= {
                    "type": "contact",
                    "channel": "email",
                    "direction": direction,
                    "purpose": kind,
                }
            elif kind == "referral":
                event |= {"type": "referral", "referred_customer_id": f"c{(c + 1) % 4}"}
            elif kind in ("left", "qualified"):
                event |= {"type": kind}
            elif kind == "disqualified":
                event |= {"type": "disqualified", "reason": "no budget"}
            else:
                continue
            out.append(event)
    return out


@pytest.fixture
def shared(db_url):
    """One store per test and database; each example adds customers of its own."""
    with models(db_url) as m:
        yield m


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=histories(),
    picks=st.lists(
        st.floats(min_value=-20, max_value=1300, allow_nan=False), min_size=1, max_size=3
    ),
    data=st.data(),
)
def test_funnel_and_flow_equal_counting_show_over_every_customer(shared, history, picks, data):
    m = shared
    prefix = f"x{m.journey.app.max_notification_id()}-"
    for event in history:
        event["customer_id"] = prefix + event["customer_id"]
        if event.get("referred_customer_id"):
            event["referred_customer_id"] = prefix + event["referred_customer_id"]
    m.journey.record_many(history, skip_invalid=True)
    m.runner.catch_up("timeline")
    ids = customer_ids(m.journey)
    queries = PointInTime(m.journey)

    stored = [e for c in ids if c.startswith(prefix) for e in m.journey.events(c)]
    first = min((e.occurred_at for e in stored), default=BASE)
    moments = [BASE + timedelta(days=p) for p in picks]
    moments.append(first - timedelta(seconds=1))  # before a customer exists
    if stored:  # exactly at an event, and between two events
        event = data.draw(st.sampled_from(stored))
        moments += [event.occurred_at, event.occurred_at + timedelta(seconds=1)]
    states = {moment: shown(queries, ids, moment) for moment in moments}
    for moment, state in states.items():
        assert funnel(m.store, moment) == expected_funnel(state, moment), moment
    for start, end in itertools.combinations(sorted(states), 2):
        if start < end:
            assert flow(m.store, start, end)["stages"] == expected_flow(
                states[start], states[end]
            ), (start, end)


def population_key(population) -> tuple:
    return population.size, population.recency, population.frequency, population.monetary


def test_rfm_population_from_the_read_model_equals_the_scan(db_url):
    fully_refunded_in_parts = [
        {
            "type": "purchase",
            "customer_id": "c-float",
            "order_id": "o-1",
            "amount": "0.04",
            "occurred_at": "2025-03-01T10:00:00Z",
        },
        {
            "type": "refund",
            "customer_id": "c-float",
            "order_id": "o-1",
            "amount": "0.03",
            "occurred_at": "2025-03-02T10:00:00Z",
        },
        {
            "type": "refund",
            "customer_id": "c-float",
            "order_id": "o-1",
            "amount": "0.01",
            "occurred_at": "2025-03-03T10:00:00Z",
        },
    ]
    with models(db_url) as m:
        record_all(m.journey, records(120, seed=21) + fully_refunded_in_parts)
        m.runner.catch_up("purchases")
        queries = PointInTime(m.journey)
        moments = [
            datetime(2023, 1, 1, tzinfo=UTC),
            datetime(2024, 2, 29, 12, tzinfo=UTC),
            datetime(2025, 3, 2, 12, tzinfo=UTC),  # c-float partly refunded
            datetime(2025, 3, 4, tzinfo=UTC),  # c-float fully refunded
            NOW,
            NOW + timedelta(days=400),
        ]
        for moment in moments:
            scan = queries.population(moment, datetime.now(UTC))
            assert population_key(rfm_population(m.store, moment, m.runner.settings)) == (
                population_key(scan)
            ), moment
        assert queries.population(NOW, datetime.now(UTC)).size > 50  # not vacuous


# -- the CLI -----------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def sampled(db_url):
    with models(db_url) as m:
        record_all(m.journey, records(25, seed=31))
        yield db_url, m


def test_the_funnel_counts_in_one_statement_so_its_totals_agree(sampled):
    """Three statements at READ COMMITTED, while customers were added, each saw another
    population: stages, statuses and levels summed to different totals."""
    from sqlalchemy import event

    _, m = sampled
    m.runner.catch_up("timeline")
    statements = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(m.store.engine, "before_cursor_execute", listen)
    try:
        answer = funnel(m.store, NOW)
    finally:
        event.remove(m.store.engine, "before_cursor_execute", listen)
    assert len([s for s in statements if "customer_timeline" in s]) == 1
    totals = {sum(answer[key].values()) for key in ("stages", "statuses", "levels")}
    assert len(totals) == 1 and totals.pop() > 0


def test_funnel_cli_prints_exactly_the_public_shape(sampled):
    url, m = sampled
    moment = datetime(2024, 6, 1, tzinfo=UTC)
    result = invoke("--db", url, "funnel", "--as-of", "2024-06-01", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert list(answer) == ["as_of", "stages", "statuses", "levels"]
    expected = expected_funnel(
        shown(PointInTime(m.journey), customer_ids(m.journey), moment), moment
    )
    assert answer == expected
    assert sum(answer["stages"].values()) > 0


def test_funnel_cli_flow_between_two_moments(sampled):
    url, m = sampled
    start, end = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    result = invoke(
        "--db", url, "funnel", "--from", "2024-01-01", "--to", "2025-01-01T00:00:00Z", "--json"
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    queries, ids = PointInTime(m.journey), customer_ids(m.journey)
    assert answer["stages"] == expected_flow(shown(queries, ids, start), shown(queries, ids, end))
    assert NEW in answer["stages"]
    table = invoke("--db", url, "funnel", "--from", "2024-01-01", "--to", "2025-01-01")
    assert table.exit_code == 0 and "customers" in table.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["funnel", "--from", "2024-01-01"],
        ["funnel", "--to", "2024-01-01"],
        ["funnel", "--from", "2024-06-01", "--to", "2024-01-01"],  # backwards
        ["funnel", "--as-of", "2024-01-01", "--from", "2023-01-01", "--to", "2024-01-01"],
        ["funnel", "--as-of", "yesterday"],
        ["funnel", "--as-of", "2024-01-01T10:00:00"],  # no zone
        ["projections", "rebuild", ""],
        ["funnel", "--as-of", "2024-01-01", "--settings", "/nonexistent/settings.json"],
        ["projections", "rebuild"],
        ["projections", "rebuild", "summary", "--all"],
        ["projections", "rebuild", "nonsense"],
        ["projections", "run", "--once", "nonsense"],
        ["projections", "status", "--no-such-option"],
    ],
)
def test_usage_errors_exit_2(sqlite_url, args):
    result = invoke("--db", sqlite_url, *args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "as_of", ["", "2024-01-01T10:00:00.1234567Z"]  # an unset shell variable; cut to µs
)
def test_a_funnel_time_that_is_not_one_is_a_usage_error(sampled, as_of):
    result = invoke("--db", sampled[0], "funnel", "--as-of", as_of, "--json")
    assert result.exit_code == 2, result.output
    assert "--as-of" in json.loads(result.stderr)["error"]


def test_a_model_named_twice_is_run_once():
    """A runner given a name twice waited for the lock it held itself, then gave up."""
    assert model_names(["summary", "timeline", "summary"]) == ["summary", "timeline"]
    with pytest.raises(ValueError, match="no read model ''"):
        model_names([""])


def test_the_funnel_says_when_its_timeline_is_behind_the_log(sampled):
    """A runner keeps the timeline (holds its lock) but has not caught up yet."""
    url, _ = sampled
    with models(url) as m:
        m.runner.catch_up("timeline")
        record_all(m.journey, contacts(["c-late-1", "c-late-2"]))
        behind = m.journey.app.count_after(m.runner.serving("timeline").position)
        with m.store.lock("run:timeline"):
            result = invoke("--db", url, "funnel", "--json")
    assert result.exit_code == 0, result.output
    assert f"{behind} entries of the log behind" in result.stderr
    again = invoke("--db", url, "funnel", "--json")  # free: caught up first
    assert "behind" not in again.stderr
