"""The model families training may fit, each with a typed table of tunable hyperparameters.

SageMaker hands every hyperparameter over as a string, and a typo in a tuning job's ranges would
otherwise surface as an obscure error deep inside a library (or, worse, be silently ignored). So
each family declares its hyperparameters once here -- type, default, valid range -- and
``make_classifier`` parses, checks and fills in defaults before building the estimator.

Every estimator returned exposes ``predict_proba`` and takes ``sample_weight`` in ``fit``: class
weights are delivered as per-row sample weights for every family (one mechanism), so no family
sets ``class_weight`` itself.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from xgboost import XGBClassifier

from diagnosa.data.validate import shown
from diagnosa.text import some_of
from processing.features import DenseBatches, SparseIndicators

FAMILIES: tuple[str, ...] = ("logistic_regression", "random_forest", "xgboost", "mlp", "svm", "gradient_boosting")
MAX_SEED = 2**32 - 1  # numpy and xgboost both accept seeds in [0, 2**32)


@dataclass(frozen=True)
class Param:
    """One tunable hyperparameter: ``kind`` is "int", "float" or "int_list" (e.g. "128,64")."""

    kind: str
    default: Any
    low: float
    high: float
    low_inclusive: bool = True
    help: str = ""

    def describe(self) -> str:
        left = "[" if self.low_inclusive else "("
        what = "comma-separated integers each in" if self.kind == "int_list" else self.kind + " in"
        return f"{what} {left}{_fmt(self.low)}, {_fmt(self.high)}]"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


PARAMS: dict[str, dict[str, Param]] = {
    "logistic_regression": {
        "C": Param("float", 1.0, 0.0, 1e6, low_inclusive=False, help="inverse L2 regularisation strength"),
        "max_iter": Param("int", 2000, 1, 100_000),
        "kernel_components": Param("int", 0, 0, 5000, help="0 = linear in the features; n > 0 = on n Nystroem "
                                                           "landmarks of an RBF kernel (gamma 1/n_features)"),
    },
    "random_forest": {
        "n_estimators": Param("int", 300, 1, 5000),
        "max_depth": Param("int", 0, 0, 1000, help="0 = grow until leaves are pure"),
        "min_samples_leaf": Param("int", 1, 1, 10_000),
    },
    "xgboost": {
        "n_estimators": Param("int", 300, 1, 5000),
        "max_depth": Param("int", 6, 1, 20),
        "learning_rate": Param("float", 0.1, 0.0, 1.0, low_inclusive=False),
        "subsample": Param("float", 1.0, 0.0, 1.0, low_inclusive=False),
        "colsample_bytree": Param("float", 1.0, 0.0, 1.0, low_inclusive=False),
        "min_child_weight": Param("float", 1.0, 0.0, 1000.0),
        "reg_lambda": Param("float", 1.0, 0.0, 1000.0),
    },
    "mlp": {
        "hidden_layer_sizes": Param("int_list", (128, 64), 1, 4096, help="neurons per hidden layer, e.g. 128,64"),
        "alpha": Param("float", 1e-4, 0.0, 10.0),
        "learning_rate_init": Param("float", 1e-3, 0.0, 1.0, low_inclusive=False),
        "max_iter": Param("int", 200, 1, 10_000),
    },
    "svm": {
        "C": Param("float", 1.0, 0.0, 1e6, low_inclusive=False),
        "gamma": Param("float", 0.0, 0.0, 1e3, help="RBF kernel width; 0 = 1/n_features"),
        "n_components": Param("int", 500, 10, 5000, help="Nystroem landmarks approximating the RBF kernel"),
    },
    "gradient_boosting": {
        "max_iter": Param("int", 300, 1, 5000),
        "learning_rate": Param("float", 0.1, 0.0, 1.0, low_inclusive=False),
        "max_leaf_nodes": Param("int", 31, 2, 4096),
        "min_samples_leaf": Param("int", 20, 1, 10_000),
    },
}
MAX_HIDDEN_LAYERS = 10
# XGBoost fits the features as CSR with the indicators' zeros left out (the dense model's trees, faster);
# benchmarks/bench_train.py --compare-dense switches this off to time the dense fit beside it.
XGBOOST_SPARSE = True


class WeightedPipeline(Pipeline):
    """A Pipeline whose ``fit`` takes ``sample_weight`` and hands it to the final step.

    A plain Pipeline refuses ``fit(X, y, sample_weight=...)`` unless global metadata routing is
    switched on; the weights belong to the estimator (the feature map ignores them).
    """

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, **params: Any) -> WeightedPipeline:
        if sample_weight is not None:
            params[f"{self.steps[-1][0]}__sample_weight"] = sample_weight
        return super().fit(X, y, **params)


def _check_family(family: str) -> None:
    if family not in PARAMS:
        raise ValueError(f"unknown model family {family!r} (expected one of: {', '.join(FAMILIES)})")


def decode_transported(value: Any) -> Any:
    """Undo SageMaker's string transport of hyperparameters: '"300"' -> '300' (JSON-encoded twice) -> 300;
    text that is not JSON ('xgboost', '64, 32') stays as it is."""
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except ValueError:
            break
    return value


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            number = float(text)  # "3e2" / "300.0" from a tuner; ValueError if not a number
            if number.is_integer():
                return int(number)
    raise TypeError


def _parse_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise TypeError
    if not math.isfinite(number):
        raise TypeError
    return number


def _parse_int_list(value: Any) -> tuple[int, ...]:
    if isinstance(value, (int, float, bool)) and not isinstance(value, bool):
        return (_parse_int(value),)
    if isinstance(value, str):
        text = value.strip().strip("()[]")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise TypeError
        return tuple(_parse_int(p) for p in parts)
    if isinstance(value, (list, tuple)) and value:
        return tuple(_parse_int(v) for v in value)
    raise TypeError


_PARSERS: dict[str, Callable[[Any], Any]] = {"int": _parse_int, "float": _parse_float, "int_list": _parse_int_list}
_KIND_NAMES = {"int": "an integer", "float": "a finite number", "int_list": "comma-separated integers (e.g. 128,64)"}


def _parse(family: str, name: str, spec: Param, raw: Any) -> Any:
    value = decode_transported(raw)
    try:
        parsed = _PARSERS[spec.kind](value)
    except (TypeError, ValueError):
        raise ValueError(f"{family}: hyperparameter '{name}' must be {_KIND_NAMES[spec.kind]}, got {raw!r}") from None
    numbers = parsed if spec.kind == "int_list" else (parsed,)
    if spec.kind == "int_list" and len(numbers) > MAX_HIDDEN_LAYERS:
        raise ValueError(f"{family}: hyperparameter '{name}' has {len(numbers)} entries, at most "
                         f"{MAX_HIDDEN_LAYERS} allowed")
    for number in numbers:
        below = number < spec.low if spec.low_inclusive else number <= spec.low
        if below or number > spec.high:
            raise ValueError(f"{family}: hyperparameter '{name}' out of range: {raw!r} is not "
                             f"{spec.describe()}")
    return parsed


def resolve_hyperparameters(family: str, hyperparameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parsed and range-checked hyperparameters with defaults filled in (what the model is built with)."""
    _check_family(family)
    table = PARAMS[family]
    given = dict(hyperparameters or {})
    unknown = sorted(set(given) - set(table))
    if unknown:
        raise ValueError(f"{family}: unknown hyperparameter(s) {some_of(shown(u, 80) for u in unknown)} "
                         f"(allowed: {', '.join(table)})")
    return {name: _parse(family, name, spec, given[name]) if name in given else spec.default
            for name, spec in table.items()}


