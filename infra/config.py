"""Per-stage settings of the CDK app, read from CDK context (``cdk.json`` or ``-c``).

One app deploys several stages (dev, prod, ...). Each stage is a block under the context key
``diagnosa:stages``; ``-c stage=dev`` picks one (default: every stage in the block). Values given
for a stage override the defaults below, and ``-c diagnosa:<field>=<value>`` overrides a field for
the stages being synthesized (handy for ``-c diagnosa:account=123456789012``).
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Any

from diagnosa.data.schema import BUILTIN_DATASET
from diagnosa.data.validate import clip, shown
from diagnosa.labels import CATEGORIES
from diagnosa.text import some_of
from inference.limits import has_surrogate
from pipelines.definition import DEFAULT_FAMILIES, MAX_RUNTIME_LIMIT_SECONDS, TRAINING_MAX_RUNTIME_SECONDS
from pipelines.service_model import instance_type_problem, sagemaker_regions
from processing.metrics import DEFAULT_ORPHAN_THRESHOLD, DEFAULT_RECALL_THRESHOLD, DEFAULT_UNSEEN_THRESHOLD

STAGE_NAME = re.compile(r"[a-z][a-z0-9]{1,11}")  # always fullmatch: "$" also matches before a final "\n"
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
ACCOUNT = re.compile(r"[0-9]{12}")  # not \d, which matches any Unicode digit
# At most 100 digits (schedule_problem refuses longer expressions anyway): int() refuses over 4,300 digits with an
# error naming no setting.
RATE = re.compile(r"rate\(([1-9][0-9]{0,99}) (minute|minutes|hour|hours|day|days)\)")
CRON = re.compile(r"cron\((\S+( \S+){5})\)")  # the six fields, each checked by cron_problem
# VPC mode: the stage VPC's isolated subnets, one of this size per AZ (a VPC's block is /16 to /28 on AWS).
VPC_AZS = 2
VPC_SUBNET_MASK = 22
VPC_PREFIXES = range(16, VPC_SUBNET_MASK - math.ceil(math.log2(VPC_AZS)) + 1)  # the subnets must fit
WINDOW_DAYS = {"m": 1 / 1440, "h": 1 / 24, "d": 1, "w": 7}  # monitor_window's units (and a rate's first letter)
LOG_RETENTION_MAX = 3653  # CloudWatch Logs' longest finite retention (ten years)
# CloudWatch's documented namespace characters (ASCII letters, digits, . - _ / # : and space); not ':' first
# (botocore's pattern), not under AWS/ (AWS's own).
NAMESPACE = re.compile(r"[A-Za-z0-9.\-_/#: ]{1,255}")
# The partitions the stack is built for: elsewhere a resource type it uses does not exist (aws-cn has no
# AWS::SageMaker::ModelPackageGroup) or service hosts are not <service>.<region>.amazonaws.com (its kms:ViaService
# conditions and service principals).
PARTITIONS = ("aws", "aws-us-gov")
# Upper bounds on sizes and frequencies nobody means (a typo, an extra zero); each refusal names its field.
MAX_INSTANCES = 100  # endpoint instances: Application Auto Scaling documents no MaxCapacity, quotas are far lower
MAX_DAYS = 36500  # lifecycle and retention days: a hundred years, as S3 object lock's longest retention
# Settings that were removed, with why: naming them says so instead of "unknown settings".
REMOVED = {"drift_metric_name": "the monitoring job always publishes its drift metric as DriftScore "
                                "(monitoring/cloudwatch.py), which the drift alarm watches; any other name left the "
                                "alarm blind",
           "serving_program": "the program that serves is the registered version's own SAGEMAKER_PROGRAM (the "
                              "pipeline registers every version with diagnosa/serving_code.py's SERVING_PROGRAM, "
                              "the script training writes into the artifact's code/), which overrode the setting "
                              "for every such version; it only reached versions registered by hand, unchecked "
                              "against their code. Name another program in the version's registration instead"}
MAX_ALARM_EMAILS = 50  # one AWS::SNS::Subscription each, in a stack CloudFormation caps at 500 resources
MAX_NUMBER_DIGITS = 100  # an integer setting longer than this is a typo (and str() of one over 4,300 digits raises)
QUOTED = 300  # characters of a refused value an error quotes (diagnosa.data.validate.shown); a 256-character
# namespace still shows whole
PROBLEM_CHARS = 1000  # one problem's text at most: a message is bounded whatever the context holds
EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


def _q(value: Any) -> str:
    """``value`` quoted for an error message: its repr, at most QUOTED characters (megabytes of context, a value nested
    thousands deep or an integer of 5,000 digits stay a short quote, never a traceback)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 3 * MAX_NUMBER_DIGITS:
        return f"an integer of about {int(value.bit_length() * 0.30103):,} digits"
    return shown(value, QUOTED)


