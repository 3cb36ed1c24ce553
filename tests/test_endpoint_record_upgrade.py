"""An endpoint record an older Diagnosa wrote: a run's Deploy step recorded no ModelPackageArn (the version it
serves) before the version was recorded. The run's own record names the version (its Register step): it is filled
in, so a cached re-run's twin (same model file) is not taken as serving, and a Rejected version is not started
again. When nothing says which version serves, a Rejected twin refuses `endpoint start`."""
from __future__ import annotations

import json

import pytest
from test_endpoint_deploy_races import MODEL_URL, _register, _set_status  # tests/: one registry helper

from diagnosa.cli import main
from diagnosa.services import LocalWorkspace, serves
from pipelines.local_endpoints import DeployError, LocalEndpoints
from pipelines.registry import LocalModelRegistry

EXECUTION = "20261206T161809Z-9691a7"  # an older Diagnosa's execution id
CONFIG = f"diagnosa-{EXECUTION}"


@pytest.fixture
def workspace(model_workspace):
    return model_workspace


def _cli(workspace: LocalWorkspace, *arguments: str) -> int:
    return main(["--workspace", str(workspace.root), "--lake", workspace.lake.uri, *arguments])


def _old_run(workspace: LocalWorkspace, endpoints: LocalEndpoints, package: dict | None, *,
             config: str = CONFIG) -> None:
    """What an older Diagnosa's `run --local` left: its execution record (Register named ``package``; none when the
    execution record is gone), the model and config its steps created, and an endpoint record without
    ModelPackageArn, stopped (a reboot)."""
    model_name = f"CreateModel-{EXECUTION}"
    endpoints.create_model(model_name, {"ExecutionRoleArn": "arn:aws:iam::000000000000:role/x",
                                        "PrimaryContainer": {"Image": "local/sklearn", "ModelDataUrl": MODEL_URL}})
    endpoints.create_endpoint_config({
        "EndpointConfigName": CONFIG,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model_name, "InitialInstanceCount": 1,
                                "InstanceType": "ml.m5.large"}]})
    if package is not None:
        folder = workspace.root / "executions" / EXECUTION
        folder.mkdir(parents=True)
        (folder / "execution.json").write_text(json.dumps({
            "PipelineExecutionId": EXECUTION, "PipelineExecutionStatus": "Succeeded", "Steps": {
                "Register": {"StepName": "Register", "StepStatus": "Succeeded",
                             "Properties": {"ModelPackageArn": package["ModelPackageArn"]}},
                "EndpointConfig": {"StepName": "EndpointConfig", "StepStatus": "Succeeded",
                                   "Properties": {"EndpointConfigName": config}},
                "Deploy": {"StepName": "Deploy", "StepStatus": "Succeeded",
                           "Properties": {"EndpointName": "diagnosa", "EndpointConfigName": config,
                                          "ModelDataUrl": MODEL_URL}}}}))
    folder = endpoints.root / "diagnosa"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "endpoint.json").write_text(json.dumps({
        "EndpointName": "diagnosa", "EndpointArn": "arn:aws:sagemaker:local:000000000000:endpoint/diagnosa",
        "EndpointConfigName": CONFIG, "EndpointStatus": "OutOfService", "ModelName": model_name,
        "ModelDataUrl": MODEL_URL, "ModelDir": str(folder / "models" / CONFIG), "CaptureSampling": 0,
        "Port": 18699, "Pid": None, "Url": "http://127.0.0.1:18699", "History": []}, indent=2))


def _on_disk(endpoints: LocalEndpoints) -> dict:
    return json.loads((endpoints.root / "diagnosa" / "endpoint.json").read_text())