def check_seed(seed: Any) -> int:
    """The seed as an int in [0, 2**32); the error names the bad value."""
    try:
        value = _parse_int(decode_transported(seed))
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an integer, got {seed!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed out of range: {seed!r} is not in [0, {MAX_SEED}]")
    return value


# The gradient-boosting family's dense sample: 2**25 cells, every row of the 20k cohort (14k training rows x 745
# features, 10.4M cells) and ~27k of the 100k cohort's 70k. On every row it was the longest job at 100k (181 s alone,
# 2.3 GB; xgboost 14 s): the pipeline took 275 s against a goal of 120 s. On 27k rows it takes 75-83 s and 1.2 GB
# (~42 s without the columns no tree can split: DenseBatches' min_leaf_rows); the model alone loses 0.010 macro
# recall, the champion (a vote in both runs) 0.001, at most 4 patients in a class (docs/architecture.md "Performance").
GBM_FIT_MAX_CELLS = 2**25


def make_classifier(family: str, hyperparameters: Mapping[str, Any] | None = None, *, seed: int = 0) -> Any:
    """An unfitted classifier of ``family``; deterministic given ``seed``."""
    hp = resolve_hyperparameters(family, hyperparameters)
    seed = check_seed(seed)
    if family == "logistic_regression":
        linear = LogisticRegression(C=hp["C"], max_iter=hp["max_iter"], random_state=seed)
        if not hp["kernel_components"]:
            return linear
        # Kernel logistic regression, approximated: the multinomial model on RBF features. Fitted alone on the
        # real tables (docs/benchmark-real.md) it found neurocog's overlapping diagnoses better than gradient
        # boosting, and unlike the one-vs-rest svm it keeps pbc's middle stage (one softmax over all classes).
        return WeightedPipeline([("kernel", Nystroem(kernel="rbf", n_components=hp["kernel_components"],
                                                     random_state=seed)), ("logistic_regression", linear)])
    if family == "random_forest":
        return RandomForestClassifier(n_estimators=hp["n_estimators"], max_depth=hp["max_depth"] or None,
                                      min_samples_leaf=hp["min_samples_leaf"], n_jobs=-1, random_state=seed)
    if family == "xgboost":
        # The features as CSR with the 0/1 indicators' zeros left out: the same trees as on the dense matrix,
        # at a cost that follows a patient's findings rather than the vocabulary (processing.features.SparseIndicators).
        booster = XGBClassifier(
            n_estimators=hp["n_estimators"], max_depth=hp["max_depth"], learning_rate=hp["learning_rate"],
            subsample=hp["subsample"], colsample_bytree=hp["colsample_bytree"],
            min_child_weight=hp["min_child_weight"], reg_lambda=hp["reg_lambda"], tree_method="hist", n_jobs=-1,
            random_state=seed)
        return WeightedPipeline([("sparse", SparseIndicators()), ("xgboost", booster)]) if XGBOOST_SPARSE else booster
        # No objective: XGBClassifier takes multi:softprob for 3+ classes and binary:logistic for two
        # (a fixed multi:softprob fails on a two-label dataset: "num_class should be greater equal to 1").
    if family == "mlp":
        # Dense rows (processing.features.DenseBatches), although the MLP takes CSR: on CSR its matrix products
        # round differently, and over hundreds of Adam steps that grew into another model (20k cohort, seed 0:
        # test recall of a class 0.028 apart; the same spread as changing the seed). Dense rows keep the model
        # of before up to 2**27 cells (the 20k and 100k cohorts' every row); beyond, a stratified sample
        # (~100k rows at a million patients) also bounds its cost: an update rewrites the dense first-layer
        # weights (features x 128) however sparse the batch, 360 s for all 700k rows there.
        return DenseBatches(MLPClassifier(hidden_layer_sizes=hp["hidden_layer_sizes"], alpha=hp["alpha"],
                                          learning_rate_init=hp["learning_rate_init"], max_iter=hp["max_iter"],
                                          early_stopping=True, random_state=seed), random_state=seed)
    if family == "svm":
        # Not SVC(probability=True): on 14,000 x 300 float32 rows, 5 classes, this 2-core machine it took
        # 203 s (33 s without probabilities; Platt scaling adds an internal 5-fold CV), it scales
        # ~quadratically with rows, and sklearn 1.9 deprecates ``probability``. An RBF kernel approximated
        # by Nystroem landmarks + a linear SVM, calibrated by 3-fold sigmoid, took 16 s on the same data.
        # The weights go to CalibratedClassifierCV, which uses them both for LinearSVC and the calibration.
        return WeightedPipeline([
            ("kernel", Nystroem(kernel="rbf", gamma=hp["gamma"] or None, n_components=hp["n_components"],
                                random_state=seed)),
            ("svm", CalibratedClassifierCV(LinearSVC(C=hp["C"], random_state=seed), method="sigmoid", cv=3)),
        ])
    # gradient_boosting: histogram GBM, sklearn's fast one; early stopping turns on above 10k rows. It takes
    # dense rows only: fitted on a bounded row sample (GBM_FIT_MAX_CELLS), scored in row batches
    # (processing.features.DenseBatches).
    return DenseBatches(HistGradientBoostingClassifier(max_iter=hp["max_iter"], learning_rate=hp["learning_rate"],
                                                       max_leaf_nodes=hp["max_leaf_nodes"],
                                                       min_samples_leaf=hp["min_samples_leaf"], random_state=seed),
                        max_fit_cells=GBM_FIT_MAX_CELLS, random_state=seed, min_leaf_rows=hp["min_samples_leaf"])


def adapt_to_rows(estimator: Any, y: Any, *, shipped: Any = None) -> Any:
    """Adjust a family's estimator to tiny classes among the rows it will be fitted on (same object back).

    ``shipped`` (optional): the labels of the rows the shipped model is fitted on, when ``y`` is a cross-validation
    fold of them. A choice that changes what the model learns (the MLP's early stopping) follows those rows, so the
    fold models whose out-of-fold probabilities calibrate the shipped model train as it does; a choice that keeps
    the fit possible (the SVM's calibration folds) follows ``y``.

    - MLP: early stopping scores epochs on a stratified 10 % of the rows it is given (balanced accuracy, the rows
      being class-weighted) and keeps the best epoch. With fewer than ``MLP_EARLY_STOPPING_MIN_HOLDOUT`` rows of
      some class in that tenth, an epoch's score is mostly luck (a class of 7 rows moves it by 0.07 a row) and it
      is switched off: the model trains its ``max_iter`` epochs, and the search's ``alpha`` regularises it.
    - SVM: its internal sigmoid calibration (which only turns margins into probabilities; training
      calibrates the result out of fold) is a stratified 3-fold CV; a class of 2 rows gets 2 folds, a
      class of 1 row one split that fits and calibrates on all rows.
    """
    import numpy as np

    def smallest_class(labels: Any) -> int:
        counts = np.bincount(np.asarray(labels, dtype=int))
        return int(counts[counts > 0].min()) if counts.size else 0

    smallest = smallest_class(y)
    mlp = estimator.estimator if isinstance(estimator, DenseBatches) else estimator  # cloned from it at fit
    if isinstance(mlp, MLPClassifier) and mlp.early_stopping and smallest_class(
            y if shipped is None else shipped) * mlp.validation_fraction < MLP_EARLY_STOPPING_MIN_HOLDOUT:
        mlp.set_params(early_stopping=False)
    if isinstance(estimator, Pipeline) and isinstance(estimator.steps[-1][1], CalibratedClassifierCV):
        calibrated = estimator.steps[-1][1]
        if smallest == 2:
            calibrated.set_params(cv=2)
        elif smallest < 2:  # one split, fitted and calibrated in sample (training recalibrates out of fold)
            rows = np.arange(len(y))
            calibrated.set_params(cv=[(rows, rows)])
    return estimator


# Rows of the smallest class early stopping's holdout needs (200 in the rows fitted, at sklearn's 10 %). At 2 (the
# rule before: 20 rows fitted), indo_rct's refitted MLP kept its first epoch (best holdout score at epoch 1 of 12):
# test macro recall 0.30 where its out-of-fold estimate was 0.63 (docs/benchmark-real.md, "Held-out tables").
MLP_EARLY_STOPPING_MIN_HOLDOUT = 20


def portable(estimator: Any) -> Any:
    """The fitted estimator as stock sklearn objects, so an artifact unpickles without this module.

    ``WeightedPipeline`` only matters while fitting; its fitted steps in a plain Pipeline predict the same.
    """
    if isinstance(estimator, WeightedPipeline):
        return Pipeline(list(estimator.steps))
    return estimator
