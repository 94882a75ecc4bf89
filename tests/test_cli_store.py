"""The `import` and `record` commands as a user runs them: exit codes, output, errors."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys
import threading

import pytest
from typer.testing import CliRunner

from journey.api import connect
from journey.cli import app

runner = CliRunner()

PURCHASE = {"type": "purchase", "customer_id": "c-17", "occurred_at": "2025-03-01T10:00:00Z",
            "order_id": "o-9", "amount": "59.90", "category": "books"}
REFUND = {"type": "refund", "customer_id": "c-17", "occurred_at": "2025-03-02T10:00:00Z",
          "order_id": "o-9", "amount": "10"}
BAD_SCORE = {"type": "feedback", "customer_id": "c-2", "occurred_at": "2025-03-02T00:00:00Z",
             "score": 11}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def run(db_url, *args, input=None):
    return runner.invoke(app, ["--db", db_url, "--actor", "cli-test", *args], input=input)


def stored(db_url, customer_id):
    with connect(db_url) as engine:
        return [e.TYPE for e in engine.events(customer_id)]


def test_import_stores_and_counts(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE, REFUND])
    result = run(db_url, "import", path, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == {"stored": 3, "derived": 1, "duplicates": 0, "rejected": 0}
    assert stored(db_url, "c-17") == ["identified", "purchase", "refund"]


def test_a_file_without_events_is_noted(db_url, tmp_path):
    """An empty export (or the wrong file) imported "stored 0 events" and nothing else."""
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "header.csv").write_text("type,customer_id,occurred_at\n")
    good = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    empty, header = str(tmp_path / "empty.jsonl"), str(tmp_path / "header.csv")
    result = run(db_url, "import", empty, good, header)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"note: {empty} holds no events",
                                          f"note: {header} holds no events"]
    assert "stored 2 events" in result.stdout
    quiet = run(db_url, "import", good)
    assert (quiet.exit_code, quiet.stderr) == (0, "")


def test_reimport_stores_nothing_new(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE, REFUND])
    assert run(db_url, "import", path).exit_code == 0
    result = run(db_url, "import", path, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"stored": 0, "derived": 0, "duplicates": 2, "rejected": 0}
    assert stored(db_url, "c-17") == ["identified", "purchase", "refund"]


def test_bad_line_stores_nothing_and_lists_every_bad_line(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE, BAD_SCORE, {**REFUND, "order_id": "nope"}])
    result = run(db_url, "import", path)
    assert result.exit_code == 1
    assert f"{path}:2: score:" in result.stderr
    assert f"{path}:3: order_id:" in result.stderr
    assert "nothing was stored" in result.stderr
    assert stored(db_url, "c-17") == []


def test_bad_line_json_error_is_machine_readable(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE, BAD_SCORE])
    result = run(db_url, "import", path, "--json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)
    assert error["rejected"] == 1
    assert error["errors"][0]["line"] == 2
    assert error["errors"][0]["errors"][0]["field"] == "score"


def test_skip_invalid_writes_rejects(db_url, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n" + json.dumps(BAD_SCORE) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert "rejected 2" in result.stdout
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["line"] for r in lines] == [2, 3]
    assert lines[0]["input"] == "not json"
    assert lines[1]["input"]["score"] == 11
    assert lines[1]["errors"][0]["field"] == "score"
    assert stored(db_url, "c-17") == ["identified", "purchase"]


def test_many_rejects_written_to_a_file_are_not_all_printed_again(db_url, tmp_path):
    """Every bad line went to stderr as well as to the rejects file: 100,000 lines of
    noise for a large file (an operator's walk). A few show; the file has them all. A
    refused import (no --skip-invalid) still lists every one."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\n" + "not json\n" * 30)
    rejects = tmp_path / "rejects.jsonl"
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert len(rejects.read_text().splitlines()) == 30
    assert result.stderr.count("in.jsonl:") == 20
    assert "... and 10 more bad line(s)" in result.stderr
    refused = run(db_url, "import", str(path))
    assert refused.exit_code == 1
    assert refused.stderr.count("in.jsonl:") == 30


