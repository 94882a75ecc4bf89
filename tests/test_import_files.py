"""Import files (DOMAIN.md §2 "The import format", issue 2): JSONL and CSV, validated whole
first; every bad line reported with its file, line number, field and reason."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import at, ev, purchase, referral, refund, snapshot, stream, when, write_jsonl

from commands.files import read_csv, utf8_lines
from journey.errors import InputError


def rejected_of(outcome):
    """(file name, line, fields) of each rejected line."""
    return [
        (Path(r.source).name, r.line, [e.field for e in r.errors]) for r in outcome.rejected
    ]


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- JSONL -----------------------------------------------------------------------------------


def test_a_jsonl_file_is_imported(engine, tmp_path):
    path = write(
        tmp_path / "in.jsonl",
        '{"type": "purchase", "customer_id": "c-17", "occurred_at": "2025-03-01T10:00:00Z",'
        ' "order_id": "o-9", "amount": "59.90", "category": "books"}\n'
        "\n"
        '{"type": "refund", "customer_id": "c-17", "occurred_at": "2025-03-02T10:00:00Z",'
        ' "order_id": "o-9", "amount": 9.90}\n'
        '{"type":"feedback","customer_id":"c-17","occurred_at":"2025-03-03T10:00:00+01:00",'
        '"score":9}\n',
    )
    outcome = engine.import_files([path])
    assert (outcome.stored, outcome.duplicates, outcome.rejected) == (4, 0, [])
    assert stream(engine, "c-17")[1:] == [
        (2, "purchase", {"order_id": "o-9", "amount": Decimal("59.90"), "category": "books",
                         "margin": None}),
        (3, "refund", {"order_id": "o-9", "amount": Decimal("9.90")}),
        (4, "feedback", {"score": 9}),
    ]
    assert str(engine.events("c-17")[2].payload()["amount"]) == "9.90"  # JSON number, exact
    assert engine.events("c-17")[3].occurred_at == when("2025-03-03T09:00:00Z")


def test_a_refund_may_name_an_order_earlier_in_the_same_file(engine, tmp_path):
    lines = [purchase("c-1", "o-1", "20", day=1), refund("c-1", "o-1", "20", day=2)]
    outcome = engine.import_files([write_jsonl(tmp_path / "in.jsonl", lines)])
    assert outcome.rejected == [] and outcome.stored == 3


def test_a_refund_may_name_an_order_in_an_earlier_file_of_the_same_import(engine, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [purchase("c-1", "o-1", "20")])
    second = write_jsonl(tmp_path / "b.jsonl", [refund("c-1", "o-1", "5")])
    outcome = engine.import_files([first, second])
    assert outcome.rejected == [] and outcome.stored == 3


def test_a_refund_or_resolution_before_its_order_or_complaint_in_the_input_is_applied_after_it(
    engine, tmp_path
):
    """The input is validated whole: refunds exported before purchases are no fault."""
    refunds = write_jsonl(tmp_path / "refunds.jsonl", [
        refund("c-1", "o-1", "5", day=2),
        ev("complaint_resolved", "c-1", at(4), complaint_id="k-1", satisfied=True),
    ])
    opened = write_jsonl(tmp_path / "purchases.jsonl", [
        purchase("c-1", "o-1", "20", day=1),
        ev("complaint", "c-1", at(3), complaint_id="k-1", topic="product", severity="low"),
    ])
    outcome = engine.import_files([refunds, opened])
    assert outcome.rejected == [] and outcome.stored == 5  # with the implicit identified
    assert [t for _, t, _ in stream(engine, "c-1")] == [
        "identified", "purchase", "refund", "complaint", "complaint_resolved"
    ]  # each right after what it names, in recording order too
    assert engine.import_files([refunds, opened]).duplicates == 4


def test_refunds_waiting_for_their_purchase_keep_their_input_order(engine, tmp_path):
    """Of two refunds too large together, the later in the input is the one refused,
    whether or not the first came before its purchase."""
    lines = [
        refund("c-1", "o-1", "6", day=5),
        purchase("c-1", "o-1", "10", day=4),
        refund("c-1", "o-1", "5", day=6),
    ]
    outcome = engine.import_files(
        [write_jsonl(tmp_path / "in.jsonl", lines)], skip_invalid=True
    )
    assert rejected_of(outcome) == [("in.jsonl", 3, ["amount"])]
    assert [p.get("amount") for _, t, p in stream(engine, "c-1") if t == "refund"] == [
        Decimal("6")
    ]


def test_a_refund_whose_order_is_nowhere_in_the_input_is_still_a_bad_line(engine, tmp_path):
    lines = [refund("c-1", "o-1", "5", day=2), purchase("c-1", "o-2", "20", day=1)]
    outcome = engine.import_files([write_jsonl(tmp_path / "in.jsonl", lines)])
    assert rejected_of(outcome) == [("in.jsonl", 1, ["order_id"])]
    assert engine.app.max_notification_id() == 0


# --- every bad line is reported, nothing stored -------------------------------------------

BAD_FILE = [
    purchase("c-1", "o-1", "59.90", day=1),  # 1 good
    purchase("c-1", "o-2", "-3", day=2),  # 2 amount
    ev("teleported", "c-2"),  # 3 type
    '{"type": "purchase", "customer_id": "c-3", ',  # 4 not JSON
    refund("c-1", "o-1", "70", day=3),  # 5 refunds more than paid
    ev("feedback", "c 4", "2025-03-01T10:00:00", score=3),  # 6 customer_id and occurred_at
    ev("complaint", "c-5", complaint_id="k-1", topic="price", severity="low"),  # 7 topic
    "[1, 2]",  # 8 not an object
    referral("c-6", "c-7", day=2),  # 9 good
    ev("qualified", "c-1", colour="red"),  # 10 extra field
    ev("complaint_resolved", "c-1", complaint_id="k-9", satisfied=True),  # 11 unknown complaint
]
EXPECTED_BAD = [
    ("in.jsonl", 2, ["amount"]),
    ("in.jsonl", 3, ["type"]),
    ("in.jsonl", 4, ["(line)"]),
    ("in.jsonl", 5, ["amount"]),
    ("in.jsonl", 6, ["customer_id", "occurred_at"]),
    ("in.jsonl", 7, ["topic"]),
    ("in.jsonl", 8, ["(event)"]),
    ("in.jsonl", 10, ["colour"]),
    ("in.jsonl", 11, ["complaint_id"]),
]


def test_any_bad_line_stores_nothing_and_every_bad_line_is_listed(engine, tmp_path):
    engine.record(ev("identified", "c-0"))
    before = snapshot(engine, [f"c-{i}" for i in range(8)])
    outcome = engine.import_files([write_jsonl(tmp_path / "in.jsonl", BAD_FILE)])
    assert rejected_of(outcome) == EXPECTED_BAD
    assert outcome.stored == 0 and outcome.positions == []
    assert snapshot(engine, [f"c-{i}" for i in range(8)]) == before
    for rejected in outcome.rejected:
        assert all(error.reason for error in rejected.errors)
    by_line = {r.line: r for r in outcome.rejected}
    assert "not valid JSON" in by_line[4].errors[0].reason
    assert "70" in by_line[5].errors[0].reason
    assert by_line[2].raw == BAD_FILE[1]  # the input itself, for a rejects file
    listed = outcome.as_dict()
    assert listed["rejected"] == len(EXPECTED_BAD)
    assert listed["errors"][0] == {
        "file": str(tmp_path / "in.jsonl"),
        "line": 2,
        "errors": [{"field": "amount", "reason": by_line[2].errors[0].reason, "kind": "invalid"}],
    }


def test_skip_invalid_stores_the_good_lines_and_reports_the_bad(engine, tmp_path):
    outcome = engine.import_files(
        [write_jsonl(tmp_path / "in.jsonl", BAD_FILE)], skip_invalid=True
    )
    assert rejected_of(outcome) == EXPECTED_BAD
    # good: line 1 (c-1 identified + purchase), line 9 (c-6 identified, referral, c-7 identified)
    assert outcome.stored == 5
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "purchase"]
    assert [t for _, t, _ in stream(engine, "c-6")] == ["identified", "referral"]
    for nobody in ("c-2", "c-3", "c 4", "c-5"):
        assert engine.events(nobody) == []
    assert [t for _, t, _ in stream(engine, "c-7")] == ["identified"]


def test_skip_invalid_rejects_a_refund_of_a_rejected_purchase(engine, tmp_path):
    lines = [purchase("c-1", "o-1", "abc"), refund("c-1", "o-1", "5"), purchase("c-1", "o-2")]
    outcome = engine.import_files([write_jsonl(tmp_path / "in.jsonl", lines)], skip_invalid=True)
    assert rejected_of(outcome) == [("in.jsonl", 1, ["amount"]), ("in.jsonl", 2, ["order_id"])]
    assert [p.get("order_id") for _, _, p in stream(engine, "c-1")] == [None, "o-2"]


def test_bad_lines_across_two_files_name_their_file_and_line(engine, tmp_path):
    jsonl = write_jsonl(
        tmp_path / "a.jsonl",
        [purchase("c-1", "o-1"), ev("feedback", "c-1", score=12), purchase("c-2", "o-1")],
    )
    csv_path = write(
        tmp_path / "b.csv",
        "type,customer_id,occurred_at,order_id,amount\n"
        f"refund,c-1,{at(2)},o-1,10\n"
        f"refund,c-2,{at(2)},o-404,10\n"
        f"purchase,c-3,{at(2)},o-1,0\n",
    )
    outcome = engine.import_files([jsonl, csv_path])
    assert rejected_of(outcome) == [
        ("a.jsonl", 2, ["score"]),
        ("b.csv", 3, ["order_id"]),
        ("b.csv", 4, ["amount"]),
    ]
    assert engine.app.max_notification_id() == 0
    skipped = engine.import_files([jsonl, csv_path], skip_invalid=True)
    assert rejected_of(skipped) == rejected_of(outcome)
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "purchase", "refund"]
    assert [t for _, t, _ in stream(engine, "c-2")] == ["identified", "purchase"]
    assert engine.events("c-3") == []


def feedback_line(score_json: str, customer: str = "c-1") -> str:
    return json.dumps(ev("feedback", customer)).removesuffix("}") + f', "score": {score_json}}}'


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (feedback_line("1" * 5000), "more than 4300 digits"),  # int() refuses it: ValueError
        (feedback_line("[" * 100_000 + "]" * 100_000), "nested too deeply"),  # RecursionError
    ],
)
def test_a_jsonl_line_json_cannot_read_is_a_bad_line(engine, tmp_path, text, words):
    lines = [purchase("c-1", "o-1"), text, purchase("c-2", "o-1")]
    outcome = engine.import_files([write_jsonl(tmp_path / "in.jsonl", lines)], skip_invalid=True)
    assert rejected_of(outcome) == [("in.jsonl", 2, ["(line)"])]
    assert words in outcome.rejected[0].errors[0].reason
    assert outcome.rejected[0].raw.text == text  # for the rejects file
    assert [t for _, t, _ in stream(engine, "c-2")] == ["identified", "purchase"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (feedback_line('3, "score": 9'), "score"),
        (
            json.dumps(ev("identified", "c-1")).removesuffix("}")
            + ', "personal": {"name": "Ann", "name": "Bob"}}',
            "name",
        ),
    ],
)
def test_a_key_given_twice_in_a_jsonl_line_is_refused(engine, tmp_path, text, field):
    outcome = engine.import_files([write_jsonl(tmp_path / "in.jsonl", [text])])
    assert rejected_of(outcome) == [("in.jsonl", 1, [field])]
    assert f"duplicate field {field}" in outcome.rejected[0].errors[0].reason
    assert engine.events("c-1") == []


def test_an_empty_file_imports_nothing(engine, tmp_path):
    empty = write(tmp_path / "empty.jsonl", "\n\n")
    outcome = engine.import_files([empty])
    assert (outcome.stored, outcome.duplicates, outcome.rejected) == (0, 0, [])
    assert outcome.empty_files == [empty]


# --- CSV ---------------------------------------------------------------------------------


def test_a_csv_personal_column_holding_json_points_to_the_personal_columns(engine, tmp_path):
    """Pydantic said "Input should be a valid dictionary or instance of Personal"."""
    path = write(
        tmp_path / "in.csv",
        f'type,customer_id,occurred_at,personal\nidentified,c-1,{at(1)},"{{""name"": ""A""}}"\n',
    )
    outcome = engine.import_files([path])
    (error,) = outcome.rejected[0].errors
    assert error.field == "personal"
    assert "in a CSV file, columns personal.name, personal.email" in error.reason
    assert engine.events("c-1") == []


def test_a_csv_file_with_a_header_and_personal_columns(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,source,personal.name,personal.email,channel,direction,"
        "purpose,cost,order_id,amount,category,score,complaint_id,topic,severity,satisfied\n"
        f"identified,c-1,{at(1)},fair,Ann Lee,ann@example.com,,,,,,,,,,,,\n"
        f"contact,c-1,{at(2)},,,ann@example.com,email,outbound,offer,0.25,,,,,,,,\n"
        f"purchase,c-1,{at(3)},,,,,,,,o-1,59.90,,,,,,\n"
        f"feedback,c-1,{at(4)},,,,,,,,,,,7,,,,\n"
        f"complaint,c-1,{at(5)},,,,,,,,,,,,k-1,service,high,\n"
        f"complaint_resolved,c-1,{at(6)},,,,,,,,,,,,k-1,,,false\n"
        f'purchase,c-1,{at(7)},,,,,,,,"o,2",1,"books, used",,,,,\n',
    )
    outcome = engine.import_files([path])
    assert outcome.rejected == []
    assert stream(engine, "c-1") == [
        (1, "identified", {"source": "fair", "referred_by": None, "acquisition_cost": None,
                           "personal": {"name": "Ann Lee", "email": "ann@example.com"}}),
        (2, "contact", {"channel": "email", "direction": "outbound", "purpose": "offer",
                        "cost": Decimal("0.25"), "personal": {"email": "ann@example.com"}}),
        (3, "purchase", {"order_id": "o-1", "amount": Decimal("59.90"), "category": None,
                         "margin": None}),
        (4, "feedback", {"score": 7}),
        (5, "complaint", {"complaint_id": "k-1", "topic": "service", "severity": "high"}),
        (6, "complaint_resolved", {"complaint_id": "k-1", "satisfied": False, "cost": None}),
        (7, "purchase", {"order_id": "o,2", "amount": Decimal("1"), "category": "books, used",
                         "margin": None}),
    ]


def test_csv_errors_name_the_line_a_row_starts_on(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,order_id,amount\n"  # 1
        f"purchase,c-1,{at(1)},o-1,5\n"  # 2
        "\n"  # 3 blank
        f"purchase,c-1,{at(1)},o-2,x\n"  # 4
        f'purchase,c-1,{at(1)},"o\n'  # 5 a cell over two lines
        '3",y\n'  # 6
        f"purchase,c-1,{at(1)},o-4,z\n"  # 7
        f"purchase,c-1,{at(1)},o-5,5,extra\n",  # 8
    )
    outcome = engine.import_files([path])
    assert rejected_of(outcome) == [
        ("in.csv", 4, ["amount"]),
        ("in.csv", 5, ["order_id", "amount"]),  # an id holds no line break
        ("in.csv", 7, ["amount"]),
        ("in.csv", 8, ["(line)"]),
    ]
    assert outcome.rejected[-1].raw.text == f"purchase,c-1,{at(1)},o-5,5,extra"  # to mend


def test_a_csv_row_over_several_lines_with_too_many_cells_keeps_all_its_lines(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        f'type,customer_id,occurred_at,order_id,amount\npurchase,c-1,{at(1)},o-5,5,"two\nlines"\n',
    )
    (rejected,) = engine.import_files([path]).rejected
    assert rejected.raw.text == f'purchase,c-1,{at(1)},o-5,5,"two\nlines"'  # to mend


def test_a_csv_row_of_empty_cells_is_a_blank_line(engine, tmp_path):
    """Spreadsheets export trailing rows of separators only."""
    path = write(
        tmp_path / "in.csv",
        f"type,customer_id,occurred_at,order_id,amount\npurchase,c-1,{at(1)},o-1,5\n,,,,\n,,\n",
    )
    outcome = engine.import_files([path])
    assert (outcome.rejected, outcome.stored) == ([], 2)


def test_a_csv_row_with_an_unknown_column_value_is_an_extra_field(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        f"type,customer_id,occurred_at,order_id,amount,colour\npurchase,c-1,{at(1)},o-1,5,red\n",
    )
    outcome = engine.import_files([path])
    assert rejected_of(outcome) == [("in.csv", 2, ["colour"])]


def test_an_unclosed_quote_in_csv_is_a_bad_line_not_a_cell_swallowing_the_rest(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,order_id,amount,category\n"  # 1
        f"purchase,c-1,{at(1)},o-1,5,books\n"  # 2
        f'purchase,c-1,{at(1)},o-2,5,"books\n'  # 3 the quote is never closed
        f"purchase,c-2,{at(1)},o-3,5,toys\n"  # 4
        f"purchase,c-3,{at(1)},o-4,5,toys\n",  # 5
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 3, ["(line)"])]
    reason = outcome.rejected[0].errors[0].reason
    assert "not valid CSV" in reason and "opened on line 3 is not closed by line 5" in reason
    assert outcome.rejected[0].raw.text == f'purchase,c-1,{at(1)},o-2,5,"books'  # to mend
    assert [p.get("order_id") for _, _, p in stream(engine, "c-1")] == [None, "o-1"]
    for customer, order in (("c-2", "o-3"), ("c-3", "o-4")):  # read on their own lines
        assert [p.get("order_id") for _, _, p in stream(engine, customer)] == [None, order]


def test_a_quote_inside_an_unquoted_csv_cell_is_a_bad_line(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,order_id,amount,category,note\n"  # 1
        f'purchase,c-1,{at(1)},o"1,5,books,\n'  # 2 was stored with order_id o"1
        f'purchase,c-2,{at(1)},"o""2",5,"toys, ""new""",\n'  # 3 quoted cells: quotes doubled
        f'qualified,c-3,{at(1)},,,,"multi\nline"\n',  # 4 a quoted cell over two lines
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 2, ["(line)"])]
    reason = outcome.rejected[0].errors[0].reason
    assert "quote inside a cell that does not begin with one" in reason
    assert engine.events("c-1") == []
    (purchase,) = [p for _, t, p in stream(engine, "c-2") if t == "purchase"]
    assert (purchase["order_id"], purchase["category"]) == ('o"2', 'toys, "new"')
    assert [p.get("note") for _, _, p in stream(engine, "c-3")] == [None, "multi\nline"]


