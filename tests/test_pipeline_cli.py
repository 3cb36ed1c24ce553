"""`diagnosa pipeline ...` against AWS, proven under moto."""
from __future__ import annotations

import json
import logging

import boto3
import pytest
from moto import mock_aws

from diagnosa.cli import main

ROLE = "arn:aws:iam::123456789012:role/diagnosa-pipeline"
COMMON = ["--bucket", "lake", "--region", "eu-west-1"]


@pytest.fixture(name="aws")
def aws_fixture():
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
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.put_object(Bucket="lake", Key="curated/patients/LATEST.json", Body=json.dumps({"version": "abc123def456"}))
    # A LATEST.json naming a version without its manifest (or a damaged one) starts nothing: a billed run on it
    # would fail in Preprocess.
    assert main(["pipeline", "start", *COMMON]) == 2
    assert "names version abc123def456, which has no manifest" in capsys.readouterr().err
    s3.put_object(Bucket="lake", Key="curated/patients/abc123def456/manifest.json", Body=b'{"rows": 3')
    assert main(["pipeline", "start", *COMMON]) == 2
    assert "curated version abc123def456 of 'patients' is damaged: s3://lake/" in capsys.readouterr().err
    s3.put_object(Bucket="lake", Key="curated/patients/abc123def456/manifest.json", Body=b'{"rows": 3}')
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


def test_upsert_prints_the_arn_and_no_sdk_narration(aws, capsys, caplog):
    # The SDK logged ~70 lines ("Found endpoint for sts", "Popping out 'TrainingJobName'") around the one ARN.
    caplog.set_level(logging.INFO)  # what the SDK's own basicConfig(level=INFO) shows a user
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE]) == 0
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records] == []
    out, err = capsys.readouterr()
    assert out.strip() == aws.describe_pipeline(PipelineName="diagnosa")["PipelineArn"] and err == ""
    assert logging.root.manager.disable == logging.NOTSET, "logging is whole again after the command"


