"""Training-time baselines for monitoring.

**Data baseline** — ``statistics.json`` and ``constraints.json`` in SageMaker Model Monitor's
documented layout (version 0.0), so AWS's own data-quality monitor can use them as they are, and
Diagnosa's monitor reads them back. They describe the model's *raw input fields* (the schema's
``feature`` fields) on the *training split*: captured requests hold raw fields, so raw against raw
compares like with like, and the training split is the population the model learned from
(validation and test stay untouched; resampling only reweights it).

- numbers (``Fractional``/``Integral``): ``numerical_statistics`` with mean, sum, std_dev, min,
  max and ``distribution.kll``: 10 equal-width buckets (as SageMaker materialises them) and a
  KLL-shaped sketch (``parameters`` c, k; ``data`` = compactor levels, an item at level i weighs 2^i).
- categories and booleans (``String``): ``string_statistics`` with ``distinct_count`` and
  ``distribution.categorical.buckets``.
- term lists (symptoms as HPO ids, prior diagnoses as codes) (``String``): a row is present when
  its list is non-empty; the categorical buckets count the patients showing each term. A custom
  ``diagnosa`` block (allowed by the schema's "provision for custom stats") marks them as term sets.

**Prediction baseline** — from the evaluation on test: the distribution of predicted categories,
per-class recall/precision/support, the orphan slice and the gate thresholds
(``prediction_baseline.json``), plus SageMaker's model-quality ``constraints`` for a multiclass
model (``model_quality_constraints.json``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from diagnosa.data.schema import BUILTIN_SLICE, MISSING_VALUES, Field, Schema, unseen_slice
from diagnosa.model import model_version
from processing.split import effective_rows, patient_keys, worth_share

VERSION = 0.0
KLL_K = 2048
KLL_C = 0.64
KLL_BUCKETS = 10
MAX_DOMAIN = 50  # categories with up to this many values get a string_constraints.domains list
STATISTICS = "statistics.json"
CONSTRAINTS = "constraints.json"
PREDICTIONS = "prediction_baseline.json"
# The Evaluate step's report beside them: the recall gate's PropertyFile and the registered ModelMetrics read it.
EVALUATION = "evaluation.json"
MODEL_QUALITY_CONSTRAINTS = "model_quality_constraints.json"
NUMERIC_TYPES = ("number", "integer")
LIST_TYPES = ("hpo_terms", "codes")
MONITORING_CONFIG: dict[str, Any] = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 0.1,
    "domain_content_threshold": 0.1,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "ChiSquared",
    },
}


class BaselineError(ValueError):
    """A baseline file is missing or does not follow the layout; the message names the file and field."""


def monitored_fields(schema: Schema) -> list[Field]:
    """The fields a request may carry and the monitor compares: the schema's features, in order."""
    return [f for f in schema.fields if f.role == "feature"]


def inferred_type(f: Field) -> str:
    return {"number": "Fractional", "integer": "Integral"}.get(f.type, "String")


def _kll_sketch(values: np.ndarray, k: int = KLL_K) -> list[list[float]]:
    """Compactor levels of a KLL sketch of ``values`` (exact at level 0 while there are ≤ k values)."""
    ordered = np.sort(values)
    level = 0
    while ordered.size > k:
        ordered = ordered[1::2]  # keep every other item: each now stands for twice as many
        level += 1
    return [[] for _ in range(level)] + [[float(v) for v in ordered]]


def _buckets(values: np.ndarray) -> list[dict[str, float]]:
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high, KLL_BUCKETS + 1) if high > low else np.array([low, high])
    counts, _ = np.histogram(values, bins=edges)
    return [{"lower_bound": float(a), "upper_bound": float(b), "count": float(c)}
            for a, b, c in zip(edges[:-1], edges[1:], counts)]


