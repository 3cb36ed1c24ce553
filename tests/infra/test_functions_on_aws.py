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
from aws_calls import update_endpoints
from deploy_env import ENV, REGION, dev_stage
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
    with dev_stage():
        yield boto3.client("sagemaker", region_name=REGION)


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


# update_endpoints (aws_calls.py): UpdateEndpoint, which moto lacks, answered at botocore's before-call; the requests
# recorded as the client validated and serialized them.


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


def _one_waiting(sm, deploy_fn) -> str:
    """A first version deployed, the endpoint updating, and a second one approved meanwhile: kept. Its ARN."""
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Updating")
    waiting = _package(sm)
    assert deploy_fn.handler(documented_package_event(waiting), sagemaker=sm, env=ENV, now=60)["action"] == "deferred"
    return waiting


@pytest.mark.parametrize("status", ["Updating", "RollingBack", "SystemUpdating", "Creating"])
def test_an_approval_during_a_deployment_is_deployed_once_the_endpoint_is_in_service(sm, deploy_fn, status):
    # It failed for Lambda to retry: after two retries (~3 minutes, long before a blue/green update with its bake
    # ends) the approval was in the dead-letter queue and the approved version never served.
    updates = update_endpoints(sm)
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
    assert update["EndpointConfigName"] == result["pending"]["endpoint_config"] and _pending(sm) == []
    assert "pending" not in _in_service(sm, deploy_fn, now=1800), "deployed once, not at every IN_SERVICE"
    assert len(updates) == 1


def test_a_version_rejected_while_it_waited_is_not_deployed(sm, deploy_fn):
    updates = update_endpoints(sm)
    waiting = _one_waiting(sm, deploy_fn)
    sm.update_model_package(ModelPackageArn=waiting, ModelApprovalStatus="Rejected")
    pending = _in_service(sm, deploy_fn, now=900)["pending"]
    assert pending["action"] == "refused" and "is Rejected, not Approved" in pending["reason"]
    assert updates == [] and _pending(sm) == []


