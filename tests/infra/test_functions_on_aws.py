"""The Lambda functions and their wiring as AWS runs them: what passed moto but would fail in a real account
(deletion order of the custom resource, actions without resource-level permissions, the rollback alarms the deploy
role must describe, the service's bound on blue/green waits, duplicate and retried events).

Evidence comes from real libraries only: the synthesized templates, botocore's service models, moto, and AWS's
Service Authorization Reference as cfn-lint ships it (which actions support resource-level permissions)."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import cfnlint
import pytest
from botocore.awsrequest import AWSResponse
from deploy_env import ENV, REGION
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends

from infra.config import stage_config
from pipelines.service_model import request_problems

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
ACCOUNT = "123456789012"
AUTHORIZATION = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"


# ------------------------------------------------------------------------------------------ template helpers

def _refs(value, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref" and isinstance(item, str):
                out.add(item)
            elif key == "Fn::GetAtt":
                out.add(item[0] if isinstance(item, list) else item.split(".")[0])
            else:
                _refs(item, out)
    elif isinstance(value, list):
        for item in value:
            _refs(item, out)


def depends_on(resources: dict, name: str) -> set[str]:
    """Every resource ``name`` waits for (Ref, GetAtt, DependsOn), transitively: CloudFormation deletes none of
    them before ``name``."""
    def direct(n: str) -> set[str]:
        out: set[str] = set()
        _refs(resources[n].get("Properties", {}), out)
        dep = resources[n].get("DependsOn", [])
        out.update([dep] if isinstance(dep, str) else dep)
        return {o for o in out if o in resources}
    seen, todo = set(), [name]
    while todo:
        for d in direct(todo.pop()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def of_type(resources: dict, kind: str) -> list[str]:
    return [n for n, r in resources.items() if r["Type"] == kind]


def role_statements(resources: dict, role_prefix: str) -> list[dict]:
    """The statements of every managed policy attached to the role whose logical id starts with ``role_prefix``."""
    [role] = [n for n in of_type(resources, "AWS::IAM::Role") if n.startswith(role_prefix)]
    return [st for n in of_type(resources, "AWS::IAM::ManagedPolicy")
            if {"Ref": role} in resources[n]["Properties"].get("Roles", [])
            for st in resources[n]["Properties"]["PolicyDocument"]["Statement"]]


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        return value["Fn::Join"][0].join(_text(p) for p in value["Fn::Join"][1])
    if value.get("Ref") == "AWS::Partition":
        return "aws"
    return "<token>"


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------------------------------ IAM and wiring

@pytest.mark.parametrize("stage", ["Diagnosa-dev", "Diagnosa-prod"])
def test_the_cleanup_custom_resource_outlives_its_permissions_and_network(templates, stage):
    resources = templates[stage].to_json()["Resources"]
    [custom] = of_type(resources, "Custom::DiagnosaEndpointResources")
    needed = depends_on(resources, custom)
    policies = [n for n in of_type(resources, "AWS::IAM::ManagedPolicy") if n.startswith("EndpointResourcesFunctionRole")]
    assert policies and set(policies) <= needed, f"deleted before the custom resource: {set(policies) - needed}"
    endpoints = of_type(resources, "AWS::EC2::VPCEndpoint")
    assert set(endpoints) <= needed, f"deleted before the custom resource: {sorted(set(endpoints) - needed)}"


def test_every_action_on_a_scoped_resource_supports_resource_level_permissions_but_autoscaling_describes(templates):
    """Audit (held for all but the two Describe actions below, pinned separately)."""
    authorization = json.loads(AUTHORIZATION.read_text())
    wrong = set()
    for stage in ("Diagnosa-dev", "Diagnosa-prod"):
        resources = templates[stage].to_json()["Resources"]
        for name in of_type(resources, "AWS::IAM::ManagedPolicy"):
            for st in resources[name]["Properties"]["PolicyDocument"]["Statement"]:
                if _listed(st["Resource"]) == ["*"]:
                    continue
                for action in _listed(st["Action"]):
                    service, operation = action.split(":")
                    known = authorization[service]["Actions"].get(operation.lower())
                    assert known is not None, f"{name}: unknown action {action}"
                    if not known.get("Resources"):
                        wrong.add(action)
    assert wrong <= {"application-autoscaling:DescribeScalableTargets",
                     "application-autoscaling:DescribeScalingPolicies"}, wrong


def test_autoscaling_describe_actions_are_granted_on_any_resource(dev):
    authorization = json.loads(AUTHORIZATION.read_text())["application-autoscaling"]["Actions"]
    resources = dev.to_json()["Resources"]
    for role in ("EndpointResourcesFunctionRole", "DeployFunctionRole"):
        for st in role_statements(resources, role):
            for action in _listed(st["Action"]):
                service, operation = action.split(":")
                if service == "application-autoscaling" and not authorization[operation.lower()].get("Resources"):
                    assert _listed(st["Resource"]) == ["*"], f"{role}: {action} on {st['Resource']}"


def test_the_deploy_role_may_describe_its_rollback_alarms(dev):
    resources = dev.to_json()["Resources"]
    [function] = [n for n in of_type(resources, "AWS::Lambda::Function") if n.startswith("DeployFunction")]
    alarms = resources[function]["Properties"]["Environment"]["Variables"]["ROLLBACK_ALARMS"].split(",")
    granted = [_text(r) for st in role_statements(resources, "DeployFunctionRole")
               if "cloudwatch:DescribeAlarms" in _listed(st["Action"]) for r in _listed(st["Resource"])]
    for alarm in alarms:
        arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{alarm}"
        assert any(_match(pattern, arn) for pattern in granted), f"{arn} not in {granted}"


def _match(pattern: str, value: str) -> bool:
    from moto.iam.access_control import IAMPolicyStatement

    statement = IAMPolicyStatement({"Effect": "Allow", "Action": "x:Y", "Resource": pattern})
    return statement._check_element_matches("Resource", value)


# ------------------------------------------------------------------------------------------ request shapes

def test_update_endpoint_request_of_the_default_stage_is_valid(deploy_fn):
    for shifting in ("CANARY", "ALL_AT_ONCE"):
        env = {**ENV, "TRAFFIC_SHIFTING": shifting}
        request = {"EndpointName": "diagnosa-dev", "EndpointConfigName": "diagnosa-dev-v2-19700101000000",
                   "DeploymentConfig": deploy_fn.deployment_config(env)}
        assert request_problems("UpdateEndpoint", request) is None


def test_a_bake_the_service_refuses_is_refused_at_synth(deploy_fn):
    # what the deploy function would send for such a stage breaks the service's limits (botocore's model)
    request = {"EndpointName": "diagnosa-dev", "EndpointConfigName": "c",
               "DeploymentConfig": deploy_fn.deployment_config({**ENV, "BAKE_SECONDS": "7200"})}
    problems = request_problems("UpdateEndpoint", request) or ""  # botocore itself checks no numeric maximum
    for path in ("DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration.WaitIntervalInSeconds",
                 "DeploymentConfig.BlueGreenUpdatePolicy.TerminationWaitInSeconds"):
        assert f"Invalid value for parameter {path}, value: 7200, valid max value: 3600" in problems
    with pytest.raises(ValueError, match="bake_seconds"):
        stage_config("dev", {"region": REGION, "bake_seconds": 7200}).check()


# ------------------------------------------------------------------------------------------ events

@pytest.fixture
def sm():
    with mock_aws():
        client = boto3.client("sagemaker", region_name=REGION)
        client.create_model_package_group(ModelPackageGroupName="diagnosa-dev")
        yield client


def _package(sm, status="Approved"):
    return sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://lake/artifacts/runs/x/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]


def documented_package_event(arn: str, status: str = "Approved") -> dict:
    """The sample of AWS's EventBridge page (Model package state change), for this stage's package."""
    version = int(arn.rsplit("/", 1)[1])
    return {"version": "0", "id": f"844e2571-85d4-695f-b930-0153b71dcb4{version}",
            "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker", "account": ACCOUNT,
            "time": "2021-02-24T17:00:14Z", "region": REGION, "resources": [arn],
            "detail": {"ModelPackageGroupName": "diagnosa-dev", "ModelPackageVersion": version, "ModelPackageArn": arn,
                       "CreationTime": "2021-02-24T17:00:14Z", "ModelPackageStatus": "Completed",
                       "ModelApprovalStatus": status,
                       "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl": "s3://x/model.tar.gz"}]},
                       "LastModifiedTime": "2021-02-24T17:00:14Z"}}


def _record_updates(sm) -> list[dict]:
    """UpdateEndpoint (which moto lacks) answered by botocore's before-call hook; the requests are recorded."""
    updates: list[dict] = []

    def answer(params, **_):
        updates.append(params["body"])
        return AWSResponse("https://api.sagemaker", 200, {}, None), {"EndpointArn": "arn"}
    sm.meta.events.register("before-call.sagemaker.UpdateEndpoint", answer)
    return updates


