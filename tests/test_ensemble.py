"""Select's ensemble of candidates: the procedures on out-of-fold probabilities, the vote model, the Select job."""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from diagnosa.data.schema import Schema
from diagnosa.model import DATA_METADATA, OOF_FILE, DiagnosaModel, apply_calibration
from inference.handler import limit_threads
from processing import ensemble
from processing.select import ENSEMBLE_NAME, gather_evidence, load_candidates, main

LABELS = ["a", "b", "c"]


def one_hot(index: np.ndarray, k: int, confidence: float) -> np.ndarray:
    """Probabilities putting ``confidence`` on ``index`` and the rest spread evenly."""
    proba = np.full((len(index), k), (1 - confidence) / (k - 1))
    proba[np.arange(len(index)), index] = confidence
    return proba


def specialists(n: int = 600, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two candidates that each know two of three classes well and guess on the third, plus a weak one:
    their mean finds all three (each specialist alone misses a third of the rows)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    guess = rng.integers(0, 3, n)
    knows_ab = one_hot(np.where(y == 2, guess, y), 3, 0.6)
    knows_bc = one_hot(np.where(y == 0, (guess + 1) % 3, y), 3, 0.6)
    knows_ab[y == 2] = 1 / 3 + rng.normal(0, 0.01, (int((y == 2).sum()), 3))  # unsure where it does not know
    knows_bc[y == 0] = 1 / 3 + rng.normal(0, 0.01, (int((y == 0).sum()), 3))
    weak = one_hot(rng.integers(0, 3, n), 3, 0.5)
    norm = lambda p: np.clip(p, 1e-6, None) / np.clip(p, 1e-6, None).sum(axis=1, keepdims=True)  # noqa: E731
    return {"ab": norm(knows_ab), "bc": norm(knows_bc), "weak": weak}, y


# ------------------------------------------------------------------------------------------------
# The procedures


def test_evidence_refuses_rows_that_do_not_line_up():
    y = np.array([0, 1, 2, 0])
    with pytest.raises(ValueError, match="all be 4 x k"):
        ensemble.Evidence({"x": np.full((4, 3), 1 / 3), "y": np.full((3, 3), 1 / 3)}, y)
    with pytest.raises(ValueError, match="labels must lie in"):
        ensemble.Evidence({"x": np.full((4, 2), 0.5)}, y)
    with pytest.raises(ValueError, match="integer array"):
        ensemble.Evidence({"x": np.full((4, 3), 1 / 3)}, y.astype(float))


def test_complementary_candidates_are_combined():
    proba, y = specialists()
    evidence = ensemble.Evidence(proba, y)
    rows = np.arange(len(y))
    alone = max(ensemble.recall_scores(y, p.argmax(axis=1), 3)[0] for p in proba.values())
    weights = ensemble.stacked_weights(evidence, rows)
    assert {"ab", "bc"} <= set(weights) and sum(weights.values()) == pytest.approx(1.0)
    together = ensemble.recall_scores(y, ensemble.mix(proba, weights).argmax(axis=1), 3)[0]
    assert together == 1.0 > alone + 0.15
    choice = ensemble.choose(evidence)
    assert choice.use_ensemble and choice.procedure == "stacked"
    assert choice.gain[choice.procedure] > ensemble.MARGIN_Z * choice.standard_error[choice.procedure]
    assert choice.cross_fitted[choice.procedure] > choice.cross_fitted["single"] + 0.15


def test_one_good_candidate_stays_alone():
    rng = np.random.default_rng(1)
    y = np.arange(300) % 3
    good = one_hot(np.where(rng.random(300) < 0.9, y, (y + 1) % 3), 3, 0.8)
    noise = {f"noise{i}": one_hot(rng.integers(0, 3, 300), 3, 0.7) for i in range(2)}
    choice = ensemble.choose(ensemble.Evidence({"good": good, **noise}, y))
    assert not choice.use_ensemble
    assert choice.procedure == "single" and choice.weights == {"good": 1.0}


def test_stacked_weights_drop_a_useless_member():
    proba, y = specialists()
    proba["useless"] = np.full_like(proba["ab"], 1 / 3)
    weights = ensemble.stacked_weights(ensemble.Evidence(proba, y), np.arange(len(y)))
    assert "useless" not in weights and min(weights.values()) >= ensemble.MIN_WEIGHT


def test_halves_are_stratified_and_cover_every_row():
    y = np.r_[np.zeros(7, int), np.ones(4, int), np.full(9, 2)]
    (a, b), (c, d) = ensemble._halves(y, seed=3)
    assert np.array_equal(np.sort(np.r_[a, b]), np.arange(len(y))) and np.array_equal(a, d) and np.array_equal(b, c)
    for cls in range(3):
        assert abs((y[a] == cls).sum() - (y[b] == cls).sum()) <= 1


# ------------------------------------------------------------------------------------------------
# The vote model


def test_probability_vote_is_the_weighted_mean_of_calibrated_members():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    linear = LogisticRegression().fit(X, y)
    trees = HistGradientBoostingClassifier(max_iter=20).fit(X[y < 2], y[y < 2])  # never saw class 2
    calibrations = [{"temperature": 2.0, "bias": None}, None]
    vote = ensemble.ProbabilityVote([linear, trees], calibrations, [0.25, 0.75], 3)
    expected_trees = np.zeros((len(X), 3))
    expected_trees[:, :2] = trees.predict_proba(X)
    expected = 0.25 * apply_calibration(linear.predict_proba(X), calibrations[0]) + 0.75 * expected_trees
    assert np.allclose(vote.predict_proba(X), expected)
    assert np.allclose(vote.predict_proba(X).sum(axis=1), 1.0)
    assert np.array_equal(vote.predict(X), expected.argmax(axis=1))
    with pytest.raises(ValueError, match="sum to 1"):
        ensemble.ProbabilityVote([linear, trees], calibrations, [0.5, 0.6], 3)


def test_the_vote_keeps_scikit_learns_contract_for_an_estimator_never_fitted():
    # A probe ran scikit-learn's own machinery on it: clone() gave unfitted members under a vote that said it was
    # fitted (cross-validation or a grid search over an ensemble artifact failed), set_params(n_labels=3) left two
    # classes beside three columns, and set_params(weights=[-5.0]) gave negative probabilities.
    from sklearn.base import clone, is_classifier
    from sklearn.utils.validation import check_is_fitted

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    vote = ensemble.ProbabilityVote([LogisticRegression().fit(X, y), LogisticRegression(C=0.1).fit(X, y)],
                                    [None, None], [0.5, 0.5], 3)
    copy = clone(vote)
    check_is_fitted(copy)
    assert copy is not vote and copy.members[0] is not vote.members[0] and is_classifier(copy)
    assert np.array_equal(copy.predict_proba(X), vote.predict_proba(X))
    copy.set_params(n_labels=4)
    assert list(copy.classes_) == [0, 1, 2, 3] and copy.predict_proba(X).shape == (90, 4)
    for bad, problem in (({"weights": [-5.0, 6.0]}, "positive and sum to 1"), ({"n_labels": 1}, "at least 2 labels"),
                         ({"weights": [1.0]}, "one weight per member")):
        with pytest.raises(ValueError, match=problem):
            clone(vote).set_params(**bad)


def test_dense_batches_fit_a_data_frame_by_its_rows_and_refuse_weights_for_other_rows():
    # X[rows] took a DataFrame's columns: fitted on the first 40 of 50 columns, it failed only when predicting; a
    # weight per row given for fewer rows was cut short without a word.
    from processing.features import DenseBatches

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(50, 6)), columns=[f"c{i}" for i in range(6)])
    y = np.arange(50) % 2
    fitted = DenseBatches(LogisticRegression(), max_fit_cells=40 * 6, batch_rows=7).fit(frame, y)
    assert fitted.fit_rows_ == 40 and fitted.estimator_.n_features_in_ == 6
    assert np.allclose(fitted.predict_proba(frame), DenseBatches(LogisticRegression(), max_fit_cells=40 * 6)
                       .fit(frame.to_numpy(), y).predict_proba(frame.to_numpy()))
    with pytest.raises(ValueError, match="sample_weight"):
        DenseBatches(LogisticRegression()).fit(frame, y, sample_weight=np.ones(30))


