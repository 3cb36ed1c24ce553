"""Out-of-fold post-processing: probability calibration and per-class decision weights.

Both are fitted on out-of-fold (OOF) predictions -- each row scored by a model that never saw it
(``training/tuning.py``) -- and shipped as plain numbers in the model's metadata, where
``diagnosa.model.apply_calibration`` / ``diagnosa.model.decide`` apply them at serving time.

Calibration: temperature scaling of the log-probabilities, ``softmax(log p / T + b)``, fitted by
minimising the (optionally row-weighted) OOF log loss. The default is temperature alone (``b`` = 0):
one parameter, safe with a class of a handful of rows, and it never changes the argmax. A per-class
bias (``method="temperature_bias"``, or ``"auto"``: with the bias when every class has at least
``BIAS_MIN_CLASS_ROWS`` OOF rows) also undoes the prior shift class-weighted training puts into the
probabilities; on the 20k cohort it moved decisions away from the rare class (ENFERMEDAD TERMINAL
test recall 0.930 -> 0.860 together with the decision weights), so it is not the default. The
decision weights are fitted on the calibrated probabilities, and kept only when, cross-fitted
(fitted on one half of the OOF rows, scored on the other), they find significantly more of the worst
class (McNemar, two standard errors of the paired change) without lowering macro recall
(``weights_pay_off``); otherwise they are all 1.

Decision weights: ``w`` (one per class), prediction = argmax(w * calibrated p). Fitted by
coordinate search over log-weights to maximise the worst class's recall, ties broken by macro
recall, subject to macro precision staying within ``max_precision_loss`` (default 0.05) of the plain
argmax's. Recall per class does not depend on class priors; precision does, so rows carry optional
``sample_weight`` (e.g. restoring the natural class mix of a subsample).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from diagnosa.model import apply_calibration, decide
from processing.split import patients_per_class

BIAS_MIN_CLASS_ROWS = 30
MAX_PRECISION_LOSS = 0.05
LOG_WEIGHT_GRID = np.round(np.linspace(-3.0, 3.0, 61), 3)  # weights from e^-3 (0.05) to e^3 (20)
MAX_ROUNDS = 8
MIN_CELL_ROWS = 20  # a class inside a group (e.g. the orphan slice) counts as its own cell from this many rows
WEIGHTS_Z = 2.0  # standard errors a cross-fitted (paired) worst-class gain must exceed for the weights to be kept


def _check(proba: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> tuple[np.ndarray, np.ndarray,
                                                                                         np.ndarray]:
    proba, y = np.asarray(proba, dtype=float), np.asarray(y, dtype=np.int64)
    if proba.ndim != 2 or y.shape != (len(proba),) or len(y) == 0:
        raise ValueError(f"need an n x k probability matrix and n labels, got {proba.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= proba.shape[1]:
        raise ValueError(f"labels must lie in [0, {proba.shape[1]})")
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if w.shape != y.shape or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("sample_weight must be n finite, non-negative numbers, not all zero")
    return proba, y, w


# ------------------------------------------------------------------------------------------------
# Calibration


def fit_calibration(proba: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None,
                    method: str = "temperature") -> dict[str, Any]:
    """Fit {"method", "temperature", "bias"} on OOF probabilities; method "auto", "temperature" or
    "temperature_bias" ("auto" = temperature_bias when every class has >= BIAS_MIN_CLASS_ROWS rows)."""
    proba, y, w = _check(proba, y, sample_weight)
    k = proba.shape[1]
    if method not in ("auto", "temperature", "temperature_bias"):
        raise ValueError(f"calibration method must be auto, temperature or temperature_bias, got {method!r}")
    counts = np.bincount(y, minlength=k)
    if method == "auto":
        method = "temperature_bias" if counts.min() >= BIAS_MIN_CLASS_ROWS else "temperature"
    logp = np.log(np.clip(proba, 1e-12, 1.0))
    # As served (diagnosa.model.apply_calibration): a class the classifier gave no probability stays impossible, and
    # a row whose true class is one is wrong whatever the temperature, so it weighs nothing in the fit. The fit
    # scored such classes as 1e-12 instead: 0.2 % of rows so made the temperature 0.49 where the served
    # probabilities' best was 0.31 (a probe, session 68).
    impossible = proba <= 0
    w = np.where(impossible[np.arange(len(y)), y], 0.0, w)
    if w.sum() <= 0:
        return {"method": method, "temperature": 1.0, "bias": None}
    w = w / w.sum()
    rows = np.arange(len(y))
    with_bias = method == "temperature_bias"

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t = np.exp(-theta[0])
        bias = np.zeros(k)
        if with_bias:
            bias[1:] = theta[1:]
            bias[0] = -theta[1:].sum()
        z = np.where(impossible, -np.inf, logp * inv_t + bias)
        z -= z.max(axis=1, keepdims=True)
        q = np.exp(z)
        q /= q.sum(axis=1, keepdims=True)
        value = -(w * np.log(np.clip(q[rows, y], 1e-300, None))).sum()
        residual = q.copy()
        residual[rows, y] -= 1.0  # d loss / d z, per row
        residual *= w[:, None]
        grad_t = -(residual * np.where(impossible, 0.0, logp) * inv_t).sum()
        grad_b = residual.sum(axis=0)
        grad = np.concatenate([[grad_t], grad_b[1:] - grad_b[0]]) if with_bias else np.array([grad_t])
        return float(value), grad

    start = np.zeros(k if with_bias else 1)
    bounds = [(np.log(0.05), np.log(20.0))] + [(-10.0, 10.0)] * (k - 1 if with_bias else 0)
    fitted = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    theta = fitted.x if np.isfinite(fitted.fun) else start
    bias = None
    if with_bias:
        b = np.concatenate([[-theta[1:].sum()], theta[1:]])
        bias = [float(v) for v in b]
    return {"method": method, "temperature": float(np.exp(theta[0])), "bias": bias}


# ------------------------------------------------------------------------------------------------
# Decision weights


@dataclass(frozen=True)
class DecisionScores:
    recall: np.ndarray  # per class (NaN for a class without rows)
    precision: np.ndarray  # per class present in y (0 when never predicted)
    macro_recall: float
    worst_recall: float
    macro_precision: float


def decision_scores(y: np.ndarray, pred: np.ndarray, k: int, sample_weight: np.ndarray | None = None
                    ) -> DecisionScores:
    """Recall and precision per class of predictions ``pred`` (row-weighted), over classes present in y."""
    y, pred = np.asarray(y), np.asarray(pred)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    truth = np.bincount(y, weights=w, minlength=k)
    predicted = np.bincount(pred, weights=w, minlength=k)
    hits = np.bincount(y[y == pred], weights=w[y == pred], minlength=k)
    present = truth > 0
    recall = np.where(present, hits / np.where(present, truth, 1), np.nan)
    precision = np.where(predicted > 0, hits / np.where(predicted > 0, predicted, 1), 0.0)
    return DecisionScores(recall, precision, float(np.nanmean(recall[present])), float(np.nanmin(recall[present])),
                          float(precision[present].mean()))


def cells(y: np.ndarray, groups: np.ndarray | None, k: int, min_rows: int = MIN_CELL_ROWS) -> list[np.ndarray]:
    """Row masks whose recall the decision weights look after: each class, and each class inside each
    group (e.g. the orphan slice and the rest) with at least ``min_rows`` rows."""
    y = np.asarray(y)
    out = [y == c for c in range(k) if (y == c).any()]
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups must have one entry per row ({len(y)}), got shape {groups.shape}")
        for g in np.unique(groups):
            for c in range(k):
                mask = (y == c) & (groups == g)
                if min_rows <= mask.sum() < (y == c).sum():  # a class wholly in one group is already a cell
                    out.append(mask)
    return out


def worst_cell(y: np.ndarray, pred: np.ndarray, masks: list[np.ndarray]) -> tuple[float, int]:
    """The lowest recall over the cells (each cell's rows share one class) and that cell's index."""
    recalls = [float(np.mean(pred[m] == y[m])) for m in masks]
    i = int(np.argmin(recalls))
    return recalls[i], i


def fit_decision_weights(proba: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, *,
                         max_precision_loss: float = MAX_PRECISION_LOSS, groups: np.ndarray | None = None) -> np.ndarray:
    """Per-class weights maximising the worst recall over ``cells`` (each class; with ``groups``, also
    each class inside each group), then macro recall, of argmax(w * p), with macro precision at most
    ``max_precision_loss`` below the plain argmax's. Weights are normalised so their geometric mean is 1;
    all ones when nothing beats the plain argmax."""
    proba, y, w = _check(proba, y, sample_weight)
    masks = cells(y, groups, proba.shape[1])
    if not 0 <= max_precision_loss <= 1:
        raise ValueError(f"max_precision_loss must lie in [0, 1], got {max_precision_loss}")
    k = proba.shape[1]
    logp = np.log(np.clip(proba, 1e-12, 1.0))
    base = decision_scores(y, logp.argmax(axis=1), k, w)
    floor = base.macro_precision - max_precision_loss - 1e-12
    # Each cell's rows (they share one class), as indices: a cell's recall costs its rows, not a pass over all.
    cell_rows = [(np.flatnonzero(m), int(y[m][0])) for m in masks]

    def key(pred: np.ndarray) -> tuple[float, float] | None:
        s = decision_scores(y, pred, k, w)
        if s.macro_precision < floor:
            return None
        worst = min(float(np.mean(pred[rows] == c)) for rows, c in cell_rows)
        return round(worst, 12), round(s.macro_recall, 12)

    log_w = np.zeros(k)
    best = key((logp + log_w).argmax(axis=1))
    assert best is not None  # the plain argmax meets its own bound
    for _ in range(MAX_ROUNDS):
        improved = False
        for j in range(k):
            # Only weight j moves: the other classes' best score and its (first) column are fixed, and
            # argmax(logp + w) is j exactly when j's score beats it, or ties it from an earlier column.
            others = logp + log_w
            others[:, j] = -np.inf
            rival, rival_score = others.argmax(axis=1), others.max(axis=1)
            candidates = []
            for value in LOG_WEIGHT_GRID:
                score_j = logp[:, j] + value
                pred = np.where((score_j > rival_score) | ((score_j == rival_score) & (j < rival)), j, rival)
                score = key(pred)
                if score is not None:
                    candidates.append((score, -abs(value), value))
            if not candidates:
                continue
            score, _, value = max(candidates)
            if score > best:
                best, log_w[j], improved = score, value, True
        if not improved:
            break
    log_w -= log_w.mean()
    return np.exp(log_w)


def cross_fitted_predictions(proba: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, *,
                             max_precision_loss: float = MAX_PRECISION_LOSS, seed: int = 0,
                             groups: np.ndarray | None = None, patients: np.ndarray | None = None) -> np.ndarray:
    """Decisions scored honestly: weights fitted on one half of the OOF rows decide the other half (2-fold,
    stratified where every class has two rows; ``patients``, a patient key per row: a patient's rows in one
    half, where every class has two patients). Used to compare candidates after their decision weights."""
    proba, y, w = _check(proba, y, sample_weight)
    counts = np.bincount(y, minlength=proba.shape[1])
    if patients is not None and np.shape(patients) != y.shape:
        raise ValueError(f"patients must hold one key per row ({len(y)}), got shape {np.shape(patients)}")
    if patients is not None:
        by_patient = patients_per_class(y, patients, proba.shape[1])
        if by_patient[by_patient > 0].min() < 2:
            patients = None  # too few patients to stratify by them: by row, as before
    if patients is not None:
        folds = StratifiedGroupKFold(2, shuffle=True, random_state=seed).split(proba, y, patients)
    elif counts[counts > 0].min() >= 2:
        folds = StratifiedKFold(2, shuffle=True, random_state=seed).split(proba, y)
    else:
        order = np.random.default_rng(seed).permutation(len(y))
        folds = [(order[len(y) // 2:], order[: len(y) // 2]), (order[: len(y) // 2], order[len(y) // 2:])]
    pred = proba.argmax(axis=1)
    for fit_rows, score_rows in folds:
        weights = fit_decision_weights(proba[fit_rows], y[fit_rows], w[fit_rows],
                                       max_precision_loss=max_precision_loss,
                                       groups=None if groups is None else np.asarray(groups)[fit_rows])
        pred[score_rows] = decide(proba[score_rows], weights)
    return pred


def weights_pay_off(y: np.ndarray, plain: np.ndarray, crossed: np.ndarray, k: int,
                    sample_weight: np.ndarray | None = None, *, z: float = WEIGHTS_Z,
                    groups: np.ndarray | None = None, patients: np.ndarray | None = None) -> bool:
    """Keep decision weights only when, deciding rows they were not fitted on (``crossed``), they find
    significantly more of the plain argmax's worst cell (see :func:`cells`) without lowering macro recall.

    The two decisions are paired (the same rows), so the test is McNemar's: of the worst cell's rows,
    ``b`` are found only with the weights and ``c`` only without; the gain must exceed ``z`` standard
    errors of a paired difference, ``b - c > z * sqrt(b + c)``. (An earlier rule compared the gain with
    the binomial standard error of the recall itself, which overstates the noise of a paired change: on
    the 20k cohort it dropped weights that lifted ENFERMEDAD TERMINAL, issue 14.) With ``patients`` (a key per
    row), ``b`` and ``c`` count patients, not rows: a patient's visits are not independent pairs."""
    y, plain, crossed = np.asarray(y), np.asarray(plain), np.asarray(crossed)
    s_plain, s_crossed = decision_scores(y, plain, k, sample_weight), decision_scores(y, crossed, k, sample_weight)
    masks = cells(y, groups, k)
    rows = masks[worst_cell(y, plain, masks)[1]]
    worst = int(y[rows][0])
    fixed_rows = rows & (crossed == worst) & (plain != worst)
    broken_rows = rows & (plain == worst) & (crossed != worst)
    if patients is None:
        fixed, broken = int(fixed_rows.sum()), int(broken_rows.sum())
    else:
        keys = np.asarray(patients)
        fixed, broken = len(np.unique(keys[fixed_rows])), len(np.unique(keys[broken_rows]))
    return fixed - broken > z * np.sqrt(fixed + broken) and s_crossed.macro_recall >= s_plain.macro_recall


def calibrate_and_decide(proba: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, *,
                         max_precision_loss: float = MAX_PRECISION_LOSS, calibration_method: str = "temperature",
                         seed: int = 0, groups: np.ndarray | None = None,
                         patients: np.ndarray | None = None) -> dict[str, Any]:
    """Everything fitted on OOF probabilities: calibration, decision weights on the calibrated
    probabilities, the calibrated OOF probabilities, and honest (cross-fitted) decisions for scoring.
    ``patients`` (a patient key per row): the cross-fitting and the weights' test go by patient."""
    proba, y, w = _check(proba, y, sample_weight)
    calibration = fit_calibration(proba, y, w, calibration_method)
    calibrated = apply_calibration(proba, calibration)
    k = proba.shape[1]
    plain = calibrated.argmax(axis=1)
    crossed = cross_fitted_predictions(calibrated, y, w, max_precision_loss=max_precision_loss, seed=seed,
                                       groups=groups, patients=patients)
    if weights_pay_off(y, plain, crossed, k, w, groups=groups, patients=patients):
        weights = fit_decision_weights(calibrated, y, w, max_precision_loss=max_precision_loss, groups=groups)
    else:
        weights, crossed = np.ones(k), plain
    return {"calibration": calibration, "decision_weights": weights, "calibrated": calibrated,
            "cross_fitted_pred": crossed}
