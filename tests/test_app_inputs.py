"""The doctors' app's inputs and calls without Streamlit: measurements typed with spaces, the command's configuration
(the model, the timeout, the endpoint URL), the model archive and folder it reads, the deadline of a call, and the
messages of a confirmed diagnosis that was or may not have been recorded. Endpoints are small HTTP servers on free
ports."""
from __future__ import annotations

import functools
import json
import os
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from app.config import AppConfig, ConfigError, model_endpoint_name
from app.form import FormError, ValueProblem, form_spec, load_form_spec, parse_number
from app.results import diagnose, input_warnings, make_client, prediction_problem, record_feedback
from diagnosa.labels import CATEGORIES
from diagnosa.model import ModelLoadError, unpack_model
from inference.client import AnswerTimeout, DiagnosaClient, check_endpoint_url

PREDICTION = {"predictions": [{"category": "NO ENFERMO", "probabilities": {c: 0.2 for c in CATEGORIES},
                               "top_k": [{"category": "NO ENFERMO", "probability": 0.2}], "model_version": "v"}]}


# ------------------------------------------------------------------------------------------------ 6. numbers

@pytest.mark.parametrize("typed, says", [
    ("15 2", "write it as 152 or 15.2"),
    ("1 80", "write it as 180 or 1.80"),
    ("1 2 0", "write it as 120,"),
    ("1 80 mg/dL", "write it as 180 or 1.80"),
])
def test_a_space_inside_a_number_is_refused_not_glued(typed, says):
    # '15 2' read 152 (a white count the endpoint accepts), '1 80' 180: the spaces were deleted before reading.
    spec = load_form_spec(None)
    with pytest.raises(ValueProblem, match="space inside the number") as refused:
        parse_number(typed, spec.by_name("glucose_mg_dl"))
    assert says in str(refused.value)


@pytest.mark.parametrize("field, typed, value", [
    ("temperature_c", "38,9 °C", 38.9), ("temperature_c", " 38.9C ", 38.9), ("systolic_bp_mmhg", "150 mm Hg", 150),
    ("systolic_bp_mmhg", "150mmHg", 150), ("wbc_10e9_l", "15,2 10^9/L", 15.2), ("heart_rate_bpm", "112 beats/min", 112),
])
def test_spaces_between_the_number_and_its_unit_are_still_taken(field, typed, value):
    assert parse_number(typed, load_form_spec(None).by_name(field)) == value


def test_digits_of_a_unit_glued_to_the_number_are_not_read_as_the_unit():
    with pytest.raises(ValueProblem):  # '1510^9/L' read 15
        parse_number("1510^9/L", load_form_spec(None).by_name("wbc_10e9_l"))


# ------------------------------------------------------------------------------------------------ 2. category levels

def test_the_form_knows_the_values_a_category_was_learned_with_and_names_them_in_a_warning():
    schema = {"properties": {"region": {"type": ["string", "null"]}, "region_code": {"type": ["string", "null"]}}}
    spec = form_spec(schema, feature_names=["categorical__region_norte", "categorical__region_sur",
                                            "categorical__region_code_N1", "categorical__region_infrequent_sklearn"])
    assert spec.levels == {"region": ("norte", "sur"), "region_code": ("N1",)}
    warnings = input_warnings({"unknown_values": {"region": "Norte", "elsewhere": "x"},
                               "unused_codes": "not a mapping"}, spec)
    assert warnings["region"] == ["'Norte' is not a value the model knows: it was counted as none of them, which "
                                  "changes the diagnosis (known: norte, sur). Check the spelling."]
    assert warnings[""][0].startswith("elsewhere: 'x' is not a value")


# ------------------------------------------------------------------------------------------------ 4, 5. answers

@pytest.mark.parametrize("result", [
    None, "abc", {}, {"category": 1, "probabilities": {"A": 1}}, {"category": "A", "probabilities": {"A": float("nan")}},
    {"category": "A", "probabilities": {"A": True}}, {"category": "A", "probabilities": {"A": 1.5}},
    {"category": "A", "probabilities": {"B": 0.5}}, {"category": "A", "probabilities": {"A": 0.5}, "top_k": [{}]},
    {"category": "A", "probabilities": {"A": 0.5}, "differential": [{"name": "x", "score": 1}]},
])
def test_an_answer_that_is_not_a_diagnosis_is_named(result):
    assert prediction_problem(result)


