"""The local executor: runs a SageMaker pipeline definition (the JSON itself) on this machine.

It reads what SageMaker reads — parameters, steps, ``DependsOn``, property references, property
files, conditions — and does what the service would do with each step type: processing and training
requests run as subprocesses against the local data lake (``pipelines/local_jobs.py``),
``RegisterModel`` goes to the local model registry, ``Model``/``EndpointConfig``/``Endpoint`` create
or update a local endpoint (``pipelines/local_endpoints.py``), ``Fail`` ends the execution with its
message. A step starts as soon as the steps it needs have succeeded, up to ``max_parallel`` at a time.

Every execution lives in ``<root>/<execution id>/``: the definition it ran, ``execution.json``
(status, parameters, each step's status, times, properties and failure — the shape of
``DescribePipelineExecution``/``ListPipelineExecutionSteps``), and one folder per step with its job
log. Step outputs reach the lake only when the step succeeds, under ``artifacts/runs/<id>/``, so a
failed execution leaves nothing half-written; :meth:`LocalExecutor.resume` reruns the failed step
and what follows, reusing the steps that succeeded.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from diagnosa.data.schema import EXECUTION_ID_LENGTH
from diagnosa.data.validate import clip, shown
from diagnosa.files import read_json_record, write_json_atomic, write_text_atomic
from diagnosa.lake import DataLake
from diagnosa.logs import utc_now
from diagnosa.net import process_alive
from diagnosa.serving_code import STEP_LOCK, step_lock
from diagnosa.text import some_of
from pipelines import guard as guard_script
from pipelines.definition import FLOAT_MAX, parameter_from_text, parameter_problems, parameter_range_problems
from pipelines.expressions import ExpressionError, Resolver, evaluate_condition, step_references
from pipelines.graph import DefinitionError, StepNode, build_graph, declared_parameter_problems
from pipelines.guard import EXECUTION_MARKER, job_processes, signal_jobs
from pipelines.local_jobs import (
    JOB_LOG,
    MAX_LOCAL_INSTANCES,
    Heartbeat,
    JobError,
    LakeMapping,
    run_processing,
    run_training,
    unmet_pins,
)
from pipelines.locks import LockHeld, file_lock
from pipelines.registry import LocalModelRegistry, RegistryError
from pipelines.service_model import parameter_value_problems
from pipelines.staging import ROOT as STAGED_ROOT

LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "local"
PARAMETER_TYPES = {"String": str, "Integer": int, "Float": float, "Boolean": bool}


class ExecutionError(ValueError):
    """The execution cannot start: bad parameters, unsupported steps, missing inputs. Nothing ran."""


class StepFailure(RuntimeError):
    """A step failed; ``reason`` is what ``FailureReason`` shows."""


class RecordNotWritten(OSError):
    """An execution's own record, ``execution.json``, could not be written (a full disk): the execution cannot go on,
    since what it records is how a listing, a resume and the cache know what ran. An OSError (the CLI's exit status 1)
    whose message names the file, the reason and what to do; ``reason`` is the system's (strerror)."""

    def __init__(self, message: str, path: Path, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason


# Left in an execution's folder when its executor could not write its record even to close it (the disk still full):
# the record on disk then still says Executing, and a listing took the executor's end for a kill ("killed with its
# guard"). Its text, if it could be written, is the reason; an empty file takes no data block to make.
UNWRITTEN_MARKER = ".record-unwritten"


class DamagedExecution(ExecutionError):
    """An execution's ``execution.json`` (or ``definition.json``) that is no record of it: truncated by a full disk,
    edited by hand. The message names the file and what is wrong (``detail``, which listings show beside the
    execution's id and DAMAGED)."""

    def __init__(self, execution_id: str, detail: str):
        super().__init__(f"execution {execution_id}: {detail}")
        self.detail = detail




# ------------------------------------------------------------------------------------------------ parameters

def resolve_parameters(definition: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Declared defaults with ``overrides`` applied; unknown names, wrong types, values outside an enum or outside
    the parameter's range (``parameter_range_problems``) are refused, as is a malformed definition, and an override
    whose text as StartPipelineExecution would send it (``parameter_text``) SageMaker refuses
    (``parameter_value_problems``: over 1024 characters, empty, a lone surrogate), before any folder is made."""
    problems = declared_parameter_problems(definition)
    if problems:
        raise ExecutionError("; ".join(problems))
    declared = {p["Name"]: p for p in definition.get("Parameters", [])}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ExecutionError(f"unknown pipeline parameter(s) {some_of(clip(name, 80) for name in unknown)} "
                             f"(declared: {', '.join(sorted(declared)) or 'none'})")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        kind = spec.get("Type", "String")
        if kind not in PARAMETER_TYPES:
            raise ExecutionError(f"parameter {name} has type {kind!r}, not one of {', '.join(PARAMETER_TYPES)}")
        if name in overrides:
            values[name] = coerce_parameter(name, kind, overrides[name])
        elif "DefaultValue" in spec:
            values[name] = coerce_parameter(name, kind, spec["DefaultValue"])
        else:
            raise ExecutionError(f"parameter {name} has no default: give it a value")
        allowed = spec.get("EnumValues")
        if allowed and values[name] not in allowed:
            raise ExecutionError(f"parameter {name} must be one of {allowed}, got {shown(values[name], 80)}")
    problems = parameter_range_problems(values)
    problems += [f"parameter {name}={shown(overrides[name], 80)}: {problem}" for name in sorted(overrides)
                 for problem in parameter_value_problems(parameter_text(values[name]))]
    if problems:
        raise ExecutionError("; ".join(problems))
    return values


def parameter_text(value: Any) -> str:
    """A checked value as StartPipelineExecution sends it (the text of its ``Parameter`` Value): a Boolean as true or
    false, as SageMaker writes them (str() said True); anything else as str(). The retrain function sends the same
    (infra/functions/jobs/retrain.py parameter_text: its package holds none of pipelines/, so it has its own copy;
    tests/test_pipeline_parameter_values.py holds the two equal)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def coerce_parameter(name: str, kind: str, value: Any) -> Any:
    """A value of the declared type (text from the command line is parsed; a float is not an integer)."""
    if isinstance(value, str) and kind != "String":
        try:
            value = parameter_from_text(name, kind, value)  # ASCII decimals as written; the reason when not
        except ValueError as err:
            raise ExecutionError(str(err)) from None
    ok = {"String": isinstance(value, str), "Boolean": isinstance(value, bool),
          "Integer": isinstance(value, int) and not isinstance(value, bool),
          "Float": isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= FLOAT_MAX}[kind]
    if not ok:
        raise ExecutionError(f"parameter {name} is a {kind}, got {shown(value, 80)} ({type(value).__name__})")
    return float(value) + 0.0 if kind == "Float" else value  # + 0.0: -0.0 is recorded as 0.0


# ------------------------------------------------------------------------------------------------ records

@dataclass
class ExecutionRecord:
    """``execution.json``: what DescribePipelineExecution and ListPipelineExecutionSteps would say."""

    path: Path
    data: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def id(self) -> str:
        return self.data["PipelineExecutionId"]

    @property
    def status(self) -> str:
        return self.data["PipelineExecutionStatus"]

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.data["Steps"]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def update(self, change: Callable[[dict[str, Any]], None]) -> None:
        """``change`` made to the record and written whole (RecordNotWritten when it cannot be: the file on disk
        keeps its last state, this one has the change)."""
        with self._lock:
            change(self.data)
            self.data["LastModifiedTime"] = utc_now()
            try:
                write_json_atomic(self.path, self.data, indent=2, default=str)
            except OSError as err:
                reason = err.strerror or str(err)
                raise RecordNotWritten(f"execution {self.id}: its record {self.path} could not be written ({reason})",
                                       self.path, reason) from err

    @classmethod
    def load(cls, path: Path) -> ExecutionRecord:
        """The record in ``path``; DamagedExecution when it is none."""
        return cls(path, read_execution(path))


DAMAGED = "Damaged"  # the status listed for an execution whose record cannot be read
EXECUTION_STATUSES = ("Executing", "Stopping", "Stopped", "Failed", "Succeeded")
# What every record holds (start writes them first), each step's (written as it starts), and what the optional
# fields hold when there: a record with a wrong one is damaged, not a KeyError or TypeError where it is read.
_RECORD_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "PipelineExecutionId": ((str,), "text"), "PipelineExecutionStatus": ((str,), "text"),
    "CreationTime": ((str,), "text"), "Parameters": ((dict,), "an object"), "Steps": ((dict,), "an object")}
_OPTIONAL_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "PipelineName": ((str,), "text"), "PipelineExecutionArn": ((str,), "text"), "FailureReason": ((str,), "text"),
    "Attempts": ((int,), "an integer"), "ExecutorPid": ((int, type(None)), "a process id or null"),
    "ExecutorHost": ((str,), "text"), "Skipped": ((list,), "a list"), "EndTime": ((str,), "text")}
_STEP_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "StepName": ((str,), "text"), "StepType": ((str,), "text"), "StepStatus": ((str,), "text"),
    "StartTime": ((str,), "text"), "RunFolder": ((str,), "text")}
