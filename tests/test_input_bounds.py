"""Input that has no end or no place where it is going: a feedback token file that is a device, a FIFO, a folder or
too big; a token an HTTP header cannot carry; a JSON Lines or CSV input whose line (or row) has no end. Each is
refused naming what is wrong (exit status 2 from the CLI, no traceback), and nothing read before it is lost."""
from __future__ import annotations

import io
import json
import os

import pytest
from feedback_endpoint import captured_event

from diagnosa.cli import main
from diagnosa.lake import DataLake
from inference.bulk import Answered, InputRecord, predict_stream, read_records
from inference.capture import DataCapture
from inference.client import ClientFailure, DiagnosaClient, FeedbackRejected
from inference.limits import MAX_BODY_BYTES
from inference.server import EndpointServer

EVENT = "0123456789abcdef0123456789abcdef"


def _nowhere() -> str:
    """An endpoint URL where nothing listens: the token is refused before anything is sent."""
    from diagnosa.net import free_port

    return f"http://127.0.0.1:{free_port()}"


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _token_path(tmp_path, kind):
    path = tmp_path / "token"
    if kind == "device":
        return "/dev/zero"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: opened, it waited forever
    elif kind == "folder":
        path.mkdir()
    elif kind == "too big":
        path.write_text("t" * 5000 + "\n")
    elif kind == "euro":
        path.write_text("s3cret-€-token\n", encoding="utf-8")
    elif kind == "control":
        path.write_text("s3cret\x1btoken\n")
    return path


def _bounded_cli(tmp_path, *argv):
    """The command in a process of its own, at most 1 GiB of memory and 60 s: on a device the token file was read
    without end (a MemoryError), on a FIFO without a writer it waited forever."""
    import resource
    import subprocess
    import sys
    from pathlib import Path

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run([sys.executable, "-m", "diagnosa", *map(str, argv)], capture_output=True, text=True,
                              timeout=60, env=env, cwd=tmp_path, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after 60 s: {argv}")
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("kind, said", [
    ("device", "it is a device, not a file"),
    ("fifo", "it is a named pipe (FIFO), not a file"),
    ("folder", "it is a directory, not a file"),
    ("too big", "is over 4,096 bytes, the most read"),
    ("euro", "holds a character that is not ASCII (character 8 of 14)"),
    ("control", "holds a character that is a control character (character 7 of 12)"),
], ids=["device", "fifo", "folder", "too-big", "non-ascii", "control-char"])
def test_a_token_file_that_is_no_small_file_of_a_header_token_is_refused_naming_it(tmp_path, capsys, kind, said):
    path = _token_path(tmp_path, kind)
    argv = ["--workspace", tmp_path / "ws", "feedback", EVENT, "NO ENFERMO", "--endpoint-url", _nowhere(),
            "--feedback-token-file", path]
    code, out, err = (_bounded_cli(tmp_path, *argv) if kind in ("device", "fifo") else _cli(capsys, *argv))
    assert code == 2 and out == ""
    assert err.startswith("diagnosa: error: ") and str(path) in err and said in err, err
    assert err.count("\n") == 1 and "Traceback" not in err and "€" not in err and "s3cret" not in err


def test_a_token_file_with_a_byte_order_mark_gives_the_token_without_it(tmp_path):
    from diagnosa.commands.common import read_token_file

    path = tmp_path / "token"
    path.write_bytes(b"\xef\xbb\xbfs3cret-token\r\nsecond line\n")  # Windows' Notepad
    assert read_token_file(str(path)) == "s3cret-token"


@pytest.mark.parametrize("given", [True, False], ids=["argument", "environment"])
def test_a_token_http_cannot_carry_is_refused_before_sending_not_blamed_on_the_endpoint(tmp_path, monkeypatch,
                                                                                       given):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None,
                        feedback_token="s3cret-token") as ep:
        event = captured_event(ep)
        if not given:
            monkeypatch.setenv("DIAGNOSA_FEEDBACK_TOKEN", "s3cret-€")
        client = DiagnosaClient("diagnosa", endpoint_url=ep.url, feedback_token="s3cret-€" if given else None)
        with pytest.raises(ClientFailure) as caught:
            client.send_feedback(event, "NO ENFERMO")
        message = str(caught.value)
        assert not isinstance(caught.value, FeedbackRejected)
        assert message.startswith("the feedback token") and "not ASCII" in message and "nothing was sent" in message
        assert ("DIAGNOSA_FEEDBACK_TOKEN" in message) is not given
        assert "not JSON" not in message and "latin-1" not in message and "€" not in message
    assert lake.list("feedback/") == []