def test_a_well_formed_answer_passes():
    assert prediction_problem(PREDICTION["predictions"][0]) is None
    assert prediction_problem(PREDICTION["predictions"][0] | {"differential": [
        {"name": "x", "disease_id": "ORPHA:1", "score": 0.5}], "differential_note": "HPO"}) is None


# ------------------------------------------------------------------------------------------------ 7, 8, 12, 13. command

@pytest.fixture
def model_folder(trained_model_dir, tmp_path) -> Path:
    """A model folder as the app reads it (its metadata.json), and the same as a model.tar.gz."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "metadata.json").write_bytes((trained_model_dir / "metadata.json").read_bytes())
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(folder / "metadata.json", arcname="metadata.json")
    return folder


@pytest.fixture
def started(monkeypatch) -> list[dict[str, str]]:
    """The environments `diagnosa app` would start Streamlit with (execve replaced)."""
    out: list[dict[str, str]] = []
    for name in [k for k in os.environ if k.startswith("DIAGNOSA_APP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: out.append(env))
    return out


@pytest.mark.parametrize("variable", ["DIAGNOSA_APP_BASE_PATH", "DIAGNOSA_APP_MODEL", "DIAGNOSA_APP_LAKE",
                                      "DIAGNOSA_APP_REGION", "DIAGNOSA_APP_ENDPOINT_NAME"])
def test_an_empty_app_variable_is_unset_not_a_flag_given_empty(model_folder, tmp_path, started, monkeypatch, capsys,
                                                               variable):
    # As the app's own config reads it (`VAR= diagnosa app`, a compose file's empty entry): with every text flag
    # refusing an empty value, the variables that are those flags' defaults were refused too.
    from diagnosa.cli import main

    monkeypatch.setenv(variable, "")
    argv = ["--workspace", str(tmp_path / "ws"), "app", "--endpoint-url", "http://127.0.0.1:18161", "--port", "18162",
            "--model", str(model_folder)]
    assert main(argv) == 0, capsys.readouterr().err
    assert started and AppConfig.from_env(started[-1]).model == str(model_folder)


def test_the_model_variable_as_an_archive_or_stale_does_not_stop_the_command(model_folder, tmp_path, started,
                                                                              monkeypatch, capsys):
    # DIAGNOSA_APP_MODEL=model.tar.gz (as documented) or a folder gone since stopped `diagnosa app` even with --model.
    from diagnosa.cli import main

    archive = tmp_path / "model.tar.gz"
    argv = ["--workspace", str(tmp_path / "ws"), "app", "--endpoint-url", "http://127.0.0.1:18161", "--port", "18162"]
    monkeypatch.setenv("DIAGNOSA_APP_MODEL", str(archive))
    assert main(argv) == 0, capsys.readouterr().err  # the variable: resolved as the flag is (unpacked)
    assert (Path(AppConfig.from_env(started[-1]).model) / "metadata.json").is_file()
    assert main([*argv, "--model", str(model_folder)]) == 0
    assert AppConfig.from_env(started[-1]).model == str(model_folder)
    monkeypatch.setenv("DIAGNOSA_APP_MODEL", str(tmp_path / "gone"))
    assert main([*argv, "--model", str(archive)]) == 0  # the flag wins; the stale variable is not read
    assert AppConfig.from_env(started[-1]).endpoint_name == "diagnosa"


def test_a_folder_that_is_not_a_models_says_so(tmp_path, started, capsys):
    from diagnosa.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["--workspace", str(tmp_path / "ws"), "app", "--endpoint-url", "http://127.0.0.1:18161",
                 "--model", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "not a model folder (no metadata.json)" in err and "no dataset name" not in err
    with pytest.raises(ConfigError, match=r"not a model folder \(no metadata.json\)"):
        model_endpoint_name(str(tmp_path / "empty"))


def test_a_metadata_json_that_is_a_fifo_does_not_hang(tmp_path, started, capsys):
    from diagnosa.cli import main

    folder = tmp_path / "fifo"
    folder.mkdir()
    os.mkfifo(folder / "metadata.json")
    outcome: list[int] = []
    worker = threading.Thread(target=lambda: outcome.append(main(
        ["--workspace", str(tmp_path / "ws"), "app", "--endpoint-url", "http://127.0.0.1:18161", "--model",
         str(folder)])), daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # let the reader go (it hung on the FIFO's open) before failing
        with open(folder / "metadata.json", "wb"):
            pass
        pytest.fail("diagnosa app hung reading a FIFO metadata.json")
    assert outcome == [2] and "is a named pipe (FIFO)" in capsys.readouterr().err
    with pytest.raises(FormError, match=r"not a model folder: .* is a named pipe \(FIFO\)"):
        load_form_spec(str(folder))


def test_a_timeout_over_a_day_is_refused_from_the_variable_as_from_the_flag(started, monkeypatch, capsys):
    # The flag refused 1e300; the variable was taken, and every call failed with 'timestamp out of range'.
    from diagnosa.cli import main

    with pytest.raises(ConfigError, match="DIAGNOSA_APP_TIMEOUT.*more than a day"):
        AppConfig.from_env({"DIAGNOSA_APP_TIMEOUT": "1e300"})
    with pytest.raises(ConfigError, match="more than a day"):
        AppConfig(timeout=86_401)
    monkeypatch.setenv("DIAGNOSA_APP_TIMEOUT", "1e300")
    assert main(["app", "--endpoint-url", "http://127.0.0.1:18161"]) == 2
    assert "DIAGNOSA_APP_TIMEOUT" in capsys.readouterr().err and not started


@pytest.mark.parametrize("url, says", [
    ("http://exa mple:80", "space"),
    ("http://127.0.0.1:99999", "port"),
    ("http://user:secret@127.0.0.1:18161", "user name or password"),
])
def test_an_endpoint_url_that_cannot_work_is_refused_at_start(url, says, started, capsys, tmp_path):
    from diagnosa.cli import main

    with pytest.raises(ValueError, match=says):
        check_endpoint_url(url)
    # Also beside a workspace's local endpoint record (`make run` leaves one): the port 99999 was read to compare the
    # URL with the record's, a ValueError traceback (the fresh clone's test run found it).
    record = tmp_path / "ws" / "endpoints" / "diagnosa" / "endpoint.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"EndpointName": "diagnosa", "EndpointStatus": "InService", "ModelDir": str(tmp_path),
                                  "Url": "http://127.0.0.1:8080"}))
    for workspace in ([], ["--workspace", str(tmp_path / "ws")]):
        assert main([*workspace, "app", "--endpoint-url", url]) == 2 and not started
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1 and "secret" not in err


# ------------------------------------------------------------------------------------------------ 11. archives

def test_a_truncated_archive_is_refused_every_time_and_leaves_nothing(trained_model_dir, tmp_path):
    # Unpacked straight into models/<digest>, a cut archive left metadata.json whole and model.joblib cut: refused
    # once, then that folder was taken for the model.
    from diagnosa.commands.common import UsageError, model_folder

    whole = tmp_path / "model.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        tar.add(trained_model_dir / "metadata.json", arcname="metadata.json")
        tar.add(trained_model_dir / "model.joblib", arcname="model.joblib")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    ws = tmp_path / "ws"
    for _ in range(2):
        with pytest.raises(UsageError, match="not a readable model.tar.gz"):
            model_folder(cut, ws)
        assert not [p for p in (ws / "models").iterdir()]  # no partial folder, no scratch left
    with pytest.raises(ModelLoadError):
        unpack_model(cut, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    folder = model_folder(whole, ws)
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.joblib"]
    assert (folder / "model.joblib").read_bytes() == (trained_model_dir / "model.joblib").read_bytes()


# ------------------------------------------------------------------------------------------------ 9, 10. calls

class _Trickle(BaseHTTPRequestHandler):
    """An endpoint that answers 200 a few bytes at a time: no socket read ever waits long enough to time out."""

    body = json.dumps(PREDICTION).encode()
    pause = 0.2
    delay = 0.0  # before answering at all
    received: list[str] = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(self.path)
        time.sleep(self.delay)
        body = json.dumps({"event_id": "e", "key": "k"}).encode() if self.path == "/feedback" else self.body
        try:
            self.send_response(201 if self.path == "/feedback" else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(0, len(body), 4):
                self.wfile.write(body[i:i + 4])
                self.wfile.flush()
                time.sleep(self.pause)
        except OSError:
            pass


@pytest.fixture
def serve(http_server) -> Callable[..., tuple[str, type]]:
    return functools.partial(http_server, _Trickle)


def test_a_trickling_endpoint_holds_the_doctor_no_longer_than_timeout_times_attempts(serve):
    url, _ = serve()
    config = AppConfig(endpoint_url=url, timeout=1.0, attempts=1)
    began = time.monotonic()
    outcome = diagnose(make_client(config), {"age": 40}, config, load_form_spec(None))
    took = time.monotonic() - began
    assert outcome.failure is not None and outcome.failure.kind == "timeout", outcome
    assert "did not answer within 1 s" in outcome.failure.message and took < 3, took
    # What happened, not a formula ("2 attempts of up to 70 s" was said of one request that trickled for 140 s).
    assert "did not answer within 1 s (one request, its answer still incomplete)" in outcome.failure.message


def test_the_feedback_post_has_the_same_deadline_and_may_have_been_recorded(serve):
    url, handler = serve()
    config = AppConfig(endpoint_url=url, timeout=1.0, attempts=1)
    began = time.monotonic()
    outcome = record_feedback(make_client(config), "e", "NO ENFERMO", None, config)
    assert time.monotonic() - began < 3 and handler.received == ["/feedback"]
    assert outcome.message and "may not be recorded" in outcome.message and "not recorded:" not in outcome.message


def test_a_slow_feedback_answer_may_have_been_recorded_a_refused_connection_was_not(serve):
    # A feedback route that stored the record and answered late read "was not recorded"; connection refused got
    # the generic text.
    url, handler = serve(delay=3.0, pause=0.0)
    config = AppConfig(endpoint_url=url, timeout=1.0, attempts=2)
    slow = record_feedback(DiagnosaClient(endpoint_url=url, timeout=1.0, max_attempts=1), "e", "NO ENFERMO", None,
                           config)
    assert handler.received == ["/feedback"] and "may not be recorded" in slow.message
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = AppConfig(endpoint_url=closed, timeout=1.0, attempts=1)
    down = record_feedback(make_client(config), "e", "NO ENFERMO", None, config)
    assert down.message.startswith("Cannot reach the local endpoint") and "was not recorded" in down.message


def test_the_client_deadline_covers_the_whole_call(serve):
    url, _ = serve()
    client = DiagnosaClient(endpoint_url=url, timeout=1.0, max_attempts=1, deadline=1.0)
    began = time.monotonic()
    with pytest.raises(AnswerTimeout, match="within 1 s"):
        client.predict({"age": 40})
    assert time.monotonic() - began < 3
    fast, _ = serve(pause=0.0)
    assert DiagnosaClient(endpoint_url=fast, deadline=5.0).predict({"age": 40}).results[0]["category"] == "NO ENFERMO"


# ------------------------------------------------------------------------------------------------ 3. feedback labels

def test_feedback_written_straight_to_the_lake_takes_the_models_own_labels(tmp_path):
    # Over SageMaker the client writes to the lake and checked the diagnosis against the built-in cohort's five
    # labels: every label of a model of one's own data ('sano') was refused.
    from diagnosa.lake import DataLake

    config = AppConfig(endpoint_name="my-data", region="eu-west-1", lake=str(tmp_path / "lake"))
    client = DiagnosaClient("my-data", region="eu-west-1", lake=DataLake.from_uri(str(tmp_path / "lake")))
    outcome = record_feedback(client, "0b8f2f4e-aaaa-bbbb-cccc-000000000001", "sano", None, config,
                              labels=("sano", "leve 🙂", "grave*"))
    assert outcome.ok, outcome.message
    refused = record_feedback(client, "0b8f2f4e-aaaa-bbbb-cccc-000000000001", "NO ENFERMO", None, config,
                              labels=("sano", "leve 🙂", "grave*"))
    assert not refused.ok and "sano" in refused.message


@pytest.mark.parametrize("given, path", [("diagnosa", "diagnosa"), ("/diagnosa/", "diagnosa"),
                                         ("tools/diagnosa", "tools/diagnosa"), ("/", "")],
                         ids=["name", "slashes", "two-segments", "root"])
def test_the_app_is_served_under_the_base_path_it_is_given(model_folder, tmp_path, monkeypatch, capsys, given, path):
    # Behind a proxy serving several tools on one host (https://tools.hospital.example/diagnosa/), the app had no way
    # to be told its path: a bare `streamlit run` lost its safe options (usage statistics back on, tracebacks shown).
    from diagnosa.cli import main

    argvs: list[list[str]] = []
    monkeypatch.setattr(os, "execve", lambda exe, argv, env: argvs.append(argv))
    monkeypatch.delenv("DIAGNOSA_APP_BASE_PATH", raising=False)
    argv = ["--workspace", str(tmp_path / "ws"), "app", "--endpoint-url", "http://127.0.0.1:18161", "--port", "18162",
            "--model", str(model_folder)]
    assert main([*argv, "--base-path", given]) == 0, capsys.readouterr().err
    monkeypatch.setenv("DIAGNOSA_APP_BASE_PATH", given)
    assert main(argv) == 0
    for started in argvs:
        assert [a for a in started if a.startswith("--server.baseUrlPath")] == (
            [f"--server.baseUrlPath={path}"] if path else [])
        assert "--browser.gatherUsageStats=false" in started and "--client.showErrorDetails=type" in started
    url = f"http://127.0.0.1:18162/{path}/" if path else "http://127.0.0.1:18162/"
    assert capsys.readouterr().out.count(f"Diagnosa app on {url} ") == 2


@pytest.mark.parametrize("given", ["a b", "../x", "a//b", "x?y=1", "x#top", "dia%2Fgnosa", "diagnósa", "./x"])
def test_a_base_path_a_proxy_or_a_browser_would_read_otherwise_is_refused(tmp_path, monkeypatch, capsys, given):
    from diagnosa.cli import main

    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("started"))
    assert main(["--workspace", str(tmp_path / "ws"), "app", "--endpoint-url", "http://127.0.0.1:18161",
                 "--base-path", given]) == 2
    err = capsys.readouterr().err
    assert f"--base-path: base path {given!r}: each segment of the path must be ASCII letters" in err, err


@pytest.mark.parametrize("argv, says", [
    # Found only when a doctor confirmed a diagnosis: the lake was opened then.
    (["--region", "eu-west-1", "--feedback-lake", "nosuch://x"], "unsupported feedback lake URI 'nosuch://x'"),
    (["--region", "eu-west-1", "--feedback-lake", "s3://b"], "bucket name 'b' must be 3 to 63"),
    # A local endpoint stores feedback in its own lake: the flag was taken and never used.
    (["--endpoint-url", "http://127.0.0.1:18161", "--feedback-lake", "lake"],
     "is for a SageMaker endpoint, which has no feedback route; the local endpoint http://127.0.0.1:18161"),
])
def test_a_feedback_lake_is_checked_as_the_app_starts(model_folder, tmp_path, started, capsys, argv, says):
    from diagnosa.cli import main

    assert main(["--workspace", str(tmp_path / "ws"), "app", *argv, "--port", "18162", "--model", str(model_folder)]) == 2
    err = capsys.readouterr().err
    assert "(--feedback-lake, DIAGNOSA_APP_LAKE)" in err and says in err and not started


def test_a_feedback_lake_for_a_sagemaker_endpoint_is_taken(model_folder, tmp_path, started, capsys):
    from diagnosa.cli import main

    lake = str(tmp_path / "lake")
    argv = ["--workspace", str(tmp_path / "ws"), "app", "--region", "eu-west-1", "--feedback-lake", lake,
            "--port", "18162", "--model", str(model_folder)]
    assert main(argv) == 0, capsys.readouterr().err
    assert AppConfig.from_env(started[-1]).lake == lake


def test_the_feedback_lake_is_checked_without_making_an_s3_client(monkeypatch):
    # The page builds its configuration at every rerun (each click): an S3 client there cost ~0.2 s a click.
    import diagnosa.aws

    monkeypatch.setattr(diagnosa.aws, "client", lambda *a, **k: pytest.fail("an S3 client was made"))
    assert AppConfig(region="eu-west-1", lake="s3://my-lake/feedback").lake == "s3://my-lake/feedback"

