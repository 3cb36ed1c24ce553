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


def ks_weighted(base: np.ndarray, base_weights: np.ndarray, live: np.ndarray,
                live_size: float | None = None, base_size: float | None = None) -> TestResult:
    """Two-sample Kolmogorov–Smirnov with a weighted baseline (a sketch) against raw live values.

    D is the largest gap between the two empirical CDFs; the p-value is the asymptotic one of
    ``scipy.stats.kstwo`` at the effective size ``n·m/(n+m)`` (n = the baseline's total weight),
    which is what ``scipy.stats.ks_2samp(method="asymp")`` uses too. ``live_size`` and ``base_size``: m and n, when
    the values are not independent draws (a patient's visits: what they are worth, processing.split.effective_rows).
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
    n, m = float(w.sum() if base_size is None else base_size), float(live.size if live_size is None else live_size)
    effective = max(1, int(round(n * m / (n + m))))
    p = float(stats.kstwo.sf(d, effective)) if d > 0 else 1.0
    return TestResult(d, min(max(p, 0.0), 1.0), "ks")


def chi_square(expected_counts: Mapping[str, float], observed_counts: Mapping[str, float]) -> TestResult:
    """Pearson's chi-square test that the live category counts and the baseline's come from one distribution: the
    test of homogeneity of the two samples, as ``scipy.stats.chi2_contingency(..., correction=False)`` computes it.

    The baseline is a sample too (the training rows, the test split's predictions): a goodness of fit to its shares
    as if they were exact took its noise for drift, and a clean window of 400 against a baseline of 400 warned at
    p < 0.01 one time in eight (a probe, session 68; about one in a hundred now). A value the baseline never held
    is evidence of drift as strong as the live counts make it; one neither side holds is left out.
    """
    keys = sorted(set(expected_counts) | set(observed_counts))
    e = np.array([float(expected_counts.get(k, 0.0)) for k in keys])
    o = np.array([float(observed_counts.get(k, 0.0)) for k in keys])
    if o.sum() <= 0 or e.sum() <= 0:
        raise ValueError("chi-square needs counts on both sides")
    held = (e + o) > 0
    if held.sum() < 2:
        return TestResult(0.0, 1.0, "chi2")
    table = np.vstack([e[held], o[held]])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(statistic, held.sum() - 1))
    return TestResult(statistic, 1.0 if math.isnan(p) else p, "chi2")


def clustered_chi_square(expected_counts: Mapping[str, float], units: np.ndarray, keys: list[str]) -> TestResult:
    """:func:`chi_square` of the column sums of ``units`` (one row per sampled unit, a patient; one column per key,
    its count there), corrected for the units' clustering by Rao and Scott's second-order (Satterthwaite) method:
    a patient's terms come together (one disease brings its phenotype), so the cells covary as independent draws do
    not, and the plain test, which took every mention for a draw, called one clean window in nine drift. The
    generalised design effects are the eigenvalues of the multinomial covariance's inverse times the covariance
    the units show (both over all cells but one); the statistic is scaled by their mean and the degrees of freedom
    by their spread. A design effect below 1 is not credited: the test is never made less conservative."""
    observed = units.sum(axis=0)
    plain = chi_square(expected_counts, dict(zip(keys, observed)))
    total, n = float(observed.sum()), units.shape[0]
    seen = observed > 0
    if seen.sum() < 2 or n < 2 or total <= 0:
        return plain
    cells = units[:, seen]
    share = cells.sum(axis=0) / total
    residual = cells - np.outer(cells.sum(axis=1), share)
    clustered = n / (n - 1) * residual.T @ residual / total ** 2
    independent = (np.diag(share) - np.outer(share, share)) / total
    effects = np.linalg.eigvals(np.linalg.solve(independent[:-1, :-1], clustered[:-1, :-1])).real
    effects = np.maximum(effects, 0.0)
    mean = float(effects.mean())
    if mean <= 1.0:
        return plain
    spread = float(effects.var() / mean ** 2)  # a², the eigenvalues' squared coefficient of variation
    df = (len(keys) - 1) / (1 + spread)
    statistic = plain.statistic / (mean * (1 + spread))
    return TestResult(statistic, float(stats.chi2.sf(statistic, df)), "chi2-rao-scott")


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


def share_tests(k1: ArrayLike, n1: float, k2: ArrayLike, n2: float) -> np.ndarray:
    """Two-sided p-values of Fisher's exact test that two shares (each ``k1`` of ``n1`` baseline, ``k2`` of ``n2``
    live) are equal, for many terms at once: exact where a term is rare and the live sample small, which the normal
    approximation of :func:`two_proportions` is not (it gave p < 1e-6 for one live patient of 60 beside 1 of 2,350).
    As scipy's ``fisher_exact`` computes it (the tables no likelier than the one seen), over arrays; weighted counts
    are rounded."""
    a = np.rint(np.asarray(k1, dtype=float)).astype(np.int64)
    c = np.rint(np.asarray(k2, dtype=float)).astype(np.int64)
    rows1, rows2 = int(round(n1)), int(round(n2))
    if rows1 <= 0 or rows2 <= 0:
        raise ValueError("share_tests needs positive sizes")
    a, c = np.clip(a, 0, rows1), np.clip(c, 0, rows2)
    column = a + c  # each term's patients on both sides; the live count is hypergeometric given it
    out = np.ones(len(a))
    span = int(min(column.max(initial=0), rows2)) + 1
    step = max(1, 2_000_000 // span)  # bounded memory, however many terms and however large the window
    x = np.arange(span)
    for start in range(0, len(a), step):
        k = column[start:start + step, None]
        low, high = np.maximum(0, k - rows1), np.minimum(k, rows2)
        logpmf = stats.hypergeom.logpmf(x[None, :], rows1 + rows2, k, rows2)
        logpmf = np.where((x[None, :] >= low) & (x[None, :] <= high), logpmf, -np.inf)
        seen = np.take_along_axis(logpmf, c[start:start + step, None], axis=1)
        likelier = logpmf <= seen + 1e-7  # scipy's relative tolerance for ties, in log space
        out[start:start + step] = np.minimum(1.0, np.exp(logpmf).sum(axis=1, where=likelier))
    return out
