"""Local endpoints: what CreateModel, CreateEndpointConfig and CreateEndpoint/UpdateEndpoint do, on this machine.

A model and an endpoint config are records (the request, validated against botocore's shape); an
endpoint is a ``diagnosa serve`` process (inference/server.py, the SageMaker container and runtime
APIs) started in the background with the config's model and data-capture sampling, recorded in
``<workspace>/endpoints/<name>/endpoint.json``. Deploying to an endpoint that exists updates it:
the new model is started on the same port once the old process has stopped; if it does not answer
``/ping`` in time the previous model is started again (auto-rollback) and the deploy fails.
Approving a version in the local registry deploys it the same way, as the AWS deploy function does
on the "Model Package State Change" event.

One deploy, start or stop of an endpoint at a time (``_exclusive``: a lock of the endpoint's folder); while
one runs, the record says ``Updating`` with the config it starts, and the new server's pid as soon as it
exists, so a deploy killed midway leaves a record naming what runs. A version the workspace's registry
says is Rejected is not started again by ``start``, refused by a deploy before anything of the endpoint is
touched, and not recorded as served by a deploy (a reject while it deployed); a rollback to one says so.
The latest approval serves: a deploy of a registered version takes a number in the endpoint's line before it
waits for the endpoint, and once it holds it is not done when a later one was asked meanwhile (``_line``).
A record an older Diagnosa's run wrote names no version (``ModelPackageArn``): the one that run registered is filled
in and written back when the record is read (``_run_version``); when nothing says, ``start`` refuses if any version
of its model file is Rejected.
"""
from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from diagnosa.data.schema import RESOURCE_NAME, SchemaError
from diagnosa.data.validate import shown
from diagnosa.files import read_json_record, write_json_atomic
from diagnosa.logs import utc_now
from diagnosa.model import ModelLoadError, unpack_model
from diagnosa.net import ServerExited, free_port, port_taken, process_alive, wait_until_ok
from diagnosa.text import some_of
from pipelines.local_jobs import JobError, LakeMapping, check_request
from pipelines.locks import LockHeld, file_lock

DEFAULT_PORT = 8080
SERVER_MODULE = "inference.serve"  # the endpoint server process's module (python -m)
HEALTH_TIMEOUT = 120.0
PORT_RELEASE_WAIT = 5.0  # seconds a stopped server may take to release its port
STOP_TIMEOUT = 30.0
LOCK_WAIT = 3.0  # seconds a deploy waits for another command's hold on the endpoint (a listing's probe) to end
# The longest a deploy holds an endpoint on its own clocks: the old server stopped, the new one started, and a
# rollback's. `registry approve` waits that long for another approval's deploy, then deploys its own (the AWS deploy
# function keeps a later approval pending until the endpoint is InService: the newest approval wins).
DEPLOY_WAIT = STOP_TIMEOUT + 2 * (PORT_RELEASE_WAIT + HEALTH_TIMEOUT)
ARN = "arn:aws:sagemaker:local:000000000000"
NAME_MAX = 63  # SageMaker's model and endpoint config names
LINE_FILE = ".deploys.json"  # an endpoint's line of deploys of registered versions (LocalEndpoints._line)


DAMAGED = "Damaged"  # the status shown for an endpoint record that cannot be read
UPDATING = "Updating"  # a deploy, start or rollback is starting the record's config (its Pid: that server, once spawned)
STATUSES = ("InService", "OutOfService", UPDATING)  # what a record says (describe() tells a gone server's from it)
# The fields a record may hold, and what each holds when it does: a hand edit or another program's file with a
# wrong one (a Pid of "abc") is damaged, not a KeyError or TypeError in the command that reads it. Only REQUIRED must
# be there: records written by hand or by older versions name an endpoint and its status, and little else (a field a
# command needs and the record lacks is refused then, by EndpointRecord).
FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "EndpointName": ((str,), "text"), "EndpointStatus": ((str,), "text"), "EndpointConfigName": ((str,), "text"),
    "EndpointArn": ((str,), "text"), "Url": ((str,), "text"), "Port": ((int,), "a port number"),
    "Pid": ((int, type(None)), "a process id or null"), "ModelName": ((str,), "text"), "ModelDataUrl": ((str,), "text"),
    "ModelDir": ((str,), "text"), "ModelPackageArn": ((str,), "text"), "CaptureSampling": ((int,), "an integer"),
    "History": ((list,), "a list"), "CreationTime": ((str,), "text"), "LastModifiedTime": ((str,), "text"),
}
REQUIRED = ("EndpointName", "EndpointStatus")


class DeployError(JobError):
    """A deployment that did not reach InService; the message says why and what is serving now."""


class PortInUse(DeployError):
    """A deploy refused because another process listens on the endpoint's port: the one failure another port mends
    (the CLI then says so: --port 0). A rollback after it keeps this type, its message extended."""


class EndpointBusy(DeployError):
    """A deploy, start or stop refused because another process deploys the endpoint (its hold outlasted the wait):
    transient, the same command succeeds once that ends."""


class VersionRejected(DeployError):
    """A deploy of a version the workspace's registry says is Rejected: refused before anything of the endpoint is
    touched (what serves goes on serving), or, rejected while it deployed, stopped and rolled back. Final for that
    version: deploying it again needs it approved again (not a resume, nor the same command again). ``touched``: it
    was rejected while it deployed (the endpoint was changed, then rolled back), not refused before."""

    def __init__(self, message: str, *, touched: bool = False):
        super().__init__(message)
        self.touched = touched


class Superseded(DeployError):
    """A deploy of a registered version not done because a later one was asked of the endpoint meanwhile (waiting
    for it, or done already): the latest approval serves, as the AWS deploy function keeps only the newest pending
    approval. Not a failure: the version's status is what was asked."""


class RecordError(DeployError, SchemaError):
    """An endpoint record that is damaged or lacks the field a command needs, named with its file. A DeployError for
    deploy, start and stop; a SchemaError (a ValueError) for the CLI, which says it in one line with exit status 2
    wherever it surfaces (monitor reads the served model's ModelDataUrl from the record)."""


class EndpointRecord(dict[str, Any]):
    """An endpoint record as read from ``path``: a field it lacks is refused naming the file (RecordError), not a
    KeyError traceback in whichever command asked. ``problem``: why the file is damaged (the record is then
    describe()'s stand-in, with none of its fields)."""

    def __init__(self, data: dict[str, Any], path: Path, problem: str | None = None):
        super().__init__(data)
        self.path = path
        self.problem = problem

    def __missing__(self, key: str) -> Any:
        name = dict.get(self, "EndpointName")
        if self.problem:
            raise RecordError(f"endpoint {name}: {self.problem}")
        raise RecordError(f"endpoint {name}: its record {self.path} has no {key}: deploying a version again "
                          "(`diagnosa registry approve N`) writes it anew")


