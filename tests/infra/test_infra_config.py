"""Stage settings: alarm subscriptions are a stage setting, validated before anything is synthesized."""
from __future__ import annotations

import pytest

from infra.config import stage_config, stages_from_context


def test_alarm_emails_from_cdk_json_and_from_the_command_line():
    assert stage_config("dev", {"region": "eu-west-1"}).alarm_emails == ()
    listed = stage_config("dev", {"region": "eu-west-1", "alarm_emails": ["oncall@example.org", "ml@example.org"]})
    assert listed.alarm_emails == ("oncall@example.org", "ml@example.org")
    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}},
               "diagnosa:alarm_emails": " oncall@example.org, ml@example.org "}  # -c diagnosa:alarm_emails=...
    [config] = stages_from_context(context.get)
    assert config.alarm_emails == ("oncall@example.org", "ml@example.org")


@pytest.mark.parametrize("value, message", [
    (["not-an-address"], r"alarm_emails: 'not-an-address' not an e-mail address"),
    (["a@b"], r"'a@b' not an e-mail address"),
    (["ops@example.org", "ops@example.org"], "alarm_emails lists an address twice"),
    (5, "alarm_emails must be a list, got 5"),
])
def test_bad_alarm_emails_are_refused_naming_the_stage_and_the_value(value, message):
    with pytest.raises(ValueError, match=r"stage prod: .*" + message):
        stage_config("prod", {"region": "eu-west-1", "alarm_emails": value})


@pytest.mark.parametrize("values, message", [
    ({"raw_retention_mode": "compliance"}, r"raw_retention_mode must be COMPLIANCE or GOVERNANCE, got 'compliance'"),
    ({"raw_retention_days": 0}, r"raw_retention_days must be between 1 and 36500"),
    ({"raw_retention_days": "six years"}, r"raw_retention_days must be an integer, got 'six years'"),
])
def test_bad_raw_retention_is_refused(values, message):
    with pytest.raises(ValueError, match=r"stage dev: .*" + message):
        stage_config("dev", {"region": "eu-west-1", **values})


def test_raw_retention_defaults_to_six_years_compliance_and_cdk_json_relaxes_dev_only():
    import json
    from pathlib import Path

    default = stage_config("prod", {"region": "eu-west-1"})
    assert (default.raw_retention_mode, default.raw_retention_days) == ("COMPLIANCE", 2190)
    stages = json.loads((Path(__file__).parents[2] / "cdk.json").read_text())["context"]["diagnosa:stages"]
    configs = {c.stage: c for c in stages_from_context({"diagnosa:stages": stages}.get)}
    assert (configs["prod"].raw_retention_mode, configs["prod"].raw_retention_days) == ("COMPLIANCE", 2190)
    assert configs["dev"].raw_retention_mode == "GOVERNANCE"
