"""A data lake in each of its three forms, for tests that hold a behaviour on all of them: a local folder, an S3
bucket and an S3 bucket under a prefix (moto). A test module imports ``aws`` and ``lake`` to use them."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from diagnosa.lake import DataLake

BUCKET = "diagnosa-lake"
REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch):
    """Fake credentials + moto, and an S3 client with the lake bucket created."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


@pytest.fixture(params=["local", "s3", "s3-prefix"])
def lake(request, tmp_path):
    if request.param == "local":
        return DataLake.from_uri(str(tmp_path / "lake"))
    client = request.getfixturevalue("aws")
    uri = f"s3://{BUCKET}" if request.param == "s3" else f"s3://{BUCKET}/team/lake"
    return DataLake.from_uri(uri, s3_client=client)
