"""Ensemble selection over the trained candidates, from their out-of-fold probabilities.

Each training job keeps the calibrated probabilities it scored on rows its model did not see (its
out-of-fold rows, or the validation split: ``diagnosa.model.OOF_FILE``); every candidate of a run scores
the same rows. Picking the one candidate with the best score on a few hundred rows is noisy: on the real
tables of docs/benchmark-real.md the champion was often a family that did worse on the test rows than the
one beside it, and a weighted mean of several families' probabilities varies less. Select weighs two
procedures on those rows:

- **single**: the candidate whose argmax has the best macro recall (then worst-class recall);
- **stacked**: convex weights over the candidates minimising the class-balanced log loss of the weighted
  mean of their probabilities (stacking with a proper score: every row's probabilities count, not only
  which side of a decision it falls on, so a class of six rows cannot swing the weights alone).

Both are scored honestly by cross-fitting: the rows are cut in two stratified halves, the procedure is
fitted on one half and decides the other, both ways round, ``CROSS_FIT_REPEATS`` times with fresh halves.
The ensemble is chosen only when its cross-fitted macro recall beats the single candidate's by more than
``MARGIN_Z`` standard errors of the paired difference (the one-standard-error rule: within noise the
procedure that ships one model wins). Macro recall is a weighted accuracy (a row of class c weighs
1 / (k n_c)), so the paired difference's standard error is that of the weighted per-row differences.

Ensemble selection by greedy forward steps on macro recall (Caruana et al. 2004) was measured beside it on
the real tables and left out: fitted to a discrete score, it dropped the rarest class (aids2's 7-row
class: worst-class recall 0 in every seed; docs/benchmark-real.md).
"""
from __future__ import annotations

import copy
import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin

from diagnosa.model import apply_calibration
from processing.decisions import decision_scores

CROSS_FIT_REPEATS = 3
MARGIN_Z = 1.0  # standard errors of the paired difference an ensemble must win by
MIN_WEIGHT = 0.01  # stacked weights below this are dropped (a member that costs serving time for nothing)


