"""Live progress (diagnosa/commands/progress.py): the board's steps, times and phases; and the commands on a
real terminal (a pty as stderr) against the same commands piped and with --quiet, whose stdout is unchanged."""
from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.console import Console

from diagnosa.commands.progress import Board, follow_steps
from pipelines.executor import StepEvent

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def text_of(board: Board) -> str:
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(board.render())
    return out.getvalue()


# ------------------------------------------------------------------------------------------ the board


def test_phases_one_after_another_with_their_times_and_details():
    clock = Clock()
    board = Board("data generate", enabled=False, clock=clock)
    board.phase("loading the phenotype ontology")
    clock.now += 1.5
    board.phase("generating patients", "20,000")
    clock.now += 2.25
    lines = text_of(board).splitlines()
    assert lines[0].startswith("data generate  4 s · 1 running")
    assert re.match(r"✓ loading the phenotype ontology\s+1\.5 s\s*$", lines[1]), lines[1]
    assert re.match(r"\S generating patients\s+2\.2 s 20,000\s*$", lines[2]), lines[2]  # a spinner while it runs
    board.phase("generating patients", "done sampling")  # the running phase again: only its detail changes
    assert len(text_of(board).splitlines()) == 3 and "done sampling" in text_of(board)
    board.__exit__(None, None, None)  # the command ended: the last phase is done, with its own time
    assert re.search(r"✓ generating patients\s+2\.2 s", text_of(board)) and "running" not in text_of(board)


def test_a_command_that_fails_marks_its_running_phase_failed():
    clock = Clock()
    board = Board("data ingest", enabled=False, clock=clock)
    with pytest.raises(ValueError), board:
        board.phase("validating lab results")
        clock.now += 3
        raise ValueError("bad row")
    assert re.search(r"✗ validating lab results\s+3\.0 s", text_of(board))
    with pytest.raises(ValueError, match="outcome must be one of"):
        board.end("validating lab results", "ok")


def test_pipeline_steps_show_their_job_logs_last_line_while_they_run(tmp_path):
    clock = Clock()
    board = Board("run --local", enabled=False, clock=clock)
    follow = follow_steps(board)
    log = tmp_path / "job.log"
    log.write_text("Installing dependencies from requirements.txt\n")
    follow(StepEvent("Train-xgboost", "Executing", log))
    follow(StepEvent("Gate", "Executing", None))
    assert "Installing dependencies from requirements.txt" in text_of(board)
    log.write_text("Installing dependencies from requirements.txt\nfitting xgboost: round 40 of 200\n\n")
    clock.now += 12
    text = text_of(board)
    assert re.search(r"Train-xgboost\s+12\.0 s fitting xgboost: round 40 of 200", text) and "2 running" in text
    follow(StepEvent("Train-xgboost", "Succeeded"))
    follow(StepEvent("Gate", "Failed", note="recall 0.2 < 0.8"))
    follow(StepEvent("Preprocess", "Executing", tmp_path / "none.log"))  # no log yet: no detail, no error
    follow(StepEvent("Preprocess", "Reused", note="reused from 20261201T101010Z-abc123 (cache)"))
    text = text_of(board)
    assert re.search(r"✓ Train-xgboost\s+12\.0 s\s*\n", text)
    assert re.search(r"✗ Gate\s+12\.0 s recall 0\.2 < 0\.8", text)
    assert re.search(r"↺ Preprocess\s+0\.0 s reused from 20261201T101010Z-abc123", text) and "running" not in text


def test_the_board_draws_only_on_a_terminal_and_not_when_quiet(capsys):
    primary, secondary = pty.openpty()
    terminal = os.fdopen(secondary, "w", encoding="utf-8")
    try:
        assert Board.for_terminal("x", quiet=False, stream=terminal).enabled
        assert not Board.for_terminal("x", quiet=True, stream=terminal).enabled
        assert not Board.for_terminal("x", quiet=False, stream=io.StringIO()).enabled
    finally:
        terminal.close()
        os.close(primary)
    drawn = io.StringIO()
    with Board("drawn", enabled=True, stream=drawn) as board:
        board.phase("first phase")
    assert "first phase" in drawn.getvalue() and ANSI.search(drawn.getvalue())  # drawn in place, with escapes
    silent = io.StringIO()
    with Board("silent", enabled=False, stream=silent) as board:
        board.phase("first phase")
        board.echo("a result line")
    assert silent.getvalue() == "" and capsys.readouterr().out == "a result line\n"


