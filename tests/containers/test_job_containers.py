"""Container parity: every job of the pipeline definition, run the way its SageMaker container runs it — no Docker.

Everything starts from the definition JSON that ``diagnosa run --local`` and ``diagnosa pipeline upsert``
use (built offline by the project's builder, default families). The local executor runs it once on a
small cohort and keeps each job step's resolved request (``request.json``); each request is then
rendered into a fresh container root (``pipelines/containers.py``) whose inputs are downloaded from an
S3 endpoint (moto's server, holding a copy of the lake), and the container's own program runs in it:

* training steps: AWS's training toolkit (``python -m sagemaker_training.cli.train``, the framework
  images' ``train``) with ``hyperparameters.json`` exactly as the request has it — the toolkit itself
  downloads ``sagemaker_submit_directory`` from its s3:// URI through boto3, installs the pins, builds
  the ``SM_*`` environment and runs ``sagemaker_program``;
* processing steps: ``ContainerEntrypoint`` + ``ContainerArguments`` — the SDK's ``runproc.sh`` from the
  definition's own inputs;
* the monitoring job: the request ``infra/functions/jobs/monitor.py`` sends, captured from the function itself.

So a definition whose hyperparameters, channels, entry scripts or inputs stop matching what the jobs read
fails here. The containers' python/pip are this environment with ``PIP_NO_INDEX=1``: the pins install only
because every one is already satisfied, and the negative checks show a drifted pin or a missing program
failing with a message naming it.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from diagnosa.lake import DataLake
from diagnosa.services import LOCAL_BUCKET, local_definition
from pipelines.containers import render_processing, render_training, training_environment
from pipelines.definition import DEFAULT_FAMILIES
from pipelines.executor import open_local, recorded_request
from pipelines.graph import build_graph
from pipelines.local_jobs import JobError, LakeMapping, container_environment, run_processing, run_training
from pipelines.staging import build_bundle, bundle_files
from training.models import PARAMS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
LOW = {"RecallThresholdNoEnfermo": "0.3", "RecallThresholdEnfermedadLeve": "0.3", "RecallThresholdEnfermedadAguda": "0.3",
       "RecallThresholdEnfermedadCronica": "0.3", "RecallThresholdEnfermedadTerminal": "0.3",
       "OrphanRecallThreshold": "0.1"}
PROCESSING_STEPS = ("Preprocess", "Transform", "Select", "Evaluate")
TOOLKIT = [sys.executable, "-m", "sagemaker_training.cli.train"]
ENTRYPOINT = ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"]


@pytest.fixture(scope="module")
def execution(tmp_path_factory, curated_cohort, seed_lake):
    """The default definition run once by the local executor (pending approval: no deployment)."""
    frame, _ = curated_cohort
    root = tmp_path_factory.mktemp("parity")
    lake, prefix = seed_lake(root)
    definition = local_definition(lake)
    executor = open_local(root, lake, LOCAL_BUCKET, endpoints=None, progress=lambda line: None, use_cache=False,
                          max_parallel=2)
    record = executor.start(definition, {"InputDataUri": f"s3://{LOCAL_BUCKET}/{prefix}", **LOW})
    assert record.status == "Succeeded", record.data.get("FailureReason")
    return SimpleNamespace(root=root, lake=lake, definition=definition, record=record, frame=frame)


def lake_bucket(aws_endpoint: Any, lake: DataLake) -> Any:
    """The lake, as the bucket the definition names, behind an S3 endpoint: its client."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the endpoint's access log
    url, session = aws_endpoint
    client = session.client("s3", endpoint_url=url)
    try:
        client.create_bucket(Bucket=LOCAL_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    except client.exceptions.BucketAlreadyOwnedByYou:  # another module's lake, on the session's one S3 endpoint
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=LOCAL_BUCKET):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=LOCAL_BUCKET, Key=item["Key"])
    for key in lake.list(""):
        client.put_object(Bucket=LOCAL_BUCKET, Key=key, Body=lake.get_bytes(key))
    return client


@pytest.fixture(scope="module")
def s3(aws_endpoint, execution):
    return lake_bucket(aws_endpoint, execution.lake)


def steps_of(definition: dict, kind: str) -> list[str]:
    return sorted(node.name for node in build_graph(definition).values() if node.type == kind)


