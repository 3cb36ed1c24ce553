"""Hostile CDK context (cdk.json or -c): every bad value stops synth with a ValueError naming the stage and the
setting, in a message bounded whatever the context holds (megabytes, 5,000-digit numbers, values nested thousands
deep, thousands of keys), never a Python traceback, and never a config CloudFormation refuses at deploy."""
from __future__ import annotations

import pytest

from infra.config import declared_stages, delivery_from_context, stage_config, stages_from_context

MB = "x" * 1_000_000
LIMIT = 2_000  # characters an error may take, whatever the input


def deep(levels: int = 5_000) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def refused(call, message: str) -> str:
    with pytest.raises(ValueError, match=message) as err:
        call()
    text = str(err.value)
    assert len(text) <= LIMIT, f"{len(text):,}-character message"
    assert not any("\ud800" <= ch <= "\udfff" for ch in text), "a message stderr cannot print"
    return text


@pytest.mark.parametrize("values, message", [
    # Megabytes quoted whole made megabyte errors.
    ({"region": MB}, r"stage dev: region 'x+…' is not a region where SageMaker runs"),
    ({"retrain_schedule": MB}, r"stage dev: retrain_schedule 'x+…' must be"),
    ({"traffic_shifting": MB}, r"stage dev: traffic_shifting must be CANARY or ALL_AT_ONCE, got 'x+…'"),
    ({"bake_seconds": MB}, r"stage dev: bake_seconds must be an integer, got 'x+…'"),
    ({"vpc": MB}, r"stage dev: vpc must be true or false, got 'x+…'"),
    ({"families": [MB]}, r"stage dev: families names 'x+"),
    ({"families": ["mlp"] * 100_000}, r"stage dev: families lists 100,000 names"),
    ({"alarm_emails": [f"bad{i}" for i in range(100_000)]}, r"alarm_emails: 'bad0', .* and 99,990 more not an e-mail"),
    ({"dataset_config": "a" * 5_000}, r"stage dev: dataset_config: dataset config a+"),
    ({"bake_seconds": list(range(1_000_000))}, r"stage dev: bake_seconds must be an integer, got \[0, 1,"),
    ({f"k{i}": 1 for i in range(10_000)}, r"stage dev: unknown settings \['k0', .* and 9,990 more\]"),
    ({MB: 1}, r"stage dev: unknown settings \['x+…'\]"),
    # Numbers of over 4,300 digits: Python's int() and str() refuse them with an error naming no setting.
    ({"bake_seconds": "9" * 5_000}, "stage dev: bake_seconds must be a number of at most 100 digits"),
    ({"recall_threshold": "9" * 5_000}, "stage dev: recall_threshold must be a number of at most 100 digits"),
    ({"capture_expiry_days": 10 ** 5_000}, "stage dev: capture_expiry_days must be a number of at most 100 digits, "
                                           "got an integer of about 5,000 digits"),
    ({"monitor_window": "9" * 5_000 + "d"}, "stage dev: monitor_window '9+…' must be a duration"),
    ({"monitor_feedback_lag": "9" * 5_000 + "d"}, "stage dev: monitor_feedback_lag '9+…' must be 0 or a duration"),
    ({"bake_seconds": 1e300}, "stage dev: bake_seconds must be an integer, got 1e"),
    # A float setting given an integer too large for a float: an OverflowError.
    ({"recall_threshold": 10 ** 400}, "stage dev: recall_threshold must be a number of at most 100 digits"),
    # Nested thousands deep: repr() raised RecursionError.
    ({"bake_seconds": deep()}, r"stage dev: bake_seconds must be an integer, got \{'a': \{'a'"),
    ({"retrain_schedule": deep()}, r"stage dev: retrain_schedule must be a string, got \{'a'"),
    ({"families": [deep()]}, r"stage dev: families must be a list of strings, got \[\{'a'"),
    ({"vpc": deep()}, r"stage dev: vpc must be true or false, got \{'a'"),
    # Accepted, then over CloudFormation's 500 resources per stack (one subscription each).
    ({"alarm_emails": [f"ops{i}@example.org" for i in range(1_000)]},
     "stage dev: alarm_emails lists 1,000 addresses, at most 50"),
])
def test_hostile_stage_values_are_refused_naming_the_setting_in_a_bounded_message(values, message):
    refused(lambda: stage_config("dev", {"region": "eu-west-1", **values}), message)


