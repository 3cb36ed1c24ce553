"""Monitoring in AWS under moto: the deploy function keeps the endpoint's baseline prefix holding the
serving model's baselines (and nothing else), the monitor function starts the monitoring job over it."""
from __future__ import annotations

import json
import logging

import boto3
import pytest
from aws_calls import update_endpoints
from deploy_env import BASELINE, BASELINE_FILES, ENV, IN_SERVICE, REGION, dev_stage

from pipelines.service_model import request_problems

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.5-cpu-py311"


def approved_event(arn):
    return {"detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
            "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "diagnosa-dev", "ModelApprovalStatus": "Approved"}}

BUCKET = ENV["LAKE_BUCKET"]
KEY = ENV["KMS_KEY_ARN"]
FILES = BASELINE_FILES


@pytest.fixture
def aws():
    with dev_stage():
        sm = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        autoscaling = boto3.client("application-autoscaling", region_name=REGION)
        yield sm, s3, autoscaling


def run_outputs(s3, execution):
    """What one pipeline execution writes: the preprocess baseline and the evaluate outputs."""
    run = f"artifacts/runs/{execution}"
    for key in (f"{run}/baseline/statistics.json", f"{run}/baseline/constraints.json",
                f"{run}/evaluation/prediction_baseline.json", f"{run}/evaluation/model_quality_constraints.json",
                f"{run}/evaluation/evaluation.json"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"execution": execution, "file": key}).encode())
    return f"s3://{BUCKET}/{run}"


def registered(sm, s3, execution, *, baselines=True, bucket=BUCKET):
    """A package as the pipeline's Register step makes it (ModelMetrics, DriftCheckBaselines, metadata)."""
    run = run_outputs(s3, execution).replace(f"s3://{BUCKET}/", f"s3://{bucket}/")

    def source(path):
        return {"ContentType": "application/json", "S3Uri": f"{run}/{path}"}

    extra = {}
    if baselines:
        quality = {"Statistics": source("evaluation/evaluation.json"),
                   "Constraints": source("evaluation/model_quality_constraints.json")}
        data = {"Statistics": source("baseline/statistics.json"), "Constraints": source("baseline/constraints.json")}
        extra = {"ModelMetrics": {"ModelQuality": quality, "ModelDataQuality": data},
                 "DriftCheckBaselines": {"ModelQuality": quality, "ModelDataQuality": data},
                 "CustomerMetadataProperties": {"diagnosa:prediction-baseline": f"{run}/evaluation/prediction_baseline.json",
                                                "diagnosa:execution": execution}}
    return sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"{run}/champion/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]}, **extra)["ModelPackageArn"]


def baseline_objects(s3):
    return {o["Key"][len(BASELINE):]: o for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=BASELINE).get("Contents", [])}


def in_service(deploy_fn, sm, s3, autoscaling, now):
    return deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=now)


def serve(sm, config_name):
    """The end of a deployment as SageMaker reports it: the endpoint InService on ``config_name``."""
    sm.delete_endpoint(EndpointName="diagnosa-dev")
    sm.create_endpoint(EndpointName="diagnosa-dev", EndpointConfigName=config_name)


# ------------------------------------------------------------------------------------------ deploy function

