"""Preprocessing job: curated dataset → split, fitted feature pipeline, transformed training rows.

Two stages, so the costly part — transforming every row — can spread over instances (docs/pipeline.md,
"Scale-out"):

* **fit** (one instance): the split, decided over the whole dataset from its key columns alone (id,
  label, slice, group), and the feature pipeline fitted once on the training rows — all of them up to
  ``fit_max_rows``, else a bounded sample (every slice row, the rest drawn with the seed). A bounded
  sample rather than a streaming first pass because the pipeline's steps (median imputation, one-hot
  levels, term counts, PCA/LDA) have no incremental fit, and their statistics settle long before
  200,000 rows. Writes ``transformer/`` (the pipeline and ``preprocess.json``), ``split/`` (each id's
  split and the slice's groups seen in training) and the monitoring data baseline (``baseline/``).
* **transform** (one or many instances): each curated Parquet part this instance holds (S3 sharding by
  key hands each instance a share of the parts) is transformed with the fitted pipeline and written
  under the part's own name — ``train/<part>.npz``, ``validation/<part>.parquet`` (and its features, ``<part>.npz``),
  ``test/<part>.parquet`` — so the union of every instance's outputs is the same whatever the number
  of instances, and read in name order it is the curated row order. Class weights come from the class
  counts of the whole training split (recorded by the fit), not from a part's.

``--stage all`` (the default) runs both in one process: what a single machine, the tests and
``python -m processing.preprocess`` by hand use. Over-samplers and undersampling need every training
row in one process (``JOINT_METHODS``): they run with one transform instance only, over all rows.

Container contract (SageMaker Processing): ``/opt/ml/processing/input/curated`` holds a curated version
(``manifest.json`` and its Parquet parts, ``data/part-NNNNN.parquet``; a single ``data.parquet`` works
the same). The fit reads exactly the parts the manifest's ``data_keys`` list, and refuses any other object there
or a listed part that is absent (a stray export under the prefix was trained and tested on); it records their names
in ``preprocess.json``, and each transform instance refuses an object it holds that is not among them. The transform
stage also gets ``input/transformer`` and ``input/split``; outputs go to ``/opt/ml/processing/output/<name>``. A
failure's reason goes to ``/opt/ml/output/message`` (DescribeProcessingJob's ExitMessage: ``diagnosa/files.py``). The
entry point is thin: tests call the functions directly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from diagnosa.data.ingest import curated_prefix
from diagnosa.data.schema import LIST_TYPES, MISSING_INDICATORS, UNLEARNED_TYPES, Schema
from diagnosa.data.validate import number_spreads
from diagnosa.files import job_reason, not_a_file, read_json_record, write_job_failure
from diagnosa.logs import configure_logging
from diagnosa.text import some_of
from processing.entry import host_names_problem, job_parser, stops_on_sigterm
from processing.features import REDUCTIONS, FeatureParams, as_float32, binary_columns, build_feature_pipeline
from processing.resample import JOINT_METHODS, METHODS, Resampled, balanced_class_weights, resample, row_weights
from processing.split import (
    DEFAULT_FRACTIONS,
    DEFAULT_UNSEEN_SHARE,
    GROUPS_FILE,
    SPLITS,
    Splits,
    patient_keys,
    split_dataset,
)
from processing.trainset import TRAIN_FILE, stack_parts, write_train

log = logging.getLogger("diagnosa.preprocess")
STAGES = ("all", "fit", "transform")
FIT_OUTPUTS = ("transformer", "split")  # (+ baseline when its folder exists)
TRANSFORM_OUTPUTS = ("train", "validation", "test")
OUTPUTS = (*TRANSFORM_OUTPUTS, *FIT_OUTPUTS)
TRANSFORMER_FILE = "feature_pipeline.joblib"
RECORD_FILE = "preprocess.json"
MEMBERSHIP_FILE = "membership.parquet"  # in split/: each id's split (0 train, 1 validation, 2 test)
MANIFEST_FILE = "manifest.json"
DEFAULT_FIT_MAX_ROWS = 200_000


@dataclass(frozen=True)
class PreprocessParams:
    features: FeatureParams = field(default_factory=FeatureParams)
    resampling: str = "class_weights"  # chosen from benchmarks/bench_models.py (docs/model-benchmark.md)
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    unseen_share: float = DEFAULT_UNSEEN_SHARE  # of the slice's groups held out of training (processing/split.py)
    fit_max_rows: int = DEFAULT_FIT_MAX_ROWS  # training rows the feature pipeline is fitted on, at most

    def validate(self) -> None:
        self.features.validate()
        if self.resampling not in METHODS:
            raise ValueError(f"resampling must be one of {', '.join(METHODS)}, got {self.resampling!r}")
        if not 0.0 <= self.unseen_share < 1.0:
            raise ValueError(f"unseen share must be in [0, 1), got {self.unseen_share}")
        if isinstance(self.fit_max_rows, bool) or not isinstance(self.fit_max_rows, int) or self.fit_max_rows < 100:
            raise ValueError(f"fit_max_rows must be a whole number of at least 100, got {self.fit_max_rows!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**self.features.to_dict(), "resampling": self.resampling, "seed": self.seed,
                "fractions": list(self.fractions), "unseen_share": self.unseen_share, "fit_max_rows": self.fit_max_rows}


def check_scale_out(resampling: str, instances: int) -> None:
    """Joint resampling needs every training row in one process: refuse it across instances, naming both."""
    if instances > 1 and resampling in JOINT_METHODS:
        raise ValueError(f"resampling {resampling} needs every training row in one process, but the transform runs on "
                         f"{instances} instances: use ProcessingInstanceCount=1, or Resampling none or class_weights "
                         "(which scale out)")


# ------------------------------------------------------------------------------------------------ the fit

@dataclass
class Fitted:
    """What the fit decides once for every part: the split, the fitted pipeline, the class weights."""

    pipeline: Any
    labels: list[str]
    membership: pd.DataFrame  # id column + "split" (0 train, 1 validation, 2 test), curated order
    train_groups: frozenset[str] | None
    resampling: dict[str, Any]  # method, training rows per class ("before"), class weights when used
    feature_names: list[str]
    fitted_rows: pd.DataFrame  # the training rows the pipeline was fitted on (and the data baseline describes)
    timings: dict[str, float]


def key_columns(schema: Schema) -> list[str]:
    """The columns the split reads: id, label, and the slice, its group and the patient when the schema has them."""
    return [c for c in (schema.id_column, schema.target, schema.slice_column, schema.group_column,
                        schema.patient_column) if c]


def fit_sample(train_keys: pd.DataFrame, schema: Schema, max_rows: int, seed: int) -> np.ndarray:
    """Positions (in ``train_keys``, ascending) of the training rows to fit on: all when they fit ``max_rows``,
    else every slice row (few, and they carry the rare terms) and the rest drawn at random."""
    n = len(train_keys)
    if n <= max_rows:
        return np.arange(n)
    column = schema.slice_column
    in_slice = (train_keys[column].fillna(False).to_numpy(dtype=bool) if column and column in train_keys.columns
                else np.zeros(n, dtype=bool))
    others = np.flatnonzero(~in_slice)
    drawn = np.random.default_rng(seed).choice(others, size=max(0, max_rows - int(in_slice.sum())), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(in_slice), drawn]))


def fit(keys: pd.DataFrame, schema: Schema, params: PreprocessParams,
        rows_of: Callable[[pd.Series], pd.DataFrame]) -> Fitted:
    """Split the dataset (its key columns, curated order) and fit the feature pipeline on training rows;
    ``rows_of(ids)`` returns those rows with every column, in curated order."""
    params.validate()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    splits = split_dataset(keys, schema, fractions=params.fractions, seed=params.seed, unseen_share=params.unseen_share)
    code = pd.concat([pd.Series(i, index=part[schema.id_column]) for i, (_, part) in enumerate(splits.items())])
    membership = pd.DataFrame({schema.id_column: keys[schema.id_column].to_numpy(),
                               "split": keys[schema.id_column].map(code).to_numpy(dtype=np.int8)})
    timings["split"] = time.perf_counter() - started

    labels = list(schema.labels)
    y_all = label_indices(splits.train[schema.target], labels)
    counts = np.bincount(y_all, minlength=len(labels))
    resampling: dict[str, Any] = {"method": params.resampling,
                                  "before": {int(c): int(n) for c, n in enumerate(counts) if n}}
    if params.resampling == "class_weights":
        resampling["class_weight"] = balanced_class_weights(y_all)

    started = time.perf_counter()
    chosen = fit_sample(splits.train, schema, params.fit_max_rows, params.seed)
    rows = rows_of(splits.train[schema.id_column].iloc[chosen]).reset_index(drop=True)
    if len(rows) != len(chosen):
        raise ValueError(f"the curated data gave {len(rows)} of the {len(chosen)} training rows asked for")
    timings["read_fit_rows"] = time.perf_counter() - started
    check_feature_columns(rows, schema)
    started = time.perf_counter()
    pipeline = build_feature_pipeline(schema, params.features, seed=params.seed)
    pipeline.fit(rows, y_all[chosen])
    timings["fit_features"] = time.perf_counter() - started
    log.info("fitted the feature pipeline on %d of %d training rows in %.2f s", len(rows), len(y_all),
             timings["fit_features"])
    return Fitted(pipeline, labels, membership, splits.train_groups, resampling, _feature_names(pipeline, rows), rows,
                  timings)


def check_feature_columns(rows: pd.DataFrame, schema: Schema) -> None:
    """Refuse feature columns the pipeline would learn nothing from, without a word: one with no value in any
    training row fitted on (imputed to a constant; the data baseline recorded its completeness as 0.0, so monitoring
    then accepted it missing for ever), and a list column (HPO terms, codes) holding text instead of lists (every
    value read as an empty list: its indicator features vanished, 414 → 83 on the cohort)."""
    for column in schema.fields:
        if column.role != "feature" or column.type in UNLEARNED_TYPES or column.name not in rows.columns:
            continue
        values = rows[column.name]
        present = values[values.notna()]
        if not len(present):
            raise ValueError(f"feature column '{column.name}' has no value in any of the {len(rows)} training rows the "
                             "feature pipeline is fitted on (the data baseline would expect it missing for ever): fix "
                             "the column at ingestion, or leave it out of the dataset (its 'exclude' list in the "
                             "dataset config) and ingest again")
        if column.type in LIST_TYPES:
            text = present[present.map(lambda v: not isinstance(v, (list, tuple, np.ndarray)))]
            if len(text):
                raise ValueError(f"feature column '{column.name}' ({column.type}) holds {type(text.iloc[0]).__name__} "
                                 f"values, not lists (e.g. {str(text.iloc[0])[:60]!r}, {len(text)} of {len(present)} "
                                 "rows): each would read as no term at all; fix its type at ingestion (a list column in "
                                 "the curated Parquet) and ingest again")


def label_indices(values: pd.Series, labels: list[str]) -> np.ndarray:
    return values.map({label: i for i, label in enumerate(labels)}).to_numpy(dtype=np.int64)


def encoded_names(pipeline: Any) -> list[str] | None:
    """The column transformer's output names when a reduction (PCA, LDA) follows it and names the pipeline's output
    by its components: the values a category learned and the terms and codes the model knows, which the doctors'
    form reads (app/form.py; it lost them under a reduction). None when the feature names are these already."""
    steps = getattr(pipeline, "named_steps", {})
    if "columns" not in steps or not any(name in steps for name in ("pca", "lda")):
        return None
    try:
        return [str(n) for n in steps["columns"].get_feature_names_out()]
    except (AttributeError, ValueError):
        return None


def _feature_names(pipeline: Any, rows: pd.DataFrame) -> list[str]:
    try:
        return [str(n) for n in pipeline.get_feature_names_out()]
    except (AttributeError, ValueError):
        return [f"f{i}" for i in range(pipeline.transform(rows.iloc[:1]).shape[1])]


# ------------------------------------------------------------------------------------------------ the transform

@dataclass
class PartRows:
    """One curated part's rows by split: the training rows transformed, validation as it is and transformed (once
    here rather than in every training job: at a million patients the 200k validation rows cost each job ~85 s of
    knowledge-base similarity), test as it is."""

    X: Any  # CSR or dense float32, as the feature pipeline makes it
    y: np.ndarray
    validation: pa.Table
    test: pa.Table
    validation_X: Any
    validation_y: np.ndarray
    in_slice: np.ndarray | None = None  # the training rows' slice flags (None without a slice column)
    patients: np.ndarray | None = None  # the training rows' patient keys (None without a patient column)


def transform_rows(frame: pd.DataFrame, pipeline: Any, target: str, labels: list[str],
                   width: int) -> tuple[Any, np.ndarray]:
    """Rows through the fitted pipeline (float32; CSR stays CSR) and their label indices."""
    if not len(frame):
        return np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return as_float32(pipeline.transform(frame)), label_indices(frame[target], labels)


def transform_part(table: pa.Table, pipeline: Any, split_of: pd.Series, schema: Schema, labels: list[str],
                   width: int, source: str = "the data") -> PartRows:
    """Each row's split from ``split_of`` (id → code); the training rows through the fitted pipeline."""
    ids = table.column(schema.id_column).to_pandas()
    codes = ids.map(split_of)
    if codes.isna().any():
        raise ValueError(f"{source}: {int(codes.isna().sum())} row(s) (e.g. id {ids[codes.isna()].iloc[0]!r}) are not in "
                         "the split: the transformer was fitted on another curated version")
    codes = codes.to_numpy(dtype=np.int8)
    train = table.filter(pa.array(codes == 0)).to_pandas()
    X, y = transform_rows(train, pipeline, schema.target, labels, width)
    validation = table.filter(pa.array(codes == 1))
    X_val, y_val = transform_rows(validation.to_pandas(), pipeline, schema.target, labels, width)
    return PartRows(X, y, validation, table.filter(pa.array(codes == 2)), X_val, y_val, slice_flags(train, schema),
                    patient_keys(train, schema))


