"""Every event type's validation (DOMAIN.md §2, "Bad input"), through the Python API.

Each refusal must name the field and a reason, and leave the store exactly as it was:
no event for the customer (not even an implicit identification) and no new notification.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, BeforeValidator, Field, ValidationError
from support import StepClock, at, ev, opened, purchase, refund, refused, stream, when

from commands.models import InvalidInput, Purchase, parse_command, refuse_bool
from journey.events import ALL_EVENT_CLASSES

DECIMALS = {"amount", "margin", "cost", "acquisition_cost"}

#: One input of each type with every field of DOMAIN.md §2 given (all on customer c-1).
FULL = {
    "identified": ev(
        "identified",
        source="newsletter",
        referred_by="c-0",
        acquisition_cost="12.50",
        personal={
            "name": "Ada Nowak",
            "email": "ada@example.com",
            "phone": "+48 600 100 200",
            "address": "ul. Długa 1, Gdańsk",
            "note": "prefers letters",
        },
    ),
    "qualified": ev("qualified", note="has budget and need"),
    "disqualified": ev("disqualified", reason="no budget"),
    "contact": ev(
        "contact",
        channel="phone",
        direction="outbound",
        purpose="follow_up",
        cost="0.7500",
        personal={"phone": "+48 600 100 200"},
    ),
    "purchase": ev("purchase", order_id="o-1", amount="59.90", category="books", margin="17.97"),
    "refund": ev("refund", order_id="o-1", amount="9.9"),
    "complaint": ev("complaint", complaint_id="k-1", topic="after_sales", severity="high"),
    "complaint_resolved": ev("complaint_resolved", complaint_id="k-1", satisfied=True, cost="5"),
    "referral": ev("referral", referred_customer_id="c-2"),
    "feedback": ev("feedback", score=9),
    "manager_assigned": ev("manager_assigned", manager="Olga"),
    "benefit_granted": ev("benefit_granted", kind="structural", description="free API access"),
    "left": ev("left", reason="moved abroad"),
}

#: The fields of each type, from the table of DOMAIN.md §2.
REQUIRED = {
    "identified": [],
    "qualified": [],
    "disqualified": ["reason"],
    "contact": ["channel", "direction", "purpose"],
    "purchase": ["order_id", "amount"],
    "refund": ["order_id", "amount"],
    "complaint": ["complaint_id", "topic", "severity"],
    "complaint_resolved": ["complaint_id", "satisfied"],
    "referral": ["referred_customer_id"],
    "feedback": ["score"],
    "manager_assigned": ["manager"],
    "benefit_granted": ["kind"],
    "left": [],
}
OPTIONAL = {
    "identified": ["source", "referred_by", "acquisition_cost", "personal"],
    "qualified": ["note"],
    "disqualified": [],
    "contact": ["cost", "personal"],
    "purchase": ["category", "margin"],
    "refund": [],
    "complaint": [],
    "complaint_resolved": ["cost"],
    "referral": [],
    "feedback": [],
    "manager_assigned": [],
    "benefit_granted": ["description"],
    "left": ["reason"],
}

#: What must already be stored for an input of the type to be accepted.
PREREQUISITES = {
    "refund": [FULL["purchase"]],
    "complaint_resolved": [FULL["complaint"]],
}

TYPES = list(FULL)


def without(event: dict, field: str) -> dict:
    return {k: v for k, v in event.items() if k != field}


def expected_payload(event: dict) -> dict:
    payload = {name: None for name in OPTIONAL[event["type"]]}
    for name, value in event.items():
        if name not in ("type", "customer_id", "occurred_at", "event_id"):
            payload[name] = Decimal(str(value)) if name in DECIMALS else value
    return payload


def test_the_table_matches_the_types():
    assert sorted(REQUIRED) == sorted(OPTIONAL) == sorted(FULL)
    for type_, event in FULL.items():
        assert set(event) - {"type", "customer_id", "occurred_at"} == set(
            REQUIRED[type_] + OPTIONAL[type_]
        )


# --- valid input is stored whole -----------------------------------------------------------


def test_every_type_round_trips_with_all_its_fields(db_url):
    clock = StepClock()
    zones = ["Z", "+02:00", "-05:00", "+05:30"]
    inputs = []
    for day, type_ in enumerate(TYPES, start=1):
        occurred = f"2025-03-{day:02d}T10:15:30{zones[day % len(zones)]}"
        inputs.append({**FULL[type_], "occurred_at": occurred})
    with opened(db_url, actor="auditor-7", clock=clock) as engine:
        for event in inputs:
            recorded = engine.record(event)
            assert not recorded.duplicate and recorded.positions
        stored = engine.events("c-1")
    assert [e.TYPE for e in stored] == TYPES  # `identified` first: no implicit one
    assert [e.version for e in stored] == list(range(1, len(TYPES) + 1))
    for event, sent in zip(stored, inputs, strict=True):
        assert event.customer_id == "c-1"
        assert event.payload() == expected_payload(sent), event.TYPE
        for name in DECIMALS & set(sent):
            assert isinstance(event.payload()[name], Decimal)
            assert str(event.payload()[name]) == sent[name]  # exactly as written
        assert event.occurred_at == when(sent["occurred_at"])
        assert event.occurred_at.utcoffset() == when(sent["occurred_at"]).utcoffset()
        assert event.actor == "auditor-7"
        assert event.recorded_at in clock.readings
    recorded_times = [e.recorded_at for e in stored]
    assert recorded_times == sorted(recorded_times) and len(set(recorded_times)) == len(stored)


@pytest.mark.parametrize("type_", TYPES)
def test_every_type_stores_with_only_its_required_fields(engine, type_):
    for prerequisite in PREREQUISITES.get(type_, []):
        engine.record(prerequisite)
    minimal = {
        k: v for k, v in FULL[type_].items() if k not in OPTIONAL[type_]
    }
    before = len(engine.events("c-1"))
    recorded = engine.record(minimal)
    assert not recorded.duplicate
    stored = engine.events("c-1")[before:]
    if not before and type_ != "identified":
        assert [e.TYPE for e in stored] == ["identified", type_]
    assert type_ == stored[-1].TYPE
    assert stored[-1].payload() == expected_payload(minimal)


def test_a_pydantic_model_is_accepted_like_a_dict(engine):
    model = Purchase(
        type="purchase", customer_id="c-9", occurred_at=at(3), order_id="o-7", amount="10.5"
    )
    engine.record(model)
    assert stream(engine, "c-9")[-1] == (
        2,
        "purchase",
        {"order_id": "o-7", "amount": Decimal("10.5"), "category": None, "margin": None},
    )


def test_datetime_objects_with_a_zone_are_accepted(engine):
    moment = datetime.fromisoformat("2025-03-01T10:00:00+01:00")
    engine.record({**FULL["feedback"], "occurred_at": moment})
    assert engine.events("c-1")[-1].occurred_at == moment


# --- type ------------------------------------------------------------------------------------


def test_unknown_type_is_refused(engine):
    for bad in ["purchased", "Purchase", "", "identify", 5, ["purchase"]]:
        refused(engine, {**FULL["purchase"], "type": bad}, "type", "unknown")


def test_missing_type_is_refused(engine):
    refused(engine, without(FULL["purchase"], "type"), "type", "required")


@pytest.mark.parametrize("engine_only", ["referral_converted", "erased"])
def test_engine_only_types_are_refused(engine, engine_only):
    event = ev(engine_only, referred_customer_id="c-2")
    error = refused(engine, event, "type", engine_only, "never accepted", watch=["c-2"])
    assert "unknown" not in error.reason  # it says why, rather than "unknown type"


def test_an_input_that_is_not_an_object_is_refused(engine):
    for bad in [None, 17, "a purchase", ["type", "purchase"]]:
        refused(engine, bad, "(event)", "object")


# --- missing and extra fields ----------------------------------------------------------------


@pytest.mark.parametrize("type_", TYPES)
def test_a_missing_field_is_refused(engine, type_):
    for field in ["customer_id", "occurred_at", *REQUIRED[type_]]:
        refused(engine, without(FULL[type_], field), field, "required", watch=["c-1"])


EXTRA = [(t, "colour", "red") for t in TYPES] + [
    ("refund", "category", "books"),  # a field of another type
    ("purchase", "personal", {"name": "Ada"}),
    ("feedback", "order_id", "o-1"),
    ("qualified", "reason", "no budget"),
    ("purchase", "actor", "mallory"),  # kept by the store, never given
    ("purchase", "recorded_at", "2025-03-01T10:00:00Z"),
    ("purchase", "version", 1),
    ("purchase", "Amount", "1"),  # names are case-sensitive
]


def test_an_extra_field_is_refused(engine):
    for type_, field, value in EXTRA:
        refused(engine, {**FULL[type_], field: value}, field, "not a field")


@pytest.mark.parametrize("type_", ["identified", "contact"])
def test_bad_personal_data_is_refused(engine, type_):
    for extra in ["age", "Name", "email2"]:
        event = {**FULL[type_], "personal": {"name": "Ada", extra: "x"}}
        refused(engine, event, f"personal.{extra}", "not a field")
    for bad in ["Ada", ["Ada"], 5]:
        refused(engine, {**FULL[type_], "personal": bad}, "personal")
    for bad in [5, "", ["x"]]:
        refused(engine, {**FULL[type_], "personal": {"email": bad}}, "personal.email")


# --- times -----------------------------------------------------------------------------------


NAIVE = [
    "2025-03-01T10:00:00",
    "2025-03-01 10:00:00",
    "2025-03-01",
    "2025-03-01T10:00:00.123456",
    datetime(2025, 3, 1, 10),
]


def test_a_time_without_a_zone_is_refused(engine):
    for type_ in TYPES:
        for naive in NAIVE:
            refused(engine, {**FULL[type_], "occurred_at": naive}, "occurred_at", "time zone")


def test_a_time_that_is_not_iso_8601_is_refused(engine):
    for bad in ["yesterday", "2025-13-01T00:00:00Z", "", 1740823200, True]:
        refused(engine, {**FULL["purchase"], "occurred_at": bad}, "occurred_at", "iso 8601")


@pytest.mark.parametrize(
    "when",
    [
        "2025-03-01T10:00:00.1234567Z",
        "2025-03-01T10:00:00,123456789+01:00",
        "20250301T100000.0000001Z",
        "2025-03-01T10:00:00.123456+01:00:00.1234567",
    ],
)
def test_a_time_finer_than_microseconds_is_refused(engine, when):
    """fromisoformat drops the seventh digit on: two instants became one."""
    refused(engine, {**FULL["purchase"], "occurred_at": when}, "occurred_at", "microseconds")


def test_times_to_the_microsecond_are_accepted(engine):
    engine.record({**FULL["purchase"], "occurred_at": "2025-03-01T10:00:00.123456Z"})
    engine.record({**FULL["feedback"], "occurred_at": "2025-03-01T10:00:00,5+01:00"})
    assert [e.occurred_at for e in engine.events("c-1")[1:]] == [
        when("2025-03-01T10:00:00.123456Z"),
        when("2025-03-01T09:00:00.5Z"),
    ]


@pytest.mark.parametrize(
    "when", ["1899-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00",
             # in the calendar by their own offset, not in UTC, where the rules compute
             "2999-12-31T22:00:00-05:00", "1900-01-01T00:30:00+01:00"]
)
def test_a_time_outside_the_rules_calendar_is_refused(engine, when):
    refused(engine, {**FULL["purchase"], "occurred_at": when}, "occurred_at", "between the years")


@pytest.mark.parametrize("when", ["1900-01-01T00:00:00Z", "2999-12-31T23:59:59Z",
                                  "1899-12-31T23:30:00-01:00", "3000-01-01T00:30:00+01:00"])
def test_the_calendar_edges_are_accepted(engine, when):
    assert engine.record({**FULL["purchase"], "occurred_at": when}).position > 0


# --- amounts ---------------------------------------------------------------------------------

NOT_POSITIVE = [0, "0", "0.00", -5, "-0.01", "-0"]
TOO_PRECISE = ["1.23456", "0.00001", 0.1 + 0.2]  # the float is 0.30000000000000004
NOT_A_NUMBER = ["abc", "", "59,90", "NaN", "Infinity", None, [], {"value": 1}]
NOT_BOOL = [True, False]
#: Decimal() reads these as 100, 59.90 and 5; input must use ASCII digits.
NOT_ASCII_DIGITS = ["1_00", "\uff15\uff19.90", "\u0665", "1_000.5"]


BAD_AMOUNTS = (
    [(v, ["greater than 0"]) for v in NOT_POSITIVE]
    + [(v, ["4 decimal places"]) for v in TOO_PRECISE]
    + [(v, []) for v in NOT_A_NUMBER]
    + [(v, ["true/false"]) for v in NOT_BOOL]
    + [(v, ["not a decimal"]) for v in NOT_ASCII_DIGITS]
)


@pytest.mark.parametrize("type_", ["purchase", "refund"])
def test_an_amount_that_is_not_a_positive_decimal_is_refused(engine, type_):
    for prerequisite in PREREQUISITES.get(type_, []):
        engine.record(prerequisite)
    for bad, words in BAD_AMOUNTS:
        refused(engine, {**FULL[type_], "amount": bad}, "amount", *words)


@pytest.mark.parametrize(
    ("type_", "field"),
    [
        ("purchase", "margin"),
        ("contact", "cost"),
        ("complaint_resolved", "cost"),
        ("identified", "acquisition_cost"),
    ],
)
def test_costs_and_margins_must_be_decimals_of_at_most_4_places_not_negative(
    engine, type_, field
):
    for prerequisite in PREREQUISITES.get(type_, []):
        engine.record(prerequisite)
    for bad in ["-1", -0.5, "1.23456", "lots", True, "NaN"]:
        refused(engine, {**FULL[type_], field: bad}, field)
    for bad in NOT_ASCII_DIGITS:
        refused(engine, {**FULL[type_], field: bad}, field, "not a decimal")


def test_amounts_accepted(engine):
    for number, good in enumerate(
        ["0.0001", "1e3", 7, 59.9, "123456789012345.1234", "+5", " 5 ", ".5", "5.", "1E+2"]
    ):
        engine.record({**FULL["purchase"], "order_id": f"o-{number}", "amount": good})
        assert engine.events("c-1")[-1].payload()["amount"] == Decimal(str(good))


class PydanticDigits(BaseModel):
    """The types ``within_digits`` stands in for, as they were: pydantic's constraints,
    which it checks in another order after a BeforeValidator."""

    amount: Annotated[
        Decimal, BeforeValidator(refuse_bool), Field(gt=0, max_digits=19, decimal_places=4)
    ] | None = None
    cost: Annotated[
        Decimal, BeforeValidator(refuse_bool), Field(ge=0, max_digits=19, decimal_places=4)
    ] | None = None


NUMBERS = (
    st.decimals().map(str)
    | st.from_regex(r"-?[0-9]{1,22}(\.[0-9]{0,8})?([eE][-+]?[0-9]{1,2})?", fullmatch=True)
    | st.integers()
    | st.floats(allow_nan=False)
)


@settings(max_examples=1000)
@given(NUMBERS, st.sampled_from(["amount", "cost"]))
def test_digits_are_refused_as_pydantic_refuses_them(number, field):
    """Amounts and costs are checked by ``within_digits`` (one pass) rather than by
    pydantic's max_digits and decimal_places (two, in Python): same refusals, same words."""
    type_, name = ("purchase", "amount") if field == "amount" else ("purchase", "margin")
    expected = reasons(lambda: PydanticDigits.model_validate({field: number}))
    record = {**FULL[type_], name: number}
    assert reasons(lambda: parse_command(record)) == expected


