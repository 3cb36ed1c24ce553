"""Promotes an Approved model version of an earlier stage into this stage (AWS Lambda, plain boto3).

The delivery pipeline invokes it after its manual approval, once this stage's stacks are deployed, with the
version the approval was asked for (``{"version": N}``: promoted only if the source endpoint still serves it);
``{}`` promotes the version the source stage's endpoint serves now, ``{"version": N, "force": true}`` that one
even if the endpoint does not serve it. It

1. finds what the source stage serves: its endpoint must be InService, and its current endpoint config's
   ``diagnosa:model-package`` tag (set by the deploy function; after an automatic rollback the old config,
   hence the old package, serves again) names the version. "Newest Approved" is not what serves: a version
   whose canary tripped the rollback alarms, or one a person rolled back from by approving an older one,
   stays Approved. An endpoint that is creating, updating or rolling back, or that serves nothing this
   stage's deploy function tagged, is refused (``force`` skips this step; the approval records it);
2. describes the source version (across accounts and regions: the source stage's group policy, lake
   bucket policy and key policy let this function's role read; the endpoint, which has no resource
   policy, through the source stage's reader role ``SOURCE_READER_ROLE``) and refuses one that is not
   Approved or not in the source group;
3. does nothing if that version was promoted already (a version of this stage's group records it in
   ``CustomerMetadataProperties["diagnosa:promoted-from"]``), so re-running the pipeline is harmless;
4. copies the model artifact and every baseline the version names, server-side, from the source lake's
   run folders into this lake's ``artifacts/runs/promoted/<source group>-v<N>/`` (SSE-KMS with this
   stage's key): this stage then depends on nothing of the source stage;
5. registers the version in this stage's group with the copies' URIs and this stage's serving image,
   then approves it — the approval event makes this stage's deploy function deploy it (canary, alarms).

Before 4, the version is gated again with this stage's own gate: the checks of this stage's pipeline definition
at their defaults (``GATE_KEY``, a file the stack writes into this lake), read from the evaluation the version
registered as its ModelQuality statistics. A source run started with lowered thresholds (``--param``) passes the
source's gate but not this one. ``force`` never skips it. A gate file that is not a non-empty list of checks
(truncated, empty, another shape) refuses every promotion: a gate that checks nothing never passes a version.
Refusals quote the event's and the S3 objects' values bounded (their start and their size), whatever their size.

Configuration comes from environment variables set by the stack (``infra/stack.py``).

``python handler.py served`` is the delivery pipeline's read, before its manual approval, of what the source
endpoint serves (step 1 alone, with the same environment variables): it prints ``SERVED_VERSION`` (the version
number, or ``none``) and ``SERVED_MODEL`` (the version's ARN, or why none is settled) as shell assignments. The
approval shows them, and the promotion after it asks for that version, so a version the source deploys while the
approval waits is never promoted unapproved (``infra/delivery.py``).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import shlex
import sys
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

PROMOTED_FROM = "diagnosa:promoted-from"
PACKAGE_TAG = "diagnosa:model-package"  # the deploy function's tag on the models and endpoint configs it creates
PREDICTION_BASELINE = "diagnosa:prediction-baseline"
RUNS = "artifacts/runs/"
SERVED_REASON_CHARS = 400
EVALUATION_MAX_BYTES = 10 * 2**20  # an evaluation.json is tens of KB; a larger object is not one
GATE_MAX_BYTES = 2**20  # a gate file is a few KB (a handful of checks)
SHOWN_CHARS = 80  # of a value from the event or an S3 object quoted in a message (CloudWatch, the pipeline's failure)
PATH_CHARS = 200  # of a gate path named in a message
FAILURES_SHOWN = 20  # of the gate's failures named in a refusal


class Refused(Exception):
    """The request names something this function must not promote; nothing was changed."""


def settings() -> dict[str, str]:
    return dict(os.environ)


def handler(event: Any, context: Any = None, *, source: Any = None, target: Any = None, s3: Any = None,
            reader: Any = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``source``: SageMaker in the source region (its registry); ``reader``: SageMaker that may describe the
    source endpoint and its configs (default: :func:`endpoint_reader`)."""
    env = env or settings()
    if not isinstance(event, dict):  # Lambda passes any JSON
        raise Refused(f'the event must be a JSON object ({{}}, {{"version": N}} or {{"version": N, "force": true}}), '
                      f"got {kind(event)}: nothing promoted")
    unknown = sorted(key for key in event if key not in ("version", "force"))
    if unknown:  # a misspelt "version" was ignored, and what the source serves was promoted instead
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise Refused(f"unknown field(s) {', '.join(shown(key, 60) for key in unknown[:10])}{more} (the event takes "
                      "version and force): nothing promoted")
    source = source or boto3.client("sagemaker", region_name=env["SOURCE_REGION"])
    target = target or boto3.client("sagemaker")
    s3 = s3 or boto3.client("s3")
    version, force = event.get("version"), event.get("force", False)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise Refused(f"version must be a positive integer, got {shown(version)}")
    if not isinstance(force, bool) or (force and version is None):
        raise Refused(f"force must be true or false, and only with a version (it promotes that version even if "
                      f"{env['SOURCE_ENDPOINT']} does not serve it), got {shown(force)}")
    if force and version is not None:  # (force without a version is refused above)
        arn = source_version(source, env, version)
        log.warning("forced: %s is promoted without checking that %s serves it", arn, env["SOURCE_ENDPOINT"])
    else:
        arn = served_version(reader if reader is not None else endpoint_reader(env), env)
        if version is not None and arn != source_version(source, env, version):
            raise Refused(f"{env['SOURCE_ENDPOINT']} serves {arn}, not version {version} of {env['SOURCE_GROUP']} "
                          "(rolled back from, or never deployed): nothing promoted. Promote what it serves ({}), or "
                          'pass "force": true with the version to promote one it does not serve')
    package = source.describe_model_package(ModelPackageName=arn)
    if package.get("ModelPackageGroupName") not in (env["SOURCE_GROUP"], source_group(env)):
        raise Refused(f"{arn} is not a version of {env['SOURCE_GROUP']}: nothing promoted")
    if package.get("ModelApprovalStatus") != "Approved":
        raise Refused(f"{arn} is {package.get('ModelApprovalStatus')}, not Approved in {env['SOURCE_GROUP']}: "
                      "nothing promoted")
    how = "forced (not checked against what the source endpoint serves)" if force else \
        f"served by {env['SOURCE_ENDPOINT']}"
    done = already_promoted(target, env["TARGET_GROUP"], arn)
    if done:
        described = target.describe_model_package(ModelPackageName=done)
        if described.get("ModelApprovalStatus") == "PendingManualApproval":
            check_gate(s3, package, env)
            # registered by an earlier attempt whose approval failed: finish it (never re-approve a Rejected one)
            target.update_model_package(ModelPackageArn=done, ModelApprovalStatus="Approved",
                                        CustomerMetadataProperties=described.get("CustomerMetadataProperties") or {},
                                        ApprovalDescription=f"promoted from {arn} by the delivery pipeline after its "
                                                            "manual approval (completed by a retry)")
            log.info("%s was registered already as %s; approved it now", arn, done)
            return {"status": "promoted", "source": arn, "target": done, "copied": []}
        log.info("%s was promoted already as %s", arn, done)
        return {"status": "already promoted", "source": arn, "target": done}
    check_gate(s3, package, env)
    prefix = f"{env['PROMOTED_PREFIX']}{env['SOURCE_GROUP']}-v{package.get('ModelPackageVersion')}/"
    request, copies = promoted_request(package, env, prefix)
    for source_uri, target_uri in copies.items():
        copy_object(s3, source_uri, target_uri, env)
    created = target.create_model_package(**request)["ModelPackageArn"]
    # The metadata is stated again with the approval: the promotion record must survive the update whatever
    # the service does with properties an update leaves out.
    target.update_model_package(ModelPackageArn=created, ModelApprovalStatus="Approved",
                                CustomerMetadataProperties=request["CustomerMetadataProperties"],
                                ApprovalDescription=f"promoted from {arn} ({how}) by the delivery pipeline after "
                                                    "its manual approval")
    log.info("promoted %s (%s) as %s (%d objects copied)", arn, how, created, len(copies))
    return {"status": "promoted", "source": arn, "target": created, "copied": sorted(copies.values()),
            "forced": force}


