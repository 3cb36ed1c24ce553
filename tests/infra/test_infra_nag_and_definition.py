"""cdk-nag gates synth (zero unacknowledged findings, and a bad resource fails), and the pipeline
embedded in the stack is the one ``pipelines/`` builds for the same bucket, role and region.

``make synth`` (docs/deploy.md §1) runs this synthesis through the pinned CDK CLI and ``cdk.json``; here the
same app and gate (``infra.nag.synth``) run in process, for the stages the conftest sets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from moto import mock_aws

from infra.nag import findings
from pipelines.expressions import all_steps


def test_both_packs_ran_with_zero_unacknowledged_findings(assembly):
    app, cloud = assembly
    assert findings(cloud.directory) == []
    # The packs are registered on the app (Validations plugins), both of them.
    from infra.nag import PACKS
    assert PACKS == ("AwsSolutions", "HIPAA.Security")


def test_an_unacknowledged_finding_fails_synth(tmp_path):
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    from infra.app import new_app
    from infra.nag import NagFindings, apply_packs, synth

    app = new_app(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Bad")
    s3.Bucket(stack, "Plain")  # no KMS, no TLS-only policy, no logging, no versioning
    apply_packs(app)
    with pytest.raises(NagFindings) as err:
        synth(app)
    found = "\n".join(err.value.findings)
    assert "AwsSolutions-S10 Bad/Plain/Resource" in found
    assert "HIPAA.Security-S3DefaultEncryptionKMS Bad/Plain/Resource" in found


def test_a_new_wildcard_grant_on_any_role_fails_synth(tmp_path):
    """The wildcard-resource acknowledgement covers only the unscoped-actions policies: a broad grant added to a
    role's own policy (a delete, an endpoint teardown, a decrypt, all on "*") is a finding, and synth fails."""
    from aws_cdk import aws_iam as iam

    from infra.app import build_app, new_app, stage_stacks
    from infra.config import stage_config
    from infra.nag import NagFindings, synth

    app = build_app(new_app(outdir=str(tmp_path)),
                    [stage_config("dev", {"region": "eu-west-1", "account": "123456789012"})])
    stack = stage_stacks(app)["Diagnosa-dev"]
    grants = {"JobRole": "s3:DeleteObject", "ModelRole": "sagemaker:DeleteEndpoint", "MonitoringRole": "kms:Decrypt"}
    for role, action in grants.items():
        policy = stack._policies[stack.node.find_child(role).node.path]
        policy.add_statements(iam.PolicyStatement(actions=[action], resources=["*"]))
    with pytest.raises(NagFindings) as err:
        synth(app)
    wildcard = [f for f in err.value.findings if f.startswith("AwsSolutions-IAM5[Resource::*] ")]
    assert sorted(f.split("/")[2] for f in wildcard) == [f"{role}Policy" for role in sorted(grants)], err.value


def test_a_role_cannot_be_given_an_unlisted_action_on_everything(tmp_path):
    from aws_cdk import aws_iam as iam

    from infra.app import build_app, new_app, stage_stacks
    from infra.config import stage_config

    app = build_app(new_app(outdir=str(tmp_path)),
                    [stage_config("dev", {"region": "eu-west-1", "account": "123456789012"})])
    stack = stage_stacks(app)["Diagnosa-dev"]
    with pytest.raises(ValueError, match=r"role Extra: s3:DeleteObject on Resource '\*'"):
        stack._sagemaker_role("Extra", "extra", "a test role", [
            iam.PolicyStatement(actions=["s3:DeleteObject"], resources=["*"])])


def test_app_main_exits_nonzero_on_findings(tmp_path, monkeypatch, capsys):
    from infra import app as app_module

    monkeypatch.setattr(app_module, "build_app", lambda: (_ for _ in ()).throw(ValueError("stage dev: bad")))
    assert app_module.main() == 1
    assert "synth failed: stage dev: bad" in capsys.readouterr().err