@dataclass(frozen=True)
class Evidence:
    """Every candidate's out-of-fold probabilities on the same rows: ``proba[name]`` is n x k; ``weight`` and
    ``groups`` (optional): the rows' weights and slice flags the candidates' decision weights were fitted with."""

    proba: Mapping[str, np.ndarray]
    y: np.ndarray
    weight: np.ndarray | None = None
    groups: np.ndarray | None = None
    patients: np.ndarray | None = None  # the rows' patient keys (several rows per patient), when the candidates had them

    def __post_init__(self) -> None:
        y = np.asarray(self.y)
        if y.ndim != 1 or len(y) == 0 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"out-of-fold labels must be a non-empty 1-D integer array, got shape {y.shape}")
        if not self.proba:
            raise ValueError("no candidate's out-of-fold probabilities")
        shapes = {name: np.shape(p) for name, p in self.proba.items()}
        k = next(iter(shapes.values()))[1] if len(next(iter(shapes.values()))) == 2 else 0
        if any(shape != (len(y), k) for shape in shapes.values()) or k < 2:
            raise ValueError(f"out-of-fold probabilities must all be {len(y)} x k (k >= 2), got {shapes}")
        if y.min() < 0 or y.max() >= k:
            raise ValueError(f"out-of-fold labels must lie in [0, {k})")
        for name in ("weight", "groups", "patients"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != y.shape:
                raise ValueError(f"out-of-fold {name} must hold one entry per row ({len(y)}), got {np.shape(value)}")

    @property
    def k(self) -> int:
        return next(iter(self.proba.values())).shape[1]

    @property
    def names(self) -> list[str]:
        return sorted(self.proba)


def class_recalls(y: np.ndarray, pred: np.ndarray, k: int) -> dict[int, float]:
    """Each class present in ``y`` → its recall."""
    recall = decision_scores(y, pred, k).recall
    return {c: float(r) for c, r in enumerate(recall) if not np.isnan(r)}


def recall_scores(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, float]:
    """(macro recall, worst-class recall) over the classes present in ``y``."""
    scores = decision_scores(y, pred, k)
    return scores.macro_recall, scores.worst_recall


def mix(proba: Mapping[str, np.ndarray], weights: Mapping[str, float], rows: Any = None) -> np.ndarray:
    """The weighted mean of the candidates' probabilities (weights summing to 1), on ``rows`` (None: all)."""
    pick = slice(None) if rows is None else rows
    parts = [w * np.asarray(proba[name])[pick] for name, w in weights.items() if w > 0]
    if not parts:
        raise ValueError("an ensemble needs a member with a positive weight")
    return functools.reduce(operator.add, parts)  # in member order, as the served vote adds them


def best_single(evidence: Evidence, rows: np.ndarray) -> dict[str, float]:
    """{name: 1.0} for the candidate whose argmax scores best on ``rows`` (ties: the first name)."""
    y = evidence.y[rows]
    scores = {name: recall_scores(y, evidence.proba[name][rows].argmax(axis=1), evidence.k) for name in evidence.names}
    return {max(evidence.names, key=lambda n: (scores[n], -evidence.names.index(n))): 1.0}


def stacked_weights(evidence: Evidence, rows: np.ndarray) -> dict[str, float]:
    """Convex weights minimising the class-balanced log loss of the weighted mean on ``rows``; weights below
    ``MIN_WEIGHT`` are dropped and the rest renormalised."""
    y, k, names = evidence.y[rows], evidence.k, evidence.names
    truth = np.stack([np.asarray(evidence.proba[name])[rows][np.arange(len(rows)), y] for name in names])  # m x n
    row_weight = 1.0 / (k * np.bincount(y, minlength=k)[y])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        p = np.clip(w @ truth, 1e-12, None)
        grad_w = -(truth * (row_weight / p)).sum(axis=1)
        return float(-(row_weight * np.log(p)).sum()), w * (grad_w - w @ grad_w)

    theta = minimize(loss, np.zeros(len(names)), jac=True, method="L-BFGS-B").x
    w = np.exp(theta - theta.max())
    w /= w.sum()
    kept = {name: float(v) for name, v in zip(names, w) if v >= MIN_WEIGHT}
    total = sum(kept.values())
    return {name: v / total for name, v in kept.items()}


PROCEDURES: dict[str, Callable[[Evidence, np.ndarray], dict[str, float]]] = {
    "single": best_single, "stacked": stacked_weights}


def _halves(y: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two stratified halves (each class's rows shuffled and dealt alternately), both ways round."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        start = int(rng.integers(2))  # which half gets a class's odd row
        first.append(rows[start::2])
        second.append(rows[1 - start::2])
    a, b = np.sort(np.concatenate(first)), np.sort(np.concatenate(second))
    return [(a, b), (b, a)]


@dataclass
class EnsembleChoice:
    procedure: str  # a name in PROCEDURES
    weights: dict[str, float]  # fitted on all rows by the chosen procedure
    cross_fitted: dict[str, float] = field(default_factory=dict)  # macro recall per procedure, held-out halves
    gain: dict[str, float] = field(default_factory=dict)  # each ensemble's paired gain over "single" ...
    standard_error: dict[str, float] = field(default_factory=dict)  # ... and its standard error

    @property
    def use_ensemble(self) -> bool:
        return self.procedure != "single" and len(self.weights) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"procedure": self.procedure, "use_ensemble": self.use_ensemble, "weights": self.weights,
                "cross_fitted_macro_recall": self.cross_fitted, "gain_over_single": self.gain,
                "standard_error": self.standard_error, "margin_z": MARGIN_Z, "repeats": CROSS_FIT_REPEATS}


def choose(evidence: Evidence, *, seed: int = 0, margin_z: float = MARGIN_Z,
           repeats: int = CROSS_FIT_REPEATS) -> EnsembleChoice:
    """"stacked" when its cross-fitted macro recall beats the single best candidate's by more than ``margin_z``
    standard errors of the paired difference, else "single" (see the module docstring)."""
    y, k = np.asarray(evidence.y), evidence.k
    row_weight = 1.0 / (k * np.bincount(y, minlength=k)[y])  # macro recall = sum of row weights of the rows found
    scores: dict[str, list[float]] = {name: [] for name in PROCEDURES}
    gains: dict[str, list[float]] = {name: [] for name in PROCEDURES if name != "single"}
    errors: dict[str, list[float]] = {name: [] for name in gains}
    for repeat in range(repeats):
        correct = {}
        for name, fit in PROCEDURES.items():
            pred = np.zeros(len(y), dtype=np.int64)
            for fit_rows, score_rows in _halves(y, seed + repeat):
                pred[score_rows] = mix(evidence.proba, fit(evidence, fit_rows), score_rows).argmax(axis=1)
            correct[name] = (pred == y).astype(float)
            scores[name].append(recall_scores(y, pred, k)[0])
        for name in gains:
            paired = (correct[name] - correct["single"]) * row_weight
            gains[name].append(float(paired.sum()))
            errors[name].append(float(np.sqrt((paired ** 2).sum())))
    gain = {name: float(np.mean(v)) for name, v in gains.items()}
    error = {name: float(np.mean(v)) for name, v in errors.items()}
    winners = [name for name in gain if gain[name] > 0 and gain[name] > margin_z * error[name]]
    procedure = max(winners, key=lambda name: (gain[name], -list(gain).index(name))) if len(evidence.names) > 1 \
        and winners else "single"
    weights = PROCEDURES[procedure](evidence, np.arange(len(y)))
    return EnsembleChoice(procedure, weights, {name: float(np.mean(v)) for name, v in scores.items()}, gain, error)


def summary(y: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Out-of-fold decisions ``pred`` scored in the shape of a candidate's ``validation`` summary."""
    y, pred, k = np.asarray(y), np.asarray(pred), len(labels)
    per_class = {labels[c]: recall for c, recall in class_recalls(y, pred, k).items()}
    worst = min(per_class, key=lambda label: (per_class[label], list(labels).index(label)))
    return {"n": int(len(y)), "macro_recall": float(np.mean(list(per_class.values()))),
            "worst_class_recall": {"label": worst, "recall": per_class[worst]}, "per_class_recall": per_class,
            "orphan_macro_recall": None, "orphan_unseen_macro_recall": None}


class ProbabilityVote(ClassifierMixin, BaseEstimator):
    """Fitted classifiers of one label set, each with its own calibration, voting by the weighted mean of their
    calibrated probabilities (Select's ensemble). The members are the candidates'
    fitted classifier steps, as they were trained; they all read the same features."""

    def __init__(self, members: list[Any], calibrations: list[dict[str, Any] | None], weights: list[float],
                 n_labels: int) -> None:
        self.members, self.calibrations, self.weights, self.n_labels = members, calibrations, weights, n_labels
        self._check()

    def _check(self) -> None:
        """Its parameters make a vote: at construction and after set_params (set_params(weights=[-5.0]) gave
        negative probabilities)."""
        if not self.members or not len(self.members) == len(self.calibrations) == len(self.weights):
            raise ValueError("a vote needs members, and one calibration and one weight per member")
        if any(w <= 0 for w in self.weights) or not np.isclose(sum(self.weights), 1.0):
            raise ValueError(f"vote weights must be positive and sum to 1, got {self.weights}")
        if isinstance(self.n_labels, bool) or not isinstance(self.n_labels, (int, np.integer)) or self.n_labels < 2:
            raise ValueError(f"a vote needs at least 2 labels, got n_labels={self.n_labels!r}")

    @property
    def classes_(self) -> np.ndarray:
        """The labels' indices: what its probabilities' columns are, whatever n_labels is set to (it was fixed at
        construction, and set_params(n_labels=3) left two classes beside three columns)."""
        return np.arange(self.n_labels)

    def __sklearn_clone__(self) -> ProbabilityVote:
        """A copy, members fitted, as scikit-learn's FrozenEstimator is cloned: a vote is never fitted, so a clone
        with unfitted members (sklearn's default: each parameter cloned) could neither predict nor be fitted, while
        it said it was fitted (cross-validation or a grid search over an ensemble artifact failed on it)."""
        return copy.deepcopy(self)

    def predict_proba(self, X: Any) -> np.ndarray:
        total = np.zeros((X.shape[0], self.n_labels))
        for member, calibration, weight in zip(self.members, self.calibrations, self.weights):
            raw = np.asarray(member.predict_proba(X), dtype=float)
            proba = np.zeros((len(raw), self.n_labels))
            proba[:, np.asarray(member.classes_, dtype=int)] = raw  # a class a member never saw: probability 0
            total += weight * apply_calibration(proba, calibration)
        return total

    def predict(self, X: Any) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def fit(self, X: Any, y: Any = None) -> ProbabilityVote:
        raise TypeError("a vote is assembled from fitted members (processing/select.py), never fitted itself")

    def __sklearn_is_fitted__(self) -> bool:  # a Pipeline checks its last step before predicting
        return True

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Its own parameters; with ``deep``, also the members' as ``<index>__<name>`` (serving sets their thread
        counts through them), as sklearn's composite estimators name their parts' parameters."""
        params = super().get_params(deep=False)
        if deep:
            params |= {f"{i}__{name}": value for i, member in enumerate(self.members) if hasattr(member, "get_params")
                       for name, value in member.get_params(deep=True).items()}
        return params

    def set_params(self, **params: Any) -> ProbabilityVote:
        for key, value in params.items():
            index, nested, name = key.partition("__")
            if nested and index.isdigit():
                self.members[int(index)].set_params(**{name: value})
            else:
                super().set_params(**{key: value})
        self._check()
        return self
