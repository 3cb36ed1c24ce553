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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from diagnosa.data.schema import Schema
from diagnosa.model import METADATA_FILE, MODEL_FILE, DiagnosaModel
from inference.artifact import write_serving_code
from processing.evaluation import evaluate
from training.models import check_seed, make_classifier, portable, resolve_hyperparameters

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.npz"
VALIDATION_FILE = "validation.parquet"
TRANSFORMER_FILE = "feature_pipeline.joblib"
PREPROCESS_FILE = "preprocess.json"
VALIDATION_REPORT = "validation.json"
FAILURE_FILE = "failure"
NAN_TOLERANT = ("xgboost", "gradient_boosting")  # families that treat NaN as "missing" natively
RESERVED_PREFIX = "sagemaker_"  # keys SageMaker script mode adds (sagemaker_program, ...); not ours


class TrainResult(NamedTuple):
    model: DiagnosaModel
    evaluation: dict[str, Any]  # the full processing.evaluation.evaluate() output on the validation channel


# ------------------------------------------------------------------------------------------------
# Inputs


def _decode(value: Any) -> Any:
    """SageMaker may JSON-encode each value ('"xgboost"', '300'); decode when it parses, else keep."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_cli(argv: Sequence[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` pairs, as SageMaker script mode passes hyperparameters."""
    out: dict[str, Any] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"unexpected command-line argument {arg!r} (expected --name value pairs)")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ValueError(f"command-line argument {arg!r} has no value")
            key, value = arg[2:], args[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


def read_hyperparameters(argv: Sequence[str] | None = None,
                         environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """SM_HPS, else ``<SM_INPUT_DIR>/config/hyperparameters.json``, then CLI overrides; values decoded."""
    environ = os.environ if environ is None else environ
    if environ.get("SM_HPS"):
        source = "SM_HPS"
        try:
            raw = json.loads(environ["SM_HPS"])
        except ValueError as err:
            raise ValueError(f"SM_HPS is not valid JSON: {err}") from None
    else:
        path = Path(environ.get("SM_INPUT_DIR", "/opt/ml/input")) / "config" / "hyperparameters.json"
        source = str(path)
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from None
        else:
            source, raw = "no hyperparameters file", {}
    if not isinstance(raw, dict):
        raise ValueError(f"hyperparameters from {source} must be a JSON object, got {type(raw).__name__}")
    hps = {str(k): _decode(v) for k, v in raw.items() if not str(k).startswith(RESERVED_PREFIX)}
    cli = {k: _decode(v) for k, v in parse_cli(argv or []).items()}
    logger.info("hyperparameters: %d from %s, %d from the command line", len(hps), source, len(cli))
    return {**hps, **cli}


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
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} is not valid JSON: {err}") from None
    missing = [key for key in ("labels", "schema") if key not in record]
    if missing:
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} lacks {', '.join(missing)}")
    labels = record["labels"]
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"transformer channel: {PREPROCESS_FILE} 'labels' must list at least two strings")
    schema = Schema.from_dict(record["schema"])
    if list(schema.labels) != labels:
        raise ValueError(f"transformer channel: labels {labels} differ from the schema's {list(schema.labels)}")
    transformer = joblib.load(transformer_path)
    if not hasattr(transformer, "transform"):
        raise ValueError(f"transformer channel: {TRANSFORMER_FILE} holds a {type(transformer).__name__}, "
                         "not a fitted transformer")
    logger.info("read %s and %s (%d labels, schema %s)", record_path, transformer_path, len(labels), schema.name)
    return transformer, record, schema


def load_train(train_dir: str | os.PathLike, n_labels: int, *,
               allow_nan: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """X, y, sample_weight and the file's sha256, checked so a bad file fails here, not inside a library."""
    path = Path(train_dir) / TRAIN_FILE
    if not path.is_file():
        raise ValueError(f"train channel: {TRAIN_FILE} not found in {Path(train_dir)}")
    with np.load(path, allow_pickle=False) as data:
        missing = [name for name in ("X", "y") if name not in data.files]
        if missing:
            raise ValueError(f"train channel: {TRAIN_FILE} lacks array(s) {', '.join(missing)} "
                             f"(has: {', '.join(data.files) or 'none'})")
        X, y = data["X"], data["y"]
        w = data["sample_weight"] if "sample_weight" in data.files else None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"train channel: X must be a non-empty 2-D array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"train channel: X must be numeric, got dtype {X.dtype}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"train channel: y must be a 1-D integer array of label indices, "
                         f"got shape {y.shape} dtype {y.dtype}")
    if len(y) != len(X):
        raise ValueError(f"train channel: X has {len(X)} rows but y has {len(y)}")
    bad = np.unique(y[(y < 0) | (y >= n_labels)])
    if bad.size:
        raise ValueError(f"train channel: y holds label index(es) out of range [0, {n_labels}): {bad[:10].tolist()}")
    if np.isinf(X).any() or (not allow_nan and np.isnan(X).any()):
        raise ValueError(f"train channel: X holds {int((~np.isfinite(X)).sum())} non-finite value(s)")
    if w is None:
        logger.warning("train channel: %s has no sample_weight; using ones", TRAIN_FILE)
        w = np.ones(len(y))
    w = np.asarray(w, dtype=np.float64)
    if w.shape != y.shape:
        raise ValueError(f"train channel: sample_weight has shape {w.shape}, expected ({len(y)},)")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("train channel: sample_weight must be finite, non-negative and not all zero")
    sha = _sha256(path)
    logger.info("read %s: X %s %s, %d weighted rows, sha256 %s", path, X.shape, X.dtype, int((w != 1).sum()),
                sha[:12])
    return X, y.astype(np.int64), w, sha


