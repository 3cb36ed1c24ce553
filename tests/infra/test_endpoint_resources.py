"""What the deploy function creates, answered for: every resource tagged, removed when the stack is deleted
(the custom resource), and differences from the stage's settings reported (EndpointDrift). The functions'
own code runs under moto (SageMaker, Application Auto Scaling, CloudWatch); CloudFormation's response URL
is a local HTTP server."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import boto3
import pytest
from aws_calls import error, on_call
from deploy_env import (
    ENV,
    IN_SERVICE,
    REGION,
    dev_stage,
    differences,
    function_environment,
)

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
STACK_TAGS = {"project": "diagnosa", "stage": "dev", "data-classification": "phi"}


@pytest.fixture
def aws():
    with dev_stage():
        yield (boto3.client("sagemaker", region_name=REGION), boto3.client("application-autoscaling", region_name=REGION),
               boto3.client("cloudwatch", region_name=REGION))


def approve(sm, deploy_fn, now=0, env=ENV):
    arn = sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://lake/artifacts/runs/x/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    event = {"detail-type": "SageMaker Model Package State Change",
             "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "diagnosa-dev", "ModelApprovalStatus": "Approved"}}
    return arn, deploy_fn.handler(event, sagemaker=sm, env=env, now=now)


def tags(sm, arn):
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def test_everything_the_deploy_function_creates_is_tagged(aws, deploy_fn):
    sm, autoscaling, _ = aws
    arn, result = approve(sm, deploy_fn)
    expected = {**STACK_TAGS, "diagnosa:managed-by": "diagnosa-dev-deploy", "diagnosa:model-package": arn}
    endpoint = sm.describe_endpoint(EndpointName="diagnosa-dev")
    config = sm.describe_endpoint_config(EndpointConfigName=result["endpoint_config"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    for resource in (config["EndpointConfigArn"], model["ModelArn"]):
        assert tags(sm, resource) == expected
    # the endpoint also keeps the approval it acts on, to order the events that follow
    assert tags(sm, endpoint["EndpointArn"]) == {**expected, "diagnosa:latest-approval": "1970-01-01T00:00:00Z v1"}
    # The scalable target: moto does not keep its tags, so the request the function sends is recorded and
    # checked against botocore's shape (Application Auto Scaling takes tags as a map).
    from botocore.validate import ParamValidator

    sent = []
    register = autoscaling.register_scalable_target
    autoscaling.register_scalable_target = lambda **request: sent.append(request) or register(**request)
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=ENV)
    [request] = sent
    assert request["Tags"] == {**STACK_TAGS, "diagnosa:managed-by": "diagnosa-dev-deploy"}
    shape = autoscaling.meta.service_model.operation_model("RegisterScalableTarget").input_shape
    assert not ParamValidator().validate(request, shape).has_errors()


class _CloudFormation(BaseHTTPRequestHandler):
    """The pre-signed response URL: records what the function PUTs."""
    received: list = []

    def do_PUT(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers.get("Content-Type"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def response_url():
    _CloudFormation.received = []
    server = HTTPServer(("127.0.0.1", 0), _CloudFormation)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/response", _CloudFormation.received
    server.shutdown()


def cfn_event(kind, url):
    return {"RequestType": kind, "ResponseURL": url, "RequestId": "r-1",
            "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/Diagnosa-dev/1",
            "LogicalResourceId": "EndpointResources", "ResourceType": "Custom::DiagnosaEndpointResources",
            "ResourceProperties": {"EndpointName": "diagnosa-dev"}}


def test_stack_deletion_removes_what_the_deploy_function_made_and_nothing_else(aws, deploy_fn, response_url):
    sm, autoscaling, _ = aws
    url, received = response_url
    approve(sm, deploy_fn, now=0)
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=ENV)
    # a second version's config and model (a blue/green update leaves the old ones behind)
    second = sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://lake/artifacts/runs/y/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    # made before the managed-by tag existed (the package tag only), by hand, and another stage's
    sm.create_model(ModelName="diagnosa-dev-v2-19700101010000", ExecutionRoleArn=ENV["MODEL_ROLE_ARN"],
                    PrimaryContainer={"Image": IMAGE}, Tags=[{"Key": "diagnosa:model-package", "Value": second}])
    sm.create_model(ModelName="diagnosa-dev-v9-by-hand", ExecutionRoleArn=ENV["MODEL_ROLE_ARN"],
                    PrimaryContainer={"Image": IMAGE})
    sm.create_model(ModelName="other-v1-x", ExecutionRoleArn=ENV["MODEL_ROLE_ARN"], PrimaryContainer={"Image": IMAGE},
                    Tags=[{"Key": "diagnosa:managed-by", "Value": "diagnosa-dev-deploy"}])

    for kind in ("Create", "Update"):  # nothing to do but answer
        assert deploy_fn.resources(cfn_event(kind, url), sagemaker=sm, autoscaling=autoscaling, env=ENV)["status"] == "SUCCESS"
    assert sm.list_endpoints()["Endpoints"]

    result = deploy_fn.resources(cfn_event("Delete", url), sagemaker=sm, autoscaling=autoscaling, env=ENV)
    assert result["status"] == "SUCCESS"
    assert result["removed"]["endpoint"] and result["removed"]["scalable_target"]
    assert sorted(result["removed"]["models"]) == ["diagnosa-dev-v1-19700101000000", "diagnosa-dev-v2-19700101010000"]
    assert result["removed"]["endpoint_configs"] == ["diagnosa-dev-v1-19700101000000"]
    assert result["left"] == ["model diagnosa-dev-v9-by-hand"]
    assert sm.list_endpoints()["Endpoints"] == [] and sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == ["diagnosa-dev-v9-by-hand", "other-v1-x"]
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    # CloudFormation heard SUCCESS three times, always for the same physical id, with no content type
    assert [r["Status"] for _, r in received] == ["SUCCESS"] * 3
    assert {r["PhysicalResourceId"] for _, r in received} == {"diagnosa-dev-serving-resources"}
    assert {r["RequestId"] for _, r in received} == {"r-1"} and {ct for ct, _ in received} == {""}
    # deleting again (nothing left of ours) still succeeds
    again = deploy_fn.resources(cfn_event("Delete", url), sagemaker=sm, autoscaling=autoscaling, env=ENV)
    assert again["removed"] == {"scalable_target": False, "endpoint": False, "endpoint_configs": [], "models": []}


def test_a_failed_removal_is_reported_failed_to_cloudformation(aws, deploy_fn, response_url):
    sm, autoscaling, _ = aws
    url, received = response_url
    approve(sm, deploy_fn)
    # The role may not delete the endpoint (a policy changed by hand): SageMaker's answer, which moto never gives,
    # at botocore's before-call; the client raises it as from the service.
    denied = ("User: arn:aws:sts::123456789012:assumed-role/diagnosa-dev-endpoint-resources-function/x is not "
              "authorized to perform: sagemaker:DeleteEndpoint on resource: "
              "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/diagnosa-dev")
    on_call(sm, "DeleteEndpoint", lambda request: error("AccessDeniedException", denied))
    result = deploy_fn.resources(cfn_event("Delete", url), sagemaker=sm, autoscaling=autoscaling, env=ENV)
    assert result["status"] == "FAILED"
    [(_, answer)] = received
    assert answer["Status"] == "FAILED" and answer["Reason"].startswith(
        "ClientError: An error occurred (AccessDeniedException) when calling the DeleteEndpoint operation: User: ")
    assert sm.list_endpoints()["Endpoints"], "nothing removed behind CloudFormation's back: the endpoint is still there"


@pytest.mark.parametrize("without", ["StackId", "ResponseURL", "RequestId", "LogicalResourceId"])
def test_a_delete_that_cannot_be_answered_removes_nothing(aws, deploy_fn, response_url, without):
    """Not CloudFormation's request (a manual invocation): a Delete without StackId removed the endpoint, then failed
    with KeyError: 'StackId' before answering anyone."""
    sm, autoscaling, _ = aws
    url, received = response_url
    approve(sm, deploy_fn)
    event = {k: v for k, v in cfn_event("Delete", url).items() if k != without}
    with pytest.raises(deploy_fn.Refused, match=f"not a CloudFormation custom resource request: no {without} "):
        deploy_fn.resources(event, sagemaker=sm, autoscaling=autoscaling, env=ENV)
    assert sm.list_endpoints()["Endpoints"] and received == []


def test_a_request_of_another_kind_is_answered_failed_and_removes_nothing(aws, deploy_fn, response_url):
    sm, autoscaling, _ = aws
    url, received = response_url
    approve(sm, deploy_fn)
    result = deploy_fn.resources(cfn_event("Delete\ud800", url), sagemaker=sm, autoscaling=autoscaling, env=ENV)
    assert result["status"] == "FAILED"
    [(_, answer)] = received
    assert answer["Status"] == "FAILED" and answer["Reason"] == (
        "RequestType 'Delete\\ud800' is none of Create, Update, Delete: nothing done")
    assert sm.list_endpoints()["Endpoints"]


def drift(deploy_fn, aws, env=ENV):
    sm, autoscaling, cloudwatch = aws
    return deploy_fn.resources({"reason": "drift"}, sagemaker=sm, autoscaling=autoscaling, cloudwatch=cloudwatch, env=env)


def published(cloudwatch):
    points = cloudwatch.get_metric_statistics(
        Namespace="Diagnosa/Monitoring", MetricName="EndpointDrift",
        Dimensions=[{"Name": "EndpointName", "Value": "diagnosa-dev"}],
        StartTime="2000-01-01", EndTime="2100-01-01", Period=86400, Statistics=["Maximum"])["Datapoints"]
    return sorted(p["Maximum"] for p in points)


ENV_DRIFT = {**ENV, "METRICS_NAMESPACE": "Diagnosa/Monitoring"}


def test_the_tests_environment_is_the_one_the_stack_gives_the_endpoint_resources_function(dev, cfn_text):
    """The deploy function's environment and its metrics namespace (see test_infra_functions.py for ENV)."""
    synthesized = function_environment(dev, cfn_text, "diagnosa-dev-endpoint-resources")
    assert differences(synthesized, ENV_DRIFT) == []


