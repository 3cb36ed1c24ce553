"""Files and values a user names on the command line that are no file, no end, or out of reach: each was a hang, an
exhausted machine or a traceback, and is one error line with exit status 2."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from diagnosa.cli import main
from diagnosa.files import FileProblem, read_file_bounded


def test_a_bounded_read_names_what_the_path_is(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "big").write_bytes(b"x" * 11)
    (tmp_path / "ok").write_bytes(b"x" * 10)
    for path, says in ((tmp_path / "pipe", "is a named pipe (FIFO)"), ("/dev/zero", "is a device"),
                       (tmp_path, "is a directory"), (tmp_path / "missing", "the thing not found"),
                       (tmp_path / "big", "is over 10 bytes, the most read")):
        with pytest.raises(FileProblem, match=says.replace("(", r"\(").replace(")", r"\)")):
            read_file_bounded(path, 10, "the thing")
    assert read_file_bounded(tmp_path / "ok", 10, "the thing") == b"x" * 10


@pytest.mark.parametrize("argv, says", [
    # /dev/zero read whole exhausted 20 GB of memory (the OOM killer ended it); a FIFO with no writer hung.
    (["run", "--local", "--definition", "/dev/zero"], "the definition /dev/zero is a device: give the path of a file"),
    (["run", "--local", "--definition", "{fifo}"], "the definition {fifo} is a named pipe (FIFO)"),
    (["data", "ingest", "{csv}", "--config", "{fifo}"], "dataset config {fifo} is a named pipe (FIFO)"),
    (["feedback", "--file", "/dev/zero"], "feedback file /dev/zero is a device"),
    (["feedback", "--file", "{empty}"], "{empty} holds no feedback (it is empty or only blank lines)"),
    # Values within the flags' own ranges that broke further in: tracebacks.
    (["data", "generate", "--patients", "1000", "--orphan-fraction", "0.6"],
     "--orphan-fraction 0.6 leaves no room for common diseases beside the 40% healthy patients: give less than 0.6"),
    (["predict", "{csv}", "--endpoint-url", "http://127.0.0.1:9", "--timeout", "1e300"],
     "'1e300' seconds is more than a day (86,400 s), the longest wait taken"),
    # Ignored without a word, or found only after the raw batch was written.
    (["data", "generate", "--patients", "1000", "--drift-strength", "0.5"], "--drift-strength goes with --drift"),
    (["data", "generate", "--patients", "1000", "--card", "{dir}"], "--card {dir}: it is a directory, not a file"),
])
def test_a_path_or_value_out_of_reach_is_one_error_line(tmp_path, capsys, argv, says):
    fifo, csv = tmp_path / "fifo", tmp_path / "x.csv"
    os.mkfifo(fifo)
    csv.write_text("case,age,outcome\nc1,30,a\n")
    (tmp_path / "empty.jsonl").write_text("\n \n")
    fill = {"{fifo}": str(fifo), "{csv}": str(csv), "{dir}": str(tmp_path), "{empty}": str(tmp_path / "empty.jsonl")}
    argv = [fill.get(arg, arg) for arg in argv]
    try:
        code = main(["--workspace", str(tmp_path / "ws"), *argv])
    except SystemExit as exited:  # argparse's own refusal of a flag's value
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2
    assert says.format(**{k.strip("{}"): v for k, v in fill.items()}) in err and "Traceback" not in err
    assert not list((tmp_path / "ws").rglob("*.jsonl"))  # nothing generated or ingested


@pytest.mark.parametrize("argv", [["predict", "-", "--endpoint-url", "http://127.0.0.1:9"], ["feedback", "--file", "-"]])
def test_standard_input_closed_is_one_error_line(tmp_path, argv):
    # `0<&-`: sys.stdin is None, and reading it was an AttributeError traceback.
    command = [sys.executable, "-m", "diagnosa", "--workspace", str(tmp_path / "ws"), *argv]
    done = subprocess.run(["bash", "-c", 'exec "$@" 0<&-', "bash", *command], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "standard input is closed" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [["predict", "x.json", "--endpoint-url", ""],
                                  ["feedback", "e1", "NO ENFERMO", "--endpoint-url", " "]])
def test_an_empty_endpoint_url_is_refused_not_read_as_left_out(tmp_path, capsys, argv):
    # An unset shell variable sent predictions to the workspace's endpoint, and feedback straight to the lake.
    with pytest.raises(SystemExit) as exited:
        main(["--workspace", str(tmp_path / "ws"), *argv])
    assert exited.value.code == 2
    assert "--endpoint-url is empty or blank (an unset shell variable?)" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["serve", "--model", "m", "--feedback-token-file", ""], "--feedback-token-file"),  # served feedback with no token
    (["app", "--host", " "], "--host"),  # listened on every interface
    (["pipeline", "definition", "--region", "eu-west-1", "--bucket", "b", "--subnets", "", "--security-group-ids", ""],
     "--subnets"),  # a pipeline outside the VPC
    (["pipeline", "upsert", "--region", "eu-west-1", "--bucket", "b", "--kms-key", ""], "--kms-key"),  # without it
    (["pipeline", "definition", "--region", "eu-west-1", "--bucket", "b", "--model-package-group", ""],
     "--model-package-group"),  # the default group
    (["run", "--local", "--definition", ""], "--definition"),  # trained the built-in cohort
    (["serve", "--model", ""], "--model"),  # loaded the current folder
    (["monitor", "--baseline", ""], "--baseline"), (["data", "ingest", "--batch", ""], "--batch"),
    (["job", "prepare", "Select", "--root", ""], "--root"), (["feedback", "--file", "x", "--errors-file", " "],
                                                            "--errors-file")])
def test_an_empty_text_flag_is_refused_not_read_as_left_out(tmp_path, capsys, argv, flag):
    with pytest.raises(SystemExit) as exited:
        main(["--workspace", str(tmp_path / "ws"), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag} is empty or blank (an unset shell variable?): give a value, or leave {flag} out for" in err
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize("argv, says", [
    # Each was taken without a word and never used: the saved definition's own families ran, the CSV was stored under
    # its own name, the local endpoint answered.
    (["run", "--local", "--definition", "saved.json", "--families", "xgboost"],
     "--families builds a definition; --definition runs a saved one with the families it has"),
    (["data", "ingest", "my.csv", "--config", "my.toml", "--batch", "b1"], "--batch goes with the built-in cohort's"),
    (["data", "ingest", "my.csv", "--config", "my.toml", "--batch", "b1", "--labs", "l.csv"],
     "--batch and --labs go with the built-in cohort's files"),
    (["predict", "x.json", "--endpoint-url", "http://127.0.0.1:9", "--region", "eu-west-1"],
     "--region is for a SageMaker endpoint; the local endpoint is chosen by --endpoint-url")])
def test_flags_that_would_be_ignored_together_are_refused(tmp_path, capsys, argv, says):
    assert main(["--workspace", str(tmp_path / "ws"), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not (tmp_path / "ws" / "lake").exists()


@pytest.mark.parametrize("region", ["\udcff", "eu west", "eu-west-1/"])
def test_a_region_that_is_no_regions_name_is_named_as_the_region(tmp_path, capsys, region):
    # botocore's "Provided region_name ... doesn't match a supported format" was said of --endpoint-url.
    assert main(["--workspace", str(tmp_path / "ws"), "predict", "x.json", "--region", region]) == 2
    err = capsys.readouterr().err
    assert "(--region) is not a region's name: e.g. eu-west-1" in err and "--endpoint-url" not in err


def test_every_text_flag_of_every_command_refuses_a_blank_value():
    # One rule for the ~80 text flags, not one flag at a time: a flag added later gets it too.
    from diagnosa.cli import OWN_BLANK_RULE, build_parser

    checked = []

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.option_strings and isinstance(action, (argparse._StoreAction, argparse._AppendAction)) \
                    and action.nargs is None and action.choices is None and action.dest not in OWN_BLANK_RULE:
                try:
                    action.type("  ") if action.type is not None else None
                except (argparse.ArgumentTypeError, ValueError, TypeError):
                    checked.append(action.dest)
                else:
                    raise AssertionError(f"{action.option_strings} takes a blank value")
    walk(build_parser())
    assert len(checked) > 60


@pytest.mark.parametrize("argv", [["predict", "-", "--endpoint-url", "http://127.0.0.1:9"], ["feedback", "--file", "-"]])
def test_an_errors_file_that_is_standard_input_redirected_from_it_is_refused(tmp_path, argv):
    # `predict - --errors-file x.jsonl < x.jsonl` replaced the patients, and went on reading the problems as patients.
    path = tmp_path / "x.jsonl"
    text = "".join(json.dumps({"age": -1, "event_id": f"e{i}"}) + "\n" for i in range(40))
    path.write_text(text)
    command = [sys.executable, "-m", "diagnosa", "--workspace", str(tmp_path / "ws"), *argv, "--errors-file", str(path)]
    with path.open() as stdin:
        done = subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is the " in done.stderr and "being read: it would be overwritten" in done.stderr
    assert path.read_text() == text


def test_standard_output_closed_is_refused_not_lost_with_status_0(tmp_path):
    # `diagnosa executions >&-` printed nothing (sys.stdout is None) and exited 0.
    command = [sys.executable, "-m", "diagnosa", "--workspace", str(tmp_path / "ws"), "executions"]
    done = subprocess.run(["bash", "-c", 'exec "$@" >&-', "bash", *command], capture_output=False,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2 and "standard output is closed (>&-)" in done.stderr


def test_a_capture_spool_that_is_a_file_is_bad_input(two_label_model_dir, tmp_path, capsys):
    # It exited 1 with the machine's bare "Not a directory".
    (tmp_path / "afile").write_text("x")
    code = main(["--workspace", str(tmp_path / "ws"), "serve", "--model", str(two_label_model_dir), "--port", "0",
                 "--capture-spool", str(tmp_path / "afile")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot use the capture spool {tmp_path / 'afile'}: " in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["predict", "-", "--top-k"], ["predict", "-", "--timeout"], ["predict", "-", "--endpoint-url"], ["executions"],
    ["endpoint", "stop"], ["run", "--local", "--resume"], ["run", "--local", "--families"], ["monitor", "--last"],
    ["monitor", "--since"], ["monitor", "--min-psi"], ["registry", "approve"],
    ["predict", "--endpoint-url", "http://127.0.0.1:9", "--batch"]],
    ids=lambda argv: " ".join(argv))
def test_a_value_as_long_as_an_argument_can_be_is_not_said_back_whole(tmp_path, capsys, argv):
    # Each of these errors quoted the value whole: 128 KiB of 'a' said back as a 128 KiB error line.
    value = "a" * 128_000
    try:
        status = main(["--workspace", str(tmp_path / "ws"), *argv, value])
    except SystemExit as stop:  # argparse's own refusal of the value
        status = stop.code
    assert status == 2
    said = capsys.readouterr()
    assert "a" * 50 in said.err and len(said.err) < 10_000 and not said.out
