"""The pipeline definition embedded in the stack: the one ``pipelines/`` builds, not a second copy.

``pipelines.offline.build_offline`` builds the definition with no AWS at all, for a sentinel bucket
and job role (and, with baked images, sentinel job and serving images). Here the sentinels are
replaced by the stack's own tokens (the lake bucket's name, the job role's ARN and the image assets'
URIs) with ``Fn::Join``, so CloudFormation resolves them at deploy time, and the
objects the definition expects in the bucket (the step-code tarball, the processing runner and
``install_requirements.py``) are written to an asset folder that a BucketDeployment copies into the
lake. ``diagnosa pipeline definition --bucket B --role-arn R`` prints the same JSON with B and R.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from infra.config import VPC_AZS, StageConfig
from pipelines.expressions import all_steps, registration_gate

# Sentinels: valid names that cannot occur in a real definition by accident.
SENTINEL_BUCKET = "diagnosa-sentinel-bucket-4f1c9e"
SENTINEL_ROLE = "arn:aws:iam::000000000000:role/diagnosa-sentinel-job-role"
SENTINEL_JOB_IMAGE = "000000000000.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-sentinel-images:jobs-4f1c9e"
SENTINEL_SERVING_IMAGE = "000000000000.dkr.ecr.eu-west-1.amazonaws.com/diagnosa-sentinel-images:serving-4f1c9e"
SENTINEL_KMS_KEY = "arn:aws:kms:eu-west-1:000000000000:key/diagnosa-sentinel-key-4f1c9e"
# VPC mode: the stage VPC's isolated subnets (one per AZ, VPC_AZS of them) and the group its jobs use.
SENTINEL_SUBNETS = tuple(f"subnet-0sentinel4f1c9e{i}" for i in range(VPC_AZS))
SENTINEL_SECURITY_GROUP = "sg-0sentinel4f1c9e"
CODE_PREFIX = "artifacts/code/"
RUNS_PREFIX = "artifacts/runs/"


@dataclass(frozen=True)
class EmbeddedDefinition:
    text: str  # the definition JSON with the sentinels in it
    objects: tuple[tuple[str, bytes], ...]  # lake key -> bytes, every key under artifacts/code/
    code_key: str  # lake key of sourcedir.tar.gz
    parameters: tuple[str, ...]  # the pipeline's parameter names
    training_output_prefixes: tuple[str, ...]  # keys (no bucket) under which training jobs write model.tar.gz
    processing_image: str = ""  # the image of the pipeline's processing jobs (for the monitoring job too)
    images: tuple[str, ...] = ()  # every container image the definition names (job_images + serving_images)
    job_images: tuple[str, ...] = ()  # the processing and training jobs' images: what the job roles pull
    serving_images: tuple[str, ...] = ()  # the registered model's container images: what the model role pulls
    baked: bool = False  # built with the sentinel images (the stack's image assets take their place)
    in_vpc: bool = False  # built with the sentinel subnets and security group (the stage VPC's take their place)
    # The checks the definition's gate makes before it registers a version, at the parameters' defaults
    # (pipelines.expressions.registration_gate), as JSON: the promote function gates a version again with them.
    gate: str = "[]"
    # Every S3 object the RegisterModel step names (where in its request, lake key pattern with ``*`` for the
    # execution id): what readers of a registered version may read, and nothing else of the run folder.
    registered: tuple[tuple[str, str], ...] = ()
    # The lake key patterns of the steps' property files (JsonGet reads them: the gate's evaluation.json): what the
    # pipeline's own role reads of a run, and nothing else.
    property_files: tuple[str, ...] = ()

    @property
    def model_keys(self) -> tuple[str, ...]:
        """Key patterns of the registered model artifacts (what the endpoint's model reads)."""
        return tuple(sorted({key for where, key in self.registered if where.endswith(".ModelDataUrl")}))

    def registered_keys(self, *where: str) -> tuple[str, ...]:
        """Key patterns of the objects the registered version names at ``where`` (request paths as in
        :attr:`registered`); all of them with no argument."""
        return tuple(sorted({key for at, key in self.registered if not where or at in where}))

    @property
    def gate_key(self) -> str:
        """Lake key of the gate file (content-hashed: a stage whose thresholds change writes a new key)."""
        return f"{CODE_PREFIX}gates/{hashlib.sha256(self.gate.encode()).hexdigest()[:16]}.json"

    @property
    def code_prefix(self) -> str:
        """``artifacts/code/<sha16>/``: the folder of sourcedir.tar.gz (a processing job's ``code`` input)."""
        return self.code_key.rsplit("/", 1)[0] + "/"

    def _values(self, bucket: Any, role_arn: Any, kms_key: Any, job_image: Any, serving_image: Any,
                subnets: Any, security_group: Any) -> dict[str, Any]:
        values = {SENTINEL_BUCKET: bucket, SENTINEL_ROLE: role_arn, SENTINEL_KMS_KEY: kms_key}
        if self.in_vpc:
            if subnets is None or len(subnets) != len(SENTINEL_SUBNETS) or security_group is None:
                raise ValueError(f"a definition built for a VPC needs its {len(SENTINEL_SUBNETS)} subnets and a "
                                 "security group")
            values |= dict(zip(SENTINEL_SUBNETS, subnets)) | {SENTINEL_SECURITY_GROUP: security_group}
        if self.baked:
            if job_image is None or serving_image is None:
                raise ValueError("a definition built for baked images needs the job and serving image URIs")
            values |= {SENTINEL_JOB_IMAGE: job_image, SENTINEL_SERVING_IMAGE: serving_image}
        return values

    def pieces(self, bucket: Any, role_arn: Any, kms_key: Any, job_image: Any = None, serving_image: Any = None,
               subnets: Any = None, security_group: Any = None) -> list[Any]:
        """The definition as a list for ``Fn.join("", ...)``: text with the sentinels swapped for tokens (the
        lake bucket, the job role, the stage's KMS key for job volumes and outputs, the baked images, the
        VPC's subnets and the jobs' security group)."""
        values = self._values(bucket, role_arn, kms_key, job_image, serving_image, subnets, security_group)
        out: list[Any] = []
        for part in re.split("(" + "|".join(map(re.escape, values)) + ")", self.text):
            if part in values:
                out.append(values[part])
            elif part:
                out.append(part)
        return out

    def write_objects(self, folder: Path) -> Path:
        """Lay the objects and the gate file out under ``folder`` by key relative to artifacts/code/ (an asset
        source)."""
        for key, data in self.objects:
            target = folder / key.removeprefix(CODE_PREFIX)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        gate = folder / self.gate_key.removeprefix(CODE_PREFIX)
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.write_text(self.gate)
        return folder


def pipeline_settings(config: StageConfig) -> dict[str, Any]:
    """The PipelineSettings fields a stage sets (besides bucket, role and code)."""
    settings = {"name": config.prefix, "model_package_group": config.prefix, "families": config.families,
                "processing_instance_type": config.processing_instance_type,
                "training_instance_type": config.training_instance_type,
                "training_max_runtime": config.training_max_runtime_seconds,
                "recall_thresholds": config.recall_thresholds, "orphan_threshold": config.orphan_threshold,
                "unseen_threshold": config.unseen_threshold,
                "kms_key": SENTINEL_KMS_KEY,  # the stage's key, swapped in by pieces()
                # The deploy function, on the approval event, deploys in AWS (see PipelineSettings.deploy_steps).
                "deploy_steps": False}
    settings |= config.dataset_settings  # a stage's own dataset: its labels, slice and gate
    if config.baked_images:  # the stack's image assets, swapped in by pieces()
        settings |= {"job_image": SENTINEL_JOB_IMAGE, "serving_image": SENTINEL_SERVING_IMAGE}
    if config.vpc:  # the stage VPC's subnets and the jobs' group, swapped in by pieces()
        settings |= {"subnets": SENTINEL_SUBNETS, "security_group_ids": (SENTINEL_SECURITY_GROUP,)}
    return settings


@lru_cache(maxsize=8)
def _build(region: str, frozen_settings: tuple[tuple[str, Any], ...]) -> EmbeddedDefinition:
    from pipelines.offline import build_offline  # sets the region and quiets the SDK while it builds

    settings = {k: (dict(v) if k == "recall_thresholds" else v) for k, v in frozen_settings}
    build = build_offline(SENTINEL_BUCKET, SENTINEL_ROLE, region=region, **settings)
    outside = sorted(k for k in build.objects if not k.startswith(CODE_PREFIX))
    if outside:
        raise ValueError(f"the pipeline build staged objects outside {CODE_PREFIX}: {outside}")
    definition = json.loads(build.definition)
    # Training jobs write where the definition says; the job role may write there (and under artifacts/runs/).
    outputs = sorted({key for job in all_steps(definition["Steps"]) if job["Type"] == "Training"
                      for key in [_key(job["Arguments"]["OutputDataConfig"]["S3OutputPath"])]
                      if not (key + "/").startswith(RUNS_PREFIX)})
    images = {job["Arguments"]["AppSpecification"]["ImageUri"] for job in all_steps(definition["Steps"])
              if job["Type"] == "Processing"}
    if len(images) != 1:
        raise ValueError(f"expected one processing image in the definition, found {sorted(images)}")
    job_images, serving_images = _images_by_use(definition["Steps"])
    every_image = set(images) | set(re.findall(r'"(?:ImageUri|TrainingImage|Image)": "([^"]+)"', build.definition))
    if every_image != job_images | serving_images:  # an image named where no role's pull grant would look
        raise ValueError(f"the definition names images outside its jobs and registered model: "
                         f"{sorted(every_image - job_images - serving_images)}")
    baked = "job_image" in settings
    if baked and (job_images, serving_images) != ({SENTINEL_JOB_IMAGE}, {SENTINEL_SERVING_IMAGE}):
        raise ValueError(f"with baked images the definition must name only them, found {sorted(every_image)}")
    return EmbeddedDefinition(text=build.definition, objects=tuple(sorted(build.objects.items())),
                              code_key=build.code_key,
                              parameters=tuple(p["Name"] for p in definition.get("Parameters", [])),
                              training_output_prefixes=tuple(outputs), processing_image=images.pop(),
                              images=tuple(sorted(every_image)), job_images=tuple(sorted(job_images)),
                              serving_images=tuple(sorted(serving_images)), baked=baked, in_vpc="subnets" in settings,
                              gate=json.dumps(registration_gate(definition), sort_keys=True),
                              registered=_registered_objects(definition["Steps"]),
                              property_files=_property_files(definition["Steps"]))


def _property_files(steps: list[dict[str, Any]]) -> tuple[str, ...]:
    """Lake key patterns (``*`` for the execution id) of every step's PropertyFiles: the objects SageMaker Pipelines
    reads with the pipeline's role to evaluate a JsonGet. One outside the run folders stops the build."""
    found = set()
    for step in all_steps(steps):
        for prop in step.get("PropertyFiles") or []:
            [output] = [o for o in step["Arguments"]["ProcessingOutputConfig"]["Outputs"]
                        if o["OutputName"] == prop["OutputName"]]
            text = _render(output["S3Output"]["S3Uri"]).rstrip("/") + "/" + prop["FilePath"]
            prefix = f"s3://{SENTINEL_BUCKET}/{RUNS_PREFIX}"
            if not text.startswith(prefix):
                raise ValueError(f"property file {prop['PropertyFileName']} of {step['Name']} is {text}, outside {prefix}")
            found.add(text[len(f"s3://{SENTINEL_BUCKET}/"):])
    return tuple(sorted(found))


def _images_by_use(steps: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
    """(job images, serving images) of a definition: what its processing and training jobs run (the job role), and
    the containers of the model it registers or creates (the model role serves them)."""
    jobs: set[str] = set()
    serving: set[str] = set()
    for step in all_steps(steps):
        arguments = step.get("Arguments") or {}
        if step["Type"] == "Processing":
            jobs.add(arguments["AppSpecification"]["ImageUri"])
        elif step["Type"] == "Training":
            jobs.add(arguments["AlgorithmSpecification"]["TrainingImage"])
        elif step["Type"] == "RegisterModel":
            serving |= {c["Image"] for c in arguments["InferenceSpecification"]["Containers"]}
        elif step["Type"] == "Model":
            serving |= {c["Image"] for c in [arguments.get("PrimaryContainer") or {}, *arguments.get("Containers", [])]
                        if "Image" in c}
    return jobs, serving


def _registered_objects(steps: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(request path, lake key pattern) of every S3 object the RegisterModel step names: the model artifact, the
    metrics and baselines (each S3Uri) and the metadata URIs. A step output's URI is followed to its S3Uri, the
    execution id becomes ``*``; a metadata value that is no such URI (the input data parameter) is not an object
    of the run. Anything else the step names, or an object outside the run folders, stops the build."""
    outputs = {f"Steps.{step['Name']}.ProcessingOutputConfig.Outputs['{out['OutputName']}'].S3Output.S3Uri":
               out["S3Output"]["S3Uri"] for step in all_steps(steps) if step["Type"] == "Processing"
               for out in step["Arguments"]["ProcessingOutputConfig"]["Outputs"]}

    def uri(value: Any) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and "Std:Join" in value:
            parts = [uri(v) for v in value["Std:Join"]["Values"]]
            return None if None in parts else value["Std:Join"]["On"].join(p for p in parts if p is not None)
        if isinstance(value, dict) and value.get("Get") == "Execution.PipelineExecutionId":
            return "*"
        if isinstance(value, dict) and value.get("Get") in outputs:
            return uri(outputs[value["Get"]])
        return None

    found: list[tuple[str, str]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, (*path, str(i)))
            return
        if not isinstance(node, dict) or "Get" in node or "Std:Join" in node:
            return
        for key, value in node.items():
            metadata = path == ("CustomerMetadataProperties",)
            if key in ("S3Uri", "ModelDataUrl") or metadata:
                text = uri(value)
                if text is None or not text.startswith("s3://"):
                    if metadata:
                        continue  # e.g. diagnosa:input-data, a parameter: the curated input, not the run's
                    raise ValueError(f"RegisterModel names {'.'.join((*path, key))} = {value!r}: not a run "
                                     "output the stack can grant readers")
                prefix = f"s3://{SENTINEL_BUCKET}/{RUNS_PREFIX}"
                if not text.startswith(prefix):
                    raise ValueError(f"RegisterModel names {text} outside {prefix}")
                found.append((".".join(path if key == "S3Uri" else (*path, key)), text[len(f"s3://{SENTINEL_BUCKET}/"):]))
            else:
                walk(value, (*path, key))

    for step in all_steps(steps):
        if step["Type"] == "RegisterModel":
            walk(step["Arguments"], ())
    if not any(where.endswith(".ModelDataUrl") for where, _ in found):
        raise ValueError("the definition registers no model artifact (RegisterModel's ModelDataUrl)")
    return tuple(sorted(set(found)))


def embedded_definition(config: StageConfig) -> EmbeddedDefinition:
    settings = pipeline_settings(config)
    frozen = tuple(sorted((k, tuple(sorted(v.items())) if isinstance(v, dict) else v) for k, v in settings.items()))
    return _build(config.region, frozen)


def _render(value: Any) -> str:
    """A definition value as text, with every run-time part (Get, JsonGet) as ``*``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Std:Join" in value:
        return value["Std:Join"]["On"].join(_render(v) for v in value["Std:Join"]["Values"])
    return "*"


def _key(uri: Any) -> str:
    """The fixed key prefix (no bucket) under which a training job writes: text before any run-time part."""
    prefix = f"s3://{SENTINEL_BUCKET}/"
    text = _render(uri)
    if not (text + "/").startswith(prefix):
        raise ValueError(f"training output {uri!r} is not in the pipeline's bucket")
    return text[len(prefix):].split("*", 1)[0].strip("/")
