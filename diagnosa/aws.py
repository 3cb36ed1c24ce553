"""AWS settings read the way the AWS CLI and boto3 read them, in one place for every command and client."""
from __future__ import annotations

import os


def resolve_region(explicit: str | None = None) -> str | None:
    """``explicit`` (a --region flag), else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``; None when none is set."""
    return explicit or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
