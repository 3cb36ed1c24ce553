"""The Diagnosa SageMaker Pipeline, as code (SageMaker Python SDK v3).

preprocess (split + feature pipeline fitted once) → transform (the curated parts sharded over
ProcessingInstanceCount instances) → train one candidate per model family (in parallel; XGBoost across
TrainingInstanceCount instances) → select the champion → evaluate
on test (PropertyFile) → gate: one condition per class on test recall plus one on the orphan slice
→ register the champion in the Model Package Group with its metrics and lineage (input data, code,
execution) and, when the approval status parameter is ``Approved``, deploy it: model → endpoint
config with data capture → endpoint (created, or updated when it exists); or fail naming each class
that missed its threshold and by how much.

Reproducible: step code is one content-hashed ``sourcedir.tar.gz`` (``pipelines/staging.py``) and
processing job names carry that hash, so the same code and settings give byte-identical JSON. How
each SDK call behaves offline is recorded in docs/design/sagemaker-sdk-v3.md.
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from diagnosa.data.schema import (
    BUILTIN_DATASET,
    BUILTIN_RESOURCE,
    DATASET_NAME,
    DATASET_NAME_RULE,
    ENDPOINT_NAME_MAX,
    EXECUTION_ID_LENGTH,
    MISSING_INDICATORS,
    RESOURCE_NAME,
    SLICE_NAME,
    config_gate,
    config_missing_indicators,
    config_slice,
    resource_name,
    unseen_slice,
)
from diagnosa.data.validate import shown
from diagnosa.labels import CATEGORIES, ascii_words
from diagnosa.serving_code import SERVING_PROGRAM
from diagnosa.text import some_of
from pipelines.service_model import instance_count_problem
from processing.baseline import EVALUATION
from processing.features import REDUCTIONS, FeatureParams
from processing.metrics import DEFAULT_ORPHAN_THRESHOLD, DEFAULT_RECALL_THRESHOLD, DEFAULT_UNSEEN_THRESHOLD
from processing.resample import METHODS
from processing.select import ENSEMBLE_MODES

DEFAULT_FAMILIES = ("mlp", "logistic_regression", "xgboost", "gradient_boosting")  # docs/model-benchmark.md
DISTRIBUTED_FAMILIES = ("xgboost",)  # the families that train across instances (training/distributed.py)
INSTANCE_COUNT_PARAMETERS = {"processing": "ProcessingInstanceCount", "training": "TrainingInstanceCount"}
# Labels a dataset may have: Evaluate takes one container argument per label's threshold, besides its base folder
# and two slice thresholds (6), and SageMaker takes at most 100 container arguments per job.
MAX_LABELS = 90
RECALL_THRESHOLD = "RecallThreshold"  # in the name of every recall-threshold parameter (a class's, a slice's)
SEED_PARAMETER = "Seed"
GATE_FAILED_STEP = "RecallGateFailed"  # the Fail step the recall gate leads to: the CLI's hint after a run names its thresholds
# SageMaker's names of pipelines, model package groups and endpoints.
SUBNET_ID = re.compile(r"\Asubnet-[0-9a-z]{1,25}\Z")  # \Z, fullmatch: "$" takes a final "\n"
SECURITY_GROUP_ID = re.compile(r"\Asg-[0-9a-z]{1,29}\Z")
KMS_KEY_ARN = re.compile(r"\Aarn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]{1,128}\Z")  # [0-9]: \d takes any digit
# The job and serving containers: AWS's PyTorch CPU images, chosen for their Python 3.11 — the pins in
# requirements/steps.txt (numpy 2.4, scikit-learn 1.9) need it, and the newest scikit-learn image
# (1.2-1) runs an older Python they do not install on. The containers pip-install the pins on top, or,
# with ``job_image``/``serving_image`` set, run images with the pins baked in (infra/images/).
FRAMEWORK = "pytorch"
# An isolated training job's step code: an input channel SageMaker downloads (the one object, into the channel's
# folder) and the training toolkit unpacks from there — a local sagemaker_submit_directory, which
# sagemaker_training.files.download_and_extract opens in place of fetching s3:// itself (what the v2 SDK did for
# isolated jobs: its "code" channel and CONTAINER_CODE_CHANNEL_SOURCEDIR_PATH).
CODE_CHANNEL = "code"
CODE_CHANNEL_DIR = f"/opt/ml/input/data/{CODE_CHANNEL}"
FRAMEWORK_VERSION = "2.5"
PY_VERSION = "py311"
# An image override: an ECR image URI with a tag or a digest (what SageMaker pulls for jobs and models).
IMAGE_URI = re.compile(r"\A[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9][a-z0-9._/-]*"
                       r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})\Z")


def framework_images(region: str, processing_instance_type: str = "ml.m5.xlarge",
                     endpoint_instance_type: str = "ml.m5.large") -> tuple[str, str]:
    """AWS's job (training scope, for processing and training) and serving images for ``region``."""
    from sagemaker.core import image_uris

    def retrieve(scope: str, instance_type: str) -> str:
        try:
            return image_uris.retrieve(framework=FRAMEWORK, region=region, version=FRAMEWORK_VERSION,
                                       py_version=PY_VERSION, instance_type=instance_type, image_scope=scope)
        except ValueError as err:
            # The SDK's words list every region it knows (~40) after the one refused; name the region instead.
            if not str(err).startswith("Unsupported region:"):
                raise
            raise ValueError(f"AWS region {shown(region, 80)} has no SageMaker {FRAMEWORK} {FRAMEWORK_VERSION} image that "
                             "the SageMaker SDK knows of: a region's name such as eu-west-1 (a region newer than the SDK "
                             "needs a newer sagemaker package)") from None

    return retrieve("training", processing_instance_type), retrieve("inference", endpoint_instance_type)


def class_parameter(label: str) -> str:
    """'ENFERMEDAD CRÓNICA' → 'RecallThresholdEnfermedadCronica', '1' → 'RecallThreshold1' (ASCII names)."""
    words = ascii_words(label)
    if not words:
        raise ValueError(f"label {label!r} has no letter or digit to name its recall-threshold parameter")
    return RECALL_THRESHOLD + words


