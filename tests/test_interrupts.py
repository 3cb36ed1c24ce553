"""Ctrl-C of the ``diagnosa`` command, as a terminal sends it: real processes, real SIGINTs.

A second Ctrl-C of a local run stops its jobs at once (a first one stops them gracefully: SIGTERM after
STOP_GRACE_SECONDS, SIGKILL KILL_GRACE_SECONDS later), and a Ctrl-C as the command starts (importing takes a second
or two) is one line and status 130, as one in a command is.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_executor_interrupts import live, wait_for

from diagnosa.lake import DataLake
from diagnosa.services import LOCAL_BUCKET
from pipelines.executor import ExecutionRecord, job_processes

ROOT = Path(__file__).resolve().parents[1]
LINUX = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
INTERRUPTED = 128 + signal.SIGINT

# The step's job: deaf to SIGINT and SIGTERM (as a training that saves a checkpoint first may be, for a while), with a
# process of its own; both pids in a file, then it runs for minutes.
STUBBORN = """
import os, pathlib, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # inherits the ignored signals
pathlib.Path(sys.argv[1]).write_text(f"{os.getpid()} {child.pid}")
time.sleep(300)
"""

# `diagnosa` itself (its main), with the grace before SIGTERM and SIGKILL longer than the test waits: only the second
# Ctrl-C can stop the job in time.
PATIENT_CLI = ("import sys, pipelines.executor as e\n"
               "e.STOP_GRACE_SECONDS = e.KILL_GRACE_SECONDS = 600.0\n"
               "from diagnosa.cli import main\n"
               "sys.exit(main())\n")


def stubborn_definition(tmp_path: Path, pids: Path) -> Path:
    script = tmp_path / "code" / "stubborn.py"
    script.parent.mkdir()
    script.write_text(STUBBORN, encoding="utf-8")
    step = {"Name": "Stubborn", "Type": "Processing", "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                  "VolumeSizeInGB": 1}},
        "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", str(script)],
                             "ContainerArguments": [str(pids)]},
        "RoleArn": "arn:aws:iam::000000000000:role/test",
        "ProcessingInputs": [{"InputName": "seed", "S3Input": {
            "S3Uri": f"s3://{LOCAL_BUCKET}/curated/seed", "LocalPath": "/opt/ml/processing/input/seed",
            "S3DataType": "S3Prefix", "S3InputMode": "File"}}],
    }}
    path = tmp_path / "definition.json"
    path.write_text(json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": [step]}), encoding="utf-8")
    return path


@LINUX
def test_a_second_ctrl_c_stops_the_running_jobs_at_once(tmp_path):
    # After a Ctrl-C, a job that outlived it got SIGTERM 5 s later and SIGKILL 30 s after that, and a second Ctrl-C
    # did nothing: the terminal was held for 35 s. Now the second one kills the jobs, and the run still ends as
    # an interrupted one (the step and the execution Stopped, status 130, no traceback).
    workspace, pids, out = tmp_path / "ws", tmp_path / "pids", tmp_path / "out.txt"
    DataLake.from_uri(str(workspace / "lake")).put_bytes("curated/seed/seed.txt", b"seed")
    definition = stubborn_definition(tmp_path, pids)
    with open(out, "wb") as stdout:
        runner = subprocess.Popen([sys.executable, "-c", PATIENT_CLI, "--workspace", str(workspace), "run", "--local",
                                   "--definition", str(definition)], cwd=tmp_path, stdout=stdout,
                                  stderr=subprocess.PIPE, start_new_session=True,  # its own group, as a terminal's job
                                  env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2, 90, "job started")
        job, child = map(int, pids.read_text().split())
        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C: the executor, and the job, which ignores it
        wait_for(lambda: "interrupted: stopping the running steps" in out.read_text(), 30, "first Ctrl-C said")
        assert "Ctrl-C again to stop them at once" in out.read_text()
        time.sleep(1.0)  # a few turns of the scheduler: the first Ctrl-C alone stops nothing yet
        assert live(job) and live(child) and runner.poll() is None
        os.killpg(runner.pid, signal.SIGINT)  # the second Ctrl-C
        _, errors = runner.communicate(timeout=30)  # not STOP_GRACE_SECONDS (600 s here) later
        said = out.read_text()
        assert runner.returncode == INTERRUPTED, (said, errors.decode())
        assert b"Traceback" not in errors, errors.decode()
        wait_for(lambda: not live(job) and not live(child), 10, "job processes gone")
        [killed] = [line for line in said.splitlines() if "stopping the running jobs" in line]
        assert killed.startswith("stopping the running jobs: SIGKILL to process(es) ")
        assert {job, child} <= set(map(int, killed.rsplit(")", 1)[1].split())), said
        assert "SIGTERM" not in said
        [folder] = (workspace / "executions").iterdir()
        assert job_processes(folder) == []
        record = ExecutionRecord.load(folder / "execution.json")
        assert record.status == "Stopped" and record.data["FailureReason"].startswith("interrupted")
        assert record.steps["Stubborn"]["StepStatus"] == "Stopped", record.steps["Stubborn"]
        assert record.steps["Stubborn"]["FailureReason"].startswith("stopped: the execution was interrupted")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        for pid in job_processes(workspace / "executions") if (workspace / "executions").is_dir() else []:
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ as it starts

SCRIPT = Path(sys.executable).with_name("diagnosa")  # the console script (setup.py: diagnosa=diagnosa.__main__:main)

# Runs the command as its console script or ``python -m`` does (runpy), with a real SIGINT sent to itself the moment
# a given module's import starts. Sent from outside at a library's mapping instead, the signal raced the start: a
# start takes the same time each try, and on CI's 2 cores 20 tries of 20 landed after the help was printed.
CTRL_C_AT_IMPORT = r"""
import importlib.abc, os, runpy, signal, sys
module, how = sys.argv[1:3]
sys.argv[:] = sys.argv[3:]  # the command's own: its program, then its arguments

class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)  # a terminal's Ctrl-C, as this import starts
        return None

sys.meta_path.insert(0, CtrlC())
if how == "script":
    runpy.run_path(sys.argv[0], run_name="__main__")
else:
    runpy.run_module("diagnosa", run_name="__main__", alter_sys=True)
"""


@LINUX
@pytest.mark.parametrize("command, module", [
    ("script", "numpy"),  # diagnosa/cli.py's own imports (pandas, through the command helpers)
    ("script", "botocore"),  # main's, before the command runs (its error classes)
    ("python -m", "numpy"),
])
def test_ctrl_c_as_the_command_starts_is_one_line_and_status_130(tmp_path, command, module):
    # Importing takes a second or two before main() runs, and a Ctrl-C meanwhile printed Python's traceback.
    if command == "script" and not SCRIPT.is_file():
        pytest.skip(f"no console script {SCRIPT}: the package is not installed in this environment")
    target = str(SCRIPT) if command == "script" else "diagnosa"
    process = subprocess.run([sys.executable, "-c", CTRL_C_AT_IMPORT, module, command, target,
                              "--workspace", str(tmp_path / "ws"), "--help"], cwd=tmp_path, capture_output=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    errors = process.stderr
    assert b"Traceback" not in errors, errors.decode()
    assert (process.returncode, errors.decode(), process.stdout) == (INTERRUPTED, "diagnosa: interrupted\n", b"")