def test_the_serving_packages_baselines_are_copied_when_the_endpoint_is_in_service(aws, deploy_fn):
    sm, s3, autoscaling = aws
    arn = registered(sm, s3, "exec-a")
    result = deploy_fn.handler(approved_event(arn), sagemaker=sm, s3=s3, env=ENV, now=0)
    assert result["action"] == "created" and baseline_objects(s3) == {}  # nothing until it serves
    result = in_service(deploy_fn, sm, s3, autoscaling, now=3600)
    assert result["baselines"]["status"] == "installed" and result["baselines"]["model_package"] == arn
    assert sorted(baseline_objects(s3)) == sorted(FILES)
    expected = {"data/statistics.json": "baseline/statistics.json", "data/constraints.json": "baseline/constraints.json",
                "predictions/prediction_baseline.json": "evaluation/prediction_baseline.json",
                "predictions/model_quality_constraints.json": "evaluation/model_quality_constraints.json"}
    for name, source in expected.items():
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=BASELINE + name)["Body"].read())
        assert body["file"] == f"artifacts/runs/exec-a/{source}"
        head = s3.head_object(Bucket=BUCKET, Key=BASELINE + name)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == KEY
        assert head["Metadata"] == {"model-package": arn, "serving-since": "1970-01-01T01:00:00Z",
                                    "source": f"artifacts/runs/exec-a/{source}"}
    # InService again (e.g. after scaling): nothing is rewritten, serving-since stays
    again = in_service(deploy_fn, sm, s3, autoscaling, now=7200)
    assert again["baselines"] == {"status": "unchanged", "model_package": arn}
    assert s3.head_object(Bucket=BUCKET, Key=BASELINE + FILES[0])["Metadata"]["serving-since"] == "1970-01-01T01:00:00Z"


def test_a_new_deployment_removes_the_old_baselines_and_a_rollback_brings_them_back(aws, deploy_fn):
    sm, s3, autoscaling = aws
    first = registered(sm, s3, "exec-a")
    deploy_fn.handler(approved_event(first), sagemaker=sm, s3=s3, env=ENV, now=0)
    in_service(deploy_fn, sm, s3, autoscaling, now=60)
    assert len(baseline_objects(s3)) == 4
    updates = update_endpoints(sm)  # moto lacks UpdateEndpoint: answered at botocore's before-call (aws_calls.py)
    second = registered(sm, s3, "exec-b")
    result = deploy_fn.handler(approved_event(second), sagemaker=sm, s3=s3, env=ENV, now=3600)
    assert result["action"] == "updated" and updates
    assert baseline_objects(s3) == {}  # while traffic shifts, nothing to compare it with: monitoring pauses

    # The update rolled back: the endpoint is InService on the first config again -> the first baselines.
    rolled_back = in_service(deploy_fn, sm, s3, autoscaling, now=4000)
    assert rolled_back["baselines"]["model_package"] == first
    assert {o["Metadata"]["model-package"] for o in
            (s3.head_object(Bucket=BUCKET, Key=BASELINE + f) for f in FILES)} == {first}

    # The update completed: InService on the second config -> only the second package's baselines.
    deploy_fn.handler(approved_event(second), sagemaker=sm, s3=s3, env=ENV, now=5000)
    serve(sm, updates[-1]["EndpointConfigName"])
    done = in_service(deploy_fn, sm, s3, autoscaling, now=6000)
    assert done["baselines"]["model_package"] == second and sorted(baseline_objects(s3)) == sorted(FILES)
    for name in FILES:
        assert s3.head_object(Bucket=BUCKET, Key=BASELINE + name)["Metadata"]["model-package"] == second
        assert "exec-b" in json.loads(s3.get_object(Bucket=BUCKET, Key=BASELINE + name)["Body"].read())["file"]


def test_a_package_without_baselines_is_deployed_unmonitored_and_leaves_no_stale_baselines(aws, deploy_fn, caplog):
    sm, s3, autoscaling = aws
    deploy_fn.handler(approved_event(registered(sm, s3, "exec-a")), sagemaker=sm, s3=s3, env=ENV, now=0)
    in_service(deploy_fn, sm, s3, autoscaling, now=60)
    assert len(baseline_objects(s3)) == 4
    bare = registered(sm, s3, "exec-b", baselines=False)
    sm.delete_endpoint(EndpointName="diagnosa-dev")  # a fresh create: no UpdateEndpoint (which moto lacks) needed
    result = deploy_fn.handler(approved_event(bare), sagemaker=sm, s3=s3, env=ENV, now=3600)
    assert result["action"] == "created" and baseline_objects(s3) == {}
    with caplog.at_level(logging.WARNING):
        status = in_service(deploy_fn, sm, s3, autoscaling, now=4000)["baselines"]
    assert status == {"status": "missing", "model_package": bare,
                      "missing": ["data/statistics.json", "data/constraints.json"]}
    assert baseline_objects(s3) == {}
    assert "not monitored until a version with baselines is deployed" in caplog.text