def reasons(validate) -> list[str]:
    try:
        validate()
    except ValidationError as exc:
        return [e["msg"] for e in exc.errors()]
    except InvalidInput as exc:
        return [e.reason for e in exc.errors]
    return []


# --- enums -----------------------------------------------------------------------------------

ENUMS = {
    ("contact", "channel"): [
        "email", "phone", "visit", "chat", "meeting", "letter", "social", "other",
    ],
    ("contact", "direction"): ["inbound", "outbound"],
    ("contact", "purpose"): [
        "inquiry", "support", "follow_up", "feedback_request", "offer", "meeting", "other",
    ],
    ("complaint", "topic"): ["product", "terms", "service", "after_sales"],
    ("complaint", "severity"): ["low", "medium", "high"],
    ("benefit_granted", "kind"): ["financial", "social", "structural"],
}


@pytest.mark.parametrize(("type_", "field"), list(ENUMS))
def test_an_unknown_enum_value_is_refused(engine, type_, field):
    for bad in ["unheard-of", "", 1, None, ENUMS[type_, field][0].upper()]:
        error = refused(engine, {**FULL[type_], field: bad}, field)
        if isinstance(bad, str):  # the reason lists what is allowed
            reason = next(e.reason for e in error.errors if e.field == field)
            assert all(value in reason for value in ENUMS[type_, field]), reason


