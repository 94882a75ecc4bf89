"""Input models: the only place raw input becomes something the engine will accept.

One pydantic model per event type of DOMAIN.md §2, joined in a union discriminated by
``type``. Every rule of "Bad input" that can be judged from the input alone is here;
the rules that need the customer's history (refunds, complaint lifecycle, retries and
conflicts) are the aggregate's.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticKnownError

from journey.errors import InputError, utf8_text
from journey.moments import check_microseconds, within_calendar

ID_CHARACTERS = "A-Za-z0-9._:@-"
CUSTOMER_ID = re.compile(f"[{ID_CHARACTERS}]+")
CUSTOMER_ID_MAX = 64
#: check_customer_id as JSON Schema (the OpenAPI document) writes it.
CUSTOMER_ID_SCHEMA = {
    "pattern": f"^[{ID_CHARACTERS}]{{1,{CUSTOMER_ID_MAX}}}$",
    "minLength": 1,
    "maxLength": CUSTOMER_ID_MAX,
}


def check_customer_id(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    if len(value) > CUSTOMER_ID_MAX:
        raise ValueError(f"is {len(value)} characters long; at most {CUSTOMER_ID_MAX} are allowed")
    if not CUSTOMER_ID.fullmatch(value):
        raise ValueError("may contain only letters, digits and . _ : @ -")
    return value


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        check_microseconds(value)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    else:
        raise ValueError("must be an ISO 8601 time string, e.g. 2025-03-01T10:00:00Z")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!s} has no time zone (add Z or an offset such as +01:00)")
    return within_calendar(parsed)


def strict_bool(value: Any) -> Any:
    """true or false: JSON's, or as text (a CSV cell; spreadsheets write TRUE/FALSE).
    Pydantic would also read 1, "yes", "off" and the like, guessing what the input meant."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ("true", "false"):
        return word == "true"
    raise ValueError(f"must be true or false, not {value!r}")


def refuse_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


#: Numbers given as text: ASCII digits only. Decimal() and pydantic's int parsing also
#: read underscores ("1_00") and other scripts' digits (fullwidth, Arabic-Indic, ...).
#: NaN and Infinity pass here for pydantic to refuse in its own words.
DECIMAL_TEXT = re.compile(
    r"\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|s?nan\d*)\s*", re.ASCII | re.I
)
INTEGER_TEXT = re.compile(r"\s*[+-]?\d+(\.0*)?\s*", re.ASCII)


def ascii_decimal(value: Any) -> Any:
    if isinstance(value, str) and not DECIMAL_TEXT.fullmatch(value):
        raise ValueError(f"{value!r} is not a decimal: write it with the digits 0-9, e.g. 59.90")
    return value


def ascii_integer(value: Any) -> Any:
    if isinstance(value, str) and not INTEGER_TEXT.fullmatch(value):
        raise ValueError(f"{value!r} is not an integer: write it with the digits 0-9")
    return value


def not_blank(value: str) -> str:
    """A text of spaces only says nothing: a required reason or id given so is missing."""
    if not value.strip():
        raise ValueError("must not be blank (it holds only white space)")
    return value


#: Control characters: none in an id or a label, only tab and line breaks in a text. A NUL
#: cannot be stored in a PostgreSQL text column: once in the log, every read model of the
#: store failed on it, for good.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NUL = re.compile("\x00")
TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_text(value: str) -> str:
    not_blank(value)
    if found := TEXT_CONTROL.search(value):
        raise control_character(found)
    return value


def check_label(value: str) -> str:
    """An id or a category is compared as it is spelt: ``o-2`` and a spreadsheet's ``o-2 ``
    would be two orders (a purchase counted twice, a refund finding neither), so white
    space around it is refused rather than kept or trimmed unseen."""
    not_blank(value)
    if value != value.strip():
        raise ValueError(f"{value!r} has white space at its start or end: remove it")
    if found := CONTROL.search(value):
        raise control_character(found)
    return value


def control_character(found: re.Match[str]) -> ValueError:
    return ValueError(
        f"holds a control character (U+{ord(found.group()):04X}) at position "
        f"{found.start() + 1}: remove it"
    )


CustomerId = Annotated[str, AfterValidator(check_customer_id)]
Time = Annotated[datetime, BeforeValidator(parse_time)]
Boolean = Annotated[bool, BeforeValidator(strict_bool)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(check_text)]
#: Order, complaint and event ids, and a purchase's category: what events are matched and
#: counted by.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(check_label)]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=2000), AfterValidator(check_label)
]