CELLS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=6)


@given(st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=5))
def test_every_row_a_csv_writer_makes_is_read_back_cell_for_cell(rows):
    header = ["a", "b", "c"]
    text = io.StringIO(newline="")
    csv.writer(text).writerows([header, *rows])
    text.seek(0)
    records = [record for _, record in read_csv(text)]
    expected = [{k: v for k, v in zip(header, row, strict=True) if v} for row in rows]
    assert records == [record for record in expected if record]  # rows of empty cells: blank


def test_a_csv_header_with_a_stray_quote_reads_no_row(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        'type,customer_id,occurred_at,order"id,amount\n'
        f"purchase,c-1,{at(1)},o-1,5\n",
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 1, ["(line)"]), ("in.csv", 2, ["(line)"])]
    assert "header on line 1" in outcome.rejected[1].errors[0].reason
    assert engine.events("c-1") == []


def test_a_stray_quote_in_csv_is_a_bad_line_and_the_next_lines_are_read(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,order_id,amount,category\n"
        f'purchase,c-1,{at(1)},o-1,5,"books"used\n'  # 2 was read as 'booksused'
        f"purchase,c-2,{at(1)},o-2,5,toys\n",  # 3
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 2, ["(line)"])]
    assert "not valid CSV" in outcome.rejected[0].errors[0].reason
    assert engine.events("c-1") == []
    assert [t for _, t, _ in stream(engine, "c-2")] == ["identified", "purchase"]


