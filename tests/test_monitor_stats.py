"""Drift statistics checked against scipy and against known answers."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from monitoring.stats import binned, chi_square, ks_weighted, psi, quantile_edges, two_proportions


def test_psi_is_zero_for_identical_and_grows_with_shift():
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    small, large = psi([50, 50], [55, 45]), psi([50, 50], [90, 10])
    assert 0 < small < 0.1 < 0.25 < large
    # Textbook value: sum((a - e) ln(a / e)).
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * np.log(1.8) + -0.4 * np.log(0.2))


def test_psi_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        psi([0, 0], [1, 1])


def test_weighted_ks_matches_scipy_for_unit_weights():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 400), rng.normal(0.3, 1, 300)
    ours = ks_weighted(a, np.ones_like(a), b)
    theirs = stats.ks_2samp(a, b, method="asymp")
    assert ours.statistic == pytest.approx(theirs.statistic)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=0.05)


def test_quantile_bins_split_the_baseline_evenly():
    values = np.arange(1000, dtype=float)
    edges = quantile_edges(values)
    assert binned(values, edges).tolist() == [100.0] * 10


def test_chi_square_and_two_proportions_agree_with_scipy():
    result = chi_square({"F": 500, "M": 500}, {"F": 70, "M": 30})
    assert result.p_value == pytest.approx(stats.chisquare([70, 30], [50, 50]).pvalue)
    z = two_proportions(10, 100, 30, 100)
    assert z.p_value < 0.001 and z.statistic > 0
    assert chi_square({"F": 1}, {"F": 5}).p_value == 1.0  # one category: nothing to compare