@pytest.mark.parametrize("token", ["s3cret-\u20ac", "s3cret\x1btoken"], ids=["euro", "control"])
def test_a_server_is_not_started_with_a_token_no_client_can_send(tmp_path, capsys, monkeypatch, token):
    # It started, and refused every feedback: a client cannot put such a token in its Authorization header.
    with pytest.raises(ValueError, match="^feedback_token holds a character that is "):
        EndpointServer("unused", loader=lambda _: None, feedback_token=token)
    monkeypatch.setenv("DIAGNOSA_FEEDBACK_TOKEN", token)
    model = tmp_path / "model"
    model.mkdir()
    code, _, err = _cli(capsys, "--workspace", tmp_path / "ws", "serve", "--model", model, "--port", "0")
    assert code == 2
    assert err.startswith("diagnosa: error: the feedback token in $DIAGNOSA_FEEDBACK_TOKEN holds a character that is ")
    assert token not in err


class Endless(io.TextIOBase):
    """/dev/zero as text: a line without end. Only a bounded read of it may be asked for."""

    def readable(self):
        return True

    def readline(self, size=-1):
        if size is None or size < 0 or size > MAX_BODY_BYTES + 1:
            raise AssertionError(f"an unbounded line read (size {size})")
        return "\0" * size

    def read(self, size=-1):  # noqa: ARG002
        raise AssertionError("the whole input was read at once")

    def __next__(self):
        raise AssertionError("a line read whole, without a bound")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"], ids=["jsonl", "csv"])
def test_a_line_without_end_stops_reading_naming_the_line_and_the_limit(fmt):
    with pytest.raises(ValueError) as caught:
        records, _ = read_records(Endless(), fmt, "/dev/zero")
        list(records)
    assert str(caught.value).startswith(f"/dev/zero: line 1 is over {MAX_BODY_BYTES:,} characters")


def test_a_line_or_a_csv_row_over_the_limit_is_named_after_the_lines_before_it(tmp_path):
    long = "x" * (MAX_BODY_BYTES + 5)
    records, _ = read_records(io.StringIO('{"age": 50}\n\n' + long + '\n{"age": 60}\n'), "jsonl", "in.jsonl")
    assert next(records) == InputRecord("line 1", {"age": 50})
    with pytest.raises(ValueError, match=rf"^in\.jsonl: line 3 is over {MAX_BODY_BYTES:,} characters"):
        next(records)
    records, _ = read_records(io.StringIO(f"age,note\n50,a\n60,{long}\n"), "csv", "in.csv")
    assert next(records) == InputRecord("line 2", {"age": "50", "note": "a"})
    with pytest.raises(ValueError, match=rf"^in\.csv: line 3 is over {MAX_BODY_BYTES:,} characters"):
        next(records)
    # A row whose quoted cells span lines, each line and each cell short (the csv module's own limit is 131,072
    # characters a cell), the row over the limit in all.
    cell = '"' + ("a" * 1000 + "\n") * 110 + '"'
    width = MAX_BODY_BYTES // len(cell) + 1
    header = ",".join(f"f{i}" for i in range(width))
    text = header + "\n" + ",".join(["1"] * width) + "\n" + ",".join([cell] * width) + "\n"
    records, _ = read_records(io.StringIO(text), "csv", "in.csv")
    assert next(records).where == "line 2"
    with pytest.raises(ValueError, match=r"^in\.csv: the record of lines 3 to [\d,]+ \(a quoted cell spans lines\) "
                                         rf"is over {MAX_BODY_BYTES:,} characters"):
        next(records)


def test_records_read_before_the_input_stops_being_readable_are_answered_first(local_endpoint):
    def records():
        for i in range(3):
            yield InputRecord(f"line {i + 1}", {"patient_id": f"P{i}", "age": 50, "sex": "F"})
        raise ValueError("in.jsonl: line 4 is over the limit")

    client = DiagnosaClient("diagnosa", endpoint_url=local_endpoint.url)
    outcomes = []
    with pytest.raises(ValueError, match="line 4 is over"):
        for outcome in predict_stream(client, records()):
            outcomes.append(outcome)
    assert [o.where for o in outcomes if isinstance(o, Answered)] == ["line 1", "line 2", "line 3"]


def test_predict_of_a_file_with_an_endless_line_answers_the_lines_before_and_exits_2(local_endpoint, tmp_path,
                                                                                        monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "in.jsonl"
    with open(path, "w", encoding="utf-8") as file:
        file.write(json.dumps({"patient_id": "A", "age": 50, "sex": "F"}) + "\n")
        file.write(json.dumps({"patient_id": "B", "age": 60, "sex": "M"}) + "\n")
        file.write("\0" * (MAX_BODY_BYTES + 5) + "\n")
        file.write(json.dumps({"patient_id": "C", "age": 70, "sex": "F"}) + "\n")
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "predict", path, "--endpoint-url",
                          local_endpoint.url)
    assert code == 2 and "Traceback" not in err
    assert f"line 3 is over {MAX_BODY_BYTES:,} characters" in err and "reading stopped there" in err
    assert [p["patient_id"] for p in json.loads(out)["predictions"]] == ["A", "B"]
