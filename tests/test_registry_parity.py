"""The local registry and endpoints where they used to part from SageMaker's: a long dataset name's resources, the
port an existing endpoint is moved to with --port 0, two approvals close together, and the calls `approve --region`
makes to find one version."""
from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import pytest

from diagnosa.cli import main
from diagnosa.data.schema import DATASET_NAME_MAX, RESOURCE_NAME
from diagnosa.services import LOCAL_BUCKET, LocalWorkspace
from pipelines.local_endpoints import LocalEndpoints
from pipelines.registry import LocalModelRegistry

MODEL_URL = f"s3://{LOCAL_BUCKET}/artifacts/m/model.tar.gz"
PORTS = range(47300, 47400)  # the ports these tests may listen on


def _free_port(*_args: object) -> int:
    """A free port of PORTS (what free_port answers here: these tests keep to their range)."""
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 47300-47399")


@contextmanager
def _squatter(port: int) -> Iterator[None]:
    """Another process's listener on ``port`` (what took an endpoint's port while it was stopped)."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        yield


@pytest.fixture
def workspace(model_workspace, monkeypatch):
    import pipelines.local_endpoints as local_endpoints

    monkeypatch.setattr(local_endpoints, "free_port", _free_port)
    return model_workspace


def _register(workspace: LocalWorkspace, group: str = "diagnosa") -> dict:
    registry = LocalModelRegistry(workspace.root / "registry")
    arn = registry.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={"Containers": [{"Image": "local/sklearn", "ModelDataUrl": MODEL_URL}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    return registry.describe_model_package(arn)


def _status(workspace: LocalWorkspace, package: dict) -> str:
    return LocalModelRegistry(workspace.root / "registry").describe_model_package(
        package["ModelPackageArn"])["ModelApprovalStatus"]


# ------------------------------------------------------------------------------------------------ names within 63

def test_local_resource_names_fit_sagemakers_63_for_every_allowed_name():
    from pipelines.local_endpoints import deployment_names

    epoch = int(time.time())
    for endpoint, group in (("diagnosa", "diagnosa"), ("e" * 63, "g" * 63), ("a-" * 31 + "b", "c" * 50),
                            ("x", "y" * DATASET_NAME_MAX)):
        model, config = deployment_names(endpoint, group, 123456, epoch)
        assert RESOURCE_NAME.fullmatch(model) and RESOURCE_NAME.fullmatch(config), (model, config)
        assert model.endswith(f"-v123456-{epoch}-model") or model.endswith("-model") and "-v123456-" in model
        assert f"-v123456-{epoch}" in config
    # Short names stay as they were; long ones are unique per deployment (a hash of the whole name).
    assert deployment_names("diagnosa", "diagnosa", 2, epoch) == (f"diagnosa-v2-{epoch}-model",
                                                                  f"diagnosa-diagnosa-v2-{epoch}")
    long = "g" * DATASET_NAME_MAX
    assert deployment_names(long, long, 2, epoch) != deployment_names(long, long, 2, epoch + 1)
    assert deployment_names(long, long, 2, epoch)[1] != deployment_names(long, long, 3, epoch)[1]
    assert deployment_names(long[:-1] + "h", long, 2, epoch)[1] != deployment_names(long, long, 2, epoch)[1]


def test_a_dataset_with_a_50_character_name_is_approved_and_deployed(workspace, capsys):
    # `registry approve` named the config <endpoint>-<group>-v<N>-<epoch>: over 63 from a 25-character dataset name
    # on; the version was written Approved, then the deploy failed telling the user to fix a name they cannot.
    group = "rare-disease-cohort-of-hospital-x-and-clinic-y-420"
    assert len(group) == DATASET_NAME_MAX
    package = _register(workspace, group)
    port = _free_port()
    assert main(["--workspace", str(workspace.root), "registry", "approve", "1", "--group", group,
                 "--port", str(port)]) == 0, capsys.readouterr().err
    assert f"endpoint {group} now serves v1 on http://127.0.0.1:{port}" in capsys.readouterr().out
    record = workspace.endpoints().describe(group)
    assert record["EndpointStatus"] == "InService" and record["ModelPackageArn"] == package["ModelPackageArn"]
    assert len(record["EndpointConfigName"]) <= 63 and len(record["ModelName"]) <= 63
    assert record["EndpointConfigName"].startswith(group[:20]) and "-v1-" in record["EndpointConfigName"]
    assert main(["--workspace", str(workspace.root), "endpoint", "stop", group]) == 0


def test_names_that_would_not_fit_refuse_the_approval_before_the_status_is_written(workspace, monkeypatch, capsys):
    import pipelines.local_endpoints as local_endpoints

    package = _register(workspace)
    monkeypatch.setattr(local_endpoints, "deployment_names", lambda *a: ("m" * 64, "c"))
    assert main(["--workspace", str(workspace.root), "registry", "approve", "1", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert "diagnosa v1 not approved (the registry is unchanged: it is still PendingManualApproval)" in err
    assert "its local model would be named" in err and "at most 63" in err
    assert _status(workspace, package) == "PendingManualApproval"
    assert not (workspace.root / "endpoints" / "diagnosa").exists()


# ------------------------------------------------------------------------------------------------ --port 0

def test_port_0_moves_an_existing_endpoint_off_a_port_another_process_took(workspace, capsys):
    # The hint for a taken port says `--port 0`; for an existing endpoint 0 counted as "not asked", and the deploy
    # kept the taken port and failed again, for `registry approve N --port 0` and `endpoint start NAME --port 0`.
    ws = ["--workspace", str(workspace.root)]
    _register(workspace)
    first = _free_port()
    assert main([*ws, "registry", "approve", "1", "--port", str(first)]) == 0, capsys.readouterr().err
    endpoints = workspace.endpoints()
    assert endpoints.describe("diagnosa")["Port"] == first
    assert main([*ws, "endpoint", "stop", "diagnosa"]) == 0
    with _squatter(first):
        assert main([*ws, "endpoint", "start", "diagnosa"]) == 2  # its own port: taken
        assert f"port {first} on 127.0.0.1 is in use by another process" in capsys.readouterr().err
        assert main([*ws, "endpoint", "start", "diagnosa", "--port", "0"]) == 0, capsys.readouterr().err
        moved = endpoints.describe("diagnosa")
        assert moved["EndpointStatus"] == "InService" and moved["Port"] not in (first, 0)
        assert moved["Port"] in PORTS and moved["Url"] == f"http://127.0.0.1:{moved['Port']}"
    assert main([*ws, "endpoint", "stop", "diagnosa"]) == 0
    capsys.readouterr()
    with _squatter(moved["Port"]):
        assert main([*ws, "registry", "approve", "1", "--port", "0"]) == 0, capsys.readouterr().err
        again = endpoints.describe("diagnosa")
        assert again["EndpointStatus"] == "InService" and again["Port"] not in (moved["Port"], 0)
    assert main([*ws, "endpoint", "stop", "diagnosa"]) == 0


def test_port_0_is_an_existing_endpoints_own_port_while_it_is_free(workspace):
    endpoints = workspace.endpoints()
    previous = {"Port": 47399}
    assert endpoints._port_for("diagnosa", previous) == 47399
    assert workspace.endpoints(47398)._port_for("diagnosa", previous) == 47398
    assert workspace.endpoints(0)._port_for("diagnosa", previous) == 47399  # a free port: its own, while it is
    with _squatter(47399):
        assert workspace.endpoints(0)._port_for("diagnosa", previous) not in (47399, 0)
        assert workspace.endpoints()._port_for("diagnosa", previous) == 47399  # not asked: its own, taken or not


def test_port_8080_asked_for_is_never_swapped_for_a_free_one(workspace, monkeypatch):
    # `run --local --dataset x --port 8080` (`make run` gives --port 8080) beside another dataset's endpoint on 8080
    # got a random port without a word; any other port asked for is kept (a taken one then refused as taken).
    from pipelines.local_endpoints import DEFAULT_PORT, LocalEndpoints

    other = {"EndpointName": "urgencias", "EndpointStatus": "InService", "Port": DEFAULT_PORT}
    monkeypatch.setattr(LocalEndpoints, "list", lambda self: [other])
    assert workspace.endpoints(DEFAULT_PORT)._new_port("diagnosa") == DEFAULT_PORT
    assert workspace.endpoints(47398)._new_port("diagnosa") == 47398
    assert workspace.endpoints()._new_port("diagnosa") in PORTS  # not asked: the default unless another holds it
    assert workspace.endpoints()._new_port("urgencias") == DEFAULT_PORT  # its own endpoint's port is not another's


def test_a_port_another_endpoint_of_the_workspace_holds_is_refused_by_name_before_the_approval(workspace,
                                                                                              monkeypatch, capsys):
    # Said as "another workspace's endpoint?", after the version was written Approved.
    from pipelines.local_endpoints import LocalEndpoints, PortInUse

    package = _register(workspace)
    port = _free_port()
    other = {"EndpointName": "urgencias", "EndpointStatus": "InService", "Port": port}
    monkeypatch.setattr(LocalEndpoints, "list", lambda self: [other])
    assert main(["--workspace", str(workspace.root), "registry", "approve", "1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is endpoint urgencias's, of this workspace" in err and "`diagnosa endpoint stop urgencias`" in err
    assert _status(workspace, package) == "PendingManualApproval"
    with pytest.raises(PortInUse, match=f"port {port} is endpoint urgencias's"):  # the deploy's own check too
        workspace.endpoints(port)._start("diagnosa", workspace.root, port, 0, workspace.root / "x.log")


# ------------------------------------------------------------------------------------------------ approvals together

def _approve_in_thread(argv: list[str]) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)))
    thread.start()
    return thread, result


def test_an_approval_while_another_deploys_waits_for_it_then_deploys_the_newest(workspace, monkeypatch, capsys):
    # `approve 2` then `approve 1` half a second later: v1 was written Approved, then refused after 3 s ("being
    # deployed by another process ... try again", exit 2). On AWS the deploy function keeps the later approval pending
    # and deploys it once the endpoint is InService: the newest approval wins.
    import pipelines.local_endpoints as local_endpoints

    monkeypatch.setattr(local_endpoints, "LOCK_WAIT", 0.2)
    v1 = _register(workspace)
    _register(workspace)
    other = LocalEndpoints(workspace.root, workspace.endpoints().mapping)  # another command's deploy of it
    port = _free_port()
    with other._exclusive("diagnosa"):
        thread, result = _approve_in_thread(["--workspace", str(workspace.root), "registry", "approve", "1",
                                             "--port", str(port)])
        time.sleep(1.5)
        assert thread.is_alive() and not result  # waiting, not refused
    thread.join(timeout=180)
    assert result == [0], capsys.readouterr().err
    captured = capsys.readouterr()
    assert "endpoint diagnosa is being deployed by another process" in captured.err
    assert "waiting for it to end (at most" in captured.err and "then deploys v1" in captured.err
    assert f"endpoint diagnosa now serves v1 on http://127.0.0.1:{port}" in captured.out
    record = workspace.endpoints().describe("diagnosa")
    assert record["EndpointStatus"] == "InService" and record["ModelPackageArn"] == v1["ModelPackageArn"]
    assert main(["--workspace", str(workspace.root), "endpoint", "stop", "diagnosa"]) == 0


def test_an_approval_still_blocked_after_the_wait_is_a_failure_naming_the_command_not_bad_input(workspace,
                                                                                                 monkeypatch, capsys):
    import pipelines.local_endpoints as local_endpoints
    from diagnosa.commands.common import EXIT_FAILED

    monkeypatch.setattr(local_endpoints, "LOCK_WAIT", 0.2)
    monkeypatch.setattr(local_endpoints, "DEPLOY_WAIT", 0.6, raising=False)
    package = _register(workspace)
    other = LocalEndpoints(workspace.root, workspace.endpoints().mapping)
    with other._exclusive("diagnosa"):
        code = main(["--workspace", str(workspace.root), "registry", "approve", "1", "--port", "47399"])
    assert code == EXIT_FAILED
    waited, err = capsys.readouterr().err.splitlines()
    assert waited.startswith("endpoint diagnosa is being deployed by another process (pid ") and waited.endswith(
        "then deploys v1")
    assert err.startswith("diagnosa: error: diagnosa v1 is Approved in the registry, but not deployed: endpoint "
                          "diagnosa is being deployed by another process")
    assert err.endswith("Once that deploy ends, approving it again deploys it "
                                 "(`diagnosa registry approve 1 --port 47399`)")
    assert _status(workspace, package) == "Approved"
    assert not (workspace.root / "endpoints" / "diagnosa" / "endpoint.json").exists()


# ------------------------------------------------------------------------------------------------ --region

def test_finding_one_versions_arn_on_sagemaker_describes_no_version():
    # `registry approve N --region` described every version of the group to find one ARN: 150 versions, 150
    # DescribeModelPackage calls. ListModelPackages' summaries carry the version and its ARN.
    import boto3
    from moto import mock_aws

    from pipelines.registry import RegistryError, SageMakerRegistry

    with mock_aws():
        aws = boto3.client("sagemaker", region_name="eu-west-1")
        aws.create_model_package_group(ModelPackageGroupName="diagnosa")
        arns = [aws.create_model_package(ModelPackageGroupName="diagnosa", InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/x:1",
                            "ModelDataUrl": "s3://b/m.tar.gz"}],
            "SupportedContentTypes": ["application/json"], "SupportedResponseMIMETypes": ["application/json"]})[
            "ModelPackageArn"] for _ in range(30)]
        calls: Counter[str] = Counter()
        aws.meta.events.register("before-call.sagemaker.*", lambda model, **_: calls.update([model.name]))
        registry = SageMakerRegistry(aws)
        assert registry.package_arn("diagnosa", 3) == arns[2]
        assert calls["DescribeModelPackage"] == 0 and calls["ListModelPackages"] >= 1
        with pytest.raises(RegistryError, match="model package diagnosa/31 does not exist"):
            registry.package_arn("diagnosa", 31)