def test_a_csv_cell_over_the_size_limit_is_a_bad_line(engine, tmp_path):
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,order_id,amount,category\n"
        f"purchase,c-1,{at(1)},o-1,5,{'x' * 200_000}\n"
        f"purchase,c-2,{at(1)},o-2,5,toys\n",
    )
    outcome = engine.import_files([path])
    assert rejected_of(outcome) == [("in.csv", 2, ["(line)"])]
    assert "field limit" in outcome.rejected[0].errors[0].reason
    assert engine.app.max_notification_id() == 0


@pytest.mark.parametrize(
    ("header", "field", "words"),
    [
        ("type,customer_id,occurred_at,order_id,amount,amount", "amount", "duplicate field amount"),
        ("type,customer_id,occurred_at,personal,personal.name", "personal", "personal.name"),
        ("type,customer_id,occurred_at,personal.name,personal", "personal", "personal.name"),
    ],
)
def test_a_csv_header_that_names_a_field_twice_is_refused(engine, tmp_path, header, field, words):
    path = write(
        tmp_path / "in.csv",
        f"{header}\nidentified,c-1,{at(1)},a,b\nidentified,c-2,{at(1)},a,b\n",
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [
        ("in.csv", 1, [field]), ("in.csv", 2, ["(line)"]), ("in.csv", 3, ["(line)"])
    ]  # every row not read is a bad line of its own, in the rejects file
    assert words in outcome.rejected[0].errors[0].reason
    assert engine.app.max_notification_id() == 0


@pytest.mark.parametrize("suffix", [".csv", ".CSV"])
def test_csv_is_chosen_by_the_file_name(engine, tmp_path, suffix):
    path = write(
        tmp_path / f"in{suffix}",
        f"type,customer_id,occurred_at,score\nfeedback,c-1,{at(1)},3\n",
    )
    assert engine.import_files([path]).stored == 2


def test_jsonl_and_csv_of_the_same_events_store_the_same(db_url, tmp_path):
    from support import opened

    lines = [
        ev("identified", "c-1", at(1), personal={"name": "Ann"}),
        purchase("c-1", "o-1", "59.90", day=2, category="books"),
        ev("feedback", "c-1", at(3), score=4),
    ]
    csv_text = (
        "type,customer_id,occurred_at,personal.name,order_id,amount,category,score\n"
        f"identified,c-1,{at(1)},Ann,,,,\n"
        f"purchase,c-1,{at(2)},,o-1,59.90,books,\n"
        f"feedback,c-1,{at(3)},,,,,4\n"
    )
    with opened(db_url, actor="x") as engine:
        engine.import_files([write_jsonl(tmp_path / "a.jsonl", lines)])
        from_jsonl = stream(engine, "c-1")
        # the same events from CSV are retries of what the JSONL stored
        again = engine.import_files([write(tmp_path / "b.csv", csv_text)])
        assert (again.stored, again.duplicates, again.rejected) == (0, 3, [])
    assert [t for _, t, _ in from_jsonl] == ["identified", "purchase", "feedback"]


def test_progress_is_reported_for_every_line(engine, tmp_path):
    seen: list[int] = []
    lines = [json.dumps(purchase("c-1", f"o-{i}")) for i in range(5)] + ["{not json"]
    engine.import_files(
        [write_jsonl(tmp_path / "in.jsonl", lines)], skip_invalid=True, on_validated=seen.append
    )
    assert sum(seen) == 6


# --- encodings -------------------------------------------------------------------------------

BOM = "\ufeff"


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_a_byte_order_mark_is_not_part_of_the_first_field(engine, tmp_path, suffix):
    if suffix == "csv":
        text = f"{BOM}type,customer_id,occurred_at,order_id,amount\npurchase,c-1,{at(1)},o-1,5\n"
    else:
        text = BOM + json.dumps(purchase("c-1", "o-1", 1)) + "\n"
    outcome = engine.import_files([write(tmp_path / f"in.{suffix}", text)])
    assert outcome.rejected == []
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "purchase"]


