"""AWS settings read the way the AWS CLI and boto3 read them, in one place for every command and client."""
from __future__ import annotations

import os
from typing import Any


def resolve_region(explicit: str | None = None) -> str | None:
    """``explicit`` (a --region flag), else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``; None when none is set."""
    return explicit or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


# A server that accepts the connection and never answers kept a command silent for over five minutes (60 s
# reads, botocore's five legacy attempts). Control-plane answers take seconds; S3 answers a PUT once it has
# the body. Bounded, the worst case is three 30 s waits, then the error names the endpoint.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30
ATTEMPTS = 3


def client(service: str, region: str | None = None, **kwargs: Any) -> Any:
    """A boto3 client for the commands' AWS calls, with bounded timeouts and retries (``kwargs``: boto3's)."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": ATTEMPTS, "mode": "standard"})
    make: Any = boto3.client  # typed per service by overloads; the service here is a plain string
    return make(service, region_name=resolve_region(region), config=config, **kwargs)
