"""The promote function under moto: the Approved version dev serves copied into prod (artifacts and baselines into
prod's lake, the version into prod's registry, then approved), once; refusals change nothing."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipelines.expressions import registration_gate

REGION = "eu-west-1"
SOURCE_BUCKET = "diagnosa-dev-lake1a2b3c4d-0a1b2c3d4e5f"
IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
PROD_IMAGE = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-prod-images:5a1f8a98"
RUN = f"s3://{SOURCE_BUCKET}/artifacts/runs/exec-3"
GATE_KEY = "artifacts/code/gates/0123456789abcdef.json"
# prod's gate: the checks of the reviewed definition (the built-in cohort's, at its defaults)
GATE = registration_gate(json.loads((Path(__file__).parents[1] / "snapshots/pipeline-definition.json").read_text()))


def evaluation_of(values: dict[str, float] | None = None, default: float = 0.9) -> dict[str, Any]:
    """An evaluation.json holding every value the gate reads (the definition's JsonGet paths): ``default``, or
    ``values[path]``."""
    document: dict[str, Any] = {"diagnosa": {"macro_recall": default}}
    for check in GATE:
        node = document
        for key in check["keys"][:-1]:
            node = node.setdefault(key, {})
        node[check["keys"][-1]] = (values or {}).get(check["path"], default)
    return document


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
        s3.put_object(Bucket="prod-lake", Key=GATE_KEY, Body=json.dumps(GATE).encode())
        env = {"SOURCE_GROUP": "diagnosa-dev", "SOURCE_REGION": REGION, "SOURCE_ACCOUNT": "",
               "SOURCE_BUCKET_PREFIX": "diagnosa-dev-lake", "TARGET_GROUP": "diagnosa-prod", "LAKE_BUCKET": "prod-lake",
               "KMS_KEY_ARN": key, "SERVING_IMAGE": serving_image, "PROMOTED_PREFIX": "artifacts/runs/promoted/",
               "SOURCE_ENDPOINT": "diagnosa-dev", "SOURCE_READER_ROLE": "", "GATE_KEY": GATE_KEY}
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


def register(sm, s3, status, run=RUN, model=None, evaluation: Any = None, evaluation_uri=None):
    """A version of dev's group as dev's pipeline registers it; ``evaluation``: its evaluation.json (a document, or
    bytes as they are; default: one passing prod's gate)."""
    files = {"model": f"{run}/champion/model.tar.gz", "stats": f"{run}/baselines/data/statistics.json",
             "constraints": f"{run}/baselines/data/constraints.json",
             "prediction": f"{run}/baselines/predictions/prediction_baseline.json",
             "evaluation": f"{run}/evaluation/evaluation.json"}
    for name, uri in files.items():
        bucket, key = uri[5:].split("/", 1)
        if bucket == SOURCE_BUCKET:
            body = evaluation_of() if name == "evaluation" and evaluation is None else evaluation \
                if name == "evaluation" else f"{name} of {run}"
            s3.put_object(Bucket=bucket, Key=key, Body=body if isinstance(body, bytes)
                          else body.encode() if isinstance(body, str) else json.dumps(body).encode())
    return sm.create_model_package(
        ModelPackageGroupName="diagnosa-dev", ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": IMAGE, "ModelDataUrl": model or files["model"]}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]},
        ModelMetrics={"ModelDataQuality": {
            "Statistics": {"ContentType": "application/json", "S3Uri": files["stats"]},
            "Constraints": {"ContentType": "application/json", "S3Uri": files["constraints"]}},
            "ModelQuality": {"Statistics": {"ContentType": "application/json",
                                            "S3Uri": evaluation_uri or files["evaluation"]}}},
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
        "baselines/predictions/prediction_baseline.json", "evaluation/evaluation.json"))
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


def test_what_describe_may_add_to_the_container_names_this_stages_copy_not_the_source(promote_fn):
    # DescribeModelPackage may return the artifact twice (ModelDataUrl and ModelDataSource) and its ETag: copied as
    # they were, the version promoted would name dev's object (another account's lake) and dev's object's ETag.
    from pipelines.service_model import request_problems

    model = f"{RUN}/champion/model.tar.gz"
    package = {"ModelPackageArn": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/diagnosa-dev/2",
               "InferenceSpecification": {"Containers": [{
                   "Image": IMAGE, "ImageDigest": "sha256:" + "0" * 64, "ModelDataUrl": model,
                   "ModelDataETag": '"9b2cf535f27731c974343645a3985328"',
                   "ModelDataSource": {"S3DataSource": {"S3Uri": model, "S3DataType": "S3Object",
                                                        "CompressionType": "Gzip"}}}],
                   "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]}}
    env = {"SOURCE_BUCKET_PREFIX": "diagnosa-dev-lake", "LAKE_BUCKET": "prod-lake", "SERVING_IMAGE": PROD_IMAGE,
           "TARGET_GROUP": "diagnosa-prod", "SOURCE_ACCOUNT": ""}
    request, copies = promote_fn.promoted_request(package, env, "artifacts/runs/promoted/diagnosa-dev-v2/")
    [container] = request["InferenceSpecification"]["Containers"]
    target = "s3://prod-lake/artifacts/runs/promoted/diagnosa-dev-v2/exec-3/champion/model.tar.gz"
    assert container["ModelDataUrl"] == container["ModelDataSource"]["S3DataSource"]["S3Uri"] == target
    assert "ModelDataETag" not in container and "ImageDigest" not in container
    assert copies == {model: target} and request_problems("CreateModelPackage", request, patterns=True) is None
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataSource"]["S3DataSource"]["S3Uri"] == model


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
    _nothing_promoted(sm, s3)


def test_a_source_in_another_account_is_named_by_arn(promote_fn):
    env = {"SOURCE_GROUP": "diagnosa-dev", "SOURCE_REGION": "eu-west-1", "SOURCE_ACCOUNT": "123456789012"}
    assert promote_fn.source_group(env) == "arn:aws:sagemaker:eu-west-1:123456789012:model-package-group/diagnosa-dev"
    assert promote_fn.source_group({**env, "SOURCE_ACCOUNT": ""}) == "diagnosa-dev"


# ------------------------------------------------------------------------------------------ prod's own gate

def _nothing_promoted(sm, s3):
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="prod-lake").get("Contents", [])] == [GATE_KEY]
    assert sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"] == []


def test_a_version_dev_gated_with_lowered_thresholds_is_refused_by_prods_gate_every_failure_named(aws, promote_fn):
    """dev's run passed its gate with ``--param RecallThreshold...`` lowered; prod gates it again at its own defaults."""
    sm, s3, env = aws
    terminal, unseen = "diagnosa.per_class['ENFERMEDAD TERMINAL'].recall", "diagnosa.slices.orphan_unseen.macro_recall"
    arn = register(sm, s3, "Approved", evaluation=evaluation_of({terminal: 0.55, unseen: 0.2}))
    serve(sm, arn)
    for event in ({}, {"version": 1, "force": True}):  # force promotes what dev does not serve, never below the gate
        with pytest.raises(promote_fn.Refused) as refused:
            promote_fn.handler(event, source=sm, target=sm, s3=s3, env=env)
        message = str(refused.value)
        assert f"{arn} does not pass diagnosa-prod's gate" in message
        assert f"{terminal} is 0.55, needs >= 0.8 (RecallThresholdEnfermedadTerminal)" in message
        assert f"{unseen} is 0.2, needs >= 0.4 (UnseenOrphanRecallThreshold)" in message
        assert "NO ENFERMO" not in message  # only what fails is named
        _nothing_promoted(sm, s3)


def test_a_version_exactly_at_prods_thresholds_is_promoted(aws, promote_fn):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved", evaluation=evaluation_of({c["path"]: c["at_least"] for c in GATE})))
    assert promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)["status"] == "promoted"