def _label(stage: Any) -> str:
    """A stage's name as messages prefix it: itself when it is a valid name, else quoted (bounded, surrogates
    escaped: a message holding a lone surrogate cannot be printed to a UTF-8 stderr)."""
    return stage if isinstance(stage, str) and STAGE_NAME.fullmatch(stage) else _q(stage)


def _problems(problems: list[str]) -> str:
    """The problems joined, each cut to PROBLEM_CHARS (some come from checks elsewhere that quote in full)."""
    return "; ".join(clip(p, PROBLEM_CHARS) for p in problems)


def _local_storage(instance_type: str) -> bool:
    """Whether SageMaker refuses a volume key for ``instance_type`` (its storage is the instance's own): the SageMaker
    SDK's rule, which the monitoring and feedback-folding jobs' requests follow (infra/functions/jobs/job_request.py
    ``local_storage``, a test holds the two equal)."""
    from sagemaker.core.common_utils import instance_supports_kms

    return not instance_supports_kms(instance_type)


@dataclass(frozen=True)
class StageConfig:
    stage: str
    region: str
    account: str | None = None  # None: the CLI's account (CDK_DEFAULT_ACCOUNT)
    # Training pipeline
    processing_instance_type: str = "ml.m5.xlarge"
    training_instance_type: str = "ml.m5.xlarge"
    training_max_runtime_seconds: int = TRAINING_MAX_RUNTIME_SECONDS  # SageMaker stops a training job past it
    families: tuple[str, ...] = DEFAULT_FAMILIES
    recall_threshold: float = DEFAULT_RECALL_THRESHOLD
    orphan_threshold: float = DEFAULT_ORPHAN_THRESHOLD
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD  # orphan diseases held out of training (UnseenOrphanRecallThreshold)
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
    # Alarms (they roll a blue/green deployment back)
    alarm_5xx_errors: int = 5  # Invocation5XXErrors per minute
    alarm_model_latency_ms: int = 500  # ModelLatency p95
    drift_metric_namespace: str = "Diagnosa/Monitoring"  # the metric's name is the job's: monitoring/cloudwatch.py
    drift_threshold: float = 0.2  # the retraining hook: the drift alarm starts an execution
    # Who hears the alarms: e-mail subscriptions to the stage's alerts topic (each address confirms once);
    # in cdk.json a list, with -c a comma-separated string. Empty: alarms still roll back and retrain.
    alarm_emails: tuple[str, ...] = ()
    # Monitoring job (monitoring/job.py on SageMaker Processing), which publishes the drift metric
    monitor_schedule: str = "rate(1 day)"  # EventBridge schedule expression; "" turns the schedule off
    monitor_window: str = ""  # traffic each run reads (30m, 24h, 7d, 2w); "" = the period of a rate() schedule
    # How long after a request its confirmed diagnosis may come ("0" for none): each run's live quality also judges
    # the requests of this long before its window, whose feedback earlier runs could not yet join.
    monitor_feedback_lag: str = "7d"
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
    # CloudFormation termination protection of the stage's stacks; unset (None): on for a stage named prod, a stage
    # with promote_from, and the delivery pipeline's last stage (see protected()).
    termination_protection: bool | None = None

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

    def protected(self, last_delivery_stage: str | None = None) -> bool:
        """Whether the stage's stacks get termination protection: the setting, else on for production-like stages
        (named prod, promoting from another stage, or the last the delivery pipeline deploys)."""
        if self.termination_protection is not None:
            return self.termination_protection
        return self.stage == "prod" or bool(self.promote_from) or self.stage == last_delivery_stage

    def check(self) -> "StageConfig":
        problems = []
        # Types first (cdk.json is typed JSON): a str field given a number or a list is named, not a TypeError.
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type.startswith("str") and not (isinstance(value, str) or (value is None and "None" in f.type)):
                problems.append(f"{f.name} must be a string, got {_q(value)}")
            texts = value if isinstance(value, tuple) else (value,)
            if any(isinstance(t, str) and has_surrogate(t) for t in texts):  # no text AWS (or jsii's JSON) takes
                problems.append(f"{f.name} holds a lone UTF-16 surrogate: {_q(value)}")
        if problems:
            raise ValueError(f"stage {_label(self.stage)}: " + _problems(problems))
        if not STAGE_NAME.fullmatch(self.stage):
            problems.append(f"stage name {_q(self.stage)} must be 2-12 lowercase letters or digits, starting with a letter")
        if self.region not in sagemaker_regions():  # a concrete region: the image URIs in the definition depend on it
            problems.append(f"region {_q(self.region)} is not a region where SageMaker runs (botocore knows "
                            f"{len(sagemaker_regions())}: {', '.join(sorted(sagemaker_regions())[:4])}, ...)")
        elif (partition := region_partition(self.region)) not in PARTITIONS:
            problems.append(f"region {_q(self.region)} is in the {partition} partition, which this stack does not "
                            f"support (only {' and '.join(PARTITIONS)}: resource types it uses, such as "
                            f"AWS::SageMaker::ModelPackageGroup, or its <service>.<region>.amazonaws.com service "
                            f"hosts do not exist there)")
        if self.account is not None and not ACCOUNT.fullmatch(self.account):
            problems.append(f"account {_q(self.account)} must be 12 digits")
        if not 1 <= self.endpoint_min_instances <= self.endpoint_max_instances:
            problems.append(f"need 1 <= endpoint_min_instances <= endpoint_max_instances, got "
                            f"{self.endpoint_min_instances} and {self.endpoint_max_instances}")
        elif self.endpoint_max_instances > MAX_INSTANCES:
            problems.append(f"endpoint_max_instances must be at most {MAX_INSTANCES}, got {self.endpoint_max_instances} "
                            f"(SageMaker's instance quotas are far lower; a larger fleet is a deliberate change here)")
        if self.traffic_shifting not in ("CANARY", "ALL_AT_ONCE"):
            problems.append(f"traffic_shifting must be CANARY or ALL_AT_ONCE, got {_q(self.traffic_shifting)}")
        if not 1 <= self.training_max_runtime_seconds <= MAX_RUNTIME_LIMIT_SECONDS:
            problems.append(f"training_max_runtime_seconds must be in [1, {MAX_RUNTIME_LIMIT_SECONDS}] (28 days, "
                            f"SageMaker's limit), got {self.training_max_runtime_seconds}")
        if not 1 <= self.canary_percent <= 50:
            problems.append(f"canary_percent must be in [1, 50], got {self.canary_percent}")
        if not 0 <= self.bake_seconds <= 3600:  # UpdateEndpoint's WaitIntervalInSeconds / TerminationWaitInSeconds
            problems.append(f"bake_seconds must be in [0, 3600] (SageMaker's limit on a blue/green wait), got "
                            f"{self.bake_seconds}")
        for name, kind in (("processing_instance_type", "processing"), ("training_instance_type", "training"),
                           ("endpoint_instance_type", "endpoint"), ("monitor_instance_type", "processing")):
            problem = instance_type_problem(kind, getattr(self, name))  # botocore's list: what SageMaker takes
            if problem:
                problems.append(f"{name}: {problem}")
            elif name in ("processing_instance_type", "training_instance_type") and _local_storage(getattr(self, name)):
                problems.append(
                    f"{name}: {_q(getattr(self, name))} has local (NVMe) storage, for which SageMaker refuses a "
                    "VolumeKmsKeyId (its hardware encrypts it); the stage's pipeline encrypts every job's volume with "
                    "the stage's key, and the type is a run-time parameter it cannot leave the key out for: every "
                    "execution would fail at its first job. Choose a type without local storage (no 'd' in the "
                    "family, not g5, g6, p5, trn1...), e.g. ml.m5.xlarge")
        for name in ("retrain_schedule", "monitor_schedule"):
            problem = schedule_problem(getattr(self, name))
            if problem:
                problems.append(f"{name} {_q(getattr(self, name))} {problem}")
        for name, low, high, why in (
                ("capture_expiry_days", 1, MAX_DAYS, ""), ("noncurrent_version_days", 1, MAX_DAYS, ""),
                ("access_log_days", 1, MAX_DAYS, ""), ("log_retention_days", 1, LOG_RETENTION_MAX, ""),
                ("invocations_per_instance", 1, 100_000, " (per instance and minute)"),
                ("alarm_5xx_errors", 1, 100_000, " (errors per minute: a higher threshold never fires)"),
                ("alarm_model_latency_ms", 1, 60_000, " (SageMaker cuts an invocation off at 60 s: a higher "
                                                      "threshold never fires)")):
            value = getattr(self, name)
            if not low <= value <= high:
                problems.append(f"{name} must be [{low}, {high}]{why}, got {value}")
        if not math.isfinite(self.drift_threshold) or self.drift_threshold <= 0:
            problems.append(f"drift_threshold must be a positive finite number, got {_q(self.drift_threshold)}")
        namespace = self.drift_metric_namespace
        if not NAMESPACE.fullmatch(namespace) or namespace.startswith((":", "AWS/")):
            problems.append(f"drift_metric_namespace {_q(namespace)} must be 1-255 of CloudWatch's namespace characters "
                            f"(ASCII letters, digits, . - _ / # : and space), not starting with ':', the namespace "
                            f"not under AWS/")
        from pipelines.definition import families_problem

        problem = (f"families lists {len(self.families):,} names: at most one of each family"
                   if len(self.families) > 50 else families_problem(self.families))
        if problem:
            problems.append(problem)
        if self.vpc:
            try:
                net = ipaddress.IPv4Network(self.vpc_cidr)
                if not net.is_private or net.prefixlen not in VPC_PREFIXES:
                    raise ValueError
            except ValueError:
                problems.append(f"vpc_cidr {_q(self.vpc_cidr)} must be a private IPv4 network, /{VPC_PREFIXES[0]} to "
                                f"/{VPC_PREFIXES[-1]} (room for {VPC_AZS} subnets of /{VPC_SUBNET_MASK})")
        if self.raw_retention_mode not in ("COMPLIANCE", "GOVERNANCE"):
            problems.append(f"raw_retention_mode must be COMPLIANCE or GOVERNANCE, got {_q(self.raw_retention_mode)}")
        if not 1 <= self.raw_retention_days <= 36500:
            problems.append(f"raw_retention_days must be between 1 and 36500 (S3 object lock), got {self.raw_retention_days}")
        if not 0 <= self.capture_sampling_percent <= 100:
            problems.append(f"capture_sampling_percent must be in [0, 100], got {self.capture_sampling_percent}")
        window, rate = re.fullmatch(r"([1-9][0-9]{0,99})([mhdw])", self.monitor_window), RATE.fullmatch(self.monitor_schedule)
        lag = re.fullmatch(r"([0-9]{1,100})([mhdw])", self.monitor_feedback_lag) if isinstance(
            self.monitor_feedback_lag, str) else None
        lag_days = int(lag[1]) * WINDOW_DAYS[lag[2]] if lag else 0
        if self.monitor_feedback_lag != "0" and not lag:
            problems.append(f"monitor_feedback_lag {_q(self.monitor_feedback_lag)} must be 0 or a duration like 12h, 7d "
                            "or 2w")
        if self.monitor_window and not window:
            problems.append(f"monitor_window {_q(self.monitor_window)} must be a duration like 30m, 24h, 7d or 2w")
        elif (read := window or rate) and self.capture_expiry_days >= 1:  # the window: given, or the rate's period
            n, unit = int(read[1]), read[2][0]  # '7d' or 'rate(7 days)': 7, 'd'
            if n * WINDOW_DAYS[unit] > self.capture_expiry_days:
                problems.append(f"monitor_window {self.monitor_window or f'{n}{unit} (the schedule period)'} is "
                                f"longer than capture_expiry_days ({self.capture_expiry_days}): the lake deletes "
                                f"captures older than that, so each run would read less than it says; give at most "
                                f"{self.capture_expiry_days}d")
            elif n * WINDOW_DAYS[unit] + lag_days > self.capture_expiry_days:
                problems.append(f"monitor_window {self.monitor_window or f'{n}{unit} (the schedule period)'} and "
                                f"monitor_feedback_lag {self.monitor_feedback_lag} reach back further than "
                                f"capture_expiry_days ({self.capture_expiry_days}): the lake deletes the captures the "
                                "live quality would judge; shorten the lag or keep captures longer")
        if (self.monitor_schedule and not self.monitor_window
                and not RATE.fullmatch(self.monitor_schedule)):
            problems.append("monitor_window is required when monitor_schedule is not rate(N minutes|hours|days)")
        if self.vpc and not self.baked_images:
            problems.append("vpc mode needs baked_images=true: the isolated subnets reach no package index, so "
                            "containers that pip-install their pins at start would fail (remove baked_images=false "
                            "or set vpc=false)")
        if len(self.alarm_emails) > MAX_ALARM_EMAILS:
            problems.append(f"alarm_emails lists {len(self.alarm_emails):,} addresses, at most {MAX_ALARM_EMAILS} (each "
                            "is a subscription resource of the stage's stack, which CloudFormation caps at 500 "
                            "resources): subscribe a distribution list instead")
        bad = [e for e in self.alarm_emails if not isinstance(e, str) or len(e) > 254 or not EMAIL.fullmatch(e)]
        if bad:
            problems.append(f"alarm_emails: {some_of(map(_q, bad))} not an e-mail address")
        if len({str(e).lower() for e in self.alarm_emails}) != len(self.alarm_emails):
            problems.append("alarm_emails lists an address twice")
        for name in ("recall_threshold", "orphan_threshold", "unseen_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {_q(getattr(self, name))}")
        if self.dataset_config:
            from diagnosa.data.schema import SchemaError
            from pipelines.definition import parameter_names

            try:
                parameter_names(self.dataset_settings["labels"])  # each label a gate parameter of its own
            except (SchemaError, ValueError, OSError) as err:
                problems.append(f"dataset_config: {clip(str(err), PROBLEM_CHARS - 16)}")
        if problems:
            raise ValueError(f"stage {_label(self.stage)}: " + _problems(problems))
        return self


