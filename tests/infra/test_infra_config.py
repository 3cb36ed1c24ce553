"""Stage settings: alarm subscriptions are a stage setting, validated before anything is synthesized."""
from __future__ import annotations

import json

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


@pytest.mark.parametrize("values, message", [
    # Values AWS refuses at deploy (or that would break the stack's behaviour), refused at synth instead.
    ({"capture_expiry_days": 0}, r"capture_expiry_days must be \[1, 36500\].*got 0"),
    ({"noncurrent_version_days": -1}, r"noncurrent_version_days must be \[1, 36500\].*got -1"),
    ({"access_log_days": 0}, r"access_log_days must be \[1, 36500\].*got 0"),
    ({"log_retention_days": 0}, r"log_retention_days must be \[1, 3653\], got 0"),
    ({"log_retention_days": 5000}, r"log_retention_days must be \[1, 3653\], got 5000"),
    ({"retrain_schedule": "rate(0 days)"}, r"retrain_schedule 'rate\(0 days\)' must be rate\(1 hour\|day\)"),
    ({"retrain_schedule": "rate(1 days)"}, "retrain_schedule 'rate"),
    ({"retrain_schedule": "rate(7 day)"}, "retrain_schedule 'rate"),
    ({"monitor_schedule": "cron(bad)"}, r"monitor_schedule 'cron\(bad\)' must be"),
    ({"retrain_schedule": 7}, "retrain_schedule must be a string, got 7"),
    ({"invocations_per_instance": 0}, r"invocations_per_instance must be \[1, 100000\].*got 0"),
    ({"alarm_5xx_errors": -1}, r"alarm_5xx_errors must be \[1, 100000\].*got -1"),
    ({"alarm_model_latency_ms": 0}, r"alarm_model_latency_ms must be \[1, 60000\].*got 0"),
    ({"drift_threshold": 0}, "drift_threshold must be a positive finite number, got 0.0"),
    ({"drift_threshold": "nan"}, "drift_threshold must be a number, got 'nan'"),
    ({"drift_threshold": "inf"}, "drift_threshold must be a number, got 'inf'"),
    ({"drift_metric_namespace": "AWS/SageMaker"}, "the namespace not under AWS/"),
    # Types as cdk.json may carry them: named, never a TypeError or a jsii traceback.
    ({"account": 123456789012}, "account must be a string, got 123456789012"),
    ({"endpoint_instance_type": 5}, "endpoint_instance_type must be a string, got 5"),
    ({"families": ["mlp", 1]}, r"families must be a list of strings, got \['mlp', 1\]"),
    ({"endpoint_max_instances": True}, "endpoint_max_instances must be an integer, got True"),
    ({"endpoint_max_instances": "1_0"}, "endpoint_max_instances must be an integer, got '1_0'"),
    # A trailing newline or another script's digits matched "$" and "\d".
    ({"account": "123456789012\n"}, "account '123456789012\\\\n' must be 12 digits"),
    ({"account": "١٢٣٤٥٦٧٨٩٠١٢"}, "must be 12 digits"),
    ({"alarm_emails": ["ops@example.org\n"]}, "not an e-mail address"),
    ({"alarm_emails": ["ops@example.org", "OPS@example.org"]}, "alarm_emails lists an address twice"),
    ({"monitor_window": "7d\n"}, "monitor_window '7d\\\\n' must be a duration"),
    # A window longer than the captures are kept read less than it said; 99999999999w crashed the Lambda.
    ({"monitor_window": "13w"}, r"monitor_window 13w is longer than capture_expiry_days \(90\): .* give at most 90d"),
    ({"monitor_window": "99999999999w"}, "monitor_window 99999999999w is longer than capture_expiry_days"),
    ({"monitor_schedule": "rate(8 days)", "capture_expiry_days": 7},
     r"monitor_window 8d \(the schedule period\) is longer than capture_expiry_days \(7\)"),
    # The live quality's requests (the window and the feedback lag before it) must still be in the lake.
    ({"monitor_feedback_lag": "7 days"}, "monitor_feedback_lag '7 days' must be 0 or a duration like 12h, 7d or 2w"),
    ({"monitor_feedback_lag": "-1d"}, "monitor_feedback_lag '-1d' must be 0 or a duration"),
    ({"monitor_window": "84d"}, r"monitor_window 84d and monitor_feedback_lag 7d reach back further than "
                                r"capture_expiry_days \(90\): .* shorten the lag or keep captures longer"),
    ({"capture_expiry_days": 7}, r"monitor_window 1d \(the schedule period\) and monitor_feedback_lag 7d reach back"),
    # Instance types: botocore's list of what SageMaker takes, with a hint.
    ({"endpoint_instance_type": "m5.large"}, r"'m5.large' is not a SageMaker endpoint instance type .*did you mean "
                                             r".*ml.m5.large"),
    ({"training_instance_type": "ml.bogus.large"}, "'ml.bogus.large' is not a SageMaker training instance type"),
    ({"monitor_instance_type": ""}, "monitor_instance_type: '' is not a SageMaker processing instance type"),
    # The pipeline's jobs always carry the stage's volume key, which SageMaker refuses for local (NVMe) storage.
    ({"training_instance_type": "ml.g5.xlarge"}, r"training_instance_type: 'ml.g5.xlarge' has local \(NVMe\) storage, "
                                                 r"for which SageMaker refuses a VolumeKmsKeyId"),
    ({"processing_instance_type": "ml.r5d.large"}, r"processing_instance_type: 'ml.r5d.large' has local \(NVMe\)"),
    ({"families": []}, r"families must be a non-empty list"),
    ({"families": ["mlp", "mlp"]}, "families names 'mlp' more than once"),
    ({"families": ["lightgbm"]}, "families names 'lightgbm', not among"),
    ({"vpc": True, "vpc_cidr": "banana"}, r"vpc_cidr 'banana' must be a private IPv4 network, /16 to /21"),
    ({"vpc": True, "vpc_cidr": "10.0.0.0/24"}, "vpc_cidr '10.0.0.0/24' must be"),
    ({"vpc": True, "vpc_cidr": "8.8.0.0/16"}, "vpc_cidr '8.8.0.0/16' must be a private"),
    ({"drift_metric_namespace": "drift\ud800"}, "drift_metric_namespace holds a lone UTF-16 surrogate"),
    ({"endpoint_min_instances": 3, "endpoint_max_instances": 2},
     "need 1 <= endpoint_min_instances <= endpoint_max_instances, got 3 and 2"),
    ({"canary_percent": 60}, r"canary_percent must be in \[1, 50\], got 60"),
    ({"training_max_runtime_seconds": 0}, r"training_max_runtime_seconds must be in \[1, 2419200\] \(28 days"),
    ({"training_max_runtime_seconds": "2h"}, r"training_max_runtime_seconds must be an integer, got '2h'"),
    ({"capture_sampling_percent": 101}, r"capture_sampling_percent must be in \[0, 100\], got 101"),
])
def test_settings_aws_would_refuse_stop_synth_naming_the_stage_field_and_value(values, message):
    with pytest.raises(ValueError, match=r"stage dev: .*" + message):
        stage_config("dev", {"region": "eu-west-1", **values})