def _set_status(name: str, status: str) -> None:
    sagemaker_backends[ACCOUNT][REGION].endpoints[name].endpoint_status = status


def test_the_documented_events_are_read_as_aws_sends_them(sm, deploy_fn):
    """Held: the sample events (package approved; the registry's status wins over a stale event; the endpoint
    sample of another endpoint is refused)."""
    arn = _package(sm)
    assert deploy_fn.handler(documented_package_event(arn), sagemaker=sm, env=ENV, now=0)["action"] == "created"
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    with pytest.raises(deploy_fn.Refused, match="is Rejected"):  # a late (out-of-order) Approved event
        deploy_fn.handler(documented_package_event(arn), sagemaker=sm, env=ENV, now=60)
    sample = {"detail-type": "SageMaker Endpoint State Change", "source": "aws.sagemaker",
              "detail": {"EndpointName": "MyEndpoint", "EndpointStatus": "IN_SERVICE", "Tags": {}}}
    with pytest.raises(deploy_fn.Refused):
        deploy_fn.handler(sample, sagemaker=sm, env=ENV, now=0)
    with pytest.raises(deploy_fn.Refused, match="no ModelPackageArn"):
        deploy_fn.handler({"detail-type": "SageMaker Model Package State Change", "detail": {}}, sagemaker=sm, env=ENV)


