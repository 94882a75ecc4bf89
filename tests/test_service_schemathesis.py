"""Schemathesis against the served OpenAPI document: no generated request gets a 500.

In process (ASGI) on a SQLite store with a key of every scope, a bounded number of
examples per operation. The SSE endpoint is left out: it never ends by design (its
paged twin, /v1/feed/page, takes the same parameters and is tested here).
"""

from __future__ import annotations

import json
import os
import re
import warnings

import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")

import schemathesis  # noqa: E402  (in the test extras: missing, it must fail, not skip)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from commands.models import CUSTOMER_ID_SCHEMA, check_customer_id, parse_command  # noqa: E402
from journey.storage import Database  # noqa: E402
from projections.feed import KINDS  # noqa: E402
from projections.readmodels.store import make_engine  # noqa: E402
from service import create_app  # noqa: E402
from service.errors import Problem  # noqa: E402
from service.keys import SCOPES, Keys  # noqa: E402
from service.routes.feed import kinds_of  # noqa: E402

EXAMPLES = int(os.environ.get("JOURNEY_SCHEMATHESIS_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'journey.db'}"
    engine = make_engine(Database.parse(url))
    key = Keys(engine).create("schemathesis", list(SCOPES))
    engine.dispose()
    app = create_app(url)
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    return app, schema.exclude(path="/v1/feed", method="GET"), headers


def test_openapi_describes_every_endpoint_its_models_and_errors(served):
    app, _schema, _headers = served
    document = app.openapi()
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert operations == {
        ("GET", "/health"), ("POST", "/v1/events"), ("GET", "/v1/customers/{customer_id}"),
        ("GET", "/v1/customers/{customer_id}/history"), ("GET", "/v1/funnel"),
        ("GET", "/v1/projections"), ("POST", "/v1/projections/{name}/rebuild"),
        ("GET", "/v1/feed"), ("GET", "/v1/feed/page"),
    }
    schemas = document["components"]["schemas"]
    for model in ("Purchase", "Refund", "Contact", "CustomerAnswer", "FeedEntry", "Errors",
                  "Recorded", "HistoryStep", "Funnel", "ProjectionsStatus"):
        assert schemas[model]["properties"], model
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            if path != "/health":
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
                assert operation["security"] == [{"HTTPBearer": []}]
    events = document["paths"]["/v1/events"]["post"]
    assert {"201", "409", "422"} <= set(events["responses"])
    assert "oneOf" in events["requestBody"]["content"]["application/json"]["schema"]


def test_no_generated_request_gets_a_server_error(served):
    _app, schema, headers = served
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 8
    calls: list[str] = []
    for operation in operations:
        exercise(operation, headers, failures, calls)
    assert len(calls) > 4 * EXAMPLES, len(calls)  # hypothesis really generated cases
    assert not failures, "\n".join(failures[:10])


def exercise(operation, headers: dict[str, str], failures: list[str], calls: list[str]) -> None:
    """EXAMPLES generated cases of one operation; every 5xx is collected."""

    @given(operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def one(case) -> None:
        asked = f"{case.method} {case.formatted_path} query={case.query} body={case.body!s:.300}"
        calls.append(asked)
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # the in-process client re-raises what the server raised
            failures.append(f"{asked} -> raised {type(exc).__name__}: {str(exc)[:500]}")
            return
        if response.status_code >= 500:
            failures.append(f"{asked} -> {response.status_code} {response.text[:300]}")

    one()


ID_TEXT = st.text(st.characters(codec="utf-8"), max_size=70) | st.text("ab9._:@- /", max_size=70)


@given(ID_TEXT)
@settings(deadline=None)
def test_the_documented_customer_id_is_the_one_the_server_takes(text):
    """The path's pattern is documented, not enforced by FastAPI (the server's own check
    gives the reason): a client validating against the document must agree with it."""
    parameter = document()["paths"]["/v1/customers/{customer_id}"]["get"]["parameters"][0]
    assert parameter["name"] == "customer_id"
    try:
        check_customer_id(text)
        taken = True
    except ValueError:
        taken = False
    assert documented_match(parameter["schema"], text) == taken


KIND_TEXT = st.lists(st.sampled_from([*KINDS, "stage", "", " ", "\t", "status\n"]),
                     max_size=4).map(",".join)


@given(KIND_TEXT)
@settings(deadline=None)
def test_the_documented_kinds_are_the_ones_the_server_takes(text):
    parameters = document()["paths"]["/v1/feed/page"]["get"]["parameters"]
    (kinds,) = [p for p in parameters if p["name"] == "kinds"]
    try:
        kinds_of([text])
        taken = True
    except Problem:
        taken = False
    assert documented_match(kinds["schema"]["items"], text) == taken


def test_the_funnel_documents_its_stale_header():
    ok = document()["paths"]["/v1/funnel"]["get"]["responses"]["200"]
    assert "Journey-Stale" in ok["headers"]


_DOCUMENT: dict = {}


def document() -> dict:
    """The OpenAPI document of an app on no store (building it opens nothing)."""
    if not _DOCUMENT:
        _DOCUMENT.update(create_app("sqlite:///:memory:").openapi())
    return _DOCUMENT


def documented_match(schema: dict, text: str) -> bool:
    """Whether ``text`` satisfies the string keywords of ``schema`` (JSON Schema's
    lengths count code points, as Python's len does)."""
    return (
        schema.get("minLength", 0) <= len(text) <= schema.get("maxLength", len(text))
        # JSON Schema's $ is the end of the text; Python's also matches before a last \n
        and re.fullmatch(schema["pattern"].removeprefix("^").removesuffix("$"), text)
        is not None
    )


def test_optional_ids_and_the_error_headers_are_documented():
    schemas = document()["components"]["schemas"]
    (referred,) = [b for b in schemas["Identify"]["properties"]["referred_by"]["anyOf"]
                   if b.get("type") == "string"]
    assert referred["pattern"] == CUSTOMER_ID_SCHEMA["pattern"]
    responses = document()["paths"]["/v1/events"]["post"]["responses"]
    assert "WWW-Authenticate" in responses["401"]["headers"]
    assert "Retry-After" in responses["503"]["headers"]
    for bound in ("gt", "ge", "lt", "le"):  # pydantic's, which JSON Schema ignores
        assert f'"{bound}":' not in json.dumps(schemas), bound
    score = schemas["Feedback"]["properties"]["score"]
    assert (score["minimum"], score["maximum"]) == (0, 10)


def amount_branches(field: dict) -> tuple[dict, dict]:
    inner = [b for b in field["anyOf"] if "anyOf" in b] or [field]  # optional: anyOf null
    number, text = (next(b for b in inner[0]["anyOf"] if b["type"] == t)
                    for t in ("number", "string"))
    return number, text


@pytest.mark.parametrize("model, name, refused", [
    ("Purchase", "amount", ["0", "0.00", "-5", "1_00", "abc", "1.23456", "NaN", " 5",
                            "\uff15"]),
    ("Contact", "cost", ["-1", "1_00", "1.23456", "abc"]),
])
def test_a_documented_decimal_is_one_the_server_takes(model, name, refused):
    """pydantic wrote the bounds as gt/ge, which JSON Schema ignores: a client checking
    against the document sent 0 or -5 as an amount and got 422."""
    number, text = amount_branches(document()["components"]["schemas"][model]["properties"][name])
    assert number.get("exclusiveMinimum", number.get("minimum")) == 0
    pattern = text["pattern"]
    for bad in refused:
        assert re.fullmatch(pattern.removeprefix("^").removesuffix("$"), bad) is None, bad

    @given(st.from_regex(pattern, fullmatch=True, alphabet=st.characters(codec="ascii")))
    @settings(deadline=None, max_examples=60)
    def taken(value: str) -> None:
        event = {"type": model.lower(), "customer_id": "c-1",
                 "occurred_at": "2025-01-01T00:00:00Z", name: value}
        if model == "Purchase":
            event["order_id"] = "o-1"
        else:
            event.update(channel="email", direction="outbound", purpose="offer")
        parse_command(event)  # raises if the server refuses what the document allows

    taken()