@pytest.mark.parametrize("values", [
    {"retrain_schedule": "rate(1 day)", "monitor_schedule": "rate(12 hours)"},
    {"retrain_schedule": "cron(0 3 ? * MON *)", "monitor_schedule": "cron(0 4 * * ? *)", "monitor_window": "1d"},
    {"retrain_schedule": "", "monitor_schedule": ""},
    {"vpc": True, "vpc_cidr": "10.40.0.0/21"},
    {"endpoint_instance_type": "ml.g4dn.xlarge", "training_instance_type": "ml.c5.2xlarge"},
    {"monitor_instance_type": "ml.g4dn.xlarge"},  # the function's jobs leave the volume key out for it
    {"log_retention_days": 3653, "capture_expiry_days": 1, "monitor_feedback_lag": "0"},
    {"monitor_window": "90d", "monitor_feedback_lag": "0"},
    {"monitor_window": "2160h", "monitor_schedule": "cron(0 4 * * ? *)", "monitor_feedback_lag": "0"},
    {"monitor_window": "83d"}, {"monitor_feedback_lag": "89d"}, {"monitor_feedback_lag": "12h"},
])
def test_settings_aws_takes_synthesize(values):
    config = stage_config("dev", {"region": "eu-west-1", **values})
    assert all(getattr(config, name) == value for name, value in values.items())


