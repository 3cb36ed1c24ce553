"""The local executor under signals: a Ctrl-C wherever it lands, and a SIGKILL of the process running an execution.

A Ctrl-C is sent from the point of the scheduler it should land at (so the test does not depend on timing); a kill
is a real SIGKILL of a real executor process while its job runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from test_executor import BUCKET, output_of, processing, script_file

from diagnosa.lake import DataLake
from pipelines.executor import ExecutionError, ExecutionRecord, LocalExecutor, job_processes, list_executions
from pipelines.registry import LocalModelRegistry

ROOT = Path(__file__).resolve().parents[1]


def executor_for(tmp_path: Path, lines: list[str] | None = None) -> LocalExecutor:
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    if not lake.exists("curated/seed/seed.txt"):
        lake.put_bytes("curated/seed/seed.txt", b"seed")
    return LocalExecutor(lake=lake, bucket=BUCKET, root=tmp_path / "executions",
                         registry=LocalModelRegistry(tmp_path / "registry"), max_parallel=2,
                         progress=(lines if lines is not None else []).append, python=sys.executable)


def two_steps(marker: Path, first: dict | None = None) -> dict:
    return {"Version": "2020-12-01",
            "Parameters": [{"Name": "InputUri", "Type": "String", "DefaultValue": f"s3://{BUCKET}/curated/seed"}],
            "Steps": [first or processing("First", [{"Get": "Parameters.InputUri"}], marker),
                      processing("Last", [output_of("First")], marker)]}


def interrupt_once(when) -> object:
    """A wrapper that sends this process SIGINT (what Ctrl-C does) the first time ``when(*args)`` holds, from the main
    thread, then calls the wrapped function."""
    sent = threading.Event()

    def wrap(original):
        def wrapper(*args, **kwargs):
            if threading.current_thread() is threading.main_thread() and not sent.is_set() and when(*args):
                sent.set()
                os.kill(os.getpid(), signal.SIGINT)  # its handler runs here, before the next line
            return original(*args, **kwargs)
        return wrapper
    wrap.sent = sent  # type: ignore[attr-defined]
    return wrap


@pytest.mark.parametrize("where", ["choosing the next steps", "collecting a step's result"])
def test_an_interrupt_between_steps_stops_the_execution_cleanly(tmp_path, monkeypatch, where):
    # Only the wait for running steps caught KeyboardInterrupt: a Ctrl-C as the scheduler chose or collected steps
    # escaped with a traceback and left the execution "Executing".
    lines: list[str] = []
    executor = executor_for(tmp_path, lines)
    wrap = interrupt_once(lambda *args: True)
    if where == "choosing the next steps":  # after First succeeded, as Last is about to be chosen
        ready = LocalExecutor._ready
        wrap = interrupt_once(lambda self, graph, record, done, *rest: "First" in done)
        monkeypatch.setattr(LocalExecutor, "_ready", wrap(ready))
    else:  # the main thread reading First's outcome
        monkeypatch.setattr(Future, "result", wrap(Future.result))
    try:
        record = executor.start(two_steps(tmp_path / "fail-marker"))
    except KeyboardInterrupt:
        pytest.fail(f"an interrupt while {where} escaped the executor")
    assert wrap.sent.is_set()  # type: ignore[attr-defined]
    assert (record.status, record.data["FailureReason"]) == ("Stopped", "interrupted")
    assert ExecutionRecord.load(record.path).status == "Stopped" and "EndTime" in record.data
    assert record.steps["First"]["StepStatus"] == "Succeeded" and "Last" not in record.steps
    assert any(line.startswith("interrupted") for line in lines)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C means KeyboardInterrupt again
    monkeypatch.undo()
    resumed = executor.resume(record.id)
    assert resumed.status == "Succeeded" and resumed.steps["Last"]["StepStatus"] == "Succeeded"


def test_an_interrupt_as_the_record_is_closed_stops_nothing(tmp_path, monkeypatch):
    # Every step had ended: the run succeeded, and the interrupt must neither escape nor reopen it.
    executor = executor_for(tmp_path)
    wrap = interrupt_once(lambda record, change: change.__name__ == "close")
    monkeypatch.setattr(ExecutionRecord, "update", wrap(ExecutionRecord.update))
    try:
        record = executor.start(two_steps(tmp_path / "fail-marker"))
    except KeyboardInterrupt:
        pytest.fail("an interrupt as the record was closed escaped the executor")
    assert wrap.sent.is_set()  # type: ignore[attr-defined]
    assert record.status == "Succeeded" and ExecutionRecord.load(record.path).status == "Succeeded"


# ------------------------------------------------------------------------------------------------ a killed executor

# First's job: writes its pid, then runs on while the hold file exists (as a long training would).
SLOW = """
import os, pathlib, sys, time
root, hold, pids = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
with open(pids, "a") as file:
    file.write(f"{os.getpid()}\\n")