def kind(value: Any) -> str:
    """What JSON type ``value`` is, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__)


def text(value: str, limit: int = SHOWN_CHARS) -> str:
    """``value`` (a name read from an S3 object) for a message: lone surrogates escaped, cut to ``limit``
    characters with its length said."""
    value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value of the event or of an S3 object for a message, bounded whatever its size: a list or an object by its
    size, a string or number quoted (its start only when long, with its length; surrogates escaped by repr)."""
    if isinstance(value, (list, dict)):
        what, count = ("a list", "item") if isinstance(value, list) else ("an object", "key")
        return f"{what} of {len(value)} {count}{'' if len(value) == 1 else 's'}"
    if isinstance(value, str):
        quoted = repr(value[:limit])  # escapes surrogates and control characters: up to 10 characters for one
        return quoted if len(value) <= limit and len(quoted) <= limit + 2 else \
            f"{quoted[:limit]}... ({len(value)} characters)"
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            digits = str(value)
        except ValueError:  # over sys.get_int_max_str_digits() (4,300 by default)
            return "an integer too long to write out"
        return digits if len(digits) <= limit else f"{digits[:limit]}... ({len(digits)} digits)"
    return repr(value) if isinstance(value, (float, bool)) or value is None else kind(value)


def source_group(env: dict[str, str]) -> str:
    """The source group by ARN when it is in another account (cross-account calls need the ARN)."""
    if not env.get("SOURCE_ACCOUNT"):
        return env["SOURCE_GROUP"]
    partition = "aws-cn" if env["SOURCE_REGION"].startswith("cn-") else "aws"
    return (f"arn:{partition}:sagemaker:{env['SOURCE_REGION']}:{env['SOURCE_ACCOUNT']}:model-package-group/"
            f"{env['SOURCE_GROUP']}")


