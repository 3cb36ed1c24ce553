"""The deployable model: fitted feature pipeline + classifier as one object, plus its metadata.

Training writes it into the model directory (``/opt/ml/model``; SageMaker tars that folder into
``model.tar.gz``), evaluation and serving load it from there. Keeping the feature pipeline inside
the artifact is what guarantees that serving applies exactly the transform training saw.

Two fitted post-processing steps travel as plain numbers in ``metadata.json`` (training fits both
out of fold, ``processing/decisions.py``): ``calibration`` (temperature scaling, optionally with a
per-class bias, on the classifier's log-probabilities) -- ``predict_proba`` returns the calibrated
probabilities, which are what is served and shown -- and ``decision_weights`` (one multiplicative
weight per label): the predicted category is the argmax of weight x calibrated probability
(``decide``/``predict``). A model without them behaves as before (raw probabilities, plain argmax).
"""
from __future__ import annotations

import hashlib
import json
import platform
import zipfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Mapping

import joblib
import numpy as np
import pandas as pd

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
# The calibrated probabilities training scored on rows its model did not see (out of fold, or the validation
# split), with their labels: Select combines candidates from them (processing/ensemble.py). Optional.
OOF_FILE = "oof.npz"
PINNED_LIBRARIES = ("scikit-learn", "xgboost-cpu", "imbalanced-learn", "numpy", "pandas", "pyarrow", "pyhpo", "joblib")


def library_versions() -> dict[str, str]:
    """Versions that produced an artifact; serving refuses to load one made by other versions."""
    versions = {"python": platform.python_version()}
    for name in PINNED_LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def apply_calibration(proba: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """softmax(log(p) / T + b): ``calibration`` = {"temperature": T, "bias": [b per class] or None}."""
    proba = np.asarray(proba, dtype=float)
    if not calibration:
        return proba
    temperature = float(calibration.get("temperature", 1.0))
    bias = calibration.get("bias")
    logits = np.log(np.clip(proba, 1e-12, 1.0)) / temperature
    if bias is not None:
        logits = logits + np.asarray(bias, dtype=float)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    out[proba <= 0] = 0.0  # a class the classifier never saw stays impossible
    return out / out.sum(axis=1, keepdims=True)


def decide(proba: np.ndarray, weights: Any = None) -> np.ndarray:
    """Index of the predicted class per row: argmax of weights x probabilities (ties to the lower index)."""
    proba = np.asarray(proba, dtype=float)
    if weights is None:
        return proba.argmax(axis=1)
    return (proba * np.asarray(weights, dtype=float)).argmax(axis=1)


# What makes one model another: the data and preprocessing it was fitted on, the family (or a vote's members),
# hyperparameters, seed, labels, calibration and decision weights.
IDENTITY = ("fingerprint", "family", "hyperparameters", "members", "seed", "labels", "calibration",
            "decision_weights")


def identity_version(metadata: Mapping[str, Any]) -> str:
    """The version training gives a model (its metadata's ``model_version``): 12 hex digits of a hash of what makes
    it this model, so two models fitted on the same preprocessing (another family, seed or search) differ, and the
    same training repeated (a cached re-run) gives the same."""
    identity = _rounded({key: metadata.get(key) for key in IDENTITY})
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def _rounded(value: Any) -> Any:
    """Floats to 9 significant digits: a fitted temperature or decision weight moves in its last bits between
    repeated fits (random_forest and xgboost sum over threads in no fixed order), which is not another model."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, Mapping):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def model_version(metadata: Mapping[str, Any]) -> str:
    """The version a model's answers carry (each prediction's ``model_version``), from its metadata: the endpoint
    names it so, and the monitor judges only the traffic of the version whose baselines it has. A model trained
    before training named its version has its preprocessing's fingerprint (which the models of one run shared)."""
    fingerprint = metadata.get("fingerprint")
    preprocess = fingerprint.get("preprocess") if isinstance(fingerprint, Mapping) else fingerprint
    return str(metadata.get("model_version") or str(preprocess or "")[:12] or "unversioned")


class ModelLoadError(RuntimeError):
    """The model directory is missing, incomplete or was built with other library versions."""