# The longest ASCII spelling of a label (ascii_words): its parameter's name (RecallThreshold + it) stays within
# SageMaker's 256 characters of a PipelineParameterName, and the Evaluate job's argument
# (--recall-threshold=<it>=<value>) within the 256 of a ContainerArgument, a threshold's value included.
MAX_LABEL_NAME = 200


def parameter_names(labels: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Label → its recall-threshold parameter, in label order; ValueError when there are more labels than the
    pipeline takes, or a label has no letter or digit, is spelt longer than a parameter name can be, or two labels
    share a name (what the user should rename). Ingestion, the CDK app's config and the definition's build ask it."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels):,} labels: the pipeline takes at most {MAX_LABELS} (the Evaluate job takes each "
                         "label's recall threshold as one of SageMaker's at most 100 container arguments); merge the "
                         "rarest into broader classes")
    names: dict[str, str] = {}
    owner: dict[str, str] = {}  # parameter name → the label that took it (a scan of names per label was quadratic)
    for label in labels:
        name = class_parameter(label)
        if len(name) - len(RECALL_THRESHOLD) > MAX_LABEL_NAME:
            raise ValueError(f"label {shown(label, 60)} is spelt {len(name) - len(RECALL_THRESHOLD)} ASCII characters "
                             f"long in its recall-threshold parameter's name (accents dropped, any other non-ASCII "
                             f"letter written U+hex): at most {MAX_LABEL_NAME} (SageMaker takes parameter names and "
                             f"job arguments of up to 256 characters); shorten it")
        if name in owner:
            raise ValueError(f"labels {owner[name]!r} and {label!r} both map to the parameter name {name}: "
                             "rename one of them (docs/pipeline.md: parameter names)")
        names[label], owner[name] = name, label
    return names


def slice_parameter(name: str) -> str:
    """'orphan' → 'OrphanRecallThreshold': the minimum macro recall on the dataset's slice of that name."""
    return ascii_words(name) + RECALL_THRESHOLD


ENDPOINT_PARAMETER = "EndpointName"


def parameter_range_problems(values: dict[str, Any]) -> list[str]:
    """Values outside the range a parameter's meaning allows, one line each. SageMaker's parameter types declare
    no range (only strings take EnumValues), so a recall threshold of 1.5 or a seed of -3 would start the run and
    fail in the gate or inside a job; these are checked with the names and types, before any step runs."""
    from training.models import MAX_SEED

    problems = []
    for name, value in values.items():
        if RECALL_THRESHOLD in name and isinstance(value, float) and not 0.0 <= value <= 1.0:
            problems.append(f"parameter {name} is a recall threshold, in [0, 1]; got {value!r}")
        elif name == SEED_PARAMETER and isinstance(value, int) and not 0 <= value <= MAX_SEED:
            problems.append(f"parameter {name} must be in [0, {MAX_SEED}] (numpy's and xgboost's seeds); got {value}")
        elif name == ENDPOINT_PARAMETER and isinstance(value, str) and not RESOURCE_NAME.fullmatch(value):
            problems.append(f"parameter {name} must be a SageMaker name (ASCII letters, digits and inner '-', at most "
                            f"63); got {shown(value, 80)}")
        elif name == ENDPOINT_PARAMETER and isinstance(value, str) and endpoint_length_problem(name, value):
            problems.append(f"parameter {endpoint_length_problem(name, value)}")
    return problems


def endpoint_length_problem(what: str, value: str) -> str | None:
    """Why an endpoint name is too long for the definition's endpoint configs, or None."""
    if len(value) <= ENDPOINT_NAME_MAX:
        return None
    return (f"{what} {shown(value, 80)} is {len(value)} characters, at most {ENDPOINT_NAME_MAX}: the pipeline names "
            f"each endpoint config <{what}>-<execution id>, and SageMaker's ids are {EXECUTION_ID_LENGTH} characters "
            "(a name at most 63)")


