"""SageMaker training entry point: fit one classifier on preprocessed rows and save the deployable model.

The container contract (hyperparameters, channels, model and output dirs, the failure file) lives in
``main`` and the small readers around it; the work itself is the pure ``train`` function, which tests
call directly. The feature transformer arrives already fitted from the preprocessing job and is never
refitted here: the artifact must apply exactly the transform the training rows went through.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.pipeline import Pipeline
from sklearn.utils.class_weight import compute_sample_weight

from diagnosa.data.schema import Schema
from diagnosa.data.validate import shown
from diagnosa.files import (
    FileProblem,
    atomic_path,
    job_reason,
    not_a_folder,
    read_file_bounded,
    read_json_record,
    write_text_atomic,
)
from diagnosa.logs import configure_logging
from diagnosa.model import METADATA_FILE, OOF_FILE, DiagnosaModel, identity_version
from diagnosa.serving_code import write_serving_code
from processing.calibration import calibration_numbers
from processing.decisions import MAX_PRECISION_LOSS, calibrate_and_decide
from processing.features import SUPERVISED_REDUCTIONS, SUPERVISED_STEPS
from processing.metrics import evaluate
from processing.sparse import is_sparse
from processing.split import patient_keys, read_split, read_train_groups, unseen_mask
from processing.trainset import Rows, read_train, read_train_patients, read_train_slice, stack_parts
from training.distributed import cluster_from_env, collective, digest_of_parts, fit_xgboost, gather, is_distributed, total
from training.models import (
    FAMILIES,
    MAX_SEED,
    PARAMS,
    _parse_float,
    _parse_int,
    adapt_to_rows,
    check_seed,
    decode_transported,
    make_classifier,
    portable,
    resolve_hyperparameters,
)
from training.tuning import (
    DEFAULT_CV_MAX_ROWS,
    DEFAULT_MAX_CONFIGS,
    DEFAULT_MAX_FOLDS,
    DEFAULT_SEARCH_BUDGET,
    HOLDOUT_MIN_CLASS,
    describe_plan,
    holdout_search,
    search,
    use_holdout,
)

logger = logging.getLogger(__name__)

TRAIN_PATTERN = "*.npz"  # one part per curated part (processing/preprocess.py), read in name order
TRANSFORMER_FILE = "feature_pipeline.joblib"
PREPROCESS_FILE = "preprocess.json"
VALIDATION_REPORT = "validation.json"
FAILURE_FILE = "failure"
SERVING_CODE_DIR = "code"  # the model's serving code and pins (model.tar.gz/code/, SageMaker's layout)
NAN_TOLERANT = ("xgboost", "gradient_boosting")  # families that treat NaN as "missing" natively
RESERVED_PREFIX = "sagemaker_"  # keys SageMaker script mode adds (sagemaker_program, ...); not ours
# Bytes of hyperparameters.json read at most: SageMaker takes 100 hyperparameters of 256-character names and
# 2,500-character values (CreateTrainingJob), well under this; a larger file is no job's.
HYPERPARAMETERS_LIMIT = 1 << 20


class TrainResult(NamedTuple):
    model: DiagnosaModel
    evaluation: dict[str, Any]  # processing.metrics.evaluate() on the cross-validated rows (out of fold)


# Job settings that are not the family's hyperparameters (SageMaker passes them the same way).
SETTING_NAMES = ("search_budget", "search_max_configs", "cv_max_folds", "cv_max_rows", "max_precision_loss",
                 "holdout_min_class")
# Each setting's SearchSettings field.
SETTING_FIELDS = {"search_budget": "budget", "search_max_configs": "max_configs", "cv_max_folds": "max_folds",
                  "cv_max_rows": "cv_max_rows", "max_precision_loss": "max_precision_loss",
                  "holdout_min_class": "holdout_min_class"}


@dataclass(frozen=True)
class SearchSettings:
    """How much cross-validated search a training job does, and the decision weights' precision bound."""

    budget: int = DEFAULT_SEARCH_BUDGET  # rows fitted by the search, over all folds and configurations
    max_configs: int = DEFAULT_MAX_CONFIGS
    max_folds: int = DEFAULT_MAX_FOLDS
    cv_max_rows: int = DEFAULT_CV_MAX_ROWS
    max_precision_loss: float = MAX_PRECISION_LOSS
    holdout_min_class: int = HOLDOUT_MIN_CLASS  # validation rows per class from which the split selects

    @classmethod
    def pop_from(cls, hps: dict[str, Any]) -> SearchSettings:
        """Take the settings out of a hyperparameter dict (strings as SageMaker sends them), each parsed as the
        family's hyperparameters are (training/models.py): a count must be an integer ("300", "3e2", "300.0";
        not "2.5"), max_precision_loss a finite number; the error names the setting."""
        raw = {name: hps.pop(name) for name in SETTING_NAMES if name in hps}
        values: dict[str, Any] = {}
        for name, value in raw.items():
            counts = name != "max_precision_loss"
            try:
                values[SETTING_FIELDS[name]] = (_parse_int if counts else _parse_float)(decode_transported(value))
            except (TypeError, ValueError, OverflowError):
                raise ValueError(f"search setting '{name}' must be {'an integer' if counts else 'a finite number'}, "
                                 f"got {value!r}") from None
        return cls(**values)

    def validate(self) -> None:
        if self.budget < 1 or self.max_configs < 1 or self.cv_max_rows < 20:
            raise ValueError("search_budget and search_max_configs must be at least 1, cv_max_rows at least 20")
        if self.max_folds < 2:
            raise ValueError(f"cv_max_folds must be at least 2, got {self.max_folds}")
        if self.holdout_min_class < 1:
            raise ValueError(f"holdout_min_class must be at least 1, got {self.holdout_min_class}")
        if not 0 <= self.max_precision_loss <= 1:
            raise ValueError(f"max_precision_loss must lie in [0, 1], got {self.max_precision_loss}")

    def to_dict(self) -> dict[str, Any]:
        return {"search_budget": self.budget, "search_max_configs": self.max_configs, "cv_max_folds": self.max_folds,
                "cv_max_rows": self.cv_max_rows, "max_precision_loss": self.max_precision_loss,
                "holdout_min_class": self.holdout_min_class}


