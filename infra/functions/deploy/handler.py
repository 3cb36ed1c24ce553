"""Deploys an Approved model package to the Diagnosa endpoint (AWS Lambda, plain boto3).

Two EventBridge events reach it:

* ``SageMaker Model Package State Change`` (the rule matches Approved versions of this stage's
  group): an edit of a version (``UpdatedModelPackageFields`` naming neither its approval status nor the
  approval's description: its ModelLifeCycle, metadata, ...) is ignored — the version stays Approved, and
  deploying it rolled the endpoint back to it. Otherwise the package is described again — the event is a
  hint, the registry is the truth — and refused unless it is Approved and in the expected group. Then a
  Model (the package's image — with baked images, one of the stage's image repository: see
  ``serving_image`` — and artifact, the
  serving code from the staged sourcedir) and an EndpointConfig (data capture to the
  lake's ``capture/`` zone, KMS) are created, named after the endpoint, the version and the time.
  The first time the endpoint is created; afterwards it is updated blue/green (canary or all at
  once) with automatic rollback on the endpoint's CloudWatch alarms. SageMaker refuses an update that changes
  the instance type of (or drops) a variant registered for autoscaling: such a variant's scalable target (and
  with it its scaling policy) is deregistered just before the update (see ``release_autoscaling``), and the
  IN_SERVICE event that ends the update registers it again. An approval that arrives while
  the endpoint is creating, updating or rolling back interrupts nothing: its ARN is kept in the
  endpoint's ``diagnosa:pending-package`` tag ("" means none).
  Events come at least once and out of order, so approvals are ordered by the event's time (then the
  version): the endpoint's ``diagnosa:latest-approval`` tag holds the newest one acted on (deployed or
  kept), and an approval no newer than it is a copy or stale and changes nothing — a late copy of an
  older approval does not roll the endpoint back, nor does a copy of the approval being deployed undo
  an automatic rollback. An event's time, when it has one, must be an ISO 8601 time no more than CLOCK_SKEW after
  the function's clock: a later one (a hand-made event) is refused, since as the latest approval it would supersede
  every real one until that date (see ``Approval.of``); a latest-approval tag that is malformed or in the future is
  ignored with a warning (``latest_approval``). These reads and writes of the tags are not atomic: they are safe
  because the stack runs this function one invocation at a time (reserved concurrency 1, ``infra/stack.py``); two at once could
  redeploy a rolled-back version or an older approval over a newer one.
* ``SageMaker Endpoint State Change`` to IN_SERVICE: target-tracking autoscaling on
  ``SageMakerVariantInvocationsPerInstance`` is (re)registered; registration needs an endpoint in
  service, which a freshly created one is not. Then a version kept in the pending tag is deployed
  (after the registry is read again: rejected or deleted since, it is not); the tag is cleared once
  the update has started, so a failure on the way leaves it for Lambda's retries and the dead-letter
  queue. To FAILED or UPDATE_ROLLBACK_FAILED with a version kept: it fails loudly (no IN_SERVICE
  event will deploy it by itself).

Monitoring baselines follow the model that serves, never the one merely approved. The monitoring
job (``infra/functions/jobs/monitor.py``) reads them from one fixed prefix per endpoint,
``artifacts/monitoring/<endpoint>/baseline/`` (``data/statistics.json``, ``data/constraints.json``,
``predictions/prediction_baseline.json``, ``predictions/model_quality_constraints.json``):

* before a deployment starts (create or blue/green update) every object under that prefix is
  deleted, so while traffic shifts, and until the new model serves alone, monitoring is skipped
  ("no baseline") instead of comparing one model's traffic with another's baselines;
* when the endpoint is InService, the package it actually serves is read from its endpoint
  config's ``diagnosa:model-package`` tag (after a rollback that is the old package again) and its
  baselines are copied server-side (SSE-KMS, like the rest of the lake) from the run folder the
  package points at: ``ModelMetrics.ModelDataQuality`` (else ``DriftCheckBaselines``) statistics
  and constraints, ``CustomerMetadataProperties["diagnosa:prediction-baseline"]`` and
  ``ModelMetrics.ModelQuality.Constraints``. Each copy carries the package ARN and the time it
  started serving as metadata; the monitor reads no traffic from before that time.
  A package without data baselines is deployed anyway (a warning is logged) and the prefix stays
  empty: the endpoint is served unmonitored until a version with baselines is deployed.
  A baseline the package names but that cannot be copied (its run folder expired or was deleted) leaves the
  prefix empty too (the files copied before it are removed) and never holds back the version kept pending:
  that one is deployed first. If it was, the failure is logged as an error (the new version's IN_SERVICE
  installs its own baselines); if not, the run then fails naming the object (``BaselinesUnavailable``: Lambda's
  retries, then the dead-letter queue's alarm), since the serving version is not monitored.

Everything the function creates (models, endpoint configs, the endpoint, the scalable target) carries
the tags ``diagnosa:managed-by`` (this function's name), ``diagnosa:model-package`` and the stack's own
tags (``RESOURCE_TAGS``). CloudFormation does not see these resources, so a second entry point of this
module, :func:`resources` (the stage's ``endpoint-resources`` function, with permissions of its own),
answers for them: as a CloudFormation custom resource it removes them when the stack is deleted
(``cdk destroy``), and on a daily schedule it compares what serves with the stage's settings and
publishes the number of differences (``EndpointDrift``), the drift report CloudFormation cannot give.

Configuration comes from environment variables set by the stack (``infra/stack.py``).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, NamedTuple

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

PACKAGE_TAG = "diagnosa:model-package"
# On the endpoint: the version approved while a deployment ran, deployed when the endpoint is InService again.
PENDING_TAG = "diagnosa:pending-package"
# On the endpoint: "<event time> v<version>" of the newest approval deployed or kept pending (see Approval).
LATEST_TAG = "diagnosa:latest-approval"
SETTLING = ("Creating", "Updating", "SystemUpdating", "RollingBack")  # statuses that end in an IN_SERVICE event
# Endpoint events after which no IN_SERVICE comes by itself (DescribeEndpoint's Failed, UpdateRollbackFailed).
STRANDED_EVENTS = ("FAILED", "UPDATE_ROLLBACK_FAILED")
MANAGED_TAG = "diagnosa:managed-by"
PACKAGE_EVENT = "SageMaker Model Package State Change"
ENDPOINT_EVENT = "SageMaker Endpoint State Change"
# The model package fields whose update is an approval (UpdatedModelPackageFields): an update event naming only
# others is an edit of the version (ModelLifeCycle, CustomerMetadataProperties, sourceUri, ...), never deployed.
APPROVAL_FIELDS = frozenset({"ModelApprovalStatus", "ApprovalDescription"})
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# Which program serves is the registered version's decision: the pipeline registers each one with
# SAGEMAKER_PROGRAM (pipelines/definition.py), the script training wrote into the artifact's code/. A version
# registered without it (by hand) gets that layout's own script: diagnosa/serving_code.py's SERVING_PROGRAM,
# mirrored here (this folder is the whole Lambda package; a test keeps the two equal). No stage setting.
SERVING_PROGRAM = "serve_endpoint.py"


class Refused(Exception):
    """The event asks for something this function must not do; nothing was changed."""


class BaselinesUnavailable(RuntimeError):
    """The serving package's baselines could not be copied into the monitoring prefix (left empty): it is not monitored."""


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # EventBridge's event time, to the second
# How far an approval's time may be ahead of the function's clock (see Approval.of): EventBridge stamps events with
# AWS's clock, which Lambda's follows to well within this.
CLOCK_SKEW = timedelta(minutes=5)
# The longest ModelPackageName (a name or an ARN) DescribeModelPackage accepts.
ARN_MAX_LENGTH = 176


