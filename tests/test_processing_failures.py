"""A processing job's failure reason where SageMaker reads it, and the evaluation job's hostile inputs.

AWS's "Save and Access Metadata Information About Your Processing Job" (byoc-metadata): a processing container writes
UTF-8 text to /opt/ml/output/message and DescribeProcessingJob's ExitMessage holds its first 1 KB. The jobs wrote
/opt/ml/processing/output/failure, which no ProcessingOutput uploads (select and evaluate wrote nothing at all), so the
service said only that the job failed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diagnosa.files import write_job_failure

MESSAGE_LIMIT = 1024  # bytes of /opt/ml/output/message that ExitMessage holds


def exit_message(base: Path) -> str:
    """What DescribeProcessingJob would show of a job whose base dir (/opt/ml/processing) is ``base``."""
    path = base.parent / "output" / "message"
    assert path.is_file(), f"no {path}: the service would show no reason"
    data = path.read_bytes()
    assert len(data) <= MESSAGE_LIMIT
    return data.decode("utf-8")  # not UTF-8: the service fails the job with a ClientError instead


def container(tmp_path: Path) -> Path:
    """A processing container root's base dir: <tmp>/opt/ml/processing."""
    base = tmp_path / "opt" / "ml" / "processing"
    base.mkdir(parents=True)
    return base


def argument_error(main, base: Path, arguments: list[str], capsys) -> tuple[str, str]:
    """A job's ``main`` run on ``arguments`` in a container whose base dir is ``base``, refusing them as argparse
    does (exit status 2): (what it printed on standard error, the reason the service would show)."""
    with pytest.raises(SystemExit) as exit_:
        main(["--base-dir", str(base), *arguments])
    assert exit_.value.code == 2
    return capsys.readouterr().err, exit_message(base)


def test_a_job_failure_is_written_where_the_service_reads_the_exit_message(tmp_path):
    base = container(tmp_path)
    long = "curated part data/part-00001.parquet: " + "é" * 2000  # 2-byte characters past the 1 KB
    write_job_failure(base, long)
    shown = exit_message(base)
    assert shown.startswith("curated part data/part-00001.parquet: ") and long.startswith(shown)
    assert len(shown.encode()) > MESSAGE_LIMIT - 2  # cut at a character boundary, as much as fits
    assert (base / "output" / "failure").read_text(encoding="utf-8") == long + "\n"  # the whole reason, by hand
    # A file name that is not UTF-8 reaches a message as lone surrogates: written escaped, still UTF-8.
    write_job_failure(base, "cannot read data/caf\udce9.parquet")
    assert exit_message(base) == "cannot read data/caf\\udce9.parquet"


def test_a_failed_selection_leaves_its_reason_for_the_service(tmp_path):
    from processing.select import main

    base = container(tmp_path)
    (base / "input" / "candidates").mkdir(parents=True)
    assert main(["--base-dir", str(base)]) == 1
    assert "no candidates found" in exit_message(base)


def test_a_failed_evaluation_leaves_its_reason_for_the_service(tmp_path):
    from processing.evaluate import main

    base = container(tmp_path)
    (base / "input" / "model").mkdir(parents=True)
    (base / "input" / "model" / "model.tar.gz").write_bytes(b"not a tarball")
    assert main(["--base-dir", str(base)]) == 1
    assert "model" in exit_message(base)