def test_a_line_printed_on_the_boards_terminal_goes_above_the_board(monkeypatch):
    import threading

    primary, secondary = pty.openpty()
    terminal_err, terminal_out = os.fdopen(os.dup(secondary), "w"), os.fdopen(secondary, "w")
    monkeypatch.setattr(sys, "stdout", terminal_out)  # stdout and stderr on one terminal, as in a shell
    shown = bytearray()
    try:
        with Board("run --local", enabled=True, stream=terminal_err, transient=True) as board:
            board.start("Train-xgboost", "fitting")
            board.refresh()
            # From another thread, as the executor's step threads print, while rich's refresh thread draws.
            printer = threading.Thread(target=board.echo, args=("[   1.0s] Train-xgboost started",))
            printer.start()
            printer.join(10)
            assert not printer.is_alive(), "echo did not return: the board and the line deadlocked"
            board.refresh()
        terminal_out.flush()
        while select.select([primary], [], [], 0.5)[0]:
            shown.extend(os.read(primary, 65536))
    finally:
        terminal_err.close()
        terminal_out.close()
        os.close(primary)
    text = ANSI.sub("", shown.decode())
    line = text.index("[   1.0s] Train-xgboost started")
    assert text.index("fitting") < line < text.rindex("fitting")  # the board before the line, and again after it
    assert text[line - 1] in "\r\n"  # on a line of its own: not glued to the board's last line ("...fitting[ 1.0s]")
    assert text.count("[   1.0s] Train-xgboost started") == 1


# ------------------------------------------------------------------------------------------ the commands on a pty


