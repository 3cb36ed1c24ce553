"""The application client and `diagnosa predict`, against the real local endpoint over loopback."""
from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from diagnosa.cli import main
from inference.client import ClientFailure, DiagnosaClient, PredictionRejected
from inference.server import EndpointServer

PATIENT = {"patient_id": "A1", "age": 67, "sex": "M", "temperature_c": 38.9, "spo2_pct": 90,
           "symptoms": ["HP:0001945", "HP:0012735"]}


@pytest.fixture(scope="module")
def endpoint(trained_model_dir):
    server = EndpointServer(str(trained_model_dir), endpoint_name="diagnosa", port=0)
    server.start()
    server.wait_until_ready(60)
    yield server
    server.stop()


def test_predict_one_and_many(endpoint):
    client = DiagnosaClient("diagnosa", endpoint_url=endpoint.url)
    one = client.predict(PATIENT)
    assert [r["patient_id"] for r in one.results] == ["A1"] and one.event_id
    many = client.predict([PATIENT, {"age": 30, "sex": "F"}], top_k=2)
    assert len(many.results) == 2 and len(many.results[1]["top_k"]) == 2
    csv = client.predict_csv("patient_id,age,sex\nC1,50,F\n")
    assert csv.results[0]["patient_id"] == "C1"


def test_rejected_input_names_the_field(endpoint):
    client = DiagnosaClient("diagnosa", endpoint_url=endpoint.url)
    with pytest.raises(PredictionRejected) as err:
        client.predict({"age": 400, "colour": "red"})
    fields = {e["field"] for e in err.value.errors}
    assert err.value.status == 400 and fields == {"age", "colour"}
    assert "age" in str(err.value)


def test_unknown_endpoint_and_unreachable_endpoint(endpoint):
    with pytest.raises(ClientFailure, match="Endpoint nope of account"):
        DiagnosaClient("nope", endpoint_url=endpoint.url).predict(PATIENT)
    with pytest.raises(ClientFailure, match="could not reach endpoint"):
        DiagnosaClient("diagnosa", endpoint_url="http://127.0.0.1:9", timeout=1, max_attempts=1).predict(PATIENT)


def test_throttling_is_retried_by_botocore():
    calls = []

    class Throttling(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            if len(calls) <= 2:
                body, status, headers = b'{"message": "slow down"}', 400, {"x-amzn-ErrorType": "ThrottlingException"}
            else:
                body, status, headers = json.dumps({"predictions": [{"patient_id": "A1"}]}).encode(), 200, {}
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Throttling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = DiagnosaClient("diagnosa", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}", max_attempts=4)
        assert client.predict(PATIENT).results == [{"patient_id": "A1"}]
        assert len(calls) == 3
        calls.clear()
        with pytest.raises(ClientFailure, match="ThrottlingException"):
            DiagnosaClient("diagnosa", endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                           max_attempts=2).predict(PATIENT)
    finally:
        server.shutdown()


def test_client_arguments_are_checked():
    with pytest.raises(ValueError, match="timeout must be positive"):
        DiagnosaClient(timeout=0)


def test_predict_command(endpoint, tmp_path, capsys):
    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps([PATIENT]))
    assert main(["predict", str(patients), "--endpoint-url", endpoint.url]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"][0]["patient_id"] == "A1" and out["event_id"]
    rows = tmp_path / "patients.csv"
    rows.write_text("patient_id,age\nZ9,44\n")
    assert main(["predict", str(rows), "--endpoint-url", endpoint.url]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["patient_id"] == "Z9"
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert main(["predict", str(bad), "--endpoint-url", endpoint.url]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"age": 999}))
    assert main(["predict", str(bad), "--endpoint-url", endpoint.url]) == 2
    assert "age" in capsys.readouterr().err
    # The differential (decision support): asked for, answered; a bad N is the endpoint's 400, named.
    assert main(["predict", str(patients), "--endpoint-url", endpoint.url, "--differential", "3"]) == 0
    answer = json.loads(capsys.readouterr().out)["predictions"][0]
    assert len(answer["differential"]) == 3 and "not a diagnosis" in answer["differential_note"]
    assert main(["predict", str(patients), "--endpoint-url", endpoint.url, "--differential", "99"]) == 2
    assert "differential must be" in capsys.readouterr().err
    assert main(["predict", str(rows), "--endpoint-url", endpoint.url, "--differential", "3"]) == 2
    assert "needs JSON input" in capsys.readouterr().err
    assert main(["predict", str(rows), "--endpoint-url", endpoint.url, "--top-k", "2"]) == 2  # not silently dropped
    assert "--top-k needs JSON input" in capsys.readouterr().err
    # --top-k past the model's labels: the endpoint's bound, named (the CLI no longer assumes five labels).
    assert main(["predict", str(patients), "--endpoint-url", endpoint.url, "--top-k", "6"]) == 2
    assert "top_k must be an integer from 1 to 5, got 6" in capsys.readouterr().err
    # Files that are JSON but not patients, and a lone surrogate: a clear message and exit 2, no traceback.
    for text, expected in (("5", "patient record"), ("null", "patient record"), ('{"instances": 5}', "patient record"),
                           ('{"patient_id": "\\ud800", "age": 50}', "surrogate")):
        bad.write_text(text)
        assert main(["predict", str(bad), "--endpoint-url", endpoint.url]) == 2, text
        assert expected in capsys.readouterr().err, text


