"""An execution whose own record, ``execution.json``, cannot be written (the disk full): the run stops at once, naming
the file and the reason, and `diagnosa executions` says what happened rather than "killed with its guard". The disk
fills at the write of the record, as on a small tmpfs in a probe: the write is cut short with ENOSPC."""
from __future__ import annotations

import errno
import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
from test_executor import BUCKET, processing_step

from diagnosa.files import atomic_path
from diagnosa.lake import DataLake
from pipelines.executor import LocalExecutor, list_executions
from pipelines.guard import job_processes
from pipelines.registry import LocalModelRegistry

SCRIPT = """
import pathlib, sys, time
name, hold, root = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
out = root / "output" / "out"
out.mkdir(parents=True, exist_ok=True)
(out / f"{name}.txt").write_text(name)
deadline = time.monotonic() + 60
while name == "Slow" and hold.exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""
SLOW = 60.0  # seconds the slow step's job runs while its hold file is there: the run must not wait for it


def _script(folder: Path) -> str:
    path = folder / f"step-{hashlib.sha256(SCRIPT.encode()).hexdigest()[:12]}.py"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPT, encoding="utf-8")
    return str(path)


def _processing(name: str, script: str, inputs: list, hold: Path) -> dict:
    return processing_step(name, inputs, script, [name, str(hold)])


def _definition(folder: Path) -> dict:
    """Seed, then Slow (a job of a minute while ``<folder>/hold`` is there) and Quick side by side."""
    script = _script(folder)
    hold = folder / "hold"
    hold.write_text("")
    seed = {"Get": "Steps.Seed.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}
    return {"Version": "2020-12-01",
            "Parameters": [{"Name": "InputUri", "Type": "String", "DefaultValue": f"s3://{BUCKET}/curated/seed"}],
            "Steps": [_processing("Seed", script, [{"Get": "Parameters.InputUri"}], hold),
                      _processing("Slow", script, [seed], hold),
                      _processing("Quick", script, [seed], hold)]}


@pytest.fixture
def executor(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.put_bytes("curated/seed/seed.txt", b"seed")
    lines: list[str] = []
    return LocalExecutor(lake=lake, bucket=BUCKET, root=tmp_path / "executions",
                         registry=LocalModelRegistry(tmp_path / "registry"), max_parallel=2, progress=lines.append,
                         python=sys.executable, use_cache=False)


def _fill_disk_at(monkeypatch, when, *, stays_full: bool) -> list[Path]:
    """Make the write of an execution record whose data ``when`` accepts fail as a full disk does: half the file
    written, then ENOSPC (and every record write after it too, while ``stays_full``). The records refused."""
    import pipelines.executor as module

    real = module.write_json_atomic
    refused: list[Path] = []

    def write_json_atomic(target, data, **dumps):
        if Path(target).name == "execution.json" and ((stays_full and refused) or (not refused and when(data))):
            refused.append(Path(target))
            with atomic_path(target) as tmp:
                text = json.dumps(data, **dumps)
                tmp.write_text(text[: len(text) // 2], encoding="utf-8")
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(target, data, **dumps)

    monkeypatch.setattr(module, "write_json_atomic", write_json_atomic)
    return refused


def _quick_ended(data: dict) -> bool:
    return data.get("Steps", {}).get("Quick", {}).get("StepStatus") == "Succeeded"


def test_a_record_the_disk_cannot_hold_stops_the_run_at_once_and_is_not_listed_as_a_killed_run(executor, tmp_path,
                                                                                              monkeypatch):
    refused = _fill_disk_at(monkeypatch, _quick_ended, stays_full=True)
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        executor.start(_definition(tmp_path / "code"))
    took = time.monotonic() - started
    assert refused, "the record write was never made"
    folder = refused[0].parent
    said = str(caught.value)
    # Named: the file and the reason, and what to do (the execution is kept: resume it, not start anew).
    assert f"its record {folder / 'execution.json'} could not be written (No space left on device)" in said, said
    assert f"--resume {folder.name}" in said, said
    # At once: the slow step's job was stopped, not waited for (it sleeps a minute; the run used to wait for it).
    assert took < SLOW / 2, took
    assert job_processes(folder) == []
    # The record on disk is whole, as last written; the listing says what happened, not a kill.
    [listed] = list_executions(executor.root)
    assert listed["PipelineExecutionStatus"] == "Failed", listed
    assert "could not write its record" in listed["FailureReason"] and "No space left on device" in \
        listed["FailureReason"], listed["FailureReason"]
    assert "killed" not in listed["FailureReason"]
    assert listed["Steps"]["Slow"]["StepStatus"] == "Stopped"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]  # no half record beside it
    # Space freed: the execution resumes and ends.
    monkeypatch.undo()
    (tmp_path / "code" / "hold").unlink()
    resumed = executor.resume(folder.name)
    assert resumed.status == "Succeeded", resumed.data.get("FailureReason")
    [listed] = list_executions(executor.root)
    assert listed["PipelineExecutionStatus"] == "Succeeded" and "FailureReason" not in listed


def test_a_record_write_that_fails_once_ends_the_run_failed_with_the_reason_recorded(executor, tmp_path, monkeypatch):
    refused = _fill_disk_at(monkeypatch, _quick_ended, stays_full=False)
    started = time.monotonic()
    record = executor.start(_definition(tmp_path / "code"))
    assert time.monotonic() - started < SLOW / 2
    assert len(refused) == 1
    assert record.status == "Failed"
    assert f"its record {record.path} could not be written (No space left on device)" in record.data["FailureReason"]
    on_disk = json.loads(record.path.read_text(encoding="utf-8"))
    assert on_disk["PipelineExecutionStatus"] == "Failed" and on_disk["FailureReason"] == record.data["FailureReason"]
    assert on_disk["Steps"]["Quick"]["StepStatus"] == "Succeeded"  # it did succeed: only its record was late
    assert on_disk["Steps"]["Slow"]["StepStatus"] == "Stopped"
    [listed] = list_executions(executor.root)
    assert listed["PipelineExecutionStatus"] == "Failed" and "killed" not in listed["FailureReason"]


def test_a_first_record_the_disk_cannot_hold_leaves_no_execution_behind(executor, tmp_path, monkeypatch):
    _fill_disk_at(monkeypatch, lambda data: True, stays_full=True)
    with pytest.raises(OSError) as caught:
        executor.start(_definition(tmp_path / "code"))
    assert "execution.json could not be written (No space left on device)" in str(caught.value), str(caught.value)
    assert "did not start" in str(caught.value)
    # A folder holding only definition.json, which no listing shows and nothing removes, was left.
    assert not executor.root.exists() or list(executor.root.iterdir()) == []
