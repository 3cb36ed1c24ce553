"""Run SageMaker processing and training job requests locally: each job in a container root of its own.

The request is the ``CreateProcessingJob``/``CreateTrainingJob`` arguments a pipeline step resolves
to (checked against botocore's request shape first). ``pipelines/containers.py`` renders it into a
container root — ``<run>/opt-ml`` standing for ``/opt/ml``, with the config files the service writes
and the inputs copied from the data lake — the container's program runs there as a subprocess, its
output is logged per job, and only on success are outputs copied back to the lake. Answers have the
shape of ``DescribeProcessingJob``/``DescribeTrainingJob``.

The "container image" is this Python environment, which already holds the step pins: ``python``,
``python3`` and ``pip`` resolve to it (small shims first on ``PATH``) and pip runs with
``PIP_NO_INDEX=1``, so the containers' own runners work unchanged and "install" ``requirements.txt``
only if every pin is already satisfied: a job whose pins differ from this environment fails instead
of changing it.

* N instances (``InstanceCount``): N processes, one container root each, run together; their outputs are
  gathered under the request's S3 prefixes as the service's uploads would be (``cluster_hosts`` says how
  the local hosts are named).
* Processing: ``ContainerEntrypoint`` + ``ContainerArguments`` run as given (the SDK's ``runproc.sh``
  untars the code and installs the pins), with ``/opt/ml`` paths mapped to the root.
* Training on a framework image (no ``ContainerEntrypoint``): the image's entrypoint, AWS's training
  toolkit (``sagemaker-training``, ``python -m sagemaker_training.cli.train``), runs with
  ``SAGEMAKER_BASE_DIR`` at the root. The toolkit itself unpacks ``sagemaker_submit_directory``,
  installs its ``requirements.txt``, builds the ``SM_*`` environment and runs ``sagemaker_program``
  with the hyperparameters as arguments. Deviations from the service, all outside the program's
  view: ``sagemaker_submit_directory`` in ``hyperparameters.json`` names a local copy of the S3
  object (the toolkit would download the s3:// URI with boto3; the container-parity tests check
  that path against an S3 endpoint); ``SM_STUDIO_LOCAL_MODE=true`` (the toolkit's own switch) skips
  waiting for the host name ``algo-1`` to resolve; and ``SAGEMAKER_TRAINING_MODULE`` is unset: the
  PyTorch image sets it to ``sagemaker_pytorch_container.training:main``, which calls the same
  ``entry_point.run`` with ``capture_error=True`` (stderr in the failure reason) after setting
  NCCL/``MASTER_ADDR`` variables for multi-node training.
* Network isolation (``NetworkConfig.EnableNetworkIsolation`` of a processing job, ``EnableNetworkIsolation``
  of a training job): the job's processes run in one network namespace of their own with loopback only
  (``pipelines/isolation.py``), so a job that needs the network fails here as it would on SageMaker. Where
  namespaces cannot be made (no util-linux, no root and no user namespaces) the job runs with the network
  and one warning says isolation was not applied, and why.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from diagnosa.data.validate import shown
from diagnosa.files import EXIT_MESSAGE
from diagnosa.lake import DataLake
from pipelines.containers import (
    CONTAINER_ROOT,
    ContainerError,
    Fetch,
    Host,
    Shard,
    TrainingContainer,
    hosts,
    localise,
    render_processing,
    render_training,
    training_environment,
)
from pipelines.guard import kill_marked, signal_marked
from pipelines.isolation import isolated_network, unavailable_reason
from pipelines.service_model import request_problems

ROOT_NAME = "opt-ml"  # <run>/opt-ml stands for /opt/ml (<run>/<host>/opt-ml for each host of a multi-instance job)
JOB_LOG = "job.log"  # <run>/job.log (<run>/<host>/job.log per host): the container's output, as CloudWatch has it
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
TOOLKIT = ("-m", "sagemaker_training.cli.train")  # the framework training images' entrypoint (`train`)
POLL_SECONDS = 0.5  # how often a multi-host job's processes are checked (one failure stops the others)
FAILURE_LIMIT = 1024  # the service shows the first 1024 characters of the failure file as FailureReason
# Lines a container's runner prints about its own housekeeping, never about the job: the SDK's runproc.sh
# runs `pip uninstall --yes typing` before installing the pins ("some py3 containers have typing, which
# may break pip install"), and pip answers with this warning whenever typing is not installed — always.
NOISE = (re.compile(r"^WARNING: Skipping \S+ as it is not installed\.$"),
         # The SDK's runproc.sh lists the code folder before and after unpacking it (ls -la).
         re.compile(r"^Files (in \S+ before|after) extraction:$"), re.compile(r"^total \d+$"),
         re.compile(r"^[-dlbcps][-rwxsStT]{9}[.+@]?\s+\d+\s+\S+\s+\S+\s+\d+\s+\w{3}\s+\d+\s+[\d:]+\s+\S.*$"))
# The training toolkit ends a failed job by logging the failure file's text again, then the exit code.
TOOLKIT_EPILOGUE = "Reporting training FAILURE"
TRACEBACK = "Traceback (most recent call last):"
# In the environment of each host's process (and so of everything it starts): that host's container root. Stopping a
# job stops every process carrying its mark, not only the one started here: the training toolkit does not forward
# signals, and the training script it ran (its child) went on, orphaned, after the toolkit was killed. On the service
# the container ends with its main process; here a job's processes share the executor's process group (a terminal's
# Ctrl-C must reach them), so the mark tells them apart. Read from /proc; where there is none, the host's process alone.
JOB_MARKER = "DIAGNOSA_JOB_ROOT"
STOP_SECONDS = 10.0  # how long a stop keeps killing what the job's processes start meanwhile
# A job past its StoppingCondition.MaxRuntimeInSeconds is stopped as SageMaker stops it: SIGTERM, then SIGKILL 120 s
# later (the window AWS documents for saving what can be saved). A processing job given none has the service's 1 day.
RUNTIME_STOP_GRACE_SECONDS = 120.0
DEFAULT_MAX_RUNTIME_SECONDS = 86_400


log = logging.getLogger(__name__)


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def unmet_pins(lock: str) -> list[str]:
    """The pins of a lock (``name==version`` lines, pip-compile's) that this Python environment does not hold at
    that version, as ``name==version (installed: other)``. A local job installs nothing (the environment stands
    for the container image), so each would stop the first job that installs the lock: installed from a wheel
    with pip's own resolution (fonttools 4.69.1 where the lock pins 4.68.0), Preprocess failed with pip's "No
    matching distribution found" after the run had started."""
    from importlib.metadata import PackageNotFoundError, version

    unmet = []
    for name, pinned in _PIN.findall(lock):
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            unmet.append(f"{name}=={pinned} (installed: {installed})")
    return unmet


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
            # A URI quoted as written when it reads as one; an empty one (a blank in the message), or one of
            # spaces, control characters or great length, quoted with its escapes and cut.
            plain = uri and len(uri) <= 200 and uri.isprintable() and not any(ch.isspace() for ch in uri)
            raise JobError(f"{uri if plain else shown(uri, 80)} is outside the data lake ({head}...)")
        return uri[len(head):].rstrip("/")


def check_request(operation: str, arguments: dict[str, Any]) -> None:
    problems = request_problems(operation, arguments)
    if problems:
        raise JobError(f"{operation} request is invalid: {problems}")


def lake_fetcher(mapping: LakeMapping, name: str) -> Fetch:
    """What the service's download does for a container root: an S3 object, or every object under a prefix
    (with a shard, this host's share of them: a host may get none when there are fewer objects than hosts)."""
    def fetch(uri: str, target: Path, shard: Shard | None = None) -> None:
        key = mapping.key(uri)
        keys = [key] if mapping.lake.exists(key) else mapping.lake.list(f"{key}/")
        if not keys:
            raise JobError(f"job {name}: input {uri} (for {target.name}) is empty or missing")
        for item in keys if shard is None else shard.take(keys):
            mapping.lake.get_file(item, target / (Path(item).name if item == key else item[len(key) + 1:]))
    return fetch


MAX_LOCAL_INSTANCES = 254  # the hosts of one job: the addresses of a loopback block 127.X.Y.1..254


def cluster_hosts(count: int, networked: bool = False) -> list[Host]:
    """The hosts of a local job of ``count`` instances. The service names them algo-1..N and its cluster DNS
    resolves them; here a job whose hosts talk to each other (``networked``: a multi-instance training job)
    gets host names that resolve the same way without DNS — loopback addresses of a block of its own
    (127.X.Y.1..N), so each host's ports (xgboost's tracker on 9099) are free whatever else runs."""
    if count > 1 and networked:
        block = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(254) + 1}"
        names = sorted(f"{block}.{i}" for i in range(1, count + 1))
    else:
        names = hosts(count)
    return [Host(tuple(names), name) for name in names]


