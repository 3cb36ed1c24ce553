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
# A valid prediction as the endpoint answers one (the client takes no other): a fake endpoint's answer.
ANSWER = {"patient_id": "A1", "category": "NO ENFERMO", "probabilities": {"NO ENFERMO": 0.9, "ENFERMEDAD LEVE": 0.1},
          "top_k": [{"category": "NO ENFERMO", "probability": 0.9}], "model_version": "1"}


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
                body, status, headers = json.dumps({"predictions": [ANSWER]}).encode(), 200, {}
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
        assert client.predict(PATIENT).results == [ANSWER]
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


@pytest.mark.parametrize("status, headers, kind, said", [
    (302, {"Location": "https://sso.example/login?token=s3cr3t"}, "NotTheEndpoint",
     "its address answered a redirect (HTTP 302 to 'https://sso.example'), not the endpoint"),
    (502, {"Content-Type": "text/html"}, "EndpointBusy", "something in front of it (a proxy or load balancer) answered "
                                                          "HTTP 502, not the endpoint"),
    (404, {"Content-Type": "text/html"}, "NotTheEndpoint", "its address answered HTTP 404 with a page that is not"),
], ids=["redirect", "bad-gateway", "other-404"])
def test_an_answer_in_another_servers_words_says_the_address_is_not_the_endpoint(misbehaving, tmp_path, capsys,
                                                                                 status, headers, kind, said):
    # botocore names such an answer by its bare status: `diagnosa predict` printed "failed: 302 <the page>".
    url = misbehaving(lambda h: h.reply(status, b"<html><body>nginx</body></html>", headers))
    with pytest.raises(ClientFailure) as failure:
        DiagnosaClient("diagnosa", endpoint_url=url, timeout=5, max_attempts=1).predict(PATIENT)
    assert type(failure.value).__name__ == kind and said in str(failure.value) and "s3cr3t" not in str(failure.value)
    patients = tmp_path / "patients.json"
    patients.write_text(json.dumps([PATIENT]))
    main(["predict", str(patients), "--endpoint-url", url, "--timeout", "5"])
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_feedback_is_never_resent_where_a_redirect_points(misbehaving, status):
    # urllib followed a 301/302/303 to a POST as a GET without its body, carrying the feedback token's Authorization
    # header to whatever host the redirect named; the answer there was taken for the endpoint's.
    from inference.client import NotTheEndpoint

    elsewhere = []
    target = misbehaving(lambda h: (elsewhere.append((h.command, h.headers.get("Authorization"))),
                                    h.reply(200, b'{"key": "stored elsewhere"}')))
    sent = []
    url = misbehaving(lambda h: (sent.append(h.command), h.reply(status, b"", {"Location": f"{target}/login?x=s3cr3t"})))
    client = DiagnosaClient("diagnosa", endpoint_url=url, timeout=5, max_attempts=1, feedback_token="t0ken-value")
    with pytest.raises(NotTheEndpoint) as failure:
        client.send_feedback("ev-1", "NO ENFERMO")
    assert sent == ["POST"] and elsewhere == []
    assert f"feedback not sent to endpoint {url}: its address answered a redirect (HTTP {status} to '{target}')" \
        in str(failure.value) and "s3cr3t" not in str(failure.value)


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
    answer = json.dumps({"predictions": [ANSWER]}).encode()
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


# ------------------------------------------------------------------------------------------------ SageMaker's answers
# A real HTTP server answering InvokeEndpoint as SageMaker's runtime does (rest-json: the error's code in
# x-amzn-ErrorType, its message and a ModelError's Original* keys in the JSON body), and real boto3 clients pointed at it
# (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, dummy credentials): the client and `diagnosa predict` as over a SageMaker endpoint.

ACCOUNT = "123456789012"
LOG_GROUP = f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/diagnosa"
CLOUDWATCH = (" See https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logEventViewer:group=/aws/"
              f"sagemaker/Endpoints/diagnosa in account {ACCOUNT} for more information.")