def source_version(sagemaker: Any, env: dict[str, str], version: int) -> str:
    """ARN of version ``version`` of the source group."""
    listed = [p for page in sagemaker.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName=source_group(env), SortBy="CreationTime", SortOrder="Descending")
        for p in page.get("ModelPackageSummaryList", [])]
    match = [p for p in listed if p.get("ModelPackageVersion") == version]
    if not match:
        raise Refused(f"{env['SOURCE_GROUP']} has no version {shown(version)}")
    return str(match[0]["ModelPackageArn"])


def endpoint_reader(env: dict[str, str]) -> Any:
    """SageMaker in the source region that may describe the source endpoint and its configs: this function's own
    role in one account; in another account the source stage's reader role (SageMaker endpoints take no resource
    policy, so a cross-account read goes through a role of the source account that trusts this one)."""
    role = env.get("SOURCE_READER_ROLE")
    if not role:
        return boto3.client("sagemaker", region_name=env["SOURCE_REGION"])
    # STS's regional endpoint: in VPC mode the function reaches AWS only through the VPC's endpoints (an older
    # boto3 would call the global sts.amazonaws.com, which the isolated subnets cannot reach).
    os.environ.setdefault("AWS_STS_REGIONAL_ENDPOINTS", "regional")
    credentials = boto3.client("sts").assume_role(RoleArn=role, RoleSessionName="diagnosa-promote",
                                                  DurationSeconds=900)["Credentials"]
    return boto3.client("sagemaker", region_name=env["SOURCE_REGION"], aws_access_key_id=credentials["AccessKeyId"],
                        aws_secret_access_key=credentials["SecretAccessKey"],
                        aws_session_token=credentials["SessionToken"])


