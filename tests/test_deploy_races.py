"""Two runs or approvals acting on one workspace's endpoint at once: a rejected version is refused before what serves
is touched, a run's deploy waits for another's as an approval's does, the latest approval serves whatever order the
waiters get the endpoint in, and the commands' messages and exit statuses say what happened."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest
from test_endpoint_deploy_races import _register, _set_status  # tests/: one registry helper

import pipelines.local_endpoints as local_endpoints
from diagnosa.cli import main
from diagnosa.commands.local import report_run
from diagnosa.net import free_port
from diagnosa.services import LocalWorkspace, ServiceError
from pipelines.local_endpoints import DEPLOY_WAIT, DeployError, LocalEndpoints, _alive

MODEL_URL = "s3://diagnosa-local/artifacts/m/model.tar.gz"
WAIT = 60.0  # the most a test waits for a thread's step: a bound, not a pace


@pytest.fixture
def workspace(model_workspace):
    return model_workspace


@pytest.fixture
def short_lock_wait(monkeypatch):
    """A listing's probe waited for 0.2 s, not 3: the waits beyond it are what is tested."""
    monkeypatch.setattr(local_endpoints, "LOCK_WAIT", 0.2)


def _cli(workspace: LocalWorkspace, *arguments: str) -> int:
    return main(["--workspace", str(workspace.root), "--lake", workspace.lake.uri, *arguments])


class _Holder:
    """Another command's hold on endpoint ``name`` (a LocalEndpoints of its own, in a thread: a flock of its own open
    file excludes this process's others), kept until released."""

    def __init__(self, workspace: LocalWorkspace, name: str = "diagnosa"):
        self.endpoints = LocalEndpoints(workspace.root, workspace.endpoints().mapping)
        self.held, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold, args=(name,), daemon=True)

    def _hold(self, name: str) -> None:
        with self.endpoints._exclusive(name):
            self.held.set()
            self.release.wait(WAIT)

    def __enter__(self) -> _Holder:
        self.thread.start()
        assert self.held.wait(WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(WAIT)


class _Deploy(threading.Thread):
    """``call()`` in a thread; its result or exception kept."""

    def __init__(self, call):
        super().__init__(daemon=True)
        self.call, self.result, self.error = call, None, None

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as err:  # noqa: BLE001 (the test asserts on it)
            self.error = err


def test_a_rejected_version_is_refused_before_the_serving_server_is_touched(workspace):
    # `run --local --resume ID` of a run whose version was rejected while it deployed: the approved v1's server was
    # stopped, the rejected v2 started (and answered), then v1 again: an outage, and "rejected while it was being
    # deployed" said again, with --resume suggested again.
    endpoints = workspace.endpoints(0)
    v1 = _register(workspace)
    serving = workspace.deploy_approved(v1, port=0)
    v2 = _register(workspace)
    model = endpoints.create_model("v2-model", {"ExecutionRoleArn": "arn:aws:iam::000000000000:role/r",
                                                "PrimaryContainer": {"Image": "i", "ModelDataUrl": MODEL_URL}})
    endpoints.create_endpoint_config({"EndpointConfigName": "v2-config", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": model["ModelName"], "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}]})
    _set_status(workspace, v2, "Rejected")
    launched = []
    start = LocalEndpoints._start

    def spy(self, *args, **kwargs):
        launched.append(args)
        return start(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalEndpoints, "_start", spy)
        with pytest.raises(DeployError) as refused:  # as the run's Endpoint step deploys it
            endpoints.deploy("diagnosa", "v2-config", package_arn=v2["ModelPackageArn"])
    assert str(refused.value) == ("endpoint diagnosa: diagnosa v2 is Rejected in the registry: not deployed, and what "
                                  "the endpoint served is unchanged")
    assert launched == []  # neither v2 nor a rollback to v1 was started
    assert endpoints.servers("diagnosa") == (serving["Pid"],) and _alive(serving["Pid"], workspace.root, "diagnosa")
    record = endpoints.describe("diagnosa")
    assert record["EndpointStatus"] == "InService" and record["ModelPackageArn"] == v1["ModelPackageArn"]


def test_a_run_whose_deploy_was_refused_as_rejected_is_not_told_to_resume(workspace, capsys):
    v1 = _register(workspace)
    _set_status(workspace, v1, "Rejected")
    folder = workspace.root / "executions" / "abc"
    record = SimpleNamespace(
        id="abc", status="Failed", path=folder / "execution.json", folder=folder,
        data={"FailureReason": "step Deploy: endpoint diagnosa: diagnosa v1 is Rejected in the registry: not deployed"},
        steps={"Register": {"StepName": "Register", "StepType": "RegisterModel", "StepStatus": "Succeeded",
                            "Properties": {"ModelPackageArn": v1["ModelPackageArn"]}},
               "Deploy": {"StepName": "Deploy", "StepType": "Endpoint", "StepStatus": "Failed", "Properties": {}}})
    assert report_run(record, workspace.lake) == 1
    out = capsys.readouterr().out
    assert "--resume" not in out
    assert "diagnosa v1 is Rejected in the registry: resuming does not deploy it. If it may serve after all, " \
           "`diagnosa registry approve 1` deploys it" in out