def slice_flags(frame: pd.DataFrame, schema: Schema) -> np.ndarray | None:
    """The rows' slice flags (missing counts as outside the slice); None when the schema has no slice column."""
    column = schema.slice_column
    if not column or column not in frame.columns:
        return None
    return frame[column].fillna(False).to_numpy(dtype=bool)


def finish_training_rows(X: Any, y: np.ndarray, resampling: dict[str, Any], seed: int,
                         in_slice: np.ndarray | None = None,
                         patients: np.ndarray | None = None) -> tuple[Resampled, np.ndarray | None, np.ndarray | None]:
    """The training rows as delivered: weighted by the whole split's class weights, or jointly resampled; and
    the delivered rows' slice flags and patient keys when ``in_slice`` and ``patients`` give the rows' (an
    over-sampler's synthetic rows, which follow the originals, are outside the slice, with patient key 0;
    undersampling keeps those of the rows it keeps)."""
    method = resampling["method"]
    if method in JOINT_METHODS:
        out = resample(X, y, method, seed=seed, categorical=binary_columns(X) if method == "smote" else None)
    else:
        weights = {int(c): float(w) for c, w in (resampling.get("class_weight") or {}).items()}
        out = Resampled(X, y, row_weights(y, weights if method == "class_weights" else None), dict(resampling))
    source = np.arange(len(y)) if out.source is None else out.source

    def follow(values: np.ndarray | None, dtype: Any) -> np.ndarray | None:
        if values is None:
            return None
        values = np.asarray(values, dtype=dtype)
        return np.where(source >= 0, values[np.maximum(source, 0)], np.zeros(1, dtype=dtype))

    return out, follow(in_slice, bool), follow(patients, np.int64)


