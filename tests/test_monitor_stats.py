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
    reference = stats.chi2_contingency([[500, 500], [70, 30]], correction=False)
    assert (result.statistic, result.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    # A value the baseline never held, and one neither side holds (left out).
    result = chi_square({"a": 12, "b": 8, "gone": 0}, {"a": 40, "b": 55, "new": 5})
    reference = stats.chi2_contingency([[12, 8, 0], [40, 55, 5]], correction=False)
    assert (result.statistic, result.p_value) == pytest.approx((reference.statistic, reference.pvalue))
    z = two_proportions(10, 100, 30, 100)
    assert z.p_value < 0.001 and z.statistic > 0
    assert chi_square({"F": 1}, {"F": 5}).p_value == 1.0  # one category: nothing to compare


def test_chi_square_takes_the_baselines_own_noise_into_account():
    # The baseline is a sample: a goodness of fit to its shares as if exact warned at p < 0.01 in one clean window
    # of 400 against a baseline of 400 out of eight (13 %).
    rng = np.random.default_rng(11)
    shares = [0.5, 0.3, 0.15, 0.05]
    alarms = 0
    for _ in range(1000):
        base, live = rng.multinomial(400, shares), rng.multinomial(400, shares)
        result = chi_square(dict(zip("abcd", base.tolist())), dict(zip("abcd", live.tolist())))
        alarms += result.p_value < 0.01
    assert alarms / 1000 < 0.025  # about 1 %, as a test at that level should
