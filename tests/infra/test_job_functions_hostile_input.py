"""The job functions (retrain, monitor) given hostile or damaged input: an event of the wrong shape, a damaged
LATEST.json or folding result, values megabytes long. Each is refused with a short message naming what is wrong
(and the S3 object, when one is), and nothing is started; messages and log lines stay bounded."""
from __future__ import annotations

import json
import logging

import boto3
import pytest
from deploy_env import MONITOR_ENV, REGION, RETRAIN_ENV
from lambda_functions import create_pipeline
from moto import mock_aws
from s3_grants import PrefixListGrant

BUCKET = "lake"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
LATEST = "curated/patients/LATEST.json"
JOB = "diagnosa-dev-fold-0123456789abcdef01234567"
FOLDER = f"artifacts/monitoring/diagnosa-dev/retraining/{JOB}/"
RESULT = f"s3://{BUCKET}/{FOLDER}result/retraining.json"
LISTABLE = ("feedback/diagnosa-dev/", "artifacts/monitoring/diagnosa-dev/retraining/", LATEST)
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
JOB_EVENT = {"detail-type": "SageMaker Processing Job State Change", "source": "aws.sagemaker",
             "detail": {"ProcessingJobName": JOB, "ProcessingJobStatus": "Completed"}}
ALARM = "CloudWatch Alarm State Change"
BOUND = 1000  # no message or log line the input makes longer than this


def bounded(text: str) -> bool:
    """Short, and writable to a UTF-8 log (no lone surrogates)."""
    text.encode("utf-8")
    return len(text) <= BOUND


@pytest.fixture
def lake():
    """A stage: the pipeline, the lake with a curated version of the cohort; the function's listing grant."""
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        create_pipeline(sm, "diagnosa-dev")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket=BUCKET, Key=LATEST, Body=json.dumps({"version": "d1e44cbc09b6"}))
        PrefixListGrant(s3, LISTABLE)
        yield sm, s3


def executions(sm) -> list:
    return sm.list_pipeline_executions(PipelineName="diagnosa-dev")["PipelineExecutionSummaries"]


def refused(fn, event, sm, s3, env=RETRAIN_ENV, caplog=None) -> str:
    with pytest.raises(fn.Refused) as err:
        fn.handler(event, sagemaker=sm, s3=s3, env=env, now=NOW)
    message = str(err.value)
    assert bounded(message), message[:300]
    if caplog is not None:
        assert all(bounded(r.getMessage()) for r in caplog.records)
    return message


def folded(s3, result: bytes, request: bytes = b'{"reason": "alarm diagnosa-dev-drift", "parameters": {}}'):
    s3.put_object(Bucket=BUCKET, Key=FOLDER + "request.json", Body=request)
    s3.put_object(Bucket=BUCKET, Key=FOLDER + "result/retraining.json", Body=result)


# ------------------------------------------------------------------------------------------ retrain: LATEST.json

