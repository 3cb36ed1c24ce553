"""What the CLI prints names paths the user chose -- the workspace, an input file, the errors file, --out -- and a
folder's name may hold an ESC or a newline. On ordinary lines (not only errors) they reached the terminal raw: a
workspace ``ws\\x1b]0;pwned\\x07`` retitled the terminal on `registry list`, `executions` and `endpoint list`, one
holding a newline forged a line of their output, and `predict`'s line naming its errors file did the same. Every
line now shows such a character escaped (``\\x1b``, ``\\n``), as error lines already did.

A name longer than the file system holds (ENAMETOOLONG: over 255 bytes) was "File name too long" with exit status 1,
as if the machine had failed; it is bad input: exit status 2, one line naming the path (cut and escaped) and saying
the name is too long for the file system.

Each runs here as a user runs it: the CLI in a subprocess."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

DIAGNOSA = [sys.executable, "-m", "diagnosa"]

# A window-title escape sequence (OSC 0 ... BEL), and a newline that would start a forged line.
HOSTILE = {"escape": ("ws\x1b]0;pwned\x07", "ws\\x1b]0;pwned\\x07"),
           "newline": ("ws\nforged line", "ws\\nforged line")}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DIAGNOSA_HOME", "DIAGNOSA_LAKE",
                                                                           "DIAGNOSA_RAW_LAKE")}
    return subprocess.run([*DIAGNOSA, *args], cwd=cwd, env={**env, "PYTHONIOENCODING": "utf-8"}, capture_output=True,
                          text=True, encoding="utf-8", errors="backslashreplace", timeout=300)


def _assert_escaped(said: str, raw: str, escaped: str) -> None:
    assert raw not in said, said
    assert "\x1b" not in said and "\x07" not in said, said
    assert escaped in said, said
    assert "Traceback" not in said, said


def _no_endpoint_url() -> str:
    """The URL of a port no server listens on (nothing is sent: every record is refused before a request)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("command", [["registry", "list"], ["executions"], ["endpoint", "list"]],
                         ids=["registry-list", "executions", "endpoint-list"])
def test_a_workspace_path_with_control_characters_is_printed_escaped(tmp_path, command, kind):
    name, escaped = HOSTILE[kind]
    done = _run(["--workspace", str(tmp_path / name), *command], tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_escaped(done.stdout + done.stderr, name, escaped)
    assert done.stdout.count("\n") == 1, done.stdout  # one line: none forged
    assert done.stdout.count(escaped) == 2, done.stdout  # the folder listed, and the workspace it is in


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_predicts_line_naming_the_input_and_its_errors_file_is_escaped(tmp_path, kind):
    name, escaped = HOSTILE[kind]
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(f"not json {n}\n" for n in range(12)), encoding="utf-8")  # over the 10 listed
    done = _run(["predict", str(source), "--endpoint-url", _no_endpoint_url(), "--timeout", "5"], tmp_path)
    assert done.returncode == 2, done.stderr
    _assert_escaped(done.stdout + done.stderr, name, escaped)
    lines = done.stderr.splitlines()
    assert any(line.startswith("every problem, one JSON line each: ") and line.endswith(f"{escaped}.jsonl.errors.jsonl")
               for line in lines), done.stderr
    assert f"patient record(s) of {tmp_path}/{escaped}.jsonl refused" in lines[0], done.stderr
    assert (tmp_path / f"{name}.jsonl.errors.jsonl").is_file()  # the file itself keeps its name


def test_pipeline_definitions_wrote_line_is_escaped(tmp_path):
    name, escaped = HOSTILE["escape"]
    done = _run(["pipeline", "definition", "--bucket", "my-bucket", "--region", "eu-west-1", "--out",
                 str(tmp_path / f"{name}.json")], tmp_path)
    assert done.returncode == 0, done.stderr
    _assert_escaped(done.stdout + done.stderr, name, escaped)
    assert (tmp_path / f"{name}.json").is_file()


def test_a_runs_report_names_its_record_escaped(tmp_path, capsys):
    # `run --local` and `monitor --retrain` end with this report; the execution's record lies in the workspace.
    from diagnosa.commands.local import report_run
    from diagnosa.lake import DataLake

    name, escaped = HOSTILE["newline"]
    record = SimpleNamespace(id="20261206T000000Z-abcdef", status="Succeeded", steps={}, data={"Parameters": {}},
                             path=tmp_path / name / "executions" / "20261206T000000Z-abcdef" / "execution.json")
    assert report_run(record, DataLake.from_uri(str(tmp_path / name / "lake"))) == 0
    out = capsys.readouterr().out
    _assert_escaped(out, name, escaped)
    assert out.count("\n") == 1, out


LONG = "\x1b" + "a" * 300  # one name over the 255 bytes a file system holds, with an ESC to escape


def _assert_too_long(done: subprocess.CompletedProcess[str], cut: bool = True) -> None:
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert done.stderr.startswith("diagnosa: error: ") and done.stderr.count("\n") == 1, said
    assert "File name too long for the file system: " in done.stderr, said
    assert "bytes, at most 255 are held: give a shorter name" in done.stderr, said
    assert "\\x1baaaa" in done.stderr and "\x1b" not in said, said  # the path named, escaped
    assert ("…" in done.stderr or not cut) and len(done.stderr) < 700, said  # ... and cut
    assert "Traceback" not in said


def test_predict_of_a_file_whose_name_is_too_long_is_bad_input(tmp_path):
    _assert_too_long(_run(["predict", f"{LONG}.json", "--endpoint-url", _no_endpoint_url(), "--timeout", "5"],
                          tmp_path))


def test_ingest_of_a_file_whose_name_is_too_long_is_bad_input(tmp_path):
    labs = tmp_path / "labs.csv"
    labs.write_text("patient_id\n", encoding="utf-8")
    _assert_too_long(_run(["--workspace", str(tmp_path / "ws"), "data", "ingest", f"{LONG}.jsonl", "--labs",
                           str(labs)], tmp_path))


@pytest.mark.parametrize("flag", ["--workspace", "--lake"])
def test_a_workspace_or_lake_with_a_name_too_long_is_bad_input(tmp_path, flag):
    _assert_too_long(_run([flag, str(tmp_path / LONG), "data", "ingest"], tmp_path))


def test_a_path_too_long_as_a_whole_is_bad_input(tmp_path):
    lake = tmp_path.joinpath(*["b" * 200] * 25)  # each name short, the whole over the 4,096 bytes of a path
    done = _run(["--workspace", str(tmp_path / "ws"), "--lake", str(lake), "data", "ingest"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "too long for the file system: the path is " in done.stderr, done.stderr
    assert "bytes, at most 4,096 are held: give a shorter path" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and len(done.stderr) < 700, done.stderr


@pytest.mark.parametrize("argv", [["data", "generate", "--card", f"{LONG}.md"], ["monitor", "--out", LONG]],
                         ids=["generate-card", "monitor-out"])
def test_a_flags_path_with_a_name_too_long_says_which_limit(tmp_path, argv):
    # These flags catch the machine's error themselves, naming the flag: it said "File name too long" alone.
    _assert_too_long(_run(["--workspace", str(tmp_path / "ws"), *argv], tmp_path), cut=False)
