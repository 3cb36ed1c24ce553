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

DEEP = "[" * 100_000 + "]" * 100_000  # valid nesting, deeper than Python's recursion limit: a RecursionError
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
    "nested too deeply": (DEEP, "not JSON: nested too deeply"),  # was a RecursionError traceback
}


@pytest.mark.parametrize("content, problem", DAMAGED_EXECUTIONS.values(), ids=DAMAGED_EXECUTIONS.keys())
def test_a_damaged_execution_record_is_listed_as_damaged_and_refused_by_name(tmp_path, capsys, content, problem):
    # A truncated record was left out of `executions` and then named as not there; [] and {} were an AttributeError
    # and KeyErrors ('Steps', 'PipelineExecutionId', 'PipelineExecutionStatus'); resume, a JSONDecodeError traceback.
    ws = tmp_path / "ws"
    path = _executions(ws, content)
    _assert_damaged_execution(capsys, ws, path, problem)


def _assert_damaged_execution(capsys, ws, path, problem: str) -> None:
    """Execution BAD_ID, whose record ``path`` is damaged by ``problem``, is listed as DAMAGED, placed by when its
    record was written, and refused by name in one line by every command that reads it; GOOD_ID is read as ever."""
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
    "nested too deeply": (DEEP, "not JSON: nested too deeply"),  # was a RecursionError traceback
}


@pytest.mark.parametrize("content, problem", DAMAGED_ENDPOINTS.values(), ids=DAMAGED_ENDPOINTS.keys())
def test_a_damaged_endpoint_record_is_listed_as_damaged_and_refused_by_name(tmp_path, capsys, content, problem):
    # {"Pid": "abc"} and no Url: `endpoint list` was a KeyError 'Url', `endpoint start` a KeyError 'EndpointConfigName'
    # (only EndpointName was checked); a truncated record made `monitor` a KeyError 'ModelDataUrl'.
    ws = tmp_path / "ws"
    path = _endpoint(ws, content)
    _assert_damaged_endpoint(tmp_path, capsys, ws, path, problem)
    assert path.read_text() == content  # left as it was, for the next deploy to write anew


def _assert_damaged_endpoint(tmp_path, capsys, ws, path, problem: str) -> None:
    """Endpoint diagnosa, whose record ``path`` is damaged by ``problem``, is listed as DAMAGED and refused by name
    by every command that uses it: never "no such endpoint" (predict then called SageMaker's endpoint of that name)."""
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


def _not_a_file(path, kind: str) -> str:
    """Replace the record ``path`` by a folder, a symlink loop or a dangling symlink; what its Problem says."""
    written = os.stat(path).st_mtime
    path.unlink()
    if kind == "folder":
        path.mkdir()
        problem = "it is a directory, not a file"
    elif kind == "symlink loop":
        path.symlink_to(path.name)
        problem = "it is a symbolic link that loops"
    else:
        path.symlink_to("/nowhere/record.json")
        problem = "it is a symbolic link to '/nowhere/record.json', which does not exist"
    os.utime(path, (written, written), follow_symlinks=False)
    return problem


NOT_A_FILE = ("folder", "symlink loop", "dangling symlink")


@pytest.mark.parametrize("kind", NOT_A_FILE)
def test_an_execution_record_that_is_no_file_is_listed_as_damaged(tmp_path, capsys, kind):
    # It was dropped without a word ("no local executions"; "no local execution <id>"), and `job prepare` took an
    # older execution.
    ws = tmp_path / "ws"
    path = _executions(ws, json.dumps(EXECUTION))
    problem = _not_a_file(path, kind)
    _assert_damaged_execution(capsys, ws, path, problem)


@pytest.mark.parametrize("kind", NOT_A_FILE)
def test_an_endpoint_record_that_is_no_file_is_a_damaged_endpoint(tmp_path, capsys, kind):
    # It was "no local endpoints" while its server ran on, and `predict` with no flags called SageMaker's endpoint
    # of that name with the patient's data.
    ws = tmp_path / "ws"
    path = _endpoint(ws, json.dumps(RECORD))
    problem = _not_a_file(path, kind)
    _assert_damaged_endpoint(tmp_path, capsys, ws, path, problem)
    assert os.path.lexists(path) and not path.is_file()  # left as it was


