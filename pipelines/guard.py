"""A local run's guard: a small process that outlives a killed executor (SIGKILL, the OOM killer) to stop its jobs and
close its record. Left alone, the jobs ran on, orphaned, and wrote into a resumed attempt's folders.

The executor starts it as a script (``python -I -S pipelines/guard.py <execution folder> <executor pid>``) with a pipe
on its stdin and writes "done" once its steps have ended; the pipe closing without it means the executor was killed.
The standard library only (and diagnosa.files, which is too): importing the executor takes seconds, and the guard
must be up before the first job.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Collection

if __name__ == "__main__":  # run as a script (python -I -S): the project's own stdlib-only helpers, by path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diagnosa.files import write_json_atomic  # noqa: E402  (the standard library only)

# In the environment of every job process (inherited by what it starts): the execution folder. It tells an
# execution's jobs from every other process, for the guard and for resume (pipelines/local_jobs.py starts them).
EXECUTION_MARKER = "DIAGNOSA_EXECUTION"
KILL_SECONDS = 30  # how long the guard keeps killing what the jobs start meanwhile


def marked_processes(marks: Collection[bytes]) -> list[int]:
    """Live processes whose environment holds one of ``marks`` (``NAME=value``), from /proc; none where there is no
    /proc."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:  # a zombie's is empty: it runs nothing
                if not set(marks).isdisjoint(environ.read().split(b"\0")):
                    found.append(int(entry))
        except OSError:  # ended meanwhile, or another user's
            continue
    return sorted(found)


def kill_marked(marks: Collection[bytes], seconds: float) -> set[int]:
    """SIGKILL every process carrying one of ``marks`` until none is left (one may start another meanwhile) or
    ``seconds`` have passed; the ones killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = marked_processes(marks)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:  # ended meanwhile
                continue
        time.sleep(0.05)
    return killed


def _execution_mark(folder: Path | str) -> bytes:
    return f"{EXECUTION_MARKER}={folder}".encode()


def job_processes(folder: Path | str) -> list[int]:
    """Live processes of an execution's jobs, of any attempt (their environment names its folder: EXECUTION_MARKER)."""
    return marked_processes({_execution_mark(folder)})


def signal_jobs(folder: Path | str, signum: int) -> list[int]:
    """Send ``signum`` to every live process of an execution's jobs (job_processes); the ones it reached. How the
    executor stops an interrupted run's jobs, and how this guard kills a killed executor's."""
    return signal_marked({_execution_mark(folder)}, signum)


def signal_marked(marks: Collection[bytes], signum: int) -> list[int]:
    """Send ``signum`` to every live process carrying one of ``marks``; the ones it reached."""
    sent = []
    for pid in marked_processes(marks):
        try:
            os.kill(pid, signum)
            sent.append(pid)
        except OSError:  # ended meanwhile
            continue
    return sent


def guard(folder: str, executor: int) -> None:
    """Wait for the executor's "done" on stdin; without it (the executor killed), say Stopped in the record, then kill
    the jobs. The record first, so that a resume meanwhile waits for the jobs (it refuses while they live), not the
    reverse."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the executor's to handle
    if sys.stdin.buffer.read() == b"done":
        return
    execution_id = os.path.basename(folder)
    reason = f"the executor (process {executor}) was killed; its running jobs were stopped"
    path = os.path.join(folder, "execution.json")
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError, RecursionError):  # RecursionError: nested deeper than Python's recursion limit
        data = {}
    if not isinstance(data, dict):  # a damaged record (a JSON list): none to close, and the jobs are killed still
        data = {}
    closed = data.get("PipelineExecutionStatus") == "Executing" and data.get("ExecutorPid") == executor
    if closed:  # not when the executor had closed it already, or a resume has taken the execution over
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        steps = data.get("Steps")
        for step in steps.values() if isinstance(steps, dict) else ():
            if isinstance(step, dict) and step.get("StepStatus") == "Executing":
                step.update(StepStatus="Stopped", EndTime=now, FailureReason=reason)
        data.update(PipelineExecutionStatus="Stopped", FailureReason=reason, EndTime=now, LastModifiedTime=now)
        write_json_atomic(path, data, indent=2)
    killed = kill_marked({_execution_mark(folder)}, KILL_SECONDS)
    if closed or killed:  # where the killed command printed: its terminal, or its log
        stopped = f" (job processes {' '.join(map(str, sorted(killed)))})" if killed else ""
        print(f"diagnosa: execution {execution_id} stopped: the executor (process {executor}) was killed; its running "
              f"jobs were stopped{stopped}: resume with `diagnosa run --local --resume {execution_id}`",
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    guard(sys.argv[1], int(sys.argv[2]))