def test_stage_blocks_of_the_wrong_shape_are_named():
    from infra.config import declared_stages

    for stages, message in (("dev", "diagnosa:stages must be an object"),
                            ({"dev": "eu-west-1"}, "stage dev: its block in diagnosa:stages must be an object"),
                            ({"dev": {"region": "eu-west-1", "stage": "prod"}}, r"stage dev: unknown settings \['stage'\]")):
        with pytest.raises(ValueError, match=message):
            declared_stages({"diagnosa:stages": stages}.get)


def test_a_misspelt_command_line_override_stops_synth_instead_of_being_ignored():
    """`-c diagnosa:endpoint_max_instance=5` (one letter short) used to synth with the default 2."""
    from infra.config import declared_stages

    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "diagnosa:endpoint_max_instance": "5"}
    with pytest.raises(ValueError, match=r"unknown context key\(s\) \['diagnosa:endpoint_max_instance'\]"):
        declared_stages(context.get, context)
    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "diagnosa:endpoint_max_instances": "5"}
    assert declared_stages(context.get, context)["dev"].endpoint_max_instances == 5


def test_a_promotion_cycle_is_refused_without_a_delivery_pipeline():
    from infra.config import check_promotions, declared_stages

    stages = declared_stages({"diagnosa:stages": {"dev": {"region": "eu-west-1", "promote_from": "prod"},
                                                  "prod": {"region": "eu-west-1", "promote_from": "dev"}}}.get)
    with pytest.raises(ValueError, match="promote_from forms a cycle: dev <- prod <- dev"):
        check_promotions(stages)


@pytest.mark.parametrize("delivery, message", [
    ("dev,prod", "diagnosa:delivery must be an object of settings, got 'dev,prod'"),
    ({"region": "eu-west-1", "stages": ["dev"], "repository": "my repo"}, "repository 'my repo' is not a CodeCommit"),
    ({"region": "eu-west-1", "stages": ["dev"], "repository": 5}, "diagnosa:delivery: repository must be a string"),
    ({"region": "eu-west-1", "stages": ["dev"], "repository": "diagnosa", "branch": "feature..x"},
     "branch 'feature..x' must be a valid git branch name"),
])
def test_bad_delivery_settings_are_named(delivery, message):
    from infra.config import delivery_from_context

    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "diagnosa:delivery": delivery}
    with pytest.raises(ValueError, match=message):
        delivery_from_context(context.get)


def test_a_region_where_sagemaker_does_not_run_is_refused_before_the_sdk_sees_it():
    with pytest.raises(ValueError, match=r"stage dev: region 'xx-foo-9' is not a region where SageMaker runs"):
        stage_config("dev", {"region": "xx-foo-9"})
    assert stage_config("dev", {"region": "us-gov-west-1"}).region == "us-gov-west-1"


