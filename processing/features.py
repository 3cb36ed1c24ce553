"""The feature pipeline: raw curated columns → one float32 matrix (CSR when sparse), fitted on train only.

Built from the dataset's schema, so a user's own CSV gets the same treatment as the cohort:
numbers are imputed (with missing-value indicators: an absent lab panel is information) and
scaled, the indicators too unless ``missing_indicators="binary"`` keeps them 0/1; categories
one-hot encoded; HPO symptom lists become sparse indicators, optionally rolled up to their HPO
ancestors so that rare diseases with different leaf terms share signal, and are
scored against the knowledge base's rare diseases (semantic similarity per illness category,
processing/phenotype.py, fitted from the knowledge base rather than from labels); other code
lists (prior diagnoses) become indicators too. An optional reduction (PCA, LDA or PCA then LDA)
follows. The whole thing is one sklearn estimator, saved inside the model artifact.

The matrix stays sparse (issue 16): a patient has ~64 stored values among 745 columns at 20k patients and
~1,300 at a million, so the dense float32 matrix of a million patients' training split was 12 GB per copy
(4,413 columns before ``min_term_share``; twice that as float64 on the way) and the CSR is ~0.4 GB. The
column blocks are stacked as CSR when the result is less than ``SPARSE_DENSITY`` dense (a table of numbers
alone stays a dense array); every estimator that needs dense rows gets them through ``DenseBatches``:
fitted on a bounded sample, applied in row batches.
"""
from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils import _safe_indexing
from sklearn.utils import resample as sample_rows
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight

from diagnosa.data.hpo import PHENOTYPIC_ABNORMALITY, load_ontology
from diagnosa.data.schema import MISSING_INDICATORS, Schema
from processing.phenotype import PhenotypeSimilarity
from processing.phenotype import as_lists as _as_lists
from processing.sparse import is_sparse

REDUCTIONS = ("none", "pca", "lda", "both")
# Fitted with the labels: a training-split row is not out of sample for them, so training's cross-validation
# scores only the validation rows when the pipeline holds one (training/train.py, supervised_transform).
SUPERVISED_REDUCTIONS = ("lda", "both")
SUPERVISED_STEPS = ("lda",)  # their step names in the fitted pipeline
# The column blocks are stacked as CSR below this share of stored values (the cohort's: 8.6 % at 20k patients,
# ~4 % at 1M), else as a dense array. sklearn's own default for ColumnTransformer.
SPARSE_DENSITY = 0.3
# Estimators that need dense rows (HistGradientBoosting, LDA, the MLP) are fitted on at most this many cells of a row
# sample (1 GiB as float64, what they convert to) and applied in batches of ``DENSE_BATCH_ROWS`` rows.
DENSE_FIT_MAX_CELLS = 2**27
DENSE_BATCH_ROWS = 20_000