def test_a_copy_of_the_approval_being_deployed_changes_nothing(sm, deploy_fn):
    updates = update_endpoints(sm)
    event = documented_package_event(_package(sm))
    deploy_fn.handler(event, sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Creating")
    assert deploy_fn.handler(event, sagemaker=sm, env=ENV, now=60)["action"] == "unchanged"  # a copy of the event
    assert _pending(sm) == [] and "pending" not in _in_service(sm, deploy_fn, now=900)
    assert updates == []


def test_an_approval_supersedes_one_kept_during_a_deployment(sm, deploy_fn):
    # The IN_SERVICE event lost (or the update failed): the next approval deploys and the older one is dropped.
    updates = update_endpoints(sm)
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
    updates = update_endpoints(sm)
    serving = documented_package_event(_package(sm))
    deploy_fn.handler(serving, sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Updating")
    waiting = _package(sm)
    deploy_fn.handler(documented_package_event(waiting), sagemaker=sm, env=ENV, now=60)
    _set_status("diagnosa-dev", "InService")
    assert deploy_fn.handler(serving, sagemaker=sm, env=ENV, now=120)["action"] == "superseded"  # the copy
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


def _approved_at(arn: str, time: str) -> dict:
    return {**documented_package_event(arn), "time": time}


def _serve(name: str, status: str, config: str) -> None:
    """moto's endpoint as SageMaker shows it during an update: the config being deployed."""
    endpoint = sagemaker_backends[ACCOUNT][REGION].endpoints[name]
    endpoint.endpoint_status, endpoint.endpoint_config_name = status, config


@pytest.mark.parametrize("status", ["Updating", "InService"])
def test_a_late_copy_of_an_older_approval_does_not_roll_the_endpoint_back(sm, deploy_fn, status):
    # EventBridge delivers at least once and Lambda retries: v1's approval arriving again after v2's deployed it
    # (or while v2 deploys) was deployed, or kept and deployed at the next IN_SERVICE, over v2.
    updates = update_endpoints(sm)
    first, second = _package(sm), _package(sm)
    deploy_fn.handler(_approved_at(first, "2026-01-01T00:00:00Z"), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "InService")
    newer = deploy_fn.handler(_approved_at(second, "2026-01-01T01:00:00Z"), sagemaker=sm, env=ENV, now=60)
    _serve("diagnosa-dev", status, newer["endpoint_config"])
    late = deploy_fn.handler(_approved_at(first, "2026-01-01T00:00:00Z"), sagemaker=sm, env=ENV, now=120)
    assert late["action"] == "superseded" and "2026-01-01T01:00:00Z v2" in late["reason"]
    assert _pending(sm) == [] and "pending" not in _in_service(sm, deploy_fn, now=900)
    assert len(updates) == 1
    # a later approval of v1 (a deliberate rollback) is newer, and deploys
    again = deploy_fn.handler(_approved_at(first, "2026-01-01T02:00:00Z"), sagemaker=sm, env=ENV, now=960)
    assert again["action"] == "updated" and len(updates) == 2


def test_a_copy_of_the_approval_being_deployed_does_not_undo_its_rollback(sm, deploy_fn):
    updates = update_endpoints(sm)
    first, second = _package(sm), _package(sm)
    deploy_fn.handler(_approved_at(first, "2026-01-01T00:00:00Z"), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "InService")
    event = _approved_at(second, "2026-01-01T01:00:00Z")
    rolling_out = deploy_fn.handler(event, sagemaker=sm, env=ENV, now=60)
    _serve("diagnosa-dev", "Updating", rolling_out["endpoint_config"])
    assert deploy_fn.handler(event, sagemaker=sm, env=ENV, now=120)["action"] == "unchanged"  # the copy
    # v2 trips the rollback alarms: SageMaker serves v1's config again, and nothing deploys v2 once more
    _serve("diagnosa-dev", "InService", sm.list_endpoint_configs(NameContains="-v1-")["EndpointConfigs"][0]["EndpointConfigName"])
    assert "pending" not in _in_service(sm, deploy_fn, now=900) and len(updates) == 1


def test_of_two_approvals_kept_during_a_deployment_the_newer_wins_whatever_the_order_they_arrive_in(sm, deploy_fn):
    updates = update_endpoints(sm)
    deploy_fn.handler(_approved_at(_package(sm), "2026-01-01T00:00:00Z"), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Updating")
    second, third = _package(sm), _package(sm)
    assert deploy_fn.handler(_approved_at(third, "2026-01-01T03:00:00Z"), sagemaker=sm, env=ENV, now=60)["action"] \
        == "deferred"
    assert deploy_fn.handler(_approved_at(second, "2026-01-01T02:00:00Z"), sagemaker=sm, env=ENV, now=120)["action"] \
        == "superseded"
    assert _pending(sm) == [third]
    assert _in_service(sm, deploy_fn, now=900)["pending"]["model_package"] == third and len(updates) == 1


def test_a_failure_while_deploying_the_kept_version_keeps_it_for_the_retry(sm, deploy_fn):
    # The tag was cleared first: Lambda's retry of the IN_SERVICE event found nothing to deploy, succeeded, and
    # the approved version was lost without a dead letter.
    from botocore.exceptions import ClientError

    updates = update_endpoints(sm)
    waiting = _one_waiting(sm, deploy_fn)
    throttled = []

    def throttle_once(**_):
        if not throttled:
            throttled.append(1)
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "CreateModel")
    sm.meta.events.register("before-call.sagemaker.CreateModel", throttle_once)
    with pytest.raises(ClientError, match="Rate exceeded"):
        _in_service(sm, deploy_fn, now=900)
    assert _pending(sm) == [waiting] and updates == []
    retried = _in_service(sm, deploy_fn, now=960)  # Lambda's retry of the same event
    assert retried["pending"]["action"] == "updated" and len(updates) == 1 and _pending(sm) == []


def test_a_kept_version_deleted_from_the_registry_meanwhile_is_refused_not_an_error(sm, deploy_fn):
    updates = update_endpoints(sm)
    waiting = _one_waiting(sm, deploy_fn)
    # DeleteModelPackage, which moto lacks: gone from its registry, DescribeModelPackage answers ValidationException
    backend = sagemaker_backends[ACCOUNT][REGION]
    del backend.model_packages[backend.model_package_name_mapping.get(waiting, waiting)]
    pending = _in_service(sm, deploy_fn, now=900)["pending"]
    assert pending["action"] == "refused" and "is not in the registry" in pending["reason"]
    assert updates == [] and _pending(sm) == []


@pytest.mark.parametrize("status, event_status, remedy", [
    ("Failed", "FAILED", "delete-endpoint --endpoint-name diagnosa-dev"),
    ("UpdateRollbackFailed", "UPDATE_ROLLBACK_FAILED", "approve the version again once it is InService")])
def test_a_version_kept_for_an_endpoint_that_then_fails_is_reported_loudly(sm, deploy_fn, status, event_status,
                                                                           remedy):
    # Deferred, it returned success; the endpoint then never came back to InService, and nothing said so.
    waiting = _one_waiting(sm, deploy_fn)
    _set_status("diagnosa-dev", status)
    event = {**IN_SERVICE, "detail": {**IN_SERVICE["detail"], "EndpointStatus": event_status}}
    with pytest.raises(RuntimeError, match=f"is {event_status}.*{waiting}.*{remedy}"):
        deploy_fn.handler(event, sagemaker=sm, env=ENV, now=900)
    assert _pending(sm) == [waiting]  # still there, should the endpoint come back


def test_an_endpoint_that_fails_with_nothing_kept_is_not_an_error(sm, deploy_fn):
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Failed")
    event = {**IN_SERVICE, "detail": {**IN_SERVICE["detail"], "EndpointStatus": "FAILED"}}
    assert deploy_fn.handler(event, sagemaker=sm, env=ENV, now=900)["action"] == "none"


def test_an_approval_for_a_failed_endpoint_creates_nothing_and_says_to_delete_it(sm, deploy_fn):
    # SageMaker allows only DeleteEndpoint on a Failed endpoint: the update failed after a model and a config were
    # made for nothing.
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "Failed")
    before = len(sm.list_models()["Models"]), len(sm.list_endpoint_configs()["EndpointConfigs"])
    with pytest.raises(RuntimeError, match="is Failed .*delete-endpoint --endpoint-name diagnosa-dev"):
        deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=60)
    assert (len(sm.list_models()["Models"]), len(sm.list_endpoint_configs()["EndpointConfigs"])) == before


