"""Drift statistics: PSI (our own, 15 lines), Kolmogorov–Smirnov and chi-square (scipy).

All functions are pure and work on plain arrays. A baseline is stored compactly (a KLL-shaped
sketch for numbers, counts for categories), so the numeric tests take *weighted* baseline values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

PSI_EPSILON = 1e-4  # share given to an empty bin so log(q/p) stays finite


def psi(expected: ArrayLike, actual: ArrayLike, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index between two distributions over the same bins (counts or shares).

    ``sum((a - e) * ln(a / e))`` over bins, shares normalised and floored at ``epsilon``. Rules of
    thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 large shift.
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"psi needs two 1-d arrays of the same non-zero length, got {e.shape} and {a.shape}")
    if (e < 0).any() or (a < 0).any() or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("psi needs non-negative counts with a positive total on both sides")
    e = np.maximum(e / e.sum(), epsilon)
    a = np.maximum(a / a.sum(), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def quantile_edges(values: np.ndarray, weights: np.ndarray | None = None, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the weighted deciles (duplicates removed): ``len(edges) + 1`` bins."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.array([], dtype=float)
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=float)
    order = np.argsort(values, kind="stable")
    v, cw = values[order], np.cumsum(w[order])
    targets = cw[-1] * np.arange(1, bins) / bins
    edges = v[np.minimum(np.searchsorted(cw, targets, side="left"), v.size - 1)]
    return np.unique(edges)


def binned(values: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted counts of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (ek, inf)``."""
    idx = np.searchsorted(edges, np.asarray(values, dtype=float), side="left")
    return np.bincount(idx, weights=weights, minlength=edges.size + 1).astype(float)


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    test: str


def ks_weighted(base: np.ndarray, base_weights: np.ndarray, live: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov–Smirnov with a weighted baseline (a sketch) against raw live values.

    D is the largest gap between the two empirical CDFs; the p-value is the asymptotic one of
    ``scipy.stats.kstwo`` at the effective size ``n·m/(n+m)`` (n = the baseline's total weight),
    which is what ``scipy.stats.ks_2samp(method="asymp")`` uses too.
    """
    base = np.asarray(base, dtype=float)
    live = np.asarray(live, dtype=float)
    w = np.asarray(base_weights, dtype=float)
    if base.size == 0 or live.size == 0:
        raise ValueError("ks needs values on both sides")
    grid = np.union1d(base, live)
    order = np.argsort(base, kind="stable")
    bcdf = np.concatenate([[0.0], np.cumsum(w[order])])[np.searchsorted(base[order], grid, side="right")] / w.sum()
    lcdf = np.searchsorted(np.sort(live), grid, side="right") / live.size
    d = float(np.max(np.abs(bcdf - lcdf)))
    n, m = float(w.sum()), float(live.size)
    effective = max(1, int(round(n * m / (n + m))))
    p = float(stats.kstwo.sf(d, effective)) if d > 0 else 1.0
    return TestResult(d, min(max(p, 0.0), 1.0), "ks")


def chi_square(expected_counts: Mapping[str, float], observed_counts: Mapping[str, float]) -> TestResult:
    """Chi-square goodness of fit of observed category counts to the baseline's shares.

    Categories unseen in the baseline get the PSI floor share, so a brand-new value counts as
    (strong) evidence of drift instead of a division by zero.
    """
    keys = sorted(set(expected_counts) | set(observed_counts))
    e = np.array([float(expected_counts.get(k, 0.0)) for k in keys])
    o = np.array([float(observed_counts.get(k, 0.0)) for k in keys])
    if o.sum() <= 0 or e.sum() <= 0:
        raise ValueError("chi-square needs counts on both sides")
    if len(keys) < 2:
        return TestResult(0.0, 1.0, "chi2")
    shares = np.maximum(e / e.sum(), PSI_EPSILON)
    shares /= shares.sum()
    result = stats.chisquare(o, f_exp=shares * o.sum())
    p = float(result.pvalue)
    return TestResult(float(result.statistic), 1.0 if math.isnan(p) else p, "chi2")


def two_proportions(k1: float, n1: float, k2: float, n2: float) -> TestResult:
    """Two-sided z-test that two proportions (k1/n1 baseline, k2/n2 live) are equal."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("two_proportions needs positive sizes")
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return TestResult(0.0, 1.0, "z")
    z = (p2 - p1) / se
    return TestResult(z, float(2 * stats.norm.sf(abs(z))), "z")