# ------------------------------------------------------------------------------------------------ in memory

@dataclass
class Preprocessed:
    splits: Splits
    pipeline: Any  # fitted on the training split only
    train: Resampled
    feature_names: list[str]
    labels: list[str]
    timings: dict[str, float]
    validation_X: Any = None  # the validation split's features and label indices, as the transform stage writes them
    validation_y: np.ndarray | None = None
    train_slice: np.ndarray | None = None  # the delivered training rows' slice flags (None without a slice)
    train_patients: np.ndarray | None = None  # their patient keys (None without a patient column)


def split_frames(frame: pd.DataFrame, membership: pd.DataFrame, train_groups: frozenset[str] | None) -> Splits:
    codes = membership["split"].to_numpy()
    train, validation, test = (frame[codes == i].reset_index(drop=True) for i in range(len(SPLITS)))
    return Splits(train, validation, test, train_groups=train_groups)


def preprocess(frame: pd.DataFrame, schema: Schema, params: PreprocessParams | None = None) -> Preprocessed:
    """Fit and transform a whole dataset held in memory (one part): what the two stages do, in one call."""
    params = params or PreprocessParams()
    params.validate()
    missing = [f.name for f in schema.fields if f.role in ("id", "target") and f.name not in frame.columns]
    missing += [name for name in schema.features() if name not in frame.columns]
    if missing:
        raise ValueError(f"the dataset lacks columns the schema declares: {', '.join(missing)}")
    frame = frame.reset_index(drop=True)
    by_id = frame.set_index(schema.id_column, drop=False) if frame[schema.id_column].is_unique else None
    fitted = fit(frame[key_columns(schema)], schema, params,
                 lambda ids: by_id.loc[ids.to_numpy()] if by_id is not None else frame.iloc[:0])
    splits = split_frames(frame, fitted.membership, fitted.train_groups)
    started = time.perf_counter()
    X, y = transform_rows(splits.train, fitted.pipeline, schema.target, fitted.labels, len(fitted.feature_names))
    fitted.timings["transform"] = time.perf_counter() - started
    started = time.perf_counter()
    train, train_slice, train_patients = finish_training_rows(X, y, fitted.resampling, params.seed,
                                                              slice_flags(splits.train, schema),
                                                              patient_keys(splits.train, schema))
    fitted.timings["resample"] = time.perf_counter() - started
    started = time.perf_counter()
    X_val, y_val = transform_rows(splits.validation, fitted.pipeline, schema.target, fitted.labels,
                                  len(fitted.feature_names))
    fitted.timings["transform_validation"] = time.perf_counter() - started
    return Preprocessed(splits, fitted.pipeline, train, fitted.feature_names, fitted.labels, fitted.timings,
                        X_val, y_val, train_slice, train_patients)


