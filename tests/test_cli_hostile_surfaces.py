"""Hostile input at three CLI surfaces: `pipeline ...` (its flags and AWS's answers), `serve`'s options and
`data generate`'s flags. Each ends in one bounded line naming what is wrong (exit status 2 for bad input, 1 for a
service whose answer cannot be used), never a traceback, and a refused command writes nothing."""
from __future__ import annotations

import json
import os
import socket
import time
from http.server import BaseHTTPRequestHandler

import pytest
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


class SageMakerControl(BaseHTTPRequestHandler):
    """SageMaker's control plane as botocore reaches it (the JSON protocol: POST /, the operation in X-Amz-Target,
    application/x-amz-json-1.1), its answers the test's: what a compromised or broken endpoint could send.
    ``answers`` maps an operation (ListPipelineExecutions, ...) to (status, body: bytes, or an object sent as JSON);
    an operation without one is refused (400). Each request's X-Amz-Target is kept in ``received``."""

    protocol_version = "HTTP/1.1"
    answers: dict[str, tuple[int, object]] = {}
    received: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        target = self.headers.get("X-Amz-Target", "")
        self.received.append(target)
        operation = target.removeprefix("SageMaker.")
        status, body = self.answers.get(operation, (400, {"__type": "ValidationException",
                                                          "message": f"the test gave no answer to {target}"}))
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for key, value in {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "req-1",
                           "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


UNASKED = object()  # an operation the test gives no answer to


@pytest.fixture(name="sagemaker")
def sagemaker_fixture(http_server, aws_endpoints):
    """``answer(listing=, described=, pipeline=, error=) -> handler``: SageMaker of region eu-west-1, for every boto3
    client made after it (the CLI's own, diagnosa.aws.client: dummy credentials, no AWS configuration file), answering
    ListPipelineExecutions with ``listing``, DescribePipelineExecution with ``described`` and DescribePipeline with
    ``pipeline`` (each sent as JSON, None as null, with status 200; one not given is refused: 400), or each of them
    with ``error``: (status, body). S3 stays where it was (moto, under the fixture "aws")."""

    def answer(listing=UNASKED, described=UNASKED, pipeline=UNASKED, error=None) -> type:
        given = {"ListPipelineExecutions": listing, "DescribePipelineExecution": described, "DescribePipeline": pipeline}
        answers = {operation: (200, body) for operation, body in given.items() if body is not UNASKED}
        if error is not None:
            answers = dict.fromkeys(given, error)
        url, handler = http_server(SageMakerControl, answers=answers)
        aws_endpoints(sagemaker=url)
        return handler

    return answer


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


def test_a_region_the_sdk_has_no_image_for_is_named_without_the_sdks_list(aws, capsys):
    # A well-formed name the SDK does not know: its own words listed every region it knows (~40) after it.
    assert main(["pipeline", "upsert", "--bucket", "lake", "--region", "nowhere", "--role-arn", ROLE]) == 2
    err = capsys.readouterr().err
    assert one_line_error(err) and "AWS region 'nowhere' has no SageMaker pytorch" in err and "eu-north-1" not in err
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
JAN_1_2026 = 1_767_225_600  # a timestamp as SageMaker's JSON carries it: seconds since the epoch

@pytest.fixture
def utc():
    """The machine's time zone UTC while the test runs: botocore gives a timestamp in the local one."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_status_prints_aws_text_escaped_and_bounded(sagemaker, capsys):
    sagemaker(listing={"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]},
              described={"PipelineExecutionStatus": HOSTILE + "S" * 10_000_000, "CreationTime": JAN_1_2026,
                         "FailureReason": "step Train failed:\n" + HOSTILE * 1000})
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{ARN}  ") and lines[1].startswith("  reason: step Train failed:")
    assert "\x1b" not in out and "\u202e" not in out and "\\x1b[2J" in out and "\\ud800" in out
    assert "FORGED" not in "".join(line.split("  ")[0] for line in lines[1:])  # no forged line starts
    assert all(len(line) < BOUND for line in lines)
    out.encode("utf-8")  # printable: no lone surrogate left


# Answers botocore's own parser cannot read (no object where one goes, text where a list goes, a time that is none):
# it raised AttributeError or ValueError from inside the call, past the CLI's handling of AWS's failures (a traceback).
UNREADABLE = [
    pytest.param("status", {"listing": None}, "ListPipelineExecutions", id="listing-null"),
    pytest.param("list", {"listing": {"PipelineExecutionSummaries": "abc"}}, "ListPipelineExecutions",
                 id="listing-text"),
    pytest.param("status", {"listing": {"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]},
                            "described": None}, "DescribePipelineExecution", id="described-null"),
    pytest.param("status", {"listing": {"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]},
                            "described": ["x"]}, "DescribePipelineExecution", id="described-list"),
    pytest.param("status", {"listing": {"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]},
                            "described": {"PipelineExecutionStatus": "Failed", "CreationTime": "x\udcff\n" * 10_000}},
                 "DescribePipelineExecution", id="time-none"),
    pytest.param("start", {"pipeline": None}, "DescribePipeline", id="pipeline-null"),
]


@pytest.mark.parametrize("verb, answers, operation", UNREADABLE)
def test_an_answer_botocore_cannot_read_is_one_line(aws, sagemaker, capsys, verb, answers, operation):
    sagemaker(**answers)
    argv = ["pipeline", verb, *COMMON] if verb == "start" else ["pipeline", verb, "--region", "eu-west-1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and f"AWS: the answer to {operation} cannot be read (" in err
    assert "\x1b" not in err and len(err) < 1_000  # botocore's words quoted bounded (its ValueError quotes the value)
    err.encode("utf-8")  # printable: no lone surrogate left


class S3Answers(BaseHTTPRequestHandler):
    """S3 answering every GET with the test's XML ``listing`` (ListObjectsV2) and every object with ``body``."""

    listing: bytes = b""
    body: bytes = b""

    def do_GET(self):  # noqa: N802  (http.server's name)
        self.received.append(self.path)
        data = self.listing if "list-type=2" in self.path else self.body
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize("listing", [
    b"<ListBucketResult><KeyCount>many</KeyCount></ListBucketResult>",  # ValueError: int('many')
    b"<ListBucketResult><Contents><Key>a</Key><LastModified>someday</LastModified></Contents></ListBucketResult>",
])
def test_an_s3_listing_botocore_cannot_read_is_a_botocore_error(http_server, aws_endpoints, listing):
    # (A body that is no XML at all botocore's S3 handlers already take for an error: a ClientError, as AWS's refusals.)
    from botocore.exceptions import BotoCoreError

    import diagnosa.aws

    url, served = http_server(S3Answers, listing=listing, body=b"[1, 2]\n" * 1000)
    aws_endpoints(s3=url)
    s3 = diagnosa.aws.client("s3", "eu-west-1")
    with pytest.raises(BotoCoreError, match=r"^the answer to ListObjectsV2 cannot be read \(") as refused:
        s3.list_objects_v2(Bucket="lake", Prefix="curated/")
    assert len(str(refused.value)) < 300 and sum("list-type=2" in path for path in served.received) == 1  # no retry
    assert s3.get_object(Bucket="lake", Key="x.json")["Body"].read() == b"[1, 2]\n" * 1000  # a stream: not parsed


def test_list_prints_the_newest_executions_from_the_listing_alone(sagemaker, utc, capsys):
    # 100,000 summaries were 100,000 DescribePipelineExecution calls and 100,000 lines.
    served = sagemaker(listing={"PipelineExecutionSummaries": [
        {"PipelineExecutionArn": ARN, "PipelineExecutionStatus": "Succeeded",
         "StartTime": JAN_1_2026}] * 100_000 + [{"PipelineExecutionArn": "a\nb"}]})
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == LISTED_EXECUTIONS + 1 and lines[0] == f"{ARN}  Succeeded  started 2026-01-01 00:00:00+00:00"
    assert "newest 100 shown" in lines[-1]
    assert served.received == ["SageMaker.ListPipelineExecutions"]


def test_list_escapes_each_summary(sagemaker, capsys):
    sagemaker(listing={"PipelineExecutionSummaries": [{"PipelineExecutionArn": "arn\nforged",
                                                       "PipelineExecutionStatus": HOSTILE, "StartTime": None}, {}]})
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and "arn\\nforged" in out and "\x1b" not in out and "None  ?  started None" in out


@pytest.mark.parametrize("verb", ["status", "list"])
@pytest.mark.parametrize("listing", [
    {},
    {"PipelineExecutionSummaries": None},  # botocore drops the null: the answer is {}
    {"PipelineExecutionSummaries": [None]},
])
def test_a_listing_without_its_list_is_one_line(sagemaker, capsys, verb, listing):
    sagemaker(listing=listing, described={"PipelineExecutionStatus": "Succeeded"})
    assert main(["pipeline", verb, "--region", "eu-west-1"]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and "AWS answered ListPipelineExecutions without a list of PipelineExecution" in err


@pytest.mark.parametrize("summary, described, says", [
    ({}, {}, "AWS answered ListPipelineExecutions with None, not an execution's ARN"),
    ({"PipelineExecutionArn": None}, {}, "with None, not an execution's ARN"),
    ({"PipelineExecutionArn": "\x1b[31m\nx"}, {}, r"with \x1b[31m\nx, not an execution's ARN"),
])
def test_status_with_a_malformed_answer_is_one_line(sagemaker, capsys, summary, described, says):
    sagemaker(listing={"PipelineExecutionSummaries": [summary]}, described=described)
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err


def test_status_of_an_execution_without_a_status_says_so(sagemaker, capsys):
    sagemaker(listing={"PipelineExecutionSummaries": [{"PipelineExecutionArn": ARN}]}, described={})
    assert main(["pipeline", "status", "--region", "eu-west-1"]) == 0
    assert capsys.readouterr().out == f"{ARN}  ?  started None\n"


def test_an_aws_refusal_is_quoted_on_one_line(sagemaker, capsys):
    served = sagemaker(error=(400, {"__type": "ValidationException",
                                    "message": "no\nFORGED: line \x1b[31m" + "x" * 100_000}))
    assert main(["pipeline", "list", "--region", "eu-west-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnosa: error: AWS refused list: ") and err.count("\n") == 1
    assert "\\nFORGED" in err and "\x1b" not in err and len(err) < MAX_ERROR + 100  # the CLI's bound on an error
    assert served.received == ["SageMaker.ListPipelineExecutions"]  # a refusal is not retried


@pytest.mark.parametrize("pipeline, says", [
    ({}, "without a readable PipelineDefinition (a JSON object): got None"),
    ({"PipelineDefinition": "{not json"}, "got {not json"),
    ({"PipelineDefinition": "[1, 2]"}, "got [1, 2]"),
    ({"PipelineDefinition": "\x1b[2J\n" * 10_000}, "got \\x1b[2J\\n"),
])
def test_start_with_an_unreadable_deployed_definition_is_one_line(aws, sagemaker, capsys, pipeline, says):
    sagemaker(pipeline=pipeline)
    assert main(["pipeline", "start", *COMMON]) == 1
    err = capsys.readouterr().err
    assert one_line_error(err) and says in err


@pytest.mark.parametrize("parameters", [None, [None], [{"Name": "a\nb", "Type": "String"}], "x"])
def test_start_with_a_malformed_deployed_definition_names_it(aws, sagemaker, capsys, parameters):
    definition = {"Version": "2020-12-01", "Parameters": parameters, "Steps": []}
    sagemaker(pipeline={"PipelineDefinition": json.dumps(definition)})
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
