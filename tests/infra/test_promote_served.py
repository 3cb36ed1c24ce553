"""Prod promotes what dev serves, not dev's newest Approved version (review 46, finding 1): under moto, with the real
deploy function serving dev's endpoint; and the IAM that lets prod's promote function see what dev serves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_calls import update_endpoints
from deploy_env import ENV, REGION
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends
from test_promote import IMAGE, SOURCE_BUCKET, evaluation_of, stages

# dev's deploy function: its lake is dev's (where its runs wrote the models)
DEV_ENV = {**ENV, "LAKE_BUCKET": SOURCE_BUCKET, "CAPTURE_URI": f"s3://{SOURCE_BUCKET}/capture"}


def _event(arn, time):
    return {"detail-type": "SageMaker Model Package State Change", "time": time, "detail": {"ModelPackageArn": arn}}


@pytest.fixture
def dev():
    """dev's group with v1 and v2 Approved, prod's group empty, and the promote function's environment."""
    with stages(IMAGE) as (sm, s3, env):
        update_endpoints(sm)  # moto lacks UpdateEndpoint: answered as SageMaker starts an update (aws_calls.py)
        arns = []
        for i in (1, 2):
            s3.put_object(Bucket=SOURCE_BUCKET, Key=f"artifacts/runs/r{i}/model.tar.gz", Body=b"model %d" % i)
            s3.put_object(Bucket=SOURCE_BUCKET, Key=f"artifacts/runs/r{i}/evaluation.json",
                          Body=json.dumps(evaluation_of()).encode())
            arns.append(sm.create_model_package(
                ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
                InferenceSpecification={"Containers": [{
                    "Image": IMAGE, "ModelDataUrl": f"s3://{SOURCE_BUCKET}/artifacts/runs/r{i}/model.tar.gz"}],
                    "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]},
                ModelMetrics={"ModelQuality": {"Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": f"s3://{SOURCE_BUCKET}/artifacts/runs/r{i}/evaluation.json"}}},
            )["ModelPackageArn"])
        yield sm, s3, env, arns


def _endpoint():
    return sagemaker_backends["123456789012"][REGION].endpoints["diagnosa-dev"]


def _prod_versions(sm):
    return sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"]


def test_after_an_automatic_rollback_the_version_dev_serves_is_promoted_not_the_newest_approved(
        dev, deploy_fn, promote_fn):
    sm, s3, env, (v1, v2) = dev
    first = deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)
    assert deploy_fn.handler(_event(v2, "2026-01-01T01:00:00Z"), sagemaker=sm, env=DEV_ENV, now=3600)["action"] == "updated"
    _endpoint().endpoint_config_name = first["endpoint_config"]  # v2's canary tripped the alarms: v1 serves again
    assert deploy_fn.serving_package(sm, "diagnosa-dev") == v1
    result = promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert result["status"] == "promoted" and result["source"] == v1 and not result["forced"]
    [promoted] = _prod_versions(sm)
    metadata = sm.describe_model_package(ModelPackageName=promoted["ModelPackageArn"])["CustomerMetadataProperties"]
    assert metadata["diagnosa:promoted-from"] == v1
    # asking for v2 by number is refused: dev rolled it back
    with pytest.raises(promote_fn.Refused, match=r"diagnosa-dev serves .*/diagnosa-dev/1, not version 2 .*\"force\""):
        promote_fn.handler({"version": 2}, source=sm, target=sm, s3=s3, env=env)
    assert len(_prod_versions(sm)) == 1


