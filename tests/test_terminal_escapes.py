"""Text others wrote never reaches the terminal as a control sequence. A CSV's column name, a request's field, a
record in the workspace, a step's failure reason: each is quoted by some message, and an ESC, BEL or C1 control in it
acted on the terminal that printed the message (``lab\\x1b]0;…\\x07`` retitled the window; ``\\x1b[2J`` cleared the
screen above the error). Ingestion refuses such column names outright; everything the CLI prints from others' text
shows each such character escaped. Run through the real CLI, the real endpoint and the real progress board."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from diagnosa.cli import main
from diagnosa.commands.progress import Board
from diagnosa.data.ingest import IngestError, ingest_csv
from diagnosa.lake import DataLake

# ESC (an OSC that sets the window title, ended by BEL), a C1 CSI, a bidi override: what a terminal acts on.
ACTING = ("\x1b", "\x07", "\x9b", "\u202e")
HOSTILE = "lab\x1b]0;owned\x07\x9b2J\u202e"


def _acts(text: str) -> list[str]:
    return [ch for ch in ACTING if ch in text]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table(tmp_path, header: list[str], config: str = "") -> tuple:
    csv_path, config_path = tmp_path / "t.csv", tmp_path / "t.toml"
    rows = [",".join(header)] + [f"{i},{i % 7},{'A' if i % 3 else 'B'}" for i in range(30)]
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config_path.write_text(config or 'name = "t"\nid_column = "id"\ntarget = "label"\nlabels = ["A", "B"]\n',
                           encoding="utf-8")
    return csv_path, config_path


@pytest.mark.parametrize("name, shown", [
    ("lab\x1b[2J", r"'lab\x1b[2J'"),  # ESC: clears the screen
    ("lab\x9b2J", r"'lab\x9b2J'"),  # C1 CSI, one character
    ("lab\u202eX", r"'lab\u202eX'"),  # right-to-left override: the name reads backwards
    ("lab\u200b", r"'lab\u200b'"),  # zero-width space: a name no one can see to type
    ("la\tb", r"'la\tb'"),
], ids=["esc", "c1-csi", "bidi-override", "zero-width-space", "tab"])
def test_ingestion_refuses_a_column_name_holding_a_control_or_format_character(tmp_path, name, shown):
    csv_path, config_path = _table(tmp_path, ["id", name, "label"])
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with pytest.raises(IngestError) as refused:
        ingest_csv(lake, csv_path, config_path)
    message = str(refused.value)
    assert "column names holding a control or invisible format character" in message and shown in message
    assert not _acts(message) and "rename them with visible characters" in message
    assert not list((tmp_path / "lake").rglob("*.parquet"))  # nothing curated


def test_a_column_name_with_accents_spaces_and_symbols_is_still_accepted(tmp_path):
    csv_path, config_path = _table(tmp_path, ["id", "Größe (cm) · ½", "label"])
    report = ingest_csv(DataLake.from_uri(str(tmp_path / "lake")), csv_path, config_path)
    assert report.rows == 30


def test_the_cli_shows_a_config_error_naming_a_hostile_column_escaped(tmp_path, capsys):
    config = 'name = "t"\nid_column = "id\\u001b]0;owned\\u0007"\ntarget = "label"\nlabels = ["A", "B"]\n'
    csv_path, config_path = _table(tmp_path, ["id", "lab", "label"], config)
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "data", "ingest", csv_path, "--config", config_path)
    assert code == 2 and out == ""
    assert err.startswith("diagnosa: error: ") and err.count("\n") == 1
    assert r"id_column 'id\x1b]0;owned\x07'" in err and not _acts(err)


def test_the_cli_shows_the_ingestion_refusal_escaped(tmp_path, capsys):
    csv_path, config_path = _table(tmp_path, ["id", HOSTILE, "label"])
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "data", "ingest", csv_path, "--config", config_path)
    assert code == 2 and not _acts(err)
    assert r"'lab\x1b]0;owned\x07\x9b2J\u202e'" in err


def test_predict_shows_the_fields_the_endpoint_refused_escaped(local_endpoint, tmp_path, capsys):
    path = tmp_path / "ward.json"
    path.write_text(json.dumps([{"patient_id": "P1", "age": 40, HOSTILE: 1}]), encoding="utf-8")
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "predict", path, "--endpoint-url",
                          local_endpoint.url)
    assert code == 2 and not _acts(err)
    assert r"lab\x1b]0;owned\x07\x9b2J\u202e: unknown field" in err


def test_a_csv_sent_to_predict_with_a_hostile_header_is_refused_escaped(local_endpoint, tmp_path, capsys):
    path = tmp_path / "ward.csv"
    path.write_text(f"patient_id,age,{HOSTILE}\nP1,40,1\n", encoding="utf-8")
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "predict", path, "--endpoint-url",
                          local_endpoint.url)
    assert code == 2 and not _acts(err) and r"\x1b]0;owned\x07" in err


def test_executions_show_a_records_failure_reasons_escaped(tmp_path, capsys):
    execution_id = "20261202T070000Z-bbbbbb"
    step = {"StepName": "Preprocess", "StepType": "Processing", "StepStatus": "Failed",
            "StartTime": "2026-12-02T07:00:01Z", "RunFolder": "/nowhere", "FailureReason": f"column {HOSTILE}: bad"}
    record = {"PipelineExecutionId": execution_id, "PipelineExecutionStatus": "Failed",
              "CreationTime": "2026-12-02T07:00:00Z", "FailureReason": f"step Preprocess failed: {HOSTILE}",
              "Parameters": {"InputDataUri": f"s3://b/curated/{HOSTILE}/v1"}, "Steps": {"Preprocess": step}}
    folder = tmp_path / "ws" / "executions" / execution_id
    folder.mkdir(parents=True)
    (folder / "definition.json").write_text('{"Version": "2020-12-01", "Steps": []}')
    (folder / "execution.json").write_text(json.dumps(record))
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "executions")
    assert code == 0 and execution_id in out and r"lab\x1b]0;owned" in out and not _acts(out + err)
    code, out, err = _cli(capsys, "--workspace", tmp_path / "ws", "executions", execution_id)
    assert code == 0 and not _acts(out + err)
    assert r"  failure: step Preprocess failed: lab\x1b]0;owned\x07\x9b2J\u202e" in out
    assert r"    column lab\x1b]0;owned\x07\x9b2J\u202e: bad" in out


def test_the_progress_board_shows_a_step_line_and_a_job_logs_last_line_escaped(capsys):
    board = Board("run --local", enabled=False)
    board.echo(f"[   1.0s] Preprocess  failed in 1.0 s: {HOSTILE}\nsecond line")
    out = capsys.readouterr().out
    assert out == "[   1.0s] Preprocess  failed in 1.0 s: lab\\x1b]0;owned\\x07\\x9b2J\\u202e\nsecond line\n"
    board.start("Preprocess", lambda: f"reading {HOSTILE}")
    board.start("Train", "")
    board.end("Train", "failed", HOSTILE)
    screen = Console(file=io.StringIO(), color_system=None, width=200)  # no styles: only the board's own text
    screen.print(board.render())
    drawn = screen.file.getvalue()
    assert r"reading lab\x1b]0;owned" in drawn and r"✗ Train" in drawn and not _acts(drawn)


def test_a_hints_example_request_shows_a_hostile_value_escaped_and_the_shell_passes_the_same_value():
    import subprocess

    from diagnosa.commands.common import shell_json

    example = {"sex": f"F{HOSTILE}", "note": "it's Größe", "emoji": "\U0001f600", "zwsp": "a\u200bb"}
    body = shell_json(example)
    assert not _acts(body) and "\u200b" not in body and "Größe" in body
    sent = subprocess.run(["sh", "-c", f"printf '%s' '{body}'"], capture_output=True, text=True, check=True).stdout
    assert json.loads(sent) == example  # what the endpoint receives from the copied line