class SageMakerRuntime(BaseHTTPRequestHandler):
    """InvokeEndpoint as SageMaker answers it: ``replies`` in turn (the last one repeated), each a dict: ``status``,
    ``body`` (bytes, or an object sent as JSON), ``headers``, ``delay`` (seconds before answering), ``cut`` (the body
    announced whole, half of it sent, the connection closed), ``close`` (closed with no answer at all). Each request's
    (path, body) is kept in ``received``."""

    protocol_version = "HTTP/1.1"
    replies: list[dict] = []
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        import socket
        import time

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, body))
        reply = self.replies[min(len(self.received), len(self.replies)) - 1]
        time.sleep(reply.get("delay", 0))
        if reply.get("close"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = reply.get("body", b"")
        data = data if isinstance(data, bytes) else json.dumps(data).encode()
        try:
            self.send_response(reply.get("status", 200))
            for key, value in {"Content-Type": "application/json", "x-amzn-RequestId": "req-1",
                               "Content-Length": str(len(data)), **reply.get("headers", {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if reply.get("cut"):
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)
        except OSError:  # the client stopped reading (an answer over the limit)
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def aws_error(status: int, code: str, message: str, **extra: object) -> dict:
    """An AWS error reply as the SageMaker runtime sends it."""
    return {"status": status, "body": {"message": message, **extra},
            "headers": {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.sagemaker/"}}


def model_error(status: int, original: str) -> dict:
    """SageMaker's 424 for the model container's reply of ``status``: its Message names the account and the
    endpoint's CloudWatch logs; the container's own words are in OriginalMessage."""
    kind = "client" if 400 <= status < 500 else "server"
    return aws_error(424, "ModelError", f'Received {kind} error ({status}) from primary with message "{original[:40]}".'
                     + CLOUDWATCH, OriginalStatusCode=status, OriginalMessage=original, LogStreamArn=LOG_GROUP)


def answering(*results: object) -> dict:
    return {"status": 200, "body": {"predictions": list(results)}}


@pytest.fixture(name="sagemaker")
def sagemaker_fixture(http_server, aws_endpoints):
    """``start(*replies) -> handler``: the SageMaker runtime of region eu-west-1 answering ``replies``, for every boto3
    client made after it (dummy credentials, no AWS configuration file)."""

    def start(*replies: dict) -> type:
        url, handler = http_server(SageMakerRuntime, replies=list(replies))
        aws_endpoints(sagemaker_runtime=url)
        return handler

    return start


def _predict_over_sagemaker(tmp_path, patients: list, *extra: str) -> int:
    path = tmp_path / "patients.json"
    path.write_text(json.dumps(patients), encoding="utf-8")
    return main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-name", "diagnosa", "--region",
                 "eu-west-1", "--errors-file", str(tmp_path / "errors.jsonl"), *extra])


@pytest.mark.parametrize("answered", [1, 3])
def test_an_answer_of_another_number_of_predictions_than_patients_is_a_failure_naming_both(sagemaker, tmp_path,
                                                                                           capsys, answered):
    # `diagnosa predict` zipped the records with the predictions: one short dropped a patient, one more paired a
    # patient with another's answer, and it said 0.
    sagemaker(answering(*[ANSWER] * answered))
    client = DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1)
    with pytest.raises(ClientFailure, match=f"answered {answered} predictions? for 2 patients"):
        client.predict([PATIENT, PATIENT])
    assert _predict_over_sagemaker(tmp_path, [PATIENT, {**PATIENT, "patient_id": "B2"}]) == 1
    out, err = capsys.readouterr()
    assert f"answered {answered} prediction{'s' * (answered > 1)} for 2 patients" in err and out == ""


@pytest.mark.parametrize("reply, says", [
    ({"predictions": ["NO ENFERMO"]}, "the prediction is str, not an object"),
    ({"predictions": [{**ANSWER, "probabilities": {"NO ENFERMO": float("nan"), "ENFERMEDAD LEVE": 0.1}}]},
     "the probability of 'NO ENFERMO' is nan"),
    ({"predictions": [{**ANSWER, "score": float("inf")}]}, "'score' is not a finite number"),
    ({"predictions": [{**ANSWER, "probabilities": {"NO ENFERMO": 0.9, "ENFERMEDAD LEVE": 0.9}}]},
     "its probabilities sum to 1.8, not 1"),
    ({"predictions": [{**ANSWER, "top_k": [{"category": "COVID", "probability": 0.9}]}]},
     "the top-k category 'COVID' has no probability"),
], ids=["text", "nan", "infinity", "sum", "top-k-label"])
def test_a_prediction_that_is_not_one_is_refused_by_the_client_and_predict_exits_1(sagemaker, tmp_path, capsys,
                                                                                  reply, says):
    # NaN was written as JSON no reader takes (exit 0); a text prediction crashed PredictionsDocument.add (TypeError).
    sagemaker({"status": 200, "body": json.dumps(reply).encode()})  # json.dumps writes NaN and Infinity as Python does
    with pytest.raises(ClientFailure, match=re.escape(says)):
        DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1).predict(PATIENT)
    assert _predict_over_sagemaker(tmp_path, [PATIENT]) == 1
    out, err = capsys.readouterr()
    assert says in err and "Traceback" not in err and out == ""


def test_the_predictions_written_are_json_without_nan():
    from inference.bulk import Answered, PredictionsDocument
    from inference.client import ClientFailure

    out = __import__("io").StringIO()
    document = PredictionsDocument(out)
    with pytest.raises(ClientFailure, match="record 1 cannot be written as JSON"):
        document.add(Answered("record 1", {**ANSWER, "score": float("nan")}, None))
    assert "NaN" not in out.getvalue()


def test_a_model_error_without_its_error_key_quotes_the_containers_words_not_sagemakers(sagemaker):
    # SageMaker's Message names the AWS account and the endpoint's CloudWatch logs: it was the refusal's message.
    # A container's JSON reply without the endpoint's "error" key (another server's, a framework's), or none at all.
    sagemaker(model_error(415, json.dumps({"message": "Content type application/json is not supported"})),
              {**model_error(404, ""), "body": {"message": "Received client error (404)" + CLOUDWATCH}})
    client = DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1)
    with pytest.raises(PredictionRejected) as refused:
        client.predict(PATIENT)
    text = str(refused.value)
    assert "Content type application/json is not supported" in text and refused.value.status == 415
    assert ACCOUNT not in text and "cloudwatch" not in text.lower()
    with pytest.raises(ClientFailure) as failure:
        client.predict(PATIENT)
    assert ACCOUNT not in str(failure.value) and "the model's container said nothing more" in str(failure.value)