def test_baselines_outside_the_lakes_run_folders_are_never_copied(aws, deploy_fn):
    sm, s3, autoscaling = aws
    s3.create_bucket(Bucket="elsewhere", CreateBucketConfiguration={"LocationConstraint": REGION})
    arn = registered(sm, s3, "exec-a", bucket="elsewhere")
    deploy_fn.handler(approved_event(arn), sagemaker=sm, s3=s3, env=ENV, now=0)
    assert in_service(deploy_fn, sm, s3, autoscaling, now=60)["baselines"]["status"] == "missing"
    assert baseline_objects(s3) == {}
    package = {"ModelMetrics": {"ModelDataQuality": {"Statistics": {"S3Uri": f"s3://{BUCKET}/curated/x.json"}}}}
    assert deploy_fn.baseline_sources(package, BUCKET) == {}


# ------------------------------------------------------------------------------------------ monitor function

MONITOR_ENV = {
    "LAKE_BUCKET": BUCKET, "ENDPOINT_NAME": "diagnosa-dev", "JOB_PREFIX": "diagnosa-dev-monitor",
    "JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-monitoring", "IMAGE_URI": IMAGE,
    "CODE_PREFIX": "artifacts/code/0123456789abcdef/", "INSTANCE_TYPE": "ml.m5.large", "KMS_KEY_ARN": KEY,
    "METRICS_NAMESPACE": "Diagnosa/Monitoring", "SCHEDULE": "rate(1 day)", "AWS_REGION": REGION,
}
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
SCHEDULED = {"reason": "schedule", "schedule": "rate(1 day)", "window": ""}


def installed_baselines(s3, since="2027-01-01T00:00:00Z"):
    for name in FILES:
        s3.put_object(Bucket=BUCKET, Key=BASELINE + name, Body=b"{}",
                      Metadata={"model-package": "arn:pkg/1", "serving-since": since})


def captured(s3, feedback=True):
    s3.put_object(Bucket=BUCKET, Key="capture/diagnosa-dev/AllTraffic/2027/01/15/07/00-00-000-x.jsonl", Body=b"{}\n")
    if feedback:
        s3.put_object(Bucket=BUCKET, Key="feedback/diagnosa-dev/2027/01/15/07/e--t--r.json", Body=b"{}")


def run_monitor(monitor_fn, sm, s3, event=SCHEDULED, env=MONITOR_ENV, now=NOW):
    requests = []
    create = sm.create_processing_job

    def recording(**request):
        requests.append(request)
        return create(**request)

    result = monitor_fn.handler(event, sagemaker=type("Client", (), {"create_processing_job": staticmethod(recording)})(),
                                s3=s3, env=env, now=now)
    return result, requests


def test_no_baseline_no_job(aws, monitor_fn):
    sm, s3, _ = aws
    captured(s3)
    result, requests = run_monitor(monitor_fn, sm, s3)
    assert result == {"status": "skipped", "reason": "no baseline",
                      "missing": ["data/statistics.json", "data/constraints.json"]}
    assert requests == [] and sm.list_processing_jobs()["ProcessingJobSummaries"] == []


def test_no_captured_traffic_no_job(aws, monitor_fn):
    sm, s3, _ = aws
    installed_baselines(s3)
    result, requests = run_monitor(monitor_fn, sm, s3)
    assert result == {"status": "skipped", "reason": "no captured traffic"} and requests == []


