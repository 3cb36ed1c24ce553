"""Serving's CSR rows and its logistic regression (inference/fastpath.py) against scipy's and scikit-learn's own
calls, to the bit: the load-time guard refuses any difference, so a difference here would silently cost the
fast path, not the answers."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.linear_model import LogisticRegression

from inference import fastpath


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.float32, np.float64]),
                  shape=hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=40),
                  elements=st.sampled_from([0.0, -0.0, 1.0, -2.5, 1e-30, np.nan, np.inf, 3.0e38])))
def test_csr_rows_are_scipys(X):
    ours, scipys = fastpath._csr(X), sp.csr_matrix(X)
    assert ours.shape == scipys.shape and ours.dtype == scipys.dtype
    assert ours.indices.dtype == scipys.indices.dtype and ours.indptr.dtype == scipys.indptr.dtype
    assert np.array_equal(ours.indptr, scipys.indptr) and np.array_equal(ours.indices, scipys.indices)
    assert np.array_equal(ours.data, scipys.data, equal_nan=True)
    assert np.signbit(ours.data).tolist() == np.signbit(scipys.data).tolist()
    assert ours.has_canonical_format


def _rows(seed: int, n: int = 300, width: int = 40) -> np.ndarray:
    """Float32 rows like the compiled path's: standardised numbers and many 0/1 indicator zeros."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, width)).astype(np.float32)
    X[:, width // 2:] = (rng.random((n, width - width // 2)) < 0.15).astype(np.float32)
    return X


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_logistic_regression_on_csr_rows_is_sklearns_to_the_bit(classes):
    X = _rows(classes)
    y = np.arange(len(X)) % classes
    fitted = LogisticRegression(C=0.5, class_weight="balanced", max_iter=500).fit(sp.csr_matrix(X), y)
    ours = fastpath._LogisticOnCsrRows(fitted).predict_proba(X)
    assert ours.shape == (len(X), classes)
    assert np.array_equal(ours, fitted.predict_proba(sp.csr_matrix(X)))
    assert np.array_equal(fastpath._LogisticOnCsrRows(fitted).predict_proba(X[:1]), fitted.predict_proba(
        sp.csr_matrix(X[:1])))
    # the dense rows' BLAS sums round otherwise: why the rows go through CSR at all
    assert not np.array_equal(fitted.predict_proba(X), fitted.predict_proba(sp.csr_matrix(X)))


def test_only_a_plain_fitted_logistic_regression_is_replicated():
    X, y = _rows(7, 60, 6), np.arange(60) % 3
    assert isinstance(fastpath._logistic_stand_in(LogisticRegression().fit(X, y)), fastpath._LogisticOnCsrRows)

    class Tuned(LogisticRegression):
        def predict_proba(self, X):
            return super().predict_proba(X) ** 2

    assert fastpath._logistic_stand_in(Tuned().fit(X, y)) is None
    sparse_coefficients = LogisticRegression().fit(X, y).sparsify()
    with pytest.raises(fastpath.Unsupported):
        fastpath._logistic_stand_in(sparse_coefficients)