def load_validation(validation_dir: str | os.PathLike) -> pd.DataFrame:
    path = Path(validation_dir) / VALIDATION_FILE
    if not path.is_file():
        raise ValueError(f"validation channel: {VALIDATION_FILE} not found in {Path(validation_dir)}")
    frame = pd.read_parquet(path)
    logger.info("read %s: %d rows, %d columns", path, len(frame), frame.shape[1])
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


def validation_metrics(model: DiagnosaModel, frame: pd.DataFrame, schema: Schema) -> dict[str, Any]:
    """``evaluate`` on the validation rows; the target is dropped first, as serving never sees it."""
    orphan = check_validation_frame(frame, schema)
    proba = model.predict_proba(frame.drop(columns=[schema.target]))
    return evaluate([str(v) for v in frame[schema.target]], proba, model.labels, orphan=orphan)


def validation_summary(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The few validation numbers champion selection and the registry need, kept in metadata.json."""
    d = evaluation["diagnosa"]
    orphan = d.get("slices", {}).get("orphan")
    return {
        "n": d["n"],
        "macro_recall": d["macro"]["recall"],
        "worst_class_recall": {"label": d["worst_class_recall"]["label"],
                               "recall": d["worst_class_recall"]["recall"]},
        "per_class_recall": {label: d["per_class"][label]["recall"] for label in d["labels"]},
        "orphan_macro_recall": orphan["macro_recall"] if orphan else None,
    }


def _input_schema(schema: Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": f.type, "unit": f.unit, "min": f.min, "max": f.max,
             "values": list(f.values) if f.values is not None else None}
            for f in schema.fields if f.role == "feature"]


def train(train_dir: str | os.PathLike, validation_dir: str | os.PathLike, transformer_dir: str | os.PathLike,
          family: str, hyperparameters: Mapping[str, Any] | None = None, seed: int = 0) -> TrainResult:
    """Fit ``family`` on the preprocessed rows, wrap it with the fitted transformer and score on validation."""
    resolved = resolve_hyperparameters(family, hyperparameters)  # bad hyperparameters fail before any I/O
    seed = check_seed(seed)
    classifier = make_classifier(family, resolved, seed=seed)

    started = time.perf_counter()
    transformer, record, schema = load_transformer(transformer_dir)
    labels = list(record["labels"])
    X, y, weight, train_sha = load_train(train_dir, len(labels), allow_nan=family in NAN_TOLERANT)
    names = record.get("feature_names")
    if names is not None and len(names) != X.shape[1]:
        raise ValueError(f"train channel: X has {X.shape[1]} columns but preprocess.json names {len(names)} features")
    absent = [labels[i] for i in range(len(labels)) if not (y == i).any()]
    if absent:
        if family == "xgboost":
            raise ValueError(f"train channel: no training rows for label(s) {absent}; xgboost needs every label")
        logger.warning("train channel: no training rows for label(s) %s; the model gives them probability 0", absent)
    validation = load_validation(validation_dir)
    check_validation_frame(validation, schema)
    probe = np.asarray(transformer.transform(validation.drop(columns=[schema.target]).head(5)))
    if probe.ndim != 2 or probe.shape[1] != X.shape[1]:  # fail now, not after a long fit
        raise ValueError(f"transformer channel: the transformer makes {probe.shape[-1]} feature(s) but "
                         f"train.npz X has {X.shape[1]} columns")
    logger.info("phase load: %.2f s", time.perf_counter() - started)

    started = time.perf_counter()
    classifier.fit(X, y, sample_weight=weight)
    train_seconds = time.perf_counter() - started
    logger.info("phase fit: %s on %d rows x %d features in %.2f s", family, X.shape[0], X.shape[1], train_seconds)

    pipeline = Pipeline([("features", transformer), ("classifier", portable(classifier))])
    model = DiagnosaModel(pipeline=pipeline, labels=labels)

    started = time.perf_counter()
    evaluation = validation_metrics(model, validation, schema)
    summary = validation_summary(evaluation)
    logger.info("phase validate: %d rows in %.2f s, macro recall %.4f, worst class %s %.4f", summary["n"],
                time.perf_counter() - started, summary["macro_recall"], summary["worst_class_recall"]["label"],
                summary["worst_class_recall"]["recall"])

    model.metadata = {
        "family": family,
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()},
        "seed": seed,
        "labels": labels,
        "input_schema": _input_schema(schema),
        "schema": record["schema"],  # the whole dataset schema: serving builds its request schema from it
        "target": schema.target,
        "slice_column": schema.slice_column,
        "dataset": record.get("dataset"),
        "preprocess_params": record.get("params"),
        "feature_names": names,
        "n_train": int(X.shape[0]),
        "fingerprint": {"preprocess": record.get("fingerprint"), "train_npz_sha256": train_sha},
        "validation": summary,
        "train_seconds": round(train_seconds, 3),
    }
    return TrainResult(model, evaluation)


# ------------------------------------------------------------------------------------------------
# Outputs


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _move_into(src: Path, folder: Path) -> None:
    """Atomic within one filesystem; across filesystems copy to a hidden name, then rename."""
    target = folder / src.name
    try:
        os.replace(src, target)
    except OSError:
        partial = folder / f".{src.name}.partial"
        shutil.copyfile(src, partial)
        os.replace(partial, target)


def save_model(model: DiagnosaModel, model_dir: str | os.PathLike) -> None:
    """Save into a temp dir beside ``model_dir``, check it loads, then move it into place.

    metadata.json moves last (and any old one is removed first), so a model dir never holds a new
    model.joblib with stale metadata: DiagnosaModel.load refuses a dir without metadata.json.
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
        DiagnosaModel.load(staging)
        try:
            if model_dir.exists() and any(model_dir.iterdir()):
                raise OSError("model dir not empty")
            os.replace(staging, model_dir)  # replaces an empty directory atomically
        except OSError:  # non-empty, a mount point (/opt/ml/model may be one) or another filesystem
            model_dir.mkdir(parents=True, exist_ok=True)
            (model_dir / METADATA_FILE).unlink(missing_ok=True)
            _move_into(staging / MODEL_FILE, model_dir)
            _move_into(staging / METADATA_FILE, model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote model to %s", model_dir)


def _write_failure(output_dir: Path, message: str) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / FAILURE_FILE).write_text(message + "\n", encoding="utf-8")
    except OSError as err:
        logger.error("could not write %s: %s", output_dir / FAILURE_FILE, err)


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """Container entry point; returns the exit code (0 ok, 1 failure written to <SM_OUTPUT_DIR>/failure)."""
    _configure_logging()
    env = os.environ
    output_dir = Path(env.get("SM_OUTPUT_DIR", "/opt/ml/output"))
    argv = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    try:
        hps = read_hyperparameters(argv, env)
        if "family" not in hps:
            raise ValueError("missing required hyperparameter 'family'")
        family = hps.pop("family")
        if not isinstance(family, str):
            raise ValueError(f"hyperparameter 'family' must be a string, got {family!r}")
        seed = check_seed(hps.pop("seed", 0))
        inputs = Path(env.get("SM_INPUT_DIR", "/opt/ml/input")) / "data"
        channels = {name: Path(env.get(f"SM_CHANNEL_{name.upper()}", inputs / name))
                    for name in ("train", "validation", "transformer")}
        model_dir = Path(env.get("SM_MODEL_DIR", "/opt/ml/model"))
        data_dir = Path(env.get("SM_OUTPUT_DATA_DIR", output_dir / "data"))
        logger.info("family %s, seed %d, hyperparameters %s", family, seed, hps)

        result = train(channels["train"], channels["validation"], channels["transformer"], family, hps, seed)

        started_write = time.perf_counter()
        _write_json_atomic(data_dir / VALIDATION_REPORT, result.evaluation)
        logger.info("wrote %s", data_dir / VALIDATION_REPORT)
        save_model(result.model, model_dir)
        # The artifact carries its serving code and pins (model.tar.gz/code/, SageMaker's layout).
        write_serving_code(model_dir / "code")
        logger.info("phase write: %.2f s", time.perf_counter() - started_write)
    except Exception as err:  # the container must always leave a readable reason
        message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        logger.error("training failed: %s", message, exc_info=not isinstance(err, ValueError))
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
