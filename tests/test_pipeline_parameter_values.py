"""Pipeline parameter values as SageMaker's StartPipelineExecution takes them, the same for `run --local` and
`pipeline start`: a value's text (at most 1024 characters, not empty, no lone surrogate), a Boolean as true/false,
and a saved definition's declarations (each name once, each DefaultValue an instance of its Type)."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from diagnosa.cli import main
from pipelines.executor import ExecutionError, resolve_parameters
from pipelines.graph import declared_parameter_problems
from pipelines.local_jobs import JobError, LakeMapping

FAIL = {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "stopped"}}
NOTE = {"Name": "Note", "Type": "String", "DefaultValue": "x"}  # free text: no EnumValues, no rule of its own
DECLARED = {"Parameters": [NOTE, {"Name": "On", "Type": "Boolean", "DefaultValue": False}]}
ROLE = "arn:aws:iam::123456789012:role/diagnosa-pipeline"
COMMON = ["--bucket", "lake", "--region", "eu-west-1"]


@pytest.fixture
def saved(tmp_path):
    """A saved definition declaring a free-text String parameter; its one step fails at once when it runs."""
    path = tmp_path / "definition.json"
    path.write_text(json.dumps({"Version": "2020-12-01", "Parameters": [NOTE], "Steps": [FAIL]}))
    return path


@pytest.mark.parametrize("value, message", [
    # Written as the execution's record was started: a UnicodeEncodeError traceback (exit 1), a folder left behind.
    ("a\ud800b", "parameter Note='a\\ud800b': the value holds a lone UTF-16 surrogate"),
    ("a\udcffb", "parameter Note='a\\udcffb': the value holds a lone UTF-16 surrogate"),  # a raw byte 0xff argument
    ("y" * 1025, "the value is 1,025 characters, at most 1,024 (StartPipelineExecution's String1024)"),
    ("", "parameter Note='': the value is empty, which SageMaker's StartPipelineExecution refuses"),
])
def test_run_local_refuses_a_value_sagemaker_refuses_before_any_folder(tmp_path, saved, capsys, value, message):
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "run", "--local", "--definition", str(saved), "--param", f"Note={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("diagnosa: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and len(err) < 400
    assert not (ws / "executions").exists() or not any((ws / "executions").iterdir())


def test_run_local_takes_a_value_of_1024_characters(tmp_path, saved, capsys):
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "run", "--local", "--definition", str(saved), "--param",
                 "Note=" + "y" * 1024]) == 1  # accepted: the run reached its Fail step
    [record] = (ws / "executions").glob("*/execution.json")
    assert json.loads(record.read_text())["Parameters"]["Note"] == "y" * 1024


def test_the_value_is_checked_as_it_is_sent_not_as_it_is_written():
    # A number is sent as its canonical text: 3,000 characters as written, one as sent.
    declared = {"Parameters": [{"Name": "N", "Type": "Integer", "DefaultValue": 1}]}
    assert resolve_parameters(declared, {"N": "0" * 3000 + "5"}) == {"N": 5}
    assert resolve_parameters(DECLARED, {"Note": "y" * 1024, "On": " TRUE "}) == {"Note": "y" * 1024, "On": True}


def test_an_empty_input_uri_is_refused_by_name_before_any_step(tmp_path, capsys):
    # It was "step Preprocess:  is outside the data lake", the empty value a blank in the message.
    ws = tmp_path / "ws"
    assert main(["--workspace", str(ws), "run", "--local", "--param", "InputDataUri="]) == 2
    err = capsys.readouterr().err
    assert "parameter InputDataUri='': the value is empty" in err and err.count("\n") == 1, err
    assert "outside the data lake" not in err


@pytest.mark.parametrize("uri, quoted", [("", "''"), (" ", "' '"), ("s3://x/\x1b[2J", "'s3://x/\\x1b[2J'")])
def test_a_uri_outside_the_lake_is_quoted_when_it_would_not_read_as_one(uri, quoted):
    mapping = LakeMapping(bucket="lake", lake=None)  # type: ignore[arg-type]  # key() reads the bucket only
    with pytest.raises(JobError) as refused:
        mapping.key(uri)
    assert str(refused.value).startswith(f"{quoted} is outside the data lake (s3://lake/...)"), refused.value
    with pytest.raises(JobError, match=r"^s3://other/a is outside the data lake"):
        mapping.key("s3://other/a")  # a plain URI as it was written


def test_a_name_given_twice_is_quoted_cut(tmp_path, capsys):
    name = "N\x1b[2J" * 1000
    assert main(["--workspace", str(tmp_path / "ws"), "run", "--local", "--param", f"{name}=1",
                 "--param", f"{name}=2"]) == 2
    err = capsys.readouterr().err
    assert "given twice ('1' and '2')" in err and err.count("\n") == 1 and len(err) < 300, len(err)
    assert "\x1b" not in err


@pytest.mark.parametrize("parameters, message", [
    ([NOTE, {**NOTE, "DefaultValue": "y"}],
     "Parameters[1]: Name 'Note' is declared twice (also Parameters[0]): a pipeline's parameter names are unique"),
    ([{"Name": "N", "Type": "Integer", "DefaultValue": 2**70}],
     "Parameters[0] (N): DefaultValue of an Integer must be within 64 bits, got one of 71 bits"),
    ([{"Name": "N", "Type": "Integer", "DefaultValue": "5"}],
     "Parameters[0] (N): DefaultValue must be an instance matching the parameter type, a JSON integer for an Integer; "
     "got '5' (str)"),
    ([{"Name": "N", "Type": "Integer", "DefaultValue": 5.0}], "a JSON integer for an Integer; got 5.0 (float)"),
    ([{"Name": "N", "Type": "Integer", "DefaultValue": True}], "a JSON integer for an Integer; got True (bool)"),
    ([{"Name": "B", "Type": "Boolean", "DefaultValue": "true"}],
     "Parameters[0] (B): DefaultValue must be an instance matching the parameter type, JSON true or false for a "
     "Boolean; got 'true' (str)"),
    ([{"Name": "B", "Type": "Boolean", "DefaultValue": 1}], "JSON true or false for a Boolean; got 1 (int)"),
    ([{"Name": "F", "Type": "Float", "DefaultValue": "0.5"}], "a JSON number for a Float; got '0.5' (str)"),
    ([{"Name": "S", "Type": "String", "DefaultValue": 5}], "a JSON string for a String; got 5 (int)"),
])
def test_a_saved_definitions_declarations_are_held_to_their_types(tmp_path, capsys, parameters, message):
    assert message in "; ".join(declared_parameter_problems({"Parameters": parameters}))
    with pytest.raises(ExecutionError, match="Parameters"):
        resolve_parameters({"Parameters": parameters}, {})
    path = tmp_path / "definition.json"
    path.write_text(json.dumps({"Version": "2020-12-01", "Parameters": parameters, "Steps": [FAIL]}))
    assert main(["--workspace", str(tmp_path / "ws"), "run", "--local", "--definition", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "ws" / "executions").exists()


def test_well_typed_defaults_are_taken():
    parameters = [{"Name": "N", "Type": "Integer", "DefaultValue": 2**63 - 1},
                  {"Name": "M", "Type": "Integer", "DefaultValue": -2**63},
                  {"Name": "F", "Type": "Float", "DefaultValue": 1}, {"Name": "G", "Type": "Float", "DefaultValue": 0.5},
                  {"Name": "B", "Type": "Boolean", "DefaultValue": False}, {"Name": "S", "Type": "String", "DefaultValue": "s"}]
    assert declared_parameter_problems({"Parameters": parameters}) == []
    assert resolve_parameters({"Parameters": parameters}, {}) == {"N": 2**63 - 1, "M": -2**63, "F": 1.0, "G": 0.5,
                                                                  "B": False, "S": "s"}


def test_a_value_is_sent_as_the_retrain_function_sends_it():
    """The retrain function's package holds none of pipelines/: its copy of the rule must give the same text."""
    from lambda_functions import load_function

    from pipelines.executor import parameter_text  # the pipeline's rule (diagnosa pipeline start sent str(): True)

    retrain = load_function("retrain")
    for value in (True, False, 0, 7, -3, 2**63 - 1, 0.5, 1.0, 1e-3, 0.0, "x", "true", "ml.m5.xlarge"):
        assert parameter_text(value) == retrain.parameter_text(value), value
    assert (parameter_text(True), parameter_text(False)) == ("true", "false")


