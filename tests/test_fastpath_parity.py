"""Served = evaluated: the endpoint's handler, on its compiled fast path, answers every test-split patient with
exactly the probabilities and decisions Evaluate scored (``evaluate_model``), for real models of each family the
fast path serves, fitted by the real Preprocess and Train jobs on the small generated cohort.

The fast path once standardised the float32 similarity columns in float64 and rounded afterwards: 1 ulp off
sklearn's float32 arithmetic, on a value (similarity 0) that sits on an XGBoost split, so served categories
differed from Evaluate's (inference/fastpath.py). These tests hold the whole chain to the bit, and the load-time
guard to its word: any difference means the plain pipeline serves."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from diagnosa.model import DiagnosaModel
from inference import fastpath
from inference.handler import JSON, invoke, limit_threads, load_service
from processing import evaluate as evaluate_job
from processing.split import read_split, read_train_groups

pytestmark = pytest.mark.slow

# Families trained here beside the session's logistic regression and XGBoost (conftest: trained_model_dir,
# xgboost_model_dir); every hyperparameter fixed and small, so the search fits one configuration, quickly.
OTHER_FAMILIES: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 20, "max_depth": 10, "min_samples_leaf": 2},
    "gradient_boosting": {"max_iter": 10, "learning_rate": 0.2, "max_leaf_nodes": 7, "min_samples_leaf": 20},
    "mlp": {"hidden_layer_sizes": "16", "alpha": 1e-4, "learning_rate_init": 1e-3, "max_iter": 15},
}


@pytest.fixture(scope="module")
def model_dirs(trained_model_dir, xgboost_model_dir, tmp_path_factory):
    """``model_dirs(family)``: (model folder, its Preprocess output, the test split among it). The session's
    logistic regression and XGBoost (conftest), or a model the Train job's library function fits here on the
    XGBoost model's Preprocess output."""
    found = {family: (Path(d), Path(d).parent / "pre" / "output")
             for family, d in (("logistic_regression", trained_model_dir), ("xgboost", xgboost_model_dir))}

    def get(family: str) -> tuple[Path, Path]:
        if family not in found:
            from training.train import SearchSettings, save_model, train

            out = found["xgboost"][1]
            result = train(out / "train", out / "validation", out / "transformer", family, OTHER_FAMILIES[family], 0,
                           settings=SearchSettings(max_folds=3))
            target = tmp_path_factory.mktemp(f"parity-{family}") / "model"
            save_model(result.model, target)
            found[family] = (target, out)
        return found[family]

    return get