BAD_NAME = os.fsdecode(b"e\xed\xa0\x80")  # a folder name that is not UTF-8: lone surrogates once decoded
ESCAPED = "e\\xed\\xa0\\x80"


@pytest.mark.parametrize("named", ("another endpoint's record", "its own name"))
def test_an_endpoint_folder_whose_name_is_not_utf8_is_named_escaped(tmp_path, capsys, named):
    # A UnicodeEncodeError traceback in `endpoint list` and `endpoint stop`, for every endpoint of the workspace.
    ws = tmp_path / "ws"
    _endpoint(ws, json.dumps(RECORD))
    folder = ws / "endpoints" / BAD_NAME
    folder.mkdir()
    (folder / "endpoint.json").write_text(json.dumps({**RECORD, "EndpointName": BAD_NAME if named == "its own name"
                                                      else "diagnosa"}))
    code, out, err = _cli(capsys, "--workspace", ws, "endpoint", "list")
    assert code == 0 and not err
    rows = out.splitlines()
    assert len(rows) == 2 and rows[0].startswith("diagnosa ") and "OutOfService" in rows[0]
    assert rows[1].startswith(f"{ESCAPED} ") and ENDPOINT_DAMAGED in rows[1] and "is not an endpoint name" in rows[1]
    with pytest.raises(SystemExit) as refused:  # the CLI refuses the name as it is read
        main(["--workspace", str(ws), "endpoint", "stop", BAD_NAME])
    out, err = capsys.readouterr()
    assert refused.value.code == 2 and not out and "is not a SageMaker name" in err
    err.encode("utf-8")  # no lone surrogate
    from diagnosa.lake import DataLake
    from diagnosa.services import LOCAL_BUCKET
    from pipelines.local_jobs import LakeMapping

    endpoints = LocalEndpoints(ws, LakeMapping(LOCAL_BUCKET, DataLake.from_uri(str(tmp_path / "lake"))), port=0)
    for act in (endpoints.stop, endpoints.start):  # and so does the API, naming it escaped (its servers' scan failed)
        with pytest.raises(DeployError, match=f"^endpoint {ESCAPED.replace(chr(92), chr(92) * 2)}: its folder's name "
                                              f"{ESCAPED.replace(chr(92), chr(92) * 2)} is not an endpoint name") as err:
            act(BAD_NAME)
        str(err.value).encode("utf-8")
    assert (folder / "endpoint.json").is_file()  # left as it was


# -------------------------------------------------------------------------------- the registry's version files

def _registry(ws, versions: int = 2):
    from test_registry import PACKAGE

    from pipelines.registry import LocalModelRegistry

    registry = LocalModelRegistry(ws / "registry")
    for _ in range(versions):
        registry.create_model_package(**PACKAGE)
    return registry


def test_a_version_file_nested_too_deeply_is_a_damaged_version(tmp_path, capsys):
    ws = tmp_path / "ws"
    _registry(ws)
    path = ws / "registry" / "diagnosa" / "000001.json"
    path.write_text(DEEP)
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "list")
    assert code == 0 and not err
    assert "  v1    Damaged" in out and f"its file {path} is damaged (not JSON: nested too deeply)" in out
    assert "  v2    PendingManualApproval" in out
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "approve", "1", "--no-deploy")
    assert code == 2 and err.startswith("diagnosa: error: model package diagnosa/1: its file") and err.count("\n") == 1


@pytest.mark.parametrize("kind", NOT_A_FILE)
def test_a_version_file_that_is_no_file_is_a_damaged_version(tmp_path, capsys, kind):
    # A symlink loop or a dangling symlink failed `registry list` for every group ("no object 'diagnosa/000001.json'"),
    # and `approve 1` said it does not exist; a folder hid the version without a word.
    from pipelines.registry import DAMAGED, DamagedPackage

    ws = tmp_path / "ws"
    registry = _registry(ws)
    path = ws / "registry" / "diagnosa" / "000001.json"
    problem = _not_a_file(path, kind)
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "list")
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0] == "diagnosa: 2 version(s)"
    assert lines[1].startswith(f"  v1    {DAMAGED}") and f"its file {path} is damaged ({problem})" in lines[1]
    assert lines[2].startswith("  v2    PendingManualApproval")
    with pytest.raises(DamagedPackage, match=f"its file {path} is damaged"):
        registry.describe_model_package("diagnosa/1")
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "approve", "1", "--no-deploy")
    assert code == 2 and err.startswith(f"diagnosa: error: model package diagnosa/1: its file {path} is damaged (")
    assert err.count("\n") == 1
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "approve", "2", "--no-deploy")
    assert code == 0, err
    from test_registry import PACKAGE

    assert registry.create_model_package(**PACKAGE)["ModelPackageArn"].endswith("/diagnosa/3")  # never v1 again