@pytest.mark.parametrize("body, why", [
    (b'{"version": "d1e4', "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 1}', 'no "version"'),
    (b"[" * 100_000, "not JSON"),
    (json.dumps({"version": "v" * 500_000}).encode(), "names no valid version"),
    (b'{"version": "d1e44cbc09b6", "pad": "' + b"p" * 2_000_000 + b'"}', "larger than"),
])
def test_a_damaged_latest_json_is_refused_naming_the_object(lake, retrain_fn, body, why):
    sm, s3 = lake
    s3.put_object(Bucket=BUCKET, Key=LATEST, Body=body)
    message = refused(retrain_fn, {"reason": "manual"}, sm, s3)
    assert f"s3://{BUCKET}/{LATEST}" in message and why in message
    assert executions(sm) == []


# ------------------------------------------------------------------------------------------ retrain: the fold's result

@pytest.mark.parametrize("result, why", [
    ({}, 'no "version"'),  # read as "nothing added" before: trained on the previous latest version
    ({"Version": "c3c3c3c3c3c3", "input_data_uri": "s3://lake/curated/patients/c3c3c3c3c3c3", "feedback_rows": 12},
     'no "version"'),
    ({"version": "c3c3c3c3c3c3", "input_data_uri": "s3://lake/curated/patients/c3c3c3c3c3c3", "rebuilt_from": 5},
     "rebuilt_from"),
    ({"version": "c3c3c3c3c3c3", "input_data_uri": "s3://lake/curated/patients/c3c3c3c3c3c3",
      "feedback_rows": "f" * 500_000}, "feedback_rows"),
    ({"version": None, "base_version": 7}, "base_version"),
    ({"version": None, "base_version": None, "overtaken_by": ["x"]}, "overtaken_by"),
])
def test_a_result_of_the_wrong_shape_starts_no_execution(lake, retrain_fn, result, why, caplog):
    sm, s3 = lake
    folded(s3, json.dumps(result).encode())
    message = refused(retrain_fn, JOB_EVENT, sm, s3, caplog=caplog)
    assert RESULT in message and why in message
    assert executions(sm) == []


def test_a_huge_result_is_refused_without_being_parsed(lake, retrain_fn):
    sm, s3 = lake
    folded(s3, b'{"version": null, "pad": "' + b"p" * 3_000_000 + b'"}')
    message = refused(retrain_fn, JOB_EVENT, sm, s3)
    assert RESULT in message and "larger than" in message and executions(sm) == []


@pytest.mark.parametrize("request_body, result", [
    (b'{"a":' * 100_000, b'{"version": null}'),
    (b'{"reason": "x", "parameters": {}}', b'{"v":' * 100_000)])
def test_deeply_nested_request_or_result_is_refused_naming_it(lake, retrain_fn, request_body, result):
    sm, s3 = lake
    folded(s3, result, request_body)
    message = refused(retrain_fn, JOB_EVENT, sm, s3)
    assert f"s3://{BUCKET}/{FOLDER}" in message and "not JSON" in message and executions(sm) == []


def test_long_values_of_a_result_or_request_are_cut_in_the_reason_and_the_log(lake, retrain_fn, caplog):
    sm, s3 = lake
    caplog.set_level(logging.INFO)
    folded(s3, json.dumps({"version": None, "reason": "z" * 500_000}).encode(),  # within the size bound
           json.dumps({"reason": "q" * 500_000, "parameters": {}}).encode())
    result = retrain_fn.handler(JOB_EVENT, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert len(result["reason"]) <= BOUND and result["reason"].startswith("qqq")
    assert all(bounded(r.getMessage()) for r in caplog.records) and len(executions(sm)) == 1


# ------------------------------------------------------------------------------------------ retrain: the event

@pytest.mark.parametrize("event, why", [
    (["junk"], "event must be a JSON object"),
    ("junk", "event must be a JSON object"),
    ({"detail-type": ALARM, "detail": None}, "detail"),
    ({"detail-type": ALARM, "detail": {"alarmName": "a", "state": "ALARM"}}, "state"),
    ({"detail-type": ALARM, "detail": ["x"]}, "detail"),
    ({"detail-type": "SageMaker Processing Job State Change", "detail": ["x"]}, "detail"),
])
def test_events_of_the_wrong_shape_are_refused(lake, retrain_fn, event, why):
    sm, s3 = lake
    assert why in refused(retrain_fn, event, sm, s3) and executions(sm) == []


def test_an_alarm_name_megabytes_long_is_cut_in_the_refusal(lake, retrain_fn):
    sm, s3 = lake
    event = {"detail-type": ALARM, "detail": {"alarmName": "a" * 3_000_000, "state": {"value": "OK"}}}
    assert "is not in ALARM" in refused(retrain_fn, event, sm, s3)


def test_a_reason_megabytes_long_is_cut(lake, retrain_fn, caplog):
    sm, s3 = lake
    caplog.set_level(logging.INFO)
    result = retrain_fn.handler({"reason": "r\ud800" * 2_500_000}, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert len(result["reason"]) <= BOUND and len(executions(sm)) == 1
    assert [r.getMessage()[:200] for r in caplog.records if not bounded(r.getMessage())] == []


@pytest.mark.parametrize("kind", ["SageMaker Endpoint State Change", "Scheduled Event", "\ud800" * 1_000_000, 7])
def test_an_eventbridge_event_of_another_type_starts_no_retraining(lake, retrain_fn, kind):
    """The stack routes the drift alarm's and the folding job's events here; any other was read as a manual
    retraining ("manual"), and started an execution."""
    sm, s3 = lake
    message = refused(retrain_fn, {"detail-type": kind, "source": "aws.sagemaker", "detail": {}}, sm, s3)
    assert message.startswith("unexpected event type") and executions(sm) == []


@pytest.mark.parametrize("event, expected", [
    ({"reason": "x", "paramaters": {"Seed": 3}}, "unknown field(s) ['paramaters'] (it takes reason, parameters, id)"),
    ({f"k{i:06d}\ud800": i for i in range(200_000)}, "'k000009\\ud800'] and 199990 more (it takes"),
])
def test_a_field_a_manual_retraining_does_not_take_is_refused(lake, retrain_fn, event, expected):
    """A misspelt "parameters" was ignored, and the retraining ran with the pipeline's defaults."""
    sm, s3 = lake
    assert expected in refused(retrain_fn, event, sm, s3) and executions(sm) == []


def test_unknown_parameters_are_named_ten_at_most(lake, retrain_fn):
    sm, s3 = lake
    message = refused(retrain_fn, {"parameters": {f"k{i:06d}\ud800": i for i in range(200_000)}}, sm, s3)
    assert "k000000" in message and "k000009" in message and "k000010" not in message
    assert "199990 more" in message


@pytest.mark.parametrize("uri", [
    "\ud800 not a uri", "j" * 2_000_000, "/etc/passwd", "not a uri", "s3://", "s3://lake/", "s3://lake",
    "s3://lake/curated/patients/../../etc", "s3://lake/curated/patients/abc123\ud800", "s3://lake/curated patients/x",
    "s3://lake/" + "k" * 2_000_000])
@pytest.mark.parametrize("env", [RETRAIN_ENV, {"PIPELINE_NAME": "diagnosa-dev"}], ids=["lake", "no-lake"])
def test_an_input_that_is_no_s3_uri_starts_nothing(lake, retrain_fn, uri, env):
    sm, s3 = lake
    message = refused(retrain_fn, {"parameters": {"InputDataUri": uri}}, sm, s3, env=env)
    assert "parameter InputDataUri must be an s3:// URI" in message
    lake_view = boto3.client("s3", region_name=REGION)  # every key, not what the function's role may list
    assert executions(sm) == [] and lake_view.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/")["KeyCount"] == 0


def test_an_input_outside_the_stages_curated_data_is_trained_on_with_a_warning(lake, retrain_fn, caplog):
    sm, s3 = lake
    given = "s3://other-lake/curated/x/abc123"
    started = retrain_fn.handler({"parameters": {"InputDataUri": given}}, sagemaker=sm, s3=s3, env=RETRAIN_ENV,
                                 now=NOW)
    assert started["parameters"] == {"InputDataUri": given} and len(executions(sm)) == 1
    assert "is not a curated version of patients in this stage's lake (s3://lake/curated/patients/<version>)" \
        in caplog.text


# ------------------------------------------------------------------------------------------ monitor

BASELINE = "artifacts/monitoring/diagnosa-dev/baseline/"


@pytest.fixture
def served():
    """Baselines of a model serving since 2027-01-01 and some captured traffic."""
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        serving_since(s3, "2027-01-01T00:00:00Z")
        s3.put_object(Bucket=BUCKET, Key="capture/diagnosa-dev/AllTraffic/2027/01/15/07/x.jsonl", Body=b"{}\n")
        yield boto3.client("sagemaker", region_name=REGION), s3


def serving_since(s3, since):
    for name in ("data/statistics.json", "data/constraints.json"):
        s3.put_object(Bucket=BUCKET, Key=BASELINE + name, Body=b"{}",
                      Metadata={"model-package": "arn:pkg/1", "serving-since": since})


def jobs(sm) -> list:
    return sm.list_processing_jobs()["ProcessingJobSummaries"]


@pytest.mark.parametrize("event, env, field", [
    ({"window": "9" * 5000 + "d"}, {}, "window"),
    ({"window": "1d", "feedback_lag": "9" * 5000 + "d"}, {}, "feedback lag"),
    ({"schedule": "rate(" + "9" * 5000 + " days)"}, {"SCHEDULE": ""}, "window"),
])
def test_thousands_of_digits_are_refused_naming_the_field(served, monitor_fn, event, env, field):
    sm, s3 = served
    message = refused(monitor_fn, event, sm, s3, env={**MONITOR_ENV, **env})
    assert message.startswith(field) and "longer than 36500 days" in message and jobs(sm) == []


def test_leading_zeros_are_read_as_the_number_they_write(served, monitor_fn):
    sm, s3 = served
    result = monitor_fn.handler({"window": "0" * 5000 + "1d"}, sagemaker=sm, s3=s3, env=MONITOR_ENV, now=NOW)
    assert result["arguments"][6:8] == ["--last", "1d"]


@pytest.mark.parametrize("event, env", [
    ({"window": "x" * 6_000_000}, {}),
    ({"schedule": "y" * 6_000_000}, {"SCHEDULE": ""}),
    ({"window": "1d", "feedback_lag": "\ud800" * 1_000_000}, {}),
])
def test_long_window_schedule_and_lag_values_are_cut_in_the_refusal(served, monitor_fn, event, env):
    sm, s3 = served
    refused(monitor_fn, event, sm, s3, env={**MONITOR_ENV, **env})
    assert jobs(sm) == []


@pytest.mark.parametrize("event", [["junk"] * 10, "junk", 7])
def test_a_monitor_event_that_is_not_an_object_is_refused(served, monitor_fn, event):
    sm, s3 = served
    assert "event must be a JSON object" in refused(monitor_fn, event, sm, s3, env=MONITOR_ENV)
    assert jobs(sm) == []


def test_a_field_a_monitoring_run_does_not_take_is_refused(served, monitor_fn):
    """A misspelt "window" was ignored, and the job read the schedule's window instead."""
    sm, s3 = served
    message = refused(monitor_fn, {"windw": "30d"}, sm, s3, env=MONITOR_ENV)
    assert "unknown field(s) ['windw'] (it takes reason, schedule, window, feedback_lag)" in message and jobs(sm) == []


@pytest.mark.parametrize("kind", ["SageMaker Endpoint State Change", "Scheduled Event", "\ud800" * 1_000_000])
def test_an_eventbridge_event_of_any_type_starts_no_monitoring_job(served, monitor_fn, kind):
    """No rule sends the monitor function an EventBridge event (its schedule sends its own input): one routed to it
    by mistake was read as a manual run, and started a job."""
    sm, s3 = served
    event = {"detail-type": kind, "source": "aws.sagemaker", "detail": {"EndpointName": "diagnosa-dev"}}
    assert "unexpected event type" in refused(monitor_fn, event, sm, s3, env=MONITOR_ENV) and jobs(sm) == []


def test_a_serving_since_in_the_future_starts_no_job(served, monitor_fn):
    sm, s3 = served
    serving_since(s3, "9999-12-31T23:59:59Z")
    message = refused(monitor_fn, {}, sm, s3, env=MONITOR_ENV)
    assert f"s3://{BUCKET}/{BASELINE}data/statistics.json" in message and "in the future" in message
    assert jobs(sm) == []


def test_a_model_that_started_serving_just_now_is_not_monitored_yet(served, monitor_fn):
    sm, s3 = served
    serving_since(s3, "2027-01-15T08:01:00Z")  # the deploy function's clock a minute ahead of this one
    result = monitor_fn.handler({}, sagemaker=sm, s3=s3, env=MONITOR_ENV, now=NOW)
    assert result["status"] == "skipped" and "no traffic" in result["reason"] and jobs(sm) == []


@pytest.mark.parametrize("since", ["yesterday", "x" * 1500, "2027-02-30T00:00:00Z"])
def test_an_unreadable_serving_since_starts_no_job_that_could_mix_two_models(served, monitor_fn, since, caplog):
    sm, s3 = served
    serving_since(s3, since)
    message = refused(monitor_fn, {}, sm, s3, env=MONITOR_ENV, caplog=caplog)
    assert "serving-since" in message and f"s3://{BUCKET}/{BASELINE}data/statistics.json" in message
    assert jobs(sm) == []
