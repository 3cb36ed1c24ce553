"""Build the pipeline definition with no AWS at all.

The SageMaker SDK talks to AWS while it builds a definition: it uploads the processing runner
(``runproc.sh``) and ``install_requirements.py`` to S3 and asks STS for the account. The local
executor and the CDK app both need the definition offline, so the SDK gets a boto3 session whose
calls never leave the process: S3 puts are kept in memory (and returned with the staged step code,
so the caller can copy them into the local lake or a CDK asset), STS answers with a fixed account,
and any other call fails loudly, naming the operation, rather than reaching the network.

The hooks are botocore's own extension points (``before-parameter-build`` to see the call's
parameters, ``before-call`` to answer it without sending a request), the mechanism behind
``botocore.stub.Stubber``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pipelines.definition import PipelineSettings, build_pipeline, sdk_quiet
from pipelines.staging import ROOT, stage_bundle

OFFLINE_ACCOUNT = "000000000000"


class OfflineCallError(RuntimeError):
    """The SDK tried an AWS call the offline build does not answer."""


@dataclass
class OfflineBuild:
    definition: str  # exactly what ``Pipeline.definition()`` returns
    objects: dict[str, bytes] = field(default_factory=dict)  # key in the pipeline's bucket → bytes
    code_sha256: str = ""
    code_key: str = ""


class _OfflineAws:
    """Answers the calls the SDK makes while building a definition; refuses every other."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}

    def install(self, boto_session: Any) -> None:
        events = boto_session.events
        events.register("before-parameter-build.*.*", self._remember)
        events.register("before-call.*.*", self._answer)

    def _remember(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["diagnosa_offline_params"] = dict(params)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse
        from botocore.compat import HTTPHeaders

        service, operation = model.service_model.service_name, model.name
        params = context.get("diagnosa_offline_params", {})
        ok = AWSResponse(f"offline://{service}/{operation}", 200, HTTPHeaders(), None)  # answered here, never sent
        meta = {"ResponseMetadata": {"HTTPStatusCode": 200}}
        if service == "sts" and operation == "GetCallerIdentity":
            return ok, {**meta, "Account": OFFLINE_ACCOUNT, "UserId": "offline",
                        "Arn": f"arn:aws:iam::{OFFLINE_ACCOUNT}:user/offline"}
        if service == "s3" and operation in ("ListBuckets",):
            return ok, {**meta, "Buckets": [{"Name": self.bucket}]}
        if service == "s3" and operation in ("HeadBucket", "CreateBucket", "GetBucketLocation"):
            return ok, meta
        if service == "s3" and operation == "PutObject" and params.get("Bucket") == self.bucket:
            body = params.get("Body", b"")
            data = body.read() if hasattr(body, "read") else body.encode() if isinstance(body, str) else bytes(body)
            self.objects[params["Key"]] = data
            return ok, {**meta, "ETag": '"offline"'}
        raise OfflineCallError(f"offline pipeline build: the SDK called {service}.{operation} "
                               f"({ {k: v for k, v in params.items() if k != 'Body'} }), which is not answered offline")


def build_offline(bucket: str, role_arn: str, *, region: str = "eu-west-1", root: Any = ROOT,
                  **settings: Any) -> OfflineBuild:
    """The definition for ``bucket``/``role_arn``, plus every object it expects in the bucket."""
    import boto3

    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("AWS_DEFAULT_REGION", region)  # the SDK creates default clients at import
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # never wait for an instance metadata service
    staged, bundle = stage_bundle(root)
    # Credentials are never used (no request is sent) but botocore signs before ``before-call``.
    boto_session = boto3.Session(region_name=region, aws_access_key_id="offline", aws_secret_access_key="offline")
    offline = _OfflineAws(bucket)
    offline.install(boto_session)
    with sdk_quiet():
        from sagemaker.core.workflow.pipeline_context import PipelineSession

        session = PipelineSession(boto_session=boto_session, default_bucket=bucket)
        pipeline_settings = PipelineSettings(bucket=bucket, role_arn=role_arn,
                                             code_uri=f"s3://{bucket}/{staged.key}", code_sha256=staged.sha256,
                                             region=region, **settings)
        definition = build_pipeline(pipeline_settings, session).definition()
    return OfflineBuild(definition=definition, objects={staged.key: bundle, **offline.objects},
                        code_sha256=staged.sha256, code_key=staged.key)
