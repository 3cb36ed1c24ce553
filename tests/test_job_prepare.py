"""`diagnosa job prepare`: the by-hand block of docs/pipeline.md run as written against a real local
execution, its outputs compared with the executor's; and every bad input refused with exit status 2.

The block is read from the docs (the fence under ``<!-- docs-test: covered-by tests/test_job_prepare.py -->``),
so a change to the doc or to what the command prints fails here. Each block line runs in its own
``bash -c`` in a folder holding ``.diagnosa/`` (as the doc says), with ``diagnosa`` and ``python`` meaning
this interpreter and this checkout, and the thread variables the command's ``export`` line names (the
doc tells the reader to run it: without it a model's last digits may differ).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from diagnosa.cli import main as cli
from diagnosa.services import LOCAL_BUCKET, local_definition
from pipelines.executor import open_local
from pipelines.job_prepare import MARKER

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "pipeline.md"
MARK = "<!-- docs-test: covered-by tests/test_job_prepare.py -->"
# Recorded durations: the one thing a rerun cannot reproduce.
TIMINGS = {"train_seconds", "search_seconds", "timings_seconds"}


def documented_block() -> list[str]:
    """The command lines of the fenced block right under the marker in docs/pipeline.md."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    assert lines.count(MARK) == 1, f"{DOC} must hold exactly one {MARK!r}"
    start = lines.index(MARK)
    assert lines[start + 1].startswith("```"), "the marker must sit directly above the block's fence"
    end = lines.index("```", start + 2)
    return [line for line in lines[start + 2:end] if line.strip()]


def shell_env(folder: Path, threads: dict[str, str] | None = None) -> dict[str, str]:
    """``diagnosa`` and ``python`` on PATH as this interpreter running this checkout."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir(exist_ok=True)
    for name, tail in (("python", ""), ("diagnosa", " -m diagnosa")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{tail} "$@"\n', encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO),
            **(threads or {})}


def sh(line: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=folder, env=env, capture_output=True, text=True, timeout=900)


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


def same_files(mine: Path, theirs: Path) -> list[str]:
    """Names of the files that differ between two output folders (JSON compared without timings)."""
    names = sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(mine).as_posix() for p in mine.rglob("*") if p.is_file())
    differ = []
    for name in names:
        a, b = (mine / name).read_bytes(), (theirs / name).read_bytes()
        if name.endswith(".json"):
            a, b = without_timings(json.loads(a)), without_timings(json.loads(b))
        if a != b:
            differ.append(name)
    return differ


# ------------------------------------------------------------------------------------------------ the documented block

@pytest.fixture(scope="module")
def execution(tmp_path_factory, seed_lake):
    """A local execution with the default parameters (one candidate: logistic regression), in ``<folder>/.diagnosa``."""
    folder = tmp_path_factory.mktemp("by-hand")
    workspace = folder / ".diagnosa"
    workspace.mkdir()
    lake, prefix = seed_lake(workspace)
    executor = open_local(workspace, lake, LOCAL_BUCKET, progress=lambda line: None, use_cache=False)
    record = executor.start(local_definition(lake, ("logistic_regression",)),
                            {"InputDataUri": f"s3://{LOCAL_BUCKET}/{prefix}"})
    for step in ("Preprocess", "Transform", "Train-logistic_regression", "Select", "Evaluate"):
        assert record.steps[step]["StepStatus"] == "Succeeded", record.data.get("FailureReason")
    return {"folder": folder, "workspace": workspace, "lake": lake, "record": record}


def executor_output(execution, step: str, output: str) -> Path:
    """The folder (or model.tar.gz) the execution wrote for a step's output, in the lake."""
    properties = execution["record"].steps[step]["Properties"]
    uri = (properties["ModelArtifacts"]["S3ModelArtifacts"] if output == "model"
           else properties["ProcessingOutputConfig"]["Outputs"][output]["S3Output"]["S3Uri"])
    return Path(execution["lake"].url(uri.removeprefix(f"s3://{LOCAL_BUCKET}/")).removeprefix("file://"))


