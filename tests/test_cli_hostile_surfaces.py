"""Hostile input at three CLI surfaces: `pipeline ...` (its flags and AWS's answers), `serve`'s options and
`data generate`'s flags. Each ends in one bounded line naming what is wrong (exit status 2 for bad input, 1 for a
service whose answer cannot be used), never a traceback, and a refused command writes nothing."""
from __future__ import annotations

import datetime
import json
import socket

import pytest
from botocore.exceptions import ClientError
from test_pipeline_cli import COMMON, ROLE, aws_fixture  # noqa: F401  (the fixture "aws": moto with the lake bucket)

import diagnosa.cli
from diagnosa.cli import MAX_ERROR, main

# Read from the CLI when it has them (a checkout before them collects these tests and fails each on its own).
LISTED_EXECUTIONS = getattr(diagnosa.cli, "LISTED_EXECUTIONS", 100)
MAX_ARGUMENTS = getattr(diagnosa.cli, "MAX_ARGUMENTS", 1_000)

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/diagnosa/execution/abc123"
BOUND = 4_000  # what one error or line may hold at most here: a few KB


def one_line_error(err: str) -> bool:
    return err.startswith("diagnosa: error: ") and err.count("\n") == 1 and len(err) < BOUND


class FakeSageMaker:
    """A SageMaker client whose answers are the test's: what a compromised or broken endpoint could send."""

    def __init__(self, listing=None, described=None, pipeline=None, error=None):
        self.listing, self.described, self.pipeline, self.error = listing, described, pipeline, error
        self.calls: list[str] = []

    def _answer(self, name, value):
        self.calls.append(name)
        if self.error is not None:
            raise self.error
        return value

    def list_pipeline_executions(self, **kwargs):
        return self._answer("list", self.listing)

    def describe_pipeline_execution(self, **kwargs):
        return self._answer("describe", self.described)

    def describe_pipeline(self, **kwargs):
        return self._answer("describe_pipeline", self.pipeline)


@pytest.fixture
def fake(monkeypatch):
    def install(**answers):
        client = FakeSageMaker(**answers)
        real = diagnosa.cli.aws_client
        monkeypatch.setattr(diagnosa.cli, "aws_client",
                            lambda service, *a, **k: client if service == "sagemaker" else real(service, *a, **k))
        return client
    return install


# ------------------------------------------------------------------------------------------------ pipeline: flags