def run_command(argv: list[str], *, terminal: bool) -> tuple[int, str, str]:
    """``python -m diagnosa ARGV``: stdout to a pipe; stderr to a 120-column pty when ``terminal``, else a pipe.
    Returns the exit code, stdout and what stderr showed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_WAIT_POLICY": "PASSIVE", "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    if not terminal:
        run = subprocess.run([sys.executable, "-m", "diagnosa", *argv], capture_output=True, text=True, env=env,
                             timeout=600, stdin=subprocess.DEVNULL)
        return run.returncode, run.stdout, run.stderr
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with open(os.devnull) as devnull:
        process = subprocess.Popen([sys.executable, "-m", "diagnosa", *argv], stdout=subprocess.PIPE, stderr=secondary,
                                   stdin=devnull, env=env)
    os.close(secondary)
    shown, out = bytearray(), bytearray()
    streams = {primary: shown, process.stdout.fileno(): out}
    while streams:  # read both as they come, so neither the pty nor the pipe fills up and blocks the command
        ready, _, _ = select.select(list(streams), [], [], 60)
        assert ready, "the command printed nothing for 60 s"
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other end closed (EIO): the command is gone
                chunk = b""
            if chunk:
                streams[fd].extend(chunk)
            else:
                del streams[fd]
    os.close(primary)
    process.stdout.close()
    return process.wait(timeout=60), out.decode(), shown.decode(errors="replace")


@pytest.fixture(scope="module")
def data_runs(tmp_path_factory):
    """generate + ingest of the same small cohort three times: on a terminal, piped, and on a terminal with --quiet."""
    runs = {}
    for how in ("terminal", "piped", "quiet"):
        lake = tmp_path_factory.mktemp(how) / "lake"
        quiet = ["--quiet"] if how == "quiet" else []
        generate = run_command(["--lake", str(lake), "data", "generate", "--patients", "1000", "--seed", "3", *quiet],
                               terminal=how != "piped")
        ingest = run_command(["--lake", str(lake), "data", "ingest", *quiet], terminal=how != "piped")
        runs[how] = {"lake": str(lake), "generate": generate, "ingest": ingest}
    return runs


def same_output(runs, command: str) -> set[str]:
    """The commands' stdout with each run's own lake path taken out: one text if stdout did not change."""
    return {runs[how][command][1].replace(runs[how]["lake"], "LAKE") for how in runs}


@pytest.mark.parametrize("command, phases", [
    ("generate", ["loading the phenotype ontology", "building the orphan-disease catalogue", "generating patients",
                  "writing the raw batch"]),
    ("ingest", ["reading the raw batch", "loading the phenotype ontology", "validating clinical records",
                "validating lab results", "writing the curated version"]),
])
def test_data_commands_show_their_phases_on_a_terminal_only(data_runs, command, phases):
    for how in data_runs:
        assert data_runs[how][command][0] == 0, data_runs[how][command]
    shown = ANSI.sub("", data_runs["terminal"][command][2])
    for phase in phases:
        assert re.search(rf"✓ {phase}\s+\d+\.\d s", shown), (phase, shown[-3000:])
    assert f"data {command}" in shown
    for how in ("piped", "quiet"):
        stderr = data_runs[how][command][2]
        assert not any(phase in stderr for phase in phases) and not ANSI.search(stderr), stderr[-2000:]
    assert len(same_output(data_runs, command)) == 1  # stdout is the same, board or not
    assert not ANSI.search(data_runs["terminal"][command][1])
    if command == "ingest":
        assert re.search(r"validating clinical records\s+\d+\.\d s 1,000 of 1,000", shown)
        assert "accepted" in data_runs["terminal"]["ingest"][1]


def test_a_drifted_batch_shows_its_phases_too(tmp_path):
    runs = {how: run_command(["--lake", str(tmp_path / how), "data", "generate", "--patients", "1000", "--seed", "3",
                              "--drift", "symptoms", "--drift-strength", "0.5"], terminal=how == "terminal")
            for how in ("terminal", "piped")}
    for run in runs.values():
        assert run[0] == 0, run
    shown = ANSI.sub("", runs["terminal"][2])
    for phase in ("generating patients", "applying drift", "writing the raw batch"):
        assert re.search(rf"✓ {phase}\s+\d+\.\d s", shown), (phase, shown[-3000:])
    assert "symptoms, strength 0.5" in shown
    assert "applying drift" not in runs["piped"][2]
    assert len({runs[how][1].replace(str(tmp_path / how), "LAKE") for how in runs}) == 1  # stdout is the same
    assert "generated drifted batch cohort-n1000-s3-drift-symptoms" in runs["piped"][1]


# The executor tests' shape, on the CLI: a processing step whose job writes a phase to its log, then waits.
STEP_SCRIPT = ("import time; print('phase: warming up', flush=True); time.sleep(1.5); "
               "print('phase: fitting', flush=True); time.sleep(1.5)")


def small_definition(path: Path) -> Path:
    step = {"Name": "Slow", "Type": "Processing", "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}},
        "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", "-c", STEP_SCRIPT]},
        "RoleArn": "arn:aws:iam::000000000000:role/test"}}
    path.write_text(json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": [step]}))
    return path


def test_run_local_shows_the_running_steps_phase_on_a_terminal_only(tmp_path):
    definition = small_definition(tmp_path / "definition.json")
    runs = {}
    for how in ("terminal", "piped", "quiet"):
        argv = ["--workspace", str(tmp_path / how), "run", "--local", "--definition", str(definition), "--no-cache"]
        runs[how] = run_command([*argv, *(["--quiet"] if how == "quiet" else [])], terminal=how != "piped")
        assert runs[how][0] == 0, runs[how]
    shown = ANSI.sub("", runs["terminal"][2])
    assert re.search(r"Slow\s+\d+\.\d s phase: warming up", shown) and re.search(r"Slow\s+\d+\.\d s phase: fitting", shown)
    assert "run --local" in shown
    for how in ("piped", "quiet"):
        assert "phase:" not in runs[how][2] and not ANSI.search(runs[how][2]), runs[how][2]
    # stdout: the same lines (ids and times aside), with no trace of the board.
    lines = {how: re.sub(r"\b\d{10}[a-z0-9]{2}\b|\d+\.\d s|\[ *\d+\.\ds\]|/\S+", "…", runs[how][1]) for how in runs}
    assert len(set(lines.values())) == 1, lines
    assert "Slow" in runs["terminal"][1] and "succeeded" in runs["terminal"][1]
    assert not ANSI.search(runs["terminal"][1])