def test_after_a_manual_rollback_by_approving_v1_again_v1_is_promoted(dev, deploy_fn, promote_fn):
    sm, s3, env, (v1, v2) = dev
    deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)
    deploy_fn.handler(_event(v2, "2026-01-01T01:00:00Z"), sagemaker=sm, env=DEV_ENV, now=3600)
    _endpoint().endpoint_config_name = sm.list_endpoint_configs(
        NameContains="diagnosa-dev-v2")["EndpointConfigs"][0]["EndpointConfigName"]  # v2's update completed
    assert promote_fn.served_version(sm, env) == v2
    # a person rolls back: v1 approved again (v2 stays Approved, the newest)
    sm.update_model_package(ModelPackageArn=v1, ModelApprovalStatus="Approved")
    again = deploy_fn.handler(_event(v1, "2026-01-01T02:00:00Z"), sagemaker=sm, env=DEV_ENV, now=7200)
    _endpoint().endpoint_config_name = again["endpoint_config"]
    assert promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)["source"] == v1


def test_a_version_dev_does_not_serve_is_promoted_only_when_forced(dev, deploy_fn, promote_fn):
    sm, s3, env, (v1, v2) = dev
    deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)
    with pytest.raises(promote_fn.Refused, match="only with a version"):
        promote_fn.handler({"force": True}, source=sm, target=sm, s3=s3, env=env)
    with pytest.raises(promote_fn.Refused, match="force must be true or false"):
        promote_fn.handler({"version": 2, "force": "yes"}, source=sm, target=sm, s3=s3, env=env)
    assert _prod_versions(sm) == []
    result = promote_fn.handler({"version": 2, "force": True}, source=sm, target=sm, s3=s3, env=env)
    assert result["source"] == v2 and result["forced"]
    described = sm.describe_model_package(ModelPackageName=result["target"])
    assert "forced" in described["ApprovalDescription"]
    assert promote_fn.handler({"version": 1}, source=sm, target=sm, s3=s3, env=env)["source"] == v1  # the served one