def test_more_arguments_than_are_read_are_refused_before_parsing(capsys):
    # argparse takes time quadratic in the arguments' number: 100,000 --param ran for about 20 minutes.
    argv = ["pipeline", "start", *COMMON, *(f"--param=P{i}=1" for i in range(MAX_ARGUMENTS))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and f"at most {MAX_ARGUMENTS:,} are read" in err


@pytest.mark.parametrize("argv, says", [
    # Sent as given: a newline in it forged a line of AWS's error, 200,000 characters of it were quoted whole.
    (["pipeline", "status", "--region", "eu-west-1", "--name", "a\nb"], r"--name 'a\nb' is not a SageMaker name"),
    (["pipeline", "list", "--region", "eu-west-1", "--name", "a" * 200_000], "is not a SageMaker name"),
    (["pipeline", "start", *COMMON, "--name", "\udcff"], r"--name '\udcff' is not a SageMaker name"),
    # botocore refused these with exit status 1 ("AWS: Provided region_name ..."), as if AWS had said no.
    (["pipeline", "status", "--region", "not a region!"], "AWS region 'not a region!' (--region) is not a region's"),
    (["pipeline", "list", "--region", "a" * 200_000], "is not a region's name: e.g. eu-west-1"),
    (["pipeline", "start", "--bucket", "lake", "--region", "\udcff"], r"AWS region '\udcff' (--region)"),
    # Quoted whole (100,000 characters).
    (["pipeline", "upsert", *COMMON, "--role-arn", "arn:aws:iam::123456789012:role/" + "a" * 100_000],
     "is not an IAM role ARN"),
])
def test_names_and_regions_are_checked_before_aws_is_asked(aws, capsys, argv, says):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err and len(err) < 500
    assert aws.list_pipelines()["PipelineSummaries"] == []


def test_a_region_from_the_environment_is_checked_too(capsys, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu west 1")
    assert main(["pipeline", "status"]) == 2
    assert "AWS region 'eu west 1' (AWS_REGION or AWS_DEFAULT_REGION)" in capsys.readouterr().err


def test_a_parameter_value_every_step_refuses_is_quoted_bounded(aws, capsys):
    assert main(["pipeline", "upsert", *COMMON, "--role-arn", ROLE]) == 0
    capsys.readouterr()
    assert main(["pipeline", "start", *COMMON, "--param", "TrainingInstanceType=" + "m" * 100_000]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "parameter TrainingInstanceType=" in err and len(err) < 2_500
    assert aws.list_pipeline_executions(PipelineName="diagnosa")["PipelineExecutionSummaries"] == []


def test_definition_out_that_is_a_folder_is_bad_input(tmp_path, capsys):
    # "Is a directory" with exit status 1, as if the machine had failed.
    assert main(["pipeline", "definition", *COMMON, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and f"--out {tmp_path} is a directory" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ pipeline: AWS's answers

HOSTILE = "\x1b[2J\x1b[31mFailed\nFORGED-ARN  Succeeded  started now\ud800\u202e"


def test_status_prints_aws_text_escaped_and_bounded(fake, capsys):
    fake(listing={"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]},
         described={"PipelineExecutionStatus": HOSTILE + "S" * 10_000_000, "CreationTime": "x\udcff\n",
                    "FailureReason": "step Train failed:\n" + HOSTILE * 1000})
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{ARN}  ") and lines[1].startswith("  reason: step Train failed:")
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[2J" in out and "\\ud800" in out
    assert "FORGED" not in "".join(line.split("  ")[0] for line in lines[1:])  # no forged line starts
    assert all(len(line) < BOUND for line in lines)
    out.encode("utf-8")  # printable: no lone surrogate left


def test_list_prints_the_newest_executions_from_the_listing_alone(fake, capsys):
    # 100,000 summaries were 100,000 DescribePipelineExecution calls and 100,000 lines.
    client = fake(listing={"PipelineExecutionSummaries": [
        {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Succeeded",
         "StartTime": datetime.datetime(2026, 1, 1)}] * 100_000 + [{"PipelineExecutionArn": "a\nb"}]})
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == LISTED_EXECUTIONS + 1 and lines[0] == f"{ARN}  Succeeded  started 2026-01-01 00:00:00"
    assert "newest 100 shown" in lines[-1]
    assert client.calls == ["list"]


def test_list_escapes_each_summary(fake, capsys):
    fake(listing={"PipelineExecutionSummaries": [{"PipelineExecutionArn": "arn\nforged", "PipelineExecutionStatus":
                                                  HOSTILE, "StartTime": None}, {}]})
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and "arn\\nforged" in out and "\x1b" not in out and "None  ?  started None" in out


@pytest.mark.parametrize("verb", ["status", "list"])
@pytest.mark.parametrize("listing", [None, {}, {"PipelineExecutionSummaries": None},
                                     {"PipelineExecutionSummaries": "abc"}, {"PipelineExecutionSummaries": [None]}])
def test_a_listing_without_its_list_is_one_line(fake, capsys, verb, listing):
    fake(listing=listing, described={"PipelineExecutionStatus": "Succeeded"})
    assert main(["pipeline", verb, "--region", "eu-west-1"]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "AWS answered ListPipelineExecutions without a list of PipelineExecution" in err


@pytest.mark.parametrize("summary, described, says", [
    ({}, {}, "AWS answered ListPipelineExecutions with None, not an execution's ARN"),
    ({"PipelineExecutionArn": None}, {}, "with None, not an execution's ARN"),
    ({"PipelineExecutionArn": "\x1b[31m\nx"}, {}, r"with \x1b[31m\nx, not an execution's ARN"),
    ({"PipelineExecutionArn": ARN}, None, "AWS answered DescribePipelineExecution for"),
    ({"PipelineExecutionArn": ARN}, ["x"], "with ['x'], not an object"),
])
def test_status_with_a_malformed_answer_is_one_line(fake, capsys, summary, described, says):
    fake(listing={"PipelineExecutionSummaries": [summary]}, described=described)
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err


def test_status_of_an_execution_without_a_status_says_so(fake, capsys):
    fake(listing={"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]}, described={})
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 0
    assert capsys.readouterr().out == f"{ARN}  ?  started None\n"


def test_an_aws_refusal_is_quoted_on_one_line(fake, capsys):
    error = ClientError({"Error": {"Code": "ValidationException", "Message": "no\nFORGED: line \x1b[31m" + "x" * 100_000}},
                        "ListPipelineExecutions")
    fake(error=error)
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnosa: error: AWS refused list: ") and err.count("\n") == 1
    assert "\\nFORGED" in err and "\x1b" not in err and len(err) < MAX_ERROR + 100  # the CLI's bound on an error


@pytest.mark.parametrize("pipeline, says", [
    ({}, "without a readable PipelineDefinition (a JSON object): got None"),
    (None, "got None"),
    ({"PipelineDefinition": "{not json"}, "got {not json"),
    ({"PipelineDefinition": "[1, 2]"}, "got [1, 2]"),
    ({"PipelineDefinition": "\x1b[2J\n" * 10_000}, "got \\x1b[2J\\n"),
])
def test_start_with_an_unreadable_deployed_definition_is_one_line(aws, fake, capsys, pipeline, says):
    fake(pipeline=pipeline)
    assert main(["pipeline", "start", *COMMON]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err


@pytest.mark.parametrize("parameters", [None, [None], [{"Name": "a\nb", "Type": "String"}], "x"])
def test_start_with_a_malformed_deployed_definition_names_it(aws, fake, capsys, parameters):
    definition = {"Version": "2020-12-01", "Parameters": parameters, "Steps": []}
    fake(pipeline={"PipelineDefinition": json.dumps(definition)})
    assert main(["pipeline", "start", *COMMON]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "the deployed definition is malformed: Parameters" in err


# ------------------------------------------------------------------------------------------------ serve

def test_serve_refuses_an_empty_host(tmp_path, capsys):
    # --host "$HOST" with HOST unset listened on every interface.
    with pytest.raises(SystemExit) as exited:
        main(["--workspace", str(tmp_path), "serve", "--model", str(tmp_path), "--host", "", "--port", "0",
              "--workers", "0", "--capture-sampling", "0"])
    assert exited.value.code == 2 and "--host is empty or blank" in capsys.readouterr().err


@pytest.mark.parametrize("make, says", [
    (lambda tmp: "/dev/zero", "--model /dev/zero: it is a device, not a file"),  # was hashed by reading it whole
    (lambda tmp: (tmp / "loop").symlink_to(tmp / "loop") or str(tmp / "loop"), "it is a symbolic link that loops"),
    (lambda tmp: str(tmp / ("a" * 300)), "File name too long"),  # exit status 1, the 300 characters quoted whole
])
def test_serve_says_what_a_model_path_is(tmp_path, capsys, make, says):
    model = make(tmp_path)
    assert main(["--workspace", str(tmp_path / "ws"), "serve", "--model", model, "--workers", "0",
                 "--capture-sampling", "0"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err


def test_serve_on_a_port_in_use_says_what_to_do(tmp_path, capsys):
    taken = socket.socket()
    for port in range(47250, 47300):
        try:
            taken.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    taken.listen(1)
    try:
        model = tmp_path / "model"
        model.mkdir()
        assert main(["--workspace", str(tmp_path / "ws"), "serve", "--model", str(model), "--port", str(port),
                     "--workers", "0", "--capture-sampling", "0"]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err.splitlines()[-1]
    assert f"cannot listen on 127.0.0.1:{port}" in err and "choose another --port (0: any free one)" in err


def test_serve_port_of_thousands_of_digits_is_named_as_such(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--model", "m", "--port", "9" * 5_000])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--port must be between 0 and 65,535, got a number of 5,000 digits" in err
    assert len(err) < 1_000


# ------------------------------------------------------------------------------------------------ data generate

def raw_files(ws):
    return sorted(p.name for p in ws.rglob("*") if p.is_file())


def test_generate_refuses_a_batch_made_with_other_flags(tmp_path, capsys):
    # The default batch name holds patients and seed only: asked again with another --orphan-fraction, it said
    # "nothing to do" and the cohort asked for was never made.
    ws = tmp_path / "ws"
    argv = ["--workspace", str(ws), "data", "generate", "--patients", "1000", "--seed", "3", "--quiet"]
    assert main([*argv, "--orphan-fraction", "-0.0"]) == 0
    card = json.loads((ws / "lake/raw/cohort_cards/cohort-n1000-s3.json").read_text())
    assert json.dumps(card["config"]["orphan_fraction"]) == "0.0"  # was -0.0
    before = {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--orphan-fraction", "0.05"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "raw batch cohort-n1000-s3 already in" in err
    assert "was generated with --orphan-fraction 0.0" in err and "another name with --batch NAME" in err
    assert main([*argv, "--batch", "cohort-n1000-s3", "--patients", "2000"]) == 2
    assert "was generated with --patients 1000" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in ws.rglob("*") if p.is_file()} == before
    assert main([*argv, "--orphan-fraction", "0"]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("card, says", [
    ("/dev/null", "--card /dev/null: it is a device, not a file"),  # replaced by... the card was written into it, exit status 0
    ("{tmp}/missing/card.md", "--card {tmp}/missing/card.md: its folder {tmp}/missing does not exist"),
    ("{tmp}/" + "a" * 300, "File name too long"),
])
def test_generate_checks_the_card_path_before_writing_anything(tmp_path, capsys, card, says):
    ws = tmp_path / "ws"
    card, says = card.format(tmp=tmp_path), says.format(tmp=tmp_path)
    assert main(["--workspace", str(ws), "data", "generate", "--patients", "1000", "--card", card, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err
    assert not ws.exists() or raw_files(ws) == []


def test_generate_patients_of_thousands_of_digits_is_named_as_such(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["data", "generate", "--patients", "9" * 5_000])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--patients must be between 1,000 and 1,000,000, got a number of 5,000" in err


@pytest.mark.parametrize("name", ["a" * 300, "a/" * 3_000])
def test_generate_in_a_workspace_whose_name_is_too_long_is_bad_input(tmp_path, capsys, name):
    # "File name too long" with exit status 1, as if the machine had failed, the path quoted whole.
    assert main(["--workspace", str(tmp_path / name), "data", "generate", "--patients", "1000", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "(--workspace or DIAGNOSA_HOME): File name too long" in err and len(err) < 500
    assert list(tmp_path.iterdir()) == []


def test_families_named_twice_are_listed_bounded(capsys):
    # Every repeated name was listed (the CLI cut the message at 8,000 characters), each counted by a scan of them
    # all: 100,000 names took 100 s.
    families = ",".join(f"f{i}" for i in range(3_000)) * 2
    assert main(["pipeline", "definition", *COMMON, "--families", families.replace("f2999f0", "f2999,f0")]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "--families names 3,000 families more than once: f0, f1, f10, " in err
    assert err.endswith(" and 2,990 more\n")
    assert len(err) < 500