def test_template_validation_is_reported_with_its_description_and_not_as_a_finding_to_acknowledge(tmp_path):
    """CDK's own template validation (a value CloudFormation would refuse) shares cdk-nag's report: it used to be
    listed as 'unacknowledged cdk-nag finding(s): F3031 <path>', without what was wrong."""
    import aws_cdk as cdk
    from aws_cdk import aws_cloudwatch as cloudwatch

    from infra.app import new_app
    from infra.nag import NagFindings, apply_packs, synth

    app = new_app(outdir=str(tmp_path))
    stack = cdk.Stack(cdk.Stage(app, "dev"), "S", env=cdk.Environment(account="123456789012", region="eu-west-1"))
    cloudwatch.Alarm(stack, "Drift", metric=cloudwatch.Metric(namespace=":Diag", metric_name="DriftScore"), threshold=1,
                     evaluation_periods=1)
    apply_packs(app)
    with pytest.raises(NagFindings) as err:
        synth(app)
    message = str(err.value)
    assert "1 template validation error(s) (a value CloudFormation would refuse: fix the setting" in message
    assert "F3031 (CloudFormation Validate): Namespace: ':Diag' does not match pattern" in message
    assert "\n    dev/S/Drift/Resource" in message
    # cdk-nag's own findings: under their pack's name, with the rule's description.
    assert "1 unacknowledged cdk-nag finding(s)" in message
    assert "HIPAA.Security-CloudWatchAlarmAction (HIPAA.Security): The CloudWatch alarm does not have" in message
    assert err.value.findings == ["F3031 dev/S/Drift/Resource", "HIPAA.Security-CloudWatchAlarmAction dev/S/Drift/Resource"]


def test_a_stack_needing_a_context_lookup_fails_synth_naming_the_stage_and_the_lookup(tmp_path):
    """A VPC with max_azs in a stack of known account asks the CLI for the account's zones: with credentials the
    CLI looks them up (the delivery pipeline's build step may not), offline it writes dummy1a/b. Synth refuses it."""
    import aws_cdk as cdk
    from aws_cdk import aws_ec2 as ec2

    from infra.app import new_app
    from infra.nag import MissingContext, synth

    app = new_app(outdir=str(tmp_path))
    stack = cdk.Stack(cdk.Stage(app, "prod"), "S", env=cdk.Environment(account="333333333333", region="eu-west-1"))
    ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=0, subnet_configuration=[ec2.SubnetConfiguration(
        name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24)])
    with pytest.raises(MissingContext) as err:
        synth(app)
    message = str(err.value)
    assert message.startswith("stage prod needs the context lookup availability-zones (account 333333333333, region "
                              "eu-west-1): the app is built to need none") and "\n" not in message
    assert message.count("needs the context lookup") == 1  # the app's manifest repeats the stage's entry


def test_the_shipped_stages_with_a_known_account_need_no_lookup(tmp_path, monkeypatch):
    """`make synth` in the delivery pipeline's build step runs with credentials, so CDK_DEFAULT_ACCOUNT is set and
    every stage has a concrete account: prod's VPC used to need an availability-zone lookup (failing there, and
    writing CDK's placeholder zones dummy1a/b offline). Its subnets take the region's zones from CloudFormation."""
    from infra.app import build_app, new_app
    from infra.nag import synth

    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "444444444444")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")
    shipped = json.loads((Path(__file__).parents[2] / "cdk.json").read_text())["context"]
    cloud = synth(build_app(new_app(context=shipped, outdir=str(tmp_path / "cdk.out"))))
    for manifest in Path(cloud.directory).rglob("manifest.json"):
        assert "missing" not in json.loads(manifest.read_text()), manifest
    [prod] = [s for s in cloud.stacks_recursively if s.stack_name == "Diagnosa-prod"]
    assert prod.environment.account == "444444444444"
    subnets = [r["Properties"] for r in json.loads(Path(prod.template_full_path).read_text())["Resources"].values()
               if r["Type"] == "AWS::EC2::Subnet"]
    assert [s["AvailabilityZone"] for s in subnets] == [{"Fn::Select": [i, {"Fn::GetAZs": ""}]} for i in range(2)]
    assert "dummy1" not in json.dumps([p.read_text() for p in Path(cloud.directory).rglob("*.template.json")])