def test_dev_updating_or_serving_nothing_known_is_refused(dev, deploy_fn, promote_fn):
    sm, s3, env, (v1, _) = dev
    with pytest.raises(promote_fn.Refused, match="diagnosa-dev does not exist: diagnosa-dev serves no version"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)
    for status in ("Updating", "RollingBack", "Creating"):
        _endpoint().endpoint_status = status
        with pytest.raises(promote_fn.Refused, match=f"diagnosa-dev is {status}, not InService"):
            promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    _endpoint().endpoint_status = "InService"
    sm.create_model(ModelName="by-hand", ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
                    PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(EndpointConfigName="by-hand", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "by-hand", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    _endpoint().endpoint_config_name = "by-hand"  # configured outside the deploy function: no package tag
    with pytest.raises(promote_fn.Refused, match="by-hand has no diagnosa:model-package tag"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert _prod_versions(sm) == []


def test_a_served_version_rejected_since_is_refused(dev, deploy_fn, promote_fn):
    sm, s3, env, (v1, _) = dev
    deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)
    sm.update_model_package(ModelPackageArn=v1, ModelApprovalStatus="Rejected")  # rejected, still serving
    with pytest.raises(promote_fn.Refused, match="is Rejected, not Approved in diagnosa-dev"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)


def test_across_accounts_the_endpoint_is_read_with_the_source_stages_reader_role(promote_fn):
    with mock_aws():
        env = {"SOURCE_REGION": REGION, "SOURCE_READER_ROLE": "arn:aws:iam::123456789012:role/diagnosa-dev-prod-promote-reader"}
        reader = promote_fn.endpoint_reader(env)
        assert reader.meta.region_name == REGION
        assert reader._request_signer._credentials.access_key.startswith("ASIA")  # the assumed role's session
        assert reader.list_endpoints()["Endpoints"] == []
        own = promote_fn.endpoint_reader({**env, "SOURCE_READER_ROLE": ""})
        assert not own._request_signer._credentials.access_key.startswith("ASIA")


# ------------------------------------------------------------------------------------------ IAM (synth)

def _role(template, name):
    [(logical, role)] = [(k, v) for k, v in template.find_resources("AWS::IAM::Role").items()
                         if v["Properties"].get("RoleName") == name]
    statements = [s for p in template.find_resources("AWS::IAM::ManagedPolicy").values()
                  if {"Ref": logical} in p["Properties"]["Roles"] for s in p["Properties"]["PolicyDocument"]["Statement"]]
    return role, statements


def _actions(statement):
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def test_across_accounts_prod_reads_what_dev_serves_through_one_reader_role_of_dev(delivery_assembly):
    from aws_cdk.assertions import Template

    _, cloud = delivery_assembly
    templates = {s.stack_name: Template.from_json(json.loads(open(s.template_full_path).read()))
                 for s in cloud.stacks_recursively}
    dev, prod = templates["Diagnosa-dev"], templates["Diagnosa-prod"]
    role, statements = _role(dev, "diagnosa-dev-prod-promote-reader")
    # two roles of other accounts may assume it: prod's promote function, and the delivery pipeline's read of what
    # dev serves before prod's approval
    promote, delivery = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    for trust, account, name in ((promote, "210987654321", "diagnosa-prod-promote-function"),
                                 (delivery, "111111111111", "diagnosa-delivery-served-prod")):
        assert trust["Action"] == "sts:AssumeRole"
        assert json.dumps(trust["Principal"]).endswith(f':iam::{account}:root"]]}}}}')
        assert json.dumps(trust["Condition"]).endswith(f':iam::{account}:role/{name}"]]}}]}}}}')
    assert sorted(a for s in statements for a in _actions(s)) == [
        "sagemaker:DescribeEndpoint", "sagemaker:DescribeEndpointConfig", "sagemaker:ListTags"]
    by_sid = {s["Sid"]: s for s in statements}
    assert json.dumps(by_sid["ReadServedVersion"]["Resource"]).endswith(':endpoint/diagnosa-dev"]]}')
    assert json.dumps(by_sid["ReadEndpointConfigs"]["Resource"]).endswith(':endpoint-config/diagnosa-dev-*"]]}')

    _, promote = _role(prod, "diagnosa-prod-promote-function")
    [assume] = [s for s in promote if "sts:AssumeRole" in _actions(s)]
    assert json.dumps(assume["Resource"]).endswith(':iam::123456789012:role/diagnosa-dev-prod-promote-reader"]]}')
    assert not [s for s in promote if any(a.startswith("sagemaker:DescribeEndpoint") for a in _actions(s))]
    [function] = [v for v in prod.find_resources("AWS::Lambda::Function").values()
                  if v["Properties"].get("FunctionName") == "diagnosa-prod-promote"]
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["SOURCE_ENDPOINT"] == "diagnosa-dev"
    assert json.dumps(variables["SOURCE_READER_ROLE"]).endswith(
        ':iam::123456789012:role/diagnosa-dev-prod-promote-reader"]]}')


@pytest.fixture(scope="module")
def one_account(tmp_path_factory):
    """dev and prod in one account, prod promoting from dev, no delivery pipeline: synth refuses any unacknowledged
    cdk-nag finding."""
    from infra.app import build_app, new_app
    from infra.config import stage_config
    from infra.nag import synth

    stages = [stage_config("dev", {"region": "eu-west-1", "account": "123456789012"}),
              stage_config("prod", {"region": "eu-west-1", "account": "123456789012", "promote_from": "dev"})]
    return synth(build_app(new_app(outdir=str(tmp_path_factory.mktemp("one-account.out"))), stages))


def test_in_one_account_prod_reads_devs_endpoint_and_configs_directly(one_account):
    from aws_cdk.assertions import Template

    from infra.gates import cfn_lint, templates
    from infra.nag import findings

    stacks = {s.stack_name: Template.from_json(json.loads(open(s.template_full_path).read()))
              for s in one_account.stacks_recursively}
    assert not [k for k, v in stacks["Diagnosa-dev"].find_resources("AWS::IAM::Role").items()
                if "promote-reader" in json.dumps(v["Properties"].get("RoleName", ""))]
    _, promote = _role(stacks["Diagnosa-prod"], "diagnosa-prod-promote-function")
    by_sid = {s.get("Sid"): s for s in promote}
    assert _actions(by_sid["ReadSourceEndpoint"]) == ["sagemaker:DescribeEndpoint"]
    assert json.dumps(by_sid["ReadSourceEndpoint"]["Resource"]).endswith(':123456789012:endpoint/diagnosa-dev"]]}')
    assert sorted(_actions(by_sid["ReadSourceEndpointConfigs"])) == ["sagemaker:DescribeEndpointConfig",
                                                                     "sagemaker:ListTags"]
    assert json.dumps(by_sid["ReadSourceEndpointConfigs"]["Resource"]).endswith(
        ':123456789012:endpoint-config/diagnosa-dev-*"]]}')
    assert not [s for s in promote if "sts:AssumeRole" in _actions(s)]
    assert findings(one_account.directory) == []
    assert cfn_lint(templates(one_account.directory)) == []


def test_prods_promote_function_gates_with_prods_own_definition_shipped_in_its_lake(one_account):
    """The gate file is prod's definition's gate at prod's thresholds (not dev's, not a copy kept by hand): the
    stack ships it with the step code and the promote function may read that one object."""
    from aws_cdk.assertions import Template

    from infra.config import stage_config
    from infra.pipeline_definition import embedded_definition
    from pipelines.expressions import registration_gate

    prod_config = stage_config("prod", {"region": "eu-west-1", "account": "123456789012", "promote_from": "dev"})
    definition = embedded_definition(prod_config)
    gate = json.loads(definition.gate)
    assert gate == registration_gate(json.loads(definition.text))
    assert {c["parameter"]: c["at_least"] for c in gate} == {
        **{p: prod_config.recall_threshold for p in definition.parameters if p.startswith("RecallThreshold")},
        "OrphanRecallThreshold": prod_config.orphan_threshold,
        "UnseenOrphanRecallThreshold": prod_config.unseen_threshold}
    prod = Template.from_json(json.loads(open(
        [s for s in one_account.stacks_recursively if s.stack_name == "Diagnosa-prod"][0].template_full_path).read()))
    [function] = [v for v in prod.find_resources("AWS::Lambda::Function").values()
                  if v["Properties"].get("FunctionName") == "diagnosa-prod-promote"]
    assert function["Properties"]["Environment"]["Variables"]["GATE_KEY"] == definition.gate_key
    _, promote = _role(prod, "diagnosa-prod-promote-function")
    [read] = [s for s in promote if s.get("Sid") == "ReadThisStagesGate"]
    assert _actions(read) == ["s3:GetObject"] and json.dumps(read["Resource"]).endswith(f'/{definition.gate_key}"]]}}')
    # the step-code assets (copied into artifacts/code/; dev's and prod's, whose gates are alike here) hold it
    shipped = list(Path(one_account.directory).rglob(definition.gate_key.removeprefix("artifacts/code/")))
    assert shipped and all(json.loads(f.read_text()) == gate for f in shipped)
    # other thresholds, another key: the write-once code prefix never holds two gates under one name
    stricter = embedded_definition(stage_config("prod", {"region": "eu-west-1", "account": "123456789012",
                                                         "promote_from": "dev", "recall_threshold": 0.85}))
    assert stricter.gate_key != definition.gate_key and {c["at_least"] for c in json.loads(stricter.gate)} >= {0.85}


# ------------------------------------------------------------------------------------------ the approval's version
# The delivery pipeline reads what dev serves just before prod's approval (ServedModel-prod), shows it in the approval
# and PromoteModel-prod asks for that version: the steps' own buildspec commands, run here as CodeBuild runs them.


def _step(delivery_assembly, cfn_text, name):
    """(build commands, environment) of the delivery pipeline's CodeBuild step ``name``, as synthesized."""
    _, cloud = delivery_assembly
    [stack] = [s for s in cloud.stacks_recursively if s.stack_name == "Diagnosa-delivery"]
    resources = json.loads(Path(stack.template_full_path).read_text())["Resources"]
    [pipeline] = [r for r in resources.values() if r["Type"] == "AWS::CodePipeline::Pipeline"]
    [action] = [a for s in pipeline["Properties"]["Stages"] for a in s["Actions"] if a["Name"] == name]
    project = resources[action["Configuration"]["ProjectName"]["Ref"]]["Properties"]
    spec = json.loads(cfn_text(project["Source"]["BuildSpec"]).replace("<Ref:AWS::Partition>", "aws"))
    env = {v["Name"]: cfn_text(v["Value"]).replace("<Ref:AWS::Partition>", "aws")
           for v in project["Environment"].get("EnvironmentVariables", [])}
    return spec, env, action


def _run_build(commands, env, cwd):
    """The commands in one shell, as CodeBuild runs a phase: in order, stopping at the first that fails."""
    import subprocess

    script = "".join(f"{c}\nrc=$?; if [ $rc -ne 0 ]; then exit $rc; fi\n" for c in commands)
    return subprocess.run(["sh", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def codebuild(tmp_path):
    """A CodeBuild-like shell: the source checkout's promote function, this venv's python (boto3 pinned as the
    step installs it), an ``aws`` on PATH that records its arguments (the Lambda invoke: moto cannot run a
    function), and AWS reached at a moto server sharing the test's moto state."""
    import os
    import shutil
    import sys

    from moto.server import ThreadedMotoServer

    checkout = tmp_path / "src"
    (checkout / "infra/functions/promote").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "infra/functions/promote/handler.py",
                checkout / "infra/functions/promote/handler.py")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    calls = tmp_path / "aws-calls.jsonl"
    (bin_dir / "aws").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                 f"open({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                                 "open(sys.argv[-1], 'w').write('{}')\nprint('{\"StatusCode\": 200}')\n")
    (bin_dir / "aws").chmod(0o755)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": f"http://{host}:{port}"}

    def run(commands, env):
        return _run_build(commands, {**base, **env}, checkout)

    def invoked():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    yield run, invoked
    server.stop()


def _payload(arguments):
    return json.loads(arguments[arguments.index("--payload") + 1])


def test_prod_promotes_the_version_dev_served_when_the_approval_was_asked_and_only_while_dev_serves_it(
        dev, deploy_fn, promote_fn, delivery_assembly, cfn_text, codebuild):
    sm, s3, env, (v1, v2) = dev
    run, invoked = codebuild
    first = deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)  # dev serves v1
    spec, read_env, action = _step(delivery_assembly, cfn_text, "ServedModel-prod")
    assert spec["env"]["exported-variables"] == ["SERVED_VERSION", "SERVED_MODEL"]
    # across accounts (the pipeline's account is not dev's): through dev's reader role
    assert read_env["SOURCE_READER_ROLE"] == "arn:aws:iam::123456789012:role/diagnosa-dev-prod-promote-reader"
    read = run(spec["phases"]["build"]["commands"] + ['echo "exported: $SERVED_VERSION|$SERVED_MODEL"'], read_env)
    assert read.returncode == 0, read.stderr
    assert read.stdout.splitlines()[-1] == f"exported: 1|{v1}"
    approved = {"APPROVED_VERSION": "1", "APPROVED_MODEL": v1}  # what CodePipeline passes on (checked below)

    # While the approval waits, dev deploys v2 and its update completes: v2 was never approved for prod.
    deploy_fn.handler(_event(v2, "2026-01-01T01:00:00Z"), sagemaker=sm, env=DEV_ENV, now=3600)
    _endpoint().endpoint_config_name = sm.list_endpoint_configs(
        NameContains="diagnosa-dev-v2")["EndpointConfigs"][0]["EndpointConfigName"]
    spec, promote_env, promote_action = _step(delivery_assembly, cfn_text, "PromoteModel-prod")
    variables = {v["name"]: v["value"] for v in json.loads(promote_action["Configuration"]["EnvironmentVariables"])}
    assert variables == {"APPROVED_VERSION": f"#{{{action['Namespace']}.SERVED_VERSION}}",
                         "APPROVED_MODEL": f"#{{{action['Namespace']}.SERVED_MODEL}}"}
    promote = run(spec["phases"]["build"]["commands"], {**promote_env, **approved})
    assert promote.returncode == 0, promote.stdout + promote.stderr
    [arguments] = invoked()
    assert arguments[:2] == ["lambda", "invoke"] and _payload(arguments) == {"version": 1}
    with pytest.raises(promote_fn.Refused, match=r"diagnosa-dev serves .*/diagnosa-dev/2, not version 1"):
        promote_fn.handler(_payload(arguments), source=sm, target=sm, s3=s3, env=env)
    assert _prod_versions(sm) == []
    # v2's canary trips the alarms and v1 serves again: v1, the approved version, is promoted
    _endpoint().endpoint_config_name = first["endpoint_config"]
    assert promote_fn.handler(_payload(arguments), source=sm, target=sm, s3=s3, env=env)["source"] == v1


def test_when_dev_serves_nothing_settled_the_approval_says_so_and_the_promotion_promotes_nothing(
        dev, promote_fn, delivery_assembly, cfn_text, codebuild):
    run, invoked = codebuild
    spec, read_env, _ = _step(delivery_assembly, cfn_text, "ServedModel-prod")
    read = run(spec["phases"]["build"]["commands"] + ['echo "exported: $SERVED_VERSION|$SERVED_MODEL"'], read_env)
    assert read.returncode == 0, read.stderr  # the infrastructure change may still be approved and deployed
    assert read.stdout.splitlines()[-1].startswith("exported: none|diagnosa-dev does not exist: ")
    reason = read.stdout.splitlines()[-1].partition("|")[2]
    spec, promote_env, _ = _step(delivery_assembly, cfn_text, "PromoteModel-prod")
    promote = run(spec["phases"]["build"]["commands"], {**promote_env, "APPROVED_VERSION": "none", "APPROVED_MODEL": reason})
    assert promote.returncode == 1
    assert promote.stdout.strip() == ("nothing promoted: when the approval was asked, dev's endpoint served no settled "
                                      f"version ({reason})")
    # anything but a version number is refused before any invoke
    for value in ("", "1; touch pwned", "1e3", "-1", "1 2"):
        promote = run(spec["phases"]["build"]["commands"], {**promote_env, "APPROVED_VERSION": value})
        assert promote.returncode == 1 and promote.stdout.startswith("nothing promoted"), value
    assert invoked() == []


def test_a_read_that_fails_stops_the_pipeline_before_the_approval(delivery_assembly, cfn_text, codebuild):
    run, _ = codebuild
    spec, read_env, _ = _step(delivery_assembly, cfn_text, "ServedModel-prod")
    # AWS unreachable (no network, no permission...): nothing can be said of what dev serves
    read = run(spec["phases"]["build"]["commands"] + ['echo "exported: $SERVED_VERSION"'],
               {**read_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"})
    assert read.returncode != 0 and "exported" not in read.stdout
    assert "Could not connect to the endpoint URL" in read.stderr


def test_the_served_read_is_the_promote_functions_own(dev, deploy_fn, promote_fn):
    sm, _, env, (v1, _) = dev
    assert promote_fn.served(env, reader=sm)[0] == "none"
    deploy_fn.handler(_event(v1, "2026-01-01T00:00:00Z"), sagemaker=sm, env=DEV_ENV, now=0)
    assert promote_fn.served(env, reader=sm) == ("1", v1)
    _endpoint().endpoint_status = "Updating"
    version, reason = promote_fn.served(env, reader=sm)
    assert version == "none" and reason.startswith("diagnosa-dev is Updating, not InService")
    # what the approval shows is bounded (CodePipeline's action configuration holds 1,000 characters)
    long = {**env, "SOURCE_ENDPOINT": "diagnosa-gone", "SOURCE_GROUP": "g" * 600}
    assert len(promote_fn.served(long, reader=sm)[1]) == promote_fn.SERVED_REASON_CHARS
