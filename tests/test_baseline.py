"""Training-time baselines: SageMaker Model Monitor's statistics/constraints layout, read back; the evaluate job's
prediction baseline."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.schema import Field, Schema
from processing import baseline as bl

SCHEMA = Schema("toy", (
    Field("patient_id", "string", role="id", required=True),
    Field("age", "integer", min=0, max=120),
    Field("crp", "number", min=0, max=600),
    Field("sex", "category", values=("F", "M")),
    Field("symptoms", "hpo_terms"),
    Field("label", "category", role="target", values=("A", "B")),
), ("A", "B"))


def toy(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    crp = rng.lognormal(1, 1, n)
    crp[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "age": rng.integers(0, 90, n),
                         "crp": crp, "sex": rng.choice(["F", "M"], n),
                         "symptoms": [["HP:0001945"] if i % 3 == 0 else [] for i in range(n)],
                         "label": rng.choice(["A", "B"], n)})


def test_statistics_and_constraints_follow_the_sagemaker_layout():
    frame = toy()
    statistics, constraints = bl.data_baseline(frame, SCHEMA)
    assert statistics["version"] == 0.0 and statistics["dataset"] == {"item_count": 3000}
    by_name = {f["name"]: f for f in statistics["features"]}
    assert list(by_name) == ["age", "crp", "sex", "symptoms"]  # features only: no id, no target
    crp = by_name["crp"]
    assert crp["inferred_type"] == "Fractional" and by_name["age"]["inferred_type"] == "Integral"
    num = crp["numerical_statistics"]
    present = frame["crp"].dropna()
    assert num["common"] == {"num_present": len(present), "num_missing": 3000 - len(present)}
    assert num["mean"] == pytest.approx(present.mean()) and num["min"] == pytest.approx(present.min())
    kll = num["distribution"]["kll"]
    assert len(kll["buckets"]) == 10 and sum(b["count"] for b in kll["buckets"]) == len(present)
    assert set(kll["sketch"]["parameters"]) == {"c", "k"}
    # The sketch's weighted items add up to the number of values (an item at level i weighs 2**i).
    assert sum(len(items) * 2 ** level for level, items in enumerate(kll["sketch"]["data"])) == \
        pytest.approx(len(present), rel=0.01)
    sex = by_name["sex"]["string_statistics"]
    assert sex["distinct_count"] == 2 and {b["value"] for b in sex["distribution"]["categorical"]["buckets"]} == {"F", "M"}
    terms = by_name["symptoms"]["string_statistics"]
    assert terms["common"]["num_present"] == 1000
    assert terms["distribution"]["categorical"]["buckets"] == [{"value": "HP:0001945", "count": 1000.0}]
    rules = {f["name"]: f for f in constraints["features"]}
    assert rules["crp"]["completeness"] == pytest.approx(len(present) / 3000, abs=1e-6)
    assert rules["crp"]["num_constraints"] == {"is_non_negative": True}
    assert rules["sex"]["string_constraints"] == {"domains": ["F", "M"]}
    assert constraints["monitoring_config"]["distribution_constraints"]["comparison_threshold"] == 0.1
    json.dumps(statistics, allow_nan=False)  # valid JSON for AWS: no NaN anywhere


def test_baseline_reads_back_what_it_wrote(tmp_path):
    frame = toy()
    bl.write_data_baseline(frame, SCHEMA, tmp_path)
    data = bl.load_baseline([tmp_path]).data
    crp = data.features["crp"]
    assert crp.kind == "numeric" and crp.missing_rate == pytest.approx(frame["crp"].isna().mean())
    assert crp.weights.sum() == pytest.approx(frame["crp"].notna().sum(), rel=0.01)
    assert data.features["symptoms"].kind == "terms" and data.features["sex"].domain == ["F", "M"]


def test_a_broken_baseline_names_the_file_and_the_field(tmp_path):
    with pytest.raises(bl.BaselineError, match="no statistics.json"):
        bl.load_baseline([tmp_path])
    (tmp_path / "statistics.json").write_text('{"version": 0, "dataset": {}, "features": []}')
    (tmp_path / "constraints.json").write_text("{not json")
    with pytest.raises(bl.BaselineError, match="constraints.json is not valid JSON"):
        bl.load_baseline([tmp_path])
    (tmp_path / "constraints.json").write_text('{"features": []}')
    with pytest.raises(bl.BaselineError, match="dataset.item_count"):
        bl.load_baseline([tmp_path])


def test_empty_frame_or_missing_columns_are_refused():
    with pytest.raises(bl.BaselineError, match="empty"):
        bl.data_baseline(toy().iloc[:0], SCHEMA)
    with pytest.raises(bl.BaselineError, match="crp"):
        bl.data_baseline(toy().drop(columns=["crp"]), SCHEMA)


def test_preprocess_writes_the_baseline_only_when_asked(tmp_path, curated_cohort):
    from processing import preprocess

    frame, manifest = curated_cohort
    for name, extra, expected in (("absent", [], False), ("flag", ["--baseline-dir", str(tmp_path / "b")], True)):
        base = tmp_path / name
        source = base / "input" / "curated"
        source.mkdir(parents=True)
        frame.to_parquet(source / "data.parquet", index=False)
        listed = [f"curated/{manifest['dataset']}/{manifest['version']}/data.parquet"]  # the part written here
        (source / "manifest.json").write_text(json.dumps({**manifest, "data_keys": listed}))
        assert preprocess.main(["--base-dir", str(base), "--resampling", "none", *extra]) == 0
        assert (tmp_path / "b" / "statistics.json").is_file() is expected
        assert not (base / "output" / "baseline").exists()
    train_rows = json.loads((tmp_path / "flag" / "output" / "transformer" / "preprocess.json").read_text())["rows"]["train"]
    statistics = json.loads((tmp_path / "b" / "statistics.json").read_text())
    assert statistics["dataset"]["item_count"] == train_rows  # the training split, not the whole dataset


def test_evaluate_writes_the_prediction_baseline(tmp_path, trained_model_dir):
    import shutil

    from processing import evaluate
    from processing.split import read_split

    base = tmp_path / "eval"
    (base / "input").mkdir(parents=True)
    shutil.copytree(trained_model_dir.parent / "pre" / "output" / "test", base / "input" / "test")
    (base / "input" / "model").symlink_to(trained_model_dir)
    assert evaluate.main(["--base-dir", str(base), "--thresholds", '{"ENFERMEDAD TERMINAL": 0.7}',
                          "--orphan-threshold", "0.5", "--slice-threshold", "orphan_unseen=0.4"]) == 0
    out = base / "output" / "evaluation"
    evaluation = json.loads((out / "evaluation.json").read_text())
    predictions = json.loads((out / "prediction_baseline.json").read_text())
    counts = np.array(evaluation["diagnosa"]["confusion_matrix"]["counts"])
    assert list(predictions["predicted_distribution"].values()) == counts.sum(axis=0).tolist()
    assert predictions["n"] == len(read_split(base / "input" / "test"))
    assert predictions["thresholds"] == {"recall": {"ENFERMEDAD TERMINAL": 0.7}, "orphan_macro_recall": 0.5,
                                         "unseen_macro_recall": 0.4}
    # The diseases the model trained on, for live monitoring to tell the feedback on those it never saw.
    from processing.split import read_train_groups

    trained = read_train_groups(base / "input" / "test")
    assert trained and predictions["orphan"]["trained_groups"] == sorted(trained)
    unseen = evaluation["diagnosa"]["slices"]["orphan_unseen"]
    assert predictions["orphan_unseen"] == {k: unseen[k] for k in ("n", "macro_recall", "recall_per_class")}
    # The model version travels with the file (the AWS monitor's baseline folder holds no evaluation.json), so the
    # monitor judges only the traffic that model answered, wherever the file was copied.
    from monitoring.identity import served_model

    served = served_model(trained_model_dir).version
    assert evaluation["model"]["model_version"] == predictions["model_version"] == served
    quality = json.loads((out / "model_quality_constraints.json").read_text())
    assert quality["multiclass_classification_constraints"]["accuracy"]["threshold"] == evaluation["diagnosa"]["accuracy"]


def test_a_models_schema_the_monitor_cannot_read_is_said_not_dropped_silently(tmp_path, caplog):
    # A failure to read it was swallowed whole: drift and slice monitoring lost the model's features without a word.
    from monitoring.identity import served_model

    (tmp_path / "metadata.json").write_text(json.dumps({"schema": {"name": "x"}, "labels": ["a", "b"]}))
    with caplog.at_level("WARNING", logger="monitoring.identity"):
        facts = served_model(tmp_path)
    assert facts.features is None and facts.labels == ("a", "b")
    assert any("the model's schema could not be read (KeyError" in r.getMessage() for r in caplog.records)
    caplog.clear()
    (tmp_path / "metadata.json").write_text(json.dumps({"labels": ["a", "b"]}))  # none kept (an older record): no word
    with caplog.at_level("WARNING", logger="monitoring.identity"):
        served_model(tmp_path)
    assert not caplog.records
