"""SageMaker container roots rendered from resolved job requests: the ``/opt/ml`` a job's container sees.

A *container root* is a folder that stands for ``/opt/ml`` (``<root>/input/...`` is
``/opt/ml/input/...``). Given a resolved ``CreateTrainingJob`` or ``CreateProcessingJob`` request
(botocore's service model is the authority on its shape; the pipeline definition resolves to one),
these functions write what the service writes before it starts the container, and fill the data
channels / processing inputs through a ``fetch(s3_uri, folder, shard)`` callback (the local executor copies
from the data lake; nothing here knows where data lives). A job of N instances is N roots, one per
``Host``: each says which host it is, and an input sharded by key (``ShardedByS3Key``) holds that
host's share of the prefix's objects. The container's own program then runs
against the root: AWS's training toolkit with ``SAGEMAKER_BASE_DIR=<root>`` (it reads everything
relative to that variable), a processing entrypoint with its ``/opt/ml`` paths mapped to the root.

Where each file's shape comes from:

* ``input/config/hyperparameters.json`` — the request's ``HyperParameters`` map, values as given
  (the API only accepts strings, and the service writes them unchanged). AWS docs, "How Amazon
  SageMaker Provides Training Information" (``your-algorithms-training-algo-running-container``);
  read by ``sagemaker_training.environment.read_hyperparameters``, which JSON-decodes each value.
* ``input/config/inputdataconfig.json`` — one entry per channel: ``TrainingInputMode`` (the
  channel's ``InputMode``, else the algorithm's), ``S3DistributionType``, ``RecordWrapperType``
  (``"None"`` unless given) and ``ContentType`` only when the channel has one. Same AWS page; the
  toolkit's ``read_input_data_config`` docstring shows this exact shape, and its
  ``Environment.channel_input_dirs`` takes the channel names from it (``SM_CHANNEL_<NAME>``).
* ``input/config/resourceconfig.json`` — ``current_host`` (the root's host), ``hosts`` (``algo-1..N``),
  ``current_group_name``/``instance_groups`` (``homogeneousCluster``), ``current_instance_type``
  and ``network_interface_name`` (``eth0``). AWS docs, "Distributed training configuration" on the
  same page; read by ``sagemaker_training.environment.read_resource_config`` (``hosts`` and
  ``current_host`` are required there).
* ``input/data/<channel>/`` — the channel's S3 prefix, downloaded (``File`` input mode); sharded by key,
  this host's share of its objects.
* ``model/``, ``output/`` and ``output/data/`` — created empty, as on an instance.
* Processing: each ``S3Input`` at its ``LocalPath`` (which the API requires under
  ``/opt/ml/processing``), each output's ``LocalPath`` created empty, and ``/opt/ml/config/
  processingjobconfig.json`` (the request with the job ARN, absent optional fields as ``null``) and
  ``/opt/ml/config/resourceconfig.json`` (``current_host``, ``hosts``). AWS docs, "How Amazon
  SageMaker Processing Configures Your Processing Container" (``build-your-own-processing-container``).
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTAINER_ROOT = "/opt/ml"
PROCESSING_ROOT = "/opt/ml/processing"
GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"

# fetch(s3_uri, folder, shard): the object (as <folder>/<basename>) or every object under the prefix (relative
# paths); with shard (index, count), only this host's share of the prefix's objects (S3 sharding by key).
Fetch = Callable[[str, Path, "Shard | None"], None]
SHARDED = "ShardedByS3Key"
DISTRIBUTIONS = ("FullyReplicated", SHARDED)
# /opt/ml as a path of its own (after a space, quote, '=' or at the start; not inside s3://bucket/opt/ml).
_CONTAINER_PATH = re.compile(r"(?<![\w.\-/])/opt/ml(?=/|$|[\s;\"'&|)])")


class ContainerError(ValueError):
    """The request asks for something a local container root cannot hold; the message names it."""


def hosts(count: int) -> list[str]:
    """The service's host names: algo-1 ... algo-N, sorted lexicographically as the toolkit expects."""
    return sorted(f"algo-{i}" for i in range(1, max(1, count) + 1))


