"""One synthesis per test session: the app with a dev stage (no VPC, AWS's images) and a prod stage
(VPC mode, so baked images)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lambda_functions import load_function

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")  # node 20 here; jsii warns at every start


@pytest.fixture(scope="session")
def assembly(tmp_path_factory):
    from infra.app import build_app, new_app
    from infra.config import stage_config
    from infra.nag import synth

    stages = [stage_config("dev", {"region": "eu-west-1", "account": "123456789012"}),
              stage_config("prod", {"region": "eu-west-1", "account": "123456789012", "vpc": True,
                                    "endpoint_min_instances": 2, "endpoint_max_instances": 6,
                                    "alarm_emails": ["oncall@example.org", "ml-team@example.org"]})]
    app = build_app(new_app(outdir=str(tmp_path_factory.mktemp("cdk.out"))), stages)
    return app, synth(app)


@pytest.fixture(scope="session")
def delivery_assembly(tmp_path_factory):
    """The delivery pipeline in its own account deploying dev and prod in two others; prod promotes dev's
    models and bakes its images (image assets to publish)."""
    from infra.app import build_app, new_app
    from infra.config import DeliveryConfig, stage_config
    from infra.nag import synth

    stages = [stage_config("dev", {"region": "eu-west-1", "account": "123456789012"}),
              stage_config("prod", {"region": "eu-west-1", "account": "210987654321", "baked_images": True,
                                    "promote_from": "dev"})]
    delivery = DeliveryConfig(region="eu-west-1", account="111111111111", stages=("dev", "prod"), repository="diagnosa")
    app = build_app(new_app(outdir=str(tmp_path_factory.mktemp("delivery.out"))), stages, delivery)
    return app, synth(app)


@pytest.fixture(scope="session")
def stacks(assembly):
    app, _ = assembly
    from infra.app import stage_stacks

    return stage_stacks(app)


@pytest.fixture(scope="session")
def templates(assembly):
    from aws_cdk.assertions import Template

    _, cloud = assembly
    return {s.stack_name: Template.from_json(json.loads(Path(s.template_full_path).read_text()))
            for s in cloud.stacks_recursively}


def stack_artifact(cloud, name):
    """The cloud assembly artifact of the stack named ``name`` (stages are nested assemblies)."""
    [artifact] = [s for s in cloud.stacks_recursively if s.stack_name == name]
    return artifact


@pytest.fixture(scope="session")
def dev(templates):
    return templates["Diagnosa-dev"]


@pytest.fixture(scope="session")
def prod(templates):
    return templates["Diagnosa-prod"]


@pytest.fixture(scope="session")
def deploy_fn():
    return load_function("deploy")


@pytest.fixture(scope="session")
def retrain_fn():
    return load_function("retrain")


@pytest.fixture(scope="session")
def monitor_fn():
    return load_function("monitor")


@pytest.fixture(scope="session")
def promote_fn():
    return load_function("promote")


def _cfn_text(value) -> str:
    """A CloudFormation string expression as text, tokens written as <Ref:X>, <Att:X.Y> or <token>; Fn::Select of an
    Fn::Split evaluated and AWS::URLSuffix as in the aws partition (CDK Pipelines' buildspecs name registries so)."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_cfn_text(p) for p in parts)
    if "Fn::Select" in value and isinstance(value["Fn::Select"][1], dict) and "Fn::Split" in value["Fn::Select"][1]:
        index, items = value["Fn::Select"]
        sep, text = items["Fn::Split"]
        return _cfn_text(text).split(sep)[index]
    if value.get("Ref") == "AWS::URLSuffix":
        return "amazonaws.com"
    if "Ref" in value:
        return f"<Ref:{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return "<Att:" + ".".join(value["Fn::GetAtt"]) + ">"
    return "<token>"


@pytest.fixture(scope="session")
def cfn_text():
    """Render a template's string expression (a pipeline definition, a dashboard body) to parse it."""
    return _cfn_text


def _run_objects(template, cfn_text, execution="exec-0001"):
    """What one execution of the stage's pipeline writes under artifacts/runs/ (from the definition as the template
    embeds it, the lake's bucket left as written): ``(registered, outputs)``: request path -> key of each object the
    RegisterModel step names, and ``<step>/<output>`` -> the key folder of each job output."""
    from pipelines.expressions import all_steps

    [pipeline] = template.find_resources("AWS::SageMaker::Pipeline").values()
    steps = all_steps(json.loads(cfn_text(pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]))[
        "Steps"])
    uris = {f"Steps.{s['Name']}.ProcessingOutputConfig.Outputs['{o['OutputName']}'].S3Output.S3Uri": o["S3Output"]["S3Uri"]
            for s in steps if s["Type"] == "Processing" for o in s["Arguments"]["ProcessingOutputConfig"]["Outputs"]}

    def value(node):
        if isinstance(node, str):
            return node
        if "Std:Join" in node:
            return node["Std:Join"]["On"].join(value(v) for v in node["Std:Join"]["Values"])
        if node.get("Get") == "Execution.PipelineExecutionId":
            return execution
        return value(uris[node["Get"]]) if node.get("Get") in uris else None

    def key(uri):
        return uri.removeprefix("s3://").split("/", 1)[1]

    outputs = {f"{s['Name']}/{o['OutputName']}": key(value(o["S3Output"]["S3Uri"])) for s in steps
               if s["Type"] == "Processing" for o in s["Arguments"]["ProcessingOutputConfig"]["Outputs"]}
    outputs |= {f"{s['Name']}/model": key(value(s["Arguments"]["OutputDataConfig"]["S3OutputPath"])) for s in steps
                if s["Type"] == "Training"}
    [register] = [s["Arguments"] for s in steps if s["Type"] == "RegisterModel"]
    registered = {}

    def walk(node, path):
        for k, v in (node.items() if isinstance(node, dict) else enumerate(node)):
            where = ".".join(map(str, path if k == "S3Uri" else (*path, k)))
            if k in ("S3Uri", "ModelDataUrl") or path == ("CustomerMetadataProperties",):
                text = value(v)
                if text and text.startswith("s3://"):
                    registered[where] = key(text)
            elif isinstance(v, (dict, list)) and not (isinstance(v, dict) and ("Get" in v or "Std:Join" in v)):
                walk(v, (*path, k))

    walk(register, ())
    return registered, outputs


@pytest.fixture(scope="session")
def run_objects(cfn_text):
    """``run_objects(template)``: see :func:`_run_objects`."""
    return lambda template, execution="exec-0001": _run_objects(template, cfn_text, execution)
