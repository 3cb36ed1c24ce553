"""Serving's hot path: the fitted column transform applied to plain records with numpy.

sklearn's ColumnTransformer costs ~6 ms per call on a one-row DataFrame (pandas handling and
validation in every sub-transformer), more than the whole single-patient budget. At model load we
read what the fitted transformers learned (imputer statistics, scaler moments, encoder mappings)
and apply it with numpy, with sklearn's own arithmetic: the same dtype at each stage and the same
operations in the same order (a fitted scaler's moments cast to its input's dtype, so the float32
similarity block is standardised in float32, as sklearn does). Category mappings are not
re-derived: each known category is passed once through the fitted encoder itself, so
infrequent-category handling stays sklearn's. Where the pipeline's output is CSR (issue 16) the
compiled path stays dense, and hands the classifier the CSR rows the pipeline would (a linear model's
sums round differently over a dense row), unless the classifier reads both layouts alike (dense
batches; the compiled XGBoost, ``_XGBoostOnDenseRows``); steps after the column transform (PCA,
LDA) get the layout the pipeline gives them.

Nothing of this is trusted: :func:`compile_model` serves the compiled path only if it gives the
model's own probabilities (``DiagnosaModel.predict_proba``, what Evaluate scores) to the bit on probe
records: the loader's and records built from what the fitted blocks learned (no symptoms, so a
similarity of 0; known terms; the imputed values; every category). Any unsupported step, any
difference, and serving uses the sklearn pipeline unchanged (logged).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.extmath import softmax

from processing.features import (
    DenseBatches,
    MultiLabelIndicator,
    SparseIndicators,
    as_float32,
    fill_missing_category,
    to_float32,
)
from processing.phenotype import PhenotypeSimilarity
from processing.sparse import is_sparse

if TYPE_CHECKING:
    from diagnosa.model import DiagnosaModel

log = logging.getLogger("diagnosa.fastpath")
T = TypeVar("T")
MISSING = "<missing>"
CODE_CACHE_LIMIT = 20_000  # codes whose indicator columns are kept per block (the HPO has ~19,000 terms)
FITTED_PROBES = 48  # probe records built from the fitted blocks (a sixth of them with no terms: similarity 0)
PROBE_OFFSETS = (None, "fill", -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5)  # numbers: missing, imputed, mean + k sd


class Unsupported(Exception):
    pass


class _Standardise:
    """A fitted StandardScaler's ``transform`` of a dense array, with sklearn's arithmetic (1.9): a float32 or
    float64 array keeps its dtype (anything else becomes float64), the moments are cast to that dtype, then
    centred and divided, in that order; centring and scaling only where the scaler does them. Replicated rather
    than called: ``transform``'s validation costs ~85 us a call, the arithmetic ~2 us; the compiled rows are checked
    against the pipeline's, to the bit, at load (:func:`compile_model`)."""

    def __init__(self, scaler: StandardScaler | None, width: int):
        if scaler is not None and type(scaler).transform is not StandardScaler.transform:
            raise Unsupported(f"{type(scaler).__name__} with a transform of its own")
        self.scaler = scaler
        self.mean = (scaler.mean_ if scaler is not None and scaler.with_mean and scaler.mean_ is not None else None)
        self.scale = (scaler.scale_ if scaler is not None and scaler.with_std and scaler.scale_ is not None else None)
        for moment in (self.mean, self.scale):
            if moment is not None and np.shape(moment) != (width,):
                raise Unsupported(f"scaler moments of shape {np.shape(moment)} for {width} columns")
        self._cast: dict[np.dtype[Any], tuple[np.ndarray | None, np.ndarray | None]] = {}

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """``X`` standardised, in a new array (``X`` unchanged, as the scaler's copy=True)."""
        if self.scaler is None:
            return X
        X = X.astype(X.dtype if X.dtype in (np.float64, np.float32) else np.float64)  # a copy
        cast = self._cast.get(X.dtype)
        if cast is None:
            cast = (None if self.mean is None else np.asarray(self.mean).astype(X.dtype),
                    None if self.scale is None else np.asarray(self.scale).astype(X.dtype))
            self._cast[X.dtype] = cast
        mean, scale = cast
        if mean is not None:
            X -= mean
        if scale is not None:
            X /= scale
        return X


