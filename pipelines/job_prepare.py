"""One job step of a local execution, laid out to run by hand: its container root and the command.

``prepare_job`` takes an execution's own definition and record (``<workspace>/executions/<id>/``),
resolves the step's request exactly as the executor does (``executor.job_request``: parameters,
execution variables, the properties of the steps it reads), and renders the container root with the
executor's own request → container mapping (``pipelines/containers.py``, inputs fetched from the data
lake by ``local_jobs.lake_fetcher``). So the root holds what the job's container holds under
``/opt/ml``: processing inputs at their ``LocalPath`` (candidates as the ``model.tar.gz`` each training
step produced), empty output folders, ``config/processingjobconfig.json``; for training
``input/config/{hyperparameters,inputdataconfig,resourceconfig}.json``, the channels under
``input/data/``, and empty ``model/`` and ``output/data/``.

What runs is the job's entry point from this checkout (``python -m processing.preprocess``, ...): the
module behind the script the container would run (``runproc.sh``'s last line for processing,
``sagemaker_program`` for training; ``staging.ENTRY_POINTS`` maps one to the other), with the
request's arguments and ``/opt/ml`` paths pointed at the root. Training reads ``SM_INPUT_DIR``,
``SM_MODEL_DIR`` and ``SM_OUTPUT_DIR`` (the toolkit's variables; channels and hyperparameters are
found under ``SM_INPUT_DIR``).
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diagnosa.files import not_a_folder
from pipelines.containers import CONTAINER_ROOT, ContainerError, container_path, localise, render_processing, render_training
from pipelines.executor import (
    JOB_OPERATIONS,
    ExecutionRecord,
    execution_definition,
    execution_resolver,
    job_arn,
    job_request,
    load_execution,
)
from pipelines.expressions import ExpressionError, step_references
from pipelines.graph import DefinitionError, StepNode, build_graph
from pipelines.local_jobs import JobError, LakeMapping, lake_fetcher
from pipelines.staging import ENTRY_POINTS

MARKER = ".diagnosa-job.json"  # written into a prepared root: only such a root is replaced by --force
# The SDK's runproc.sh ends with `<python command> <entry script> "$@"` (FrameworkProcessor._generate_framework_script);
# the definition's command is `exec python`.
_RUNPROC_CALL = re.compile(r'^\s*(?:exec\s+)?\S*python3?\s+(\S+\.py)\s+"\$@"\s*$', re.MULTILINE)
# The container paths the training entry point reads (the toolkit's names); the rest it finds under SM_INPUT_DIR.
TRAINING_VARIABLES = {"SM_INPUT_DIR": "/opt/ml/input", "SM_MODEL_DIR": "/opt/ml/model", "SM_OUTPUT_DIR": "/opt/ml/output"}


class PrepareError(ValueError):
    """The step cannot be laid out; the message names what is wrong and what to do."""


@dataclass(frozen=True)
class PreparedJob:
    execution_id: str
    step: str
    operation: str  # CreateProcessingJob or CreateTrainingJob
    root: Path  # stands for /opt/ml, as given (relative paths stay relative in the command)
    environment: dict[str, str]  # variables the command needs, besides this shell's
    command: list[str]  # python -m <entry point> <arguments>
    executor_outputs: dict[str, str]  # output name → where the execution put this step's own outputs
    executor_threads: dict[str, str]  # the thread budget the executor gave the job (none if it did not run it)

    def command_line(self) -> str:
        """The command as one shell line: variables, then the program and its arguments, quoted."""
        return " ".join([*(f"{name}={shlex.quote(value)}" for name, value in self.environment.items()),
                         *(shlex.quote(part) for part in self.command)])

    def script(self) -> list[str]:
        """What ``diagnosa job prepare`` prints: a shell script (comments and the one command line)."""
        lines = [f"# step {self.step} of execution {self.execution_id}: {self.root} stands for {CONTAINER_ROOT}"]
        if self.executor_threads:
            lines += ["# the threads the executor gave this job (its numbers to the last digit need the same):",
                      "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in self.executor_threads.items())]
        lines += ["# run it by hand in this folder (the entry point of this environment's code, e.g. your checkout):",
                  self.command_line()]
        if self.executor_outputs:
            lines.append("# the execution's own outputs of this step, to compare with:")
            lines += [f"#   {name}: {where}" for name, where in self.executor_outputs.items()]
        return lines


def job_steps(graph: Mapping[str, StepNode]) -> list[str]:
    """The steps that run a container (processing and training), in definition order."""
    return [name for name, node in graph.items() if node.type in JOB_OPERATIONS]


def prepare_job(executions: Path, mapping: LakeMapping, step: str, root: Path | None = None, *,
                execution_id: str | None = None, force: bool = False) -> PreparedJob:
    """Lay out ``step`` of an execution (the latest without ``execution_id``) under ``root`` (by default
    ``<workspace>/jobs/<execution id>/<step>``, beside ``executions``) and say how to run it."""
    try:
        record = load_execution(executions, execution_id)
        graph = build_graph(execution_definition(record))
    except (DefinitionError, OSError, ValueError) as err:
        raise PrepareError(str(err)) from None
    node = _job_node(graph, step, record)
    _check_upstream(node, record)
    try:
        operation, request = job_request(node, execution_resolver(record), record.id)
    except ExpressionError as err:
        raise PrepareError(f"step {node.name}: {err}") from None
    root = executions.parent / "jobs" / record.id / node.name if root is None else root
    inside = mapping.lake.holds(root)
    if inside:  # its inputs and outputs would become objects of the lake, listed and read as such
        raise PrepareError(f"--root {root} is inside the data lake {inside}: choose a folder outside it")
    _clear(root, force)
    absolute = root.absolute()
    fetch = lake_fetcher(mapping, request.get("ProcessingJobName") or request["TrainingJobName"])
    try:
        if operation == "CreateProcessingJob":
            render_processing(request, absolute, fetch, job_arn(operation, request["ProcessingJobName"]))
            script = _processing_script(request, absolute)
            arguments = [localise(part, root) for part in request["AppSpecification"].get("ContainerArguments") or []]
            environment = dict(request.get("Environment") or {})
        else:
            render_training(request, absolute, fetch)
            script = str(request.get("HyperParameters", {}).get("sagemaker_program", "")).strip('"')  # v2 SDKs quote it
            arguments = []  # the entry point reads its hyperparameters from input/config/hyperparameters.json
            environment = {**(request.get("Environment") or {}),
                           **{name: str(container_path(root, path)) for name, path in TRAINING_VARIABLES.items()}}
        module = _module(script)
    except JobError as err:  # an input the execution recorded is gone from the lake
        shutil.rmtree(absolute, ignore_errors=True)
        raise PrepareError(f"{err}: the lake no longer holds what execution {record.id} recorded; "
                           "run the pipeline again (`diagnosa run --local`)") from None
    except (ContainerError, PrepareError) as err:
        shutil.rmtree(absolute, ignore_errors=True)
        raise PrepareError(f"step {node.name}: {err}") from None
    (absolute / MARKER).write_text(json.dumps({"execution": record.id, "step": node.name, "operation": operation},
                                              indent=2) + "\n", encoding="utf-8")
    return PreparedJob(record.id, node.name, operation, root, environment, ["python", "-m", module, *arguments],
                       _executor_outputs(record, node.name, mapping),
                       dict(record.steps.get(node.name, {}).get("JobEnvironment") or {}))


def _job_node(graph: Mapping[str, StepNode], step: str, record: ExecutionRecord) -> StepNode:
    jobs = ", ".join(job_steps(graph))
    if step not in graph:
        raise PrepareError(f"execution {record.id} has no step {step!r}; its job steps: {jobs}")
    node = graph[step]
    if node.type not in JOB_OPERATIONS:
        raise PrepareError(f"step {step} is a {node.type} step, which runs no container; its job steps: {jobs}")
    return node


def _check_upstream(node: StepNode, record: ExecutionRecord) -> None:
    """Every step whose outputs the step reads must have succeeded in the execution."""
    missing = []
    for name in sorted(step_references(node.arguments)):
        status = record.steps.get(name, {}).get("StepStatus")
        if status != "Succeeded":
            missing.append(f"{name} ({'not run' if status is None else status.lower()})")
    if missing:
        hint = {"Failed": f"`diagnosa run --local --resume {record.id}` runs them",
                "Stopped": f"`diagnosa run --local --resume {record.id}` runs them",
                "Executing": "the execution is still running (or was killed: then resume it)"}.get(
                    record.status, "run the pipeline again (`diagnosa run --local`)")
        raise PrepareError(f"step {node.name} takes its inputs from {', '.join(missing)}, which did not succeed in "
                           f"execution {record.id}: {hint}; or pick another execution with --execution")


def _clear(root: Path, force: bool) -> None:
    """An empty (or absent) root; with ``force``, a root prepared earlier is replaced — nothing else is deleted."""
    problem = not_a_folder(root)  # a file, a FIFO, a symlink that loops
    if problem:
        raise PrepareError(f"--root {root}: {problem}")
    if not root.exists() or not any(root.iterdir()):
        return
    if not force:
        raise PrepareError(f"--root {root} is not empty: choose another folder, or add --force to replace a root "
                           "that `diagnosa job prepare` laid out before")
    if not (root / MARKER).is_file():
        raise PrepareError(f"--root {root} is not empty and was not laid out by `diagnosa job prepare` (no {MARKER}): "
                           "not deleting it even with --force; choose another folder")
    shutil.rmtree(root)


def _processing_script(request: Mapping[str, Any], root: Path) -> str:
    """The script a processing container runs: the entrypoint's own, or the one the SDK's runproc.sh calls."""
    entrypoint = list(request["AppSpecification"].get("ContainerEntrypoint") or [])
    if len(entrypoint) > 1 and Path(entrypoint[0]).name.startswith("python"):
        return entrypoint[1]
    if len(entrypoint) > 1 and Path(entrypoint[0]).name in ("bash", "sh"):
        script = container_path(root, entrypoint[1]) if entrypoint[1].startswith(CONTAINER_ROOT) else Path(entrypoint[1])
        calls = _RUNPROC_CALL.findall(script.read_text(encoding="utf-8")) if script.is_file() else []
        if calls:
            return calls[-1]
    raise PrepareError(f"cannot tell which script the entrypoint {' '.join(entrypoint) or '(none)'} runs")


def _module(script: str) -> str:
    module = ENTRY_POINTS.get(Path(script).name)
    if module is None:
        raise PrepareError(f"its program {script or '(none)'} is not one of Diagnosa's job entry points "
                           f"({', '.join(ENTRY_POINTS)})")
    return module


def _executor_outputs(record: ExecutionRecord, step: str, mapping: LakeMapping) -> dict[str, str]:
    """Where the execution put the step's outputs (when it succeeded): local paths for a folder lake."""
    properties = record.steps.get(step, {})
    if properties.get("StepStatus") != "Succeeded":
        return {}
    properties = properties.get("Properties", {})
    uris = {name: spec["S3Output"]["S3Uri"]
            for name, spec in properties.get("ProcessingOutputConfig", {}).get("Outputs", {}).items()}
    if properties.get("ModelArtifacts"):
        uris["model"] = properties["ModelArtifacts"]["S3ModelArtifacts"]
    try:
        return {name: mapping.lake.url(mapping.key(uri)).removeprefix("file://") for name, uri in uris.items()}
    except JobError:  # outputs outside the lake (a definition's own bucket): nothing local to point at
        return {}