def served_version(sagemaker: Any, env: dict[str, str]) -> str:
    """ARN of the model package the source endpoint serves now: its current endpoint config's PACKAGE_TAG. Refused
    when the endpoint does not exist, is not InService (creating, updating, rolling back: what will serve is not
    settled) or its config names no package (not deployed by the source stage's deploy function)."""
    endpoint = env["SOURCE_ENDPOINT"]
    try:
        current = sagemaker.describe_endpoint(EndpointName=endpoint)
    except ClientError as err:
        error = err.response.get("Error", {})
        if error.get("Code") == "ValidationException" and "Could not find" in error.get("Message", ""):
            raise Refused(f"{endpoint} does not exist: {env['SOURCE_GROUP']} serves no version, nothing promoted "
                          '(a version it does not serve is promoted only with {"version": N, "force": true})') from err
        raise
    status = current.get("EndpointStatus")
    if status != "InService":
        raise Refused(f"{endpoint} is {status}, not InService: which version it serves is not settled (a deployment "
                      "or its rollback is under way), nothing promoted; run the promotion again once it is InService")
    config = sagemaker.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
    tags = sagemaker.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags", [])
    arn = next((t["Value"] for t in tags if t["Key"] == PACKAGE_TAG and t.get("Value")), None)
    if arn is None:
        raise Refused(f"{endpoint}'s endpoint config {current['EndpointConfigName']} has no {PACKAGE_TAG} tag (it was "
                      f"not deployed by the {env['SOURCE_GROUP']} deploy function): what it serves is unknown, "
                      "nothing promoted")
    return str(arn)


def served(env: dict[str, str], reader: Any = None) -> tuple[str, str]:
    """(SERVED_VERSION, SERVED_MODEL) for the delivery pipeline's approval: the version number and ARN the source
    endpoint serves, or ``("none", why)`` when it serves no settled version (no endpoint, a deployment under way,
    no package tag). The approval then says so and the promotion after it fails with that reason; the stage's
    infrastructure still deploys. Any other error (no permission, no network) is raised: nothing can be said."""
    try:
        arn = served_version(reader if reader is not None else endpoint_reader(env), env)
    except Refused as err:  # shown in the approval: CodePipeline's action configuration holds 1,000 characters
        return "none", str(err)[:SERVED_REASON_CHARS]
    version = arn.rpartition("/")[2]
    if not re.fullmatch(r"[1-9][0-9]{0,9}", version):
        raise ValueError(f"{env['SOURCE_ENDPOINT']}'s {PACKAGE_TAG} tag {arn!r} is not a model package version ARN")
    return version, arn


def already_promoted(sagemaker: Any, group: str, arn: str) -> str | None:
    for page in sagemaker.get_paginator("list_model_packages").paginate(ModelPackageGroupName=group):
        for summary in page.get("ModelPackageSummaryList", []):
            described = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            if (described.get("CustomerMetadataProperties") or {}).get(PROMOTED_FROM) == arn:
                return summary["ModelPackageArn"]
    return None


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def in_source_runs(uri: str, env: dict[str, str]) -> tuple[str, str]:
    """(bucket, key) of ``uri``, refused unless it is in a run folder of the source stage's lake: a version cannot
    make the function read or copy anything else."""
    bucket, key = _split(uri)
    if not uri.startswith("s3://") or not bucket.startswith(env["SOURCE_BUCKET_PREFIX"]) \
            or not key.startswith(RUNS) or "/../" in f"/{key}/":
        raise Refused(f"{uri} is not in a run folder of the {env['SOURCE_GROUP']} lake "
                      f"(s3://{env['SOURCE_BUCKET_PREFIX']}*/{RUNS}): nothing promoted")
    return bucket, key


def read_gate(s3: Any, env: dict[str, str]) -> list[dict[str, Any]]:
    """This stage's gate: the checks the stack wrote to ``GATE_KEY`` (``pipelines.expressions.registration_gate``),
    a non-empty list of ``{"path", "keys", "at_least", "parameter"}``. A file that is not one (truncated, empty,
    another shape) is refused, never read as "no checks": a gate that checks nothing would pass every version."""
    where = f"s3://{env['LAKE_BUCKET']}/{env['GATE_KEY']}"
    try:
        body = s3.get_object(Bucket=env["LAKE_BUCKET"], Key=env["GATE_KEY"])["Body"].read(GATE_MAX_BYTES + 1)
    except ClientError as err:
        raise Refused(f"this stage's gate {where} cannot be read ({err.response.get('Error', {}).get('Code')}): "
                      "deploy this stage's stack again; nothing promoted") from err
    checks, wrong = gate_checks(body)
    if wrong:
        raise Refused(f"this stage's gate {where} is not a gate file ({wrong}): deploy this stage's stack again; "
                      "nothing promoted")
    return checks