@pytest.mark.parametrize("values, message", [
    # EventBridge's cron rules (six fields, their ranges, exactly one '?' of day-of-month and day-of-week): CloudFormation
    # refused these at deploy (ScheduleExpression is not valid), after synth and the config check had passed them.
    ({"retrain_schedule": "cron(0 3 * * * *)"},
     r"retrain_schedule 'cron\(0 3 \* \* \* \*\)' is not an EventBridge cron expression: exactly one of day-of-month "
     r"and day-of-week must be '\?'"),
    ({"retrain_schedule": "cron(a b c d e f)"}, r"retrain_schedule 'cron\(a b c d e f\)' .*minutes 'a' is not 0-59"),
    ({"monitor_schedule": "cron(0 3 ? * ? *)", "monitor_window": "1d"}, "monitor_schedule .*exactly one of"),
    ({"monitor_schedule": "cron(0 24 * * ? *)", "monitor_window": "1d"}, "monitor_schedule .*hours '24' is not 0-23"),
    ({"retrain_schedule": "cron(0 3 ? 13 MON *)"}, "retrain_schedule .*month '13' is not 1-12 or JAN-DEC"),
    ({"retrain_schedule": "cron(0 3 ? * FUN *)"}, "retrain_schedule .*day-of-week 'FUN' is not 1-7 or SUN-SAT"),
    ({"retrain_schedule": "cron(0 3 ? * MON 1969)"}, "retrain_schedule .*year '1969' is not 1970-2199"),
    ({"retrain_schedule": "cron(0 3 * * ? * *)"}, r"retrain_schedule .* must be rate\(1 hour\|day\)"),
    # At most hourly: every run is a SageMaker job (SageMaker model monitoring's shortest schedule is hourly).
    ({"retrain_schedule": "rate(1 minute)"}, r"retrain_schedule 'rate\(1 minute\)' runs more often than hourly .*"
                                              r"give rate\(1 hour\) or longer"),
    ({"monitor_schedule": "rate(1 minute)"}, "monitor_schedule 'rate\\(1 minute\\)' runs more often than hourly"),
    ({"monitor_schedule": "rate(30 minutes)"}, "monitor_schedule 'rate\\(30 minutes\\)' runs more often than hourly"),
    ({"retrain_schedule": "cron(*/5 * ? * * *)"}, "retrain_schedule .*runs more often than hourly .*one minute in the "
                                                  "minutes field"),
    ({"retrain_schedule": "cron(0,30 3 ? * MON *)"}, "retrain_schedule .*runs more often than hourly"),
    # CloudWatch's namespace characters: the job's PutMetricData would be refused and the drift alarm blind.
    ({"drift_metric_namespace": "Diagnosa/Mönitoring"}, "drift_metric_namespace 'Diagnosa/Mönitoring' must be 1-255 "
                                                        "of CloudWatch's namespace characters"),
    ({"drift_metric_namespace": ":Diag"}, "drift_metric_namespace ':Diag' must be .*not starting with ':'"),
    ({"drift_metric_namespace": ""}, "drift_metric_namespace '' must be 1-255"),
    ({"drift_metric_namespace": "x" * 256}, "drift_metric_namespace 'x+' must be 1-255"),
    # The metric's name is the job's: a setting for it silently disabled the drift alarm.
    ({"drift_metric_name": "MyDrift"}, "drift_metric_name was removed: the monitoring job always publishes its drift "
                                       "metric as DriftScore"),
    # Partitions the stack is not built for.
    ({"region": "cn-north-1"}, "region 'cn-north-1' is in the aws-cn partition, which this stack does not support"),
    # Upper bounds, each naming its field.
    ({"endpoint_max_instances": 3000000000}, "endpoint_max_instances must be at most 100, got 3000000000"),
    ({"endpoint_min_instances": 101, "endpoint_max_instances": 101}, "endpoint_max_instances must be at most 100"),
    ({"invocations_per_instance": 10**21}, r"invocations_per_instance must be \[1, 100000\]"),
    ({"alarm_5xx_errors": 10**23}, r"alarm_5xx_errors must be \[1, 100000\] \(errors per minute"),
    ({"alarm_model_latency_ms": 60001}, r"alarm_model_latency_ms must be \[1, 60000\]"),
    ({"capture_expiry_days": 10**8}, r"capture_expiry_days must be \[1, 36500\], got 100000000"),
    ({"noncurrent_version_days": 36501}, r"noncurrent_version_days must be \[1, 36500\]"),
    ({"access_log_days": 10**8}, r"access_log_days must be \[1, 36500\]"),
    # -c takes a comma-separated list; JSON lists belong in cdk.json.
    ({"families": '["mlp","xgboost"]'}, r"families: -c takes a comma-separated list \(-c diagnosa:families=a,b\)"),
    # Float settings take ASCII digits only, as integer settings do.
    ({"recall_threshold": "١"}, "recall_threshold must be a number, got '١'"),
    ({"drift_threshold": "0_5"}, "drift_threshold must be a number, got '0_5'"),
    ({"termination_protection": "maybe"}, "termination_protection must be true or false, got 'maybe'"),
])
def test_schedules_namespaces_regions_and_sizes_aws_would_refuse_are_named(values, message):
    with pytest.raises(ValueError, match=r"stage dev: .*" + message):
        stage_config("dev", {"region": "eu-west-1", **values})