def test_the_client_refuses_what_is_not_patients(endpoint):
    from inference.client import InvalidInput

    client = DiagnosaClient("diagnosa", endpoint_url=endpoint.url)
    for value in (5, None, "abc", {1, 2}):
        with pytest.raises(InvalidInput, match="patient record"):
            client.predict(value)
    with pytest.raises(InvalidInput, match="cannot be written as JSON"):
        client.predict({"age": 50, "seen": {1, 2}})


def test_serve_command_runs_until_sigterm(trained_model_dir, tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from diagnosa.net import free_port, wait_until_ok

    port = free_port()
    command = [str(Path(sys.executable).parent / "diagnosa"), "--workspace", str(tmp_path / "ws"), "serve",
               "--model", str(trained_model_dir), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_ok(f"http://127.0.0.1:{port}/ping", timeout=60, process=process)
        client = DiagnosaClient("diagnosa", endpoint_url=f"http://127.0.0.1:{port}")
        event = client.predict(PATIENT).event_id
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"http://127.0.0.1:{port}" in out and "curl" in out
    # The request was captured into the workspace lake in SageMaker's layout.
    captured = list((tmp_path / "ws" / "lake" / "capture" / "diagnosa" / "AllTraffic").rglob("*.jsonl"))
    assert captured and event in captured[0].read_text()


def test_serve_command_bad_model(tmp_path, capsys):
    assert main(["--workspace", str(tmp_path), "serve", "--model", str(tmp_path / "missing")]) == 2
    assert "model not found" in capsys.readouterr().err
    junk = tmp_path / "model.tar.gz"
    junk.write_bytes(b"not a tarball")
    assert main(["--workspace", str(tmp_path), "serve", "--model", str(junk)]) == 2
    assert "not a readable model.tar.gz" in capsys.readouterr().err


@pytest.mark.parametrize("url, fragment", [
    ("127.0.0.1:8080", "must start with http:// or https://"),
    ("ftp://host", "must start with http:// or https://"),
    ("http://", "must start with http:// or https:// and name a host"),
    ("http://127.0.0.1:8080/invocations", "the routes /invocations and /endpoints/<name>/invocations are added"),
    ("http://127.0.0.1:8080/endpoints/diagnosa/invocations", "must be the server's root"),
    ("http://127.0.0.1:8080/?a=1", "no query or fragment"),
])
def test_an_endpoint_url_that_is_not_a_server_root_is_refused_saying_why(url, fragment):
    from inference.client import DiagnosaClient

    with pytest.raises(ValueError, match=re.escape(fragment)):
        DiagnosaClient("diagnosa", endpoint_url=url)


def test_a_server_root_is_accepted_with_or_without_a_trailing_slash():
    from inference.client import check_endpoint_url

    assert check_endpoint_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_endpoint_url(" https://ep.example.org ") == "https://ep.example.org"


def test_no_credentials_and_no_endpoint_url_says_how_to_reach_a_local_endpoint(monkeypatch, tmp_path):
    from inference.client import ClientFailure, DiagnosaClient

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # not one whose credentials an earlier test resolved
    client = DiagnosaClient("diagnosa", region="eu-west-1", timeout=1, max_attempts=1)
    with pytest.raises(ClientFailure, match=r"no AWS credentials .*--endpoint-url http://127.0.0.1:8080"):
        client.predict({"age": 50})


@pytest.mark.parametrize("environment, expected", [
    ({"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "us-east-1"}, "ap-south-1"),
    ({"AWS_DEFAULT_REGION": "us-east-1"}, "us-east-1"),
])
def test_the_client_reads_the_region_as_the_aws_commands_do(monkeypatch, tmp_path, environment, expected):
    from diagnosa.cli import _region
    from inference.client import DiagnosaClient

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert DiagnosaClient("diagnosa").runtime.meta.region_name == expected == _region(argparse.Namespace(region=None))
    assert DiagnosaClient("diagnosa", region="eu-north-1").runtime.meta.region_name == "eu-north-1"


def test_a_raw_batch_is_sent_as_traffic_and_a_defective_record_costs_one_refusal(endpoint, tmp_path, capsys):
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "data", "generate", "--patients", "1000", "--seed", "4", "--defect-rate", "0.01"]) == 0
    assert main([*ws, "data", "generate", "--patients", "1000", "--seed", "4", "--drift", "symptoms"]) == 0
    capsys.readouterr()
    assert main([*ws, "predict", "--batch", "cohort-n1000-s4-drift-symptoms", "--endpoint-url", endpoint.url]) == 0
    out = capsys.readouterr().out
    assert "batch cohort-n1000-s4-drift-symptoms: 1,000 of 1,000 patients answered in 20 requests" in out
    assert main([*ws, "predict", "--batch", "cohort-n1000-s4", "--endpoint-url", endpoint.url]) == 0
    out = capsys.readouterr().out
    answered = int(out.split(": ", 1)[1].split(" of ", 1)[0].replace(",", ""))
    refused = int(out.split("refused: ", 1)[1].split(" ", 1)[0]) if "refused: " in out else 0
    assert refused > 0 and answered + refused == 1000  # the injected defects, one refusal each, nothing lost


def test_predict_takes_a_file_or_a_batch(endpoint, tmp_path, capsys):
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "predict", "--endpoint-url", endpoint.url]) == 2
    assert main([*ws, "predict", "x.json", "--batch", "b", "--endpoint-url", endpoint.url]) == 2
    assert "either a file (or - for standard input) or --batch NAME" in capsys.readouterr().err
    assert main([*ws, "predict", "--batch", "nope", "--endpoint-url", endpoint.url]) == 2
    assert "no raw batch 'nope' in " in capsys.readouterr().err
    assert main([*ws, "predict", "--batch", "b", "--differential", "3", "--endpoint-url", endpoint.url]) == 2
    assert "--differential lists each patient's rare diseases; --batch prints a summary" in capsys.readouterr().err