METADATA_MAX_BYTES = 64 * 1024 * 1024  # a metadata.json: the schema, feature names and numbers, never near this


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """A model directory's ``metadata.json`` as a dict, without loading the model; :class:`ModelLoadError` for a
    folder that is not a model's ("not a model folder (no metadata.json)") and for a metadata.json that is not a
    regular file (a FIFO hung every reader), too big, or not a JSON object."""
    from diagnosa.files import FileProblem, FileTooLarge, read_file_bounded

    path = Path(model_dir) / METADATA_FILE
    if not path.exists() and not path.is_symlink():
        raise ModelLoadError(f"{model_dir} is not a model folder (no {METADATA_FILE})")
    try:
        data = read_file_bounded(path, METADATA_MAX_BYTES, METADATA_FILE)
    except FileTooLarge:
        raise ModelLoadError(f"{path} is over {METADATA_MAX_BYTES:,} bytes: not a model's metadata") from None
    except FileProblem as err:  # a FIFO hung every reader; a folder, a device, an unreadable file are named
        raise ModelLoadError(f"not a model folder: {err}") from None
    return parse_metadata(data, model_dir)


class MetadataError(ModelLoadError, ValueError):
    """A metadata.json that is not a JSON object (a ValueError too, as the selection step reports bad input)."""


def parse_metadata(raw: bytes, source: str | Path) -> dict[str, Any]:
    """The bytes of a ``metadata.json`` (read from a folder or a tarball, ``source``) as a dict; MetadataError."""
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise MetadataError(f"{source}: {METADATA_FILE} is not valid JSON: {err}") from None
    if not isinstance(metadata, dict):
        raise MetadataError(f"{source}: {METADATA_FILE} must hold a JSON object")
    return metadata


def model_labels(model_dir: str | Path) -> list[str]:
    """The labels a model directory's model answers with (its metadata.json), without loading the model."""
    metadata = read_metadata(model_dir)
    try:
        return list(metadata["labels"])
    except (KeyError, TypeError) as err:
        raise ModelLoadError(f"{Path(model_dir) / METADATA_FILE}: no labels ({err})") from None


def model_endpoint(model_dir: str | Path) -> str:
    """The endpoint that serves a model directory's model when none is named: its dataset's, as the pipeline and
    ``diagnosa run --local`` deploy it (the built-in cohort's: diagnosa)."""
    from diagnosa.data.schema import resource_name

    return resource_name(model_dataset(model_dir))


def model_dataset(model_dir: str | Path) -> str:
    """The dataset a model directory's model was trained on (its metadata.json: ``dataset.name``, else the schema's
    name, which is the dataset's), without loading the model."""
    metadata = read_metadata(model_dir)
    path = Path(model_dir) / METADATA_FILE
    try:
        name = (metadata.get("dataset") or {}).get("name") or metadata["schema"]["name"]
    except (KeyError, TypeError, AttributeError) as err:
        raise ModelLoadError(f"{path}: no dataset name ({err})") from None
    if not isinstance(name, str) or not name:
        raise ModelLoadError(f"{path}: no dataset name (got {name!r})")
    return name


