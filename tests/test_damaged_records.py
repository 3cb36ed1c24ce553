"""Execution and endpoint records damaged on disk (truncated by a full disk, edited by hand, another program's file):
every command that reads one says so in one line naming the file and what is wrong (exit status 2), and listings show
the record as Damaged; none of them ends in a traceback, or says the record is not there."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest

from diagnosa.cli import main
from pipelines.executor import DAMAGED, DamagedExecution, list_executions, load_execution
from pipelines.local_endpoints import DAMAGED as ENDPOINT_DAMAGED
from pipelines.local_endpoints import DeployError, LocalEndpoints, RecordError

GOOD_ID, BAD_ID = "20261201T070000Z-aaaaaa", "20261202T070000Z-bbbbbb"
STEP = {"StepName": "Preprocess", "StepType": "Processing", "StepStatus": "Failed", "StartTime": "2026-12-02T07:00:01Z",
        "RunFolder": "/nowhere"}
EXECUTION = {"PipelineExecutionId": BAD_ID, "PipelineExecutionStatus": "Failed", "CreationTime": "2026-12-02T07:00:00Z",
             "Parameters": {}, "Steps": {"Preprocess": STEP}}


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _executions(ws, content: str):
    """A workspace with a good execution and one whose execution.json holds ``content``; the damaged one's path."""
    for execution_id, text in ((GOOD_ID, json.dumps({**EXECUTION, "PipelineExecutionId": GOOD_ID,
                                                     "CreationTime": "2026-12-01T07:00:00Z"})), (BAD_ID, content)):
        folder = ws / "executions" / execution_id
        folder.mkdir(parents=True)
        (folder / "definition.json").write_text('{"Version": "2020-12-01", "Steps": []}')
        (folder / "execution.json").write_text(text)
    path = ws / "executions" / BAD_ID / "execution.json"
    written = datetime(2026, 12, 2, 7, tzinfo=timezone.utc).timestamp()  # after the good one started
    os.utime(path, (written, written))
    return path


DAMAGED_EXECUTIONS = {
    "truncated": ('{"trunc', "not JSON: Unterminated string"),
    "a list": ("[]", "[], not a JSON object"),
    "empty": ("{}", "no PipelineExecutionId"),
    "no steps": (json.dumps({k: v for k, v in EXECUTION.items() if k != "Steps"}), "no Steps"),
    "no status": (json.dumps({k: v for k, v in EXECUTION.items() if k != "PipelineExecutionStatus"}),
                  "no PipelineExecutionStatus"),
    "steps a list": (json.dumps({**EXECUTION, "Steps": []}), "Steps is [], not an object"),
    "a step not an object": (json.dumps({**EXECUTION, "Steps": {"Preprocess": 3}}), "step Preprocess: 3, not an object"),
    "a step without its start": (json.dumps({**EXECUTION, "Steps": {"Preprocess": {**STEP, "StartTime": None}}}),
                                 "step Preprocess: StartTime is None, not text"),
    "a duration as text": (json.dumps({**EXECUTION, "Steps": {"Preprocess": {**STEP, "DurationSeconds": "5"}}}),
                           "step Preprocess: DurationSeconds is '5', not a number"),
    "attempts as text": (json.dumps({**EXECUTION, "Attempts": "2"}), "Attempts is '2', not an integer"),
    "another execution's id": (json.dumps({**EXECUTION, "PipelineExecutionId": "x"}),
                               "PipelineExecutionId 'x' is not its folder's name"),
    "an unknown status": (json.dumps({**EXECUTION, "PipelineExecutionStatus": "Done"}),
                          "PipelineExecutionStatus 'Done' is none of"),
}