def _clip(text: str, limit: int = 300) -> str:
    """``text`` for a message or a log line: at most ``limit`` characters (and the length it had), and no lone
    surrogate (escaped as ``\\udXXX``: one cannot be encoded to log or return)."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shown(value: Any, limit: int = 80) -> str:
    """A value of the event, quoted, for a message: a string clipped (``_clip``), a short scalar as it is, anything else
    by its type (a list or a number from the event may be of any size; a 5 000-digit int cannot even be printed)."""
    if isinstance(value, str):
        return _clip(ascii(value[:limit])[:2 * limit] + ("" if len(value) <= limit else f"... ({len(value)} characters)"),
                     4 * limit)
    if _scalar(value):
        return repr(value)
    return _article(type(value).__name__)


def _typed(value: Any) -> str:
    """A value of the event of the wrong type, for a message: its type, and the value when that is short to show."""
    if value is None:
        return "null (NoneType)"
    kind = _article(type(value).__name__)
    return f"{kind} ({_shown(value)})" if isinstance(value, str) or _scalar(value) else kind


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, float)) or (isinstance(value, int) and value.bit_length() < 64)


def _article(name: str) -> str:
    return f"{'an' if name[:1] in tuple('aeiou') else 'a'} {name}"


class Approval(NamedTuple):
    """When a version was approved: the event's time, then the version (of two approvals in one second, the
    later version is the newer; compared as a tuple). Compared with the endpoint's LATEST_TAG to tell a new
    approval from a copy or a stale one (EventBridge delivers at least once, Lambda retries, neither keeps order)."""
    at: datetime
    version: int

    @classmethod
    def of(cls, sent: Any, version: int, now: float) -> "Approval":
        """The event's ``time``; an event without one (invoked by hand; ``null`` or "" alike) is as new as the clock.
        Refused when the time is not an ISO 8601 time, or is after the function's clock by more than CLOCK_SKEW.

        A time from the future is refused, not clamped to now. It was not stamped by EventBridge (whose clock is
        AWS's): it is a hand-made or forged event, so its time says nothing about the approval's order. Recorded as
        the endpoint's LATEST_TAG, it would make every real approval until that date look older ("superseded": none
        deployed, ever, for 9999-12-31); clamped to now it would still put a replayed old approval after the real
        ones, rolling the endpoint back. Refused, the run fails (retries, then the dead-letter queue's alarm) and the
        operator sends the approval again without ``time``, which means now."""
        clock = datetime.fromtimestamp(int(now), timezone.utc)
        if sent is None or sent == "":
            return cls(clock, version)
        if not isinstance(sent, str):
            raise Refused(f"the event's time is {_typed(sent)}, not a time such as 2026-01-01T00:00:00Z: nothing "
                          "deployed (leave it out for now)")
        at = _event_time(sent)
        if at is None:
            raise Refused(f"the event's time {_shown(sent)} is not an ISO 8601 time such as 2026-01-01T00:00:00Z, or "
                          "is out of range: nothing deployed (leave it out for now)")
        latest = _latest_believable(now)
        if at > latest:
            raise Refused(f"the event's time {_shown(sent)} is after the function's clock "
                          f"({(latest - CLOCK_SKEW).strftime(TIME_FORMAT)}) by more than {CLOCK_SKEW}: not an "
                          "EventBridge time, and as the latest approval it would supersede every real one until then; "
                          "nothing deployed (send the approval again without a time, which means now)")
        return cls(at, version)

    @classmethod
    def parse(cls, value: str | None) -> "Approval | None":
        """The endpoint's LATEST_TAG; None when there is none or it is not "<time> v<version>" (ASCII digits)."""
        at, _, version = (value or "").partition(" v")
        moment = _event_time(at)
        if moment is None or not re.fullmatch(r"[0-9]{1,18}", version):
            return None
        return cls(moment, int(version))

    def tag(self) -> str:
        return f"{self.at.strftime(TIME_FORMAT)} v{self.version}"


def _event_time(text: str) -> datetime | None:
    """``text`` as a UTC time to the second; None when it is not an ISO 8601 time, or is one whose UTC time is out
    of datetime's range (0001-01-01T00:00:00+01:00, 9999-12-31T23:59:59-01:00)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return moment.astimezone(timezone.utc).replace(microsecond=0)
    except (ValueError, OverflowError):
        return None


def _latest_believable(now: float) -> datetime:
    """The latest time an approval (or the endpoint's LATEST_TAG) may carry: the clock plus CLOCK_SKEW. The clock is
    the later of ``now`` and the system's: on Lambda they are the same; ``now`` can be set (tests replay events with
    a fixed clock, often long before the events' times), and a time in the system clock's past is not a future one."""
    return datetime.fromtimestamp(int(max(now, time.time())), timezone.utc) + CLOCK_SKEW


def settings() -> dict[str, str]:
    return dict(os.environ)


def handler(event: Any, context: Any = None, *, sagemaker: Any = None, autoscaling: Any = None,
            s3: Any = None, env: dict[str, str] | None = None, now: float | None = None) -> dict[str, Any]:
    env = env or settings()
    sagemaker = sagemaker or boto3.client("sagemaker")
    autoscaling = autoscaling or boto3.client("application-autoscaling")  # an update may have to deregister it
    now = time.time() if now is None else now
    if not isinstance(event, dict):  # Lambda passes whatever JSON it was invoked with
        raise Refused(f"the event is not a JSON object but {_typed(event)}: nothing done")
    kind = event.get("detail-type")
    if kind not in (PACKAGE_EVENT, ENDPOINT_EVENT):
        raise Refused(f"unexpected event type {_shown(kind)}")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise Refused(f"the {kind} event has no detail object "
                      f"({'no detail' if 'detail' not in event else 'detail is ' + _typed(detail)}): nothing done")
    if kind == PACKAGE_EVENT:
        return deploy(detail, sagemaker, autoscaling, env, now=now, s3=s3, sent=event.get("time"))
    if detail.get("EndpointName") == env["ENDPOINT_NAME"] and detail.get("EndpointStatus") in STRANDED_EVENTS:
        return stranded_pending(sagemaker, env, detail["EndpointStatus"])
    if detail.get("EndpointName") != env["ENDPOINT_NAME"] or detail.get("EndpointStatus") != "IN_SERVICE":
        raise Refused(f"not this function's endpoint event: {json.dumps(detail)[:300]}")
    return in_service(sagemaker, autoscaling, env, now=now, s3=s3)


def in_service(sagemaker: Any, autoscaling: Any, env: dict[str, str], *, now: float, s3: Any = None) -> dict[str, Any]:
    """The endpoint is InService: its autoscaling registered, the serving package's baselines installed, then the
    version kept pending deployed. The baselines never hold that version back: a failure to install them (the run
    folder they are in expired, was deleted, cannot be read) is raised only after it, and not at all when its
    update started (the endpoint then serves the pending version, whose own IN_SERVICE installs its baselines):
    otherwise every retry failed on the same missing object and the approved version never deployed."""
    result = register_autoscaling(autoscaling, env)
    failed: Exception | None = None
    if env.get("LAKE_BUCKET"):
        try:
            result["baselines"] = install_baselines(sagemaker, s3 or boto3.client("s3"), env, now=now)
        except Exception as err:  # noqa: BLE001 - raised again below, once the pending version had its chance
            failed = err
            result["baselines"] = {"status": "failed", "reason": _clip(f"{type(err).__name__}: {err}", 500)}
    pending = deploy_pending(sagemaker, autoscaling, env, now=now, s3=s3)
    if pending:
        result["pending"] = pending
    if failed is not None:
        if (pending or {}).get("action") != "updated":
            raise failed
        log.error("%s: the baselines of the version it served are not installed (%s); %s is deploying now, and "
                  "its IN_SERVICE installs its own", env["ENDPOINT_NAME"], result["baselines"]["reason"],
                  pending and pending.get("model_package"))
    return result


def resource_tags(env: dict[str, str], package_arn: str) -> dict[str, str]:
    """The tags of everything this function creates: the stack's, who manages it, which package it serves."""
    tags = json.loads(env.get("RESOURCE_TAGS") or "{}")
    return {**tags, MANAGED_TAG: env.get("MANAGED_BY", ""), PACKAGE_TAG: package_arn}


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items() if v]


def serving_image(image: str, env: dict[str, str]) -> str:
    """The image the model runs: the package's own, unless the stage bakes its images (``SERVING_IMAGE``) and
    the package names an image outside the stage's image repository (AWS's framework image, e.g. a version
    registered before images were baked), which would pip-install its pins at start from an index the VPC
    mode cannot reach: then the stage's serving image. A package registered with a baked image keeps it
    (tags are immutable and kept), so every version is served with the pins it was built with."""
    baked = env.get("SERVING_IMAGE")
    if not baked:
        return image

    def repository(uri: str) -> str:  # registry/repository, without the :tag or @digest (ECR hosts have no port)
        return re.split(r"[:@]", uri, maxsplit=1)[0]

    if repository(image) == repository(baked):
        return image
    log.warning("the package names %s, outside the stage's image repository: serving it with %s", image, baked)
    return baked


def network_isolated(env: dict[str, str]) -> bool:
    """Whether the model's container runs without a network: when the stage bakes its images, every image
    ``serving_image`` returns is one of the stage's repository, holding the pins, with ``PIP_NO_INDEX=1``. Its
    container then needs none: SageMaker itself downloads model.tar.gz (and writes data capture), the inference
    toolkit's install of the artifact's requirements.txt is satisfied from the image, and the serving code
    calls no AWS API. AWS's framework images install the pins from the package index at start: not isolated."""
    return bool(env.get("SERVING_IMAGE"))


def deploy(detail: dict[str, Any], sagemaker: Any, autoscaling: Any, env: dict[str, str], *, now: float,
           s3: Any = None, sent: Any = None) -> dict[str, Any]:
    arn = detail.get("ModelPackageArn")
    if not arn:
        raise Refused("the event names no ModelPackageArn")
    if not isinstance(arn, str) or len(arn) > ARN_MAX_LENGTH:
        raise Refused(f"the event's ModelPackageArn is not a model package ARN but {_typed(arn)}: nothing deployed")
    edited = _edit_not_approval(detail.get("UpdatedModelPackageFields"))
    if edited:
        # SageMaker sends the same event for an edit of an Approved version (its ModelLifeCycle, metadata, sourceUri,
        # AWS's sample): taken for an approval, it redeployed an older version over the one serving, or undid an
        # automatic rollback. Nothing to do: not an error either.
        log.info("%s: an edit of %s of %s, not an approval: nothing done", env["ENDPOINT_NAME"], edited, arn)
        return {"action": "ignored", "endpoint": env["ENDPOINT_NAME"], "model_package": arn,
                "reason": f"an edit of {edited}, not an approval"}
    package = approved_package(sagemaker, arn, env)
    approval = Approval.of(sent, int(package.get("ModelPackageVersion") or 0), now)
    endpoint = env["ENDPOINT_NAME"]
    current = _describe_endpoint(sagemaker, endpoint)
    if current is None:
        return roll_out(package, arn, None, approval.tag(), sagemaker, autoscaling, env, now=now, s3=s3)
    status = current["EndpointStatus"]
    latest = latest_approval(_tags(sagemaker, current["EndpointArn"]).get(LATEST_TAG), endpoint, now)
    if latest is not None and approval <= latest:
        # A copy of an approval already acted on, or one older than it (events come at least once, in any order):
        # deploying it would roll back to an older version, or redo a rollout SageMaker has just rolled back.
        action = "unchanged" if approval == latest else "superseded"
        log.info("%s: approval %s of %s is not newer than %s: nothing done", endpoint, approval.tag(), arn, latest.tag())
        return {"action": action, "endpoint": endpoint, "model_package": arn,
                "reason": f"approved {approval.tag()}, not after the latest approval acted on ({latest.tag()})"}
    if status in SETTLING:
        # A deployment in progress is never interrupted and nothing is created now. Failing for Lambda to retry
        # put the approval in the dead-letter queue after ~3 minutes, long before a blue/green update ends: it is
        # kept on the endpoint instead, and the endpoint's IN_SERVICE event deploys it.
        _tag_endpoint(sagemaker, current["EndpointArn"], {PENDING_TAG: arn, LATEST_TAG: approval.tag()})
        log.info("endpoint %s is %s: %s deploys when it is InService again", endpoint, status, arn)
        return {"action": "deferred", "endpoint": endpoint, "model_package": arn,
                "reason": f"endpoint {endpoint} is {status}"}
    if status == "Failed":
        raise RuntimeError(f"endpoint {endpoint} is Failed ({current.get('FailureReason') or 'no reason given'}); "
                           + what_to_do(endpoint, status))
    if status != "InService":
        # Deleting, OutOfService, UpdateRollbackFailed: no IN_SERVICE event will come by itself. Lambda retries,
        # then the dead-letter queue's alarm tells the operators.
        raise RuntimeError(f"endpoint {endpoint} is {status}; {what_to_do(endpoint, status)}")
    if latest is None and sent and serving_package(sagemaker, endpoint) == arn:
        # An endpoint deployed before approvals were ordered: a copy of the event that deployed what serves is
        # older than the config it made. A later approval of the same version (the drift remedy) redeploys.
        made = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])["CreationTime"]
        if made.timestamp() >= approval.at.timestamp():
            log.info("%s already serves %s since after this event (%s): a duplicate, nothing done", endpoint, arn, sent)
            return {"action": "unchanged", "endpoint": endpoint, "model_package": arn}
    return roll_out(package, arn, current, approval.tag(), sagemaker, autoscaling, env, now=now, s3=s3)