def test_drift_report_finds_the_endpoint_in_sync_with_the_stage(aws, deploy_fn):
    assert drift(deploy_fn, aws, ENV_DRIFT) == {"status": "not deployed", "differences": []}
    sm, autoscaling, cloudwatch = aws
    approve(sm, deploy_fn)
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=ENV)
    assert drift(deploy_fn, aws, ENV_DRIFT) == {"status": "in sync", "differences": []}
    assert published(cloudwatch) == [0.0]


def test_drift_report_names_each_difference_and_publishes_their_number(aws, deploy_fn):
    sm, autoscaling, cloudwatch = aws
    arn, _ = approve(sm, deploy_fn)
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=ENV)
    # the stage's settings changed since (cdk.json), someone narrowed autoscaling by hand, the version was rejected
    changed = {**ENV_DRIFT, "INSTANCE_TYPE": "ml.m5.xlarge", "MAX_INSTANCES": "6", "CAPTURE_PERCENT": "50"}
    autoscaling.register_scalable_target(ServiceNamespace="sagemaker", ResourceId="endpoint/diagnosa-dev/variant/AllTraffic",
                                         ScalableDimension="sagemaker:variant:DesiredInstanceCount", MinCapacity=1, MaxCapacity=1)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    report = drift(deploy_fn, aws, changed)
    assert report["status"] == "drifted"
    found = "\n".join(report["differences"])
    assert "instance type: 'ml.m5.large', the stage says 'ml.m5.xlarge'" in found
    assert "capture sampling percent: 100, the stage says 50" in found
    assert "autoscaling range: (1, 1), the stage says (1, 6)" in found
    assert f"registry status of the served package {arn}: 'Rejected', the stage says 'Approved'" in found
    assert len(report["differences"]) == 4
    assert published(cloudwatch) == [4.0]