@pytest.mark.parametrize("argv, message", [
    (["pipeline", "start", *COMMON, "--param", "Nope=1"], "no pipeline 'diagnosa' in eu-west-1: deploy it with"),
    (["pipeline", "upsert", *COMMON], "needs the pipeline execution role"),
    (["pipeline", "upsert", *COMMON, "--role-arn", "arn:aws:iam::123456789012:user/alice"],
     "--role-arn 'arn:aws:iam::123456789012:user/alice' is not an IAM role ARN"),
    (["pipeline", "upsert", *COMMON, "--role-arn", "diagnosa-pipeline"], "is not an IAM role ARN"),
    (["pipeline", "definition", *COMMON, "--role-arn", "arn:aws:iam::12345:role/x"], "is not an IAM role ARN"),
    (["pipeline", "definition", *COMMON, "--role-arn", "arn:aws:iam::123456789012:role/a b"], "is not an IAM role ARN"),
    (["pipeline", "definition", "--region", "eu-west-1"], "give the pipeline's bucket"),
    (["pipeline", "definition", "--region", "eu-west-1", "--bucket", "s3://lake/diagnosa"],
     "--bucket takes the bucket's name, got 's3://lake/diagnosa': --bucket lake"),
    (["pipeline", "start", "--region", "eu-west-1", "--bucket", "s3://lake"], "--bucket takes the bucket's name"),
    (["pipeline", "definition", *COMMON, "--families", "catboost"], "families names 'catboost', not among"),
    (["pipeline", "status", "--region", "eu-west-1"], "Could not find pipeline with PipelineName diagnosa"),
    (["pipeline", "status", "--region", "eu-west-1", ""], "'' is not a pipeline execution ARN"),
    (["pipeline", "status", "--region", "eu-west-1", "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/x"],
     "is not a pipeline execution ARN"),
    (["pipeline", "status", "--region", "eu-west-1", "--name", "diagnosa",
      "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/other/execution/abc123"],
     "belongs to pipeline other, not diagnosa (--name)"),
])
def test_bad_input_is_refused_before_aws_is_changed(aws, capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert aws.list_pipelines()["PipelineSummaries"] == []


@pytest.mark.parametrize("param, message", [
    (["Nope=1"], "unknown pipeline parameter(s) Nope"),
    (["OrphanRecallThreshold=high"],
     "parameter OrphanRecallThreshold is a Float (a finite decimal number, e.g. 0.8 or 1e-3), got 'high'"),
    (["Seed=٣"], "parameter Seed is an Integer (ASCII digits within 64 bits, e.g. 3 or -3), got '٣'"),
    (["OrphanRecallThreshold=1.5"], "parameter OrphanRecallThreshold is a recall threshold, in [0, 1]; got 1.5"),
    (["Seed=-1"], "parameter Seed must be in [0, 4294967295]"),
    (["Resampling"], "takes NAME=VALUE"),
    # What a job request would refuse once the execution reached the step (Preprocess already billed), as run --local.
    (["ProcessingInstanceCount=0"], "step Transform: parameter ProcessingInstanceCount=0 gives an invalid request"),
    (["TrainingInstanceCount=0"], "parameter TrainingInstanceCount=0 gives an invalid request"),
    (["TrainingInstanceType=ml.m5.xlarg"], "parameter TrainingInstanceType='ml.m5.xlarg' gives an invalid request"),
    (["InputDataUri=notauri"], "InputDataUri='notauri' is not a curated version of 'patients' in this pipeline's bucket"),
    (["InputDataUri=s3://nobucket/curated/patients/abc123def456"], "is not a curated version of 'patients'"),
    (["InputDataUri=s3://lake/curated/patients/../../etc"], "is not a curated version of 'patients'"),
    (["InputDataUri=s3://lake/curated/patients/abc123def456"], "no curated version abc123def456 of 'patients'"),
])
def test_start_checks_its_parameters_against_the_deployed_pipeline_before_starting(aws, capsys, param, message):
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE]) == 0
    capsys.readouterr()
    assert main(["pipeline", "start", *COMMON, *(f"--param={p}" for p in param)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("diagnosa: error: ") and err.count("\n") == 1
    assert aws.list_pipeline_executions(PipelineName="diagnosa")["PipelineExecutionSummaries"] == []


def test_start_runs_what_was_deployed_not_what_this_checkout_would_build(aws, tmp_path, capsys):
    """A pipeline upserted for one dataset and started by name trains that dataset, with that definition's
    parameters; naming another dataset is refused. start stages no code (a start-only role may not write)."""
    config = tmp_path / "mini.toml"
    config.write_text('name = "mini"\nid_column = "id"\ntarget = "y"\nlabels = ["a", "b"]\n')
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE, "--dataset-config", str(config),
                 "--name", "mix"]) == 0
    s3 = boto3.client("s3", region_name="eu-west-1")
    for dataset in ("patients", "mini"):
        s3.put_object(Bucket="lake", Key=f"curated/{dataset}/LATEST.json", Body=json.dumps({"version": "abc123def456"}))
        s3.put_object(Bucket="lake", Key=f"curated/{dataset}/abc123def456/manifest.json", Body=b"{}")
    staged = {o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]}
    capsys.readouterr()
    assert main(["pipeline", "start", *COMMON, "--name", "mix", "--param", "RecallThresholdEnfermedadTerminal=0.9"]) == 2
    assert "unknown pipeline parameter(s) RecallThresholdEnfermedadTerminal" in capsys.readouterr().err
    assert main(["pipeline", "start", *COMMON, "--name", "mix", "--dataset", "patients"]) == 2
    assert "the deployed pipeline trains dataset 'mini', not 'patients'" in capsys.readouterr().err
    assert main(["pipeline", "start", *COMMON, "--name", "mix", "--param", "RecallThresholdA=0.5"]) == 0
    execution, used = capsys.readouterr().out.split()
    assert used == "(InputDataUri=s3://lake/curated/mini/abc123def456)"
    parameters = {p["Name"]: p["Value"] for p in aws.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution)["PipelineParameters"]}
    assert parameters == {"RecallThresholdA": "0.5", "InputDataUri": "s3://lake/curated/mini/abc123def456"}
    assert {o["Key"] for o in s3.list_objects_v2(Bucket="lake")["Contents"]} == staged  # nothing uploaded


