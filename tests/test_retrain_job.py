"""The feedback-folding job (monitoring/retrain_job.py), the container entry the retrain function is to start in AWS: on
an S3 lake whose raw zone is a bucket of its own (moto), captures and feedback written by the real writers
(``DataCapture``, ``store_feedback``), it folds the endpoint's feedback into a new curated version — the built-in
cohort's and a dataset of one's own — and says so in ``output/result/retraining.json``; no feedback to fold is a
result without a version (exit 0), a job that cannot run is ``output/failure`` and exit 1. The staged
``retrain_job.py`` runs from the unpacked bundle as the container runs it."""
from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from diagnosa.data.cohort import CohortConfig, generate, write_raw
from diagnosa.data.ingest import curated_uri, current_latest, ingest_cohort, ingest_csv, load_curated
from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id
from inference.feedback import Feedback, store_feedback
from monitoring.retrain_job import main

REGION = "eu-west-1"
LAKE, RAW = "diagnosa-lake", "diagnosa-raw"
RECORD_FIELDS = ("age", "sex", "temperature_c", "heart_rate_bpm", "respiratory_rate_bpm", "systolic_bp_mmhg",
                 "diastolic_bp_mmhg", "spo2_pct", "symptoms", "prior_diagnoses")


@pytest.fixture(scope="module")
def cohort():
    return generate(CohortConfig(patients=1000, seed=11, defect_rate=0))


