"""Local deploys under what happens around them: another command deploying the same endpoint, a SIGKILL midway, a
version rejected before or while it deploys, another dataset's endpoint named by a run. The records say what runs,
and a rejected version is not brought back without a word."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from diagnosa.cli import main
from diagnosa.net import free_port
from diagnosa.services import LOCAL_BUCKET, LocalWorkspace, ServiceError
from pipelines.local_endpoints import UPDATING, DeployError, LocalEndpoints, _alive
from pipelines.registry import ARN_PREFIX, LocalModelRegistry

MODEL_URL = f"s3://{LOCAL_BUCKET}/artifacts/m/model.tar.gz"


@pytest.fixture
def workspace(model_workspace):
    return model_workspace


def _register(workspace: LocalWorkspace, group: str = "diagnosa", status: str = "Approved") -> dict:
    registry = LocalModelRegistry(workspace.root / "registry")
    arn = registry.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": "local/sklearn", "ModelDataUrl": MODEL_URL}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    return registry.describe_model_package(arn)


def _set_status(workspace: LocalWorkspace, package: dict, status: str) -> None:
    LocalModelRegistry(workspace.root / "registry").update_model_package(package["ModelPackageArn"], status)


def _stopped_record(endpoints: LocalEndpoints, name: str, model_dir, package: dict) -> None:
    """A record of ``package`` served on ``name`` and stopped (a reboot): its server gone, its model kept."""
    folder = endpoints.root / name
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port("127.0.0.1")
    (folder / "endpoint.json").write_text(json.dumps({
        "EndpointName": name, "EndpointStatus": "OutOfService", "EndpointConfigName": "old-config", "Port": port,
        "Url": f"http://127.0.0.1:{port}", "Pid": None, "ModelDir": str(model_dir), "ModelDataUrl": MODEL_URL,
        "ModelPackageArn": package["ModelPackageArn"], "CaptureSampling": 0}))


def test_a_second_deploy_of_an_endpoint_being_deployed_is_refused_naming_the_process(workspace):
    # Two `registry approve` at once: each stopped the other's new server, both failed, and a rejected version served
    # on while one of them said "serves nothing now".
    endpoints = workspace.endpoints(0)
    (endpoints.root / "diagnosa").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from diagnosa.lake import DataLake
        from pipelines.local_endpoints import LocalEndpoints
        from pipelines.local_jobs import LakeMapping
        endpoints = LocalEndpoints(Path({str(workspace.root)!r}), LakeMapping("b", DataLake.from_uri({workspace.lake.uri!r})))
        with endpoints._exclusive("diagnosa"):
            print("held", flush=True)
            time.sleep(120)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        package = _register(workspace)
        with pytest.raises(ServiceError, match=rf"endpoint diagnosa is being deployed by another process \(pid "
                                               rf"{holder.pid}\)"):
            workspace.deploy_approved(package, port=0)
        assert endpoints.servers("diagnosa") == ()  # nothing was started (nor stopped) beside the other's deploy
        assert not (endpoints.root / "diagnosa" / "endpoint.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL of the holder: the kernel released its hold, and the next deploy goes ahead.
    record = workspace.deploy_approved(package, port=0)
    assert record["EndpointStatus"] == "InService" and endpoints.servers("diagnosa") == (record["Pid"],)
    assert endpoints.describe("diagnosa")["ModelPackageArn"] == package["ModelPackageArn"]


def test_a_deploy_killed_after_spawning_its_server_leaves_a_record_of_what_runs(workspace, trained_model_dir):
    # SIGKILL of `registry approve` once the new server was spawned: v2 answered while `endpoint list` said
    # OutOfService with v1's config and a dead pid, and `endpoint start` killed v2 to start v1 (a rejected one).
    endpoints = workspace.endpoints(0)
    v1, v2 = _register(workspace), _register(workspace)
    _stopped_record(endpoints, "diagnosa", trained_model_dir, v1)
    _set_status(workspace, v1, "Rejected")
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, json
        from pathlib import Path
        import pipelines.local_endpoints as le
        from diagnosa.lake import DataLake
        from diagnosa.services import LocalWorkspace
        le.wait_until_ok = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # killed before /ping answers
        workspace = LocalWorkspace(Path({str(workspace.root)!r}), DataLake.from_uri({workspace.lake.uri!r}))
        workspace.deploy_approved(json.loads({json.dumps(json.dumps(v2))}))
        """)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    running = endpoints.servers("diagnosa")
    assert len(running) == 1
    record = endpoints.describe("diagnosa")
    assert record["EndpointStatus"] == "InService" and record["Pid"] == running[0]
    assert record["ModelPackageArn"] == v2["ModelPackageArn"] and record["EndpointConfigName"].startswith(
        "diagnosa-diagnosa-v2-")
    assert [r["EndpointName"] for r in workspace.in_service()] == ["diagnosa"]  # `registry list`: v2 serving
    assert record["Note"] == (f"a deploy of {record['EndpointConfigName']} was cut short: its server runs, not "
                              "checked to answer")  # `endpoint list` says so beside it
    assert endpoints.start("diagnosa") is None  # serves already: v2 is not replaced (by the rejected v1)
    assert _alive(running[0], workspace.root, "diagnosa")
    assert endpoints.stop("diagnosa")  # the note is the reading's, never written into the record
    assert "Note" not in json.loads((endpoints.root / "diagnosa" / "endpoint.json").read_text(encoding="utf-8"))