def _resolve(value, refs):
    """Render a CloudFormation string expression (Fn::Join / Ref / Fn::GetAtt) with concrete values."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_resolve(p, refs) for p in parts)
    if "Ref" in value:
        return refs[value["Ref"]]
    if "Fn::GetAtt" in value:
        return refs["/".join(value["Fn::GetAtt"])]
    raise AssertionError(f"unexpected expression {value}")


def test_embedded_definition_is_the_one_pipelines_builds(dev, stacks, tmp_path):
    from infra.pipeline_definition import SENTINEL_BUCKET, SENTINEL_KMS_KEY, SENTINEL_ROLE

    stack = stacks["Diagnosa-dev"]
    [pipeline] = dev.find_resources("AWS::SageMaker::Pipeline").values()
    body = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]
    lake = stack.get_logical_id(stack.lake.node.default_child)
    job_role = stack.get_logical_id(stack.job_role.node.default_child)
    key = stack.get_logical_id(stack.key.node.default_child)
    bucket, role = "diagnosa-dev-lake-123456789012", "arn:aws:iam::123456789012:role/diagnosa-dev-jobs"
    key_arn = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    embedded = _resolve(body, {lake: bucket, f"{job_role}/Arn": role, f"{key}/Arn": key_arn})
    assert SENTINEL_BUCKET not in embedded and SENTINEL_ROLE not in embedded and SENTINEL_KMS_KEY not in embedded
    # Every job's storage volume and outputs are encrypted with the stage's own key.
    jobs = [step["Arguments"] for step in all_steps(json.loads(embedded)["Steps"])
            if step["Type"] in ("Processing", "Training")]
    assert len(jobs) == 4 + len(stack.config.families)  # Preprocess, Transform, Select, Evaluate + one per family
    for job in jobs:
        volume = job.get("ProcessingResources", {}).get("ClusterConfig") or job["ResourceConfig"]
        output = job.get("ProcessingOutputConfig") or job["OutputDataConfig"]
        assert volume["VolumeKmsKeyId"] == key_arn and output["KmsKeyId"] == key_arn

    # What `diagnosa pipeline definition` prints for the stage (its bucket, role, name, group; deployment left
    # to the deploy function), run through the CLI itself (offline; moto stands in for any AWS call).
    from diagnosa.cli import main

    out = tmp_path / "definition.json"
    with mock_aws():
        assert main(["pipeline", "definition", "--bucket", bucket, "--region", "eu-west-1", "--role-arn", role,
                     "--name", "diagnosa-dev", "--model-package-group", "diagnosa-dev", "--no-deploy-steps",
                     "--families", ",".join(stack.config.families), "--kms-key", key_arn, "--out", str(out)]) == 0
    printed = json.loads(out.read_text(encoding="utf-8"))
    expected = json.dumps(printed)  # the CLI pretty-prints; compare the canonical compact form below
    assert json.loads(embedded) == printed
    assert embedded == expected  # byte for byte (same key order and separators): one source of truth
    _assert_stack_deploys_what_the_definition_reads(embedded, bucket, stack)


def _assert_stack_deploys_what_the_definition_reads(embedded: str, bucket: str, stack) -> None:
    """Every object or folder of artifacts/code/ the definition names is among the objects the stack deploys."""
    import re

    keys = {key for key, _ in stack.definition.objects}
    named = set(re.findall(rf"s3://{re.escape(bucket)}/(artifacts/code/[^\"]+)", embedded))
    assert {"sourcedir.tar.gz", "runproc.sh", "install_requirements.py"} <= {n.rsplit("/", 1)[-1] for n in named}
    for name in named:
        assert name in keys or any(k.startswith(name.rstrip("/") + "/") for k in keys), name


def test_in_vpc_mode_every_pipeline_job_runs_in_the_isolated_subnets(prod, stacks, cfn_text):
    from infra.pipeline_definition import SENTINEL_SECURITY_GROUP, SENTINEL_SUBNETS

    stack = stacks["Diagnosa-prod"]
    [pipeline] = prod.find_resources("AWS::SageMaker::Pipeline").values()
    text = cfn_text(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"])
    assert not any(sentinel in text for sentinel in (*SENTINEL_SUBNETS, SENTINEL_SECURITY_GROUP))
    subnets = [f"<Ref:{stack.get_logical_id(s.node.default_child)}>" for s in stack.vpc.isolated_subnets]
    group = f"<Att:{stack.get_logical_id(stack.function_sg.node.default_child)}.GroupId>"
    jobs = [step for step in all_steps(json.loads(text)["Steps"]) if step["Type"] in ("Processing", "Training")]
    assert len(jobs) == 4 + len(stack.config.families)  # Preprocess, Transform, Select, Evaluate + one per family
    for step in jobs:
        network = step["Arguments"].get("NetworkConfig", {}).get("VpcConfig") or step["Arguments"]["VpcConfig"]
        assert network == {"SecurityGroupIds": [group], "Subnets": subnets}, step["Name"]
    # The job role may attach the jobs' network interfaces there (actions IAM cannot scope: its -unscoped policy).
    unscoped = [p["Properties"] for p in prod.find_resources("AWS::IAM::ManagedPolicy").values()
                if p["Properties"]["ManagedPolicyName"] == "diagnosa-prod-jobs-unscoped"]
    assert [s.get("Sid") for s in unscoped[0]["PolicyDocument"]["Statement"]] == ["EcrLogin", "JobNetworkInterfaces"]


def test_the_definition_refuses_half_a_vpc_and_malformed_ids():
    from pipelines.offline import build_offline

    role = "arn:aws:iam::123456789012:role/r"
    with pytest.raises(ValueError, match="subnets and security_group_ids go together"):
        build_offline("b-bucket", role, region="eu-west-1", subnets=("subnet-0abc",))
    with pytest.raises(ValueError, match=r"subnet id\(s\) \['vpc-1'\] are not subnet ids"):
        build_offline("b-bucket", role, region="eu-west-1", subnets=("vpc-1",), security_group_ids=("sg-1",))