def check_reference(value: str) -> str:
    """An id that names a stored purchase or complaint: the guard looks it up as spelt, so
    an order an older Journey stored as ``o-2 `` can still be refunded (white space and
    control characters are refused where ids are first given, not where they are named)."""
    not_blank(value)
    if found := NUL.search(value):
        raise control_character(found)
    return value


#: A refund's order_id and a resolution's complaint_id: an Id already stored, named.
Reference = Annotated[
    str, StringConstraints(min_length=1, max_length=128), AfterValidator(check_reference)
]
MAX_DIGITS, DECIMAL_PLACES = 19, 4


def within_digits(value: Decimal) -> Decimal:
    """Pydantic's ``max_digits=19, decimal_places=4``, with its messages, in one pass:
    pydantic checks each in Python, reading the digits twice (a tenth of validating an
    event). Trailing zeros do not count, as there; a test holds the two to one answer."""
    _, digits, exponent = value.as_tuple()
    significant = len(digits)
    while significant > 1 and digits[significant - 1] == 0:
        significant -= 1
        exponent += 1
    if significant == 1 and digits[0] == 0:
        significant, exponent = 1, 0
    places = max(-exponent, 0)
    total = significant + exponent if exponent >= 0 else max(significant, places)
    if total > MAX_DIGITS:
        raise PydanticKnownError("decimal_max_digits", {"max_digits": MAX_DIGITS})
    if places > DECIMAL_PLACES:
        raise PydanticKnownError("decimal_max_places", {"decimal_places": DECIMAL_PLACES})
    if total - places > MAX_DIGITS - DECIMAL_PLACES:
        raise PydanticKnownError(
            "decimal_whole_digits", {"whole_digits": MAX_DIGITS - DECIMAL_PLACES}
        )
    return value