def _edit_not_approval(updated: Any) -> str | None:
    """The fields an update event names when none of them is the approval (its status or description, which an
    approval of a version, or approving it again, sets): the edit they name, shown; None for an approval, or for an
    event naming no updated fields (a version registered Approved)."""
    if not isinstance(updated, list) or not updated:
        return None
    names = [name for name in updated if isinstance(name, str)]
    if APPROVAL_FIELDS & set(names) or len(names) != len(updated):  # what cannot be read is not taken for an edit
        return None
    return _clip(", ".join(names), 200)


def latest_approval(tag: str | None, endpoint: str, now: float) -> Approval | None:
    """The endpoint's LATEST_TAG as an Approval. A tag that is not one (edited by hand, another tool), or that is in
    the future (written by a future-timed approval before Approval.of refused them), is ignored with a warning: kept,
    it would fail every approval, or supersede every real one until that date. The next deployment overwrites it."""
    latest = Approval.parse(tag)
    if tag and latest is None:
        log.warning("%s: its %s tag %s is not '<time> v<version>': ignored, this approval is not compared with it",
                    endpoint, LATEST_TAG, _shown(tag))
    elif latest is not None and latest.at > _latest_believable(now):
        log.warning("%s: its %s tag %s is in the future: ignored, this approval is not compared with it", endpoint,
                    LATEST_TAG, _shown(tag))
        return None
    return latest