class _Numeric:
    def __init__(self, columns: list[str], imputer: SimpleImputer, scaler: StandardScaler):
        if imputer.strategy not in ("median", "mean", "constant", "most_frequent"):
            raise Unsupported(imputer.strategy)
        self.columns = columns
        self.fill = np.asarray(imputer.statistics_, dtype=float)
        if self.fill.shape != (len(columns),) or np.isnan(self.fill).any():
            raise Unsupported("an imputer that drops or leaves empty columns")
        self.indicators = (np.asarray(imputer.indicator_.features_) if imputer.add_indicator else np.array([], int))
        self.scaler = _Standardise(scaler, len(columns) + len(self.indicators))

    @property
    def mean(self) -> np.ndarray:
        """The scaler's means as the fitted pipeline subtracts them (0 where it does not centre)."""
        width = len(self.columns) + len(self.indicators)
        return np.zeros(width) if self.scaler.mean is None else np.asarray(self.scaler.mean, dtype=float)

    @property
    def scale(self) -> np.ndarray:
        width = len(self.columns) + len(self.indicators)
        return np.ones(width) if self.scaler.scale is None else np.asarray(self.scaler.scale, dtype=float)

    def __call__(self, records: list[dict[str, Any]]) -> np.ndarray:
        # float64 throughout, as sklearn: the imputer turns the frame's numbers into float64 and fills the gaps,
        # its 0/1 indicators join them as float64, the scaler keeps float64.
        values = np.array([[r.get(c) for c in self.columns] for r in records], dtype=float)
        missing = np.isnan(values)
        filled = np.where(missing, self.fill, values)
        out = np.hstack([filled, missing[:, self.indicators].astype(float)])
        return self.scaler(out)


class _Categorical:
    def __init__(self, columns: list[str], encoder: OneHotEncoder):
        if encoder.handle_unknown not in ("ignore", "infrequent_if_exist"):
            raise Unsupported("handle_unknown")
        self.columns = columns
        self.width = len(encoder.get_feature_names_out())
        widths = getattr(encoder, "_n_features_outs", None)
        if widths is None or not hasattr(encoder, "feature_names_in_"):
            raise Unsupported("encoder without per-input output widths")
        offsets = np.concatenate([[0], np.cumsum(widths)])
        base = [cats[0] for cats in encoder.categories_]
        self.mapping: list[dict[Any, list[int]]] = []
        self.unknown: list[list[int]] = []
        sentinel = "\x00unknown\x00"
        for j, cats in enumerate(encoder.categories_):
            lit: dict[Any, list[int]] = {}
            for value in [*cats, sentinel]:
                row = list(base)
                row[j] = value
                encoded = encoder.transform(pd.DataFrame([row], columns=encoder.feature_names_in_, dtype=object))
                dense = encoded.toarray() if hasattr(encoded, "toarray") else np.asarray(encoded)
                lit[value] = [int(h) for h in np.flatnonzero(dense[0]) if offsets[j] <= h < offsets[j + 1]]
            self.unknown.append(lit.pop(sentinel))
            self.mapping.append(lit)

    def __call__(self, records: list[dict[str, Any]]) -> np.ndarray:
        out = np.zeros((len(records), self.width))
        rows: list[int] = []
        columns: list[int] = []
        for j, column in enumerate(self.columns):
            mapping, unknown = self.mapping[j], self.unknown[j]
            for i, r in enumerate(records):
                value = r.get(column)
                lit = mapping.get(MISSING if value is None else value, unknown)
                rows += [i] * len(lit)
                columns += lit
        out[rows, columns] = 1.0  # one assignment for the batch, not one per record
        return out


