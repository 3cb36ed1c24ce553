"""The deploy and retrain functions' environments as the stack gives them to the dev stage (shared by the function tests).

The stack's values that are tokens (a Ref, a GetAtt: the lake bucket's name, the key's and the model role's ARNs) have
stand-ins here; every other value is the template's. test_infra_functions.py holds ENV to the synthesized template
(the same keys, the same literal values, one stand-in per token), so a variable the stack renames, adds or drops, or
a default it changes, fails there rather than passing here. LAKE_BUCKET is always set by the stack: the tests that
run the function create that bucket under moto (``create_lake``)."""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from moto import mock_aws

REGION = "eu-west-1"
LAKE = "lake"
ENV = {
    "ENDPOINT_NAME": "diagnosa-dev", "MODEL_PACKAGE_GROUP": "diagnosa-dev", "VARIANT_NAME": "AllTraffic",
    "LAKE_BUCKET": LAKE,
    "MODEL_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-model",
    "KMS_KEY_ARN": "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555",
    "CAPTURE_URI": f"s3://{LAKE}/capture", "CAPTURE_PERCENT": "100",
    "INSTANCE_TYPE": "ml.m5.large", "MIN_INSTANCES": "1", "MAX_INSTANCES": "2", "INVOCATIONS_PER_INSTANCE": "200",
    "TRAFFIC_SHIFTING": "CANARY", "CANARY_PERCENT": "10", "BAKE_SECONDS": "600",
    "ROLLBACK_ALARMS": "diagnosa-dev-5xx,diagnosa-dev-model-latency",
    "MANAGED_BY": "diagnosa-dev-deploy",
    "RESOURCE_TAGS": '{"data-classification": "phi", "project": "diagnosa", "stage": "dev"}',
}


# The retrain function's, as the stack gives it to the dev stage (AWS_REGION is Lambda's own; the stack's variables
# are the others, which test_functions_in_lambda_runtime.py holds to the synthesized template's names).
RETRAIN_ENV = {
    "PIPELINE_NAME": "diagnosa-dev", "LAKE_BUCKET": LAKE, "DATASET": "patients", "ENDPOINT_NAME": "diagnosa-dev",
    "RAW_BUCKET": "raw", "FOLD_JOB_PREFIX": "diagnosa-dev-fold",
    "FOLD_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-fold-feedback",
    "IMAGE_URI": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "CODE_PREFIX": "artifacts/code/0123456789abcdef/", "INSTANCE_TYPE": "ml.m5.large", "KMS_KEY_ARN": ENV["KMS_KEY_ARN"],
    "AWS_REGION": REGION,
}

# The monitor function's, likewise.
MONITOR_ENV = {
    "LAKE_BUCKET": LAKE, "ENDPOINT_NAME": "diagnosa-dev", "JOB_PREFIX": "diagnosa-dev-monitor",
    "JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/diagnosa-dev-monitoring", "IMAGE_URI": "img",
    "CODE_PREFIX": "artifacts/code/0123456789abcdef/", "INSTANCE_TYPE": "ml.m5.large", "KMS_KEY_ARN": ENV["KMS_KEY_ARN"],
    "METRICS_NAMESPACE": "Diagnosa/Monitoring", "SCHEDULE": "rate(1 day)", "FEEDBACK_LAG": "7d", "AWS_REGION": REGION,
}


IN_SERVICE = {"detail-type": "SageMaker Endpoint State Change",
              "detail": {"EndpointName": "diagnosa-dev", "EndpointStatus": "IN_SERVICE"}}
BASELINE = "artifacts/monitoring/diagnosa-dev/baseline/"  # the endpoint's baseline prefix the function fills
BASELINE_FILES = ("data/statistics.json", "data/constraints.json", "predictions/prediction_baseline.json",
                  "predictions/model_quality_constraints.json")


@contextmanager
def dev_stage() -> Iterator[None]:
    """moto holding what the dev stage's deploy function finds on AWS: its model package group and ENV's lake."""
    with mock_aws():
        boto3.client("sagemaker", region_name=REGION).create_model_package_group(ModelPackageGroupName="diagnosa-dev")
        create_lake()
        yield


def create_lake(region: str = REGION) -> None:
    """ENV's lake bucket, under the moto mock in force (the function lists and clears its baselines there)."""
    boto3.client("s3", region_name=region).create_bucket(
        Bucket=LAKE, CreateBucketConfiguration={"LocationConstraint": region})


def function_environment(template, cfn_text, name: str) -> dict[str, str]:
    """The environment the template gives the Lambda function named ``name``, its values as cfn_text renders them."""
    [function] = [f["Properties"] for f in template.find_resources("AWS::Lambda::Function").values()
                  if f["Properties"].get("FunctionName") == name]
    return {key: cfn_text(value) for key, value in function["Environment"]["Variables"].items()}


TOKEN = re.compile(r"<(?:Ref|Att):[^<>]+>|<token>")  # as conftest's cfn_text writes a Ref, a GetAtt, another token


def differences(synthesized: dict[str, str], env: dict[str, str]) -> list[str]:
    """How ``env`` differs from an environment of the template (``synthesized``: its values as cfn_text renders
    them): the keys must be the same, a literal value equal, and a value with tokens must read as the template's with
    each token replaced by one stand-in, the same wherever the token appears (the lake's name in LAKE_BUCKET and in
    CAPTURE_URI)."""
    found = []
    if set(env) != set(synthesized):
        found.append(f"variables only the tests set: {sorted(set(env) - set(synthesized))}; "
                     f"only the stack sets: {sorted(set(synthesized) - set(env))}")
    stand_ins: dict[str, str] = {}
    for key in sorted(set(env) & set(synthesized)):
        text, tokens = synthesized[key], TOKEN.findall(synthesized[key])
        literal = TOKEN.split(text)
        match = re.fullmatch("(.+?)".join(re.escape(part) for part in literal), env[key])
        if match is None:
            found.append(f"{key}: the tests say {env[key]!r}, the stack {text!r}")
            continue
        for token, value in zip(tokens, match.groups()):
            if token != "<token>" and stand_ins.setdefault(token, value) != value:
                found.append(f"{key}: {token} stands for {value!r} here, {stand_ins[token]!r} elsewhere")
    return found