def approved_package(sagemaker: Any, arn: str, env: dict[str, str]) -> dict[str, Any]:
    """The package as the registry describes it now (the event is a hint, the registry the truth); Refused unless
    it exists, is Approved and belongs to this stage's group."""
    try:
        package = sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ValidationException":
            raise
        raise Refused(_clip(f"{arn} is not in the registry: {err.response['Error'].get('Message', '')}", 500)) from None
    group, status = package.get("ModelPackageGroupName"), package.get("ModelApprovalStatus")
    if group != env["MODEL_PACKAGE_GROUP"]:
        raise Refused(f"{arn} belongs to group {group!r}, not {env['MODEL_PACKAGE_GROUP']!r}")
    if status != "Approved":
        raise Refused(f"{arn} is {status}, not Approved: nothing deployed")
    serving_container(package, arn)
    return package


def serving_container(package: dict[str, Any], arn: str) -> dict[str, Any]:
    """The package's first inference container, which the model runs; Refused unless it names an ``Image`` and a
    ``ModelDataUrl`` (model.tar.gz: the registry also accepts a package without an inference specification, and a
    container with a ``ModelDataSource`` instead, which this function does not deploy)."""
    spec = package.get("InferenceSpecification")
    if not isinstance(spec, dict):
        raise Refused(f"{arn} has no InferenceSpecification: nothing to deploy")
    containers = spec.get("Containers") or []
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        raise Refused(f"{arn} has no inference container: nothing to deploy")
    container: dict[str, Any] = containers[0]
    missing = [key for key in ("Image", "ModelDataUrl") if not isinstance(container.get(key), str) or not container[key]]
    if missing:
        also = " (a ModelDataSource is not deployed by this function)" if "ModelDataSource" in container else ""
        raise Refused(f"{arn}'s inference container has no {' and no '.join(missing)}{also}: nothing deployed")
    return container


