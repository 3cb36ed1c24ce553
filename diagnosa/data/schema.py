"""Explicit dataset schemas: what a field is, what it may hold, and what it is for.

A schema is plain data (``to_dict``/``from_dict``) so that the curated dataset's manifest carries it
to preprocessing, training and serving: downstream code never guesses which column is the id, the
label or a slice marker. The built-in cohort and a user's own CSV (described by a TOML config) are
two instances of the same model.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diagnosa.data.physiology import AGE_RANGE, LABS, SEXES, VARIABLES, VITALS
from diagnosa.labels import CATEGORIES

TYPES = ("number", "integer", "string", "category", "date", "boolean", "hpo_terms", "codes", "text")
ROLES = ("id", "feature", "target", "metadata")  # metadata: kept for slices and audit, never a feature


class SchemaError(ValueError):
    """A schema or dataset config that cannot be used; the message names the offending entry."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    role: str = "feature"
    required: bool = False
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] | None = None  # allowed values of a category
    unit: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise SchemaError(f"field '{self.name}': unknown type '{self.type}' (expected one of {', '.join(TYPES)})")
        if self.role not in ROLES:
            raise SchemaError(f"field '{self.name}': unknown role '{self.role}' (expected one of {', '.join(ROLES)})")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise SchemaError(f"field '{self.name}': min {self.min} is above max {self.max}")
        if self.type == "category" and self.values is not None and not self.values:
            raise SchemaError(f"field '{self.name}': a category needs at least one value")