@pytest.mark.parametrize(("type_", "field"), list(ENUMS))
def test_every_enum_value_is_accepted(engine, type_, field):
    for value in ENUMS[type_, field]:
        ids = {"complaint_id": f"k-{value}"} if type_ == "complaint" else {}
        engine.record({**FULL[type_], field: value, "occurred_at": at(2), **ids})
        assert engine.events("c-1")[-1].payload()[field] == value


@pytest.mark.parametrize(
    ("type_", "field"),
    [("disqualified", "reason"), ("purchase", "order_id"), ("manager_assigned", "manager"),
     ("complaint", "complaint_id"), ("left", "reason"), ("purchase", "event_id")],
)
def test_an_id_or_text_of_white_space_only_is_refused(engine, type_, field):
    for blank in [" ", "\t \n"]:
        refused(engine, {**FULL[type_], field: blank}, field, "must not be blank")


@pytest.mark.parametrize(
    ("type_", "field"),
    [("purchase", "customer_id"), ("purchase", "order_id"), ("purchase", "category"),
     ("complaint", "complaint_id"), ("left", "reason"), ("contact", "event_id")],
)
def test_a_number_where_text_goes_says_to_quote_it(engine, type_, field):
    """Spreadsheet exports write numeric ids as JSON numbers: pydantic's "Input should be
    a valid string" did not say what to change."""
    for number, shown in [(123, "123"), (4.5, "4.5")]:
        refused(engine, {**FULL[type_], field: number}, field, f"not the number {shown}",
                "quotes")
    refused(engine, {**FULL[type_], field: True}, field, "valid string")  # not a number