@dataclass(frozen=True)
class Host:
    """One host of a job: the cluster's sorted host names and which one this is."""

    names: tuple[str, ...]
    current: str

    @classmethod
    def single(cls, names: list[str] | None = None) -> Host:
        names = names or hosts(1)
        return cls(tuple(names), names[0])

    @property
    def index(self) -> int:
        return self.names.index(self.current)

    @property
    def shard(self) -> Shard:
        return Shard(self.index, len(self.names))


@dataclass(frozen=True)
class Shard:
    """Host ``index`` of ``count`` takes the prefix's objects ``index``, ``index + count``, ... in key order. The
    service documents only that each of N instances gets about 1/N of the objects; nothing downstream
    depends on which (the preprocessing names its outputs after its inputs)."""

    index: int
    count: int

    def take(self, keys: list[str]) -> list[str]:
        return sorted(keys)[self.index::self.count]


def container_path(root: Path, path: str) -> Path:
    """``/opt/ml/<rest>`` in the container → ``<root>/<rest>`` on this machine."""
    if path != CONTAINER_ROOT and not path.startswith(CONTAINER_ROOT + "/"):
        raise ContainerError(f"container path {path} is not under {CONTAINER_ROOT}")
    return Path(str(root) + path[len(CONTAINER_ROOT):])


def localise(value: str, root: Path) -> str:
    """Every ``/opt/ml`` path inside ``value`` (an argument, a shell snippet) pointed at ``root``."""
    return _CONTAINER_PATH.sub(lambda _: str(root), value)


# ------------------------------------------------------------------------------------------------ training

def hyperparameters(request: Mapping[str, Any], submit_directory: str | None = None) -> dict[str, str]:
    """``hyperparameters.json``: the request's map unchanged — except ``sagemaker_submit_directory`` when
    ``submit_directory`` is given (the one deviation the local executor makes: a local copy of the bundle)."""
    values = dict(request.get("HyperParameters") or {})
    bad = sorted(k for k, v in values.items() if not isinstance(v, str))
    if bad:
        raise ContainerError(f"hyperparameters {', '.join(bad)} are not strings (the API only takes strings)")
    if submit_directory is not None:
        if "sagemaker_submit_directory" not in values:
            raise ContainerError("the request has no sagemaker_submit_directory hyperparameter to relocate")
        values["sagemaker_submit_directory"] = submit_directory
    return values


def _channel_source(channel: Mapping[str, Any]) -> Mapping[str, Any]:
    source = channel.get("DataSource", {}).get("S3DataSource")
    if source is None:
        raise ContainerError(f"channel {channel.get('ChannelName')} is not an S3 channel (not supported locally)")
    if source.get("S3DataType", "S3Prefix") != "S3Prefix":
        raise ContainerError(f"channel {channel['ChannelName']}: S3DataType {source['S3DataType']} "
                             "is not supported locally (S3Prefix only)")
    if source.get("S3DataDistributionType", DISTRIBUTIONS[0]) not in DISTRIBUTIONS:
        raise ContainerError(f"channel {channel['ChannelName']}: S3DataDistributionType "
                             f"{source['S3DataDistributionType']} is not one of {', '.join(DISTRIBUTIONS)}")
    return source