def gate_checks(body: bytes) -> tuple[list[dict[str, Any]], str]:
    """(the checks of a gate file's ``body``, ``""``), or ``([], what is wrong with it)``."""
    if len(body) > GATE_MAX_BYTES:
        return [], f"it is over {GATE_MAX_BYTES} bytes"
    try:
        checks = json.loads(body)
    except RecursionError:  # not a ValueError
        return [], "it is not JSON: nested too deeply"
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return [], f"it is not JSON: {text(str(err), 200)}"
    if not isinstance(checks, list):
        return [], f"it is {kind(checks)}, not a list of checks"
    if not checks:
        return [], "it has no checks: a gate that checks nothing would pass every version"
    for i, check in enumerate(checks, 1):
        problem = gate_check_problem(check)
        if problem:
            return [], f"check {i}{problem}"
    return checks, ""


def gate_check_problem(check: Any) -> str:
    """What is wrong with one check of a gate file (to follow "check N"), or ``""``."""
    if not isinstance(check, dict):
        return f" is not an object (it is {shown(check)})"

    def given(name: str) -> str:
        return shown(check[name]) if name in check else "missing"

    path, keys, at_least = check.get("path"), check.get("keys"), check.get("at_least")
    if not isinstance(path, str) or not path:
        return f"'s path is not a non-empty string (it is {given('path')})"
    if not isinstance(keys, list) or not keys or any(isinstance(k, bool) or not isinstance(k, (str, int)) for k in keys):
        return f"'s keys are not a non-empty list of names and indexes (they are {given('keys')})"
    if isinstance(at_least, bool) or not isinstance(at_least, (int, float)) or number(at_least) is None:
        return f"'s at_least is not a finite number (it is {given('at_least')})"
    if not isinstance(check.get("parameter") or "", str):
        return f"'s parameter is not a string (it is {given('parameter')})"
    return ""