def test_a_jsonl_line_that_is_not_utf8_is_a_bad_line(engine, tmp_path):
    path = tmp_path / "in.jsonl"
    good = json.dumps(purchase("c-1", "o-1", 1)).encode()
    latin = json.dumps(purchase("c-2", "o-1", 1, category="café"), ensure_ascii=False)
    latin = latin.encode("latin-1")
    path.write_bytes(good + b"\n" + latin + b"\n")
    before = snapshot(engine, {"c-1", "c-2"})
    outcome = engine.import_files([str(path)])
    assert rejected_of(outcome) == [("in.jsonl", 2, ["(line)"])]
    assert "UTF-8" in outcome.rejected[0].errors[0].reason
    assert snapshot(engine, {"c-1", "c-2"}) == before


def test_a_csv_line_that_is_not_utf8_is_a_bad_line_and_the_rest_is_read(engine, tmp_path):
    path = tmp_path / "in.csv"
    rows = [f"qualified,c-{n},{at(1)}\n".encode() for n in range(2, 3001)]
    rows[1498] = f"qualified,c-1500,{at(1)},caf\xe9\n".encode("latin-1")  # line 1500
    path.write_bytes(b"type,customer_id,occurred_at,note\n" + b"".join(rows))
    outcome = engine.import_files([str(path)], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 1500, ["(line)"])]
    assert "UTF-8" in outcome.rejected[0].errors[0].reason
    assert outcome.rejected[0].raw.text == f"qualified,c-1500,{at(1)},caf\\xe9"  # to mend
    assert outcome.stored == 2 * 2998  # every other line: an identification and its event
    assert engine.events("c-1500") == [] and engine.events("c-3000")


