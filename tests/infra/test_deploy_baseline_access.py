"""The deploy function installs the serving model's baselines with the S3 access its role has on AWS. Its s3:ListBucket
is granted only for listings under the endpoint's baseline prefix (an s3:prefix condition, infra/stack.py), and S3
answers a HeadObject or GetObject of a missing key with 404 only to a caller allowed s3:ListBucket for it: such a
request carries no s3:prefix, so the role gets 403 Forbidden instead. moto answers 404 whatever the grants, so here
S3 is moto behind that answer, and every listing's prefix is checked against the grant."""
from __future__ import annotations

import json
from fnmatch import fnmatchcase

import boto3
import pytest
from botocore.exceptions import ClientError
from deploy_env import ENV, REGION
from moto import mock_aws

IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
BUCKET = "lake"
DEPLOY_ENV = {**ENV, "LAKE_BUCKET": BUCKET}
BASELINE = "artifacts/monitoring/diagnosa-dev/baseline/"
LIST_GRANT = BASELINE + "*"  # the s3:prefix the deploy role may list (ListMonitoringBaselines)
FILES = ["data/constraints.json", "data/statistics.json", "predictions/model_quality_constraints.json",
         "predictions/prediction_baseline.json"]
IN_SERVICE = {"detail-type": "SageMaker Endpoint State Change",
              "detail": {"EndpointName": "diagnosa-dev", "EndpointStatus": "IN_SERVICE"}}


class WithoutListBucket:
    """An S3 client answering a HeadObject or GetObject of a missing key as S3 answers the deploy role on AWS: 403."""

    def __init__(self, s3):
        self.s3, self.listed = s3, []
        # every ListObjectsV2 request, the paginator's included: its Prefix is the s3:prefix the grant is matched on
        s3.meta.events.register("provide-client-params.s3.ListObjectsV2",
                                lambda params, **_: self.listed.append(params.get("Prefix", "")))

    def __getattr__(self, name):
        return getattr(self.s3, name)

    def _forbidden_if_missing(self, operation, call, **request):
        try:
            return call(**request)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"},
                               "ResponseMetadata": {"HTTPStatusCode": 403}}, operation) from None

    def head_object(self, **request):
        return self._forbidden_if_missing("HeadObject", self.s3.head_object, **request)

    def get_object(self, **request):
        return self._forbidden_if_missing("GetObject", self.s3.get_object, **request)


@pytest.fixture
def aws():
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        sm.create_model_package_group(ModelPackageGroupName="diagnosa-dev")
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield sm, WithoutListBucket(s3), boto3.client("application-autoscaling", region_name=REGION)


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
    assert deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV,
                             now=0)["action"] == "created"
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV, now=3600)
    assert result["baselines"]["status"] == "installed" and result["baselines"]["model_package"] == arn
    assert installed(s3) == FILES
    # InService again (e.g. after scaling): the installed ones are recognised, nothing rewritten
    again = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV, now=7200)
    assert again["baselines"] == {"status": "unchanged", "model_package": arn}
    listed = [prefix for prefix in s3.listed if prefix.startswith("artifacts/monitoring/")]
    assert listed and all(fnmatchcase(prefix, LIST_GRANT) for prefix in listed), listed


def test_the_next_version_replaces_them_with_the_same_access(aws, deploy_fn, monkeypatch):
    sm, s3, autoscaling = aws
    first, event = approved_with_baselines(sm, s3, "exec-a")
    deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV, now=0)
    assert deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV,
                             now=60)["baselines"]["model_package"] == first
    updates: list = []
    monkeypatch.setattr(sm, "update_endpoint", lambda **kw: updates.append(kw) or {"EndpointArn": "arn"}, raising=False)
    second, event = approved_with_baselines(sm, s3, "exec-b")
    assert deploy_fn.handler(event, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV,
                             now=3600)["action"] == "updated"
    assert installed(s3) == []  # cleared while traffic shifts
    sm.delete_endpoint(EndpointName="diagnosa-dev")  # the update ended: InService on the new config
    sm.create_endpoint(EndpointName="diagnosa-dev", EndpointConfigName=updates[-1]["EndpointConfigName"])
    result = deploy_fn.handler(IN_SERVICE, sagemaker=sm, s3=s3, autoscaling=autoscaling, env=DEPLOY_ENV, now=7200)
    assert result["baselines"]["model_package"] == second and installed(s3) == FILES
    assert {s3.head_object(Bucket=BUCKET, Key=BASELINE + name)["Metadata"]["model-package"] for name in FILES} == {second}