# ------------------------------------------------------------------------------------------------ files

def read_manifest(folder: Path) -> dict[str, Any]:
    """``folder``'s manifest.json, checked for what the job reads: a JSON object with a valid ``schema`` and the
    version's parts (``data_keys``, or a single ``data_key``), its ``dataset`` and ``version``. ValueError (or
    FileNotFoundError) naming what is wrong."""
    path = folder / MANIFEST_FILE
    if not os.path.lexists(path):
        raise FileNotFoundError(f"input {path} does not exist (a curated version holds its manifest.json)")
    where = f"input {path}"
    problem = not_a_file(path)  # a folder, a FIFO (reading it hung the job) or a symlink that loops: "does not exist"
    if problem:
        raise ValueError(f"{where} cannot be read: {problem}")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except ValueError:  # an integer of over 4,300 digits
        raise ValueError(f"{where} is not JSON this job reads: it holds a number with too many digits (over 4,300)") \
            from None
    except RecursionError:  # valid nesting deeper than Python's recursion limit: was "RecursionError: ..." unnamed
        raise ValueError(f"{where} is not JSON this job reads: it is nested too deeply") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{where} must be a JSON object (the ingest's manifest), got {type(manifest).__name__}")
    if not isinstance(manifest.get("schema"), dict):
        raise ValueError(f"{where} has no 'schema' object (the ingest writes the dataset's schema there): got "
                         f"{_kind(manifest.get('schema'))}")
    try:
        Schema.from_dict(manifest["schema"])
    except (ValueError, KeyError, TypeError) as err:
        detail = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{where}: its 'schema' is invalid: {detail}") from None
    for key in ("dataset", "version"):
        if not isinstance(manifest.get(key), str) or not manifest[key]:
            raise ValueError(f"{where}: '{key}' must name the curated version's {key}, got {_kind(manifest.get(key))}")
    keys = manifest["data_keys"] if "data_keys" in manifest else manifest.get("data_key", [])
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"{where}: 'data_keys' must list the version's Parquet parts (object keys), got "
                         f"{_kind(manifest.get('data_keys', manifest.get('data_key')))}")
    return manifest


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {str(value)[:60]!r}"