def unpack_model(archive: str | Path, target: str | Path) -> Path:
    """Extract a SageMaker ``model.tar.gz`` (model.joblib + metadata.json at its root) into ``target``.

    The archive is extracted into a temporary folder beside ``target`` and moved into place only once whole: a
    truncated archive used to leave a partial folder (its metadata.json complete, its model.joblib cut) that the next
    call took for the model. On failure nothing is left behind."""
    import os
    import shutil
    import tarfile
    import tempfile
    import zlib

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise ModelLoadError(f"{archive} is not a readable model.tar.gz: {err}") from None
        try:
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            if not target.exists():
                os.replace(scratch, target)  # one rename: the folder is whole or absent
            else:  # a folder given to extract into (a scratch folder of the caller's): its entries moved in
                for entry in scratch.iterdir():
                    destination = target / entry.name
                    if destination.is_dir() and not destination.is_symlink():
                        shutil.rmtree(destination)
                    os.replace(entry, destination)
        except OSError as err:
            raise ModelLoadError(f"cannot unpack {archive} into {target}: {err}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


@dataclass
class DiagnosaModel:
    """``pipeline`` maps a frame of raw curated columns to class probabilities in ``labels`` order."""

    pipeline: Any  # sklearn Pipeline: ("features", fitted transformer), ("classifier", fitted estimator)
    labels: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    oof: dict[str, Any] | None = None  # {"proba", "y"[, "w", "groups"]}: saved as OOF_FILE when present

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities (what is served); the classifier's own when the model has no calibration."""
        return apply_calibration(self.predict_proba_raw(frame), self.metadata.get("calibration"))

    def predict_proba_raw(self, frame: pd.DataFrame) -> np.ndarray:
        """The classifier's probabilities before calibration."""
        return self._in_label_order(np.asarray(self.pipeline.predict_proba(frame), dtype=float))

    @property
    def decision_weights(self) -> list[float] | None:
        """Per-label weights in ``labels`` order, or None (plain argmax)."""
        weights = self.metadata.get("decision_weights")
        return None if not weights else [float(weights[label]) for label in self.labels]

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Predicted label indices from calibrated probabilities, with the model's decision weights."""
        return decide(proba, self.decision_weights)

    @property
    def features(self) -> Any:
        return self.pipeline.steps[0][1]

    def predict_proba_features(self, X: np.ndarray, classifier: Any = None) -> np.ndarray:
        """Probabilities from already transformed features (serving's compiled feature path); ``classifier``:
        a stand-in for the pipeline's classifier step with the same probabilities (serving's compiled one)."""
        classifier = self.pipeline.steps[-1][1] if classifier is None else classifier
        raw = self._in_label_order(np.asarray(classifier.predict_proba(X), dtype=float))
        return apply_calibration(raw, self.metadata.get("calibration"))

    def _in_label_order(self, proba: np.ndarray) -> np.ndarray:
        classes = list(self.pipeline.classes_)
        if classes != list(range(len(self.labels))):  # a class absent at training time gets probability 0
            full = np.zeros((len(proba), len(self.labels)))
            full[:, classes] = proba
            proba = full
        return proba

    def predict(self, frame: pd.DataFrame) -> list[str]:
        return [self.labels[i] for i in self.decide(self.predict_proba(frame))]

    def save(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.pipeline, model_dir / MODEL_FILE, compress=3)
        if self.oof is not None:
            arrays: dict[str, Any] = {key: np.asarray(self.oof[key], dtype=dtype) for key, dtype in (
                ("proba", np.float32), ("y", np.int64), ("w", np.float64), ("groups", np.bool_))
                if self.oof.get(key) is not None}
            np.savez_compressed(model_dir / OOF_FILE, **arrays)
        meta = {**self.metadata, "labels": self.labels, "versions": self.metadata.get("versions") or library_versions()}
        (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True) + "\n",
                                               encoding="utf-8")

    @classmethod
    def load(cls, model_dir: str | Path, *, check_versions: bool = True) -> DiagnosaModel:
        model_dir = Path(model_dir)
        for name in (MODEL_FILE, METADATA_FILE):
            if not (model_dir / name).is_file():
                raise ModelLoadError(f"model directory {model_dir} has no {name}")
        meta = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
        if check_versions:
            built, here = meta.get("versions", {}), library_versions()
            differ = {k: (built.get(k), here[k]) for k in here if k != "python" and built.get(k) != here[k]}
            if differ:
                detail = ", ".join(f"{k} built {b} / here {h}" for k, (b, h) in sorted(differ.items()))
                raise ModelLoadError(f"model in {model_dir} was built with other library versions: {detail}")
        return cls(pipeline=joblib.load(model_dir / MODEL_FILE), labels=list(meta["labels"]), metadata=meta,
                   oof=read_oof(model_dir / OOF_FILE) if (model_dir / OOF_FILE).is_file() else None)


def read_oof(source: Any) -> dict[str, np.ndarray]:
    """An OOF_FILE (a path or an open binary file) as {"proba": n x k, "y": n} and, when training saved them,
    "w" (the rows' weights in the decision fit) and "groups" (the rows in the slice), checked."""
    try:
        with np.load(source, allow_pickle=False) as data:
            oof = {"proba": np.asarray(data["proba"], dtype=float), "y": np.asarray(data["y"])}
            oof |= {key: np.asarray(data[key]) for key in ("w", "groups") if key in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{OOF_FILE} is not readable: {err}") from None
    proba, y = oof["proba"], oof["y"]
    if proba.ndim != 2 or y.shape != (len(proba),) or not np.issubdtype(y.dtype, np.integer):
        raise ModelLoadError(f"{OOF_FILE} must hold an n x k 'proba' and n integer labels 'y', "
                             f"got {proba.shape} and {y.shape} {y.dtype}")
    for key in ("w", "groups"):
        if key in oof and oof[key].shape != y.shape:
            raise ModelLoadError(f"{OOF_FILE}: '{key}' must hold one entry per row ({len(y)}), got {oof[key].shape}")
    if "w" in oof and (not np.isfinite(oof["w"]).all() or (oof["w"] < 0).any()):
        raise ModelLoadError(f"{OOF_FILE}: 'w' must be finite, non-negative row weights")
    return oof
