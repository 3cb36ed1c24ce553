"""The deploy function installs the serving model's baselines with the S3 access its role has on AWS. Its s3:ListBucket
is granted only for listings under the endpoint's baseline prefix (an s3:prefix condition, infra/stack.py), and S3
answers a HeadObject or GetObject of a missing key with 404 only to a caller allowed s3:ListBucket for it: such a
request carries no s3:prefix, so the role gets 403 Forbidden instead. moto answers 404 whatever the grants, so here
S3 is moto behind those answers (tests/s3_grants.py), and a listing outside the grant is refused AccessDenied."""
from __future__ import annotations

import json

import boto3
import pytest
from aws_calls import update_endpoints
from botocore.exceptions import ClientError
from deploy_env import BASELINE, BASELINE_FILES, ENV, IN_SERVICE, REGION, dev_stage
from s3_grants import PrefixListGrant

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
BUCKET = ENV["LAKE_BUCKET"]
LIST_GRANT = (BASELINE,)  # the s3:prefix the deploy role may list: BASELINE + "*" (ListMonitoringBaselines)
FILES = sorted(BASELINE_FILES)


@pytest.fixture
def aws():
    with dev_stage():
        sm = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        PrefixListGrant(s3, LIST_GRANT)  # every listing of this client, the function's and the test's, in the grant
        yield sm, s3, boto3.client("application-autoscaling", region_name=REGION)


def approved_with_baselines(sm, s3, execution):
    run = f"artifacts/runs/{execution}"
    for path in ("baseline/statistics.json", "baseline/constraints.json", "evaluation/prediction_baseline.json",
                 "evaluation/model_quality_constraints.json", "evaluation/evaluation.json"):
        s3.put_object(Bucket=BUCKET, Key=f"{run}/{path}", Body=json.dumps({"file": path}).encode())

    def source(path):
        return {"ContentType": "application/json", "S3Uri": f"s3://{BUCKET}/{run}/{path}"}

    arn = sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://{BUCKET}/{run}/model.tar.gz"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelQuality": {"Statistics": source("evaluation/evaluation.json"),
                                       "Constraints": source("evaluation/model_quality_constraints.json")},
                      "ModelDataQuality": {"Statistics": source("baseline/statistics.json"),
                                           "Constraints": source("baseline/constraints.json")}},
        CustomerMetadataProperties={"diagnosa:prediction-baseline": f"s3://{BUCKET}/{run}/evaluation/prediction_baseline.json"},
    )["ModelPackageArn"]
    return arn, {"detail-type": "SageMaker Model Package State Change",
                 "detail": {"ModelPackageArn": arn, "ModelPackageGroupName": "diagnosa-dev",
                            "ModelApprovalStatus": "Approved"}}


def installed(s3):
    return sorted(o["Key"][len(BASELINE):] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=BASELINE).get("Contents", []))


def test_baselines_are_installed_when_s3_answers_403_for_the_missing_baseline(aws, deploy_fn):
    sm, s3, autoscaling = aws
    with pytest.raises(ClientError, match="Forbidden"):  # the answer the function must not depend on
        s3.head_object(Bucket=BUCKET, Key=BASELINE + "data/statistics.json")
    arn, event = approved_with_baselines(sm, s3, "exec-a")
    assert deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV,
                             now=0)["action"] == "created"
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=3600)
    assert result["baselines"]["status"] == "installed" and result["baselines"]["model_package"] == arn
    assert installed(s3) == FILES
    # InService again (e.g. after scaling): the installed ones are recognised, nothing rewritten
    again = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=7200)
    assert again["baselines"] == {"status": "unchanged", "model_package": arn}
    # every listing was within the grant: PrefixListGrant answers one outside it AccessDenied, which fails the run
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/monitoring/diagnosa-dev/")


def test_the_next_version_replaces_them_with_the_same_access(aws, deploy_fn):
    sm, s3, autoscaling = aws
    first, event = approved_with_baselines(sm, s3, "exec-a")
    deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=0)
    assert deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV,
                             now=60)["baselines"]["model_package"] == first
    updates = update_endpoints(sm)  # moto lacks UpdateEndpoint: answered at botocore's before-call (aws_calls.py)
    second, event = approved_with_baselines(sm, s3, "exec-b")
    assert deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV,
                             now=3600)["action"] == "updated"
    assert installed(s3) == []  # cleared while traffic shifts
    sm.delete_endpoint(EndpointName="diagnosa-dev")  # the update ended: InService on the new config
    sm.create_endpoint(EndpointName="diagnosa-dev", EndpointConfigName=updates[-1]["EndpointConfigName"])
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=ENV, now=7200)
    assert result["baselines"]["model_package"] == second and installed(s3) == FILES
    assert {s3.head_object(Bucket=BUCKET, Key=BASELINE + name)["Metadata"]["model-package"] for name in FILES} == {second}
