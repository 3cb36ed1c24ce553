"""Starts a Diagnosa retraining (AWS Lambda, plain boto3): doctors' feedback first, then the pipeline.

Invoked by the retraining schedule (``{"reason": "schedule", "parameters": {...}}``), by the drift
alarm through EventBridge (``CloudWatch Alarm State Change`` to ALARM) or directly with
``{"reason": "...", "parameters": {"Name": value}}``. Parameter overrides must name parameters the
pipeline declares (read from its definition with ``DescribePipeline``: a list in the environment would grow with
the labels past Lambda's 4 KB), with values of the declared type, choices and range (``parameter_values``: the
local run's rules); anything else is refused before the folding job or the execution is started.

One retraining at a time: while a feedback-folding job of the stage is in progress or an execution of the pipeline
is executing, an alarm, the schedule or a person starts nothing (``{"skipped": why}``); the folding job's end event
is the same retraining going on and always starts its execution. The schedule's target sends EventBridge's event id:
with it (else Lambda's request id) a repeated invocation names the same folding job and the same client token of an
execution started at once, so SageMaker starts neither twice. Without an ``InputDataUri``
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
import sys
import time
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from job_request import CONTAINER, container_script, cut, kind_of, named, processing_request, shown, unknown_fields

log = logging.getLogger()
log.setLevel(logging.INFO)

ALARM_EVENT = "CloudWatch Alarm State Change"
JOB_EVENT = "SageMaker Processing Job State Change"
MANUAL_FIELDS = ("reason", "parameters", "id")  # a manual invocation's or the schedule's (id: EventBridge's event id)
ENTRY = "retrain_job.py"
SCRIPT = container_script(ENTRY)
_VERSION = re.compile(r"[0-9a-f]{6,64}")


# The values a parameter takes, as `diagnosa monitor --retrain` checks them locally (pipelines/executor.py
# resolve_parameters, pipelines/definition.py parameter_from_text and parameter_range_problems): the function's package
# holds none of pipelines/, so the rules are here too, and tests/infra/test_infra_retraining.py holds the two equal
# for every parameter of the definition Diagnosa builds.
RECALL_THRESHOLD = "RecallThreshold"  # in the name of every recall-threshold parameter: in [0, 1]
SEED_PARAMETER, MAX_SEED = "Seed", 2**32 - 1  # numpy's and xgboost's seeds
ENDPOINT_PARAMETER = "EndpointName"
RESOURCE_NAME = re.compile(r"\A[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}\Z")  # SageMaker's names
ENDPOINT_NAME_MAX = 63 - 1 - 12  # the pipeline names endpoint configs <EndpointName>-<execution id of 12>
PARAMETER_TEXT = {"Integer": re.compile(r"-?[0-9]+"),
                  "Float": re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")}
INTEGER_DIGITS = 19  # 2**63 - 1
FLOAT_MAX = sys.float_info.max
PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")
# Parameters named as the SageMaker shape of the request field their value goes to: held to the shape's range or
# values in the service's model (pipelines/service_model.py instance_count_problem, instance_type_problem).
SHAPE_PARAMETERS = ("ProcessingInstanceCount", "TrainingInstanceCount", "ProcessingInstanceType", "TrainingInstanceType")


# What an event or an S3 object may make a message, a log line or the execution's reason: cut to these lengths.
REASON_MAX = 500  # the retraining's reason (the event's, an alarm's name): kept in request.json and the result
SHOWN_MAX = 300  # free text quoted in a message or a log line
# The JSON objects the function reads (LATEST.json, a folding job's request and result) are a few KB; the function has
# 256 MB (infra/stack.py), and parsing takes some times the object's size: a larger one is refused, not read whole.
JSON_MAX_BYTES = 1024 * 1024
# An InputDataUri override: an s3:// URI of a bucket and a prefix (SageMaker's S3Uri holds 1024 characters), no "."
# or ".." step in its path.
S3_URI = re.compile(r"\As3://[a-z0-9][a-z0-9.-]{0,62}/(?!\.{1,2}(?:/|\Z))(?:[^\s/]|/(?!\.{1,2}(?:/|\Z)))+\Z")
S3_URI_MAX = 1024


class Refused(Exception):
    """The event cannot start an execution; nothing was started."""


def latest_input(s3: Any, bucket: str, dataset: str = "patients") -> str:
    """``s3://<bucket>/curated/<dataset>/<version>`` of the latest curated version; Refused when there is none or
    LATEST.json is damaged (naming the object and what is wrong)."""
    key = f"curated/{dataset}/LATEST.json"
    try:
        body = _read_object(s3, bucket, key)
    except ClientError as err:
        if not missing_object(s3, bucket, key, err):
            raise
        raise Refused(f"no curated dataset in s3://{bucket}/curated/{dataset}/ (no {key}): ingest data first") from None
    latest = _parsed(body, bucket, key)
    if "version" not in latest:
        raise Refused(f's3://{bucket}/{key} has no "version": it is not what ingestion writes; ingest again or '
                      f"restore it")
    version = latest["version"]
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise Refused(f"s3://{bucket}/{key} names no valid version: {shown(version)}")
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
    event = {} if event is None else event
    if not isinstance(event, dict):  # Lambda passes any JSON as the event
        raise Refused(f"the event must be a JSON object, not {kind_of(event)}")
    kind = event.get("detail-type")
    if kind is not None and kind not in (ALARM_EVENT, JOB_EVENT):  # it was read as a manual retraining, and started
        raise Refused(f"unexpected event type {shown(kind)}: nothing started (the stack sends the drift alarm's and the "
                      "folding job's events; the schedule and a manual invocation give reason and parameters only)")
    problem = unknown_fields(event, MANUAL_FIELDS) if kind is None else None
    if problem:
        raise Refused(f"{problem}: nothing started")
    sagemaker = sagemaker or boto3.client("sagemaker")
    if kind == JOB_EVENT:  # the continuation of a retraining: never held back by the guard
        detail = event.get("detail")
        if not isinstance(detail, dict):
            raise Refused(f"the {JOB_EVENT} event's detail must be an object, not {kind_of(detail)}")
        return _after_folding(detail, sagemaker, s3, env)
    declared = _declared(env, sagemaker)
    reason, overrides = _request(event, declared, sagemaker.meta.service_model, env)
    # The invocation: the EventBridge event's id (the same on a duplicate delivery and on Lambda's retries), else
    # Lambda's request id (the same on a retry of a direct invocation). It names the folding job and the execution's
    # client token, so a repeated invocation starts neither twice.
    invocation = str(event.get("id") or getattr(context, "aws_request_id", None) or "") or None
    own_job = fold_job_name(env, invocation or _clock(now)) if env.get("FOLD_JOB_PREFIX") else None
    running = _in_flight(sagemaker, env, own_job)
    if running:
        log.info("no retraining started (%s): %s", _said(reason), running)
        return {"skipped": running, "reason": reason, "parameters": overrides}
    if "InputDataUri" not in overrides and own_job:
        s3 = s3 or boto3.client("s3")
        endpoint, bucket = env["ENDPOINT_NAME"], env["LAKE_BUCKET"]
        if s3.list_objects_v2(Bucket=bucket, Prefix=f"feedback/{endpoint}/", MaxKeys=1).get("KeyCount", 0):
            return _start_folding(reason, overrides, sagemaker, s3, env, own_job)
    if "InputDataUri" in declared and "InputDataUri" not in overrides and env.get("LAKE_BUCKET"):
        overrides = {**overrides, "InputDataUri": latest_input(s3 or boto3.client("s3"), env["LAKE_BUCKET"],
                                                               env.get("DATASET") or "patients")}
    token = _token(f"start:{invocation}") if invocation else None  # none: a direct call without a context
    return _start(sagemaker, env, reason, overrides, token)


def _clock(now: float | None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, timezone.utc).isoformat()


def _token(text: str) -> str:
    """A ClientRequestToken of StartPipelineExecution (32 to 128 characters): the hash of what names the start."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fold_job_name(env: dict[str, str], invocation: str) -> str:
    """The feedback-folding job of an invocation (at most 63 characters with the stage's prefix)."""
    return f"{env['FOLD_JOB_PREFIX']}-{hashlib.sha256(invocation.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"