@pytest.mark.parametrize("arguments, flag", [
    (["--orphan-threshold", "nan"], "--orphan-threshold"),
    (["--orphan-threshold=-inf"], "--orphan-threshold"),
    (["--orphan-threshold", "1.5"], "--orphan-threshold"),
    (["--recall-threshold=EnfermedadTerminal=NaN"], "--recall-threshold"),
    (["--recall-threshold=EnfermedadTerminal=-inf"], "--recall-threshold"),
    (["--slice-threshold", "orphan=inf"], "--slice-threshold"),
    (["--thresholds", '{"ENFERMEDAD TERMINAL": NaN}'], "--thresholds"),
    (["--thresholds", '{"ENFERMEDAD TERMINAL": -0.1}'], "--thresholds"),
])
def test_a_threshold_must_be_a_finite_share_and_a_bad_one_is_the_jobs_failure_reason(tmp_path, capsys, arguments,
                                                                                     flag):
    # nan passed the gate (every comparison with it is false), evaluation.json said "passed", then the baselines'
    # strict JSON refused it: exit 1 with the report empty. Now argparse refuses it, naming the flag.
    from processing.evaluate import main

    base = container(tmp_path)
    err, reason = argument_error(main, base, arguments, capsys)
    assert flag in err and flag in reason and "[0, 1]" in reason
    assert not (base / "output" / "evaluation").exists()


@pytest.mark.parametrize("module, arguments, named", [
    ("monitoring.job", ["--last", "24h", "--min-feedback", "some"], "--min-feedback"),
    ("monitoring.job", ["--since"], "--since"),
    ("monitoring.retrain_job", ["--endpoint-name", "diagnosa"], "--lake"),
    ("monitoring.retrain_job", ["--lake", "lake", "--endpoint-name", "diagnosa", "--base-versoin", "v1"],
     "--base-versoin"),
])
def test_the_monitoring_and_folding_jobs_argument_errors_are_their_failure_reason(tmp_path, capsys, module,
                                                                                 arguments, named):
    # The monitor and retrain functions start these jobs on AWS: an argument error said only "AlgorithmError".
    import importlib

    main = importlib.import_module(module).main
    err, reason = argument_error(main, container(tmp_path), arguments, capsys)
    assert named in err and reason.startswith(f"python -m {module}: error:") and named in reason, reason


@pytest.fixture(scope="module")
def evaluation_root(trained_model_dir, curated_cohort, tmp_path_factory):
    """A model and a test split an evaluation job runs on: (model folder, test frame)."""
    frame, _ = curated_cohort
    return trained_model_dir, frame.sample(400, random_state=0).reset_index(drop=True)


def evaluate_root(tmp_path: Path, model_dir: Path, test) -> Path:
    base = container(tmp_path)
    shutil.copytree(model_dir, base / "input" / "model")
    (base / "input" / "test").mkdir(parents=True)
    test.to_parquet(base / "input" / "test" / "part-00000.parquet", index=False)
    return base


def test_a_header_only_test_split_is_said_to_have_no_rows(tmp_path, evaluation_root):
    from processing.evaluate import main

    model_dir, test = evaluation_root
    base = evaluate_root(tmp_path, model_dir, test.iloc[:0])
    assert main(["--base-dir", str(base)]) == 1
    reason = exit_message(base)
    assert "the test input" in reason and "has no rows" in reason, reason
    assert "0 sample(s)" not in reason


def test_evaluation_json_is_written_last_or_not_at_all(tmp_path, evaluation_root, monkeypatch):
    # The pipeline's gate reads evaluation.json: written first, it said "passed" for a job that then failed.
    from processing import evaluate

    model_dir, test = evaluation_root
    base = evaluate_root(tmp_path, model_dir, test)

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate, "write_report", full)
    assert evaluate.main(["--base-dir", str(base), "--orphan-threshold", "0.1"]) == 1
    assert not (base / "output" / "evaluation" / "evaluation.json").exists()
    assert "No space left on device" in exit_message(base)
    monkeypatch.undo()
    shutil.rmtree(base / "output")
    assert evaluate.main(["--base-dir", str(base), "--orphan-threshold", "0.1"]) == 0
    written = json.loads((base / "output" / "evaluation" / "evaluation.json").read_text(encoding="utf-8"))
    assert written["gate"]["passed"] in (True, False) and (base / "output" / "report" / "report.md").is_file()
    assert [p.name for p in (base / "output" / "evaluation").iterdir() if p.name.startswith(".")] == []
