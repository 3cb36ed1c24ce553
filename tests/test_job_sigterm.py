"""Processing jobs stopped by SIGTERM mid-run, as SageMaker stops them (StopProcessingJob, a stopped pipeline
execution: SIGTERM, SIGKILL later) and the local executor does (pipelines/executor.py).

Each job runs as the container runs it, ``python -m processing.<job> --base-dir ...``, in a process of its own. A
``sitecustomize`` on its path pauses it at a point mid-run, after some outputs are written and before the last one
(announced by a file the test polls for, no sleep), and the test sends SIGTERM there. Before: Python's default action
ended the process at once (status -15): no reason for the service, and outputs that looked like a run's (Select's
champion without its selection.json, Evaluate's baselines and report, Preprocess's transformer, split and parts).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_processing_failures
from test_preprocess_inputs import curated
from test_processing_failures import container, evaluate_root, exit_message
from test_select import saved_model, tar_model

evaluation_root = test_processing_failures.evaluation_root  # the fixture: a trained model and a test split

ROOT = Path(__file__).resolve().parents[1]
WAIT_SECONDS = 300  # for the job to reach the pause (Preprocess fits a cohort of 4,000 patients first)

# Pauses the job once a path named $PAUSE_AT is about to be written (diagnosa.files.write_text_atomic: Select's
# selection.json, Evaluate's evaluation.json, both their last output) or has just been written as a Parquet file
# (Preprocess's parts): announces it in $PAUSE_READY and sleeps, as a long step would, until a signal ends it.
HOOK = '''
import os, time
from pathlib import Path

_AT, _READY = os.environ["PAUSE_AT"], Path(os.environ["PAUSE_READY"])


def _pause(path):
    if isinstance(path, (str, os.PathLike)) and _AT in Path(path).as_posix() and not _READY.exists():
        _READY.write_text(str(os.getpid()))
        time.sleep(600)


import diagnosa.files as _files

_write_text_atomic = _files.write_text_atomic


def _text(target, text):
    _pause(target)
    return _write_text_atomic(target, text)


_files.write_text_atomic = _text

if os.environ.get("PAUSE_PARQUET"):
    import pyarrow.parquet as _pq

    _write_table = _pq.write_table

    def _table(table, where, *args, **kwargs):
        _write_table(table, where, *args, **kwargs)
        _pause(where)

    _pq.write_table = _table
'''


def stopped_mid_run(tmp_path: Path, module: str, base: Path, pause_at: str, *arguments: str,
                    parquet: bool = False) -> int:
    """Run ``python -m module`` on ``base``, SIGTERM it once it pauses at ``pause_at``; its exit status."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK, encoding="utf-8")
    ready = tmp_path / "paused"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]), "PAUSE_AT": pause_at,
           "PAUSE_READY": str(ready), **({"PAUSE_PARQUET": "1"} if parquet else {})}
    log = tmp_path / "job.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", module, "--base-dir", str(base), *arguments], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while not ready.exists():
                if process.poll() is not None:
                    pytest.fail(f"{module} ended ({process.returncode}) before the pause:\n"
                                + log.read_text(errors="replace")[-3000:])
                if time.monotonic() > deadline:
                    pytest.fail(f"{module} did not reach the pause in {WAIT_SECONDS} s")
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)  # SageMaker's SIGKILL comes 30 s after; the job ends well before
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code


def assert_stopped(base: Path, code: int) -> None:
    assert code != 0, "a stopped job must not look like a success"
    reason = exit_message(base)
    assert reason.startswith("stopped by SIGTERM"), reason
    left = sorted(p.relative_to(base).as_posix() for p in (base / "output").rglob("*") if not p.is_dir())
    assert left == ["output/failure"], f"outputs of a stopped run left behind: {left}"


def test_select_stopped_before_its_selection_json_leaves_no_champion(tmp_path):
    base = container(tmp_path)
    for name, macro in (("logreg", 0.7), ("xgb", 0.8)):
        tar_model(saved_model(tmp_path / "models" / name, macro, 0.5),
                  base / "input" / "candidates" / name / "model.tar.gz")
    code = stopped_mid_run(tmp_path, "processing.select", base, "output/selection/selection.json")
    assert_stopped(base, code)
    assert sorted(p.name for p in base.iterdir()) == ["input", "output"]  # no scratch folder


def test_evaluate_stopped_before_its_evaluation_json_leaves_no_baseline_or_report(tmp_path, evaluation_root):
    model_dir, test = evaluation_root
    base = evaluate_root(tmp_path, model_dir, test)
    code = stopped_mid_run(tmp_path, "processing.evaluate", base, "output/evaluation/evaluation.json",
                           "--orphan-threshold", "0.1")
    assert_stopped(base, code)


def test_preprocess_stopped_after_its_first_test_part_leaves_no_fit_or_part(tmp_path, curated_cohort):
    base = curated(tmp_path, curated_cohort, parts=3)
    code = stopped_mid_run(tmp_path, "processing.preprocess", base, "output/test/", parquet=True)
    assert_stopped(base, code)
    assert (base / "input" / "curated" / "manifest.json").is_file()  # its inputs stay
