"""A stage's new endpoint_instance_type reaches the endpoint: SageMaker refuses an UpdateEndpoint that changes the
instance type of (or drops) a variant registered with Application Auto Scaling (a new model alone is allowed), so
the deploy function deregisters that variant's scalable target just before the update, and the IN_SERVICE event
that ends it registers the target again. moto does not enforce the refusal: the order of the calls is checked."""
from __future__ import annotations

import boto3
import pytest
from aws_calls import error, on_call, update_endpoints
from botocore.exceptions import ClientError
from deploy_env import ENV, IN_SERVICE, REGION, dev_stage
from moto.sagemaker.models import sagemaker_backends

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
RESOURCE = "endpoint/diagnosa-dev/variant/AllTraffic"
LARGER = {**ENV, "INSTANCE_TYPE": "ml.m5.xlarge"}


@pytest.fixture
def aws():
    with dev_stage():
        yield boto3.client("sagemaker", region_name=REGION), boto3.client("application-autoscaling", region_name=REGION)


def approval(sm, time):
    arn = sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://lake/artifacts/runs/x/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    return {"detail-type": "SageMaker Model Package State Change", "time": time,
            "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "diagnosa-dev", "ModelApprovalStatus": "Approved"}}


def scaling(autoscaling):
    """(targets, policies) registered on the variant now."""
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    return [t["ResourceId"] for t in targets], [p["ResourceId"] for p in policies]


def serving_and_scaled(sm, autoscaling, deploy_fn):
    """The endpoint created, InService and auto-scaled (its IN_SERVICE event registered the target)."""
    assert deploy_fn.handler(approval(sm, "2025-01-01T00:00:00Z"), sagemaker=sm, autoscaling=autoscaling,
                             env=ENV, now=0)["action"] == "created"
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=ENV, now=60)
    assert scaling(autoscaling) == ([RESOURCE], [RESOURCE])


def recorded(sm, autoscaling, update=None):
    """The calls that matter, in order, heard at botocore's before-call (the clients validated and serialized them).
    UpdateEndpoint, which moto lacks, is answered there (aws_calls.py), recording the scalable targets registered when
    it comes; ``update(request)`` may answer it otherwise. (On AWS deregistering a target deletes its scaling
    policies too; moto keeps them, so only targets.)"""
    calls: list = []
    for operation, name in (("DeregisterScalableTarget", "deregister"), ("RegisterScalableTarget", "register")):
        on_call(autoscaling, operation, lambda request, name=name: calls.append((name, request["ResourceId"])))

    def update_endpoint(request):
        calls.append(("update", request["EndpointConfigName"], scaling(autoscaling)[0]))
        return update(request) if update else None

    update_endpoints(sm, then=update_endpoint)
    return calls


def serve(sm, config):
    """The update ended: the endpoint InService on ``config`` (moto has no UpdateEndpoint)."""
    sm.delete_endpoint(EndpointName="diagnosa-dev")
    sm.create_endpoint(EndpointName="diagnosa-dev", EndpointConfigName=config)