def test_a_runs_deploy_waits_for_another_deploy_of_the_endpoint(workspace, short_lock_wait):
    # Two `run --local` at once, each registering an Approved version: the second one's Deploy failed after 3 s
    # ("being deployed by another process"), its Approved version serving nowhere.
    said = []
    waiting = threading.Event()  # the run's deploy waits for the other one (or has ended)

    def progress(line: str) -> None:
        said.append(line)
        if "is being deployed by another process" in line:
            waiting.set()

    executor = workspace.executor(port=0, progress=progress)
    package = _register(workspace)
    def deployed() -> dict:
        try:
            return executor.endpoints.deploy_model_package(package)
        finally:
            waiting.set()  # refused without a wait: the test goes on at once, and fails below

    with _Holder(workspace) as holder:
        deploy = _Deploy(deployed)
        deploy.start()
        assert waiting.wait(WAIT)
        holder.release.set()  # the other deploy ends
        deploy.join(WAIT)
    assert deploy.error is None, deploy.error
    assert any(f"at most {DEPLOY_WAIT - 0.2:.0f} s more" in line for line in said), said
    assert deploy.result["EndpointStatus"] == "InService"
    assert workspace.endpoints().describe("diagnosa")["ModelPackageArn"] == package["ModelPackageArn"]


@pytest.mark.parametrize("first", ["later-approval-first", "earlier-approval-first"])
def test_the_latest_approval_serves_whichever_waiter_gets_the_endpoint_first(workspace, short_lock_wait, first):
    # `approve 3 & sleep 2; approve 1 & sleep 2; approve 2 &`: v1 sometimes served though v2 was approved last (the
    # waiters poll the lock: no order among them).
    v1, v2 = _register(workspace), _register(workspace)
    endpoints = workspace.endpoints()
    waiting = {1: threading.Event(), 2: threading.Event()}
    go = {1: threading.Event(), 2: threading.Event()}  # a waiter held back (in its on_wait) until the other has ended

    def waits(version: int):
        def on_wait(line: str) -> None:
            waiting[version].set()
            assert go[version].wait(WAIT)
        return on_wait

    held_back = 1 if first == "later-approval-first" else 2
    go[3 - held_back].set()
    with _Holder(workspace) as holder:
        earlier = _Deploy(lambda: workspace.deploy_approved(v1, port=0, wait=DEPLOY_WAIT, on_wait=waits(1)))
        earlier.start()
        assert waiting[1].wait(WAIT)  # v1's deploy was asked first, and waits
        later = _Deploy(lambda: workspace.deploy_approved(v2, port=0, wait=DEPLOY_WAIT, on_wait=waits(2)))
        later.start()
        assert waiting[2].wait(WAIT)
        holder.release.set()
        (earlier if held_back == 2 else later).join(WAIT)  # the one not held back got the endpoint first
        go[held_back].set()
        earlier.join(WAIT)
        later.join(WAIT)
    assert later.error is None, later.error
    assert isinstance(earlier.error, ServiceError), earlier.result
    assert str(earlier.error) == ("endpoint diagnosa: diagnosa v1 not deployed: a later deploy of the endpoint, "
                                  "diagnosa v2's, was asked while this one waited, and the latest one serves")
    record = endpoints.describe("diagnosa")
    assert record["EndpointStatus"] == "InService" and record["ModelPackageArn"] == v2["ModelPackageArn"]
    assert endpoints.servers("diagnosa") == (record["Pid"],)


def test_an_approval_rejected_while_it_deploys_says_it_is_rejected_with_exit_status_1(workspace, capsys):
    # `registry approve 3 & sleep 3; registry reject 3`: the approve said "v3 is Approved in the registry, but not
    # deployed: ... or reject it" with exit status 2, though v3 was Rejected by then.
    package = _register(workspace, status="PendingManualApproval")
    start = LocalEndpoints._start

    def rejected_meanwhile(self, *args, **kwargs):
        pid = start(self, *args, **kwargs)
        _set_status(workspace, package, "Rejected")  # `registry reject 1` while /ping was awaited
        return pid

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalEndpoints, "_start", rejected_meanwhile)
        status = _cli(workspace, "registry", "approve", "1", "--port", "0")
    captured = capsys.readouterr()
    assert status == 1, captured.err
    assert captured.out.startswith("diagnosa v1: Approved\n")
    assert "Approved in the registry" not in captured.err and "reject it" not in captured.err
    assert captured.err.startswith("diagnosa: error: diagnosa v1 is Rejected in the registry now (rejected since this "
                                   "approval), and not deployed: endpoint diagnosa: diagnosa v1 was rejected while it "
                                   "was being deployed, and is not served")
    assert captured.err.rstrip().endswith("If it may serve after all, approving it again deploys it "
                                          "(`diagnosa registry approve 1`)")
    assert workspace.endpoints().servers("diagnosa") == ()


@pytest.mark.parametrize("command", ["stop", "start"])
def test_endpoint_stop_and_start_refused_during_a_deploy_exit_with_status_1(workspace, short_lock_wait, capsys,
                                                                             command):
    folder = workspace.root / "endpoints" / "diagnosa"
    folder.mkdir(parents=True)
    port = free_port("127.0.0.1")
    (folder / "endpoint.json").write_text(json.dumps({
        "EndpointName": "diagnosa", "EndpointStatus": "OutOfService", "EndpointConfigName": "old-config",
        "Port": port, "Url": f"http://127.0.0.1:{port}", "Pid": None}))
    with _Holder(workspace):
        status = _cli(workspace, "endpoint", command, "diagnosa")
    err = capsys.readouterr().err
    assert status == 1, err
    assert err.startswith("diagnosa: error: endpoint diagnosa is being deployed by another process (pid ")