# A parameter's value as text (--param NAME=VALUE): an ASCII decimal as written, with at most ASCII spaces around.
# str.strip() also took '\xa0', '\u2003', '\x1f' and a final '\n'; int() and float() also take '١٢', '1_000', '+3',
# 'nan' and 'inf' — each would have run with a value the command line never spelled.
PARAMETER_TEXT = {"Integer": re.compile(r"-?[0-9]+"),
                  "Float": re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")}
PARAMETER_HINT = {"Integer": "ASCII digits within 64 bits, e.g. 3 or -3",
                  "Float": "a finite decimal number, e.g. 0.8 or 1e-3", "Boolean": "true or false"}
INTEGER_DIGITS = 19  # 2**63 - 1 has 19 digits: more (leading zeros aside) is outside 64 bits, and int() is not asked
FLOAT_MAX = sys.float_info.max  # NaN compares false: finite, and a JSON integer too large for a float, are out


def parameter_from_text(name: str, kind: str, text: str) -> bool | int | float:
    """``text`` read as the value of parameter ``name`` of type ``kind`` (Boolean, Integer or Float); ValueError
    naming the parameter, what it takes, the value (clipped) and, for a number that is not the one written (too
    large, or too close to 0 for a float), why. ASCII spaces around the value are dropped, nothing else; an
    Integer's leading zeros are read as a Float's are ('007' is 7); a Float's '-0' is 0.0."""
    written = text.strip(" ")

    def refused(why: str = "") -> ValueError:
        article = "an" if kind == "Integer" else "a"
        return ValueError(f"parameter {name} is {article} {kind} ({PARAMETER_HINT[kind]}), got {shown(text, 80)}{why}")

    if kind == "Boolean":
        truth = {"true": True, "false": False}.get(written.lower())
        if truth is None:
            raise refused()
        return truth
    if kind not in PARAMETER_TEXT:
        raise ValueError(f"parameter {name}: type {kind!r} is not read from text (Boolean, Integer or Float)")
    if not PARAMETER_TEXT[kind].fullmatch(written):
        raise refused()
    if kind == "Integer":
        sign, digits = ("-", written[1:]) if written.startswith("-") else ("", written)
        digits = digits.lstrip("0") or "0"
        number = int(sign + digits) if len(digits) <= INTEGER_DIGITS else None  # int() refuses 4301 digits and more
        if number is None or not -2**63 <= number < 2**63:
            raise refused(f": outside 64 bits ({len(digits)} digits)")
        return number
    value = float(written)
    if abs(value) > FLOAT_MAX:
        raise refused(": too large for a float (it would be read as infinity)")
    mantissa = re.split("[eE]", written)[0]
    if value == 0.0 and mantissa.strip("-.0"):
        raise refused(": too close to 0 for a float (it would be read as 0)")
    return value + 0.0  # -0.0 + 0.0 is 0.0: '-0' is recorded as 0.0


def unseen_parameter(slice_name: str) -> str:
    """'orphan' → 'UnseenOrphanRecallThreshold'."""
    return "Unseen" + slice_parameter(slice_name)


def gate_parameter(check: str) -> str | None:
    """The parameter holding the threshold of one of the evaluation's gate checks (``processing.metrics.recall_gate``:
    'recall[<label>]', '<slice>_macro_recall', '<slice>_unseen_macro_recall'); None for a check it does not know."""
    if check.startswith("recall[") and check.endswith("]"):
        return class_parameter(check[len("recall["):-1])
    if check.endswith("_unseen_macro_recall"):
        return unseen_parameter(check.removesuffix("_unseen_macro_recall"))
    if check.endswith("_macro_recall"):
        return slice_parameter(check.removesuffix("_macro_recall"))
    return None


def dataset_settings(dataset: str, labels: tuple[str, ...] | list[str], slice_name: str | None,
                     grouped: bool = False, gate: dict[str, Any] | None = None,
                     missing_indicators: str | None = None) -> dict[str, Any]:
    """The PipelineSettings fields that come from a dataset: its labels, slice (``grouped``: with groups
    held out of training, hence an unseen sub-slice), model package group and endpoint; the default
    thresholds of its gate its config sets (``gate``: ``diagnosa.data.schema.config_gate``; a label it leaves
    out keeps DEFAULT_RECALL_THRESHOLD); and the default of its MissingIndicators parameter
    (``diagnosa.data.schema.config_missing_indicators``; None keeps the settings' default)."""
    settings: dict[str, Any] = {"dataset": dataset, "labels": tuple(labels), "slice_name": slice_name,
                                "slice_grouped": bool(grouped and slice_name),
                                "model_package_group": resource_name(dataset), "endpoint_name": resource_name(dataset)}
    if missing_indicators is not None:
        settings["missing_indicators"] = missing_indicators
    gate = gate or {}
    if "recall_thresholds" in gate:
        settings["recall_thresholds"] = {label: gate["recall_thresholds"].get(label, DEFAULT_RECALL_THRESHOLD)
                                         for label in labels}
    if "slice_threshold" in gate:
        settings["orphan_threshold"] = gate["slice_threshold"]
    if "unseen_threshold" in gate:
        settings["unseen_threshold"] = gate["unseen_threshold"]
    return settings


def config_dataset_settings(config: dict[str, Any]) -> dict[str, Any]:
    """``dataset_settings`` of a dataset config (``diagnosa.data.schema.load_dataset_config``), no data read: what
    `diagnosa pipeline ... --dataset-config` and a CDK stage's ``dataset_config`` build the definition with."""
    slice_ = config_slice(config)
    return dataset_settings(config["name"], config["labels"], slice_[0] if slice_ else None,
                            grouped=bool((config.get("slice") or {}).get("group")), gate=config_gate(config),
                            missing_indicators=config_missing_indicators(config))


# A training job's time limit (StoppingCondition.MaxRuntimeInSeconds): SageMaker's own default, 1 day. Given none, the
# SDK's ModelTrainer writes 3600 s, which a cross-validated search on a hospital's table can pass (19 min on 15k rows
# already); the job is then stopped with no reason of Diagnosa's. The local executor holds jobs to it too.
TRAINING_MAX_RUNTIME_SECONDS = 86_400
MAX_RUNTIME_LIMIT_SECONDS = 28 * 86_400  # the largest SageMaker takes


@dataclass(frozen=True)
class PipelineSettings:
    bucket: str
    role_arn: str
    code_uri: str  # s3://.../artifacts/code/<hash>/sourcedir.tar.gz
    code_sha256: str
    name: str = "diagnosa"
    region: str = "eu-west-1"
    families: tuple[str, ...] = DEFAULT_FAMILIES
    # The dataset the pipeline is built for: its labels (one recall-threshold parameter each, in this
    # order) and its slice (one gate condition on the slice's macro recall; None: no slice condition).
    # dataset_settings() fills these, with the group and endpoint named after the dataset.
    dataset: str = BUILTIN_DATASET
    labels: tuple[str, ...] = CATEGORIES
    slice_name: str | None = "orphan"
    # The slice has groups held out of training (the cohort's orphan diseases): one more gate condition on
    # the unseen sub-slice's macro recall (parameter Unseen<Slice>RecallThreshold).
    slice_grouped: bool = True
    model_package_group: str = BUILTIN_RESOURCE
    endpoint_name: str = BUILTIN_RESOURCE
    endpoint_instance_type: str = "ml.m5.large"
    capture_sampling: int = 100  # percentage of requests the endpoint captures for monitoring
    # Deploy steps in the pipeline (DeployIfApproved → CreateModel → EndpointConfig → Endpoint). The CDK app
    # turns them off: there the deploy function, on the registry's approval event, is the one deployment
    # path (blue/green with rollback, autoscaling, monitoring baselines), so two deployers never race.
    deploy_steps: bool = True
    processing_instance_type: str = "ml.m5.xlarge"
    training_instance_type: str = "ml.m5.xlarge"
    # Default instance counts (run-time parameters ProcessingInstanceCount, TrainingInstanceCount): the Transform
    # step shards the curated parts over the first, XGBoost trains across the second (docs/pipeline.md, Scale-out).
    processing_instance_count: int = 1
    training_instance_count: int = 1
    training_max_runtime: int = TRAINING_MAX_RUNTIME_SECONDS  # seconds a training job may run (SageMaker stops it)
    recall_thresholds: dict[str, float] | None = None  # label → default threshold; None: 0.80 for every label
    orphan_threshold: float = DEFAULT_ORPHAN_THRESHOLD  # the slice's default threshold (whatever its name)
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD  # the unseen sub-slice's default threshold
    # The MissingIndicators parameter's default: "scaled" for the built-in cohort, a dataset config's own
    # otherwise (diagnosa.data.schema.config_missing_indicators).
    missing_indicators: str = FeatureParams.missing_indicators
    # Images with the pins baked in (infra/images/: built and pushed by the CDK app). None: AWS's framework
    # images, on which each container pip-installs requirements.txt from the package index at start.
    # The containers still run that install with baked images (the SDK's runproc.sh, the training and
    # the serving toolkits install a requirements.txt they find; none can be told not to): the images set
    # PIP_NO_INDEX=1, so with every pin satisfied it is a no-op and a drifted pin fails the job at once.
    job_image: str | None = None  # processing and training jobs
    serving_image: str | None = None  # the registered model's container (and the deploy steps)
    # A KMS key (ARN) for the jobs' storage volumes and the objects they write (processing outputs, training
    # model.tar.gz). None: the account's defaults (AWS-managed EBS key, the bucket's default encryption).
    kms_key: str | None = None
    # Run the jobs in a VPC: its subnets and security groups (both or neither). The CDK app's VPC mode
    # sets its isolated subnets and its functions' group (HTTPS to the VPC endpoints and the S3 gateway only).
    subnets: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()

    def thresholds(self) -> dict[str, float]:
        if self.recall_thresholds is None:
            return {label: DEFAULT_RECALL_THRESHOLD for label in self.labels}
        return dict(self.recall_thresholds)

    def parameter_names(self) -> dict[str, str]:
        """Label → its recall-threshold parameter, in label order (refused when two labels share a name)."""
        return parameter_names(self.labels)


def families_problem(families: Any) -> str | None:
    """Why ``families`` is not a list of candidate families the definition can train (one step each), or None."""
    from training.models import FAMILIES

    known = ", ".join(FAMILIES)
    if not isinstance(families, (list, tuple)) or not families or not all(isinstance(f, str) for f in families):
        return f"families must be a non-empty list of names among {known}, got {shown(families, 80)}"
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:  # named ten at most, each bounded: a list of 100,000 names was said whole
        return f"families names {some_of(shown(f, 80) for f in unknown)}, not among {known}"
    repeated = sorted(f for f, n in Counter(families).items() if n > 1)  # families.count of each was quadratic
    if repeated:
        return f"families names {some_of(map(repr, repeated))} more than once (one training step each)"
    return None


def check_settings(settings: PipelineSettings) -> None:
    problem = families_problem(settings.families)
    if problem:
        raise ValueError(problem)
    if not DATASET_NAME.fullmatch(settings.dataset):
        raise ValueError(f"dataset name {shown(settings.dataset, 80)} must be {DATASET_NAME_RULE}")
    if len(settings.labels) < 2 or len(set(settings.labels)) != len(settings.labels):
        raise ValueError(f"labels must be at least two distinct values, got {list(settings.labels)}")
    if settings.missing_indicators not in MISSING_INDICATORS:
        raise ValueError(f"missing_indicators must be one of {', '.join(MISSING_INDICATORS)}, "
                         f"got {settings.missing_indicators!r}")
    names = settings.parameter_names()
    if settings.slice_name is not None:
        if not SLICE_NAME.fullmatch(settings.slice_name):
            raise ValueError(f"slice name {shown(settings.slice_name, 80)} must start with a letter and hold only ASCII "
                             "letters, digits and '_'")
        if slice_parameter(settings.slice_name) in names.values():
            raise ValueError(f"the slice '{settings.slice_name}' and a label both map to the parameter name "
                             f"{slice_parameter(settings.slice_name)}: rename one of them")
    thresholds = settings.thresholds()
    if set(thresholds) != set(settings.labels):
        raise ValueError(f"recall_thresholds needs exactly the labels {list(settings.labels)}")
    for name, value in [*thresholds.items(), (settings.slice_name or "the slice", settings.orphan_threshold),
                        ("the unseen sub-slice", settings.unseen_threshold)]:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"recall threshold for {name} must be in [0, 1], got {value}")
    if (isinstance(settings.training_max_runtime, bool) or not isinstance(settings.training_max_runtime, int)
            or not 1 <= settings.training_max_runtime <= MAX_RUNTIME_LIMIT_SECONDS):
        raise ValueError(f"training_max_runtime must be a whole number of seconds from 1 to {MAX_RUNTIME_LIMIT_SECONDS:,} "
                         f"(28 days, SageMaker's limit), got {settings.training_max_runtime!r}")
    for what in ("name", "model_package_group", "endpoint_name"):
        value = getattr(settings, what)
        if not RESOURCE_NAME.fullmatch(value):
            raise ValueError(f"{what} {shown(value, 80)} is not a SageMaker name (ASCII letters, digits and inner '-', "
                             "at most 63)")
    problem = endpoint_length_problem("endpoint_name", settings.endpoint_name)
    if problem:
        raise ValueError(problem)
    if bool(settings.subnets) != bool(settings.security_group_ids):
        raise ValueError("subnets and security_group_ids go together: give both (a VPC) or neither")
    for what, pattern, values, form in (("subnet", SUBNET_ID, settings.subnets, "subnet-<1 to 25 of a-z, 0-9>"),
                                        ("security group", SECURITY_GROUP_ID, settings.security_group_ids,
                                         "sg-<1 to 29 of a-z, 0-9>")):
        bad = [v for v in values if not isinstance(v, str) or not pattern.fullmatch(v)]
        if bad:
            raise ValueError(f"{what} id(s) {shown(bad, 200)} are not {what} ids ({form})")
    for kind in ("processing", "training"):
        problem = instance_count_problem(kind, getattr(settings, f"{kind}_instance_count"))
        if problem:
            raise ValueError(f"{kind}_instance_count (the default of {INSTANCE_COUNT_PARAMETERS[kind]}) {problem}")
    if settings.kms_key is not None and not KMS_KEY_ARN.fullmatch(settings.kms_key):
        raise ValueError(f"kms_key {shown(settings.kms_key, 160)} must be a KMS key ARN "
                         "(arn:aws:kms:<region>:<account>:key/<key id>)")
    if not settings.code_uri.startswith(f"s3://{settings.bucket}/"):
        raise ValueError(f"code_uri {settings.code_uri} must be in the pipeline's bucket {settings.bucket}")
    for name in ("job_image", "serving_image"):
        value = getattr(settings, name)
        if value is not None and not (isinstance(value, str) and IMAGE_URI.fullmatch(value)):
            raise ValueError(f"{name} {shown(value, 200)} must be an ECR image URI "
                             f"(<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag> or @sha256:<digest>)")


