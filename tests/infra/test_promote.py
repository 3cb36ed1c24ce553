"""The promote function under moto: the Approved version dev serves copied into prod (artifacts and baselines into
prod's lake, the version into prod's registry, then approved), once; refusals change nothing."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto import mock_aws

REGION = "eu-west-1"
SOURCE_BUCKET = "diagnosa-dev-lake1a2b3c4d-0a1b2c3d4e5f"
IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
PROD_IMAGE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-prod-images:5a1f8a98"
RUN = f"s3://{SOURCE_BUCKET}/artifacts/runs/exec-3"


@contextmanager
def stages(serving_image: str = PROD_IMAGE) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    """Under moto: dev's and prod's groups and lakes, and the promote function's environment (prod's)."""
    with mock_aws():
        sm = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        for group in ("diagnosa-dev", "diagnosa-prod"):
            sm.create_model_package_group(ModelPackageGroupName=group)
        for bucket in (SOURCE_BUCKET, "prod-lake"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
        env = {"SOURCE_GROUP": "diagnosa-dev", "SOURCE_REGION": REGION, "SOURCE_ACCOUNT": "",
               "SOURCE_BUCKET_PREFIX": "diagnosa-dev-lake", "TARGET_GROUP": "diagnosa-prod", "LAKE_BUCKET": "prod-lake",
               "KMS_KEY_ARN": key, "SERVING_IMAGE": serving_image, "PROMOTED_PREFIX": "artifacts/runs/promoted/",
               "SOURCE_ENDPOINT": "diagnosa-dev", "SOURCE_READER_ROLE": ""}
        yield sm, s3, env


@pytest.fixture
def aws():
    with stages() as world:
        yield world


def serve(sm, arn):
    """dev's endpoint serves ``arn``, configured as the deploy function does (the config's package tag)."""
    name = f"diagnosa-dev-v{arn.rsplit('/', 1)[1]}"
    sm.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::123456789012:role/m", PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(EndpointConfigName=name, Tags=[{"Key": "diagnosa:model-package", "Value": arn}],
                              ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name,
                                                   "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName="diagnosa-dev", EndpointConfigName=name)


def register(sm, s3, status, run=RUN, model=None):
    files = {"model": f"{run}/champion/model.tar.gz", "stats": f"{run}/baselines/data/statistics.json",
             "constraints": f"{run}/baselines/data/constraints.json",
             "prediction": f"{run}/baselines/predictions/prediction_baseline.json"}
    for name, uri in files.items():
        bucket, key = uri[5:].split("/", 1)
        if bucket == SOURCE_BUCKET:
            s3.put_object(Bucket=bucket, Key=key, Body=f"{name} of {run}".encode())
    return sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": model or files["model"]}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelDataQuality": {
            "Statistics": {"ContentType": "application/json", "S3Uri": files["stats"]},
            "Constraints": {"ContentType": "application/json", "S3Uri": files["constraints"]}}},
        CustomerMetadataProperties={"diagnosa:prediction-baseline": files["prediction"], "champion": "xgboost"},
    )["ModelPackageArn"]


def test_the_newest_approved_version_is_copied_registered_and_approved_once(aws, promote_fn):
    sm, s3, env = aws
    register(sm, s3, "Approved", run=f"s3://{SOURCE_BUCKET}/artifacts/runs/exec-1")
    newest = register(sm, s3, "Approved")
    register(sm, s3, "PendingManualApproval", run=f"s3://{SOURCE_BUCKET}/artifacts/runs/exec-4")
    serve(sm, newest)
    result = promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert result["status"] == "promoted" and result["source"] == newest
    folder = "s3://prod-lake/artifacts/runs/promoted/diagnosa-dev-v2/exec-3"
    assert result["copied"] == sorted(f"{folder}/{f}" for f in (
        "champion/model.tar.gz", "baselines/data/statistics.json", "baselines/data/constraints.json",
        "baselines/predictions/prediction_baseline.json"))
    copied = s3.get_object(Bucket="prod-lake", Key="artifacts/runs/promoted/diagnosa-dev-v2/exec-3/champion/model.tar.gz")
    assert copied["Body"].read() == b"model of " + RUN.encode()
    assert copied["ServerSideEncryption"] == "aws:kms" and copied["SSEKMSKeyId"] == env["KMS_KEY_ARN"]
    package = sm.describe_model_package(ModelPackageName=result["target"])
    assert package["ModelPackageGroupName"] == "diagnosa-prod" and package["ModelApprovalStatus"] == "Approved"
    [container] = package["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == f"{folder}/champion/model.tar.gz" and container["Image"] == PROD_IMAGE
    quality = package["ModelMetrics"]["ModelDataQuality"]
    assert quality["Statistics"]["S3Uri"] == f"{folder}/baselines/data/statistics.json"
    metadata = package["CustomerMetadataProperties"]
    assert metadata["diagnosa:promoted-from"] == newest and metadata["champion"] == "xgboost"
    assert metadata["diagnosa:prediction-baseline"] == f"{folder}/baselines/predictions/prediction_baseline.json"
    # the pipeline runs again: nothing new is registered
    again = promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert again == {"status": "already promoted", "source": newest, "target": result["target"]}
    assert len(sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"]) == 1


def test_a_named_version_is_promoted_only_if_approved(aws, promote_fn):
    sm, s3, env = aws
    register(sm, s3, "Approved")
    serve(sm, register(sm, s3, "Rejected", run=f"s3://{SOURCE_BUCKET}/artifacts/runs/exec-9"))  # rejected, serving
    with pytest.raises(promote_fn.Refused, match="is Rejected, not Approved in diagnosa-dev"):
        promote_fn.handler({"version": 2}, source=sm, target=sm, s3=s3, env=env)
    with pytest.raises(promote_fn.Refused, match="diagnosa-dev has no version 7"):
        promote_fn.handler({"version": 7}, source=sm, target=sm, s3=s3, env=env)
    assert promote_fn.handler({"version": 1, "force": True}, source=sm, target=sm, s3=s3, env=env)["status"] == "promoted"


@pytest.mark.parametrize("version", [0, "2", True, 1.5])
def test_a_bad_version_is_refused(aws, promote_fn, version):
    sm, s3, env = aws
    with pytest.raises(promote_fn.Refused, match="version must be a positive integer"):
        promote_fn.handler({"version": version}, source=sm, target=sm, s3=s3, env=env)


def test_nothing_approved_means_nothing_promoted(aws, promote_fn):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "PendingManualApproval"))
    with pytest.raises(promote_fn.Refused, match="is PendingManualApproval, not Approved in diagnosa-dev"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)


@pytest.mark.parametrize("model", ["s3://someone-elses-bucket/artifacts/runs/x/model.tar.gz",
                                   f"s3://{SOURCE_BUCKET}/curated/patients/v1/data.parquet",
                                   f"s3://{SOURCE_BUCKET}/artifacts/runs/../../raw/x.csv"])
def test_objects_outside_the_source_run_folders_are_refused_and_nothing_is_copied(aws, promote_fn, model):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved", model=model))
    with pytest.raises(promote_fn.Refused, match="is not in a run folder of the diagnosa-dev lake"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert "Contents" not in s3.list_objects_v2(Bucket="prod-lake")
    assert sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"] == []


def test_a_source_in_another_account_is_named_by_arn(promote_fn):
    env = {"SOURCE_GROUP": "diagnosa-dev", "SOURCE_REGION": "eu-west-1", "SOURCE_ACCOUNT": "123456789012"}
    assert promote_fn.source_group(env) == "arn:aws:sagemaker:eu-west-1:123456789012:model-package-group/diagnosa-dev"
    assert promote_fn.source_group({**env, "SOURCE_ACCOUNT": ""}) == "diagnosa-dev"