class _Indicators:
    """The fitted indicator block's columns per code (its roll-up included), looked up once per code and set in
    a dense block: the CSR matrix the transformer builds cost 2-3x more on a 100-patient request."""

    def __init__(self, column: str, indicator: MultiLabelIndicator):
        self.column = column
        self.indicator = indicator
        self.width = len(indicator.vocabulary_)
        self._columns: dict[str, tuple[int, ...]] = {}

    def _columns_of(self, code: str) -> tuple[int, ...]:
        found = self._columns.get(code)
        if found is None:
            vocabulary = self.indicator.vocabulary_
            found = tuple(sorted({vocabulary[t] for t in self.indicator._expand(code) if t in vocabulary}))
            if len(self._columns) >= CODE_CACHE_LIMIT:  # codes come from clients: bounded
                self._columns.clear()
            self._columns[code] = found
        return found

    def __call__(self, records: list[dict[str, Any]]) -> np.ndarray:
        out = np.zeros((len(records), self.width), dtype=np.float32)
        rows: list[int] = []
        columns: list[int] = []
        for i, record in enumerate(records):
            for code in record.get(self.column) or []:
                found = self._columns_of(code)
                rows += [i] * len(found)
                columns += found
        out[rows, columns] = 1.0
        return out


class _Similarity:
    """Knowledge-base similarity (processing/phenotype.py): already plain numpy over term lists; then the
    block's scaler, when it has one (processing/features.py standardises the similarity columns), on the float32
    similarity as the fitted pipeline runs it: moments cast to float32, float32 arithmetic. (Standardised in
    float64 and rounded once, values came out 1 ulp off sklearn's, the common "similarity 0" among them, which
    sits on an XGBoost split: served categories differed from Evaluate's.)"""

    def __init__(self, column: str, similarity: PhenotypeSimilarity, scaler: StandardScaler | None = None):
        self.column = column
        self.similarity = similarity
        self.scaler = _Standardise(scaler, len(similarity.get_feature_names_out()))

    def __call__(self, records: list[dict[str, Any]]) -> np.ndarray:
        return self.scaler(self.similarity.features([r.get(self.column) or [] for r in records]))


def _csr(X: np.ndarray) -> sp.csr_matrix:
    """Dense rows as the CSR the column transform builds of them: zeros left out, columns in order; what
    ``sp.csr_matrix(X)`` gives, built from the nonzeros directly (scipy's route through a COO matrix and its
    checks cost 0.3 ms of a 100-patient request, 6 % of it)."""
    X = np.asarray(X)
    if X.ndim != 2:
        return sp.csr_matrix(X)
    nonzero = X != 0  # NaN is nonzero, kept as scipy keeps it
    indptr = np.zeros(X.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.count_nonzero(nonzero, axis=1), out=indptr[1:])
    return sp.csr_matrix((X[nonzero], np.nonzero(nonzero)[1].astype(np.int32), indptr), shape=X.shape)