@pytest.fixture
def s3(monkeypatch):
    """moto: the lake's bucket and the raw zone's (the stack's object-locked one), fake credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=LAKE, CreateBucketConfiguration={"LocationConstraint": REGION})
        client.create_bucket(Bucket=RAW, CreateBucketConfiguration={"LocationConstraint": REGION},
                             ObjectLockEnabledForBucket=True)  # as the stack's: a default retention
        client.put_object_lock_configuration(Bucket=RAW, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}})
        yield client


def s3_lake(s3) -> DataLake:
    return DataLake.from_uri(f"s3://{LAKE}", raw_uri=f"s3://{RAW}", s3_client=s3)


@pytest.fixture
def cohort_lake(s3, cohort):
    """The built-in cohort (1,000 patients) as raw batch 'hospital', ingested: curated/patients/<version>."""
    lake = s3_lake(s3)
    write_raw(cohort, lake, "hospital")
    ingest_cohort(lake, "hospital")
    return lake


def job(base: Path, endpoint: str, *more: str, lake: str = f"s3://{LAKE}", raw: str | None = f"s3://{RAW}") -> int:
    return main(["--base-dir", str(base), "--lake", lake, *(["--raw-lake", raw] if raw else []),
                 "--endpoint-name", endpoint, *more])


def result_of(base: Path) -> dict:
    return json.loads((base / "output" / "result" / "retraining.json").read_text(encoding="utf-8"))


def patient_requests(cohort, n: int) -> list[tuple[dict, str]]:
    """Single-patient requests as a hospital system sends them (vitals and history; no labs), with the truth."""
    requests = []
    for _, row in cohort.records.head(n).iterrows():
        record = {}
        for name in RECORD_FIELDS:
            value = row[name]
            if isinstance(value, str):
                record[name] = value
            elif hasattr(value, "__len__"):
                record[name] = [str(v) for v in value]
            elif value is not None and not math.isnan(value):
                record[name] = int(value) if name == "age" else float(value)
        requests.append((record, row["label"]))
    return requests


def confirmed_cohort(lake: DataLake, cohort, endpoint: str, patients: int, spool: Path) -> list[str]:
    """The cohort as raw batch 'hospital', ingested (the latest version); its first ``patients`` served at
    ``endpoint`` and each confirmed by a doctor with its true label: their event ids."""
    write_raw(cohort, lake, "hospital")
    ingest_cohort(lake, "hospital")
    requests = patient_requests(cohort, patients)
    events = served(lake, endpoint, [record for record, _ in requests], spool)
    for event, (_, label) in zip(events, requests):
        store_feedback(lake, endpoint, Feedback(event_id=event, diagnosis=label))
    return events


def served(lake: DataLake, endpoint: str, bodies: list[dict], spool: Path) -> list[str]:
    """Capture each request as the endpoint does (its own spool, not the temp dir's); the event ids."""
    ids = []
    with DataCapture(lake, endpoint, flush_seconds=0.05, spool_dir=spool) as capture:
        for body in bodies:
            event = new_event_id()
            assert capture.record(event, None, json.dumps(body).encode(), "application/json",
                                  b'{"predictions": [{"category": "NO ENFERMO"}]}', "application/json",
                                  datetime.now(timezone.utc))
            ids.append(event)
        assert capture.flush()
    return ids


def test_the_cohorts_feedback_becomes_a_new_curated_version_in_the_s3_lake(tmp_path, s3, cohort_lake, cohort):
    base_version = current_latest(cohort_lake, "patients")
    requests = patient_requests(cohort, 3)
    # An AWS stage's endpoint is diagnosa-<stage> whatever its dataset: the retrain function names the dataset.
    events = served(cohort_lake, "diagnosa-dev", [record for record, _ in requests], tmp_path / "spool")
    for event, (_, label) in zip(events, requests):
        store_feedback(cohort_lake, "diagnosa-dev", Feedback(event_id=event, diagnosis=label))
    store_feedback(cohort_lake, "diagnosa-dev", Feedback(event_id=new_event_id(), diagnosis="NO ENFERMO"))  # not captured

    assert job(tmp_path / "job", "diagnosa-dev", "--dataset", "patients") == 0  # as the retrain function starts it
    result = result_of(tmp_path / "job")
    version = result["version"]
    assert version and version != base_version
    assert result == {"endpoint": "diagnosa-dev", "dataset": "patients", "base_version": base_version, "version": version,
                      "input_data_uri": f"s3://{LAKE}/curated/patients/{version}", "feedback_rows": 3,
                      "skipped": {"no captured request for this event id": 1}, "reason": None, "overtaken_by": None,
                      "rebuilt_from": []}
    assert result["input_data_uri"] == curated_uri(LAKE, "patients", version)  # what the pipeline's input reads
    assert not (tmp_path / "job" / "output" / "failure").exists()
    # LATEST moved to the new version, whose manifest says what it holds; the feedback rows are in it.
    assert current_latest(cohort_lake, "patients") == version
    frame, manifest = load_curated(cohort_lake, "patients", version)
    assert manifest["feedback"] == {"base_batch": "hospital", "endpoint": "diagnosa-dev", "records": 3}
    fed = frame[frame["patient_id"].str.startswith("FB-")].set_index("patient_id")
    assert sorted(fed.index) == sorted(f"FB-{e}" for e in events)
    assert [fed.loc[f"FB-{e}", "label"] for e in events] == [label for _, label in requests]
    # The new raw batch went to the raw zone's bucket, and only there.
    raw = {o["Key"] for o in s3.list_objects_v2(Bucket=RAW)["Contents"]}
    [new_records] = [k for k in raw if k.startswith("raw/clinical_records/hospital.fb-")]
    assert new_records.removesuffix(".jsonl").rsplit("/", 1)[1] == manifest["batch"]
    assert not s3.list_objects_v2(Bucket=LAKE, Prefix="raw/").get("Contents")


OWN_CONFIG = """name = "mi_hospital"
id_column = "paciente"
target = "gravedad"
labels = ["leve", "grave"]

[csv]
delimiter = ";"
decimal = ","
"""


def test_a_dataset_of_ones_own_is_folded_in_the_s3_lake(tmp_path, s3):
    lake = s3_lake(s3)
    rows = [f"P{i:03d};{30 + i % 50};{36 + (i % 7) / 2:.1f};{'grave' if i % 4 == 0 else 'leve'}\n".replace(".", ",")
            for i in range(60)]
    (tmp_path / "mi.csv").write_text("paciente;edad;temperatura;gravedad\n" + "".join(rows), encoding="utf-8")
    (tmp_path / "mi.toml").write_text(OWN_CONFIG, encoding="utf-8")
    base_version = ingest_csv(lake, tmp_path / "mi.csv", tmp_path / "mi.toml").version
    [event] = served(lake, "mi-hospital", [{"edad": 71, "temperatura": 38.5}], tmp_path / "spool")
    store_feedback(lake, "mi-hospital", Feedback(event_id=event, diagnosis="grave"))

    assert job(tmp_path / "job", "mi-hospital") == 0
    result = result_of(tmp_path / "job")
    version = result["version"]
    assert result == {"endpoint": "mi-hospital", "dataset": "mi_hospital", "base_version": base_version,
                      "version": version, "input_data_uri": f"s3://{LAKE}/curated/mi_hospital/{version}",
                      "feedback_rows": 1, "skipped": {}, "reason": None, "overtaken_by": None, "rebuilt_from": []}
    assert version != base_version and current_latest(lake, "mi_hospital") == version
    frame, manifest = load_curated(lake, "mi_hospital", version)
    assert len(frame) == 61 and manifest["feedback"]["rows"] == 1 and manifest["feedback"]["endpoint"] == "mi-hospital"
    assert frame.loc[frame["paciente"] == f"FB-{event}", ["edad", "temperatura", "gravedad"]].values.tolist() == [
        [71, 38.5, "grave"]]
    [new_file] = [o["Key"] for o in s3.list_objects_v2(Bucket=RAW)["Contents"] if ".fb" in o["Key"]]
    assert new_file == manifest["sources"][0]["key"]
    assert s3.get_object(Bucket=RAW, Key=new_file)["Body"].read().endswith(f"FB-{event};71;38,5;grave\n".encode())


def test_the_jobs_log_names_what_was_quarantined_and_why_never_a_cell(tmp_path, s3, caplog):
    # The job logged the ingest report of its re-ingestion, examples and all: the first 40 characters of a free-text
    # note, a bad lab cell, an unknown category value, from the hospital's own batch at every retraining, to
    # CloudWatch. The quarantine in the lake keeps the rows; the log keeps counts and kinds.
    lake = s3_lake(s3)
    rows = [f"P{i:03d};{30 + i % 50};{36 + (i % 7) / 2:.1f};nota {i} SENTINEL-NOTE;{'grave' if i % 4 == 0 else 'leve'}\n"
            .replace(".", ",") for i in range(60)]
    rows[7] = "P007;44;SENTINEL-CELL;nota;leve\n"
    rows[9] = "P009;51;37,5;nota;SENTINEL-LABEL\n"
    (tmp_path / "mi.csv").write_text("paciente;edad;temperatura;nota;gravedad\n" + "".join(rows), encoding="utf-8")
    (tmp_path / "mi.toml").write_text(OWN_CONFIG + "\n[columns.temperatura]\ntype = \"number\"\n", encoding="utf-8")
    report = ingest_csv(lake, tmp_path / "mi.csv", tmp_path / "mi.toml")
    assert "SENTINEL-CELL" in report.summary() and "SENTINEL-NOTE" in report.summary()  # for the person who ingests
    [event] = served(lake, "mi-hospital", [{"edad": 71, "temperatura": 38.5}], tmp_path / "spool")
    store_feedback(lake, "mi-hospital", Feedback(event_id=event, diagnosis="grave"))
    caplog.clear()

    with caplog.at_level(logging.INFO):
        assert job(tmp_path / "job", "mi-hospital") == 0
    logged = caplog.text
    assert "quarantined for wrong type for 'temperatura': 1" in logged and "quarantined for unknown label: 1" in logged
    assert "nota (free text, almost every value distinct)" in logged
    assert "SENTINEL" not in logged and "P007" not in logged
    quarantine = [o["Key"] for o in s3.list_objects_v2(Bucket=LAKE, Prefix="quarantine/")["Contents"]]
    assert any(b"SENTINEL-CELL" in s3.get_object(Bucket=LAKE, Key=key)["Body"].read() for key in quarantine)


def test_no_feedback_to_fold_is_a_result_without_a_version(tmp_path, s3, cohort_lake):
    latest = current_latest(cohort_lake, "patients")
    assert job(tmp_path / "none", "diagnosa") == 0
    assert result_of(tmp_path / "none") == {
        "endpoint": "diagnosa", "dataset": "patients", "base_version": latest, "version": None, "input_data_uri": None,
        "feedback_rows": 0, "skipped": {}, "reason": "no accepted feedback to add: no feedback in the lake",
        "overtaken_by": None, "rebuilt_from": []}
    # Feedback that cannot become a row is counted under its reason; still nothing to fold, still a result.
    store_feedback(cohort_lake, "diagnosa", Feedback(event_id=new_event_id(), diagnosis="NO ENFERMO"))
    assert job(tmp_path / "uncaptured", "diagnosa") == 0
    result = result_of(tmp_path / "uncaptured")
    assert result["version"] is None and result["skipped"] == {"no captured request for this event id": 1}
    assert result["reason"] == "no accepted feedback to add: 1 no captured request for this event id"
    assert not (tmp_path / "uncaptured" / "output" / "failure").exists()
    assert current_latest(cohort_lake, "patients") == latest
    assert not [o for o in s3.list_objects_v2(Bucket=RAW)["Contents"] if ".fb-" in o["Key"]]


def test_a_job_that_cannot_run_writes_the_failure_and_exits_1(tmp_path, s3, cohort_lake):
    latest = current_latest(cohort_lake, "patients")
    assert job(tmp_path / "other", "otro") == 1
    failure = (tmp_path / "other" / "output" / "failure").read_text(encoding="utf-8")
    assert "no dataset in s3://diagnosa-lake deploys to the endpoint 'otro'" in failure
    assert "diagnosa (patients)" in failure  # the endpoints the lake's datasets deploy to
    assert not (tmp_path / "other" / "output" / "result").exists()
    assert job(tmp_path / "dataset", "diagnosa", "--dataset", "mi_hospital") == 1
    assert "no curated dataset 'mi_hospital' in s3://diagnosa-lake" in (
        tmp_path / "dataset" / "output" / "failure").read_text()
    assert job(tmp_path / "version", "diagnosa", "--base-version", "v-missing") == 1
    assert "no curated version 'v-missing' of 'patients'" in (tmp_path / "version" / "output" / "failure").read_text()
    empty = tmp_path / "empty-lake"
    assert job(tmp_path / "empty", "diagnosa", lake=str(empty), raw=None) == 1  # nothing ingested there
    assert "no curated dataset 'patients' in" in (tmp_path / "empty" / "output" / "failure").read_text()
    assert current_latest(cohort_lake, "patients") == latest


def test_an_output_folder_with_a_result_is_refused(tmp_path, s3, cohort_lake):
    result = tmp_path / "job" / "output" / "result"
    result.mkdir(parents=True)
    (result / "retraining.json").write_text('{"version": "earlier"}\n')
    assert job(tmp_path / "job", "diagnosa") == 1
    assert "not empty" in (tmp_path / "job" / "output" / "failure").read_text()
    assert (result / "retraining.json").read_text() == '{"version": "earlier"}\n'


def test_the_staged_script_folds_feedback_as_the_container_runs_it(tmp_path, cohort):
    """``python retrain_job.py`` in the unpacked bundle (its packages, nothing else on the path), on a folder lake."""
    from pipelines.staging import bundle_files

    code = tmp_path / "code"
    for name, data in bundle_files().items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_bytes(data)
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    write_raw(cohort, lake, "hospital")
    base_version = ingest_cohort(lake, "hospital").version
    requests = patient_requests(cohort, 2)
    events = served(lake, "diagnosa", [record for record, _ in requests], tmp_path / "spool")
    for event, (_, label) in zip(events, requests):
        store_feedback(lake, "diagnosa", Feedback(event_id=event, diagnosis=label))
    base = tmp_path / "processing"
    run = subprocess.run([sys.executable, "retrain_job.py", "--base-dir", str(base), "--lake", str(tmp_path / "lake"),
                          "--endpoint-name", "diagnosa"], cwd=code, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    result = result_of(base)
    assert result["base_version"] == base_version and result["feedback_rows"] == 2
    assert result["version"] == current_latest(lake, "patients") != base_version
    assert result["input_data_uri"] == lake.url(f"curated/patients/{result['version']}")
    assert result["input_data_uri"].startswith("file://")


def test_aws_retraining_chain_alarm_folding_job_then_the_pipeline_on_its_version(tmp_path, s3, cohort_lake, cohort):
    """The retrain function (infra/functions/jobs/retrain.py) and this job together, as on AWS: the drift alarm starts the
    job with the request the function builds; the job runs on those very arguments (its output folder uploaded
    where the request says, as SageMaker does at the job's end); the end event starts the execution on the new
    version, with the request's overrides."""
    from lambda_functions import create_pipeline, load_function

    from pipelines.service_model import request_problems

    function = load_function("retrain")
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    create_pipeline(sagemaker, "diagnosa-dev")
    env = {"PIPELINE_NAME": "diagnosa-dev", "LAKE_BUCKET": LAKE,
           "DATASET": "patients", "ENDPOINT_NAME": "diagnosa-dev", "RAW_BUCKET": RAW,
           "FOLD_JOB_PREFIX": "diagnosa-dev-fold", "FOLD_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-fold",
           "IMAGE_URI": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
           "CODE_PREFIX": "artifacts/code/0123456789abcdef/", "INSTANCE_TYPE": "ml.m5.large", "AWS_REGION": REGION,
           "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"}
    requests = patient_requests(cohort, 4)
    events = served(cohort_lake, "diagnosa-dev", [record for record, _ in requests], tmp_path / "spool")
    for event, (_, label) in zip(events, requests):
        store_feedback(cohort_lake, "diagnosa-dev", Feedback(event_id=event, diagnosis=label))
    before = current_latest(cohort_lake, "patients")

    alarm = {"detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
             "detail": {"alarmName": "diagnosa-dev-drift", "state": {"value": "ALARM"}}}
    started = function.handler({**alarm}, sagemaker=sagemaker, s3=s3, env=env, now=1_800_000_000)
    job_name = started["job"]
    assert not sagemaker.list_pipeline_executions(PipelineName="diagnosa-dev")["PipelineExecutionSummaries"]
    described = sagemaker.describe_processing_job(ProcessingJobName=job_name)
    request = function.fold_request(env, job_name)
    assert request_problems("CreateProcessingJob", request) is None
    arguments = described["AppSpecification"]["ContainerArguments"]
    assert arguments == request["AppSpecification"]["ContainerArguments"]

    # The container: the job on the request's arguments, its base dir a folder here.
    base = tmp_path / "container"
    at = arguments.index("--base-dir")
    assert main([*arguments[:at], "--base-dir", str(base), *arguments[at + 2:]]) == 0
    [output] = described["ProcessingOutputConfig"]["Outputs"]
    bucket, prefix = output["S3Output"]["S3Uri"].removeprefix("s3://").split("/", 1)
    local = Path(output["S3Output"]["LocalPath"].replace("/opt/ml/processing", str(base)))
    for path in local.rglob("*"):  # SageMaker's EndOfJob upload
        s3.put_object(Bucket=bucket, Key=prefix + path.relative_to(local).as_posix(), Body=path.read_bytes())

    version = current_latest(cohort_lake, "patients")
    assert version != before
    end = {"detail-type": "SageMaker Processing Job State Change", "source": "aws.sagemaker",
           "detail": {"ProcessingJobName": job_name, "ProcessingJobStatus": "Completed"}}
    result = function.handler(end, sagemaker=sagemaker, s3=s3, env=env)
    assert result["parameters"] == {"InputDataUri": curated_uri(LAKE, "patients", version)}
    assert f"4 feedback row(s) added: version {version}" in result["reason"]
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=result["execution"])
    assert parameters["PipelineParameters"] == [{"Name": "InputDataUri", "Value": curated_uri(LAKE, "patients", version)}]
    _, manifest = load_curated(cohort_lake, "patients", version)
    assert manifest["feedback"] == {"base_batch": "hospital", "endpoint": "diagnosa-dev", "records": 4}


def test_feedback_on_a_captured_request_that_cannot_be_read_says_why_not_that_nothing_was_captured(tmp_path, s3,
                                                                                                    cohort_lake, cohort):
    [(record, label)] = patient_requests(cohort, 1)
    event = new_event_id()
    with DataCapture(cohort_lake, "diagnosa", flush_seconds=0.05, spool_dir=tmp_path / "spool") as capture:
        assert capture.record(event, None, json.dumps(record).encode(), "application/json",
                              b'{"predictions": []}', "application/json", datetime.now(timezone.utc))
        assert capture.flush()
    store_feedback(cohort_lake, "diagnosa", Feedback(event_id=event, diagnosis=label))
    assert job(tmp_path / "job", "diagnosa") == 0
    assert result_of(tmp_path / "job")["skipped"] == {
        "captured request unusable: input and output hold different numbers of patients": 1}


def test_a_result_cut_short_by_a_full_disk_is_not_left_and_the_job_runs_again(tmp_path, s3, cohort_lake, monkeypatch):
    """The job's result written whole or not at all: a full disk at ``retraining.json`` leaves no part of it (the
    service would upload a half JSON the retrain function cannot read) and the retry is not refused as "not empty"."""
    import errno

    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        if self.name == "retraining.json":
            real_write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    base = tmp_path / "job"
    assert job(base, "diagnosa") == 1
    assert "No space left on device" in (base / "output" / "failure").read_text(encoding="utf-8")
    result = base / "output" / "result"
    assert not result.exists() or list(result.iterdir()) == []
    monkeypatch.undo()  # space freed
    (base / "output" / "failure").unlink()
    assert job(base, "diagnosa") == 0, (base / "output" / "failure").read_text(encoding="utf-8")
    assert result_of(base)["reason"] == "no accepted feedback to add: no feedback in the lake"
