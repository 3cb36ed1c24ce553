"""Retraining on AWS folds doctors' feedback first, as `diagnosa monitor --retrain` does locally: the retrain
function starts the feedback-folding job when the endpoint has feedback, and the job's end brings it back to
start the pipeline on the version the job wrote. Under moto, requests checked against botocore's shapes."""
from __future__ import annotations

import json

import boto3
import pytest
from aws_calls import ACCOUNT, error, on_call
from botocore.exceptions import ClientError
from deploy_env import REGION
from lambda_functions import create_pipeline
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends
from s3_grants import PrefixListGrant

from pipelines.service_model import request_problems

BUCKET, RAW = "lake", "raw"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
RETRAIN_ENV = {
    "PIPELINE_NAME": "diagnosa-dev", "LAKE_BUCKET": BUCKET, "DATASET": "patients", "ENDPOINT_NAME": "diagnosa-dev",
    "RAW_BUCKET": RAW,
    "FOLD_JOB_PREFIX": "diagnosa-dev-fold", "FOLD_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-fold-feedback",
    "IMAGE_URI": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "CODE_PREFIX": "artifacts/code/0123456789abcdef/", "INSTANCE_TYPE": "ml.m5.large", "KMS_KEY_ARN": KEY,
    "AWS_REGION": REGION,
}
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
    """A manual invocation's JSON may escape a lone surrogate ("\\ud800"): stored, read back, described."""
    sm, s3 = aws
    with_feedback(s3)
    event = json.loads('{"reason": "nuevo lote \\ud800", "parameters": {"Resampling": "smote\\udfff"}}')
    job = retrain_fn.handler(event, sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)["job"]
    s3.put_object(Bucket=BUCKET, Key=f"artifacts/monitoring/diagnosa-dev/retraining/{job}/result/retraining.json",
                  Body=json.dumps({"version": None, "reason": "no feedback in the lake"}))
    result = retrain_fn.handler(job_event(name=job), sagemaker=sm, s3=s3, env=RETRAIN_ENV, now=NOW)
    assert result["parameters"]["Resampling"] == "smote\udfff" and result["reason"].startswith("nuevo lote \ud800")
    _, request = sm.calls[-1]
    assert "\ud800" not in request["PipelineExecutionDescription"]  # the description keeps words and punctuation


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


def test_a_retried_invocation_finds_its_job_and_two_invocations_never_share_a_request(aws, retrain_fn):
    """Lambda retries an invocation with its request id; two invocations may come in the same second (the
    schedule and a person): each has its own job and request, and a retry starts no second job."""
    sm, s3 = aws
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
    scheduled = retrain_fn.handler({"id": "eb-7", "reason": "schedule"}, Invocation("req-2"), sagemaker=sm, s3=s3,
                                   env=RETRAIN_ENV, now=NOW)  # the same second as the first
    assert first["job"] == again["job"] != scheduled["job"] and jobs() == sorted({first["job"], scheduled["job"]})

    def request_of(job):
        key = f"artifacts/monitoring/diagnosa-dev/retraining/{job}/request.json"
        return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    assert request_of(first["job"]) == {"reason": "manual", "parameters": {"Resampling": "smote"}}
    assert request_of(scheduled["job"]) == {"reason": "schedule", "parameters": {}}
    # An EventBridge event is named by its id, whatever the attempt.
    retried = retrain_fn.handler({"id": "eb-7", "reason": "schedule"}, Invocation("req-3"), sagemaker=sm, s3=s3,
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
