"""S3 answers that moto does not give: what AWS answers a role by its grants (tests inject them through botocore's own
before-call hook, so the client, its validation and its callers run as they do against S3)."""
from __future__ import annotations

import boto3


class PrefixListGrant:
    """S3 as it answers the stack's roles, which may list only some prefixes (an s3:prefix condition): a GetObject or
    HeadObject of a missing key is 403, not 404 (S3 says 404 only to a caller allowed s3:ListBucket for the request,
    and one for an object carries no s3:prefix); a listing outside the prefixes is AccessDenied. moto answers 404
    whatever the grants: these answers are injected before the request reaches it (botocore's before-call)."""

    def __init__(self, client, prefixes: tuple[str, ...]) -> None:
        self.probe = boto3.client("s3", region_name=client.meta.region_name)  # moto's truth, outside the hooks
        self.prefixes = prefixes
        events = client.meta.events
        events.register("before-parameter-build.s3", lambda params, context, **_: context.update(api=dict(params)))
        for operation in ("GetObject", "HeadObject"):
            events.register(f"before-call.s3.{operation}", self._object)
        events.register("before-call.s3.ListObjectsV2", self._listing)

    @staticmethod
    def _refused(code: str):
        from botocore.awsrequest import AWSResponse

        return AWSResponse("https://s3", 403, {}, None), {"Error": {"Code": code, "Message": "Forbidden"},
                                                          "ResponseMetadata": {"HTTPStatusCode": 403}}

    def _object(self, context, **_):
        api = context["api"]
        listed = self.probe.list_objects_v2(Bucket=api["Bucket"], Prefix=api["Key"], MaxKeys=1).get("Contents", [])
        return None if [o["Key"] for o in listed] == [api["Key"]] else self._refused("403")

    def _listing(self, context, **_):
        prefix = context["api"].get("Prefix", "")
        return None if prefix.startswith(self.prefixes) else self._refused("AccessDenied")
