"""The deploy function under moto: create first, blue/green update after, refuse what is not Approved;
target-tracking autoscaling. (The retrain function: test_infra_retraining.py.)"""
from __future__ import annotations

import boto3
import pytest
from aws_calls import update_endpoints
from deploy_env import (
    ENV,
    REGION,
    create_lake,
    differences,
    function_environment,
)
from moto import mock_aws

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"


@pytest.fixture
def sm():
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        client.create_model_package_group(ModelPackageGroupName="diagnosa-dev")
        client.create_model_package_group(ModelPackageGroupName="other")
        create_lake()
        yield client


def package(sm, status="Approved", group="diagnosa-dev", image=IMAGE):
    arn = sm.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": image, "ModelDataUrl": "s3://lake/artifacts/runs/x/champion/model.tar.gz",
                                                "Environment": {"SAGEMAKER_PROGRAM": "", "SAGEMAKER_REGION": REGION}}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    return arn


def approved_event(arn):
    return {"detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
            "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "diagnosa-dev", "ModelApprovalStatus": "Approved"}}


def test_first_approval_creates_the_endpoint_with_data_capture(sm, deploy_fn):
    arn = package(sm)
    result = deploy_fn.handler(approved_event(arn), sagemaker=sm, env=ENV, now=0)
    assert result["action"] == "created"
    endpoint = sm.describe_endpoint(EndpointName="diagnosa-dev")
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["EndpointConfigName"].startswith("diagnosa-dev-v1-19700101")
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["InitialSamplingPercentage"] == 100
    assert capture["DestinationS3Uri"] == "s3://lake/capture" and capture["KmsKeyId"] == ENV["KMS_KEY_ARN"]
    assert [o["CaptureMode"] for o in capture["CaptureOptions"]] == ["Input", "Output"]
    assert config["KmsKeyId"] == ENV["KMS_KEY_ARN"]
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic" and variant["InstanceType"] == "ml.m5.large"
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["ExecutionRoleArn"] == ENV["MODEL_ROLE_ARN"]
    container = model["PrimaryContainer"]
    assert container["Image"] == IMAGE and container["ModelDataUrl"].endswith("champion/model.tar.gz")
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "serve_endpoint.py"
    assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"  # the artifact's code/


@pytest.mark.parametrize("registered, served", [
    ("serve_other.py", "serve_other.py"),  # the version's own registration decides
    ("", "serve_endpoint.py"),  # registered without one (by hand): the artifact layout's own script
])
def test_the_registered_versions_program_serves_and_the_function_has_no_setting_of_its_own(
        sm, deploy_fn, monkeypatch, registered, served):
    """serving_program was a stage setting (SERVING_PROGRAM) that every pipeline-registered version overrode: the
    function now has no such variable, serves the program the version names, and falls back on the script training
    writes into the artifact's code/ (diagnosa/serving_code.py), the one the pipeline registers."""
    from diagnosa.serving_code import SERVING_PROGRAM

    assert "SERVING_PROGRAM" not in ENV and deploy_fn.SERVING_PROGRAM == SERVING_PROGRAM
    arn = sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://lake/artifacts/runs/x/model.tar.gz",
                                                "Environment": {"SAGEMAKER_PROGRAM": registered}}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    requests = recorded_create_model(sm, monkeypatch)
    assert deploy_fn.handler(approved_event(arn), sagemaker=sm, env=ENV, now=0)["action"] == "created"
    [request] = requests
    assert request["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == served


BAKED = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:27f74652296f2703"


@pytest.mark.parametrize("registered, served", [
    (IMAGE, BAKED),  # AWS's image (registered before images were baked): would pip-install from no index
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-other:27f74652296f2703", BAKED),
    (BAKED.replace(":27f7", ":0ld1"), BAKED.replace(":27f7", ":0ld1")),  # an earlier baked image: its own pins
    (BAKED.split(":")[0] + "@sha256:" + "a" * 64, BAKED.split(":")[0] + "@sha256:" + "a" * 64),
])
def test_with_baked_images_models_run_an_image_of_the_stages_repository(sm, deploy_fn, registered, served):
    env = {**ENV, "SERVING_IMAGE": BAKED}
    result = deploy_fn.handler(approved_event(package(sm, image=registered)), sagemaker=sm, env=env, now=0)
    config = sm.describe_endpoint_config(EndpointConfigName=result["endpoint_config"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Image"] == served


def recorded_create_model(sm, monkeypatch):
    """CreateModel requests as the function sends them (moto stores the model but drops EnableNetworkIsolation)."""
    requests, create = [], sm.create_model
    monkeypatch.setattr(sm, "create_model", lambda **kw: requests.append(kw) or create(**kw))
    return requests


@pytest.mark.parametrize("registered", [IMAGE, BAKED.replace(":27f7", ":0ld1")])
def test_with_baked_images_the_model_runs_network_isolated(sm, deploy_fn, monkeypatch, registered):
    requests = recorded_create_model(sm, monkeypatch)
    deploy_fn.handler(approved_event(package(sm, image=registered)), sagemaker=sm, env={**ENV, "SERVING_IMAGE": BAKED},
                      now=0)
    [request] = requests  # botocore validated it on the way to moto
    assert request["EnableNetworkIsolation"] is True
    assert request["PrimaryContainer"]["Image"].startswith(BAKED.split(":")[0] + ":")


def test_on_aws_images_the_model_keeps_its_network_to_install_the_pins(sm, deploy_fn, monkeypatch):
    requests = recorded_create_model(sm, monkeypatch)
    deploy_fn.handler(approved_event(package(sm)), sagemaker=sm, env=ENV, now=0)
    [request] = requests
    assert "EnableNetworkIsolation" not in request and request["PrimaryContainer"]["Image"] == IMAGE


def test_later_approval_updates_blue_green_with_rollback_alarms(sm, deploy_fn):
    deploy_fn.handler(approved_event(package(sm)), sagemaker=sm, env=ENV, now=0)
    # moto has no UpdateEndpoint: answered at botocore's before-call, after the client validated and serialized the
    # request (a parameter SageMaker does not take, or of the wrong type, fails the call here as on AWS).
    updates = update_endpoints(sm)
    second = package(sm)
    result = deploy_fn.handler(approved_event(second), sagemaker=sm, env=ENV, now=3600)
    assert result["action"] == "updated"
    [request] = updates
    assert request["EndpointName"] == "diagnosa-dev"
    assert request["EndpointConfigName"] == result["endpoint_config"] != sm.describe_endpoint(
        EndpointName="diagnosa-dev")["EndpointConfigName"]
    sm.describe_endpoint_config(EndpointConfigName=request["EndpointConfigName"])  # created before the update
    policy = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {"Type": "CANARY", "WaitIntervalInSeconds": 600,
                                                     "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}
    assert request["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "diagnosa-dev-5xx"}, {"AlarmName": "diagnosa-dev-model-latency"}]}


def documented_package_event(arn: str, version: int, updated: list[str]) -> dict:
    """AWS's sample "SageMaker Model Package State Change" event (SageMaker Developer Guide, "Events that Amazon
    SageMaker AI sends to Amazon EventBridge"), its account, region, group and ARN the dev stage's, its approval
    status Approved, and the fields it says were updated."""
    return {
        "version": "0", "id": "844e2571-85d4-695f-b930-0153b71dcb42", "detail-type": "SageMaker Model Package State Change",
        "source": "aws.sagemaker", "account": "123456789012", "time": "1970-01-01T03:00:00Z", "region": REGION,
        "resources": [arn],
        "detail": {
            "ModelPackageGroupName": "diagnosa-dev", "ModelPackageVersion": version, "ModelPackageArn": arn,
            "CreationTime": "1970-01-01T00:00:00Z",
            "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://lake/artifacts/runs/x/champion/model.tar.gz"}],
                                       "SupportedContentTypes": ["application/json"],
                                       "SupportedResponseMIMETypes": ["application/json"]},
            "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "CertifyForMarketplace": False, "ModelApprovalStatus": "Approved",
            "ModelLifeCycle": {"Stage": "Development", "StageStatus": "Approved", "StageDescription": "StageDescription"},
            "UpdatedModelPackageFields": updated, "LastModifiedTime": "1970-01-01T03:00:00Z"}}


@pytest.mark.parametrize("updated, action", [
    (["ModelLifeCycle"], "ignored"), (["CustomerMetadataProperties", "sourceUri"], "ignored"),
    (["ModelApprovalStatus"], "updated"), (["ApprovalDescription"], "updated"),
], ids=["life-cycle", "metadata", "approval", "approved-again"])
def test_an_edit_of_an_older_approved_version_is_no_approval_and_does_not_roll_the_endpoint_back(sm, deploy_fn,
                                                                                                 updated, action):
    # SageMaker sends this event for an edit of a version too (AWS's sample: its ModelLifeCycle), and the version
    # stays Approved: taken for an approval, an edit of v1 redeployed it over v2, which served.
    first = package(sm)
    deploy_fn.handler(approved_event(first), sagemaker=sm, env=ENV, now=0)
    updates = update_endpoints(sm)
    deploy_fn.handler({**approved_event(package(sm)), "time": "1970-01-01T01:00:00Z"}, sagemaker=sm, env=ENV,
                      now=3600)
    result = deploy_fn.handler(documented_package_event(first, 1, updated), sagemaker=sm, env=ENV, now=3 * 3600)
    assert result["action"] == action and result["model_package"] == first
    assert len(updates) == (1 if action == "ignored" else 2)  # the approval of v2, and v1's only when approved again
    if action == "ignored":
        assert result["reason"] == f"an edit of {', '.join(updated)}, not an approval"


def test_all_at_once_traffic_shifting(deploy_fn):
    config = deploy_fn.deployment_config({**ENV, "TRAFFIC_SHIFTING": "ALL_AT_ONCE"})
    assert config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE",
                                                                              "WaitIntervalInSeconds": 600}


@pytest.mark.parametrize("status", ["PendingManualApproval", "Rejected"])
def test_a_package_that_is_not_approved_is_refused_and_nothing_changes(sm, deploy_fn, status):
    arn = package(sm, status=status)
    with pytest.raises(deploy_fn.Refused, match="not Approved"):
        deploy_fn.handler(approved_event(arn), sagemaker=sm, env=ENV, now=0)  # the event lies; the registry decides
    assert sm.list_models()["Models"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_endpoints()["Endpoints"] == []


def test_a_package_of_another_group_is_refused(sm, deploy_fn):
    arn = package(sm, group="other")
    with pytest.raises(deploy_fn.Refused, match="belongs to group 'other'"):
        deploy_fn.handler(approved_event(arn), sagemaker=sm, env=ENV, now=0)
    assert sm.list_models()["Models"] == []


def test_endpoint_in_service_registers_target_tracking(deploy_fn):
    with mock_aws():
        autoscaling = boto3.client("application-autoscaling", region_name=REGION)
        event = {"detail-type": "SageMaker Endpoint State Change",
                 "detail": {"EndpointName": "diagnosa-dev", "EndpointStatus": "IN_SERVICE"}}
        sagemaker = boto3.client("sagemaker", region_name=REGION)  # no endpoint yet: no pending approval to deploy
        create_lake()
        deploy_fn.handler(event, sagemaker=sagemaker, autoscaling=autoscaling, env=ENV)
        [target] = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        assert target["ResourceId"] == "endpoint/diagnosa-dev/variant/AllTraffic"
        assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)  # the dev stage's defaults
        [policy] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert policy["PolicyType"] == "TargetTrackingScaling" and tracking["TargetValue"] == 200.0
        assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
        other = {"detail-type": "SageMaker Endpoint State Change",
                 "detail": {"EndpointName": "someone-else", "EndpointStatus": "IN_SERVICE"}}
        with pytest.raises(deploy_fn.Refused):
            deploy_fn.handler(other, sagemaker=object(), autoscaling=autoscaling, env=ENV)


# ------------------------------------------------------------------------------------------ ENV is the stack's

def test_the_function_tests_run_the_deploy_function_with_the_environment_the_stack_gives_it(dev, cfn_text):
    """ENV (deploy_env.py) was a copy nothing compared: a variable renamed in infra/stack.py (CANARY_PERCENT) left
    every function test green while the function would fail on AWS, and ENV lacked LAKE_BUCKET, so the tests ran
    the path without baselines, which AWS never takes."""
    synthesized = function_environment(dev, cfn_text, "diagnosa-dev-deploy")
    assert differences(synthesized, ENV) == []
    assert synthesized["LAKE_BUCKET"].startswith("<Ref:") and synthesized["CAPTURE_URI"] == (
        f"s3://{synthesized['LAKE_BUCKET']}/capture")  # the stack's one lake, which the function tests create


def test_the_environment_comparison_finds_a_renamed_variable_a_changed_value_and_a_token_given_two_values():
    synthesized = {"LAKE_BUCKET": "<Ref:Lake>", "CAPTURE_URI": "s3://<Ref:Lake>/capture", "CANARY_PERCENT": "10"}
    assert differences(synthesized, {"LAKE_BUCKET": "lake", "CAPTURE_URI": "s3://lake/capture",
                                     "CANARY_PERCENT": "10"}) == []
    assert differences(synthesized, {"LAKE_BUCKET": "lake", "CAPTURE_URI": "s3://lake/capture", "CANARY_PCT": "10"})
    assert differences(synthesized, {"LAKE_BUCKET": "lake", "CAPTURE_URI": "s3://lake/capture",
                                     "CANARY_PERCENT": "20"}) == ["CANARY_PERCENT: the tests say '20', the stack '10'"]
    assert differences(synthesized, {"LAKE_BUCKET": "lake", "CAPTURE_URI": "s3://other/capture",
                                     "CANARY_PERCENT": "10"}) == [
        "LAKE_BUCKET: <Ref:Lake> stands for 'lake' here, 'other' elsewhere"]
