"""The feedback → monitor loop's edges: one model version's traffic judged against its baselines (the others
counted), labels known without a prediction baseline, a baseline of another dataset refused, feedback with a label
the model does not have counted, a drift rule whose false alarms on the baseline's own distribution are rare, and
feedback exports with a byte-order mark."""
from __future__ import annotations

import codecs
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.schema import Field, Schema
from diagnosa.lake import DataLake
from inference.capture import capture_line
from inference.feedback import NO_ROW, SAME_PATIENT, parse_feedback, read_feedback, store_feedback
from monitoring.drift import DRIFT, OK, WARN, DriftThresholds, _verdict, data_drift, feature_drift, prediction_drift
from monitoring.identity import BaselineMismatch, ModelFacts, baseline_model, check_same_model, served_model
from monitoring.quality import NOT_A_LABEL, OTHER_MODEL_FEEDBACK, QualityThresholds, join_feedback, live_quality
from monitoring.run import run_monitor, settings_from_baseline
from monitoring.traffic import Skipped
from processing.baseline import data_baseline, load_baseline, parse_data_baseline, write_json

SCHEMA = Schema("gest", (Field("id", "string", role="id"), Field("weeks", "number"), Field("race", "category"),
                         Field("y", "category", role="target", values=("never", "now"))), ("never", "now"))


def _frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"weeks": rng.normal(39, 2, n), "race": rng.choice(["white", "black", "asian"], n)})


def _baseline_folder(folder: Path, schema: Schema = SCHEMA) -> Path:
    statistics, constraints = data_baseline(_frame(), schema)
    write_json(folder / "statistics.json", statistics)
    write_json(folder / "constraints.json", constraints)
    return folder


def _metadata(folder: Path, dataset: str = "gest", fingerprint: str = "b4e42c1fb60b" + "0" * 52,
              schema: Schema = SCHEMA) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps({
        "dataset": {"name": dataset, "version": "1"}, "labels": list(schema.labels), "slice_column": None,
        "schema": schema.to_dict(), "fingerprint": {"preprocess": fingerprint}}))
    return folder


def _capture(lake: DataLake, events: list[tuple[str, str, dict]]) -> None:
    """Single-patient requests as the endpoint captures them: (event id, answering model version, record)."""
    when = datetime(2026, 12, 2, 10, tzinfo=timezone.utc)
    lines = [json.dumps(capture_line(event, None, json.dumps(record).encode(), "application/json",
                                     json.dumps({"predictions": [{"category": "never", "model_version": version}]
                                                 }).encode(), "application/json", when))
             for event, version, record in events]
    lake.put_bytes("capture/gest/AllTraffic/2026/12/02/10/00-00-000-x.jsonl", ("\n".join(lines) + "\n").encode())


# ------------------------------------------------------------------------------------------ D1: model versions

def test_only_the_traffic_of_the_baselines_model_version_is_judged_and_the_rest_is_counted(tmp_path):
    # After a retraining deployed v2, v2's baselines judged the traffic v1 had answered.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    baseline = load_baseline([_baseline_folder(tmp_path / "b")])
    rows = _frame(60, seed=1)
    events = [(f"v1-{i}", "35f9e203b370", {"weeks": float(w) - 10, "race": r})
              for i, (w, r) in enumerate(zip(rows.weeks[:40], rows.race[:40]))]
    events += [(f"v2-{i}", "b4e42c1fb60b", {"weeks": float(w), "race": r})
               for i, (w, r) in enumerate(zip(rows.weeks[40:], rows.race[40:]))]
    _capture(lake, events)
    store_feedback(lake, "gest", parse_feedback({"event_id": "v1-0", "diagnosis": "now"}, ["never", "now"]))
    store_feedback(lake, "gest", parse_feedback({"event_id": "v2-0", "diagnosis": "now"}, ["never", "now"]))
    settings = settings_from_baseline(baseline, model=ModelFacts(labels=("never", "now"), orphan_slice=False))
    report = run_monitor(lake, "gest", baseline, settings=settings, model_version="b4e42c1fb60b")
    traffic = report["traffic"]
    assert traffic["patients"] == 20 and traffic["model_version"] == "b4e42c1fb60b"
    assert traffic["other_versions"] == {"requests": 40, "patients": 40, "by_version": {"35f9e203b370": 40}}
    assert report["drifted_features"] == []  # v1's shifted weeks are not v2's drift
    fb = report["quality"]["feedback"]
    assert fb["matched"] == 1
    assert {s["reason"]: s["count"] for s in fb["skipped"]["by_reason"]} == {OTHER_MODEL_FEEDBACK: 1}
    # Without a known version every request is judged, as before (and v1's shift shows).
    everything = run_monitor(lake, "gest", baseline, settings=settings)
    assert everything["traffic"]["patients"] == 60 and everything["traffic"]["other_versions"]["requests"] == 0