def deployment_names(endpoint_name: str, group: str, version: object, epoch: int) -> tuple[str, str]:
    """(model, endpoint config) names of a deploy of ``group`` v``version`` to ``endpoint_name`` at ``epoch``:
    ``<group>-v<N>-<epoch>-model`` and ``<endpoint>-<group>-v<N>-<epoch>``, each within SageMaker's 63 characters
    for every name a group and an endpoint may have (a 25-character dataset's config name was refused after its
    version was written Approved): a name too long keeps its head, then a hash of the whole name (one per
    deployment, as the name was), its version and epoch."""
    tag = f"{group}-v{version}-{epoch}"
    return _fitted(f"{tag}-model", f"-v{version}-{epoch}", "-model"), _fitted(f"{endpoint_name}-{tag}",
                                                                              f"-v{version}-{epoch}")


def names_problem(endpoint_name: str, package: dict[str, Any]) -> str | None:
    """Why the model or endpoint config a deploy of ``package`` to ``endpoint_name`` creates (deployment_names)
    would not be a SageMaker name; None when both are. Checked before `registry approve` writes the status."""
    for kind, name in zip(("model", "endpoint config"), deployment_names(
            endpoint_name, str(package.get("ModelPackageGroupName")), package.get("ModelPackageVersion"),
            int(time.time()))):
        if not RESOURCE_NAME.fullmatch(name):
            return (f"its local {kind} would be named {shown(name, 80)}, not a SageMaker name (ASCII letters, digits "
                    f"and inner '-', at most {NAME_MAX})")
    return None


def _fitted(name: str, kept: str, suffix: str = "") -> str:
    if len(name) <= NAME_MAX:
        return name
    tail = f"{kept}-{hashlib.sha256(name.encode()).hexdigest()[:8]}{suffix}"
    return name[:max(NAME_MAX - len(tail), 1)].rstrip("-") + tail


def _version_of(package_arn: object) -> str:
    """``group vN`` for a version of the local registry's ARN; the ARN as it is otherwise."""
    from pipelines.registry import RegistryError, package_version

    try:
        group, version = package_version(str(package_arn))
    except RegistryError:
        return str(package_arn)
    return f"{group} v{version}"


def record_problem(data: object, name: str) -> str | None:
    """What makes ``data`` no record of endpoint ``name``: not an object, a required field missing, a field of the
    wrong type or out of range; None when it is one."""
    if not isinstance(data, dict):
        return f"it holds {shown(data)}, not a JSON object"
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        return f"it has no {', '.join(missing)}"
    for key, (kinds, what) in FIELDS.items():
        value = data.get(key)
        if key in data and (not isinstance(value, kinds) or isinstance(value, bool)):
            return f"its {key} is {shown(value)}, not {what}"
    if data["EndpointName"] != name:
        return f"its EndpointName {shown(data['EndpointName'])} is not the name of its folder, {name}"
    if data["EndpointStatus"] not in STATUSES:
        return f"its EndpointStatus {shown(data['EndpointStatus'])} is none of {', '.join(STATUSES)}"
    if "Port" in data and not 0 < data["Port"] < 65536:
        return f"its Port {data['Port']} is not a port number (1 to 65535)"
    if data.get("Pid") is not None and data["Pid"] <= 0:  # os.kill of 0 or less signals process groups
        return f"its Pid {data['Pid']} is not a process id"
    return None


def _escaped(text: str, limit: int = 100) -> str:
    """``text`` (a file or folder name) printable: bytes that are not UTF-8 (lone surrogates once decoded) written as
    \\xNN, clipped to ``limit`` characters."""
    try:
        data = text.encode("utf-8", "surrogateescape")  # a file name's bytes, as os.fsencode gives them
    except UnicodeEncodeError:  # a surrogate no file name decodes to ('\ud800' from JSON)
        data = text.encode("utf-8", "backslashreplace")
    printable = data.decode("utf-8", "backslashreplace")
    return printable if len(printable) <= limit else printable[:limit - 1] + "…"