def _known_partition(region: str) -> str | None:
    """The partition of a region botocore knows, or None for one it does not."""
    from botocore.exceptions import UnknownRegionError

    try:
        return region_partition(region)
    except UnknownRegionError:
        return None


def region_partition(region: str) -> str:
    """The AWS partition of a region botocore knows (``aws``, ``aws-cn``, ``aws-us-gov``, ...)."""
    import botocore.session

    return str(botocore.session.get_session().get_partition_for_region(region))


# EventBridge's cron fields (docs: "Cron expressions reference"): name, range, the names a field takes for its
# numbers, and the special characters it allows beyond , - * /.
_MONTHS = {m: i + 1 for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT",
                                           "NOV", "DEC"))}
_DAYS = {d: i + 1 for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minutes", 0, 59, {}), ("hours", 0, 23, {}), ("day-of-month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS), ("year", 1970, 2199, {}))
MIN_PERIOD_MINUTES = 60  # a schedule fires at most hourly (SageMaker model monitoring's shortest period)


def _cron_field_problem(index: int, text: str) -> str | None:
    name, low, high, names = CRON_FIELDS[index]

    def number(token: str) -> int | None:
        value = names.get(token.upper()) if token.isalpha() else int(token) if token.isascii() and token.isdigit() else None
        return value if value is not None and low <= value <= high else None

    if text == "?":
        return None if name in ("day-of-month", "day-of-week") else f"{name} '?': '?' is only for day-of-month or day-of-week"
    for item in text.split(","):
        if name == "day-of-month" and (item in ("L", "LW") or (item.endswith("W") and number(item[:-1]))):
            continue
        if name == "day-of-week" and (item == "L" or (item.endswith("L") and number(item[:-1]))
                                      or (item.count("#") == 1 and number(item.split("#")[0])
                                          and item.split("#")[1] in tuple("12345"))):
            continue
        base, _, step = item.partition("/")
        if step and not (step.isascii() and step.isdigit() and 1 <= int(step) <= high):
            return f"{name} {_q(text)}: step {_q(step)} is not a number in [1, {high}]"
        if base == "*":
            continue
        first, _, last = base.partition("-")
        if number(first) is None or (last and number(last) is None):
            shown = f"{low}-{high}" + (f" or {next(iter(names))}-{list(names)[-1]}" if names else "")
            return f"{name} {_q(text)} is not {shown} (with , - * /" + {"day-of-month": " ? L W", "day-of-week":
                                                                            " ? L #"}.get(name, "") + ")"
    return None