class CompiledFeatures:
    """``transform(records)``: the fitted feature pipeline's rows, always dense. ``sparse``: the pipeline itself
    gives CSR (a classifier that reads the layouts differently must get ``_csr`` of the rows)."""

    def __init__(self, blocks: list[Any], tail: list[Any], sparse_columns: bool = False, sparse: bool = False):
        self.blocks = blocks
        self.tail = tail
        # Steps after the column transform that compute (PCA, LDA) are fed its CSR where it gives CSR.
        self.csr_tail = sparse_columns and any(step not in (to_float32, as_float32) for step in tail)
        self.sparse = sparse

    @classmethod
    def compile(cls, features: Pipeline) -> CompiledFeatures:
        steps = list(features.named_steps.items())
        name, columns = steps[0]
        if not isinstance(columns, ColumnTransformer) or columns.remainder != "drop":
            raise Unsupported("first step is not a ColumnTransformer dropping the remainder")
        blocks: list[Callable[[list[dict[str, Any]]], np.ndarray]] = []  # records -> their columns
        for block, transformer, selected in columns.transformers_:
            if transformer == "drop" or block == "remainder":
                continue
            if isinstance(transformer, MultiLabelIndicator):
                blocks.append(_Indicators(selected, transformer))
            elif isinstance(transformer, PhenotypeSimilarity):
                blocks.append(_Similarity(selected, transformer))
            elif isinstance(transformer, Pipeline) and [type(s) for _, s in transformer.steps] == [PhenotypeSimilarity,
                                                                                                StandardScaler]:
                blocks.append(_Similarity(selected, *[s for _, s in transformer.steps]))
            elif (isinstance(transformer, Pipeline) and len(transformer.steps) == 2  # ScaleNumbersOnly is a StandardScaler
                  and type(transformer.steps[0][1]) is SimpleImputer and isinstance(transformer.steps[1][1], StandardScaler)):
                blocks.append(_Numeric(list(selected), *[s for _, s in transformer.steps]))
            elif (isinstance(transformer, Pipeline) and len(transformer.steps) == 2
                  and isinstance(transformer.steps[0][1], FunctionTransformer)
                  and transformer.steps[0][1].func is fill_missing_category
                  and isinstance(transformer.steps[1][1], OneHotEncoder)):
                blocks.append(_Categorical(list(selected), transformer.steps[1][1]))
            else:
                raise Unsupported(f"block {block}")
        tail: list[Callable[[Any], Any]] = []
        sparse = bool(getattr(columns, "sparse_output_", False))  # the layout the column transform gives
        for _, step in steps[1:]:
            if isinstance(step, FunctionTransformer) and step.func in (to_float32, as_float32):
                tail.append(step.func)  # to_float32 makes the rows dense, as_float32 keeps the layout: as fitted
                sparse = sparse and step.func is as_float32
            else:
                tail.append(step.transform)  # PCA / LDA on a plain array: cheap
                sparse = False  # their output is dense
        return cls(blocks, tail, bool(getattr(columns, "sparse_output_", False)), sparse)

    def transform(self, records: list[dict[str, Any]]) -> np.ndarray:
        X: Any = np.hstack([block(records) for block in self.blocks]) if self.blocks else np.zeros((len(records), 0))
        X = X.astype(np.float32)  # float64 blocks rounded once, float32 blocks unchanged: as sklearn's hstack + cast
        if self.csr_tail:
            X = _csr(X)
        for step in self.tail:
            X = step(X)
        return X.toarray() if is_sparse(X) else X


def _attempt(action: Callable[[], T]) -> T | None:
    """``action()``, or None (logged) when it raises: any surprise means staying on sklearn's path."""
    try:
        return action()
    except Unsupported as why:
        log.info("fast path not used: unsupported %s", why)
    except Exception as err:  # noqa: BLE001
        log.warning("fast path not used: %s", err)
    return None


def compile_features(features: Pipeline, probes: list[dict[str, Any]], columns: list[str]) -> CompiledFeatures | None:
    """The compiled path if it reproduces sklearn's transform on ``probes`` to the bit, else None (use sklearn)."""
    compiled = _attempt(lambda: CompiledFeatures.compile(features))
    return compiled if compiled is not None and _pipeline_rows(compiled, features, probes, columns) is not None \
        else None


def _pipeline_rows(compiled: CompiledFeatures, features: Pipeline, probes: list[dict[str, Any]],
                   columns: list[str]) -> Any | None:
    """sklearn's rows of ``probes`` as the pipeline gives them (CSR or dense) if ``compiled`` gives the same layout,
    dtype and values, to the bit; else None."""
    def both() -> tuple[Any, np.ndarray, np.ndarray]:
        given = features.transform(pd.DataFrame(probes, columns=columns))
        if is_sparse(given) != compiled.sparse:
            raise Unsupported("a pipeline whose output layout is not its column transform's")
        return given, (given.toarray() if is_sparse(given) else np.asarray(given)), compiled.transform(probes)

    rows = _attempt(both)
    if rows is None:
        return None
    given, expected, got = rows
    if got.shape != expected.shape or got.dtype != expected.dtype or not np.array_equal(got, expected):
        differ = np.count_nonzero(got != expected) if got.shape == expected.shape else "all"
        log.warning("fast path not used: it differs from the sklearn transform on probe records (%s values)", differ)
        return None
    return given


