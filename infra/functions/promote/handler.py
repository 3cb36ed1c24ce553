"""Promotes an Approved model version of an earlier stage into this stage (AWS Lambda, plain boto3).

The delivery pipeline invokes it after its manual approval, once this stage's stacks are deployed
(``{}``: the newest Approved version of the source group; ``{"version": N}``: that one). It

1. describes the source version (across accounts and regions: the source stage's group policy, lake
   bucket policy and key policy let this function's role read) and refuses one that is not Approved;
2. does nothing if that version was promoted already (a version of this stage's group records it in
   ``CustomerMetadataProperties["diagnosa:promoted-from"]``), so re-running the pipeline is harmless;
3. copies the model artifact and every baseline the version names, server-side, from the source lake's
   run folders into this lake's ``artifacts/runs/promoted/<source group>-v<N>/`` (SSE-KMS with this
   stage's key): this stage then depends on nothing of the source stage;
4. registers the version in this stage's group with the copies' URIs and this stage's serving image,
   then approves it — the approval event makes this stage's deploy function deploy it (canary, alarms).

Configuration comes from environment variables set by the stack (``infra/stack.py``).
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any

import boto3

log = logging.getLogger()
log.setLevel(logging.INFO)

PROMOTED_FROM = "diagnosa:promoted-from"
PREDICTION_BASELINE = "diagnosa:prediction-baseline"
RUNS = "artifacts/runs/"


class Refused(Exception):
    """The request names something this function must not promote; nothing was changed."""


def settings() -> dict[str, str]:
    return dict(os.environ)


def handler(event: dict[str, Any], context: Any = None, *, source: Any = None, target: Any = None, s3: Any = None,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    env = env or settings()
    source = source or boto3.client("sagemaker", region_name=env["SOURCE_REGION"])
    target = target or boto3.client("sagemaker")
    s3 = s3 or boto3.client("s3")
    version = event.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise Refused(f"version must be a positive integer, got {version!r}")
    arn = source_version(source, env, version)
    package = source.describe_model_package(ModelPackageName=arn)
    if package.get("ModelApprovalStatus") != "Approved":
        raise Refused(f"{arn} is {package.get('ModelApprovalStatus')}, not Approved in {env['SOURCE_GROUP']}: "
                      "nothing promoted")
    done = already_promoted(target, env["TARGET_GROUP"], arn)
    if done:
        described = target.describe_model_package(ModelPackageName=done)
        if described.get("ModelApprovalStatus") == "PendingManualApproval":
            # registered by an earlier attempt whose approval failed: finish it (never re-approve a Rejected one)
            target.update_model_package(ModelPackageArn=done, ModelApprovalStatus="Approved",
                                        CustomerMetadataProperties=described.get("CustomerMetadataProperties") or {},
                                        ApprovalDescription=f"promoted from {arn} by the delivery pipeline after its "
                                                            "manual approval (completed by a retry)")
            log.info("%s was registered already as %s; approved it now", arn, done)
            return {"status": "promoted", "source": arn, "target": done, "copied": []}
        log.info("%s was promoted already as %s", arn, done)
        return {"status": "already promoted", "source": arn, "target": done}
    prefix = f"{env['PROMOTED_PREFIX']}{env['SOURCE_GROUP']}-v{package.get('ModelPackageVersion')}/"
    request, copies = promoted_request(package, env, prefix)
    for source_uri, target_uri in copies.items():
        copy_object(s3, source_uri, target_uri, env)
    created = target.create_model_package(**request)["ModelPackageArn"]
    # The metadata is stated again with the approval: the promotion record must survive the update whatever
    # the service does with properties an update leaves out.
    target.update_model_package(ModelPackageArn=created, ModelApprovalStatus="Approved",
                                CustomerMetadataProperties=request["CustomerMetadataProperties"],
                                ApprovalDescription=f"promoted from {arn} by the delivery pipeline after its "
                                                    "manual approval")
    log.info("promoted %s as %s (%d objects copied)", arn, created, len(copies))
    return {"status": "promoted", "source": arn, "target": created, "copied": sorted(copies.values())}


def source_group(env: dict[str, str]) -> str:
    """The source group by ARN when it is in another account (cross-account calls need the ARN)."""
    if not env.get("SOURCE_ACCOUNT"):
        return env["SOURCE_GROUP"]
    partition = "aws-cn" if env["SOURCE_REGION"].startswith("cn-") else "aws"
    return (f"arn:{partition}:sagemaker:{env['SOURCE_REGION']}:{env['SOURCE_ACCOUNT']}:model-package-group/"
            f"{env['SOURCE_GROUP']}")


def source_version(sagemaker: Any, env: dict[str, str], version: int | None) -> str:
    """ARN of the version to promote: ``version``, or the newest Approved one of the source group."""
    listed = [p for page in sagemaker.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName=source_group(env), SortBy="CreationTime", SortOrder="Descending")
        for p in page.get("ModelPackageSummaryList", [])]
    if version is not None:
        match = [p for p in listed if p.get("ModelPackageVersion") == version]
        if not match:
            raise Refused(f"{env['SOURCE_GROUP']} has no version {version}")
        return match[0]["ModelPackageArn"]
    approved = [p for p in listed if p.get("ModelApprovalStatus") == "Approved"]
    if not approved:
        raise Refused(f"{env['SOURCE_GROUP']} has no Approved version to promote")
    return max(approved, key=lambda p: p.get("ModelPackageVersion", 0))["ModelPackageArn"]


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


def promoted_request(package: dict[str, Any], env: dict[str, str], prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The CreateModelPackage request for this stage, and source URI -> copy URI for every object it names.
    Every URI must be in a run folder of the source stage's lake: a version cannot make the function copy
    anything else."""
    copies: dict[str, str] = {}

    def moved(uri: str) -> str:
        bucket, key = _split(uri)
        if not uri.startswith("s3://") or not bucket.startswith(env["SOURCE_BUCKET_PREFIX"]) \
                or not key.startswith(RUNS) or "/../" in f"/{key}/":
            raise Refused(f"{uri} is not in a run folder of the {env['SOURCE_GROUP']} lake "
                          f"(s3://{env['SOURCE_BUCKET_PREFIX']}*/{RUNS}): nothing promoted")
        copies[uri] = f"s3://{env['LAKE_BUCKET']}/{prefix}{key.removeprefix(RUNS)}"
        return copies[uri]

    def rewrite(node: Any) -> Any:  # every S3Uri under the metrics and baselines sections
        if isinstance(node, dict):
            return {k: (moved(v) if k == "S3Uri" and isinstance(v, str) else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    spec = copy.deepcopy(package["InferenceSpecification"])
    for container in spec["Containers"]:
        container["ModelDataUrl"] = moved(container["ModelDataUrl"])
        container["Image"] = env["SERVING_IMAGE"]  # this stage's region and repository: same pins (steps.txt)
        container.pop("ImageDigest", None)
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
