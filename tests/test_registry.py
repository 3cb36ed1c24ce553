"""The local model registry behaves like SageMaker's, request for request (compared under moto)."""
from __future__ import annotations

import threading

import boto3
import pytest
from moto import mock_aws

from diagnosa.cli import main
from pipelines.registry import LocalModelRegistry, RegistryError

PACKAGE = {
    "ModelPackageGroupName": "diagnosa",
    "ModelPackageDescription": "champion of execution abc",
    "InferenceSpecification": {
        "Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sklearn:1.2-1",
                        "ModelDataUrl": "s3://lake/artifacts/abc/model.tar.gz"}],
        "SupportedContentTypes": ["application/json", "text/csv"],
        "SupportedResponseMIMETypes": ["application/json", "text/csv"],
    },
    "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                     "S3Uri": "s3://lake/artifacts/abc/evaluation.json"}}},
    "CustomerMetadataProperties": {"macro_recall": "0.953", "orphan_macro_recall": "0.799"},
    "ModelApprovalStatus": "PendingManualApproval",
}


@pytest.fixture
def registry(tmp_path):
    return LocalModelRegistry(tmp_path / "registry")


def test_versions_and_approval_like_sagemaker(registry):
    with mock_aws():
        aws = boto3.client("sagemaker")
        aws.create_model_package_group(ModelPackageGroupName="diagnosa")
        for _ in range(2):
            aws_arn = aws.create_model_package(**PACKAGE)["ModelPackageArn"]
            local_arn = registry.create_model_package(**PACKAGE)["ModelPackageArn"]
            assert aws_arn.rsplit("/", 2)[-2:] == local_arn.rsplit("/", 2)[-2:]  # group/version alike
        aws.update_model_package(ModelPackageArn=aws_arn, ModelApprovalStatus="Approved")
        registry.update_model_package(local_arn, "Approved", "gate passed, reviewed by Dr. Ruiz")
        aws_view = aws.describe_model_package(ModelPackageName=aws_arn)
        local_view = registry.describe_model_package(local_arn)
        for key in ("ModelPackageGroupName", "ModelPackageVersion", "ModelApprovalStatus", "InferenceSpecification",
                    "ModelMetrics", "ModelPackageDescription"):
            assert local_view[key] == aws_view[key], key
    # moto 5.2.5 does not echo CustomerMetadataProperties; SageMaker does, and so do we.
    assert local_view["CustomerMetadataProperties"] == PACKAGE["CustomerMetadataProperties"]
    assert [p["ModelApprovalStatus"] for p in registry.list_model_packages("diagnosa")] == [
        "PendingManualApproval", "Approved"]
    assert registry.latest_approved("diagnosa")["ModelPackageVersion"] == 2
    assert registry.describe_model_package("diagnosa/2")["ApprovalDescription"].startswith("gate passed")


def test_requests_sagemaker_would_refuse_are_refused(registry):
    with pytest.raises(RegistryError, match='Unknown parameter in input: "Bogus"'):
        registry.create_model_package(**PACKAGE, Bogus=1)
    with pytest.raises(RegistryError, match="Invalid type for parameter ModelMetrics"):
        registry.create_model_package(**{**PACKAGE, "ModelMetrics": "good"})
    with pytest.raises(RegistryError, match="must match"):
        registry.create_model_package(**{**PACKAGE, "ModelPackageGroupName": "bad name!"})
    arn = registry.create_model_package(**PACKAGE)["ModelPackageArn"]
    with pytest.raises(RegistryError, match="approval status must be one of"):
        registry.update_model_package(arn, "Maybe")
    with pytest.raises(RegistryError, match="Invalid length for parameter ApprovalDescription, value: 1025, valid max "
                                            "length: 1024"):
        registry.update_model_package(arn, "Approved", "x" * 1025)
    assert registry.describe_model_package(arn)["ModelApprovalStatus"] != "Approved"  # refused, not half done
    with pytest.raises(RegistryError, match="does not exist"):
        registry.describe_model_package("diagnosa/9")
    assert registry.latest_approved("diagnosa") is None


def test_a_version_whose_file_is_gone_is_never_overwritten(registry, tmp_path):
    # The next version was the count + 1: with v2's file moved away, v4 was written over v3 (approved, serving).
    for _ in range(3):
        registry.create_model_package(**PACKAGE)
    registry.update_model_package(ModelPackageArn="diagnosa/3", ModelApprovalStatus="Approved")
    (tmp_path / "registry" / "diagnosa" / "000002.json").unlink()
    arn = registry.create_model_package(**PACKAGE)["ModelPackageArn"]
    assert arn.endswith("/diagnosa/4")
    assert registry.describe_model_package("diagnosa/3")["ModelApprovalStatus"] == "Approved"