@dataclass(frozen=True)
class FeatureParams:
    reduction: str = "none"
    hpo_rollup: bool = True
    min_term_count: int = 5  # indicator columns seen fewer times in train are dropped (noise, and size)
    # ... and fewer times than this share of the training rows: with a fixed count alone the symptom vocabulary
    # grew with the cohort (808 columns at 14k training patients, 1,784 at 70k, 4,891 at 700k), and every
    # family's cost with it (issue 16). With the share it stays ~1,500 from 70k patients on; below 50k
    # training patients the count decides alone (the default cohort's features are unchanged).
    min_term_share: float = 1e-4
    pca_components: float = 0.95  # share of variance kept (0 < x < 1) or a number of components (>= 1)
    # Similarity of each HPO list to the knowledge base's rare diseases, per illness category
    # (processing/phenotype.py): signal for diseases no training patient had.
    phenotype_similarity: bool = True
    phenotype_top: int = 3  # the "mean of the top k" diseases per category
    # "binary" (``ScaleNumbersOnly``) helps small tables with rare gaps (pbc +0.054 macro recall) but cost the
    # cohort's orphan diseases unseen in training 0.027 macro recall over 20 seeds: the cohort's "scaled" here; a
    # dataset config's default is its own (diagnosa.data.schema.config_missing_indicators; docs/benchmark-real.md,
    # "Missing-value indicators left 0/1").
    missing_indicators: str = "scaled"

    def validate(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")
        if self.missing_indicators not in MISSING_INDICATORS:
            raise ValueError(f"missing_indicators must be one of {', '.join(MISSING_INDICATORS)}, "
                             f"got {self.missing_indicators!r}")
        if self.min_term_count < 1:
            raise ValueError(f"min_term_count must be at least 1, got {self.min_term_count}")
        if not 0 <= self.min_term_share < 1:
            raise ValueError(f"min_term_share must be in [0, 1), got {self.min_term_share}")
        if isinstance(self.phenotype_top, bool) or not isinstance(self.phenotype_top, int) or self.phenotype_top < 1:
            raise ValueError(f"phenotype_top must be a whole number >= 1, got {self.phenotype_top!r}")
        if not (0 < self.pca_components < 1 or (self.pca_components >= 1 and float(self.pca_components).is_integer())):
            raise ValueError(f"pca_components must be a variance share in (0, 1) or a whole number >= 1, "
                             f"got {self.pca_components}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MultiLabelIndicator(TransformerMixin, BaseEstimator):
    """Lists of codes → sparse 0/1 columns; HPO terms optionally roll up to their ancestors.

    Roll-up stops below *Phenotypic abnormality* (HP:0000118), whose ancestors say nothing.
    Terms unseen at fit time still light up the ancestors that were seen. A column is kept when its
    term is seen in at least ``min_count`` rows and ``min_share`` of the rows fitted.
    """

    def __init__(self, rollup: bool = False, min_count: int = 5, min_share: float = 0.0):
        self.rollup = rollup
        self.min_count = min_count
        self.min_share = min_share

    def _expand(self, term: str) -> tuple[str, ...]:
        if not self.rollup:
            return (term,)
        cache = self.__dict__.setdefault("_cache", {})
        found = cache.get(term)
        if found is None:
            ontology = load_ontology()
            if term in ontology:
                found = tuple(sorted(a for a in ontology.ancestors(term)
                                     if a != PHENOTYPIC_ABNORMALITY and ontology.is_under(a, PHENOTYPIC_ABNORMALITY)))
            else:
                found = (term,)
            cache[term] = found
        return found

    def fit(self, X: Any, y: Any = None) -> MultiLabelIndicator:
        counts: Counter[str] = Counter()
        lists = _as_lists(X)
        for terms in lists:
            counts.update({t for term in terms for t in self._expand(term)})
        self.threshold_ = max(self.min_count, math.ceil(self.min_share * len(lists)))
        kept = sorted(t for t, c in counts.items() if c >= self.threshold_)
        self.vocabulary_ = {t: i for i, t in enumerate(kept)}
        return self

    def transform(self, X: Any) -> sp.csr_matrix:
        vocabulary = self.vocabulary_
        lists = _as_lists(X)
        indptr = np.zeros(len(lists) + 1, dtype=np.int64)
        indices = array("i")  # 4 bytes a column index (a Python list held ~36: 1.6 GB for 700k patients)
        for i, terms in enumerate(lists):
            row = {vocabulary[t] for term in terms for t in self._expand(term) if t in vocabulary}
            indices.extend(sorted(row))
            indptr[i + 1] = len(indices)
        data = np.ones(len(indices), dtype=np.float32)
        return sp.csr_matrix((data, np.frombuffer(indices, dtype=np.int32), indptr),
                             shape=(len(lists), len(vocabulary)))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.array(list(self.vocabulary_), dtype=object)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_cache", None)  # rebuilt on demand; keeps the artifact small
        return state


def _fitted_blocks(features: Any) -> Iterator[tuple[str, Any, Any]]:
    """(name, fitted transformer, columns) of each block of the fitted feature pipeline's ColumnTransformer."""
    steps = getattr(features, "steps", None) or [(None, features)]
    for _, step in steps:
        yield from getattr(step, "transformers_", [])


def list_vocabularies(features: Any) -> dict[str, frozenset[str]]:
    """The values each list field's indicator block knows, for blocks without roll-up (codes): any other value
    of that field adds nothing to the features, so the endpoint can say which of a patient's were not used."""
    found: dict[str, frozenset[str]] = {}
    for _, transformer, selected in _fitted_blocks(features):
        if isinstance(transformer, MultiLabelIndicator) and not transformer.rollup:
            name = selected if isinstance(selected, str) else list(selected)[0]
            found[str(name)] = frozenset(transformer.vocabulary_)
    return found


def category_vocabularies(features: Any) -> dict[str, frozenset[str]]:
    """The values each category field's one-hot block saw in training: another value encodes as none of them
    (``handle_unknown="ignore"``), whatever it is, so the endpoint can say which values it did not know."""
    found: dict[str, frozenset[str]] = {}
    for name, transformer, selected in _fitted_blocks(features):
        if name == "categorical":
            encoder = transformer.steps[-1][1] if hasattr(transformer, "steps") else transformer
            for column, seen in zip(selected, getattr(encoder, "categories_", [])):
                found[str(column)] = frozenset(str(v) for v in seen)
    return found


class SparseIndicators(TransformerMixin, BaseEstimator):
    """Features as CSR in which 0/1 indicator columns store only their 1s, every other column every value.

    For XGBoost (issue 16): its ``hist`` method visits every entry present, so on the dense matrix a fit cost
    rows x columns, and the symptom vocabulary grows with the cohort (745 columns at 20k patients, 1,511 at
    100k) while a patient has ~64 findings. An entry absent from a CSR matrix is "missing" to XGBoost, and on a
    0/1 column "missing | 1" is the same split as "0 | 1"; continuous columns keep their zeros as values. The
    trees, and so the predictions, are the dense model's exactly (max difference 0 on 2,988 held-out cohort patients),
    for ~77 stored entries per row instead of 745: the 20k fit 16.9 s -> 5.0 s. Shipped with the model
    (this module is in the serving code), so prediction sees the same encoding. Takes the feature pipeline's CSR
    (which leaves every zero out, continuous ones too) or dense rows (serving's compiled path) alike.
    """

    def __init__(self, chunk_rows: int = 20_000):
        self.chunk_rows = chunk_rows

    def fit(self, X: Any, y: Any = None) -> SparseIndicators:
        X = sp.csr_matrix(X) if is_sparse(X) else to_float32(X)
        self.indicator_ = binary_columns(X, self.chunk_rows)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> sp.csr_matrix:
        X = sp.csr_matrix(X, dtype=np.float32) if is_sparse(X) else to_float32(X)
        if X.shape[1] != len(self.indicator_):
            raise ValueError(f"expected {len(self.indicator_)} feature columns, got {X.shape[1]}")
        if not X.shape[0]:
            return sp.csr_matrix(X.shape, dtype=np.float32)
        encode = self._encode_sparse if is_sparse(X) else self._encode_dense
        blocks = [encode(X[start:start + self.chunk_rows]) for start in range(0, X.shape[0], self.chunk_rows)]
        return blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")

    def _encode_dense(self, part: np.ndarray) -> sp.csr_matrix:
        keep = (part != 0) | ~self.indicator_[None, :]
        rows, cols = np.nonzero(keep)  # row-major: CSR order
        indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
        return sp.csr_matrix((part[rows, cols], cols, indptr), shape=part.shape)

    def _encode_sparse(self, part: sp.csr_matrix) -> sp.csr_matrix:
        """The indicators' stored non-zeros beside every value of the other columns (absent ones as explicit 0)."""
        n = part.shape[0]
        continuous = np.flatnonzero(~self.indicator_)
        ones = self.indicator_[part.indices] & (part.data != 0)
        rows = np.repeat(np.arange(n), np.diff(part.indptr))[ones]
        values = part[:, continuous].toarray()  # rows x the few continuous columns
        rows = np.concatenate([rows, np.repeat(np.arange(n), len(continuous))])
        cols = np.concatenate([part.indices[ones], np.tile(continuous, n)]).astype(np.int32)
        data = np.concatenate([part.data[ones], values.ravel()])
        order = np.lexsort((cols, rows))  # CSR order: by row, then column
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
        return sp.csr_matrix((data[order], cols[order], indptr), shape=part.shape)


def _dense(X: Any) -> np.ndarray:
    return X.toarray() if is_sparse(X) else np.asarray(X)


def splittable_columns(X: Any, min_leaf_rows: int) -> np.ndarray:
    """The columns of ``X`` (sparse or dense) a tree needing ``min_leaf_rows`` rows in each leaf could split on:
    those whose rows other than their most common value (NaN one value, a sparse column's absent cells zeros)
    number at least that many. Any split of another column leaves all the common value's rows on one side, so fewer
    than ``min_leaf_rows`` on the other: no node of any tree fitted on these rows (or fewer of them) splits on it."""
    n = X.shape[0]
    if is_sparse(X):
        columns = sp.csc_matrix(X)
        values = [columns.data[columns.indptr[j]:columns.indptr[j + 1]] for j in range(X.shape[1])]
    else:
        dense = np.asarray(X)
        values = [dense[:, j] for j in range(X.shape[1])]
    keep = np.zeros(X.shape[1], dtype=bool)
    for j, column in enumerate(values):
        zeros = 0
        if is_sparse(X):  # stored zeros join the absent cells
            column = column[column != 0]
            zeros = n - len(column)
        counts = np.unique(column, return_counts=True, equal_nan=True)[1] if len(column) else np.zeros(1, dtype=int)
        keep[j] = n - max(zeros, int(counts.max())) >= min_leaf_rows
    return np.flatnonzero(keep)


def _columns(X: Any, columns: np.ndarray) -> Any:
    return X.iloc[:, columns] if isinstance(X, pd.DataFrame) else X[:, columns]


def _estimator_has(name: str) -> Any:
    return lambda self: hasattr(self.estimator, name)


class DenseBatches(BaseEstimator):
    """An estimator that needs dense rows, handed a matrix that may be sparse: fitted on a bounded sample of rows
    (``DENSE_FIT_MAX_CELLS``; stratified by ``y`` when given, so the class mix and balanced weights hold), applied
    in batches of ``batch_rows`` rows. Below the bound (the 20k and 100k cohorts) it fits on every row, exactly as
    the estimator alone would. For HistGradientBoosting and LDA, which refuse sparse input, and the MLP (see
    training/models.py).

    ``min_leaf_rows`` (a tree ensemble's rows per leaf; 0: off): the columns no tree could split on among the rows
    fitted (:func:`splittable_columns`) are left out of the dense rows, fit and prediction alike (``columns_``). The
    model is the same to the bit, its cost follows the columns kept: the 100k cohort's gradient boosting kept 546 of
    1,245 (most are indicators of rare findings), its fit 49.7 -> 25.5 s."""

    def __init__(self, estimator: Any, max_fit_cells: int = DENSE_FIT_MAX_CELLS, batch_rows: int = DENSE_BATCH_ROWS,
                 random_state: int = 0, min_leaf_rows: int = 0):
        self.estimator = estimator
        self.max_fit_cells = max_fit_cells
        self.batch_rows = batch_rows
        self.random_state = random_state
        self.min_leaf_rows = min_leaf_rows

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A model pickled before min_leaf_rows existed: get_params (every load limits the model's threads through it),
        # repr and clone failed on it ("no attribute 'min_leaf_rows'"), and no such model could be served.
        state.setdefault("min_leaf_rows", 0)
        if "estimator_" in state:
            state.setdefault("columns_", None)
        super().__setstate__(state)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> DenseBatches:
        n, width = X.shape
        limit = max(1, self.max_fit_cells // max(1, width))
        rows = np.arange(n)
        if n > limit:
            rows = np.sort(sample_rows(rows, replace=False, n_samples=limit, random_state=self.random_state,
                                       stratify=None if y is None else np.asarray(y)))
        self.fit_rows_ = len(rows)
        # By row whatever X is: X[rows] took a DataFrame's columns (the first 40 of 50), and a weight per row given
        # for fewer rows was cut short without a word.
        fit_args = {} if sample_weight is None else {"sample_weight": _check_sample_weight(sample_weight, X)[rows]}
        fitted = _safe_indexing(X, rows)
        self.columns_ = None
        if self.min_leaf_rows > 1:
            keep = splittable_columns(fitted, self.min_leaf_rows)
            if len(keep) < width:  # at least one column: the estimator refuses none (its trees are leaves then)
                self.columns_ = keep if len(keep) else np.arange(1)
                fitted = _columns(fitted, self.columns_)
        self.estimator_ = clone(self.estimator).fit(_dense(fitted), None if y is None else np.asarray(y)[rows],
                                                    **fit_args)
        self.n_features_in_ = width
        return self

    def _batches(self, method: str, X: Any) -> np.ndarray:
        apply = getattr(self.estimator_, method)
        columns = getattr(self, "columns_", None)  # absent from a model pickled before it was kept
        # A slice is rows whatever X is (a DataFrame's too), and costs nothing on the serving path (_safe_indexing
        # added 35-75 µs a call).
        parts = [apply(_dense(X[start:start + self.batch_rows] if columns is None
                              else _columns(X[start:start + self.batch_rows], columns)))
                 for start in range(0, X.shape[0], self.batch_rows)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    @available_if(_estimator_has("transform"))
    def transform(self, X: Any) -> np.ndarray:
        return self._batches("transform", X)

    @available_if(_estimator_has("transform"))
    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        return self.fit(X, y, **fit_params).transform(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        return self._batches("predict_proba", X)

    @available_if(_estimator_has("predict"))
    def predict(self, X: Any) -> np.ndarray:
        return self._batches("predict", X)

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator_.classes_

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return self.estimator_.get_feature_names_out()


def to_float32(X: Any) -> np.ndarray:
    """Dense float32 (the feature pipeline's last step before issue 16; artifacts of that time still name it)."""
    return np.asarray(X.toarray() if is_sparse(X) else X, dtype=np.float32)


def as_float32(X: Any) -> Any:
    """float32; sparse input stays sparse (CSR)."""
    return sp.csr_matrix(X, dtype=np.float32) if is_sparse(X) else np.asarray(X, dtype=np.float32)


def fill_missing_category(X: Any) -> pd.DataFrame:
    frame = pd.DataFrame(X).astype(object)
    return frame.where(frame.notna(), "<missing>")


# Model artifacts pickle these two by name: artifacts saved before they were public still load.
_to_float32, _fill_missing_category = to_float32, fill_missing_category


def _bool_to_float(X: Any) -> np.ndarray:
    frame = pd.DataFrame(X)
    return frame.apply(lambda c: c.map({True: 1.0, False: 0.0})).astype(float).to_numpy()


class ScaleNumbersOnly(StandardScaler):
    """Standardises the first ``n_numbers`` columns (the imputed values); the columns after them, the imputer's
    0/1 missing-value indicators, pass unchanged.

    Standardised, an indicator of a value missing in 2 % of the training rows became a column of ~7s there,
    which an L2-penalised model could lean on almost for free: on pbc (15 % of cells missing, 11 indicators)
    logistic regression lost 0.05 macro recall with them, and Diagnosa gained 0.054 without
    (docs/benchmark-real.md, "Missing-value indicators left 0/1"; ``FeatureParams.missing_indicators``, not the
    default: the cohort's unseen orphan diseases lost recall). ``mean_`` and ``scale_`` hold 0 and 1 for
    the indicators, so anything reading a fitted StandardScaler (serving's compiled path) reads this one."""

    def __init__(self, n_numbers: int | None = None, *, copy: bool = True, with_mean: bool = True,
                 with_std: bool = True) -> None:
        super().__init__(copy=copy, with_mean=with_mean, with_std=with_std)
        self.n_numbers = n_numbers

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> ScaleNumbersOnly:
        super().fit(X, y, sample_weight)
        n = X.shape[1] if self.n_numbers is None else self.n_numbers
        if not 0 <= n <= X.shape[1]:
            raise ValueError(f"n_numbers={n} but the imputer gave {X.shape[1]} columns")
        for name, identity in (("mean_", 0.0), ("var_", 1.0), ("scale_", 1.0)):
            if getattr(self, name, None) is not None:
                getattr(self, name)[n:] = identity
        return self


def build_feature_pipeline(schema: Schema, params: FeatureParams | None = None, *, seed: int = 0) -> Pipeline:
    """An unfitted pipeline for the schema's feature fields (metadata, id and target never enter)."""
    params = params or FeatureParams()
    params.validate()
    numeric = schema.features("number", "integer")
    categories = schema.features("category", "string")
    flags = schema.features("boolean")
    blocks: list[tuple[str, Any, Any]] = []
    if numeric:
        blocks.append(("numeric", make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            ScaleNumbersOnly(n_numbers=len(numeric)) if params.missing_indicators == "binary" else StandardScaler()),
            numeric))
    if categories:
        blocks.append(("categorical", make_pipeline(
            FunctionTransformer(fill_missing_category, feature_names_out="one-to-one"),
            OneHotEncoder(handle_unknown="ignore", min_frequency=params.min_term_count)), categories))
    if flags:
        blocks.append(("flags", make_pipeline(FunctionTransformer(_bool_to_float, feature_names_out="one-to-one"),
                                              SimpleImputer(strategy="most_frequent", keep_empty_features=True)), flags))
    for name in schema.features("hpo_terms"):
        blocks.append((f"hpo:{name}", MultiLabelIndicator(rollup=params.hpo_rollup, min_count=params.min_term_count,
                                                          min_share=params.min_term_share), name))
        if params.phenotype_similarity:
            # Standardised over the training rows like the numeric block: the similarity columns spread far less
            # (sd 0.04-0.25 on the cohort) than the standardised numbers, and the families that are sensitive to
            # scale (L2-penalised logistic regression, the MLP) barely used them (docs/model-benchmark.md, issue 14).
            blocks.append((f"phenotype:{name}", make_pipeline(PhenotypeSimilarity(top=params.phenotype_top),
                                                              StandardScaler()), name))
    for name in schema.features("codes"):
        blocks.append((f"codes:{name}", MultiLabelIndicator(rollup=False, min_count=params.min_term_count,
                                                            min_share=params.min_term_share), name))
    if not blocks:
        raise ValueError(f"schema '{schema.name}' declares no feature fields")
    steps: list[tuple[str, Any]] = [
        ("columns", ColumnTransformer(blocks, sparse_threshold=SPARSE_DENSITY, remainder="drop")),
        ("float32", FunctionTransformer(as_float32, feature_names_out="one-to-one")),
    ]
    if params.reduction in ("pca", "both"):
        n = params.pca_components if params.pca_components < 1 else int(params.pca_components)
        # The covariance solver takes CSR as it is (X^T X, features x features) and keeps "share of variance"
        # components: the full SVD needs the dense centred matrix.
        steps.append(("pca", PCA(n_components=n, svd_solver="covariance_eigh", random_state=seed)))
    if params.reduction in ("lda", "both"):
        steps.append(("lda", DenseBatches(LinearDiscriminantAnalysis(), random_state=seed)))
    if params.reduction != "none":
        steps.append(("float32_out", FunctionTransformer(to_float32, feature_names_out="one-to-one")))
    return Pipeline(steps)


def binary_columns(X: Any, chunk_rows: int = 20_000) -> np.ndarray:
    """Columns holding only 0 and 1 (indicators; NaN is neither): SMOTENC treats them as categorical, and
    XGBoost's sparse encoding leaves their zeros out. Sparse input: its stored values decide (absent ones are 0);
    dense: vectorised a block of rows at a time (bounded temporaries)."""
    if is_sparse(X):
        X = sp.csr_matrix(X)
        indicator = np.ones(X.shape[1], dtype=bool)
        indicator[X.indices[(X.data != 0) & (X.data != 1)]] = False
        return indicator
    indicator = np.ones(X.shape[1], dtype=bool)
    for start in range(0, X.shape[0], chunk_rows):
        part = X[start:start + chunk_rows]
        indicator &= ((part == 0) | (part == 1)).all(axis=0)
    return indicator