def number(value: Any) -> float | None:
    """``value`` as the float the gate compares (as the pipeline's gate does), or None: not a number, not finite,
    or an integer beyond the floats."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        as_float = float(value)
    except OverflowError:
        return None
    return as_float if math.isfinite(as_float) else None


def check_gate(s3: Any, package: dict[str, Any], env: dict[str, str]) -> None:
    """Refuse the version unless its registered evaluation passes every check of this stage's gate (the failures
    named, each in a bounded text): the source stage's run may have been gated with lowered thresholds."""
    arn = package["ModelPackageArn"]
    uri = (((package.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}).get("S3Uri")
    if not uri:
        raise Refused(f"{arn} registers no ModelQuality statistics (its evaluation): this stage's gate cannot check "
                      "it, nothing promoted")
    bucket, key = in_source_runs(uri, env)
    checks = read_gate(s3, env)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read(EVALUATION_MAX_BYTES + 1)
    except ClientError as err:
        raise Refused(f"{arn}'s evaluation {uri} cannot be read ({err.response.get('Error', {}).get('Code')}): "
                      "nothing promoted") from err
    wrong = ""
    try:
        if len(body) > EVALUATION_MAX_BYTES:
            raise ValueError(f"it is over {EVALUATION_MAX_BYTES} bytes")
        evaluation = json.loads(body)
    except RecursionError:  # not a ValueError: deep nesting under the size limit
        wrong = "it is nested too deeply"
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        wrong = text(str(err), 200)
    if wrong:
        raise Refused(f"{arn}'s evaluation {uri} is not an evaluation JSON ({wrong}): nothing promoted")
    failures = []
    for check in checks:
        value: Any = evaluation
        for step in check["keys"]:
            try:
                value = value[step]
            except (KeyError, IndexError, TypeError):
                value = None
                break
        at_least = float(check["at_least"])  # finite: read_gate checked it
        threshold = f"{at_least:g}" + (f" ({text(check['parameter'])})" if check.get("parameter") else "")
        path, compared = text(check["path"], PATH_CHARS), number(value)
        if compared is None:
            what = "missing" if value is None else "an integer too large to compare" \
                if isinstance(value, int) and not isinstance(value, bool) else shown(value)
            failures.append(f"{path} is {what}, needs >= {threshold}")
        elif compared < at_least:
            failures.append(f"{path} is {compared:.4g}, needs >= {threshold}")
    if failures:
        named = "; ".join(failures[:FAILURES_SHOWN]) + (
            f" (and {len(failures) - FAILURES_SHOWN} more)" if len(failures) > FAILURES_SHOWN else "")
        raise Refused(f"{arn} does not pass {env['TARGET_GROUP']}'s gate: {named}. Nothing promoted "
                      "(the source run was gated with other thresholds); train a version that passes it")


def promoted_request(package: dict[str, Any], env: dict[str, str], prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The CreateModelPackage request for this stage, and source URI -> copy URI for every object it names.
    Every URI must be in a run folder of the source stage's lake: a version cannot make the function copy
    anything else."""
    copies: dict[str, str] = {}

    def moved(uri: str) -> str:
        _, key = in_source_runs(uri, env)
        copies[uri] = f"s3://{env['LAKE_BUCKET']}/{prefix}{key.removeprefix(RUNS)}"
        return copies[uri]

    def rewrite(node: Any) -> Any:  # every S3Uri under the metrics and baselines sections
        if isinstance(node, dict):
            return {k: (moved(v) if k == "S3Uri" and isinstance(v, str) else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    arn = package["ModelPackageArn"]
    spec = package.get("InferenceSpecification")
    if not isinstance(spec, dict) or not isinstance(spec.get("Containers"), list) or not spec["Containers"]:
        raise Refused(f"{arn} has no InferenceSpecification with containers (what to serve): nothing promoted")
    for i, container in enumerate(spec["Containers"], 1):
        missing = [name for name in ("Image", "ModelDataUrl")
                   if not isinstance(container, dict) or not isinstance(container.get(name), str) or not container[name]]
        if missing:
            other = " (its model is named by a ModelDataSource only: this function copies the model artifact a " \
                    "ModelDataUrl names)" if "ModelDataUrl" in missing and isinstance(container, dict) \
                    and container.get("ModelDataSource") else ""
            raise Refused(f"{arn}'s container {i} has no {' and no '.join(missing)}{other}: nothing promoted")
    spec = copy.deepcopy(spec)
    for container in spec["Containers"]:
        container["ModelDataUrl"] = moved(container["ModelDataUrl"])
        container["Image"] = env["SERVING_IMAGE"]  # this stage's region and repository: same pins (steps.txt)
        container.pop("ImageDigest", None)
        # What DescribeModelPackage may also say of the artifact: its source (the same object, named again: copied
        # too) and the source object's ETag, which the copy, encrypted with this stage's key, does not have.
        container.pop("ModelDataETag", None)
        for name in ("ModelDataSource", "AdditionalS3DataSource"):
            if container.get(name):
                container[name] = rewrite(container[name])
    metadata = dict(package.get("CustomerMetadataProperties") or {})
    if metadata.get(PREDICTION_BASELINE):
        metadata[PREDICTION_BASELINE] = moved(metadata[PREDICTION_BASELINE])
    metadata[PROMOTED_FROM] = package["ModelPackageArn"]
    request: dict[str, Any] = {
        "ModelPackageGroupName": env["TARGET_GROUP"], "InferenceSpecification": spec,
        "ModelPackageDescription": f"Promoted from {package['ModelPackageArn']}",
        "ModelApprovalStatus": "PendingManualApproval", "CustomerMetadataProperties": metadata,
    }
    for section in ("ModelMetrics", "DriftCheckBaselines"):
        if package.get(section):
            request[section] = rewrite(package[section])
    return request, copies


def copy_object(s3: Any, source_uri: str, target_uri: str, env: dict[str, str]) -> None:
    """A managed server-side copy (multipart for large artifacts), encrypted with this stage's key."""
    source_bucket, source_key = _split(source_uri)
    bucket, key = _split(target_uri)
    s3.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key,
            ExtraArgs={"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": env["KMS_KEY_ARN"]})  # bucket keys: the bucket default


if __name__ == "__main__":  # the delivery pipeline's read before its approval (module docstring)
    if sys.argv[1:] != ["served"]:
        sys.exit(f"usage: {sys.argv[0]} served (reads SOURCE_ENDPOINT, SOURCE_REGION, SOURCE_GROUP, SOURCE_READER_ROLE)")
    logging.basicConfig()
    served_version_number, model = served(settings())
    print(f"SERVED_VERSION={shlex.quote(served_version_number)}\nSERVED_MODEL={shlex.quote(model)}")