@pytest.mark.slow
def test_the_documented_block_runs_as_written_and_reproduces_the_execution(execution, tmp_path):
    folder = execution["folder"]
    block = documented_block()
    threads = execution["record"].steps["Preprocess"]["JobEnvironment"]
    assert threads and set(threads) == {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    env = shell_env(folder, threads)
    prepared = [i for i, line in enumerate(block) if line.startswith("diagnosa job prepare ")]
    assert len(prepared) == 5
    for index, line in enumerate(block):
        done = sh(line, folder, env)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        if index in prepared:  # the lines the doc gives after it are the ones it prints (doc and command cannot drift)
            printed = done.stdout.splitlines()
            following = block[index + 1:next((i for i in prepared if i > index), len(block))]
            for expected in following:
                assert expected in printed, f"`{line}` no longer prints the documented\n{expected}\nbut\n{done.stdout}"
            export = "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in threads.items())
            assert export in printed  # the thread budget the shell here runs with, as the docs tell the reader

    jobs = folder / ".diagnosa" / "jobs"
    for output in ("transformer", "split", "baseline"):
        assert same_files(jobs / "preprocess" / "processing" / "output" / output,
                          executor_output(execution, "Preprocess", output)) == []
    for output in ("train", "validation", "test"):
        assert same_files(jobs / "transform" / "processing" / "output" / output,
                          executor_output(execution, "Transform", output)) == []
    unpacked = tmp_path / "executor-model"
    with tarfile.open(executor_output(execution, "Train-logistic_regression", "model")) as archive:
        archive.extractall(unpacked, filter="data")
    assert same_files(jobs / "train" / "model", unpacked) == []  # model.joblib byte for byte, metadata but timings
    for output in ("champion", "selection"):
        assert same_files(jobs / "select" / "processing" / "output" / output,
                          executor_output(execution, "Select", output)) == []
    mine = jobs / "evaluate" / "processing" / "output" / "evaluation"
    theirs = executor_output(execution, "Evaluate", "evaluation")
    assert same_files(mine, theirs) == []
    assert json.loads((mine / "evaluation.json").read_text())["diagnosa"]["n"] > 0


def documented_modules() -> list[str]:
    """Every ``python -m <module>`` of the repository's own code that README.md and docs/ mention."""
    texts = [(REPO / "README.md").read_text(encoding="utf-8")]
    texts += [path.read_text(encoding="utf-8") for path in sorted((REPO / "docs").glob("*.md"))]
    found = {m for text in texts for m in re.findall(r"python -m ([A-Za-z_][\w.]*)", text)}
    return sorted(m for m in found if (REPO / m.split(".")[0]).is_dir())


@pytest.mark.parametrize("module", documented_modules())
def test_every_documented_entry_point_answers_help(module, tmp_path):
    done = sh(f"python -m {module} --help", tmp_path, shell_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("usage:") and "error" not in done.stderr.lower()


def test_the_docs_mention_the_four_job_entry_points():
    assert {"processing.preprocess", "training.train", "processing.select", "processing.evaluate"} <= \
        set(documented_modules())


def test_training_help_lists_every_family_and_its_hyperparameters():
    from training.models import FAMILIES, PARAMS
    from training.train import SETTING_NAMES, help_text, main

    text = help_text()
    for family in FAMILIES:
        assert f"  {family}:" in text
        for name in PARAMS[family]:
            assert re.search(rf"^    {name} ", text, re.MULTILINE), (family, name)
    for name in (*SETTING_NAMES, "SM_INPUT_DIR", "SM_MODEL_DIR", "SM_OUTPUT_DIR", "SM_CHANNEL_TRAIN"):
        assert name in text
    assert main(["--help"]) == 0 and main(["-h"]) == 0
    # only a lone flag: in a job's NAME VALUE pairs a "-h" is a value or a name without one, and fails the job
    assert main(["--family", "xgboost", "-h"]) == 1


# ------------------------------------------------------------------------------------------------ bad input

@pytest.fixture(scope="module")
def failed(tmp_path_factory, seed_lake):
    """A real execution whose Preprocess failed (its curated data.parquet is not Parquet): later steps never ran."""
    workspace = tmp_path_factory.mktemp("failed") / ".diagnosa"
    workspace.mkdir()
    lake, prefix = seed_lake(workspace)
    good = lake.get_bytes(f"{prefix}/data/part-00000.parquet")
    lake.put_bytes(f"{prefix}/data/part-00000.parquet", b"not parquet")
    executor = open_local(workspace, lake, LOCAL_BUCKET, progress=lambda line: None, use_cache=False)
    record = executor.start(local_definition(lake, ("logistic_regression",)),
                            {"InputDataUri": f"s3://{LOCAL_BUCKET}/{prefix}"})
    assert record.status == "Failed" and record.steps["Preprocess"]["StepStatus"] == "Failed"
    assert "Train-logistic_regression" not in record.steps
    lake.put_bytes(f"{prefix}/data/part-00000.parquet", good)  # the inputs are fine again; the record keeps the failure
    return {"workspace": workspace, "record": record, "lake": lake, "prefix": prefix}


def prepare(workspace: Path, *argv: str, capsys) -> tuple[int, str, str]:
    code = cli(["--workspace", str(workspace), "job", "prepare", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


JOB_STEPS = "Preprocess, Transform, Train-logistic_regression, Select, Evaluate"


@pytest.mark.parametrize("step, message", [
    ("Bogus", f"has no step 'Bogus'; its job steps: {JOB_STEPS}"),
    ("RecallGate", f"step RecallGate is a Condition step, which runs no container; its job steps: {JOB_STEPS}"),
    ("Register", f"step Register is a RegisterModel step, which runs no container; its job steps: {JOB_STEPS}"),
])
def test_a_step_that_is_not_a_job_is_refused_with_the_valid_ones(failed, tmp_path, capsys, step, message):
    code, out, err = prepare(failed["workspace"], step, "--root", str(tmp_path / "root"), capsys=capsys)
    assert (code, out) == (2, "") and message in err and err.count("\n") == 1
    assert not (tmp_path / "root").exists()


def test_a_root_whose_name_is_not_utf8_is_refused_before_anything_is_laid_out(failed, tmp_path, capsys):
    # A byte that is not UTF-8 in --root (kept as a lone surrogate) was a UnicodeEncodeError traceback from writing the
    # job's shell scripts, after part of the root was laid out.
    root = tmp_path / "root\udced"
    code, out, err = prepare(failed["workspace"], "Preprocess", "--root", str(root), capsys=capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "root\\udced is not UTF-8 text" in err and "Traceback" not in err
    assert not os.path.lexists(root)


@pytest.mark.parametrize("hidden", ["\x1b]0;x\x07", "\n", "\u202e"], ids=["escape", "newline", "bidi-override"])
def test_a_root_holding_a_control_character_is_refused_before_anything_is_laid_out(failed, tmp_path, capsys, hidden):
    # The command printed to run the job names --root: shown escaped ("\x1b"), it named another folder once pasted;
    # shown raw, an ESC acted on the terminal.
    root = tmp_path / f"root{hidden}x"
    code, out, err = prepare(failed["workspace"], "Preprocess", "--root", str(root), capsys=capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and hidden not in err[:-1]
    assert "holds a control or format character" in err and repr(hidden)[1:-1] in err
    assert not os.path.lexists(root)


def test_an_unknown_execution_is_refused_naming_the_latest(failed, tmp_path, capsys):
    code, _, err = prepare(failed["workspace"], "Preprocess", "--execution", "20990101T000000Z-abcdef",
                           "--root", str(tmp_path / "root"), capsys=capsys)
    assert code == 2
    assert f"no local execution '20990101T000000Z-abcdef' under {failed['workspace'] / 'executions'} " \
           f"(latest: {failed['record'].id})" in err


def test_no_execution_at_all_says_to_run_the_pipeline(tmp_path, capsys):
    code, _, err = prepare(tmp_path / "empty", "Preprocess", capsys=capsys)
    assert code == 2 and "no local executions in" in err and "run `diagnosa run --local` first" in err


@pytest.mark.parametrize("step, upstream", [("Train-logistic_regression", "Preprocess (failed), Transform (not run)"),
                                            ("Select", "Train-logistic_regression (not run)"),
                                            ("Evaluate", "Select (not run), Transform (not run)")])
def test_a_step_whose_inputs_were_never_produced_names_the_step_to_run(failed, tmp_path, capsys, step, upstream):
    code, _, err = prepare(failed["workspace"], step, "--root", str(tmp_path / "root"), capsys=capsys)
    assert code == 2
    assert (f"step {step} takes its inputs from {upstream}, which did not succeed in execution {failed['record'].id}: "
            f"`diagnosa run --local --resume {failed['record'].id}` runs them; or pick another execution with --execution") in err
    assert not (tmp_path / "root").exists()


def test_a_step_with_static_inputs_is_laid_out_from_a_failed_execution(failed, tmp_path, capsys):
    """Preprocess reads only the curated data: its root is the executor's, by default under the workspace."""
    code, out, _ = prepare(failed["workspace"], "Preprocess", capsys=capsys)
    root = failed["workspace"] / "jobs" / failed["record"].id / "Preprocess"
    assert code == 0
    curated = root / "processing" / "input" / "curated"
    part = "data/part-00000.parquet"
    assert (curated / part).read_bytes() == failed["lake"].get_bytes(f"{failed['prefix']}/{part}")
    assert json.loads((curated / "manifest.json").read_text()) == failed["lake"].get_json(f"{failed['prefix']}/manifest.json")
    config = json.loads((root / "config" / "processingjobconfig.json").read_text())
    assert config["ProcessingJobName"] == f"Preprocess-{failed['record'].id}"
    for output in ("transformer", "split", "baseline"):
        assert (root / "processing" / "output" / output).is_dir()
    assert f"python -m processing.preprocess --base-dir {root}/processing --stage fit --reduction none" in out
    assert "outputs of this step" not in out  # the step failed: nothing of the execution's to compare with
    assert json.loads((root / MARKER).read_text())["step"] == "Preprocess"


def test_a_training_root_holds_the_toolkit_config_and_channels(execution, tmp_path, capsys):
    root = tmp_path / "train"
    code, out, _ = prepare(execution["workspace"], "Train-logistic_regression", "--root", str(root), capsys=capsys)
    assert code == 0
    config = root / "input" / "config"
    hyperparameters = json.loads((config / "hyperparameters.json").read_text())
    assert hyperparameters["family"] == "logistic_regression"
    assert hyperparameters["sagemaker_submit_directory"].startswith(f"s3://{LOCAL_BUCKET}/")  # as the service writes it
    assert set(json.loads((config / "inputdataconfig.json").read_text())) == {"train", "validation", "transformer"}
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-1"
    assert list((root / "input" / "data" / "train").glob("*.npz"))  # one part per curated part
    assert (root / "model").is_dir() and (root / "output" / "data").is_dir()
    assert (f"SM_INPUT_DIR={root}/input SM_MODEL_DIR={root}/model SM_OUTPUT_DIR={root}/output "
            "python -m training.train") in out.splitlines()
    assert f"#   model: {executor_output(execution, 'Train-logistic_regression', 'model')}" in out.splitlines()


def test_select_gets_each_candidate_as_the_training_step_packed_it(execution, tmp_path, capsys):
    root = tmp_path / "select"
    assert prepare(execution["workspace"], "Select", "--root", str(root), capsys=capsys)[0] == 0
    tarball = root / "processing" / "input" / "candidates" / "logistic_regression" / "model.tar.gz"
    assert tarball.read_bytes() == executor_output(execution, "Train-logistic_regression", "model").read_bytes()


def test_a_non_empty_root_is_refused_and_force_replaces_only_a_prepared_one(failed, tmp_path, capsys):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    code, _, err = prepare(failed["workspace"], "Preprocess", "--root", str(root), capsys=capsys)
    assert code == 2 and f"--root {root} is not empty: choose another folder, or add --force" in err
    code, _, err = prepare(failed["workspace"], "Preprocess", "--root", str(root), "--force", capsys=capsys)
    assert code == 2 and f"was not laid out by `diagnosa job prepare` (no {MARKER})" in err
    assert (root / "notes.txt").read_text() == "keep me" and sorted(p.name for p in root.iterdir()) == ["notes.txt"]

    prepared = tmp_path / "prepared"
    assert prepare(failed["workspace"], "Preprocess", "--root", str(prepared), capsys=capsys)[0] == 0
    (prepared / "processing" / "output" / "transformer" / "x.json").write_bytes(b"an earlier by-hand run's output")
    assert prepare(failed["workspace"], "Preprocess", "--root", str(prepared), capsys=capsys)[0] == 2
    assert prepare(failed["workspace"], "Preprocess", "--root", str(prepared), "--force", capsys=capsys)[0] == 0
    assert not (prepared / "processing" / "output" / "transformer" / "x.json").exists()
    assert (prepared / "processing" / "input" / "curated" / "data" / "part-00000.parquet").is_file()


def test_a_root_that_is_a_file_is_refused(failed, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = prepare(failed["workspace"], "Preprocess", "--root", str(tmp_path / "file"), capsys=capsys)
    assert code == 2 and "is a file, not a folder" in err
    os.mkfifo(tmp_path / "fifo")  # called "a file" before
    code, _, err = prepare(failed["workspace"], "Preprocess", "--root", str(tmp_path / "fifo"), capsys=capsys)
    assert code == 2 and "it is a named pipe (FIFO), not a folder" in err
    # Under a file, or where the machine makes no folder: exit status 2 as docs/pipeline.md says (it was 1).
    code, _, err = prepare(failed["workspace"], "Preprocess", "--root", str(tmp_path / "file" / "sub"), capsys=capsys)
    assert code == 2 and f"cannot lay the job out under {tmp_path / 'file' / 'sub'}: Not a directory" in err


def test_a_root_inside_the_lake_is_refused(failed, capsys):
    """A root in the lake's folder put the job's inputs and outputs among the lake's objects, listed and read as such."""
    lake = failed["lake"]
    before = lake.list()
    for root in (lake.local_roots()[0] / "curated" / "job", lake.local_roots()[0]):
        code, out, err = prepare(failed["workspace"], "Preprocess", "--root", str(root), capsys=capsys)
        assert (code, out) == (2, "") and f"--root {root} is inside the data lake {lake.local_roots()[0]}" in err
    assert lake.list() == before


def test_inputs_missing_from_the_lake_are_named_and_leave_no_root(failed, tmp_path, capsys):
    """Another lake than the one the execution ran on (here an empty one): the input it lacks is named."""
    root = tmp_path / "root"
    code = cli(["--workspace", str(failed["workspace"]), "--lake", str(tmp_path / "other-lake"), "job", "prepare",
                "Preprocess", "--root", str(root)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"input s3://{LOCAL_BUCKET}/{failed['prefix']} (for curated) is empty or missing" in err
    assert f"the lake no longer holds what execution {failed['record'].id} recorded" in err
    assert not root.exists()
