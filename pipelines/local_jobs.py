"""Run a SageMaker processing job's request locally: the container contract mapped to a run folder.

The request is the ``CreateProcessingJob`` arguments a pipeline step resolves to (checked against
botocore's request shape first). Inputs under ``S3Uri`` are copied from the data lake into the run
folder where the container would see them (``/opt/ml/processing/...`` → ``<run>/...``), the
entrypoint runs as a subprocess with container paths remapped, its output is logged per job, and on
success each output folder is copied back to its ``S3Uri`` in the lake. The answer has the shape of
``DescribeProcessingJob`` (outputs keyed by name, as pipeline properties address them).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
from botocore.validate import ParamValidator

from diagnosa.lake import DataLake

PROCESSING_ROOT = "/opt/ml/processing"


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
    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).input_shape
    report = ParamValidator().validate(arguments, shape)
    if report.has_errors():
        raise JobError(f"{operation} request is invalid: {report.generate_report()}")


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
        target = _local(source["LocalPath"], run_dir)
        key = mapping.key(source["S3Uri"])
        keys = [key] if mapping.lake.exists(key) else [k for k in mapping.lake.list(f"{key}/")]
        if not keys:
            raise JobError(f"job {name}: input {spec.get('InputName')} at {source['S3Uri']} is empty or missing")
        for item in keys:
            relative = Path(item).name if item == key else item[len(key) + 1:]
            mapping.lake.get_file(item, target / relative)

    app = arguments["AppSpecification"]
    command = [_remap(part, run_dir) for part in app.get("ContainerEntrypoint", [])]
    command += [_remap(part, run_dir) for part in app.get("ContainerArguments", [])]
    if not command:
        raise JobError(f"job {name}: no ContainerEntrypoint to run")
    if command[0] in ("python", "python3"):
        command[0] = python  # the container's interpreter is this environment's, with the same pins
    started = time.perf_counter()
    environment = {**os.environ, **arguments.get("Environment", {}), **(env or {})}
    with open(log_path, "w", encoding="utf-8") as log:
        code = subprocess.run(command, cwd=run_dir, env=environment, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise JobError(f"job {name} exited with {code} after {seconds:.1f} s (log: {log_path}): " + " | ".join(tail))

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
