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