def test_a_csv_header_that_is_not_utf8_reads_no_row(engine, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(
        "type,customer_id,occurred_at,order_id,amount,caté\n".encode("latin-1")
        + f"purchase,c-1,{at(1)},o-1,5,x\n".encode()
    )
    outcome = engine.import_files([str(path)], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 1, ["(line)"]), ("in.csv", 2, ["(line)"])]
    assert engine.events("c-1") == []


def read_bytes(data: bytes) -> list[tuple[int, object]]:
    """(line, record or the reason it is bad) of each row of CSV bytes."""
    rows = read_csv(utf8_lines(io.BytesIO(data)))
    return [(n, r.reason if isinstance(r, InputError) else r) for n, r in rows]


def test_csv_line_numbers_count_every_line_ending_as_the_csv_module_does():
    # \r\r\n (csv.writer on Windows, file opened without newline="") ends two lines
    assert read_bytes(b"a,b\n1,x\r\r\n2,y\n") == [(2, {"a": "1", "b": "x"}),
                                                  (4, {"a": "2", "b": "y"})]
    assert read_bytes(b"a,b\r1,x\r\n2,y\r") == [(2, {"a": "1", "b": "x"}),
                                               (3, {"a": "2", "b": "y"})]


def test_a_byte_that_is_not_utf8_spoils_only_its_line_whatever_the_line_endings():
    for end in (b"\r", b"\n", b"\r\n"):
        data = end.join([b"a,b", b"1,x", b"2,caf\xe9", b"3,z"]) + end
        found = read_bytes(data)
        assert [n for n, _ in found] == [2, 3, 4], end
        assert found[0][1] == {"a": "1", "b": "x"} and found[2][1] == {"a": "3", "b": "z"}
        assert "not UTF-8" in found[1][1]


