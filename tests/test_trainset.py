"""train.npz, the training rows on disk (processing/trainset.py): round trips, and bad files refused by name."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from processing.trainset import read_train, read_train_slice, write_train


def rows(n: int = 50, width: int = 12) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    X = sp.random(n, width, density=0.2, format="csr", dtype=np.float32, random_state=0)
    X.data[:3] = [np.nan, -2.5, 1e-30]  # values beyond 0/1 survive as they are
    return X, np.arange(n) % 3, np.linspace(0.5, 2.0, n)


def test_sparse_rows_round_trip_in_scipy_layout(tmp_path):
    X, y, w = rows()
    path = write_train(tmp_path / "train.npz", X, y, w)
    got = read_train(path)
    assert sp.issparse(got.X) and got.X.format == "csr" and got.X.dtype == np.float32 and got.X.shape == X.shape
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(got.X, name), getattr(X, name))
    np.testing.assert_array_equal(got.y, y)
    np.testing.assert_array_equal(got.sample_weight, w)
    np.testing.assert_array_equal(sp.load_npz(path).toarray(), X.toarray())  # scipy reads the matrix too
    with zipfile.ZipFile(path) as archive:  # stored, not deflated (see the module docstring)
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_dense_rows_round_trip_and_scipy_written_files_are_read(tmp_path):
    X, y, w = rows()
    got = read_train(write_train(tmp_path / "dense.npz", X.toarray(), y, w))
    assert isinstance(got.X, np.ndarray)
    np.testing.assert_array_equal(got.X, X.toarray())
    sp.save_npz(tmp_path / "scipy.npz", X, compressed=True)  # scipy's own file (format as bytes), y added
    with np.load(tmp_path / "scipy.npz") as data:
        np.savez(tmp_path / "mixed.npz", **{k: data[k] for k in data.files}, y=y)
    got = read_train(tmp_path / "mixed.npz")
    np.testing.assert_array_equal(got.X.toarray(), X.toarray())
    assert got.sample_weight is None


def _rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    np.savez(path, **arrays)


BAD_FILES = {
    "not a zip": (lambda p: p.write_bytes(b"nonsense" * 20), "train.npz is not a readable .npz file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
                  "train.npz is not a readable .npz file"),
    "no y": (lambda p: _rewrite(p, y=None), "train.npz lacks sparse (CSR) array(s) y"),
    "no indptr": (lambda p: _rewrite(p, indptr=None), "lacks sparse (CSR) array(s) indptr"),
    "no X at all": (lambda p: _rewrite(p, format=None, shape=None, data=None, indices=None, indptr=None),
                    "train.npz lacks array(s) X"),
    "csc layout": (lambda p: _rewrite(p, format=np.array("csc")), "sparse layout 'csc' is not supported"),
    "column index out of range": (lambda p: _rewrite(p, shape=np.array([50, 5])), "inconsistent sparse arrays"),
    "indptr not increasing": (lambda p: _rewrite(p, indptr=np.r_[0, 40, np.full(49, 10)]),
                              "inconsistent sparse arrays"),
    "float indices": (lambda p: _rewrite(p, indices=np.zeros(10, dtype=np.float32)),
                      "'indices' must be a 1-D integer array"),
    "bad shape": (lambda p: _rewrite(p, shape=np.array([50])), "'shape' must hold two non-negative integers"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_refused_with_what_is_wrong(tmp_path, case):
    X, y, w = rows()
    path = write_train(tmp_path / "train.npz", X, y, w)
    damage, message = BAD_FILES[case]
    damage(path)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_train(path)


def test_slice_flags_travel_with_the_rows_and_bad_ones_are_refused_by_name(tmp_path):
    X, y, w = rows()
    flags = np.arange(len(y)) % 4 == 0
    path = write_train(tmp_path / "train.npz", X, y, w, flags)
    np.testing.assert_array_equal(read_train_slice(path), flags)
    np.testing.assert_array_equal(read_train(path).y, y)  # readers that do not know the flags read the rows as ever
    assert read_train_slice(write_train(tmp_path / "old.npz", X, y, w)) is None  # written without: none
    with pytest.raises(ValueError, match="train.npz: 49 slice flags for 50 training rows"):
        write_train(tmp_path / "train.npz", X, y, w, flags[:-1])
    np.savez(tmp_path / "bad.npz", X=X.toarray(), y=y, sample_weight=w, slice=flags.astype(np.int8))
    with pytest.raises(ValueError, match=r"bad.npz: 'slice' must hold one bool per row \(50\), got shape \(50,\) "
                                         "dtype int8"):
        read_train_slice(tmp_path / "bad.npz")