@pytest.mark.parametrize("values", [
    {"retrain_schedule": "cron(0 3 ? * MON-FRI *)"}, {"retrain_schedule": "cron(15 */6 * * ? *)"},
    {"retrain_schedule": "cron(0 3 L * ? *)"}, {"retrain_schedule": "cron(0 3 ? * 6L *)"},
    {"retrain_schedule": "cron(0 3 ? * 2#1 *)"}, {"retrain_schedule": "cron(0 3 15W JAN-JUN ? 2030-2040)"},
    {"retrain_schedule": "rate(60 minutes)", "monitor_schedule": "rate(1 hour)"},
    {"drift_metric_namespace": "Team.ML/Diagnosa#1: drift_v2"},
    {"recall_threshold": "1e-1", "drift_threshold": ".5"},
    {"endpoint_min_instances": 100, "endpoint_max_instances": 100, "alarm_model_latency_ms": 60000},
    {"capture_expiry_days": 36500, "access_log_days": 36500},
    {"region": "us-gov-west-1"},
])
def test_valid_schedules_namespaces_and_bounds_pass(values):
    config = stage_config("dev", {"region": "eu-west-1", **values})
    assert all(getattr(config, name) == (type(getattr(config, name))(value) if isinstance(value, str)
                                          and isinstance(getattr(config, name), float) else value)
               for name, value in values.items())


def test_termination_protection_defaults_to_production_like_stages_and_is_a_setting():
    """It used to follow the name: a production stage called `production`, `prd` or `live` was deletable."""
    def stage(name, **values):
        return stage_config(name, {"region": "eu-west-1", **values})

    assert stage("prod").protected() and not stage("dev").protected()
    assert stage("production", promote_from="dev").protected()  # it serves what an earlier stage approved
    assert stage("live").protected(last_delivery_stage="live")  # the pipeline's last stage
    assert not stage("live").protected(last_delivery_stage="prod")
    assert stage("dev", termination_protection=True).protected()
    assert not stage("prod", termination_protection="false").protected()
    context = {"diagnosa:stages": {"prd": {"region": "eu-west-1"}}, "diagnosa:termination_protection": "yes"}
    [config] = stages_from_context(context.get)
    assert config.protected()


def test_serving_program_was_removed_and_a_stage_still_naming_it_is_told_why():
    """The setting named SAGEMAKER_PROGRAM for the deploy function, but every version the pipeline registers names
    its own (overriding it), and a version registered by hand got it unchecked against its code/. Which program
    serves is the registered version's: a stage block or a -c override naming the setting stops synth saying so."""
    from dataclasses import fields

    from infra.config import StageConfig, declared_stages

    assert "serving_program" not in {f.name for f in fields(StageConfig)}
    why = (r"stage dev: serving_program was removed: the program that serves is the registered version's own "
           r"SAGEMAKER_PROGRAM")
    with pytest.raises(ValueError, match=why):
        stage_config("dev", {"region": "eu-west-1", "serving_program": "serve_endpoint.py"})
    context = {"diagnosa:stages": {"dev": {"region": "eu-west-1"}}, "diagnosa:serving_program": "Serve.py"}
    with pytest.raises(ValueError, match=why):  # -c diagnosa:serving_program=Serve.py synthesized before
        declared_stages(context.get, context)


