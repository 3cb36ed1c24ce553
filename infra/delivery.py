"""The delivery pipeline (CDK Pipelines, self-mutating): source -> tests and gates -> each stage in order,
every stage after the first behind a manual approval; a stage that promotes models runs its promote
function once deployed.

    Source        the repository and branch of ``diagnosa:delivery`` (a CodeStar/CodeConnections connection,
                  or a CodeCommit repository by name)
    Build         one CodeBuild step: ``make test`` (the unit and integration suite, which also synthesizes and
                  runs cdk-nag, cfn-lint and checkov on test stages), ``make synth`` (the real app: any
                  unacknowledged cdk-nag finding fails it) and ``make gates`` (cfn-lint and checkov on every
                  template ``make synth`` wrote); its output, ``cdk.out``, is what every later stage deploys
    UpdatePipeline  the pipeline updates itself from that cloud assembly first (self-mutation)
    Assets        file and image assets published to each stage's account and region
    <stage> ...   CloudFormation deployments of the stage's stacks (images first); from the second stage on
                  a manual approval comes first; where the stage promotes models, ``ServedModel`` reads just
                  before the approval which version the source stage serves (the approval shows it), and
                  ``PromoteModel`` promotes that version once the stacks are deployed, only if the source
                  still serves it: a version deployed while the approval waits is never promoted unapproved

Accounts: the pipeline runs in ``diagnosa:delivery``'s account; each stage deploys into its own (the
stage's ``account``, or the pipeline's), which must be bootstrapped trusting the pipeline's account
(docs/deploy.md). Cross-account artifacts are encrypted with the pipeline's own key (rotated). A stage in another
region than the pipeline's deploys from the pipeline's artifact store in that region, which the app brings
(``Diagnosa-delivery-replication-<region>``, infra/replication.py: a rotated key, a versioned and logged bucket) rather
than CDK's generated support stack; it needs the tooling account given explicitly.

Tooling: the Build step installs ``requirements/dev-lock.txt``, whose torch is PyTorch's CPU build
(``+cpu``, on PyTorch's own index, not PyPI): ``PIP_EXTRA_INDEX_URL`` points pip there. The Docker asset
steps log in to AWS's Deep Learning Containers registry of each baking stage's region (the baked images'
``FROM``), and self-mutation and asset publishing install pinned CLIs: the CDK CLI of package-lock.json and
:data:`CDK_ASSETS_VERSION`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy, Stack, pipelines
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.config import DeliveryConfig, StageConfig
from infra.images import base_images
from infra.replication import ReplicationStack, artifact_store
from infra.stack import DiagnosaStack, acknowledge, logical_id

if TYPE_CHECKING:
    from infra.app import DiagnosaStage

PIPELINE_NAME = "diagnosa-delivery"
# The Build step's commands, in order; each fails the step (and stops the pipeline) on any finding.
GATES = ("make test", "make synth", "make gates")
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0  # Ubuntu 22.04: python 3.11 and node 20 runtimes
# requirements/dev-lock.txt pins torch's CPU build (torch==<v>+cpu): PyTorch publishes it on its own index, not
# on PyPI, so the Build step's pip looks there too (PyTorch's documented index for CPU wheels). The lock's hashes
# still decide what pip installs.
PIP_EXTRA_INDEX_URL = "https://download.pytorch.org/whl/cpu"
ROOT = Path(__file__).resolve().parents[1]
# cdk-assets, the asset-publishing CLI of the Assets steps (CDK Pipelines installs `cdk-assets@latest` otherwise).
CDK_ASSETS_VERSION = "4.7.3"
# The context key of ``cdk bootstrap --qualifier`` (CDK's default synthesizer reads it; the app sets none).
BOOTSTRAP_QUALIFIER = "@aws-cdk/core:bootstrapQualifier"
# An ECR image URI: account, region, repository (AWS's DLC images: <account>.dkr.ecr.<region>.amazonaws.com/<repo>:tag).
ECR_IMAGE = re.compile(r"\A([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/([a-z0-9][a-z0-9._/-]*)[:@]")


def cdk_cli_version(root: Path = ROOT) -> str:
    """The project's pinned CDK CLI (package-lock.json, which `npm ci` installs; package.json pins the same):
    what self-mutation installs, so the pipeline updates itself with the CLI the project tests with."""
    lock = json.loads((root / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/aws-cdk"]["version"]
    pinned = json.loads((root / "package.json").read_text())["devDependencies"]["aws-cdk"]
    if pinned != version or not re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
        raise ValueError(f"package.json pins aws-cdk {pinned!r} but package-lock.json installs {version!r}: pin one "
                         "exact version in both (npm install --save-exact aws-cdk@<version>)")
    return str(version)


def boto3_pin(root: Path = ROOT) -> str:
    """The boto3 version setup.py pins: what the ServedModel step installs to run the promote function's read."""
    match = re.search(r'"boto3==([0-9][0-9.]*)"', (root / "setup.py").read_text())
    if not match:
        raise ValueError("setup.py pins no boto3 version (\"boto3==<version>\")")
    return match.group(1)