def test_a_row_running_on_into_a_line_that_is_not_utf8_is_bad_from_its_first_line():
    data = b'a,b\n1,"x\ny\xe9\nz",q\n2,w\n'
    rows = list(read_csv(utf8_lines(io.BytesIO(data))))
    assert [n for n, _ in rows] == [2, 3, 4, 5]  # in line order, each line accounted for
    first, bad = rows[0][1], rows[1][1]
    assert "runs on into line 3" in first.reason and first.text == '1,"x'  # to mend
    assert "not UTF-8" in bad.reason and bad.text == "y\\xe9"
    assert rows[3] == (5, {"a": "2", "b": "w"})


def test_a_header_with_an_unclosed_quote_says_no_row_was_read():
    header, *rows = read_bytes(b'a,"b\n1,2\n3,4\n')
    assert header[0] == 1 and "no row was read" in header[1]
    assert [(n, "was not read" in reason) for n, reason in rows] == [(2, True), (3, True)]


def test_csv_lines_may_end_in_a_lone_carriage_return(engine, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(f"type,customer_id,occurred_at\rqualified,c-1,{at(1)}\r".encode())
    outcome = engine.import_files([str(path)])
    assert outcome.rejected == [] and outcome.stored == 2




@pytest.mark.parametrize(
    "header, said",
    [
        ("Type,Customer_ID,occurred_at,order_id,amount", "'Type' for 'type'"),
        ("type;customer_id;occurred_at;order_id;amount", "';' between cells"),
        ("kind,customer_id,occurred_at,order_id,amount", "has no column type"),
    ],
    ids=["capitals", "semicolons", "other-name"],
)
def test_a_csv_header_without_a_required_column_is_said_once(engine, tmp_path, header, said):
    """Not "type: is required" on every row: the header is the fault, and each row not read
    is still a bad line of its own (counted, and in the rejects file)."""
    sep = ";" if ";" in header else ","
    rows = [sep.join(["purchase", f"c-{i}", at(1), f"o-{i}", "5"]) for i in (1, 2)]
    path = write(tmp_path / "in.csv", "\n".join([header, *rows]) + "\n")
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [
        ("in.csv", 1, ["(header)"]), ("in.csv", 2, ["(line)"]), ("in.csv", 3, ["(line)"])
    ]
    assert said in outcome.rejected[0].errors[0].reason
    assert engine.app.max_notification_id() == 0


@pytest.mark.parametrize(
    "header",
    [b"type,customer_id,occurred_\xe9t", b'type,customer_id,"occurred_at'],
    ids=["not-utf8", "unclosed-quote"],
)
def test_rows_under_a_header_that_cannot_be_read_are_bad_lines_each(engine, tmp_path, header):
    rows = [f"identified,c-{i},{at(1)}".encode() for i in (1, 2)]
    path = tmp_path / "in.csv"
    path.write_bytes(b"\n".join([header, *rows, b",,"]) + b"\n")  # a row of empty cells: blank
    outcome = engine.import_files([str(path)], skip_invalid=True)
    assert [(r.line, r.errors[0].field) for r in outcome.rejected] == [
        (1, "(line)"), (2, "(line)"), (3, "(line)")
    ]
    assert all(r.raw is not None for r in outcome.rejected[1:])  # their text, for rejects
    assert engine.app.max_notification_id() == 0


# --- what spreadsheets and other tools write -------------------------------------------------


def test_empty_columns_a_spreadsheet_adds_after_the_last_are_ignored(engine, tmp_path):
    """Excel writes `,,` after the last named column: two empty names were "duplicate
    field" (no row read), and a row's empty cells past the header "more cells"."""
    path = write(
        tmp_path / "in.csv",
        "type,customer_id,occurred_at,order_id,amount,,\n"  # 1
        f"purchase,c-1,{at(1)},o-1,5,,\n"  # 2
        f"purchase,c-1,{at(2)},o-2,5,,,,\n"  # 3 more empty cells than names
        f"purchase,c-1,{at(3)},o-3,5,x,\n"  # 4 a value in a column without a name
        f"purchase,c-1,{at(4)},o-4,5,,,y\n",  # 5 a value past the header
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [("in.csv", 4, ["(line)"]), ("in.csv", 5, ["(line)"])]
    assert "a value in column 6, which the header does not name" in (
        outcome.rejected[0].errors[0].reason
    )
    assert outcome.rejected[0].raw.text == f"purchase,c-1,{at(3)},o-3,5,x,"
    orders = [p["order_id"] for _, t, p in stream(engine, "c-1") if t == "purchase"]
    assert orders == ["o-1", "o-2"]


def test_a_header_name_with_spaces_around_it_is_named_in_the_hint(engine, tmp_path):
    path = write(tmp_path / "in.csv", f"Type,Customer_ID ,occurred_at\nfeedback,c-1,{at(1)}\n")
    outcome = engine.import_files([path], skip_invalid=True)
    reason = outcome.rejected[0].errors[0].reason
    assert "has no column type, customer_id" in reason
    assert "'Type' for 'type'" in reason and "'Customer_ID ' for 'customer_id'" in reason
    assert "no spaces around them" in reason


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("export.csv", gzip.compress(b"type,customer_id\n"), "name it .gz"),
        ("in.csv", "type,customer_id,occurred_at\n".encode("utf-16"), "UTF-16"),
        ("in.jsonl", b"\xfe\xff" + '{"type": "left"}\n'.encode("utf-16-be"), "UTF-16"),
        ("book.csv", b"PK\x03\x04" + bytes(40), "zip archive"),
        ("journey.db", b"SQLite format 3\x00" + bytes(100), "SQLite database"),
    ],
)
def test_a_file_in_another_form_is_one_bad_line_that_says_which(
    engine, tmp_path, name, content, words
):
    """A UTF-16 file was a bad line for each of its lines and more (its line ends split
    its characters), none saying why; gzip alike."""
    path = tmp_path / name
    path.write_bytes(content * 50)
    outcome = engine.import_files([str(path)], skip_invalid=True)
    assert rejected_of(outcome) == [(name, 1, ["(file)"])]
    assert words in outcome.rejected[0].errors[0].reason
    assert engine.app.max_notification_id() == 0