def manifest_parts(manifest: dict[str, Any]) -> list[str]:
    """The parts ``manifest`` lists (read_manifest checked it), as paths inside the version's prefix, in row order."""
    keys = manifest["data_keys"] if "data_keys" in manifest else [manifest["data_key"]]
    prefix = curated_prefix(manifest["dataset"], manifest["version"]) + "/"
    outside = [key for key in keys if not key.startswith(prefix)]
    if outside:
        raise ValueError(f"the manifest's data_keys {', '.join(outside[:3])} are not under its version's prefix "
                         f"{prefix}")
    return [key[len(prefix):] for key in keys]


def _objects(folder: Path) -> list[str]:
    """Every file under ``folder`` but the manifest (hidden ones and empty ones too), as relative paths, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST_FILE)


def curated_parts(folder: Path, manifest: dict[str, Any]) -> list[Path]:
    """Exactly the Parquet parts ``manifest`` lists under ``folder``, in its (row) order. Any other object there (an
    old export in a subfolder, a ._ file a Mac left, an empty part) is refused, and so is a listed part that is not
    there: both named. What was picked up by a glob before was trained and tested on without a word."""
    listed = manifest_parts(manifest)
    present = _objects(folder)
    held, wanted = set(present), set(listed)
    missing = [name for name in listed if name not in held]
    if missing:
        raise ValueError(f"input {folder}: the manifest lists {len(missing)} part(s) that are not there: "
                         f"{some_of(missing, 5)} (the curated version is incomplete: copy it whole, or ingest again)")
    extra = [name for name in present if name not in wanted]
    if extra:
        raise ValueError(f"input {folder} holds {len(extra)} object(s) its manifest does not list: {some_of(extra, 5)} "
                         "(remove them, or point the input at the curated version's own prefix)")
    return [folder / name for name in listed]


def held_parts(folder: Path, listed: Sequence[str]) -> list[Path]:
    """The parts of ``listed`` (what the fit read) that this transform instance holds under ``folder`` (sharded by
    key: a share of them, maybe none), in their order; any other object but the manifest is refused, named."""
    present = set(_objects(folder)) if folder.is_dir() else set()
    extra = sorted(present - set(listed))
    if extra:
        raise ValueError(f"input {folder} holds {len(extra)} object(s) the fit did not read (preprocess.json: parts): "
                         f"{some_of(extra, 5)}")
    return [folder / name for name in listed if name in present]


def part_label(path: Path) -> str:
    """A part as messages name it: its folder and file name (data/part-00003.parquet)."""
    return f"{path.parent.name}/{path.name}"


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A curated part's table (``columns`` only, when given), its text checked as UTF-8; ValueError naming the part
    (and the column) first, when it cannot be read."""
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as err:  # noqa: BLE001  (pyarrow's errors name no file: this one must)
        raise ValueError(f"curated part {part_label(path)} cannot be read as Parquet: {type(err).__name__}: "
                         f"{err}") from None
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as err:
                raise ValueError(f"curated part {part_label(path)}, column '{name}': text that is not valid UTF-8 "
                                 f"({str(err)[:200]}): fix the source at ingestion") from None
    return table


def concat_parts(tables: list[pa.Table], parts: list[Path]) -> pa.Table:
    """The parts' tables in order; parts whose columns differ in type are refused naming the part and the column
    (pyarrow's message printed both schemas whole, past the 1 KB a failure reason keeps, before naming anything)."""
    try:
        return pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        first = tables[0].schema
        for table, path in zip(tables[1:], parts[1:]):
            for column in table.schema:
                if first.get_field_index(column.name) < 0:
                    raise ValueError(f"curated part {part_label(path)}: column '{column.name}' is not in "
                                     f"{part_label(parts[0])}: the parts of one version must share one schema") from None
                other = first.field(column.name).type
                if column.type != other:
                    raise ValueError(f"curated part {part_label(path)}, column '{column.name}': type {column.type}, but "
                                     f"{other} in {part_label(parts[0])}: the parts of one version must share one "
                                     "schema (ingest the version again)") from None
        raise


def part_name(path: Path, folder: Path) -> str:
    """An output name for a curated part: its path inside the version, '/' → '-' (data/part-00003 → data-part-00003)."""
    return path.relative_to(folder).with_suffix("").as_posix().replace("/", "-")


def read_keys(parts: list[Path], schema: Schema) -> pd.DataFrame:
    """The key columns of every part, concatenated in row order (a small share of the data)."""
    columns = key_columns(schema)
    for path in parts:
        try:
            names = set(pq.read_schema(path).names)  # once a part: read per column, 2,000 features took 38 s
        except Exception as err:  # noqa: BLE001  (pyarrow's errors name no file: this one must)
            raise ValueError(f"curated part {part_label(path)} cannot be read as Parquet: {type(err).__name__}: "
                             f"{err}") from None
        missing = [c for c in [*columns, *schema.features()] if c not in names]
        if missing:
            raise ValueError(f"{path.name} lacks columns the schema declares: {', '.join(missing)}")
    return concat_parts([read_part(p, columns) for p in parts], parts).to_pandas()