@contextmanager
def sdk_quiet() -> Iterator[None]:
    """Errors only from the SageMaker SDK while it builds or upserts a pipeline. It narrates every object it builds
    (one module calls ``logging.basicConfig(level=INFO)`` at import; some loggers sit at DEBUG with their own
    handlers): ~70 lines of "Found endpoint for sts" and popped job names around one ARN on ``pipeline upsert``."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Running within a PipelineSession")
            yield
    finally:
        logging.disable(previous)


def build_pipeline(settings: PipelineSettings, session: Any) -> Any:
    from sagemaker.core.drift_check_baselines import DriftCheckBaselines
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.core.network import NetworkConfig
    from sagemaker.core.processing import FrameworkProcessor
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output, S3DataSource
    from sagemaker.core.training.configs import Compute, InputData, Networking, OutputDataConfig, StoppingCondition
    from sagemaker.core.workflow.conditions import ConditionEquals, ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow import (
        CacheConfig,
        ConditionStep,
        FailStep,
        ModelStep,
        Pipeline,
        ProcessingStep,
        SageMakerJobExceptionTypeEnum,
        SageMakerJobStepRetryPolicy,
        StepExceptionTypeEnum,
        StepRetryPolicy,
        TrainingStep,
    )
    from sagemaker.serve.model_builder import ModelBuilder
    from sagemaker.train import ModelTrainer

    check_settings(settings)
    aws_job_image, aws_serving_image = framework_images(settings.region, settings.processing_instance_type,
                                                        settings.endpoint_instance_type)
    image = settings.job_image or aws_job_image
    serving_image = settings.serving_image or aws_serving_image
    tag = settings.code_sha256[:16]
    bucket = f"s3://{settings.bucket}"

    input_uri = ParameterString(name="InputDataUri", default_value=f"{bucket}/curated/{settings.dataset}/")
    # Allowed values declared in the definition: the service (and the local executor) refuse any other at
    # start, before a job runs; the lists are the job libraries' own.
    reduction = ParameterString(name="Reduction", default_value="none", enum_values=list(REDUCTIONS))
    resampling = ParameterString(name="Resampling", default_value="class_weights", enum_values=list(METHODS))
    ensemble_mode = ParameterString(name="Ensemble", default_value="auto", enum_values=list(ENSEMBLE_MODES))
    # How the numbers' missing-value indicators enter the models: a per-run choice, because it is the table's
    # (docs/benchmark-real.md: 0/1 helps tables with panels of missing labs, the built-in cohort's unseen
    # orphan diseases need the standardised default).
    missing_indicators = ParameterString(name="MissingIndicators", default_value=settings.missing_indicators,
                                         enum_values=list(MISSING_INDICATORS))
    approval = ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval",
                               enum_values=["PendingManualApproval", "Approved", "Rejected"])
    defaults = settings.thresholds()
    thresholds = {label: ParameterFloat(name=name, default_value=defaults[label])
                  for label, name in settings.parameter_names().items()}
    slice_threshold = (ParameterFloat(name=slice_parameter(settings.slice_name), default_value=settings.orphan_threshold)
                       if settings.slice_name else None)
    unseen_name = unseen_slice(settings.slice_name) if settings.slice_name and settings.slice_grouped else None
    unseen_threshold = (ParameterFloat(name=unseen_parameter(settings.slice_name),
                                       default_value=settings.unseen_threshold)
                        if settings.slice_name and settings.slice_grouped else None)
    # One seed for the split (Preprocess) and the models (the training hyperparameter ``seed``).
    seed = ParameterInteger(name=SEED_PARAMETER, default_value=0)
    endpoint_name = ParameterString(name=ENDPOINT_PARAMETER, default_value=settings.endpoint_name)
    # Instance types and counts per run. The counts scale out what spreads (docs/pipeline.md, Scale-out): the
    # Transform step's curated parts (S3 sharding by key) and XGBoost's training (its collective); the other
    # steps run on one instance. A bad count is refused before any step runs (the local executor validates
    # every job request with the run's parameters against the service model).
    processing_type = ParameterString(name="ProcessingInstanceType", default_value=settings.processing_instance_type)
    training_type = ParameterString(name="TrainingInstanceType", default_value=settings.training_instance_type)
    processing_count = ParameterInteger(name=INSTANCE_COUNT_PARAMETERS["processing"],
                                        default_value=settings.processing_instance_count)
    training_count = ParameterInteger(name=INSTANCE_COUNT_PARAMETERS["training"],
                                      default_value=settings.training_instance_count)
    parameters = [input_uri, reduction, resampling, missing_indicators, ensemble_mode, approval, *thresholds.values(),
                  *([slice_threshold] if slice_threshold else []), *([unseen_threshold] if unseen_threshold else []),
                  processing_type, training_type, processing_count, training_count, seed]
    if settings.deploy_steps:
        parameters.append(endpoint_name)

    run = Join(on="/", values=[bucket, "artifacts", "runs", ExecutionVariables.PIPELINE_EXECUTION_ID])
    cache = CacheConfig(enable_caching=True, expire_after="P30D")
    job_retry = SageMakerJobStepRetryPolicy(
        exception_types=[SageMakerJobExceptionTypeEnum.CAPACITY_ERROR, SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                         SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT],
        max_attempts=3, interval_seconds=30, backoff_rate=2.0)
    step_retry = StepRetryPolicy(exception_types=[StepExceptionTypeEnum.THROTTLING, StepExceptionTypeEnum.SERVICE_FAULT],
                                 max_attempts=5, interval_seconds=10, backoff_rate=2.0)
    # Network isolation on baked images (docs/deploy.md §5): every processing and training job of the pipeline
    # reads its inputs and writes its outputs through the paths SageMaker fills and uploads, and calls no AWS
    # API; only the start-up pip install needed the network, and with the pins in the image it needs none.
    # On AWS's images the pins come from the package index at start: no isolation.
    isolated = settings.job_image is not None
    # The jobs' network settings, shared by processing (NetworkConfig) and training (Networking); none: the defaults.
    job_network: dict[str, Any] = ({"subnets": list(settings.subnets), "security_group_ids": list(settings.security_group_ids)}
                                   if settings.subnets else {}) | ({"enable_network_isolation": True} if isolated else {})
    network = NetworkConfig(**job_network) if job_network else None

    # The SDK's runproc.sh ends with `<command> <script> "$@"` under bash, the container's first process. Run as
    # a child, the job never saw SageMaker's SIGTERM (StopProcessingJob): bash as PID 1 ignores it and does not pass
    # it on, so SIGKILL followed and the job's handler (processing/entry.py) never ran. `exec` makes the job the
    # first process itself.
    def processor(count: Any) -> Any:
        return FrameworkProcessor(image_uri=image, role=settings.role_arn, instance_count=count,
                                  command=["exec", "python"], instance_type=processing_type, sagemaker_session=session,
                                  code_location=f"{bucket}/artifacts/code/runners",
                                  volume_kms_key=settings.kms_key, output_kms_key=settings.kms_key,
                                  network_config=network)

    single, sharded = processor(1), processor(processing_count)

    def s3_in(name: str, uri: Any, path: str, distribution: str = "FullyReplicated") -> Any:
        return ProcessingInput(input_name=name, s3_input=ProcessingS3Input(
            s3_uri=uri, local_path=f"/opt/ml/processing/input/{path}", s3_data_type="S3Prefix", s3_input_mode="File",
            s3_data_distribution_type=distribution))

    def s3_out(name: str) -> Any:
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=Join(on="/", values=[run, name]), local_path=f"/opt/ml/processing/output/{name}",
            s3_upload_mode="EndOfJob"))

    def processing(name: str, script: str, inputs: list[Any], outputs: list[str], arguments: list[Any] | None = None,
                   runner: Any = single, **kwargs: Any) -> Any:
        # The container root is passed explicitly: an executor that maps /opt/ml/processing elsewhere
        # (the local one) remaps it like every other container path in the request.
        args = runner.run(code=script, source_dir=settings.code_uri, requirements="requirements.txt",
                             job_name=f"{name.lower()}-{tag}", inputs=inputs, outputs=[s3_out(o) for o in outputs],
                             arguments=["--base-dir", "/opt/ml/processing", *(arguments or [])])
        return ProcessingStep(name=name, step_args=args, cache_config=cache, retry_policies=[job_retry, step_retry],
                              **kwargs)

    # Preprocess fits once (the split and the feature pipeline, one instance); Transform shards the curated
    # version's objects over its instances (its Parquet parts; manifest.json is one more object, which the job
    # ignores) and writes each part's rows under the part's name, the same output whatever the count.
    preprocess = processing("Preprocess", "preprocess_job.py", [s3_in("curated", input_uri, "curated")],
                            ["transformer", "split", "baseline"],
                            ["--stage", "fit", "--reduction", reduction, "--resampling", resampling,
                             "--missing-indicators", missing_indicators,
                             "--seed", seed.to_string(), "--transform-instances", processing_count.to_string()])
    fitted = preprocess.properties.ProcessingOutputConfig.Outputs
    transform = processing("Transform", "preprocess_job.py",
                           [s3_in("curated", input_uri, "curated", "ShardedByS3Key"),
                            s3_in("transformer", fitted["transformer"].S3Output.S3Uri, "transformer"),
                            s3_in("split", fitted["split"].S3Output.S3Uri, "split")],
                           ["train", "validation", "test"], ["--stage", "transform"], runner=sharded)
    outputs = {**{name: fitted[name] for name in ("transformer", "baseline")},
               **{name: transform.properties.ProcessingOutputConfig.Outputs[name]
                  for name in ("train", "validation", "test")}}

    submit_directory = f"{CODE_CHANNEL_DIR}/{settings.code_uri.rsplit('/', 1)[-1]}" if isolated else settings.code_uri
    trainings = []
    for family in settings.families:
        # XGBoost trains across TrainingInstanceCount instances, each on a share of the training parts (its
        # collective: training/distributed.py); every other family fits on one instance, all rows.
        spread = family in DISTRIBUTED_FAMILIES
        trainer = ModelTrainer(
            training_image=image, role=settings.role_arn, sagemaker_session=session,
            base_job_name=f"diagnosa-{family.replace('_', '-')}",
            compute=Compute(instance_type=training_type, instance_count=training_count if spread else 1,
                            volume_size_in_gb=30, volume_kms_key_id=settings.kms_key),
            stopping_condition=StoppingCondition(max_runtime_in_seconds=settings.training_max_runtime),
            networking=Networking(**job_network) if job_network else None,
            output_data_config=OutputDataConfig(s3_output_path=Join(on="/", values=[run, "models", family]),
                                                kms_key_id=settings.kms_key),
            hyperparameters={"family": family, "seed": seed.to_string(), "sagemaker_program": "train_job.py",
                             "sagemaker_submit_directory": submit_directory})
        channels = [InputData(channel_name=c, data_source=S3DataSource(
                        s3_data_type="S3Prefix", s3_uri=outputs[c].S3Output.S3Uri,
                        s3_data_distribution_type="ShardedByS3Key" if spread and c == "train" else "FullyReplicated"))
                    for c in ("train", "validation", "transformer")]
        if isolated:  # the training toolkit would download an s3:// submit directory itself: SageMaker brings it instead
            channels.append(InputData(channel_name=CODE_CHANNEL, data_source=S3DataSource(
                s3_data_type="S3Prefix", s3_uri=settings.code_uri, s3_data_distribution_type="FullyReplicated")))
        trainings.append(TrainingStep(name=f"Train-{family}", step_args=trainer.train(input_data_config=channels),
                                      cache_config=cache, retry_policies=[job_retry, step_retry]))

    select = processing("Select", "select_job.py",
                        [s3_in(f"candidate-{step.name}", step.properties.ModelArtifacts.S3ModelArtifacts,
                               f"candidates/{step.name.removeprefix('Train-')}") for step in trainings],
                        ["champion", "selection"], ["--ensemble", ensemble_mode])
    report = PropertyFile(name="Evaluation", output_name="evaluation", path=EVALUATION)
    evaluate = processing(
        "Evaluate", "evaluate_job.py",
        [s3_in("model", select.properties.ProcessingOutputConfig.Outputs["champion"].S3Output.S3Uri, "model"),
         s3_in("test", outputs["test"].S3Output.S3Uri, "test")],
        ["evaluation", "report"],
        [*_threshold_arguments(thresholds),
         *_slice_arguments(settings.slice_name, slice_threshold),
         *_slice_arguments(unseen_name, unseen_threshold)],
        property_files=[report])

    def recall_of(path: str) -> Any:
        return JsonGet(step_name=evaluate.name, property_file=report, json_path=path)

    conditions = [ConditionGreaterThanOrEqualTo(left=recall_of(f"diagnosa.per_class['{label}'].recall"), right=p)
                  for label, p in thresholds.items()]
    if slice_threshold is not None:  # only a dataset with a slice has a slice condition
        conditions.append(ConditionGreaterThanOrEqualTo(
            left=recall_of(f"diagnosa.slices.{settings.slice_name}.macro_recall"), right=slice_threshold))
    if unseen_threshold is not None:
        conditions.append(ConditionGreaterThanOrEqualTo(
            left=recall_of(f"diagnosa.slices.{unseen_name}.macro_recall"),
            right=unseen_threshold))
    champion_model = Join(on="/", values=[select.properties.ProcessingOutputConfig.Outputs["champion"].S3Output.S3Uri,
                                          "model.tar.gz"])
    evaluation_dir = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri

    def metrics(folder: Any, name: str) -> Any:
        return MetricsSource(content_type="application/json", s3_uri=Join(on="/", values=[folder, name]))

    baseline_dir = outputs["baseline"].S3Output.S3Uri
    # Model Monitor's layout: the registry entry points at what the quality and drift checks compare with.
    model_metrics = ModelMetrics(model_statistics=metrics(evaluation_dir, EVALUATION),
                                 model_constraints=metrics(evaluation_dir, "model_quality_constraints.json"),
                                 model_data_statistics=metrics(baseline_dir, "statistics.json"),
                                 model_data_constraints=metrics(baseline_dir, "constraints.json"))
    drift_baselines = DriftCheckBaselines(model_statistics=metrics(evaluation_dir, EVALUATION),
                                          model_constraints=metrics(evaluation_dir, "model_quality_constraints.json"),
                                          model_data_statistics=metrics(baseline_dir, "statistics.json"),
                                          model_data_constraints=metrics(baseline_dir, "constraints.json"))
    # The model artifact carries its serving code (model.tar.gz/code/, written by the training job).
    serving_env = {"SAGEMAKER_PROGRAM": SERVING_PROGRAM, "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                   "SAGEMAKER_CONTAINER_LOG_LEVEL": "20"}
    builder = ModelBuilder(image_uri=serving_image, s3_model_data_url=champion_model, role_arn=settings.role_arn,
                           sagemaker_session=session, env_vars=serving_env)
    register = ModelStep(name="Register", step_args=builder.register(
        model_package_group_name=settings.model_package_group, approval_status=approval,
        model_metrics=model_metrics, drift_check_baselines=drift_baselines,
        content_types=["application/json", "text/csv"], response_types=["application/json", "text/csv"],
        inference_instances=[settings.endpoint_instance_type], transform_instances=[settings.endpoint_instance_type],
        customer_metadata_properties={"diagnosa:input-data": input_uri, "diagnosa:code-sha256": settings.code_sha256,
                                      "diagnosa:execution": ExecutionVariables.PIPELINE_EXECUTION_ID,
                                      "diagnosa:prediction-baseline": Join(on="/", values=[
                                          evaluation_dir, "prediction_baseline.json"])}))
    on_pass = [register]
    if settings.deploy_steps:
        deploy_steps = _deployment(settings, session, serving_image, champion_model, serving_env, endpoint_name, bucket)
        on_pass.append(ConditionStep(name="DeployIfApproved", depends_on=[register], if_steps=deploy_steps,
                                     conditions=[ConditionEquals(left=approval, right="Approved")], else_steps=[]))
    fail = FailStep(name=GATE_FAILED_STEP, error_message=recall_of("gate.message"))
    gate = ConditionStep(name="RecallGate", conditions=conditions, if_steps=on_pass, else_steps=[fail])
    return Pipeline(name=settings.name, parameters=parameters,
                    steps=[preprocess, transform, *trainings, select, evaluate, gate], sagemaker_session=session)


def _captured(session: Any) -> Any:
    """The request a PipelineSession intercepted (create_endpoint_config/create_endpoint have no step_args helper)."""
    arguments, session.context = session.context, None
    return arguments


def _deployment(settings: PipelineSettings, session: Any, image: str, model_data: Any, environment: dict[str, str],
                endpoint_name: Any, bucket: str) -> list[Any]:
    """Model → endpoint config (data capture to capture/) → endpoint; the service updates an existing endpoint."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow import EndpointConfigStep, EndpointStep, ModelStep, StepExceptionTypeEnum, StepRetryPolicy
    from sagemaker.serve.model_builder import ModelBuilder

    retry = [StepRetryPolicy(exception_types=[StepExceptionTypeEnum.THROTTLING, StepExceptionTypeEnum.SERVICE_FAULT],
                             max_attempts=5, interval_seconds=10, backoff_rate=2.0)]
    model = ModelStep(name="CreateModel", retry_policies=retry, step_args=ModelBuilder(
        image_uri=image, s3_model_data_url=model_data, role_arn=settings.role_arn, sagemaker_session=session,
        env_vars=environment).build())
    session.create_endpoint_config(
        name=Join(on="-", values=[endpoint_name, ExecutionVariables.PIPELINE_EXECUTION_ID]),
        production_variants=[{"VariantName": "AllTraffic", "ModelName": model.properties.ModelName,
                              "InitialInstanceCount": 1, "InstanceType": settings.endpoint_instance_type}],
        data_capture_config_dict={"EnableCapture": True, "InitialSamplingPercentage": settings.capture_sampling,
                                  "DestinationS3Uri": f"{bucket}/capture",
                                  "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                                  "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"],
                                                               "CsvContentTypes": ["text/csv"]}})
    config = EndpointConfigStep(name="EndpointConfig", step_args=_captured(session), retry_policies=retry)
    session.create_endpoint(endpoint_name=endpoint_name, config_name=config.properties.EndpointConfigName)
    return [model, config, EndpointStep(name="Deploy", step_args=_captured(session))]


