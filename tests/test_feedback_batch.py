"""``diagnosa feedback --file``: a batch's lines as JSON Lines breaks them, its records as the endpoint's route reads
them, an endpoint that trickles its answer, and a batch stopped part-way (a signal, a dropped connection) saying what
was stored and where to resume."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from feedback_endpoint import captured_event, endpoint_fixture  # noqa: F401  (the fixture "endpoint")

from diagnosa.lake import DataLake
from inference.feedback import read_feedback

ROOT = Path(__file__).resolve().parents[1]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from diagnosa.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _record(event_id: str, diagnosis: str = "NO ENFERMO", **extra: str) -> str:
    return json.dumps({"event_id": event_id, "diagnosis": diagnosis, **extra}, ensure_ascii=False)


# ------------------------------------------------------------------------------------------------ lines

@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_a_note_holding_a_unicode_line_separator_is_one_record_and_later_lines_keep_their_numbers(tmp_path, capsys,
                                                                                                  separator):
    # str.splitlines() broke the record at its note's raw U+2028 (json.dumps(..., ensure_ascii=False) writes it):
    # both halves refused as "not JSON", and the bad line after it was reported as line 3.
    path = tmp_path / "fb.jsonl"
    path.write_text(_record("a", note=f"first{separator}second") + "\nnot json\n", encoding="utf-8")
    code, out, _ = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", path)
    assert code == 2 and "1 stored, 1 refused" in out, out
    assert "line 2: not JSON" in out and "line 3" not in out
    stored = read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest
    assert stored[("a", None)].note == f"first{separator}second"


def test_lone_cr_and_crlf_exports_are_still_read_line_by_line(tmp_path, capsys):
    path = tmp_path / "fb.jsonl"
    path.write_bytes((_record("a") + "\r" + _record("b") + "\r\n" + _record("c") + "\r\n\r\n").encode())
    code, out, _ = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", path)
    assert code == 0 and "3 stored, 0 refused" in out, out


# ------------------------------------------------------------------------------------------------ repeated keys

def test_a_diagnosis_given_twice_is_refused_naming_it_not_stored_as_the_last_one(tmp_path, capsys):
    # Plain json.loads kept the last value: the record was stored as ENFERMEDAD LEVE, which the route refuses.
    path = tmp_path / "fb.jsonl"
    path.write_text('{"event_id": "a", "diagnosis": "NO ENFERMO", "diagnosis": "ENFERMEDAD LEVE"}\n'
                    + _record("b") + "\n")
    code, out, _ = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", path)
    assert code == 2 and "1 stored, 1 refused" in out, out
    assert "line 1: diagnosis: given twice" in out
    assert set(read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest) == {("b", None)}


def test_a_key_given_twice_is_refused_before_it_is_sent_to_the_endpoint(endpoint, tmp_path, capsys):
    ep, lake = endpoint
    event = captured_event(ep)
    path = tmp_path / "fb.jsonl"
    path.write_text(f'{{"event_id": "{event}", "diagnosis": "NO ENFERMO", "diagnosis": "ENFERMEDAD LEVE"}}\n')
    code, out, _ = _cli(capsys, "--workspace", tmp_path / "ws", "feedback", "--file", path, "--endpoint-url", ep.url)
    assert code == 2 and "0 stored, 1 refused" in out and "line 1: diagnosis: given twice" in out, out
    assert lake.list("feedback/") == []


# ------------------------------------------------------------------------------------------------ a fake endpoint

class _Endpoint(BaseHTTPRequestHandler):
    """POST /feedback: ``mode`` says how it answers request number ``n`` (1-based) of this server."""

    received: list[str]
    hold = 4  # "hold": the request of that number gets no answer for a minute
    mode = "answer"

    def do_GET(self):  # noqa: N802  (/ping: not a Diagnosa server, so the endpoint name stays the built-in's)
        self.send_error(404)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.received.append(body["event_id"])
        n = len(self.received)
        if self.mode == "drop":  # the request went out, the connection closed with no answer
            self.close_connection = True
            return
        reply = json.dumps({"event_id": body["event_id"], "key": f"feedback/diagnosa/events/{n}.json"}).encode()
        try:
            if self.mode == "hold" and n >= self.hold:
                time.sleep(60)
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply) + 1000 if self.mode == "trickle" else len(reply)))
            self.end_headers()
            if self.mode == "trickle":  # one byte a second: no socket read ever waits long enough to time out
                for byte in (reply + b" " * 1000):
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(1)
            else:
                self.wfile.write(reply)
        except OSError:
            pass


@pytest.fixture
def serve(http_server) -> Callable[..., tuple[str, type]]:
    return functools.partial(http_server, _Endpoint)


def _batch(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "fb.jsonl"
    path.write_text("".join(_record(f"ev-{i}") + "\n" for i in range(1, count + 1)))
    return path


def _command(tmp_path: Path, path: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "diagnosa", "--workspace", str(tmp_path / "ws"), "feedback",
                             "--file", str(path), "--endpoint-url", url],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own group, as a terminal's job
                            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})


# ------------------------------------------------------------------------------------------------ deadline

def test_an_endpoint_trickling_its_answer_does_not_hold_the_batch_for_ever(tmp_path, serve):
    # Each read got a byte within its timeout, so none timed out: the command waited as long as the endpoint trickled.
    url, handler = serve(mode="trickle")
    proc = _command(tmp_path, _batch(tmp_path, 2), url)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the command still waited for the trickling endpoint after 120 s")
    assert proc.returncode == 1, (out, err)
    assert "gave no complete answer within" in err and "stopped at line 1" in err, err
    assert "0 stored, 0 refused, 1 may be stored (sent, no answer), 1 not sent" in out, out
    assert handler.received == ["ev-1"]


def test_a_dropped_connection_after_the_request_went_out_says_the_record_may_be_stored(tmp_path, capsys, serve):
    url, handler = serve(mode="drop")
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "feedback", "--file", _batch(tmp_path, 3),
                          "--endpoint-url", url)
    assert code == 1 and "0 stored, 0 refused, 1 may be stored (sent, no answer), 2 not sent" in out, (out, err)
    assert "stopped at line 1, its record may be stored, 2 line(s) after it not sent" in err
    assert "re-send the file from line 1" in err and handler.received == ["ev-1"]


# ------------------------------------------------------------------------------------------------ signals

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_batch_stopped_by_a_signal_says_what_was_stored_and_where_to_resume(tmp_path, serve, signum):
    # It said only "diagnosa: interrupted" (SIGTERM: nothing at all): not how many records were stored, nor where.
    url, handler = serve(mode="hold", hold=4)
    proc = _command(tmp_path, _batch(tmp_path, 6), url)
    try:
        began = time.monotonic()
        while len(handler.received) < 4:  # three answered, the fourth sent and waiting
            assert proc.poll() is None and time.monotonic() - began < 60, proc.communicate(timeout=5)
            time.sleep(0.05)
        os.killpg(proc.pid, signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, (proc.returncode, out, err)
    assert (f"to {url}: 3 stored, 0 refused, 1 may be stored (sent, no answer), 2 not sent; interrupted at line 4"
            in out), out
    assert f"interrupted ({signal.Signals(signum).name}) at line 4, its record may be stored" in err, err
    assert "re-send the file from line 4" in err and "Traceback" not in err


def test_a_signal_between_two_records_stops_before_the_next_one(tmp_path, capsys, monkeypatch):
    # Taken while a line was being read (not sent): that line is not begun, nothing is in doubt.
    import diagnosa.commands.monitor as monitor

    lines_seen = []
    undecodable = monitor.undecodable

    def reading(line: str):
        lines_seen.append(line)
        if len(lines_seen) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C as line 3 is read
        return undecodable(line)

    monkeypatch.setattr(monitor, "undecodable", reading)
    path = _batch(tmp_path, 5)
    code, out, err = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", path)
    assert code == 130 and "2 stored, 0 refused, 3 not sent; interrupted at line 3" in out, (out, err)
    assert "may be stored" not in out
    assert "interrupted (SIGINT) at line 3, 3 line(s) from there not sent; re-send the file from line 3" in err
    assert set(read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest) == {
        ("ev-1", None), ("ev-2", None)}


# ------------------------------------------------------------------------------------------------ a full disk

@pytest.mark.parametrize("name", ["same", "link", "dotted"])
def test_an_errors_file_that_is_the_export_itself_is_refused_before_anything(tmp_path, capsys, monkeypatch, name):
    # `--file X --errors-file X` replaced a hospital's 20 feedback records with the list of their problems.
    export = tmp_path / "export.jsonl"
    text = "".join(_record(f"ev-{i}", "NOPE") + "\n" for i in range(20))
    export.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    errors = {"same": export, "link": tmp_path / "link.jsonl", "dotted": "./export.jsonl"}[name]
    if name == "link":
        os.symlink(export, errors)
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "feedback", "--file", export, "--errors-file", errors)
    assert code == 2 and not out and "is the feedback file being read: it would be overwritten" in err
    assert err.count("\n") == 1
    assert export.read_text(encoding="utf-8") == text
    assert not (tmp_path / "ws" / "lake" / "feedback").exists()


def test_an_errors_file_on_a_full_disk_still_says_what_was_stored_and_fails(tmp_path, capsys):
    # The errors file's writes failed at its close (/dev/full: the kernel's ENOSPC): the batch had stored its 30 good
    # lines, and the command printed only "No space left on device: /dev/full", no count of what was stored.
    export = tmp_path / "export.jsonl"
    export.write_text("".join(_record(f"ev-{i}", "ENFERMEDAD LEVE" if i % 2 else "NOPE") + "\n" for i in range(60)),
                      encoding="utf-8")
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "feedback", "--file", export, "--errors-file",
                          "/dev/full")
    assert code == 1
    assert "feedback from" in out and ": 30 stored, 30 refused" in out and "30  diagnosis: must be one of" in out
    assert "one JSON line each" not in out  # not said to hold what it does not
    assert "the list of refused lines in /dev/full is incomplete: No space left on device (the 30 refused are " \
           "counted above" in err, err
    assert len(read_feedback(DataLake.from_uri(str(tmp_path / "ws" / "lake")), "diagnosa").latest) == 30


def test_a_lake_the_disk_refuses_mid_file_stops_there_and_says_what_was_stored(tmp_path):
    # The kernel refuses the lake's write (RLIMIT_FSIZE: EFBIG, as a full disk's ENOSPC) of the first record over
    # 800 bytes (a long note). It stopped with the machine's words alone: neither what was stored nor where.
    ws = tmp_path / "ws"
    lines = [_record(f"ev-{i}", "ENFERMEDAD LEVE", note="n" * (900 if i == 4 else 10)) for i in range(8)]
    export = tmp_path / "export.jsonl"
    export.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (800, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
              "from diagnosa.cli import main\n"
              f"sys.exit(main(['--workspace', {str(ws)!r}, 'feedback', '--file', {str(export)!r}]))\n")
    done = subprocess.run([sys.executable, "-B", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert ": 4 stored, 0 refused, 4 not sent" in done.stdout, done.stdout
    assert "could not store it: File too large: " in done.stderr and "stopped at line 5, 4 line(s) from there not " \
           "sent" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    stored = read_feedback(DataLake.from_uri(str(ws / "lake")), "diagnosa").latest
    assert sorted(event for event, _ in stored) == [f"ev-{i}" for i in range(4)]