def test_a_deploy_in_progress_is_listed_as_updating_with_the_config_it_starts(workspace, monkeypatch, capsys):
    endpoints = workspace.endpoints(0)
    package = _register(workspace)
    seen = []

    def look(*args, **kwargs):  # while the new server starts, another command lists the endpoints
        other = LocalEndpoints(workspace.root, endpoints.mapping)
        seen.append(dict(other.describe("diagnosa")))
        assert main(["--workspace", str(workspace.root), "--lake", workspace.lake.uri, "endpoint", "list"]) == 0
        seen.append(capsys.readouterr().out)
        with pytest.raises(DeployError, match="endpoint diagnosa is being deployed by another process"):
            other.stop("diagnosa")
        return original(*args, **kwargs)

    import pipelines.local_endpoints as local_endpoints

    original = local_endpoints.wait_until_ok
    monkeypatch.setattr(local_endpoints, "LOCK_WAIT", 0.2, raising=False)
    monkeypatch.setattr(local_endpoints, "wait_until_ok", look)
    record = endpoints.deploy_model_package(package)
    assert seen[0]["EndpointStatus"] == UPDATING and seen[0]["EndpointConfigName"] == record["EndpointConfigName"]
    assert seen[0]["Pid"] == record["Pid"]
    assert f"diagnosa         {UPDATING}" in seen[1]
    assert endpoints.describe("diagnosa")["EndpointStatus"] == "InService"


def test_endpoint_start_refuses_a_rejected_version_and_a_rollback_to_one_says_so(workspace, trained_model_dir,
                                                                                capsys):
    # `registry reject 1` then `endpoint start` (as after every reboot): v1 served again, not a word said.
    endpoints = workspace.endpoints(0)
    v1 = _register(workspace)
    _stopped_record(endpoints, "diagnosa", trained_model_dir, v1)
    _set_status(workspace, v1, "Rejected")
    with pytest.raises(DeployError, match=r"endpoint diagnosa last served diagnosa v1, which is Rejected in the "
                                          r"registry: not started\. Approve a version to serve instead "
                                          r"\(`diagnosa registry approve N`\)"):
        endpoints.start("diagnosa")
    assert main(["--workspace", str(workspace.root), "--lake", workspace.lake.uri, "endpoint", "start",
                 "diagnosa"]) == 2
    assert "which is Rejected in the registry: not started" in capsys.readouterr().err
    assert endpoints.servers("diagnosa") == ()
    # A failed deploy's rollback to v1 (Rejected): it serves again, and the message says so.
    previous = endpoints.describe("diagnosa")
    with pytest.raises(DeployError, match=r"^new one failed; rolled back to old-config \(diagnosa v1\): v1 serves "
                                          r"again, and it is Rejected in the registry: approve another version, or "
                                          r"stop it \(`diagnosa endpoint stop diagnosa`\)$"):
        endpoints._roll_back("diagnosa", {**previous, "EndpointStatus": "InService"}, endpoints.root / "diagnosa",
                             DeployError("new one failed"), "new-config")
    assert endpoints.describe("diagnosa")["EndpointStatus"] == "InService"


