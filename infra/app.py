"""The Diagnosa CDK app: one stack per stage, checked by cdk-nag (AwsSolutions + HIPAA.Security).

``cdk.json`` runs ``.venv/bin/python -m infra.app``; ``make synth`` writes the templates to
``cdk.out/``. Stages and their settings come from context (see ``infra/config.py``); synth fails,
with a non-zero exit, on a bad setting or any unacknowledged cdk-nag finding.
"""
from __future__ import annotations

import os
import sys

import aws_cdk as cdk

from infra.config import StageConfig, stages_from_context
from infra.images import ImagesStack, synthesizer
from infra.nag import NagFindings, apply_packs, synth
from infra.stack import DiagnosaStack

# CDK feature flags the stacks rely on (set on every App this module makes, so tests see the same).
FEATURE_FLAGS = {
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,  # log delivery by bucket policy, not ACLs
    "@aws-cdk/aws-iam:minimizePolicies": True,
    "@aws-cdk/core:checkSecretUsage": True,
    "@aws-cdk/aws-kms:aliasNameRef": True,
}


def new_app(context: dict | None = None, **kwargs) -> cdk.App:
    return cdk.App(context={**FEATURE_FLAGS, **(context or {})}, **kwargs)


def build_app(app: cdk.App | None = None, stages: list[StageConfig] | None = None) -> cdk.App:
    app = app or new_app()
    for config in stages or stages_from_context(app.node.try_get_context):
        account = config.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
        env = cdk.Environment(account=account, region=config.region)
        stack = DiagnosaStack(app, f"Diagnosa-{config.stage}", config=config, env=env,
                              description=f"Diagnosa {config.stage}: data lake, SageMaker pipeline, registry and "
                                          f"endpoint", termination_protection=config.stage == "prod",
                              synthesizer=synthesizer(config))
        if config.baked_images:
            # The repository the stage's image assets are pushed to: deployed first, since `cdk deploy` publishes
            # a stack's assets only once the stacks it depends on are deployed.
            images = ImagesStack(app, f"Diagnosa-{config.stage}-images", config=config, env=env,
                                 description=f"Diagnosa {config.stage}: ECR repository of the baked job and serving "
                                             f"images", termination_protection=config.stage == "prod")
            stack.add_stack_dependency(images, "the stage's image assets are pushed to the images stack's repository")
    apply_packs(app)
    return app


def main() -> int:
    try:
        app = build_app()
        synth(app)
    except (NagFindings, ValueError) as err:
        print(f"synth failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
