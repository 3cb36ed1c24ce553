"""The whole pipeline definition run by the local executor on a small cohort: gate, registry, endpoint, approval.

One logistic-regression candidate keeps this to about a minute; the definition is otherwise the
one `diagnosa pipeline definition` prints (same builder, bucket ``diagnosa-local``).
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from diagnosa.cli import main as cli
from diagnosa.net import free_port
from diagnosa.services import LOCAL_BUCKET, local_definition
from inference.client import DiagnosaClient
from pipelines.definition import class_parameter
from pipelines.executor import open_local
from pipelines.local_endpoints import LocalEndpoints
from pipelines.local_jobs import LakeMapping

pytestmark = pytest.mark.slow
LOW = {"RecallThresholdNoEnfermo": "0.3", "RecallThresholdEnfermedadLeve": "0.3", "RecallThresholdEnfermedadAguda": "0.3",
       "RecallThresholdEnfermedadCronica": "0.3", "RecallThresholdEnfermedadTerminal": "0.3",
       "OrphanRecallThreshold": "0.1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, seed_lake):
    root = tmp_path_factory.mktemp("workspace")
    lake, prefix = seed_lake(root)
    endpoints = LocalEndpoints(root, LakeMapping(LOCAL_BUCKET, lake), port=0)
    lines: list[str] = []
    # No step cache: every run below really runs each job (the determinism check compares two real runs).
    executor = open_local(root, lake, LOCAL_BUCKET, endpoints=endpoints, progress=lines.append, use_cache=False)
    definition = local_definition(lake, ("logistic_regression",))
    yield {"root": root, "lake": lake, "executor": executor, "definition": definition, "endpoints": endpoints,
           "input": f"s3://{LOCAL_BUCKET}/{prefix}", "lines": lines}
    for record in endpoints.list():
        if record["EndpointStatus"] == "InService":
            endpoints.stop(record["EndpointName"])


@pytest.fixture(scope="module")
def approved_run(workspace):
    return workspace["executor"].start(workspace["definition"], {
        "InputDataUri": workspace["input"], "ModelApprovalStatus": "Approved", **LOW})


def evaluation(workspace, record) -> dict:
    outputs = record.steps["Evaluate"]["Properties"]["ProcessingOutputConfig"]["Outputs"]
    key = outputs["evaluation"]["S3Output"]["S3Uri"].removeprefix(f"s3://{LOCAL_BUCKET}/") + "/evaluation.json"
    return json.loads(workspace["lake"].get_bytes(key))


def test_champion_is_registered_with_metrics_and_lineage(workspace, approved_run):
    assert approved_run.status == "Succeeded", approved_run.data.get("FailureReason")
    arn = approved_run.steps["Register"]["Properties"]["ModelPackageArn"]
    package = workspace["executor"].registry.describe_model_package(arn)
    assert package["ModelApprovalStatus"] == "Approved" and package["ModelPackageVersion"] == 1
    metrics_uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    metrics = json.loads(workspace["lake"].get_bytes(metrics_uri.removeprefix(f"s3://{LOCAL_BUCKET}/")))
    assert metrics == evaluation(workspace, approved_run)
    assert set(metrics["diagnosa"]["per_class"]) == {"NO ENFERMO", "ENFERMEDAD LEVE", "ENFERMEDAD AGUDA",
                                                      "ENFERMEDAD CRÓNICA", "ENFERMEDAD TERMINAL"}
    # The monitoring baselines the registry entry points at exist, in Model Monitor's layout.
    lake = workspace["lake"]
    for source in (package["ModelMetrics"]["ModelDataQuality"]["Statistics"],
                   package["ModelMetrics"]["ModelDataQuality"]["Constraints"],
                   package["ModelMetrics"]["ModelQuality"]["Constraints"],
                   package["DriftCheckBaselines"]["ModelDataQuality"]["Constraints"]):
        document = json.loads(lake.get_bytes(source["S3Uri"].removeprefix(f"s3://{LOCAL_BUCKET}/")))
        assert document.get("version") == 0.0 or "multiclass_classification_constraints" in document, source
    statistics = json.loads(lake.get_bytes(package["ModelMetrics"]["ModelDataQuality"]["Statistics"]["S3Uri"]
                                           .removeprefix(f"s3://{LOCAL_BUCKET}/")))
    assert statistics["dataset"]["item_count"] > 0 and statistics["features"]
    lineage = package["CustomerMetadataProperties"]
    assert lineage["diagnosa:input-data"] == workspace["input"]
    assert lineage["diagnosa:execution"] == approved_run.id
    model_uri = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert workspace["lake"].exists(model_uri.removeprefix(f"s3://{LOCAL_BUCKET}/"))
    # Only this execution's prefix was written by the steps.
    assert workspace["lake"].list(f"artifacts/runs/{approved_run.id}/")


def test_approved_champion_is_deployed_with_data_capture(workspace, approved_run):
    deploy = approved_run.steps["Deploy"]["Properties"]
    assert deploy["EndpointStatus"] == "InService" and deploy["CaptureSampling"] == 100
    # The endpoint names the version the run registered (a cached re-run's twin, with the same model file, does not
    # also show as serving).
    assert deploy["ModelPackageArn"] == approved_run.steps["Register"]["Properties"]["ModelPackageArn"]
    client = DiagnosaClient("diagnosa", endpoint_url=deploy["Url"])
    prediction = client.predict([{"age": 67, "sex": "M", "temperature_c": 38.9, "symptoms": ["HP:0001945"]}])
    assert prediction.results[0]["category"] in metrics_labels(workspace, approved_run)
    assert prediction.event_id


def test_monitor_finds_the_served_versions_baselines(workspace, approved_run, capsys):
    out = workspace["root"] / "report-v1"
    assert cli(["--workspace", str(workspace["root"]), "monitor", "--last", "1h", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "baselines of arn:aws:sagemaker:local:000000000000:model-package/diagnosa/1" in printed
    assert (out / "report.json").is_file()
    assert cli(["--workspace", str(workspace["root"]), "monitor", "--endpoint-name", "nope"]) == 2
    assert "no local endpoint 'nope'" in capsys.readouterr().err


def metrics_labels(workspace, record) -> set[str]:
    return set(evaluation(workspace, record)["diagnosa"]["per_class"])


def test_same_inputs_give_the_same_definition_and_metrics_and_approval_redeploys(workspace, approved_run, capsys):
    pending = workspace["executor"].start(workspace["definition"], {"InputDataUri": workspace["input"], **LOW})
    assert pending.status == "Succeeded"
    assert pending.data["DefinitionSha256"] == approved_run.data["DefinitionSha256"]
    assert local_definition(workspace["lake"], ("logistic_regression",)) == workspace["definition"]
    first, second = evaluation(workspace, approved_run), evaluation(workspace, pending)
    assert first["diagnosa"]["per_class"] == second["diagnosa"]["per_class"]
    assert first["diagnosa"]["slices"] == second["diagnosa"]["slices"]
    assert "Deploy" not in pending.steps and "DeployIfApproved" in pending.steps, "pending versions are not deployed"
    before = workspace["endpoints"].describe("diagnosa")

    code = cli(["--workspace", str(workspace["root"]), "registry", "approve", "2", "--reason", "reviewed"])
    assert code == 0
    after = workspace["endpoints"].describe("diagnosa")
    assert after["EndpointStatus"] == "InService" and after["Port"] == before["Port"]
    assert after["ModelPackageArn"].endswith("/diagnosa/2") and after["History"][-1]["EndpointConfigName"] == \
        before["EndpointConfigName"]
    with urllib.request.urlopen(f"{after['Url']}/ping", timeout=5) as answer:
        assert answer.status == 200
    # Approving v1 back keeps two model copies, the served one and the one a rollback would start (every approve
    # unpacked one more, and none was removed).
    assert cli(["--workspace", str(workspace["root"]), "registry", "approve", "1"]) == 0
    assert cli(["--workspace", str(workspace["root"]), "registry", "approve", "2"]) == 0
    models = {path.name for path in (workspace["root"] / "endpoints" / "diagnosa" / "models").iterdir()}
    now = workspace["endpoints"].describe("diagnosa")
    assert models == {Path(now["ModelDir"]).name, now["History"][-1]["EndpointConfigName"]}
    # --port for an endpoint that exists moves it there (it was ignored); without --port it stays where it is.
    port = free_port("127.0.0.1")
    assert cli(["--workspace", str(workspace["root"]), "registry", "approve", "2", "--port", str(port)]) == 0
    moved = workspace["endpoints"].describe("diagnosa")
    assert (moved["Port"], moved["Url"], moved["EndpointStatus"]) == (port, f"http://127.0.0.1:{port}", "InService")
    with urllib.request.urlopen(f"{moved['Url']}/ping", timeout=5) as answer:
        assert answer.status == 200
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{now['Url']}/ping", timeout=5)
    assert cli(["--workspace", str(workspace["root"]), "registry", "approve", "2"]) == 0
    served = workspace["endpoints"].describe("diagnosa")
    assert served["Port"] == port
    # There was no way to start a stopped endpoint again but to approve a version anew: `endpoint start` starts the
    # model it served, on its port, after a stop or a killed server, and grows no history.
    endpoint = ["--workspace", str(workspace["root"]), "endpoint"]
    assert cli([*endpoint, "stop", "diagnosa"]) == 0
    assert cli([*endpoint, "start", "diagnosa"]) == 0
    started = workspace["endpoints"].describe("diagnosa")
    keep = ("EndpointStatus", "Port", "EndpointConfigName", "ModelDir", "ModelPackageArn", "History")
    assert {k: started[k] for k in keep} == {k: served[k] for k in keep} and started["Pid"] != served["Pid"]
    assert f"endpoint diagnosa InService on {served['Url']}" in capsys.readouterr().out
    assert cli([*endpoint, "start", "diagnosa"]) == 0
    assert f"endpoint diagnosa serves already on {served['Url']}" in capsys.readouterr().out
    os.kill(started["Pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while workspace["endpoints"].describe("diagnosa")["EndpointStatus"] != "OutOfService":
        assert time.monotonic() < deadline, "the killed server is still listed as serving"
        time.sleep(0.1)
    assert cli([*endpoint, "start", "diagnosa"]) == 0
    with urllib.request.urlopen(f"{served['Url']}/ping", timeout=5) as answer:
        assert answer.status == 200
    assert cli([*endpoint, "start", "diagnosis"]) == 2
    assert "no local endpoint diagnosis: did you mean diagnosa? (the local endpoints are diagnosa)" in capsys.readouterr().err
    assert cli(["--workspace", str(workspace["root"]), "registry", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    [v2] = [line for line in listing if line.strip().startswith("v2 ")]
    recall = first["diagnosa"]["macro"]["recall"]
    assert "Approved" in v2 and f"test recall: macro {recall:.3f}" in v2 and v2.endswith("[serving on diagnosa]")
    assert not any("[serving" in line for line in listing if line.strip().startswith("v1 "))

    # Rejecting the version that serves warns that the endpoint still serves it, and the list says so.
    assert cli(["--workspace", str(workspace["root"]), "registry", "reject", "2", "--reason", "recall doubt"]) == 0
    warned = capsys.readouterr()
    assert "v2: Rejected" in warned.out and "warning: v2 still serves on diagnosa" in warned.err
    assert cli(["--workspace", str(workspace["root"]), "registry", "list"]) == 0
    [v2] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("v2 ")]
    assert "Rejected" in v2 and v2.endswith("[serving on diagnosa — rejected, still serving]")


def test_a_model_below_a_threshold_is_stopped_by_the_gate(workspace, approved_run):
    registry = workspace["executor"].registry
    versions = len(registry.list_model_packages("diagnosa"))
    # Just above the worst class's recall in the approved run (the runs are deterministic: same metrics).
    worst = evaluation(workspace, approved_run)["diagnosa"]["worst_class_recall"]
    assert worst["recall"] < 0.99
    parameter = class_parameter(worst["label"])
    record = workspace["executor"].start(workspace["definition"], {
        "InputDataUri": workspace["input"], **LOW, parameter: f"{worst['recall'] + 0.01:.4f}"})
    assert record.status == "Failed"
    assert record.steps["RecallGateFailed"]["StepStatus"] == "Failed"
    assert worst["label"] in record.data["FailureReason"] and "short by" in record.data["FailureReason"]
    assert "Register" not in record.steps and len(registry.list_model_packages("diagnosa")) == versions
    assert record.data["Skipped"] == ["CreateModel", "Deploy", "DeployIfApproved", "EndpointConfig", "Register"]


def test_prods_promote_function_gates_the_registered_evaluation_as_the_runs_gate_did(workspace, approved_run):
    """The promote function (infra/functions/promote) checks a version's registered evaluation with the checks of a
    definition's gate: this run's real evaluation passes at the thresholds the run was started with, as its
    RecallGate did, and is refused naming the worst class at a threshold just above its recall, as the gate refuses
    such a run (test_a_model_below_a_threshold_is_stopped_by_the_gate)."""
    import boto3
    from lambda_functions import load_function
    from moto import mock_aws

    from pipelines.expressions import registration_gate

    promote = load_function("promote")
    package = workspace["executor"].registry.describe_model_package(
        approved_run.steps["Register"]["Properties"]["ModelPackageArn"])
    uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    worst = evaluation(workspace, approved_run)["diagnosa"]["worst_class_recall"]

    def gate(thresholds):
        definition = json.loads(json.dumps(workspace["definition"]))
        for parameter in definition["Parameters"]:
            if parameter["Name"] in thresholds:
                parameter["DefaultValue"] = float(thresholds[parameter["Name"]])
        return registration_gate(definition)

    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        for bucket in (LOCAL_BUCKET, "prod-lake"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        key = uri.removeprefix(f"s3://{LOCAL_BUCKET}/")
        s3.put_object(Bucket=LOCAL_BUCKET, Key=key, Body=workspace["lake"].get_bytes(key))
        env = {"SOURCE_GROUP": "diagnosa", "SOURCE_BUCKET_PREFIX": LOCAL_BUCKET, "TARGET_GROUP": "diagnosa-prod",
               "LAKE_BUCKET": "prod-lake", "GATE_KEY": "artifacts/code/gates/g.json"}
        s3.put_object(Bucket="prod-lake", Key=env["GATE_KEY"], Body=json.dumps(gate(LOW)).encode())
        promote.check_gate(s3, package, env)  # passes, as the run's gate did
        stricter = {**LOW, class_parameter(worst["label"]): worst["recall"] + 0.01}
        s3.put_object(Bucket="prod-lake", Key=env["GATE_KEY"], Body=json.dumps(gate(stricter)).encode())
        with pytest.raises(promote.Refused) as refused:
            promote.check_gate(s3, package, env)
    assert f"diagnosa.per_class['{worst['label']}'].recall is {worst['recall']:.4g}, needs >= " in str(refused.value)
    assert str(refused.value).count(" needs >= ") == 1  # only the class that fails

def test_an_endpoint_name_that_is_a_path_is_refused_before_any_file_is_named_after_it(tmp_path):
    # botocore's validator leaves the name's pattern unchecked: '../../x' filed an endpoint outside the workspace.
    from diagnosa.lake import DataLake
    from pipelines.local_endpoints import DeployError
    from pipelines.local_jobs import JobError, LakeMapping

    endpoints = LocalEndpoints(tmp_path / "ws", LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(tmp_path / "lake"))))
    with pytest.raises(DeployError, match="endpoint name '../../x' is not a SageMaker name"):
        endpoints.deploy_model_package({"ModelApprovalStatus": "Approved"}, endpoint_name="../../x")
    with pytest.raises(JobError, match="endpoint name '../x' is not a SageMaker name"):
        endpoints.deploy("../x", "config")
    assert not any(tmp_path.rglob("*.json"))


def test_a_port_another_process_listens_on_is_refused_before_the_server_starts(tmp_path):
    # The new server could not bind it, but the other process answered its /ping: the deploy said "now serves v1"
    # and that other process got the predictions.
    import socket

    from diagnosa.lake import DataLake
    from diagnosa.net import port_taken
    from pipelines.local_endpoints import PortInUse
    from pipelines.local_jobs import LakeMapping

    endpoints = LocalEndpoints(tmp_path / "ws", LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(tmp_path / "lake"))))
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert port_taken("127.0.0.1", port)
        with pytest.raises(PortInUse, match=f"endpoint toy: port {port} on 127.0.0.1 is in use by another process"):
            endpoints._start("toy", tmp_path / "model", port, 0, tmp_path / "server.log")
    assert not port_taken("127.0.0.1", port, wait=1.0)
    assert not (tmp_path / "server.log").exists(), "no server was started"