def cron_problem(fields_text: str) -> str | None:
    """Why the six fields of ``cron(...)`` are not an EventBridge cron expression, or None."""
    parts = fields_text.split(" ")
    if len(parts) != 6:
        return "cron() takes six fields: minutes hours day-of-month month day-of-week year"
    for i, text in enumerate(parts):
        problem = _cron_field_problem(i, text)
        if problem:
            return problem
    if (parts[2] == "?") == (parts[4] == "?"):
        return "exactly one of day-of-month and day-of-week must be '?' (EventBridge takes one of them, not both)"
    return None


def schedule_problem(expr: str) -> str | None:
    """Why ``expr`` is not an EventBridge schedule this stack runs (at most hourly), or None; "" is none."""
    if not expr:
        return None
    usage = ("must be rate(1 hour|day), rate(N minutes|hours|days) with N > 1, cron(<6 fields>), or \"\" to turn "
             "the schedule off")
    rate, cron = RATE.fullmatch(expr), CRON.fullmatch(expr)
    if len(expr) > 256 or not (rate or cron) or (rate and (rate[1] == "1") == rate[2].endswith("s")):
        return usage
    if rate:
        minutes = int(rate[1]) * {"m": 1, "h": 60, "d": 1440}[rate[2][0]]
        if minutes < MIN_PERIOD_MINUTES:
            return ("runs more often than hourly (each run is a SageMaker job; SageMaker model monitoring's shortest "
                    "schedule is hourly): give rate(1 hour) or longer")
        return None
    assert cron is not None
    problem = cron_problem(cron[1])
    if problem:
        return f"is not an EventBridge cron expression: {problem}"
    if not (cron[1].split(" ")[0].isascii() and cron[1].split(" ")[0].isdigit()):
        return ("runs more often than hourly (each run is a SageMaker job; SageMaker model monitoring's shortest "
                "schedule is hourly): give one minute in the minutes field, e.g. cron(0 3 ? * MON *)")
    return None


TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")
INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII only: int() also takes "1_0" and Arabic-Indic digits
# ASCII only, as INTEGER: float() also takes Arabic-Indic digits and "1_0"; nan/inf are refused below.
FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)
OPTIONAL_BOOLS = ("termination_protection",)  # bool settings whose default (None) means "decided by the stage"


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` (from cdk.json: typed; from ``-c``: a string) as the field's type, or a ValueError naming it."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        # a text (-c) or JSON 0/1; str() of anything else costs its whole repr (a list nested 5,000 deep raised)
        text = str(value).strip().lower() if isinstance(value, (str, int)) else ""
        if text in TRUE or text in FALSE:
            return text in TRUE
        raise ValueError(f"{name} must be true or false, got {_q(value)}")
    if isinstance(default, tuple):
        if isinstance(value, str):
            if value.strip().startswith("["):  # -c diagnosa:families=["mlp","xgboost"]: JSON is cdk.json's
                raise ValueError(f"{name}: -c takes a comma-separated list (-c diagnosa:{name}=a,b), got {_q(value)}; "
                                 f"a JSON list goes in cdk.json")
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {_q(value)}")
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of strings, got {_q(value)}")
        return tuple(value)
    if not isinstance(default, (int, float)):  # a text (or None) setting: its type is check()'s to name
        return value
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()) and len(value.strip().lstrip("+-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"{name} must be a number of at most {MAX_NUMBER_DIGITS} digits, got {_q(value)}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** MAX_NUMBER_DIGITS:
        raise ValueError(f"{name} must be a number of at most {MAX_NUMBER_DIGITS} digits, got {_q(value)}")
    try:
        if isinstance(value, bool):  # JSON true is neither 1 instance nor a threshold of 1.0
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, float) and not (value.is_integer() and abs(value) < 10 ** MAX_NUMBER_DIGITS):
                raise ValueError  # NaN, inf, 1.5, 1e300
            if isinstance(value, str) and not INTEGER.fullmatch(value.strip()):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, str) and not FLOAT.fullmatch(value.strip()):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # NaN/inf reach the jsii kernel as invalid JSON
                raise ValueError
            return number
    except (TypeError, ValueError, OverflowError):
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"{name} must be {kind}, got {_q(value)}") from None
    return value


def stage_config(stage: str, values: dict[str, Any]) -> StageConfig:
    if not isinstance(values, dict):
        raise ValueError(f"stage {_label(stage)}: its block in diagnosa:stages must be an object of settings, got {_q(values)}")
    known = {f.name: f for f in fields(StageConfig) if f.name != "stage"}  # the block's key names the stage
    removed = [f"{name} was removed: {REMOVED[name]}" for name in sorted(set(values) & set(REMOVED))]
    if removed:
        raise ValueError(f"stage {_label(stage)}: " + "; ".join(removed))
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"stage {_label(stage)}: unknown settings [{some_of(map(_q, unknown))}]")
    if "region" not in values:
        raise ValueError(f"stage {_label(stage)}: needs a region")
    base = StageConfig(stage=stage, region=values["region"])
    try:
        coerced = {k: _coerce(k, v, False if k in OPTIONAL_BOOLS else getattr(base, k))
                   for k, v in values.items() if k not in ("stage", "region")}
    except ValueError as err:
        raise ValueError(f"stage {_label(stage)}: {err}") from None
    if coerced.get("vpc") and "baked_images" not in coerced:
        coerced["baked_images"] = True  # VPC mode bakes the images unless told otherwise (which check() refuses)
    return replace(base, **coerced).check()


def declared_stages(get: Any, all_context: dict[str, Any] | None = None) -> dict[str, StageConfig]:
    """Every stage of ``diagnosa:stages``, by name, with the ``-c diagnosa:<field>`` overrides (with
    ``all_context``, ``node.get_all_context()``, a ``diagnosa:`` key naming no field stops synth)."""
    declared: dict[str, dict[str, Any]] = get("diagnosa:stages") or {}
    if not isinstance(declared, dict):
        raise ValueError(f"diagnosa:stages must be an object (stage name -> settings), got {_q(declared)}")
    if not declared:
        raise ValueError("no stages: set the context key diagnosa:stages (see cdk.json)")
    if all_context is not None:
        known = {f"diagnosa:{f.name}" for f in fields(StageConfig) if f.name != "stage"}
        known |= {"diagnosa:stages", "diagnosa:delivery"} | {f"diagnosa:{name}" for name in REMOVED}
        typos = sorted(k for k in all_context if isinstance(k, str) and k.startswith("diagnosa:") and k not in known)
        if typos:
            raise ValueError(f"unknown context key(s) [{some_of(map(_q, typos))}]: -c diagnosa:<field> must name a setting of "
                             f"infra/config.py:StageConfig")
    overrides = {name: get(f"diagnosa:{name}") for name in (*(f.name for f in fields(StageConfig)), *REMOVED)}
    overrides = {k: v for k, v in overrides.items() if v is not None and k != "stage"}
    return {name: stage_config(name, {**values, **overrides} if isinstance(values, dict) else values)
            for name, values in declared.items()}


def stages_from_context(get: Any) -> list[StageConfig]:
    """``get`` is ``node.try_get_context``. Returns the stages to synthesize (``-c stage=NAME``: that one)."""
    declared = declared_stages(get)
    wanted = get("stage")
    if wanted and (not isinstance(wanted, str) or wanted not in declared):  # a list or object: not a TypeError
        raise ValueError(f"unknown stage {_q(wanted)} (-c stage=NAME; declared: {some_of(declared)})")
    return [declared[wanted]] if wanted else list(declared.values())


CONNECTION_ARN = re.compile(r"arn:aws[a-z-]*:(codestar-connections|codeconnections):[a-z0-9-]+:[0-9]{12}"
                            r":connection/[A-Za-z0-9_-]+")  # always fullmatch


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
        texts = {"region": self.region, "account": self.account or "", "repository": self.repository,
                 "connection_arn": self.connection_arn, "branch": self.branch, "stages": "".join(self.stages)}
        surrogates = [name for name, text in texts.items() if has_surrogate(text)]
        if surrogates:  # no text AWS (or jsii's JSON) takes: synth would fail in the jsii kernel
            raise ValueError(f"diagnosa:delivery: {', '.join(surrogates)} holds a lone UTF-16 surrogate "
                             "(\\ud800-\\udfff), which is not Unicode text")
        if not REGION.fullmatch(self.region):
            problems.append(f"region {_q(self.region)} must be a concrete AWS region")
        elif (partition := _known_partition(self.region)) not in PARTITIONS:
            where = f"in the {partition} partition" if partition else "not a region botocore knows"
            problems.append(f"region {_q(self.region)} is {where}: the pipeline runs in {' or '.join(PARTITIONS)} "
                            "regions only")
        if self.account is not None and not ACCOUNT.fullmatch(self.account):
            problems.append(f"account {_q(self.account)} must be 12 digits")
        if not self.stages:
            problems.append("stages must list the stages to deploy, in order (e.g. [\"dev\", \"prod\"])")
        unknown = [s for s in self.stages if s not in stages]
        if unknown:
            problems.append(f"stages [{some_of(map(_q, unknown))}] are not declared in diagnosa:stages "
                            f"({some_of(stages)})")
        if len(set(self.stages)) != len(self.stages):
            problems.append("stages lists a stage twice")
        if not self.repository:
            problems.append("repository is required: a CodeCommit repository's name, or owner/name with connection_arn")
        if self.connection_arn and not CONNECTION_ARN.fullmatch(self.connection_arn):
            problems.append(f"connection_arn {_q(self.connection_arn)} is not a CodeStar/CodeConnections connection ARN")
        if self.connection_arn and not re.fullmatch(r"[\w.-]{1,100}/[\w.-]{1,100}", self.repository, re.ASCII):
            problems.append(f"repository {_q(self.repository)} must be owner/name with a connection (each 1-100 ASCII "
                            "letters, digits, '.', '-' or '_')")
        if len(self.branch) > 255:  # a ref is a file of that name: 255 bytes at most on the usual filesystems
            problems.append(f"branch {_q(self.branch)} is {len(self.branch):,} characters long, at most 255")
        elif not self.branch or re.search(r"\.\.|[\s~^:?*\[\\]|^/|/$|\.lock$|@\{", self.branch):
            problems.append(f"branch {_q(self.branch)} must be a valid git branch name")
        if not self.connection_arn and not re.fullmatch(r"[\w.-]{1,100}", self.repository, re.ASCII):
            problems.append(f"repository {_q(self.repository)} is not a CodeCommit repository name")
        order = {name: i for i, name in enumerate(self.stages)}
        for name in self.stages:
            source = stages[name].promote_from if name in stages else ""
            if source and order.get(source, len(order)) >= order[name]:
                problems.append(f"stage {_label(name)} promotes from {_q(source)}, which the pipeline does not deploy before it")
        # A stage of another region deploys from the pipeline's artifact store in that region, a replication stack
        # of the pipeline's account there (infra/replication.py) whose bucket is named after that account: it is
        # needed by value (CDK itself stops synth with ExplicitAccountRequiredForCrossRegion otherwise).
        elsewhere = [name for name in self.stages if name in stages and stages[name].region != self.region]
        if self.account is None and elsewhere:  # one problem, however many stages
            name, region = elsewhere[0], stages[elsewhere[0]].region
            also = f" (so do {some_of(elsewhere[1:])})" if elsewhere[1:] else ""
            problems.append(
                f"stage {name} deploys to {region}, not the pipeline's region {self.region}{also}: a cross-region "
                "pipeline needs its account given explicitly: set diagnosa:delivery's account (the tooling account; "
                f"and {name}'s own account in diagnosa:stages where it is another), and bootstrap the tooling account "
                f"in {region} too (docs/deploy.md, §0)")
        if problems:
            raise ValueError("diagnosa:delivery: " + _problems(problems))
        return self


def delivery_from_context(get: Any) -> DeliveryConfig | None:
    """The delivery pipeline's settings, or None without ``diagnosa:delivery`` or when ``-c stage=NAME`` picks
    one stage (a pipeline synthesized with fewer stages would remove the others when it updates itself)."""
    values = get("diagnosa:delivery")
    if not values or get("stage"):
        return None
    if not isinstance(values, dict):
        raise ValueError(f"diagnosa:delivery must be an object of settings, got {_q(values)}")
    for name in ("region", "repository", "account", "connection_arn", "branch"):
        if name in values and not isinstance(values[name], str):
            raise ValueError(f"diagnosa:delivery: {name} must be a string, got {_q(values[name])}")
    known = {f.name for f in fields(DeliveryConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"diagnosa:delivery: unknown settings [{some_of(map(_q, unknown))}]")
    missing = [name for name in ("region", "stages", "repository") if name not in values]
    if missing:
        raise ValueError(f"diagnosa:delivery: needs {', '.join(missing)}")
    if not isinstance(values["stages"], list) or not all(isinstance(s, str) for s in values["stages"]):
        raise ValueError(f"diagnosa:delivery: stages must be a list, got {_q(values['stages'])}")
    config = DeliveryConfig(**{**values, "stages": tuple(values["stages"])})
    return config.check(declared_stages(get))


def delivery_account(get: Any) -> str | None:
    """The tooling account of ``diagnosa:delivery`` (its ``account``), also when ``-c stage=NAME`` builds no pipeline:
    a stage's promote function trusts it. None without one; a block that is not an object, or an account that is not
    12 digits, is a ValueError (it reached the stack unchecked, or crashed the app with an AttributeError)."""
    values = get("diagnosa:delivery")
    if not values:
        return None
    if not isinstance(values, dict):
        raise ValueError(f"diagnosa:delivery must be an object of settings, got {_q(values)}")
    account = values.get("account")
    if account is not None and not (isinstance(account, str) and ACCOUNT.fullmatch(account)):
        raise ValueError(f"diagnosa:delivery: account {_q(account)} must be 12 digits")
    return account


def check_promotions(stages: dict[str, StageConfig]) -> None:
    for config in stages.values():
        if config.promote_from and (config.promote_from not in stages or config.promote_from == config.stage):
            raise ValueError(f"stage {_label(config.stage)}: promote_from {_q(config.promote_from)} must name another declared "
                             f"stage ({some_of(s for s in stages if s != config.stage)})")
    for config in stages.values():  # a cycle (dev <- prod <- dev) is refused with or without a delivery pipeline
        chain, source = [config.stage], config.promote_from
        while source:
            if source in chain:
                raise ValueError(f"promote_from forms a cycle: {' <- '.join(chain + [source])}")
            chain.append(source)
            source = stages[source].promote_from
    for config in stages.values():
        if config.promote_from:
            _check_promotion(config, stages[config.promote_from])


def _check_promotion(config: StageConfig, source: StageConfig) -> None:
    """A stage serves only versions trained for its own dataset: the promote function copies the source's version as
    it is, so both stages must train the same dataset (name and labels). Their gates may differ: the promote
    function gates the version again with the promoting stage's own (docs/deploy.md, "Model promotion")."""
    def dataset(c: StageConfig) -> str:
        return f"{c.stage} trains dataset {_q(c.dataset)} ({c.dataset_config or 'the built-in cohort'}; labels " \
               f"{', '.join(c.labels)})"

    if (config.dataset, config.labels) != (source.dataset, source.labels):
        raise ValueError(f"stage {_label(config.stage)}: promote_from {_q(source.stage)} needs both stages on one dataset, but "
                         f"{dataset(config)} and {dataset(source)}: a promoted version would serve another dataset's "
                         "fields and labels")


__all__ = ["DeliveryConfig", "StageConfig", "check_promotions", "cron_problem", "declared_stages",
           "delivery_account", "delivery_from_context", "schedule_problem", "stage_config", "stages_from_context"]