def test_a_version_number_is_never_given_twice_even_once_the_highest_versions_file_is_moved_out(registry, tmp_path):
    # v3's file damaged and moved out of the registry folder, as the damaged-file message says: the next
    # registration was v3 again, and the endpoint still serving the old v3 was listed as serving the new one
    # (consumers name versions by ARN). SageMaker never reuses a version number in a group.
    for _ in range(3):
        registry.create_model_package(**PACKAGE)
    (tmp_path / "registry" / "diagnosa" / "000003.json").rename(tmp_path / "000003.json.bak")
    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/4")
    (tmp_path / "registry" / "diagnosa" / "000004.json").unlink()
    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/5")
    assert [p["ModelPackageVersion"] for p in registry.list_model_packages("diagnosa")] == [1, 2, 5]
    # A registry written before the mark was kept (or one whose mark is unreadable): its files say.
    (tmp_path / "registry" / "diagnosa" / ".last-version").unlink()
    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/6")
    (tmp_path / "registry" / "diagnosa" / ".last-version").write_text("garbage")
    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/7")


def test_a_registration_killed_midway_skips_a_version_number_and_never_reuses_one(registry, tmp_path):
    import json
    import subprocess
    import sys
    import textwrap

    registry.create_model_package(**PACKAGE)
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, os, signal
        from diagnosa.lake import LocalStorage
        from pipelines.registry import LocalModelRegistry
        put = LocalStorage.put_bytes
        def put_then_die(self, key, data):
            if key.endswith(".json"):  # the mark is written; SIGKILL before the version's file is
                os.kill(os.getpid(), signal.SIGKILL)
            put(self, key, data)
        LocalStorage.put_bytes = put_then_die
        LocalModelRegistry({str(tmp_path / "registry")!r}).create_model_package(**json.loads({json.dumps(json.dumps(PACKAGE))}))
        """)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert [p["ModelPackageVersion"] for p in registry.list_model_packages("diagnosa")] == [1]
    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/3")  # 2 skipped


def test_concurrent_registrations_get_distinct_versions(registry):
    threads = [threading.Thread(target=registry.create_model_package, kwargs=PACKAGE) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [p["ModelPackageVersion"] for p in registry.list_model_packages("diagnosa")] == list(range(1, 9))


def test_registry_commands(tmp_path, capsys):
    registry = LocalModelRegistry(tmp_path / "ws" / "registry")
    registry.create_model_package(**PACKAGE)
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "registry", "list"]) == 0
    assert "v1    PendingManualApproval" in capsys.readouterr().out
    assert main([*ws, "registry", "approve", "1", "--reason", "ok", "--no-deploy"]) == 0
    assert registry.describe_model_package("diagnosa/1")["ModelApprovalStatus"] == "Approved"
    # Approving deploys to the local endpoint; a model outside the local lake cannot deploy: not approved.
    registry.create_model_package(**PACKAGE)
    assert main([*ws, "registry", "approve", "2"]) == 2
    err = capsys.readouterr().err
    assert "diagnosa v2 not approved (the registry is unchanged: it is still PendingManualApproval)" in err
    assert "s3://lake/artifacts/abc/model.tar.gz is outside the data lake" in err and "--port" not in err
    assert registry.describe_model_package("diagnosa/2")["ModelApprovalStatus"] == "PendingManualApproval"
    assert main([*ws, "registry", "reject", "7"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # The reason given is shown with the version (it was kept and never shown).
    assert main([*ws, "registry", "reject", "2", "--reason", "recall of ENFERMEDAD TERMINAL too low"]) == 0
    capsys.readouterr()
    assert main([*ws, "registry", "list"]) == 0
    listed = capsys.readouterr().out
    assert "        reason: ok\n" in listed and "        reason: recall of ENFERMEDAD TERMINAL too low\n" in listed


def test_listing_a_group_that_does_not_exist_names_the_groups_that_do(tmp_path, capsys):
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "registry", "list", "--group", "nope"]) == 2
    assert capsys.readouterr().err == (f"diagnosa: error: no model package group 'nope' in {tmp_path / 'ws' / 'registry'} "
                                       f"(workspace {tmp_path / 'ws'} (from --workspace)): it has no groups yet\n")
    registry = LocalModelRegistry(tmp_path / "ws" / "registry")
    for group in ("diagnosa", "pbc"):
        registry.create_model_package(**{**PACKAGE, "ModelPackageGroupName": group})
    assert main([*ws, "registry", "list", "--group", "nope"]) == 2
    out, err = capsys.readouterr()
    assert not out and "no model package group 'nope' in" in err and err.endswith(": its groups are diagnosa, pbc\n")
    assert main([*ws, "registry", "list", "--group", "pbc"]) == 0
    assert capsys.readouterr().out.startswith("pbc: 1 version(s)\n")
    # Approving without --group in a workspace whose group is a dataset's: the groups are named too.
    assert main([*ws, "registry", "approve", "1", "--group", "nope", "--no-deploy"]) == 2
    err = capsys.readouterr().err
    assert "does not exist; there is no model package group 'nope' (its groups are diagnosa, pbc: give --group)" in err


def test_registry_commands_against_sagemaker(tmp_path, capsys):
    with mock_aws():
        sm = boto3.client("sagemaker", region_name="eu-west-1")
        sm.create_model_package_group(ModelPackageGroupName="diagnosa-dev")
        for _ in range(2):
            sm.create_model_package(**{**PACKAGE, "ModelPackageGroupName": "diagnosa-dev"})
        aws = ["--workspace", str(tmp_path / "ws"), "registry"]
        assert main([*aws, "list", "--region", "eu-west-1", "--group", "diagnosa-dev"]) == 0
        out = capsys.readouterr().out
        assert "diagnosa-dev: 2 version(s)" in out and out.count("PendingManualApproval") == 2
        sm.create_model_package_group(ModelPackageGroupName="diagnosa-empty")  # a group with no version yet
        assert main([*aws, "list", "--region", "eu-west-1", "--group", "diagnosa-empty"]) == 0
        assert capsys.readouterr().out == "diagnosa-empty: 0 version(s)\n"
        assert main([*aws, "list", "--region", "eu-west-1", "--group", "diagnosa-prod"]) == 2
        assert capsys.readouterr().err == ("diagnosa: error: no model package group 'diagnosa-prod' in SageMaker Model "
                                           "Registry (eu-west-1): its groups are diagnosa-dev, diagnosa-empty\n")
        assert main([*aws, "approve", "2", "--group", "diagnosa-dev", "--region", "eu-west-1",
                     "--reason", "reviewed"]) == 0
        assert "approval event starts the deploy function" in capsys.readouterr().out
        statuses = {p["ModelPackageVersion"]: p["ModelApprovalStatus"] for p in sm.list_model_packages(
            ModelPackageGroupName="diagnosa-dev")["ModelPackageSummaryList"]}
        assert statuses == {1: "PendingManualApproval", 2: "Approved"}
        assert not (tmp_path / "ws" / "endpoints").exists(), "nothing is deployed locally for an AWS approval"
        # Rejecting on AWS changes no endpoint (the deploy function acts on approvals): said, as locally.
        assert main([*aws, "reject", "2", "--group", "diagnosa-dev", "--region", "eu-west-1"]) == 0
        assert capsys.readouterr().out == (
            "diagnosa-dev v2: Rejected\n  on AWS rejecting does not change an endpoint: one serving v2 keeps serving it "
            "until another version is approved (`diagnosa registry approve N --group diagnosa-dev --region eu-west-1`)\n")
        assert main([*aws, "reject", "7", "--group", "diagnosa-dev", "--region", "eu-west-1"]) == 2
        assert "diagnosa-dev/7 does not exist" in capsys.readouterr().err


def test_a_package_is_named_by_its_arn_local_or_sagemakers_or_group_and_version():
    from pipelines.registry import package_version

    assert package_version("arn:aws:sagemaker:local:000000000000:model-package/mi-datos/3") == ("mi-datos", 3)
    assert package_version("arn:aws:sagemaker:eu-west-1:123456789012:model-package/diagnosa/12") == ("diagnosa", 12)
    assert package_version("diagnosa/2") == ("diagnosa", 2)
    for bad in ("diagnosa", "diagnosa/x", "a/b/3"):
        with pytest.raises(RegistryError, match="not a model package ARN"):
            package_version(bad)


# ------------------------------------------------------------------------------------------------ approve, then deploy

def _lake_package(ws, key: str, group: str = "diagnosa") -> dict:
    """A version whose model is ``key`` in the workspace's local lake."""
    container = {**PACKAGE["InferenceSpecification"]["Containers"][0], "ModelDataUrl": f"s3://diagnosa-local/{key}"}
    return {**PACKAGE, "ModelPackageGroupName": group,
            "InferenceSpecification": {**PACKAGE["InferenceSpecification"], "Containers": [container]}}