def host_root(run_dir: Path, host: Host) -> Path:
    """Where a host's container root lives: ``<run>/opt-ml`` for a single host, ``<run>/<host>/opt-ml`` for many."""
    return run_dir / ROOT_NAME if len(host.names) == 1 else run_dir / host.current / ROOT_NAME


def host_log(run_dir: Path, host: Host) -> Path:
    return run_dir / JOB_LOG if len(host.names) == 1 else run_dir / host.current / JOB_LOG


def thread_share(env: dict[str, str] | None, count: int) -> dict[str, str]:
    """A job's thread budget split over its hosts (on the service each host has its own instance)."""
    shared = dict(env or {})
    for key in THREAD_VARIABLES:
        if key in shared:
            shared[key] = str(max(1, int(shared[key]) // count))
    return shared


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


@dataclass(frozen=True)
class Heartbeat:
    """While a job runs, ``say`` is called every ``every`` seconds with how long and its log's last line."""

    say: Callable[[str], None]
    every: float = 30.0


@dataclass(frozen=True)
class Launch:
    """One host's process of a job."""

    host: Host
    command: list[str]
    cwd: Path
    environment: dict[str, str]
    log_path: Path
    failure_file: Path | None = None  # where the container leaves its failure reason (the service shows it)


def run_processing(arguments: dict[str, Any], run_dir: Path, mapping: LakeMapping, *,
                   env: dict[str, str] | None = None, python: str = sys.executable,
                   job_arn: str | None = None, heartbeat: Heartbeat | None = None) -> dict[str, Any]:
    """A CreateProcessingJob request: inputs at their local paths on each of its instances (an input sharded by
    key split between them), the entrypoint run on every instance, their outputs back to the lake together."""
    check_request("CreateProcessingJob", arguments)
    name = arguments["ProcessingJobName"]
    run_dir.mkdir(parents=True, exist_ok=True)
    count = int(arguments["ProcessingResources"]["ClusterConfig"]["InstanceCount"])
    environment = container_environment(run_dir, python, {**arguments.get("Environment", {}),
                                                          **thread_share(env, count)})
    containers, launches = [], []
    for host in cluster_hosts(count):
        try:
            container = render_processing(arguments, host_root(run_dir, host), lake_fetcher(mapping, name),
                                          job_arn or f"arn:aws:sagemaker:local:000000000000:processing-job/{name}",
                                          host=host)
        except ContainerError as err:
            raise JobError(f"job {name}: {err}") from None
        containers.append(container)
        # A processing container's failure reason is its exit message, /opt/ml/output/message (diagnosa/files.py
        # says where AWS documents it): what DescribeProcessingJob shows, so the local answer shows it too.
        launches.append(Launch(host, container.command, container.root, environment, host_log(run_dir, host),
                               container.root.joinpath(*EXIT_MESSAGE)))
    isolated = bool(arguments.get("NetworkConfig", {}).get("EnableNetworkIsolation"))
    seconds = _run(name, launches, heartbeat=heartbeat, isolated=isolated, python=python, limit=max_runtime(arguments))
    _drop_inputs(folder for c in containers for folder in c.inputs.values())

    outputs = {}
    for spec in arguments.get("ProcessingOutputConfig", {}).get("Outputs", []):
        # Every instance uploads its folder to the one S3 prefix (the same key from two instances: one object).
        files = _gathered(name, spec["OutputName"], [c.outputs[spec["OutputName"]] for c in containers])
        prefix = mapping.key(spec["S3Output"]["S3Uri"])
        for relative, path in files.items():
            mapping.lake.put_file(path, f"{prefix}/{relative}")
        outputs[spec["OutputName"]] = spec
    return {"ProcessingJobName": name, "ProcessingJobStatus": "Completed", "ExitCode": 0,
            "ProcessingOutputConfig": {"Outputs": outputs}, "DurationSeconds": round(seconds, 3),
            "LogPath": str(launches[0].log_path)}


def _drop_inputs(paths: Iterable[Path]) -> None:
    """Remove a job's input copies once it succeeded: copies of lake objects (each Train step held its own copy of
    the training data), they were 64 MB of the default run's 104 MB execution folder, and never removed. A failed
    job keeps them, to be looked at."""
    import shutil

    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _gathered(name: str, what: str, folders: list[Path]) -> dict[str, Path]:
    """The files of one output (or the model) across hosts, by relative path. Two hosts writing one name with
    different content is refused: the service would keep whichever it uploaded last."""
    files: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(folder).as_posix()
            if relative in files and files[relative].read_bytes() != path.read_bytes():
                raise JobError(f"job {name}: {what}/{relative} was written by two instances with different content "
                               "(each instance must write its own names)")
            files.setdefault(relative, path)
    return files


def failure_reason(log_text: str, failure_text: str | None = None, lines: int = 3) -> str:
    """What a failed job's message shows: the container's failure file (what the service reports as
    FailureReason), then the last meaningful lines of its log — without the runner's housekeeping
    noise, a closing traceback reduced to its final line, and without the toolkit's closing repetition
    of the failure file."""
    log_lines = log_text.splitlines()
    ends = [i for i, line in enumerate(log_lines) if TOOLKIT_EPILOGUE in line]
    if ends:
        log_lines = log_lines[:ends[-1]]
    meaningful = [line.strip() for line in log_lines
                  if line.strip() and not any(p.match(line.strip()) for p in NOISE)]
    if TRACEBACK in meaningful:  # a Python traceback closing the log: its frames say where, its last line what
        start = len(meaningful) - 1 - meaningful[::-1].index(TRACEBACK)
        meaningful = meaningful[:start] + meaningful[-1:]
    parts = [_brief(failure_text)] if failure_text and failure_text.strip() else []
    tail = [line for line in meaningful[-lines:] if not any(line in part or part in line for part in parts)]
    return " | ".join(parts + tail)


def _brief(text: str) -> str:
    """A failure file on one line: a Python traceback shrinks to its heading and its final message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if TRACEBACK in lines:
        start = lines.index(TRACEBACK)
        lines = lines[:start] + lines[-1:]
    return " ".join(lines)[:FAILURE_LIMIT]


def last_line(log_path: Path, limit: int = 120) -> str:
    """The job log's last non-empty line (read from its tail), shortened: what a long job is doing now."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            tail = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _network(name: str, isolated: bool, python: str) -> Any:
    """The job's network: the machine's, or (isolated) a namespace of its own when this machine can make one."""
    if not isolated:
        return nullcontext(list)
    reason = unavailable_reason(python)
    if reason:
        log.warning("job %s asks for network isolation; not applied, it runs with this machine's network: %s",
                    name, reason)
        return nullcontext(list)
    return isolated_network(python)


def max_runtime(arguments: dict[str, Any]) -> float:
    """A job request's time limit in seconds (its StoppingCondition's, else the service's default)."""
    return float((arguments.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_SECONDS))


def _run(name: str, launches: list[Launch], heartbeat: Heartbeat | None = None, *, isolated: bool = False,
         python: str = sys.executable, limit: float = DEFAULT_MAX_RUNTIME_SECONDS) -> float:
    """Run one process per host and wait for all (``isolated``: all in one network namespace with loopback only).
    The first host that fails fails the job: the others are stopped (they may be waiting for it) and the
    message is that host's. A job still running ``limit`` seconds after its start is stopped (RuntimeLimit)."""
    with _network(name, isolated, python) as inside:
        return _wait(name, launches, [inside(launch.command) for launch in launches], heartbeat,
                     RuntimeLimit(limit, RUNTIME_STOP_GRACE_SECONDS))


@dataclass
class RuntimeLimit:
    """MaxRuntimeInSeconds as the service holds a job to it: SIGTERM to every process of the job at the limit, the
    SIGKILL ``grace`` seconds later (sooner if they are gone)."""

    seconds: float
    grace: float = RUNTIME_STOP_GRACE_SECONDS
    reached_at: float | None = None

    def due(self, elapsed: float, launches: list[Launch]) -> bool:
        """Send the SIGTERM once the limit is reached; True once the job is to be killed (the grace is over)."""
        if elapsed < self.seconds:
            return False
        if self.reached_at is None:
            self.reached_at = elapsed
            signal_marked({f"{JOB_MARKER}={launch.cwd}".encode() for launch in launches}, signal.SIGTERM)
        return elapsed >= self.reached_at + self.grace

    def reason(self) -> str:
        return (f"stopped at its time limit, StoppingCondition.MaxRuntimeInSeconds {self.seconds:,.0f} s (what "
                "SageMaker shows as MaxRuntimeExceeded; raise the limit if the job needs longer)")


def _wait(name: str, launches: list[Launch], commands: list[list[str]], heartbeat: Heartbeat | None,
          limit: RuntimeLimit) -> float:
    started = time.perf_counter()
    processes = []
    logs = []
    try:
        for launch, command in zip(launches, commands):
            launch.log_path.parent.mkdir(parents=True, exist_ok=True)
            logs.append(open(launch.log_path, "w", encoding="utf-8"))
            processes.append(subprocess.Popen(command, cwd=launch.cwd, stdout=logs[-1], stderr=subprocess.STDOUT,
                                              env={**launch.environment, JOB_MARKER: str(launch.cwd)}))
        next_beat = time.perf_counter() + heartbeat.every if heartbeat is not None else None
        ended: set[int] = set()
        while True:
            codes = [p.poll() for p in processes]
            for i in [i for i, code in enumerate(codes) if code == 0 and i not in ended]:
                ended.add(i)
                _end_container(name, launches[i], len(launches) > 1)
            failed = next((i for i, code in enumerate(codes) if code not in (None, 0)), None)
            if failed is not None or all(code == 0 for code in codes) or (
                    limit.due(time.perf_counter() - started, launches)):
                break
            if next_beat is not None and time.perf_counter() >= next_beat:
                assert heartbeat is not None
                heartbeat.say(f"running for {time.perf_counter() - started:.0f} s; "
                              f"log: {last_line(launches[0].log_path)}")
                next_beat += heartbeat.every
            try:
                processes[codes.index(None)].wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
    except BaseException:
        _stop(processes, launches)
        raise
    finally:
        for log in logs:
            log.close()
    seconds = time.perf_counter() - started
    if limit.reached_at is not None:  # whatever the job did after the SIGTERM, it was stopped: it did not complete
        _stop(processes, launches)
        raise JobError(f"job {name} {limit.reason()} after {seconds:.1f} s (log: {launches[0].log_path})")
    if failed is None:
        return seconds
    _stop(processes, launches)
    launch, code = launches[failed], codes[failed]
    failure = launch.failure_file.read_text(encoding="utf-8", errors="replace") \
        if launch.failure_file is not None and launch.failure_file.is_file() else None
    reason = failure_reason(launch.log_path.read_text(encoding="utf-8", errors="replace"), failure)
    where = f" host {launch.host.current}" if len(launches) > 1 else ""
    raise JobError(f"job {name}{where} exited with {code} after {seconds:.1f} s (log: {launch.log_path}): {reason}")


def _end_container(name: str, launch: Launch, several: bool) -> None:
    """A host whose process exited 0: what it left running in the background ends too, as every process of a
    container ends with the container's own (a daemon, a training script the toolkit started and did not wait
    for, a worker pool not joined would otherwise run on, unseen, after the job and the execution are over)."""
    left = kill_marked({f"{JOB_MARKER}={launch.cwd}".encode()}, STOP_SECONDS)
    if left:
        where = f" host {launch.host.current}" if several else ""
        log.warning("job %s%s ended with %d process(es) it started still running: stopped (pids %s), as its "
                    "container's end would", name, where, len(left), ", ".join(map(str, sorted(left))))


def _stop(processes: list[subprocess.Popen], launches: list[Launch]) -> None:
    """Kill the job's processes: each host's, and every process they started (those carrying JOB_MARKER), the
    failed host's orphans too; until none is left (one may start another meanwhile) or STOP_SECONDS have passed."""
    for process in processes:
        if process.poll() is None:
            process.kill()
    kill_marked({f"{JOB_MARKER}={launch.cwd}".encode() for launch in launches[:len(processes)]}, STOP_SECONDS)
    for process in processes:
        process.wait()


def run_training(arguments: dict[str, Any], run_dir: Path, mapping: LakeMapping, *,
                 env: dict[str, str] | None = None, python: str = sys.executable,
                 job_arn: str | None = None, heartbeat: Heartbeat | None = None) -> dict[str, Any]:
    """A CreateTrainingJob request: a container root with its channels, the image's entrypoint (AWS's training
    toolkit for framework images), model.tar.gz back to the lake."""
    check_request("CreateTrainingJob", arguments)
    name = arguments["TrainingJobName"]
    algorithm = arguments["AlgorithmSpecification"]
    run_dir.mkdir(parents=True, exist_ok=True)
    entrypoint = [*algorithm.get("ContainerEntrypoint", []), *algorithm.get("ContainerArguments", [])]
    submit = None
    if not entrypoint:  # a framework image: its entrypoint is the training toolkit, in script mode
        submit = _submitted_code(name, arguments.get("HyperParameters", {}), run_dir, mapping)
        entrypoint = [python, *TOOLKIT]
    count = int(arguments["ResourceConfig"]["InstanceCount"])
    containers, launches = [], []
    for host in cluster_hosts(count, networked=True):
        root = host_root(run_dir, host)
        try:
            container = render_training(arguments, root, lake_fetcher(mapping, name),
                                        submit_directory=None if submit is None else localise(submit, root), host=host)
        except ContainerError as err:
            raise JobError(f"job {name}: {err}") from None
        extra = training_environment(arguments, root, job_arn)
        extra["SM_STUDIO_LOCAL_MODE"] = "true"  # no cluster DNS here: the toolkit's switch to skip its wait for it
        environment = container_environment(run_dir, python, {**extra, **thread_share(env, count)})
        containers.append(container)
        launches.append(Launch(host, [localise(part, root) for part in entrypoint], root, environment,
                               host_log(run_dir, host), container.failure_file))
    seconds = _run(name, launches, heartbeat, isolated=bool(arguments.get("EnableNetworkIsolation")), python=python,
                   limit=max_runtime(arguments))
    _drop_inputs(folder for c in containers for folder in c.channels.values())

    tarball = _model_tarball(name, containers, run_dir)
    output_uri = arguments["OutputDataConfig"]["S3OutputPath"].rstrip("/")
    model_uri = f"{output_uri}/{name}/output/model.tar.gz"
    mapping.lake.put_file(tarball, mapping.key(model_uri))
    log_text = launches[0].log_path.read_text(encoding="utf-8", errors="replace")  # the first host's metrics
    metrics = []
    for definition in algorithm.get("MetricDefinitions", []):
        found = re.findall(definition["Regex"], log_text)
        if found:
            metrics.append({"MetricName": definition["Name"], "Value": float(found[-1])})
    return {"TrainingJobName": name, "TrainingJobStatus": "Completed", "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "FinalMetricDataList": metrics, "HyperParameters": arguments.get("HyperParameters", {}),
            "DurationSeconds": round(seconds, 3), "LogPath": str(launches[0].log_path)}


def _submitted_code(name: str, hyperparameters: dict[str, str], run_dir: Path, mapping: LakeMapping) -> str:
    """Where the toolkit finds the ``sagemaker_submit_directory`` bundle: a local copy of the S3 object, or a
    container path as given (an input channel brings the bundle: a network-isolated job's code), mapped per host."""
    program, submitted = hyperparameters.get("sagemaker_program"), hyperparameters.get("sagemaker_submit_directory")
    if not program or not submitted:
        raise JobError(f"job {name}: no ContainerEntrypoint and no sagemaker_program/sagemaker_submit_directory "
                       "hyperparameters: nothing to run")
    uri = submitted.strip('"')  # v2 SDKs JSON-quote the value; the toolkit decodes it
    if uri.startswith(f"{CONTAINER_ROOT}/"):
        return uri
    key = mapping.key(uri)
    if not mapping.lake.exists(key):
        raise JobError(f"job {name}: sagemaker_submit_directory {uri} does not exist in the data lake")
    local = run_dir / "submitted" / Path(key).name
    mapping.lake.get_file(key, local)
    return str(local)


def _model_tarball(name: str, containers: list[TrainingContainer], run_dir: Path) -> Path:
    """``/opt/ml/model`` packed the way the service packs it: its contents at the archive root, every host's
    folder in the one archive ("if multiple containers write to this directory they should ensure no
    file/directory names clash": a clash with different content is refused here)."""
    files = _gathered(name, "model", [c.model_dir for c in containers])
    tarball = run_dir / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for relative in sorted(files):
            archive.add(files[relative], arcname=relative)
    return tarball