#: Every id, label and text field, by a type that has it (``personal.*`` are texts too).
TEXTS = [("disqualified", "reason"), ("manager_assigned", "manager"), ("left", "reason"),
         ("identified", "source"), ("benefit_granted", "description"), ("qualified", "note")]
LABELS = [("purchase", "order_id"), ("purchase", "category"), ("complaint", "complaint_id"),
          ("purchase", "event_id"), ("contact", "event_id")]
#: The ids that name a stored purchase or complaint: looked up as spelt.
REFERENCES = [("refund", "order_id"), ("complaint_resolved", "complaint_id")]


@pytest.mark.parametrize(("type_", "field"), TEXTS + LABELS)
def test_a_control_character_is_refused(engine, type_, field):
    """A NUL was stored, and then no read model of a PostgreSQL store could be built."""
    if type_ in ("refund", "complaint_resolved"):
        engine.record(FULL["purchase" if type_ == "refund" else "complaint"])
    for bad in ["o\x00x", "\x00", "x\x1b[31m", "a\x7fb"]:
        refused(engine, {**FULL[type_], field: bad}, field, "control character", "U+00")


def test_personal_data_with_a_control_character_is_refused(engine):
    event = {**FULL["identified"], "personal": {"name": "Ren\x00e", "email": "r@x.org"}}
    refused(engine, event, "personal.name", "control character (U+0000) at position 4")