def test_serving_limits_the_members_threads():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 2)), np.arange(60) % 3
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=5, n_jobs=-1, random_state=0).fit(X, y)
    vote = ensemble.ProbabilityVote([LogisticRegression().fit(X, y), forest], [None, None], [0.5, 0.5], 3)
    model = DiagnosaModel(Pipeline([("features", StandardScaler().fit(X)), ("classifier", vote)]), LABELS)
    limit_threads(model, 1)
    assert forest.n_jobs == 1


# ------------------------------------------------------------------------------------------------
# The Select job


def candidate(folder: Path, classifier: object, X: pd.DataFrame, y: np.ndarray, family: str) -> Path:
    """A real model saved as training saves it: fitted pipeline, out-of-fold probabilities, validation summary."""
    pipeline = Pipeline([("features", StandardScaler()), ("classifier", classifier)])
    oof = cross_val_predict(pipeline, X, y, cv=5, method="predict_proba")
    pipeline.fit(X, y)
    summary = ensemble.summary(y, oof.argmax(axis=1), LABELS)
    meta = {"family": family, "hyperparameters": {}, "seed": 0, "labels": LABELS,
            "fingerprint": {"preprocess": "fp", "train_npz_sha256": "0" * 64}, "validation": summary,
            "calibration": {"temperature": 1.0, "bias": None}, "decision_weights": dict.fromkeys(LABELS, 1.0)}
    DiagnosaModel(pipeline, LABELS, meta, oof={"proba": oof, "y": y}).save(folder)
    with tarfile.open(folder.parent / f"{folder.name}.tar.gz", "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return folder.parent / f"{folder.name}.tar.gz"


def two_views(n: int = 300) -> tuple[pd.DataFrame, np.ndarray]:
    """Class c where v is high; otherwise a or b by the sign of u. A model that reads only u cannot find c, one
    that reads only v cannot tell a from b: each alone misses about a third of the rows, their mean far fewer."""
    rng = np.random.default_rng(4)
    X = pd.DataFrame(rng.normal(size=(n, 2)), columns=["u", "v"])
    y = np.where(X["v"] > 0.4, 2, (X["u"] > 0).astype(int))
    X["u"] += 2 * np.sign(X["u"])  # a gap between the classes each view can tell apart
    X["v"] += 2 * (X["v"] > 0.4)
    return X, y


def reads(column: int, classifier: object) -> Pipeline:
    """``classifier`` on one column of the features."""
    return Pipeline([("view", ColumnTransformer([("pick", "passthrough", [column])])), ("model", classifier)])


def test_select_builds_a_servable_ensemble(tmp_path):
    X, y = two_views()
    base = tmp_path / "processing"
    for name, classifier in (("by_u", reads(0, LogisticRegression())),
                             ("by_v", reads(1, HistGradientBoostingClassifier(max_iter=30))),
                             ("flat", LogisticRegression(C=1e-4))):
        tarball = candidate(tmp_path / "models" / name, classifier, X, y, name)
        target = base / "input" / "candidates" / name / "model.tar.gz"
        target.parent.mkdir(parents=True)
        tarball.replace(target)
    assert main(["--base-dir", str(base)]) == 0

    selection = json.loads((base / "output" / "selection" / "selection.json").read_text(encoding="utf-8"))
    assert selection["ensemble"]["considered"] and selection["ensemble"]["use_ensemble"]
    assert selection["champion"] == ENSEMBLE_NAME
    weights = selection["ensemble"]["weights"]
    assert sum(weights.values()) == pytest.approx(1.0) and {"by_u", "by_v"} <= set(weights)
    extracted = tmp_path / "champion"
    with tarfile.open(base / "output" / "champion" / "model.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(extracted, filter="data")
    assert {"model.joblib", "metadata.json", OOF_FILE} <= set(names) and any(n.startswith("code/") for n in names)
    model = DiagnosaModel.load(extracted)
    assert model.metadata["family"] == ENSEMBLE_NAME
    assert [m["name"] for m in model.metadata["members"]] == list(weights)
    members = {name: DiagnosaModel.load(tmp_path / "models" / name) for name in weights}
    mean = sum(w * members[name].predict_proba(X) for name, w in weights.items())
    # The vote's own temperature, fitted on its out-of-fold probabilities, sharpens the mean of its members.
    calibration = model.metadata["calibration"]
    assert calibration["temperature"] < 1.0
    expected = apply_calibration(mean, calibration)
    assert np.allclose(model.predict_proba(X), expected)
    assert model.predict(X) == [LABELS[i] for i in model.decide(expected)]
    assert model.metadata["calibration_oof"]["after"]["ece"] < model.metadata["calibration_oof"]["before"]["ece"]
    assert model.metadata["validation"]["macro_recall"] > max(
        m.metadata["validation"]["macro_recall"] for m in members.values()) + 0.1


def test_the_ensemble_parameter_never_keeps_the_single_champion(tmp_path, capsys):
    """Where serving one model matters more than the vote's gain: the same candidates that make a vote above."""
    X, y = two_views()
    base = tmp_path / "processing"
    for name, classifier in (("by_u", reads(0, LogisticRegression())),
                             ("by_v", reads(1, HistGradientBoostingClassifier(max_iter=30)))):
        target = base / "input" / "candidates" / name / "model.tar.gz"
        target.parent.mkdir(parents=True)
        candidate(tmp_path / "models" / name, classifier, X, y, name).replace(target)
    assert main(["--base-dir", str(base), "--ensemble", "never"]) == 0
    selection = json.loads((base / "output" / "selection" / "selection.json").read_text(encoding="utf-8"))
    assert selection["ensemble"] == {"considered": False, "reason": "the pipeline's Ensemble parameter is 'never'"}
    assert selection["champion"] == selection["ranking"][0]["name"] != ENSEMBLE_NAME
    with tarfile.open(base / "output" / "champion" / "model.tar.gz") as tar:
        meta = json.load(tar.extractfile("metadata.json"))
    assert meta["family"] == selection["champion"]
    shutil.rmtree(base / "output")  # a run's outputs: the next run writes its own
    assert main(["--base-dir", str(base), "--ensemble", "auto"]) == 0  # the same candidates: the vote wins
    assert json.loads((base / "output" / "selection" / "selection.json").read_text())["champion"] == ENSEMBLE_NAME
    with pytest.raises(SystemExit) as exit_:
        main(["--base-dir", str(base), "--ensemble", "always"])
    assert exit_.value.code == 2 and "invalid choice: 'always'" in capsys.readouterr().err


def test_select_without_out_of_fold_rows_picks_by_the_rule(tmp_path):
    X, y = two_views()
    base = tmp_path / "processing"
    for name, classifier in (("linear", reads(0, LogisticRegression())),
                             ("trees", reads(1, HistGradientBoostingClassifier(max_iter=30)))):
        folder = tmp_path / "models" / name
        candidate(folder, classifier, X, y, name)
        if name == "trees":
            (folder / OOF_FILE).unlink()  # a model trained before candidates kept their out-of-fold rows
        target = base / "input" / "candidates" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.replace(target)
    assert main(["--base-dir", str(base)]) == 0
    selection = json.loads((base / "output" / "selection" / "selection.json").read_text(encoding="utf-8"))
    assert selection["ensemble"] == {"considered": False, "reason": "no out-of-fold probabilities from trees"}
    assert selection["champion"] == selection["ranking"][0]["name"]


def test_an_ensemble_of_real_candidates_serves_through_the_handler(tmp_path, trained_model_dir, xgboost_model_dir,
                                                                    vote_of):
    """Two candidates the preprocess and train jobs made on the small cohort, combined as Select combines them,
    answer through the endpoint's handler with the vote's calibrated probabilities."""
    from inference.handler import invoke, load_service

    folder = vote_of(tmp_path, {"logistic_regression": trained_model_dir, "xgboost": xgboost_model_dir},
                     {"logistic_regression": 0.4, "xgboost": 0.6})
    service = load_service(str(folder))
    patient = {"patient_id": "A1", "age": 67, "sex": "M", "temperature_c": 38.9, "heart_rate_bpm": 112,
               "spo2_pct": 90, "crp_mg_l": 180.0, "symptoms": ["HP:0001945", "HP:0012735"]}
    [answer] = json.loads(invoke(service, json.dumps(patient), "application/json", None)[0])["predictions"]
    members = {name: DiagnosaModel.load(folder) for name, folder in (("logistic_regression", trained_model_dir),
                                                                      ("xgboost", xgboost_model_dir))}
    features = Schema.from_dict(members["xgboost"].metadata["schema"]).features()
    frame = pd.DataFrame([{name: patient.get(name) for name in features}])  # the fields a request leaves out: None
    mean = 0.4 * members["logistic_regression"].predict_proba(frame) + 0.6 * members["xgboost"].predict_proba(frame)
    vote = DiagnosaModel.load(folder)
    expected = apply_calibration(mean, vote.metadata["calibration"])
    labels = members["xgboost"].labels
    assert [answer["probabilities"][label] for label in labels] == pytest.approx(expected[0].tolist(), abs=1e-4)
    assert answer["category"] == labels[int(vote.decide(expected)[0])]


def test_the_vote_keeps_what_its_members_say_of_their_data(tmp_path, trained_model_dir, xgboost_model_dir,
                                                            curated_cohort, vote_of):
    """The vote serves the data its members were fitted on: the metadata that describes it is theirs. A vote champion
    lost the training rows' number spreads once, and its endpoint answered what each member's refused
    (tests/test_extreme_numbers.py serves one)."""
    vote = DiagnosaModel.load(vote_of(tmp_path, {"logistic_regression": trained_model_dir,
                                                 "xgboost": xgboost_model_dir},
                                      {"logistic_regression": 0.5, "xgboost": 0.5}))
    member = DiagnosaModel.load(trained_model_dir)
    described = [key for key in DATA_METADATA if key in member.metadata]
    assert {"number_spreads", "split_rows", "schema", "dataset", "n_train"} <= set(described)
    assert {key: vote.metadata.get(key) for key in described} == {key: member.metadata[key] for key in described}
    # Every key a trained model records is the vote's own or its data's: none is left behind unnoticed.
    assert set(member.metadata) - set(vote.metadata) == {"search", "train_seconds", "search_seconds"}

    # Its report says where its calibration was fitted: by Select, on the vote's own out-of-fold probabilities.
    from processing.calibration import report_lines
    from processing.evaluate import evaluate_model

    frame = curated_cohort[0].head(400)
    for model, fitted, before in ((vote, "on the vote's own out-of-fold probabilities, by Select",
                                   "before calibration (the members' weighted mean)"),
                                  (member, "out of fold at training", "before calibration (classifier)")):
        honest = evaluate_model(model, frame)["diagnosa"]["honest"]
        assert honest["calibration"]["fitted"] == fitted
        text = "\n".join(report_lines(honest, tmp_path)[0])
        assert f"(fitted {fitted})." in text and f"| {before} |" in text


def skewed_views(n: int = 900) -> tuple[pd.DataFrame, np.ndarray]:
    """Class c (~11 % of the rows) where a noisy v is high: plainly weighted models call it too rarely."""
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(n, 2)), columns=["u", "v"])
    y = np.where(X["v"] > 1.2, 2, (X["u"] > 0).astype(int))
    X["v"] += rng.normal(0, 0.6, n)
    X["u"] += rng.normal(0, 0.5, n)
    return X, y


