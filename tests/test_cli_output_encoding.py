"""What the CLI prints cannot fail after the command has done its work: a character the terminal's encoding lacks is
written escaped as JSON writes it (``\\u00d3``), not raised as UnicodeEncodeError.

Under an ASCII locale (``PYTHONIOENCODING=ascii``, or ``LC_ALL=C`` with ``PYTHONUTF8=0``) the built-in labels
(ENFERMEDAD CRÓNICA) broke `data generate` after it had written its batch, the summaries' arrows (→) broke `data
ingest` after its version had become the latest (exit 1, a traceback; the next run trained on it), and `predict`
after the endpoint had answered (exit 2, "bad input"). Under a strict UTF-8 locale a workspace path holding a byte
that is not UTF-8 broke `registry list`. Each runs here as a user runs it: the CLI in a subprocess, its streams'
encoding chosen by the environment."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DIAGNOSA = [sys.executable, "-m", "diagnosa"]


def _run(args: list[str | bytes], cwd: Path, encoding: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONUTF8": "0"}
    return subprocess.run([*DIAGNOSA, *args], cwd=cwd, env=env, capture_output=True, timeout=600)


def test_ingest_under_an_ascii_locale_says_what_it_did_and_exits_0(tmp_path):
    generated = _run(["--workspace", str(tmp_path / "ws"), "data", "generate", "--patients", "1000", "--seed", "3"],
                     tmp_path, "ascii")
    assert generated.returncode == 0, generated.stderr.decode("ascii", "replace")
    done = _run(["--workspace", str(tmp_path / "ws"), "data", "ingest"], tmp_path, "ascii")
    said = done.stdout.decode("ascii") + done.stderr.decode("ascii")  # ASCII only: the terminal could show it
    assert done.returncode == 0, said
    assert "Traceback" not in said
    assert "\\u2192 quarantine/" in said  # the summary's arrow, escaped
    assert list((tmp_path / "ws" / "lake" / "curated" / "patients").glob("LATEST.json"))


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"], ids=["strict-utf8", "ascii"])
def test_a_workspace_path_that_is_not_utf8_is_printed_escaped(tmp_path, encoding):
    workspace = os.fsencode(tmp_path) + b"/w\xff"  # a byte no UTF-8 text holds: Python reads it as "\udcff"
    done = _run([b"--workspace", workspace, b"registry", b"list"], tmp_path, encoding)
    said = done.stdout.decode("ascii") + done.stderr.decode("ascii")
    assert done.returncode == 0, said
    assert "w\\udcff" in said and "Traceback" not in said


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_what_the_handler_writes_inside_json_strings_is_still_json(encoding):
    # `diagnosa predict` writes its answers as JSON with the characters as they are (ensure_ascii=False); a terminal
    # that lacks them gets the escape JSON itself uses, so the document still parses to the same text.
    from diagnosa.logs import UNENCODABLE

    answer = {"label": "ENFERMEDAD CRÓNICA", "note": "fiebre → 39 °C 🙂", "surrogate": "\udcff"}
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding=encoding, errors=UNENCODABLE)
    stream.write(json.dumps(answer, ensure_ascii=False))
    stream.flush()
    assert json.loads(buffer.getvalue().decode(encoding)) == answer


@pytest.mark.parametrize("encoding", ["latin-1", "ascii"])
def test_predict_reads_standard_input_as_utf8_as_it_reads_a_file(local_endpoint, tmp_path, encoding):
    # It read standard input in the locale's encoding: under Latin-1 'José' reached the endpoint and its capture as
    # 'JosÃ©' (exit 0); under ASCII, UTF-8 was refused as "not UTF-8 text". A file given by its path was read as UTF-8.
    sent = json.dumps([{"patient_id": "José 😷", "age": 50}], ensure_ascii=False).encode("utf-8")
    env = {**os.environ, "PYTHONIOENCODING": encoding, "PYTHONUTF8": "0"}
    done = subprocess.run([*DIAGNOSA, "--workspace", str(tmp_path / "ws"), "predict", "-", "--endpoint-url",
                           local_endpoint.url], cwd=tmp_path, env=env, input=sent, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(encoding, "replace")
    answered = json.loads(done.stdout.decode(encoding))  # what the terminal lacks is JSON's own \u escape
    assert [p["patient_id"] for p in answered["predictions"]] == ["José 😷"]
    # JSON for programs is UTF-8: on a stream of another encoding it is all ASCII (Latin-1's 'Ó' broke jq)
    assert done.stdout.isascii() and "ENFERMEDAD CRÓNICA" in json.loads(done.stdout.decode("utf-8"))["predictions"][0][
        "probabilities"]


def test_errors_with_standard_error_closed_stay_out_of_standard_output(local_endpoint, tmp_path):
    # With 2>&- Python's print(file=None) wrote the refusals into predict's JSON on standard output.
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([{"patient_id": "a", "age": 50}, {"patient_id": "b", "age": -5}]), encoding="utf-8")
    done = subprocess.run([*DIAGNOSA, "--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url",
                           local_endpoint.url], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          preexec_fn=lambda: os.close(2), timeout=600)
    assert done.returncode == 2  # one record refused
    assert [p["patient_id"] for p in json.loads(done.stdout)["predictions"]] == ["a"]


def test_a_csv_whose_name_the_file_system_encoding_cannot_hold_is_ingested(tmp_path):
    # Under LC_ALL=C with PYTHONUTF8=0 file names are ASCII with escapes: 'acción.csv' gave its raw object a name
    # with a real 'ó', which could not be written (UnicodeEncodeError, a traceback, an empty raw folder left).
    folder = tmp_path / "in"
    folder.mkdir()
    csv_path = folder / "acción.csv"
    csv_path.write_text("id,edad,gravedad\n" + "".join(f"p{i},{20 + i},{'leve' if i % 2 else 'grave'}\n"
                                                      for i in range(12)), encoding="utf-8")
    (folder / "c.toml").write_text('name = "acentos"\nid_column = "id"\ntarget = "gravedad"\nlabels = ["leve", "grave"]\n',
                                   encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    done = subprocess.run([*DIAGNOSA, "--workspace", str(tmp_path / "ws"), "data", "ingest", str(csv_path), "--config",
                           str(folder / "c.toml")], cwd=tmp_path, env=env, capture_output=True, timeout=600)
    said = done.stdout.decode("ascii", "replace") + done.stderr.decode("ascii", "replace")
    assert done.returncode == 0 and "Traceback" not in said, said
    assert [p.name[:6] for p in (tmp_path / "ws" / "lake" / "raw" / "acentos").iterdir()] == ["acci_n"]
