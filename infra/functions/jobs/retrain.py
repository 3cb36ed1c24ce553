"""Starts a Diagnosa retraining (AWS Lambda, plain boto3): doctors' feedback first, then the pipeline.

Invoked by the retraining schedule (``{"reason": "schedule", "parameters": {...}}``), by the drift
alarm through EventBridge (``CloudWatch Alarm State Change`` to ALARM) or directly with
``{"reason": "...", "parameters": {"Name": value}}``. Parameter overrides must name parameters the
pipeline declares (read from its definition with ``DescribePipeline``: a list in the environment would grow with
the labels past Lambda's 4 KB); anything else is refused before the execution is started. Without an ``InputDataUri``
override the execution trains on the lake's latest curated version of the stage's dataset
(``curated/<DATASET>/LATEST.json``, written last by ingestion; the built-in cohort's ``patients`` without
``DATASET``): the definition's default names the dataset's prefix, not a version.

Retraining is what ``diagnosa monitor --retrain`` does locally, in two steps (the stack sets ``FOLD_JOB_PREFIX``):

1. when the endpoint has feedback (``feedback/<ENDPOINT_NAME>/``) and no ``InputDataUri`` was given, the function
   starts the feedback-folding job (SageMaker Processing, ``retrain_job.py`` of the staged step code:
   ``monitoring/retrain_job.py``), which adds every accepted feedback to the hospital's data through ingestion —
   a new curated version, LATEST.json moved to it — and writes ``retraining.json``. The request (reason and
   overrides) waits in ``artifacts/monitoring/<endpoint>/retraining/<job>/request.json``;
2. the job's ``SageMaker Processing Job State Change`` event (Completed) brings the function back: it starts
   the execution on the version the job wrote (on the latest one when there was no feedback to add), with the
   request's overrides. A job that failed or was stopped starts nothing: the invocation fails, Lambda retries
   it twice and the event goes to the dead-letter queue (whose alarm notifies the alerts topic). SageMaker may
   send an event twice; the execution's client token is derived from the job's name, so a second event starts
   no second execution.

Without feedback (or with an explicit ``InputDataUri``) the execution starts at once, as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import ClientError
from job_request import CONTAINER, container_script, processing_request

log = logging.getLogger()
log.setLevel(logging.INFO)

ALARM_EVENT = "CloudWatch Alarm State Change"
JOB_EVENT = "SageMaker Processing Job State Change"
ENTRY = "retrain_job.py"
SCRIPT = container_script(ENTRY)
_VERSION = re.compile(r"[0-9a-f]{6,64}")


class Refused(Exception):
    """The event cannot start an execution; nothing was started."""


def latest_input(s3: Any, bucket: str, dataset: str = "patients") -> str:
    """``s3://<bucket>/curated/<dataset>/<version>`` of the latest curated version; Refused when there is none."""
    key = f"curated/{dataset}/LATEST.json"
    try:
        version = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["version"]
    except ClientError as err:
        if not missing_object(s3, bucket, key, err):
            raise
        raise Refused(f"no curated dataset in s3://{bucket}/curated/{dataset}/ (no {key}): ingest data first") from None
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise Refused(f"s3://{bucket}/{key} names no valid version: {version!r}")
    return curated_uri(bucket, dataset, version)


def missing_object(s3: Any, bucket: str, key: str, err: ClientError) -> bool:
    """Whether a GetObject of ``key`` failed for want of the object. S3 answers 404 only to a caller allowed
    s3:ListBucket for the request; this role may list only some prefixes (an s3:prefix condition, which a GetObject
    does not carry), so a missing key is 403: a listing of the key itself, within the grant, tells which
    (diagnosa.lake does the same; the function's package holds none of diagnosa)."""
    code = err.response.get("Error", {}).get("Code")
    if code in ("NoSuchKey", "404", "NotFound"):
        return True
    if code not in ("403", "AccessDenied", "Forbidden"):
        return False
    try:
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    except ClientError:
        return False  # not allowed to list it either: the refusal stands
    return not any(o.get("Key") == key for o in listed)


def curated_uri(bucket: str, dataset: str, version: str) -> str:
    """The pipeline's ``InputDataUri`` for a curated version (``diagnosa.services.curated_uri``'s, pinned by a test)."""
    return f"s3://{bucket}/curated/{dataset}/{version}"


def retraining_prefix(endpoint: str) -> str:
    """Where a feedback-folding job's request and result live, one folder per job."""
    return f"artifacts/monitoring/{endpoint}/retraining/"


