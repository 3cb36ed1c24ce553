"""The delivery pipeline's artifact stores: the one in the pipeline's region (in ``Diagnosa-delivery``) and, for each
other region a stage deploys to, CodePipeline's cross-region replication bucket, which the app brings in a small
stack of its own (``Diagnosa-delivery-replication-<region>``, in the tooling account) instead of CDK's generated
support stack (whose bucket and key have no access logs, versioning or key rotation).

Each store is the same: a KMS key with rotation, a bucket encrypted with it (versioned, TLS only, no public access,
bucket owner enforced), its server access logs in a log bucket beside it, and lifecycle rules for old artifacts.

Across regions the pipeline cannot reference a key's generated ARN, so it knows a replication store by names fixed
here: the bucket :func:`replication_bucket_name` and the key's alias :data:`REPLICATION_ALIAS` (an artifact store's
key may be given by its alias ARN, in the account of the key, which is the pipeline's). The grants follow from that
(:class:`ReplicationStack`): the stage accounts' CDK deploy roles read the store through its own bucket and key
policies, and the pipeline's role reaches the key through the alias (``kms:ResourceAliases``), the one key in the
region that carries it.
"""
from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.stack import acknowledge

# The replication key's alias, the same in every region (an alias name is unique per account and region).
REPLICATION_ALIAS = "alias/diagnosa-delivery-replication"
# A replicated copy serves the actions of its execution in the region; CodePipeline keeps an execution's history
# (and so what a retry or rollback could re-run) for 12 months: current copies expire after a year.
REPLICA_EXPIRATION = Duration.days(365)
# What CDK's CloudFormation actions need on a replication store (the grants CDK writes for its own support stack).
READ_ACTIONS = ["s3:GetBucket*", "s3:GetObject*", "s3:List*"]
DECRYPT_ACTIONS = ["kms:Decrypt", "kms:DescribeKey"]
# What the pipeline's role needs on a replication key to copy artifacts there and read them back.
PIPELINE_KEY_ACTIONS = ["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]


def replication_bucket_name(pipeline_name: str, account: str, region: str) -> str:
    """The replication bucket of ``region``: S3 names are global, so the tooling account and the region are in it
    (at most 27 + 12 + 1 + 14 characters, within S3's 63)."""
    return f"{pipeline_name}-artifacts-{account}-{region}"


def artifact_store(scope: Construct, key: kms.IKey, *, bucket_name: str | None = None,
                   lifecycle_rules: list[s3.LifecycleRule] | None = None) -> s3.Bucket:
    """The bucket ``Artifacts`` encrypted with ``key`` and its access-log bucket ``ArtifactsAccessLogs``, in
    ``scope`` (the ids, hence the logical ids, are the same in the pipeline's stack and in a replication stack)."""
    logs = s3.Bucket(scope, "ArtifactsAccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, versioned=True,
                     enforce_ssl=True, minimum_tls_version=1.2, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                     object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, removal_policy=RemovalPolicy.RETAIN,
                     lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(2190),
                                                       noncurrent_version_expiration=Duration.days(30))])
    for finding, reason in (
            ("AwsSolutions-S1", "The access-log bucket of the artifact bucket: logging it into itself would loop."),
            ("HIPAA.Security-S3BucketLoggingEnabled", "The access-log bucket (see AwsSolutions-S1)."),
            ("HIPAA.Security-S3DefaultEncryptionKMS", "S3 server access log delivery supports only SSE-S3 targets."),
            ("HIPAA.Security-S3BucketReplicationEnabled", "Access logs stay in the region of the bucket they log.")):
        acknowledge(logs, finding, reason)
    bucket = s3.Bucket(scope, "Artifacts", bucket_name=bucket_name, encryption=s3.BucketEncryption.KMS,
                       encryption_key=key, bucket_key_enabled=True, versioned=True, enforce_ssl=True,
                       minimum_tls_version=1.2, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                       object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                       server_access_logs_bucket=logs, server_access_logs_prefix="artifacts/",
                       lifecycle_rules=lifecycle_rules or [s3.LifecycleRule(
                           noncurrent_version_expiration=Duration.days(30))],
                       removal_policy=RemovalPolicy.RETAIN)
    acknowledge(bucket, "HIPAA.Security-S3BucketReplicationEnabled",
                "Pipeline artifacts (source and templates, no patient data) are rebuilt by any execution.")
    return bucket