def base_image_repositories(stages: list[DiagnosaStage]) -> list[str]:
    """The ARNs of AWS's repositories the baked images build ``FROM`` (infra/images: the base images the
    definition names for each baking stage's region), sorted, each once."""
    arns = set()
    for stage in stages:
        if not stage.config.baked_images:
            continue
        for uri in base_images(stage.config).values():
            match = ECR_IMAGE.match(uri)
            if not match:
                raise ValueError(f"stage {stage.config.stage}: base image {uri!r} is not an ECR image URI")
            account, region, china, repository = match.groups()
            arns.add(f"arn:{'aws-cn' if china else 'aws'}:ecr:{region}:{account}:repository/{repository}")
    return sorted(arns)


def deploy_role_arn(stack: Stack, pipeline_account: str, partition: str) -> str:
    """The CDK deploy role CDK Pipelines' CloudFormation actions assume for ``stack``: ``cdk bootstrap``'s, of the
    stack's account and region (the default synthesizer's names, with the app's bootstrap qualifier: every stack of
    the app uses that synthesizer, infra/images.synthesizer); a stack without a concrete account deploys into the
    pipeline's."""
    qualifier = stack.node.try_get_context(BOOTSTRAP_QUALIFIER) or cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER
    account = pipeline_account if cdk.Token.is_unresolved(stack.account) else stack.account
    return (cdk.DefaultStackSynthesizer.DEFAULT_DEPLOY_ROLE_ARN.replace("${Qualifier}", str(qualifier))
            .replace("${AWS::Partition}", partition).replace("${AWS::AccountId}", account)
            .replace("${AWS::Region}", stack.region))


class DeliveryStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeliveryConfig, stages: list[DiagnosaStage],
                 **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        cdk.Tags.of(self).add("project", "diagnosa")
        cdk.Tags.of(self).add("stage", "delivery")
        self.source = self._source()
        self.key = kms.Key(self, "ArtifactsKey", alias=f"alias/{PIPELINE_NAME}", enable_key_rotation=True,
                           description="Diagnosa delivery pipeline: artifacts (cloud assembly, sources)",
                           removal_policy=RemovalPolicy.RETAIN)
        self.artifacts = artifact_store(self, self.key)
        # A stage in another region deploys from the pipeline's artifact store there: ours (infra/replication.py),
        # not the support stack CDK would generate. Without one, the pipeline keeps its single store.
        self.replication = self._replication_stores(scope, stages)
        elsewhere = {region: store.imported(self) for region, store in self.replication.items()}
        # CodePipeline takes one artifact bucket, or one per region (its own region's included).
        underlying = codepipeline.Pipeline(
            self, "Pipeline", pipeline_name=PIPELINE_NAME, pipeline_type=codepipeline.PipelineType.V2,
            restart_execution_on_update=True, artifact_bucket=None if elsewhere else self.artifacts,
            cross_region_replication_buckets={config.region: self.artifacts, **elsewhere} if elsewhere else None)
        for store in self.replication.values():
            underlying.role.add_to_principal_policy(store.pipeline_key_statement())
        self.build = pipelines.CodeBuildStep(
            "Build", input=self.source, install_commands=["make install node_modules/.installed checkov"],
            commands=list(GATES), primary_output_directory="cdk.out",
            build_environment=codebuild.BuildEnvironment(build_image=BUILD_IMAGE,
                                                         compute_type=codebuild.ComputeType.LARGE),
            partial_build_spec=codebuild.BuildSpec.from_object(
                {"phases": {"install": {"runtime-versions": {"python": "3.11", "nodejs": "20"}}}}),
            env={"PIP_EXTRA_INDEX_URL": PIP_EXTRA_INDEX_URL}, timeout=Duration.minutes(90))
        # The baked images build FROM AWS's Deep Learning Containers images (another account's registry):
        # cdk-assets logs in only to the destination registry, so the Docker asset steps log in to these too.
        # Asset publishing only: the Build step builds no image.
        self.base_image_repositories = base_image_repositories(stages)
        credentials = [pipelines.DockerCredential.ecr(
            [ecr.Repository.from_repository_arn(self, f"BaseImageRepository{i}", arn)
             for i, arn in enumerate(self.base_image_repositories)],
            usages=[pipelines.DockerCredentialUsage.ASSET_PUBLISHING])] if self.base_image_repositories else []
        self.pipeline = pipelines.CodePipeline(
            self, "Delivery", code_pipeline=underlying, synth=self.build, self_mutation=True,
            cli_version=cdk_cli_version(), cdk_assets_cli_version=CDK_ASSETS_VERSION, docker_credentials=credentials,
            code_build_defaults=pipelines.CodeBuildOptions(build_environment=codebuild.BuildEnvironment(
                build_image=BUILD_IMAGE, compute_type=codebuild.ComputeType.SMALL)))
        self.approvals: dict[str, pipelines.ManualApprovalStep] = {}
        self.promotions: dict[str, pipelines.CodeBuildStep] = {}
        self.promotion_roles: list[iam.Role] = []
        self.served: dict[str, pipelines.CodeBuildStep] = {}
        configs = {stage.config.stage: stage.config for stage in stages}
        for position, stage in enumerate(stages):
            name = stage.config.stage
            pre: list[pipelines.Step] = []
            source = stage.config.promote_from
            if source:
                # What PromoteModel-<stage> promotes: the version the source stage's endpoint serves when the
                # approval is asked (read just before it, shown in it), and only if the endpoint still serves it
                # then (functions/promote) — not the source's newest Approved one, nor one deployed meanwhile.
                self.served[name] = self._served_step(stage, configs[source])
                pre.append(self.served[name])
            if position:
                comment = (f"Deploy to {name}: the infrastructure change of this execution, as deployed and tested "
                           f"in {stages[position - 1].config.stage}")
                if source:
                    read = self.served[name]
                    comment += (f"; and the model version {source}'s endpoint serves as this approval is asked: "
                                f"version {read.exported_variable('SERVED_VERSION')} of {configs[source].prefix} "
                                f"({read.exported_variable('SERVED_MODEL')}). PromoteModel-{name} promotes that "
                                f"version only if {source} still serves it then; none promotes nothing")
                self.approvals[name] = pipelines.ManualApprovalStep(f"Approve-{name}", comment=comment)
                if source:
                    self.approvals[name].add_step_dependency(self.served[name])
                pre.append(self.approvals[name])
            post = []
            if source:
                self.promotions[name] = self._promotion_step(stage, self.served[name])
                post.append(self.promotions[name])
            self.pipeline.add_stage(stage, pre=pre, post=post)
        self.pipeline.build_pipeline()
        self._acknowledge((self.pipeline, underlying, *self.promotion_roles))
        cdk.CfnOutput(self, "PipelineName", value=PIPELINE_NAME)

    def _source(self) -> pipelines.CodePipelineSource:
        c = self.config
        if c.connection_arn:
            return pipelines.CodePipelineSource.connection(c.repository, c.branch, connection_arn=c.connection_arn)
        repository = codecommit.Repository.from_repository_name(self, "Repository", c.repository)
        return pipelines.CodePipelineSource.code_commit(repository, c.branch)

    def _replication_stores(self, scope: Construct, stages: list[DiagnosaStage]) -> dict[str, ReplicationStack]:
        """One replication store per region a stage deploys to other than the pipeline's, in the tooling account,
        deployed before the pipeline's stack (``cdk deploy Diagnosa-delivery`` and self-mutation deploy it first).
        Its readers are the CDK deploy roles CDK Pipelines' CloudFormation actions assume for that region's stacks."""
        regions = sorted({stage.config.region for stage in stages} - {self.config.region})
        if regions and cdk.Token.is_unresolved(self.account):  # DeliveryConfig.check refuses it first
            raise ValueError(f"diagnosa:delivery: stages deploy to {', '.join(regions)}, not the pipeline's region "
                             f"{self.config.region}: a cross-region pipeline needs its account given explicitly")
        stores = {}
        for region in regions:
            readers = [deploy_role_arn(stack, self.account, self.partition) for stage in stages
                       if stage.config.region == region for stack in (stage.stack, stage.images) if stack is not None]
            store = ReplicationStack(
                scope, f"{self.node.id}-replication-{region}", stack_name=f"{self.stack_name}-replication-"
                f"{region}", pipeline_name=PIPELINE_NAME, readers=readers,
                env=cdk.Environment(account=self.account, region=region), termination_protection=True,
                description=f"Diagnosa delivery pipeline: its artifact store in {region} (cross-region replication "
                            f"bucket and key) for the stages deployed there")
            self.add_stack_dependency(store, f"the pipeline's artifact store in {region}")
            stores[region] = store
        return stores

    def _served_step(self, stage: DiagnosaStage, source: StageConfig) -> pipelines.CodeBuildStep:
        """Read which version ``source``'s endpoint serves, before ``stage``'s approval, with the promote function's
        own reading (``handler.py served``): exports SERVED_VERSION (a number, or ``none``) and SERVED_MODEL (its
        ARN, or why none is settled). A failed read (no permission, no network) stops the pipeline before the
        approval; a source serving no settled version does not (the approval says so). Across accounts the step
        assumes the source stage's reader role (SageMaker endpoints take no resource policy)."""
        c = stage.config
        # As the source stack decides whether to trust this step's role (its delivery_account): a stage without an
        # account deploys into the pipeline's, and a pipeline without one is taken to share the source's.
        source_account = source.account or self.config.account or self.account
        env = {"SOURCE_ENDPOINT": source.prefix, "SOURCE_GROUP": source.prefix, "SOURCE_REGION": source.region,
               "SOURCE_READER_ROLE": ""}
        if self.config.account and source_account != self.config.account:
            env["SOURCE_READER_ROLE"] = (f"arn:{self.partition}:iam::{source_account}:role/"
                                         f"{DiagnosaStack.promote_reader_name(source, c)}")
            statements = [iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[env["SOURCE_READER_ROLE"]])]
        else:
            arn = f"arn:{self.partition}:sagemaker:{source.region}:{source_account}"
            statements = [
                iam.PolicyStatement(actions=["sagemaker:DescribeEndpoint"], resources=[f"{arn}:endpoint/{source.prefix}"]),
                iam.PolicyStatement(actions=["sagemaker:DescribeEndpointConfig", "sagemaker:ListTags"],
                                    resources=[f"{arn}:endpoint-config/{source.prefix}-*"])]
        role = iam.Role(self, f"ServedModelRole{c.stage.capitalize()}",
                        role_name=DiagnosaStack.delivery_served_role_name(c),
                        assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
                        description=f"The delivery pipeline's ServedModel-{c.stage} step: reads which version "
                                    f"{source.prefix} serves")
        self.promotion_roles.append(role)
        if not env["SOURCE_READER_ROLE"]:
            account = source.account or self.config.account or "<AWS::AccountId>"  # cdk-nag's rendering of a token
            acknowledge(role, f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:sagemaker:{source.region}:"
                              f"{account}:endpoint-config/{source.prefix}-*]",
                        "The source stage's deploy function names each endpoint config after the endpoint, the "
                        "version and the time; only describing them and reading their tags (which package the "
                        "source endpoint serves) is granted.")
        return pipelines.CodeBuildStep(
            f"ServedModel-{c.stage}", input=self.source,
            install_commands=[f"pip install --quiet boto3=={boto3_pin()}"],
            commands=["python infra/functions/promote/handler.py served > served.env && cat served.env "
                      "&& set -a && . ./served.env && set +a"],
            partial_build_spec=codebuild.BuildSpec.from_object(
                {"phases": {"install": {"runtime-versions": {"python": "3.11"}}}}),
            env=env, role=role, role_policy_statements=statements)

    def _promotion_step(self, stage: DiagnosaStage, served: pipelines.CodeBuildStep) -> pipelines.CodeBuildStep:
        """Invoke the stage's promote function (in the stage's account and region) for the version its approval
        was asked for (``served``'s SERVED_VERSION), and fail on its error or when that read found none. The step
        runs with a role of a fixed name: the function's invoke permission names it, not the whole account."""
        c = stage.config
        function = (f"arn:{self.partition}:lambda:{c.region}:{c.account or self.account}:function:"
                    f"{c.prefix}-promote")
        promote = stage.stack.promote_function
        timeout = promote.timeout if promote is not None else None
        if timeout is None:
            raise ValueError(f"stage {c.stage} promotes models but has no promote function timeout")
        # A synchronous invoke: the CLI must wait past the function's own timeout (its default read timeout is
        # 60 s, and a retry after it would run the promotion twice, throttled by reserved concurrency 1).
        read_timeout = int(timeout.to_seconds()) + 60
        role = iam.Role(self, f"PromoteModelRole{c.stage.capitalize()}",
                        role_name=DiagnosaStack.delivery_promote_role_name(c),
                        assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"),
                        description=f"The delivery pipeline's PromoteModel-{c.stage} step: invokes {c.prefix}-promote")
        self.promotion_roles.append(role)
        return pipelines.CodeBuildStep(
            f"PromoteModel-{c.stage}", commands=[
                # SERVED_VERSION is a version number or "none" (handler.py served); anything else is refused too.
                'case "$APPROVED_VERSION" in ""|*[!0-9]*) echo "nothing promoted: when the approval was asked, '
                f'{c.promote_from}\'s endpoint served no settled version ($APPROVED_MODEL)"; exit 1;; esac',
                f"aws lambda invoke --region {c.region} --function-name {function} --cli-binary-format "
                f"raw-in-base64-out --cli-read-timeout {read_timeout} --cli-connect-timeout 30 "
                "--payload '{\"version\": '\"$APPROVED_VERSION\"'}' promoted.json > invoke.json",
                "cat invoke.json promoted.json",
                "if grep -q FunctionError invoke.json; then exit 1; fi"],
            env={"APPROVED_VERSION": served.exported_variable("SERVED_VERSION"),
                 "APPROVED_MODEL": served.exported_variable("SERVED_MODEL")},
            role=role,
            role_policy_statements=[iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function])])

    def _acknowledge(self, scopes: tuple[Construct, ...]) -> None:
        """CDK Pipelines' generated roles and projects (under ``scopes``): their grants are CDK's own, on the
        pipeline's artifact bucket and key, each project's log and report groups, and CDK's bootstrap roles;
        acknowledged here with full finding ids, each with its reason."""
        bucket = f"<{logical_id(self.artifacts)}.Arn>/*"
        findings = {
            **{f"AwsSolutions-IAM5[Action::{action}]": f"CDK's grant on the pipeline's own artifact bucket ({action}: "
                                                       "the object and bucket actions of a read or read-write grant)."
               for action in ("s3:Abort*", "s3:DeleteObject*", "s3:GetBucket*", "s3:GetObject*", "s3:List*")},
            **{f"AwsSolutions-IAM5[Action::{action}]": f"CDK's grant on the pipeline's own artifact key ({action})."
               for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*")},
            f"AwsSolutions-IAM5[Resource::{bucket}]": "Artifact object keys are generated per execution and action; "
                                                      "the bucket is the pipeline's own.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
            "/aws/codebuild/*]": "The asset projects are generated per asset; each writes to /aws/codebuild/<project>.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:codebuild:<AWS::Region>:<AWS::AccountId>:"
            "report-group/*]": "Report groups of the generated asset projects, named after each project.",
            "AwsSolutions-IAM5[Resource::arn:*:iam::<AWS::AccountId>:role/*]":
                "Self-mutation assumes CDK's bootstrap roles of this account, selected by their "
                "aws-cdk:bootstrap-role tag (deploy, file and image publishing, lookup).",
            "HIPAA.Security-IAMNoInlinePolicy": "CDK Pipelines generates each action's role with its grants as an "
                                                "inline default policy.",
            "HIPAA.Security-CodeBuildProjectSourceRepoUrl": "No project names a source repository URL (sources come "
                                                            "from the pipeline's artifacts); the rule misreads CDK's "
                                                            "CODEPIPELINE/NO_SOURCE projects.",
        }
        # The replication stores (infra/replication.py): CDK's grant on each bucket (by its name) and ours on each key
        # (by its alias, ReplicationStack.pipeline_key_statement).
        for region, store in self.replication.items():
            findings[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::{store.bucket_name}/*]"] = (
                f"The pipeline's artifact store in {region} (its replication bucket): artifact object keys are "
                "generated per execution and action.")
            findings[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:kms:{region}:<AWS::AccountId>:key/*]"] = (
                f"The replication key in {region}: its id is generated in another region than the pipeline's, so "
                "the grant names the region and account and is limited to the key carrying the replication alias "
                "(kms:ResourceAliases).")
        # Each project's own log group and report groups: named after the project's generated name.
        for project in (c for c in self.node.find_all() if isinstance(c, codebuild.CfnProject)):
            name = self.get_logical_id(project)
            findings[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                     f"log-group:/aws/codebuild/<{name}>:*]"] = "The project's own log streams (named per build)."
            findings[f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:codebuild:<AWS::Region>:<AWS::AccountId>:"
                     f"report-group/<{name}>-*]"] = "The project's own report groups (named per report)."
        for scope in scopes:
            for finding, reason in findings.items():
                acknowledge(scope, finding, reason)
        # Only CDK's asset and self-mutation roles hold "*" grants (listed in docs/deploy.md).
        for role in (c for c in self.pipeline.node.find_all() if isinstance(c, iam.CfnPolicy)
                     and c.node.path.endswith(("/Assets/FileRole/DefaultPolicy/Resource",
                                               "/Assets/DockerRole/DefaultPolicy/Resource",
                                               "/UpdatePipeline/SelfMutation/Role/DefaultPolicy/Resource"))):
            acknowledge(role, "AwsSolutions-IAM5[Resource::*]",
                        "CDK Pipelines' asset roles: codebuild:StartBuild, StopBuild and BatchGetBuilds (each asset "
                        "role is also the pipeline action role that starts and polls its generated asset projects; "
                        "CDK's AssetSingletonRole widens these to '*' so the policy does not grow with every asset) "
                        "and, with baked images, ecr:GetAuthorizationToken (no resource-level permission: the login "
                        "to AWS's base-image registry); the self-mutation role: cloudformation:DescribeStacks and "
                        "s3:ListBucket, which the CDK CLI calls before it assumes a bootstrap role.")