def _slice_arguments(name: str | None, parameter: Any) -> list[Any]:
    """The evaluation job's slice threshold: --orphan-threshold V for the cohort's orphan slice, else
    --slice-threshold NAME=V."""
    from sagemaker.core.workflow.functions import Join

    if parameter is None:
        return []
    if name == "orphan":
        return ["--orphan-threshold", parameter.to_string()]
    return ["--slice-threshold", Join(on="", values=[f"{name}=", parameter.to_string()])]


def _threshold_arguments(thresholds: dict[str, Any]) -> list[Any]:
    """One ``--recall-threshold=<label's ASCII name>=<value>`` per label: a container argument holds at most 256
    characters and a job at most 100 of them. One JSON object of every label's threshold outgrew the 256 (16 labels,
    or 7 with accents escaped): SageMaker would refuse the Evaluate job after every training job had run."""
    from sagemaker.core.workflow.functions import Join

    return [Join(on="", values=[f"--recall-threshold={ascii_words(label)}=", parameter.to_string()])
            for label, parameter in thresholds.items()]


OPERATIONS = {"Processing": "CreateProcessingJob", "Training": "CreateTrainingJob",
              "RegisterModel": "CreateModelPackage", "Model": "CreateModel",
              "EndpointConfig": "CreateEndpointConfig", "Endpoint": "CreateEndpoint"}