@pytest.fixture(name="aws")
def aws_fixture():
    with mock_aws():
        boto3.client("s3", region_name="eu-west-1").create_bucket(
            Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.put_object(Bucket="lake", Key="curated/patients/LATEST.json", Body=json.dumps({"version": "abc123def456"}))
        s3.put_object(Bucket="lake", Key="curated/patients/abc123def456/manifest.json", Body=b"{}")
        sagemaker = boto3.client("sagemaker", region_name="eu-west-1")
        definition = {"Version": "2020-12-01", "Steps": [FAIL], "Parameters": [
            {"Name": "InputDataUri", "Type": "String", "DefaultValue": "s3://lake/curated/patients/"},
            NOTE, {"Name": "On", "Type": "Boolean", "DefaultValue": False}]}
        sagemaker.create_pipeline(PipelineName="diagnosa", PipelineDefinition=json.dumps(definition), RoleArn=ROLE)
        yield sagemaker


def _sent(aws, execution: str) -> dict[str, str]:
    return {p["Name"]: p["Value"] for p in aws.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=execution)["PipelineParameters"]}


def test_pipeline_start_sends_a_boolean_as_sagemaker_writes_it(aws, capsys):
    assert main(["pipeline", "start", *COMMON, "--param", "On=TRUE", "--param", "Note=" + "y" * 1024]) == 0
    execution = capsys.readouterr().out.split()[0]
    sent = _sent(aws, execution)
    assert (sent["On"], sent["Note"]) == ("true", "y" * 1024)  # str(True) sent "True"
    assert main(["pipeline", "start", *COMMON, "--param", "On=false"]) == 0
    assert _sent(aws, capsys.readouterr().out.split()[0])["On"] == "false"


@pytest.mark.parametrize("value, message", [
    ("", "parameter Note='': the value is empty"),
    ("y" * 1025, "the value is 1,025 characters, at most 1,024"),
    ("a\udcffb", "parameter Note='a\\udcffb': the value holds a lone UTF-16 surrogate"),
])
def test_pipeline_start_refuses_what_run_local_refuses(aws, capsys, value, message):
    assert main(["pipeline", "start", *COMMON, "--param", f"Note={value}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("diagnosa: error: ") and err.count("\n") == 1, err
    assert aws.list_pipeline_executions(PipelineName="diagnosa")["PipelineExecutionSummaries"] == []