def _in_flight(sagemaker: Any, env: dict[str, str], own_job: str | None) -> str | None:
    """What of a retraining is running, or None: a feedback-folding job of this stage in progress (other than
    ``own_job``, which a retried invocation finds started by its first attempt), or an execution of the pipeline.

    The drift alarm fires on each state change and the schedule on its own; while a retraining runs, another would
    train the same data twice and leave two versions pending approval. The folding job's end event is the same
    retraining going on: it is not asked."""
    prefix = env.get("FOLD_JOB_PREFIX")
    if prefix:
        for job in _listed(sagemaker, "list_processing_jobs", "ProcessingJobSummaries", NameContains=f"{prefix}-",
                           StatusEquals="InProgress"):
            name = str(job.get("ProcessingJobName", ""))
            if name.startswith(f"{prefix}-") and name != own_job:
                return f"the feedback-folding job {name} is in progress (its end starts the retraining's execution)"
    for execution in _listed(sagemaker, "list_pipeline_executions", "PipelineExecutionSummaries",
                             PipelineName=env["PIPELINE_NAME"], SortBy="CreationTime", SortOrder="Descending"):
        if execution.get("PipelineExecutionStatus") == "Executing":
            return f"the execution {execution.get('PipelineExecutionArn')} of {env['PIPELINE_NAME']} is executing"
    return None