def roll_out(package: dict[str, Any], arn: str, current: dict[str, Any] | None, approval: str, sagemaker: Any,
             autoscaling: Any, env: dict[str, str], *, now: float, s3: Any = None) -> dict[str, Any]:
    """Create the package's model and endpoint config, then the endpoint (``current`` None) or its blue/green
    update. ``approval`` (Approval.tag) becomes the endpoint's latest, and a version kept pending is dropped,
    only once the creation or update has started: a failure before leaves both for Lambda's retry."""
    endpoint = env["ENDPOINT_NAME"]
    version = package.get("ModelPackageVersion", 0)
    name = f"{endpoint}-v{version}-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}"[:63]
    container = serving_container(package, arn)
    # The version is served by the code it was trained with: model.tar.gz carries code/ and the package's
    # environment names its program; a package registered without that environment gets the same layout's defaults.
    environment = {"SAGEMAKER_PROGRAM": SERVING_PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                   "SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}
    environment |= {k: v for k, v in (container.get("Environment") or {}).items() if v != ""}
    environment["SAGEMAKER_REGION"] = sagemaker.meta.region_name
    model: dict[str, Any] = {
        "ModelName": name, "ExecutionRoleArn": env["MODEL_ROLE_ARN"],
        "PrimaryContainer": {"Image": serving_image(container["Image"], env), "ModelDataUrl": container["ModelDataUrl"],
                             "Environment": environment},
        "Tags": _tag_list(resource_tags(env, arn)),
    }
    if env.get("SUBNET_IDS"):
        model["VpcConfig"] = {"Subnets": env["SUBNET_IDS"].split(","),
                              "SecurityGroupIds": env["SECURITY_GROUP_IDS"].split(",")}
    if network_isolated(env):
        model["EnableNetworkIsolation"] = True
    sagemaker.create_model(**model)
    sagemaker.create_endpoint_config(
        EndpointConfigName=name, KmsKeyId=env["KMS_KEY_ARN"],
        ProductionVariants=[{"VariantName": env["VARIANT_NAME"], "ModelName": name,
                             "InitialInstanceCount": int(env["MIN_INSTANCES"]),
                             "InstanceType": env["INSTANCE_TYPE"]}],
        DataCaptureConfig={
            "EnableCapture": int(env["CAPTURE_PERCENT"]) > 0,
            "InitialSamplingPercentage": int(env["CAPTURE_PERCENT"]),
            "DestinationS3Uri": env["CAPTURE_URI"], "KmsKeyId": env["KMS_KEY_ARN"],
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"], "CsvContentTypes": ["text/csv"]}},
        Tags=_tag_list(resource_tags(env, arn)))

    if env.get("LAKE_BUCKET"):
        # From here traffic may come from the new model: no monitoring against the old one's baselines.
        removed = clear_baselines(s3 or boto3.client("s3"), env)
        if removed:
            log.info("removed %d baseline object(s) of the model served so far; monitoring resumes when %s is "
                     "InService", removed, endpoint)
    if current is None:
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=name,
                                  Tags=_tag_list({**resource_tags(env, arn), LATEST_TAG: approval}))
        log.info("created endpoint %s with %s (%s)", endpoint, name, arn)
        return {"action": "created", "endpoint": endpoint, "endpoint_config": name, "model_package": arn}
    # Last before the update: a run that dies after it leaves the endpoint serving, unscaled, and its retry finds
    # no target to deregister and updates (the approval is not recorded as acted on until the update started).
    released = release_autoscaling(sagemaker, autoscaling, current, env)
    try:
        sagemaker.update_endpoint(EndpointName=endpoint, EndpointConfigName=name,
                                  DeploymentConfig=deployment_config(env))
    except ClientError as err:
        refused = err.response.get("Error", {}).get("Code") == "ValidationException"  # nothing started
        if refused and scalable_resource(env) in released:  # the old fleet serves on: its autoscaling back
            _restore_autoscaling(autoscaling, env)
        raise
    # This approval supersedes one kept during a deployment (a copy of an older one never gets here).
    _tag_endpoint(sagemaker, current["EndpointArn"], {PENDING_TAG: "", LATEST_TAG: approval})
    log.info("updating endpoint %s to %s (%s), blue/green", endpoint, name, arn)
    if released:
        log.warning("%s runs without autoscaling until the update ends (%s instance(s) of %s on the new fleet): "
                    "its IN_SERVICE event registers %s again", endpoint, env["MIN_INSTANCES"], env["INSTANCE_TYPE"],
                    scalable_resource(env))
    result = {"action": "updated", "endpoint": endpoint, "endpoint_config": name, "model_package": arn}
    return result | ({"deregistered": released} if released else {})


def deployment_config(env: dict[str, str]) -> dict[str, Any]:
    bake = int(env["BAKE_SECONDS"])
    if env["TRAFFIC_SHIFTING"] == "CANARY":
        routing = {"Type": "CANARY", "WaitIntervalInSeconds": bake,
                   "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": int(env["CANARY_PERCENT"])}}
    else:
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": bake}
    return {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                      "TerminationWaitInSeconds": bake,
                                      "MaximumExecutionTimeoutInSeconds": max(1800, 4 * bake + 600)},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in env["ROLLBACK_ALARMS"].split(",") if a]}}


def scalable_resource(env: dict[str, str]) -> str:
    return f"endpoint/{env['ENDPOINT_NAME']}/variant/{env['VARIANT_NAME']}"


def release_autoscaling(sagemaker: Any, autoscaling: Any, current: dict[str, Any], env: dict[str, str]) -> list[str]:
    """Deregister the scalable target of every variant of the endpoint's current config whose instance type the new
    config changes, or which it drops (another variant name): UpdateEndpoint fails while such a variant is an
    Application Auto Scaling target; a new model alone is allowed, so nothing is deregistered for it. Deregistering
    deletes the target's scaling policies too. Returns the resource IDs deregistered."""
    endpoint = env["ENDPOINT_NAME"]
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
        variants = {v["VariantName"]: v.get("InstanceType") for v in config["ProductionVariants"]}
    except ClientError as err:  # e.g. the serving config was deleted by hand: assume the variant changes
        log.warning("%s: its endpoint config %s cannot be described (%s): its autoscaling is deregistered for the "
                    "update", endpoint, current.get("EndpointConfigName"), err.response.get("Error", {}).get("Code"))
        variants = {env["VARIANT_NAME"]: None}
    changed = {f"endpoint/{endpoint}/variant/{name}": f"its instance type {kind} becomes {env['INSTANCE_TYPE']}"
               if name == env["VARIANT_NAME"] else f"the new config drops variant {name}"
               for name, kind in variants.items() if name != env["VARIANT_NAME"] or kind != env["INSTANCE_TYPE"]}
    if not changed:
        return []
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=sorted(changed),
                                                    ScalableDimension=SCALABLE_DIMENSION)["ScalableTargets"]
    released = []
    for target in targets:
        resource = target["ResourceId"]
        autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                               ScalableDimension=SCALABLE_DIMENSION)
        released.append(resource)
        log.warning("deregistered the scalable target %s and its scaling policies for the update (%s): SageMaker "
                    "refuses to change the instance type of an auto-scaled variant, or to drop it", resource,
                    changed[resource])
    return released


def _restore_autoscaling(autoscaling: Any, env: dict[str, str]) -> None:
    """After a refused update: the stage's autoscaling on the variant again (the run still fails, with the refusal)."""
    try:
        register_autoscaling(autoscaling, env)
    except ClientError:
        log.exception("the update was refused and %s could not be registered again: the endpoint serves unscaled "
                      "until an update of it ends (its IN_SERVICE event registers it)", scalable_resource(env))


def register_autoscaling(autoscaling: Any, env: dict[str, str]) -> dict[str, Any]:
    resource = scalable_resource(env)
    tags = {k: v for k, v in resource_tags(env, "").items() if v}
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=int(env["MIN_INSTANCES"]), MaxCapacity=int(env["MAX_INSTANCES"]), Tags=tags)
    autoscaling.put_scaling_policy(
        PolicyName=f"{env['ENDPOINT_NAME']}-invocations-per-instance", ServiceNamespace="sagemaker",
        ResourceId=resource, ScalableDimension=SCALABLE_DIMENSION, PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(env["INVOCATIONS_PER_INSTANCE"]),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300, "ScaleOutCooldown": 60})
    log.info("target tracking on %s: %s invocations per instance, %s..%s instances", resource,
             env["INVOCATIONS_PER_INSTANCE"], env["MIN_INSTANCES"], env["MAX_INSTANCES"])
    return {"action": "autoscaling", "resource": resource}


# ------------------------------------------------------------------------------------------ baselines

BASELINE_FILES = {  # file under artifacts/monitoring/<endpoint>/baseline/ → where the package says it is
    "data/statistics.json": (("ModelMetrics", "ModelDataQuality", "Statistics"),
                             ("DriftCheckBaselines", "ModelDataQuality", "Statistics")),
    "data/constraints.json": (("ModelMetrics", "ModelDataQuality", "Constraints"),
                              ("DriftCheckBaselines", "ModelDataQuality", "Constraints")),
    "predictions/prediction_baseline.json": (("CustomerMetadataProperties", "diagnosa:prediction-baseline"),),
    "predictions/model_quality_constraints.json": (("ModelMetrics", "ModelQuality", "Constraints"),
                                                   ("DriftCheckBaselines", "ModelQuality", "Constraints")),
}
REQUIRED = ("data/statistics.json", "data/constraints.json")  # the monitoring job cannot run without them


