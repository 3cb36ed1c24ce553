"""Which model a set of baselines describes, which model an endpoint serves, and whether they are the same.

The monitor judges a window of traffic against one model's baselines, so it must know that model: its dataset (a
baseline of another dataset describes other features and labels), its labels and whether it was evaluated on an
orphan slice (the live-quality table), and its version, which every captured answer carries
(``predictions[i].model_version``): only the traffic that version answered is judged against its baselines.

What is known, from where:
- a served model: its ``metadata.json`` (dataset, labels, ``slice_column``, schema, fingerprint);
- baselines: ``evaluation.json`` beside ``prediction_baseline.json`` (the evaluated model's dataset and
  fingerprint), the preprocessing record of the run the statistics were written by
  (``<run>/transformer/preprocess.json`` beside ``<run>/baseline/``: dataset, labels, schema, fingerprint), and the
  statistics' own features (the built-in cohort's are known). A baseline folder outside a pipeline run (AWS's
  ``artifacts/monitoring/<endpoint>/baseline/``) tells only its features and, with a prediction baseline, its labels.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from diagnosa.data.schema import BUILTIN_DATASET, Schema, cohort_schema
from diagnosa.model import METADATA_FILE, model_version
from processing.baseline import CONSTRAINTS, EVALUATION, PREDICTIONS, STATISTICS, Baseline, monitored_fields

log = logging.getLogger(__name__)


class BaselineMismatch(ValueError):
    """Baselines that are not of the model the endpoint serves; the message names both."""


@dataclass(frozen=True)
class ModelFacts:
    """What is known of a model (None: not known)."""

    dataset: str | None = None
    version: str | None = None
    labels: tuple[str, ...] | None = None
    orphan_slice: bool | None = None
    features: tuple[str, ...] | None = None
    where: str = ""

    def describe(self) -> str:
        parts = [f"dataset {self.dataset}" if self.dataset else "dataset not recorded"]
        if self.version:
            parts.append(f"model version {self.version}")
        if self.features is not None:
            shown = ", ".join(self.features[:6]) + (f" and {len(self.features) - 6} more" if len(self.features) > 6
                                                     else "")
            parts.append(f"features {shown}")
        if self.labels is not None:
            parts.append(f"labels {', '.join(self.labels)}")
        return "; ".join(parts)

    def merged(self, other: ModelFacts) -> ModelFacts:
        """These facts, completed with ``other``'s where these are not known."""
        return replace(self, **{name: getattr(other, name) for name in ("dataset", "version", "labels",
                                                                        "orphan_slice", "features")
                                if getattr(self, name) is None})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _schema_facts(schema: Any) -> dict[str, Any]:
    if schema is None:  # a record written before the schema was kept in it
        return {}
    try:
        parsed = Schema.from_dict(schema)
    except (KeyError, TypeError, ValueError, AttributeError) as err:  # a record of an older layout: features unknown
        log.warning("the model's schema could not be read (%s: %s): the monitor does not know its features, labels "
                    "or slice", type(err).__name__, err)
        return {}
    return {"features": tuple(f.name for f in monitored_fields(parsed)), "orphan_slice": bool(parsed.slice_column),
            "labels": tuple(parsed.labels) if parsed.labels else None}


def served_model(model_dir: str | Path) -> ModelFacts:
    """What a model directory's ``metadata.json`` says of the model (an endpoint's ``ModelDir``)."""
    path = Path(model_dir) / METADATA_FILE
    metadata = _read_json(path)
    if not isinstance(metadata, dict):
        return ModelFacts(where=str(path))
    facts = _schema_facts(metadata.get("schema"))
    dataset = (metadata.get("dataset") or {}).get("name") if isinstance(metadata.get("dataset"), dict) else None
    labels = metadata.get("labels")
    return ModelFacts(dataset=dataset or (metadata.get("schema") or {}).get("name"), version=model_version(metadata),
                      labels=tuple(labels) if isinstance(labels, list) else facts.get("labels"),
                      orphan_slice=bool(metadata.get("slice_column")) if "slice_column" in metadata
                      else facts.get("orphan_slice"),
                      features=facts.get("features"), where=str(path))


def baseline_model(baseline: Baseline) -> ModelFacts:
    """What the baseline files (and the pipeline run they were written in) say of the model they describe."""
    files = {Path(source).name: Path(source) for source in baseline.sources}
    features = tuple(baseline.data.features) if baseline.data is not None else None
    facts = ModelFacts(features=features, where=", ".join(dict.fromkeys(str(p.parent) for p in files.values())))
    predictions = baseline.predictions or {}
    if isinstance(predictions.get("labels"), list):
        facts = replace(facts, labels=tuple(predictions["labels"]),
                        orphan_slice=predictions.get("orphan") is not None)
    if isinstance(predictions.get("model_version"), str):
        facts = replace(facts, version=predictions["model_version"])
    if PREDICTIONS in files:  # the evaluate step writes evaluation.json beside it: the evaluated model
        evaluation = _read_json(files[PREDICTIONS].parent / EVALUATION)
        model = evaluation.get("model") if isinstance(evaluation, dict) else None
        if isinstance(model, dict):
            dataset: dict[str, Any] = model["dataset"] if isinstance(model.get("dataset"), dict) else {}
            facts = facts.merged(ModelFacts(dataset=dataset.get("name"),
                                            version=model_version(model) if model.get("fingerprint") else None))
    for name in (STATISTICS, CONSTRAINTS):  # the preprocess step's run: <run>/baseline/ beside <run>/transformer/
        if name in files:
            record = _read_json(files[name].parent.parent / "transformer" / "preprocess.json")
            if isinstance(record, dict):
                known = _schema_facts(record.get("schema"))
                made: dict[str, Any] = record["dataset"] if isinstance(record.get("dataset"), dict) else {}
                # No version: the statistics describe the preprocessed data, which every model of the run shares.
                facts = facts.merged(ModelFacts(
                    dataset=made.get("name"), labels=tuple(record["labels"]) if isinstance(record.get("labels"),
                                                                                               list) else None,
                    orphan_slice=known.get("orphan_slice")))
            break
    if facts.dataset is None and features is not None:
        cohort = cohort_schema()
        if set(features) == {f.name for f in monitored_fields(cohort)}:  # the built-in cohort's fields
            facts = facts.merged(ModelFacts(dataset=BUILTIN_DATASET, labels=tuple(cohort.labels), orphan_slice=True))
    return facts


def check_same_model(baseline: ModelFacts, served: ModelFacts, endpoint: str) -> None:
    """Refuse baselines of another dataset than the one the endpoint's model was trained on (another version of the
    same dataset is fine: its own traffic is judged). With a dataset not recorded, the features and labels decide."""
    if baseline.dataset and served.dataset:
        same = baseline.dataset == served.dataset
    else:
        same = all(getattr(baseline, name) is None or getattr(served, name) is None
                   or set(getattr(baseline, name)) == set(getattr(served, name)) for name in ("features", "labels"))
    if not same:
        raise BaselineMismatch(
            f"the baseline ({baseline.where}: {baseline.describe()}) is not of the model endpoint {endpoint} serves "
            f"({served.describe()}): give the baseline folders of the run that trained it (`diagnosa registry list` "
            "names it), or leave out --baseline for those registered with the version it serves")