def _listed(sagemaker: Any, operation: str, key: str, **request: Any) -> Any:
    """Every item of a SageMaker listing, page after page (botocore's paginator)."""
    for page in sagemaker.get_paginator(operation).paginate(**request):
        yield from page.get(key, [])


def _declared(env: dict[str, str], sagemaker: Any) -> dict[str, dict[str, Any]]:
    """The parameters the pipeline's definition declares, by name (their Type, EnumValues)."""
    described = sagemaker.describe_pipeline(PipelineName=env["PIPELINE_NAME"])
    definition = described["PipelineDefinition"]
    return {str(p["Name"]): p for p in json.loads(definition).get("Parameters", [])}


def _request(event: dict[str, Any], declared: dict[str, dict[str, Any]], model: Any,
             env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The retraining's reason (cut to REASON_MAX) and its checked parameter overrides (names, types, enums and
    ranges; an InputDataUri's form)."""
    overrides: object  # the event's, checked below
    if event.get("detail-type") == ALARM_EVENT:
        detail = event.get("detail")
        state = detail.get("state") if isinstance(detail, dict) else None
        if not isinstance(detail, dict) or not isinstance(state, dict):
            raise Refused(f"the {ALARM_EVENT} event's detail must be an object with a state object, not "
                          + (f"a state of {kind_of(state)}" if isinstance(detail, dict) else kind_of(detail)))
        alarm = cut(str(detail.get("alarmName")), REASON_MAX)
        if state.get("value") != "ALARM":
            raise Refused(f"alarm {_said(alarm)} is not in ALARM")
        reason, overrides = f"alarm {alarm}", {}
    else:
        reason = _said(str(event.get("reason") or "manual"), REASON_MAX)  # lone surrogates escaped: it is returned
        overrides = event.get("parameters") or {}
    if not isinstance(overrides, dict):
        raise Refused("parameters must be an object of NAME: value")
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise Refused(f"unknown pipeline parameter(s) {named(unknown)} (declared: {sorted(declared)})")
    values = parameter_values(overrides, declared, model)
    if "InputDataUri" in values:
        problem = input_problem(values["InputDataUri"])
        if problem:
            raise Refused(problem)
        _warn_outside_lake(values["InputDataUri"], env)
    return reason, values


def input_problem(uri: Any) -> str | None:
    """Why an ``InputDataUri`` override cannot be read by the pipeline, or None: anything but an s3:// URI of a
    bucket and a prefix (printable, no "." or ".." step, at most S3_URI_MAX characters) would start an execution
    that fails at its first step."""
    if not isinstance(uri, str) or len(uri) > S3_URI_MAX or not S3_URI.fullmatch(uri) or not uri.isprintable():
        return (f"parameter InputDataUri must be an s3:// URI (s3://<bucket>/<prefix>, at most {S3_URI_MAX} "
                f"characters, no spaces), got {shown(uri)}")
    return None


def _warn_outside_lake(uri: str, env: dict[str, str]) -> None:
    """An input that is no curated version of the stage's dataset in its lake trains, as given, on data this
    stage's ingestion never checked (`diagnosa pipeline start` refuses it): said in the log."""
    bucket, dataset = env.get("LAKE_BUCKET"), env.get("DATASET") or "patients"
    prefix = f"s3://{bucket}/curated/{dataset}/"
    if bucket and not (uri.startswith(prefix) and _VERSION.fullmatch(uri[len(prefix):].removesuffix("/"))):
        log.warning("InputDataUri %s is not a curated version of %s in this stage's lake (%s<version>): the "
                    "execution trains on it as given", shown(uri), dataset, prefix)


def parameter_values(overrides: dict[str, Any], declared: dict[str, dict[str, Any]], model: Any) -> dict[str, Any]:
    """``overrides`` as values of their declared types; Refused naming every value of the wrong type, outside the
    parameter's EnumValues or range. Text is read as a number only when it is one as written (ASCII decimals).
    ``model``: SageMaker's service model (the client's), for the instance counts' and types' shapes."""
    values, problems = {}, []
    for name, value in overrides.items():
        kind = declared[name].get("Type", "String")
        try:
            values[name] = _typed(name, kind, value)
        except ValueError as err:
            problems.append(str(err))
            continue
        allowed = declared[name].get("EnumValues")
        if allowed and values[name] not in allowed:
            problems.append(f"parameter {name} must be one of {allowed}, got {shown(values[name])}")
    problems += _range_problems(values, model)
    for name in sorted(values):  # the value's text as StartPipelineExecution sends it (parameter_text)
        refused = _text_problems(parameter_text(values[name]))
        own = input_problem(values[name]) if refused and name == "InputDataUri" else None  # says what a URI is
        problems += [own] if own else [f"parameter {name}={shown(overrides[name])}: {problem}" for problem in refused]
    if problems:
        raise Refused("; ".join(problems))
    return values


# StartPipelineExecution's Parameter Value, a String1024 (pipelines/service_model.py parameter_value_problems).
PARAMETER_VALUE_MAX = 1024


def _text_problems(text: str) -> list[str]:
    """What SageMaker refuses in a value's text as sent, as a local run and `pipeline start` refuse it: empty (the
    service refuses it, though its model says min 0: sagemaker-python-sdk issue #4016), over PARAMETER_VALUE_MAX
    characters, or holding a lone surrogate."""
    if not text:
        return ["the value is empty, which SageMaker's StartPipelineExecution refuses (leave the parameter out for "
                "its default)"]
    problems = [f"the value is {len(text):,} characters, at most {PARAMETER_VALUE_MAX:,} (StartPipelineExecution's "
                "String1024)"] if len(text) > PARAMETER_VALUE_MAX else []
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        problems.append("the value holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not Unicode text")
    return problems


def parameter_text(value: Any) -> str:
    """A checked value as StartPipelineExecution takes it (a Boolean as true or false)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _said(text: str, limit: int = SHOWN_MAX) -> str:
    """Free text for a message or a log line: cut to ``limit`` and lone surrogates escaped (a UTF-8 log cannot
    write them)."""
    return cut(cut(text, limit).encode("utf-8", "backslashreplace").decode("utf-8"), limit)


def _typed(name: str, kind: str, value: Any) -> Any:
    """``value`` as a ``kind``; ValueError why not (executor.coerce_parameter's rules)."""
    if kind not in PARAMETER_TYPES:
        raise ValueError(f"parameter {name} has type {kind!r}, not one of {', '.join(PARAMETER_TYPES)}")
    if isinstance(value, str) and kind != "String":
        value = _from_text(name, kind, value)
    ok = {"String": isinstance(value, str), "Boolean": isinstance(value, bool),
          "Integer": isinstance(value, int) and not isinstance(value, bool),
          "Float": isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT_MAX}[kind]
    if not ok:
        article = "an" if kind == "Integer" else "a"
        raise ValueError(f"parameter {name} is {article} {kind}, got {shown(value)} ({type(value).__name__})")
    return float(value) + 0.0 if kind == "Float" else value  # + 0.0: -0.0 is 0.0


def _from_text(name: str, kind: str, text: str) -> bool | int | float:
    """Text read as a Boolean, Integer or Float (definition.parameter_from_text's rules)."""
    written = text.strip(" ")
    refused = ValueError(f"parameter {name} is {'an' if kind == 'Integer' else 'a'} {kind}, got {shown(text)}")
    if kind == "Boolean":
        truth = {"true": True, "false": False}.get(written.lower())
        if truth is None:
            raise refused
        return truth
    if not PARAMETER_TEXT[kind].fullmatch(written):
        raise refused
    if kind == "Integer":
        sign, digits = ("-", written[1:]) if written.startswith("-") else ("", written)
        digits = digits.lstrip("0") or "0"
        number = int(sign + digits) if len(digits) <= INTEGER_DIGITS else None
        if number is None or not -2**63 <= number < 2**63:
            raise ValueError(f"parameter {name} is an Integer, got {shown(text)}: outside 64 bits")
        return number
    value = float(written)
    if abs(value) > FLOAT_MAX:
        raise ValueError(f"parameter {name} is a Float, got {shown(text)}: too large for a float")
    if value == 0.0 and re.split("[eE]", written)[0].strip("-.0"):
        raise ValueError(f"parameter {name} is a Float, got {shown(text)}: too close to 0 for a float")
    return value + 0.0


def _range_problems(values: dict[str, Any], model: Any) -> list[str]:
    """Values outside the range their meaning allows (definition.parameter_range_problems' rules, and the instance
    counts and types of the jobs' requests)."""
    problems = []
    for name, value in values.items():
        if RECALL_THRESHOLD in name and isinstance(value, float) and not 0.0 <= value <= 1.0:
            problems.append(f"parameter {name} is a recall threshold, in [0, 1]; got {value!r}")
        elif name == SEED_PARAMETER and isinstance(value, int) and not 0 <= value <= MAX_SEED:
            problems.append(f"parameter {name} must be in [0, {MAX_SEED}]; got {value}")
        elif name == ENDPOINT_PARAMETER and isinstance(value, str) and not (
                RESOURCE_NAME.fullmatch(value) and len(value) <= ENDPOINT_NAME_MAX):
            problems.append(f"parameter {name} must be a SageMaker name of at most {ENDPOINT_NAME_MAX} characters "
                            f"(ASCII letters, digits and inner '-'); got {shown(value)}")
        elif name in SHAPE_PARAMETERS:
            shape = model.shape_for(name)
            if shape.type_name == "integer" and isinstance(value, int):
                least, most = max(1, int(shape.metadata.get("min", 1))), shape.metadata.get("max")
                if value < least or (most is not None and value > most):
                    problems.append(f"parameter {name} must be {least} to {most if most is not None else 'any'}; "
                                    f"got {value}")
            elif shape.enum and value not in shape.enum:
                problems.append(f"parameter {name} must be a SageMaker instance type ({shape.name}); got {shown(value)}")
    return problems


def _start(sagemaker: Any, env: dict[str, str], reason: str, overrides: dict[str, Any],
           token: str | None = None) -> dict[str, Any]:
    # One line: SageMaker holds the description to ".*" with Java's semantics, where "." takes no line terminator.
    description = re.sub(r"\s+", " ", re.sub(r"[^\w\s.:/=+-]", " ", f"Diagnosa retraining: {reason}")).strip()[:3072]
    extra = {"ClientRequestToken": token} if token else {}
    response = sagemaker.start_pipeline_execution(
        PipelineName=env["PIPELINE_NAME"], PipelineExecutionDescription=description,
        PipelineExecutionDisplayName=re.sub(r"[^A-Za-z0-9-]", "-", f"retrain-{reason}")[:82].strip("-"),
        PipelineParameters=[{"Name": k, "Value": parameter_text(v)} for k, v in sorted(overrides.items())], **extra)
    arn = response["PipelineExecutionArn"]
    log.info("started %s (%s, overrides %s)", arn, _said(reason, 400), _said(repr(overrides)))
    return {"execution": arn, "reason": reason, "parameters": overrides}


def _start_folding(reason: str, overrides: dict[str, Any], sagemaker: Any, s3: Any, env: dict[str, str],
                   name: str) -> dict[str, Any]:
    """Step 1: start the feedback-folding job, then write the request beside its future result.

    The job is named after the invocation (the EventBridge event's id, else Lambda's request id), so a retried
    invocation finds its job started (ResourceInUse) instead of starting a second one, and two invocations never
    share a request. The request is written after the job starts: a job that could not start leaves nothing, and
    the job runs for minutes before its end event reads the request."""
    bucket, endpoint = env["LAKE_BUCKET"], env["ENDPOINT_NAME"]
    folder = f"{retraining_prefix(endpoint)}{name}/"
    try:
        sagemaker.create_processing_job(**fold_request(env, name))
    except Exception as err:  # botocore's ClientError: the service's code says whether the job exists
        if getattr(err, "response", {}).get("Error", {}).get("Code") != "ResourceInUse":
            raise
        log.info("the feedback-folding job %s was started by an earlier attempt of this invocation", name)
    s3.put_object(Bucket=bucket, Key=folder + "request.json", ContentType="application/json",
                  Body=json.dumps({"reason": reason, "parameters": overrides}).encode("ascii"))  # lone surrogates too
    log.info("started the feedback-folding job %s (%s, overrides %s)", name, _said(reason), _said(repr(overrides)))
    return {"job": name, "reason": reason, "parameters": overrides, "result": f"s3://{bucket}/{folder}result/"}


def _after_folding(detail: dict[str, Any], sagemaker: Any, s3: Any, env: dict[str, str]) -> dict[str, Any]:
    """Step 2: the folding job ended; start the execution on the version it wrote."""
    name, status = str(detail.get("ProcessingJobName") or ""), detail.get("ProcessingJobStatus")
    prefix = env.get("FOLD_JOB_PREFIX")
    if not prefix or not name.startswith(prefix + "-") or len(name) > 63:  # SageMaker's names: 63 at most
        raise Refused(f"processing job {shown(name)} is not this stage's feedback-folding job ({prefix}-*)")
    if status in ("InProgress", "Stopping"):
        return {"job": name, "status": status}  # not over yet; the rule matches only the ends
    bucket, endpoint = env["LAKE_BUCKET"], env["ENDPOINT_NAME"]
    folder = f"{retraining_prefix(endpoint)}{name}/"
    if status != "Completed":
        raise Refused(f"the feedback-folding job {name} is {_said(str(status), 40)}: "
                      f"{_why_not_completed(detail, name, sagemaker)}"
                      f"; no retraining started (its request: s3://{bucket}/{folder}request.json)")
    s3 = s3 or boto3.client("s3")
    request, result = (_read_json(s3, bucket, folder + key) for key in ("request.json", "result/retraining.json"))
    declared = _declared(env, sagemaker)
    reason, overrides = _request({"reason": request.get("reason"), "parameters": request.get("parameters")}, declared,
                                 sagemaker.meta.service_model, env)
    dataset = env.get("DATASET") or "patients"
    checked = _checked_result(result, f"s3://{bucket}/{folder}result/retraining.json")
    version, base = checked["version"], checked["base_version"]
    if version is None:  # the version the job found nothing to add to, else the latest
        uri = curated_uri(bucket, dataset, base) if base is not None else latest_input(s3, bucket, dataset)
        reason += f"; no feedback added ({_said(checked['reason'] or 'none accepted')})"  # the job's, quoting the lake
    else:
        uri = curated_uri(bucket, dataset, version)
        if result.get("input_data_uri") != uri:
            raise Refused(f"s3://{bucket}/{folder}result/retraining.json names no version of {dataset} in this lake: "
                          f"{version!r}, {shown(result.get('input_data_uri'))}")
        rows = checked["feedback_rows"]
        reason += f"; {'?' if rows is None else rows} feedback row(s) added: version {version}"
        # A batch ingested while the job folded (monitoring/retrain_job.py): said where the execution is listed.
        rebuilt = checked["rebuilt_from"]
        if rebuilt:
            reason += f"; rebuilt on version {rebuilt[-1]}, ingested meanwhile"
        if checked["overtaken_by"] is not None:
            reason += f"; version {checked['overtaken_by']} stays the latest and is not in this training data"
    overrides = {**overrides, "InputDataUri": uri} if "InputDataUri" in declared else overrides
    token = _token(name)  # a repeated event starts no second execution
    return {**_start(sagemaker, env, reason, overrides, token), "job": name}


def _checked_result(result: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields of a folding job's ``retraining.json`` (monitoring/retrain_job.py writes every one, ``version``
    null when nothing was added) that the execution depends on, checked; Refused naming the object (``where``) and
    each problem. Without ``version`` the object is not the job's result: read as "nothing added" it would retrain on
    the previous latest version and skip, unsaid, a version the job did write."""
    if "version" not in result:
        raise Refused(f'{where} has no "version": it is not a feedback-folding job\'s result (retrain_job.py writes '
                      f'"version": null when it added nothing); no retraining started')
    problems = []

    def version_or_null(key: str) -> str | None:
        value = result.get(key)
        if value is None or (isinstance(value, str) and _VERSION.fullmatch(value)):
            return value
        problems.append(f"{key} must be a curated version or null, got {shown(value)}")
        return None

    checked: dict[str, Any] = {key: version_or_null(key) for key in ("version", "base_version", "overtaken_by")}
    rows = result.get("feedback_rows")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 0):
        problems.append(f"feedback_rows must be a count, got {shown(rows)}")
    reason = result.get("reason")
    if reason is not None and not isinstance(reason, str):
        problems.append(f"reason must be text or null, got {kind_of(reason)}")
    rebuilt = result.get("rebuilt_from") or []
    meanwhile = [entry.get("ingested_meanwhile") for entry in rebuilt if isinstance(entry, dict)] \
        if isinstance(rebuilt, list) else []
    if not isinstance(rebuilt, list) or len(meanwhile) != len(rebuilt) or not all(
            isinstance(v, str) and _VERSION.fullmatch(v) for v in meanwhile):
        problems.append(f"rebuilt_from must be a list of {{..., \"ingested_meanwhile\": version}}, got "
                        f"{kind_of(rebuilt) if isinstance(rebuilt, (dict, list)) else shown(rebuilt)}")
    if problems:
        raise Refused(f"{where} is not a feedback-folding job's result: {'; '.join(problems)}; no retraining started")
    return {**checked, "feedback_rows": rows, "reason": reason, "rebuilt_from": meanwhile}


def _why_not_completed(detail: dict[str, Any], name: str, sagemaker: Any) -> str:
    """SageMaker's FailureReason ("AlgorithmError: ...", the exit status) and the job's own reason, its ExitMessage
    (what the job wrote to /opt/ml/output/message: "no curated version of ...", "ingestion refused: ..."). The event
    may not carry ExitMessage; DescribeProcessingJob does. A failed read still leaves the event's reason."""
    reason, message = detail.get("FailureReason"), detail.get("ExitMessage")
    if not message:
        try:
            described = sagemaker.describe_processing_job(ProcessingJobName=name)
        except (ClientError, BotoCoreError) as err:
            log.warning("could not read the feedback-folding job %s's exit message: %s", name, err)
        else:
            reason, message = reason or described.get("FailureReason"), described.get("ExitMessage")
    said = [_said(text.strip()) for text in (reason, message) if isinstance(text, str) and text.strip()]
    if len(said) == 2 and said[1] in said[0]:  # a reason that already quotes the message
        said = said[:1]
    return " — ".join(said) or "no reason given"


def _read_json(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    try:
        body = _read_object(s3, bucket, key)
    except ClientError as err:
        if not missing_object(s3, bucket, key, err):
            raise
        raise Refused(f"s3://{bucket}/{key} is missing") from None
    return _parsed(body, bucket, key)


def _read_object(s3: Any, bucket: str, key: str) -> bytes:
    """The object's bytes, at most JSON_MAX_BYTES + 1: a larger object is never read whole (ClientError as S3's)."""
    stream = s3.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return bytes(stream.read(JSON_MAX_BYTES + 1))
    finally:
        stream.close()


def _parsed(body: bytes, bucket: str, key: str) -> dict[str, Any]:
    """``body`` (read by _read_object) as a JSON object; Refused naming ``s3://bucket/key`` and what is wrong."""
    where = f"s3://{bucket}/{key}"
    if len(body) > JSON_MAX_BYTES:
        raise Refused(f"{where} is larger than {JSON_MAX_BYTES // 1024} KB: not what Diagnosa writes there; not read")
    try:
        value = json.loads(body.decode("utf-8"))
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise Refused(f"{where} is not JSON (UTF-8): {_said(str(err), 120)}") from None
    except RecursionError:
        raise Refused(f"{where} is not JSON this function reads: nested too deeply") from None
    if not isinstance(value, dict):
        raise Refused(f"{where} is not a JSON object but {kind_of(value)}")
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


__all__ = ["Refused", "curated_uri", "fold_job_name", "fold_request", "handler", "latest_input", "parameter_text",
           "parameter_values", "retraining_prefix"]