def test_an_old_record_gets_the_version_its_run_registered_and_a_rejected_one_is_not_started(workspace, capsys):
    endpoints = workspace.endpoints(0)
    v1 = _register(workspace)
    v2 = _register(workspace, status="PendingManualApproval")  # cached re-runs: the same model file
    v3 = _register(workspace)
    _old_run(workspace, endpoints, v3)
    record = endpoints.describe("diagnosa")
    assert record["ModelPackageArn"] == v3["ModelPackageArn"]
    assert _on_disk(endpoints)["ModelPackageArn"] == v3["ModelPackageArn"]  # written back
    assert [serves(record, p) for p in (v1, v2, v3)] == [False, False, True]
    # The old model serves again (a reboot); only v3 is listed as serving, and rejecting v1 warns of nothing.
    assert _cli(workspace, "endpoint", "start", "diagnosa", "--port", "0") == 0
    capsys.readouterr()
    assert _cli(workspace, "registry", "list") == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("v")]
    assert [("[serving on diagnosa]" in line) for line in listed] == [False, False, True]
    assert _cli(workspace, "registry", "reject", "1") == 0
    assert "still serves" not in capsys.readouterr().err
    # v3 rejected, stopped, started again (a reboot): refused, as for a record that names its version.
    assert _cli(workspace, "registry", "reject", "3") == 0
    assert "warning: v3 still serves on diagnosa" in capsys.readouterr().err
    assert _cli(workspace, "endpoint", "stop", "diagnosa") == 0
    capsys.readouterr()
    assert _cli(workspace, "endpoint", "start", "diagnosa", "--port", "0") == 2
    assert "endpoint diagnosa last served diagnosa v3, which is Rejected in the registry: not started" in (
        capsys.readouterr().err)
    assert endpoints.servers("diagnosa") == ()


def test_an_old_record_whose_version_cannot_be_known_is_not_started_when_a_twin_is_rejected(workspace, capsys):
    endpoints = workspace.endpoints(0)
    v1 = _register(workspace)
    _register(workspace)  # v2, a cached re-run's twin
    _old_run(workspace, endpoints, None)  # its execution record gone: nothing says which version serves
    _set_status(workspace, v1, "Rejected")
    assert "ModelPackageArn" not in endpoints.describe("diagnosa")
    with pytest.raises(DeployError, match=r"not started"):
        endpoints.start("diagnosa")
    assert _cli(workspace, "endpoint", "start", "diagnosa", "--port", "0") == 2
    err = capsys.readouterr().err
    assert ("endpoint diagnosa: its record endpoints/diagnosa/endpoint.json was written by an older Diagnosa and "
            "does not say which version it serves; its model file is that of diagnosa v1, diagnosa v2, and "
            "diagnosa v1 is Rejected in the registry: not started. `diagnosa registry approve N` deploys a version "
            "and records it as the one the endpoint serves") in err
    assert endpoints.servers("diagnosa") == ()
    assert "ModelPackageArn" not in _on_disk(endpoints)


def test_an_old_record_is_not_given_a_version_its_execution_did_not_deploy(workspace):
    # The execution's config is another one (a folder reused, a hand edit): the record is left as it is.
    endpoints = workspace.endpoints(0)
    v1 = _register(workspace)
    _old_run(workspace, endpoints, v1, config="diagnosa-another")
    _set_status(workspace, v1, "Rejected")
    assert "ModelPackageArn" not in endpoints.describe("diagnosa")
    assert "ModelPackageArn" not in _on_disk(endpoints)
    with pytest.raises(DeployError, match=r"written by an older Diagnosa .* diagnosa v1 is Rejected"):
        endpoints.start("diagnosa")


def test_a_deploy_over_an_old_record_of_another_datasets_model_is_refused(workspace):
    endpoints = workspace.endpoints(0)
    _register(workspace, group="toy")  # the only version of the served model file: toy's
    registry = LocalModelRegistry(workspace.root / "registry")
    other = registry.create_model_package(
        ModelPackageGroupName="mi-datos", ModelApprovalStatus="Approved",
        InferenceSpecification={"Containers": [{"Image": "local/sklearn",
                                                "ModelDataUrl": MODEL_URL.replace("/m/", "/other/")}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})
    previous = {"EndpointName": "diagnosa", "EndpointStatus": "InService", "ModelDataUrl": MODEL_URL}
    with pytest.raises(DeployError, match=r"^endpoint diagnosa serves a model of toy, another dataset's model than "
                                          r"group mi-datos's"):
        endpoints.check_dataset("diagnosa", previous, other["ModelPackageArn"])
