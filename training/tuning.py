"""Hyperparameter search by stratified k-fold cross-validation, and the out-of-fold predictions it leaves.

One validation split where a rare class has 1-3 rows cannot tell two models apart, so training
pools the training and validation rows and cross-validates on the pool:

- **Folds** (``plan_folds``): stratified; k follows the smallest class m in the pool -- k = 3 when
  m >= 100 (every fold still holds >= 33 rows of it), k = ``max_folds`` (5) when 10 <= m < 100,
  k = max(2, min(max_folds, m)) and ``TINY_REPEATS`` (3) repeats with fresh shuffles when m < 10.
  A row's OOF probabilities are the mean over its repeats.
- **Rows** (``cv_rows``): pools above ``max_rows`` are subsampled for the search, stratified with a
  floor that keeps every row of a class smaller than ``max_rows / (2 k_classes)``; each kept row
  carries a weight restoring the pool's class mix (recall per class does not depend on it; precision,
  calibration and the decision weights do).
- **Budget** (``search_budget``): the search fits at most this many rows in total (summed over folds
  and configurations; default 12,000), so a 400-row table tries the whole grid (``max_configs``,
  default 6) and a 20,000-patient cohort (3,000 rows cross-validated, 3 folds) two configurations. The
  family's defaults -- with any hyperparameter the job was given -- always come first.
- **Score** of a configuration: OOF macro recall of the plain argmax, ties broken by worst-class
  recall, then by grid order.
- **Patients** (``groups``, a dataset with a patient column): a patient's rows are in one fold
  (StratifiedGroupKFold); the smallest class and k are counted in patients.

A fold whose training rows lack a class (possible only with classes of < k rows) is fitted on the
classes it has, and gives the missing one probability 0.

**Scored rows** (``scored``, ``plan_scored_folds``): when the feature transform was fitted with the
training split's labels (LDA), a training-split row scored out of fold is not out of sample -- the
transform already separated it -- so only the validation rows are scored: the folds are drawn over
them alone (k and repeats by their smallest class, as above, k at most their number), and every
training-split row sits on the fitting side of every fold. Within ``max_rows``: the scored rows keep
at most half (subsampled as ``cv_rows`` does, with weights restoring their class mix), the fitting
context the rest.

When every class has at least ``HOLDOUT_MIN_CLASS`` rows in the validation split, that split already
tells models apart, and cross-validating a subsample chose worse models than the full training rows
give (the 20k cohort's rarest class lost 0.09 recall that way, and training took 3-10x longer):
``holdout_search`` then fits each configuration on the training rows as delivered and scores it on
the validation rows, within the same row budget, and the fitted model is the one shipped.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from processing.decisions import decision_scores
from processing.split import patients_per_class
from processing.trainset import Rows
from training.models import adapt_to_rows, make_classifier, resolve_hyperparameters

DEFAULT_SEARCH_BUDGET = 12_000  # rows fitted by the search, over all folds and configurations
DEFAULT_MAX_CONFIGS = 6
DEFAULT_MAX_FOLDS = 5
DEFAULT_CV_MAX_ROWS = 3_000
HOLDOUT_MIN_CLASS = 50  # validation rows of the smallest class from which the split itself selects
TINY_CLASS = 10
LARGE_CLASS = 100
TINY_REPEATS = 3

# Per-family candidates, tried in this order after the defaults (each entry overrides the defaults).
GRIDS: dict[str, list[dict[str, Any]]] = {
    "logistic_regression": [{"C": 0.1}, {"C": 0.01}, {"C": 10.0}, {"C": 0.3}, {"C": 3.0}],
    "random_forest": [{"min_samples_leaf": 3}, {"max_depth": 8}, {"min_samples_leaf": 5, "max_depth": 12},
                      {"n_estimators": 500, "min_samples_leaf": 2}, {"max_depth": 4}],
    "xgboost": [{"max_depth": 3, "n_estimators": 200}, {"max_depth": 4, "learning_rate": 0.05, "subsample": 0.8,
                                                         "colsample_bytree": 0.8},
                {"max_depth": 2, "n_estimators": 300, "min_child_weight": 3.0}, {"max_depth": 6, "reg_lambda": 10.0},
                {"max_depth": 3, "learning_rate": 0.03, "n_estimators": 500}],
    "mlp": [{"alpha": 0.01}, {"hidden_layer_sizes": (64,), "alpha": 0.001}, {"alpha": 1.0, "hidden_layer_sizes": (64,)},
            {"hidden_layer_sizes": (256, 128), "alpha": 0.001}, {"alpha": 0.1}],
    "svm": [{"C": 0.1}, {"C": 10.0}, {"C": 0.3}, {"C": 3.0}, {"C": 30.0}],
    "gradient_boosting": [{"learning_rate": 0.05, "max_leaf_nodes": 15}, {"max_leaf_nodes": 7, "min_samples_leaf": 5},
                          {"learning_rate": 0.03, "max_iter": 500, "max_leaf_nodes": 15},
                          {"max_leaf_nodes": 63, "min_samples_leaf": 10}, {"max_leaf_nodes": 4, "min_samples_leaf": 3}],
}


@dataclass(frozen=True)
class FoldPlan:
    folds: list[tuple[np.ndarray, np.ndarray]]  # (fit rows, scored rows), over all repeats
    k: int
    repeats: int
    smallest_class: int


@dataclass
class SearchResult:
    hyperparameters: dict[str, Any]  # resolved, of the best configuration
    oof_proba: np.ndarray  # OOF probabilities of the best configuration, one per scored row (``rows``)
    rows: np.ndarray  # indices into the pool of the rows scored out of fold
    row_weight: np.ndarray  # weight per scored row restoring the class mix of the rows it stands for
    plan: FoldPlan
    trials: list[dict[str, Any]] = field(default_factory=list)  # per configuration: hyperparameters, scores
    context_rows: int = 0  # rows on the fitting side of every fold, never scored (``scored`` given)


def plan_folds(y: np.ndarray, *, max_folds: int = DEFAULT_MAX_FOLDS, seed: int = 0,
               groups: np.ndarray | None = None) -> FoldPlan:
    """Stratified folds with k adapted to the smallest class (see the module docstring); with ``groups`` (a
    patient key per row), a group's rows are in one fold."""
    y = np.asarray(y)
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if max_folds < 2:
        raise ValueError(f"max_folds must be at least 2, got {max_folds}")
    k, _ = _k_for(smallest, max_folds)
    if len(y) < 2 * k:
        raise ValueError(f"{len(y)} rows are too few for {k}-fold cross-validation")
    return plan_scored_folds(y, np.ones(len(y), dtype=bool), max_folds=max_folds, seed=seed,  # every row scored
                             groups=groups)