# Names the SDK leaves out of the definition (the service sets them per execution) but the API requires.
GENERATED_NAMES = {"CreateProcessingJob": {"ProcessingJobName": "generated"},
                   "CreateTrainingJob": {"TrainingJobName": "generated"}, "CreateModel": {"ModelName": "generated"}}


def validate_definition(definition: dict[str, Any], parameters: dict[str, Any] | None = None) -> dict[str, str | None]:
    """botocore's report for each step's request, with parameters at ``parameters`` (default: their defaults)
    and run-time values (step properties, JsonGet) at placeholders of the right kind; None means valid."""
    from pipelines.expressions import Resolver
    from pipelines.graph import build_graph
    from pipelines.service_model import request_problems

    class Placeholder(dict):
        def __getitem__(self, key: Any) -> Any:
            return self

    def as_value(value: Any) -> Any:
        return "s3://placeholder/key" if isinstance(value, Placeholder) else value

    defaults = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])} | (parameters or {})
    execution = {"PipelineExecutionId": "e" * EXECUTION_ID_LENGTH, "PipelineExecutionArn": "arn", "PipelineName": "pipeline",
                 "StartDateTime": "2026-01-01T00:00:00Z", "CurrentDateTime": "2026-01-01T00:00:00Z"}
    resolver = Resolver(defaults, execution, lambda step: Placeholder(), lambda step, name: Placeholder())
    report = {}
    for node in build_graph(definition).values():
        operation = OPERATIONS.get(node.type)
        if operation:
            resolved = _map(resolver(node.arguments), as_value)
            report[node.name] = request_problems(operation, {**GENERATED_NAMES.get(operation, {}), **resolved})
    return report