def _evaluated(model_dir: Path, test: pd.DataFrame, train_groups: Any, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated probabilities and the decisions ``evaluate_model`` scores, as the Evaluate job loads the model."""
    seen: dict[str, Any] = {}
    real = evaluate_job.evaluate

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen["proba"], seen["decided"] = np.array(args[1]), np.array(kwargs["predicted"])
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_job, "evaluate", spy)
    evaluate_job.evaluate_model(DiagnosaModel.load(model_dir), test, train_groups)
    monkeypatch.undo()
    return seen["proba"], seen["decided"]


def _plain(value: Any) -> Any:
    """A test-split cell as a client writes it in JSON (numbers exactly: json writes a float's shortest repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(x) for x in value]
    if value is None or pd.isna(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def _records(test: pd.DataFrame, accepted: list[str]) -> list[dict[str, Any]]:
    fields = [c for c in accepted if c in test.columns]
    return [{k: _plain(v) for k, v in row.items()} for row in test[fields].to_dict("records")]


class _Served:
    """Calls ``invoke`` and keeps, per call, the unrounded probabilities the handler computed (it renders them
    rounded to 6 decimals) and the categories it answered."""

    def __init__(self, service: Any, monkeypatch):
        self.service = service
        self.proba: list[np.ndarray] = []
        real = service.model.predict_proba_features

        def spy(X: Any, classifier: Any = None) -> np.ndarray:
            out = real(X, classifier)
            self.proba.append(out)
            return out

        monkeypatch.setattr(service.model, "predict_proba_features", spy)

    def __call__(self, records: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        self.proba.clear()
        body, _ = invoke(self.service, json.dumps({"instances": records, "top_k": 1}).encode(), JSON, JSON)
        assert len(self.proba) == 1, "the handler did not score on its fast path"
        return self.proba[0], json.loads(body)["predictions"]


@pytest.mark.parametrize("family", ["xgboost", "logistic_regression", *OTHER_FAMILIES])
def test_the_endpoint_serves_what_evaluate_scored_for_every_test_patient(family, model_dirs, monkeypatch):
    model_dir, out = model_dirs(family)
    test = read_split(out / "test")
    proba, decided = _evaluated(model_dir, test, read_train_groups(out / "test"), monkeypatch)
    service = load_service(str(model_dir))
    assert service.fast is not None, "the fast path must serve this family, or this test tests nothing"
    labels = service.model.labels
    records = _records(test, service.schema.accepted)
    served = _Served(service, monkeypatch)

    # The whole split in one request (Evaluate's batch): the same category for every patient, the same
    # probabilities to the bit, and in the JSON Evaluate's probabilities rounded to the handler's 6 decimals.
    got, answers = served(records)
    assert len(answers) == len(test) > 200
    assert [a["category"] for a in answers] == [labels[d] for d in decided]
    if family == "random_forest":
        # Evaluate's forest sums its trees' probabilities on every core, in the order the threads finish: its
        # own probabilities vary by ~4e-16 from one call to the next. The endpoint scores on one thread
        # (handler.limit_threads): to the bit what Evaluate gives on one thread.
        np.testing.assert_allclose(got, proba, rtol=0, atol=1e-15)
        one_thread = DiagnosaModel.load(model_dir)
        limit_threads(one_thread)
        proba = one_thread.predict_proba(test)
    assert np.array_equal(got, proba), f"max |served - evaluated| {np.abs(got - proba).max():.3g}"
    if family != "random_forest":
        assert [[a["probabilities"][label] for label in labels] for a in answers] == np.round(proba, 6).tolist()

    # One patient per request, as the endpoint mostly sees them: the same decision for every patient, and the
    # same probabilities to the bit, but for the MLP. Its hidden layers are float32 matrix products whose rounding
    # depends on the number of rows, in the sklearn pipeline as much as on the fast path (up to 5e-7 between one
    # patient and the split at once, 1.3e-6 once calibrated): there, to the bit what the pipeline gives for that one
    # patient.
    one = np.vstack([served([record])[0] for record in records])
    assert np.array_equal(service.model.decide(one), decided)
    if family == "mlp":
        np.testing.assert_allclose(one, proba, rtol=0, atol=1e-5)
        alone = np.vstack([service.model.predict_proba(test.iloc[[i]]) for i in range(0, len(test), 20)])
        assert np.array_equal(one[::20], alone)
    else:
        assert np.array_equal(one, proba), f"max |served - evaluated| {np.abs(one - proba).max():.3g}"


def test_the_load_time_guard_refuses_a_fast_path_one_ulp_off(xgboost_model_dir, caplog):
    """The fast path with the old arithmetic (similarity standardised in float64, rounded once): its features are
    off by 1 ulp, so the loader serves the sklearn pipeline instead, and says why."""
    model = DiagnosaModel.load(xgboost_model_dir)
    good = load_service(str(xgboost_model_dir))
    assert good.fast is not None and isinstance(good.classifier, fastpath._XGBoostOnDenseRows)
    probes = [dict.fromkeys(good.columns)]

    class Float64Scaling(fastpath._Standardise):
        def __call__(self, X: np.ndarray) -> np.ndarray:
            return X if self.scaler is None else (X - self.scaler.mean_) / self.scaler.scale_

    real = fastpath._Similarity.__init__

    def old_init(self: Any, column: str, similarity: Any, scaler: Any = None) -> None:
        real(self, column, similarity, scaler)
        self.scaler = Float64Scaling(scaler, len(similarity.get_feature_names_out()))

    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING, logger="diagnosa.fastpath"):
        patch.setattr(fastpath._Similarity, "__init__", old_init)
        assert fastpath.compile_model(model, probes, good.columns) == (None, None)
        served = load_service(str(xgboost_model_dir))
    assert served.fast is None and served.classifier is None
    assert "differs from the sklearn transform" in caplog.text


def test_the_load_time_guard_compares_probabilities_not_only_features(trained_model_dir, caplog):
    """Features equal to the bit are not enough: logistic regression on the compiled path's dense rows sums in
    another order than on the pipeline's CSR and differs in the last bits. Such a stand-in is refused; the loader
    hands the classifier CSR rows instead (its own arithmetic replicated, or, where that differs, sklearn's call),
    and where nothing matches, serves the pipeline."""
    model = DiagnosaModel.load(trained_model_dir)
    service = load_service(str(trained_model_dir))
    assert service.fast is not None and service.fast.sparse
    assert isinstance(service.classifier, fastpath._LogisticOnCsrRows)
    probes = [dict.fromkeys(service.columns)]
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.INFO, logger="diagnosa.fastpath"):
        # the replica one ulp off in one probability: refused, the classifier's own call on the CSR rows serves
        real = fastpath._LogisticOnCsrRows.predict_proba
        patch.setattr(fastpath._LogisticOnCsrRows, "predict_proba",
                      lambda self, X: np.nextafter(real(self, X), 1.0) if len(X) > 1 else real(self, X))
        _, stand_in = fastpath.compile_model(model, probes, service.columns)
        assert isinstance(stand_in, fastpath._OnCsrRows)
        assert "_LogisticOnCsrRows not used: its probabilities differ" in caplog.text
        patch.setattr(fastpath, "_stand_ins", lambda classifier, compiled: [None])  # dense rows only
        assert fastpath.compile_model(model, probes, service.columns) == (None, None)
    assert "probabilities differ from the pipeline's" in caplog.text


def test_fitted_probes_reach_the_similarity_columns_at_their_common_value(trained_model_dir):
    """Among the probe records built from the fitted blocks: patients with no symptoms (similarity 0, the columns'
    commonest value), with known terms, every category, numbers missing and imputed."""
    service = load_service(str(trained_model_dir))
    probes = fastpath.fitted_probes(service.fast, service.columns)
    assert len(probes) == fastpath.FITTED_PROBES
    assert sum(not p["symptoms"] for p in probes) >= 6 and sum(len(p["symptoms"]) >= 3 for p in probes) >= 20
    [indicator] = [b for b in service.fast.blocks if isinstance(b, fastpath._Indicators) and b.column == "symptoms"]
    vocabulary = set(indicator.indicator.vocabulary_)
    assert all(set(p["symptoms"]) <= vocabulary for p in probes)
    assert {p["sex"] for p in probes} >= set(service.categories["sex"]) | {None}
    assert any(p["age"] is None for p in probes) and len({p["age"] for p in probes}) >= 5
