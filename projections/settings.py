"""The thresholds of DOMAIN.md §3, as one validated, versioned settings object.

Every number a rule compares against lives here, with the default DOMAIN.md names, so an
operator can change a rule without touching code. A change of settings changes ``version``:
every answer names the version it used, so a stale answer can always be recognised.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer

from journey.errors import JourneyError

ENV_VAR = "JOURNEY_SETTINGS"

Days = int


class SettingsError(JourneyError):
    """The settings file cannot be read or is not valid."""


@functools.cache
def duration(days: int) -> timedelta:
    """A number of days as a duration, made once: a rebuild asks millions of times."""
    return timedelta(days=days)


class Settings(BaseModel):
    """Every threshold of DOMAIN.md §3 (and the default margin rate of §2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # §2: margins are defaulted at read time, never stored.
    default_margin_rate: Decimal = Field(Decimal("0.30"), ge=0, le=1)

    # Loyalty stage.
    advocate_referral_days: Days = Field(365, gt=0)
    client_min_purchases: int = Field(4, ge=1)
    client_min_categories: int = Field(2, ge=1)
    client_min_tenure_days: Days = Field(180, ge=0)
    client_recent_days: Days = Field(365, gt=0)
    client_min_recent_purchases: int = Field(2, ge=1)
    repeat_min_purchases: int = Field(2, ge=2)

    # Status.
    lapsed_after_days: Days = Field(365, gt=0)
    at_risk_min_purchases: int = Field(2, ge=2)
    at_risk_min_days: Days = Field(90, ge=0)
    at_risk_gap_factor: float = Field(2.0, gt=0, allow_inf_nan=False)

    # Relationship level.
    partnership_meeting_days: Days = Field(180, gt=0)
    proactive_days: Days = Field(365, gt=0)
    proactive_min_months: int = Field(2, ge=1)
    accountable_days: Days = Field(365, gt=0)
    accountable_follow_up_days: Days = Field(14, ge=0)
    reactive_days: Days = Field(365, gt=0)

    # Value scores.
    frequency_days: Days = Field(365, gt=0)
    nps_promoter_min: int = Field(9, ge=0, le=10)
    nps_passive_min: int = Field(7, ge=0, le=10)

    # Trust, commitment, involvement (README: "Trust, commitment, involvement").
    trust_base: int = Field(50, ge=0, le=100)
    trust_per_satisfied: int = Field(10, ge=0)
    trust_per_unsatisfied: int = Field(15, ge=0)
    trust_per_overdue: int = Field(10, ge=0)
    complaint_overdue_days: Days = Field(30, ge=0)
    commitment_per_repeat: int = Field(8, ge=0)
    commitment_max_repeats: int = Field(5, ge=0)
    commitment_per_tenure_year: int = Field(10, ge=0)
    commitment_max_tenure_years: int = Field(3, ge=0)
    commitment_per_converted: int = Field(15, ge=0)
    commitment_max_converted: int = Field(2, ge=0)
    involvement_days: Days = Field(365, gt=0)
    involvement_per_contact: int = Field(10, ge=0)
    involvement_max_contacts: int = Field(4, ge=0)
    involvement_per_feedback: int = Field(10, ge=0)
    involvement_max_feedback: int = Field(3, ge=0)
    involvement_per_referral: int = Field(15, ge=0)
    involvement_max_referrals: int = Field(2, ge=0)

    @field_serializer("default_margin_rate", when_used="json")
    def one_spelling(self, rate: Decimal) -> str:
        """One text for one number, so that equal settings get one version (0.3, "0.30"
        and 0.300 alike): its digits without trailing zeros, but at least two decimals,
        as the default has always been written."""
        whole, _, fraction = f"{rate.copy_abs():f}".partition(".")  # -0 is 0 (ge=0 holds)
        return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"

    @cached_property
    def version(self) -> str:
        """A short hash of the canonical settings: equal settings, equal version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> Settings:
        """Settings with some values changed, validated like any others and with their own
        ``version`` (pydantic's copy would keep this one's cached version, which names the
        rules a read model was built with, and take any value unchecked)."""
        return type(self).model_validate({**self.model_dump(), **(update or {})})

    def changed(self, since: Settings, names: Iterable[str] | None = None) -> list[str]:
        """``name: old -> new`` for each setting of ``names`` (default every one) that
        differs from ``since``: what an operator must know to judge a stale read model."""
        now, before = self.model_dump(mode="json"), since.model_dump(mode="json")
        return [
            f"{name}: {before[name]} -> {now[name]}"
            for name in (names if names is not None else now)
            if now[name] != before[name]
        ]

    def days(self, name: str) -> timedelta:
        """A day-count setting as a duration."""
        return duration(getattr(self, name))

    def windows(self) -> tuple[timedelta, ...]:
        """Every "last D days" window and age threshold: the moments an event leaves one
        are where a state can change with no new event."""
        return windows(tuple(getattr(self, name) for name in WINDOWS))


#: The settings that name a window or an age threshold, in days.
WINDOWS = (
    "advocate_referral_days",
    "client_min_tenure_days",
    "client_recent_days",
    "partnership_meeting_days",
    "proactive_days",
    "accountable_days",
    "reactive_days",
    "frequency_days",
    "involvement_days",
)


#: The settings the loyalty stage, status and relationship level follow, and so the
#: timeline, which holds only those three: the value scores' settings change none of them
#: (tests/test_rows_equivalence.py shows it), so a change of those alone leaves the
#: timeline right and a rebuild of it would be wasted.
CLASSIFICATION = (
    "advocate_referral_days",
    "client_min_purchases",
    "client_min_categories",
    "client_min_tenure_days",
    "client_recent_days",
    "client_min_recent_purchases",
    "repeat_min_purchases",
    "lapsed_after_days",
    "at_risk_min_purchases",
    "at_risk_min_days",
    "at_risk_gap_factor",
    "partnership_meeting_days",
    "proactive_days",
    "proactive_min_months",
    "accountable_days",
    "accountable_follow_up_days",
    "reactive_days",
)


@functools.cache
def windows(days: tuple[int, ...]) -> tuple[timedelta, ...]:
    """The distinct durations of these day counts, shortest first, worked out once: the
    search for a summary's next change asks for every customer."""
    return tuple(sorted({duration(d) for d in days}))


DEFAULT = Settings()


def load_settings(path: str | Path | None = None) -> Settings:
    """The settings in ``path`` (else $JOURNEY_SETTINGS, else the defaults).

    JSON, or TOML when the file name ends in ``.toml``; absent keys keep their defaults.
    """
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return DEFAULT
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read settings file {str(path)!r}: {exc}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(settings)'}: {e['msg']}{guess(e)}"
            for e in exc.errors()
        )
        raise SettingsError(f"invalid settings in {str(path)!r}: {problems}") from None


def guess(error: Any) -> str:
    """The setting an unknown key likely meant: pydantic says only that extra inputs are
    not permitted, which leaves the operator to find a misspelling among forty names."""
    if error["type"] != "extra_forbidden" or len(error["loc"]) != 1:
        return ""
    close = difflib.get_close_matches(str(error["loc"][0]), Settings.model_fields, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""