def test_rejects_to_standard_output_in_process(db_url, tmp_path):
    """Where standard output has no file descriptor (CliRunner, an embedding program),
    `--rejects -` failed with UnsupportedOperation."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n")
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", "-")
    assert result.exit_code == 0, result.output
    first, summary = result.stdout.splitlines()
    assert json.loads(first)["input"] == "not json"
    assert summary.endswith("rejected 1 (written to standard output)")


def test_rejects_to_standard_output_with_json_is_a_usage_error(db_url, tmp_path):
    """The rejects lines came before the --json summary: no longer one JSON object."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n")
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", "-", "--json")
    assert result.exit_code == 2, result.output
    assert "--json" in json.loads(result.stderr)["error"]
    assert stored(db_url, "c-17") == []


def test_a_json_line_that_is_not_an_object_is_rejected_as_its_text(db_url, tmp_path):
    """Kept as the parsed value, `[1,2]` and `42` escaped both of the README's jq recipes
    and `"s"` came back from the second without its quotes."""
    texts = ["[1,2]", "42", '"s"', "null"]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([json.dumps(PURCHASE), *texts]) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [r["input"] for r in lines] == texts
    assert {e["reason"] for r in lines for e in r["errors"]} == {"must be a JSON object"}


def test_skip_invalid_writes_a_deeply_nested_input_to_rejects(db_url, tmp_path):
    """Half the recursion limit deep: json reads it, so the rejects file must write it."""
    depth = sys.getrecursionlimit() // 2 + 100
    nested = json.loads('{"a": ' * depth + "1" + "}" * depth)
    identified = {**PURCHASE, "type": "identified", "personal": nested}
    for name in ("order_id", "amount", "category"):
        del identified[name]
    path = write_jsonl(tmp_path / "in.jsonl", [identified, PURCHASE])
    rejects = tmp_path / "rejects.jsonl"
    result = run(db_url, "import", path, "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert line["input"]["personal"] == nested
    assert line["errors"][0]["field"] == "personal.a"


def test_a_rejected_line_holding_half_a_surrogate_pair_is_written_escaped(db_url, tmp_path):
    path = tmp_path / "in.jsonl"  # JSON may escape a lone surrogate; UTF-8 cannot hold it
    bad = '{"type": "qualified", "customer_id": "c-2", "occurred_at": "2025-03-01T10:00:00Z", '
    path.write_text(json.dumps(PURCHASE) + "\n" + bad + '"note": "x\\udc80"}\n')
    rejects = tmp_path / "rejects.jsonl"
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert line["line"] == 2 and line["input"]["note"] == "x\udc80"
    assert stored(db_url, "c-17") and not stored(db_url, "c-2")


@pytest.mark.parametrize("as_json", [False, True])
def test_an_unwritable_rejects_file_is_a_usage_error_before_anything_is_stored(
    db_url, tmp_path, as_json
):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n")
    rejects = tmp_path / "no-such-folder" / "rejects.jsonl"
    flags = ["--json"] if as_json else []
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", str(rejects), *flags)
    assert result.exit_code == 2, result.output
    message = json.loads(result.stderr)["error"] if as_json else result.stderr
    assert "--rejects" in message and "No such file or directory" in message
    assert stored(db_url, "c-17") == []


def test_the_rejects_file_may_not_be_an_input(db_url, tmp_path):
    path = tmp_path / "in.jsonl"
    text = json.dumps(PURCHASE) + "\nnot json\n"
    path.write_text(text)
    result = run(db_url, "import", str(path), "--skip-invalid", "--rejects", str(path))
    assert result.exit_code == 2
    assert "one of the files to import" in result.stderr
    assert path.read_text() == text
    assert stored(db_url, "c-17") == []


def test_the_rejects_file_may_not_be_the_sqlite_store(tmp_path):
    """`--rejects t.db` emptied the store and wrote the rejects over it, and the import
    reported its events stored: every event was lost."""
    store = tmp_path / "t.db"
    url = f"sqlite:///{store}"
    first = write_jsonl(tmp_path / "first.jsonl", [PURCHASE])
    assert run(url, "import", first).exit_code == 0
    size = store.stat().st_size
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({**PURCHASE, "order_id": "o-2"}) + "\nnot json\n")
    for target in (store, tmp_path / "t.db-wal", tmp_path / "." / "t.db"):
        result = run(url, "import", str(path), "--skip-invalid", "--rejects", str(target))
        assert result.exit_code == 2 and "the store's own file" in result.stderr, result.output
    assert store.stat().st_size == size
    assert stored(url, "c-17") == ["identified", "purchase"]  # the first import's