class _XGBoostOnDenseRows:
    """An XGBoost classifier behind :class:`SparseIndicators`, fed the compiled path's dense rows directly.

    SparseIndicators leaves an indicator's 0 out of its CSR matrix, which XGBoost reads as missing; here that 0
    becomes NaN, XGBoost's missing value in a dense matrix, and every other value stays as it is: the trees
    take the same branches, without a CSR matrix and sklearn's pipeline built per request (3.6 -> 3.1 ms for
    100 patients, 0.75 -> 0.53 ms for one, on one thread)."""

    def __init__(self, indicators: SparseIndicators, booster: Any):
        self.indicator = indicators.indicator_
        self.booster = booster

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict_proba(np.where(self.indicator & (X == 0), np.float32(np.nan), X))


class _OnCsrRows:
    """The classifier itself, handed the CSR rows the feature pipeline gives it rather than the compiled path's
    dense ones: a linear model's (or a kernel's) sums over a CSR row add the nonzeros in another order than over
    a dense one, and round differently (logistic regression: up to 5e-7 in a probability)."""

    def __init__(self, classifier: Any):
        self.classifier = classifier

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.classifier.predict_proba(_csr(X))


class _LogisticOnCsrRows:
    """A fitted scikit-learn LogisticRegression's ``predict_proba`` on the CSR rows, with its own arithmetic (1.9):
    the rows times the transposed coefficients (scipy's CSR product, as ``safe_sparse_dot``), plus the intercept;
    then the softmax of several classes, or the logistic function of two. Replicated rather than called: its input
    validation cost 90 us of a 130 us call on a 100-patient request; :func:`compile_model` checks the result against
    the pipeline's, to the bit, at load."""

    def __init__(self, classifier: LogisticRegression):
        if type(classifier) is not LogisticRegression or type(classifier.coef_) is not np.ndarray:
            raise Unsupported("a logistic regression of its own kind, or with sparse coefficients")
        self.coef_t = classifier.coef_.T
        self.intercept = classifier.intercept_
        self.binary = len(classifier.classes_) <= 2

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = _csr(X) @ self.coef_t + self.intercept
        if not self.binary:
            return softmax(scores, copy=False)
        positive = expit(scores.reshape(-1), out=scores.reshape(-1))
        return np.stack([1 - positive, positive], axis=1)


def _logistic_stand_in(classifier: Any) -> _LogisticOnCsrRows | None:
    return _LogisticOnCsrRows(classifier) if type(classifier) is LogisticRegression else None


def _xgboost_stand_in(classifier: Any) -> _XGBoostOnDenseRows | None:
    steps = getattr(classifier, "steps", None)
    if not steps or len(steps) != 2 or not isinstance(steps[0][1], SparseIndicators):
        return None
    booster = steps[1][1]
    missing = getattr(booster, "missing", None)
    if type(booster).__module__.split(".")[0] != "xgboost" or not (isinstance(missing, float) and math.isnan(missing)):
        return None
    return _XGBoostOnDenseRows(steps[0][1], booster)