def test_a_version_rejected_while_it_deploys_is_not_left_serving(workspace, monkeypatch):
    # `registry approve 3` deploying, `registry reject 3` meanwhile: the approve then said "now serves v3", and the
    # rejected version served with no warning anywhere.
    endpoints = workspace.endpoints(0)
    package = _register(workspace)
    start = LocalEndpoints._start

    def rejected_meanwhile(self, *args, **kwargs):
        pid = start(self, *args, **kwargs)
        _set_status(workspace, package, "Rejected")  # `registry reject` while /ping was awaited
        return pid

    monkeypatch.setattr(LocalEndpoints, "_start", rejected_meanwhile)
    with pytest.raises(ServiceError, match=r"endpoint diagnosa: diagnosa v1 was rejected while it was being deployed, "
                                           r"and is not served; no previous model to roll back to: endpoint diagnosa "
                                           r"serves nothing now"):
        workspace.deploy_approved(package, port=0)
    assert endpoints.servers("diagnosa") == () and endpoints.describe("diagnosa") is None


def test_a_runs_endpoint_step_does_not_replace_another_datasets_endpoint(workspace, trained_model_dir):
    # `run --local --param EndpointName=mydata --param ModelApprovalStatus=Approved` put the cohort's model on mydata's
    # endpoint; `registry approve --endpoint-name mydata` refused the same. The Endpoint step calls deploy() directly.
    endpoints = workspace.endpoints(0)
    theirs, ours = _register(workspace, group="mydata"), _register(workspace)
    port = free_port("127.0.0.1")
    server = endpoints._start("mydata", trained_model_dir, port, 0, workspace.root / "server.log")
    (endpoints.root / "mydata").mkdir(parents=True)
    (endpoints.root / "mydata" / "endpoint.json").write_text(json.dumps({
        "EndpointName": "mydata", "EndpointStatus": "InService", "EndpointConfigName": "theirs", "Port": port,
        "Url": f"http://127.0.0.1:{port}", "Pid": server, "ModelPackageArn": theirs["ModelPackageArn"]}))
    model = endpoints.create_model("step-model", {"ExecutionRoleArn": "arn:aws:iam::000000000000:role/r",
                                                  "PrimaryContainer": {"Image": "i", "ModelDataUrl": MODEL_URL}})
    endpoints.create_endpoint_config({"EndpointConfigName": "ours", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": model["ModelName"], "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}]})
    with pytest.raises(DeployError, match=r"endpoint mydata serves mydata v1, another dataset's model than group "
                                          r"diagnosa's: deploy it to its own endpoint \(diagnosa\)"):
        endpoints.deploy("mydata", "ours", package_arn=ours["ModelPackageArn"])
    assert _alive(server, workspace.root, "mydata") and endpoints.servers("mydata") == (server,)
    assert endpoints.describe("mydata")["ModelPackageArn"] == f"{ARN_PREFIX}/mydata/1"
    endpoints._stop(server)
    assert not (endpoints.root / "mydata" / "models" / "ours").exists()  # refused before the model was fetched