_OPTIONAL_STEP_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "Properties": ((dict,), "an object"), "DurationSeconds": ((int, float), "a number"),
    "FailureReason": ((str,), "text"), "EndTime": ((str,), "text"), "CacheHitResult": ((dict,), "an object")}


def _field_problem(data: dict[str, Any], required: dict[str, tuple[tuple[type, ...], str]],
                   optional: dict[str, tuple[tuple[type, ...], str]]) -> str | None:
    """The first field of ``data`` missing from ``required`` or of the wrong type (a bool is no number), said as
    "no X" or "X is ..."."""
    for key, (kinds, what) in {**required, **optional}.items():
        if key not in data:
            if key in required:
                return f"no {key}"
        elif not isinstance(data[key], kinds) or isinstance(data[key], bool):
            return f"{key} is {shown(data[key])}, not {what}"
    return None


def execution_problem(data: object, execution_id: str) -> str | None:
    """What makes ``data`` no record of execution ``execution_id`` (its folder's name); None when it is one."""
    if not isinstance(data, dict):
        return f"{shown(data)}, not a JSON object"
    problem = _field_problem(data, _RECORD_FIELDS, _OPTIONAL_FIELDS)
    if problem:
        return problem
    if data["PipelineExecutionId"] != execution_id:
        return f"PipelineExecutionId {shown(data['PipelineExecutionId'])} is not its folder's name {execution_id}"
    if data["PipelineExecutionStatus"] not in EXECUTION_STATUSES:
        return (f"PipelineExecutionStatus {shown(data['PipelineExecutionStatus'])} is none of "
                f"{', '.join(EXECUTION_STATUSES)}")
    for name, step in data["Steps"].items():
        if not isinstance(step, dict):
            return f"step {clip(name, 80)}: {shown(step)}, not an object"
        problem = _field_problem(step, _STEP_FIELDS, _OPTIONAL_STEP_FIELDS)
        if problem:
            return f"step {clip(name, 80)}: {problem}"
    return None


def read_execution(path: Path) -> dict[str, Any]:
    """The data of the execution record ``path`` (``<root>/<id>/execution.json``), checked: DamagedExecution naming
    the file and what is wrong, rather than a traceback in whichever command read it; a record that is there but no
    file (a folder, a symlink that loops or leads nowhere) or cannot be read is damaged too. FileNotFoundError only
    when nothing is there (removed as it was listed)."""
    data, problem = read_json_record(path)
    if problem and not os.path.lexists(path):  # removed as it was listed: nothing there to call damaged
        raise FileNotFoundError(errno.ENOENT, "no execution record", str(path))
    problem = problem or execution_problem(data, path.parent.name)
    if problem:
        raise DamagedExecution(path.parent.name, f"its record {path} is damaged ({problem}): it cannot be shown or "
                                                 "resumed; start a new run")
    return data


def list_executions(root: Path) -> list[dict[str, Any]]:
    """Past executions, newest first. One whose record is damaged is a row of status DAMAGED with its Problem, placed
    by the time its record was last written (it used to be left out, and then named as not there; the latest
    execution is still the latest when damaged: `job prepare` says so rather than take an older one)."""
    found = []
    for path in _records(root):
        try:
            found.append(_settled(read_execution(path), path.parent))
        except DamagedExecution as err:
            try:  # lstat: a symlink leading nowhere has a time too
                written = datetime.fromtimestamp(path.lstat().st_mtime, timezone.utc).isoformat(timespec="milliseconds")
            except OSError:
                continue  # removed as it was listed
            found.append({"PipelineExecutionId": path.parent.name, "PipelineExecutionStatus": DAMAGED,
                          "CreationTime": "", "LastModifiedTime": written, "Parameters": {}, "Steps": {},
                          "Problem": err.detail})
        except OSError:
            continue  # removed as it was listed
    return sorted(found, key=lambda e: e.get("CreationTime") or e.get("LastModifiedTime", ""), reverse=True)