def handler(event: dict[str, Any], context: Any = None, *, sagemaker: Any = None, s3: Any = None,
            env: dict[str, str] | None = None, now: float | None = None) -> dict[str, Any]:
    env = env if env is not None else dict(os.environ)
    event = event or {}
    if event.get("detail-type") == JOB_EVENT:
        return _after_folding(event.get("detail") or {}, sagemaker, s3, env)
    declared = _declared(env, sagemaker)
    reason, overrides = _request(event, declared)
    if "InputDataUri" not in overrides and env.get("FOLD_JOB_PREFIX"):
        s3 = s3 or boto3.client("s3")
        endpoint, bucket = env["ENDPOINT_NAME"], env["LAKE_BUCKET"]
        if s3.list_objects_v2(Bucket=bucket, Prefix=f"feedback/{endpoint}/", MaxKeys=1).get("KeyCount", 0):
            invocation = str(event.get("id") or getattr(context, "aws_request_id", None)
                             or datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat())
            return _start_folding(reason, overrides, sagemaker, s3, env, invocation)
    if "InputDataUri" in declared and "InputDataUri" not in overrides and env.get("LAKE_BUCKET"):
        overrides = {**overrides, "InputDataUri": latest_input(s3 or boto3.client("s3"), env["LAKE_BUCKET"],
                                                               env.get("DATASET") or "patients")}
    return _start(sagemaker, env, reason, overrides)


def _declared(env: dict[str, str], sagemaker: Any) -> set[str]:
    """The names of the parameters the pipeline's definition declares."""
    described = (sagemaker or boto3.client("sagemaker")).describe_pipeline(PipelineName=env["PIPELINE_NAME"])
    definition = described["PipelineDefinition"]
    return {str(p["Name"]) for p in json.loads(definition).get("Parameters", [])}


def _request(event: dict[str, Any], declared: set[str]) -> tuple[str, dict[str, Any]]:
    """The retraining's reason and its checked parameter overrides."""
    overrides: object  # the event's, checked below
    if event.get("detail-type") == ALARM_EVENT:
        detail = event.get("detail", {})
        if detail.get("state", {}).get("value") != "ALARM":
            raise Refused(f"alarm {detail.get('alarmName')} is not in ALARM")
        reason, overrides = f"alarm {detail.get('alarmName')}", {}
    else:
        reason = str(event.get("reason") or "manual")
        overrides = event.get("parameters") or {}
    if not isinstance(overrides, dict):
        raise Refused("parameters must be an object of NAME: value")
    unknown = sorted(set(overrides) - declared)
    if unknown:
        raise Refused(f"unknown pipeline parameter(s) {unknown} (declared: {sorted(declared)})")
    return reason, overrides


def _start(sagemaker: Any, env: dict[str, str], reason: str, overrides: dict[str, Any],
           token: str | None = None) -> dict[str, Any]:
    sagemaker = sagemaker or boto3.client("sagemaker")
    description = re.sub(r"[^\w\s.:/=+-]", " ", f"Diagnosa retraining: {reason}")[:3072]
    extra = {"ClientRequestToken": token} if token else {}
    response = sagemaker.start_pipeline_execution(
        PipelineName=env["PIPELINE_NAME"], PipelineExecutionDescription=description,
        PipelineExecutionDisplayName=re.sub(r"[^A-Za-z0-9-]", "-", f"retrain-{reason}")[:82].strip("-"),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in sorted(overrides.items())], **extra)
    arn = response["PipelineExecutionArn"]
    log.info("started %s (%s, overrides %s)", arn, reason, overrides)
    return {"execution": arn, "reason": reason, "parameters": overrides}


def _start_folding(reason: str, overrides: dict[str, Any], sagemaker: Any, s3: Any, env: dict[str, str],
                   invocation: str) -> dict[str, Any]:
    """Step 1: start the feedback-folding job, then write the request beside its future result.

    The job is named after the invocation (the EventBridge event's id, else Lambda's request id), so a retried
    invocation finds its job started (ResourceInUse) instead of starting a second one, and two invocations never
    share a request. The request is written after the job starts: a job that could not start leaves nothing, and
    the job runs for minutes before its end event reads the request."""
    bucket, endpoint = env["LAKE_BUCKET"], env["ENDPOINT_NAME"]
    name = f"{env['FOLD_JOB_PREFIX']}-{hashlib.sha256(invocation.encode('utf-8')).hexdigest()[:24]}"
    folder = f"{retraining_prefix(endpoint)}{name}/"
    try:
        (sagemaker or boto3.client("sagemaker")).create_processing_job(**fold_request(env, name))
    except Exception as err:  # botocore's ClientError: the service's code says whether the job exists
        if getattr(err, "response", {}).get("Error", {}).get("Code") != "ResourceInUse":
            raise
        log.info("the feedback-folding job %s was started by an earlier attempt of this invocation", name)
    s3.put_object(Bucket=bucket, Key=folder + "request.json", ContentType="application/json",
                  Body=json.dumps({"reason": reason, "parameters": overrides}).encode("ascii"))  # lone surrogates too
    log.info("started the feedback-folding job %s (%s, overrides %s)", name, reason, overrides)
    return {"job": name, "reason": reason, "parameters": overrides, "result": f"s3://{bucket}/{folder}result/"}


