"""Run a SageMaker processing job's request locally: the container contract mapped to a run folder.

The request is the ``CreateProcessingJob`` arguments a pipeline step resolves to (checked against
botocore's request shape first). Inputs under ``S3Uri`` are copied from the data lake into the run
folder where the container would see them (``/opt/ml/processing/...`` → ``<run>/...``), the
entrypoint runs as a subprocess with container paths remapped, its output is logged per job, and on
success each output folder is copied back to its ``S3Uri`` in the lake. The answer has the shape of
``DescribeProcessingJob`` (outputs keyed by name, as pipeline properties address them).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnosa.lake import DataLake
from pipelines.service_model import request_problems

PROCESSING_ROOT = "/opt/ml/processing"
TRAINING_ROOT = "/opt/ml"


class JobError(RuntimeError):
    """A job that could not run or failed; the message says which and where its log is."""


@dataclass(frozen=True)
class LakeMapping:
    """s3://<bucket>/<prefix>/<key> in a definition ↔ <key> in the data lake."""

    bucket: str
    lake: DataLake
    prefix: str = ""

    def key(self, uri: str) -> str:
        head = f"s3://{self.bucket}/" + (f"{self.prefix.strip('/')}/" if self.prefix else "")
        if not uri.startswith(head):
            raise JobError(f"{uri} is outside the data lake ({head}...)")
        return uri[len(head):].rstrip("/")


def check_request(operation: str, arguments: dict[str, Any]) -> None:
    problems = request_problems(operation, arguments)
    if problems:
        raise JobError(f"{operation} request is invalid: {problems}")


def _download(mapping: LakeMapping, uri: str, target: Path, what: str) -> None:
    """An S3 object, or every object under an S3 prefix, copied from the lake into ``target``."""
    key = mapping.key(uri)
    keys = [key] if mapping.lake.exists(key) else mapping.lake.list(f"{key}/")
    if not keys:
        raise JobError(f"{what} at {uri} is empty or missing")
    for item in keys:
        mapping.lake.get_file(item, target / (Path(item).name if item == key else item[len(key) + 1:]))


def _remap(value: str, run_dir: Path) -> str:
    return str(run_dir) + value[len(PROCESSING_ROOT):] if value.startswith(PROCESSING_ROOT) else value


def _local(path: str, run_dir: Path) -> Path:
    if not path.startswith(PROCESSING_ROOT):
        raise JobError(f"local path {path} is not under {PROCESSING_ROOT}")
    return Path(_remap(path, run_dir))


def run_processing(arguments: dict[str, Any], run_dir: Path, mapping: LakeMapping, *,
                   env: dict[str, str] | None = None, python: str = sys.executable) -> dict[str, Any]:
    check_request("CreateProcessingJob", arguments)
    name = arguments["ProcessingJobName"]
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "job.log"
    for spec in arguments.get("ProcessingInputs", []):
        source = spec.get("S3Input")
        if source is None:
            raise JobError(f"job {name}: input {spec.get('InputName')} is not an S3 input (not supported locally)")
        _download(mapping, source["S3Uri"], _local(source["LocalPath"], run_dir), f"job {name}: input {spec.get('InputName')}")

    app = arguments["AppSpecification"]
    command = [_remap(part, run_dir) for part in app.get("ContainerEntrypoint", [])]
    command += [_remap(part, run_dir) for part in app.get("ContainerArguments", [])]
    if not command:
        raise JobError(f"job {name}: no ContainerEntrypoint to run")
    if command[0] in ("python", "python3"):
        command[0] = python  # the container's interpreter is this environment's, with the same pins
    environment = {**os.environ, **arguments.get("Environment", {}), **(env or {})}
    seconds = _run(name, command, run_dir, environment, log_path)
    code = 0

    outputs = {}
    for spec in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
        target = spec["S3Output"]
        folder = _local(target["LocalPath"], run_dir)
        prefix = mapping.key(target["S3Uri"])
        for path in sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []:
            mapping.lake.put_file(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
        outputs[spec["OutputName"]] = spec
    return {"ProcessingJobName": name, "ProcessingJobStatus": "Completed", "ExitCode": code,
            "ProcessingOutputConfig": {"Outputs": outputs}, "DurationSeconds": round(seconds, 3),
            "LogPath": str(log_path)}


def _run(name: str, command: list[str], run_dir: Path, environment: dict[str, str], log_path: Path) -> float:
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(command, cwd=run_dir, env=environment, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise JobError(f"job {name} exited with {code} after {seconds:.1f} s (log: {log_path}): " + " | ".join(tail))
    return seconds


def run_training(arguments: dict[str, Any], run_dir: Path, mapping: LakeMapping, *,
                 env: dict[str, str] | None = None, python: str = sys.executable) -> dict[str, Any]:
    """A CreateTrainingJob request: channels from the lake, SM_* variables, model.tar.gz back to the lake."""
    check_request("CreateTrainingJob", arguments)
    name = arguments["TrainingJobName"]
    algorithm = arguments["AlgorithmSpecification"]
    command = [*algorithm.get("ContainerEntrypoint", []), *algorithm.get("ContainerArguments", [])]
    if not command:
        raise JobError(f"job {name}: no ContainerEntrypoint to run")
    if command[0] in ("python", "python3"):
        command[0] = python
    base = run_dir / "opt-ml"
    channels = {}
    for channel in arguments.get("InputDataConfig", []):
        source = channel["DataSource"].get("S3DataSource")
        if source is None:
            raise JobError(f"job {name}: channel {channel['ChannelName']} is not an S3 channel (not supported locally)")
        target = base / "input" / "data" / channel["ChannelName"]
        _download(mapping, source["S3Uri"], target, f"job {name}: channel {channel['ChannelName']}")
        channels[channel["ChannelName"]] = target
    hyperparameters = arguments.get("HyperParameters", {})
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters), encoding="utf-8")
    model_dir, output_dir = base / "model", base / "output"
    sm = {"SM_MODEL_DIR": str(model_dir), "SM_INPUT_DIR": str(base / "input"), "SM_OUTPUT_DIR": str(output_dir),
          "SM_OUTPUT_DATA_DIR": str(output_dir / "data"), "SM_HPS": json.dumps(hyperparameters),
          "SM_CHANNELS": json.dumps(sorted(channels)), "SM_TRAINING_ENV": json.dumps({"job_name": name})}
    sm |= {f"SM_CHANNEL_{c.upper()}": str(path) for c, path in channels.items()}
    environment = {**os.environ, **arguments.get("Environment", {}), **sm, **(env or {})}
    remapped = [str(base) + part[len(TRAINING_ROOT):] if part.startswith(TRAINING_ROOT + "/") else part
                for part in command]
    log_path = run_dir / "job.log"
    seconds = _run(name, remapped, run_dir, environment, log_path)

    tarball = run_dir / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for item in sorted(model_dir.iterdir()) if model_dir.exists() else []:
            archive.add(item, arcname=item.name)
    output_uri = arguments["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    model_uri = f"{output_uri}/{name}/output/model.tar.gz"
    mapping.lake.put_file(tarball, mapping.key(model_uri))
    log_text = log_path.read_text(encoding="utf-8", errors="replace")
    metrics = []
    for definition in algorithm.get("MetricDefinitions", []):
        found = re.findall(definition["Regex"], log_text)
        if found:
            metrics.append({"MetricName": definition["Name"], "Value": float(found[-1])})
    return {"TrainingJobName": name, "TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "FinalMetricDataList": metrics, "HyperParameters": hyperparameters,
            "DurationSeconds": round(seconds, 3), "LogPath": str(log_path)}
