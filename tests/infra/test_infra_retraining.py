"""Retraining on AWS folds doctors' feedback first, as `diagnosa monitor --retrain` does locally: the retrain
function starts the feedback-folding job when the endpoint has feedback, and the job's end brings it back to
start the pipeline on the version the job wrote. Under moto, requests checked against botocore's shapes."""
from __future__ import annotations

import json
import re

import boto3
import pytest
from aws_calls import ACCOUNT, answer, error, on_call
from botocore.exceptions import ClientError
from deploy_env import REGION, RETRAIN_ENV
from lambda_functions import create_pipeline
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends
from s3_grants import PrefixListGrant

from pipelines.service_model import request_problems

BUCKET, RAW = "lake", "raw"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z
JOB = "diagnosa-dev-fold-0123456789abcdef01234567"  # a folding job step 2 hears of (step 1 names it)
# What the function's role may list (infra/stack.py, FindFeedback): S3 answers it 403 for a missing object elsewhere.
LISTABLE = ("feedback/diagnosa-dev/", "artifacts/monitoring/diagnosa-dev/retraining/", "curated/patients/LATEST.json",
            "curated/mi_hospital/LATEST.json")
ALARM = {"detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
         "detail": {"alarmName": "diagnosa-dev-drift", "state": {"value": "ALARM"}}}


class Recorder:
    """The real (moto) SageMaker client, with the requests the function made kept for the botocore shape check:
    those that start or create something in ``calls``, the reads (the pipeline's definition) in ``reads``."""

    def __init__(self, client):
        self.client, self.calls, self.reads = client, [], []

    def __getattr__(self, name):
        if name == "meta":  # the client's service model (the function checks instance counts and types with it)
            return self.client.meta
        if name == "get_paginator":  # listings, page after page: reads, made by botocore's paginator
            return self.client.get_paginator

        def call(**request):
            (self.reads if name.startswith(("describe_", "list_", "get_")) else self.calls).append((name, request))
            return getattr(self.client, name)(**request)
        return call


@pytest.fixture
def pipeline():
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        create_pipeline(client, "diagnosa-dev")  # the definition Diagnosa builds: its parameters are the declared ones
        yield client


@pytest.fixture
def aws(pipeline):
    """The pipeline, the lake and raw buckets, a curated version of the cohort; SageMaker's calls recorded."""
    s3 = boto3.client("s3", region_name=REGION)
    for bucket in (BUCKET, RAW):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="curated/patients/LATEST.json",
                  Body=json.dumps({"version": "d1e44cbc09b6", "manifest": "curated/patients/d1e44cbc09b6/manifest.json"}))
    PrefixListGrant(s3, LISTABLE)
    return Recorder(pipeline), s3


def lake_view():
    """The lake as the test sees it (every key), not as the function's role may list it."""
    return boto3.client("s3", region_name=REGION)


def executions(sm):
    return sm.client.list_pipeline_executions(PipelineName="diagnosa-dev")["PipelineExecutionSummaries"]


def job_event(status="Completed", name=JOB, **detail):
    return {"detail-type": "SageMaker Processing Job State Change", "source": "aws.sagemaker",
            "detail": {"ProcessingJobName": name, "ProcessingJobStatus": status, **detail}}


def with_feedback(s3):
    s3.put_object(Bucket=BUCKET, Key="feedback/diagnosa-dev/events/01a2.json", Body=b"{}")


def test_without_feedback_the_execution_starts_at_once_on_the_latest_version(aws, retrain_fn):
    sm, s3 = aws
    result = retrain_fn.handler(ALARM, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert result["parameters"] == {"InputDataUri": "s3://lake/curated/patients/d1e44cbc09b6"}
    assert [name for name, _ in sm.calls] == ["start_pipeline_execution"] and len(executions(sm)) == 1


def test_with_feedback_the_folding_job_starts_first_and_the_request_waits_beside_its_result(aws, retrain_fn):
    sm, s3 = aws
    with_feedback(s3)
    result = retrain_fn.handler({"reason": "new labels", "parameters": {"Resampling": "smote"}},
                                sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    job = result["job"]
    assert job.startswith("diagnosa-dev-fold-") and len(job) <= 63 and executions(sm) == []
    [(name, request)] = sm.calls
    assert name == "create_processing_job" and request_problems("CreateProcessingJob", request) is None
    assert request["ProcessingJobName"] == job
    assert sm.client.describe_processing_job(ProcessingJobName=job)["RoleArn"] == RETRAIN_ENV["FOLD_ROLE_ARN"]
    app = request["AppSpecification"]
    assert 'exec python retrain_job.py "$@"' in app["ContainerEntrypoint"][2]
    assert app["ContainerArguments"] == ["--base-dir", "/opt/ml/processing", "--lake", "s3://lake", "--raw-lake",
                                         "s3://raw", "--endpoint-name", "diagnosa-dev", "--dataset", "patients"]
    [code] = request["ProcessingInputs"]  # the job reads and writes the lake itself: the whole feedback history
    assert code["S3Input"]["S3Uri"] == "s3://lake/artifacts/code/0123456789abcdef/"
    [output] = request["ProcessingOutputConfig"]["Outputs"]
    folder = f"artifacts/monitoring/diagnosa-dev/retraining/{job}/"
    assert output["S3Output"]["S3Uri"] == f"s3://lake/{folder}result/" == result["result"]
    assert request["ProcessingOutputConfig"]["KmsKeyId"] == KEY
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key=folder + "request.json")["Body"].read())
    assert stored == {"reason": "new labels", "parameters": {"Resampling": "smote"}}