def test_a_file_of_many_bad_rows_gets_a_short_summary_and_a_file_of_every_problem(endpoint, tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.csv"
    path.write_text("age,sex\n" + "\n".join(f"{-i - 1},F" for i in range(500)) + "\n", encoding="utf-8")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url]) == 2
    out, err = capsys.readouterr()
    assert not out and "500 of 500 patient record(s)" in err and len(err) < 1_000
    assert "      500  age: impossible value\n           line 2: age: impossible value -1" in err
    assert len((tmp_path / "bad.csv.errors.jsonl").read_text(encoding="utf-8").splitlines()) == 500


def test_predict_reads_json_lines(endpoint, tmp_path, capsys):
    path = tmp_path / "export.jsonl"
    path.write_text('{"patient_id": "L1", "age": 50}\n\n{"patient_id": "L2", "age": 70, "sex": "M"}\n', encoding="utf-8")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url]) == 0
    assert [p["patient_id"] for p in json.loads(capsys.readouterr().out)["predictions"]] == ["L1", "L2"]
    path.write_text('{"patient_id": "L1", "age": 50}\n{"age": \n', encoding="utf-8")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url]) == 2
    out, err = capsys.readouterr()
    assert [p["patient_id"] for p in json.loads(out)["predictions"]] == ["L1"]  # the readable line still answered
    assert f"1 of 2 patient record(s) of {path} refused" in err and "line 2: not JSON: Expecting value" in err