def test_the_vote_gets_decision_weights_fitted_on_its_own_out_of_fold_rows(tmp_path):
    """As a candidate's training job does for its model (processing/decisions.py): weights that, cross-fitted on the
    vote's out-of-fold rows, find significantly more of the worst class are shipped and applied when served."""
    from processing.select import build_ensemble

    X, y = skewed_views()
    root = tmp_path / "candidates"
    root.mkdir()
    for name, classifier in (("linear", LogisticRegression()), ("trees", HistGradientBoostingClassifier(max_iter=40))):
        candidate(tmp_path / "models" / name, classifier, X, y, name).unlink()
        (tmp_path / "models" / name).replace(root / name)
    candidates = load_candidates(root)
    evidence, reason = gather_evidence(candidates)
    assert evidence is not None, reason
    weights = {"linear": 0.5, "trees": 0.5}
    meta = build_ensemble(candidates, weights, evidence, ensemble.EnsembleChoice("stacked", weights),
                          tmp_path / "vote")
    plain = ensemble.mix(evidence.proba, weights).argmax(axis=1)
    assert ensemble.class_recalls(y, plain, 3)[2] < 0.6  # the mean alone misses c ...
    validation = meta["validation"]
    assert validation["plain_argmax"]["worst_class_recall"]["label"] == "c"
    assert validation["per_class_recall"]["c"] > validation["plain_argmax"]["worst_class_recall"]["recall"] + 0.15
    assert validation["macro_recall"] > validation["plain_argmax"]["macro_recall"]  # ... the weights, cross-fitted, not
    decision = meta["decision_weights"]
    assert decision["c"] > max(decision["a"], decision["b"])
    model = DiagnosaModel.load(tmp_path / "vote")
    proba = model.predict_proba(X)
    assert model.predict(X) == [LABELS[i] for i in (proba * [decision[label] for label in LABELS]).argmax(axis=1)]
    assert sum(label == "c" for label in model.predict(X)) > int((proba.argmax(axis=1) == 2).sum())