@pytest.mark.parametrize(("type_", "field"), TEXTS)
def test_a_text_keeps_its_tabs_line_breaks_and_spaces(engine, type_, field):
    engine.record({**FULL[type_], field: " two\tcolumns\r\nand lines "})
    assert engine.events("c-1")[-1].payload()[field] == " two\tcolumns\r\nand lines "


@pytest.mark.parametrize(("type_", "field"), LABELS)
def test_an_id_or_label_with_white_space_around_or_a_line_break_is_refused(engine, type_, field):
    """`o-2 ` from a spreadsheet cell was a second order: two purchases counted for one,
    a second category for a customer who bought one, a refund finding neither."""
    for bad in [" o-2", "o-2 ", "o-2\t"]:
        refused(engine, {**FULL[type_], field: bad}, field, "white space at its start or end")
    refused(engine, {**FULL[type_], field: "o\n2"}, field, "control character (U+000A)")


@pytest.mark.parametrize(("type_", "field"), [*LABELS[:2], ("complaint", "complaint_id")])
def test_an_id_or_label_keeps_its_inner_spaces(engine, type_, field):
    engine.record({**FULL[type_], field: "o 2"})
    assert engine.events("c-1")[-1].payload()[field] == "o 2"


@pytest.mark.parametrize(("type_", "field"), REFERENCES)
def test_a_stored_id_an_older_journey_took_with_spaces_can_still_be_named(engine, type_, field):
    """Ids with white space around them are refused where they are first given; an order
    or complaint an older Journey stored so must still be refundable or resolvable (an open
    complaint lowered trust for good)."""
    opener = parse_command(FULL["purchase" if type_ == "refund" else "complaint"])
    engine.record(opener.model_copy(update={field: "k-2 "}))  # as an older Journey took it
    engine.record({**FULL[type_], field: "k-2 "})
    assert engine.events("c-1")[-1].payload()[field] == "k-2 "
    refused(engine, {**FULL[type_], field: " k-3"}, field, "white space at its start or end")
    refused(engine, {**FULL[type_], field: "k\x00"}, field, "control character (U+0000)")