deadline = time.time() + 120
while hold.exists() and time.time() < deadline:
    time.sleep(0.1)
out = root / "output" / "out"
out.mkdir(parents=True, exist_ok=True)
(out / "First.txt").write_text("First")
"""

# The command that runs an execution: `diagnosa run --local` as far as the executor is concerned.
RUNNER = """
import json, sys
from pathlib import Path
from diagnosa.lake import DataLake
from pipelines.executor import LocalExecutor
from pipelines.registry import LocalModelRegistry
tmp = Path(sys.argv[1])
executor = LocalExecutor(lake=DataLake.from_uri(str(tmp / "lake")), bucket=sys.argv[2], root=tmp / "executions",
                         registry=LocalModelRegistry(tmp / "registry"), python=sys.executable)
executor.start(json.loads((tmp / "definition.json").read_text()))
"""


def live(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by whoever adopted it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {seconds:g} s")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def slow_execution(tmp_path: Path) -> tuple[LocalExecutor, Path, Path]:
    """The seed data and definition.json for RUNNER: First runs SLOW while ``hold`` exists, its pid in ``pids``; the
    executor of the same workspace, for the resume."""
    executor = executor_for(tmp_path)
    hold, pids = tmp_path / "hold", tmp_path / "pids"
    hold.write_text("x")
    first = processing("First", [{"Get": "Parameters.InputUri"}], tmp_path / "fail-marker")
    first["Arguments"]["AppSpecification"]["ContainerEntrypoint"] = ["python3", script_file(tmp_path / "code", SLOW)]
    first["Arguments"]["AppSpecification"]["ContainerArguments"] = ["/opt/ml/processing", str(hold), str(pids)]
    (tmp_path / "definition.json").write_text(json.dumps(two_steps(tmp_path / "fail-marker", first)))
    return executor, hold, pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("guard", ["alive", "killed too"])
def test_a_killed_executors_job_does_not_outlive_it_into_the_next_attempt(tmp_path, guard):
    # kill -9 of `diagnosa run --local` left its job running, orphaned; --resume was accepted at once, and the orphan
    # wrote its outputs into the new attempt's folders (the new job then refused them as "another run's outputs").
    executor, hold, pids = slow_execution(tmp_path)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), BUCKET], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_for(lambda: pids.exists() and pids.read_text().strip(), 90, "job started")
        job = int(pids.read_text().split()[0])
        [folder] = (tmp_path / "executions").iterdir()
        assert job in job_processes(folder)
        if guard == "killed too":  # the executor's group killed at once (kill -9 -PGID), say: nothing stops the job
            [watcher] = [pid for pid in children(runner.pid)
                         if b"pipelines/guard.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            os.kill(watcher, signal.SIGKILL)
            wait_for(lambda: not live(watcher), 10, "guard gone")
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        _, errors = runner.communicate(timeout=30)
        record_id = folder.name
        if guard == "alive":
            # The job dies with its executor, and the record says what happened instead of "Executing" for ever.
            wait_for(lambda: not live(job), 15, "job stopped after its executor was killed")
            wait_for(lambda: ExecutionRecord.load(folder / "execution.json").status == "Stopped", 15, "record closed")
            record = ExecutionRecord.load(folder / "execution.json")
            assert "was killed" in record.data["FailureReason"] and "EndTime" in record.data
            assert record.steps["First"]["StepStatus"] == "Stopped"
            # Said where the killed command printed (the guard holds its stderr: read once the guard has ended).
            assert (f"diagnosa: execution {record_id} stopped: the executor (process {runner.pid}) was killed; its "
                    f"running jobs were stopped (job processes {job})") in errors.decode()
        else:
            assert live(job), "the orphan runs on"
            # Nothing closed the record, but a reader is not told it still executes (it showed `Executing` for ever).
            assert ExecutionRecord.load(folder / "execution.json").status == "Executing"
            # While its job runs on, it is stopping (it said Stopped while the job still wrote), naming the job.
            [listed] = list_executions(tmp_path / "executions")
            assert listed["PipelineExecutionStatus"] == "Stopping"
            assert f"job process(es) {job} still run; stop them (kill {job})" in listed["FailureReason"]
            # Resume is refused while the orphan lives, naming it and how to stop it.
            with pytest.raises(ExecutionError, match=rf"job process\(es\) {job} of an earlier attempt still run .*"
                                                     rf"kill {job}"):
                executor.resume(record_id)
            assert not (folder / "steps" / "First.attempt1").exists(), "nothing was touched"
            os.kill(job, signal.SIGKILL)
            wait_for(lambda: not live(job), 15, "orphan stopped")
            [listed] = list_executions(tmp_path / "executions")
            assert listed["PipelineExecutionStatus"] == "Stopped" and listed["Steps"]["First"]["StepStatus"] == "Stopped"
            assert (f"the executor (process {runner.pid}) ended without closing the record"
                    in listed["FailureReason"]) and f"--resume {record_id}" in listed["FailureReason"]
        hold.unlink()
        resumed = executor.resume(record_id)
        assert resumed.status == "Succeeded", resumed.data.get("FailureReason")
        assert (folder / "steps" / "First.attempt1").is_dir() and resumed.steps["Last"]["StepStatus"] == "Succeeded"
        assert pids.read_text().split()[0] == str(job) and len(pids.read_text().split()) == 2  # one job per attempt
        assert job_processes(folder) == []
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        for pid in job_processes(tmp_path / "executions"):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_an_interrupt_sent_to_the_executor_alone_stops_its_running_job(tmp_path):
    # `kill -INT <executor>` (a supervisor, a script) reaches the executor only, not its jobs as a terminal's Ctrl-C
    # does: it said "interrupted" and then waited for the job to run to its end. Now the job is stopped as
    # SageMaker stops one (SIGTERM, then SIGKILL), and the step and the execution are recorded Stopped.
    executor, hold, pids = slow_execution(tmp_path)
    grace = "import pipelines.executor as e; e.STOP_GRACE_SECONDS = 0.5\n"
    runner = subprocess.Popen([sys.executable, "-c", grace + RUNNER, str(tmp_path), BUCKET], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)  # no terminal's group: alone
    try:
        wait_for(lambda: pids.exists() and pids.read_text().strip(), 90, "job started")
        job = int(pids.read_text().split()[0])
        runner.send_signal(signal.SIGINT)
        out, _ = runner.communicate(timeout=60)  # ended without the job's 120 s
        wait_for(lambda: not live(job), 15, "job stopped")
        [folder] = (tmp_path / "executions").iterdir()
        record = ExecutionRecord.load(folder / "execution.json")
        assert record.status == "Stopped" and record.data["FailureReason"].startswith("interrupted")
        assert record.steps["First"]["StepStatus"] == "Stopped"
        assert record.steps["First"]["FailureReason"].startswith("stopped: the execution was interrupted")
        assert f"stopping the running jobs: SIGTERM to process(es) {job}" in out.decode()
        assert not (folder / "steps" / "First" / "output").exists() or not any(
            (folder / "steps" / "First").rglob("First.txt")), "the job did not run to its end"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    hold.unlink()
    resumed = executor.resume(folder.name)
    assert resumed.status == "Succeeded" and resumed.steps["Last"]["StepStatus"] == "Succeeded"


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_terminals_ctrl_c_records_the_running_step_stopped(tmp_path):
    # A terminal sends SIGINT to the whole process group: the job died of it at once and its step was recorded
    # Failed (KeyboardInterrupt), because the scheduler marked the run as stopping only at its next turn.
    executor, hold, pids = slow_execution(tmp_path)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), BUCKET], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True)  # its own group, as a terminal's job
    try:
        wait_for(lambda: pids.exists() and pids.read_text().strip(), 90, "job started")
        os.killpg(runner.pid, signal.SIGINT)
        runner.communicate(timeout=60)
        [folder] = (tmp_path / "executions").iterdir()
        record = ExecutionRecord.load(folder / "execution.json")
        assert record.status == "Stopped"
        assert record.steps["First"]["StepStatus"] == "Stopped", record.steps["First"].get("FailureReason")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    hold.unlink()
    assert executor.resume(folder.name).status == "Succeeded"


def test_two_resumes_of_one_execution_at_once_are_one_resume(tmp_path):
    # Both passed the checks (the record said Failed to each) and ran the same steps in the same folders: a job
    # found the other's half-written outputs and one resume recorded Failed while the other still ran.
    marker = tmp_path / "fail-marker"
    marker.write_text("x")
    first = executor_for(tmp_path)
    failed = first.start(two_steps(marker))
    assert failed.status == "Failed"
    marker.unlink()
    inside, release = threading.Event(), threading.Event()
    checks = first.preflight

    def slow_preflight(*args):  # the first resume, held between its checks and its reopening of the record
        inside.set()
        release.wait(30)
        return checks(*args)
    first.preflight = slow_preflight
    result: list = []
    thread = threading.Thread(target=lambda: result.append(first.resume(failed.id)))
    thread.start()
    try:
        assert inside.wait(30)
        with pytest.raises(ExecutionError, match=f"execution {failed.id} is being resumed by another process"):
            executor_for(tmp_path).resume(failed.id)
    finally:
        release.set()
        thread.join(60)
    [resumed] = result
    assert resumed.status == "Succeeded" and resumed.data["Attempts"] == 2