def request_of(execution, step: str) -> dict:
    operation, request = recorded_request(execution.record.steps[step]["RunFolder"])
    assert operation == {"Train": "CreateTrainingJob"}.get(step.split("-")[0], "CreateProcessingJob")
    return request


def toolkit_environment(log: str) -> dict[str, str]:
    """The SM_* variables the training toolkit handed the program (it logs them before invoking it)."""
    return dict(re.findall(r"^(SM_[A-Z0-9_]+)=(.*)$", log, flags=re.MULTILINE))


def run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600)
    return done.returncode, done.stdout


def test_every_job_step_of_the_definition_is_covered(execution):
    assert steps_of(execution.definition, "Training") == sorted(f"Train-{f}" for f in DEFAULT_FAMILIES)
    assert steps_of(execution.definition, "Processing") == sorted(PROCESSING_STEPS)


# ------------------------------------------------------------------------------------------------ training

def _decoded(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)
def test_training_step_runs_in_the_training_toolkit(family, execution, s3, aws_endpoint, s3_fetch, tmp_path):
    request = request_of(execution, f"Train-{family}")
    # Search settings the definition leaves at their defaults, given as a user's hyperparameters would be: they must
    # reach the job through the toolkit's SM_HPS, and a search of one configuration on 2 folds (2 fits before the
    # final one, not 6) took the gradient boosting's case from 284 s to 135 s (1,500 trees on 617 features a fit).
    # C, a one-character name, reaches the program as the toolkit writes it: "-C 0.5" (one dash), as the SDK sends it.
    given_c = {"C": "\"0.5\""} if "C" in PARAMS[family] else {}
    request = {**request, "HyperParameters": {**request["HyperParameters"], "search_max_configs": "1",
                                              "cv_max_folds": "2", **given_c}}
    hyperparameters = request["HyperParameters"]
    container = render_training(request, tmp_path / "opt-ml", s3_fetch(s3))
    assert container.hyperparameters == hyperparameters  # as the service writes them: no local rewriting
    assert hyperparameters["sagemaker_submit_directory"].startswith(f"s3://{LOCAL_BUCKET}/artifacts/code/")
    env = container_environment(tmp_path, sys.executable, {
        **training_environment(request, container.root), "S3_ENDPOINT_URL": aws_endpoint[0],
        "SM_STUDIO_LOCAL_MODE": "true", "OMP_NUM_THREADS": "1"})
    code, log = run(TOOLKIT, container.root, env)
    assert code == 0, log[-4000:]

    # The toolkit downloaded the bundle from the s3:// URI, installed the pins and ran the program.
    assert (container.root / "code" / hyperparameters["sagemaker_program"]).is_file()
    assert "Installing dependencies from requirements.txt" in log
    seen = toolkit_environment(log)
    assert json.loads(seen["SM_CHANNELS"]) == sorted(c["ChannelName"] for c in request["InputDataConfig"])
    user = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    assert json.loads(seen["SM_HPS"]) == {k: _decoded(v) for k, v in user.items()}
    assert seen["SM_USER_ENTRY_POINT"] == hyperparameters["sagemaker_program"]
    assert seen["SM_MODULE_DIR"] == hyperparameters["sagemaker_submit_directory"]
    for channel in request["InputDataConfig"]:
        assert seen[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] == str(container.channels[channel["ChannelName"]])

    # The model the program wrote: SageMaker's layout, serving code and pins included.
    model = container.model_dir
    assert (model / "model.joblib").is_file() and (model / "code" / "serve_endpoint.py").is_file()
    assert (model / "code" / "requirements.txt").read_bytes() == (container.root / "code" / "requirements.txt").read_bytes()
    metadata = json.loads((model / "metadata.json").read_text())
    assert metadata["family"] == user["family"] == family and metadata["seed"] == int(user["seed"])
    if given_c:
        assert " -C 0.5 " in log and metadata["hyperparameters"]["C"] == 0.5
    settings = metadata["search"]["settings"]
    assert settings["search_max_configs"] == 1 and settings["cv_max_folds"] == 2 and len(metadata["search"]["trials"]) == 1
    assert (container.output_dir / "success").is_file() and not container.failure_file.exists()
    validation = json.loads((container.output_dir / "data" / "validation.json").read_text())["diagnosa"]
    assert validation["macro"]["recall"] == pytest.approx(metadata["validation"]["macro_recall"])
    # The same training data as the executor's run of this step (its deviation is where the bundle comes from).
    with tarfile.open(fileobj=io.BytesIO(execution.lake.get_bytes(
            execution.record.steps[f"Train-{family}"]["Properties"]["ModelArtifacts"]["S3ModelArtifacts"]
            .removeprefix(f"s3://{LOCAL_BUCKET}/")))) as archive:
        local = json.load(archive.extractfile("metadata.json"))
    assert local["fingerprint"] == metadata["fingerprint"] and local["family"] == metadata["family"]