def rows_reader(parts: list[Path], schema: Schema) -> Callable[[pd.Series], pd.DataFrame]:
    """rows_of(ids): those rows with every column, in row order, read a part at a time."""
    def rows_of(ids: pd.Series) -> pd.DataFrame:
        wanted = pa.array(ids.to_numpy())
        tables = []
        for path in parts:
            table = read_part(path)
            tables.append(table.filter(pc.is_in(table.column(schema.id_column), value_set=wanted)))
        return concat_parts(tables, parts).to_pandas()
    return rows_of


def _refuse_non_empty(folders: Sequence[Path]) -> None:
    for path in folders:
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"output folder {path} is not empty: refusing to overwrite another run's outputs")


def fingerprint(membership: pd.DataFrame, schema: Schema, manifest: dict[str, Any], params: PreprocessParams) -> str:
    """Identifies the training data: dataset version, parameters and the exact split membership."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"dataset": manifest.get("dataset"), "version": manifest.get("version"),
                              "params": params.to_dict()}, sort_keys=True).encode())
    for code, name in enumerate(SPLITS):
        ids = membership.loc[membership["split"] == code, schema.id_column]
        digest.update(name.encode() + b"\0" + "\n".join(map(str, ids)).encode())
    return digest.hexdigest()


def write_fit(fitted: Fitted, schema: Schema, manifest: dict[str, Any], params: PreprocessParams,
              out: dict[str, Path], baseline_dir: Path | None, parts: Sequence[str] = ()) -> None:
    """``transformer/`` (pipeline + preprocess.json, with ``parts``: the curated parts read, by path in the version),
    ``split/`` (membership + groups) and the data baseline."""
    _refuse_non_empty([out["transformer"], out["split"], *([baseline_dir] if baseline_dir else [])])
    for name in FIT_OUTPUTS:
        out[name].mkdir(parents=True, exist_ok=True)
    joblib.dump(fitted.pipeline, out["transformer"] / TRANSFORMER_FILE, compress=3)
    fitted.membership.to_parquet(out["split"] / MEMBERSHIP_FILE, index=False)
    if fitted.train_groups is not None:
        groups = {"column": schema.group_column, "in_train": sorted(fitted.train_groups)}
        (out["split"] / GROUPS_FILE).write_text(json.dumps(groups, ensure_ascii=False) + "\n", encoding="utf-8")
    counts = np.bincount(fitted.membership["split"].to_numpy(), minlength=len(SPLITS))
    summary = {
        "labels": fitted.labels,
        "schema": manifest["schema"],
        "params": params.to_dict(),
        "dataset": {"name": manifest.get("dataset"), "version": manifest.get("version")},
        "feature_names": fitted.feature_names,
        **({"encoded_feature_names": encoded} if (encoded := encoded_names(fitted.pipeline)) else {}),
        # Each unbounded number's spread over the rows fitted on: the endpoint refuses a value ingestion would
        # quarantine (a record's 1e12 got a confident answer from every model family).
        "number_spreads": number_spreads(fitted.fitted_rows, schema.fields),
        "fingerprint": fingerprint(fitted.membership, schema, manifest, params),
        "rows": {name: int(n) for name, n in zip(SPLITS, counts)} | {"fitted": len(fitted.fitted_rows)},
        "resampling": fitted.resampling,
        "parts": list(parts),
        "timings_seconds": {k: round(v, 3) for k, v in fitted.timings.items()},
    }
    (out["transformer"] / RECORD_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                                  encoding="utf-8")
    if baseline_dir is not None:
        from processing.baseline import write_data_baseline

        started = time.perf_counter()
        noted = manifest.get("patient_columns")  # ingestion's note: columns repeating a patient's number over rows
        paths = write_data_baseline(fitted.fitted_rows, schema, baseline_dir,
                                    unnamed_patients=tuple(noted) if isinstance(noted, dict) else ())
        log.info("wrote the monitoring baseline %s in %.2f s", ", ".join(map(str, paths)), time.perf_counter() - started)


def read_fit(transformer_dir: Path, split_dir: Path) -> tuple[Any, dict[str, Any], pd.DataFrame]:
    """The fit's outputs: pipeline, preprocess.json and the membership, checked enough to fail here."""
    for path in (transformer_dir / TRANSFORMER_FILE, transformer_dir / RECORD_FILE, split_dir / MEMBERSHIP_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"input {path} does not exist (the fit stage writes it)")
    record = json.loads((transformer_dir / RECORD_FILE).read_text(encoding="utf-8"))
    return joblib.load(transformer_dir / TRANSFORMER_FILE), record, pd.read_parquet(split_dir / MEMBERSHIP_FILE)