def test_the_served_models_version_is_the_one_its_answers_carry(trained_model_dir):
    from inference.handler import load_service

    assert served_model(trained_model_dir).version == load_service(str(trained_model_dir)).version


def test_two_models_of_one_preprocessing_are_two_versions(trained_model_dir, xgboost_model_dir):
    # The version was the preprocessing's fingerprint: a logistic regression and an XGBoost trained on the same
    # preprocessed data answered as one model, and the monitor could not tell their traffic apart.
    from diagnosa.model import identity_version

    first, second = (json.loads((folder / "metadata.json").read_text()) for folder in (trained_model_dir,
                                                                                         xgboost_model_dir))
    assert first["fingerprint"]["preprocess"] == second["fingerprint"]["preprocess"]
    assert served_model(trained_model_dir).version != served_model(xgboost_model_dir).version
    # The same training repeated is the same version (a hash of what makes the model, not a random id).
    assert identity_version(first) == first["model_version"] and len(first["model_version"]) == 12
    assert identity_version({**first, "seed": first["seed"] + 1}) != first["model_version"]


def test_a_refit_that_moves_a_fitted_number_in_its_last_bits_is_the_same_version(trained_model_dir):
    # Review 47: random_forest and xgboost sum over threads in no fixed order, so a repeated fit moved the fitted
    # temperature by ~1e-16 and the same training had another model_version.
    import numpy as np

    from diagnosa.model import identity_version

    metadata = json.loads((trained_model_dir / "metadata.json").read_text())
    metadata["calibration"] = {**(metadata.get("calibration") or {}), "temperature": 1.2345678901234}
    metadata["decision_weights"] = [0.5, 1.25, 2.0]

    def moved(by):
        return {**metadata, "calibration": {**metadata["calibration"], "temperature": 1.2345678901234 * by},
                "decision_weights": [w * by for w in metadata["decision_weights"]]}

    assert identity_version(moved(1 + 4 * np.finfo(float).eps)) == identity_version(metadata)
    assert identity_version(moved(1 + 1e-6)) != identity_version(metadata)  # a fit that differs is another model


def _run_folder(run: Path) -> Path:
    """A pipeline run's statistics baseline with its preprocessing record beside it (<run>/transformer/)."""
    _baseline_folder(run / "baseline")
    (run / "transformer").mkdir()
    (run / "transformer" / "preprocess.json").write_text(json.dumps({
        "dataset": {"name": "gest"}, "labels": ["never", "now"], "schema": SCHEMA.to_dict(),
        "fingerprint": "35f9e203b3701bfe4f7ed8cb840f8f18"}))
    return run


def test_a_runs_baselines_name_their_model(tmp_path):
    run = _run_folder(tmp_path / "runs" / "r1")
    facts = baseline_model(load_baseline([run / "baseline"]))
    # No version: the statistics describe the preprocessed data, which every model of the run shares.
    assert (facts.dataset, facts.version, facts.labels, facts.orphan_slice) == \
        ("gest", None, ("never", "now"), False)