@dataclass(frozen=True)
class Schema:
    name: str
    fields: tuple[Field, ...]
    labels: tuple[str, ...]  # in order: the order ordinal metrics and reports use
    exclude: tuple[str, ...] = ()  # source columns dropped on ingestion (names, contact details)
    slice_column: str | None = None  # boolean marker of the orphan slice, if the dataset has one

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SchemaError(f"schema '{self.name}': fields declared twice: {', '.join(duplicated)}")
        for role in ("id", "target"):
            found = [f.name for f in self.fields if f.role == role]
            if len(found) != 1:
                raise SchemaError(f"schema '{self.name}': needs exactly one {role} field, found {found or 'none'}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise SchemaError(f"schema '{self.name}': labels must be at least two distinct values, got {list(self.labels)}")
        clash = sorted(set(self.exclude) & set(names))
        if clash:
            raise SchemaError(f"schema '{self.name}': columns both declared and excluded: {', '.join(clash)}")

    @property
    def id_column(self) -> str:
        return next(f.name for f in self.fields if f.role == "id")

    @property
    def target(self) -> str:
        return next(f.name for f in self.fields if f.role == "target")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def features(self, *types: str) -> list[str]:
        return [f.name for f in self.fields if f.role == "feature" and (not types or f.type in types)]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        # Drop unset options only; a limit of 0 is a limit (0 == False, so no `in (None, False)` test).
        out["fields"] = [{k: v for k, v in asdict(f).items() if v is not None and v is not False and v != ""}
                         | {"name": f.name} for f in self.fields]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        fields = tuple(
            Field(**{**f, "values": tuple(f["values"]) if f.get("values") is not None else None}) for f in data["fields"]
        )
        return cls(name=data["name"], fields=fields, labels=tuple(data["labels"]), exclude=tuple(data.get("exclude", ())),
                   slice_column=data.get("slice_column"))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _physiology_fields(names: tuple[str, ...]) -> list[Field]:
    by_name = {v.name: v for v in VARIABLES}
    return [Field(n, "number", min=by_name[n].low, max=by_name[n].high, unit=by_name[n].unit) for n in names]


CLINICAL_RECORD_FIELDS: tuple[Field, ...] = (
    Field("patient_id", "string", role="id", required=True),
    Field("encounter_date", "date", role="metadata", required=True),
    Field("age", "integer", required=True, min=AGE_RANGE[0], max=AGE_RANGE[1], unit="years"),
    Field("sex", "category", required=True, values=SEXES),
    *_physiology_fields(VITALS),
    Field("symptoms", "hpo_terms"),
    Field("prior_diagnoses", "codes"),
    Field("note", "text", role="metadata"),
    Field("label", "category", role="target", required=True, values=CATEGORIES),
    Field("disease_id", "string", role="metadata"),
    Field("disease_name", "string", role="metadata"),
    Field("is_orphan", "boolean", role="metadata", required=True),
)
LAB_RESULT_FIELDS: tuple[Field, ...] = (
    Field("patient_id", "string", role="id", required=True),
    Field("collected_at", "date", role="metadata"),
    *_physiology_fields(LABS),
)


def cohort_schema() -> Schema:
    """The curated cohort: a clinical record joined with its lab panel (labs may be absent)."""
    labs = tuple(f for f in LAB_RESULT_FIELDS if f.name != "patient_id")
    return Schema("patients", CLINICAL_RECORD_FIELDS + labs, CATEGORIES, slice_column="is_orphan")


# ------------------------------------------------------------------------------------------------
# Bring-your-own CSV: a small TOML config names the id, the target, the label order and exclusions.

CONFIG_KEYS = {"name", "id_column", "target", "labels", "exclude", "columns", "slice_column"}
COLUMN_KEYS = {"type", "role", "required", "min", "max", "values", "unit"}


def load_dataset_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError(f"dataset config not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise SchemaError(f"dataset config {path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise SchemaError(f"dataset config {path}: unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(CONFIG_KEYS))})")
    for key in ("name", "id_column", "target", "labels"):
        if key not in data:
            raise SchemaError(f"dataset config {path}: missing required key '{key}'")
    if not isinstance(data["labels"], list) or not all(isinstance(x, str) for x in data["labels"]):
        raise SchemaError(f"dataset config {path}: 'labels' must be a list of strings in their order")
    name = str(data["name"])
    if not name.replace("-", "").replace("_", "").isalnum():
        raise SchemaError(f"dataset config {path}: name '{name}' may hold only letters, digits, '-' and '_'")
    for column, spec in data.get("columns", {}).items():
        if not isinstance(spec, dict):
            raise SchemaError(f"dataset config {path}: [columns.{column}] must be a table")
        bad = sorted(set(spec) - COLUMN_KEYS)
        if bad:
            raise SchemaError(f"dataset config {path}: [columns.{column}] has unknown keys {', '.join(bad)}")
    return data


def schema_from_config(config: dict[str, Any], header: list[str], sample: dict[str, list[str]]) -> Schema:
    """Schema for a user's CSV: declared columns as declared, the others inferred from the sample.

    A column is inferred as a number when every non-empty sampled value parses as one, else as a
    category whose values are not restricted.
    """
    id_column, target = config["id_column"], config["target"]
    exclude = tuple(config.get("exclude", ()))
    declared: dict[str, dict[str, Any]] = config.get("columns", {})
    for column in (id_column, target, *exclude, *declared):
        if column not in header:
            raise SchemaError(f"column '{column}' named in the config is not in the CSV header ({', '.join(header)})")
    fields = []
    for column in header:
        if column in exclude:
            continue
        spec = dict(declared.get(column, {}))
        if column == id_column:
            spec = {"type": "string", "role": "id", "required": True} | spec
        elif column == target:
            spec = {"type": "category", "role": "target", "required": True, "values": config["labels"]} | spec
        elif "type" not in spec:
            spec["type"] = "number" if _all_numeric(sample.get(column, [])) else "category"
        if "values" in spec and spec["values"] is not None:
            spec["values"] = tuple(str(v) for v in spec["values"])
        fields.append(Field(name=column, **spec))
    return Schema(config["name"], tuple(fields), tuple(config["labels"]), exclude=exclude,
                  slice_column=config.get("slice_column"))


def _all_numeric(values: list[str]) -> bool:
    seen = False
    for value in values:
        if value == "":
            continue
        try:
            float(value)
        except ValueError:
            return False
        seen = True
    return seen
