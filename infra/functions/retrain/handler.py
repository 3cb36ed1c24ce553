"""Starts a Diagnosa pipeline execution: the retraining hook (AWS Lambda, plain boto3).

Invoked by the retraining schedule (``{"reason": "schedule", "parameters": {...}}``), by the drift
alarm through EventBridge (``CloudWatch Alarm State Change`` to ALARM) or directly with
``{"reason": "...", "parameters": {"Name": value}}``. Parameter overrides must name parameters the
pipeline declares (the stack passes their names in ``PIPELINE_PARAMETERS``); anything else is
refused before SageMaker is called. Without an ``InputDataUri`` override the execution trains on the
lake's latest curated version of the stage's dataset (``curated/<DATASET>/LATEST.json``, written last by
ingestion; the built-in cohort's ``patients`` without ``DATASET``): the definition's default names the dataset's
prefix, not a version.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

import boto3

log = logging.getLogger()
log.setLevel(logging.INFO)

ALARM_EVENT = "CloudWatch Alarm State Change"


class Refused(Exception):
    """The event cannot start an execution; nothing was started."""


def latest_input(s3: Any, bucket: str, dataset: str = "patients") -> str:
    """``s3://<bucket>/curated/<dataset>/<version>`` of the latest curated version; Refused when there is none."""
    import json

    key = f"curated/{dataset}/LATEST.json"
    try:
        version = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["version"]
    except s3.exceptions.NoSuchKey:
        raise Refused(f"no curated dataset in s3://{bucket}/curated/{dataset}/ (no {key}): ingest data first") from None
    if not isinstance(version, str) or not re.fullmatch(r"[0-9a-f]{6,64}", version):
        raise Refused(f"s3://{bucket}/{key} names no valid version: {version!r}")
    return f"s3://{bucket}/curated/{dataset}/{version}"


def handler(event: dict[str, Any], context: Any = None, *, sagemaker: Any = None, s3: Any = None,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    env = env if env is not None else dict(os.environ)
    pipeline = env["PIPELINE_NAME"]
    declared = {p for p in env.get("PIPELINE_PARAMETERS", "").split(",") if p}
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
    if "InputDataUri" in declared and "InputDataUri" not in overrides and env.get("LAKE_BUCKET"):
        overrides = {**overrides, "InputDataUri": latest_input(s3 or boto3.client("s3"), env["LAKE_BUCKET"],
                                                               env.get("DATASET") or "patients")}
    sagemaker = sagemaker or boto3.client("sagemaker")
    description = re.sub(r"[^\w\s.:/=+-]", " ", f"Diagnosa retraining: {reason}")[:3072]
    response = sagemaker.start_pipeline_execution(
        PipelineName=pipeline, PipelineExecutionDescription=description,
        PipelineExecutionDisplayName=re.sub(r"[^A-Za-z0-9-]", "-", f"retrain-{reason}")[:82].strip("-"),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in sorted(overrides.items())])
    arn = response["PipelineExecutionArn"]
    log.info("started %s (%s, overrides %s)", arn, reason, overrides)
    return {"execution": arn, "reason": reason, "parameters": overrides}