@pytest.mark.parametrize("reply, says", [
    (model_error(429, json.dumps({"code": 429, "message": "Too Many Requests: model worker queue is full"})),
     "its queue is full, HTTP 429"),
    (model_error(408, json.dumps({"error": "the body did not arrive in time: silent for 10 s"})),
     "the request did not reach it in time, HTTP 408"),
    (aws_error(429, "ModelNotReadyException", "Model for endpoint diagnosa variant AllTraffic is not ready; try again."),
     "busy or not ready yet (ModelNotReadyException"),
], ids=["queue-full", "request-timeout", "model-not-ready"])
def test_a_busy_endpoint_is_no_refusal_of_the_input(sagemaker, tmp_path, capsys, reply, says):
    # The container's 429/408 were PredictionRejected: the app told the doctor the configuration may not match, and
    # `diagnosa predict` exited 2, "bad input", for a file a later run would have had answered.
    sagemaker(reply)
    with pytest.raises(ClientFailure) as failure:
        DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1).predict(PATIENT)
    assert not isinstance(failure.value, PredictionRejected) and type(failure.value).__name__ == "EndpointBusy"
    assert says in str(failure.value)
    assert _predict_over_sagemaker(tmp_path, [PATIENT]) == 1  # the endpoint's, not bad input (2)
    assert says in capsys.readouterr().err


def test_a_read_timeout_is_not_retried_and_the_default_waits_past_sagemakers_model_limit(sagemaker):
    # The request was delivered: each retry ran the model again (a 10 to 60 s model was invoked 4 times per request of
    # `diagnosa predict`, twice per click of the app) and SageMaker's own timeout answer (60 s) never came.
    import time

    from botocore.exceptions import ReadTimeoutError

    handler = sagemaker({**answering(ANSWER), "delay": 2.5}, answering(ANSWER))
    client = DiagnosaClient("diagnosa", region="eu-west-1", timeout=1, max_attempts=3)
    with pytest.raises(ClientFailure) as failure:
        client.predict(PATIENT)
    assert isinstance(failure.value.__context__, ReadTimeoutError)
    assert "gave no answer within 1 s" in str(failure.value) and "may have been processed" in str(failure.value)
    time.sleep(2)  # a retry would have come by now
    assert len(handler.received) == 1
    config = DiagnosaClient("diagnosa", region="eu-west-1").runtime.meta.config
    assert config.read_timeout == 70 and config.connect_timeout == 10
    from diagnosa.cli import build_parser

    assert build_parser().parse_args(["predict", "-"]).timeout == 70


def test_a_connection_closed_before_the_answer_is_still_retried(sagemaker):
    handler = sagemaker({"close": True}, answering(ANSWER))
    assert DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=2).predict(PATIENT).results == [ANSWER]
    assert len(handler.received) == 2


def test_an_answer_over_sagemakers_limit_is_not_read(sagemaker):
    # A 400 MB answer was read whole (the app went from 122 MB to 1.3 GB).
    from inference.limits import MAX_BODY_BYTES

    sagemaker({"status": 200, "body": b'{"predictions": ["' + b"x" * MAX_BODY_BYTES + b'"]}'})
    with pytest.raises(ClientFailure, match="answered over 6 MB, SageMaker's limit on an answer: not read"):
        DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1).predict(PATIENT)


def test_a_connection_broken_in_the_answer_says_the_request_was_sent(sagemaker, tmp_path, capsys):
    sagemaker({**answering(ANSWER), "cut": True})
    with pytest.raises(ClientFailure) as failure:
        DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1).predict(PATIENT)
    text = str(failure.value)
    assert "broke after the request was sent" in text and "may have processed" in text
    assert "could not reach" not in text


def test_credentials_that_cannot_be_obtained_at_call_time_are_said_so(sagemaker):
    # A credential_process exiting 1 or an expired SSO token as the credentials are refreshed: "could not reach".
    import boto3
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import CredentialRetrievalError

    sagemaker(answering(ANSWER))

    def refresh() -> dict:
        raise CredentialRetrievalError(provider="custom-process", error_msg="token expired")

    session = boto3.session.Session(region_name="eu-west-1")
    session._session._credentials = RefreshableCredentials.create_from_metadata(
        {"access_key": "AKIDOLD", "secret_key": "old", "token": "t", "expiry_time": "2020-01-01T00:00:00Z"},
        refresh_using=refresh, method="custom-process")
    client = DiagnosaClient("diagnosa", runtime=session.client("sagemaker-runtime"), max_attempts=1)
    with pytest.raises(ClientFailure) as failure:
        client.predict(PATIENT)
    assert "could not be obtained" in str(failure.value) and "could not reach" not in str(failure.value)
    assert type(failure.value).__name__ == "NotAuthorized"
