"""The deploy function given events, tags and packages it must not trust: each is answered with a short message naming
what is wrong (never a bare KeyError, AttributeError or OverflowError, never the input at full length), and nothing the
function keeps (the endpoint's latest-approval tag, the baseline prefix) is left in a state that blocks later
approvals. Under moto, as test_infra_functions.py runs the function."""
from __future__ import annotations

import time

import boto3
import pytest
from aws_calls import update_endpoints
from deploy_env import BASELINE, ENV, IN_SERVICE, REGION, dev_stage
from moto.sagemaker.models import sagemaker_backends

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
PACKAGE_EVENT = "SageMaker Model Package State Change"
BUCKET = ENV["LAKE_BUCKET"]
LIMIT = 600  # "a few hundred characters": every message here stays under it


@pytest.fixture
def aws():
    with dev_stage():
        yield (boto3.client("sagemaker", region_name=REGION), boto3.client("s3", region_name=REGION),
               boto3.client("application-autoscaling", region_name=REGION))


def package(sm, container=None, **extra):
    spec = {"Containers": [container or {"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/artifacts/runs/e/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}
    return sm.create_model_package(ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
                                   InferenceSpecification=spec, **extra)["ModelPackageArn"]


def approval(arn, when=None):
    event = {"detail-type": PACKAGE_EVENT, "detail": {"ModelPackageArn": arn}}
    return event if when is None else {**event, "time": when}


def set_status(status):
    for endpoint in sagemaker_backends["123456789012"][REGION].endpoints.values():
        endpoint.endpoint_status = status


def tags(sm):
    arn = sm.describe_endpoint(EndpointName=ENV["ENDPOINT_NAME"])["EndpointArn"]
    found: dict[str, str] = {}
    for tag in sm.list_tags(ResourceArn=arn)["Tags"]:  # moto keeps every value AddTags gave a key: the last wins
        found[tag["Key"]] = tag["Value"]
    return found


def installed(s3):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=BASELINE).get("Contents", []))


def refused(deploy_fn, aws, event, match, now=1.8e9):
    """The handler's Refused for ``event``: a short, ASCII-safe message matching ``match``; nothing created."""
    sm, s3, autoscaling = aws
    with pytest.raises(deploy_fn.Refused, match=match) as caught:
        deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=now)
    message = str(caught.value)
    assert len(message) < LIMIT, len(message)
    message.encode("utf-8")  # no lone surrogate: it can be logged
    assert sm.list_models()["Models"] == [] and sm.list_endpoints()["Endpoints"] == []
    return message


# ------------------------------------------------------------------------------------------ F10, F9: the event's shape

@pytest.mark.parametrize("event, kind", [(["x"], "list"), ("approve", "str"), (None, "NoneType"), (5, "int")])
def test_an_event_that_is_not_an_object_is_refused_naming_its_type(aws, deploy_fn, event, kind):
    refused(deploy_fn, aws, event, f"not a JSON object.*{kind}")


@pytest.mark.parametrize("kind", [PACKAGE_EVENT, "SageMaker Endpoint State Change"])
@pytest.mark.parametrize("detail, shown", [("missing", "no detail"), (None, "NoneType"), (["x"], "list"), ("x", "str")])
def test_an_event_without_a_detail_object_is_refused(aws, deploy_fn, kind, detail, shown):
    event = {"detail-type": kind} if detail == "missing" else {"detail-type": kind, "detail": detail}
    refused(deploy_fn, aws, event, f"detail.*{shown}")


def test_a_huge_detail_type_of_surrogates_gives_a_short_message(aws, deploy_fn):
    message = refused(deploy_fn, aws, {"detail-type": "\ud800" * 3_000_000}, "unexpected event type")
    assert "3000000 characters" in message


def test_a_model_package_arn_that_is_not_a_string_is_refused(aws, deploy_fn):
    refused(deploy_fn, aws, {"detail-type": PACKAGE_EVENT, "detail": {"ModelPackageArn": ["a" * 1_000_000]}},
            "ModelPackageArn.*list")


@pytest.mark.parametrize("arn, match", [
    ("arn:aws:sagemaker:eu-west-1:123456789012:model-package/diagnosa-dev/\ud800", "not in the registry"),
    ("arn:aws:sagemaker:eu-west-1:123456789012:model-package/diagnosa-dev/\ud800" + "x" * 100_000,
     "not a model package ARN.*100069 characters")])