def test_satisfied_must_be_a_boolean(engine):
    engine.record(FULL["complaint"])
    for bad in ["maybe", 2, None, "", [True], 1, 0, "1", "yes", "off", "t"]:
        refused(engine, {**FULL["complaint_resolved"], "satisfied": bad}, "satisfied")


@pytest.mark.parametrize(("given", "read"), [(True, True), ("TRUE", True), (" false ", False)])
def test_satisfied_is_true_or_false_in_json_or_as_text(engine, given, read):
    """CSV cells are text, and spreadsheets write TRUE and FALSE."""
    engine.record(FULL["complaint"])
    engine.record({**FULL["complaint_resolved"], "satisfied": given})
    assert engine.events("c-1")[-1].payload()["satisfied"] is read


# --- customer ids ----------------------------------------------------------------------------

BAD_IDS = [
    ("", "empty"),
    ("x" * 65, "64"),
    ("c 1", "only"),
    ("c/1", "only"),
    ("ć-1", "only"),
    ("~referrers/c-1", "only"),
    ("c-1\n", "only"),
    ("c-1;DROP", "only"),
]


@pytest.mark.parametrize(
    ("type_", "field"),
    [
        ("purchase", "customer_id"),
        ("identified", "customer_id"),
        ("referral", "customer_id"),
        ("referral", "referred_customer_id"),
        ("identified", "referred_by"),
    ],
)
def test_a_bad_customer_id_is_refused(engine, type_, field):
    for bad, word in BAD_IDS:
        refused(engine, {**FULL[type_], field: bad}, field, word)
    for bad in [17, ["c-1"]] if field in OPTIONAL[type_] else [17, None, ["c-1"]]:
        refused(engine, {**FULL[type_], field: bad}, field)