def fitted_probes(compiled: CompiledFeatures, columns: list[str], n: int = FITTED_PROBES) -> list[dict[str, Any]]:
    """Records built from what the fitted blocks learned, to check the compiled path where patients are: every
    sixth with no terms (a similarity of 0, the commonest value of those columns, which trees split on), the
    others 1-5 known terms; numbers missing, at the imputed value and at the mean plus -2 to 2.5 sd; every
    category and a missing one in turn."""
    lists = {b.column for b in compiled.blocks if isinstance(b, (_Indicators, _Similarity))}
    known: dict[str, list[str]] = {}
    for block in compiled.blocks:
        if isinstance(block, _Indicators):
            known.setdefault(block.column, sorted(map(str, block.indicator.vocabulary_)))
        elif isinstance(block, _Similarity) and not known.get(block.column):
            known[block.column] = sorted(map(str, getattr(block.similarity, "terms_", [])))
    template: dict[str, Any] = {c: ([] if c in lists else None) for c in columns}
    out = []
    for i in range(n):
        record = dict(template)
        for block in compiled.blocks:
            if isinstance(block, _Numeric):
                mean, scale = block.mean, block.scale
                for j, column in enumerate(block.columns):
                    offset = PROBE_OFFSETS[(i + j) % len(PROBE_OFFSETS)]
                    record[column] = (None if offset is None else float(block.fill[j]) if offset == "fill"
                                      else round(float(mean[j] + float(offset) * scale[j]), 1))
            elif isinstance(block, _Categorical):
                for j, column in enumerate(block.columns):
                    values = [v for v in block.mapping[j] if v != MISSING] + [None]
                    record[column] = values[(i + j) % len(values)]
        for column, terms in known.items():
            count = i % 6
            if terms and count:
                stride = max(1, len(terms) // 31)
                record[column] = [terms[(i * 13 + t * stride) % len(terms)] for t in range(count)]
        out.append(record)
    return out


def _stand_ins(classifier: Any, compiled: CompiledFeatures) -> list[Any]:
    """What may score the compiled (dense) rows in place of ``classifier`` on the pipeline's rows, fastest first:
    the compiled XGBoost; the classifier itself (None) where the pipeline's rows are dense too or the classifier
    makes them dense itself (DenseBatches); else the classifier on their CSR. :func:`compile_model` checks them."""
    found: list[Any] = [c for c in (_xgboost_stand_in(classifier),) if c is not None]
    if compiled.sparse:
        found += [c for c in (_attempt(lambda: _logistic_stand_in(classifier)),) if c is not None]
    found.append(None if not compiled.sparse or isinstance(classifier, DenseBatches) else _OnCsrRows(classifier))
    return found


def compile_model(model: DiagnosaModel, probes: list[dict[str, Any]], columns: list[str]
                  ) -> tuple[CompiledFeatures | None, Any]:
    """(compiled features, the classifier's stand-in or None) if together they give the model's probabilities (the
    sklearn pipeline's, calibrated: what ``DiagnosaModel.predict_proba`` and so Evaluate give) to the bit on
    ``probes`` and on records built from the fitted blocks (:func:`fitted_probes`), the compiled features being
    the pipeline's to the bit too; else (None, None): serve the pipeline itself. Logged either way."""
    try:
        compiled = CompiledFeatures.compile(model.features)
        records = [*probes, *fitted_probes(compiled, columns)]
    except Unsupported as why:
        log.info("fast path not used: unsupported %s", why)
        return None, None
    except Exception as err:  # noqa: BLE001 — any surprise means: stay on sklearn's path
        log.warning("fast path not used: %s", err)
        return None, None
    given = _pipeline_rows(compiled, model.features, records, columns)
    if given is None:
        return None, None
    try:
        # The pipeline's probabilities: its classifier on its features' own rows (Pipeline.predict_proba's steps,
        # without transforming the records a second time).
        if len(model.pipeline.steps) == 2:
            expected = model.predict_proba_features(given)
        else:
            expected = model.predict_proba(pd.DataFrame(records, columns=columns))
        rows = compiled.transform(records)
        for stand_in in _stand_ins(model.pipeline.steps[-1][1], compiled):
            got = model.predict_proba_features(rows, stand_in)
            if got.shape == expected.shape and np.array_equal(got, expected):
                log.info("fast path used: %d probe records give the pipeline's probabilities exactly (classifier: %s)",
                         len(records), "itself" if stand_in is None else type(stand_in).__name__)
                return compiled, stand_in
            log.info("classifier stand-in %s not used: its probabilities differ from the pipeline's on probe "
                     "records (max %.3g)", "None" if stand_in is None else type(stand_in).__name__,
                     float(np.abs(got - expected).max()) if got.shape == expected.shape else float("nan"))
    except Exception as err:  # noqa: BLE001 — any surprise means: stay on sklearn's path
        log.warning("fast path not used: %s", err)
        return None, None
    log.warning("fast path not used: its probabilities differ from the pipeline's on %d probe records", len(records))
    return None, None