# ------------------------------------------------------------------------------------------------ processing

def _check_preprocess(outputs: dict[str, Path], execution) -> None:
    assert (outputs["transformer"] / "feature_pipeline.joblib").is_file()
    assert (outputs["split"] / "membership.parquet").is_file()
    defaults = {p["Name"]: p.get("DefaultValue") for p in execution.definition["Parameters"]}
    params = json.loads((outputs["transformer"] / "preprocess.json").read_text())["params"]
    assert params["resampling"] == defaults["Resampling"] and params["reduction"] == defaults["Reduction"]
    assert json.loads((outputs["baseline"] / "statistics.json").read_text())["dataset"]["item_count"] > 0


def _check_select(outputs: dict[str, Path], execution) -> None:
    selection = json.loads((outputs["selection"] / "selection.json").read_text())
    assert sorted(selection["candidates"]) == sorted(DEFAULT_FAMILIES)
    if selection["champion"] == "ensemble":  # Select's vote of the candidates (processing/ensemble.py)
        assert selection["ensemble"]["use_ensemble"] and set(selection["ensemble"]["weights"]) <= set(DEFAULT_FAMILIES)
    else:
        assert selection["champion"] in DEFAULT_FAMILIES and not selection["ensemble"].get("use_ensemble")
    with tarfile.open(outputs["champion"] / "model.tar.gz") as archive:
        assert {"model.joblib", "metadata.json", "code/serve_endpoint.py"} <= set(archive.getnames())


def _check_evaluate(outputs: dict[str, Path], execution) -> None:
    evaluation = json.loads((outputs["evaluation"] / "evaluation.json").read_text())
    assert set(evaluation["diagnosa"]["per_class"]) == set(execution.frame["label"].unique())
    assert evaluation["gate"]["passed"] is True  # the thresholds the request carries (LOW)
    assert (outputs["evaluation"] / "prediction_baseline.json").is_file() and (outputs["report"] / "report.md").is_file()


def _check_transform(outputs: dict[str, Path], execution) -> None:
    # One object per curated part (four in the seeded lake), under the part's name, as the local run wrote them.
    for split, suffix in (("train", ".npz"), ("validation", ".parquet"), ("test", ".parquet")):
        names = sorted(p.name for p in outputs[split].glob(f"*{suffix}"))
        assert names == [f"data-part-{i:05d}{suffix}" for i in range(4)], (split, names)
    assert (outputs["test"] / "groups.json").is_file()


CHECKS = {"Preprocess": _check_preprocess, "Transform": _check_transform, "Select": _check_select,
          "Evaluate": _check_evaluate}


@pytest.mark.parametrize("step", PROCESSING_STEPS)
def test_processing_step_runs_as_its_container(step, execution, s3, s3_fetch, tmp_path):
    request = request_of(execution, step)
    assert request["AppSpecification"]["ContainerEntrypoint"] == ENTRYPOINT  # the SDK's runner, one of the inputs
    container = render_processing(request, tmp_path / "opt-ml", s3_fetch(s3),
                                  f"arn:aws:sagemaker:{REGION}:000000000000:processing-job/{request['ProcessingJobName']}")
    assert (container.inputs["entrypoint"] / "runproc.sh").is_file() and (container.inputs["code"] / "sourcedir.tar.gz").is_file()
    env = container_environment(tmp_path, sys.executable, {**request.get("Environment", {}), "OMP_NUM_THREADS": "1"})
    code, log = run(container.command, container.root, env)
    assert code == 0, log[-4000:]
    assert "Files after extraction:" in log  # runproc.sh unpacked the definition's code bundle
    config = json.loads((container.root / "config" / "processingjobconfig.json").read_text())
    assert config["ProcessingJobName"] == request["ProcessingJobName"]
    assert config["AppSpecification"]["ContainerEntrypoint"] == ENTRYPOINT
    CHECKS[step](container.outputs, execution)


