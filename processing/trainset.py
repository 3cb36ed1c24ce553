"""The training rows on disk (``train/<part>.npz``, one per curated part, or one ``train.npz`` after a joint
resampling): what Preprocess writes and every training job reads, parts stacked in name order.

The validation split's transformed features travel the same way (``validation/<part>.npz``, beside
``validation/<part>.parquet``, row for row).

One ``.npz`` (a zip of ``.npy`` arrays, read with ``allow_pickle=False``) holding ``y`` (label indices),
``sample_weight`` and the features ``X`` in one of two layouts:

- sparse (the feature pipeline's CSR, issue 16): scipy's own ``save_npz`` keys ``format`` (``csr``), ``shape``,
  ``data``, ``indices``, ``indptr``, so ``scipy.sparse.load_npz`` reads the matrix from the same file;
- dense: one array ``X`` (a table of numbers alone, and files written before issue 16).

Stored uncompressed: at a million patients the CSR is ~0.9 GB and deflate took longer to write and to read
back in each of the parallel training jobs than the bytes take to copy. A file that is not such a zip, lacks
an array or holds inconsistent ones is refused with a message naming what is wrong.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import scipy.sparse as sp

from processing.sparse import is_sparse

TRAIN_FILE = "train.npz"  # the one training object of a joint resampling (over-samplers, undersampling)
# Beside X, y and sample_weight when the schema has a slice column: each row's slice flag (bool; False for an
# over-sampler's synthetic rows), so training's cross-validation counts the training-split rows of the slice as
# slice rows. A file without it still reads (older runs).
TRAIN_SLICE_KEY = "slice"
# Beside them when the schema has a patient column: each row's patient key (int64, processing.split.patient_keys;
# 0 for an over-sampler's synthetic rows), so training's cross-validation keeps a patient's rows in one fold.
TRAIN_PATIENT_KEY = "patient"
SPARSE_KEYS = ("format", "shape", "data", "indices", "indptr")
Rows: TypeAlias = sp.csr_matrix | np.ndarray  # the features of rows: scipy.sparse CSR or a dense 2-D array


def stack_parts(blocks: Sequence[Any]) -> Rows:
    """Row blocks stacked: CSR when any block is CSR (an empty block is dense), else one dense array."""
    if any(is_sparse(b) for b in blocks):
        return sp.vstack([sp.csr_matrix(b) for b in blocks], format="csr", dtype=np.float32)
    return blocks[0] if len(blocks) == 1 else np.vstack(blocks)


class TrainRows(NamedTuple):
    X: Rows
    y: np.ndarray
    sample_weight: np.ndarray | None  # None when the file has none


def write_train(path: str | os.PathLike, X: Any, y: np.ndarray, sample_weight: np.ndarray,
                in_slice: np.ndarray | None = None, patients: np.ndarray | None = None) -> Path:
    """Write ``X`` (CSR or dense), ``y``, ``sample_weight`` and, when given, the rows' slice flags and patient keys
    to ``path``; returns the path."""
    path = Path(path)
    if in_slice is not None and np.shape(in_slice) != np.shape(y):
        raise ValueError(f"{path.name}: {len(in_slice)} slice flags for {len(y)} training rows")
    if patients is not None and np.shape(patients) != np.shape(y):
        raise ValueError(f"{path.name}: {len(patients)} patient keys for {len(y)} training rows")
    if is_sparse(X):
        X = sp.csr_matrix(X)
        arrays = {"format": np.array("csr"), "shape": np.array(X.shape, dtype=np.int64), "data": X.data,
                  "indices": X.indices, "indptr": X.indptr}
    else:
        arrays = {"X": np.asarray(X)}
    if in_slice is not None:
        arrays[TRAIN_SLICE_KEY] = np.asarray(in_slice, dtype=bool)
    if patients is not None:
        arrays[TRAIN_PATIENT_KEY] = np.asarray(patients, dtype=np.int64)
    np.savez(path, **arrays, y=np.asarray(y), sample_weight=np.asarray(sample_weight))
    return path


def read_train_slice(path: str | os.PathLike) -> np.ndarray | None:
    """The rows' slice flags of a ``train.npz`` (only that array and ``y`` are read), or None when it has none."""
    return _read_marks(path, TRAIN_SLICE_KEY, np.dtype(bool))


def read_train_patients(path: str | os.PathLike) -> np.ndarray | None:
    """The rows' patient keys of a ``train.npz`` (only that array and ``y`` are read), or None when it has none."""
    return _read_marks(path, TRAIN_PATIENT_KEY, np.dtype(np.int64))


def _read_marks(path: str | os.PathLike, key: str, dtype: np.dtype) -> np.ndarray | None:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if key not in data.files:
                return None
            marks, y = np.asarray(data[key]), data["y"]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path.name}: {key} is not readable: {err}") from None
    if marks.shape != y.shape or marks.dtype != dtype:
        raise ValueError(f"{path.name}: '{key}' must hold one {dtype} per row ({len(y)}), got shape "
                         f"{marks.shape} dtype {marks.dtype}")
    return marks


def read_train(path: str | os.PathLike) -> TrainRows:
    """The arrays of a ``train.npz``, checked for shape and consistency (not for meaning: the caller knows the labels)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        # Not a zip of .npy arrays (or a damaged one: bad CRC, truncated member, pickled objects).
        raise ValueError(f"{path.name} is not a readable .npz file: {err}") from None
    sparse = "format" in arrays or "indptr" in arrays
    missing = [name for name in ([*SPARSE_KEYS, "y"] if sparse else ["X", "y"]) if name not in arrays]
    if missing:
        raise ValueError(f"{path.name} lacks {'sparse (CSR) ' if sparse else ''}array(s) {', '.join(missing)} "
                         f"(has: {', '.join(sorted(arrays)) or 'none'})")
    X = _sparse(arrays, path.name) if sparse else arrays["X"]
    return TrainRows(X, arrays["y"], arrays.get("sample_weight"))


def _sparse(arrays: dict[str, np.ndarray], name: str) -> sp.csr_matrix:
    layout = arrays["format"].item() if arrays["format"].size == 1 else arrays["format"].tolist()
    layout = layout.decode("ascii", "replace") if isinstance(layout, bytes) else layout  # scipy writes bytes
    if layout != "csr":
        raise ValueError(f"{name}: sparse layout {layout!r} is not supported (expected 'csr')")
    shape = arrays["shape"]
    if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer) or (shape < 0).any():
        raise ValueError(f"{name}: 'shape' must hold two non-negative integers, got {shape.tolist()}")
    for key in ("indices", "indptr"):
        if arrays[key].ndim != 1 or not np.issubdtype(arrays[key].dtype, np.integer):
            raise ValueError(f"{name}: '{key}' must be a 1-D integer array, got dtype {arrays[key].dtype} "
                             f"shape {arrays[key].shape}")
    if arrays["data"].ndim != 1:
        raise ValueError(f"{name}: 'data' must be 1-D, got shape {arrays['data'].shape}")
    try:
        X = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=(int(shape[0]), int(shape[1])))
        X.check_format(full_check=True)  # index bounds, non-decreasing indptr: a corrupt matrix fails here
    except ValueError as err:
        raise ValueError(f"{name}: inconsistent sparse arrays: {err}") from None
    return X
