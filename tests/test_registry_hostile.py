"""Registry text anyone could have written: refused at registration as SageMaker refuses it (the service model's
patterns, which botocore's validator leaves unchecked), printed escaped when a file already holds it, and a damaged
version file listed as Damaged, never a traceback."""
from __future__ import annotations

import json

import pytest
from test_registry import PACKAGE

from diagnosa.cli import main
from pipelines.registry import DAMAGED, DamagedPackage, LocalModelRegistry, RegistryError
from pipelines.service_model import request_problems, service_pattern

FORGED = "abc\n  v99   Approved               2026-12-04T13:09:00+00:00  [serving on diagnosa]"


@pytest.fixture
def ws(tmp_path):
    return tmp_path / "ws"


@pytest.fixture
def registry(ws):
    return LocalModelRegistry(ws / "registry")


def test_service_patterns_are_read_as_sagemaker_reads_them():
    value = service_pattern(r"([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,256}")  # Java: a quantified anchor, \p classes
    assert value.fullmatch("s3://diagnosa-local/curated/patients/16de8986d4cf")
    assert value.fullmatch("Größe 2 ñ") and value.fullmatch("")
    for bad in ("a\nb", "a\tb", "x\u202ey", "a;b"):
        assert not value.fullmatch(bad), bad
    description = service_pattern(r"[\p{L}\p{M}\p{Z}\p{S}\p{N}\p{P}]*")
    assert description.fullmatch("champion of execution abc — recall 0.95 (orphan ≥ 0.8), ok!")
    assert not description.fullmatch("line one\nline two")
    assert service_pattern(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}").fullmatch("diagnosa-dev")
    assert not service_pattern(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}").fullmatch("diagnosa-")


def test_patterns_are_checked_only_when_asked():
    # The jobs' requests keep their checks as they were; the registry's ask for the patterns too.
    request = {**PACKAGE, "ModelPackageDescription": "a\nb"}
    assert request_problems("CreateModelPackage", request) is None
    assert "ModelPackageDescription" in request_problems("CreateModelPackage", request, patterns=True)


def test_a_newline_in_metadata_is_refused_naming_the_field(registry):
    metadata = {**PACKAGE["CustomerMetadataProperties"], "diagnosa:execution": FORGED}
    with pytest.raises(RegistryError, match=r"parameter CustomerMetadataProperties\.diagnosa:execution, value: "
                                            r"'abc\\n  v99 .*must match the service's CustomerMetadataValue pattern"):
        registry.create_model_package(**{**PACKAGE, "CustomerMetadataProperties": metadata})
    with pytest.raises(RegistryError, match=r"parameter CustomerMetadataProperties<bad\nkey>.*CustomerMetadataKey"):
        registry.create_model_package(**{**PACKAGE, "CustomerMetadataProperties": {"bad\nkey": "1"}})
    with pytest.raises(RegistryError, match=r"parameter ModelPackageDescription, value: 'two\\nlines'"):
        registry.create_model_package(**{**PACKAGE, "ModelPackageDescription": "two\nlines"})
    assert registry.list_model_packages("diagnosa") == []  # nothing registered


def test_a_lone_surrogate_is_refused_in_metadata_and_description(registry):
    with pytest.raises(RegistryError) as refused:
        registry.create_model_package(**{**PACKAGE, "ModelPackageDescription": "\ud800",
                                         "CustomerMetadataProperties": {"diagnosa:execution": "\ud800"}})
    message = str(refused.value)
    assert "parameter ModelPackageDescription, value: '\\ud800': holds a lone UTF-16 surrogate" in message
    assert "parameter CustomerMetadataProperties.diagnosa:execution, value: '\\ud800'" in message
    message.encode("utf-8")  # the refusal itself prints
    arn = registry.create_model_package(**{**PACKAGE, "ModelPackageDescription": "revisión de Größe — ok"})[
        "ModelPackageArn"]  # Unicode text is fine
    with pytest.raises(RegistryError, match="parameter ApprovalDescription, value: 'bad\\\\udcff'"):
        registry.update_model_package(arn, "Approved", "bad\udcff")  # --reason of invalid UTF-8 (surrogateescape)
    assert registry.describe_model_package(arn)["ModelApprovalStatus"] == "PendingManualApproval"
    registry.update_model_package(arn, "Approved", "reviewed by Dr. Ruiz")  # the local ARN's region is no problem


def test_registry_list_prints_a_files_hostile_text_escaped(registry, ws, capsys):
    # A version written before these checks (or by hand): listing shows it escaped, one line per field, and
    # every other group still lists.
    registry.create_model_package(**PACKAGE)
    path = ws / "registry" / "diagnosa" / "000001.json"
    package = json.loads(path.read_text())
    package["CustomerMetadataProperties"] = {"diagnosa:execution": FORGED, "diagnosa:input-data": "\ud800"}
    path.write_text(json.dumps(package))
    registry.create_model_package(**{**PACKAGE, "ModelPackageGroupName": "pbc"})
    assert main(["--workspace", str(ws), "registry", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert not any(line.lstrip().startswith("v99") for line in lines), out
    assert "execution abc\\n  v99   Approved" in out and "data \\ud800" in out
    assert "pbc: 1 version(s)" in out


def test_a_damaged_version_file_is_listed_as_damaged(registry, ws, capsys):
    for _ in range(3):
        registry.create_model_package(**PACKAGE)
    registry.update_model_package("diagnosa/3", "Approved")
    damaged = ws / "registry" / "diagnosa" / "000002.json"
    damaged.write_text('{"trunc')
    assert main(["--workspace", str(ws), "registry", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "diagnosa: 3 version(s)"
    row = next(line for line in lines if line.startswith("  v2 "))
    assert f"{DAMAGED} " in row and f"its file {damaged} is damaged (not JSON:" in row and "Restore the file" in row
    assert any(line.startswith("  v3    Approved") for line in lines)
    assert registry.latest_approved("diagnosa")["ModelPackageVersion"] == 3  # the others are read as ever
    with pytest.raises(DamagedPackage, match="000002.json is damaged"):
        registry.describe_model_package("diagnosa/2")
    with pytest.raises(DamagedPackage, match="is damaged"):
        registry.list_model_packages("diagnosa")[1]["InferenceSpecification"]  # a stand-in, not a KeyError
    assert main(["--workspace", str(ws), "registry", "approve", "2", "--no-deploy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnosa: error: model package diagnosa/2: its file") and "Traceback" not in err
    damaged.write_text("[]")  # JSON, but no package
    assert main(["--workspace", str(ws), "registry", "list"]) == 0
    assert "(a JSON list, not an object)" in capsys.readouterr().out
    # A new registration never takes the damaged version's number.
    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/4")