def _arguments(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _is_server(arguments: list[bytes]) -> bool:
    """A Diagnosa server's command line (``python -P -m inference.serve ...``; servers started before it existed ran
    ``python -P -m diagnosa.cli ... serve ...``), not any process whose command line holds 'serve' (http.server,
    jupyter-server and an observer matched, and were killed by stop)."""
    return SERVER_MODULE.encode() in arguments or (b"diagnosa.cli" in arguments and b"serve" in arguments)


def _follows(arguments: list[bytes], flag: bytes, value: bytes) -> bool:
    return any(a == flag and b == value for a, b in zip(arguments, arguments[1:]))


def _serves(arguments: list[bytes], workspace: Path, name: str) -> bool:
    """The one rule for whether a process is endpoint ``name``'s server of ``workspace``: a Diagnosa server whose
    command line (as _start writes it) names this workspace, resolved, and this endpoint. A pid alone is not enough:
    a copied workspace's records name the original's servers (its `endpoint stop` killed them), a reused pid another
    program (`endpoint stop` killed it)."""
    return (_is_server(arguments) and _follows(arguments, b"--workspace", os.fsencode(workspace.resolve()))
            and _follows(arguments, b"--endpoint-name", os.fsencode(name)))  # the bytes of an odd (non-UTF-8) name


def _alive(pid: object, workspace: Path, name: str) -> bool:
    """Endpoint ``name`` of ``workspace`` is served by process ``pid`` (its record's): the pid exists and is that
    endpoint's server by _serves' rule."""
    return isinstance(pid, int) and process_alive(pid) and _serves(_arguments(pid), workspace, name)


class LocalEndpoints:
    def __init__(self, workspace: Path, mapping: LakeMapping, *, lake_uri: str | None = None,
                 python: str = sys.executable, host: str = "127.0.0.1", port: int | None = None,
                 lock_wait: float | None = None, on_wait: Callable[[str], None] | None = None):
        self.workspace = Path(workspace)
        self.root = self.workspace / "endpoints"
        self.mapping = mapping
        self.lake_uri = lake_uri
        self.python = python
        self.host = host
        self.port = DEFAULT_PORT if port is None else port  # 0: any free port
        self.asked_port = port  # None: not asked for (an existing endpoint keeps its port)
        self._held: set[str] = set()  # the endpoints this object holds (_exclusive) now
        # How long a deploy, start or stop waits for another process's hold on the endpoint (None: LOCK_WAIT, a
        # listing's probe); `registry approve` waits for another's deploy (DEPLOY_WAIT), saying so (on_wait).
        self.lock_wait = lock_wait
        self.on_wait = on_wait

    # -------------------------------------------------------------------------------- one command at a time
    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """This process's hold on endpoint ``name`` while it deploys, starts or stops it. Two approvals at once each
        stopped the other's new server, both failed, and a rejected version served on. An advisory lock of the
        endpoint's folder, as the registry's group lock and a resume's claim: the kernel releases it however the
        process ends. Another command's hold is waited for LOCK_WAIT seconds (a listing probes it), then refused
        naming its pid. Re-entrant within this object (start deploys)."""
        if name in self._held:
            yield
            return
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        budget = LOCK_WAIT if self.lock_wait is None else max(self.lock_wait, LOCK_WAIT)
        with ExitStack() as held:  # a LockHeld from within the hold is not this refusal
            try:
                try:
                    held.enter_context(file_lock(folder / ".lock", wait=LOCK_WAIT))
                except LockHeld as err:
                    if budget <= LOCK_WAIT:
                        raise
                    if self.on_wait:  # a deploy holds it, not a listing's probe: said, then waited for
                        self.on_wait(f"endpoint {name} is being deployed by another process"
                                     + (f" (pid {err.pid})" if err.pid is not None else "")
                                     + f": waiting for it to end (at most {budget - LOCK_WAIT:.0f} s more)")
                    held.enter_context(file_lock(folder / ".lock", wait=budget - LOCK_WAIT))
            except LockHeld as err:
                waited = f", still after {budget:.0f} s" if budget > LOCK_WAIT else ""
                raise EndpointBusy(
                    f"endpoint {name} is being deployed by another process"
                    + (f" (pid {err.pid})" if err.pid is not None else "") + f"{waited}: wait for it to end "
                    f"(`diagnosa endpoint list` shows {name} {UPDATING} meanwhile), then try again") from None
            self._held.add(name)
            try:
                yield
            finally:
                self._held.discard(name)

    def _deploying_elsewhere(self, name: str) -> bool:
        """Another process (or another LocalEndpoints of this one) holds endpoint ``name`` now (_exclusive)."""
        path = self.root / name / ".lock"
        if name in self._held or not path.is_file():
            return False
        try:
            with file_lock(path, shared=True, wait=0):  # shared: probes at once do not refuse each other
                return False
        except LockHeld:
            return True

    # -------------------------------------------------------------------------------- the latest approval serves
    @contextmanager
    def _line(self, name: str) -> Iterator[dict[str, Any]]:
        """The endpoint's line of deploys of registered versions (``<endpoint folder>/.deploys.json``), held for a
        moment (its own lock, not the endpoint's) and written back: ``Last``, the number the latest one asked for got;
        ``Waiting``, the ones asked for and not yet done (their pid and version); ``Done``, the highest number whose
        deploy ran (``DoneArn``: its version). Waiters whose process has ended are dropped (killed while they waited).
        A damaged file starts a new line."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LINE_FILE
        with file_lock(folder / ".line.lock"):  # its holders only read and write this small file
            data, _ = read_json_record(path) if os.path.lexists(path) else ({}, None)
            line: dict[str, Any] = {"Last": 0, "Done": 0, "DoneArn": None, "Waiting": {}}
            if isinstance(data, dict):
                for key in ("Last", "Done"):
                    if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                        line[key] = data[key]
                line["DoneArn"] = data.get("DoneArn") if isinstance(data.get("DoneArn"), str) else None
                if isinstance(data.get("Waiting"), dict):
                    line["Waiting"] = {k: v for k, v in data["Waiting"].items() if k.isdigit() and isinstance(v, dict)
                                       and process_alive(v.get("Pid"))}
            yield line
            write_json_atomic(path, line, indent=2)

    def _ask(self, name: str, package_arn: str) -> int:
        """This deploy of ``package_arn``'s place in the endpoint's line (asked before its hold is waited for)."""
        with self._line(name) as line:
            number = int(line["Last"]) + 1
            line["Last"] = number
            line["Waiting"][str(number)] = {"Pid": os.getpid(), "ModelPackageArn": package_arn}
        return number

    def _later(self, name: str, number: int) -> str | None:
        """The version of a deploy asked of the endpoint after deploy ``number`` (the endpoint held by this one
        now): one that ran already (it got the endpoint first: flock keeps no order), or one waiting whose version
        the registry does not say is Rejected; None when there is none (this one is the latest)."""
        with self._line(name) as line:
            if int(line["Done"]) > number:
                return str(line["DoneArn"] or "a later version")
            waiting = sorted(((int(k), v.get("ModelPackageArn")) for k, v in line["Waiting"].items()
                              if int(k) > number), reverse=True)
        for _, arn in waiting:
            known = self._package(arn)
            if not (known and known[0] == "Rejected"):
                return str(arn)
        return None

    def _leave(self, name: str, number: int, done_arn: str | None = None) -> None:
        """Deploy ``number`` leaves the line: done (``done_arn``: it ran, whatever its outcome), or not (refused, or
        given up)."""
        with self._line(name) as line:
            line["Waiting"].pop(str(number), None)
            if done_arn is not None and number > int(line["Done"]):
                line["Done"], line["DoneArn"] = number, done_arn

    # -------------------------------------------------------------------------------- the registry's word
    def _package(self, package_arn: object) -> tuple[str, str, int] | None:
        """(approval status, group, version) of a version of this workspace's registry (``<workspace>/registry``,
        where `registry approve` and the local runs register); None when ``package_arn`` names none there."""
        from pipelines.registry import ARN_PREFIX, LocalModelRegistry, RegistryError, package_version

        if not isinstance(package_arn, str) or not package_arn.startswith(f"{ARN_PREFIX}/"):
            return None
        try:
            group, version = package_version(package_arn)
            package = LocalModelRegistry(self.workspace / "registry").describe_model_package(package_arn)
            return str(package["ModelApprovalStatus"]), group, version
        except (RegistryError, OSError, ValueError, KeyError, TypeError):  # not there, or a damaged file: unknown
            return None

    def _registry_hold(self, package_arn: object) -> ContextManager[Any]:
        """The registry's lock of ``package_arn``'s group (when it is a version there): a reject takes it too, so it
        either comes before the status is read again (and the deploy does not record the version as served) or
        after the record is written (and the reject sees it serving, and warns)."""
        from pipelines.registry import LocalModelRegistry, package_version

        if self._package(package_arn) is None:
            return nullcontext()
        group, _ = package_version(str(package_arn))
        return LocalModelRegistry(self.workspace / "registry").group_lock(group)

    # -------------------------------------------------------------------------------- records
    def _write(self, path: Path, data: dict[str, Any]) -> None:
        # "Note" is describe()'s word on the record as read (a deploy cut short), not part of what is recorded.
        write_json_atomic(path, {k: v for k, v in data.items() if k != "Note"}, indent=2)

    def _read(self, path: Path, what: str) -> dict[str, Any]:
        if not path.is_file():
            raise DeployError(f"{what} does not exist locally ({path})")
        data, problem = read_json_record(path)
        if isinstance(data, dict):
            return data
        problem = problem or f"it holds {shown(data)}, not a JSON object"
        raise DeployError(f"{what}: its file {path} is damaged ({problem}): deploying a version again "
                          "(`diagnosa registry approve N`) writes a new one")

    def create_model(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        request = {**arguments, "ModelName": arguments.get("ModelName") or name}
        check_request("CreateModel", request)
        container = request.get("PrimaryContainer") or (request.get("Containers") or [{}])[0]
        if not container.get("ModelDataUrl"):
            raise DeployError(f"model {request['ModelName']} has no ModelDataUrl")
        self.mapping.key(container["ModelDataUrl"])  # inside the lake, or refused now
        self._write(self.root / "models" / f"{request['ModelName']}.json", request)
        return {"ModelName": request["ModelName"], "ModelArn": f"{ARN}:model/{request['ModelName']}"}

    def create_endpoint_config(self, arguments: dict[str, Any]) -> dict[str, Any]:
        check_request("CreateEndpointConfig", arguments)
        name = arguments["EndpointConfigName"]
        path = self.root / "configs" / f"{name}.json"
        if path.exists():
            raise DeployError(f"endpoint config {name} already exists (configs are immutable)")
        if len(arguments["ProductionVariants"]) != 1:
            raise DeployError(f"endpoint config {name}: the local endpoint serves one production variant")
        self._write(path, arguments)
        return {"EndpointConfigName": name, "EndpointConfigArn": f"{ARN}:endpoint-config/{name}"}

    def describe(self, name: str) -> EndpointRecord | None:
        """Endpoint ``name``'s record (None: there is none); InService only while its server runs. A damaged record
        (truncated by a full disk, edited by hand: record_problem) is a DAMAGED stand-in whose Problem says the way
        out; any field asked of it is refused with that (EndpointRecord)."""
        path = self.root / name / "endpoint.json"
        try:
            if not os.path.lexists(path):
                return None
        except ValueError:  # os.path.lexists of a NUL: no such endpoint
            return None
        if not RESOURCE_NAME.fullmatch(name):  # a folder copied from elsewhere, or not UTF-8: no server serves it
            return self._odd_folder(name, path)
        # A folder, a symlink that loops or leads nowhere, a file unreadable or removed meanwhile: there, and damaged
        # (such a record was taken for no endpoint at all, and `predict` then called SageMaker's endpoint of that name)
        data, problem = read_json_record(path)
        problem = problem or record_problem(data, name)
        if problem:
            way_out = ("remove it, then deploying a version again (`diagnosa registry approve N`) writes the record"
                       if path.is_dir() else "deploying a version again (`diagnosa registry approve N`) writes it anew")
            running = self.servers(name)
            problem = (f"its record {_escaped(str(path), 8192)} is damaged ({problem}): `diagnosa endpoint stop "
                       f"{name}` stops what it runs{' (pid ' + str(running[0]) + ')' if running else ''}; {way_out}")
            return EndpointRecord({"EndpointName": name, "EndpointStatus": DAMAGED, "Url": "", "EndpointConfigName": "",
                                   "Pid": running[0] if running else None, "Problem": problem}, path, problem)
        record = EndpointRecord(data, path)
        if "ModelPackageArn" not in record:  # written by a run's Deploy step before it recorded the version
            found = self._run_version(name, record)
            if found:
                record["ModelPackageArn"] = found
                self._record_version(name, path, record, found)
        if record["EndpointStatus"] == UPDATING and not self._deploying_elsewhere(name):
            # The deploy that wrote it was killed: what runs is its config's server (the one it spawned, whose pid it
            # may not have recorded yet), or nothing. Said as it is, not as the record before it (a v2 server
            # answered while the record named v1 and a dead pid, and `endpoint start` replaced it by v1).
            server: int | None = record.get("Pid") if _alive(record.get("Pid"), self.workspace, name) else next(
                iter(self.servers(name)), None)
            record["Pid"] = server
            record["EndpointStatus"] = "InService" if server else "OutOfService"
            record["Note"] = (f"a deploy of {record.get('EndpointConfigName')} was cut short: "
                              + ("its server runs, not checked to answer" if server else
                                 f"nothing runs (`diagnosa endpoint start {name}` starts that config)"))
        elif record["EndpointStatus"] == "InService" and not _alive(record.get("Pid"), self.workspace, name):
            record["EndpointStatus"] = "OutOfService"  # the process is gone (reboot, kill), or another workspace's
        return record

    def _run_version(self, name: str, record: dict[str, Any]) -> str | None:
        """The version an endpoint record without ``ModelPackageArn`` serves, when the run that deployed it says: a
        run's Deploy step before the version was recorded (older Diagnosa) named the config ``<endpoint>-<execution
        id>`` (its model ``CreateModel-<execution id>``), and that execution's record names the version its Register
        step registered. Only when the execution deployed this config, registered one version, and that version's
        model file is the record's; None otherwise (the version is then not known: start() and check_dataset() look
        at every version of the model file, _twins)."""
        from pipelines.registry import LocalModelRegistry, RegistryError

        config, model = record.get("EndpointConfigName"), record.get("ModelName")
        candidates = [text[len(prefix):] for text, prefix in ((config, f"{name}-"), (model, "CreateModel-"))
                      if isinstance(text, str) and text.startswith(prefix)]
        for execution_id in dict.fromkeys(candidates):
            if not RESOURCE_NAME.fullmatch(execution_id):  # no '/', no '..': a folder of executions/ or nothing
                continue
            data, problem = read_json_record(self.workspace / "executions" / execution_id / "execution.json")
            steps = data.get("Steps") if not problem and isinstance(data, dict) else None
            if not isinstance(steps, dict):
                continue
            properties = [step["Properties"] for step in steps.values()
                          if isinstance(step, dict) and isinstance(step.get("Properties"), dict)]
            registered = {p["ModelPackageArn"] for p in properties if isinstance(p.get("ModelPackageArn"), str)}
            if len(registered) != 1 or config not in {p.get("EndpointConfigName") for p in properties}:
                continue
            arn = registered.pop()
            try:
                package = LocalModelRegistry(self.workspace / "registry").describe_model_package(arn)
                url = package["InferenceSpecification"]["Containers"][0].get("ModelDataUrl")
            except (RegistryError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
                continue
            if url == record.get("ModelDataUrl"):
                return arn
        return None

    def _record_version(self, name: str, path: Path, record: dict[str, Any], package_arn: str) -> None:
        """Write the version _run_version found into the record (atomically, under the endpoint's hold: a deploy's
        record is never overwritten by an older one). Not when another process holds the endpoint (it writes a
        record of its own), nor when the record changed since it was read, nor when it cannot be written (a
        read-only workspace): the version is found again at the next reading."""
        hold: ContextManager[Any] = (nullcontext() if name in self._held
                                     else file_lock(self.root / name / ".lock", wait=0))
        try:
            with hold:
                data, problem = read_json_record(path)
                if (problem or not isinstance(data, dict) or "ModelPackageArn" in data
                        or any(data.get(key) != record.get(key) for key in ("EndpointConfigName", "ModelDataUrl"))):
                    return
                self._write(path, {**data, "ModelPackageArn": package_arn})
        except (LockHeld, OSError):
            return

    def _twins(self, model_data_url: object) -> list[tuple[str, str, int]]:
        """(approval status, group, version) of every version of the workspace's registry whose model file is
        ``model_data_url``: the versions an endpoint record that names none may serve."""
        from pipelines.registry import LocalModelRegistry, RegistryError

        if not isinstance(model_data_url, str):
            return []
        registry = LocalModelRegistry(self.workspace / "registry")
        found = []
        try:
            groups = registry.groups()
        except (RegistryError, OSError, ValueError):
            return []
        for group in groups:
            try:
                packages = registry.list_model_packages(group)
            except (RegistryError, OSError, ValueError):
                continue
            for package in packages:
                try:
                    url = package["InferenceSpecification"]["Containers"][0].get("ModelDataUrl")
                except (KeyError, TypeError, IndexError, AttributeError):
                    continue
                if url == model_data_url:
                    found.append((str(package.get("ModelApprovalStatus")), group, int(package["ModelPackageVersion"])))
        return found

    def _odd_folder(self, name: str, path: Path) -> EndpointRecord:
        """The DAMAGED stand-in for an endpoint folder whose name is no endpoint name (not UTF-8, copied from
        elsewhere): named escaped and clipped (a lone surrogate printed was a UnicodeEncodeError), with the way out.
        No deploy makes such a folder, and no server serves it (`serve` refuses the name)."""
        shown_name = _escaped(name)
        problem = (f"its folder's name {shown_name} is not an endpoint name (ASCII letters, digits and inner '-', at "
                   f"most {NAME_MAX}): it is no endpoint of this workspace; move the folder "
                   f"{_escaped(str(path.parent), 400)} out of {_escaped(str(self.root), 400)}")
        return EndpointRecord({"EndpointName": shown_name, "EndpointStatus": DAMAGED, "Url": "",
                               "EndpointConfigName": "", "Pid": None, "Problem": problem}, path, problem)

    def servers(self, name: str) -> tuple[int, ...]:
        """The pids of this workspace's servers of endpoint ``name``, whatever the records say: a deploy interrupted
        between stopping the old server and recording the new one left a server no record names."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            if _serves(_arguments(int(entry.name)), self.workspace, name):
                found.append(int(entry.name))
        return tuple(sorted(found))

    def list(self) -> list[EndpointRecord]:
        """Every endpoint folder's record: one that is no file (a folder, a symlink leading nowhere) is listed as
        damaged, not skipped (a glob skipped a dangling symlink, and a folder was taken for no record)."""
        try:
            names = sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [r for r in map(self.describe, names) if r]

    def unknown_name(self, endpoint_name: str) -> str:
        """What to say of a name no local endpoint has: the one it was likely meant for, and the local endpoints
        there are ("" when there are none). SageMaker takes an endpoint name whatever its case at CreateEndpoint but
        needs its case at InvokeEndpoint, and a dataset's endpoint is its name with '_' written '-', so a name that
        differs only so, or is a close spelling, is named first: `monitor --endpoint-name Urgencias` said only
        "no local endpoint" beside an endpoint urgencias."""
        others = [r["EndpointName"] for r in self.list()]
        if not others:
            return ""
        folded = {other.casefold(): other for other in others}
        meant = folded.get(endpoint_name.replace("_", "-").casefold())
        if meant is None:
            close = difflib.get_close_matches(endpoint_name.casefold(), list(folded), n=1, cutoff=0.75)
            meant = folded[close[0]] if close else None
        listed = f"the local endpoints are {some_of(others)}"
        if meant == endpoint_name.replace("_", "-") != endpoint_name:
            listed = f"a dataset's endpoint is its name with '_' written '-'; {listed}"
        return f"did you mean {meant}? ({listed})" if meant else listed

    # -------------------------------------------------------------------------------- deploy
    def deploy(self, endpoint_name: str, config_name: str, *, log: Path | None = None,
               package_arn: str | None = None) -> dict[str, Any]:
        """CreateEndpoint, or UpdateEndpoint when it exists; returns the endpoint's record. One at a time per
        endpoint (_exclusive): another command's deploy, start or stop of it is refused meanwhile."""
        check_request("CreateEndpoint", {"EndpointName": endpoint_name, "EndpointConfigName": config_name})
        if not RESOURCE_NAME.fullmatch(endpoint_name):  # botocore's validator leaves the name's pattern unchecked
            raise JobError(f"endpoint name {shown(endpoint_name, 80)} is not a SageMaker name (ASCII letters, digits and inner "
                           "'-', at most 63)")
        # A deploy of a registered version (an approval's, a run's) takes its place in the endpoint's line before it
        # waits: once it holds the endpoint, it is not done if a later one was asked meanwhile (Superseded), so the
        # latest approval serves whatever order the waiters get the endpoint in. `endpoint start` (which holds it
        # already) is no approval.
        number = self._ask(endpoint_name, package_arn) if package_arn and endpoint_name not in self._held else None
        done: str | None = None
        try:
            with self._exclusive(endpoint_name):
                later = self._later(endpoint_name, number) if number is not None else None
                if later is not None:
                    raise Superseded(f"endpoint {endpoint_name}: {_version_of(package_arn)} not deployed: a later "
                                     f"deploy of the endpoint, {_version_of(later)}'s, was asked while this one "
                                     "waited, and the latest one serves")
                try:
                    record = self._deploy(endpoint_name, config_name, log=log, package_arn=package_arn)
                except VersionRejected as err:  # nothing was deployed, unless it was rejected midway
                    done = package_arn if err.touched else None
                    raise
                except BaseException:
                    done = package_arn
                    raise
                done = package_arn
                return record
        finally:
            if number is not None:
                self._leave(endpoint_name, number, done)

    def _deploy(self, endpoint_name: str, config_name: str, *, log: Path | None,
                package_arn: str | None) -> dict[str, Any]:
        known = self._package(package_arn)
        if known and known[0] == "Rejected":  # read under the endpoint's hold, before anything of it is touched
            _, group, version = known
            raise VersionRejected(f"endpoint {endpoint_name}: {group} v{version} is Rejected in the registry: not "
                                  "deployed, and what the endpoint served is unchanged")
        config = self._read(self.root / "configs" / f"{config_name}.json", f"endpoint config {config_name}")
        variant = config["ProductionVariants"][0]
        model = self._read(self.root / "models" / f"{variant['ModelName']}.json", f"model {variant['ModelName']}")
        container = model.get("PrimaryContainer") or model["Containers"][0]
        capture = config.get("DataCaptureConfig") or {}
        sampling = int(capture.get("InitialSamplingPercentage", 0)) if capture.get("EnableCapture") else 0
        folder = self.root / endpoint_name
        model_dir = folder / "models" / config_name
        previous: dict[str, Any] | None = self.describe(endpoint_name)  # an EndpointRecord: refuses a field it lacks
        if previous and previous["EndpointStatus"] == DAMAGED:
            previous = None  # nothing to roll back to; its server, if any, is stopped below
        self.check_dataset(endpoint_name, previous, package_arn)
        if not (model_dir / "metadata.json").is_file():
            archive = folder / "models" / f"{config_name}.tar.gz"
            archive.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.mapping.lake.get_file(self.mapping.key(container["ModelDataUrl"]), archive)
                unpack_model(archive, model_dir)
            except ModelLoadError as err:  # named by the lake's object, not this temporary copy
                raise DeployError(f"endpoint {endpoint_name}: the model {container['ModelDataUrl']} cannot be "
                                  f"loaded: {str(err).replace(str(archive), 'the archive')}") from None
            finally:  # a partial copy is never left behind (nor taken for the model by the next deploy)
                archive.unlink(missing_ok=True)
                if not (model_dir / "metadata.json").is_file():
                    shutil.rmtree(model_dir, ignore_errors=True)
        port = self._port_for(endpoint_name, previous)
        history = (previous or {}).get("History", [])
        if previous and previous.get("EndpointConfigName") != config_name:  # a restart is no change of model
            history = [*history, {k: previous.get(k) for k in ("EndpointConfigName", "ModelDataUrl", "LastModifiedTime")}]
        record = {
            "EndpointName": endpoint_name, "EndpointArn": f"{ARN}:endpoint/{endpoint_name}",
            "EndpointConfigName": config_name, "EndpointStatus": "InService",
            "ModelName": variant["ModelName"], "ModelDataUrl": container["ModelDataUrl"], "ModelDir": str(model_dir),
            "CaptureSampling": sampling, "Port": port, "Pid": None, "Url": f"http://{self.host}:{port}",
            "CreationTime": (previous or {}).get("CreationTime", utc_now()), "LastModifiedTime": utc_now(),
            "History": history[-20:],
            **({"ModelPackageArn": package_arn} if package_arn else {}),
        }
        for pid in self.servers(endpoint_name):  # the recorded one, and any an interrupted deploy left
            self._stop(pid)
        try:
            pid = self._launch(record, model_dir, port, sampling)
        except BaseException as err:  # a failed start, or Ctrl-C while it started: never leave a server unrecorded
            for stray in self.servers(endpoint_name):
                self._stop(stray)
            if not isinstance(err, DeployError):
                self._out_of_service(folder, previous)
                raise
            self._roll_back(endpoint_name, previous, folder, err, config_name)
        record = {**record, "Pid": pid, "LastModifiedTime": utc_now()}
        with self._registry_hold(package_arn):  # the registry is the truth: a reject while this deployed wins
            known = self._package(package_arn)
            rejected = known is not None and known[0] == "Rejected"
            if not rejected:
                self._write(folder / "endpoint.json", record)
        if rejected and known:
            self._stop(pid)
            self._roll_back(endpoint_name, previous, folder, VersionRejected(
                f"endpoint {endpoint_name}: {known[1]} v{known[2]} was rejected while it was being deployed, and is "
                "not served", touched=True), config_name)
        self._prune(folder / "models", keep={model_dir, Path(previous["ModelDir"]) if previous and
                                             previous.get("ModelDir") else model_dir})
        if log:
            moved = f", moved from port {previous['Port']}" if previous and previous["Port"] != port else ""
            log.write_text(f"endpoint {endpoint_name} InService on {record['Url']} with {config_name} "
                           f"({'updated' if previous else 'created'}{moved}); server log {folder / 'server.log'}\n",
                           encoding="utf-8")
        return record

    def check_dataset(self, endpoint_name: str, previous: dict[str, Any] | None, package_arn: str | None) -> None:
        """Refuse to put a version of one group on an endpoint serving another group's: its requests and feedback
        take another dataset's fields and labels, and every client would be refused. Here, where `registry approve`
        and a run's Endpoint step both pass (a run with EndpointName=<another dataset's endpoint> replaced it)."""
        from pipelines.registry import RegistryError, package_version

        if not (package_arn and previous and previous["EndpointStatus"] == "InService"):
            return
        served = previous.get("ModelPackageArn")
        try:
            group, _ = package_version(package_arn)
            if isinstance(served, str):
                other, version = package_version(served)
                what = f"{other} v{version}"
            else:  # an older Diagnosa's record, its version not known: the one group its model file's versions are in
                groups = {g for _, g, _ in self._twins(previous.get("ModelDataUrl"))}
                if len(groups) != 1:
                    return
                other = groups.pop()
                what = f"a model of {other}"
        except RegistryError:
            return
        if other != group:
            raise DeployError(f"endpoint {endpoint_name} serves {what}, another dataset's model than group "
                              f"{group}'s: deploy it to its own endpoint ({group}), or stop {endpoint_name} first "
                              f"(`diagnosa endpoint stop {endpoint_name}`) to give it another dataset")

    def _launch(self, target: dict[str, Any], model_dir: Path, port: int, sampling: int) -> int:
        """Start ``target``'s server (a record as it will be once it serves): the record says it is Updating to
        target's config before the server is spawned, and its pid as soon as it exists, so that a deploy killed
        meanwhile leaves a record of what runs (describe())."""
        name = target["EndpointName"]
        path = self.root / name / "endpoint.json"
        self._write(path, {**target, "EndpointStatus": UPDATING, "Pid": None, "LastModifiedTime": utc_now()})
        return self._start(name, model_dir, port, sampling, self.root / name / "server.log", on_spawn=lambda pid: (
            self._write(path, {**target, "EndpointStatus": UPDATING, "Pid": pid, "LastModifiedTime": utc_now()})))

    def _out_of_service(self, folder: Path, previous: dict[str, Any] | None) -> None:
        """The previous record, marked as serving nothing (a new endpoint that never started has none: the
        Updating record of its start is removed)."""
        if previous:
            self._write(folder / "endpoint.json", {**previous, "EndpointStatus": "OutOfService", "Pid": None,
                                                    "LastModifiedTime": utc_now()})
        else:
            (folder / "endpoint.json").unlink(missing_ok=True)

    def _roll_back(self, endpoint_name: str, previous: dict[str, Any] | None, folder: Path, err: DeployError,
                   config_name: str = "") -> None:
        """After a new model failed to start: the previous one started again, on its own port; DeployError either
        way, saying what serves now (a PortInUse when the port was what failed: the CLI's hint depends on it)."""
        kind: Callable[[str], DeployError] = (
            PortInUse if isinstance(err, PortInUse) else
            (lambda text: VersionRejected(text, touched=True)) if isinstance(err, VersionRejected) else DeployError)
        if (previous and previous.get("EndpointStatus") != "InService"
                and previous.get("EndpointConfigName") == config_name):  # `endpoint start` of a stopped endpoint:
            self._out_of_service(folder, previous)  # the same model, not served before: nothing to roll back to
            raise kind(f"{err}: endpoint {endpoint_name} was not serving, and serves nothing now") from None
        if not (previous and previous.get("ModelDir") and Path(previous["ModelDir"]).is_dir()):
            self._out_of_service(folder, previous)
            why = ("no previous model to roll back to" if not previous
                   else f"the previous model {previous.get('ModelDir')} is gone")
            raise kind(f"{err}; {why}: endpoint {endpoint_name} serves nothing now") from None
        try:
            pid = self._launch({**previous, "EndpointName": endpoint_name}, Path(previous["ModelDir"]),
                               previous["Port"], previous.get("CaptureSampling", 0))
        except DeployError as again:
            self._out_of_service(folder, previous)
            raise kind(f"{err}; the rollback to {previous['EndpointConfigName']} failed too ({again}): "
                       f"endpoint {endpoint_name} serves nothing now") from None
        self._write(folder / "endpoint.json", {**previous, "Pid": pid, "EndpointStatus": "InService",
                                                "LastModifiedTime": utc_now()})
        known = self._package(previous.get("ModelPackageArn"))
        restored = f" ({known[1]} v{known[2]})" if known else ""
        if known and known[0] == "Rejected":  # it serves again: said, not left for `registry list` to show
            restored = (f" ({known[1]} v{known[2]}): v{known[2]} serves again, and it is Rejected in the registry: "
                        f"approve another version, or stop it (`diagnosa endpoint stop {endpoint_name}`)")
        raise kind(f"{err}; rolled back to {previous['EndpointConfigName']}{restored}") from None

    @staticmethod
    def _prune(models: Path, keep: set[Path]) -> None:
        """Remove the model copies an endpoint no longer needs: the one it serves and the one a rollback would
        start stay (every approve unpacked a copy, failed ones too, and none was ever removed)."""
        kept = {path.resolve() for path in keep}
        for entry in models.iterdir() if models.is_dir() else ():
            if entry.resolve() not in kept:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    def _port_for(self, endpoint_name: str, previous: dict[str, Any] | None) -> int:
        """An existing endpoint keeps its port (its clients know the URL), unless a port is asked for: then it moves
        there (--port was ignored for an existing endpoint); for 0 (any free port) it keeps its own while that is
        free, and moves to a free one once another process took it (0 was taken for "not asked": `--port 0`, the
        hint for a taken port, kept the taken port and failed again). A new one gets _new_port's."""
        if previous is None:
            return self._new_port(endpoint_name)
        own = int(previous["Port"])
        if self.asked_port is None:
            return own
        if self.asked_port:
            return self.asked_port
        # 0: a free port. Its own while it is (or its own server holds it: stopped before the new one starts), so
        # that clients keep its URL; another once another process took it.
        if previous.get("EndpointStatus") == "InService" or not port_taken(self.host, own):
            return own
        return free_port(self.host)

    def port_holder(self, port: int, endpoint_name: str) -> str | None:
        """The endpoint of this workspace, other than ``endpoint_name``, in service on ``port`` (None: none)."""
        held = [r["EndpointName"] for r in self.list() if r["EndpointName"] != endpoint_name
                and r["EndpointStatus"] in ("InService", UPDATING) and r.get("Port") == port]
        return held[0] if held else None

    @staticmethod
    def port_held(endpoint_name: str, port: int, holder: str) -> str:
        return (f"endpoint {endpoint_name}: port {port} is endpoint {holder}'s, of this workspace: deploy with another "
                f"port (--port; 0: any free one), or stop {holder} first (`diagnosa endpoint stop {holder}`)")

    def _new_port(self, endpoint_name: str) -> int:
        """A new endpoint's port: the one asked for (--port 8080 too: given, it is never swapped for another); none
        asked, the default port unless another endpoint of this workspace holds it (each dataset has its own
        endpoint: the second one gets a free port)."""
        if not self.port:
            return free_port(self.host)
        if self.asked_port is not None:
            return self.port
        taken = {r.get("Port") for r in self.list()
                 if r["EndpointStatus"] in ("InService", UPDATING) and r["EndpointName"] != endpoint_name}
        return free_port(self.host) if self.port in taken else self.port

    def deploy_model_package(self, package: dict[str, Any], endpoint_name: str = "diagnosa",
                             capture_sampling: int = 100) -> dict[str, Any]:
        """What the deploy function does for an approved package: model → config with capture → endpoint."""
        if not RESOURCE_NAME.fullmatch(endpoint_name):  # before any file is named after it
            raise DeployError(f"endpoint name {shown(endpoint_name, 80)} is not a SageMaker name (ASCII letters, digits and "
                              "inner '-', at most 63)")
        problem = names_problem(endpoint_name, package)
        if problem:
            raise DeployError(f"model package {package.get('ModelPackageArn')}: {problem}")
        if package.get("ModelApprovalStatus") != "Approved":
            raise DeployError(f"model package {package.get('ModelPackageArn')} is "
                              f"{package.get('ModelApprovalStatus')}, not Approved: not deployed")
        container = package["InferenceSpecification"]["Containers"][0]
        model_name, config_name = deployment_names(endpoint_name, package["ModelPackageGroupName"],
                                                   package["ModelPackageVersion"], int(time.time()))
        model = self.create_model(model_name, {
            "ExecutionRoleArn": f"arn:aws:iam::000000000000:role/{endpoint_name}-local",
            "PrimaryContainer": {k: v for k, v in container.items() if k in ("Image", "ModelDataUrl", "Environment")}})
        instance = (package["InferenceSpecification"].get("SupportedRealtimeInferenceInstanceTypes") or ["ml.m5.large"])[0]
        config = self.create_endpoint_config({
            "EndpointConfigName": config_name,
            "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model["ModelName"],
                                    "InitialInstanceCount": 1, "InstanceType": instance}],
            "DataCaptureConfig": {"EnableCapture": capture_sampling > 0, "InitialSamplingPercentage": capture_sampling,
                                  "DestinationS3Uri": f"s3://{self.mapping.bucket}/capture",
                                  "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}})
        return self.deploy(endpoint_name, config["EndpointConfigName"], package_arn=package["ModelPackageArn"])

    def _existing(self, endpoint_name: str) -> EndpointRecord:
        """The endpoint's record; DeployError naming the endpoints there are when it has none, or naming it escaped
        when its folder's name is no endpoint name (nothing there to start or stop)."""
        record = self.describe(endpoint_name)
        if record and not RESOURCE_NAME.fullmatch(endpoint_name):
            raise DeployError(f"endpoint {record['EndpointName']}: {record['Problem']}")
        if not record:
            hint = self.unknown_name(endpoint_name)
            raise DeployError(f"no local endpoint {endpoint_name}" + (f": {hint}" if hint else ""))
        return record

    def start(self, endpoint_name: str) -> dict[str, Any] | None:
        """Start the model an endpoint last served again, on its port (or the one asked for) — after `endpoint
        stop`, a reboot, a killed server; its record, or None when it serves already where it should."""
        from pipelines.registry import approve_command

        self._existing(endpoint_name)
        with self._exclusive(endpoint_name):
            record = self._existing(endpoint_name)
            if record["EndpointStatus"] == DAMAGED:
                raise DeployError(f"endpoint {endpoint_name}: {record['Problem']}")
            # Serving already where it should: on its port, or on any (0: a free one is asked for a stopped endpoint,
            # whose port another process may have taken; one serving has a port of its own).
            if record["EndpointStatus"] == "InService" and self.asked_port in (None, 0, record["Port"]):
                return None
            known = self._package(record.get("ModelPackageArn"))
            if "ModelPackageArn" not in record:  # an older Diagnosa's record, its version not found (describe())
                twins = self._twins(record.get("ModelDataUrl"))
                rejected = [f"{group} v{version}" for status, group, version in twins if status == "Rejected"]
                if rejected:
                    group = twins[0][1]
                    again = approve_command("N", group, endpoint_name)
                    raise DeployError(
                        f"endpoint {endpoint_name}: its record endpoints/{endpoint_name}/endpoint.json was written by "
                        "an older Diagnosa and does not say which version it serves; its model file is that of "
                        f"{', '.join(f'{g} v{v}' for _, g, v in twins)}, and {', '.join(rejected)} "
                        f"{'is' if len(rejected) == 1 else 'are'} Rejected in the registry: not started. "
                        f"`{again}` deploys a version and records it as the one the endpoint serves")
            if known and known[0] == "Rejected":  # `registry reject` said to stop it; a reboot brought it back
                _, group, version = known
                again = approve_command("N", group, endpoint_name)
                raise DeployError(f"endpoint {endpoint_name} last served {group} v{version}, which is Rejected in the "
                                  f"registry: not started. Approve a version to serve instead (`{again}`); or, if "
                                  f"v{version} may serve after all, approve it again")
            return self.deploy(endpoint_name, record["EndpointConfigName"], package_arn=record.get("ModelPackageArn"))

    def stop(self, endpoint_name: str) -> bool:
        self._existing(endpoint_name)
        with self._exclusive(endpoint_name):  # not the server a deploy is starting
            record = self._existing(endpoint_name)
            running = self.servers(endpoint_name)  # a damaged record's or an interrupted deploy's too
            for pid in running:
                self._stop(pid)
            if record["EndpointStatus"] != DAMAGED:
                path = self.root / endpoint_name / "endpoint.json"
                try:
                    self._write(path, {**record, "EndpointStatus": "OutOfService", "Pid": None,
                                       "LastModifiedTime": utc_now()})
                except OSError as err:  # a full disk: the server is stopped all the same; describe() reads it so
                    raise OSError(err.errno, f"endpoint {endpoint_name}: "
                                  + (f"its server (pid {', '.join(map(str, running))}) is stopped, but " if running
                                     else "")
                                  + f"its record {path} could not be updated ({err.strerror or err}); it still says "
                                  f"{record['EndpointStatus']}, which `diagnosa endpoint list` reads as OutOfService "
                                  "once no server runs") from None
        return bool(running)

    def ship_spool(self, endpoint_name: str) -> int:
        """Ship to the lake what a killed server of ``endpoint_name`` left in its capture spool (answered requests,
        on disk before their replies, otherwise in the lake only once a server of the endpoint starts again); the
        number of captured requests shipped. Nothing when a running server owns the spool."""
        from inference.capture import DataCapture, SpoolBusy

        try:
            capture = DataCapture(self.mapping.lake, endpoint_name)  # its start takes over what was left
        except SpoolBusy:
            return 0
        capture.close()
        return capture.recovered

    # -------------------------------------------------------------------------------- processes
    def _start(self, endpoint_name: str, model_dir: Path, port: int, sampling: int, log_path: Path, *,
               on_spawn: Callable[[int], None] | None = None) -> int:
        # Another process on the port would answer the health check for a server that could not bind it: the
        # deploy would report success while that process (another workspace's endpoint) got the predictions.
        holder = self.port_holder(port, endpoint_name)
        if holder:  # `--port 8080` beside this workspace's cohort endpoint: said as such, not as a stranger's
            raise PortInUse(self.port_held(endpoint_name, port, holder))
        if port_taken(self.host, port, wait=PORT_RELEASE_WAIT):
            raise PortInUse(f"endpoint {endpoint_name}: port {port} on {self.host} is in use by another process "
                            "(another workspace's endpoint?): stop it, or deploy with another port (--port)")
        # -P: the deploying command's folder is not on the server's import path (a folder named inference/ or
        # monitoring/ there was imported instead of Diagnosa's, and every deploy and its rollback failed).
        # The serving layer's own entry point (not the CLI's argv): the workspace names whose server it is (_serves).
        command = [self.python, "-P", "-m", SERVER_MODULE, "--workspace", str(self.workspace.resolve()),
                   "--lake", self.lake_uri or self.mapping.lake.uri, "--model", str(model_dir), "--host", self.host,
                   "--port", str(port), "--endpoint-name", endpoint_name, "--capture-sampling", str(sampling)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"--- {utc_now()} starting {model_dir} on port {port}\n")
            log.flush()
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True,  # outlives the command that deployed it
                                       env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
        if on_spawn:
            on_spawn(process.pid)
        try:
            wait_until_ok(f"http://{self.host}:{port}/ping", timeout=HEALTH_TIMEOUT, process=process)
        except ServerExited:
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
            raise DeployError(f"endpoint {endpoint_name}: the server exited with {process.returncode} "
                              f"(log {log_path}): {' | '.join(tail)}") from None
        except TimeoutError:
            self._stop(process.pid)
            raise DeployError(f"endpoint {endpoint_name}: /ping did not answer 200 within {HEALTH_TIMEOUT:.0f} s "
                              f"(log {log_path})") from None
        return process.pid

    @staticmethod
    def _stop(pid: int) -> None:
        """Stop a server found by _serves' rule: SIGTERM, SIGKILL after STOP_TIMEOUT."""
        arguments = _arguments(pid)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
                if finished:
                    return
            except ChildProcessError:  # started by another command: poll until it is gone (or its pid reused)
                if not process_alive(pid) or _arguments(pid) != arguments:
                    return
            time.sleep(0.1)
        if _arguments(pid) == arguments:  # still that server, not a program that took its pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