def test_every_endpoint_status_the_stage_routes_to_the_deploy_function_is_one_it_handles(dev, sm, deploy_fn):
    # The rule's pattern (infra/stack.py) and the function's statuses are two lists: an event the rule sends and
    # the function refuses is an error for Lambda to retry, then a false dead-letter alarm.
    resources = dev.to_json()["Resources"]
    [statuses] = [r["Properties"]["EventPattern"]["detail"]["EndpointStatus"] for r in resources.values()
                  if r["Type"] == "AWS::Events::Rule"
                  and r["Properties"].get("EventPattern", {}).get("detail-type") == ["SageMaker Endpoint State Change"]]
    deploy_fn.handler(documented_package_event(_package(sm)), sagemaker=sm, env=ENV, now=0)
    for status in statuses:
        event = {**IN_SERVICE, "detail": {**IN_SERVICE["detail"], "EndpointStatus": status}}
        with mock_aws():
            autoscaling = boto3.client("application-autoscaling", region_name=REGION)
            assert deploy_fn.handler(event, sagemaker=sm, autoscaling=autoscaling, env=ENV, now=60), status
    assert "IN_SERVICE" in statuses


def test_the_deploy_role_may_keep_and_read_the_pending_approval_on_its_endpoint_only(dev):
    resources = dev.to_json()["Resources"]
    statements = role_statements(resources, "DeployFunctionRole")
    for action in ("sagemaker:ListTags", "sagemaker:AddTags"):
        granted = [_text(r) for st in statements if action in _listed(st["Action"]) for r in _listed(st["Resource"])]
        assert any(_match(g, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/diagnosa-dev") for g in granted), action
        assert not any(_match(g, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/diagnosa-prod") for g in granted)


def test_a_duplicate_approval_of_the_serving_package_changes_nothing(sm, deploy_fn):
    updates = update_endpoints(sm)
    event = documented_package_event(_package(sm))
    deploy_fn.handler(event, sagemaker=sm, env=ENV, now=0)
    _set_status("diagnosa-dev", "InService")
    deploy_fn.handler(event, sagemaker=sm, env=ENV, now=900)
    assert updates == [] and len(sm.list_models()["Models"]) == 1


def test_rejected_approved_rejected_deploys_only_while_approved(sm, deploy_fn):
    """Held: the registry is read again; only an Approved state deploys."""
    updates = update_endpoints(sm)
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

def test_a_promotion_retried_after_a_failed_approval_approves_the_version_once_it_passes_the_gate(promote_fn):
    from botocore.exceptions import ClientError
    from test_promote import GATE, GATE_KEY, register, serve, stages

    with stages(IMAGE) as (sm, s3, env):
        serve(sm, register(sm, s3, "Approved"))  # dev serves it; its evaluation passes prod's gate (0.9 everywhere)

        def throttled(**_):  # the approval call fails once (throttling, a timeout, the function's end)
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "UpdateModelPackage")
        sm.meta.events.register("before-call.sagemaker.UpdateModelPackage", throttled, unique_id="probe-throttle")
        with pytest.raises(ClientError):
            promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
        sm.meta.events.unregister("before-call.sagemaker.UpdateModelPackage", unique_id="probe-throttle")
        [summary] = sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"]
        assert summary["ModelApprovalStatus"] == "PendingManualApproval"
        # prod's gate was raised meanwhile (a new deployment of its stack): the retry does not approve the version
        s3.put_object(Bucket="prod-lake", Key=GATE_KEY,
                      Body=json.dumps([{**check, "at_least": 0.95} for check in GATE]).encode())
        with pytest.raises(promote_fn.Refused, match="does not pass diagnosa-prod's gate"):
            promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
        assert sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])[
            "ModelApprovalStatus"] == "PendingManualApproval"
        s3.put_object(Bucket="prod-lake", Key=GATE_KEY, Body=json.dumps(GATE).encode())
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)  # the delivery pipeline's step is retried
        [summary] = sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"]
        assert summary["ModelApprovalStatus"] == "Approved"