def input_data_config(request: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``inputdataconfig.json``: per channel, the fields the service writes."""
    default_mode = request.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File")
    config = {}
    for channel in request.get("InputDataConfig") or []:
        source = _channel_source(channel)
        entry = {"TrainingInputMode": channel.get("InputMode", default_mode),
                 "S3DistributionType": source.get("S3DataDistributionType", "FullyReplicated"),
                 "RecordWrapperType": channel.get("RecordWrapperType", "None")}
        if channel.get("ContentType"):
            entry = {"ContentType": channel["ContentType"], **entry}
        config[channel["ChannelName"]] = entry
    return config


def training_resource_config(request: Mapping[str, Any], host: Host | None = None) -> dict[str, Any]:
    """``resourceconfig.json`` of ``host`` in a homogeneous cluster (default: a cluster of one, ``algo-1``,
    which holds every object: a root laid out to run the job by hand does all of its work)."""
    resources = request.get("ResourceConfig", {})
    instance_type = resources.get("InstanceType", "local")
    host = host or Host.single()
    names = list(host.names)
    return {"current_host": host.current, "current_instance_type": instance_type, "current_group_name": GROUP,
            "hosts": names, "instance_groups": [{"instance_group_name": GROUP, "instance_type": instance_type,
                                                 "hosts": names}],
            "network_interface_name": NETWORK_INTERFACE}


@dataclass(frozen=True)
class TrainingContainer:
    root: Path  # stands for /opt/ml
    channels: dict[str, Path]
    hyperparameters: dict[str, str]  # as written to input/config/hyperparameters.json

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def failure_file(self) -> Path:
        """Where the container leaves its failure reason (the service's FailureReason, first 1024 characters)."""
        return self.output_dir / "failure"


def render_training(request: Mapping[str, Any], root: Path, fetch: Fetch, *,
                    submit_directory: str | None = None, host: Host | None = None) -> TrainingContainer:
    """Write a training container root for ``request`` on ``host`` (default: the only one) under ``root`` (which
    must not hold one already); a channel sharded by key gets this host's share of its objects."""
    if root.exists() and any(root.iterdir()):
        raise ContainerError(f"container root {root} is not empty")
    for channel in request.get("InputDataConfig") or []:
        mode = input_data_config({**request, "InputDataConfig": [channel]})[channel["ChannelName"]]["TrainingInputMode"]
        if mode != "File":
            raise ContainerError(f"channel {channel['ChannelName']}: input mode {mode} is not supported locally (File only)")
    values = hyperparameters(request, submit_directory)
    config = root / "input" / "config"
    config.mkdir(parents=True)
    _write_json(config / "hyperparameters.json", values)
    _write_json(config / "inputdataconfig.json", input_data_config(request))
    _write_json(config / "resourceconfig.json", training_resource_config(request, host))
    channels = {}
    for channel in request.get("InputDataConfig") or []:
        target = root / "input" / "data" / channel["ChannelName"]
        target.mkdir(parents=True)
        source = _channel_source(channel)
        sharded = source.get("S3DataDistributionType") == SHARDED
        fetch(source["S3Uri"], target, host.shard if sharded and host is not None else None)
        channels[channel["ChannelName"]] = target
    for folder in (root / "model", root / "output" / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    return TrainingContainer(root, channels, values)


def training_environment(request: Mapping[str, Any], root: Path, job_arn: str | None = None) -> dict[str, str]:
    """The variables the service sets in a training container, plus the toolkit's root outside Docker."""
    name = request["TrainingJobName"]
    return {**(request.get("Environment") or {}), "TRAINING_JOB_NAME": name,
            "TRAINING_JOB_ARN": job_arn or f"arn:aws:sagemaker:local:000000000000:training-job/{name}",
            "SAGEMAKER_BASE_DIR": str(root)}


# ------------------------------------------------------------------------------------------------ processing

def processing_job_config(request: Mapping[str, Any], job_arn: str) -> dict[str, Any]:
    """``/opt/ml/config/processingjobconfig.json``: the request as the service echoes it (absent fields null)."""
    app = request["AppSpecification"]
    cluster = request["ProcessingResources"]["ClusterConfig"]
    outputs = request.get("ProcessingOutputConfig") or {}
    return {
        "ProcessingJobArn": job_arn,
        "ProcessingJobName": request["ProcessingJobName"],
        "AppSpecification": {"ImageUri": app["ImageUri"], "ContainerEntrypoint": app.get("ContainerEntrypoint"),
                             "ContainerArguments": app.get("ContainerArguments")},
        "Environment": dict(request.get("Environment") or {}),
        "NetworkConfig": request.get("NetworkConfig"),
        "ProcessingInputs": list(request.get("ProcessingInputs") or []),
        "ProcessingOutputConfig": {"Outputs": list(outputs.get("Outputs") or []), "KmsKeyId": outputs.get("KmsKeyId")},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": cluster["InstanceCount"],
                                                  "InstanceType": cluster["InstanceType"],
                                                  "VolumeSizeInGB": cluster["VolumeSizeInGB"],
                                                  "VolumeKmsKeyId": cluster.get("VolumeKmsKeyId")}},
        "RoleArn": request["RoleArn"],
        "StoppingCondition": request.get("StoppingCondition", {"MaxRuntimeInSeconds": 86400}),
    }


def processing_resource_config(request: Mapping[str, Any], host: Host | None = None) -> dict[str, Any]:
    """``/opt/ml/config/resourceconfig.json`` of ``host`` (default: a cluster of one, as for training)."""
    host = host or Host.single()
    return {"current_host": host.current, "hosts": list(host.names)}


@dataclass(frozen=True)
class ProcessingContainer:
    root: Path  # stands for /opt/ml
    inputs: dict[str, Path]
    outputs: dict[str, Path]
    command: list[str]  # ContainerEntrypoint + ContainerArguments, container paths mapped to the root


def _processing_source(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    source = spec.get("S3Input")
    if source is None:
        raise ContainerError(f"input {spec.get('InputName')} is not an S3 input (not supported locally)")
    for field, allowed in (("S3DataType", "S3Prefix"), ("S3InputMode", "File"), ("S3CompressionType", "None")):
        if source.get(field, allowed) != allowed:
            raise ContainerError(f"input {spec['InputName']}: {field} {source[field]} is not supported locally "
                                 f"({allowed} only)")
    if source.get("S3DataDistributionType", DISTRIBUTIONS[0]) not in DISTRIBUTIONS:
        raise ContainerError(f"input {spec['InputName']}: S3DataDistributionType {source['S3DataDistributionType']} "
                             f"is not one of {', '.join(DISTRIBUTIONS)}")
    if not source["LocalPath"].startswith(PROCESSING_ROOT + "/"):
        raise ContainerError(f"input {spec['InputName']}: LocalPath {source['LocalPath']} is not under {PROCESSING_ROOT}")
    return source


def render_processing(request: Mapping[str, Any], root: Path, fetch: Fetch, job_arn: str,
                      host: Host | None = None) -> ProcessingContainer:
    """Write a processing container root for ``request`` on ``host`` (default: the only one) under ``root``
    (which must not hold one already); an input sharded by key gets this host's share of its objects."""
    if root.exists() and any(root.iterdir()):
        raise ContainerError(f"container root {root} is not empty")
    config = root / "config"
    config.mkdir(parents=True)
    _write_json(config / "processingjobconfig.json", processing_job_config(request, job_arn))
    _write_json(config / "resourceconfig.json", processing_resource_config(request, host))
    inputs = {}
    for spec in request.get("ProcessingInputs") or []:
        source = _processing_source(spec)
        target = container_path(root, source["LocalPath"].rstrip("/"))
        target.mkdir(parents=True, exist_ok=True)
        sharded = source.get("S3DataDistributionType") == SHARDED
        fetch(source["S3Uri"], target, host.shard if sharded and host is not None else None)
        inputs[spec["InputName"]] = target
    outputs = {}
    for spec in (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
        path = spec["S3Output"]["LocalPath"]
        if not path.startswith(PROCESSING_ROOT + "/"):
            raise ContainerError(f"output {spec['OutputName']}: LocalPath {path} is not under {PROCESSING_ROOT}")
        outputs[spec["OutputName"]] = container_path(root, path.rstrip("/"))
        outputs[spec["OutputName"]].mkdir(parents=True, exist_ok=True)  # the service creates them
    app = request["AppSpecification"]
    command = [localise(part, root) for part in [*(app.get("ContainerEntrypoint") or []),
                                                 *(app.get("ContainerArguments") or [])]]
    if not command:
        raise ContainerError("no ContainerEntrypoint: the image's own entrypoint cannot run outside its image")
    _localise_shell_script(command, root)
    return ProcessingContainer(root, inputs, outputs, command)


def _localise_shell_script(command: list[str], root: Path) -> None:
    """A shell entrypoint delivered as an input (the SDK's ``runproc.sh``) names container paths: map them.

    Only the paths change; every command of the script runs as written."""
    if len(command) > 1 and Path(command[0]).name in ("bash", "sh"):
        script = Path(command[1])
        if script.is_file() and root in script.parents:
            script.write_text(localise(script.read_text(encoding="utf-8"), root), encoding="utf-8")


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
