"""Imbalance handling for the training split only (validation and test keep the natural mix).

Oversamplers interpolate between a minority sample and its k nearest same-class neighbours; a
class with fewer than k + 1 samples gets k = (its size - 1), and a class of one sample can only be
duplicated (random oversampling). Indicator columns (0/1) stay 0/1 — a synthetic patient has or
has not a symptom, never "0.4 of a fever": SMOTEN when every column is an indicator, SMOTENC when
a few are, SMOTE with indicators snapped back to 0/1 when there are too many for SMOTENC.

The rows may be a dense array or CSR (the feature pipeline's, issue 16): every imbalanced-learn sampler used
here takes CSR as it is, and the result keeps the layout it was given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from imblearn.over_sampling import ADASYN, SMOTE, SMOTEN, SMOTENC, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from sklearn.utils.class_weight import compute_class_weight

from processing.features import as_float32
from processing.sparse import is_sparse

METHODS = ("none", "smote", "adasyn", "undersample", "class_weights")
# Methods that need every training row in one process (neighbours, or a draw over all rows); "none" and
# "class_weights" need only the class counts, so the rows can be transformed a part at a time on any host.
JOINT_METHODS = ("smote", "adasyn", "undersample")
DEFAULT_K = 5
# SMOTENC votes each categorical column among neighbours in Python; with the ~900 symptom and code
# indicators of the default cohort it took 240 s for 14k rows (SMOTE: ~3 s). Above this many
# indicator columns we interpolate with SMOTE and snap indicators back to 0/1 instead.
SMOTENC_MAX_CATEGORICAL = 50


@dataclass
class Resampled:
    X: Any  # dense array or CSR, float32
    y: np.ndarray
    sample_weight: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    # Each delivered row's position in the rows given, -1 for a row an over-sampler made (synthetic or a copy): what
    # rides along with a row (its slice flag, its patient) follows it. None: the rows as given.
    source: np.ndarray | None = None


def _counts(y: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(y, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}


def balanced_class_weights(y: np.ndarray) -> dict[int, float]:
    """scikit-learn's "balanced" weight of each class present: rows / (classes x rows of the class)."""
    classes = np.unique(y)
    return {int(c): float(w) for c, w in zip(classes, compute_class_weight("balanced", classes=classes, y=y))}


def row_weights(y: np.ndarray, class_weight: dict[int, float] | None) -> np.ndarray:
    """Each row's weight from its class's (ones without class weights)."""
    if not class_weight:
        return np.ones(len(y))
    lookup = np.zeros(max(class_weight) + 1)
    lookup[list(class_weight)] = list(class_weight.values())
    return lookup[y]


def resample(X: Any, y: np.ndarray, method: str, *, seed: int = 0,
             categorical: np.ndarray | None = None) -> Resampled:
    """Rebalance (X, y) by ``method``; ``categorical`` marks indicator columns for SMOTENC."""
    if method not in METHODS:
        raise ValueError(f"resampling must be one of {', '.join(METHODS)}, got {method!r}")
    if X.shape[0] != len(y):
        raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}")
    before = _counts(y)
    info: dict[str, Any] = {"method": method, "before": before}
    weight = np.ones(len(y))
    source = np.arange(len(y))
    if method == "none":
        pass
    elif method == "class_weights":
        info["class_weight"] = balanced_class_weights(y)
        weight = row_weights(y, info["class_weight"])
    elif method == "undersample":
        under = RandomUnderSampler(random_state=seed)
        X, y = under.fit_resample(X, y)
        source = np.asarray(under.sample_indices_, dtype=np.int64)
        weight = np.ones(len(y))
    else:
        snap: np.ndarray | None = None
        smallest = min(before.values())
        k = min(DEFAULT_K, smallest - 1)
        info["k_neighbors"] = k
        if k < 1:
            info["fallback"] = f"a class has {smallest} sample: random oversampling (duplication) instead of {method}"
            sampler: Any = RandomOverSampler(random_state=seed)
        elif method == "adasyn":
            sampler = ADASYN(n_neighbors=k, random_state=seed)
        else:
            mask = np.zeros(X.shape[1], dtype=bool) if categorical is None else np.asarray(categorical, dtype=bool)
            if mask.all():
                sampler, info["variant"] = SMOTEN(k_neighbors=k, random_state=seed), "SMOTEN"
            elif 0 < mask.sum() <= SMOTENC_MAX_CATEGORICAL:
                sampler = SMOTENC(categorical_features=np.flatnonzero(mask).tolist(), k_neighbors=k, random_state=seed)
                info["variant"] = "SMOTENC"
            else:
                sampler, info["variant"] = SMOTE(k_neighbors=k, random_state=seed), "SMOTE"
                if mask.any():
                    snap = mask
                    info["variant"] = f"SMOTE, {int(mask.sum())} indicator columns snapped to 0/1"
        try:
            X, y = sampler.fit_resample(X, y)
        except (ValueError, RuntimeError) as err:
            # ADASYN refuses when a minority class has no majority neighbours; say so plainly.
            raise ValueError(f"{method} could not resample the training split: {err}") from err
        if snap is not None:
            X = snap_indicators(X, snap)
        weight = np.ones(len(y))
        source = np.r_[source, np.full(len(y) - len(source), -1)]  # imbalanced-learn puts the given rows first
    info["after"] = _counts(y)
    return Resampled(as_float32(X), np.asarray(y, dtype=np.int64), weight, info, source)


def snap_indicators(X: Any, columns: np.ndarray) -> Any:
    """Interpolated indicator values back to 0/1 (>= 0.5 → 1) in the marked columns; CSR drops the new zeros."""
    if is_sparse(X):
        X = sp.csr_matrix(X, copy=True)
        marked = columns[X.indices]
        X.data[marked] = (X.data[marked] >= 0.5).astype(X.dtype)
        X.eliminate_zeros()
        return X
    X = np.array(X)
    X[:, columns] = (X[:, columns] >= 0.5).astype(X.dtype)
    return X