def _can_make_pid_namespace() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _first_process(launcher: subprocess.Popen, in_namespace: bool) -> int:
    """The container's first process as the host sees it: the launcher itself, or unshare's one child (PID 1 inside)."""
    if not in_namespace:
        return launcher.pid
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    pytest.fail("unshare started no process")


@pytest.mark.parametrize("in_namespace", [
    pytest.param(True, id="pid-1", marks=pytest.mark.skipif(
        not _can_make_pid_namespace(), reason="a PID namespace (the container's PID 1) needs CAP_SYS_ADMIN: root, as CI")),
    pytest.param(False, id="plain-process")])
def test_a_processing_job_stopped_by_the_service_gets_its_sigterm(in_namespace, execution, s3, s3_fetch, tmp_path):
    # StopProcessingJob signals the container's first process: the bash that runs the SDK's runproc.sh. As PID 1
    # bash ignores SIGTERM (no handler) and passes nothing on; as a plain process it dies and leaves the job running.
    # Either way the job's own handler (processing/entry.py) never ran and SIGKILL came 30 s later: no reason, a
    # half-written champion. The definition's runproc.sh now execs the job, so the job is that first process.
    from test_job_sigterm import HOOK

    request = request_of(execution, "Select")
    container = render_processing(request, tmp_path / "opt-ml", s3_fetch(s3),
                                  f"arn:aws:sagemaker:{REGION}:000000000000:processing-job/{request['ProcessingJobName']}")
    hook, ready = tmp_path / "hook", tmp_path / "paused"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK, encoding="utf-8")
    # The hook wraps the bundle's own diagnosa.files (runproc.sh unpacks it into the code input before Python starts).
    env = container_environment(tmp_path, sys.executable, {
        **request.get("Environment", {}), "OMP_NUM_THREADS": "1", "PAUSE_AT": "output/selection/selection.json",
        "PAUSE_READY": str(ready), "PYTHONPATH": os.pathsep.join([str(hook), str(container.inputs["code"])])})
    launcher_command = (["unshare", "--pid", "--fork", "--kill-child"] if in_namespace else []) + container.command
    log = tmp_path / "container.log"
    with log.open("wb") as out:
        launcher = subprocess.Popen(launcher_command, cwd=container.root, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                assert launcher.poll() is None, f"the job ended before its pause:\n{log.read_text(errors='replace')[-3000:]}"
                assert time.monotonic() < deadline, "the job did not reach its pause in 300 s"
                time.sleep(0.05)
            os.kill(_first_process(launcher, in_namespace), signal.SIGTERM)
            try:
                launcher.wait(timeout=30)  # the service's SIGKILL would come now
            except subprocess.TimeoutExpired:
                pytest.fail("the job was still running 30 s after SIGTERM: the service would SIGKILL it, reason lost")
        finally:
            with contextlib.suppress(ProcessLookupError):  # a job the signal missed (bash died, the job ran on)
                os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    message = container.root / "output" / "message"
    said = log.read_text(errors="replace")
    assert message.is_file(), f"no ExitMessage for DescribeProcessingJob; the job's log:\n{said[-3000:]}"
    assert message.read_text(encoding="utf-8").startswith("stopped by SIGTERM"), said[-3000:]
    assert launcher.returncode == 143  # the job's own status, as SageMaker records it
    assert not [p for p in container.outputs["champion"].rglob("*") if p.is_file()]  # no half-done champion


# ------------------------------------------------------------------------------------------------ monitoring

def _monitor_function():
    from lambda_functions import load_function

    return load_function("monitor")


def _captured_traffic(execution, tmp_path: Path, now: datetime) -> DataLake:
    """Traffic as the endpoint captures it: the champion answering patients of the cohort, 20 minutes ago."""
    from inference.capture import DataCapture
    from inference.handler import invoke, load_service

    champion = execution.record.steps["Select"]["Properties"]["ProcessingOutputConfig"]["Outputs"]["champion"]
    model_dir = tmp_path / "model"
    key = champion["S3Output"]["S3Uri"].removeprefix(f"s3://{LOCAL_BUCKET}/") + "/model.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(execution.lake.get_bytes(key))) as archive:
        archive.extractall(model_dir, filter="data")
    service = load_service(str(model_dir))
    lake = DataLake.from_uri(str(tmp_path / "traffic"))
    capture = DataCapture(lake, "diagnosa", seed=0)
    manifest = next(k for k in execution.lake.list("curated/") if k.endswith("manifest.json"))
    features = [f["name"] for f in json.loads(execution.lake.get_bytes(manifest))["schema"]["fields"]
                if f.get("role") == "feature"]
    for i, row in enumerate(execution.frame.head(40).to_dict("records")):
        record = {}
        for name in features:
            value = row.get(name)
            if hasattr(value, "tolist"):
                value = value.tolist()
            if value is not None and value == value:  # NaN: the field is left out, as a client does
                record[name] = value
        body = json.dumps(record).encode()
        answer, content_type = invoke(service, body, "application/json", "application/json")
        capture.record(f"event-{i}", None, body, "application/json", answer, content_type, now - timedelta(minutes=20))
    capture.close()
    return lake


def test_monitoring_job_runs_as_the_monitor_function_starts_it(execution, s3, aws_endpoint, s3_fetch, tmp_path):
    url, session = aws_endpoint
    # What the deploy function leaves for the serving version: its baselines, with their serving-since metadata.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    outputs = execution.record.steps["Preprocess"]["Properties"]["ProcessingOutputConfig"]["Outputs"]
    evaluation = execution.record.steps["Evaluate"]["Properties"]["ProcessingOutputConfig"]["Outputs"]
    base = "artifacts/monitoring/diagnosa/baseline/"
    since = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for source, folder, name in ((outputs["baseline"], "data", "statistics.json"),
                                 (outputs["baseline"], "data", "constraints.json"),
                                 (evaluation["evaluation"], "predictions", "prediction_baseline.json"),
                                 (evaluation["evaluation"], "predictions", "model_quality_constraints.json")):
        key = source["S3Output"]["S3Uri"].removeprefix(f"s3://{LOCAL_BUCKET}/") + f"/{name}"
        s3.put_object(Bucket=LOCAL_BUCKET, Key=f"{base}{folder}/{name}", Body=execution.lake.get_bytes(key),
                      Metadata={"model-package": "arn:aws:sagemaker:local:000000000000:model-package/diagnosa/1",
                                "serving-since": since})
    traffic = _captured_traffic(execution, tmp_path, now)
    for key in traffic.list("capture/"):
        s3.put_object(Bucket=LOCAL_BUCKET, Key=key, Body=traffic.get_bytes(key))

    # The function, with the stack's environment: the definition's image and staged code.
    preprocess = request_of(execution, "Preprocess")
    code_prefix = next(i["S3Input"]["S3Uri"] for i in preprocess["ProcessingInputs"] if i["InputName"] == "code")
    env = {"LAKE_BUCKET": LOCAL_BUCKET, "ENDPOINT_NAME": "diagnosa", "JOB_PREFIX": "diagnosa-monitor",
           "JOB_ROLE_ARN": "arn:aws:iam::000000000000:role/diagnosa-monitoring",
           "IMAGE_URI": preprocess["AppSpecification"]["ImageUri"],
           "CODE_PREFIX": code_prefix.removeprefix(f"s3://{LOCAL_BUCKET}/"), "INSTANCE_TYPE": "ml.m5.large",
           "KMS_KEY_ARN": f"arn:aws:kms:{REGION}:000000000000:key/00000000-0000-0000-0000-000000000000",
           "METRICS_NAMESPACE": "Diagnosa/Parity", "SCHEDULE": "rate(1 hour)", "AWS_REGION": REGION}
    sent = []
    recorder = type("SageMaker", (), {"create_processing_job": staticmethod(lambda **request: sent.append(request))})()
    result = _monitor_function().handler({"reason": "schedule", "schedule": "rate(1 hour)", "window": ""},
                                         sagemaker=recorder, s3=s3, env=env, now=now.timestamp())
    assert result["status"] == "started", result
    [request] = sent

    container = render_processing(request, tmp_path / "opt-ml", s3_fetch(s3),
                                  f"arn:aws:sagemaker:{REGION}:000000000000:processing-job/{request['ProcessingJobName']}")
    job_env = container_environment(tmp_path, sys.executable, {
        **request["Environment"], "AWS_ENDPOINT_URL": url})  # CloudWatch (and S3) answered by the endpoint
    code, log = run(container.command, container.root, job_env)
    assert code == 0, log[-4000:]
    report = json.loads((container.outputs["report"] / "report.json").read_text())
    assert report["endpoint"] == "diagnosa" and report["traffic"]["events"] == 40  # the captured window, all read
    assert report["baseline"]["has_prediction_baseline"] is True and report["verdict"] in ("ok", "alert")
    assert re.search(r"monitor:alert=[01]", log) and "monitor:drifted_features=" in log
    metrics = session.client("cloudwatch", endpoint_url=url).list_metrics(Namespace=env["METRICS_NAMESPACE"])["Metrics"]
    assert "DriftScore" in {m["MetricName"] for m in metrics}  # published where the drift alarm watches


def test_feedback_folding_job_runs_as_the_retrain_function_starts_it(execution, aws_endpoint, s3_fetch, tmp_path):
    """The retraining's first step on AWS: the request the retrain function sends, run as its container runs it,
    reads and writes an S3 lake (and a raw bucket of its own) behind an endpoint, through its own boto3."""
    from lambda_functions import create_pipeline, load_function

    from diagnosa.data.cohort import CohortConfig, generate, write_raw
    from diagnosa.data.ingest import current_latest, ingest_cohort, load_curated
    from inference.capture import DataCapture, new_event_id
    from inference.feedback import Feedback, store_feedback

    url, session = aws_endpoint
    client = session.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="fold-lake", CreateBucketConfiguration={"LocationConstraint": REGION})
    client.create_bucket(Bucket="fold-raw", CreateBucketConfiguration={"LocationConstraint": REGION},
                         ObjectLockEnabledForBucket=True)  # as the stack's raw bucket: a default retention
    client.put_object_lock_configuration(Bucket="fold-raw", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}})
    lake = DataLake.from_uri("s3://fold-lake", raw_uri="s3://fold-raw", s3_client=client)
    cohort = generate(CohortConfig(patients=1000, seed=5, defect_rate=0))
    write_raw(cohort, lake, "hospital")
    before = ingest_cohort(lake, "hospital").version
    preprocess = request_of(execution, "Preprocess")  # the staged code and image, as the stack passes them
    code_uri = next(i["S3Input"]["S3Uri"] for i in preprocess["ProcessingInputs"] if i["InputName"] == "code")
    code_prefix = code_uri.removeprefix(f"s3://{LOCAL_BUCKET}/").rstrip("/") + "/"
    for key in execution.lake.list(code_prefix):
        client.put_object(Bucket="fold-lake", Key=key, Body=execution.lake.get_bytes(key))
    events = []
    with DataCapture(lake, "diagnosa-parity", flush_seconds=0.05, spool_dir=tmp_path / "spool") as capture:
        for record in cohort.records.head(3).to_dict("records"):
            body = {k: record[k] for k in ("age", "sex", "temperature_c", "heart_rate_bpm") if record[k] == record[k]}
            events.append(new_event_id())
            assert capture.record(events[-1], None, json.dumps(body).encode(), "application/json",
                                  b'{"predictions": [{"category": "NO ENFERMO"}]}', "application/json",
                                  datetime.now(timezone.utc))
        assert capture.flush()
    for event in events:
        store_feedback(lake, "diagnosa-parity", Feedback(event_id=event, diagnosis="ENFERMEDAD LEVE"))

    env = {"PIPELINE_NAME": "diagnosa-parity", "LAKE_BUCKET": "fold-lake",
           "DATASET": "patients", "ENDPOINT_NAME": "diagnosa-parity", "RAW_BUCKET": "fold-raw",
           "FOLD_JOB_PREFIX": "diagnosa-parity-fold", "FOLD_ROLE_ARN": "arn:aws:iam::000000000000:role/fold",
           "IMAGE_URI": preprocess["AppSpecification"]["ImageUri"], "CODE_PREFIX": code_prefix,
           "INSTANCE_TYPE": "ml.m5.large", "AWS_REGION": REGION,
           "KMS_KEY_ARN": f"arn:aws:kms:{REGION}:000000000000:key/00000000-0000-0000-0000-000000000000"}
    sagemaker = session.client("sagemaker", endpoint_url=url)  # the function reads the pipeline's parameters
    create_pipeline(sagemaker, "diagnosa-parity", json.dumps(execution.definition))
    sent = []
    sagemaker.meta.events.register("provide-client-params.sagemaker.CreateProcessingJob",
                                   lambda params, **_: sent.append(dict(params)))
    started = load_function("retrain").handler({"reason": "parity"}, sagemaker=sagemaker, s3=client, env=env)
    [request] = sent
    assert started["job"] == request["ProcessingJobName"]

    container = render_processing(request, tmp_path / "opt-ml", s3_fetch(client),
                                  f"arn:aws:sagemaker:{REGION}:000000000000:processing-job/{request['ProcessingJobName']}")
    job_env = container_environment(tmp_path, sys.executable, {**request["Environment"], "AWS_ENDPOINT_URL": url})
    code, log = run(container.command, container.root, job_env)
    assert code == 0, log[-4000:]
    result = json.loads((container.outputs["result"] / "retraining.json").read_text())
    assert result["feedback_rows"] == 3 and result["version"] == current_latest(lake, "patients") != before
    _, manifest = load_curated(lake, "patients", result["version"])
    assert manifest["feedback"] == {"base_batch": "hospital", "endpoint": "diagnosa-parity", "records": 3}
    raw = [o["Key"] for o in client.list_objects_v2(Bucket="fold-raw")["Contents"]]
    assert any(key.startswith("raw/clinical_records/hospital.fb-") for key in raw)