def test_only_ascii_digit_file_names_are_versions(tmp_path, capsys):
    # '².json' was a ValueError traceback (str.isdigit() takes it, int() does not); '٠٠٠٠٠٣.json' was read as v3 and
    # looked up as 000003.json, failing the whole list; so were '3.json' and a version file in a subfolder.
    from pipelines.registry import RegistryError, package_version

    ws = tmp_path / "ws"
    registry = _registry(ws)
    group = ws / "registry" / "diagnosa"
    sound = (group / "000001.json").read_text()
    for name in ("².json", "٠٠٠٠٠٣.json", "3.json", "0000004.json", "sub/000005.json"):
        (group / name).parent.mkdir(exist_ok=True)
        (group / name).write_text(sound)
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "list")
    assert code == 0 and not err
    assert out.startswith("diagnosa: 2 version(s)\n") and "Damaged" not in out
    assert [p["ModelPackageVersion"] for p in registry.list_model_packages("diagnosa")] == [1, 2]
    for name in ("diagnosa/²", "diagnosa/٣", "diagnosa/1٣"):
        with pytest.raises(RegistryError, match="not a model package ARN or group/version"):
            package_version(name)


def test_the_damaged_version_message_is_bounded(tmp_path, capsys):
    # A 1 MB group name in a version file made a 1 MB error line (its fields were quoted whole).
    ws = tmp_path / "ws"
    _registry(ws)
    path = ws / "registry" / "diagnosa" / "000002.json"
    package = json.loads(path.read_text())
    path.write_text(json.dumps({**package, "ModelPackageGroupName": "g" * 1_000_000}))
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "list")
    assert code == 0 and "  v2    Damaged" in out and len(out) < 2_000, len(out)
    path.write_text(json.dumps({**package, "ModelApprovalStatus": "s" * 1_000_000}))
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "approve", "2", "--no-deploy")
    assert code == 2 and "is damaged (approval status 'sss" in err and len(err) < 2_000, len(err)


@pytest.mark.parametrize("content", ("[1, 2]", DEEP))
def test_the_guard_of_a_killed_executor_reads_a_damaged_record_without_failing(tmp_path, monkeypatch, content):
    # A record that was a JSON list was an AttributeError in the guard, before it killed the jobs.
    import io
    import signal
    import sys

    from pipelines import guard

    folder = tmp_path / BAD_ID
    folder.mkdir()
    (folder / "execution.json").write_text(content)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))  # the executor gone without its "done"
    monkeypatch.setattr(guard, "kill_marked", lambda marks, seconds: [])
    previous = signal.getsignal(signal.SIGINT)
    try:
        guard.guard(str(folder), 999_999_999)
    finally:  # the guard ignores Ctrl-C, as its own process: not this one's, whose later tests interrupt themselves
        signal.signal(signal.SIGINT, previous)
    assert (folder / "execution.json").read_text() == content  # not rewritten: it is no record to close


def test_a_group_whose_only_version_is_a_folder_is_still_listed(tmp_path, capsys):
    # The group vanished with its version: "no model packages in ...", exit status 0.
    ws = tmp_path / "ws"
    _registry(ws, versions=1)
    path = ws / "registry" / "diagnosa" / "000001.json"
    problem = _not_a_file(path, "folder")
    code, out, err = _cli(capsys, "--workspace", ws, "registry", "list")
    assert code == 0 and not err
    assert out.startswith("diagnosa: 1 version(s)\n  v1    Damaged") and f"({problem})" in out