def baseline_prefix(env: dict[str, str]) -> str:
    return f"artifacts/monitoring/{env['ENDPOINT_NAME']}/baseline/"


def baseline_sources(package: dict[str, Any], bucket: str) -> dict[str, str]:
    """Baseline file → source key in the lake, for the files the package names. Only objects of this
    lake's run folders (``artifacts/runs/``) are accepted: a package cannot make the function copy
    anything else into the monitoring prefix."""
    found: dict[str, str] = {}
    for name, paths in BASELINE_FILES.items():
        for path in paths:
            value: Any = package
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            uri = value.get("S3Uri") if isinstance(value, dict) else value
            if not isinstance(uri, str) or not uri:
                continue
            prefix = f"s3://{bucket}/artifacts/runs/"
            if not uri.startswith(prefix) or "/../" in uri:
                log.warning("%s: %s is not in this lake's run folders (%s); ignored", name, uri, prefix)
                continue
            found[name] = uri[len(f"s3://{bucket}/"):]
            break
    return found


def clear_baselines(s3: Any, env: dict[str, str]) -> int:
    """Delete every object under the endpoint's baseline prefix; returns how many there were."""
    bucket, prefix = env["LAKE_BUCKET"], baseline_prefix(env)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]],
                                                 "Quiet": True})
    return len(keys)


def deploy_pending(sagemaker: Any, autoscaling: Any, env: dict[str, str], *, now: float,
                   s3: Any = None) -> dict[str, Any] | None:
    """Deploy the version approved while the endpoint was busy (``PENDING_TAG``), now that it is InService. The tag
    is cleared once its update has started (or when the registry refuses it): an error on the way fails the run,
    so Lambda retries and the dead-letter queue's alarm sees it, and the version stays kept."""
    endpoint = env["ENDPOINT_NAME"]
    current = _describe_endpoint(sagemaker, endpoint)
    if current is None or current["EndpointStatus"] != "InService":
        return None
    tags = _tags(sagemaker, current["EndpointArn"])
    arn = tags.get(PENDING_TAG)
    if not arn:
        return None
    if serving_package(sagemaker, endpoint) == arn:
        _tag_endpoint(sagemaker, current["EndpointArn"], {PENDING_TAG: ""})
        log.info("%s already serves %s, approved while it deployed", endpoint, arn)
        return {"action": "unchanged", "endpoint": endpoint, "model_package": arn}
    try:
        package = approved_package(sagemaker, arn, env)
    except Refused as err:  # rejected, deleted or moved since: the registry is the truth
        _tag_endpoint(sagemaker, current["EndpointArn"], {PENDING_TAG: ""})
        log.warning("the version approved during the deployment is not deployed: %s", err)
        return {"action": "refused", "endpoint": endpoint, "model_package": arn, "reason": str(err)}
    latest = tags.get(LATEST_TAG) or Approval.of(None, int(package.get("ModelPackageVersion") or 0), now).tag()
    return roll_out(package, arn, current, latest, sagemaker, autoscaling, env, now=now, s3=s3)


def stranded_pending(sagemaker: Any, env: dict[str, str], status: str) -> dict[str, Any]:
    """The endpoint went to FAILED or UPDATE_ROLLBACK_FAILED: a version kept pending will not deploy by itself,
    so the run fails (Lambda's retries, then the dead-letter queue's alarm) naming it and what to do."""
    endpoint = env["ENDPOINT_NAME"]
    current = _describe_endpoint(sagemaker, endpoint)
    arn = _tags(sagemaker, current["EndpointArn"]).get(PENDING_TAG) if current is not None else None
    if not arn:
        log.warning("endpoint %s is %s; no approved version waits for it", endpoint, status)
        return {"action": "none", "endpoint": endpoint, "status": status}
    raise RuntimeError(f"endpoint {endpoint} is {status} "
                       f"({(current or {}).get('FailureReason') or 'no reason given'}): {arn}, approved while it "
                       f"deployed, will not be deployed by itself; {what_to_do(endpoint, status)}")


def what_to_do(endpoint: str, status: str) -> str:
    """What an operator does for an approval the endpoint's ``status`` (DescribeEndpoint's or the event's) stops."""
    if status in ("Failed", "FAILED"):
        return (f"SageMaker only deletes a failed endpoint: delete it (aws sagemaker delete-endpoint --endpoint-name "
                f"{endpoint}) and approve the version again, which creates it")
    return "approve the version again once it is InService"


