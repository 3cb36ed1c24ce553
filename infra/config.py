"""Per-stage settings of the CDK app, read from CDK context (``cdk.json`` or ``-c``).

One app deploys several stages (dev, prod, ...). Each stage is a block under the context key
``diagnosa:stages``; ``-c stage=dev`` picks one (default: every stage in the block). Values given
for a stage override the defaults below, and ``-c diagnosa:<field>=<value>`` overrides a field for
the stages being synthesized (handy for ``-c diagnosa:account=123456789012``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

from diagnosa.data.schema import BUILTIN_DATASET
from diagnosa.labels import CATEGORIES

STAGE_NAME = re.compile(r"^[a-z][a-z0-9]{1,11}$")
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True)
class StageConfig:
    stage: str
    region: str
    account: str | None = None  # None: the CLI's account (CDK_DEFAULT_ACCOUNT)
    # Training pipeline
    processing_instance_type: str = "ml.m5.xlarge"
    training_instance_type: str = "ml.m5.xlarge"
    families: tuple[str, ...] = ("mlp", "logistic_regression", "xgboost", "gradient_boosting")
    recall_threshold: float = 0.80
    orphan_threshold: float = 0.50
    unseen_threshold: float = 0.40  # orphan diseases held out of training (UnseenOrphanRecallThreshold)
    retrain_schedule: str = "rate(7 days)"  # EventBridge schedule expression; "" turns the schedule off
    # Endpoint
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_min_instances: int = 1
    endpoint_max_instances: int = 2
    invocations_per_instance: int = 200  # target tracking: SageMakerVariantInvocationsPerInstance per minute
    capture_sampling_percent: int = 100
    traffic_shifting: str = "CANARY"  # CANARY (canary_percent first, then the rest) or ALL_AT_ONCE
    canary_percent: int = 10
    bake_seconds: int = 600  # wait between traffic shifts and before the blue fleet is terminated
    serving_program: str = "serve_endpoint.py"  # SAGEMAKER_PROGRAM: the script at the root of the staged sourcedir
    # Alarms (they roll a blue/green deployment back)
    alarm_5xx_errors: int = 5  # Invocation5XXErrors per minute
    alarm_model_latency_ms: int = 500  # ModelLatency p95
    drift_metric_namespace: str = "Diagnosa/Monitoring"
    drift_metric_name: str = "DriftScore"
    drift_threshold: float = 0.2  # the retraining hook: the drift alarm starts an execution
    # Who hears the alarms: e-mail subscriptions to the stage's alerts topic (each address confirms once);
    # in cdk.json a list, with -c a comma-separated string. Empty: alarms still roll back and retrain.
    alarm_emails: tuple[str, ...] = ()
    # Monitoring job (monitoring/job.py on SageMaker Processing), which publishes the drift metric
    monitor_schedule: str = "rate(1 day)"  # EventBridge schedule expression; "" turns the schedule off
    monitor_window: str = ""  # traffic each run reads (30m, 24h, 7d, 2w); "" = the period of a rate() schedule
    monitor_instance_type: str = "ml.m5.large"
    # Data lake
    capture_expiry_days: int = 90
    noncurrent_version_days: int = 30
    access_log_days: int = 2190  # six years, the HIPAA documentation retention period
    # The raw bucket's object-lock default retention: every raw object version is kept this long from its
    # upload. COMPLIANCE: nobody, root included, can shorten it or delete the version; GOVERNANCE: a principal
    # with s3:BypassGovernanceRetention could (the bucket policy denies it to all), for stages torn down often.
    raw_retention_mode: str = "COMPLIANCE"
    raw_retention_days: int = 2190
    log_retention_days: int = 365
    # Network
    vpc: bool = False  # private subnets, VPC endpoints, functions and the endpoint's model in the VPC
    vpc_cidr: str = "10.40.0.0/16"
    # Job and serving images with the pins baked in (infra/images/), built by `cdk deploy` and pushed to the
    # stage's own ECR repository; required in VPC mode (isolated subnets: no package index to install from).
    # Unset in a stage with vpc=true it is turned on; an explicit false with vpc=true stops synth.
    baked_images: bool = False
    # Model promotion: the stage (declared earlier in the delivery pipeline) whose Approved versions this
    # stage takes, copied into its own lake and registry by its promote function (docs/deploy.md).
    promote_from: str = ""
    # The dataset the stage trains and serves: a dataset config (TOML, docs/data.md; a path from the folder
    # `cdk` runs in), whose labels, slice and [gate] the pipeline is built for. "": the built-in cohort.
    # One dataset per stage: its pipeline, group and endpoint keep the stage's names (prefix).
    dataset_config: str = ""

    @cached_property  # the config file read once per stage (dataset, labels and the definition all ask)
    def dataset_settings(self) -> dict[str, Any]:
        """The pipeline settings of the stage's dataset (its name, labels, slice; the [gate]'s thresholds, over the
        stage's), or none for the built-in cohort; the group and endpoint are the stage's (prefix)."""
        if not self.dataset_config:
            return {}
        from diagnosa.data.schema import load_dataset_config
        from pipelines.definition import config_dataset_settings

        settings = config_dataset_settings(load_dataset_config(self.dataset_config))
        return {k: v for k, v in settings.items() if k not in ("model_package_group", "endpoint_name")}

    @property
    def dataset(self) -> str:
        """The curated dataset the stage's pipeline trains on (``curated/<dataset>/``)."""
        return str(self.dataset_settings.get("dataset", BUILTIN_DATASET))

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.dataset_settings.get("labels", CATEGORIES))

    @property
    def prefix(self) -> str:
        """Name of the pipeline, the Model Package Group and the endpoint, and prefix of the rest."""
        return f"diagnosa-{self.stage}"

    @property
    def recall_thresholds(self) -> dict[str, float]:
        return {label: self.recall_threshold for label in self.labels}

    def check(self) -> "StageConfig":
        problems = []
        if not STAGE_NAME.match(self.stage):
            problems.append(f"stage name {self.stage!r} must be 2-12 lowercase letters or digits, starting with a letter")
        if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d$", self.region):
            problems.append(f"region {self.region!r} must be a concrete AWS region (image URIs depend on it)")
        if self.account is not None and not re.match(r"^\d{12}$", self.account):
            problems.append(f"account {self.account!r} must be 12 digits")
        if not 1 <= self.endpoint_min_instances <= self.endpoint_max_instances:
            problems.append("need 1 <= endpoint_min_instances <= endpoint_max_instances")
        if self.traffic_shifting not in ("CANARY", "ALL_AT_ONCE"):
            problems.append("traffic_shifting must be CANARY or ALL_AT_ONCE")
        if not 1 <= self.canary_percent <= 50:
            problems.append("canary_percent must be in [1, 50]")
        if not 0 <= self.bake_seconds <= 3600:  # UpdateEndpoint's WaitIntervalInSeconds / TerminationWaitInSeconds
            problems.append("bake_seconds must be in [0, 3600] (SageMaker's limit on a blue/green wait)")
        if self.raw_retention_mode not in ("COMPLIANCE", "GOVERNANCE"):
            problems.append(f"raw_retention_mode must be COMPLIANCE or GOVERNANCE, got {self.raw_retention_mode!r}")
        if not 1 <= self.raw_retention_days <= 36500:
            problems.append(f"raw_retention_days must be between 1 and 36500 (S3 object lock), got {self.raw_retention_days}")
        if not 0 <= self.capture_sampling_percent <= 100:
            problems.append("capture_sampling_percent must be in [0, 100]")
        if self.monitor_window and not re.match(r"^[1-9]\d*[mhdw]$", self.monitor_window):
            problems.append(f"monitor_window {self.monitor_window!r} must be a duration like 30m, 24h, 7d or 2w")
        if (self.monitor_schedule and not self.monitor_window
                and not re.match(r"^rate\(\s*\d+\s+(minute|minutes|hour|hours|day|days)\s*\)$", self.monitor_schedule)):
            problems.append("monitor_window is required when monitor_schedule is not rate(N minutes|hours|days)")
        if self.vpc and not self.baked_images:
            problems.append("vpc mode needs baked_images=true: the isolated subnets reach no package index, so "
                            "containers that pip-install their pins at start would fail (remove baked_images=false "
                            "or set vpc=false)")
        bad = [e for e in self.alarm_emails if not isinstance(e, str) or not EMAIL.match(e)]
        if bad:
            problems.append(f"alarm_emails: {', '.join(map(repr, bad))} not an e-mail address")
        if len(set(self.alarm_emails)) != len(self.alarm_emails):
            problems.append("alarm_emails lists an address twice")
        for name in ("recall_threshold", "orphan_threshold", "unseen_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1]")
        if self.dataset_config:
            from diagnosa.data.schema import SchemaError
            from pipelines.definition import parameter_names

            try:
                parameter_names(self.dataset_settings["labels"])  # each label a gate parameter of its own
            except (SchemaError, ValueError) as err:
                problems.append(f"dataset_config: {err}")
        if problems:
            raise ValueError(f"stage {self.stage}: " + "; ".join(problems))
        return self


TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` (from cdk.json: typed; from ``-c``: a string) as the field's type, or a ValueError naming it."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        return tuple(value)
    try:
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}") from None
    return value


def stage_config(stage: str, values: dict[str, Any]) -> StageConfig:
    known = {f.name: f for f in fields(StageConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"stage {stage}: unknown settings {unknown}")
    if "region" not in values:
        raise ValueError(f"stage {stage}: needs a region")
    base = StageConfig(stage=stage, region=values["region"])
    try:
        coerced = {k: _coerce(k, v, getattr(base, k)) for k, v in values.items() if k not in ("stage", "region")}
    except ValueError as err:
        raise ValueError(f"stage {stage}: {err}") from None
    if coerced.get("vpc") and "baked_images" not in coerced:
        coerced["baked_images"] = True  # VPC mode bakes the images unless told otherwise (which check() refuses)
    return replace(base, **coerced).check()


def declared_stages(get: Any) -> dict[str, StageConfig]:
    """Every stage of ``diagnosa:stages``, by name, with the ``-c diagnosa:<field>`` overrides."""
    declared: dict[str, dict[str, Any]] = get("diagnosa:stages") or {}
    if not declared:
        raise ValueError("no stages: set the context key diagnosa:stages (see cdk.json)")
    overrides = {f.name: get(f"diagnosa:{f.name}") for f in fields(StageConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None and k != "stage"}
    return {name: stage_config(name, {**values, **overrides}) for name, values in declared.items()}


def stages_from_context(get: Any) -> list[StageConfig]:
    """``get`` is ``node.try_get_context``. Returns the stages to synthesize (``-c stage=NAME``: that one)."""
    declared = declared_stages(get)
    wanted = get("stage")
    if wanted and wanted not in declared:
        raise ValueError(f"unknown stage {wanted!r} (declared: {', '.join(declared)})")
    return [declared[wanted]] if wanted else list(declared.values())


CONNECTION_ARN = re.compile(r"^arn:aws[a-z-]*:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[\w-]+$")


@dataclass(frozen=True)
class DeliveryConfig:
    """The delivery pipeline (``diagnosa:delivery`` in cdk.json): where it runs, what it watches, and the
    stages it deploys in order; every stage after the first waits for a manual approval."""
    region: str
    stages: tuple[str, ...]
    repository: str  # a CodeCommit repository's name, or owner/name of the connection's provider
    account: str | None = None  # None: the CLI's account (every stage without an account deploys there too)
    connection_arn: str = ""  # a CodeStar/CodeConnections connection (GitHub, GitLab, Bitbucket); "": CodeCommit
    branch: str = "main"

    def check(self, stages: dict[str, StageConfig]) -> "DeliveryConfig":
        problems = []
        if not re.match(r"^[a-z]{2}(-[a-z]+)+-\d$", self.region):
            problems.append(f"region {self.region!r} must be a concrete AWS region")
        if self.account is not None and not re.match(r"^\d{12}$", self.account):
            problems.append(f"account {self.account!r} must be 12 digits")
        if not self.stages:
            problems.append("stages must list the stages to deploy, in order (e.g. [\"dev\", \"prod\"])")
        unknown = [s for s in self.stages if s not in stages]
        if unknown:
            problems.append(f"stages {unknown} are not declared in diagnosa:stages ({', '.join(stages)})")
        if len(set(self.stages)) != len(self.stages):
            problems.append("stages lists a stage twice")
        if not self.repository:
            problems.append("repository is required: a CodeCommit repository's name, or owner/name with connection_arn")
        if self.connection_arn and not CONNECTION_ARN.match(self.connection_arn):
            problems.append(f"connection_arn {self.connection_arn!r} is not a CodeStar/CodeConnections connection ARN")
        if self.connection_arn and self.repository.count("/") != 1:
            problems.append(f"repository {self.repository!r} must be owner/name with a connection")
        if not self.branch:
            problems.append("branch must not be empty")
        order = {name: i for i, name in enumerate(self.stages)}
        for name in self.stages:
            source = stages[name].promote_from if name in stages else ""
            if source and order.get(source, len(order)) >= order[name]:
                problems.append(f"stage {name} promotes from {source!r}, which the pipeline does not deploy before it")
        if problems:
            raise ValueError("diagnosa:delivery: " + "; ".join(problems))
        return self


def delivery_from_context(get: Any) -> DeliveryConfig | None:
    """The delivery pipeline's settings, or None without ``diagnosa:delivery`` or when ``-c stage=NAME`` picks
    one stage (a pipeline synthesized with fewer stages would remove the others when it updates itself)."""
    values = get("diagnosa:delivery")
    if not values or get("stage"):
        return None
    known = {f.name for f in fields(DeliveryConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"diagnosa:delivery: unknown settings {unknown}")
    missing = [name for name in ("region", "stages", "repository") if name not in values]
    if missing:
        raise ValueError(f"diagnosa:delivery: needs {', '.join(missing)}")
    if not isinstance(values["stages"], list):
        raise ValueError(f"diagnosa:delivery: stages must be a list, got {values['stages']!r}")
    config = DeliveryConfig(**{**values, "stages": tuple(values["stages"])})
    return config.check(declared_stages(get))


def check_promotions(stages: dict[str, StageConfig]) -> None:
    for config in stages.values():
        if config.promote_from and (config.promote_from not in stages or config.promote_from == config.stage):
            raise ValueError(f"stage {config.stage}: promote_from {config.promote_from!r} must name another declared "
                             f"stage ({', '.join(s for s in stages if s != config.stage)})")


__all__ = ["DeliveryConfig", "StageConfig", "check_promotions", "declared_stages", "delivery_from_context",
           "stage_config", "stages_from_context"]