MI_HOSPITAL = """name = "mi_hospital"
id_column = "paciente"
target = "gravedad"
labels = ["leve", "grave", "crítico"]
"""


def test_promote_from_a_stage_on_another_dataset_is_refused_naming_both(tmp_path):
    """Review 46, finding 2: prod on mi_hospital (3 labels) promoting from dev on the built-in cohort (5 labels)."""
    from infra.config import check_promotions, declared_stages

    path = tmp_path / "mi_hospital.toml"
    path.write_text(MI_HOSPITAL, encoding="utf-8")
    stages = declared_stages({"diagnosa:stages": {
        "dev": {"region": "eu-west-1"},
        "prod": {"region": "eu-west-1", "promote_from": "dev", "dataset_config": str(path)}}}.get)
    with pytest.raises(ValueError, match=r"stage prod: promote_from 'dev' needs both stages on one dataset, but prod "
                                         r"trains dataset 'mi_hospital' .*labels leve, grave, crítico\) and dev trains "
                                         r"dataset 'patients' \(the built-in cohort; labels NO ENFERMO"):
        check_promotions(stages)
    # both on mi_hospital: accepted
    check_promotions(declared_stages({"diagnosa:stages": {
        "dev": {"region": "eu-west-1", "dataset_config": str(path)},
        "prod": {"region": "eu-west-1", "promote_from": "dev", "dataset_config": str(path)}}}.get))


def test_stages_that_gate_differently_may_promote_and_prod_ships_its_own_gate(tmp_path):
    """The promote function gates a version again with the promoting stage's gate (docs/deploy.md): prod may gate
    more strictly than dev, a dataset's [gate] included, and the gate prod ships is prod's, not dev's."""
    from infra.config import check_promotions, declared_stages
    from infra.pipeline_definition import embedded_definition

    plain, gated = tmp_path / "plain.toml", tmp_path / "gated.toml"
    plain.write_text(MI_HOSPITAL, encoding="utf-8")
    gated.write_text(MI_HOSPITAL + '\n[gate]\nrecall = { "leve" = 0.8, "grave" = 0.8, "crítico" = 0.6 }\n',
                     encoding="utf-8")
    stages = declared_stages({"diagnosa:stages": {
        "dev": {"region": "eu-west-1", "dataset_config": str(gated)},
        "prod": {"region": "eu-west-1", "promote_from": "dev", "dataset_config": str(plain), "recall_threshold": 0.9,
                 "orphan_threshold": 0.7}}}.get)
    check_promotions(stages)

    def gate(stage):
        return {c["path"]: c["at_least"] for c in json.loads(embedded_definition(stages[stage]).gate)}

    crítico = "diagnosa.per_class['crítico'].recall"
    assert gate("dev")[crítico] == 0.6 and gate("prod")[crítico] == 0.9
    assert set(gate("prod").values()) == {0.9}  # a dataset of its own has no slice unless its config names one


def test_a_stages_training_time_limit_is_every_training_job_s_in_its_pipeline():
    # SageMaker stops a training job at MaxRuntimeInSeconds; the SDK's own default (an hour) was the only one.
    from infra.pipeline_definition import embedded_definition

    limits = {}
    for seconds in (None, 7200):
        config = stage_config("dev", {"region": "eu-west-1", **({"training_max_runtime_seconds": seconds} if seconds else {})})
        steps = json.loads(embedded_definition(config).text)["Steps"]
        limits[seconds] = {s["Arguments"]["StoppingCondition"]["MaxRuntimeInSeconds"] for s in steps
                           if s["Type"] == "Training"}
    assert limits == {None: {86400}, 7200: {7200}}