def test_customer_ids_at_the_limits_are_accepted(engine):
    for good in ["x" * 64, "A", "a.b_c:d@e-9", "0"]:
        engine.record({**FULL["purchase"], "customer_id": good})
        assert [e.TYPE for e in engine.events(good)] == ["identified", "purchase"]


def test_a_customer_cannot_refer_themselves(engine):
    refused(engine, {**FULL["referral"], "referred_customer_id": "c-1"}, "referred_customer_id")
    refused(engine, {**FULL["identified"], "referred_by": "c-1"}, "referred_by", "refer themselves")


# --- scores ----------------------------------------------------------------------------------


BAD_SCORES = [(-1, ["0"]), (11, ["10"]), (100, ["10"]), (7.5, []), ("ten", []), (True, []),
              (None, []), ("1_0", ["not an integer"]), ("\uff17", ["not an integer"]),
              ("\u0667", ["not an integer"])]


def test_a_score_outside_0_to_10_is_refused(engine):
    for bad, words in BAD_SCORES:
        refused(engine, {**FULL["feedback"], "score": bad}, "score", *words)


def test_scores_at_the_limits_are_accepted(engine):
    for good, score in [(0, 0), (10, 10), ("7", 7), (" 7 ", 7), ("+7", 7), ("7.0", 7)]:
        engine.record({**FULL["feedback"], "score": good, "event_id": repr(good)})
        assert engine.events("c-1")[-1].payload()["score"] == score


# --- refunds ---------------------------------------------------------------------------------


def test_a_refund_for_an_unknown_order_is_refused(engine):
    engine.record(purchase("c-1", "o-1"))
    refused(engine, refund("c-1", "o-2", "1"), "order_id", "o-2")


def test_a_refund_for_an_unknown_customer_creates_nobody(engine):
    refused(engine, refund("c-new", "o-1", "1"), "order_id")
    assert engine.events("c-new") == []
    assert engine.app.max_notification_id() == 0


def test_a_refund_of_another_customers_order_is_refused(engine):
    engine.record(purchase("c-1", "o-1"))
    refused(engine, refund("c-2", "o-1", "1"), "order_id", watch=["c-1"])


def test_a_refund_of_more_than_was_paid_is_refused(engine):
    engine.record(purchase("c-1", "o-1", "59.90"))
    for amount in ["59.91", "60", "59.9001", "1000"]:
        refused(engine, refund("c-1", "o-1", amount), "amount", "59.9")


def test_partial_refunds_may_add_up_to_what_was_paid_but_not_more(engine):
    engine.record(purchase("c-1", "o-1", "59.90"))
    engine.record(refund("c-1", "o-1", "30", day=2))
    refused(engine, refund("c-1", "o-1", "29.91", day=3), "amount")
    engine.record(refund("c-1", "o-1", "29.90", day=3))
    refused(engine, refund("c-1", "o-1", "0.0001", day=4), "amount")
    refunds = [p["amount"] for _, t, p in stream(engine, "c-1") if t == "refund"]
    assert sum(refunds) == Decimal("59.90")


def test_two_partial_refunds_in_one_batch_cannot_exceed_what_was_paid(engine):
    outcome = engine.record_many(
        [
            purchase("c-1", "o-1", "59.90"),
            refund("c-1", "o-1", "40", day=2),
            refund("c-1", "o-1", "20", day=3),
        ]
    )
    assert [r.line for r in outcome.rejected] == [3]
    assert outcome.rejected[0].errors[0].field == "amount"
    assert outcome.stored == 0 and engine.app.max_notification_id() == 0