def _tag_endpoint(sagemaker: Any, endpoint_arn: str, tags: dict[str, str]) -> None:
    """Set the endpoint's pending and latest-approval tags. "" clears by overwriting, not DeleteTags: the deploy
    role deletes nothing (only the endpoint-resources function removes what the stage made)."""
    sagemaker.add_tags(ResourceArn=endpoint_arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def serving_package(sagemaker: Any, endpoint: str) -> str | None:
    """ARN of the model package the endpoint serves now (its config's tag), or None when not InService."""
    current = _describe_endpoint(sagemaker, endpoint)
    if current is None or current.get("EndpointStatus") != "InService":
        return None
    config = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
    tags = sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags", [])
    return next((t["Value"] for t in tags if t["Key"] == PACKAGE_TAG), None)


def install_baselines(sagemaker: Any, s3: Any, env: dict[str, str], *, now: float) -> dict[str, Any]:
    """Make the endpoint's baseline prefix hold the baselines of the package it serves, and only those."""
    endpoint, bucket, prefix = env["ENDPOINT_NAME"], env["LAKE_BUCKET"], baseline_prefix(env)
    arn = serving_package(sagemaker, endpoint)
    if arn is None:
        # Updating again already, or an endpoint this function did not configure: nothing is trusted.
        cleared = clear_baselines(s3, env)
        log.warning("%s serves no package this function deployed (or is not InService): baselines cleared (%d)",
                    endpoint, cleared)
        return {"status": "cleared", "reason": "no serving package known"}
    # Whether it exists is asked with a listing, never answered by a HeadObject's 404: S3 answers 404 for a missing
    # key only to a caller allowed s3:ListBucket, and the role's is conditioned on s3:prefix, which a HeadObject does
    # not carry (403 then). A listing with the key as its prefix is within that grant.
    key = prefix + REQUIRED[0]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents", [])
    current = s3.head_object(Bucket=bucket, Key=key)["Metadata"] if [o["Key"] for o in listed] == [key] else {}
    if current.get("model-package") == arn:
        return {"status": "unchanged", "model_package": arn}  # e.g. InService again after a scaling event
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    sources = baseline_sources(package, bucket)
    clear_baselines(s3, env)
    missing = [name for name in REQUIRED if name not in sources]
    if missing:
        log.warning("%s serves %s, which registers no %s: the endpoint is not monitored until a version with "
                    "baselines is deployed", endpoint, arn, " and ".join(missing))
        return {"status": "missing", "model_package": arn, "missing": missing}
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    # The required files last: the monitor treats data/statistics.json as "baselines present".
    for name in sorted(sources, key=lambda n: (n in REQUIRED, n)):
        try:
            s3.copy_object(Bucket=bucket, Key=prefix + name, CopySource={"Bucket": bucket, "Key": sources[name]},
                           MetadataDirective="REPLACE", ContentType="application/json",
                           Metadata={"model-package": arn, "serving-since": since, "source": sources[name]},
                           ServerSideEncryption="aws:kms", SSEKMSKeyId=env["KMS_KEY_ARN"], BucketKeyEnabled=True)
        except ClientError as err:
            # The run folder expired or was deleted, or the object cannot be read. All or nothing: the files copied
            # so far are removed, so the monitor finds no baseline rather than some of another set.
            removed = clear_baselines(s3, env)
            error = err.response.get("Error", {})
            message = _clip(f"{endpoint} serves {arn}, whose {name} baseline s3://{bucket}/{sources[name]} cannot be "
                            f"copied ({error.get('Code', 'error')}: {error.get('Message', '')}): it is not monitored "
                            f"(s3://{bucket}/{prefix} left empty, {removed} removed) until that object is restored or "
                            "a version with baselines is deployed", 900)
            log.error("%s", message)
            raise BaselinesUnavailable(message) from None
    log.info("baselines of %s installed under s3://%s/%s (%s)", arn, bucket, prefix, ", ".join(sorted(sources)))
    return {"status": "installed", "model_package": arn, "files": sorted(sources), "serving_since": since}


def _describe_endpoint(sagemaker: Any, name: str) -> dict[str, Any] | None:
    try:
        return sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as err:
        message = err.response.get("Error", {}).get("Message", "")
        if err.response.get("Error", {}).get("Code") == "ValidationException" and "Could not find" in message:
            return None
        raise


# ------------------------------------------------------------------------------------------ what CloudFormation cannot see

def resources(event: dict[str, Any], context: Any = None, *, sagemaker: Any = None, autoscaling: Any = None,
              cloudwatch: Any = None, env: dict[str, str] | None = None,
              respond: Callable[..., None] | None = None) -> dict[str, Any]:
    """The ``endpoint-resources`` function: a CloudFormation custom resource (removal on stack delete) and
    the daily drift report."""
    if not isinstance(event, dict):  # `"RequestType" in event` held for a string holding the word, and a list ran
        raise Refused(f"the event is not a JSON object but {_typed(event)}: nothing done")  # the drift report
    env = env or settings()
    sagemaker = sagemaker or boto3.client("sagemaker")
    autoscaling = autoscaling or boto3.client("application-autoscaling")
    if "RequestType" in event:
        return custom_resource(event, sagemaker, autoscaling, env, respond or send_response)
    return report_drift(sagemaker, autoscaling, cloudwatch or boto3.client("cloudwatch"), env)


# What a CloudFormation custom resource request carries, the answer needs (send_response), and its kinds.
REQUEST_FIELDS = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")
REQUEST_TYPES = ("Create", "Update", "Delete")


def custom_resource(event: dict[str, Any], sagemaker: Any, autoscaling: Any, env: dict[str, str],
                    respond: Callable[..., None]) -> dict[str, Any]:
    """Create and Update record nothing (the deploy function creates on approval); Delete removes everything
    the deploy function made. A failed removal is reported FAILED, naming what is left, so that a stack
    deletion never leaves a billed endpoint behind unnoticed. A request that cannot be answered (a field of
    REQUEST_FIELDS missing, not text: not CloudFormation's) is refused before anything is removed, and one of another
    kind is answered FAILED."""
    missing = [key for key in REQUEST_FIELDS if not isinstance(event.get(key), str) or not event[key]]
    if missing:  # a Delete removed the serving resources, then failed to answer (KeyError: 'StackId')
        raise Refused(f"not a CloudFormation custom resource request: no {', '.join(missing)} (text): nothing done")
    physical = f"{env['ENDPOINT_NAME']}-serving-resources"  # constant: an update never replaces (deletes) it
    if event["RequestType"] not in REQUEST_TYPES:
        reason = f"RequestType {_shown(event['RequestType'])} is none of {', '.join(REQUEST_TYPES)}: nothing done"
        respond(event, "FAILED", reason, {}, physical)
        return {"status": "FAILED", "reason": reason}
    try:
        result = remove_endpoint_resources(sagemaker, autoscaling, env) if event["RequestType"] == "Delete" else {}
    except Exception as err:  # noqa: BLE001 - CloudFormation waits for an answer whatever went wrong
        log.exception("custom resource %s failed", event["RequestType"])
        respond(event, "FAILED", f"{type(err).__name__}: {err}"[:900], {}, physical)
        return {"status": "FAILED", "reason": str(err)}
    respond(event, "SUCCESS", "", {"EndpointName": env["ENDPOINT_NAME"]}, physical)
    return {"status": "SUCCESS", **result}


def send_response(event: dict[str, Any], status: str, reason: str, data: dict[str, Any], physical: str) -> None:
    """PUT the custom resource's answer to CloudFormation's pre-signed URL (no content type: the URL is signed
    without one)."""
    body = json.dumps({"Status": status, "Reason": reason or "see the function's CloudWatch Logs", "PhysicalResourceId": physical,
                       "StackId": event["StackId"], "RequestId": event["RequestId"],
                       "LogicalResourceId": event["LogicalResourceId"], "Data": data}).encode()
    request = urllib.request.Request(event["ResponseURL"], data=body, method="PUT",
                                     headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - CloudFormation's https URL
        response.read()


def _tags(sagemaker: Any, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=arn).get("Tags", [])}


def _ours(tags: dict[str, str], env: dict[str, str]) -> bool:
    """Made by the deploy function: its managed-by tag (or, from before that tag, the package tag it always set)."""
    return tags.get(MANAGED_TAG) == env.get("MANAGED_BY") or (MANAGED_TAG not in tags and PACKAGE_TAG in tags)


def _named(sagemaker: Any, kind: str, env: dict[str, str]) -> list[tuple[str, str]]:
    """(name, arn) of the models or endpoint configs named like the deploy function names them."""
    prefix = f"{env['ENDPOINT_NAME']}-v"
    operation, key = {"model": ("list_models", "Models"), "config": ("list_endpoint_configs", "EndpointConfigs")}[kind]
    name, arn = ("ModelName", "ModelArn") if kind == "model" else ("EndpointConfigName", "EndpointConfigArn")
    found = []
    for page in sagemaker.get_paginator(operation).paginate(NameContains=prefix):
        found += [(item[name], item[arn]) for item in page.get(key, []) if item[name].startswith(prefix)]
    return found


def remove_endpoint_resources(sagemaker: Any, autoscaling: Any, env: dict[str, str]) -> dict[str, Any]:
    """Delete the scalable target (its scaling policies and their alarms go with it), the endpoint, and every
    endpoint config and model the deploy function made. Only what carries its tags: a resource someone made
    by hand under the same name is left and named in the result."""
    endpoint, left = env["ENDPOINT_NAME"], []
    deleted: dict[str, list[str]] = {"endpoint_configs": [], "models": []}
    removed: dict[str, Any] = {"scalable_target": False, "endpoint": False, **deleted}
    resource = scalable_resource(env)
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource],
                                                    ScalableDimension=SCALABLE_DIMENSION)["ScalableTargets"]
    if targets:
        autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                               ScalableDimension=SCALABLE_DIMENSION)
        removed["scalable_target"] = True
    current = _describe_endpoint(sagemaker, endpoint)
    if current is not None:
        if _ours(_tags(sagemaker, current["EndpointArn"]), env):
            sagemaker.delete_endpoint(EndpointName=endpoint)
            removed["endpoint"] = True
        else:
            left.append(f"endpoint {endpoint}")
    for kind, delete, key in (("config", "delete_endpoint_config", "EndpointConfigName"),
                              ("model", "delete_model", "ModelName")):
        for name, arn in _named(sagemaker, kind, env):
            if _ours(_tags(sagemaker, arn), env):
                getattr(sagemaker, delete)(**{key: name})
                deleted["endpoint_configs" if kind == "config" else "models"].append(name)
            else:
                left.append(f"{kind} {name}")
    if left:
        log.warning("not made by the deploy function, so left in place: %s", ", ".join(left))
    log.info("removed what the deploy function made for %s: %s", endpoint, json.dumps(removed))
    return {"removed": removed, "left": left}


