"""Settings: DOMAIN.md's defaults, files in JSON or TOML, validation, a stable version."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from rules_builders import Story

from projections.settings import Settings, SettingsError, load_settings

#: The default settings' version: what every read model built with the defaults names, so
#: a change of how settings are written must not move it (they would all turn stale).
DEFAULT_VERSION = "a3b14ec8499b"


def test_defaults_are_domain_md():
    s = Settings()
    assert s.default_margin_rate == Decimal("0.30")
    client = (s.client_min_purchases, s.client_min_categories, s.client_min_tenure_days)
    assert client == (4, 2, 180)
    assert (s.lapsed_after_days, s.at_risk_min_days, s.at_risk_gap_factor) == (365, 90, 2.0)
    assert (s.partnership_meeting_days, s.accountable_follow_up_days) == (180, 14)
    assert (s.nps_promoter_min, s.nps_passive_min, s.complaint_overdue_days) == (9, 7, 30)


def test_json_and_toml_files_and_the_environment(tmp_path, monkeypatch):
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps({"lapsed_after_days": 30}))
    as_toml = tmp_path / "rules.toml"
    as_toml.write_text("lapsed_after_days = 30\n")
    assert load_settings(as_json) == load_settings(as_toml) == Settings(lapsed_after_days=30)
    monkeypatch.setenv("JOURNEY_SETTINGS", str(as_json))
    assert load_settings().lapsed_after_days == 30
    monkeypatch.delenv("JOURNEY_SETTINGS")
    assert load_settings() == Settings()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('{"lapsed_after_days": 0}', "lapsed_after_days"),
        ('{"no_such_rule": 1}', "no_such_rule"),
        ("{not json", "cannot read"),
        ('{"trust_base": 101}', "trust_base"),
        ('{"at_risk_gap_factor": Infinity}', "at_risk_gap_factor: Input should be a finite"),
    ],
)
def test_invalid_settings_are_refused_with_the_field(tmp_path, content, named):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SettingsError, match=r"bad\.json") as refused:
        load_settings(path)
    assert named in str(refused.value)


def test_a_misspelt_setting_names_the_likely_one(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text("lapsed_afer_days = 30\nno_such_rule = 1\n")
    with pytest.raises(SettingsError) as refused:
        load_settings(path)
    said, hint = str(refused.value), "did you mean `lapsed_after_days`?"
    assert f"lapsed_afer_days: Extra inputs are not permitted ({hint})" in said
    assert said.endswith("no_such_rule: Extra inputs are not permitted")  # nothing close


def test_the_version_names_the_content():
    assert Settings().version == Settings().version
    assert Settings(lapsed_after_days=30).version != Settings().version
    # one number written several ways is one setting; the default's version never moved
    assert Settings().version == DEFAULT_VERSION
    for rate in ("0.3", 0.3, "0.300", Decimal("0.30")):
        assert Settings(default_margin_rate=rate).version == Settings().version
    assert Settings(default_margin_rate="0.305").version != Settings().version
    one, also_one = Settings(default_margin_rate="1"), Settings(default_margin_rate="1.000")
    assert one.version == also_one.version
    assert Settings(default_margin_rate="-0").version == Settings(default_margin_rate=0).version
    close = Settings(default_margin_rate="0.30000000000000000000000000001")  # past 28 digits
    assert close.version != Settings().version
    story = Story()
    story.purchase(0)
    assert story.answer(0).settings_version == Settings().version


def test_a_copy_with_changes_is_validated_and_has_its_own_version():
    base = Settings()
    assert base.version  # cached on the original before it is copied
    changed = base.model_copy(update={"lapsed_after_days": 30})
    assert changed.lapsed_after_days == 30
    assert changed.version == Settings(lapsed_after_days=30).version != base.version
    with pytest.raises(ValueError, match="lapsed_after_days"):
        base.model_copy(update={"lapsed_after_days": -5})


def test_a_threshold_changes_the_answer():
    story = Story()
    story.purchase(0)
    strict = Settings(lapsed_after_days=30)
    assert story.answer(31).status.value == "active"
    assert story.answer(31, strict).status.value == "lapsed"