#: The sign is checked before the digits, as pydantic's own constraints were after a
#: BeforeValidator (a test holds the order).
Amount = Annotated[
    Decimal,
    BeforeValidator(refuse_bool),
    BeforeValidator(ascii_decimal),
    Field(gt=0),
    AfterValidator(within_digits),
]
Cost = Annotated[
    Decimal,
    BeforeValidator(refuse_bool),
    BeforeValidator(ascii_decimal),
    Field(ge=0),
    AfterValidator(within_digits),
]
Score = Annotated[
    int, BeforeValidator(refuse_bool), BeforeValidator(ascii_integer), Field(ge=0, le=10)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Personal(Strict):
    """Personal data: the one thing that can later be erased."""

    name: Text | None = None
    email: Text | None = None
    phone: Text | None = None
    address: Text | None = None
    note: Text | None = None


class Command(Strict):
    """What every input event has: its type, customer, valid time and optional event_id."""

    type: str
    customer_id: CustomerId
    occurred_at: Time
    event_id: Id | None = None

    def payload(self) -> dict[str, Any]:
        """The event's own fields, as stored."""
        data = {name: getattr(self, name) for name in own_fields(type(self))}
        if data.get("personal") is not None:
            data["personal"] = self.personal.model_dump(exclude_none=True)
        return data


@functools.cache
def own_fields(model: type[Command]) -> tuple[str, ...]:
    """A command type's fields beyond the envelope every command shares."""
    return tuple(name for name in model.model_fields if name not in Command.model_fields)


class Identify(Command):
    type: Literal["identified"]
    source: Text | None = None
    referred_by: CustomerId | None = None
    acquisition_cost: Cost | None = None
    personal: Personal | None = None

    @field_validator("referred_by")
    @classmethod
    def not_themselves(cls, value: str | None, info: ValidationInfo) -> str | None:
        """As for a `referral` (the aggregate's guard): customer_id, a field of the base
        model, is validated first, so it is in ``info.data`` if it was valid."""
        if value is not None and value == info.data.get("customer_id"):
            raise ValueError("a customer cannot refer themselves")
        return value


class Qualify(Command):
    type: Literal["qualified"]
    note: Text | None = None


class Disqualify(Command):
    type: Literal["disqualified"]
    reason: Text


class Contact(Command):
    type: Literal["contact"]
    channel: Literal["email", "phone", "visit", "chat", "meeting", "letter", "social", "other"]
    direction: Literal["inbound", "outbound"]
    purpose: Literal[
        "inquiry", "support", "follow_up", "feedback_request", "offer", "meeting", "other"
    ]
    cost: Cost | None = None
    personal: Personal | None = None


class Purchase(Command):
    type: Literal["purchase"]
    order_id: Id
    amount: Amount
    category: Label | None = None
    margin: Cost | None = None


class Refund(Command):
    type: Literal["refund"]
    order_id: Reference
    amount: Amount


class Complaint(Command):
    type: Literal["complaint"]
    complaint_id: Id
    topic: Literal["product", "terms", "service", "after_sales"]
    severity: Literal["low", "medium", "high"]


class ResolveComplaint(Command):
    type: Literal["complaint_resolved"]
    complaint_id: Reference
    satisfied: Boolean
    cost: Cost | None = None


class Referral(Command):
    type: Literal["referral"]
    referred_customer_id: CustomerId


class Feedback(Command):
    type: Literal["feedback"]
    score: Score


class AssignManager(Command):
    type: Literal["manager_assigned"]
    manager: Text


class GrantBenefit(Command):
    type: Literal["benefit_granted"]
    kind: Literal["financial", "social", "structural"]
    description: Text | None = None


class Leave(Command):
    type: Literal["left"]
    reason: Text | None = None


MODELS: dict[str, type[Command]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (
        Identify,
        Qualify,
        Disqualify,
        Contact,
        Purchase,
        Refund,
        Complaint,
        ResolveComplaint,
        Referral,
        Feedback,
        AssignManager,
        GrantBenefit,
        Leave,
    )
}

#: The union a service (or an OpenAPI document) accepts.
AnyCommand = Annotated[
    Identify
    | Qualify
    | Disqualify
    | Contact
    | Purchase
    | Refund
    | Complaint
    | ResolveComplaint
    | Referral
    | Feedback
    | AssignManager
    | GrantBenefit
    | Leave,
    Field(discriminator="type"),
]

ENGINE_TYPES = {
    "referral_converted": "is recorded by the engine itself, never accepted as input",
    "erased": "is recorded by `journey erase`, never accepted as input",
}


def parse_command(data: Any) -> Command:
    """Validate one input object; raise InputErrors (all of them) naming field and reason."""
    if isinstance(data, Command):
        return data
    if not isinstance(data, dict):
        raise InvalidInput([InputError("(event)", "must be a JSON object")])
    type_ = data.get("type")
    if type_ is None:
        raise InvalidInput([InputError("type", "is required")])
    model = MODELS.get(type_) if isinstance(type_, str) else None
    if model is None:
        reason = ENGINE_TYPES.get(type_) if isinstance(type_, str) else None
        expected = ", ".join(MODELS)
        raise InvalidInput(
            [
                InputError(
                    "type",
                    f"{type_!r} {reason}"
                    if reason
                    else f"unknown type {type_!r}; expected one of {expected}",
                )
            ]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput([from_pydantic(error) for error in exc.errors()]) from None


class EraseInput(Strict):
    """What `journey erase` is given besides the customer: its reason, a text like any
    event's (it is recorded in the ``erased`` event)."""

    reason: Text


def parse_erase_reason(reason: str) -> str:
    """The reason, or the InputError that names why it cannot be recorded; checked before
    the key is destroyed, so that nothing is half done."""
    utf8_text("reason", reason)
    try:
        return EraseInput(reason=reason).reason
    except ValidationError as exc:
        raise from_pydantic(exc.errors()[0]) from None


class InvalidInput(ValueError):
    """One input object failed validation; ``errors`` lists every field at fault."""

    def __init__(self, errors: list[InputError]):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def from_pydantic(error: Any) -> InputError:
    field = ".".join(str(part) for part in error["loc"]) or "(event)"
    reason = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        reason = "is not a field of this event type"
    elif error["type"] == "missing":
        reason = "is required"
    elif field == "personal" and isinstance(error.get("input"), str):  # a CSV cell
        names = ", ".join(f"personal.{name}" for name in Personal.model_fields)
        reason = f'must be an object such as {{"name": ...}}; in a CSV file, columns {names}'
    elif error["type"] == "string_type" and type(error.get("input")) in (int, float):
        # A JSON number where text goes: exports from spreadsheets write numeric ids so.
        reason = f"must be text, not the number {error['input']}: write it in quotes"
    return InputError(field, reason)