def _as_terms(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    return []


def _numeric_stats(column: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    present = values[np.isfinite(values)]
    common = {"num_present": int(present.size), "num_missing": int(values.size - present.size)}
    if present.size == 0:
        return {"common": common}
    return {"common": common, "mean": float(present.mean()), "sum": float(present.sum()),
            "std_dev": float(present.std()), "min": float(present.min()), "max": float(present.max()),
            "distribution": {"kll": {"buckets": _buckets(present),
                                     "sketch": {"parameters": {"c": KLL_C, "k": float(KLL_K)},
                                                "data": _kll_sketch(present)}}}}


def _category_stats(column: pd.Series) -> dict[str, Any]:
    present = column.dropna().map(lambda v: str(v).lower() if isinstance(v, (bool, np.bool_)) else str(v))
    counts = present.value_counts()
    return {"common": {"num_present": int(present.size), "num_missing": int(column.size - present.size)},
            "distinct_count": float(counts.size),
            "distribution": {"categorical": {"buckets": [{"value": str(v), "count": float(c)}
                                                         for v, c in sorted(counts.items())]}}}


def _terms_stats(column: pd.Series) -> dict[str, Any]:
    lists = [set(_as_terms(v)) for v in column]
    present = sum(1 for terms in lists if terms)
    counts: dict[str, int] = {}
    for terms in lists:
        for term in terms:
            counts[term] = counts.get(term, 0) + 1
    return {"common": {"num_present": present, "num_missing": len(lists) - present},
            "distinct_count": float(len(counts)),
            "distribution": {"categorical": {"buckets": [{"value": t, "count": float(c)}
                                                         for t, c in sorted(counts.items())]}}}


def data_baseline(frame: pd.DataFrame, schema: Schema, *, unnamed_patients: Sequence[str] = ()
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(statistics, constraints)`` of the schema's feature fields in ``frame`` (SageMaker layout).
    ``unnamed_patients``: the columns ingestion found repeating a patient's number over rows (its note
    ``patient_columns``) in a dataset that names no patient column; recorded for the monitor to say."""
    fields = monitored_fields(schema)
    missing = [f.name for f in fields if f.name not in frame.columns]
    if missing:
        raise BaselineError(f"the frame lacks feature columns the schema declares: {', '.join(missing)}")
    if len(frame) == 0:
        raise BaselineError("cannot baseline an empty frame")
    statistics: dict[str, Any] = {"version": VERSION, "dataset": {"item_count": int(len(frame))}, "features": []}
    if schema.patient_column is not None:
        # Which request field names a row's patient (visits): the monitor counts patients, not rows, in its tests.
        patient = next(f for f in schema.fields if f.name == schema.patient_column)
        statistics["dataset"]["diagnosa"] = {"patient_column": patient.name, "missing_values": sorted(
            set(schema.missing_values) - set(patient.values or ()))}
        keys = patient_keys(frame, schema) if patient.name in frame.columns else None
        if keys is not None:  # what the rows are worth as a sample: the monitor's tests weigh them so
            statistics["dataset"]["diagnosa"]["effective_rows"] = round(effective_rows(keys), 3)
    elif unnamed_patients:
        # Rows that look like visits, read as independent: the monitor's tests then call drift too often on windows
        # of a few patients' visits (60 % of a real table's clean windows), and its report says why.
        statistics["dataset"]["diagnosa"] = {"unnamed_patient_columns": [str(c) for c in unnamed_patients]}
    constraints: dict[str, Any] = {"version": VERSION, "features": [], "monitoring_config": MONITORING_CONFIG}
    for f in fields:
        kind = inferred_type(f)
        entry: dict[str, Any] = {"name": f.name, "inferred_type": kind}
        rule: dict[str, Any] = {"name": f.name, "inferred_type": kind}
        if f.type in NUMERIC_TYPES:
            block = _numeric_stats(frame[f.name])
            entry["numerical_statistics"] = block
            if "min" in block:
                rule["num_constraints"] = {"is_non_negative": block["min"] >= 0}
        elif f.type in LIST_TYPES:
            block = _terms_stats(frame[f.name])
            entry["string_statistics"] = block
            entry["diagnosa"] = {"kind": "term_set"}
        else:
            block = _category_stats(frame[f.name])
            entry["string_statistics"] = block
            values = [b["value"] for b in block["distribution"]["categorical"]["buckets"]]
            domain = list(f.values) if f.values else values
            if f.type == "boolean":
                domain = ["false", "true"]
            if 0 < len(domain) <= MAX_DOMAIN:
                rule["string_constraints"] = {"domains": sorted(domain)}
        # How the endpoint reads the field (its type; the CSV cell texts that mean missing, as ingestion read the
        # training CSV): the monitor reads the captured requests the same way (SageMaker ignores this block).
        entry["diagnosa"] = {**entry.get("diagnosa", {}), "field_type": f.type,
                             "missing_values": sorted(set(schema.missing_values) - set(f.values or ()))}
        common = block["common"]
        total = common["num_present"] + common["num_missing"]
        # Term lists: an empty list is a normal answer ("no prior diagnoses"), not a missing value.
        rule["completeness"] = 1.0 if f.type in LIST_TYPES else round(common["num_present"] / total, 6)
        statistics["features"].append(entry)
        constraints["features"].append(rule)
    return statistics, constraints


# ------------------------------------------------------------------------------------------------ reading back

@dataclass
class FeatureBaseline:
    name: str
    kind: str  # "numeric", "category" or "terms"
    inferred_type: str
    item_count: int
    num_present: int
    num_missing: int
    completeness: float | None = None  # the constraint
    is_non_negative: bool | None = None
    domain: list[str] | None = None
    values: np.ndarray = field(default_factory=lambda: np.array([], dtype=float))  # sketch items
    weights: np.ndarray = field(default_factory=lambda: np.array([], dtype=float))
    counts: dict[str, float] = field(default_factory=dict)  # category or term → count
    mean: float | None = None
    std_dev: float | None = None
    field_type: str | None = None  # the schema's type (None: a baseline written before it was recorded)
    missing_values: tuple[str, ...] = MISSING_VALUES  # CSV cell texts read as missing

    @property
    def missing_rate(self) -> float:
        total = self.num_present + self.num_missing
        return self.num_missing / total if total else 0.0


@dataclass
class DataBaseline:
    item_count: int
    features: dict[str, FeatureBaseline]
    monitoring_config: dict[str, Any]
    patient_column: str | None = None  # the request field naming a row's patient, for a dataset of visits
    patient_missing_values: tuple[str, ...] = MISSING_VALUES  # its CSV cell texts read as missing
    effective_rows: float | None = None  # what its rows are worth as independent draws (processing.split.effective_rows)
    # Columns ingestion saw repeat a patient's number over rows, in a dataset naming no patient column (visits read
    # as independent rows): the monitor's report says its drift tests overcount them.
    unnamed_patient_columns: tuple[str, ...] = ()

    @property
    def sample_scale(self) -> float:
        """The baseline's counts times this are its effective counts (1: rows independent, or not known)."""
        return worth_share(self.effective_rows, self.item_count)


def _get(obj: Any, path: str, where: str, kind: type | tuple[type, ...]) -> Any:
    value = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BaselineError(f"{where}: missing '{path}'")
        value = value[part]
    if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, float, (int, float)):
        raise BaselineError(f"{where}: '{path}' has the wrong type ({type(value).__name__})")
    return value


def parse_data_baseline(statistics: Any, constraints: Any) -> DataBaseline:
    """Read ``statistics.json`` + ``constraints.json`` back; BaselineError names what is wrong."""
    if not isinstance(statistics, dict) or not isinstance(constraints, dict):
        raise BaselineError("statistics and constraints must be JSON objects")
    item_count = int(_get(statistics, "dataset.item_count", STATISTICS, (int, float)))
    rules = {}
    for i, rule in enumerate(_get(constraints, "features", CONSTRAINTS, list)):
        rules[_get(rule, "name", f"{CONSTRAINTS} features[{i}]", str)] = rule
    features: dict[str, FeatureBaseline] = {}
    for i, entry in enumerate(_get(statistics, "features", STATISTICS, list)):
        where = f"{STATISTICS} features[{i}]"
        name = _get(entry, "name", where, str)
        where = f"{STATISTICS} feature '{name}'"
        kind_name = _get(entry, "inferred_type", where, str)
        rule = rules.get(name, {})
        if "numerical_statistics" in entry:
            block = entry["numerical_statistics"]
            sketch_levels = (block.get("distribution", {}).get("kll", {}).get("sketch", {}).get("data") or [])
            values: list[float] = []
            weights: list[float] = []
            for level, items in enumerate(sketch_levels):
                if not isinstance(items, list):
                    raise BaselineError(f"{where}: sketch level {level} is not a list")
                values.extend(float(v) for v in items)
                weights.extend([float(2 ** level)] * len(items))
            fb = FeatureBaseline(name, "numeric", kind_name, item_count,
                                 int(_get(block, "common.num_present", where, (int, float))),
                                 int(_get(block, "common.num_missing", where, (int, float))),
                                 values=np.array(values, dtype=float), weights=np.array(weights, dtype=float),
                                 mean=block.get("mean"), std_dev=block.get("std_dev"))
            fb.is_non_negative = rule.get("num_constraints", {}).get("is_non_negative")
        elif "string_statistics" in entry:
            block = entry["string_statistics"]
            buckets = block.get("distribution", {}).get("categorical", {}).get("buckets", [])
            counts = {}
            for bucket in buckets:
                counts[str(_get(bucket, "value", where, (str, int, float)))] = float(
                    _get(bucket, "count", where, (int, float)))
            kind = "terms" if entry.get("diagnosa", {}).get("kind") == "term_set" else "category"
            fb = FeatureBaseline(name, kind, kind_name, item_count,
                                 int(_get(block, "common.num_present", where, (int, float))),
                                 int(_get(block, "common.num_missing", where, (int, float))), counts=counts)
            fb.domain = rule.get("string_constraints", {}).get("domains")
        else:
            raise BaselineError(f"{where}: neither numerical_statistics nor string_statistics")
        completeness = rule.get("completeness")
        fb.completeness = float(completeness) if isinstance(completeness, (int, float)) else None
        reading = entry.get("diagnosa") or {}
        if isinstance(reading.get("field_type"), str):
            fb.field_type = reading["field_type"]
        markers = reading.get("missing_values")
        if isinstance(markers, list) and all(isinstance(m, str) for m in markers):
            fb.missing_values = tuple(markers)
        features[name] = fb
    if not features:
        raise BaselineError(f"{STATISTICS} describes no features")
    reading = statistics["dataset"].get("diagnosa")
    reading = reading if isinstance(reading, dict) else {}  # a baseline of rows, or one written before visits
    patient = reading.get("patient_column")
    if patient is not None and (not isinstance(patient, str) or not patient or patient in features):
        raise BaselineError(f"{STATISTICS}: 'dataset.diagnosa.patient_column' must name a field that is not a feature, "
                            f"got {patient!r}")
    markers, effective = reading.get("missing_values"), reading.get("effective_rows")
    if effective is not None and (isinstance(effective, bool) or not isinstance(effective, (int, float))
                                  or not 0 < effective <= item_count):
        raise BaselineError(f"{STATISTICS}: 'dataset.diagnosa.effective_rows' must be a number in (0, item_count], "
                            f"got {effective!r}")
    unnamed = reading.get("unnamed_patient_columns")
    unnamed = unnamed if patient is None and isinstance(unnamed, list) else []  # a note: one not written so is left out
    return DataBaseline(item_count, features, constraints.get("monitoring_config", MONITORING_CONFIG), patient,
                        tuple(markers) if isinstance(markers, list) and all(isinstance(m, str) for m in markers)
                        else MISSING_VALUES, None if effective is None else float(effective),
                        tuple(c for c in unnamed if isinstance(c, str) and c))


# ------------------------------------------------------------------------------------------------ predictions

def prediction_baseline(evaluation: Mapping[str, Any], thresholds: Mapping[str, float] | None = None,
                        orphan_threshold: float | None = None, unseen_threshold: float | None = None,
                        trained_groups: Iterable[str] | None = None) -> dict[str, Any]:
    """What the model predicted on test and how well, from an ``evaluation.json`` result. ``trained_groups`` (the
    split's groups.json: the orphan diseases with training patients) lets live monitoring tell the feedback on
    diseases the model never saw, the unseen slice the gate holds to ``unseen_threshold``."""
    d = evaluation["diagnosa"]
    labels = list(d["labels"])
    counts = np.asarray(d["confusion_matrix"]["counts"], dtype=int)
    predicted = counts.sum(axis=0)
    n = int(counts.sum())
    orphan = d.get("slices", {}).get(BUILTIN_SLICE)
    unseen = d.get("slices", {}).get(unseen_slice(BUILTIN_SLICE))
    model = evaluation.get("model")
    model = model if isinstance(model, Mapping) else {}
    known = model.get("model_version") or model.get("fingerprint")
    return {
        "version": 1,
        # Which model's answers these describe, where the file goes (the AWS monitor's baseline folder holds no
        # evaluation.json): the monitor judges only the traffic this version answered.
        "model_version": model_version(model) if known else None,
        "labels": labels,
        "n": n,
        "predicted_distribution": {label: int(c) for label, c in zip(labels, predicted)},
        # test rows of a dataset of visits: what they are worth as independent draws (the monitor's test weighs so)
        **({"effective_n": d["effective_rows"]} if "effective_rows" in d else {}),
        "predicted_share": {label: (float(c) / n if n else None) for label, c in zip(labels, predicted)},
        "per_class": {label: {k: d["per_class"][label].get(k) for k in ("recall", "precision", "support")}
                      for label in labels},
        "orphan": None if not orphan else {
            "n": orphan["n"], "macro_recall": orphan["macro_recall"], "recall_per_class": orphan["recall_per_class"],
            **({"trained_groups": sorted(trained_groups)} if trained_groups is not None else {})},
        "orphan_unseen": None if not unseen else {"n": unseen["n"], "macro_recall": unseen["macro_recall"],
                                                  "recall_per_class": unseen["recall_per_class"]},
        "thresholds": {"recall": dict(thresholds or {}), "orphan_macro_recall": orphan_threshold,
                       "unseen_macro_recall": unseen_threshold},
    }


def model_quality_constraints(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """SageMaker Model Monitor's model-quality constraints for a multiclass model, from test metrics."""
    d = evaluation["diagnosa"]

    def floor(value: float | None) -> dict[str, Any]:
        return {"threshold": float(value) if value is not None and math.isfinite(value) else 0.0,
                "comparison_operator": "LessThanThreshold"}

    return {"version": VERSION, "multiclass_classification_constraints": {
        "accuracy": floor(d["accuracy"]), "weighted_recall": floor(d["weighted"]["recall"]),
        "weighted_precision": floor(d["weighted"]["precision"]), "weighted_f1": floor(d["weighted"]["f1"])}}


# ------------------------------------------------------------------------------------------------ files

def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_data_baseline(frame: pd.DataFrame, schema: Schema, out_dir: Path, *, unnamed_patients: Sequence[str] = ()
                        ) -> list[Path]:
    statistics, constraints = data_baseline(frame, schema, unnamed_patients=unnamed_patients)
    return [write_json(out_dir / STATISTICS, statistics), write_json(out_dir / CONSTRAINTS, constraints)]


def _read(path: Path) -> Any:
    if not path.is_file():
        raise BaselineError(f"baseline file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BaselineError(f"baseline file {path} is not valid JSON: {err}") from None


@dataclass
class Baseline:
    """Everything the monitor compares against: the data baseline and (optionally) the prediction baseline."""

    data: DataBaseline
    predictions: dict[str, Any] | None
    sources: list[str]


def load_baseline(folders: Iterable[Path]) -> Baseline:
    """Find statistics.json + constraints.json (required) and prediction_baseline.json (optional)
    in the given folders (e.g. the preprocess ``baseline`` output and the evaluate ``evaluation``
    output, or one folder holding all three)."""
    folders = [Path(f) for f in folders]
    found: dict[str, Path] = {}
    for folder in folders:
        if folder.exists() and not folder.is_dir():
            raise BaselineError(f"baseline {folder} is a file: give the folder holding {STATISTICS} and "
                                f"{CONSTRAINTS} (a run's baseline and evaluation folders)")
        if not folder.is_dir():
            raise BaselineError(f"baseline folder {folder} does not exist")
        for name in (STATISTICS, CONSTRAINTS, PREDICTIONS):
            if name not in found and (folder / name).is_file():
                found[name] = folder / name
    for name in (STATISTICS, CONSTRAINTS):
        if name not in found:
            raise BaselineError(f"no {name} in {', '.join(map(str, folders))}")
    data = parse_data_baseline(_read(found[STATISTICS]), _read(found[CONSTRAINTS]))
    predictions = _read(found[PREDICTIONS]) if PREDICTIONS in found else None
    if predictions is not None and not (isinstance(predictions, dict) and isinstance(predictions.get("labels"), list)
                                        and isinstance(predictions.get("predicted_distribution"), dict)):
        raise BaselineError(f"{found[PREDICTIONS]} lacks 'labels' or 'predicted_distribution'")
    return Baseline(data, predictions, [str(p) for p in found.values()])