IN_SERVICE = {"detail-type": "SageMaker Endpoint State Change", "source": "aws.sagemaker",
              "detail": {"EndpointName": "diagnosa-dev", "EndpointStatus": "IN_SERVICE"}}


def _pending(sm) -> list[str]:
    """The pending approval, as a list: [] for none. (moto keeps every value AddTags gave a key, AWS the last.)"""
    arn = sm.describe_endpoint(EndpointName="diagnosa-dev")["EndpointArn"]
    values = [t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"] if t["Key"] == "diagnosa:pending-package"]
    return values[-1:] if values and values[-1] else []


def _in_service(sm, deploy_fn, now: float) -> dict:
    _set_status("diagnosa-dev", "InService")
    with mock_aws():
        autoscaling = boto3.client("application-autoscaling", region_name=REGION)
        return deploy_fn.handler(IN_SERVICE, sagemaker=sm, autoscaling=autoscaling, env=ENV, now=now)


@pytest.mark.parametrize("status", ["Updating", "RollingBack", "SystemUpdating", "Creating"])
def test_an_approval_during_a_deployment_is_deployed_once_the_endpoint_is_in_service(sm, deploy_fn, status):
    # It failed for Lambda to retry: after two retries (~3 minutes, long before a blue/green update with its bake
    # ends) the approval was in the dead-letter queue and the approved version never served.
    updates = _record_updates(sm)
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", status)
    before = len(sm.list_models()["Models"]), len(sm.list_endpoint_configs()["EndpointConfigs"])
    second, third = _package(sm), _package(sm)
    for arn, now in ((second, 60), (third, 120)):
        result = deploy_fn.handler(documented_package_event(arn), sagemaker=sm, env=ENV, now=now)
        assert result == {"action": "deferred", "endpoint": "diagnosa-dev", "model_package": arn,
                          "reason": f"endpoint diagnosa-dev is {status}"}
    assert (len(sm.list_models()["Models"]), len(sm.list_endpoint_configs()["EndpointConfigs"])) == before
    assert updates == [] and _pending(sm) == [third], "nothing interrupted; the later approval is the one kept"
    result = _in_service(sm, deploy_fn, now=900)
    assert result["pending"]["action"] == "updated" and result["pending"]["model_package"] == third
    [update] = updates
    assert json.loads(update)["EndpointConfigName"] == result["pending"]["endpoint_config"] and _pending(sm) == []
    assert "pending" not in _in_service(sm, deploy_fn, now=1800), "deployed once, not at every IN_SERVICE"
    assert len(updates) == 1


def test_a_version_rejected_while_it_waited_is_not_deployed(sm, deploy_fn):
    updates = _record_updates(sm)
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Updating")
    waiting = _package(sm)
    assert deploy_fn.handler(documented_package_event(waiting), sagemaker=sm, env=ENV, now=60)["action"] == "deferred"
    sm.update_model_package(ModelPackageArn=waiting, ModelApprovalStatus="Rejected")
    pending = _in_service(sm, deploy_fn, now=900)["pending"]
    assert pending["action"] == "refused" and "is Rejected, not Approved" in pending["reason"]
    assert updates == [] and _pending(sm) == []


def test_an_approval_of_what_serves_while_it_deployed_changes_nothing(sm, deploy_fn):
    updates = _record_updates(sm)
    event = documented_package_event(_package(sm))
    deploy_fn.handler(event, sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Creating")
    assert deploy_fn.handler(event, sagemaker=sm, env=ENV, now=60)["action"] == "deferred"  # a copy of the event
    assert _in_service(sm, deploy_fn, now=900)["pending"]["action"] == "unchanged"
    assert updates == [] and _pending(sm) == []


def test_an_approval_supersedes_one_kept_during_a_deployment(sm, deploy_fn):
    # The IN_SERVICE event lost (or the update failed): the next approval deploys and the older one is dropped.
    updates = _record_updates(sm)
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Updating")
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=60)
    _set_status("diagnosa-dev", "InService")
    latest = _package(sm)
    assert deploy_fn.handler(documented_package_event(latest), sagemaker=sm, env=ENV, now=120)["action"] == "updated"
    assert len(updates) == 1 and _pending(sm) == []


def test_a_duplicate_of_the_serving_approval_keeps_the_waiting_one(sm, deploy_fn):
    # The copy of the approval being deployed, delivered again once the endpoint is InService but before its
    # IN_SERVICE event is handled, must not drop the version approved meanwhile.
    updates = _record_updates(sm)
    serving = documented_package_event(_package(sm))
    deploy_fn.handler(serving, sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Updating")
    waiting = _package(sm)
    deploy_fn.handler(documented_package_event(waiting), sagemaker=sm, env=ENV, now=60)
    _set_status("diagnosa-dev", "InService")
    assert deploy_fn.handler(serving, sagemaker=sm, env=ENV, now=120)["action"] == "unchanged"  # the copy
    assert _pending(sm) == [waiting]
    assert _in_service(sm, deploy_fn, now=900)["pending"]["model_package"] == waiting and len(updates) == 1


@pytest.mark.parametrize("status", ["Deleting", "OutOfService", "UpdateRollbackFailed"])
def test_an_approval_for_an_endpoint_that_will_not_come_back_by_itself_fails_loudly(sm, deploy_fn, status):
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", status)
    before = len(sm.list_models()["Models"]), len(sm.list_endpoint_configs()["EndpointConfigs"])
    with pytest.raises(RuntimeError, match=f"endpoint diagnosa-dev is {status}; approve the version again once"):
        deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=60)
    assert (len(sm.list_models()["Models"]), len(sm.list_endpoint_configs()["EndpointConfigs"])) == before
    assert _pending(sm) == []


def test_the_deploy_role_may_keep_and_read_the_pending_approval_on_its_endpoint_only(dev):
    resources = dev.to_json()["Resources"]
    statements = role_statements(resources, "DeployFunctionRole")
    for action in ("sagemaker:ListTags", "sagemaker:AddTags"):
        granted = [_text(r) for st in statements if action in _listed(st["Action"]) for r in _listed(st["Resource"])]
        assert any(_match(g, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/diagnosa-dev") for g in granted), action
        assert not any(_match(g, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/diagnosa-prod") for g in granted)


def test_a_duplicate_approval_of_the_serving_package_changes_nothing(sm, deploy_fn):
    updates = _record_updates(sm)
    event = documented_package_event(_package(sm))
    deploy_fn.handler(event, sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "InService")
    deploy_fn.handler(event, sagemaker=sm, env=ENV, now=900)
    assert updates == [] and len(sm.list_models()["Models"]) == 1


def test_rejected_approved_rejected_deploys_only_while_approved(sm, deploy_fn):
    """Held: the registry is read again; only an Approved state deploys."""
    updates = _record_updates(sm)
    arn = _package(sm, "Rejected")
    with pytest.raises(deploy_fn.Refused):
        deploy_fn.handler(documented_package_event(arn, "Rejected"), sagemaker=sm, env=ENV, now=0)
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert deploy_fn.handler(documented_package_event(arn), sagemaker=sm, env=ENV, now=10)["action"] == "created"
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    with pytest.raises(deploy_fn.Refused):
        deploy_fn.handler(documented_package_event(arn), sagemaker=sm, env=ENV, now=20)
    assert updates == []


# ------------------------------------------------------------------------------------------ promote: a retry after a failure

def test_a_promotion_retried_after_a_failed_approval_approves_the_version(promote_fn):
    from botocore.exceptions import ClientError

    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        for group in ("diagnosa-dev", "diagnosa-prod"):
            sm.create_model_package_group(ModelPackageGroupName=group)
        source = "diagnosa-dev-lake1a2b3c4d-0a1b2c3d4e5f"
        for bucket in (source, "prod-lake"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket=source, Key="artifacts/runs/e/model.tar.gz", Body=b"model")
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        sm.create_model_package(
            ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
            InferenceSpecification={"Containers": [{"Image": IMAGE,
                                                    "ModelDataUrl": f"s3://{source}/artifacts/runs/e/model.tar.gz"}],
                                    "SupportedContentTypes": ["application/json"],
                                    "SupportedResponseMIMETypes": ["application/json"]})
        env = {"SOURCE_GROUP": "diagnosa-dev", "SOURCE_REGION": REGION, "SOURCE_ACCOUNT": "",
               "SOURCE_BUCKET_PREFIX": "diagnosa-dev-lake", "TARGET_GROUP": "diagnosa-prod", "LAKE_BUCKET": "prod-lake",
               "KMS_KEY_ARN": key, "SERVING_IMAGE": IMAGE, "PROMOTED_PREFIX": "artifacts/runs/promoted/"}

        def throttled(**_):  # the approval call fails once (throttling, a timeout, the function's end)
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "UpdateModelPackage")
        sm.meta.events.register("before-call.sagemaker.UpdateModelPackage", throttled, unique_id="probe-throttle")
        with pytest.raises(ClientError):
            promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
        sm.meta.events.unregister("before-call.sagemaker.UpdateModelPackage", unique_id="probe-throttle")
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)  # the delivery pipeline's step is retried
        [summary] = sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"]
        assert summary["ModelApprovalStatus"] == "Approved"