@pytest.mark.parametrize("evaluation, expected", [
    ({"diagnosa": {"per_class": {}}}, "diagnosa.per_class['NO ENFERMO'].recall is missing, needs >= 0.8"),
    (evaluation_of({"diagnosa.slices.orphan.macro_recall": "0.9"}),
     "diagnosa.slices.orphan.macro_recall is '0.9', needs >= 0.5"),
    (evaluation_of({"diagnosa.slices.orphan.macro_recall": True}), "macro_recall is True, needs >= 0.5"),
    (b'{"diagnosa": {"per_class": NaN}}', "per_class['NO ENFERMO'].recall is missing"),
    (b"\xff\xfe not json", "is not an evaluation JSON"),
    (b"[1, 2", "is not an evaluation JSON"),
])
def test_an_evaluation_that_cannot_show_the_gate_passes_is_refused(aws, promote_fn, evaluation, expected):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved", evaluation=evaluation))
    with pytest.raises(promote_fn.Refused, match=None) as refused:
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert expected in str(refused.value)
    _nothing_promoted(sm, s3)


def test_an_oversized_evaluation_is_refused_without_reading_it_whole(aws, promote_fn, monkeypatch):
    sm, s3, env = aws
    monkeypatch.setattr(promote_fn, "EVALUATION_MAX_BYTES", 64)
    serve(sm, register(sm, s3, "Approved"))
    with pytest.raises(promote_fn.Refused, match="is not an evaluation JSON \\(it is over 64 bytes\\)"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    _nothing_promoted(sm, s3)


def test_an_evaluation_outside_the_source_run_folders_or_none_is_refused(aws, promote_fn):
    sm, s3, env = aws
    s3.put_object(Bucket="prod-lake", Key="artifacts/runs/x/evaluation.json", Body=json.dumps(evaluation_of()).encode())
    serve(sm, register(sm, s3, "Approved", evaluation_uri="s3://prod-lake/artifacts/runs/x/evaluation.json"))
    with pytest.raises(promote_fn.Refused, match="is not in a run folder of the diagnosa-dev lake"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    s3.delete_object(Bucket="prod-lake", Key="artifacts/runs/x/evaluation.json")
    _nothing_promoted(sm, s3)
    package = sm.describe_model_package(ModelPackageName=register(sm, s3, "Approved"))
    package.pop("ModelMetrics")
    with pytest.raises(promote_fn.Refused, match="registers no ModelQuality statistics"):
        promote_fn.check_gate(s3, package, env)


def test_without_this_stages_gate_file_nothing_is_promoted(aws, promote_fn):
    sm, s3, env = aws
    serve(sm, register(sm, s3, "Approved"))
    s3.delete_object(Bucket="prod-lake", Key=GATE_KEY)
    with pytest.raises(promote_fn.Refused, match=f"gate s3://prod-lake/{GATE_KEY} cannot be read \\(NoSuchKey\\): "
                                                 "deploy this stage's stack again"):
        promote_fn.handler({}, source=sm, target=sm, s3=s3, env=env)
    assert sm.list_model_packages(ModelPackageGroupName="diagnosa-prod")["ModelPackageSummaryList"] == []
