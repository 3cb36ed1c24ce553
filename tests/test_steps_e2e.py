"""The four jobs chained through container-shaped folders, as SageMaker (or the local executor) runs them."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.schema import Schema
from diagnosa.labels import TERMINAL
from diagnosa.model import DiagnosaModel
from processing import evaluate as evaluate_job
from processing import preprocess as preprocess_job
from processing import select as select_job
from processing.features import FeatureParams
from processing.metrics import evaluate
from processing.preprocess import PreprocessParams, preprocess
from processing.split import read_split
from training import train as train_job
from training.models import make_classifier

FAMILIES = ("logistic_regression", "xgboost")


def _tar(model_dir: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as archive:
        for item in sorted(model_dir.iterdir()):
            archive.add(item, arcname=item.name)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, curated_cohort):
    frame, manifest = curated_cohort
    root = tmp_path_factory.mktemp("run")
    pre = root / "preprocess"
    (pre / "input" / "curated").mkdir(parents=True)
    frame.to_parquet(pre / "input" / "curated" / "data.parquet", index=False)
    listed = [f"curated/{manifest['dataset']}/{manifest['version']}/data.parquet"]  # the part written here
    (pre / "input" / "curated" / "manifest.json").write_text(json.dumps({**manifest, "data_keys": listed}))
    assert preprocess_job.main(["--base-dir", str(pre), "--resampling", "class_weights"]) == 0

    for family in FAMILIES:
        job = root / f"train-{family}"
        mp = pytest.MonkeyPatch()
        for channel in ("train", "validation", "transformer"):
            mp.setenv(f"SM_CHANNEL_{channel.upper()}", str(pre / "output" / channel))
        mp.setenv("SM_MODEL_DIR", str(job / "model"))
        mp.setenv("SM_OUTPUT_DATA_DIR", str(job / "output" / "data"))
        mp.setenv("SM_OUTPUT_DIR", str(job / "output"))
        mp.setenv("SM_INPUT_DIR", str(job / "input"))
        mp.setenv("SM_HPS", json.dumps({"family": family, "seed": "0"}))
        try:
            assert train_job.main([]) == 0
        finally:
            mp.undo()
        _tar(job / "model", root / "select" / "input" / "candidates" / family / "model.tar.gz")

    assert select_job.main(["--base-dir", str(root / "select")]) == 0
    champion = root / "select" / "output" / "champion" / "model.tar.gz"
    ev = root / "evaluate"
    (ev / "input" / "model").mkdir(parents=True)
    shutil.copy(champion, ev / "input" / "model" / "model.tar.gz")
    shutil.copytree(pre / "output" / "test", ev / "input" / "test")
    with pytest.raises(SystemExit):
        evaluate_job.main(["--base-dir", str(ev), "--thresholds", "[0.8]"])
    assert evaluate_job.main(["--base-dir", str(ev), "--thresholds", json.dumps({TERMINAL: 0.3}),
                              "--orphan-threshold", "0.1"]) == 0
    return root


def test_champion_is_the_best_validation_candidate_and_is_evaluated_on_test(pipeline_run):
    selection = json.loads((pipeline_run / "select" / "output" / "selection" / "selection.json").read_text())
    scores = {}
    for family in FAMILIES:
        meta = json.loads((pipeline_run / f"train-{family}" / "model" / "metadata.json").read_text())
        scores[family] = meta["validation"]["macro_recall"]
    best = max(scores, key=scores.get)
    assert selection["ranking"][0]["name"] == best
    # The candidates' weighted vote replaces the best one only when it cross-fits better beyond the noise.
    vote = selection["ensemble"]
    assert vote["considered"] and sum(vote["weights"].values()) == pytest.approx(1.0)
    if vote["use_ensemble"]:
        procedure = vote["procedure"]
        assert selection["champion"] == "ensemble" and len(vote["weights"]) > 1
        assert vote["gain_over_single"][procedure] > vote["margin_z"] * vote["standard_error"][procedure]
    else:
        assert selection["champion"] == best

    evaluation = json.loads((pipeline_run / "evaluate" / "output" / "evaluation" / "evaluation.json").read_text())
    d = evaluation["diagnosa"]
    assert evaluation["model"]["family"] == selection["champion"]
    assert set(evaluation["multiclass_classification_metrics"]) >= {"accuracy", "weighted_recall", "confusion_matrix"}
    assert d["n"] == len(read_split(pipeline_run / "evaluate" / "input" / "test"))
    assert d["slices"]["orphan"]["n"] > 0 and d["macro"]["recall"] > 0.5
    report = pipeline_run / "evaluate" / "output" / "report"
    assert (report / "report.md").is_file() and (report / "confusion_matrix.png").stat().st_size > 1000


def test_the_artifact_serves_a_raw_patient_record(pipeline_run, curated_cohort):
    frame, _ = curated_cohort
    model = DiagnosaModel.load(pipeline_run / "train-xgboost" / "model")
    raw = frame.drop(columns=["label", "disease_id", "disease_name", "is_orphan", "note"]).head(5)
    proba = model.predict_proba(raw)
    assert proba.shape == (5, 5) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.metadata["fingerprint"]["preprocess"]


def test_evaluation_refuses_to_overwrite(pipeline_run):
    assert evaluate_job.main(["--base-dir", str(pipeline_run / "evaluate")]) == 1


def test_no_imbalance_handling_misses_more_of_the_rarest_class(tmp_path):
    # A cohort where terminal patients are ~1% (the default cohort's 3% makes the effect smaller).
    from diagnosa.data.cohort import CohortConfig, generate, write_raw
    from diagnosa.data.ingest import ingest_cohort, load_curated
    from diagnosa.lake import DataLake

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    mix = {"ENFERMEDAD LEVE": 0.5, "ENFERMEDAD AGUDA": 0.3, "ENFERMEDAD CRÓNICA": 0.185, TERMINAL: 0.015}
    write_raw(generate(CohortConfig(patients=8_000, seed=21, orphan_fraction=0.01, common_mix=mix)), lake, "rare")
    ingest_cohort(lake, "rare")
    frame, manifest = load_curated(lake)
    schema = Schema.from_dict(manifest["schema"])
    recall = {}
    # Without the knowledge-base columns: standardised, they let an unweighted logistic regression find most
    # terminal orphan patients by itself (0.53 -> 0.75 of the held-out terminal patients here), which would
    # measure the features rather than the weighting.
    features = FeatureParams(phenotype_similarity=False)
    for name, params in (("none", PreprocessParams(resampling="none", features=features)),
                         ("default", PreprocessParams(features=features))):
        result = preprocess(frame, schema, params)
        classifier = make_classifier("logistic_regression", seed=0)
        classifier.fit(result.train.X, result.train.y, sample_weight=result.train.sample_weight)
        held_out = pd.concat([result.splits.validation, result.splits.test])
        proba = classifier.predict_proba(result.pipeline.transform(held_out))
        d = evaluate(held_out["label"].tolist(), proba, result.labels)["diagnosa"]
        recall[name] = (d["per_class"][TERMINAL]["recall"], d["worst_class_recall"]["recall"])
    assert recall["default"][0] > recall["none"][0] + 0.1, recall
    assert recall["default"][1] > recall["none"][1], recall


def test_the_gate_names_each_class_that_missed_and_by_how_much(pipeline_run):
    from processing.evaluate import gate_section

    evaluation = json.loads((pipeline_run / "evaluate" / "output" / "evaluation" / "evaluation.json").read_text())
    assert evaluation["gate"] == {"passed": True, "failures": [], "message": "recall gate passed"}
    recall = evaluation["diagnosa"]["per_class"][TERMINAL]["recall"]
    verdict = gate_section(evaluation, {TERMINAL: 1.01, "NO ENFERMO": 0.0}, orphan=1.5)
    assert not verdict["passed"]
    assert f"recall[{TERMINAL}] {recall:.3f} < 1.010 (short by {1.01 - recall:.3f})" in verdict["message"]
    assert "orphan_macro_recall" in verdict["message"] and "NO ENFERMO" not in verdict["message"]


def test_evaluation_of_an_unreadable_model_fails_cleanly(tmp_path, pipeline_run):
    base = tmp_path / "ev"
    (base / "input" / "model").mkdir(parents=True)
    (base / "input" / "model" / "model.tar.gz").write_bytes(b"not a tarball")
    shutil.copytree(pipeline_run / "evaluate" / "input" / "test", base / "input" / "test")
    assert evaluate_job.main(["--base-dir", str(base)]) == 1
    assert not (base / "output" / "evaluation").exists()