@pytest.mark.parametrize("counts, named", [
    ({"label_counts": {"a": 100, "b": 2}}, "class 'b' has 2 rows"),
    # Rows enough, patients not: the split keeps a patient's rows together, as run --local checks.
    ({"label_counts": {"a": 100, "b": 40}, "patient_counts": {"a": 50, "b": 1}}, "class 'b' has 1 patient"),
])
@pytest.mark.parametrize("explicit", [False, True])
def test_start_refuses_a_curated_version_whose_classes_the_split_cannot_place(aws, tmp_path, capsys, counts, named,
                                                                               explicit):
    """A version curated by an older Diagnosa (ingestion refuses such classes now) started a billed execution that
    stopped in Preprocess; run --local refused it before any step. Both check it in one place now."""
    config = tmp_path / "mini.toml"
    config.write_text('name = "mini"\nid_column = "id"\ntarget = "y"\nlabels = ["a", "b"]\n')
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE, "--dataset-config", str(config),
                 "--name", "mini"]) == 0
    s3 = boto3.client("s3", region_name="eu-west-1")
    manifest = {"dataset": "mini", "version": "abc123def456", "schema": {"labels": ["a", "b"]}, **counts}
    s3.put_object(Bucket="lake", Key="curated/mini/LATEST.json", Body=json.dumps({"version": "abc123def456"}))
    s3.put_object(Bucket="lake", Key="curated/mini/abc123def456/manifest.json", Body=json.dumps(manifest))
    capsys.readouterr()
    given = ["--param", "InputDataUri=s3://lake/curated/mini/abc123def456"] if explicit else []
    assert main(["pipeline", "start", *COMMON, "--name", "mini", *given]) == 2
    err = capsys.readouterr().err
    assert "curated dataset mini version abc123def456: 1 class too small for the 70/20/10 split" in err
    assert named in err and err.count("\n") == 1
    assert aws.list_pipeline_executions(PipelineName="mini")["PipelineExecutionSummaries"] == []
    # The same version with enough of each class starts.
    manifest.update({"label_counts": {"a": 100, "b": 40}, "patient_counts": {"a": 50, "b": 20}})
    s3.put_object(Bucket="lake", Key="curated/mini/abc123def456/manifest.json", Body=json.dumps(manifest))
    assert main(["pipeline", "start", *COMMON, "--name", "mini", *given]) == 0


@pytest.mark.parametrize("change, says", [
    ({"label_counts": {"a": "100", "b": 40}}, "label_counts gives 'a' '100', not a count"),
    ({"label_counts": {"a": None, "b": 40}}, "label_counts gives 'a' None, not a count"),
    ({"label_counts": {"a": float("nan"), "b": 40}}, "label_counts gives 'a' nan, not a count"),
    ({"label_counts": {"a": float("-inf"), "b": 40}}, "not a count"),
    ({"label_counts": {"a": -5, "b": 40}}, "label_counts gives 'a' -5, not a count"),
    ({"label_counts": [100, 40]}, "label_counts is [100, 40], not an object"),
    ({"patient_counts": {"a": "9", "b": 9}}, "patient_counts gives 'a' '9', not a count"),
    ({"schema": "x"}, "its schema's labels are None, not a list of names"),
    ({"schema": {"labels": [["a"], "b"]}}, "its schema's labels are [['a'], 'b'], not a list of names"),
])
def test_start_refuses_a_damaged_manifest_naming_what_is_wrong(aws, tmp_path, capsys, change, says):
    # A count of the wrong kind was a TypeError or OverflowError traceback; NaN passed and started a billed execution.
    config = tmp_path / "mini.toml"
    config.write_text('name = "mini"\nid_column = "id"\ntarget = "y"\nlabels = ["a", "b"]\n')
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE, "--dataset-config", str(config),
                 "--name", "mini"]) == 0
    s3 = boto3.client("s3", region_name="eu-west-1")
    manifest = {"dataset": "mini", "version": "abc123def456", "schema": {"labels": ["a", "b"]},
                "label_counts": {"a": 100, "b": 40}, **change}
    s3.put_object(Bucket="lake", Key="curated/mini/LATEST.json", Body=json.dumps({"version": "abc123def456"}))
    s3.put_object(Bucket="lake", Key="curated/mini/abc123def456/manifest.json", Body=json.dumps(manifest))
    capsys.readouterr()
    assert main(["pipeline", "start", *COMMON, "--name", "mini"]) == 2
    err = capsys.readouterr().err
    assert "curated dataset mini version abc123def456: its manifest.json is damaged (" in err and says in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert aws.list_pipeline_executions(PipelineName="mini")["PipelineExecutionSummaries"] == []