def test_the_out_of_fold_rows_weights_and_slice_reach_the_vote_only_when_the_candidates_share_them(tmp_path):
    X, y = two_views()
    root = tmp_path / "candidates"
    root.mkdir()
    flags = np.arange(len(y)) % 5 == 0
    for name, classifier, w in (("linear", reads(0, LogisticRegression()), np.full(len(y), 2.0)),
                                ("trees", reads(1, HistGradientBoostingClassifier(max_iter=30)), np.full(len(y), 2.0))):
        folder = tmp_path / "models" / name
        candidate(folder, classifier, X, y, name).unlink()
        model = DiagnosaModel.load(folder)
        model.oof |= {"w": w, "groups": flags}
        model.save(folder)
        folder.replace(root / name)
    evidence, _ = gather_evidence(load_candidates(root))
    assert evidence is not None
    np.testing.assert_array_equal(evidence.weight, np.full(len(y), 2.0))
    np.testing.assert_array_equal(evidence.groups, flags)
    other = DiagnosaModel.load(root / "trees")
    other.oof["w"] = np.ones(len(y))
    other.save(root / "trees")
    evidence, _ = gather_evidence(load_candidates(root))
    assert evidence is not None and evidence.weight is None
    np.testing.assert_array_equal(evidence.groups, flags)
    with pytest.raises(ValueError, match="groups must hold one entry per row"):
        ensemble.Evidence(evidence.proba, y, groups=flags[:-1])
    other.oof["w"] = np.ones(len(y) - 1)
    other.save(root / "trees")
    with pytest.raises(ValueError, match="candidate 'trees'.*'w' must hold one entry per row"):
        gather_evidence(load_candidates(root))