def test_an_arn_with_a_surrogate_or_too_long_is_refused_with_a_message_that_can_be_logged(aws, deploy_fn, arn, match):
    refused(deploy_fn, aws, approval(arn), match)


@pytest.mark.parametrize("when, shown", [(12345, "int"), (["2026-01-01T00:00:00Z"], "list"), ({"at": 1}, "dict"),
                                         ("yesterday", "yesterday"), ("\ud800" * 1_000_000, "1000000 characters")])
def test_an_event_time_that_is_not_an_iso_time_string_is_refused(aws, deploy_fn, when, shown):
    sm = aws[0]
    refused(deploy_fn, aws, approval(package(sm), when), f"time.*{shown}")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_event_time_at_the_edge_of_the_date_range_is_refused(aws, deploy_fn, when):
    sm = aws[0]
    refused(deploy_fn, aws, approval(package(sm), when), "time.*(out of range|after the function's clock)")


# ------------------------------------------------------------------------------------------ F2: a time in the future

def test_an_approval_from_the_future_is_refused_and_does_not_lock_out_later_approvals(aws, deploy_fn):
    sm, s3, autoscaling = aws
    update_endpoints(sm)
    first = package(sm)
    message = refused(deploy_fn, aws, approval(first, "9999-12-31T23:59:59Z"), "after the function's clock")
    assert "9999-12-31T23:59:59Z" in message
    assert deploy_fn.handler(approval(first, "2027-01-15T08:00:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                             env=ENV, now=1.8e9)["action"] == "created"
    set_status("InService")
    with pytest.raises(deploy_fn.Refused, match="after the function's clock"):
        deploy_fn.handler(approval(first, "9999-12-31T23:59:59Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                          env=ENV, now=1.8e9 + 60)
    assert tags(sm)["diagnosa:latest-approval"] == "2027-01-15T08:00:00Z v1"  # not recorded
    # the real approvals that follow deploy: with EventBridge's time, and by hand without one
    second, third = package(sm), package(sm)
    assert deploy_fn.handler(approval(second, "2027-01-15T08:10:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                             env=ENV, now=1.8e9 + 600)["action"] == "updated"
    set_status("InService")
    assert deploy_fn.handler(approval(third), sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV,
                             now=1.8e9 + 1200)["action"] == "updated"


def test_an_approval_a_day_ahead_of_the_real_clock_is_refused_a_little_skew_is_not(aws, deploy_fn):
    sm, s3, autoscaling = aws
    now = time.time()
    ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 86400))
    refused(deploy_fn, aws, approval(package(sm), ahead), "after the function's clock", now=now)
    skewed = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60))  # EventBridge's clock a minute ahead
    assert deploy_fn.handler(approval(package(sm), skewed), sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV,
                             now=now)["action"] == "created"


@pytest.mark.parametrize("value", [
    "9999-12-31T23:59:59Z v1",  # a future-timed approval's, written before the times were checked: it locked the endpoint
    "2027-01-15T08:00:00Z v\u00b2", "0001-01-01T00:00:00+01:00 v1"])
def test_a_malformed_or_future_latest_approval_tag_is_ignored_not_a_crash_nor_a_lock(aws, deploy_fn, value):
    sm, s3, autoscaling = aws
    update_endpoints(sm)
    deploy_fn.handler(approval(package(sm), "2027-01-15T08:00:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                      env=ENV, now=1.8e9)
    set_status("InService")
    arn = sm.describe_endpoint(EndpointName=ENV["ENDPOINT_NAME"])["EndpointArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "diagnosa:latest-approval", "Value": value}])
    result = deploy_fn.handler(approval(package(sm), "2027-01-15T08:10:00Z"), sagemaker=sm, s3=s3,
                               autoscaling=autoscaling, env=ENV, now=1.8e9 + 600)
    assert result["action"] == "updated" and tags(sm)["diagnosa:latest-approval"] == "2027-01-15T08:10:00Z v2"


# ------------------------------------------------------------------------------------------ F9: the package's shape

MODEL = f"s3://{BUCKET}/artifacts/runs/e/model.tar.gz"


@pytest.mark.parametrize("make, match", [
    (lambda sm: sm.create_model_package(ModelPackageGroupName="diagnosa-dev",
                                        ModelApprovalStatus="Approved")["ModelPackageArn"],
     "no InferenceSpecification"),
    (lambda sm: package(sm, {"ModelDataUrl": MODEL}), "no Image"),
    (lambda sm: package(sm, {"Image": IMAGE, "ModelDataSource": {"S3DataSource": {
        "S3Uri": f"s3://{BUCKET}/artifacts/runs/e/model/", "S3DataType": "S3Prefix", "CompressionType": "None"}}}),
     "no ModelDataUrl"),
])
def test_a_package_without_an_image_or_model_data_url_is_refused_naming_what_is_missing(aws, deploy_fn, make, match):
    sm = aws[0]
    refused(deploy_fn, aws, approval(make(sm)), match)


def test_a_kept_version_without_a_container_is_refused_at_in_service_and_dropped(aws, deploy_fn):
    sm, s3, autoscaling = aws
    updates = update_endpoints(sm)
    deploy_fn.handler(approval(package(sm), "2027-01-15T08:00:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                      env=ENV, now=1.8e9)
    set_status("Updating")
    waiting = package(sm)
    assert deploy_fn.handler(approval(waiting, "2027-01-15T08:05:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                             env=ENV, now=1.8e9 + 300)["action"] == "deferred"
    # the registry's container of the kept version loses its ModelDataUrl meanwhile (moto: edited in place)
    backend = sagemaker_backends["123456789012"][REGION]
    kept = backend.model_packages[backend.model_package_name_mapping.get(waiting, waiting)]
    for container in kept.inference_specification["Containers"]:
        container.pop("ModelDataUrl")
    set_status("InService")
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=1.8e9 + 600)
    assert result["pending"]["action"] == "refused" and "no ModelDataUrl" in result["pending"]["reason"]
    assert updates == [] and tags(sm)["diagnosa:pending-package"] == ""


# ------------------------------------------------------------------------------------------ F1: unreadable baselines

def source(path):
    return {"ContentType": "application/json", "S3Uri": f"s3://{BUCKET}/artifacts/runs/e/{path}"}


def package_with_lost_baselines(sm, s3):
    """A version whose data baselines the lake no longer holds (its run folder expired), its prediction baseline there."""
    s3.put_object(Bucket=BUCKET, Key="artifacts/runs/e/pred.json", Body=b"{}")
    return package(sm, ModelMetrics={"ModelDataQuality": {"Statistics": source("stats.json"),
                                                          "Constraints": source("cons.json")}},
                   CustomerMetadataProperties={"diagnosa:prediction-baseline": f"s3://{BUCKET}/artifacts/runs/e/pred.json"})


def test_lost_baselines_of_the_serving_version_do_not_block_the_version_approved_meanwhile(aws, deploy_fn):
    sm, s3, autoscaling = aws
    updates = update_endpoints(sm)
    serving = package_with_lost_baselines(sm, s3)
    deploy_fn.handler(approval(serving, "2027-01-15T08:00:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                      env=ENV, now=1.8e9)
    set_status("Creating")
    waiting = package(sm)
    assert deploy_fn.handler(approval(waiting, "2027-01-15T08:05:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                             env=ENV, now=1.8e9 + 300)["action"] == "deferred"
    set_status("InService")
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=1.8e9 + 600)
    assert result["pending"]["action"] == "updated" and result["pending"]["model_package"] == waiting
    assert len(updates) == 1 and tags(sm)["diagnosa:pending-package"] == ""
    assert result["baselines"]["status"] == "failed"
    assert f"s3://{BUCKET}/artifacts/runs/e/cons.json" in result["baselines"]["reason"]
    assert len(result["baselines"]["reason"]) < LIMIT
    assert installed(s3) == []  # not half-filled: the prediction baseline copied first is removed again


def test_lost_baselines_with_nothing_waiting_fail_the_run_naming_the_object(aws, deploy_fn):
    # the serving version goes unmonitored: the run fails (retries, then the dead-letter queue's alarm) saying why
    sm, s3, autoscaling = aws
    serving = package_with_lost_baselines(sm, s3)
    deploy_fn.handler(approval(serving, "2027-01-15T08:00:00Z"), sagemaker=sm, s3=s3, autoscaling=autoscaling,
                      env=ENV, now=1.8e9)
    set_status("InService")
    for _attempt in range(2):  # Lambda's retry fails the same way, and says the same
        with pytest.raises(deploy_fn.BaselinesUnavailable, match=f"s3://{BUCKET}/artifacts/runs/e/cons.json") as caught:
            deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=1.8e9 + 600)
        message = str(caught.value)
        assert len(message) < LIMIT and serving in message and "NoSuchKey" in message and "not monitored" in message
        assert installed(s3) == []
    # autoscaling was registered all the same
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
