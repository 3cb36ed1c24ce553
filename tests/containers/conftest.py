"""Shared helpers for the container-parity tests: an S3 (and CloudWatch) endpoint the containers' own boto3
clients can reach, and the service's download of S3 inputs into a container root."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def aws_endpoint():
    """moto's server on a loopback port: ``(endpoint_url, boto3.Session)`` for code in this process and in
    subprocesses (``AWS_ENDPOINT_URL`` / the training toolkit's ``S3_ENDPOINT_URL``). Fake credentials only."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}", boto3.Session(region_name="eu-west-1")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_fetch():
    """``s3_fetch(client)`` → ``fetch(uri, folder)`` for ``pipelines.containers``: the service's download
    into a container root — the object at ``uri`` (as ``<folder>/<name>``), or every object under the
    prefix (paths relative to it)."""
    def for_client(client):
        def fetch(uri: str, folder: Path, shard=None) -> None:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            prefix = key.rstrip("/")
            keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                    for o in page.get("Contents", [])]
            if not keys:
                raise FileNotFoundError(f"nothing at {uri}")
            keys = keys if shard is None else shard.take(keys)
            for item in keys:
                relative = Path(item).name if item == prefix else item[len(prefix):].lstrip("/")
                target = folder / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item, str(target))
        return fetch
    return for_client