def test_a_refund_preceding_its_purchase_is_refused(engine):
    engine.record(purchase("c-1", "o-1", day=5))
    refused(engine, refund("c-1", "o-1", "1", day=4), "occurred_at", "precedes")
    engine.record({**refund("c-1", "o-1", "1"), "occurred_at": at(5)})  # same moment is fine


# --- complaints ------------------------------------------------------------------------------


def test_resolving_an_unknown_complaint_is_refused(engine):
    engine.record(FULL["complaint"])
    refused(engine, {**FULL["complaint_resolved"], "complaint_id": "k-2"}, "complaint_id", "k-2")


def test_resolving_a_complaint_of_an_unknown_customer_creates_nobody(engine):
    refused(engine, {**FULL["complaint_resolved"], "customer_id": "c-new"}, "complaint_id")
    assert engine.events("c-new") == []


def test_resolving_a_resolved_complaint_again_is_refused(engine):
    engine.record(FULL["complaint"])
    engine.record(FULL["complaint_resolved"])
    again = {**FULL["complaint_resolved"], "satisfied": False, "occurred_at": at(9)}
    refused(engine, again, "complaint_id", "already resolved", kind="conflict")
    outcome = engine.record_many([{**FULL["complaint"], "complaint_id": "k-2"},
                                  {**FULL["complaint_resolved"], "complaint_id": "k-2"},
                                  {**again, "complaint_id": "k-2"}])
    (error,) = outcome.rejected[0].errors
    assert "complaint 'k-2' is already resolved by an earlier input" in error.reason


def test_a_resolution_preceding_its_complaint_is_refused(engine):
    engine.record({**FULL["complaint"], "occurred_at": at(5)})
    refused(engine, {**FULL["complaint_resolved"], "occurred_at": at(4)}, "occurred_at")


# --- several errors at once ------------------------------------------------------------------


def test_every_bad_field_of_one_input_is_named(engine):
    bad = {
        "type": "purchase",
        "customer_id": "c 1",
        "occurred_at": "2025-03-01T10:00:00",
        "amount": "-1",
        "colour": "red",
    }
    from journey.api import RejectedInput

    with pytest.raises(RejectedInput) as info:
        engine.record(bad)
    fields = {e.field for e in info.value.errors}
    assert fields == {"customer_id", "occurred_at", "amount", "order_id", "colour"}
    assert engine.app.max_notification_id() == 0


def test_refusals_are_input_errors_with_a_message(engine):
    from journey.errors import InputError

    with pytest.raises(InputError) as info:
        engine.record({**FULL["feedback"], "score": 11})
    assert "score" in str(info.value)
    assert info.value.as_dict()["field"] == "score"


def test_every_stored_class_has_a_public_type():
    assert len(ALL_EVENT_CLASSES) >= 15  # every input type and the engine's own
    assert all(cls.TYPE for cls in ALL_EVENT_CLASSES)


def test_the_readme_table_of_event_types_is_the_input_models():
    """README's "Event types" is what users read instead of the models: it must not drift."""
    import re
    import typing
    from pathlib import Path

    from commands.models import MODELS, own_fields

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Event types", 1)[1].split("###", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", section, re.M))
    assert set(rows) == set(MODELS)
    for type_, model in MODELS.items():
        written = []
        for name in own_fields(model):
            field = model.model_fields[name]
            shapes = (field.annotation, *typing.get_args(field.annotation))
            choices = [typing.get_args(a) for a in shapes if typing.get_origin(a) is typing.Literal]
            text = f"`{name}`" + ("" if field.is_required() else "?")
            if choices:
                text = f"`{name}` ({', '.join(choices[0])})" + ("" if field.is_required() else "?")
            written.append(text)
        cells = [re.sub(r" \((true/false|0-10)\)", "", c) for c in rows[type_].split(", `")]
        assert ", `".join(cells) == ", ".join(written), type_