def test_a_candidate_named_like_the_vote_keeps_the_rule(tmp_path):
    X, y = two_views()
    root = tmp_path / "candidates"
    root.mkdir()
    for name, classifier in ((ENSEMBLE_NAME, reads(0, LogisticRegression())),
                             ("trees", reads(1, HistGradientBoostingClassifier(max_iter=30)))):
        candidate(tmp_path / "models" / name, classifier, X, y, name).unlink()  # the folder, not its tarball
        (tmp_path / "models" / name).replace(root / name)
    evidence, reason = gather_evidence(load_candidates(root))
    assert evidence is None and "named 'ensemble'" in reason


def test_a_broken_out_of_fold_file_stops_select_naming_the_candidate(tmp_path, caplog):
    X, y = two_views()
    base = tmp_path / "processing"
    for name, classifier in (("linear", reads(0, LogisticRegression())),
                             ("trees", reads(1, HistGradientBoostingClassifier(max_iter=30)))):
        candidate(tmp_path / "models" / name, classifier, X, y, name).unlink()
        target = base / "input" / "candidates" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / name).replace(target)
    (base / "input" / "candidates" / "trees" / OOF_FILE).write_bytes(b"not a zip archive")
    with caplog.at_level("ERROR", logger="processing.select"):
        assert main(["--base-dir", str(base)]) == 1
    assert "candidate 'trees': oof.npz is not readable" in caplog.text
    assert not (base / "output" / "champion" / "model.tar.gz").exists()