def test_an_aws_endpoint_that_never_answers_ends_in_a_bounded_error(monkeypatch, capsys):
    """A server that takes the connection and never answers kept `pipeline status` silent for over five minutes
    (botocore's 60 s reads, five attempts). The commands' clients (diagnosa.aws.client) read with a timeout and try
    ATTEMPTS times, then say which endpoint did not answer."""
    import socket
    import threading

    import diagnosa.aws

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(diagnosa.aws, "READ_TIMEOUT_S", 0.5)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    try:
        assert main(["pipeline", "status", "--region", "eu-west-1"]) == 1
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    err = capsys.readouterr().err
    assert err.startswith("diagnosa: error: AWS") and "Read timeout on endpoint URL" in err and err.count("\n") == 1
    assert len(accepted) == diagnosa.aws.ATTEMPTS  # each attempt a new connection, none more


@pytest.mark.parametrize("flag", [["--role-arn", "arn:aws:iam::123456789012:role/x"], ["--families", "nope"],
                                  ["--kms-key", "k"], ["--subnets", "s"], ["--security-group-ids", "g"],
                                  ["--model-package-group", "g"], ["--no-deploy-steps"]])
def test_pipeline_start_takes_no_option_of_how_a_definition_is_built(flag, capsys):
    # `start` runs the definition SageMaker holds: these were listed in its --help and ignored without a word.
    with pytest.raises(SystemExit) as exited:
        main(["pipeline", "start", "--region", "eu-west-1", "--bucket", "b-bucket", *flag])
    assert exited.value.code == 2 and f"unrecognized arguments: {flag[0]}" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["status", "list"])
def test_pipeline_status_and_list_ask_for_a_region_as_the_others_do(verb, capsys, monkeypatch):
    # They said "AWS: You must specify a region." with exit status 1, as if AWS had refused.
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert main(["pipeline", verb]) == 2
    assert "give an AWS region with --region (or AWS_REGION)" in capsys.readouterr().err


@pytest.mark.parametrize("bucket, says", [
    ("Bad_Bucket!", "must be 3 to 63 lowercase letters"), ("b", "must be 3 to 63"), ("B-bucket", "must be 3 to 63"),
    ("b..c", "has '..'"), ("192.168.1.1", "is an IP address"), ("xn--bucket", "prefix (xn--)"),
])
def test_a_bucket_name_s3_refuses_is_bad_input_named_offline(bucket, says, capsys):
    # 'Bad_Bucket!' was "AWS: Parameter validation failed" (exit 1) from an offline command; 'b' and 'b..c' were
    # written into the definition.
    assert main(["pipeline", "definition", "--region", "eu-west-1", "--bucket", bucket]) == 2
    assert f"--bucket: bucket name {bucket!r} " in (err := capsys.readouterr().err) and says in err


def test_no_credentials_for_a_sagemaker_call_says_nothing_of_the_lake(tmp_path, capsys, monkeypatch):
    # The refusal ended "a local lake is a folder: --lake PATH", which has nothing to do with a pipeline's status.
    import os
    from unittest import mock

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # one an earlier test made keeps its (moto's) credentials

    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with mock.patch.dict(os.environ, {**bare, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
                                      "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true"},
                         clear=True):
        code = main(["pipeline", "status", "--region", "eu-west-1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("diagnosa: error: this needs AWS credentials, and none were found")
    assert "--lake" not in err