def test_drift_report_flags_a_baked_stages_model_that_is_not_network_isolated(aws, deploy_fn, monkeypatch):
    sm, autoscaling, _ = aws
    baked = {**ENV_DRIFT, "SERVING_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-dev-images:27f7"}
    approve(sm, deploy_fn, env=baked)
    deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=baked)
    # moto's DescribeModel always answers EnableNetworkIsolation false: the model as made by hand, without it
    assert drift(deploy_fn, aws, baked)["differences"] == ["network isolation: False, the stage says True"]
    describe = sm.describe_model
    monkeypatch.setattr(sm, "describe_model", lambda **kw: {**describe(**kw), "EnableNetworkIsolation": True})
    assert drift(deploy_fn, aws, baked) == {"status": "in sync", "differences": []}


def test_drift_report_flags_an_endpoint_made_outside_the_deploy_function(aws, deploy_fn):
    sm, autoscaling, _ = aws
    sm.create_model(ModelName="diagnosa-dev-by-hand", ExecutionRoleArn=ENV["MODEL_ROLE_ARN"], PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(EndpointConfigName="diagnosa-dev-by-hand", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "diagnosa-dev-by-hand", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="diagnosa-dev", EndpointConfigName="diagnosa-dev-by-hand")
    found = drift(deploy_fn, aws, ENV_DRIFT)["differences"]
    assert "endpoint diagnosa-dev was not made by diagnosa-dev-deploy (no diagnosa:managed-by tag)" in found
    assert "endpoint config KMS key: None, the stage says '" + ENV["KMS_KEY_ARN"] + "'" in found
    assert "no autoscaling on endpoint/diagnosa-dev/variant/AllTraffic" in found


# ------------------------------------------------------------------------------------------ in the stack

def _function(template, name):
    [(logical, function)] = [(k, v) for k, v in template.find_resources("AWS::Lambda::Function").items()
                             if v["Properties"].get("FunctionName") == name]
    return logical, function["Properties"]


def _statements(template, role_name):
    [role] = [k for k, v in template.find_resources("AWS::IAM::Role").items() if v["Properties"].get("RoleName") == role_name]
    return [s for p in template.find_resources("AWS::IAM::ManagedPolicy").values() if {"Ref": role} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"]]


def _actions(statements):
    return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}


def test_the_stack_tracks_the_endpoint_with_a_custom_resource_run_by_its_own_function(dev, prod):
    for template, stage in ((dev, "dev"), (prod, "prod")):
        deploy, deploy_props = _function(template, f"diagnosa-{stage}-deploy")
        tracker, props = _function(template, f"diagnosa-{stage}-endpoint-resources")
        # the deploy function's code (one home for naming and tags), its other entry point
        assert props["Handler"] == "handler.resources" and deploy_props["Handler"] == "handler.handler"
        assert props["Code"] == deploy_props["Code"]
        env = props["Environment"]["Variables"]
        assert env["MANAGED_BY"] == deploy_props["Environment"]["Variables"]["MANAGED_BY"] == f"diagnosa-{stage}-deploy"
        assert json.loads(env["RESOURCE_TAGS"]) == {"project": "diagnosa", "stage": stage, "data-classification": "phi"}
        assert env["INSTANCE_TYPE"] == deploy_props["Environment"]["Variables"]["INSTANCE_TYPE"]
        [(custom, resource)] = template.find_resources("Custom::DiagnosaEndpointResources").items()
        assert resource["Properties"]["ServiceToken"] == {"Fn::GetAtt": [tracker, "Arn"]}
        # On deletion the deploy rules go first (they depend on the custom resource): nothing deploys mid-cleanup.
        rules = {k: v for k, v in template.find_resources("AWS::Events::Rule").items()
                 if any(t["Arn"] == {"Fn::GetAtt": [deploy, "Arn"]} for t in v["Properties"].get("Targets", []))}
        assert len(rules) == 2 and all(custom in r.get("DependsOn", []) for r in rules.values())


def test_only_the_tracker_may_delete_and_only_the_stages_endpoint_resources(dev):
    deploy = _actions(_statements(dev, "diagnosa-dev-deploy-function"))
    tracker_statements = _statements(dev, "diagnosa-dev-endpoint-resources-function")
    tracker = _actions(tracker_statements)
    assert not [a for a in deploy if a.startswith("sagemaker:Delete")]  # it creates; only the tracker removes
    assert {"sagemaker:DeleteEndpoint", "sagemaker:DeleteEndpointConfig", "sagemaker:DeleteModel",
            "application-autoscaling:DeregisterScalableTarget"} <= tracker
    assert not [a for a in tracker if a.startswith(("sagemaker:Create", "sagemaker:Update", "s3:", "iam:"))]
    deletes = [s for s in tracker_statements if any(":Delete" in a for a in _actions([s]))]
    resources = json.dumps([s["Resource"] for s in deletes])
    assert ":endpoint/diagnosa-dev" in resources and ":model/diagnosa-dev-*" in resources
    assert ":endpoint-config/diagnosa-dev-*" in resources and '"*"' not in resources
    assert "application-autoscaling:TagResource" in deploy  # it tags the scalable target it registers


def test_endpoint_drift_is_checked_daily_and_alarms_to_the_alerts_topic(dev):
    tracker, _ = _function(dev, "diagnosa-dev-endpoint-resources")
    [rule] = [r["Properties"] for r in dev.find_resources("AWS::Events::Rule").values()
              if r["Properties"].get("Name") == "diagnosa-dev-endpoint-drift"]
    assert rule["ScheduleExpression"] == "rate(1 day)"
    [target] = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [tracker, "Arn"]} and json.loads(target["Input"]) == {"reason": "drift"}
    [alarm] = [a["Properties"] for a in dev.find_resources("AWS::CloudWatch::Alarm").values()
               if a["Properties"].get("AlarmName") == "diagnosa-dev-endpoint-drift"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("Diagnosa/Monitoring", "EndpointDrift")
    assert alarm["Dimensions"] == [{"Name": "EndpointName", "Value": "diagnosa-dev"}]
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    [topic] = dev.find_resources("AWS::SNS::Topic")
    assert alarm["AlarmActions"] == [{"Ref": topic}]