def _records(root: Path) -> list[Path]:
    """Every ``<root>/<id>/execution.json`` there is, whatever it is: a glob skipped one that is a symlink leading
    nowhere, and the readers took one that is a folder for none (the execution was then dropped without a word)."""
    try:
        folders = [Path(entry.path) for entry in os.scandir(root) if entry.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [folder / "execution.json" for folder in sorted(folders) if os.path.lexists(folder / "execution.json")]


def _settled(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The record as SageMaker would report it: an execution whose executor and guard were both killed never closed
    its record, and it is no longer executing (judged on the host that ran it; another host's pids mean nothing).
    Its jobs may outlive them: until they end it is Stopping, not Stopped."""
    pid = data.get("ExecutorPid")
    unwritten = _unwritten_reason(folder)
    if unwritten is not None and data.get("PipelineExecutionStatus") == "Executing":
        # The executor ended on its record it could not write (it stopped its jobs first): not killed, and no longer
        # executing, even while its process lives on (a test, `monitor --retrain`'s command).
        steps = {name: {**step, "StepStatus": "Stopped"} if step.get("StepStatus") == "Executing" else step
                 for name, step in data.get("Steps", {}).items()}
        return {**data, "PipelineExecutionStatus": "Failed", "Steps": steps,
                "FailureReason": f"the executor (process {pid}) could not write its record {folder / 'execution.json'} "
                                 f"({unwritten}) and stopped the execution; the record shows it as it was last "
                                 f"written: free space, then `diagnosa run --local --resume "
                                 f"{data.get('PipelineExecutionId')}` reruns what did not succeed"}
    if (data.get("PipelineExecutionStatus") not in ("Executing", "Stopping")
            or data.get("ExecutorHost", socket.gethostname()) != socket.gethostname() or process_alive(pid)):
        return data
    jobs = job_processes(folder)
    if jobs:
        listed = " ".join(map(str, jobs))
        return {**data, "PipelineExecutionStatus": "Stopping",
                "FailureReason": f"the executor (process {pid}) ended without closing the record, and job "
                                 f"process(es) {listed} still run; stop them (kill {listed}) before resuming"}
    reason = (f"the executor (process {pid}) ended without closing the record: killed with its guard; "
              f"`diagnosa run --local --resume {data.get('PipelineExecutionId')}` reruns what did not succeed")
    steps = {name: {**step, "StepStatus": "Stopped"} if step.get("StepStatus") == "Executing" else step
             for name, step in data.get("Steps", {}).items()}
    return {**data, "PipelineExecutionStatus": "Stopped", "FailureReason": data.get("FailureReason") or reason,
            "Steps": steps}


def _unwritten_reason(folder: Path) -> str | None:
    """Why the executor of the execution in ``folder`` could not write its record (UNWRITTEN_MARKER), None when it
    left no such mark."""
    marker = folder / UNWRITTEN_MARKER
    if not os.path.lexists(marker):
        return None
    try:
        text = marker.read_text(encoding="utf-8", errors="replace")[:200].strip()
    except OSError:
        text = ""
    return clip(text, 200) if text else "the disk was full, or the file could not be written"


def _mark_unwritten(folder: Path, reason: str) -> None:
    """Best effort: UNWRITTEN_MARKER in ``folder``, with the reason if there is room for it."""
    marker = folder / UNWRITTEN_MARKER
    try:
        marker.touch()
    except OSError:
        return
    try:
        marker.write_text(reason, encoding="utf-8")
    except OSError:
        try:
            marker.touch()  # a write cut short may have left it truncated: empty says "could not be written"
        except OSError:
            pass


def load_execution(root: Path, execution_id: str | None = None) -> ExecutionRecord:
    """An execution's record under ``root``: the one named, or the latest; refused with the ones there are."""
    executions = list_executions(root)
    if execution_id is None:
        if not executions:
            raise ExecutionError(f"no local executions in {root}: run `diagnosa run --local` first")
        execution_id = executions[0]["PipelineExecutionId"]
    path = root / execution_id / "execution.json"
    if not execution_id or "/" in execution_id or not os.path.lexists(path):  # one there but no file: damaged
        known = ", ".join(e["PipelineExecutionId"] for e in executions[:5]) or "none"
        raise ExecutionError(f"no local execution {execution_id!r} under {root} (latest: {known})")
    return ExecutionRecord.load(path)


def execution_definition(record: ExecutionRecord) -> dict[str, Any]:
    """The definition an execution ran (kept beside its record); DamagedExecution naming it when it is not JSON."""
    path = record.folder / "definition.json"
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DamagedExecution(record.id, f"the definition it ran, {path}, is damaged (not JSON: {err}): it cannot "
                                          "be resumed; start a new run") from None
    if not isinstance(definition, dict):
        raise DamagedExecution(record.id, f"the definition it ran, {path}, is damaged ({shown(definition)}, not a "
                                          "JSON object): it cannot be resumed; start a new run")
    return definition


def new_execution_id(now: datetime | None = None) -> str:
    """An execution id of SageMaker's form, EXECUTION_ID_LENGTH lowercase letters and digits, so that every name a
    definition builds from it (the endpoint config's) is as long here as on AWS: the UTC minute (yymmddHHMM: ids
    read as their start and sort by it) and random characters."""
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%y%m%d%H%M")
    alphabet = string.ascii_lowercase + string.digits
    return stamp + "".join(secrets.choice(alphabet) for _ in range(EXECUTION_ID_LENGTH - len(stamp)))


def _new_execution_folder(root: Path, execution_id: str | None) -> Path:
    """The new execution's folder, made here: ``execution_id``'s, or a new id's (another one when an execution of
    the same minute drew the same)."""
    for _ in range(100):
        folder = root / (execution_id or new_execution_id())
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            if execution_id is not None:
                raise
    raise ExecutionError(f"no free execution id in {root} after 100 draws")


def execution_variables(data: dict[str, Any]) -> dict[str, Any]:
    """The ``Execution.*`` variables of an execution record's data."""
    name = data.get("PipelineName", "diagnosa")
    execution_id = data["PipelineExecutionId"]
    return {"PipelineExecutionId": execution_id, "PipelineName": name,
            "PipelineExecutionArn": _execution_arn(name, execution_id),
            "StartDateTime": data.get("CreationTime", utc_now()), "CurrentDateTime": utc_now()}


def execution_resolver(record: ExecutionRecord) -> Resolver:
    """Resolves a step's arguments as the execution does: its parameters, variables and steps' properties so far."""
    return Resolver(record.data["Parameters"], execution_variables(record.data),
                    lambda step: record.steps.get(step, {}).get("Properties", {}),
                    lambda step, name: _property_file(record, step, name))


# ------------------------------------------------------------------------------------------------ executor

@dataclass(frozen=True)
class StepEvent:
    """A step started (``Executing``; ``log`` is the file its job writes, if it runs one) or ended
    (``Succeeded``, ``Failed`` with the reason as ``note``, ``Reused`` from the step cache): what a live
    display follows."""

    step: str
    status: str
    log: Path | None = None
    note: str = ""


DEFAULT_MAX_PARALLEL = max(1, min(4, os.cpu_count() or 1))  # steps run at once
INTERRUPT_POLL_SECONDS = 0.5  # how soon a Ctrl-C is acknowledged while steps run
# After an interrupt, jobs still running are stopped as SageMaker's StopPipelineExecution stops them (SIGTERM, then
# SIGKILL): a terminal's Ctrl-C reaches them too and they are usually gone by then; `kill -INT` reaches the
# executor alone, and its jobs ran on to their end. A second interrupt sends the SIGKILL at once (as docker compose
# and kubectl take a second Ctrl-C): a job that handles SIGINT and SIGTERM slowly held the terminal for 35 s.
STOP_GRACE_SECONDS = 5.0
KILL_GRACE_SECONDS = 30.0


@dataclass
class LocalExecutor:
    """Runs definitions against one data lake, model registry and set of local endpoints."""

    lake: DataLake
    bucket: str  # the bucket the definition names for the data lake
    root: Path  # executions folder
    registry: LocalModelRegistry
    endpoints: Any = None  # pipelines.local_endpoints.LocalEndpoints, or None to report deploys without doing them
    python: str = sys.executable
    max_parallel: int = DEFAULT_MAX_PARALLEL
    progress: Callable[[str], None] = print
    use_cache: bool = True  # honour each step's CacheConfig, as the service does
    heartbeat_seconds: float = 30.0  # a running job reports itself (and its log's last line) this often
    on_step: Callable[[StepEvent], None] | None = None  # told when each step starts and ends

    @property
    def mapping(self) -> LakeMapping:
        return LakeMapping(self.bucket, self.lake)

    # -------------------------------------------------------------------------------- entry points
    def start(self, definition: dict[str, Any], overrides: dict[str, Any] | None = None,
              execution_id: str | None = None, pipeline_name: str = "diagnosa") -> ExecutionRecord:
        """Check everything that can be checked, then run the definition to the end."""
        graph, parameters = self.preflight(definition, overrides or {})
        name = pipeline_name
        with _deferred_interrupts() as interrupt:  # from the first record on, Ctrl-C ends in a Stopped record
            folder = _new_execution_folder(self.root, execution_id)
            execution_id = folder.name
            text = json.dumps(definition, indent=2, ensure_ascii=False, sort_keys=True)
            try:  # whole or not at all (a full disk cut it), and no folder of an execution that never started
                write_text_atomic(folder / "definition.json", text + "\n")
            except OSError:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            record = ExecutionRecord(folder / "execution.json", {
                "PipelineName": name,
                "PipelineExecutionId": execution_id,
                "PipelineExecutionArn": _execution_arn(name, execution_id),
                "PipelineExecutionStatus": "Executing",
                "CreationTime": utc_now(),
                "DefinitionSha256": hashlib.sha256(text.encode()).hexdigest(),
                "Parameters": parameters,
                "Steps": {},
                "Attempts": 1,
                "ExecutorPid": os.getpid(),  # lets resume tell a running execution from a killed one
                "ExecutorHost": socket.gethostname(),
            })
            try:  # its first record: without one the execution never started, and leaves no folder
                record.update(lambda d: None)
            except RecordNotWritten as err:
                shutil.rmtree(folder, ignore_errors=True)
                raise RecordNotWritten(f"{err}: the execution did not start; free space there and run again",
                                       err.path, err.reason) from err
            return self._run(record, definition, graph, interrupt)

    def resume(self, execution_id: str) -> ExecutionRecord:
        """Rerun a failed execution from its failed step; steps that succeeded keep their results."""
        with _claim(load_execution(self.root, execution_id)):
            return self._resume(execution_id)

    def _resume(self, execution_id: str) -> ExecutionRecord:
        record = load_execution(self.root, execution_id)  # read again once claimed: another resume may have run
        if record.status == "Succeeded":
            raise ExecutionError(f"execution {execution_id} already succeeded: nothing to resume")
        unwritten = _unwritten_reason(record.folder) is not None  # its executor ended: its pid may be alive (a test)
        if record.status == "Executing" and process_alive(record.data.get("ExecutorPid")) and not unwritten:
            raise ExecutionError(f"execution {execution_id} is still executing (process "
                                 f"{record.data.get('ExecutorPid')}); resume it once that process has ended")
        # Jobs that outlived their executor (its guard killed too, or not yet done stopping them) still write in
        # the step folders: a new attempt's job would find its outputs half-written by the old one.
        orphans = job_processes(record.folder)
        if orphans:
            pids = " ".join(map(str, orphans))
            raise ExecutionError(f"execution {execution_id}: job process(es) {pids} of an earlier attempt still run "
                                 f"(executor process {record.data.get('ExecutorPid')} is gone) and write in "
                                 f"{record.folder}; resume once they have ended (or stop them: kill {pids})")
        definition = execution_definition(record)
        graph, _ = self.preflight(definition, record.data["Parameters"])

        def reopen(d: dict[str, Any]) -> None:  # a failed, stopped or killed (status never closed) execution
            d["PipelineExecutionStatus"] = "Executing"
            d["ExecutorPid"] = os.getpid()
            d["ExecutorHost"] = socket.gethostname()
            d.pop("FailureReason", None)
            d["Attempts"] = d.get("Attempts", 1) + 1
            for name in [n for n, s in d["Steps"].items() if s["StepStatus"] != "Succeeded"]:
                d["Steps"].pop(name)
        with _deferred_interrupts() as interrupt:
            try:
                record.update(reopen)
            except RecordNotWritten as err:
                raise RecordNotWritten(f"{err}: the execution was not resumed; free space there and resume again",
                                       err.path, err.reason) from err
            (record.folder / UNWRITTEN_MARKER).unlink(missing_ok=True)  # this attempt's record is written again
            return self._run(record, definition, graph, interrupt)

    # -------------------------------------------------------------------------------- checks
    def preflight(self, definition: dict[str, Any], overrides: dict[str, Any]) -> tuple[dict[str, StepNode],
                                                                                         dict[str, Any]]:
        """Everything wrong that is knowable before a step runs, as one ExecutionError."""
        if not isinstance(definition, dict) or "Steps" not in definition:
            raise ExecutionError("not a pipeline definition: no Steps")
        try:
            graph = build_graph(definition)
        except DefinitionError as err:
            raise ExecutionError(str(err)) from None
        parameters = resolve_parameters(definition, overrides)
        # Values that make a job request invalid (an instance count of 0, say): the service's model of the
        # request, checked for every job step with this run's parameters, names the step and the parameter.
        problems = parameter_problems(definition, parameters)
        # Here each instance is a process on this machine, its host an address of one loopback block (local_jobs).
        problems += [f"parameter {name} is {value}: the local executor runs each instance as a process on this machine, "
                     f"at most {MAX_LOCAL_INSTANCES}" for name, value in parameters.items()
                     if name.endswith("InstanceCount") and isinstance(value, int) and value > MAX_LOCAL_INSTANCES]
        if self.python == sys.executable:  # the environment the jobs run in is this one
            unmet = unmet_pins(step_lock(STAGED_ROOT).read_text(encoding="utf-8"))
            if unmet:
                problems.append(
                    f"this Python environment ({sys.prefix}) does not hold the step pins every job installs "
                    f"({STEP_LOCK}), and a local job installs nothing, as a container image holds its packages: "
                    f"{some_of(unmet)}. Install them (pip install {' '.join(p.split(' ')[0] for p in unmet[:10])}"
                    f"{' ...' if len(unmet) > 10 else ''}), or install Diagnosa against its lock as `make install` "
                    "does (pip install --require-hashes -r requirements/dev-lock.txt)")
        if problems:
            raise ExecutionError("; ".join(problems))
        resolve = Resolver(parameters, execution_variables({"PipelineExecutionId": "preflight"}),
                           lambda step: {}, lambda step, name: {})
        problems = []
        for node in graph.values():
            for uri in _static_inputs(node):
                try:
                    value = resolve(uri)
                    key = self.mapping.key(value)
                except (ExpressionError, JobError) as err:
                    problems.append(f"step {node.name}: {err}")
                    continue
                if not self.lake.exists(key) and not self.lake.list(f"{key}/"):
                    problems.append(f"step {node.name}: input {value} does not exist in the data lake {self.lake.uri}")
        if problems:
            raise ExecutionError("; ".join(problems))
        return graph, parameters

    # -------------------------------------------------------------------------------- scheduling
    def _run(self, record: ExecutionRecord, definition: dict[str, Any], graph: dict[str, StepNode],
             interrupt: _Interrupts) -> ExecutionRecord:
        """Schedule the steps to the end. Ctrl-C (``interrupt``, set by the SIGINT handler wherever the signal lands)
        starts nothing new, stops the running steps (their jobs, STOP_GRACE_SECONDS later if still there: SIGTERM,
        then SIGKILL; a second Ctrl-C, ``interrupt.forced``: SIGKILL at once), records them and the execution as
        Stopped."""
        started = time.perf_counter()
        swept = self.lake.sweep_temp()  # temp files of lake writes killed mid-way (a killed run, ingest)
        if swept.removed:
            self.progress(f"removed {len(swept.removed)} temp file(s) of lake writes killed mid-way "
                          f"({swept.bytes:,} bytes; docs/operations.md)")
        resolver = execution_resolver(record)
        done = {n for n, s in record.steps.items() if s["StepStatus"] == "Succeeded"}
        for name in sorted(done):
            self.progress(f"  {name:<28} reused from the previous attempt")
        skipped: set[str] = set()
        failure: str | None = None
        running: dict[Future, str] = {}
        interrupted = forced = False
        unwritten: RecordNotWritten | None = None  # the record could not be written: the execution stops
        halted = threading.Event()  # set with ``unwritten``: a step failing from then on was stopped
        stop = _JobStopper(record.folder)
        try:
            guard = _start_guard(record)
        except OSError as err:  # the run goes on; a resume still refuses while jobs of a killed executor run
            guard = None
            self.progress(f"warning: no guard for this run ({err}): if this process is killed, its jobs run on")
        try:
            with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="step") as pool:
                while True:
                    if interrupt.is_set() and not interrupted:  # the jobs got it too (a terminal's Ctrl-C)
                        interrupted = True
                        stop.arm()
                        self.progress("interrupted: stopping the running steps (resume later with --resume); "
                                      "Ctrl-C again to stop them at once")
                    if interrupted and interrupt.forced.is_set() and not forced:
                        forced = True
                        said = stop.force()
                        if running:
                            self.progress(said or "interrupted again: no job process left to stop; the running "
                                                  "steps end on their own")
                    if (interrupted or unwritten) and running:
                        said = stop.step()
                        if said:
                            self.progress(said)
                    if failure is None and not interrupted:  # after a failure, running steps finish, nothing new starts
                        free = self.max_parallel - len(running)
                        for name in self._ready(graph, record, done, skipped, running)[:max(0, free)]:
                            if interrupt.is_set():  # a Ctrl-C as the steps were chosen: none of them starts
                                break
                            running[pool.submit(self._step, record, graph[name], resolver, started, interrupt,
                                                halted)] = name
                    if not running:
                        if interrupt.is_set() and not interrupted:  # said, and recorded as Stopped, at the next turn
                            continue
                        break
                    # With a timeout: a Ctrl-C only sets ``interrupt``, and is said at once, not when a step ends.
                    finished, _ = wait(running, timeout=INTERRUPT_POLL_SECONDS, return_when=FIRST_COMPLETED)
                    for future in finished:
                        name = running.pop(future)
                        try:
                            reason = future.result()
                        except RecordNotWritten as err:  # nothing more can be recorded: stop what runs, now
                            reason = str(err)
                            if unwritten is None:
                                unwritten = err
                                halted.set()
                                stop.arm(grace=0.0)
                                self.progress(f"{err}: stopping the execution"
                                              + (" and its running steps" if running else ""))
                        if reason is None:
                            done.add(name)
                        elif failure is None:
                            failure = reason
            # An interrupt that came once nothing was left to start (the last step ended despite it) stopped nothing:
            # the run was recorded as Stopped with every step succeeded, and --resume only flipped it.
            if unwritten is not None:
                status, failure = "Failed", str(unwritten)
            elif interrupted and (failure or self._ready(graph, record, done, skipped, {})):
                status, failure = "Stopped", "interrupted" + (f" ({failure})" if failure else "")
            else:
                status = "Failed" if failure else "Succeeded"

            def close(d: dict[str, Any]) -> None:
                d["PipelineExecutionStatus"] = status
                if failure:
                    d["FailureReason"] = failure
                d["EndTime"] = utc_now()
                d["Skipped"] = sorted(skipped)
                for step in d["Steps"].values():  # one whose end could not be recorded
                    if step.get("StepStatus") == "Executing":
                        step.update(StepStatus="Stopped", EndTime=d["EndTime"],
                                    FailureReason=f"stopped: {failure}")
            try:
                record.update(close)
            except RecordNotWritten as err:
                if unwritten is None:
                    unwritten = err
                # The file still says Executing, as it was last written: a listing took that for a killed executor.
                _mark_unwritten(record.folder, err.reason)
                self.progress(f"execution {record.id} failed in {time.perf_counter() - started:.1f} s: {err}")
                raise RecordNotWritten(f"{err}: the execution is stopped, and the record shows it as it was last "
                                       f"written; free space there, then `diagnosa run --local --resume {record.id}` "
                                       "reruns what did not succeed", err.path, err.reason) from err
        finally:
            _release_guard(guard)  # every step has ended here: none of its jobs is left to stop
        self.progress(f"execution {record.id} {status.lower()} in {time.perf_counter() - started:.1f} s"
                      + (f": {failure}" if failure else ""))
        return record

    def _ready(self, graph: dict[str, StepNode], record: ExecutionRecord, done: set[str], skipped: set[str],
               running: dict[Future, str]) -> list[str]:
        """Steps whose needs are met, after marking those that can no longer run (branch not taken)."""
        busy = set(running.values())
        changed = True
        while changed:
            changed = False
            for name, node in graph.items():
                if name in done or name in skipped or name in busy:
                    continue
                branch = node.branch_of
                not_taken = branch and branch[0] in done and \
                    record.steps[branch[0]]["Properties"].get("Outcome") is not branch[1]
                if not_taken or node.needs & skipped:
                    skipped.add(name)
                    changed = True
        return sorted(name for name, node in graph.items()
                      if name not in done | skipped | busy and name not in record.steps and node.needs <= done)

    def _step(self, record: ExecutionRecord, node: StepNode, resolve: Resolver, started: float,
              interrupt: threading.Event, halted: threading.Event | None = None) -> str | None:
        """Run one step; the failure reason, or None when it succeeded. A step that fails once ``interrupt`` is set
        was stopped: a terminal's Ctrl-C reaches the jobs at the instant it sets it, before the scheduler's next turn;
        so was one once ``halted`` is (the record could not be written). RecordNotWritten when its record cannot be."""
        run_dir = record.folder / "steps" / node.name
        if run_dir.exists():  # an earlier attempt: keep its log next to the new one
            attempt = 1
            while run_dir.with_name(f"{node.name}.attempt{attempt}").exists():
                attempt += 1
            run_dir.rename(run_dir.with_name(f"{node.name}.attempt{attempt}"))
        run_dir.mkdir(parents=True)
        record.update(lambda d: d["Steps"].__setitem__(node.name, {
            "StepName": node.name, "StepType": node.type, "StepStatus": "Executing", "StartTime": utc_now(),
            "RunFolder": str(run_dir)}))
        self.progress(f"[{time.perf_counter() - started:6.1f}s] {node.name:<28} started")
        self._notify(StepEvent(node.name, "Executing", run_dir / JOB_LOG))
        t0 = time.perf_counter()
        cache_hit = None
        try:
            cache = self._cache_entry(record.data["PipelineName"], node, resolve)
            cache_hit = cache.lookup() if cache else None
            if cache_hit:
                properties = cache_hit["Properties"]
            else:
                properties = self._execute(record, node, resolve, run_dir)
                if cache:
                    cache.store(properties, record.data["PipelineExecutionArn"])
            status, reason = "Succeeded", None
        except StepFailure as err:
            properties, status, reason = {}, "Failed", str(err)
        except RecordNotWritten:  # not the step's failure: the execution's, which stops
            raise
        except (JobError, RegistryError, ExpressionError, ValueError, OSError) as err:
            properties, status, reason = {}, "Failed", f"step {node.name}: {err}"
        except Exception as err:  # noqa: BLE001 (an executor bug must still close the step and keep the trace)
            (run_dir / "executor-error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            properties, status, reason = {}, "Failed", f"step {node.name}: internal error {err!r} (see {run_dir})"
        if status == "Failed" and interrupt.is_set():  # ended by the interrupt, as SageMaker records a stop
            status, reason = "Stopped", f"stopped: the execution was interrupted ({reason})"
        elif status == "Failed" and halted is not None and halted.is_set():
            status, reason = "Stopped", f"stopped: the execution's record could not be written ({reason})"
        seconds = time.perf_counter() - t0

        def close(d: dict[str, Any]) -> None:
            step = d["Steps"][node.name]
            step.update({"StepStatus": status, "EndTime": utc_now(), "DurationSeconds": round(seconds, 3),
                         "Properties": properties})
            if cache_hit:
                step["CacheHitResult"] = {"SourcePipelineExecutionArn": cache_hit["SourcePipelineExecutionArn"]}
            if reason:
                step["FailureReason"] = reason
        record.update(close)
        if cache_hit:
            status_text = f"reused from {cache_hit['SourcePipelineExecutionArn'].rsplit('/', 1)[-1]} (cache)"
        else:
            status_text = f"{status.lower()} in {seconds:.1f} s"
        self.progress(f"[{time.perf_counter() - started:6.1f}s] {node.name:<28} {status_text}"
                      + (f": {reason}" if reason else _summary(node, properties)))
        self._notify(StepEvent(node.name, "Reused", note=status_text) if cache_hit
                     else StepEvent(node.name, status, note=reason or ""))
        return reason

    def _notify(self, event: StepEvent) -> None:
        if self.on_step is not None:
            self.on_step(event)

    def _cache_entry(self, pipeline: str, node: StepNode, resolve: Resolver) -> StepCache | None:
        """The step's cache entry: AWS's key attributes of its request, scoped to one pipeline as on SageMaker ("you
        can't reuse a step from another pipeline even if there is a step signature match")."""
        config = node.definition.get("CacheConfig") or {}
        if not self.use_cache or not config.get("Enabled") or node.type not in CACHE_KEYS:
            return None
        arguments = resolve(node.arguments)
        attributes = {k: arguments.get(k) for k in CACHE_KEYS[node.type]}
        digest = hashlib.sha256(json.dumps([pipeline, node.type, node.name, attributes,
                                            node.definition.get("PropertyFiles")],
                                           sort_keys=True, default=str).encode()).hexdigest()
        return StepCache(self.root.parent / "step-cache" / f"{digest}.json", _duration(config.get("ExpireAfter")),
                         self)

    # -------------------------------------------------------------------------------- step types
    def _thread_budget(self) -> dict[str, str]:
        """On SageMaker each job has its instance; here concurrent jobs share the cores, so each gets its part."""
        threads = str(max(1, (os.cpu_count() or 1) // self.max_parallel))
        return {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def _heartbeat(self, node: StepNode) -> Heartbeat:
        """A long job says it is alive, and what its log says last, every ``heartbeat_seconds``."""
        return Heartbeat(lambda text: self.progress(f"         {node.name:<28} {text}"), self.heartbeat_seconds)

    def _execute(self, record: ExecutionRecord, node: StepNode, resolve: Resolver, run_dir: Path) -> dict[str, Any]:
        job_name = _job_name(node.name, record.id)
        if node.type in JOB_OPERATIONS:
            operation, arguments = job_request(node, resolve, record.id)
            _record_request(run_dir, operation, arguments)
            budget = self._thread_budget()  # kept in the record: `diagnosa job prepare` reruns the job with it
            record.update(lambda d: d["Steps"][node.name].__setitem__("JobEnvironment", budget))
            run = run_processing if node.type == "Processing" else run_training
            result = run(arguments, run_dir, self.mapping, python=self.python,
                         env={**budget, EXECUTION_MARKER: str(record.folder)},
                         job_arn=job_arn(operation, job_name), heartbeat=self._heartbeat(node))
            if node.type == "Training":
                return {**result, "TrainingJobArn": job_arn(operation, job_name)}
            files = {}
            for spec in node.definition.get("PropertyFiles", []):
                output = result["ProcessingOutputConfig"]["Outputs"].get(spec["OutputName"])
                if output is None:
                    raise StepFailure(f"step {node.name}: property file {spec['PropertyFileName']} names output "
                                      f"{spec['OutputName']!r}, which the job does not have")
                key = f"{self.mapping.key(output['S3Output']['S3Uri'])}/{spec['FilePath']}"
                try:
                    files[spec["PropertyFileName"]] = json.loads(self.lake.get_bytes(key))
                except (OSError, ValueError) as err:
                    raise StepFailure(f"step {node.name}: property file {spec['PropertyFileName']} "
                                      f"({key}) is missing or not JSON: {err}") from None
            return {**result, "ProcessingJobArn": job_arn(operation, job_name), "PropertyFiles": files}
        if node.type == "Condition":
            # Every condition is evaluated: one that cannot be (an undefined value) fails the step whatever the
            # outcome of the others, not only when those before it held.
            outcome = all([evaluate_condition(c, resolve) for c in node.arguments.get("Conditions", [])])
            return {"Outcome": outcome}
        if node.type == "Fail":
            message = resolve(node.arguments.get("ErrorMessage", ""))
            raise StepFailure(str(message) or f"step {node.name} (Fail) was reached")
        if node.type == "RegisterModel":
            return self.registry.create_model_package(**resolve(node.arguments))
        if node.type in ("Model", "CreateModel", "EndpointConfig", "Endpoint"):
            if self.endpoints is None:
                (run_dir / "deploy.json").write_text(json.dumps(resolve(node.arguments), indent=2), encoding="utf-8")
                raise StepFailure(f"step {node.name}: no local endpoints configured; the request it would send is "
                                  f"in {run_dir / 'deploy.json'}")
            arguments = resolve(node.arguments)
            if node.type in ("Model", "CreateModel"):
                return self.endpoints.create_model(job_name, arguments)
            if node.type == "EndpointConfig":
                return self.endpoints.create_endpoint_config(arguments)
            # The version this execution registered is the one the endpoint serves: a cached re-run registers a
            # second version of the same model file, and the tools could only match on that file (both "serving").
            registered = [step.get("Properties", {}).get("ModelPackageArn") for step in record.steps.values()
                          if isinstance(step, dict) and isinstance(step.get("Properties"), dict)]
            from pipelines.local_endpoints import Superseded

            try:
                return self.endpoints.deploy(arguments["EndpointName"], arguments["EndpointConfigName"],
                                             log=run_dir / "deploy.log",
                                             package_arn=next(filter(None, registered), None))
            except Superseded as err:  # a later approval's deploy was asked while this one waited: it serves
                (run_dir / "deploy.log").write_text(f"{err}\n", encoding="utf-8")
                return {"EndpointName": arguments["EndpointName"], "EndpointConfigName": arguments["EndpointConfigName"],
                        "Superseded": str(err)}
        raise StepFailure(f"step {node.name}: type {node.type} is not run locally")


# What the service compares to find an earlier run of a step (docs: "Default cache key attributes by
# pipeline step type"); output locations are not part of the key, so a hit reuses the earlier outputs.
CACHE_KEYS = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": ("AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig", "DebugRuleConfigurations",
                 "Environment", "HyperParameters", "InputDataConfig"),
}
_DURATION = re.compile(r"^P(?:([0-9]+)Y)?(?:([0-9]+)M)?(?:([0-9]+)W)?(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?)?$")


def _duration(text: str | None) -> float | None:
    """ISO 8601 duration (the CacheConfig ExpireAfter) in seconds; None means no expiry."""
    if not text:
        return None
    match = _DURATION.fullmatch(text.upper() if text.upper().startswith("P") else "P" + text.upper())
    if not match or not any(match.groups()):
        raise ExecutionError(f"CacheConfig ExpireAfter {text!r} is not an ISO 8601 duration such as P30D or PT1H")
    years, months, weeks, days, hours, minutes = (int(g or 0) for g in match.groups())
    return ((((years * 365 + months * 30 + weeks * 7 + days) * 24) + hours) * 60 + minutes) * 60.0


@dataclass
class StepCache:
    """One cache entry: the properties of an earlier successful run of a step with the same key attributes."""

    path: Path
    expire_after: float | None
    executor: LocalExecutor

    def lookup(self) -> dict[str, Any] | None:
        try:
            entry = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if self.expire_after is not None and time.time() - entry["StoredAt"] > self.expire_after:
            return None
        for uri in entry.get("Outputs", []):  # outputs deleted since: run again
            key = self.executor.mapping.key(uri)
            if not self.executor.lake.exists(key) and not self.executor.lake.list(f"{key}/"):
                return None
        return entry

    def store(self, properties: dict[str, Any], execution_arn: str) -> None:
        outputs = [o["S3Output"]["S3Uri"] for o in properties.get("ProcessingOutputConfig", {}).get("Outputs", {}).values()]
        if properties.get("ModelArtifacts"):
            outputs.append(properties["ModelArtifacts"]["S3ModelArtifacts"])
        write_json_atomic(self.path, {"Properties": properties, "SourcePipelineExecutionArn": execution_arn,
                                      "StoredAt": time.time(), "Outputs": outputs}, ensure_ascii=True, default=str)


REQUEST_FILE = "request.json"


def _record_request(run_dir: Path, operation: str, arguments: dict[str, Any]) -> None:
    """The resolved request a job step sent, kept in its run folder (``request.json``) for people and tests."""
    (run_dir / REQUEST_FILE).write_text(json.dumps({"Operation": operation, "Request": arguments}, indent=2,
                                                   ensure_ascii=False, default=str), encoding="utf-8")


def recorded_request(run_folder: str | Path) -> tuple[str, dict[str, Any]]:
    """(operation, resolved request) of a job step, from its run folder."""
    data = json.loads((Path(run_folder) / REQUEST_FILE).read_text(encoding="utf-8"))
    return data["Operation"], data["Request"]


JOB_OPERATIONS = {"Processing": ("CreateProcessingJob", "ProcessingJobName"),
                  "Training": ("CreateTrainingJob", "TrainingJobName")}
ARN_KINDS = {"CreateProcessingJob": "processing-job", "CreateTrainingJob": "training-job"}


def job_request(node: StepNode, resolve: Resolver, execution_id: str) -> tuple[str, dict[str, Any]]:
    """(operation, resolved request) a job step sends in an execution: its arguments and the job's name."""
    operation, name_field = JOB_OPERATIONS[node.type]
    return operation, {**resolve(node.arguments), name_field: _job_name(node.name, execution_id)}


def job_arn(operation: str, job_name: str) -> str:
    return f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:{ARN_KINDS[operation]}/{job_name}"


def _execution_arn(pipeline: str, execution_id: str) -> str:
    return f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:pipeline/{pipeline}/execution/{execution_id}"


def _job_name(step: str, execution_id: str) -> str:
    """SageMaker job names: [a-zA-Z0-9-], at most 63 characters."""
    clean = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{step}-{execution_id}").strip("-")
    return clean[:63].rstrip("-")


def _static_inputs(node: StepNode) -> list[Any]:
    """Input locations of a step that depend only on parameters (checkable before anything runs)."""
    candidates = []
    if node.type == "Processing":
        candidates = [i.get("S3Input", {}).get("S3Uri") for i in node.arguments.get("ProcessingInputs", [])]
    elif node.type == "Training":
        candidates = [c.get("DataSource", {}).get("S3DataSource", {}).get("S3Uri")
                      for c in node.arguments.get("InputDataConfig", [])]
    return [c for c in candidates if c is not None and not step_references(c)]


def _property_file(record: ExecutionRecord, step: str, name: str) -> Any:
    files = record.steps.get(step, {}).get("Properties", {}).get("PropertyFiles", {})
    if name not in files:
        raise ExpressionError(f"step {step} has no property file {name!r} (has it run?)")
    return files[name]


def _summary(node: StepNode, properties: dict[str, Any]) -> str:
    if node.type == "Condition":
        return f" → {'if' if properties.get('Outcome') else 'else'} branch"
    if node.type == "RegisterModel":
        return f" → {properties.get('ModelPackageArn')}"
    if node.type == "Training":
        metrics = ", ".join(f"{m['MetricName']}={m['Value']:.3f}" for m in properties.get("FinalMetricDataList", []))
        return f" ({metrics})" if metrics else ""
    if node.type == "Endpoint":
        return f" → {properties.get('Url', '')}" if not properties.get("Superseded") else f": {properties['Superseded']}"
    return ""


# ------------------------------------------------------------------------------------------------ interrupts, kills

@contextmanager
def _claim(record: ExecutionRecord) -> Iterator[None]:
    """This process's exclusive hold on an execution while it resumes it. Two resumes at once both passed the checks
    (the record said Failed to each) and ran the same steps in the same folders, each job finding the other's
    half-written outputs. An advisory lock of the folder's, released by the kernel whatever ends the process; not
    inherited by the jobs (Python opens files non-inheritable)."""
    with ExitStack() as held:  # a LockHeld from the resume itself is not this refusal
        try:
            held.enter_context(file_lock(record.folder / ".resume.lock", wait=0))  # at once: a resume runs for hours
        except LockHeld:
            raise ExecutionError(f"execution {record.id} is being resumed by another process: wait for it "
                                 f"(diagnosa executions {record.id})") from None
        yield


class _Interrupts(threading.Event):
    """Set by a first SIGINT (Ctrl-C): stop the execution, its jobs gracefully; ``forced`` by a second: now."""

    def __init__(self) -> None:
        super().__init__()
        self.forced = threading.Event()

    def take(self, signum: int, frame: Any) -> None:
        """The SIGINT handler."""
        (self.forced if self.is_set() else self).set()


@contextmanager
def _deferred_interrupts() -> Iterator[_Interrupts]:
    """While an execution runs, SIGINT sets the event instead of raising KeyboardInterrupt. Raised, it landed wherever
    the main thread was (choosing the next steps, submitting one, writing the record), left a traceback and the
    execution "Executing" for ever; the scheduler reads the event instead. Only the main thread takes signals, and an
    ignored SIGINT stays ignored."""
    interrupt = _Interrupts()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield interrupt
        return
    previous = signal.signal(signal.SIGINT, interrupt.take)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


class _JobStopper:
    """Stops an interrupted execution's jobs that are still running: SIGTERM STOP_GRACE_SECONDS after the interrupt,
    SIGKILL KILL_GRACE_SECONDS after that (what SageMaker does to a stopped job's container), or at once when
    forced (a second interrupt)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.deadlines: list[tuple[float, signal.Signals]] = []

    def arm(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM ``grace`` seconds from now (the jobs may have had the interrupt themselves), SIGKILL after it."""
        now = time.monotonic()
        self.deadlines = [(now + grace, signal.SIGTERM), (now + grace + KILL_GRACE_SECONDS, signal.SIGKILL)]

    def force(self) -> str | None:
        """The SIGKILL now, and nothing after it; what to tell the user, as ``step``."""
        self.deadlines = [(float("-inf"), signal.SIGKILL)]
        return self.step()

    def step(self) -> str | None:
        """Send what is due; what to tell the user, if anything was sent."""
        if not self.deadlines or time.monotonic() < self.deadlines[0][0]:
            return None
        _, signum = self.deadlines.pop(0)
        sent = signal_jobs(self.folder, signum)
        return (f"stopping the running jobs: {signum.name} to process(es) {' '.join(map(str, sent))}"
                if sent else None)


def _start_guard(record: ExecutionRecord) -> tuple[subprocess.Popen, int]:
    """A run's guard (pipelines/guard.py): a small process that outlives a killed executor to stop its jobs and close
    its record. Run as a script (the standard library only: this module takes seconds to import), in a session of its
    own (a terminal's signals are the executor's); with the write end of its stdin."""
    read, write = os.pipe()  # close-on-exec: no job holds the executor's end open after the executor is gone
    try:
        guard = subprocess.Popen([sys.executable, "-I", "-S", guard_script.__file__, str(record.folder), str(os.getpid())],
                                 stdin=read, stdout=subprocess.DEVNULL, start_new_session=True)
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    return guard, write


def _release_guard(guard: tuple[subprocess.Popen, int] | None) -> None:
    """The run ended here, not by a kill: the guard ends without doing anything."""
    if guard is None:
        return
    process, write = guard
    try:
        os.write(write, b"done")
    except OSError:  # the guard is gone (killed with the executor's group, say): nothing to tell it
        pass
    finally:
        os.close(write)
    process.wait()


def executions_folder(workspace: Path) -> Path:
    """Where a workspace keeps its local executions."""
    return workspace / "executions"


def local_registry(workspace: Path) -> LocalModelRegistry:
    """A workspace's model registry (``<workspace>/registry``)."""
    return LocalModelRegistry(workspace / "registry")


def open_local(workspace: Path, lake: DataLake, bucket: str, *, endpoints: Any = None,
               progress: Callable[[str], None] = print, max_parallel: int | None = None,
               use_cache: bool = True, on_step: Callable[[StepEvent], None] | None = None) -> LocalExecutor:
    """The executor for a workspace: its executions folder and registry."""
    return LocalExecutor(lake=lake, bucket=bucket, root=executions_folder(workspace),
                         registry=local_registry(workspace), endpoints=endpoints, progress=progress,
                         max_parallel=max_parallel or DEFAULT_MAX_PARALLEL, use_cache=use_cache, on_step=on_step)