# ------------------------------------------------------------------------------------------------ misbehaving servers

class _Misbehaving(BaseHTTPRequestHandler):
    """A server that is not a Diagnosa endpoint (a proxy, a wrong URL): ``answer(handler)`` writes each reply."""

    protocol_version = "HTTP/1.1"
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802
        self.answer()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.answer()

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def trickle(self, size: int = 70) -> None:
        """A 200 whose body comes one byte a second: no socket read ever times out (70 s: past any bound below)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for _ in range(size):
                if self.stop.wait(1.0):
                    return
                self.wfile.write(b" ")
                self.wfile.flush()
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def misbehaving():
    servers = []

    def start(answer):
        handler = type("Handler", (_Misbehaving,), {"answer": answer, "stop": threading.Event()})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, handler))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, handler in servers:
        handler.stop.set()
        server.shutdown()
        server.server_close()


# SageMaker's answer when the container gave no reply within its 60 s limit (a 424 ModelError, original status 0).
TIMED_OUT = ("Your invocation timed out while waiting for a response from container primary. Review the latency "
             "metrics for each container in Amazon CloudWatch, resolve the issue, and try again.")


@pytest.mark.parametrize("reply, kind, said", [
    ({"OriginalStatusCode": 0, "OriginalMessage": TIMED_OUT,
      "message": f'Received server error (0) from primary with message "{TIMED_OUT}"'},
     "ModelTimeout", "the model gave no answer within SageMaker's limit (ModelError, original status 0)"),
    ({"OriginalMessage": TIMED_OUT, "message": TIMED_OUT}, "ClientFailure", "the model failed (no status given)"),
])
def test_a_model_error_that_is_no_4xx_is_never_a_refusal_of_the_input(misbehaving, tmp_path, capsys, reply, kind, said):
    # Both were read as a 400: the app told the doctor the request was refused ("tell the administrator: the app's
    # configuration may not match"), and a timeout looked like bad input.
    from inference.client import ClientFailure, ModelTimeout

    sent = []

    def answer(h):
        sent.append(h.path)
        h.reply(424, json.dumps(reply).encode(), {"x-amzn-ErrorType": "ModelError"})

    url = misbehaving(answer)
    with pytest.raises(ClientFailure) as failure:
        DiagnosaClient("diagnosa", endpoint_url=url, timeout=5).predict(PATIENT)
    assert not isinstance(failure.value, PredictionRejected) and type(failure.value).__name__ == kind
    assert isinstance(failure.value, ModelTimeout) == (kind == "ModelTimeout") and said in str(failure.value)
    assert len(sent) == 1  # a 424 is not retried: the model had the request
    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps([PATIENT]))
    main(["predict", str(patients), "--endpoint-url", url, "--timeout", "5"])
    assert said in capsys.readouterr().err


def test_a_refusal_listing_junk_is_read_and_printed_without_failing():
    for errors in ("bad", [None], [1], {"a": 1}):
        text = str(PredictionRejected("1 problem(s) in the request", 400, errors))  # raised AttributeError
        assert text == "1 problem(s) in the request"


def test_an_error_reply_is_read_and_kept_only_up_to_the_endpoints_own_cap(misbehaving):
    from inference.client import FeedbackRejected
    from inference.limits import MAX_REFUSAL_BYTES  # the endpoint's cap on its own refusals, and the client's

    huge = json.dumps({"error": "invalid feedback", "fields": {f"f{i}": "x" * 30 for i in range(50_000)}}).encode()
    many = json.dumps({"error": "invalid feedback", "fields": {f"f{i}": "bad" for i in range(3_000)}}).encode()
    assert len(huge) > 2_000_000 and len(many) < MAX_REFUSAL_BYTES
    refusal = {"message": "Received client error (400)", "OriginalStatusCode": 400,
               "OriginalMessage": json.dumps({"error": "50000 problem(s)", "errors": [
                   {"row": i, "field": f"f{i}", "problem": "x" * 30} for i in range(50_000)]})}
    replies = [huge, many]  # to the first feedback, then to the second

    def answer(h):
        if h.command == "POST" and h.path == "/feedback":
            h.reply(400, replies.pop(0))
        else:
            h.reply(424, json.dumps(refusal).encode(), {"x-amzn-ErrorType": "ModelError"})

    client = DiagnosaClient("diagnosa", endpoint_url=misbehaving(answer), timeout=5, max_attempts=1)
    with pytest.raises(FeedbackRejected) as err:
        client.send_feedback("ev-1", "NO ENFERMO")
    assert len(str(err.value)) <= MAX_REFUSAL_BYTES and len(err.value.fields) <= 21  # was 50,000 fields
    assert "over 64 KB" in str(err.value)
    # A reply under the cap that lists thousands of fields: 20 kept, the rest counted.
    with pytest.raises(FeedbackRejected) as err:
        client.send_feedback("ev-1", "NO ENFERMO")
    fields = err.value.fields
    assert len(fields) == 21 and list(fields)[:2] == ["f0", "f1"] and err.value.more_fields == 2_980
    assert fields[FeedbackRejected.MORE_FIELDS] == "2,980 more field problem(s) not listed"
    assert "2,980 more field problem(s)" in str(err.value)
    # A refused prediction: at most the problems the endpoint itself lists, the rest counted.
    with pytest.raises(PredictionRejected) as rejected:
        client.predict(PATIENT)
    assert len(rejected.value.errors) <= 100 and len(json.dumps(rejected.value.errors)) <= MAX_REFUSAL_BYTES
    assert len(rejected.value.errors) + rejected.value.more_errors == 50_000 and len(str(rejected.value)) < 2_000


def test_predict_gives_up_on_an_endpoint_trickling_its_answer_saying_after_how_long(misbehaving, tmp_path, capsys):
    import time

    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps([PATIENT]))
    url = misbehaving(lambda h: h.trickle() if h.command == "POST" else h.reply(404, b"{}"))
    started = time.monotonic()
    assert main(["predict", str(patients), "--endpoint-url", url, "--timeout", "3"]) == 1  # the endpoint's, not bad input
    assert time.monotonic() - started < 60  # held for as long as it trickled (days)
    assert "gave no complete answer within 12 s" in capsys.readouterr().err  # --timeout x the attempts


def test_the_endpoint_name_discovery_gives_up_on_a_trickling_ping(misbehaving, tmp_path, capsys):
    import time

    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps([PATIENT]))
    answer = json.dumps({"predictions": [{"patient_id": "A1"}]}).encode()
    url = misbehaving(lambda h: h.trickle() if h.command == "GET" else h.reply(200, answer))
    started = time.monotonic()
    assert main(["predict", str(patients), "--endpoint-url", url, "--timeout", "3"]) == 2
    assert time.monotonic() - started < 60
    err = capsys.readouterr().err
    assert f"{url}/ping gave no complete answer within 3 s" in err and "--timeout" in err


def test_an_endpoints_refusals_are_counted_by_their_status():
    from inference.bulk import problem_kind

    kinds = {problem_kind(None, f"endpoint http://127.0.0.1:8080 refused the feedback ({status}): {why}")
             for status, why in ((404, "no captured prediction"), (409, "its capture failed"), (413, "too big"))}
    assert kinds == {"endpoint <URL> refused the feedback (404)", "endpoint <URL> refused the feedback (409)",
                     "endpoint <URL> refused the feedback (413)"}  # all three were 'endpoint http'
    assert problem_kind("age", "impossible value -1 (possible range 0 to 120 years)") == "age: impossible value"