def test_csv_given_as_json_lines_says_how_to_name_it(engine, tmp_path):
    path = write(tmp_path / "export.txt", f"type,customer_id,occurred_at\nfeedback,c-1,{at(1)}\n")
    outcome = engine.import_files([path], skip_invalid=True)
    first, second = (r.errors[0].reason for r in outcome.rejected)
    assert "its file name must end in .csv" in first
    assert "not valid JSON" in second and ".csv" not in second  # said once


def test_a_gz_file_is_decompressed_and_its_format_named_by_the_rest(engine, tmp_path):
    text = f"type,customer_id,occurred_at,score\nfeedback,c-1,{at(1)},3\n"
    (tmp_path / "in.csv.gz").write_bytes(gzip.compress(text.encode()))
    line = json.dumps(ev("feedback", "c-2", at(1), score=4)) + "\n"
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(line.encode()))
    outcome = engine.import_files([str(tmp_path / "in.csv.gz"), str(tmp_path / "in.jsonl.gz")])
    assert (outcome.stored, outcome.rejected) == (4, [])
    assert [t for _, t, _ in stream(engine, "c-1")] == ["identified", "feedback"]


def test_a_gz_file_cut_short_or_not_gzip_is_a_bad_line_not_a_crash(engine, tmp_path):
    whole = gzip.compress("".join(
        json.dumps(ev("feedback", f"c-{n}", at(1), score=4)) + "\n" for n in range(2000)
    ).encode())
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_text("not gzip\n")
    paths = [str(tmp_path / "cut.jsonl.gz"), str(tmp_path / "plain.jsonl.gz")]
    outcome = engine.import_files(paths, skip_invalid=True)
    (cut, plain) = outcome.rejected
    assert (Path(plain.source).name, plain.line) == ("plain.jsonl.gz", 1)
    assert "is not whole gzip data" in cut.errors[0].reason
    readable = zlib.decompressobj(wbits=31).decompress(whole[: len(whole) // 2])
    complete = readable.count(b"\n")  # the lines wholly in the part that is there
    assert complete > 0
    assert outcome.stored == 2 * complete  # each an identified and a feedback
    assert cut.line == complete + 1  # after the lines that could be read
    assert "is not whole gzip data" in plain.errors[0].reason


def test_a_resolution_whose_complaint_was_refused_says_which_line(engine, tmp_path):
    """"no complaint 'k1'" alone sent a data engineer looking in the store for a complaint
    that was on line 2, refused for its severity."""
    path = write(
        tmp_path / "crm.csv",
        "type,customer_id,occurred_at,complaint_id,topic,severity,satisfied\n"
        f"complaint,c-1,{at(1)},k1,product,HIGH,\n"
        f"complaint_resolved,c-1,{at(2)},k1,,,true\n"
        f"complaint_resolved,c-1,{at(2)},k2,,,true\n",
    )
    outcome = engine.import_files([path], skip_invalid=True)
    assert rejected_of(outcome) == [
        ("crm.csv", 2, ["severity"]), ("crm.csv", 3, ["complaint_id"]),
        ("crm.csv", 4, ["complaint_id"]),
    ]
    pointed, alone = (r.errors[0].reason for r in outcome.rejected[1:])
    assert pointed.endswith("(the one on line 2 was refused)")
    assert alone == "no complaint 'k2' for customer 'c-1'"