def test_a_usage_error_found_after_the_rejects_file_leaves_it_as_it_was(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("what an earlier import rejected\n")
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"
    result = run(url, "import", path, "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert rejects.read_text() == "what an earlier import rejected\n"


def test_a_pipe_is_imported_and_a_directory_is_said_to_be_one(db_url, tmp_path):
    """`import /dev/stdin` and `import <(zcat f.gz)` said "no such file"; a pipe counted
    for the progress bar would then be read empty."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    text = json.dumps(PURCHASE) + "\n"

    def feed() -> None:
        with open(fifo, "w") as end:
            end.write(text)

    writer = threading.Thread(target=feed)
    writer.start()
    result = run(db_url, "import", str(fifo))
    writer.join()
    assert result.exit_code == 0, result.output
    assert stored(db_url, "c-17") == ["identified", "purchase"]
    folder = run(db_url, "import", str(tmp_path))
    assert folder.exit_code == 2 and "a directory, not a file" in folder.stderr


def test_the_rejects_file_is_emptied_when_nothing_is_rejected(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text("a stale line of an earlier import\n")
    result = run(db_url, "import", path, "--skip-invalid", "--rejects", str(rejects))
    assert result.exit_code == 0, result.output
    assert rejects.read_text() == ""


def test_an_interrupted_import_says_what_it_leaves(db_url, tmp_path, monkeypatch):
    """Ctrl-C during a save: exit 130 with a message (one JSON object with --json)."""
    from commands.handlers import UnitOfWork

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(UnitOfWork, "save", interrupted)
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    result = run(db_url, "import", path, "--json")
    assert result.exit_code == 130
    assert "importing the same input again" in json.loads(result.stderr)["error"]


def test_skip_invalid_needs_rejects_file(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    result = run(db_url, "import", path, "--skip-invalid")
    assert result.exit_code == 2
    assert stored(db_url, "c-17") == []


def test_a_rejects_file_without_skip_invalid_is_a_usage_error(db_url, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    result = run(db_url, "import", path, "--rejects", str(tmp_path / "bad.jsonl"))
    assert result.exit_code == 2 and "--skip-invalid" in result.stderr
    assert stored(db_url, "c-17") == [] and not (tmp_path / "bad.jsonl").exists()


def test_csv_import(db_url, tmp_path):
    path = tmp_path / "in.csv"
    path.write_text(
        "type,customer_id,occurred_at,order_id,amount,category,personal.name\n"
        "identified,c-17,2025-02-01T00:00:00Z,,,,Ada\n"
        "purchase,c-17,2025-03-01T10:00:00Z,o-9,59.90,books,\n"
    )
    result = run(db_url, "import", str(path), "--json")
    assert result.exit_code == 0, result.output
    with connect(db_url) as engine:
        events = engine.events("c-17")
    assert [e.TYPE for e in events] == ["identified", "purchase"]
    assert events[0].personal == {"name": "Ada"}
    assert str(events[1].amount) == "59.90"


def test_record_prints_position(db_url):
    result = run(db_url, "record", json.dumps(PURCHASE), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["duplicate"] is False
    assert answer["position"] == max(answer["positions"])
    assert len(answer["positions"]) == 2
    assert (answer["stored"], answer["derived"], answer["duplicates"]) == (2, 1, 0)
    again = json.loads(run(db_url, "record", json.dumps(PURCHASE), "--json").stdout)
    assert again == {"position": None, "positions": [], "duplicate": True,
                     "stored": 0, "derived": 0, "duplicates": 1}


def test_record_of_a_referral_that_converts_prints_the_referrals_position(db_url):
    assert run(db_url, "record", json.dumps(PURCHASE)).exit_code == 0  # c-17 buys on 1 March
    referral = {
        "type": "referral",
        "customer_id": "c-1",
        "occurred_at": "2025-02-01T00:00:00Z",
        "referred_customer_id": "c-17",
    }
    answer = json.loads(run(db_url, "record", json.dumps(referral), "--json").stdout)
    assert len(answer["positions"]) == 3  # c-1 identified, the referral, its conversion
    assert stored_at(db_url, answer["position"]) == ("c-1", "Referred")
    text = run(db_url, "record", json.dumps({**referral, "customer_id": "c-2"})).stdout
    shown = re.fullmatch(r"stored at position (\d+) \(\+(\d) derived.*\n", text)
    position, derived = shown.groups()
    assert stored_at(db_url, int(position)) == ("c-2", "Referred")
    assert derived == "2"


def stored_at(db_url, position):
    """(customer, class name) of the event stored at a log position."""
    with connect(db_url) as engine:
        (notification,) = engine.app.select_notifications(position - 1, 1)
    return str(notification.originator_id), notification.topic.rsplit(":", 1)[-1]


def test_record_reads_stdin_and_keeps_actor(db_url):
    result = run(db_url, "record", input=json.dumps(PURCHASE))
    assert result.exit_code == 0
    assert "stored at position" in result.stdout
    with connect(db_url) as engine:
        assert {e.actor for e in engine.events("c-17")} == {"cli-test"}


@pytest.mark.parametrize("args, stdin, said", [
    ([], "", "standard input was empty"), ([], "\n \n", "standard input was empty"),
    ([""], None, "the argument is empty"),
])
def test_record_without_an_event_is_a_usage_error(db_url, args, stdin, said):
    """`journey record </dev/null` answered "(event): not valid JSON: Expecting value"."""
    result = run(db_url, "record", *args, "--json", input=stdin)
    assert result.exit_code == 2, result.output
    assert json.loads(result.stderr)["error"] == f"no event given: {said} (give a JSON object)"


def test_record_reads_stdin_with_a_byte_order_mark_as_import_does(db_url):
    result = run(db_url, "record", input="\ufeff" + json.dumps(PURCHASE))
    assert result.exit_code == 0, result.output
    with connect(db_url) as engine:
        assert [e.TYPE for e in engine.events("c-17")] == ["identified", "purchase"]


def test_record_names_the_line_of_a_fault_in_a_text_of_several_lines(sqlite_url):
    result = run(sqlite_url, "record", "--json", input=json.dumps(PURCHASE) + "\n{}\n")
    assert result.exit_code == 1
    assert "Extra data at line 2 column 1" in json.loads(result.stderr)["error"]


@pytest.mark.parametrize(
    "url, said",
    [("sqlite:///{tmp}/j.db?mode=ro", "unknown parameter 'mode'"),
     ("sqlite:///{tmp}/no/such/folder/j.db", "does not exist")],
)
def test_a_sqlite_url_journey_cannot_honour_is_a_usage_error(tmp_path, url, said):
    """A mistyped path made a new store (and its folders) wherever it pointed."""
    result = CliRunner().invoke(
        app, ["--db", url.format(tmp=tmp_path), "record", json.dumps(PURCHASE), "--json"]
    )
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url, said", [
    ("sqlite://j.db", "names no file ('j.db' is read as a host name): write sqlite:///j.db"),
    ("sqlite://", "an in-memory store keeps nothing once this command ends"),
    ("sqlite:///:memory:", "an in-memory store keeps nothing once this command ends"),
    ("sqlite:///file::memory:", "SQLite URIs (file:...) are not read"),
    ("sqlite:///file:j.db", "SQLite URIs (file:...) are not read"),  # two stores, one each
])
@pytest.mark.parametrize("command", [
    ["import", "{events}"], ["verify"], ["funnel"], ["projections", "status"], ["keys", "list"],
    ["demo", "--customers", "3"],
])
def test_a_sqlite_url_of_no_file_is_a_usage_error(tmp_path, monkeypatch, url, said, command):
    """sqlite://j.db (two slashes) is SQLAlchemy's store in memory with a host name: an
    import into it said "stored 5 events" and kept none, verify found it intact."""
    monkeypatch.chdir(tmp_path)
    events = write_jsonl(tmp_path / "in.jsonl", [PURCHASE])
    args = [arg.format(events=events) for arg in command]
    result = CliRunner().invoke(app, ["--db", url, *args])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.replace("│", " ").split())
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no store anywhere


@pytest.mark.parametrize("actor", ["", "  "])
def test_an_empty_actor_is_a_usage_error(sqlite_url, actor):
    """It was recorded as the OS user, silently."""
    result = CliRunner().invoke(app, ["--db", sqlite_url, "--actor", actor, "record",
                                      json.dumps(PURCHASE)])
    assert result.exit_code == 2, result.output
    assert "must name who records" in result.output
    assert stored(sqlite_url, "c-17") == []


@pytest.mark.parametrize("text, field", [
    ('{"type": "purchase"}', "customer_id"),
    ("{not json", "(event)"),
    (json.dumps({**PURCHASE, "amount": "-1"}), "amount"),
    (json.dumps({**PURCHASE, "colour": "red"}), "colour"),
])
def test_record_rejects_with_field(db_url, text, field):
    result = run(db_url, "record", text, "--json")
    assert result.exit_code == 1
    error = json.loads(result.stderr)
    assert field in [e["field"] for e in error["errors"]]
    assert stored(db_url, "c-17") == []


DEEP = "[" * 100_000 + "]" * 100_000
LONG = "1" * 5000


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (json.dumps(PURCHASE).removesuffix("}") + f', "colour": {DEEP}}}', "(event)", "deeply"),
        (json.dumps(PURCHASE).removesuffix("}") + f', "colour": {LONG}}}', "(event)", "4300"),
        (json.dumps(PURCHASE).removesuffix("}") + ', "amount": "1"}', "amount", "duplicate"),
    ],
)
def test_record_refuses_what_json_cannot_read_with_one_error_object(db_url, text, field, words):
    result = run(db_url, "record", text, "--json")
    assert result.exit_code == 1, result.output
    error = json.loads(result.stderr)  # one object, no traceback
    assert [e["field"] for e in error["errors"]] == [field]
    assert words in error["errors"][0]["reason"]
    assert stored(db_url, "c-17") == []


def test_import_refuses_a_line_json_cannot_read_with_one_error_object(db_url, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\n" + DEEP + "\n" + LONG + "\n")
    result = run(db_url, "import", str(path), "--json")
    assert result.exit_code == 1, result.output
    error = json.loads(result.stderr)
    assert [(e["line"], e["errors"][0]["field"]) for e in error["errors"]] == [
        (2, "(line)"),
        (3, "(line)"),
    ]
    assert stored(db_url, "c-17") == []


def test_conflict_is_rejected_input(db_url):
    assert run(db_url, "record", json.dumps(PURCHASE)).exit_code == 0
    result = run(db_url, "record", json.dumps({**PURCHASE, "amount": "60"}), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stderr)["errors"][0]["kind"] == "conflict"


def test_usage_errors_exit_2(tmp_path):
    assert runner.invoke(app, ["--db", "mysql://x/y", "record", "{}"]).exit_code == 2
    assert runner.invoke(app, ["import", str(tmp_path / "missing.jsonl")]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_demo_records_a_sample_and_shows_the_funnel(db_url):
    result = run(db_url, "demo", "--customers", "30", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "funnel at" in result.stdout
    with connect(db_url) as engine:
        head = engine.app.max_notification_id()
        stored = sum(len(engine.events(c)) for c in engine.app.customer_ids())
    assert stored > 30
    assert f"{stored} events stored" in result.stdout
    status = json.loads(run(db_url, "projections", "status", "--json").stdout)
    assert {row["position"] for row in status["read_models"]} == {head}
    suggested = re.search(r"Try: journey show (\S+)", result.stdout).group(1)
    assert run(db_url, "show", suggested).exit_code == 0  # a customer of this store


@pytest.mark.parametrize(
    "args, said",
    [
        (["report", "--as-of", "now", "--json"], "--known-at"),
        (["verify", "--bogus", "--json"], "--bogus"),
        (["erase", "c-1", "--json"], "--reason"),
    ],
)
def test_usage_errors_found_before_a_command_runs_are_json_with_json(sqlite_url, args, said):
    """The installed script, as another program runs it: one JSON object on stderr."""
    from readmodel_support import cli as script

    done = script("--db", sqlite_url, *args)
    assert done.returncode == 2, done.stderr
    assert said in json.loads(done.stderr)["error"]
    assert done.stdout == ""
    plain = script("--db", sqlite_url, *[a for a in args if a != "--json"])
    assert plain.returncode == 2 and "Usage:" in plain.stderr  # for a person, as before


@pytest.mark.parametrize(
    "query, said",
    [("schema=Bad-Name", "letters, digits and _"), ("schem=x", "unknown parameter 'schem'"),
     ("schema=x&sslmode=require", "unknown parameter 'sslmode'")],
)
def test_a_postgres_url_with_a_parameter_journey_cannot_honour_is_a_usage_error(query, said):
    """Refused before any connection: nothing is created, nothing half applied."""
    result = CliRunner().invoke(
        app, ["--db", f"postgresql://nobody@127.0.0.1:1/none?{query}", "record", "{}", "--json"]
    )
    assert result.exit_code == 2, result.output
    assert said in result.output


def test_a_large_import_on_a_terminal_shows_validating_then_storing(db_url, tmp_path, monkeypatch):
    """The bar stood full for the whole store (half of a 500,000-line import), and
    counted a CSV header as an input."""
    from rich.console import Console

    from journey.cli import store

    seen: dict[str, int] = {"validated": 0, "stored": 0}

    class Watched(store.ImportBar):
        def validated(self, count: int) -> None:
            seen["validated"] += count
            assert seen["stored"] == 0  # validation is over before anything is stored
            super().validated(count)

        def stored(self, count: int) -> None:
            seen["stored"] += count
            super().stored(count)
            assert self.progress.tasks[self.storing].completed == seen["stored"]

    monkeypatch.setattr(store, "err", Console(file=io.StringIO(), force_terminal=True))
    monkeypatch.setattr(store, "PROGRESS_MIN_LINES", 10)
    monkeypatch.setattr(store, "ImportBar", Watched)
    rows = "".join(f"feedback,c-{n},2025-03-01T10:00:00Z,5,\n" for n in range(6000))
    referrals = "".join(f"referral,c-{n},2025-03-02T10:00:00Z,,r-{n}\n" for n in range(50))
    path = tmp_path / "in.csv"
    path.write_text("type,customer_id,occurred_at,score,referred_customer_id\n" + rows + referrals)
    assert store.count_lines(str(path)) == 6050
    result = run(db_url, "import", str(path), "--json")
    assert result.exit_code == 0, result.output
    # the stored count is the customer events': not the referrer index's records
    assert seen == {"validated": 6050, "stored": json.loads(result.stdout)["stored"]}


def test_rejects_to_a_device_or_a_hard_link_of_the_store(tmp_path):
    """`--rejects /dev/null` crashed (a device cannot be truncated); a hard link to the
    store passed the path check and emptied it."""
    store = tmp_path / "t.db"
    url = f"sqlite:///{store}"
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n")
    result = run(url, "import", str(path), "--skip-invalid", "--rejects", "/dev/null")
    assert result.exit_code == 0, result.output
    assert stored(url, "c-17") == ["identified", "purchase"]
    os.link(store, tmp_path / "hard.db")
    linked = run(url, "import", str(path), "--skip-invalid", "--rejects", str(tmp_path / "hard.db"))
    assert linked.exit_code == 2 and "the store's own file" in linked.stderr
    assert stored(url, "c-17") == ["identified", "purchase"]


def test_a_corrupted_gz_on_a_terminal_is_a_bad_line_not_a_traceback(db_url, tmp_path, monkeypatch):
    from rich.console import Console

    from journey.cli import store

    lines = "".join(json.dumps({**PURCHASE, "order_id": f"o-{n}"}) + "\n" for n in range(3000))
    data = bytearray(gzip.compress(lines.encode()))
    data[200:400] = bytes(b ^ 0x5A for b in data[200:400])
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(data))
    monkeypatch.setattr(store, "err", Console(file=io.StringIO(), force_terminal=True))
    result = run(db_url, "import", str(tmp_path / "bad.jsonl.gz"), "--json")
    assert result.exit_code == 1, result.output
    (bad,) = json.loads(result.stderr)["errors"]
    assert bad["errors"][0]["field"] == "(file)"
    assert stored(db_url, "c-17") == []


def test_rejects_to_standard_output_appended_to_a_file_keep_that_file(tmp_path):
    """`--rejects /dev/stdout >> import.log` emptied import.log (a regular file, through
    the redirection) before writing the rejects."""
    import subprocess

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n")
    log = tmp_path / "import.log"
    log.write_text("precious\n")
    with log.open("a") as appended:
        done = subprocess.run(
            [sys.executable, "-m", "journey", "--db", f"sqlite:///{tmp_path / 't.db'}",
             "import", str(path), "--skip-invalid", "--rejects", "/dev/stdout"],
            stdout=appended, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr
    kept = log.read_text()
    assert kept.startswith("precious\n") and '"not json"' in kept


@pytest.mark.parametrize("rejects", ["/dev/stdout", "-"])
def test_rejects_to_standard_output_written_over_by_nothing(tmp_path, rejects):
    """`--rejects /dev/stdout > out.txt` wrote the summary over the first rejects (two
    openings of one file, each at its own position); `--rejects -` made a file named -."""
    import subprocess

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n[1, 2]\n")
    out = tmp_path / "out.txt"
    with out.open("w") as truncated:
        done = subprocess.run(
            [sys.executable, "-m", "journey", "--db", f"sqlite:///{tmp_path / 't.db'}",
             "import", str(path), "--skip-invalid", "--rejects", rejects],
            stdout=truncated, stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path,
        )
    assert done.returncode == 0, done.stderr
    *lines, summary = out.read_text().splitlines()
    assert [json.loads(line)["input"] for line in lines] == ["not json", "[1, 2]"]
    where = "standard output" if rejects == "-" else rejects
    assert summary.startswith("stored 2 events")
    assert summary.endswith(f"rejected 2 (written to {where})")
    assert not (tmp_path / "-").exists()


UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize("command", [
    ["record", json.dumps(PURCHASE)], ["verify"], ["show", "c-1"], ["funnel"],
    ["projections", "status"], ["keys", "list"], ["keys", "create", "k", "--scope", "feed:read"],
])
def test_a_postgres_server_out_of_reach_is_a_usage_error_in_json_too(command):
    """keys answered with a psycopg traceback (exit 1) where every other command said
    "cannot reach PostgreSQL" (exit 2)."""
    result = CliRunner().invoke(app, ["--db", UNREACHABLE, *command, "--json"])
    assert result.exit_code == 2, result.output
    assert "cannot reach PostgreSQL" in json.loads(result.stderr)["error"]


@pytest.mark.parametrize("args, name", [
    (["import", "in.jsonl", "--db", "sqlite:///x.db"], "--db"),
    (["history", "c-1", "--actor=me"], "--actor"),
    (["--json", "verify", "--db", "sqlite:///x.db"], "--db"),
])
def test_a_global_option_after_the_command_says_where_it_goes(tmp_path, args, name):
    """Click said only "No such option: --db"."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "journey", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    said = f"{name} is an option of journey itself: give it before the command"
    if "--json" in args:
        assert said in json.loads(done.stderr)["error"]
    else:
        assert said in done.stderr
    assert list(tmp_path.iterdir()) == []  # no store made


def test_a_store_behind_a_dangling_link_is_made_private_and_one_not_made_is_said(tmp_path):
    """The link itself existed, so the store SQLite then made at its target was 0644; and
    a store that cannot be made was a PermissionError/OSError traceback (exit 1)."""
    import stat

    (tmp_path / "link.db").symlink_to(tmp_path / "target.db")
    assert run(f"sqlite:///{tmp_path / 'link.db'}", "record", json.dumps(PURCHASE)).exit_code == 0
    assert stat.S_IMODE((tmp_path / "target.db").stat().st_mode) == 0o600
    too_long = tmp_path / ("x" * 300 + ".db")
    result = run(f"sqlite:///{too_long}", "record", json.dumps(PURCHASE), "--json")
    assert result.exit_code == 2, result.output
    assert "cannot open the event store" in json.loads(result.stderr)["error"]


def test_a_new_store_and_rejects_file_are_readable_by_their_owner_alone(tmp_path):
    """Made under the usual umask (0644), any local user could copy the store, keys
    included (and so read what erasure destroys later), and the rejects' plaintext."""
    import stat

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(PURCHASE) + "\nnot json\n")
    store, rejects = tmp_path / "j.db", tmp_path / "rejects.jsonl"
    old = os.umask(0o022)
    try:
        result = run(f"sqlite:///{store}", "import", str(path), "--skip-invalid",
                     "--rejects", str(rejects))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for made in (store, rejects):
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, made
    rejects.chmod(0o644)  # a file that exists keeps the mode it was given
    assert run(f"sqlite:///{store}", "import", str(path), "--skip-invalid",
               "--rejects", str(rejects)).exit_code == 0
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o644


def test_version_prints_the_installed_version():
    from importlib import metadata

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"journey {metadata.version('journey')}\n"
