"""`diagnosa pipeline ...` against AWS, proven under moto."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from diagnosa.cli import main

ROLE = "arn:aws:iam::123456789012:role/diagnosa-pipeline"
COMMON = ["--bucket", "lake", "--region", "eu-west-1"]


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield boto3.client("sagemaker", region_name="eu-west-1")


def test_definition_upsert_start_status_list(aws, tmp_path, capsys):
    out = tmp_path / "definition.json"
    assert main(["pipeline", "definition", *COMMON, "--out", str(out)]) == 0
    definition = json.loads(out.read_text())
    assert definition["Steps"][0]["Name"] == "Preprocess"
    assert main(["pipeline", "definition", *COMMON, "--model-package-group", "diagnosa-prod", "--out", str(out)]) == 0
    gate = json.loads(out.read_text())["Steps"][-1]
    assert gate["Arguments"]["IfSteps"][0]["Arguments"]["ModelPackageGroupName"] == "diagnosa-prod"
    assert [s["Name"] for s in gate["Arguments"]["IfSteps"]] == ["Register", "DeployIfApproved"]
    assert main(["pipeline", "definition", *COMMON, "--no-deploy-steps", "--out", str(out)]) == 0
    assert [s["Name"] for s in json.loads(out.read_text())["Steps"][-1]["Arguments"]["IfSteps"]] == ["Register"]
    capsys.readouterr()
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE]) == 0
    arn = capsys.readouterr().out.strip()
    assert aws.describe_pipeline(PipelineName="diagnosa")["PipelineArn"] == arn
    # Without InputDataUri, start trains on the lake's latest curated version, and says so.
    assert main(["pipeline", "start", *COMMON, "--param", "Resampling=smote"]) == 2
    assert "no curated dataset" in capsys.readouterr().err
    boto3.client("s3", region_name="eu-west-1").put_object(
        Bucket="lake", Key="curated/patients/LATEST.json", Body=json.dumps({"version": "abc123def456"}))
    assert main(["pipeline", "start", *COMMON, "--param", "Resampling=smote",
                 "--param", "RecallThresholdEnfermedadTerminal=0.9"]) == 0
    execution, used = capsys.readouterr().out.split()
    assert execution.startswith(arn) and used == "(InputDataUri=s3://lake/curated/patients/abc123def456)"
    parameters = {p["Name"]: p["Value"] for p in aws.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution)["PipelineParameters"]}
    assert parameters["InputDataUri"] == "s3://lake/curated/patients/abc123def456"
    assert parameters["Resampling"] == "smote"
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 0
    assert execution in capsys.readouterr().out
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 0
    assert execution in capsys.readouterr().out


def test_definition_needs_no_credentials_and_is_what_upsert_sends(aws, monkeypatch, capsys):
    argv = ["pipeline", "definition", *COMMON, "--role-arn", ROLE]
    with monkeypatch.context() as offline:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            offline.delenv(key, raising=False)
        capsys.readouterr()
        assert main(argv) == 0
        first = capsys.readouterr().out
        assert main(argv) == 0
        assert capsys.readouterr().out == first  # byte-identical between runs
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE]) == 0
    sent = aws.describe_pipeline(PipelineName="diagnosa")["PipelineDefinition"]
    assert first == sent + "\n"
    capsys.readouterr()
    assert main([*argv, "--pretty"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(sent)


@pytest.mark.parametrize("argv, message", [
    (["pipeline", "start", *COMMON, "--param", "Nope=1"], "unknown pipeline parameter(s) Nope"),
    (["pipeline", "start", *COMMON, "--param", "OrphanRecallThreshold=high"],
     "parameter OrphanRecallThreshold is a Float, got 'high'"),
    (["pipeline", "start", *COMMON, "--param", "OrphanRecallThreshold=1.5"],
     "parameter OrphanRecallThreshold is a recall threshold, in [0, 1]; got 1.5"),
    (["pipeline", "start", *COMMON, "--param", "Seed=-1"], "parameter Seed must be in [0, 4294967295]"),
    (["pipeline", "start", *COMMON, "--param", "Resampling"], "takes NAME=VALUE"),
    (["pipeline", "upsert", *COMMON], "needs the pipeline execution role"),
    (["pipeline", "definition", "--region", "eu-west-1"], "give the pipeline's bucket"),
    (["pipeline", "definition", *COMMON, "--families", "catboost"], "unknown: ['catboost']"),
    (["pipeline", "status", "--region", "eu-west-1"], "Could not find pipeline with PipelineName diagnosa"),
])
def test_bad_input_is_refused_before_aws_is_changed(aws, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert aws.list_pipelines()["PipelineSummaries"] == []