def test_a_version_whose_model_cannot_deploy_is_not_approved(tmp_path, capsys):
    # A truncated or missing model.tar.gz was approved, then failed to deploy: Approved for good, though it could
    # never deploy, and the hint named --port.
    import gzip

    ws = tmp_path / "ws"
    registry = LocalModelRegistry(ws / "registry")
    whole = gzip.compress(b"x" * 100_000)
    (ws / "lake" / "artifacts" / "runs" / "cut").mkdir(parents=True)
    (ws / "lake" / "artifacts" / "runs" / "cut" / "model.tar.gz").write_bytes(whole[:len(whole) // 2])
    registry.create_model_package(**_lake_package(ws, "artifacts/runs/cut/model.tar.gz"))
    registry.create_model_package(**_lake_package(ws, "artifacts/runs/gone/model.tar.gz"))
    registry.update_model_package("diagnosa/2", "Rejected")
    cli = ["--workspace", str(ws), "registry", "approve"]
    assert main([*cli, "1", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnosa: error: diagnosa v1 not approved (the registry is unchanged: it is still "
                          "PendingManualApproval), as it cannot be deployed to endpoint diagnosa: its model "
                          "s3://diagnosa-local/artifacts/runs/cut/model.tar.gz cannot be loaded: the archive is not a readable")
    assert "--port" not in err
    assert main([*cli, "2", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "diagnosa v2 not approved (the registry is unchanged: it is still Rejected)" in err
    assert "its model could not be fetched from the lake: no object 'artifacts/runs/gone/model.tar.gz'" in err
    assert [p["ModelApprovalStatus"] for p in registry.list_model_packages("diagnosa")] == [
        "PendingManualApproval", "Rejected"]
    assert not (ws / "endpoints" / "diagnosa").exists()  # nothing deployed, nothing half made
    assert main([*cli, "1", "--no-deploy"]) == 0  # approving without deploying is the reviewer's call


def test_a_version_for_another_datasets_endpoint_is_not_approved(tmp_path, capsys, monkeypatch):
    # The dataset refusal came after the status was written, and its hint repeated the refused --endpoint-name.
    import io
    import tarfile

    from pipelines.local_endpoints import EndpointRecord, LocalEndpoints
    from pipelines.registry import ARN_PREFIX

    ws = tmp_path / "ws"
    registry = LocalModelRegistry(ws / "registry")
    (ws / "lake" / "artifacts" / "runs" / "a").mkdir(parents=True)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        data = b'{"dataset": "cohort"}'
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (ws / "lake" / "artifacts" / "runs" / "a" / "model.tar.gz").write_bytes(archive.getvalue())
    registry.create_model_package(**_lake_package(ws, "artifacts/runs/a/model.tar.gz"))
    serving = {"EndpointName": "mydata", "EndpointStatus": "InService", "Port": 18890, "Pid": 1,
               "Url": "http://127.0.0.1:18890", "EndpointConfigName": "c",
               "ModelPackageArn": f"{ARN_PREFIX}/mydata/1"}
    monkeypatch.setattr(LocalEndpoints, "describe", lambda self, name: EndpointRecord(
        {**serving, "EndpointName": name}, ws / "endpoints" / name / "endpoint.json") if name == "mydata" else None)
    assert main(["--workspace", str(ws), "registry", "approve", "1", "--endpoint-name", "mydata", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "diagnosa v1 not approved (the registry is unchanged: it is still PendingManualApproval)" in err
    assert "endpoint mydata serves mydata v1, another dataset's model than group diagnosa's" in err
    assert "--endpoint-name" not in err and "--port" not in err
    assert registry.describe_model_package("diagnosa/1")["ModelApprovalStatus"] == "PendingManualApproval"


@pytest.mark.parametrize("kind, failure, hint", [
    ("PortInUse", "endpoint diagnosa: port 18890 on 127.0.0.1 is in use by another process (another workspace's "
     "endpoint?): stop it, or deploy with another port (--port)",
     "Approving it again on a free port deploys it (`diagnosa registry approve 1 --port 0`)"),
    ("DeployError", "endpoint diagnosa: the server exited with 1 (log x): ModelLoadError; rolled back to c",
     "Once that is fixed, approving it again deploys it (`diagnosa registry approve 1`); or reject it "
     "(`diagnosa registry reject 1`)"),
])
def test_a_deploy_failing_after_the_approval_says_the_versions_state_and_a_fitting_hint(tmp_path, capsys, monkeypatch,
                                                                                        kind, failure, hint):
    import pipelines.local_endpoints as local_endpoints
    from diagnosa.services import LocalWorkspace

    def fail(*_args, **_kwargs):  # the deploy's error, through deploy_approved as it is (a ServiceError saying it)
        raise getattr(local_endpoints, kind)(failure)

    ws = tmp_path / "ws"
    LocalModelRegistry(ws / "registry").create_model_package(**PACKAGE)
    monkeypatch.setattr(LocalWorkspace, "deploy_problem", lambda *_args: None)  # what is known before: nothing
    monkeypatch.setattr(local_endpoints.LocalEndpoints, "deploy_model_package", fail)
    assert main(["--workspace", str(ws), "registry", "approve", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"diagnosa: error: diagnosa v1 is Approved in the registry, but not deployed: {failure}. {hint}\n"