def _after_folding(detail: dict[str, Any], sagemaker: Any, s3: Any, env: dict[str, str]) -> dict[str, Any]:
    """Step 2: the folding job ended; start the execution on the version it wrote."""
    name, status = str(detail.get("ProcessingJobName") or ""), detail.get("ProcessingJobStatus")
    prefix = env.get("FOLD_JOB_PREFIX")
    if not prefix or not name.startswith(prefix + "-"):
        raise Refused(f"processing job {name!r} is not this stage's feedback-folding job ({prefix}-*)")
    if status in ("InProgress", "Stopping"):
        return {"job": name, "status": status}  # not over yet; the rule matches only the ends
    bucket, endpoint = env["LAKE_BUCKET"], env["ENDPOINT_NAME"]
    folder = f"{retraining_prefix(endpoint)}{name}/"
    if status != "Completed":
        raise Refused(f"the feedback-folding job {name} is {status}: {detail.get('FailureReason') or 'no reason given'}"
                      f"; no retraining started (its request: s3://{bucket}/{folder}request.json)")
    s3 = s3 or boto3.client("s3")
    request, result = (_read_json(s3, bucket, folder + key) for key in ("request.json", "result/retraining.json"))
    declared = _declared(env, sagemaker)
    reason, overrides = _request({"reason": request.get("reason"), "parameters": request.get("parameters")}, declared)
    dataset = env.get("DATASET") or "patients"
    version, base = result.get("version"), result.get("base_version")
    if version is None:  # the version the job found nothing to add to, else the latest
        uri = (curated_uri(bucket, dataset, base) if isinstance(base, str) and _VERSION.fullmatch(base)
               else latest_input(s3, bucket, dataset))
        reason += f"; no feedback added ({result.get('reason') or 'none accepted'})"
    else:
        uri = curated_uri(bucket, dataset, version)
        if not isinstance(version, str) or not _VERSION.fullmatch(version) or result.get("input_data_uri") != uri:
            raise Refused(f"s3://{bucket}/{folder}result/retraining.json names no version of {dataset} in this lake: "
                          f"{version!r}, {result.get('input_data_uri')!r}")
        reason += f"; {result.get('feedback_rows', '?')} feedback row(s) added: version {version}"
    overrides = {**overrides, "InputDataUri": uri} if "InputDataUri" in declared else overrides
    token = hashlib.sha256(name.encode("utf-8")).hexdigest()  # a repeated event starts no second execution
    return {**_start(sagemaker, env, reason, overrides, token), "job": name}


def _read_json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    try:
        value = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as err:
        if not missing_object(s3, bucket, key, err):
            raise
        raise Refused(f"s3://{bucket}/{key} is missing") from None
    except ValueError as err:
        raise Refused(f"s3://{bucket}/{key} is not JSON: {err}") from None
    if not isinstance(value, dict):
        raise Refused(f"s3://{bucket}/{key} is not a JSON object")
    return value


def fold_request(env: dict[str, str], name: str) -> dict[str, Any]:
    """The CreateProcessingJob request of the feedback-folding job (checked against botocore's shape in the tests).

    The job reads and writes the lake itself (capture, feedback and curated data; the raw bucket): the whole history
    of feedback and the hospital's data, which no input channel of a window could hold. Its one input is the code."""
    lake, endpoint = f"s3://{env['LAKE_BUCKET']}", env["ENDPOINT_NAME"]
    arguments = ["--base-dir", CONTAINER, "--lake", lake, "--raw-lake", f"s3://{env['RAW_BUCKET']}",
                 "--endpoint-name", endpoint, "--dataset", env.get("DATASET") or "patients"]
    return processing_request(env, name, role_arn=env["FOLD_ROLE_ARN"], entry=ENTRY, arguments=arguments, inputs=[],
                              output=("result", f"{lake}/{retraining_prefix(endpoint)}{name}/result/", "result"))


__all__ = ["Refused", "curated_uri", "fold_request", "handler", "latest_input", "retraining_prefix"]