def test_an_explicit_input_is_trained_on_without_folding(aws, retrain_fn):
    sm, s3 = aws
    with_feedback(s3)
    given = "s3://lake/curated/patients/abc123"
    result = retrain_fn.handler({"parameters": {"InputDataUri": given}}, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert result["parameters"] == {"InputDataUri": given} and [n for n, _ in sm.calls] == ["start_pipeline_execution"]


def test_unknown_parameters_are_refused_before_the_folding_job(aws, retrain_fn):
    sm, s3 = aws
    with_feedback(s3)
    with pytest.raises(retrain_fn.Refused, match=r"unknown pipeline parameter\(s\) \['Nope'\]"):
        retrain_fn.handler({"parameters": {"Nope": 1}}, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert sm.calls == [] and lake_view().list_objects_v2(Bucket=BUCKET, Prefix="artifacts/").get("KeyCount") == 0


def folded(s3, result, request=None):
    folder = f"artifacts/monitoring/diagnosa-dev/retraining/{JOB}/"
    s3.put_object(Bucket=BUCKET, Key=folder + "request.json",
                  Body=json.dumps(request or {"reason": "alarm diagnosa-dev-drift", "parameters": {"Resampling": "smote"}}))
    if result is not None:
        s3.put_object(Bucket=BUCKET, Key=folder + "result/retraining.json", Body=json.dumps(result))


def test_a_folding_job_with_nothing_to_add_retrains_on_the_latest_version_with_the_request(aws, retrain_fn):
    sm, s3 = aws
    folded(s3, {"endpoint": "diagnosa-dev", "dataset": "patients", "version": None, "input_data_uri": None,
                "feedback_rows": 0, "skipped": {"no captured request for this event id": 2},
                "reason": "no accepted feedback to add: 2 no captured request for this event id"})
    result = retrain_fn.handler(job_event(), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert result["parameters"] == {"Resampling": "smote", "InputDataUri": "s3://lake/curated/patients/d1e44cbc09b6"}
    assert "no feedback added (no accepted feedback to add" in result["reason"]
    [(name, request)] = sm.calls
    assert name == "start_pipeline_execution" and request_problems("StartPipelineExecution", request) is None


def test_a_fold_rebuilt_on_a_batch_ingested_meanwhile_says_so_in_the_executions_description(aws, retrain_fn):
    # The folding job adds the feedback again to a batch ingested while it read (monitoring/retrain_job.py): the
    # execution it starts is listed in SageMaker with that said, not only in the job's log.
    sm, s3 = aws
    folded(s3, {"endpoint": "diagnosa-dev", "dataset": "patients", "base_version": "b2b2b2b2b2b2",
                "version": "c3c3c3c3c3c3", "input_data_uri": "s3://lake/curated/patients/c3c3c3c3c3c3",
                "feedback_rows": 3, "skipped": {}, "reason": None, "overtaken_by": None,
                "rebuilt_from": [{"base_version": "a1a1a1a1a1a1", "version": "d4d4d4d4d4d4",
                                  "ingested_meanwhile": "b2b2b2b2b2b2"}]})
    result = retrain_fn.handler(job_event(), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert result["parameters"]["InputDataUri"] == "s3://lake/curated/patients/c3c3c3c3c3c3"
    assert "3 feedback row(s) added: version c3c3c3c3c3c3; rebuilt on version b2b2b2b2b2b2, ingested meanwhile" \
        in result["reason"]
    [(_, request)] = sm.calls
    assert "rebuilt on version b2b2b2b2b2b2 ingested meanwhile" in request["PipelineExecutionDescription"]
    assert request_problems("StartPipelineExecution", request, patterns=True) is None


def test_the_jobs_end_event_sent_twice_carries_one_client_token(aws, retrain_fn):
    """SageMaker may send a state change twice; the same token makes SageMaker start one execution (moto does not
    deduplicate, so the test checks what SageMaker deduplicates on)."""
    sm, s3 = aws
    folded(s3, {"version": None, "reason": "no feedback in the lake"})
    for _ in range(2):
        retrain_fn.handler(job_event(), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    tokens = {request["ClientRequestToken"] for _, request in sm.calls}
    assert len(sm.calls) == 2 and len(tokens) == 1 and 32 <= len(tokens.pop()) <= 128


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_a_folding_job_that_did_not_complete_starts_nothing_and_says_why(aws, retrain_fn, status):
    sm, s3 = aws
    folded(s3, None)
    with pytest.raises(retrain_fn.Refused, match=rf"{JOB} is {status}: AlgorithmError: ingest refused.*request\.json"):
        retrain_fn.handler(job_event(status, FailureReason="AlgorithmError: ingest refused"),
                           sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert sm.calls == []


def test_a_failed_folding_job_is_refused_with_its_own_reason_not_only_the_services(aws, retrain_fn):
    # SageMaker's FailureReason says only how the container ended; the job's reason is its ExitMessage (what it wrote
    # to /opt/ml/output/message), which the event may not carry: DescribeProcessingJob has it.
    sm, s3 = aws
    folded(s3, None)
    own = "no curated version of patients to add the feedback to: ingest one first"
    described = []

    def describe(request):
        described.append(request["ProcessingJobName"])
        return answer(200, {"ProcessingJobName": JOB, "ProcessingJobStatus": "Failed", "ExitMessage": own,
                            "FailureReason": "AlgorithmError: see job logs"})
    on_call(sm.client, "DescribeProcessingJob", describe)
    with pytest.raises(retrain_fn.Refused) as refused:
        retrain_fn.handler(job_event("Failed", FailureReason="AlgorithmError: see job logs"),
                           sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert "AlgorithmError: see job logs" in str(refused.value) and own in str(refused.value)
    assert described == [JOB] and sm.calls == []
    # Carried by the event: nothing more is read.
    with pytest.raises(retrain_fn.Refused, match=own):
        retrain_fn.handler(job_event("Failed", ExitMessage=own), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert described == [JOB]


def test_a_failed_folding_job_whose_description_cannot_be_read_keeps_the_events_reason(aws, retrain_fn):
    sm, s3 = aws
    folded(s3, None)
    on_call(sm.client, "DescribeProcessingJob", lambda request: error("AccessDeniedException", "not authorized"))
    with pytest.raises(retrain_fn.Refused, match=rf"{JOB} is Stopped: MaxRuntimeExceeded; no retraining started"):
        retrain_fn.handler(job_event("Stopped", FailureReason="MaxRuntimeExceeded"), sagemaker=sm, s3=s3,
                           env=RETRAIN_ENV, now=NOW)
    assert sm.calls == []


def test_events_of_other_jobs_and_results_naming_another_dataset_are_refused(aws, retrain_fn):
    sm, s3 = aws
    with pytest.raises(retrain_fn.Refused, match="not this stage's feedback-folding job"):
        retrain_fn.handler(job_event(name="diagnosa-prod-fold-20270115-080000"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    with pytest.raises(retrain_fn.Refused, match="result/retraining.json is missing"):
        folded(s3, None)
        retrain_fn.handler(job_event(), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    folded(s3, {"version": "0f1e2d3c4b5a", "input_data_uri": "s3://elsewhere/curated/patients/0f1e2d3c4b5a"})
    with pytest.raises(retrain_fn.Refused, match="names no version of patients in this lake"):
        retrain_fn.handler(job_event(), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    assert sm.calls == []


def test_a_request_with_lone_surrogates_survives_both_steps(aws, retrain_fn):
    """A manual invocation's JSON may escape a lone surrogate ("\\ud800"): escaped (Lambda's runtime cannot send one
    back), stored, read back, described."""
    sm, s3 = aws
    with_feedback(s3)
    event = json.loads('{"reason": "nuevo lote \\ud800 y \\udfff", "parameters": {"Resampling": "smote"}}')
    job = retrain_fn.handler(event, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)["job"]
    s3.put_object(Bucket=BUCKET, Key=f"artifacts/monitoring/diagnosa-dev/retraining/{job}/result/retraining.json",
                  Body=json.dumps({"version": None, "reason": "no feedback in feedback/x\udcff.jsonl"}))
    result = retrain_fn.handler(job_event(name=job), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert result["parameters"]["Resampling"] == "smote" and result["reason"].startswith("nuevo lote \\ud800 y \\udfff")
    assert result["reason"].endswith("(no feedback in feedback/x\\udcff.jsonl)")
    _, request = sm.calls[-1]
    description = request["PipelineExecutionDescription"]  # it keeps words and punctuation
    assert "\ud800" not in description and "\udfff" not in description


# ------------------------------------------------------------------------------------------ without feedback folding

BASIC_ENV = {"PIPELINE_NAME": "diagnosa-dev"}


def test_schedule_starts_an_execution(pipeline, retrain_fn):
    result = retrain_fn.handler({"reason": "schedule", "parameters": {}}, sagemaker=pipeline, env=BASIC_ENV)
    executions = pipeline.list_pipeline_executions(PipelineName="diagnosa-dev")["PipelineExecutionSummaries"]
    assert [e["PipelineExecutionArn"] for e in executions] == [result["execution"]]


def test_overrides_reach_the_execution(pipeline, retrain_fn):
    result = retrain_fn.handler({"reason": "new data", "parameters": {"Resampling": "smote", "OrphanRecallThreshold": 0.6}},
                                sagemaker=pipeline, env=BASIC_ENV)
    parameters = pipeline.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=result["execution"])["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in parameters} == {"Resampling": "smote", "OrphanRecallThreshold": "0.6"}


def test_drift_alarm_event_starts_an_execution(pipeline, retrain_fn):
    event = {"detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
             "detail": {"alarmName": "diagnosa-dev-drift", "state": {"value": "ALARM"}}}
    result = retrain_fn.handler(event, sagemaker=pipeline, env=BASIC_ENV)
    assert result["reason"] == "alarm diagnosa-dev-drift"
    assert pipeline.describe_pipeline_execution(PipelineExecutionArn=result["execution"])


def test_without_an_input_the_latest_curated_version_is_trained_on(pipeline, retrain_fn):
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
    PrefixListGrant(s3, LISTABLE)
    env = {**BASIC_ENV, "LAKE_BUCKET": "lake"}
    with pytest.raises(retrain_fn.Refused, match="no curated dataset in s3://lake/curated/patients/"):
        retrain_fn.handler({"reason": "schedule"}, sagemaker=pipeline, s3=s3, env=env)
    s3.put_object(Bucket="lake", Key="curated/patients/LATEST.json",
                  Body=json.dumps({"version": "d1e44cbc09b6", "manifest": "curated/patients/d1e44cbc09b6/manifest.json"}))
    result = retrain_fn.handler({"reason": "schedule"}, sagemaker=pipeline, s3=s3, env=env)
    assert result["parameters"] == {"InputDataUri": "s3://lake/curated/patients/d1e44cbc09b6"}
    given = retrain_fn.handler({"parameters": {"InputDataUri": "s3://lake/curated/patients/abc123"}},
                               sagemaker=pipeline, s3=s3, env=env)
    assert given["parameters"] == {"InputDataUri": "s3://lake/curated/patients/abc123"}  # an explicit input wins
    # A stage built for a dataset of its own (dataset_config) trains on that dataset's latest version.
    s3.put_object(Bucket="lake", Key="curated/mi_hospital/LATEST.json",
                  Body=json.dumps({"version": "0f1e2d3c4b5a", "manifest": "curated/mi_hospital/0f1e2d3c4b5a/manifest.json"}))
    own = retrain_fn.handler({"reason": "schedule"}, sagemaker=pipeline, s3=s3, env={**env, "DATASET": "mi_hospital"})
    assert own["parameters"] == {"InputDataUri": "s3://lake/curated/mi_hospital/0f1e2d3c4b5a"}


def test_unknown_parameters_are_refused_before_sagemaker(pipeline, retrain_fn):
    with pytest.raises(retrain_fn.Refused, match="unknown pipeline parameter"):
        retrain_fn.handler({"parameters": {"Nope": 1}}, sagemaker=pipeline, env=BASIC_ENV)
    assert pipeline.list_pipeline_executions(PipelineName="diagnosa-dev")["PipelineExecutionSummaries"] == []


def test_the_function_reads_the_parameters_its_own_datasets_pipeline_declares(retrain_fn):
    """A list of parameter names in the environment outgrew Lambda's 4 KB with some 55 labels of disease-name
    length: the function reads the parameters the pipeline's definition declares, here an own dataset's."""
    definition = {"Version": "2020-12-01", "Steps": [], "Parameters": [
        {"Name": "InputDataUri", "Type": "String"}, {"Name": "RecallThresholdEnfermedadPulmonar", "Type": "Float"}]}
    env = {"PIPELINE_NAME": "diagnosa-hosp", "LAKE_BUCKET": "lake", "DATASET": "mi_hospital"}
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        create_pipeline(client, "diagnosa-hosp", json.dumps(definition))
        sm = Recorder(client)
        with pytest.raises(retrain_fn.Refused, match=r"unknown pipeline parameter\(s\) \['Nope'\] \(declared: "
                                                     r"\['InputDataUri', 'RecallThresholdEnfermedadPulmonar'\]\)"):
            retrain_fn.handler({"parameters": {"Nope": 1}}, sagemaker=sm, env=env)
        assert sm.calls == [] and [name for name, _ in sm.reads] == ["describe_pipeline"]  # refused before any execution
        given = {"InputDataUri": "s3://lake/curated/mi_hospital/abc123", "RecallThresholdEnfermedadPulmonar": 0.7}
        result = retrain_fn.handler({"reason": "new data", "parameters": given}, sagemaker=sm, env=env)
        assert result["parameters"] == given
        name, request = sm.calls[-1]
        assert name == "start_pipeline_execution" and request["PipelineParameters"] == [
            {"Name": "InputDataUri", "Value": "s3://lake/curated/mi_hospital/abc123"},
            {"Name": "RecallThresholdEnfermedadPulmonar", "Value": "0.7"}]


def test_the_retrain_function_finds_the_latest_version_ingestion_wrote_as_the_cli_does(retrain_fn, tmp_path):
    """The function is deployed without the diagnosa package, so it reads LATEST.json itself: it must name the
    same input as diagnosa.services.latest_input (`diagnosa pipeline start`) for what ingestion wrote."""
    from diagnosa.data.ingest import ingest_csv
    from diagnosa.lake import DataLake
    from diagnosa.services import latest_input

    csv, config = tmp_path / "t.csv", tmp_path / "t.toml"
    csv.write_text("case,score,outcome\n" + "".join(f"c{i},{i},{'ab'[i % 2]}\n" for i in range(8)), encoding="utf-8")
    config.write_text('name = "tiny"\nid_column = "case"\ntarget = "outcome"\nlabels = ["a", "b"]\n', encoding="utf-8")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        lake = DataLake.from_uri("s3://lake", s3_client=s3)
        for rows in (8, 6):  # a second, different version becomes the latest
            csv.write_text("\n".join(csv.read_text(encoding="utf-8").splitlines()[:rows + 1]) + "\n", encoding="utf-8")
            version = ingest_csv(lake, csv, config).version
            expected = f"s3://lake/curated/tiny/{version}"
            assert retrain_fn.latest_input(s3, "lake", "tiny") == latest_input(lake, "tiny", "lake") == expected


class Invocation:
    def __init__(self, request_id):
        self.aws_request_id = request_id


def jobs() -> list[str]:
    return sorted(sagemaker_backends[ACCOUNT][REGION].processing_jobs)


def test_a_retried_invocation_finds_its_job_and_two_invocations_never_share_a_request(aws, retrain_fn, dev):
    """Lambda retries an invocation with its request id; two invocations may come in the same second (the
    schedule and a person): each has its own job and request, and a retry starts no second job."""
    sm, s3 = aws
    schedule = schedule_input(dev, "eb-7")  # what the stack's schedule sends the function for EventBridge's event eb-7
    with_feedback(s3)
    # SageMaker refuses a second job of one name, ResourceInUse (an error of CreateProcessingJob in botocore's
    # model); moto keeps the last. That answer, at botocore's before-call; a new name goes on to moto.
    assert "ResourceInUse" in {e.name for e in sm.client.meta.service_model.operation_model(
        "CreateProcessingJob").error_shapes}

    def one_job_per_name(request):
        name = request["ProcessingJobName"]
        return error("ResourceInUse", f"Processing job {name} already exists") if name in jobs() else None

    on_call(sm.client, "CreateProcessingJob", one_job_per_name)
    manual = {"reason": "manual", "parameters": {"Resampling": "smote"}}
    first = retrain_fn.handler(manual, Invocation("req-1"), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    again = retrain_fn.handler(manual, Invocation("req-1"), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW + 60)
    # (moto's jobs are Completed at once: the first is not in flight when the schedule comes)
    scheduled = retrain_fn.handler(schedule, Invocation("req-2"), sagemaker=sm, s3=s3,
                                   env=RETRAIN_ENV, now=NOW)  # the same second as the first
    assert first["job"] == again["job"] != scheduled["job"] and jobs() == sorted({first["job"], scheduled["job"]})

    def request_of(job):
        key = f"artifacts/monitoring/diagnosa-dev/retraining/{job}/request.json"
        return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    assert request_of(first["job"]) == {"reason": "manual", "parameters": {"Resampling": "smote"}}
    assert request_of(scheduled["job"]) == {"reason": "schedule", "parameters": {}}
    # An EventBridge event is named by its id, whatever the attempt.
    retried = retrain_fn.handler(schedule_input(dev, "eb-7"), Invocation("req-3"), sagemaker=sm, s3=s3,
                                 env=RETRAIN_ENV, now=NOW)
    assert retried["job"] == scheduled["job"] and len(jobs()) == 2
    assert [name for name, _ in sm.calls] == ["create_processing_job"] * 4  # two of them answered ResourceInUse


def test_a_job_that_could_not_start_leaves_no_request(aws, retrain_fn):
    sm, s3 = aws
    with_feedback(s3)
    # SageMaker throttles every attempt (botocore retries, then gives up): its answer, at botocore's before-call
    on_call(sm.client, "CreateProcessingJob", lambda request: error("ThrottlingException", "Rate exceeded"))
    with pytest.raises(ClientError, match=r"\(ThrottlingException\) when calling the CreateProcessingJob operation: "
                                          r"Rate exceeded"):
        retrain_fn.handler({"reason": "manual"}, Invocation("req-9"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    assert jobs() == [] and not lake_view().list_objects_v2(Bucket=BUCKET, Prefix="artifacts/monitoring/").get("Contents")


def test_nothing_to_fold_trains_on_the_version_the_job_checked_not_a_later_one(aws, retrain_fn):
    sm, s3 = aws
    folded(s3, {"version": None, "base_version": "aaaaaa111111", "reason": "no feedback in the lake"})
    result = retrain_fn.handler(job_event(), sagemaker=sm, s3=s3, env=RETRAIN_ENV)  # LATEST is d1e44cbc09b6 by now
    assert result["parameters"]["InputDataUri"] == "s3://lake/curated/patients/aaaaaa111111"


# ------------------------------------------------------------------------------------------ the stack's wiring

def _target(template, rule_name):
    """The one target of the rule named ``rule_name`` in a synthesized template."""
    [rule] = [r["Properties"] for r in template.find_resources("AWS::Events::Rule").values()
              if r["Properties"].get("Name") == rule_name]
    [target] = rule["Targets"]
    return target


def delivered(target, event):
    """What EventBridge sends ``target`` for ``event``: its constant Input, or its InputTransformer applied (each
    ``<name>`` of the template replaced by the JSON value at its path, "$.a.b", a string with its quotes)."""
    if "InputTransformer" not in target:
        return json.loads(target.get("Input", json.dumps(event)))
    transformer = target["InputTransformer"]
    text = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value = event
        for key in path.removeprefix("$.").split("."):
            value = value[key]
        text = text.replace(f"<{name}>", json.dumps(value))
    return json.loads(text)


def scheduled_event(event_id, time="2027-01-15T08:00:00Z"):
    """EventBridge's event of a schedule's rule (the same id on a duplicate delivery and on each retry)."""
    return {"version": "0", "id": event_id, "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": time, "region": REGION,
            "resources": ["arn:aws:events:eu-west-1:123456789012:rule/diagnosa-dev-retrain-schedule"], "detail": {}}


def schedule_input(template, event_id):
    """What the stage's retraining schedule sends the function for EventBridge's event ``event_id``."""
    return delivered(_target(template, "diagnosa-dev-retrain-schedule"), scheduled_event(event_id))


def test_the_schedule_sends_its_events_id_so_a_duplicate_delivery_starts_no_second_job(aws, retrain_fn, dev):
    """EventBridge delivers at least once and retries the target with the same event; a constant input made every
    delivery a new Lambda request id, hence a second folding job (a second version, a second execution)."""
    sm, s3 = aws
    with_feedback(s3)
    sent = schedule_input(dev, "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92")
    assert sent["reason"] == "schedule" and sent["parameters"] == {}
    assert sent["id"] == "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92"
    first = retrain_fn.handler(sent, Invocation("req-1"), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    again = retrain_fn.handler(schedule_input(dev, "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92"), Invocation("req-2"),
                               sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW + 30)
    assert first["job"] == again["job"] and jobs() == [first["job"]]
    # The next week's event is another retraining.
    later = retrain_fn.handler(schedule_input(dev, "0d6b8e2e-1111-2222-3333-444455556666"), Invocation("req-3"),
                               sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW + 7 * 86400)
    assert later["job"] != first["job"] and len(jobs()) == 2


def test_the_drift_alarm_stays_in_alarm_between_the_daily_drift_scores(dev):
    """The monitoring job publishes the drift score once a day; the alarm's period is an hour. Missing data
    treated as not breaching took the alarm back to OK an hour after each score, and each day's score of a
    persisting drift was a new ALARM: a new retraining every day. Ignored, the state stays until a score says
    otherwise (CloudWatch: "ignore — the current alarm state is maintained")."""
    [alarm] = [a["Properties"] for a in dev.find_resources("AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("AlarmName") == "diagnosa-dev-drift"]
    assert alarm["TreatMissingData"] == "ignore"
    assert alarm["Period"] == 3600 and alarm["EvaluationPeriods"] == 1


def test_the_retrain_function_may_list_only_what_tells_it_a_retraining_runs(dev):
    from test_infra_stack import statements_of

    statements = statements_of(dev, "diagnosa-dev-retrain-function")
    listing = [s for s in statements if any(a in ("sagemaker:ListProcessingJobs", "sagemaker:ListPipelineExecutions")
                                            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    by_action = {s["Action"]: s for s in listing}
    assert sorted(by_action) == ["sagemaker:ListPipelineExecutions", "sagemaker:ListProcessingJobs"]
    # ListProcessingJobs has no resource-level permissions (the Service Authorization Reference): Resource "*", in
    # the role's unscoped policy; ListPipelineExecutions is scoped to the stage's pipeline.
    assert by_action["sagemaker:ListProcessingJobs"]["Resource"] == "*"
    assert json.dumps(by_action["sagemaker:ListPipelineExecutions"]["Resource"]).endswith(':pipeline/diagnosa-dev"]]}')


# ------------------------------------------------------------------------------------------ one retraining at a time

def test_a_repeated_invocation_without_feedback_carries_one_client_token(aws, retrain_fn):
    """Without feedback the execution starts at once: its client token is derived from the invocation (the event's
    id, else Lambda's request id), so SageMaker starts one execution for a repeated event. botocore filled a fresh
    token in each request before. (moto does not deduplicate: the test checks what SageMaker deduplicates on.)"""
    sm, s3 = aws
    sent = []  # the requests as botocore serialized them
    on_call(sm.client, "StartPipelineExecution", lambda request: sent.append(request) or None)
    alarm = {**ALARM, "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92"}
    for attempt in ("req-a", "req-b"):  # EventBridge delivering the alarm's event twice
        retrain_fn.handler(alarm, Invocation(attempt), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    for _ in range(2):  # Lambda retrying a direct invocation (its request id)
        retrain_fn.handler({"reason": "manual"}, Invocation("req-1"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    retrain_fn.handler({**alarm, "id": "another-event"}, Invocation("req-c"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    tokens = [request["ClientRequestToken"] for request in sent]
    assert tokens[0] == tokens[1] != tokens[2] == tokens[3] != tokens[4] != tokens[0]
    shape = sm.client.meta.service_model.shape_for("IdempotencyToken")
    assert all(shape.metadata["min"] <= len(t) <= shape.metadata["max"] for t in tokens)
    assert all(request_problems("StartPipelineExecution", request, patterns=True) is None for request in sent)


def in_progress(job):
    """SageMaker's view of a job still running (moto completes a job at once)."""
    sagemaker_backends[ACCOUNT][REGION].processing_jobs[job].processing_job_status = "InProgress"


def executing(arn, status="Executing"):
    """SageMaker's view of an execution still running (moto's succeed at once), or of one over (``status``)."""
    backend = sagemaker_backends[ACCOUNT][REGION]
    [execution] = [e for p in backend.pipelines.values() for a, e in p.pipeline_executions.items() if a == arn]
    execution.pipeline_execution_status = status


def test_a_retraining_in_flight_holds_back_the_next_one_but_not_its_own_continuation(aws, retrain_fn):
    """The drift alarm and the schedule may come while a retraining runs: a second one would train the same data
    twice and leave two versions pending approval. The function starts nothing while a folding job of the stage is
    in progress or an execution of the pipeline is executing; a retry of the invocation that started the job still
    writes its request, and the job's end still starts its execution."""
    sm, s3 = aws
    with_feedback(s3)
    on_call(sm.client, "CreateProcessingJob", lambda request: error(
        "ResourceInUse", "Job name must be unique") if request["ProcessingJobName"] in jobs() else None)
    listings: dict[str, list] = {"ListProcessingJobs": [], "ListPipelineExecutions": []}  # as the paginator sends them
    for operation, sent in listings.items():
        on_call(sm.client, operation, lambda request, sent=sent: sent.append(request) or None)
    first = retrain_fn.handler({**ALARM, "id": "event-1"}, Invocation("r1"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    in_progress(first["job"])
    # The alarm again (a day later, another event), and the schedule: nothing started, and said why.
    for event in ({**ALARM, "id": "event-2"}, {"id": "event-3", "reason": "schedule", "parameters": {}}):
        held = retrain_fn.handler(event, Invocation("r2"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
        assert f"the feedback-folding job {first['job']} is in progress" in held["skipped"] and "job" not in held
    assert jobs() == [first["job"]] and [n for n, _ in sm.calls] == ["create_processing_job"]
    listed = listings["ListProcessingJobs"]
    assert listed[-1]["NameContains"] == "diagnosa-dev-fold-" and listed[-1]["StatusEquals"] == "InProgress"
    assert all(request_problems("ListProcessingJobs", r, patterns=True) is None for r in listed)
    # Lambda retrying the first invocation finds its own job, not another retraining's.
    retried = retrain_fn.handler({**ALARM, "id": "event-1"}, Invocation("r1"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    assert retried["job"] == first["job"] and "skipped" not in retried
    # The job ends: its event starts the execution, though that is "another" start.
    s3.put_object(Bucket=BUCKET, Key=f"artifacts/monitoring/diagnosa-dev/retraining/{first['job']}/result/"
                  "retraining.json", Body=json.dumps({"version": None, "reason": "no feedback in the lake"}))
    sagemaker_backends[ACCOUNT][REGION].processing_jobs[first["job"]].processing_job_status = "Completed"
    started = retrain_fn.handler(job_event(name=first["job"]), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    executing(started["execution"])
    # While it executes, the next alarm starts nothing either; the job's end event sent again still reaches
    # StartPipelineExecution (with its job's client token: SageMaker starts no second execution).
    held = retrain_fn.handler({**ALARM, "id": "event-4"}, Invocation("r4"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    assert held["skipped"] == f"the execution {started['execution']} of diagnosa-dev is executing"
    retrain_fn.handler(job_event(name=first["job"]), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    starts = [r for n, r in sm.calls if n == "start_pipeline_execution"]
    assert len(starts) == 2 and starts[0]["ClientRequestToken"] == starts[1]["ClientRequestToken"]
    listed = listings["ListPipelineExecutions"]
    assert listed and all(request_problems("ListPipelineExecutions", r, patterns=True) is None for r in listed)
    # Once it is over, the next alarm retrains.
    executing(started["execution"], "Succeeded")
    assert retrain_fn.handler({**ALARM, "id": "event-5"}, Invocation("r5"), sagemaker=sm, s3=s3,
                              env=RETRAIN_ENV)["job"] != first["job"]


def test_an_execution_in_flight_holds_back_a_retraining_without_feedback(pipeline, retrain_fn):
    first = retrain_fn.handler({"reason": "schedule"}, Invocation("r1"), sagemaker=pipeline, env=BASIC_ENV)
    executing(first["execution"])
    held = retrain_fn.handler({"reason": "schedule"}, Invocation("r2"), sagemaker=pipeline, env=BASIC_ENV)
    assert "is executing" in held["skipped"]
    assert len(pipeline.list_pipeline_executions(PipelineName="diagnosa-dev")["PipelineExecutionSummaries"]) == 1


# ------------------------------------------------------------------------------------------ parameter values

def test_values_the_local_run_refuses_are_refused_before_the_folding_job(aws, retrain_fn):
    """`diagnosa monitor --retrain --param` checks types, enums and ranges before anything runs; the function
    checked names only, and a threshold of 1.5, a seed of -3 or a count of "two" reached StartPipelineExecution after
    the folding job had moved LATEST."""
    sm, s3 = aws
    with_feedback(s3)
    for bad, why in (({"RecallThresholdNoEnfermo": 1.5}, r"RecallThresholdNoEnfermo is a recall threshold, in \[0, 1\]"),
                     ({"Seed": -3}, r"Seed must be in \[0, 4294967295\]"),
                     ({"ProcessingInstanceCount": "two"}, "ProcessingInstanceCount is an Integer, got 'two'"),
                     ({"ProcessingInstanceCount": 0}, "ProcessingInstanceCount must be 1 to 100"),
                     ({"TrainingInstanceType": "ml.nope"}, "TrainingInstanceType must be a SageMaker instance type"),
                     ({"Resampling": "smote\udfff"}, "Resampling must be one of"),
                     ({"Seed": 3.0}, r"Seed is an Integer, got 3.0 \(float\)"),
                     ({"OrphanRecallThreshold": True}, "OrphanRecallThreshold is a Float")):
        with pytest.raises(retrain_fn.Refused, match=why):
            retrain_fn.handler({"reason": "manual", "parameters": bad}, Invocation("r"), sagemaker=sm, s3=s3,
                               env=RETRAIN_ENV)
    assert sm.calls == [] and lake_view().list_objects_v2(Bucket=BUCKET, Prefix="artifacts/").get("KeyCount") == 0
    # Text is read as the local command line reads it; the execution gets the values as SageMaker takes them.
    result = retrain_fn.handler({"parameters": {"Seed": "7", "OrphanRecallThreshold": 1, "InputDataUri": "s3://l/c/p/v1"}},
                                Invocation("r"), sagemaker=sm, s3=s3, env=RETRAIN_ENV)
    assert result["parameters"] == {"Seed": 7, "OrphanRecallThreshold": 1.0, "InputDataUri": "s3://l/c/p/v1"}
    assert sm.calls[-1][1]["PipelineParameters"] == [{"Name": "InputDataUri", "Value": "s3://l/c/p/v1"},
                                                      {"Name": "OrphanRecallThreshold", "Value": "1.0"},
                                                      {"Name": "Seed", "Value": "7"}]


def test_the_functions_value_rules_are_the_local_runs(retrain_fn):
    """The function's package holds none of pipelines/: its copy of the rules must refuse exactly what a local run
    refuses (pipelines.executor.resolve_parameters, then pipelines.definition.parameter_problems), for every parameter
    of the definition Diagnosa builds, and keep the same value."""
    from lambda_functions import DEFINITION

    from diagnosa.data import schema
    from pipelines import definition as local
    from pipelines.executor import PARAMETER_TYPES, ExecutionError, resolve_parameters
    from training.models import MAX_SEED

    assert (retrain_fn.MAX_SEED, retrain_fn.ENDPOINT_NAME_MAX) == (MAX_SEED, schema.ENDPOINT_NAME_MAX)
    assert retrain_fn.RESOURCE_NAME.pattern == schema.RESOURCE_NAME.pattern
    assert (retrain_fn.RECALL_THRESHOLD, retrain_fn.SEED_PARAMETER, retrain_fn.ENDPOINT_PARAMETER) == (
        local.RECALL_THRESHOLD, local.SEED_PARAMETER, local.ENDPOINT_PARAMETER)
    assert {k: p.pattern for k, p in retrain_fn.PARAMETER_TEXT.items()} == {
        k: p.pattern for k, p in local.PARAMETER_TEXT.items()}
    assert (retrain_fn.INTEGER_DIGITS, retrain_fn.FLOAT_MAX) == (local.INTEGER_DIGITS, local.FLOAT_MAX)
    assert set(retrain_fn.PARAMETER_TYPES) == set(PARAMETER_TYPES)
    assert set(local.INSTANCE_COUNT_PARAMETERS.values()) <= set(retrain_fn.SHAPE_PARAMETERS)

    definition = json.loads(DEFINITION.read_text(encoding="utf-8"))
    declared = {p["Name"]: p for p in definition["Parameters"]}
    model = boto3.client("sagemaker", region_name=REGION).meta.service_model
    values = [0, 1, 2, -3, 100, 101, 2**32 - 1, 2**32, 2**63, 0.5, 1.0, 1.5, -0.0, -0.1, float("nan"), float("inf"),
              10**400, True, False, None, [], "0", "7", "007", "-3", "0.8", ".5", "1e-3", "1.5", "1e400", "1e-400",
              " 3 ", "+3", "1_000", "٣", "nan", "inf", "two", "", "true", "smote", "none", "both", "Approved",
              "ml.m5.xlarge", "ml.g4dn.xlarge", "ml.nope", "diagnosa", "diagnosa-", "x" * 50, "x" * 51,
              "s3://lake/curated/patients/abc123", "smote\udfff"]
    compared = 0
    for name in declared:
        for value in values:
            try:
                resolved = resolve_parameters(definition, {name: value})
                locally = None if not local.parameter_problems(definition, resolved) else "refused"
            except ExecutionError:
                locally = "refused"
            try:
                there = retrain_fn.parameter_values({name: value}, declared, model)
            except retrain_fn.Refused:
                there = "refused"
            assert (there == "refused") == (locally == "refused"), (name, value, there)
            if there != "refused":
                assert there[name] == resolved[name] and type(there[name]) is type(resolved[name]), (name, value)
            compared += 1
    assert compared == len(declared) * len(values) and len(declared) == 19


@pytest.mark.parametrize("reason", ["new batch\nfrom the HIS", "lote\r\n2", "x\u2028y", "x\u2029y", "x\x85y",
                                    "tab\there", "  many   spaces\x1c "])
def test_a_reason_of_many_lines_makes_a_one_line_description(pipeline, retrain_fn, reason):
    """SageMaker holds PipelineExecutionDescription to ".*" with Java's semantics: "." takes no line terminator
    (\\n, \\r, \\u0085, \\u2028, \\u2029), and a reason a person or the folding job's result wrote may hold them."""
    sent = []  # as botocore serialized it
    on_call(pipeline, "StartPipelineExecution", lambda request: sent.append(request) or None)
    retrain_fn.handler({"reason": reason}, sagemaker=pipeline, env=BASIC_ENV)
    [request] = sent
    assert request_problems("StartPipelineExecution", request, patterns=True) is None
    description = request["PipelineExecutionDescription"]
    assert description.startswith("Diagnosa retraining: ") and re.fullmatch(r"\S+( \S+)*", description), description


# ------------------------------------------------------------------------------------------ instance storage

def test_instance_types_with_local_storage_get_no_volume_key(retrain_fn):
    """SageMaker refuses a VolumeKmsKeyId for an instance type with local (NVMe) storage, which its hardware
    encrypts (botocore's documentation of ProcessingClusterConfig): the folding and monitoring jobs' requests leave
    it out for those, by the SageMaker SDK's rule (the function's package has no SDK: a copy, held equal here)."""
    import job_request
    from sagemaker.core.common_utils import instance_supports_kms

    model = boto3.client("sagemaker", region_name=REGION).meta.service_model
    assert "can't request a <code>VolumeKmsKeyId</code> when using an instance type with local storage" in \
        model.shape_for("ProcessingClusterConfig").members["VolumeKmsKeyId"].documentation
    types = {*model.shape_for("ProcessingInstanceType").enum, *model.shape_for("TrainingInstanceType").enum}
    assert {t for t in types if job_request.local_storage(t)} == {t for t in types if not instance_supports_kms(t)}
    assert job_request.local_storage("ml.g4dn.xlarge") and not job_request.local_storage("ml.m5.large")
    for instance_type, keyed in (("ml.m5.large", True), ("ml.g4dn.xlarge", False), ("ml.r5d.large", False),
                                 ("ml.g5.xlarge", False), ("ml.c5.xlarge", True)):
        request = retrain_fn.fold_request({**RETRAIN_ENV, "INSTANCE_TYPE": instance_type}, JOB)
        assert request_problems("CreateProcessingJob", request) is None
        cluster = request["ProcessingResources"]["ClusterConfig"]
        assert ("VolumeKmsKeyId" in cluster) is keyed and (cluster.get("VolumeKmsKeyId", KEY) == KEY), instance_type
        assert request["ProcessingOutputConfig"]["KmsKeyId"] == KEY  # the outputs are the stage key's either way
