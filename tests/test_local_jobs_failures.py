"""A failed local job: its reason from the file the service reads, and every process of it stopped.

* Processing: the service's ExitMessage is the first 1 KB of /opt/ml/output/message (AWS, byoc-metadata); the local
  executor read no file for processing jobs (failure_file=None) and showed only its log's last lines.
* A multi-host job one of whose hosts fails: the others were stopped with Popen.kill() on the host's own process;
  the training toolkit does not forward signals, so its child (train_job.py) ran on, orphaned, and a resume was
  refused while it lived.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from diagnosa.lake import DataLake
from pipelines.containers import Host
from pipelines.local_jobs import JobError, LakeMapping, Launch, RuntimeLimit, _wait, run_processing

ROOT = Path(__file__).resolve().parents[1]

def processing_request(name: str, script: str, inputs: list[dict] | None = None) -> dict:
    return {
        "ProcessingJobName": name,
        "RoleArn": "arn:aws:iam::123456789012:role/diagnosa-processing",
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sklearn:1.2-1",
                             "ContainerEntrypoint": ["python3", "-c", script]},
        "ProcessingInputs": inputs or [],
        "Environment": {"PYTHONPATH": str(ROOT)},
    }


def test_a_processing_jobs_exit_message_is_its_failure_reason_locally_too(tmp_path):
    # What the container leaves in /opt/ml/output/message is what DescribeProcessingJob shows (ExitMessage); the
    # local answer shows the same, though the job printed nothing.
    script = ("import os, sys; os.makedirs('/opt/ml/output', exist_ok=True); "
              "open('/opt/ml/output/message', 'w').write('manifest.json has no schema object'); sys.exit(1)")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with pytest.raises(JobError) as failed:
        run_processing(processing_request("says-why", script), tmp_path / "run", LakeMapping("lake", lake))
    assert "job says-why exited with 1" in str(failed.value)
    assert str(failed.value).endswith(": manifest.json has no schema object")


def test_the_preprocess_jobs_reason_reaches_the_local_answer(tmp_path, seed_lake):
    # A stray export under the curated prefix: refused, and the refusal is the job's failure reason.
    lake, prefix = seed_lake(tmp_path)
    (tmp_path / "stray.parquet").write_bytes(lake.get_bytes(f"{prefix}/data/part-00000.parquet"))
    lake.put_file(tmp_path / "stray.parquet", f"{prefix}/backup/old-export.parquet")
    request = processing_request("pre-stray", "")
    request["AppSpecification"] = {**request["AppSpecification"],
                                   "ContainerEntrypoint": ["python3", "-m", "processing.preprocess"],
                                   "ContainerArguments": ["--base-dir", "/opt/ml/processing", "--stage", "fit"]}
    request["ProcessingInputs"] = [{"InputName": "curated", "S3Input": {
        "S3Uri": f"s3://lake/{prefix}", "LocalPath": "/opt/ml/processing/input/curated",
        "S3DataType": "S3Prefix", "S3InputMode": "File"}}]
    with pytest.raises(JobError, match=r"job pre-stray exited with 1 .*: input \S+ holds 1 object\(s\) its manifest "
                                       r"does not list: backup/old-export.parquet"):
        run_processing(request, tmp_path / "run", LakeMapping("lake", lake))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def kill_left(*pid_files: Path) -> None:
    """The processes a test's jobs started (each wrote its pid to one of ``pid_files``), killed if still alive: a
    failed assertion leaves nothing running."""
    for path in pid_files:
        if path.exists() and alive(pid := int(path.read_text())):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_failed_host_stops_every_process_its_peers_started(tmp_path):
    # Host algo-1 runs a child and waits for it (as the training toolkit runs train_job.py, forwarding no signal);
    # host algo-2 fails. Stopping the job killed algo-1's process alone: its child trained on, orphaned.
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = (f"import subprocess, sys, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"sys.exit(subprocess.call([sys.executable, '-c', {child!r}]))")
    hosts = [Host(("algo-1", "algo-2"), name) for name in ("algo-1", "algo-2")]
    wait_for_child = (f"import os, sys, time\nwhile not os.path.exists({str(pid_file)!r}): time.sleep(0.05)\n"
                      "time.sleep(0.2); sys.exit(3)")
    launches = []
    for host, command in zip(hosts, ([sys.executable, "-c", parent], [sys.executable, "-c", wait_for_child])):
        root = tmp_path / host.current / "opt-ml"
        root.mkdir(parents=True)
        launches.append(Launch(host, command, root, dict(os.environ), tmp_path / host.current / "job.log"))
    try:
        with pytest.raises(JobError, match="job Train-x host algo-2 exited with 3"):
            _wait("Train-x", launches, [launch.command for launch in launches], None, RuntimeLimit(86_400))
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "algo-1's child outlived the stopped job"
    finally:
        kill_left(pid_file)


def background_job(tmp_path: Path, code: int) -> tuple[Path, Launch]:
    """A one-host job that starts a background process (its pid in the file returned), waits until it runs and exits
    with ``code``."""
    pid_file = tmp_path / "background.pid"
    background = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    script = (f"import os, subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {background!r}])\n"
              f"while not os.path.exists({str(pid_file)!r}): time.sleep(0.05)\nsys.exit({code})")
    host = Host(("algo-1",), "algo-1")
    return pid_file, Launch(host, [sys.executable, "-c", script], tmp_path, dict(os.environ), tmp_path / "job.log")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_failed_host_leaves_no_orphan_of_its_own(tmp_path):
    # The failing host started a background process and exited: on the service its container ends with it.
    pid_file, launch = background_job(tmp_path, 2)
    try:
        with pytest.raises(JobError, match="exited with 2"):
            _wait("Orphaning", [launch], [launch.command], None, RuntimeLimit(86_400))
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid), "the failed host's background process outlived the job"
    finally:
        kill_left(pid_file)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_succeeded_host_leaves_no_background_process_running(tmp_path, caplog):
    # A job whose script starts a background process and exits 0: on the service the container ends with the
    # script, and every process in it; locally the process ran on after the job, the execution and the run.
    pid_file, launch = background_job(tmp_path, 0)
    try:
        with caplog.at_level("WARNING", logger="pipelines.local_jobs"):
            _wait("Daemonising", [launch], [launch.command], None, RuntimeLimit(86_400))
        pid = int(pid_file.read_text())
        assert not alive(pid), "the succeeded job's background process outlived it"
        assert f"job Daemonising ended with 1 process(es) it started still running: stopped (pids {pid})" \
            in caplog.text
    finally:
        kill_left(pid_file)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_a_host_that_ends_first_stops_only_its_own_processes(tmp_path):
    # algo-1 ends at once leaving a background process; algo-2 starts one of its own, waits for algo-1's to be
    # stopped, then ends. algo-2's ran while algo-2 ran: a host's end stops its container's processes, not its peers'.
    files = {name: tmp_path / f"{name}.pid" for name in ("algo-1", "algo-2")}
    def daemon(name):
        return f"import os, time; open({str(files[name])!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    first = (f"import os, subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {daemon('algo-1')!r}])\n"
             f"while not os.path.exists({str(files['algo-1'])!r}): time.sleep(0.05)\n")
    second = (f"import os, subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {daemon('algo-2')!r}])\n"
              f"while not os.path.exists({str(files['algo-1'])!r}) or not os.path.exists({str(files['algo-2'])!r}):\n"
              "    time.sleep(0.05)\n"
              f"pid = int(open({str(files['algo-1'])!r}).read())\n"
              "deadline = time.monotonic() + 20\n"
              "while os.path.exists(f'/proc/{pid}') and open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[0]"
              " != 'Z' and time.monotonic() < deadline:\n    time.sleep(0.05)\n"
              f"mine = int(open({str(files['algo-2'])!r}).read())\n"
              "sys.exit(0 if os.path.exists(f'/proc/{mine}') and time.monotonic() < deadline else 4)\n")
    hosts = [Host(("algo-1", "algo-2"), name) for name in ("algo-1", "algo-2")]
    launches = []
    for host, script in zip(hosts, (first, second)):
        root = tmp_path / host.current / "opt-ml"
        root.mkdir(parents=True)
        launches.append(Launch(host, [sys.executable, "-c", script], root, dict(os.environ),
                               tmp_path / host.current / "job.log"))
    try:
        # algo-2 exits 4 otherwise
        _wait("Two-hosts", launches, [launch.command for launch in launches], None, RuntimeLimit(86_400))
        for name, path in files.items():
            assert not alive(int(path.read_text())), f"{name}'s background process outlived the job"
    finally:
        kill_left(*files.values())