def _k_for(smallest: int, max_folds: int) -> tuple[int, int]:
    """(k, repeats) for a smallest class of ``smallest`` rows (the module docstring's rule)."""
    if smallest >= LARGE_CLASS:
        return min(3, max_folds), 1
    if smallest >= TINY_CLASS:
        return max_folds, 1
    return max(2, min(max_folds, smallest)), TINY_REPEATS


def plan_scored_folds(y: np.ndarray, scored: np.ndarray, *, max_folds: int = DEFAULT_MAX_FOLDS,
                      seed: int = 0, groups: np.ndarray | None = None) -> FoldPlan:
    """Stratified folds over the ``scored`` rows only; every other row is on the fitting side of every fold.

    k and the repeats follow the scored rows' smallest class (as ``plan_folds``), with k at most the number of
    scored rows: a class of one scored row gives k = 2, and a single scored row one "fold" fitted on the other
    rows alone. The fold indices are into ``y`` (all rows).

    ``groups`` (a patient key per row: a dataset whose patients have several rows): a patient's scored rows are
    in one fold (scikit-learn's StratifiedGroupKFold), so no row is scored by a fit that saw the same patient's
    other rows; the smallest class and k are then counted in patients, k at most their number. A scored
    patient's rows outside ``scored`` (the fitting context) leave every fold that scores the patient."""
    y, scored = np.asarray(y), np.asarray(scored, dtype=bool)
    if max_folds < 2:
        raise ValueError(f"max_folds must be at least 2, got {max_folds}")
    if scored.shape != y.shape or not scored.any():
        raise ValueError("scored must mark at least one of the rows, one flag per row")
    if groups is not None and np.shape(groups) != y.shape:
        raise ValueError(f"groups must hold one patient key per row ({len(y)}), got shape {np.shape(groups)}")
    scored_idx, context = np.flatnonzero(scored), np.flatnonzero(~scored)
    ys = y[scored_idx]
    if groups is None:
        counts = np.bincount(ys)
        units = len(ys)
    else:
        gs = np.asarray(groups)[scored_idx]
        counts = patients_per_class(ys, gs)
        units = len(np.unique(gs))
    smallest = int(counts[counts > 0].min())
    k, repeats = _k_for(smallest, max_folds)
    k = min(k, units)
    if k < 2:
        return FoldPlan([(context, scored_idx)], 1, 1, smallest)
    folds: list[tuple[np.ndarray, np.ndarray]] = []
    for r in range(repeats):
        # Wrapped: a Seed near 2**32 - 1 (the largest the pipeline takes) plus a repeat is past what numpy takes.
        state = (seed + r) % 2**32
        splitter = StratifiedKFold(k, shuffle=True, random_state=state) if groups is None else \
            StratifiedGroupKFold(k, shuffle=True, random_state=state)
        with warnings.catch_warnings():  # a class with fewer than k scored rows: the reason for repeats
            warnings.simplefilter("ignore", UserWarning)
            for fit, score in splitter.split(np.zeros(len(ys)), ys, None if groups is None else gs):
                fitted = np.sort(np.concatenate([context, scored_idx[fit]]))
                if groups is not None and len(context):
                    fitted = fitted[~np.isin(np.asarray(groups)[fitted], gs[score])]
                folds.append((fitted, scored_idx[score]))
    return FoldPlan(folds, k, repeats, smallest)