def run_transform(parts: list[Path], folder: Path, pipeline: Any, record: dict[str, Any], membership: pd.DataFrame,
                  out: dict[str, Path], groups_file: Path | None, instances: int = 1) -> dict[str, int]:
    """Transform the parts this instance holds into ``out``; returns rows written per split."""
    method, seed = record["resampling"]["method"], int(record["params"]["seed"])
    check_scale_out(method, instances)
    _refuse_non_empty([out[name] for name in TRANSFORM_OUTPUTS])
    for name in TRANSFORM_OUTPUTS:
        out[name].mkdir(parents=True, exist_ok=True)
    schema, labels = Schema.from_dict(record["schema"]), list(record["labels"])
    split_of = membership.set_index(schema.id_column)["split"]
    written = dict.fromkeys(TRANSFORM_OUTPUTS, 0)
    joint: list[PartRows] = []
    for path in parts:
        started = time.perf_counter()
        name = part_name(path, folder)
        rows = transform_part(read_part(path), pipeline, split_of, schema, labels, len(record["feature_names"]),
                              source=part_label(path))
        for split, table in (("validation", rows.validation), ("test", rows.test)):
            if table.num_rows:
                pq.write_table(table, out[split] / f"{name}.parquet", compression="zstd")
                written[split] += table.num_rows
        if rows.validation.num_rows:  # its features beside it, row for row (training reads them, name order)
            write_train(out["validation"] / f"{name}.npz", rows.validation_X, rows.validation_y,
                        np.ones(len(rows.validation_y)))
        if method in JOINT_METHODS:
            joint.append(rows)
        elif len(rows.y):
            _save_train(out["train"] / f"{name}.npz",
                        *finish_training_rows(rows.X, rows.y, record["resampling"], seed, rows.in_slice, rows.patients))
            written["train"] += len(rows.y)
        log.info("part %s: %d training, %d validation, %d test rows in %.2f s", path.name, len(rows.y),
                 rows.validation.num_rows, rows.test.num_rows, time.perf_counter() - started)
    if joint:
        started = time.perf_counter()
        def stacked(marks: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(m is None for m in marks) else np.concatenate([m for m in marks if m is not None])

        train, train_slice, train_patients = finish_training_rows(
            stack_parts([r.X for r in joint]), np.concatenate([r.y for r in joint]), record["resampling"], seed,
            stacked([r.in_slice for r in joint]), stacked([r.patients for r in joint]))
        _save_train(out["train"] / TRAIN_FILE, train, train_slice, train_patients)
        written["train"] = len(train.y)
        log.info("%s over %d training rows -> %s in %.2f s", method, sum(len(r.y) for r in joint), train.info.get("after"),
                 time.perf_counter() - started)
    if groups_file is not None and groups_file.is_file():
        for split in ("validation", "test"):
            (out[split] / GROUPS_FILE).write_bytes(groups_file.read_bytes())
    return written


def fit_stage(parts: list[Path], manifest: dict[str, Any], params: PreprocessParams, out: dict[str, Path],
              baseline_dir: Path | None = None, source: Path | None = None) -> Fitted:
    """The fit stage over curated parts (in ``source``: default, their common folder): key columns read, split,
    pipeline fitted, ``transformer/`` and ``split/`` (and the data baseline) written."""
    schema = Schema.from_dict(manifest["schema"])
    started = time.perf_counter()
    keys = read_keys(parts, schema)
    log.info("read the key columns of %d rows from %d part(s) (dataset %s version %s) in %.2f s", len(keys),
             len(parts), manifest.get("dataset"), manifest.get("version"), time.perf_counter() - started)
    fitted = fit(keys, schema, params, rows_reader(parts, schema))
    folder = source if source is not None else Path(os.path.commonpath([p.parent for p in parts]))
    write_fit(fitted, schema, manifest, params, out, baseline_dir, [p.relative_to(folder).as_posix() for p in parts])
    log.info("wrote %s and %s", out["transformer"], out["split"])
    return fitted


def transform_stage(parts: list[Path] | None, source: Path, fit_dirs: tuple[Path, Path], out: dict[str, Path],
                    instances: int = 1) -> dict[str, int]:
    """The transform stage: the fit's outputs read from ``fit_dirs`` (transformer, split), these parts written
    (None: the parts of those the fit read that ``source`` holds, refusing any other object there)."""
    pipeline, record, membership = read_fit(*fit_dirs)
    if parts is None:
        if not isinstance(record.get("parts"), list):
            raise ValueError(f"{fit_dirs[0] / RECORD_FILE} lists no curated parts (a fit of an older Diagnosa wrote "
                             "it): run the fit stage again")
        parts = held_parts(source, record["parts"])
        if not parts:  # sharded by key: an instance may hold no part when there are fewer parts than instances
            log.warning("this instance holds no curated part (%s): it transforms nothing", source)
    started = time.perf_counter()
    written = run_transform(parts, source, pipeline, record, membership, out, fit_dirs[1] / GROUPS_FILE, instances)
    log.info("transformed %d part(s): %s rows in %.2f s", len(parts), written, time.perf_counter() - started)
    return written


def _save_train(path: Path, train: Resampled, in_slice: np.ndarray | None = None,
                patients: np.ndarray | None = None) -> None:
    write_train(path, train.X, train.y, train.sample_weight, in_slice, patients)


# ------------------------------------------------------------------------------------------------ the job

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = job_parser(
        "processing.preprocess", "Diagnosa preprocessing job: a curated dataset "
        "(<base-dir>/input/curated/{manifest.json,data/part-NNNNN.parquet})\n-> --stage fit: split and fitted feature "
        "pipeline in <base-dir>/output/{transformer,split}/; --stage transform: the parts this instance holds in "
        "<base-dir>/output/{train,validation,test}/; --stage all: both (docs/pipeline.md).",
        "Preprocess", "--resampling smote")
    parser.add_argument("--reduction", choices=REDUCTIONS, default="none",
                        help="dimensionality reduction after the features (pca keeps --pca-components of the "
                             "variance) (default: %(default)s)")
    parser.add_argument("--resampling", choices=METHODS, default=PreprocessParams.resampling,
                        help="how the training split's class imbalance is handled (default: %(default)s)")
    parser.add_argument("--hpo-rollup", choices=("true", "false"), default="true",
                        help="light each HPO term's ancestors too (default: %(default)s)")
    parser.add_argument("--missing-indicators", choices=MISSING_INDICATORS, default=FeatureParams.missing_indicators,
                        help="the numbers' missing-value indicators: standardised with them, or left 0/1 "
                             "(default: %(default)s)")
    parser.add_argument("--min-term-count", type=int, default=5,
                        help="indicator columns seen fewer times in train are dropped (default: %(default)s)")
    parser.add_argument("--pca-components", type=float, default=0.95, help="share of variance PCA keeps (default: %(default)s)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="fit (split + feature pipeline), transform (the parts this instance holds) or both "
                             "(default: %(default)s)")
    parser.add_argument("--phenotype-similarity", choices=("true", "false"), default="true",
                        help="score HPO lists against the knowledge base's rare diseases (processing/phenotype.py) "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split, the features and resampling (default: %(default)s)")
    parser.add_argument("--unseen-share", type=float, default=DEFAULT_UNSEEN_SHARE,
                        help="share of the slice's groups (orphan diseases) held out of training, in [0, 1) "
                             "(default: %(default)s)")
    parser.add_argument("--fit-max-rows", type=int, default=DEFAULT_FIT_MAX_ROWS,
                        help="training rows the feature pipeline is fitted on, at most; a sample above it "
                             "(default: %(default)s)")
    parser.add_argument("--transform-instances", type=int, default=1,
                        help="instances of the transform stage: the fit refuses a resampling that cannot spread "
                             "(default: %(default)s)")
    parser.add_argument("--baseline-dir", default=None,
                        help="where to write the monitoring baseline (default: <base-dir>/output/baseline if it exists)")
    return parser.parse_args(argv)


def instance_count(base: Path) -> int:
    """Hosts of this processing job, from the service's /opt/ml/config/resourceconfig.json (1 when run by hand: no
    such file). A file there that is damaged, names no hosts or one host twice fails the job, named: the transform
    shards by this count, and a damaged one was a traceback or a count of hosts that are not there."""
    path = base.parent / "config" / "resourceconfig.json"
    if not os.path.lexists(path):
        return 1
    config, problem = read_json_record(path)
    hosts: Any = []
    if problem is None and not isinstance(config, dict):
        problem = f"a JSON object is expected, got {type(config).__name__}"
    elif problem is None:
        hosts = config.get("hosts")
        problem = host_names_problem(hosts)
        problem = f"'hosts': {problem}" if problem else None
    if problem:
        raise ValueError(f"the job's resource config {path}: {problem}")
    return len(hosts)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = parse_args(argv)
    base = Path(args.base_dir)
    outputs = [base / "output", *([Path(args.baseline_dir)] if args.baseline_dir else [])]
    with stops_on_sigterm(base, outputs):
        return _preprocess(args, base)


def _preprocess(args: argparse.Namespace, base: Path) -> int:
    """The job's body: 0, or 1 with its reason written for the service."""
    try:
        params = PreprocessParams(
            features=FeatureParams(reduction=args.reduction, hpo_rollup=args.hpo_rollup == "true",
                                   min_term_count=args.min_term_count, pca_components=args.pca_components,
                                   phenotype_similarity=args.phenotype_similarity == "true",
                                   missing_indicators=args.missing_indicators),
            resampling=args.resampling, seed=args.seed, unseen_share=args.unseen_share, fit_max_rows=args.fit_max_rows)
        params.validate()
        source = base / "input" / "curated"
        out = {name: base / "output" / name for name in OUTPUTS}
        parts = None
        if args.stage in ("all", "fit"):
            check_scale_out(params.resampling, args.transform_instances)
            if not source.is_dir():
                raise FileNotFoundError(f"input {source} does not exist")
            manifest = read_manifest(source)
            parts = curated_parts(source, manifest)
            baseline_dir = Path(args.baseline_dir) if args.baseline_dir else base / "output" / "baseline"
            write_baseline = args.baseline_dir is not None or baseline_dir.is_dir()
            fit_stage(parts, manifest, params, out, baseline_dir if write_baseline else None, source)
            if not write_baseline:
                log.info("no monitoring baseline: %s does not exist; pass --baseline-dir", baseline_dir)
        if args.stage in ("all", "transform"):
            fit_dirs = ((out["transformer"], out["split"]) if args.stage == "all"
                        else (base / "input" / "transformer", base / "input" / "split"))
            transform_stage(parts, source, fit_dirs, out, instance_count(base))
        return 0
    except Exception as err:  # noqa: BLE001  (the job's failure reason must say what was wrong, whatever it was)
        # A missing input (FileNotFoundError, raised by read_manifest) is said as written, like a ValueError: it was
        # "FileNotFoundError: input ... does not exist" after a traceback of the job's own code.
        known = isinstance(err, (ValueError, FileNotFoundError))
        message = str(err) if known else f"{type(err).__name__}: {err}"
        log.error("preprocessing failed: %s", job_reason(message), exc_info=not known)
        write_job_failure(base, message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