@pytest.mark.parametrize("content, problem", DAMAGED_EXECUTIONS.values(), ids=DAMAGED_EXECUTIONS.keys())
def test_a_damaged_execution_record_is_listed_as_damaged_and_refused_by_name(tmp_path, capsys, content, problem):
    # A truncated record was left out of `executions` and then named as not there; [] and {} were an AttributeError
    # and KeyErrors ('Steps', 'PipelineExecutionId', 'PipelineExecutionStatus'); resume, a JSONDecodeError traceback.
    ws = tmp_path / "ws"
    path = _executions(ws, content)
    listed = {e["PipelineExecutionId"]: e for e in list_executions(ws / "executions")}
    assert listed[GOOD_ID]["PipelineExecutionStatus"] == "Failed" and listed[BAD_ID]["PipelineExecutionStatus"] == DAMAGED
    assert str(path) in listed[BAD_ID]["Problem"] and problem in listed[BAD_ID]["Problem"]
    with pytest.raises(DamagedExecution, match=f"execution {BAD_ID}: its record {path} is damaged"):
        load_execution(ws / "executions", BAD_ID)
    code, out, err = _cli(capsys, "--workspace", ws, "executions")
    assert code == 0 and not err
    # Placed by when its record was written: the latest execution is still the latest (job prepare's default).
    assert [line.split()[:2] for line in out.splitlines()] == [[BAD_ID, DAMAGED], [GOOD_ID, "Failed"]]
    assert str(path) in out and problem in out
    for argv in (["executions", BAD_ID], ["run", "--local", "--resume", BAD_ID, "--quiet"],
                 ["job", "prepare", "Preprocess", "--execution", BAD_ID], ["job", "prepare", "Preprocess"]):
        code, out, err = _cli(capsys, "--workspace", ws, *argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith(f"diagnosa: error: execution {BAD_ID}: its record {path} is damaged (") and problem in err
        assert err.count("\n") == 1, err  # one line, no traceback
    code, out, err = _cli(capsys, "--workspace", ws, "executions", GOOD_ID)  # the others are shown as ever
    assert code == 0 and out.startswith(f"{GOOD_ID}  Failed")


def test_a_damaged_definition_is_named_when_its_execution_is_resumed(tmp_path, capsys):
    ws = tmp_path / "ws"
    _executions(ws, json.dumps(EXECUTION))
    definition = ws / "executions" / BAD_ID / "definition.json"
    definition.write_text('{"Version": ')
    code, out, err = _cli(capsys, "--workspace", ws, "run", "--local", "--resume", BAD_ID, "--quiet")
    assert code == 2 and err.startswith(f"diagnosa: error: execution {BAD_ID}: the definition it ran, {definition}, "
                                        "is damaged (not JSON") and err.count("\n") == 1


def _endpoint(ws, content: str):
    folder = ws / "endpoints" / "diagnosa"
    folder.mkdir(parents=True)
    (folder / "endpoint.json").write_text(content)
    return folder / "endpoint.json"


RECORD = {"EndpointName": "diagnosa", "EndpointStatus": "OutOfService", "EndpointConfigName": "c", "Port": 8080,
          "Url": "http://127.0.0.1:8080", "Pid": None}
DAMAGED_ENDPOINTS = {
    "truncated": ('{"EndpointName": "diagnosa", "Endpoi', "not JSON"),
    "a list": ("[]", "it holds [], not a JSON object"),
    "no status": ('{"EndpointName": "diagnosa"}', "it has no EndpointStatus"),
    "a pid as text": ('{"EndpointName":"diagnosa","EndpointStatus":"InService","Pid":"abc"}',
                      "its Pid is 'abc', not a process id or null"),
    "a pid of 0": (json.dumps({**RECORD, "Pid": 0}), "its Pid 0 is not a process id"),
    "a negative pid": (json.dumps({**RECORD, "Pid": -1}), "its Pid -1 is not a process id"),
    "a pid true": (json.dumps({**RECORD, "Pid": True}), "its Pid is True"),
    "a port as text": (json.dumps({**RECORD, "Port": "8080"}), "its Port is '8080', not a port number"),
    "a port out of range": (json.dumps({**RECORD, "Port": 70000}), "its Port 70000 is not a port number"),
    "a url as a number": (json.dumps({**RECORD, "Url": 5}), "its Url is 5, not text"),
    "history not a list": (json.dumps({**RECORD, "History": {}}), "its History is {}, not a list"),
    "another endpoint's name": (json.dumps({**RECORD, "EndpointName": "other"}),
                                "its EndpointName 'other' is not the name of its folder, diagnosa"),
    "an unknown status": (json.dumps({**RECORD, "EndpointStatus": "Creating"}),
                          "its EndpointStatus 'Creating' is none of InService, OutOfService"),
}


@pytest.mark.parametrize("content, problem", DAMAGED_ENDPOINTS.values(), ids=DAMAGED_ENDPOINTS.keys())
def test_a_damaged_endpoint_record_is_listed_as_damaged_and_refused_by_name(tmp_path, capsys, content, problem):
    # {"Pid": "abc"} and no Url: `endpoint list` was a KeyError 'Url', `endpoint start` a KeyError 'EndpointConfigName'
    # (only EndpointName was checked); a truncated record made `monitor` a KeyError 'ModelDataUrl'.
    ws = tmp_path / "ws"
    path = _endpoint(ws, content)
    from diagnosa.lake import DataLake
    from diagnosa.services import LOCAL_BUCKET
    from pipelines.local_jobs import LakeMapping

    endpoints = LocalEndpoints(ws, LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(tmp_path / "lake"))), port=0)
    record = endpoints.describe("diagnosa")
    assert record["EndpointStatus"] == ENDPOINT_DAMAGED and problem in record["Problem"]
    with pytest.raises(RecordError, match="endpoint diagnosa: its record .* is damaged"):
        record["ModelDataUrl"]  # what monitor asks of the record of the endpoint it watches
    with pytest.raises(DeployError, match="is damaged"):
        endpoints.start("diagnosa")
    code, out, err = _cli(capsys, "--workspace", ws, "endpoint", "list")
    assert code == 0 and not err
    assert out.startswith(f"diagnosa         {ENDPOINT_DAMAGED}       its record {path} is damaged (")
    assert problem in out and out.count("\n") == 1
    for argv in (["endpoint", "start", "diagnosa"], ["monitor", "--last", "24h"]):
        code, out, err = _cli(capsys, "--workspace", ws, *argv)
        assert code == 2, (argv, err)
        assert err.startswith(f"diagnosa: error: endpoint diagnosa: its record {path} is damaged (") and problem in err
        assert err.count("\n") == 1, err
    # predict said "`diagnosa endpoint start diagnosa` starts it again", which start refuses.
    (tmp_path / "p.json").write_text('{"age": 40}')
    code, out, err = _cli(capsys, "--workspace", ws, "predict", tmp_path / "p.json")
    assert code == 1 and "endpoint start" not in err  # the endpoint's failure, not the input's (as SageMaker's down)
    assert err.startswith("diagnosa: error: the local endpoint diagnosa (") and f"its record {path} is damaged" in err
    code, out, err = _cli(capsys, "--workspace", ws, "endpoint", "stop", "diagnosa")  # nothing runs: nothing stopped
    assert code == 0 and "endpoint diagnosa: was not running" in out
    assert path.read_text() == content  # left as it was, for the next deploy to write anew


def test_a_field_an_endpoint_record_lacks_is_named_by_the_command_that_needs_it(tmp_path, capsys):
    # Records written by hand or by older versions name an endpoint and its status, and little else: they are read
    # (feedback takes the model's labels from ModelDir), and a command that needs what they lack says so.
    ws = tmp_path / "ws"
    path = _endpoint(ws, '{"EndpointName": "diagnosa", "EndpointStatus": "OutOfService"}')
    code, out, err = _cli(capsys, "--workspace", ws, "endpoint", "list")
    assert code == 0 and out.split() == ["diagnosa", "OutOfService", "config"]
    for argv, field in ((["endpoint", "start", "diagnosa"], "EndpointConfigName"),
                        (["monitor", "--last", "24h"], "ModelDataUrl")):
        code, out, err = _cli(capsys, "--workspace", ws, *argv)
        assert code == 2 and err.startswith(f"diagnosa: error: endpoint diagnosa: its record {path} has no {field}: ")
        assert err.count("\n") == 1, err
