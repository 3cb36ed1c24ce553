"""Starts a Diagnosa pipeline execution: the retraining hook (AWS Lambda, plain boto3).

Invoked by the retraining schedule (``{"reason": "schedule", "parameters": {...}}``), by the drift
alarm through EventBridge (``CloudWatch Alarm State Change`` to ALARM) or directly with
``{"reason": "...", "parameters": {"Name": value}}``. Parameter overrides must name parameters the
pipeline declares (the stack passes their names in ``PIPELINE_PARAMETERS``); anything else is
refused before SageMaker is called.
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


def handler(event: dict[str, Any], context: Any = None, *, sagemaker: Any = None,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    env = env if env is not None else dict(os.environ)
    pipeline = env["PIPELINE_NAME"]
    declared = {p for p in env.get("PIPELINE_PARAMETERS", "").split(",") if p}
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
    sagemaker = sagemaker or boto3.client("sagemaker")
    description = re.sub(r"[^\w\s.:/=+-]", " ", f"Diagnosa retraining: {reason}")[:3072]
    response = sagemaker.start_pipeline_execution(
        PipelineName=pipeline, PipelineExecutionDescription=description,
        PipelineExecutionDisplayName=re.sub(r"[^A-Za-z0-9-]", "-", f"retrain-{reason}")[:82].strip("-"),
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in sorted(overrides.items())])
    arn = response["PipelineExecutionArn"]
    log.info("started %s (%s, overrides %s)", arn, reason, overrides)
    return {"execution": arn, "reason": reason, "parameters": overrides}