def endpoint_differences(sagemaker: Any, autoscaling: Any, env: dict[str, str]) -> tuple[str, list[str]]:
    """(state, differences) between what serves and what the stage's settings say. The state is
    ``not deployed``, ``deploying`` (nothing compared while an update runs) or ``compared``."""
    endpoint = env["ENDPOINT_NAME"]
    current = _describe_endpoint(sagemaker, endpoint)
    if current is None:
        return "not deployed", []
    if current["EndpointStatus"] in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
        return "deploying", []
    found: list[str] = []

    def differ(what: str, actual: Any, expected: Any) -> None:
        if actual != expected:
            found.append(f"{what}: {actual!r}, the stage says {expected!r}")

    differ("endpoint status", current["EndpointStatus"], "InService")
    if not _ours(_tags(sagemaker, current["EndpointArn"]), env):
        found.append(f"endpoint {endpoint} was not made by {env.get('MANAGED_BY')} (no {MANAGED_TAG} tag)")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
    config_tags = _tags(sagemaker, config["EndpointConfigArn"])
    variants = {v["VariantName"]: v for v in config["ProductionVariants"]}
    variant = variants.get(env["VARIANT_NAME"])
    if variant is None:
        found.append(f"endpoint config {config['EndpointConfigName']} has no variant {env['VARIANT_NAME']}")
        return "compared", found
    differ("instance type", variant.get("InstanceType"), env["INSTANCE_TYPE"])
    differ("endpoint config KMS key", config.get("KmsKeyId"), env["KMS_KEY_ARN"])
    capture = config.get("DataCaptureConfig") or {}
    percent = int(env["CAPTURE_PERCENT"])
    differ("data capture", bool(capture.get("EnableCapture")), percent > 0)
    if percent > 0:
        differ("capture sampling percent", capture.get("InitialSamplingPercentage"), percent)
        differ("capture destination", capture.get("DestinationS3Uri"), env["CAPTURE_URI"])
        differ("capture KMS key", capture.get("KmsKeyId"), env["KMS_KEY_ARN"])
    model = sagemaker.describe_model(ModelName=variant["ModelName"])
    differ("model role", model.get("ExecutionRoleArn"), env["MODEL_ROLE_ARN"])
    vpc = model.get("VpcConfig") or {}
    differ("model subnets", sorted(vpc.get("Subnets", [])), sorted(filter(None, env.get("SUBNET_IDS", "").split(","))))
    differ("model security groups", sorted(vpc.get("SecurityGroupIds", [])),
           sorted(filter(None, env.get("SECURITY_GROUP_IDS", "").split(","))))
    if env.get("SERVING_IMAGE"):
        differ("serving image", model["PrimaryContainer"]["Image"], serving_image(model["PrimaryContainer"]["Image"], env))
    differ("network isolation", bool(model.get("EnableNetworkIsolation")), network_isolated(env))
    package = config_tags.get(PACKAGE_TAG)
    if package:
        status = sagemaker.describe_model_package(ModelPackageName=package).get("ModelApprovalStatus")
        differ(f"registry status of the served package {package}", status, "Approved")
    resource = scalable_resource(env)
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource],
                                                    ScalableDimension=SCALABLE_DIMENSION)["ScalableTargets"]
    if not targets:
        found.append(f"no autoscaling on {resource}")
    else:
        differ("autoscaling range", (targets[0]["MinCapacity"], targets[0]["MaxCapacity"]),
               (int(env["MIN_INSTANCES"]), int(env["MAX_INSTANCES"])))
        policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource,
                                                         ScalableDimension=SCALABLE_DIMENSION)["ScalingPolicies"]
        targets_per_instance = sorted(p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies
                                      if p.get("PolicyType") == "TargetTrackingScaling")
        differ("target tracking (invocations per instance)", targets_per_instance,
               [float(env["INVOCATIONS_PER_INSTANCE"])])
    return "compared", found


def report_drift(sagemaker: Any, autoscaling: Any, cloudwatch: Any, env: dict[str, str]) -> dict[str, Any]:
    """Log every difference and publish their number as ``EndpointDrift`` (the stage's drift alarm on it
    notifies the alerts topic). Approving the serving version again redeploys it with the stage's settings."""
    state, found = endpoint_differences(sagemaker, autoscaling, env)
    for difference in found:
        log.warning("endpoint drift: %s", difference)
    if state == "compared":
        cloudwatch.put_metric_data(Namespace=env["METRICS_NAMESPACE"], MetricData=[{
            "MetricName": "EndpointDrift", "Dimensions": [{"Name": "EndpointName", "Value": env["ENDPOINT_NAME"]}],
            "Value": float(len(found)), "Unit": "Count"}])
    status = {"not deployed": "not deployed", "deploying": "deploying"}.get(state, "drifted" if found else "in sync")
    return {"status": status, "differences": found}
