"""Baked images: the job and serving containers with the step pins installed at build time.

``infra/images/<role>/Dockerfile`` (role ``jobs``: processing, training and the monitoring job;
``serving``: the endpoint's model) builds ``FROM`` the AWS image ``pipelines/definition.py`` names for
that role in the stage's region (the ``BASE_IMAGE`` build argument) and installs
``requirements/steps-lock.txt`` (the step pins and everything they depend on, with hashes). ``cdk synth``
builds nothing: each image is a ``DockerImageAsset`` whose recipe (context folder, Dockerfile, build
arguments, platform) lands in the stack's asset manifest; ``cdk deploy`` builds it with the Docker
engine of the deploying machine and pushes it.

Where it is pushed: CDK's bootstrap container-assets repository has immutable tags but no scanning
(``ContainerAssetsRepository`` in the bootstrap template has ``ImageTagMutability: IMMUTABLE`` and no
``ImageScanningConfiguration``) and is shared by every CDK app of the account and region. So each stage
gets a repository of its own, ``diagnosa-<stage>-images`` (scan on push, immutable tags, KMS), in a small
stack of its own (:class:`ImagesStack`) that deploys first: the CLI publishes a stack's assets only after
the stacks it depends on are deployed. The stage's stack points its synthesizer at that repository, and a
repository policy lets CDK's image-publishing role push there; the job, model and monitoring roles may
pull from that one repository only.

The build context is the repository root reduced, by the asset's ``exclude`` patterns (Docker ignore
semantics), to the Dockerfile and the pins: the asset hash, and so the image tag, changes only when one
of them or the base image changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

from diagnosa.serving_code import STEP_LOCK
from infra.config import StageConfig

ROOT = Path(__file__).resolve().parents[2]
PINS = STEP_LOCK
QUALIFIER = cdk.DefaultStackSynthesizer.DEFAULT_QUALIFIER


@dataclass(frozen=True)
class ImageRole:
    name: str  # jobs | serving
    scope: str  # the image scope of the AWS image it builds on (image_uris.retrieve)

    @property
    def dockerfile(self) -> str:
        """The Dockerfile, relative to the repository root (the build context)."""
        return f"infra/images/{self.name}/Dockerfile"

    @property
    def context(self) -> tuple[str, ...]:
        """Every file of the build context: the Dockerfile and the pins, nothing else."""
        return (self.dockerfile, PINS)

    @property
    def exclude(self) -> list[str]:
        """Asset ``exclude`` patterns (Docker ignore semantics): everything but :attr:`context`."""
        return ["*", *(f"!{path}" for path in self.context)]


JOBS = ImageRole("jobs", "training")
SERVING = ImageRole("serving", "inference")
ROLES = (JOBS, SERVING)


def repository_name(config: StageConfig) -> str:
    return f"{config.prefix}-images"


def base_images(config: StageConfig) -> dict[str, str]:
    """Role → the AWS image its Dockerfile builds on: the images the definition names for the stage's region."""
    from pipelines.definition import framework_images

    jobs, serving = framework_images(config.region, config.processing_instance_type, config.endpoint_instance_type)
    return {JOBS.name: jobs, SERVING.name: serving}


def synthesizer(config: StageConfig) -> cdk.DefaultStackSynthesizer | None:
    """The stage stack's synthesizer: image assets go to the stage's own repository when images are baked."""
    if not config.baked_images:
        return None
    return cdk.DefaultStackSynthesizer(image_assets_repository_name=repository_name(config))


class ImagesStack(Stack):
    """``diagnosa-<stage>-images``: the ECR repository the stage's baked images are pushed to."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        cdk.Tags.of(self).add("project", "diagnosa")
        cdk.Tags.of(self).add("stage", config.stage)
        self.repository = ecr.Repository(
            self, "Repository", repository_name=repository_name(config),
            image_scan_on_push=True, image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            encryption=ecr.RepositoryEncryption.KMS,
            # Registered model versions name their serving image: images are kept with the versions.
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[ecr.LifecycleRule(description="Untagged images should not exist (tags are asset "
                                                           "hashes); expire any after 30 days",
                                               tag_status=ecr.TagStatus.UNTAGGED, max_image_age=Duration.days(30))])
        # CDK's image-publishing role (from `cdk bootstrap`) may push only to the bootstrap repository by its
        # own policy; this repository lets it push the stage's assets here too.
        publisher = cdk.Fn.sub(cdk.DefaultStackSynthesizer.DEFAULT_IMAGE_ASSET_PUBLISHING_ROLE_ARN
                               .replace("${Qualifier}", QUALIFIER))
        self.repository.add_to_resource_policy(iam.PolicyStatement(
            sid="CdkImagePublishing", principals=[iam.ArnPrincipal(publisher)],
            actions=["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
                     "ecr:BatchCheckLayerAvailability", "ecr:DescribeRepositories", "ecr:DescribeImages",
                     "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]))
        cdk.CfnOutput(self, "ImageRepository", value=self.repository.repository_uri)


class BakedImages(Construct):
    """The job and serving images of a stage as Docker image assets (built and pushed by ``cdk deploy``)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StageConfig) -> None:
        super().__init__(scope, construct_id)
        bases = base_images(config)
        self.assets = {role.name: ecr_assets.DockerImageAsset(
            self, role.name.capitalize(), directory=str(ROOT), file=role.dockerfile,
            # SageMaker's ml.m5/ml.c5 instances are x86_64, whatever machine builds the image.
            build_args={"BASE_IMAGE": bases[role.name]}, platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=role.exclude, ignore_mode=cdk.IgnoreMode.DOCKER, display_name=f"{config.prefix}-{role.name}")
            for role in ROLES}
        self.bases = bases

    @property
    def job_image(self) -> str:
        return self.assets[JOBS.name].image_uri

    @property
    def serving_image(self) -> str:
        return self.assets[SERVING.name].image_uri


__all__ = ["BakedImages", "ImageRole", "ImagesStack", "JOBS", "ROLES", "SERVING", "base_images", "repository_name",
           "synthesizer"]