# ------------------------------------------------------------------------------------------------ negative checks

def _bundle_with(lake: DataLake, key: str, change) -> str:
    files = bundle_files(ROOT)
    change(files)
    lake.put_bytes(key, build_bundle(files))
    return f"s3://{LOCAL_BUCKET}/{key}"


def test_a_bundle_without_the_program_fails_naming_it(execution, tmp_path):
    request = request_of(execution, f"Train-{DEFAULT_FAMILIES[0]}")
    request = {**request, "TrainingJobName": "no-program",
               "HyperParameters": {**request["HyperParameters"], "sagemaker_program": "missing_job.py"}}
    with pytest.raises(JobError, match=r"job no-program exited with \d+ .*missing_job\.py"):
        run_training(request, tmp_path / "run", LakeMapping(LOCAL_BUCKET, execution.lake))


def test_a_pin_that_differs_from_the_environment_fails_naming_it(execution, tmp_path):
    def drift(files):
        files["requirements.txt"] = re.sub(rb"(?m)^numpy==\S+", b"numpy==1.0.0", files["requirements.txt"])
        assert b"numpy==1.0.0" in files["requirements.txt"]

    uri = _bundle_with(execution.lake, "artifacts/code/drifted/sourcedir.tar.gz", drift)
    request = request_of(execution, f"Train-{DEFAULT_FAMILIES[0]}")
    request = {**request, "TrainingJobName": "drifted-pin",
               "HyperParameters": {**request["HyperParameters"], "sagemaker_submit_directory": uri}}
    with pytest.raises(JobError, match=r"job drifted-pin exited with 1 .*InstallRequirementsError.*numpy==1\.0\.0"):
        run_training(request, tmp_path / "train", LakeMapping(LOCAL_BUCKET, execution.lake))
    # The same pins through the SDK's runproc.sh (a processing job): the message names the pin, not pip's noise.
    execution.lake.put_bytes("artifacts/code/drifted/processing/sourcedir.tar.gz",
                             execution.lake.get_bytes("artifacts/code/drifted/sourcedir.tar.gz"))
    preprocess = request_of(execution, "Preprocess")
    inputs = [{**i, "S3Input": {**i["S3Input"], "S3Uri": f"s3://{LOCAL_BUCKET}/artifacts/code/drifted/processing/"}}
              if i["InputName"] == "code" else i for i in preprocess["ProcessingInputs"]]
    with pytest.raises(JobError) as failed:
        run_processing({**preprocess, "ProcessingJobName": "drifted-pre", "ProcessingInputs": inputs}, tmp_path / "pre",
                       LakeMapping(LOCAL_BUCKET, execution.lake))
    message = str(failed.value)
    assert "job drifted-pre exited with 1" in message and "numpy==1.0.0" in message.split("): ", 1)[1]
    assert "Skipping typing" not in message