def parameter_problems(definition: dict[str, Any], parameters: dict[str, Any]) -> list[str]:
    """The request problems a run's parameter values cause, one line per problem naming the step, the request
    field and the parameter that set it (problems no parameter causes are the steps' own to report)."""
    from pipelines.graph import build_graph

    report = validate_definition(definition, parameters)
    graph = build_graph(definition)
    found = []
    for step, problems in report.items():
        sources = _parameter_paths(graph[step].arguments)
        for line in (problems or "").splitlines():
            match = re.search(r"parameter (?:in )?([\w.\[\]]+)", line)
            names = sources.get(match.group(1).rstrip(":,")) if match else None
            if names:
                values = ", ".join(f"{name}={shown(parameters.get(name), 80)}" for name in names)
                found.append(f"step {step}: parameter {values} gives an invalid request: {line}")
    # A count no step reads (TrainingInstanceCount when xgboost is not among the families) is held to the same
    # range: accepted, a 0 was ignored silently and recorded as the run's value.
    for kind, name in INSTANCE_COUNT_PARAMETERS.items():
        problem = instance_count_problem(kind, parameters[name]) if name in parameters else None
        if problem and not any(f"{name}=" in line for line in found):
            found.append(f"parameter {name}={shown(parameters[name], 80)}: a {kind} job's instance count {problem} "
                         "(refused though no step of this run reads it)")
    return found


def _parameter_paths(value: Any, path: str = "") -> dict[str, list[str]]:
    """Request field (botocore's notation: A.B[0].C) → the pipeline parameters its expression reads."""
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _parameter_paths(item, f"{path}[{i}]").items()}
    if not isinstance(value, dict):
        return {}
    if set(value) in ({"Get"}, {"Std:Join"}, {"Std:JsonGet"}):
        names = sorted(set(re.findall(r"Parameters\.(\w+)", json.dumps(value))))
        return {path: names} if names else {}
    return {k: v for key, item in value.items()
            for k, v in _parameter_paths(item, f"{path}.{key}" if path else key).items()}


def _map(value: Any, leaf: Any) -> Any:
    if isinstance(value, dict) and type(value) is dict:
        return {k: _map(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_map(v, leaf) for v in value]
    return leaf(value)