@pytest.mark.parametrize("stage, message", [
    ("dev\ud800", r"stage 'dev\\ud800': stage holds a lone UTF-16 surrogate"),  # printing it to stderr raised
    ("a" * 1_000, r"stage 'a+…': stage name 'a+…' must be 2-12 lowercase"),
    (MB, r"stage 'x+…': stage name 'x+…' must be"),
])
def test_odd_stage_names_are_quoted_bounded_and_printable(stage, message):
    text = refused(lambda: declared_stages({"diagnosa:stages": {stage: {"region": "eu-west-1"}}}.get), message)
    text.encode("utf-8")


def test_thousands_of_misspelt_context_keys_are_named_in_a_bounded_message():
    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, **{f"diagnosa:k{i}": 1 for i in range(10_000)},
               "diagnosa:" + MB: 1}
    refused(lambda: declared_stages(context.get, context), r"unknown context key\(s\) \['diagnosa:k0', .* and "
                                                           r"9,991 more\]")


@pytest.mark.parametrize("wanted, message", [
    (["dev"], r"unknown stage \['dev'\]"),  # a TypeError: unhashable type 'list'
    ({"dev": 1}, r"unknown stage \{'dev': 1\}"),
    (MB, r"unknown stage 'x+…'"),
])
def test_a_stage_picked_by_a_value_that_is_not_a_name_is_refused(wanted, message):
    refused(lambda: stages_from_context({"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "stage": wanted}.get),
            message)


def test_unknown_stage_with_thousands_declared_names_some():
    stages = {f"s{i}": {"region": "eu-west-1"} for i in range(300)}
    refused(lambda: stages_from_context({"diagnosa:stages": stages, "stage": "nope"}.get),
            r"unknown stage 'nope' .*declared: s0, s1, .* and 290 more")


DELIVERY = {"region": "eu-west-1", "stages": ["dev"], "repository": "diagnosa"}
CONNECTION = "arn:aws:codestar-connections:eu-west-1:123456789012:connection/abc"


@pytest.mark.parametrize("values, message", [
    # Accepted, then refused by jsii (a lone surrogate is no JSON text) or by CodePipeline.
    ({"branch": "ma\ud800in"}, "diagnosa:delivery: branch holds a lone UTF-16 surrogate"),
    ({"repository": "o/n\ud800", "connection_arn": CONNECTION}, "diagnosa:delivery: repository holds a lone"),
    ({"branch": MB}, r"diagnosa:delivery: branch 'x+…' is 1,000,000 characters long, at most 255"),
    ({"repository": "o/" + "n" * 1_000, "connection_arn": CONNECTION}, r"repository 'o/n+…' must be owner/name"),
    ({"region": "xx-foo-9", "account": "123456789012"}, "region 'xx-foo-9' is not a region botocore knows"),
    ({"region": "cn-north-1", "account": "123456789012"}, "region 'cn-north-1' is in the aws-cn partition"),
    # Unbounded: every value quoted whole.
    ({"repository": MB}, r"repository 'x+…' is not a CodeCommit"),
    ({"stages": [f"s{i}" for i in range(100_000)]}, r"stages \['s0', .* and 99,990 more\] are not declared"),
    ({f"k{i}": 1 for i in range(10_000)}, r"unknown settings \['k0', .* and 9,990 more\]"),
])
def test_hostile_delivery_values_are_refused_in_a_bounded_message(values, message):
    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "diagnosa:delivery": {**DELIVERY, **values}}
    refused(lambda: delivery_from_context(context.get), message)


def test_a_cross_region_pipeline_of_many_stages_is_one_bounded_problem():
    stages = {f"s{i}": {"region": "us-east-1"} for i in range(100)}
    context = {"diagnosa:stages": stages, "diagnosa:delivery": {**DELIVERY, "stages": list(stages)}}
    refused(lambda: delivery_from_context(context.get),
            r"stage s0 deploys to us-east-1, not the pipeline's region eu-west-1 \(so do s1, .* and 89 more\)")


@pytest.mark.parametrize("delivery, message", [
    ("dev,prod", "diagnosa:delivery must be an object of settings, got 'dev,prod'"),  # an AttributeError
    (["dev"], r"diagnosa:delivery must be an object of settings, got \['dev'\]"),
    ({"account": 5}, "diagnosa:delivery: account 5 must be 12 digits"),  # reached the stack unchecked
    ({"account": "x" * 100_000}, r"diagnosa:delivery: account 'x+…' must be 12 digits"),
])
def test_one_stage_picked_still_checks_the_delivery_account_its_stack_trusts(delivery, message):
    from infra.app import build_app, new_app

    app = new_app({"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "stage": "dev", "diagnosa:delivery": delivery})
    refused(lambda: build_app(app), message)