class ReplicationStack(Stack):
    """The pipeline's artifact store in one other region (CodePipeline's replication bucket), in the tooling account.

    ``readers``: the role ARNs that read it, the CDK deploy roles of the stage accounts deploying in the region (CDK
    Pipelines' CloudFormation actions run as them); they are named in the bucket and key policies, as CDK does for
    its own support stack. The pipeline's role is in this account: its grants are its own (IAM), not here, so this
    stack is deployed before the pipeline's and names no role that does not exist yet."""

    def __init__(self, scope: Construct, construct_id: str, *, pipeline_name: str, readers: list[str],
                 **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if cdk.Token.is_unresolved(self.account) or cdk.Token.is_unresolved(self.region):
            raise ValueError(f"{construct_id}: a replication store needs its account and region given explicitly")
        cdk.Tags.of(self).add("project", "diagnosa")
        cdk.Tags.of(self).add("stage", "delivery")
        self.key = kms.Key(self, "ArtifactsKey", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description=f"Diagnosa delivery pipeline: artifacts replicated to {self.region}")
        self.alias = self.key.add_alias(REPLICATION_ALIAS)
        self.bucket_name = replication_bucket_name(pipeline_name, self.account, self.region)
        self.bucket = artifact_store(self, self.key, bucket_name=self.bucket_name, lifecycle_rules=[s3.LifecycleRule(
            expiration=REPLICA_EXPIRATION, noncurrent_version_expiration=Duration.days(30),
            abort_incomplete_multipart_upload_after=Duration.days(7))])
        self.readers = sorted(set(readers))
        if self.readers:
            principals: list[iam.IPrincipal] = [iam.ArnPrincipal(arn) for arn in self.readers]
            self.bucket.add_to_resource_policy(iam.PolicyStatement(
                sid="DeployRolesReadArtifacts", actions=READ_ACTIONS, principals=principals,
                resources=[self.bucket.bucket_arn, self.bucket.arn_for_objects("*")]))
            self.key.add_to_resource_policy(iam.PolicyStatement(
                sid="DeployRolesDecryptArtifactsThroughS3", actions=DECRYPT_ACTIONS, principals=principals,
                resources=["*"], conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}}))

    @property
    def alias_arn(self) -> str:
        """The key's alias ARN: how the pipeline's artifact store names the key (its ARN is generated)."""
        return f"arn:{self.partition}:kms:{self.region}:{self.account}:{REPLICATION_ALIAS}"

    def imported(self, scope: Construct) -> s3.IBucket:
        """The bucket as the pipeline's stack (another region) sees it: by name, with the key by its alias ARN (the
        artifact store's key). Imported, CDK writes no grant into this stack's policies (the readers are named here
        already) and grants the pipeline's role the bucket by name and the key by that alias ARN, which IAM does not
        match against a key's use: :meth:`pipeline_key_statement` is the grant that does. A real key here would make
        CDK grant the role KMS on "*" (a key's ARN cannot cross regions), as it does for its own support stack."""
        key = kms.Key.from_key_arn(scope, f"ReplicationKey-{self.region}", self.alias_arn)
        return s3.Bucket.from_bucket_attributes(scope, f"ReplicationArtifacts-{self.region}",
                                                bucket_name=self.bucket_name, account=self.account,
                                                region=self.region, encryption_key=key)

    def pipeline_key_statement(self) -> iam.PolicyStatement:
        """The pipeline role's use of this key: by key id in the region and account, limited to the key carrying
        the replication alias (key ids are generated: an ARN across regions is not known at synth)."""
        return iam.PolicyStatement(
            actions=PIPELINE_KEY_ACTIONS, resources=[f"arn:{self.partition}:kms:{self.region}:{self.account}:key/*"],
            conditions={"ForAnyValue:StringEquals": {"kms:ResourceAliases": REPLICATION_ALIAS}})