def test_a_new_model_leaves_the_autoscaling_alone_a_new_instance_type_deregisters_it_first_and_in_service_scales_it(
        aws, deploy_fn):
    sm, autoscaling = aws
    serving_and_scaled(sm, autoscaling, deploy_fn)
    calls = recorded(sm, autoscaling)
    # A new model on the same instance type: SageMaker allows the update, the target is left alone.
    same = deploy_fn.handler(approval(sm, "2025-01-02T00:00:00Z"), sagemaker=sm, autoscaling=autoscaling,
                             env=ENV, now=3600)
    assert same["action"] == "updated" and "deregistered" not in same
    assert calls == [("update", same["endpoint_config"], [RESOURCE])]
    assert scaling(autoscaling) == ([RESOURCE], [RESOURCE])
    serve(sm, same["endpoint_config"])
    calls.clear()

    # The stage's endpoint_instance_type changed: the next approval deregisters the target, then updates.
    result = deploy_fn.handler(approval(sm, "2025-01-03T00:00:00Z"), sagemaker=sm, autoscaling=autoscaling,
                               env=LARGER, now=7200)
    assert result["action"] == "updated" and result["deregistered"] == [RESOURCE]
    # deregistered first: no scalable target when UpdateEndpoint is called
    assert calls == [("deregister", RESOURCE), ("update", result["endpoint_config"], [])]
    config = sm.describe_endpoint_config(EndpointConfigName=result["endpoint_config"])
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.xlarge"

    # The update ends: the endpoint InService on the new config; its IN_SERVICE event registers the target again.
    serve(sm, result["endpoint_config"])
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=LARGER, now=10800)
    assert calls[-1] == ("register", RESOURCE)
    [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == RESOURCE and (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    [policy] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 200.0


def test_a_dropped_variant_is_deregistered_before_the_update(aws, deploy_fn):
    sm, autoscaling = aws
    serving_and_scaled(sm, autoscaling, deploy_fn)
    calls = recorded(sm, autoscaling)
    result = deploy_fn.handler(approval(sm, "2025-01-02T00:00:00Z"), sagemaker=sm, autoscaling=autoscaling,
                               env={**ENV, "VARIANT_NAME": "Blue"}, now=3600)
    assert result["deregistered"] == [RESOURCE]
    assert calls == [("deregister", RESOURCE), ("update", result["endpoint_config"], [])]


def test_a_run_that_dies_after_deregistering_is_retried_and_the_retry_updates(aws, deploy_fn):
    sm, autoscaling = aws
    serving_and_scaled(sm, autoscaling, deploy_fn)
    died = []

    def dies_once(request):  # the function timed out after deregistering, before UpdateEndpoint took effect
        if not died:
            died.append(request)
            raise TimeoutError("Task timed out")

    calls = recorded(sm, autoscaling, update=dies_once)
    event = approval(sm, "2025-01-02T00:00:00Z")
    with pytest.raises(TimeoutError):
        deploy_fn.handler(event, sagemaker=sm, autoscaling=autoscaling, env=LARGER, now=3600)
    # Lambda's retry of the same event: the approval was not recorded as acted on, nothing is left to deregister
    result = deploy_fn.handler(event, sagemaker=sm, autoscaling=autoscaling, env=LARGER, now=3660)
    assert result["action"] == "updated" and "deregistered" not in result
    assert [c[0] for c in calls] == ["deregister", "update", "update"]
    assert calls[-1][2] == []


def test_a_refused_update_gives_the_serving_variant_its_autoscaling_back(aws, deploy_fn):
    sm, autoscaling = aws
    serving_and_scaled(sm, autoscaling, deploy_fn)

    def refused(request):  # SageMaker's answer to an update it will not start
        return error("ValidationException", "refused")

    calls = recorded(sm, autoscaling, update=refused)
    with pytest.raises(ClientError, match="refused"):
        deploy_fn.handler(approval(sm, "2025-01-02T00:00:00Z"), sagemaker=sm, autoscaling=autoscaling,
                          env=LARGER, now=3600)
    assert [c[0] for c in calls] == ["deregister", "update", "register"]  # the run still fails (Lambda retries)
    assert scaling(autoscaling) == ([RESOURCE], [RESOURCE])


def test_a_version_kept_during_a_deployment_is_deployed_at_in_service_with_the_same_deregistration(
        aws, deploy_fn):
    """The IN_SERVICE run registers the target, then deploys the version kept pending: that update too changes the
    instance type, so the target it has just registered is deregistered before it."""
    sm, autoscaling = aws
    serving_and_scaled(sm, autoscaling, deploy_fn)
    endpoint = sagemaker_backends["123456789012"][REGION].endpoints["diagnosa-dev"]
    endpoint.endpoint_status = "Updating"  # another deployment under way: the approval is kept
    kept = deploy_fn.handler(approval(sm, "2025-01-02T00:00:00Z"), sagemaker=sm, autoscaling=autoscaling,
                             env=LARGER, now=3600)
    assert kept["action"] == "deferred"
    calls = recorded(sm, autoscaling)
    endpoint.endpoint_status = "InService"
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=LARGER, now=4000)
    assert result["pending"]["action"] == "updated" and result["pending"]["deregistered"] == [RESOURCE]
    assert calls == [("register", RESOURCE), ("deregister", RESOURCE),
                     ("update", result["pending"]["endpoint_config"], [])]