def test_statistics_alone_judge_the_traffic_of_the_version_the_endpoint_serves(tmp_path, capsys):
    # A preprocessing's statistics are every model's of that run: the served model says which traffic is judged.
    from diagnosa.cli import main

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    rows = _frame(50, seed=3)
    _capture(lake, [(f"e{i}", "b4e42c1fb60b" if i < 35 else "0123456789ab", {"weeks": float(w), "race": r})
                    for i, (w, r) in enumerate(zip(rows.weeks, rows.race))])
    run = _run_folder(tmp_path / "runs" / "r1")
    ws = tmp_path / "ws"
    (ws / "endpoints" / "gest").mkdir(parents=True)
    (ws / "endpoints" / "gest" / "endpoint.json").write_text(json.dumps({
        "EndpointName": "gest", "EndpointStatus": "OutOfService", "ModelDir": str(_metadata(tmp_path / "model")),
        "ModelDataUrl": "s3://diagnosa-local/x/model.tar.gz", "Pid": None}))
    code = main(["--lake", str(tmp_path / "lake"), "--workspace", str(ws), "monitor", "--endpoint-name", "gest",
                 "--baseline", str(run / "baseline"), "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    traffic = json.loads((tmp_path / "out" / "report.json").read_text())["traffic"]
    assert traffic["model_version"] == "b4e42c1fb60b" and traffic["patients"] == 35
    assert traffic["other_versions"]["by_version"] == {"0123456789ab": 15}


@pytest.mark.parametrize("tested, drifted", [({"never": 200, "now": 200}, True), ({"never": 399, "now": 1}, False)])
def test_a_shift_of_the_predicted_mix_alone_is_an_alert_and_a_reason_to_retrain(tmp_path, tested, drifted):
    # Inputs like training's, answers not (a label shift, or another model or preprocessing behind the endpoint):
    # the feature tests see nothing, and only the predicted mix can raise the alert (--fail-on-alert) and the retrain.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    folder = _baseline_folder(tmp_path / "b")
    write_json(folder / "prediction_baseline.json", {"version": 1, "model_version": "b4e42c1fb60b",
                                                     "labels": ["never", "now"], "n": 400,
                                                     "predicted_distribution": tested})
    baseline = load_baseline([folder])
    rows = _frame(120, seed=5)  # training's population; every answer "never" (_capture)
    _capture(lake, [(f"e{i}", "b4e42c1fb60b", {"weeks": float(w), "race": r})
                    for i, (w, r) in enumerate(zip(rows.weeks, rows.race))])
    settings = settings_from_baseline(baseline, model=ModelFacts(labels=("never", "now"), orphan_slice=False))
    report = run_monitor(lake, "gest", baseline, settings=settings, model_version="b4e42c1fb60b")
    assert report["drifted_features"] == [] and report["traffic"]["patients"] == 120
    mix = [a for a in report["alerts"] if a.startswith("the mix of predicted categories drifted (")]
    assert (report["verdict"] == "alert") == drifted and len(mix) == int(drifted), report["alerts"]
    assert ("predicted-category mix drifted" in report["retrain"]["reasons"]) == drifted
    assert report["retrain"]["recommended"] == drifted


# ------------------------------------------------------------------------------------------ D2: labels

def test_a_statistics_only_baseline_takes_the_models_labels_or_asks_for_the_evaluation_folder(tmp_path):
    # It judged a dataset's endpoint on the built-in cohort's five labels and its orphan slice.
    baseline = load_baseline([_baseline_folder(tmp_path / "b")])
    served = served_model(_metadata(tmp_path / "model"))
    quality = settings_from_baseline(baseline, model=served).quality
    assert quality.labels == ("never", "now") and quality.orphan_slice is False
    with pytest.raises(ValueError, match="evaluation folder"):
        settings_from_baseline(baseline)
    # The built-in cohort's statistics are known as the cohort's.
    from diagnosa.data.schema import cohort_schema
    from diagnosa.labels import CATEGORIES
    from processing.baseline import Baseline, monitored_fields

    cohort = Baseline(data=parse_data_baseline(*data_baseline(
        pd.DataFrame({f.name: [None] * 3 for f in monitored_fields(cohort_schema())}), cohort_schema())),
        predictions=None, sources=[])
    assert settings_from_baseline(cohort).quality.labels == CATEGORIES


def test_the_predicted_mix_without_a_prediction_baseline_is_counted_over_the_models_labels():
    result = prediction_drift(None, pd.Series(["never", "now", "now"]), DriftThresholds(), ("never", "now"))
    assert result["live_counts"] == {"never": 1, "now": 2} and result["unknown_categories"] == {}


# ------------------------------------------------------------------------------------------ D4: another dataset

def test_prediction_drift_never_raises_on_another_models_labels():
    # ValueError: psi needs non-negative counts with a positive total on both sides.
    predictions = {"labels": ["alcohol", "heroína"], "predicted_distribution": {"alcohol": 10, "heroína": 5}}
    result = prediction_drift(predictions, pd.Series(["never"] * 50), DriftThresholds())
    assert result["verdict"] == "insufficient data" and result["unknown_categories"] == {"never": 50}
    assert "none of the baseline's labels" in " ".join(result["reasons"])


def test_a_baseline_of_another_dataset_is_refused_naming_both(tmp_path, capsys):
    from diagnosa.cli import main

    other = Schema("help", (Field("id", "string", role="id"), Field("cesd", "number"), Field("sex", "category"),
                            Field("y", "category", role="target", values=("alcohol", "heroína"))), ("alcohol", "heroína"))
    frame = pd.DataFrame({"cesd": np.arange(50.0), "sex": ["f", "m"] * 25})
    folder = tmp_path / "other"
    statistics, constraints = data_baseline(frame, other)
    write_json(folder / "statistics.json", statistics)
    write_json(folder / "constraints.json", constraints)
    served = served_model(_metadata(tmp_path / "model"))
    with pytest.raises(BaselineMismatch, match="dataset gest"):
        check_same_model(baseline_model(load_baseline([folder])), served, "gest")
    check_same_model(baseline_model(load_baseline([_baseline_folder(tmp_path / "mine")])), served, "gest")  # ok
    # The command: exit status 2 and both named, no traceback, no report of 'every feature 100 % missing'.
    ws = tmp_path / "ws"
    (ws / "endpoints" / "gest").mkdir(parents=True)
    (ws / "endpoints" / "gest" / "endpoint.json").write_text(json.dumps({
        "EndpointName": "gest", "EndpointStatus": "OutOfService", "ModelDir": str(tmp_path / "model"),
        "ModelDataUrl": "s3://diagnosa-local/x/model.tar.gz", "Pid": None}))
    code = main(["--lake", str(tmp_path / "lake"), "--workspace", str(ws), "monitor", "--endpoint-name", "gest",
                 "--baseline", str(folder), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "is not of the model endpoint gest serves" in err and "cesd" in err and "weeks" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ D3: labels of feedback

def test_feedback_with_a_label_the_model_does_not_have_is_counted_and_left_out_of_accuracy():
    # 206 joined, per-class counts adding to 205, no reason, and a miss in accuracy.
    rows = pd.DataFrame({"event_id": ["a", "b"], "row": [0, 0], "predicted": ["never", "now"], "rows_in_event": [1, 1]})
    feedback = {("a", None): parse_feedback({"event_id": "a", "diagnosis": "never"}, ["never", "now"]),
                ("b", None): parse_feedback({"event_id": "b", "diagnosis": "marihuana"}, ["marihuana"])}
    skipped = Skipped()
    joined = join_feedback(rows, feedback, skipped, ("never", "now"))
    assert list(joined["event_id"]) == ["a"]
    assert skipped.to_dict()["by_reason"] == [{"reason": NOT_A_LABEL, "count": 1, "examples": ["b: 'marihuana'"]}]
    quality = live_quality(join_feedback(rows, feedback, Skipped()),
                           QualityThresholds(recall={"never": 0.8, "now": 0.8}, labels=("never", "now")))
    assert quality["n"] == sum(c["n"] for c in quality["per_class"].values()) == 1 and quality["accuracy"] == 1.0


# ------------------------------------------------------------------------------------------ D6: several patients

def test_feedback_names_a_patient_of_a_request_of_several_by_its_event_row():
    # `diagnosa predict` sends 100 patients a request: their feedback was stored and never usable.
    rows = pd.DataFrame({"event_id": ["m", "m", "m", "s"], "row": [0, 1, 2, 0], "rows_in_event": [3, 3, 3, 1],
                         "predicted": ["never", "now", "never", "now"]})

    def confirmed(event_id, diagnosis, row=None, day=1):
        body = {"event_id": event_id, "diagnosis": diagnosis} | ({} if row is None else {"event_row": row})
        item = parse_feedback(body, ["never", "now"])
        return item.patient, replace(item, received_at=f"2026-01-0{day}T00:00:00+00:00")

    feedback = dict([confirmed("m", "now", 1), confirmed("m", "now", 2), confirmed("m", "never"),
                     confirmed("m", "now", 3), confirmed("s", "never", day=1), confirmed("s", "now", 0, day=2)])
    skipped = Skipped()
    joined = join_feedback(rows, feedback, skipped, ("never", "now"))
    assert joined[["event_id", "row", "predicted", "confirmed"]].values.tolist() == [
        ["m", 1, "now", "now"], ["m", 2, "never", "now"], ["s", 0, "now", "now"]]
    assert dict(skipped.counts) == {NO_ROW: 1, "event_row is not in the captured request (event_row 3, 3 patient(s))": 1,
                                    SAME_PATIENT: 1}
    quality = live_quality(joined, QualityThresholds(recall={"never": 0.8, "now": 0.8}, labels=("never", "now")))
    assert quality["per_class"]["now"]["n"] == 3 and quality["per_class"]["now"]["hits"] == 2


# ------------------------------------------------------------------------------------------ D5: the drift rule

@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(7)
    n = 5000
    frame = pd.DataFrame({"x": rng.lognormal(3, 0.5, n),
                          "k": rng.choice(["a", "b", "c", "d", "e", "f"], n, p=[.5, .3, .15, .04, .008, .002])})
    schema = Schema("p", (Field("id", "string", role="id"), Field("x", "number"), Field("k", "category"),
                          Field("y", "category", role="target", values=("u", "v"))), ("u", "v"))
    return frame, parse_data_baseline(*data_baseline(frame, schema))


@pytest.mark.parametrize("n", [30, 100, 300])
def test_samples_of_the_baseline_itself_are_rarely_called_drift(population, n):
    # PSI ≥ 0.25 alone was drift: 75 % of clean samples of 30 values, 52 % of 40.
    frame, data = population
    th = DriftThresholds()
    for name in ("x", "k"):
        verdicts = [feature_drift(data.features[name], frame[name].sample(n, random_state=seed).reset_index(drop=True),
                                  th).verdict for seed in range(200)]
        assert np.mean([v == DRIFT for v in verdicts]) <= 0.05, (name, n)
        assert np.mean([v == WARN for v in verdicts]) <= 0.10, (name, n)  # not a warning in most small windows


@pytest.fixture(scope="module")
def phenotypes():
    """Patients as the cohort has them: a disease brings several of its phenotype's terms at once (a cluster), a few
    diseases are common and many rare, and some patients have a disease no training patient had."""
    rng = np.random.default_rng(11)
    vocabulary = [f"HP:{i:07d}" for i in range(400)]
    diseases = [list(rng.choice(vocabulary, size=int(rng.integers(4, 12)), replace=False)) for _ in range(120)]
    prevalence = rng.zipf(1.6, len(diseases)).astype(float)
    prevalence /= prevalence.sum()

    def patients(n: int, unseen: int = 0) -> pd.Series:
        pool = range(len(diseases) - unseen, len(diseases)) if unseen else range(len(diseases) - 20)
        weights = prevalence[list(pool)] / prevalence[list(pool)].sum()
        chosen = rng.choice(list(pool), size=n, p=weights)
        return pd.Series([[t for t in diseases[d] if rng.random() < 0.6] if rng.random() > 0.2 else []
                          for d in chosen])

    train = pd.DataFrame({"id": [f"p{i}" for i in range(4000)], "symptoms": patients(4000), "y": "u"})
    schema = Schema("p", (Field("id", "string", role="id"), Field("symptoms", "hpo_terms"),
                          Field("y", "category", role="target", values=("u", "v"))), ("u", "v"))
    baseline = parse_data_baseline(*data_baseline(train, schema)).features["symptoms"]
    same = patients(20_000)  # the training population itself
    # As served: 2 % of the patients have one of 20 diseases training never saw (the held-out orphan diseases).
    served = pd.concat([same, patients(400, unseen=20)], ignore_index=True)
    return baseline, same, served


@pytest.mark.parametrize("n", [30, 60, 100, 300])
def test_clean_windows_of_term_lists_are_rarely_called_drift(phenotypes, n):
    # The term mix was tested as if each mention were an independent draw: one clean window in nine was drift, and
    # a term one patient of 60 had (beside 1 training patient in 2,350) was named as a changed frequency.
    baseline, same, served = phenotypes
    for population in (same, served):
        results = [feature_drift(baseline, population.sample(n, random_state=seed).reset_index(drop=True),
                                 DriftThresholds()) for seed in range(200)]
        assert np.mean([r.verdict == DRIFT for r in results]) <= 0.05, n
        if population is same:  # the unseen diseases' patients do raise their terms' shares: named, rightly
            assert np.mean([r.terms.get("changed_count", 0) > 0 for r in results]) <= 0.05, n


def test_a_real_shift_of_the_term_mix_is_still_drift(phenotypes):
    baseline, _, served = phenotypes  # a common term's patients stop coming
    common = max(baseline.counts, key=baseline.counts.get)
    shifted = served[served.map(lambda terms: common not in terms)]
    verdicts = [feature_drift(baseline, shifted.sample(200, random_state=seed).reset_index(drop=True),
                              DriftThresholds()) for seed in range(30)]
    assert np.mean([v.verdict == DRIFT for v in verdicts]) >= 0.9
    assert all(any(c["term"] == common for c in v.terms["changed"]) for v in verdicts)


def test_a_real_shift_is_still_drift(population):
    frame, data = population
    shift = frame["x"].std()
    verdicts = [feature_drift(data.features["x"], (frame["x"].sample(100, random_state=seed) + shift)
                              .reset_index(drop=True), DriftThresholds()).verdict for seed in range(50)]
    assert all(v == DRIFT for v in verdicts)


@pytest.fixture(scope="module")
def lab_feed():
    """A category, a lab measured for 40 % of training patients (never negative) and one measured for all."""
    rng = np.random.default_rng(3)
    n = 2000
    crp = rng.gamma(2, 20, n)
    crp[rng.random(n) < 0.6] = np.nan
    frame = pd.DataFrame({"raza": rng.choice(["otra", "blanca"], n), "crp": crp, "hb": rng.normal(13, 1.5, n)})
    schema = Schema("x", (Field("id", "string", role="id"), Field("raza", "category"), Field("crp", "number"),
                          Field("hb", "number"), Field("y", "category", role="target", values=("a", "b"))), ("a", "b"))
    return frame, parse_data_baseline(*data_baseline(frame, schema))


def _checks(results, kinds=("categorical_values_check", "completeness_check", "missing_column_check",
                            "data_type_check")):
    return {(r.name, v["constraint_check_type"]) for r in results for v in r.violations
            if v["constraint_check_type"] in kinds}


def test_each_constraint_check_names_what_a_window_broke(lab_feed):
    # SageMaker Model Monitor's checks, written to constraint_violations.json in its layout: a lab feed that sends a
    # new code, negative values or drops a column must be named there, by check, whatever the distributions do.
    frame, baseline = lab_feed
    rng = np.random.default_rng(4)
    m = 300
    window = pd.DataFrame({"raza": rng.choice(["otra", "blanca", "NUEVA"], m),  # a code training never saw
                           "crp": rng.gamma(2, 20, m) - 5.0,  # some negative now
                           "hb": [None] * m})  # gone from every record
    results = data_drift(baseline, window, DriftThresholds(), type_errors={"raza": 40})
    assert _checks(results) == {("raza", "categorical_values_check"), ("raza", "data_type_check"),
                                ("crp", "data_type_check"), ("hb", "completeness_check"), ("hb", "missing_column_check")}
    said = {(r.name, v["constraint_check_type"]): v["description"] for r in results for v in r.violations}
    new_codes = int((window["raza"] == "NUEVA").sum())
    assert said[("raza", "categorical_values_check")].startswith(f"{new_codes} values (") and "NUEVA" in said[
        ("raza", "categorical_values_check")]
    assert said[("crp", "data_type_check")] == f"{int((window['crp'] < 0).sum())} negative values; the baseline had none"
    assert said[("raza", "data_type_check")].startswith("40 values (13.3%) not of type")
    # A window drawn from training itself breaks none of them.
    clean = frame.sample(m, random_state=1).reset_index(drop=True)
    assert _checks(data_drift(baseline, clean, DriftThresholds())) == set()


@pytest.mark.parametrize("column, measured, now", [("crp", 1.0, "0.0%"),  # now measured for everyone
                                                   ("hb", 0.0, "100.0%")])  # no longer measured
def test_a_missing_rate_that_moves_either_way_is_drift(lab_feed, column, measured, now):
    # A lab that starts being filled in (a form's default, an imputation upstream) is as silent a shift as one that
    # stops: the rule is on the rate's distance, both ways.
    frame, baseline = lab_feed
    rng = np.random.default_rng(5)
    said = f"missing rate {frame[column].isna().mean():.1%} → {now}"
    values = frame[column].dropna().sample(200, random_state=2, replace=True).to_numpy()
    live = pd.Series(np.where(rng.random(200) < measured, values, np.nan))
    result = feature_drift(baseline.features[column], live, DriftThresholds())
    assert result.verdict == DRIFT and said in result.reasons, result.reasons


def test_psi_without_a_significant_test_is_no_verdict():
    # As a warning, PSI alone (≥ 0.25) warned in 95 % of clean 30-value samples of a numeric feature.
    th, reasons = DriftThresholds(), []
    assert _verdict(0.933, 0.36, th, "distribution", reasons) == OK and reasons == []
    assert _verdict(0.15, 0.001, th, "distribution", reasons) == DRIFT and "p = 0.001 < 0.01" in reasons[0]
    assert _verdict(0.05, 0.001, th, "distribution", []) == WARN  # a large window's slight, significant shift


# ------------------------------------------------------------------------------------------ D7: byte-order marks

@pytest.mark.parametrize("encoding, mark", [("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
                                            ("utf-16-be", codecs.BOM_UTF16_BE)])
def test_a_feedback_export_with_a_byte_order_mark_is_read(tmp_path, capsys, encoding, mark):
    # Line 1 was refused ("Unexpected UTF-8 BOM"); a UTF-16 export failed with a codec error.
    from diagnosa.cli import main

    path = tmp_path / "export.jsonl"
    text = '{"event_id": "a", "diagnosis": "NO ENFERMO"}\r\n{"event_id": "b", "diagnosis": "ENFERMEDAD LEVE"}\r\n'
    path.write_bytes(mark + text.encode(encoding))
    assert main(["--lake", str(tmp_path / "lake"), "feedback", "--file", str(path)]) == 0
    assert "2 stored, 0 refused" in capsys.readouterr().out
    assert set(read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest) == {("a", None), ("b", None)}