SETTING_HELP = {"search_budget": "rows fitted by the search, over all folds and configurations",
                "search_max_configs": "configurations tried (the family's defaults first)",
                "cv_max_folds": "cross-validation folds at most", "cv_max_rows": "rows cross-validated at most",
                "max_precision_loss": "macro precision the decision weights may lose against the plain argmax",
                "holdout_min_class": "validation rows of the smallest class from which the validation split selects"}
HELP_FLAGS = ("-h", "--help")


def help_text() -> str:
    """``python -m training.train --help``: the container contract and every hyperparameter, from their tables."""
    settings = SearchSettings().to_dict()
    lines = [
        "usage: python -m training.train [--NAME VALUE ...]",
        "",
        "Diagnosa training job: fit one model family on the preprocessing job's outputs, save the deployable model.",
        "It runs in SageMaker's training container (script mode): hyperparameters come from $SM_HPS, else",
        "<SM_INPUT_DIR>/config/hyperparameters.json; --NAME VALUE pairs on the command line override them (-N VALUE",
        "for a one-character name such as C, as the training toolkit passes it). The word after a name is its value,",
        "whatever it looks like; only a lone -h/--help prints this.",
        "",
        "environment (the training toolkit sets it in the container; the defaults are the container's paths):",
        "  SM_INPUT_DIR            /opt/ml/input: config/hyperparameters.json, the channels under data/",
        "  SM_CHANNEL_TRAIN        <SM_INPUT_DIR>/data/train: *.npz parts (X, y, sample_weight), read in name order",
        "  SM_CHANNEL_VALIDATION   <SM_INPUT_DIR>/data/validation: *.parquet parts, each with its features",
        "                          <part>.npz (without them the transformer is applied), and groups.json if any",
        "  SM_CHANNEL_TRANSFORMER  <SM_INPUT_DIR>/data/transformer: feature_pipeline.joblib, preprocess.json",
        "  SM_MODEL_DIR            /opt/ml/model: receives model.joblib, metadata.json and code/",
        "  SM_OUTPUT_DIR           /opt/ml/output: receives failure (the reason) when the job fails",
        "  SM_OUTPUT_DATA_DIR      <SM_OUTPUT_DIR>/data: receives validation.json",
        "",
        "hyperparameters:",
        f"  family                  required: {', '.join(FAMILIES)}",
        f"  seed                    integer in [0, {MAX_SEED}] (default 0)",
        *(f"  {name:<23} {SETTING_HELP[name]} ({'a finite number' if isinstance(value, float) else 'an integer'}; "
          f"default {value})" for name, value in settings.items()),
        "",
        "the family's own hyperparameters (default; valid values):",
    ]
    for family, params in PARAMS.items():
        lines.append(f"  {family}:")
        for name, spec in params.items():
            default = ",".join(map(str, spec.default)) if isinstance(spec.default, tuple) else spec.default
            lines.append(f"    {name:<21} {default}; {spec.describe()}" + (f" — {spec.help}" if spec.help else ""))
    lines += ["", "example, in a container root that `diagnosa job prepare Train-xgboost --root jobs/train` laid out:",
              "  SM_INPUT_DIR=jobs/train/input SM_MODEL_DIR=jobs/train/model SM_OUTPUT_DIR=jobs/train/output \\",
              "    python -m training.train --max_depth 4"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Inputs


def parse_cli(argv: Sequence[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` pairs, as SageMaker script mode passes hyperparameters, and ``-K value``:
    the training toolkit (``sagemaker_training.mapping.to_cmd_args``) gives a one-character name one dash
    (``C`` -> ``-C 0.5``). The argument after a name is always its value, whatever it looks like (``-1``, ``-h``)."""
    out: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, joined = arg[2:], "=" in arg
        elif len(arg) == 2 and arg[0] == "-" and arg[1] != "-":  # the toolkit's form of a one-character name
            name, joined = arg[1:], False
        else:
            raise ValueError(f"unexpected command-line argument {arg!r} (expected --name value pairs, or -N value "
                             "for a one-character name)")
        if joined:
            key, value = name.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"command-line argument {arg!r} has no value")
            key, value = name, args[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


def read_hyperparameters(argv: Sequence[str] | None = None,
                         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """SM_HPS, else ``<SM_INPUT_DIR>/config/hyperparameters.json``, then CLI overrides; values decoded."""
    environ = os.environ if environ is None else environ
    if environ.get("SM_HPS"):
        source = "SM_HPS"
        raw = _json_of(environ["SM_HPS"], source)
    else:
        path = Path(env_path(environ, "SM_INPUT_DIR", "/opt/ml/input")) / "config" / "hyperparameters.json"
        source = str(path)
        if os.path.lexists(path):
            # A folder, a FIFO (reading it would block) or a looping symlink there was "no hyperparameters file",
            # and the job failed for a 'family' it was given.
            try:
                data = read_file_bounded(path, HYPERPARAMETERS_LIMIT, "hyperparameters file")
            except FileProblem as err:
                raise ValueError(str(err)) from None
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
            raw = _json_of(text, str(path))
        else:
            source, raw = "no hyperparameters file", {}
    if not isinstance(raw, dict):
        raise ValueError(f"hyperparameters from {source} must be a JSON object, got {type(raw).__name__}")
    try:
        hps = {str(k): decode_transported(v) for k, v in raw.items() if not str(k).startswith(RESERVED_PREFIX)}
        cli = {k: decode_transported(v) for k, v in parse_cli(argv or []).items()}
    except RecursionError:  # a value holding JSON nested deeper than Python's recursion limit
        raise ValueError(f"a hyperparameter from {source} or the command line holds JSON nested too deeply") from None
    logger.info("hyperparameters: %d from %s, %d from the command line", len(hps), source, len(cli))
    return {**hps, **cli}


def _json_of(text: str, source: str) -> Any:
    """``text`` parsed as JSON; ValueError naming ``source`` when it is not JSON this job reads."""
    try:
        return json.loads(text)
    except ValueError as err:  # JSONDecodeError, or an integer of over 4,300 digits
        raise ValueError(f"{source} is not valid JSON: {err}") from None
    except RecursionError:  # valid nesting deeper than Python's recursion limit: was "RecursionError: ...", unnamed
        raise ValueError(f"{source} is not valid JSON: nested too deeply") from None


def env_path(environ: Mapping[str, str], name: str, default: str | os.PathLike) -> Path:
    """The path the variable ``name`` gives (``default`` when it is not set). Set but empty, it is refused: an empty
    path is the current folder, where an empty SM_MODEL_DIR had the model written, and the job succeed."""
    value = environ.get(name)
    if value is None:
        return Path(default)
    if not value.strip():
        raise ValueError(f"{name} is set but empty: it must name a folder (unset, it is {default})")
    return Path(value)


def check_folders(folders: Mapping[str, Path]) -> None:
    """Refuse, before any work, a folder the job reads or writes that cannot be one (``folders``: the variable or
    channel that names it -> its path): a channel that was a FIFO or a looping symlink failed later as "not found"
    or "no training data", a model dir that was a file only after the whole training, as FileExistsError."""
    for name, path in folders.items():
        problem = not_a_folder(path)
        if problem:
            raise ValueError(f"{name} {path}: {problem}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_transformer(transformer_dir: str | os.PathLike) -> tuple[Any, dict[str, Any], Schema]:
    """The fitted feature transformer, the preprocessing record and the dataset schema it carries."""
    folder = Path(transformer_dir)
    record_path, transformer_path = folder / PREPROCESS_FILE, folder / TRANSFORMER_FILE
    for path in (record_path, transformer_path):
        if not path.is_file():
            raise ValueError(f"transformer channel: {path.name} not found in {folder}")
    record, problem = read_json_record(record_path)  # nested too deeply was a RecursionError, unnamed
    if problem:
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} cannot be read: {problem}")
    if not isinstance(record, dict):
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} must be a JSON object, got {type(record).__name__}")
    missing = [key for key in ("labels", "schema") if key not in record]
    if missing:
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} lacks {', '.join(missing)}")
    labels = record["labels"]
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} 'labels' must list at least two strings")
    schema = Schema.from_dict(record["schema"])
    if list(schema.labels) != labels:
        raise ValueError(f"transformer channel: labels {labels} differ from the schema's {list(schema.labels)}")
    try:
        transformer = joblib.load(transformer_path)
    except Exception as err:  # noqa: BLE001  (a damaged file raises whatever unpickling met: the message names it)
        raise ValueError(f"transformer channel: {TRANSFORMER_FILE} cannot be loaded: {type(err).__name__}: "
                         f"{err}") from None
    if not hasattr(transformer, "transform"):
        raise ValueError(f"transformer channel: {TRANSFORMER_FILE} holds a {type(transformer).__name__}, "
                         "not a fitted transformer")
    logger.info("read %s and %s (%d labels, schema %s)", record_path, transformer_path, len(labels), schema.name)
    return transformer, record, schema


def load_train(train_dir: str | os.PathLike, n_labels: int, *, allow_nan: bool = False,
               empty_width: int | None = None) -> tuple[Rows, np.ndarray, np.ndarray, dict[str, str]]:
    """X (CSR or dense, as Preprocess wrote it), y, sample_weight of every ``*.npz`` part in the channel (name
    order), and each part's sha256, checked so a bad file fails here, not inside a library. ``empty_width``: a host
    of a distributed job may hold no part (its shard is empty); it gets zero rows of that many columns instead."""
    folder = Path(train_dir)
    paths = sorted(folder.glob(TRAIN_PATTERN)) if folder.is_dir() else []
    if not paths:
        if empty_width is not None:
            logger.info("train channel: no part on this host (%s)", folder)
            return (np.zeros((0, empty_width), dtype=np.float32), np.zeros(0, dtype=np.int64), np.zeros(0), {})
        raise ValueError(f"train channel: no training data ({TRAIN_PATTERN}) in {folder}")
    parts = [_load_train_part(path, n_labels, allow_nan) for path in paths]
    widths = {X.shape[1] for X, _, _ in parts}
    if len(widths) > 1:
        raise ValueError(f"train channel: the parts have different numbers of columns {sorted(widths)}")
    X = stack_parts([X for X, _, _ in parts])
    y = np.concatenate([y for _, y, _ in parts])
    w = np.concatenate([w for _, _, w in parts])
    if X.shape[0] == 0 and empty_width is None:
        raise ValueError(f"train channel: X must be a non-empty 2-D array, got shape {X.shape}")
    digests = {path.name: _sha256(path) for path in paths}
    logger.info("read %d part(s) from %s: X %s %s %s, %d weighted rows", len(paths), folder, X.shape, X.dtype,
                f"CSR ({X.nnz:,} stored values)" if is_sparse(X) else "dense", int((w != 1).sum()))
    return X, y, w, digests


def _load_train_part(path: Path, n_labels: int, allow_nan: bool) -> tuple[Rows, np.ndarray, np.ndarray]:
    try:
        X, y, w = read_train(path)
    except ValueError as err:
        raise ValueError(f"train channel: {err}") from None
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(f"train channel: {path.name}: X must be a 2-D array with columns, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"train channel: {path.name}: X must be numeric, got dtype {X.dtype}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"train channel: {path.name}: y must be a 1-D integer array of label indices, "
                         f"got shape {y.shape} dtype {y.dtype}")
    if len(y) != X.shape[0]:
        raise ValueError(f"train channel: {path.name}: X has {X.shape[0]} rows but y has {len(y)}")
    bad = np.unique(y[(y < 0) | (y >= n_labels)])
    if bad.size:
        raise ValueError(f"train channel: {path.name}: y holds label index(es) out of range [0, {n_labels}): "
                         f"{bad[:10].tolist()}")
    values = X.data if is_sparse(X) else X  # a sparse matrix's absent entries are zeros
    if np.isinf(values).any() or (not allow_nan and np.isnan(values).any()):
        raise ValueError(f"train channel: {path.name}: X holds {int((~np.isfinite(values)).sum())} non-finite value(s)")
    if w is None:
        logger.warning("train channel: %s has no sample_weight; using ones", path.name)
        w = np.ones(len(y))
    w = np.asarray(w, dtype=np.float64)
    if w.shape != y.shape:
        raise ValueError(f"train channel: {path.name}: sample_weight has shape {w.shape}, expected ({len(y)},)")
    if not np.isfinite(w).all() or (w < 0).any() or (len(w) and w.sum() <= 0):
        raise ValueError(f"train channel: {path.name}: sample_weight must be finite, non-negative and not all zero")
    return X, y.astype(np.int64), w


def load_train_slice(train_dir: str | os.PathLike, n_rows: int) -> np.ndarray | None:
    """The training rows' slice flags (every ``*.npz`` part's, name order, as ``load_train`` stacks them); None when
    a part has none (written before the flags travelled, or no slice in the schema)."""
    return _load_marks(train_dir, n_rows, read_train_slice, "slice flags")


def load_train_patients(train_dir: str | os.PathLike, n_rows: int) -> np.ndarray | None:
    """The training rows' patient keys, as ``load_train_slice`` reads the flags; None when a part has none (written
    before the keys travelled, or no patient column in the schema)."""
    return _load_marks(train_dir, n_rows, read_train_patients, "patient keys")


def _load_marks(train_dir: str | os.PathLike, n_rows: int, read: Callable[[Path], np.ndarray | None],
                what: str) -> np.ndarray | None:
    paths = sorted(Path(train_dir).glob(TRAIN_PATTERN)) if Path(train_dir).is_dir() else []
    marks = []
    for path in paths:
        try:
            part = read(path)
        except ValueError as err:
            raise ValueError(f"train channel: {err}") from None
        if part is None:
            return None
        marks.append(part)
    if not marks:
        return None
    out = np.concatenate(marks)
    if len(out) != n_rows:
        raise ValueError(f"train channel: {len(out)} {what} for {n_rows} training rows")
    return out


def supervised_transform(record: Mapping[str, Any], transformer: Any) -> str | None:
    """The name of the transformer's step fitted with the training split's labels (LDA), else None: from
    preprocess.json's reduction, else (a record without it) from the fitted pipeline's steps."""
    reduction = (record.get("params") or {}).get("reduction") if isinstance(record.get("params"), dict) else None
    if isinstance(reduction, str):
        return reduction if reduction in SUPERVISED_REDUCTIONS else None
    steps = getattr(transformer, "named_steps", None) or {}
    found = [name for name in steps if name in SUPERVISED_STEPS]
    return found[0] if found else None


def validation_features(validation_dir: str | os.PathLike, validation: pd.DataFrame, y_val: np.ndarray,
                        transformer: Any, target: str) -> Any:
    """The validation rows' features: the ``<part>.npz`` Preprocess wrote beside each ``<part>.parquet`` when the
    channel has them (refused unless their label indices are the parquet's, row for row), else the fitted
    transformer applied here (a channel written before the features travelled with it)."""
    folder = Path(validation_dir)
    tables = sorted(folder.glob("*.parquet"))
    features = [path.with_suffix(".npz") for path in tables]
    present = [path for path in features if path.is_file()]
    if not present:
        return transformer.transform(validation.drop(columns=[target]))
    if len(present) != len(features):
        lacking = [path.name for path in features if not path.is_file()]
        raise ValueError(f"validation channel: the features of {len(lacking)} part(s) are missing ({', '.join(lacking[:5])})"
                         " while others are there: the channel mixes two runs' outputs")
    blocks, y_file = [], []
    for path in present:
        try:
            X_part, y_part, _ = read_train(path)
        except ValueError as err:
            raise ValueError(f"validation channel: {err}") from None
        blocks.append(X_part)
        y_file.append(y_part)
    y_all = np.concatenate(y_file)
    if y_all.shape != y_val.shape or not np.array_equal(y_all, y_val):
        raise ValueError(f"validation channel: the features (.npz) do not belong to the rows (.parquet): their "
                         f"{len(y_all)} rows' labels are not the {len(y_val)} rows' of the parquet parts")
    X_val = stack_parts(blocks)
    logger.info("read %d validation feature part(s) from %s: %s, the rows Preprocess transformed", len(present),
                folder, X_val.shape)
    return X_val


def load_validation(validation_dir: str | os.PathLike) -> pd.DataFrame:
    frame = read_split(validation_dir, "validation channel")
    logger.info("read %s: %d rows, %d columns", validation_dir, len(frame), frame.shape[1])
    return frame


# ------------------------------------------------------------------------------------------------
# The work


def check_validation_frame(frame: pd.DataFrame, schema: Schema) -> np.ndarray | None:
    """Fail on a validation frame that cannot be scored; returns the slice mask (None without a slice)."""
    target = schema.target
    if frame.empty:
        raise ValueError("validation channel: no rows")
    if target not in frame.columns:
        raise ValueError(f"validation channel: target column '{target}' missing "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    if frame[target].isna().any():
        raise ValueError(f"validation channel: target column '{target}' has {int(frame[target].isna().sum())} "
                         "missing value(s)")
    if not schema.slice_column:
        return None
    column = schema.slice_column
    if column not in frame.columns:
        raise ValueError(f"validation channel: slice column '{column}' missing")
    if frame[column].isna().any():
        raise ValueError(f"validation channel: slice column '{column}' has missing values")
    mask = frame[column].to_numpy()
    if mask.dtype == object:  # nullable boolean -> Python bools; anything else is left for evaluate() to refuse
        mask = np.array([bool(v) if isinstance(v, (bool, np.bool_)) else v for v in mask])
    return mask


def validation_summary(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The few cross-validated numbers champion selection and the registry need, kept in metadata.json."""
    d = evaluation["diagnosa"]
    orphan = d.get("slices", {}).get("orphan")
    unseen = d.get("slices", {}).get("orphan_unseen")
    return {
        "n": d["n"],
        "macro_recall": d["macro"]["recall"],
        "worst_class_recall": {"label": d["worst_class_recall"]["label"],
                               "recall": d["worst_class_recall"]["recall"]},
        "per_class_recall": {label: d["per_class"][label]["recall"] for label in d["labels"]},
        "orphan_macro_recall": orphan["macro_recall"] if orphan else None,
        "orphan_unseen_macro_recall": unseen["macro_recall"] if unseen else None,
    }


def _input_schema(schema: Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": f.type, "unit": f.unit, "min": f.min, "max": f.max,
             "values": list(f.values) if f.values is not None else None}
            for f in schema.fields if f.role == "feature"]


class Pools(NamedTuple):
    """Rows cross-validated (``cv_*``) and rows the final model is fitted on (``fit_*``)."""
    cv_X: Any  # CSR or dense, as the training rows
    cv_y: np.ndarray
    cv_w: np.ndarray
    validation_rows: np.ndarray  # bool per CV row
    in_slice: np.ndarray | None  # bool per CV row with a slice (training rows without flags: outside it), else None
    patients: np.ndarray | None  # patient key per CV row with a patient column (None: each row its own patient)
    fit_X: Any
    fit_y: np.ndarray
    fit_w: np.ndarray
    method: str


def resampling_method(resampling: Mapping[str, Any] | None, weight: np.ndarray) -> str:
    """How Preprocess balanced the training rows (its record, else read off the weights)."""
    return str(dict(resampling or {}).get("method") or ("none" if np.allclose(weight, 1.0) else "class_weights"))


def stack_rows(top: Rows, bottom: Any) -> Rows:
    """Rows of ``top`` then ``bottom``, in ``top``'s layout (CSR or dense) and dtype."""
    if is_sparse(top):
        return sp.vstack([top, sp.csr_matrix(bottom)], format="csr", dtype=top.dtype)
    return np.vstack([top, bottom.toarray() if is_sparse(bottom) else bottom]).astype(top.dtype, copy=False)


def build_pools(X: Rows, y: np.ndarray, weight: np.ndarray, X_val: Rows, y_val: np.ndarray,
                resampling: Mapping[str, Any] | None, train_slice: np.ndarray | None = None,
                val_slice: np.ndarray | None = None, train_patients: np.ndarray | None = None,
                val_patients: np.ndarray | None = None) -> Pools:
    """Train + validation rows for cross-validation and for the final fit, by the split's resampling.

    ``class_weights`` / ``none``: both pools are the training rows + the validation rows, weighted
    "balanced" over the whole pool (resp. all ones). Over-samplers (``smote``, ``adasyn``): the CV pool
    holds only real rows (train.npz's originals come first) weighted "balanced", so no synthetic row
    is scored or shares a fold with its source; the final fit uses the resampled rows as delivered + the
    validation rows. ``undersample``: train.npz's rows + validation rows, "balanced", for both.
    ``train_slice`` / ``val_slice``: the slice flags of train.npz's rows and of the validation rows; the pool's
    (``in_slice``) when ``val_slice`` is given (without ``train_slice``, an older train.npz, the training rows
    count as outside the slice). ``train_patients`` / ``val_patients``: their patient keys; the pool's
    (``patients``) when both are given.
    """
    info = dict(resampling or {})
    method = resampling_method(resampling, weight)
    real = len(y)
    if method in ("smote", "adasyn") and isinstance(info.get("before"), dict):
        real = int(sum(int(v) for v in info["before"].values()))
    cv_X = stack_rows(X[:real], X_val)
    cv_y = np.concatenate([y[:real], y_val])
    balanced = compute_sample_weight("balanced", cv_y)
    cv_w = np.ones(len(cv_y)) if method == "none" else balanced
    validation_rows = np.r_[np.zeros(real, dtype=bool), np.ones(len(y_val), dtype=bool)]
    in_slice = None if val_slice is None else np.r_[
        np.zeros(real, dtype=bool) if train_slice is None else np.asarray(train_slice, dtype=bool)[:real],
        np.asarray(val_slice, dtype=bool)]
    patients = None if train_patients is None or val_patients is None else np.r_[
        np.asarray(train_patients, dtype=np.int64)[:real], np.asarray(val_patients, dtype=np.int64)]
    if method in ("smote", "adasyn"):
        fit_X, fit_y = stack_rows(X, X_val), np.concatenate([y, y_val])
        fit_w = np.r_[weight, np.ones(len(y_val))]
    else:
        fit_X, fit_y, fit_w = cv_X, cv_y, cv_w
    return Pools(cv_X, cv_y, cv_w, validation_rows, in_slice, patients, fit_X, fit_y, fit_w, method)


def train(train_dir: str | os.PathLike, validation_dir: str | os.PathLike, transformer_dir: str | os.PathLike,
          family: str, hyperparameters: Mapping[str, Any] | None = None, seed: int = 0, *,
          settings: SearchSettings | None = None) -> TrainResult:
    """Choose ``family``'s hyperparameters, calibrate and fit decision weights on rows the model did not
    see, and wrap the model with the fitted transformer.

    Two regimes (training/tuning.py): when every class has ``settings.holdout_min_class`` validation
    rows, configurations are fitted on the training rows and scored on the validation split, and that
    fitted model is shipped; otherwise (tiny classes) by cross-validation on train + validation, out of
    fold, and refitted on all rows; when the feature transform was fitted with the labels (LDA), only the
    validation rows are scored out of fold. ``hyperparameters`` given are held fixed; the search varies the others."""
    given = resolve_hyperparameters(family, hyperparameters)  # bad hyperparameters fail before any I/O
    given = {k: v for k, v in given.items() if k in (hyperparameters or {})}
    seed = check_seed(seed)
    settings = settings or SearchSettings()
    settings.validate()

    started = time.perf_counter()
    transformer, record, schema = load_transformer(transformer_dir)
    labels = list(record["labels"])
    k = len(labels)
    names = record.get("feature_names")
    # Across hosts (training/distributed.py): this host's shard of the training rows; the counts that decide
    # anything (the search budget, which labels have rows) are summed over all hosts, so every host decides alike.
    spread = is_distributed()
    if spread and (family != "xgboost" or names is None):
        raise ValueError(f"only xgboost trains across instances (family {family}"
                         + (")" if family != "xgboost" else "; preprocess.json names no features)"))
    X, y, weight, digests = load_train(train_dir, k, allow_nan=family in NAN_TOLERANT,
                                       empty_width=len(names) if spread and names is not None else None)
    if spread:
        digests = {name: digest for part in gather(digests) for name, digest in part.items()}
    train_sha = digest_of_parts(digests)
    if names is not None and len(names) != X.shape[1]:
        raise ValueError(f"train channel: X has {X.shape[1]} columns but preprocess.json names {len(names)} features")
    class_rows = total(np.bincount(y, minlength=k))
    if not class_rows.sum():
        raise ValueError("train channel: no training rows on any host")
    validation = load_validation(validation_dir)
    orphan = check_validation_frame(validation, schema)
    unknown = sorted({str(v) for v in validation[schema.target]} - set(labels))
    if unknown:
        raise ValueError(f"validation channel: labels not in the label set: {unknown}")
    y_val = np.array([labels.index(str(v)) for v in validation[schema.target]], dtype=np.int64)
    X_val = validation_features(validation_dir, validation, y_val, transformer, schema.target)
    X_val = sp.csr_matrix(X_val, dtype=X.dtype) if is_sparse(X) else np.asarray(
        X_val.toarray() if is_sparse(X_val) else X_val, dtype=X.dtype)  # the training rows' layout
    if X_val.ndim != 2 or X_val.shape[1] != X.shape[1]:  # fail now, not after a long fit
        raise ValueError(f"transformer channel: the transformer makes {X_val.shape[-1]} feature(s) but "
                         f"the training rows have {X.shape[1]} columns")
    val_values = X_val.data if is_sparse(X_val) else X_val
    if family not in NAN_TOLERANT and not np.isfinite(val_values).all():
        raise ValueError(f"validation channel: the transformer made {int((~np.isfinite(val_values)).sum())} "
                         "non-finite value(s)")
    holdout = use_holdout(y_val, k, settings.holdout_min_class)
    if spread and not holdout:
        raise ValueError(f"training across instances needs at least {settings.holdout_min_class} validation rows of "
                         "every class (the validation split selects and calibrates); with fewer, cross-validation "
                         "runs on one instance: set TrainingInstanceCount=1")
    method = resampling_method(record.get("resampling"), weight)
    # The train + validation pools (a copy of both) only where cross-validation and the refit need them.
    pools, train_slice = None, None
    if not holdout:
        # The training rows' slice flags (train.npz's), so the pool's slice rows of the training split count too.
        train_slice = None if orphan is None else load_train_slice(train_dir, len(y))
        if orphan is not None and train_slice is None:
            logger.warning("train channel: the parts carry no slice flags (written before they did): "
                           "cross-validation counts every training-split row as outside the slice")
        # The patients' keys, so that cross-validation keeps a patient's rows (visits) in one fold.
        train_patients = None if schema.patient_column is None else load_train_patients(train_dir, len(y))
        if schema.patient_column is not None and train_patients is None:
            logger.warning("train channel: the parts carry no patient keys (written before they did): "
                           "cross-validation cannot keep a patient's rows in one fold")
        pools = build_pools(X, y, weight, X_val, y_val, record.get("resampling"), train_slice,
                            None if orphan is None else np.asarray(orphan, dtype=bool), train_patients,
                            patient_keys(validation, schema))
    fit_counts = class_rows if pools is None else np.bincount(pools.fit_y, minlength=k)
    absent = [labels[i] for i in range(k) if not fit_counts[i]]
    if absent:
        if family == "xgboost":
            raise ValueError(f"train channel: no training rows for label(s) {absent}; xgboost needs every label")
        logger.warning("train channel: no training rows for label(s) %s; the model gives them probability 0", absent)
    logger.info("phase load: %.2f s", time.perf_counter() - started)

    started = time.perf_counter()
    if pools is None:
        # Enough validation rows in every class: the split selects, calibrates and decides; the model
        # fitted on the training rows is the one shipped (no refit, so the calibration is its own).
        held = holdout_search(family, X, y, weight, X_val, y_val, k, given=given, seed=seed, budget=settings.budget,
                              max_configs=settings.max_configs, n_rows=int(class_rows.sum()),
                              fit=(lambda est, X_, y_, w_: fit_xgboost(est, X_, y_, w_, k)) if spread else None)
        hyper, proba, y_eval, trials, classifier = held.hyperparameters, held.proba, y_val, held.trials, held.estimator
        w_eval = np.ones(len(y_val)) if method == "none" else compute_sample_weight("balanced", y_val)
        eval_orphan = None if orphan is None else np.asarray(orphan, dtype=bool)
        eval_patients = patient_keys(validation, schema)
        # Validation patients of slice groups held out of training (never seen): their own sub-slice.
        eval_unseen = (None if eval_orphan is None
                       else unseen_mask(validation, schema, read_train_groups(validation_dir)))
        plan_info = {"regime": "holdout", "rows": int(len(y_val)), "smallest_class": int(np.bincount(y_val).min())}
        regime_text = ("validation split (every class has at least "
                  f"{settings.holdout_min_class} rows there): calibrated probabilities, decision weights cross-fitted "
                  "(fitted on one half of the rows, scored on the other)")
        logger.info("phase search: %d configuration(s) fitted on %d training rows, scored on %d validation rows; "
                    "best %s", len(trials), int(class_rows.sum()), len(y_val), hyper)
    else:
        # A transform fitted with the training split's labels (LDA) has already separated the training-split
        # rows: scored out of fold they look far better than new patients. Then only the validation rows are
        # scored, every training-split row staying on the fitting side of every fold (training/tuning.py).
        supervised = supervised_transform(record, transformer)
        unscored: list[str] = []
        if supervised:
            val_counts, pool_counts = np.bincount(y_val, minlength=k), np.bincount(pools.cv_y, minlength=k)
            unscored = [labels[i] for i in range(k) if pool_counts[i] and not val_counts[i]]
            if unscored:
                logger.warning("label(s) %s have no validation row: the feature transform's %s step was fitted with "
                               "every training-split row's label, so they cannot be scored leak-free; the validation "
                               "figures, the calibration and the decision weights leave them out", unscored,
                               supervised)
        found = search(family, pools.cv_X, pools.cv_y, pools.cv_w, k, given=given, seed=seed, budget=settings.budget,
                       max_configs=settings.max_configs, max_folds=settings.max_folds, max_rows=settings.cv_max_rows,
                       shipped=pools.fit_y, scored=pools.validation_rows if supervised else None,
                       groups=pools.patients)
        hyper, proba, y_eval, trials, classifier = found.hyperparameters, found.oof_proba, pools.cv_y[found.rows], \
            found.trials, None
        w_eval = found.row_weight
        eval_orphan = eval_unseen = None  # cross-validation folds mix the held-out groups into training
        eval_patients = None if pools.patients is None else pools.patients[found.rows]
        if pools.in_slice is not None:
            eval_orphan = pools.in_slice[found.rows]
        plan_info = {"regime": "cross-validation", "folds": found.plan.k, "repeats": found.plan.repeats,
                     "smallest_class": found.plan.smallest_class, "rows": int(len(found.rows)),
                     "pool_rows": int(len(pools.cv_y)), "scored_rows": "validation" if supervised else "pool"}
        if supervised:
            plan_info |= {"supervised_transform": supervised, "context_rows": found.context_rows,
                          "unscored_labels": unscored}
        if orphan is not None:
            plan_info["slice_flags"] = "every row" if train_slice is not None else "validation rows only"
        if schema.patient_column is not None:
            plan_info["folds_by_patient"] = pools.patients is not None
        regime_text = ("cross-validation" + (f" over the validation-split rows only (the feature transform's {supervised} "
                                        "step was fitted with the training split's labels; every training-split row "
                                        "stays on the fitting side of every fold)" if supervised else "")
                  + ": out-of-fold calibrated probabilities, decision weights cross-fitted (fitted on one half of "
                    "the rows, scored on the other)")
        logger.info("phase search: %s%s; best %s", describe_plan(found.plan, len(found.rows), len(trials)),
                    f"; scored: the validation rows only, {found.context_rows} training-split row(s) fitted in every "
                    "fold" if supervised else "", hyper)
    if eval_patients is not None:
        regime_text += "; by patient (patient column '%s': a patient's rows in one fold and one half)" % schema.patient_column
    search_seconds = time.perf_counter() - started
    logger.info("phase search: %.2f s", search_seconds)

    started = time.perf_counter()
    # The slice (the orphan patients) is its own group: the weights look after each class inside and outside it.
    post = calibrate_and_decide(proba, y_eval, w_eval, max_precision_loss=settings.max_precision_loss, seed=seed,
                                groups=eval_orphan, patients=eval_patients)
    weights = post["decision_weights"]
    truth = [labels[i] for i in y_eval]
    evaluation = evaluate(truth, post["calibrated"], labels, orphan=eval_orphan, predicted=post["cross_fitted_pred"],
                          unseen=eval_unseen)
    plain = evaluate(truth, post["calibrated"], labels, predicted=post["calibrated"].argmax(axis=1))
    summary = validation_summary(evaluation)
    summary["method"] = regime_text
    summary["plain_argmax"] = {"macro_recall": plain["diagnosa"]["macro"]["recall"],
                               "worst_class_recall": plain["diagnosa"]["worst_class_recall"]}
    calibration_oof = {"before": calibration_numbers(y_eval, proba),
                       "after": calibration_numbers(y_eval, post["calibrated"])}
    logger.info("phase calibrate+decide: %.2f s; %s T=%.3f; weights %s; macro recall %.4f (plain argmax %.4f), "
                "worst class %s %.4f; ECE %.4f -> %.4f", time.perf_counter() - started,
                post["calibration"]["method"], post["calibration"]["temperature"], np.round(weights, 3).tolist(),
                summary["macro_recall"], summary["plain_argmax"]["macro_recall"], summary["worst_class_recall"]["label"],
                summary["worst_class_recall"]["recall"], calibration_oof["before"]["ece"],
                calibration_oof["after"]["ece"])

    started = time.perf_counter()
    if pools is not None:
        classifier = adapt_to_rows(make_classifier(family, hyper, seed=seed), pools.fit_y)
        classifier.fit(pools.fit_X, pools.fit_y, sample_weight=pools.fit_w)
        n_fit = len(pools.fit_y)
    else:
        n_fit = int(class_rows.sum())
    fit_seconds = time.perf_counter() - started
    logger.info("phase fit: %s on %d rows x %d features in %.2f s", family, n_fit, X.shape[1], fit_seconds)

    pipeline = Pipeline([("features", transformer), ("classifier", portable(classifier))])
    # The rows this model did not see, as the other candidates scored them too: Select may combine candidates.
    # With the weights and the slice the decision weights were fitted with: Select fits the vote's the same way.
    model = DiagnosaModel(pipeline=pipeline, labels=labels, oof={"proba": post["calibrated"], "y": y_eval,
                                                                 "w": w_eval, "groups": eval_orphan,
                                                                 "patients": eval_patients})
    model.metadata = {
        "family": family,
        "hyperparameters": {k_: list(v) if isinstance(v, tuple) else v for k_, v in hyper.items()},
        "seed": seed,
        "labels": labels,
        "input_schema": _input_schema(schema),
        "schema": record["schema"],  # the whole dataset schema: serving builds its request schema from it
        "target": schema.target,
        "slice_column": schema.slice_column,
        "dataset": record.get("dataset"),
        "number_spreads": record.get("number_spreads"),  # what the endpoint refuses as implausible (RequestSchema)
        "preprocess_params": record.get("params"),
        "feature_names": names,
        **({"encoded_feature_names": record["encoded_feature_names"]} if record.get("encoded_feature_names") else {}),
        "n_train": int(n_fit),
        "split_rows": record.get("rows"),  # rows per split (preprocess.json): Evaluate says when shares are far off
        "fingerprint": {"preprocess": record.get("fingerprint"), "train_npz_sha256": train_sha},
        "validation": summary,
        "calibration": post["calibration"],
        "decision_weights": {label: float(w) for label, w in zip(labels, weights)},
        "decision_rule": (f"argmax of decision weight x calibrated probability; weights fitted out of fold to "
                          f"maximise the worst class's recall with macro precision at most "
                          f"{settings.max_precision_loss:g} below the plain argmax's"),
        "calibration_oof": calibration_oof,
        "search": {"settings": settings.to_dict(), **plan_info, "resampling": method, "trials": trials,
                   "given": {k_: list(v) if isinstance(v, tuple) else v for k_, v in given.items()}},
        "train_seconds": round(search_seconds + fit_seconds, 3),
        "search_seconds": round(search_seconds, 3),
    }
    model.metadata["model_version"] = identity_version(model.metadata)
    return TrainResult(model, evaluation)


# ------------------------------------------------------------------------------------------------
# Outputs


def _write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def _move_into(src: Path, folder: Path) -> None:
    """Atomic within one filesystem; across filesystems copy to a hidden name, then rename (a folder too)."""
    target = folder / src.name
    try:
        os.replace(src, target)
    except OSError:
        if src.is_dir():
            partial = folder / f".{src.name}.{os.getpid()}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            try:
                shutil.copytree(src, partial)
                os.replace(partial, target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        else:
            with atomic_path(target) as partial:
                shutil.copyfile(src, partial)


def save_model(model: DiagnosaModel, model_dir: str | os.PathLike, *, serving_code: bool = False) -> None:
    """Save into a temp dir beside ``model_dir``, check it loads, then move it into place.

    ``serving_code``: also write the serving code and pins (``code/``, diagnosa/serving_code.py) into the temp dir,
    so a failure to assemble them leaves no model behind. metadata.json moves last (and any old one is removed
    first), so a model dir never holds a new model.joblib with stale metadata: DiagnosaModel.load refuses a dir
    without metadata.json; if a move fails, what was moved is removed again.
    """
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    except OSError:  # parent not writable: stage inside the model dir instead
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        model.save(staging)
        if serving_code:
            write_serving_code(staging / SERVING_CODE_DIR)
        DiagnosaModel.load(staging)
        try:
            if model_dir.exists() and any(model_dir.iterdir()):
                raise OSError("model dir not empty")
            os.replace(staging, model_dir)  # replaces an empty directory atomically
        except OSError:  # non-empty, a mount point (/opt/ml/model may be one) or another filesystem
            _move_files_into(staging, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote model to %s", model_dir)


def _move_files_into(staging: Path, model_dir: Path) -> None:
    """The staged model's entries into ``model_dir`` one by one, metadata.json last; on a failure the entries moved
    so far are removed again (the old model's metadata.json is gone already, so nothing half-new loads)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / METADATA_FILE).unlink(missing_ok=True)
    (model_dir / OOF_FILE).unlink(missing_ok=True)
    if (model_dir / SERVING_CODE_DIR).is_dir() and (staging / SERVING_CODE_DIR).is_dir():
        shutil.rmtree(model_dir / SERVING_CODE_DIR)  # a stale model's serving code: never mixed with the new one
    names = sorted(p.name for p in staging.iterdir() if p.name != METADATA_FILE) + [METADATA_FILE]
    moved: list[Path] = []
    try:
        for name in names:
            _move_into(staging / name, model_dir)
            moved.append(model_dir / name)
    except BaseException:
        for path in moved:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _write_failure(output_dir: Path, message: str) -> None:
    """The reason, bounded (``diagnosa.files.job_reason``: a non-UTF-8 path in it crashed the write and left the
    failure file empty; a 10 MB hyperparameter made a 10 MB one), where the service reads it."""
    try:
        write_text_atomic(output_dir / FAILURE_FILE, job_reason(message) + "\n")
    except OSError as err:
        logger.error("could not write %s: %s", job_reason(str(output_dir / FAILURE_FILE)), job_reason(str(err)))


def _configure_logging() -> None:
    configure_logging()


def main(argv: Sequence[str] | None = None) -> int:
    """Container entry point; returns the exit code (0 ok, 1 failure written to <SM_OUTPUT_DIR>/failure)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0] in HELP_FLAGS:
        # Only a lone -h/--help: in a job's --NAME VALUE pairs "-h" or "--help" is a value (n_estimators="--help"),
        # which must fail the job, not print help and exit 0 with no model.
        print(help_text())
        return 0
    _configure_logging()
    env = os.environ
    started = time.perf_counter()
    try:
        output_dir = env_path(env, "SM_OUTPUT_DIR", "/opt/ml/output")
    except ValueError as err:  # nowhere to write the reason: the current folder is no job's output folder
        logger.error("training failed: %s (so the reason is not written)", err)
        return 1
    try:
        hps = read_hyperparameters(argv, env)
        if "family" not in hps:
            raise ValueError("missing required hyperparameter 'family'")
        family = hps.pop("family")
        if family is None or (isinstance(family, str) and not family.strip()):
            # The toolkit hands a JSON null to the program as an empty string ("--family ''"), SM_HPS as null.
            raise ValueError("hyperparameter 'family' is empty or null (the training toolkit passes a JSON null "
                             f"as an empty string); expected one of: {', '.join(FAMILIES)}")
        if not isinstance(family, str):
            raise ValueError(f"hyperparameter 'family' must be a string, got {shown(family)}")
        if family not in FAMILIES:  # before it is logged (a lone surrogate made a logging error) or any work
            raise ValueError(f"unknown model family {shown(family)} (expected one of: {', '.join(FAMILIES)})")
        seed = check_seed(hps.pop("seed", 0))
        settings = SearchSettings.pop_from(hps)
        inputs = env_path(env, "SM_INPUT_DIR", "/opt/ml/input") / "data"
        channels = {name: env_path(env, f"SM_CHANNEL_{name.upper()}", inputs / name)
                    for name in ("train", "validation", "transformer")}
        model_dir = env_path(env, "SM_MODEL_DIR", "/opt/ml/model")
        data_dir = env_path(env, "SM_OUTPUT_DATA_DIR", output_dir / "data")
        check_folders({**{f"{name} channel": path for name, path in channels.items()}, "SM_MODEL_DIR": model_dir,
                       "SM_OUTPUT_DATA_DIR": data_dir, "SM_OUTPUT_DIR": output_dir})
        cluster = cluster_from_env(env)
        if cluster.size > 1 and family != "xgboost":  # every host refuses alike, before any of them waits for another
            raise ValueError(f"family {family} trains on one instance; only xgboost trains across {cluster.size}")
        # The hyperparameters as given, bounded: 100,000 unknown names made a 2 MB log line (the error names them).
        logger.info("family %s, seed %d, hyperparameters %s, host %s of %d", family, seed, shown(hps, 2_000),
                    cluster.current, cluster.size)

        with collective(cluster):
            result = train(channels["train"], channels["validation"], channels["transformer"], family, hps, seed,
                           settings=settings)
        if not cluster.is_leader:
            # SageMaker packs every host's /opt/ml/model into the one model.tar.gz: the first host writes it alone.
            logger.info("host %s: the model is the first host's (%s); nothing to write", cluster.current,
                        cluster.hosts[0])
            return 0

        started_write = time.perf_counter()
        # The outputs appear only when the job succeeds: validation.json (the smaller write) first, then the model,
        # staged whole and moved in last; a failure of the model's write takes validation.json away again.
        _write_json_atomic(data_dir / VALIDATION_REPORT, result.evaluation)
        try:
            # The artifact carries its serving code and pins (model.tar.gz/code/, SageMaker's layout).
            save_model(result.model, model_dir, serving_code=True)
        except BaseException:
            (data_dir / VALIDATION_REPORT).unlink(missing_ok=True)
            raise
        logger.info("wrote %s", data_dir / VALIDATION_REPORT)
        logger.info("phase write: %.2f s", time.perf_counter() - started_write)
    except Exception as err:  # noqa: BLE001  (the container must always leave a readable reason)
        message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        logger.error("training failed: %s", job_reason(message), exc_info=not isinstance(err, ValueError))
        _write_failure(output_dir, message)
        return 1
    summary = result.model.metadata["validation"]
    # Scraped by the estimator's metric_definitions, e.g. Regex "validation:macro_recall=([0-9.]+)".
    print(f"validation:macro_recall={summary['macro_recall']:.6f}", flush=True)
    print(f"validation:worst_class_recall={summary['worst_class_recall']['recall']:.6f}", flush=True)
    if summary["orphan_macro_recall"] is not None:
        print(f"validation:orphan_macro_recall={summary['orphan_macro_recall']:.6f}", flush=True)
    logger.info("training done in %.2f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
