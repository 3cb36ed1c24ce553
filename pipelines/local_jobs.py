"""Run SageMaker processing and training job requests locally: the container contract mapped to a run folder.

The request is the ``CreateProcessingJob``/``CreateTrainingJob`` arguments a pipeline step resolves
to (checked against botocore's request shape first). Inputs under ``S3Uri`` are copied from the data
lake into the run folder where the container would see them (``/opt/ml/...`` → ``<run>/...``), the
job runs as a subprocess, its output is logged per job, and only on success are outputs copied back
to the lake. Answers have the shape of ``DescribeProcessingJob``/``DescribeTrainingJob``.

The "container image" is this Python environment, which already holds the step pins: ``python``,
``python3`` and ``pip`` resolve to it (small shims first on ``PATH``) and pip runs with
``PIP_NO_INDEX=1``, so the SDK's own runner scripts work unchanged — ``runproc.sh`` untars the code
and "installs" ``requirements.txt``, which succeeds only if every pin is already satisfied: a job
whose pins differ from this environment fails instead of changing it. Framework training images run
in script mode like the SageMaker training toolkit: ``sagemaker_submit_directory`` is unpacked into
the code folder, its ``requirements.txt`` checked the same way, and ``sagemaker_program`` runs with
the other hyperparameters as ``--name value`` arguments and the ``SM_*`` variables.
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


def container_environment(run_dir: Path, python: str, extra: dict[str, str]) -> dict[str, str]:
    """The job's environment: this interpreter as the container's python/pip, pip unable to download."""
    shims = run_dir / ".bin"
    shims.mkdir(parents=True, exist_ok=True)
    for name, tail in (("python", ""), ("python3", ""), ("pip", " -m pip"), ("pip3", " -m pip")):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{python}"{tail} "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    return {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}", "PIP_NO_INDEX": "1",
            "PIP_QUIET": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
            # Jobs share this machine's cores; spinning OpenMP threads slow each other down ~100x.
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), **extra}


def _localise_script(command: list[str], run_dir: Path, container_root: str) -> None:
    """A shell entrypoint from an input (the SDK's runproc.sh) names container paths: point them at the run folder."""
    if len(command) > 1 and Path(command[0]).name in ("bash", "sh"):
        script = Path(command[1])
        if script.is_file() and run_dir in script.parents:
            text = script.read_text(encoding="utf-8")
            script.write_text(text.replace(container_root, str(run_dir) + container_root[len(PROCESSING_ROOT):]),
                              encoding="utf-8")


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

    for spec in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
        _local(spec["S3Output"]["LocalPath"], run_dir).mkdir(parents=True, exist_ok=True)  # as the service does
    app = arguments["AppSpecification"]
    command = [_remap(part, run_dir) for part in app.get("ContainerEntrypoint", [])]
    command += [_remap(part, run_dir) for part in app.get("ContainerArguments", [])]
    if not command:
        raise JobError(f"job {name}: no ContainerEntrypoint to run")
    _localise_script(command, run_dir, PROCESSING_ROOT)
    environment = container_environment(run_dir, python, {**arguments.get("Environment", {}), **(env or {})})
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
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise JobError(f"job {name} exited with {code} after {seconds:.1f} s (log: {log_path}): " + " | ".join(tail))
    return seconds


def run_training(arguments: dict[str, Any], run_dir: Path, mapping: LakeMapping, *,
                 env: dict[str, str] | None = None, python: str = sys.executable) -> dict[str, Any]:
    """A CreateTrainingJob request: channels from the lake, SM_* variables, model.tar.gz back to the lake."""
    check_request("CreateTrainingJob", arguments)
    name = arguments["TrainingJobName"]
    algorithm = arguments["AlgorithmSpecification"]
    hyperparameters = arguments.get("HyperParameters", {})
    base = run_dir / "opt-ml"
    channels = {}
    for channel in arguments.get("InputDataConfig", []):
        source = channel["DataSource"].get("S3DataSource")
        if source is None:
            raise JobError(f"job {name}: channel {channel['ChannelName']} is not an S3 channel (not supported locally)")
        target = base / "input" / "data" / channel["ChannelName"]
        _download(mapping, source["S3Uri"], target, f"job {name}: channel {channel['ChannelName']}")
        channels[channel["ChannelName"]] = target
    command = [*algorithm.get("ContainerEntrypoint", []), *algorithm.get("ContainerArguments", [])]
    user_hyperparameters = {k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}
    if not command:
        command = _script_mode(name, hyperparameters, user_hyperparameters, base / "code", mapping)
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters), encoding="utf-8")
    model_dir, output_dir = base / "model", base / "output"
    sm = {"SM_MODEL_DIR": str(model_dir), "SM_INPUT_DIR": str(base / "input"), "SM_OUTPUT_DIR": str(output_dir),
          "SM_OUTPUT_DATA_DIR": str(output_dir / "data"), "SM_HPS": json.dumps(user_hyperparameters),
          "SM_CHANNELS": json.dumps(sorted(channels)), "SM_MODULE_DIR": str(base / "code"),
          "SM_TRAINING_ENV": json.dumps({"job_name": name, "hyperparameters": user_hyperparameters})}
    sm |= {f"SM_CHANNEL_{c.upper()}": str(path) for c, path in channels.items()}
    sm |= {f"SM_HP_{k.upper()}": str(v) for k, v in user_hyperparameters.items()}
    environment = container_environment(run_dir, python, {**arguments.get("Environment", {}), **sm, **(env or {})})
    remapped = [str(base) + part[len(TRAINING_ROOT):] if part.startswith(TRAINING_ROOT + "/") else part
                for part in command]
    log_path = run_dir / "job.log"
    seconds = _run(name, remapped, base / "code" if (base / "code").is_dir() else run_dir, environment, log_path)

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


def _script_mode(name: str, hyperparameters: dict[str, str], user: dict[str, str], code_dir: Path,
                 mapping: LakeMapping) -> list[str]:
    """What a framework image's training toolkit runs: the submitted program with hyperparameters as flags."""
    program, submitted = hyperparameters.get("sagemaker_program"), hyperparameters.get("sagemaker_submit_directory")
    if not program or not submitted:
        raise JobError(f"job {name}: no ContainerEntrypoint and no sagemaker_program/sagemaker_submit_directory "
                       "hyperparameters: nothing to run")
    program, submitted = (value.strip('"') for value in (program, submitted))  # v2 SDKs JSON-quote them
    archive = code_dir.parent / "sourcedir.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    mapping.lake.get_file(mapping.key(submitted), archive)
    code_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as bundle:
        bundle.extractall(code_dir, filter="data")
    if not (code_dir / program).is_file():
        raise JobError(f"job {name}: sagemaker_program {program} is not in {submitted}")
    command = ["/bin/sh", "-c", 'set -e; if [ -f requirements.txt ]; then pip install --quiet -r requirements.txt; fi; '
               'exec python "$0" "$@"', program]
    for key, value in user.items():
        command += [f"--{key}", str(value)]
    return command
