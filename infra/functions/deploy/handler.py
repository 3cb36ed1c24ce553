"""Deploys an Approved model package to the Diagnosa endpoint (AWS Lambda, plain boto3).

Two EventBridge events reach it:

* ``SageMaker Model Package State Change`` (the rule matches Approved versions of this stage's
  group): the package is described again — the event is a hint, the registry is the truth — and
  refused unless it is Approved and in the expected group. Then a Model (the package's image and
  artifact, the serving code from the staged sourcedir) and an EndpointConfig (data capture to the
  lake's ``capture/`` zone, KMS) are created, named after the endpoint, the version and the time.
  The first time the endpoint is created; afterwards it is updated blue/green (canary or all at
  once) with automatic rollback on the endpoint's CloudWatch alarms.
* ``SageMaker Endpoint State Change`` to IN_SERVICE: target-tracking autoscaling on
  ``SageMakerVariantInvocationsPerInstance`` is (re)registered; registration needs an endpoint in
  service, which a freshly created one is not.

Configuration comes from environment variables set by the stack (``infra/stack.py``).
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError

log = logging.getLogger()
log.setLevel(logging.INFO)

PACKAGE_EVENT = "SageMaker Model Package State Change"
ENDPOINT_EVENT = "SageMaker Endpoint State Change"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


class Refused(Exception):
    """The event asks for something this function must not do; nothing was changed."""


def settings() -> dict[str, str]:
    return dict(os.environ)


def handler(event: dict[str, Any], context: Any = None, *, sagemaker: Any = None, autoscaling: Any = None,
            env: dict[str, str] | None = None, now: float | None = None) -> dict[str, Any]:
    env = env or settings()
    sagemaker = sagemaker or boto3.client("sagemaker")
    kind = event.get("detail-type")
    if kind == PACKAGE_EVENT:
        return deploy(event["detail"], sagemaker, env, now=time.time() if now is None else now)
    if kind == ENDPOINT_EVENT:
        detail = event.get("detail", {})
        if detail.get("EndpointName") != env["ENDPOINT_NAME"] or detail.get("EndpointStatus") != "IN_SERVICE":
            raise Refused(f"not this function's endpoint event: {json.dumps(detail)[:300]}")
        return register_autoscaling(autoscaling or boto3.client("application-autoscaling"), env)
    raise Refused(f"unexpected event type {kind!r}")


def deploy(detail: dict[str, Any], sagemaker: Any, env: dict[str, str], *, now: float) -> dict[str, Any]:
    arn = detail.get("ModelPackageArn")
    if not arn:
        raise Refused("the event names no ModelPackageArn")
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    group, status = package.get("ModelPackageGroupName"), package.get("ModelApprovalStatus")
    if group != env["MODEL_PACKAGE_GROUP"]:
        raise Refused(f"{arn} belongs to group {group!r}, not {env['MODEL_PACKAGE_GROUP']!r}")
    if status != "Approved":
        raise Refused(f"{arn} is {status}, not Approved: nothing deployed")

    endpoint = env["ENDPOINT_NAME"]
    version = package.get("ModelPackageVersion", 0)
    name = f"{endpoint}-v{version}-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}"[:63]
    [container] = package["InferenceSpecification"]["Containers"][:1] or [None]
    if container is None:
        raise Refused(f"{arn} has no inference container")
    environment = {k: v for k, v in (container.get("Environment") or {}).items() if v != ""}
    environment |= {"SAGEMAKER_PROGRAM": env["SERVING_PROGRAM"], "SAGEMAKER_SUBMIT_DIRECTORY": env["CODE_URI"],
                    "SAGEMAKER_REGION": sagemaker.meta.region_name, "SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}
    model: dict[str, Any] = {
        "ModelName": name, "ExecutionRoleArn": env["MODEL_ROLE_ARN"],
        "PrimaryContainer": {"Image": container["Image"], "ModelDataUrl": container["ModelDataUrl"],
                             "Environment": environment},
        "Tags": [{"Key": "diagnosa:model-package", "Value": arn}],
    }
    if env.get("SUBNET_IDS"):
        model["VpcConfig"] = {"Subnets": env["SUBNET_IDS"].split(","),
                              "SecurityGroupIds": env["SECURITY_GROUP_IDS"].split(",")}
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
        Tags=[{"Key": "diagnosa:model-package", "Value": arn}])

    current = _describe_endpoint(sagemaker, endpoint)
    if current is None:
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=name,
                                  Tags=[{"Key": "diagnosa:model-package", "Value": arn}])
        log.info("created endpoint %s with %s (%s)", endpoint, name, arn)
        return {"action": "created", "endpoint": endpoint, "endpoint_config": name, "model_package": arn}
    if current["EndpointStatus"] not in ("InService", "Failed"):
        # EventBridge retries the event; a deployment in progress is never interrupted.
        raise RuntimeError(f"endpoint {endpoint} is {current['EndpointStatus']}; retry once it settles")
    sagemaker.update_endpoint(EndpointName=endpoint, EndpointConfigName=name,
                              DeploymentConfig=deployment_config(env))
    log.info("updating endpoint %s to %s (%s), blue/green", endpoint, name, arn)
    return {"action": "updated", "endpoint": endpoint, "endpoint_config": name, "model_package": arn}


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


def register_autoscaling(autoscaling: Any, env: dict[str, str]) -> dict[str, Any]:
    resource = f"endpoint/{env['ENDPOINT_NAME']}/variant/{env['VARIANT_NAME']}"
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=resource, ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=int(env["MIN_INSTANCES"]), MaxCapacity=int(env["MAX_INSTANCES"]))
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


def _describe_endpoint(sagemaker: Any, name: str) -> dict[str, Any] | None:
    try:
        return sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as err:
        message = err.response.get("Error", {}).get("Message", "")
        if err.response.get("Error", {}).get("Code") == "ValidationException" and "Could not find" in message:
            return None
        raise