def cv_rows(y: np.ndarray, max_rows: int = DEFAULT_CV_MAX_ROWS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows to cross-validate (all when the pool is small) and weights restoring the pool's class mix."""
    y = np.asarray(y)
    if len(y) <= max_rows:
        return np.arange(len(y)), np.ones(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    floor = max_rows // (2 * len(classes))
    keep_small = np.minimum(counts, floor)
    budget_left = max_rows - keep_small.sum()
    extra = counts - keep_small
    share = np.floor(budget_left * extra / max(1, extra.sum())).astype(int)
    take = keep_small + share
    rows, weight = [], []
    for c, n_c, t in zip(classes, counts, take):
        members = np.flatnonzero(y == c)
        chosen = np.sort(rng.choice(members, size=int(t), replace=False)) if t < n_c else members
        rows.append(chosen)
        weight.append(np.full(len(chosen), n_c / len(chosen)))
    order = np.argsort(np.concatenate(rows))
    return np.concatenate(rows)[order], np.concatenate(weight)[order]


def candidate_configs(family: str, given: Mapping[str, Any] | None = None,
                      max_configs: int = DEFAULT_MAX_CONFIGS) -> list[dict[str, Any]]:
    """Resolved configurations to try: the defaults (+ ``given``) first, then the family's grid with
    ``given`` values always winning; duplicates dropped; at most ``max_configs``."""
    given = dict(given or {})
    out: list[dict[str, Any]] = []
    for entry in [{}, *GRIDS.get(family, [])]:
        config = resolve_hyperparameters(family, {**entry, **given})
        if config not in out:
            out.append(config)
        if len(out) >= max_configs:
            break
    return out


def fit_full_classes(estimator: Any, X: Rows, y: np.ndarray, w: np.ndarray, k: int) -> Callable[[Rows], np.ndarray]:
    """Fit on the classes present (relabelled 0..m-1, as xgboost requires); returns X -> k-column proba."""
    present = np.unique(y)
    remap = np.full(k, -1)
    remap[present] = np.arange(len(present))
    fitted = estimator.fit(X, remap[y], sample_weight=w)

    def predict(X_new: Rows) -> np.ndarray:
        out = np.zeros((X_new.shape[0], k))
        out[:, present[np.asarray(fitted.classes_, dtype=int)]] = fitted.predict_proba(X_new)
        return out

    return predict


def oof_proba(estimator: Any, X: Rows, y: np.ndarray, w: np.ndarray, plan: FoldPlan, k: int, *,
              shipped: np.ndarray | None = None) -> np.ndarray:
    """Out-of-fold probabilities: each row scored by the fits that did not see it, averaged over repeats.

    Each fold's copy is adapted to that fold's own rows (``adapt_to_rows``): a class of 3 rows in the pool has
    2 in a fold, and an estimator sized for 3 (the SVM's internal 3-fold calibration) fails there. ``shipped``:
    the labels of the rows the shipped model will fit (default ``y``), whose size decides what changes the model
    (the MLP's early stopping), so the folds train as the model they calibrate."""
    total = np.zeros((len(y), k))
    seen = np.zeros(len(y))
    for fit_rows, score_rows in plan.folds:
        fold_estimator = adapt_to_rows(clone(estimator), y[fit_rows], shipped=y if shipped is None else shipped)
        predict = fit_full_classes(fold_estimator, X[fit_rows], y[fit_rows], w[fit_rows], k)
        total[score_rows] += predict(X[score_rows])
        seen[score_rows] += 1
    # Rows no fold scores (the fitting context of ``plan_scored_folds``) stay 0.
    return np.divide(total, seen[:, None], out=np.zeros_like(total), where=seen[:, None] > 0)


def configs_within_budget(plan: FoldPlan, budget: int, max_configs: int) -> int:
    """How many configurations the row budget allows (at least one): each costs the rows its folds fit (every row
    k-1 times per repeat when all are scored; the fitting context k times when only some are)."""
    per_config = sum(len(fit) for fit, _ in plan.folds)
    return max(1, min(max_configs, int(budget // max(1, per_config))))


def scored_rows(y: np.ndarray, scored: np.ndarray, max_rows: int = DEFAULT_CV_MAX_ROWS,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows kept for a search that scores only the ``scored`` rows: (kept rows ascending, whether each is scored,
    the scored rows' weights restoring their class mix). At most ``max_rows`` in all: the scored rows up to half,
    the others (the fitting context) the rest, each subsampled as ``cv_rows`` does."""
    scored = np.asarray(scored, dtype=bool)
    scored_idx, context_idx = np.flatnonzero(scored), np.flatnonzero(~scored)
    pick, weight = cv_rows(y[scored_idx], max(1, max_rows // 2), seed)
    keep_scored = scored_idx[pick]
    if len(context_idx):
        keep_context = context_idx[cv_rows(y[context_idx], max(1, max_rows - len(keep_scored)), seed)[0]]
    else:
        keep_context = context_idx
    rows = np.concatenate([keep_scored, keep_context])
    order = np.argsort(rows)
    rows, is_scored = rows[order], np.r_[np.ones(len(keep_scored), bool), np.zeros(len(keep_context), bool)][order]
    return rows, is_scored, weight  # weight follows keep_scored, which is ascending like rows[is_scored]


def search(family: str, X: Rows, y: np.ndarray, w: np.ndarray, k: int, *,
           given: Mapping[str, Any] | None = None, seed: int = 0, budget: int = DEFAULT_SEARCH_BUDGET,
           max_configs: int = DEFAULT_MAX_CONFIGS, max_folds: int = DEFAULT_MAX_FOLDS,
           max_rows: int = DEFAULT_CV_MAX_ROWS, shipped: np.ndarray | None = None,
           scored: np.ndarray | None = None, groups: np.ndarray | None = None) -> SearchResult:
    """Cross-validate ``family``'s candidate configurations on (X, y, w); the best one's OOF predictions.
    ``shipped``: the labels of the rows the chosen model is then fitted on (default ``y``; see ``oof_proba``).
    ``scored`` (one flag per row): score only those rows out of fold, the others always on the fitting side
    (``plan_scored_folds``); the result's rows and OOF probabilities are then the scored rows' only.
    ``groups`` (a patient key per row): a patient's rows are in one fold (``plan_scored_folds``)."""
    if scored is None:
        rows, row_weight = cv_rows(y, max_rows, seed)
        is_scored = np.ones(len(rows), dtype=bool)
    else:
        scored = np.asarray(scored, dtype=bool)
        if scored.shape != y.shape:
            raise ValueError(f"scored must hold one flag per row ({len(y)}), got shape {scored.shape}")
        rows, is_scored, row_weight = scored_rows(y, scored, max_rows, seed)
    Xs, ys, ws = X[rows], y[rows], w[rows]
    gs = None if groups is None else np.asarray(groups)[rows]
    plan = plan_folds(ys, max_folds=max_folds, seed=seed, groups=gs) if scored is None else \
        plan_scored_folds(ys, is_scored, max_folds=max_folds, seed=seed, groups=gs)
    configs = candidate_configs(family, given, max_configs)[:configs_within_budget(plan, budget, max_configs)]
    y_scored = ys[is_scored]
    best: tuple[tuple[float, float, int], dict[str, Any], np.ndarray] | None = None
    trials = []
    for i, config in enumerate(configs):
        estimator = make_classifier(family, config, seed=seed)
        proba = oof_proba(estimator, Xs, ys, ws, plan, k, shipped=y if shipped is None else shipped)[is_scored]
        s = decision_scores(y_scored, proba.argmax(axis=1), k)
        trials.append({"hyperparameters": _jsonable(config), "macro_recall": s.macro_recall,
                       "worst_class_recall": s.worst_recall})
        rank = (round(s.macro_recall, 12), round(s.worst_recall, 12), -i)
        if best is None or rank > best[0]:
            best = (rank, config, proba)
    assert best is not None
    return SearchResult(best[1], best[2], rows[is_scored], row_weight, plan, trials, int((~is_scored).sum()))


def _jsonable(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def describe_plan(plan: FoldPlan, n_rows: int, n_configs: int) -> str:
    return (f"{plan.k}-fold x {plan.repeats} repeat(s) on {n_rows} rows (smallest class {plan.smallest_class}), "
            f"{n_configs} configuration(s), {n_configs * len(plan.folds)} fits")




@dataclass
class HoldoutResult:
    hyperparameters: dict[str, Any]  # resolved, of the best configuration
    estimator: Any  # fitted on the training rows
    proba: np.ndarray  # its probabilities for the validation rows
    trials: list[dict[str, Any]] = field(default_factory=list)


def use_holdout(y_val: np.ndarray, k: int, min_class: int = HOLDOUT_MIN_CLASS) -> bool:
    """Whether every class has enough validation rows for the split itself to select and calibrate."""
    return bool(np.bincount(y_val, minlength=k).min() >= min_class)


def holdout_search(family: str, X: Rows, y: np.ndarray, w: np.ndarray, X_val: Rows, y_val: np.ndarray,
                   k: int, *, given: Mapping[str, Any] | None = None, seed: int = 0,
                   budget: int = DEFAULT_SEARCH_BUDGET, max_configs: int = DEFAULT_MAX_CONFIGS,
                   n_rows: int | None = None,
                   fit: Callable[[Any, Rows, np.ndarray, np.ndarray], Any] | None = None) -> HoldoutResult:
    """Fit ``family``'s candidate configurations on (X, y, w) and score them on the validation rows
    (same score as ``search``); at most ``budget`` training rows fitted in total, at least one config.

    Across hosts (training/distributed.py) (X, y, w) is this host's shard: ``n_rows`` is the training rows of
    all hosts (so every host tries the same configurations) and ``fit(estimator, X, y, w)`` fits across them."""
    configs = candidate_configs(family, given, max_configs)
    configs = configs[: max(1, min(max_configs, budget // max(1, len(y) if n_rows is None else n_rows)))]
    best: tuple[tuple[float, float, int], dict[str, Any], Any, np.ndarray] | None = None
    trials = []
    for i, config in enumerate(configs):
        estimator = adapt_to_rows(make_classifier(family, config, seed=seed), y)
        estimator = estimator.fit(X, y, sample_weight=w) if fit is None else fit(estimator, X, y, w)
        proba = np.asarray(estimator.predict_proba(X_val), dtype=float)
        s = decision_scores(y_val, proba.argmax(axis=1), k)
        trials.append({"hyperparameters": _jsonable(config), "macro_recall": s.macro_recall,
                       "worst_class_recall": s.worst_recall})
        rank = (round(s.macro_recall, 12), round(s.worst_recall, 12), -i)
        if best is None or rank > best[0]:
            best = (rank, config, estimator, proba)
    assert best is not None
    return HoldoutResult(best[1], best[2], best[3], trials)
