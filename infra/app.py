"""The Diagnosa CDK app: one CDK Stage per Diagnosa stage and the delivery pipeline that deploys them,
checked by cdk-nag (AwsSolutions + HIPAA.Security).

``cdk.json`` runs ``.venv/bin/python -m infra.app``; ``make synth`` writes the templates to
``cdk.out/`` (a nested assembly per stage, ``assembly-<stage>/``). Stages and their settings come
from context (see ``infra/config.py``); with ``diagnosa:delivery`` the app also holds the delivery
pipeline (``infra/delivery.py``), unless ``-c stage=NAME`` picks one stage. Synth fails, with a
non-zero exit, on a bad setting, any unacknowledged cdk-nag finding or template validation error, or a
stack that needs a context lookup.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import aws_cdk as cdk
from constructs import Construct

from infra.config import (
    DeliveryConfig,
    StageConfig,
    check_promotions,
    declared_stages,
    delivery_account,
    delivery_from_context,
    stages_from_context,
)
from infra.images import ImagesStack, synthesizer
from infra.nag import MissingContext, NagFindings, apply_packs, synth
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


class DiagnosaStage(cdk.Stage):
    """One Diagnosa stage: ``Diagnosa-<stage>`` and, with baked images, ``Diagnosa-<stage>-images`` (deployed
    first). The stack names are fixed, so a stage deployed by hand (``cdk deploy '<stage>/*'``) and by the
    delivery pipeline is the same CloudFormation stack."""

    def __init__(self, scope: Construct, config: StageConfig, *, promote_source: StageConfig | None = None,
                 promoted_to: tuple[StageConfig, ...] = (), delivery_account: str | None = None,
                 last_delivery_stage: str | None = None) -> None:
        account = config.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
        super().__init__(scope, config.stage, env=cdk.Environment(account=account, region=config.region))
        self.config = config
        name = f"Diagnosa-{config.stage}"
        protect = config.protected(last_delivery_stage)  # the same by hand (-c stage=NAME) and by the pipeline
        self.stack = DiagnosaStack(self, name, stack_name=name, config=config, promote_source=promote_source,
                                   promoted_to=promoted_to, delivery_account=delivery_account,
                                   description=f"Diagnosa {config.stage}: data lake, SageMaker pipeline, registry "
                                               f"and endpoint", termination_protection=protect,
                                   synthesizer=synthesizer(config))
        self.images = None
        if config.baked_images:
            # The repository the stage's image assets are pushed to: deployed first, since `cdk deploy` publishes
            # a stack's assets only once the stacks it depends on are deployed.
            self.images = ImagesStack(self, f"{name}-images", stack_name=f"{name}-images", config=config,
                                      description=f"Diagnosa {config.stage}: ECR repository of the baked job and "
                                                  f"serving images", termination_protection=protect)
            self.stack.add_stack_dependency(self.images, "the stage's image assets are pushed to the images stack's "
                                                         "repository")


def build_app(app: cdk.App | None = None, stages: list[StageConfig] | None = None,
              delivery: DeliveryConfig | None = None) -> cdk.App:
    """The stages (``stages``, default from context) and, with ``delivery`` (default from context), the
    delivery pipeline deploying them in its order."""
    app = app or new_app()
    get = app.node.try_get_context
    declared = ({c.stage: c for c in stages} if stages is not None
                else declared_stages(get, app.node.get_all_context()))
    check_promotions(declared)
    if stages is None:
        stages = stages_from_context(get)
        delivery = delivery or delivery_from_context(get)
    elif delivery is not None:
        delivery.check(declared)
    tooling = delivery.account if delivery else delivery_account(get)  # checked: a promote function trusts it
    built = {config.stage: DiagnosaStage(
        app, config, promote_source=declared.get(config.promote_from) if config.promote_from else None,
        promoted_to=tuple(c for c in declared.values() if c.promote_from == config.stage),
        delivery_account=tooling,
        last_delivery_stage=_last_delivery_stage(delivery, get))
        for config in stages}
    if delivery is not None:
        from infra.delivery import DeliveryStack

        account = delivery.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
        DeliveryStack(app, "Diagnosa-delivery", config=delivery, stages=[built[name] for name in delivery.stages],
                      env=cdk.Environment(account=account, region=delivery.region),
                      description="Diagnosa delivery pipeline: source, tests and gates, dev, approval, prod",
                      termination_protection=True)
    apply_packs(app)
    return app


def _last_delivery_stage(delivery: DeliveryConfig | None, get: Any) -> str | None:
    """The stage the delivery pipeline deploys last (production): from ``delivery``, else from the context's
    ``diagnosa:delivery`` (also when ``-c stage=NAME`` builds no pipeline, so a stage deployed by hand is
    protected as the pipeline's is)."""
    if delivery is not None:
        return delivery.stages[-1] if delivery.stages else None
    values = get("diagnosa:delivery")
    stages = values.get("stages") if isinstance(values, dict) else None
    return stages[-1] if isinstance(stages, list) and stages and isinstance(stages[-1], str) else None


def stage_stacks(app: cdk.App) -> dict[str, cdk.Stack]:
    """Every stack of the app's Diagnosa stages, by stack name."""
    return {stack.stack_name: stack for stage in app.node.children if isinstance(stage, DiagnosaStage)
            for stack in (stage.stack, stage.images) if stack is not None}


def main() -> int:
    try:
        app = build_app()
        synth(app)
    # RuntimeError: a CDK (jsii) validation error, for a setting the stage checks let through.
    except (NagFindings, MissingContext, ValueError, RuntimeError) as err:
        print(f"synth failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