def test_scheduled_run_starts_the_monitoring_job(aws, monitor_fn):
    sm, s3, _ = aws
    installed_baselines(s3)
    captured(s3)
    result, [request] = run_monitor(monitor_fn, sm, s3)
    assert request_problems("CreateProcessingJob", request) is None  # botocore's request shape
    name = "diagnosa-dev-monitor-20270115-080000"
    assert result["status"] == "started" and result["job"] == request["ProcessingJobName"] == name
    job = sm.describe_processing_job(ProcessingJobName=name)  # moto recorded it
    assert job["RoleArn"] == MONITOR_ENV["JOB_ROLE_ARN"]
    app = request["AppSpecification"]
    assert app["ImageUri"] == IMAGE and app["ContainerEntrypoint"][:2] == ["/bin/bash", "-c"]
    script = app["ContainerEntrypoint"][2]
    assert "tar -xzf sourcedir.tar.gz" in script and "pip install" in script and "-r requirements.txt" in script
    assert 'python monitor_job.py "$@"' in script
    # The job reads the window's capture and feedback in the lake itself: a ProcessingInput of capture/<endpoint>/
    # would download every request ever captured, on every run, however short the window.
    assert app["ContainerArguments"] == ["--base-dir", "/opt/ml/processing", "--endpoint-name", "diagnosa-dev",
                                         "--lake", "s3://lake", "--last", "1d",
                                         "--metrics-namespace", "Diagnosa/Monitoring"]
    inputs = {i["InputName"]: (i["S3Input"]["S3Uri"], i["S3Input"]["LocalPath"]) for i in request["ProcessingInputs"]}
    assert inputs == {
        "code": ("s3://lake/artifacts/code/0123456789abcdef/", "/opt/ml/processing/input/code"),
        "baseline": ("s3://lake/artifacts/monitoring/diagnosa-dev/baseline/", "/opt/ml/processing/input/baseline")}
    [output] = request["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"s3://lake/artifacts/monitoring/diagnosa-dev/reports/{name}/"
    assert output["S3Output"]["LocalPath"] == "/opt/ml/processing/output/report"
    assert request["ProcessingOutputConfig"]["KmsKeyId"] == KEY
    assert request["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == KEY
    assert request["Environment"]["AWS_DEFAULT_REGION"] == REGION and "NetworkConfig" not in request


def test_the_job_never_reads_traffic_from_before_the_serving_model(aws, monitor_fn):
    sm, s3, _ = aws
    installed_baselines(s3, since="2027-01-15T02:30:00Z")  # deployed 5.5 h before this run
    captured(s3, feedback=False)
    result, [request] = run_monitor(monitor_fn, sm, s3)
    arguments = request["AppSpecification"]["ContainerArguments"]
    assert arguments[6:8] == ["--since", "2027-01-15T02:30:00Z"] and "--last" not in arguments
    assert request_problems("CreateProcessingJob", request) is None


@pytest.mark.parametrize("since, env, lag", [
    ("2027-01-01T00:00:00Z", {"FEEDBACK_LAG": "7d"}, ["--feedback-lag", "10080m"]),  # the stack's default
    ("2027-01-12T08:00:00Z", {"FEEDBACK_LAG": "7d"}, ["--feedback-lag", "2880m"]),  # not before the model served
    ("2027-01-14T08:00:00Z", {"FEEDBACK_LAG": "7d"}, []),  # it started serving as the window did
    ("2027-01-01T00:00:00Z", {}, []),  # no lag: the window's requests alone
    ("2027-01-01T00:00:00Z", {"FEEDBACK_LAG": "0"}, []),
])
def test_live_quality_judges_the_feedback_lag_before_the_window_but_never_another_models_traffic(
        aws, monitor_fn, since, env, lag):
    # Feedback confirmed days after its request was joined by no report: each daily job judged only its own day's.
    sm, s3, _ = aws
    installed_baselines(s3, since=since)
    captured(s3)
    _, [request] = run_monitor(monitor_fn, sm, s3, env={**MONITOR_ENV, **env})
    arguments = request["AppSpecification"]["ContainerArguments"]
    assert arguments[6:8 + len(lag)] == ["--last", "1d", *lag]
    assert request_problems("CreateProcessingJob", request) is None


@pytest.mark.parametrize("lag, message", [
    ("7 days", "feedback lag '7 days' must be 0 or a duration like 12h, 7d or 2w"),
    ("-1d", "feedback lag '-1d' must be 0 or a duration"),
    ("99999999999w", "feedback lag '99999999999w' is longer than 36500 days")])
def test_a_bad_feedback_lag_starts_no_job(aws, monitor_fn, lag, message):
    sm, s3, _ = aws
    installed_baselines(s3)
    captured(s3)
    with pytest.raises(monitor_fn.Refused, match=message):
        run_monitor(monitor_fn, sm, s3, env={**MONITOR_ENV, "FEEDBACK_LAG": lag})
    with pytest.raises(monitor_fn.Refused, match=message):  # a direct invocation's own lag is checked the same way
        run_monitor(monitor_fn, sm, s3, event={"window": "1d", "feedback_lag": lag})
    assert sm.list_processing_jobs()["ProcessingJobSummaries"] == []


def test_vpc_mode_gives_the_job_the_private_subnets(aws, monitor_fn):
    sm, s3, _ = aws
    installed_baselines(s3)
    captured(s3)
    env = {**MONITOR_ENV, "SUBNET_IDS": "subnet-1,subnet-2", "SECURITY_GROUP_IDS": "sg-1"}
    _, [request] = run_monitor(monitor_fn, sm, s3, env=env)
    assert request["NetworkConfig"] == {"VpcConfig": {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}}
    assert request_problems("CreateProcessingJob", request) is None


@pytest.mark.parametrize("event, window", [
    ({"schedule": "rate(1 day)", "window": ""}, "1d"), ({"schedule": "rate(12 hours)"}, "12h"),
    ({"schedule": "rate(30 minutes)"}, "30m"), ({"schedule": "cron(0 3 ? * MON *)", "window": "7d"}, "7d"),
    ({"window": "2w"}, "2w")])
def test_window_follows_the_schedule_unless_given(monitor_fn, event, window):
    assert monitor_fn.window_of(event, {}) == window


@pytest.mark.parametrize("event, message", [
    ({"schedule": "cron(0 3 ? * MON *)", "window": ""}, "no window given and none derivable"),
    ({"window": "0d"}, "must be a positive duration"), ({"window": "24 hours"}, "must be a positive duration"),
    # The deploy-time MonitorWindow parameter is past synth's check: 99999999999w raised OverflowError in the Lambda.
    ({"window": "99999999999w"}, "'99999999999w' is longer than 36500 days"),
    ({"window": "5215w"}, "'5215w' is longer than 36500 days")])
def test_bad_windows_are_refused(monitor_fn, event, message):
    with pytest.raises(monitor_fn.Refused, match=message):
        monitor_fn.window_of(event, {})


def test_the_staged_code_has_the_monitoring_entry_point_and_the_pins():
    from pipelines.staging import bundle_files

    files = bundle_files()
    assert "monitor_job.py" in files and "requirements.txt" in files
    assert b"monitoring.job" in files["monitor_job.py"]


def test_the_entrypoint_unpacks_installs_and_passes_the_arguments(monitor_fn, tmp_path):
    """The container command, run with bash against a stand-in bundle (no pins, so pip has nothing to fetch)."""
    import io
    import os
    import subprocess
    import sys
    import tarfile

    code = tmp_path / "input" / "code"
    code.mkdir(parents=True)
    with tarfile.open(code / "sourcedir.tar.gz", "w:gz") as archive:
        for name, body in {"requirements.txt": b"", "monitor_job.py":
                           b"import json, sys; open('args.json', 'w').write(json.dumps(sys.argv[1:]))\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    script = monitor_fn.SCRIPT.replace("/opt/ml/processing/input/code", str(code))
    arguments = ["--base-dir", "/opt/ml/processing", "--endpoint-name", "diagnosa-dev", "--last", "1d"]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "PIP_NO_INDEX": "1"}
    subprocess.run(["/bin/bash", "-c", script, "monitor_job", *arguments], check=True, env=env, timeout=120,
                   capture_output=True)
    assert json.loads((code / "args.json").read_text()) == arguments
