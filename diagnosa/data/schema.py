"""Explicit dataset schemas: what a field is, what it may hold, and what it is for.

A schema is plain data (``to_dict``/``from_dict``) so that the curated dataset's manifest carries it
to preprocessing, training and serving: downstream code never guesses which column is the id, the
label or a slice marker. The built-in cohort and a user's own CSV (described by a TOML config) are
two instances of the same model.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from diagnosa.data.csv_cells import hides_characters
from diagnosa.data.physiology import AGE_RANGE, LABS, SEXES, VARIABLES, VITALS
from diagnosa.files import FileProblem, read_file_bounded
from diagnosa.labels import CATEGORIES
from diagnosa.text import some_of

MIN_CLASS_ROWS = 3  # a stratified 70/20/10 split needs one row of each class in each split
TYPES = ("number", "integer", "string", "category", "date", "boolean", "hpo_terms", "codes", "text")
LIST_TYPES = ("hpo_terms", "codes")  # the types whose values are lists (of terms, of codes)
ROLES = ("id", "feature", "target", "metadata")  # metadata: kept for slices and audit, never a feature


class SchemaError(ValueError):
    """A schema or dataset config that cannot be used; the message names the offending entry."""


def repeated(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, sorted (linear: a header may have 20,000 columns)."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


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
    slice_column: str | None = None  # boolean marker of the dataset's slice (the cohort's: is_orphan), if any
    slice_name: str | None = None  # the slice's name; None: the column's name without an ``is_`` prefix
    ordinal: bool = True  # the labels' order is a severity order (ordinal errors mean something)
    # Within the slice, the column whose values are held out together (the cohort's: disease_id): a share
    # of them never reaches training, so the evaluation measures groups the model has never seen.
    group_column: str | None = None
    # The column naming each row's patient when a patient has several rows (visits, admissions, samples): the split
    # keeps a patient's rows together, so no model is tested on a patient it was trained on. Never a feature.
    patient_column: str | None = None
    # Cell texts that meant a missing value in the dataset's CSV (its config's missing_values): a scoring CSV is
    # read the same way. Empty for the cohort (its records are JSON; it was never a CSV).
    missing_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        duplicated = repeated(names)
        if duplicated:
            raise SchemaError(f"schema '{self.name}': fields declared twice: {some_of(duplicated)}")
        for role in ("id", "target"):
            found = [f.name for f in self.fields if f.role == role]
            if len(found) != 1:
                raise SchemaError(f"schema '{self.name}': needs exactly one {role} field, found {found or 'none'}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise SchemaError(f"schema '{self.name}': labels must be at least two distinct values, got {list(self.labels)}")
        clash = sorted(set(self.exclude) & set(names))
        if clash:
            raise SchemaError(f"schema '{self.name}': columns both declared and excluded: {some_of(clash)}")
        if self.slice_column is not None:
            marker = next((f for f in self.fields if f.name == self.slice_column), None)
            if marker is None or marker.type != "boolean":
                raise SchemaError(f"schema '{self.name}': slice column '{self.slice_column}' must be a boolean field")
            if not SLICE_NAME.fullmatch(self.slice or ""):
                raise SchemaError(f"schema '{self.name}': slice name {self.slice!r} must start with a letter and "
                                  "hold only ASCII letters, digits and '_' (at most 63)")
        if self.group_column is not None:
            if self.slice_column is None:
                raise SchemaError(f"schema '{self.name}': a group column ('{self.group_column}') needs a slice column")
            group = next((f for f in self.fields if f.name == self.group_column), None)
            if group is None or group.role == "feature" or group.type not in ("string", "category", "integer"):
                raise SchemaError(f"schema '{self.name}': group column '{self.group_column}' must be a declared "
                                  "string, category or integer field that is not a feature")
        if self.patient_column is not None:
            patient = next((f for f in self.fields if f.name == self.patient_column), None)
            if patient is None or patient.role != "metadata" or patient.type not in ("string", "category", "integer"):
                raise SchemaError(f"schema '{self.name}': patient column '{self.patient_column}' must be a declared "
                                  "string, category or integer metadata field")

    @property
    def id_column(self) -> str:
        return next(f.name for f in self.fields if f.role == "id")

    @property
    def target(self) -> str:
        return next(f.name for f in self.fields if f.role == "target")

    @property
    def slice(self) -> str | None:
        """The slice's name (the built-in cohort's is ``orphan``), None when the dataset has no slice."""
        if self.slice_column is None:
            return None
        return self.slice_name or self.slice_column.removeprefix("is_")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def features(self, *types: str) -> list[str]:
        return [f.name for f in self.fields if f.role == "feature" and (not types or f.type in types)]

    def to_dict(self) -> dict[str, Any]:
        # Shallow, not dataclasses.asdict: every value is immutable, and asdict's deep copies of 20,000 fields take
        # seconds.
        out: dict[str, Any] = {item.name: getattr(self, item.name) for item in dataclass_fields(self)}
        # Drop unset options only; a limit of 0 is a limit (0 == False, so no `in (None, False)` test).
        out["fields"] = [{k: v for item in dataclass_fields(f) if (v := getattr(f, k := item.name)) is not None
                          and v is not False and v != ""} | {"name": f.name} for f in self.fields]
        # Options at their defaults stay out, so schemas written before they existed keep their fingerprint.
        if self.slice_name is None:
            del out["slice_name"]
        if self.ordinal:
            del out["ordinal"]
        if self.group_column is None:
            del out["group_column"]
        if self.patient_column is None:
            del out["patient_column"]
        if not self.missing_values:
            del out["missing_values"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schema:
        fields = tuple(
            Field(**{**f, "values": tuple(f["values"]) if f.get("values") is not None else None}) for f in data["fields"]
        )
        return cls(name=data["name"], fields=fields, labels=tuple(data["labels"]), exclude=tuple(data.get("exclude", ())),
                   slice_column=data.get("slice_column"), slice_name=data.get("slice_name"),
                   ordinal=data.get("ordinal", True), group_column=data.get("group_column"),
                   patient_column=data.get("patient_column"),
                   missing_values=tuple(data.get("missing_values", ())))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


# Names are matched whole: "$" also matches before a final "\n" (re.match(r"^a$", "a\n") matches), so the patterns
# end in \Z, and callers use fullmatch.
SLICE_NAME = re.compile(r"\A[A-Za-z][A-Za-z0-9_]{0,62}\Z")
BUILTIN_SLICE = "orphan"  # the cohort's slice: rare diseases (ORPHA:/OMIM: ids), and live feedback naming one


def seen_slice(slice_name: str) -> str:
    """'orphan' → 'orphan_seen': the slice's rows whose group (disease) has training patients."""
    return f"{slice_name}_seen"


def unseen_slice(slice_name: str) -> str:
    """'orphan' → 'orphan_unseen': the sub-slice of groups (diseases) held out of training."""
    return f"{slice_name}_unseen"


def too_small_classes(counts: Mapping[Any, int], labels: tuple[str, ...] | list[str],
                      found: Mapping[Hashable, int] | None = None, unit: str = "row") -> str | None:
    """Why the classes cannot be split 70/20/10 (every too-small class named at once), or None.

    ``counts``: accepted rows per label (``unit="patient"``: patients with a row of the label, the split's unit
    when the dataset names a patient column); ``found`` (optional): rows per label before bad rows were rejected,
    so a class whose rows all failed validation is not reported as absent from the data.
    """
    small = [(label, int(counts.get(label, 0))) for label in labels if counts.get(label, 0) < MIN_CLASS_ROWS]
    if not small:
        return None

    def rows(label: str, n: int) -> str:
        before = int(found.get(label, 0)) if found is not None else n
        if before > n:
            return f"{n} accepted {unit}{'s' * (n != 1)} ({before:,} in the data, {before - n:,} rejected)"
        return "no rows (not in the data)" if n == 0 else f"{n} {unit}{'s' * (n != 1)}"

    named = some_of(f"class '{label}' has {rows(label, n)}" for label, n in small)
    rejected = found is not None and any(int(found.get(label, 0)) > n for label, n in small)
    why = "one per split" if unit == "row" else f"one per split, each {unit}'s rows staying in one split"
    return (f"{len(small)} class{'es' * (len(small) != 1)} too small for the 70/20/10 split (each class needs at "
            f"least {MIN_CLASS_ROWS} {unit}s, {why}): {named}. "
            + ("Fix what rejected those rows, or merge" if rejected else "Merge")
            + " such a class into a neighbouring label (recode it in the CSV), drop it by leaving it out of `labels` "
            f"in the dataset config (its rows are then quarantined as unknown labels), or collect more {unit}s")



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


BUILTIN_DATASET = "patients"  # the built-in cohort's dataset: curated/patients/, its model package group is diagnosa
BUILTIN_RESOURCE = "diagnosa"  # the built-in cohort's model package group and endpoint


ANSWER_ID = "patient_id"  # the key of a row's id in the endpoint's answers, whatever the dataset's id column

# A SageMaker model package group, endpoint or variant name (botocore's model gives the pattern, its validator does
# not enforce it): also what keeps a name from being a path where the local executor files it.
RESOURCE_NAME = re.compile(r"\A[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}\Z")


def resource_name(dataset: str) -> str:
    """The model package group and endpoint of a dataset: its name ('_' → '-', which SageMaker names cannot hold);
    the built-in cohort's: diagnosa."""
    return BUILTIN_RESOURCE if dataset == BUILTIN_DATASET else dataset.replace("_", "-")


def cohort_schema() -> Schema:
    """The curated cohort: a clinical record joined with its lab panel (labs may be absent)."""
    labs = tuple(f for f in LAB_RESULT_FIELDS if f.name != "patient_id")
    return Schema(BUILTIN_DATASET, CLINICAL_RECORD_FIELDS + labs, CATEGORIES, slice_column="is_orphan",
                  group_column="disease_id")


# ------------------------------------------------------------------------------------------------
# Bring-your-own CSV: a small TOML config names the id, the target, the label order and exclusions
# (reference: docs/data.md, "Your own data").

# A label's characters at most: every label is written several times in the pipeline's definition, the dashboard and
# the CloudFormation template (both capped at 1 MB); 90 labels of 1,000 characters made a 1.16 MB template.
MAX_LABEL_CHARS = 100
CONFIG_KEYS = {"name", "id_column", "target", "labels", "ordinal", "exclude", "columns", "slice_column", "slice",
               "missing_values", "gate", "csv", "features", "patient_column"}
GATE_KEYS = {"recall", "slice", "unseen"}
FEATURES_KEYS = {"missing_indicators"}
# How the models see a number's missing-value indicator: standardised with the numbers, or left 0/1
# (processing.features; docs/benchmark-real.md, "Missing-value indicators left 0/1").
MISSING_INDICATORS = ("scaled", "binary")
CSV_KEYS = {"delimiter", "decimal", "encoding", "thousands"}
# The largest number a feature holds: the models' features are 32-bit floats (processing.features.as_float32), and
# beyond this a value is inf there (its square already overflows the float64 variances of scalers and baselines).
FEATURE_NUMBER_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max
# An integer column's values stay below this: read as a float64, an integer from 2^53 on may already be another one
# (and from 2^63 on no int64). Ingestion quarantines them, and the endpoint refuses them (it accepted 2^53 + 1).
EXACT_INTEGER_LIMIT = 2.0 ** 53
DECIMALS = (".", ",")
# A number's thousands separator ([csv] thousands): '1.234,5' in Spain, '1,234.5' in the US, '1 234,5' in France (a
# space there is also the no-break spaces French Excel writes), "1'234.5" in Switzerland.
THOUSANDS = (".", ",", " ", "'")
_GROUP_SEPARATOR = {".": r"\.", ",": ",", " ": "[ \u00a0\u202f]", "'": "'"}
_GROUPED = {mark: re.compile(rf"[+-]?[1-9]\d{{0,2}}((?:{sep}\d{{3}})+)(?:([.,])\d+)?", re.ASCII)
            for mark, sep in _GROUP_SEPARATOR.items()}
# Cell texts read as a missing value, as an empty cell is (R's write.csv writes NA; spreadsheets #N/A; pandas
# NaN). Not "None" or "-": real labels and categories. A config's ``missing_values`` replaces the list.
MISSING_VALUES = ("NA", "N/A", "#N/A", "NaN", "nan", "NULL", "null")
COLUMN_KEYS = {"type", "role", "required", "min", "max", "values", "unit"}
# Types ingestion checks and keeps but no model learns from (processing.features builds no feature of them): a
# dataset's column of such a type is metadata.
UNLEARNED_TYPES = ("date", "text")
SLICE_KEYS = {"name", "column", "value", "group"}
# A dataset names its endpoint, and the pipeline names each endpoint config <endpoint>-<execution id>, at most 63
# characters (SageMaker); SageMaker's execution ids, and the local executor's, are EXECUTION_ID_LENGTH long.
EXECUTION_ID_LENGTH = 12
ENDPOINT_NAME_MAX = 63 - 1 - EXECUTION_ID_LENGTH
DATASET_NAME_MAX = ENDPOINT_NAME_MAX
DATASET_NAME = re.compile(rf"\A[A-Za-z0-9](?:[A-Za-z0-9_-]{{0,{DATASET_NAME_MAX - 2}}}[A-Za-z0-9])?\Z")
DATASET_NAME_RULE = (f"1 to {DATASET_NAME_MAX} ASCII letters, digits, '-' and '_', starting and ending with a letter "
                     f"or digit (it names the model package group and the endpoint, whose endpoint configs are "
                     f"named <endpoint>-<{EXECUTION_ID_LENGTH}-character execution id>, at most 63)")
# A label becomes a key in JSON paths the pipeline's gate reads (diagnosa.per_class['<label>'].recall).
LABEL_FORBIDDEN = re.compile(r"['\\\[\]\x00-\x1f\x7f]")
# A label names its line in the CloudWatch dashboard's legend, where '${' starts a dynamic label (${MAX}, ${PROP(…)}).
DYNAMIC_LABEL = "${"


def clean_text(text: str) -> str:
    """A text cell as it is compared and kept: spaces around it trimmed, its accents composed (Unicode NFC: macOS
    writes 'í' as 'i' + a combining accent, which looks the same and compares different)."""
    return (text if text.isascii() else unicodedata.normalize("NFC", text)).strip()


def is_missing_text(value: str, text: bool, markers: frozenset[str] | set[str] = frozenset()) -> bool:
    """A request's string that means a missing value, as ingestion read the training's cells: empty or only spaces
    (in JSON too: never a category ''), and in CSV text one of the dataset's ``missing_values`` markers. One rule for
    the endpoint and for the monitor reading what the endpoint captured."""
    return not value or value.isspace() or (text and value.strip() in markers)


class FieldNames:
    """A request's field names matched to a model's as ingestion read the training CSV's header: trimmed, accents
    composed (a CSV header's 'edad ', 'hipertensión' typed on a Mac). A field an older ingestion stored untrimmed
    ('edad ') is matched by its trimmed name too. One home for the endpoint, the monitor and retraining."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(names)
        self._by_clean = {clean_text(name): name for name in self.names}

    def read(self, record: Mapping[Any, Any]) -> tuple[dict[Any, Any], list[tuple[str, str]]]:
        """The record with each key renamed to the field it names; the (field, how) of the fields given twice so
        (which value was meant is not known: the later one is dropped)."""
        if self.names.issuperset(record):
            return dict(record), []
        out: dict[Any, Any] = {}
        twice: list[tuple[str, str]] = []
        for key, value in record.items():
            name = key
            if isinstance(key, str) and key not in self.names:
                clean = clean_text(key)
                name = self._by_clean.get(clean, clean)
            if name in out or (name != key and name in record):
                how = ("with its accents decomposed" if isinstance(key, str) and unicodedata.normalize("NFC", key) != key
                       else "with spaces around it")
                twice.append((str(name), how))
                continue
            out[name] = value
        return out, twice


def is_clean_text(text: str) -> bool:
    return text == text.strip() and (text.isascii() or unicodedata.is_normalized("NFC", text))


def _composed(value: Any) -> Any:
    """Every string of a config, keys too, composed (NFC), as the CSV's cells and header are read."""
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    if isinstance(value, list):
        return [_composed(v) for v in value]
    if isinstance(value, dict):
        return {_composed(k): _composed(v) for k, v in value.items()}
    return value


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


CONFIG_MAX_BYTES = 16 << 20  # a config declaring 20,000 columns is about 1 MB


def load_dataset_config(path: str | Path) -> dict[str, Any]:
    """A dataset config read and checked key by key; every error names the key and what it needs."""
    path = Path(path)
    try:
        text = read_file_bounded(path, CONFIG_MAX_BYTES, "dataset config").decode("utf-8-sig")  # a BOM, as Notepad saves
        data = _composed(tomllib.loads(text))
    except FileProblem as err:  # missing, a folder, a FIFO (it hung), a device, unreadable, too big
        raise SchemaError(str(err)) from None
    except UnicodeDecodeError as err:
        raise SchemaError(f"dataset config {path} is not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise SchemaError(f"dataset config {path} is not valid TOML: {err}") from None
    return check_dataset_config(data, f"dataset config {path}")


def check_dataset_config(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A dataset config's keys checked one by one (``where`` names it in the errors); the config, unchanged. Also
    for a config read back from a curated version's manifest (retraining ingests feedback with it)."""
    if not isinstance(data, dict):
        raise SchemaError(f"{where}: a dataset config is a table of keys, got {type(data).__name__}")
    data = _trimmed_column_names(data, where)  # checked as the header's names are read
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise SchemaError(f"{where}: unknown keys {some_of(unknown)} (allowed: {', '.join(sorted(CONFIG_KEYS))}; "
                          "see docs/data.md)")
    for key in ("name", "id_column", "target", "labels"):
        if key not in data:
            raise SchemaError(f"{where}: missing required key '{key}'")
    for key in ("name", "id_column", "target", "slice_column", "patient_column"):
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise SchemaError(f"{where}: '{key}' must be a non-empty string, got {data[key]!r}")
    if not DATASET_NAME.fullmatch(data["name"]):
        raise SchemaError(f"{where}: name {data['name']!r} must be {DATASET_NAME_RULE}")
    if data["name"] in (BUILTIN_DATASET, BUILTIN_RESOURCE):
        raise SchemaError(f"{where}: name '{data['name']}' is the built-in cohort's (its curated data, model package "
                          "group and endpoint): name your dataset otherwise")
    labels = data["labels"]
    if not _is_str_list(labels) or not all(labels):
        raise SchemaError(f"{where}: 'labels' must be a list of non-empty strings in their order, got {labels!r}")
    duplicated = repeated(labels)
    if duplicated:
        raise SchemaError(f"{where}: duplicate labels {some_of(repr(x) for x in duplicated)} in 'labels'")
    if len(labels) < 2:
        raise SchemaError(f"{where}: 'labels' needs at least two labels, got {labels!r}")
    long_ = [x for x in labels if len(x) > MAX_LABEL_CHARS]
    if long_:
        raise SchemaError(f"{where}: labels {some_of(repr(x[:40]) + '…' for x in long_)} are longer than {MAX_LABEL_CHARS} "
                          "characters: shorten them (each label is written in the pipeline's definition, its "
                          "dashboard and the CloudFormation template, which SageMaker and CloudFormation cap at 1 MB)")
    spaced = [x for x in labels if x != x.strip()]
    if spaced:
        raise SchemaError(f"{where}: labels {some_of(repr(x) for x in spaced)} have spaces around them (cells are "
                          "read trimmed: write the labels without them)")
    bad = [x for x in labels if LABEL_FORBIDDEN.search(x)]
    if bad:
        raise SchemaError(f"{where}: labels {some_of(repr(x) for x in bad)} hold a quote, backslash, bracket or "
                          "control character (not allowed: labels are keys in the gate's JSON paths)")
    dynamic = [x for x in labels if DYNAMIC_LABEL in x]
    if dynamic:  # 'Leve ${MAX}' would show the week's highest recall in the dashboard's legend, in the label's place
        raise SchemaError(f"{where}: labels {some_of(repr(x) for x in dynamic)} hold '{DYNAMIC_LABEL}', which starts a "
                          "CloudWatch dynamic label in the dashboard's legend (${MAX} shows a number there): write the "
                          "labels without it")
    hidden = [x for x in labels if hides_characters(x)]
    if hidden:  # 'Leve\u200b' reads as 'Leve' everywhere a doctor or an engineer sees it, and is another label
        raise SchemaError(f"{where}: labels {some_of(repr(x) for x in hidden)} hold a control or format character "
                          "(a bidi override, a zero-width space, a C1 control): one acts instead of showing, or "
                          "shows nothing; write the labels without them")
    if "ordinal" in data and not isinstance(data["ordinal"], bool):
        raise SchemaError(f"{where}: 'ordinal' must be true or false, got {data['ordinal']!r}")
    if "exclude" in data and not _is_str_list(data["exclude"]):
        raise SchemaError(f"{where}: 'exclude' must be a list of column names, got {data['exclude']!r}")
    twice = repeated(data.get("exclude") or ())
    if twice:  # harmless, but likely another column mistyped
        raise SchemaError(f"{where}: 'exclude' names {some_of(map(repr, twice))} more than once")
    if "missing_values" in data and not (_is_str_list(data["missing_values"]) and all(data["missing_values"])):
        raise SchemaError(f"{where}: 'missing_values' must be a list of non-empty strings (the cell texts that mean "
                          f"a missing value, read without the spaces around them, as cells are; [] for none), got "
                          f"{data['missing_values']!r}")
    if "slice" in data:
        spec = data["slice"]
        if not isinstance(spec, dict):
            raise SchemaError(f"{where}: 'slice' must be a table ([slice] with column, and optionally name, value)")
        if "slice_column" in data:
            raise SchemaError(f"{where}: give either 'slice_column' or a [slice] table, not both")
        bad_keys = sorted(set(spec) - SLICE_KEYS)
        if bad_keys:
            raise SchemaError(f"{where}: [slice] has unknown keys {some_of(bad_keys)} "
                              f"(allowed: {', '.join(sorted(SLICE_KEYS))})")
        if not (isinstance(spec.get("column"), str) and spec["column"]):
            raise SchemaError(f"{where}: [slice] needs 'column', the column that defines the slice")
        if "name" in spec and not (isinstance(spec["name"], str) and SLICE_NAME.fullmatch(spec["name"])):
            raise SchemaError(f"{where}: [slice] name {spec['name']!r} must start with a letter and hold only ASCII "
                              "letters, digits and '_' (at most 63)")
        if "group" in spec and not (isinstance(spec["group"], str) and spec["group"]):
            raise SchemaError(f"{where}: [slice] group must be a column name, got {spec['group']!r}")
        if "value" in spec and not (isinstance(spec["value"], (str, int, float)) and not isinstance(spec["value"], bool)):
            raise SchemaError(f"{where}: [slice] value must be a string or a number, got {spec['value']!r}")
        if isinstance(spec.get("value"), float) and not math.isfinite(spec["value"]):
            raise SchemaError(f"{where}: [slice] value must be a finite number, got {spec['value']!r} (no cell is "
                              "read as nan or inf)")
    if "gate" in data:
        _check_gate(data, where)
    if "csv" in data:
        _check_csv(data["csv"], where)
    if "features" in data:
        _check_features(data["features"], where)
    columns = data.get("columns", {})
    if not isinstance(columns, dict):
        raise SchemaError(f"{where}: 'columns' must be a table of [columns.<name>] tables")
    for column, spec in columns.items():
        if not isinstance(spec, dict):
            raise SchemaError(f"{where}: [columns.{column}] must be a table")
        bad_keys = sorted(set(spec) - COLUMN_KEYS)
        if bad_keys:
            raise SchemaError(f"{where}: [columns.{column}] has unknown keys {some_of(bad_keys)} "
                              f"(allowed: {', '.join(sorted(COLUMN_KEYS))})")
        for key, ok, what in (("type", lambda v: isinstance(v, str), "a string"),
                              ("role", lambda v: isinstance(v, str), "a string"),
                              ("unit", lambda v: isinstance(v, str), "a string"),
                              ("required", lambda v: isinstance(v, bool), "true or false"),
                              ("min", _number, "a number"), ("max", _number, "a number"),
                              ("values", lambda v: isinstance(v, list) and all(isinstance(x, (str, int, float))
                                                                              and not isinstance(x, bool) for x in v),
                               "a list of strings or numbers")):
            if key in spec and not ok(spec[key]):
                raise SchemaError(f"{where}: [columns.{column}] '{key}' must be {what}, got {spec[key]!r}")
        for key in ("min", "max"):
            if key in spec and not math.isfinite(spec[key]):
                raise SchemaError(f"{where}: [columns.{column}] '{key}' must be a finite number, got {spec[key]!r} "
                                  "(leave it out for no limit)")
        kind = spec.get("type")
        limits = sorted({"min", "max"} & set(spec))
        if limits and kind not in (None, "number", "integer"):
            raise SchemaError(f"{where}: [columns.{column}] {' and '.join(limits)} apply to numbers, not to a {kind}")
        if "values" in spec and kind not in (None, "category"):
            raise SchemaError(f"{where}: [columns.{column}] values apply to a category, not to a {kind}")
        if column in (data.get("exclude") or ()):
            raise SchemaError(f"{where}: '{column}' is both in 'exclude' and declared in [columns.{column}]: an "
                              "excluded column is dropped on ingestion")
        twice = repeated(str(v) for v in spec.get("values") or ())
        if twice:
            raise SchemaError(f"{where}: [columns.{column}] values {some_of(map(repr, twice))} are given more than "
                              "once")
        spaced = [v for v in spec.get("values") or () if isinstance(v, str) and v != v.strip()]
        if spaced:
            raise SchemaError(f"{where}: [columns.{column}] values {some_of(map(repr, spaced))} have spaces around "
                              "them (cells are read trimmed: write the values without them)")
    _check_key_columns(data, columns, where)
    return data


def _trimmed_column_names(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The config with its column names read as the header's are, trimmed (``'id '`` names the header's ``id``), and
    its ``missing_values`` as cells are (``' NA '`` is ``NA``); a manifest's config from before headers were read
    trimmed reads the same. Values of the wrong type are left for
    the checks to name."""
    out = dict(data)
    for key in ("id_column", "target", "slice_column", "patient_column"):
        if isinstance(out.get(key), str):
            out[key] = clean_text(out[key])
    if _is_str_list(out.get("exclude")):
        out["exclude"] = [clean_text(column) for column in out["exclude"]]
    if _is_str_list(out.get("missing_values")):  # compared with the cells as read: trimmed (' NA ' never matched)
        out["missing_values"] = list(dict.fromkeys(clean_text(marker) for marker in out["missing_values"]))
    if isinstance(out.get("slice"), dict):
        out["slice"] = {**out["slice"], **{k: clean_text(v) for k, v in out["slice"].items()
                                           if k in ("column", "group") and isinstance(v, str)}}
    if isinstance(out.get("columns"), dict):
        columns: dict[str, Any] = {}
        for name, spec in out["columns"].items():
            if clean_text(name) in columns:
                raise SchemaError(f"{where}: [columns] declares '{clean_text(name)}' twice (column names are read "
                                  "without the spaces around them)")
            columns[clean_text(name)] = spec
        out["columns"] = columns
    return out


def _check_key_columns(data: dict[str, Any], columns: dict[str, Any], where: str) -> None:
    """The id and the target keep the checks their role needs: a row without a label or an id, or with a label
    outside 'labels', never reaches the curated data (a [columns.*] table could switch them off, and the run
    then stopped in Preprocess)."""
    target = columns.get(data["target"], {})
    overridden = sorted(set(target) - {"unit"})
    if overridden:
        raise SchemaError(f"{where}: [columns.{data['target']}] sets {', '.join(overridden)} of the target: its type "
                          "is the labels' category, always required, its values 'labels' (only 'unit' may be given)")
    id_spec = columns.get(data["id_column"], {})
    overridden = sorted(set(id_spec) - {"type", "unit"})
    if overridden:
        raise SchemaError(f"{where}: [columns.{data['id_column']}] sets {', '.join(overridden)} of the id column: it "
                          "is always required and an id (only 'type', string or integer, may be given)")
    if id_spec.get("type", "string") not in ("string", "integer"):
        raise SchemaError(f"{where}: [columns.{data['id_column']}] type {id_spec['type']!r}: an id is a string or an "
                          "integer")
    patient = data.get("patient_column")
    if patient is None:
        return
    for role, column in (("id_column", data["id_column"]), ("target", data["target"])):
        if patient == column:
            raise SchemaError(f"{where}: patient_column '{patient}' is also the {role}: "
                              + ("the id names each row (a visit, a sample) and is unique, the patient column names "
                                 "whose rows they are; give each row an id of its own (its visit number, its line)"
                                 if role == "id_column" else "the patient column names whose rows they are"))
    if patient in (data.get("exclude") or ()):
        raise SchemaError(f"{where}: patient_column '{patient}' is also in 'exclude' (the split reads it)")
    spec = columns.get(patient, {})
    overridden = sorted(set(spec) - {"type", "unit"})
    if overridden:
        raise SchemaError(f"{where}: [columns.{patient}] sets {', '.join(overridden)} of the patient column: it is "
                          "metadata, never a feature, and never required: a request may name no patient, and a "
                          "required one would quarantine a retraining's feedback rows on such requests (only "
                          "'type', string, category or integer, may be given)")
    if spec.get("type", "string") not in ("string", "category", "integer"):
        raise SchemaError(f"{where}: [columns.{patient}] type {spec['type']!r}: a patient column is a string, a "
                          "category or an integer")


def _recall(value: Any) -> bool:
    return _number(value) and 0 <= value <= 1


def _check_gate(data: dict[str, Any], where: str) -> None:
    """[gate]: the dataset's default recall thresholds (recall: one for every label, or a table per label;
    slice, unseen: the slice's and its unseen groups' macro recall, only where the config has them)."""
    gate = data["gate"]
    _check_table(gate, "gate", GATE_KEYS, where)
    recall = gate.get("recall")
    if isinstance(recall, dict):
        unknown = [label for label in recall if label not in data["labels"]]
        if unknown:
            raise SchemaError(f"{where}: [gate.recall] names {some_of(repr(x) for x in unknown)}, not in 'labels'")
        wrong = {label: v for label, v in recall.items() if not _recall(v)}
        if wrong:
            raise SchemaError(f"{where}: [gate.recall] thresholds must be numbers in [0, 1], got {wrong!r}")
    elif recall is not None and not _recall(recall):
        raise SchemaError(f"{where}: [gate] recall must be a number in [0, 1] (every label) or a table of them per "
                          f"label, got {recall!r}")
    for key in ("slice", "unseen"):
        if key in gate and not _recall(gate[key]):
            raise SchemaError(f"{where}: [gate] {key} must be a number in [0, 1], got {gate[key]!r}")
    sliced = "slice_column" in data or "slice" in data
    if "slice" in gate and not sliced:
        raise SchemaError(f"{where}: [gate] slice is a threshold on the slice's recall, but the config has no slice")
    if "unseen" in gate and not (data.get("slice") or {}).get("group"):
        raise SchemaError(f"{where}: [gate] unseen is a threshold on the slice's groups held out of training, but "
                          "the config's [slice] has no group")


def _check_table(spec: Any, name: str, allowed: set[str], where: str) -> None:
    """A config table ([name]) and its keys."""
    if not isinstance(spec, dict):
        raise SchemaError(f"{where}: '{name}' must be a table ([{name}] with {', '.join(sorted(allowed))})")
    bad_keys = sorted(set(spec) - allowed)
    if bad_keys:
        raise SchemaError(f"{where}: [{name}] has unknown keys {some_of(bad_keys)} (allowed: {', '.join(sorted(allowed))})")


def _check_features(spec: Any, where: str) -> None:
    _check_table(spec, "features", FEATURES_KEYS, where)
    if "missing_indicators" in spec and spec["missing_indicators"] not in MISSING_INDICATORS:
        raise SchemaError(f"{where}: [features] missing_indicators must be one of "
                          f"{', '.join(repr(x) for x in MISSING_INDICATORS)}, got {spec['missing_indicators']!r}")


@dataclass(frozen=True)
class CsvDialect:
    """How a user's CSV is written (the config's [csv]): a Spanish spreadsheet saves ``;``-separated cells with
    decimal commas, in Windows-1252 when it is not told otherwise. Only how the file is read: the curated data holds
    numbers and text either way."""

    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"
    thousands: str = ""  # none: a number is written without a thousands separator

    def is_default(self) -> bool:
        return self == CsvDialect()

    def as_config(self) -> dict[str, str]:
        """The dialect as its [csv] keys (``thousands`` only when set: a version written before it existed keeps its
        hash)."""
        return {key: value for key, value in asdict(self).items() if key != "thousands" or value}

    @property
    def utf8(self) -> bool:
        """Whether the file is UTF-8 (however the encoding is spelled): read with or without a byte-order mark."""
        return codecs.lookup(self.encoding).name == "utf-8"

    @property
    def decoding(self) -> str:
        """The codec that reads the file's bytes: UTF-8 skips a byte-order mark a spreadsheet may write."""
        return "utf-8-sig" if self.utf8 else self.encoding


def _check_csv(spec: Any, where: str) -> None:
    _check_table(spec, "csv", CSV_KEYS, where)
    delimiter = spec.get("delimiter", ",")
    if not (isinstance(delimiter, str) and len(delimiter) == 1) or delimiter in '"\r\n' or delimiter.isalnum():
        raise SchemaError(f"{where}: [csv] delimiter must be one character that is not a letter, a digit, a quote or a "
                          f"line break (',', ';', '\\t', '|'), got {delimiter!r}")
    decimal = spec.get("decimal", ".")
    if decimal not in DECIMALS:
        raise SchemaError(f"{where}: [csv] decimal must be '.' or ',', got {decimal!r}")
    if decimal == delimiter:
        raise SchemaError(f"{where}: [csv] decimal and delimiter are both {decimal!r}: a file with decimal commas "
                          "separates its cells otherwise (delimiter = ';')")
    thousands = spec.get("thousands", "")
    if thousands != "" and thousands not in THOUSANDS:
        raise SchemaError(f"{where}: [csv] thousands must be '.', ',', ' ' (a space, or the no-break space French "
                          f"spreadsheets write) or \"'\", the mark between a number's groups of three digits, got "
                          f"{thousands!r}")
    if thousands and thousands == decimal:
        raise SchemaError(f"{where}: [csv] thousands and decimal are both {decimal!r}: with decimal = \"{decimal}\" "
                          f"the thousands separator is another mark ('1.234,5': decimal = \",\", thousands = \".\")")
    encoding = spec.get("encoding", "utf-8")
    try:
        # (codecs such as 'hex' or 'rot13' are found but do not decode bytes to text)
        known = isinstance(encoding, str) and getattr(codecs.lookup(encoding), "_is_text_encoding", True)
    except LookupError:
        known = False
    if not known:
        raise SchemaError(f"{where}: [csv] encoding must name a text encoding ('utf-8', 'cp1252' for a Windows "
                          f"spreadsheet, 'latin-1', 'utf-16'), got {encoding!r}")


COMMON_DELIMITERS = (";", "\t", "|", ",")


def other_delimiter(header: list[str], delimiter: str = ",") -> str | None:
    """The delimiter a header read as one column holds, when it holds another common one: a ';'-separated file
    read with commas is one column named 'id;age;dx'."""
    if len(header) != 1:
        return None
    return next((other for other in COMMON_DELIMITERS if other != delimiter and other in header[0]), None)


def csv_dialect(config: dict[str, Any] | None) -> CsvDialect:
    """The config's [csv], its defaults filled in (a comma-separated UTF-8 file with decimal points)."""
    spec = (config or {}).get("csv") or {}
    return CsvDialect(**{key: spec[key] for key in CSV_KEYS if key in spec})


def config_gate(config: dict[str, Any] | None) -> dict[str, Any]:
    """The config's [gate] as the pipeline settings' default thresholds: ``recall_thresholds`` (label → threshold,
    every label; a label the table leaves out keeps ``default``), ``slice_threshold``, ``unseen_threshold``;
    only those the config sets."""
    gate = (config or {}).get("gate") or {}
    out: dict[str, Any] = {}
    if not config or not gate:
        return out
    recall = gate.get("recall")
    if isinstance(recall, dict):
        out["recall_thresholds"] = {label: float(recall[label]) for label in config["labels"] if label in recall}
    elif recall is not None:
        out["recall_thresholds"] = {label: float(recall) for label in config["labels"]}
    for key in ("slice", "unseen"):
        if key in gate:
            out[f"{key}_threshold"] = float(gate[key])
    return out


def config_missing_indicators(config: dict[str, Any] | None) -> str:
    """How the dataset's models see the numbers' missing-value indicators: the config's [features]
    missing_indicators, else ``binary`` — except for a slice with groups held out of training (the built-in
    cohort's orphan diseases, and a config whose [slice] has a ``group``), whose unseen groups lost recall with 0/1
    indicators; no config (the built-in cohort) is ``scaled`` (docs/benchmark-real.md, "Missing-value indicators
    left 0/1")."""
    if not config:
        return "scaled"
    chosen = (config.get("features") or {}).get("missing_indicators")
    if chosen:
        return str(chosen)
    return "scaled" if (config.get("slice") or {}).get("group") else "binary"


def missing_markers(config: dict[str, Any], column: str) -> set[str]:
    """The cell texts read as missing in ``column``: the config's ``missing_values`` (default MISSING_VALUES),
    none in the id column (ids are opaque), and never a label of the target or a declared value of the column."""
    if column == config["id_column"]:
        return set()
    markers = set(config.get("missing_values", MISSING_VALUES))
    if column == config["target"]:
        return markers - set(config["labels"])
    declared = (config.get("columns") or {}).get(column, {}).get("values") or ()
    return markers - {str(v) for v in declared}


def config_slice(config: dict[str, Any]) -> tuple[str, str, Any] | None:
    """(name, column, value or None) of the config's slice, or None without one."""
    if "slice_column" in config:
        column = config["slice_column"]
        return column.removeprefix("is_"), column, None
    spec = config.get("slice")
    if not spec:
        return None
    return spec.get("name", spec["column"].removeprefix("is_")), spec["column"], spec.get("value")


def slice_marker(name: str) -> str:
    """The boolean column ingestion adds for a slice defined by a value of another column."""
    return f"in_{name}"


def schema_from_config(config: dict[str, Any], header: list[str], sample: dict[str, list[str]]) -> Schema:
    """Schema for a user's CSV: declared columns as declared, the others inferred from the sample.

    A column is inferred from its sampled non-empty values (``inferred_kind``): a number when every one parses
    as one, a category whose values are not restricted, or metadata (dates, free text, identifiers, an empty column). A
    boolean slice column is a boolean metadata field unless declared otherwise; a slice defined by a value gets a
    boolean marker column of its own (``in_<name>``), filled by ingestion.
    """
    id_column, target = config["id_column"], config["target"]
    dialect = csv_dialect(config)
    exclude = tuple(config.get("exclude", ()))
    declared: dict[str, dict[str, Any]] = config.get("columns", {})
    slice_ = config_slice(config)
    named = [("id_column", id_column), ("target", target), *(("exclude", c) for c in exclude),
             *(("columns", c) for c in declared)]
    group = (config.get("slice") or {}).get("group")
    patient = config.get("patient_column")
    if slice_:
        named.append(("slice column", slice_[1]))
    if group:
        named.append(("slice group", group))
    if patient:
        named.append(("patient_column", patient))
    missing = [f"{what} '{column}'" + _near_miss(column, header) for what, column in named if column not in header]
    if missing:
        raise SchemaError(f"column{'s' * (len(missing) > 1)} named in the config not in the CSV header: "
                          f"{some_of(missing)} (header: {_shown(header)})")
    if id_column == target:
        raise SchemaError(f"the id column and the target are the same column '{id_column}'")
    if patient == ANSWER_ID:
        raise SchemaError(f"the patient column cannot be named '{ANSWER_ID}': the endpoint's answers give each row's id "
                          f"('{id_column}', a visit) as '{ANSWER_ID}', and a request naming its patient so would read "
                          f"as that id. Rename the column in the CSV and in the config (patient_column = \"patient\", "
                          "say)")
    if ANSWER_ID in header and ANSWER_ID not in (id_column, *exclude):
        raise SchemaError(f"the column '{ANSWER_ID}' is not the id column ('{id_column}'), yet the endpoint's answers "
                          f"give each row's id as '{ANSWER_ID}': make it the id_column, put it in exclude, or rename it")
    for role, column in (("id column", id_column), ("target", target)):
        if column in exclude:
            raise SchemaError(f"the {role} '{column}' is also in 'exclude'")
    if slice_:
        name, column, value = slice_
        if column in exclude or column in (id_column, target):
            raise SchemaError(f"the slice column '{column}' cannot be the id, the target or an excluded column")
        if value is None and declared.get(column, {}).get("type", "boolean") != "boolean":
            raise SchemaError(f"the slice column '{column}' is declared as {declared[column]['type']}: a slice column "
                              "without a 'value' must be boolean (true/false, yes/no, 1/0)")
        if patient and patient in (column, group):
            raise SchemaError(f"the patient column '{patient}' cannot be the slice's "
                              + ("column: a slice column marks rows, a patient column names whose rows they are"
                                 if patient == column else
                                 "group: a slice's groups (diseases, sites) are held out of training whole and "
                                 "measured as unseen; a patient's rows already stay in one split"))
        if value is not None and slice_marker(name) in header:
            raise SchemaError(f"the slice '{name}' needs a marker column '{slice_marker(name)}', which the CSV "
                              "already has: name the slice otherwise")
    fields = []
    for column in header:
        if column in exclude:
            continue
        spec = dict(declared.get(column, {}))
        if column == id_column:
            spec = {"type": "string", "role": "id", "required": True} | spec
        elif column == target:
            spec = {"type": "category", "role": "target", "required": True, "values": config["labels"]} | spec
        elif slice_ and slice_[2] is None and column == slice_[1]:
            spec = {"type": "boolean", "role": "metadata"} | spec
        elif column == group:  # held out by value, never a feature (it would name the answer)
            spec = {"type": "string", "role": "metadata"} | spec
        elif column == patient:  # the split's unit; as a feature it would let a model recognise the patient
            spec = {"type": "string", "role": "metadata"} | spec  # a row without one is a patient of its own
        elif "type" not in spec:  # declared values make a category, limits a number; else the cells say
            if "values" in spec or {"min", "max"} & set(spec):
                spec["type"] = "category" if "values" in spec else "number"
            else:
                kind_type, kind_role = INFERRED_FIELDS[inferred_kind(sample.get(column, []), dialect.decimal,
                                                                     dialect.thousands)]
                if spec.get("role", kind_role) == "feature" and kind_role != "feature":
                    kind_type = "category"  # declared a feature: its text as levels, as asked
                inferred: dict[str, Any] = {"type": kind_type, "role": kind_role}
                spec = inferred | spec
        if spec.get("type") in UNLEARNED_TYPES:
            if spec.get("role") == "feature":
                raise SchemaError(f"column '{column}' is declared {spec['type']} with role 'feature': the models learn "
                                  f"from no {spec['type']} column (a date's meaning — an age, a delay — is the "
                                  "dataset's to compute). Give it role = \"metadata\" (kept and checked, not learned "
                                  "from), exclude it, or add the number it stands for as a column of its own")
            spec.setdefault("role", "metadata")  # validated and kept in the curated data; never a model input
        if "values" in spec and spec["values"] is not None:
            spec["values"] = tuple(str(v) for v in spec["values"])
        fields.append(Field(name=column, **spec))
    slice_column = slice_name = None
    if slice_:
        slice_name, slice_column, value = slice_
        if value is not None:
            slice_column = slice_marker(slice_name)
            fields.append(Field(slice_column, "boolean", role="metadata"))
    if group and group in (id_column, target, *exclude):
        raise SchemaError(f"the slice group '{group}' cannot be the id, the target or an excluded column")
    if not any(f.role == "feature" for f in fields):
        raise SchemaError("the config leaves no feature column: every column is the id, the target, the slice, "
                          "excluded, declared metadata, or a date or text column (metadata too; so is a column not "
                          "declared whose cells are dates, free text, identifiers or all empty): a model needs at least one "
                          f"column to learn from (header: {_shown(header)})")
    return Schema(config["name"], tuple(fields), tuple(config["labels"]), exclude=exclude,
                  slice_column=slice_column, slice_name=slice_name, ordinal=config.get("ordinal", True),
                  group_column=group or None, patient_column=patient or None,
                  missing_values=tuple(sorted(config.get("missing_values", MISSING_VALUES))))


def number_text(text: str, decimal: str = ".", thousands: str = "") -> str | None:
    """A cell's text as Python reads a number (``float``), or None when the file's decimal mark makes it no number:
    with decimal commas a ``.`` is a thousands separator or a mistake, never read as the decimal point
    (``1.234`` is 1234 in a Spanish spreadsheet and 1.234 in an English one). With a ``thousands`` separator (the
    config's [csv] thousands), a number written in groups of three digits ('1.234,5', '12.345') is read without
    its separators; a separator anywhere else leaves the text no number."""
    if thousands:
        text = ungrouped(text, decimal, thousands) or text
    if decimal == ".":
        return text
    return None if "." in text else text.replace(",", ".")


def grouping(text: str) -> tuple[str, str | None, int] | None:
    """(thousands mark, decimal mark or None, how many groups of three digits) when ``text`` is a number written in
    thousands groups — '8.830,0' ('.', ',', 1), '1,336.0' (',', '.', 1), '1 234' (' ', None, 1), '1.234.567' ('.',
    None, 2) —, else None. A single group without a decimal part ('7.915', '228,300') is ambiguous: the mark may as
    well be a decimal point or comma. The first group never starts with 0 ('0.870' is a decimal)."""
    for mark, pattern in _GROUPED.items():
        match = pattern.fullmatch(text)
        if match and match.group(2) != mark:
            groups = len(match.group(1)) // 4
            return mark, match.group(2), groups
    return None


def ungrouped(text: str, decimal: str, thousands: str) -> str | None:
    """``text`` without its thousands separators when it is a number grouped with ``thousands`` and, if it has a
    decimal part, the ``decimal`` mark ('1.234,5' → '1234,5'); None otherwise."""
    found = grouping(text)
    if found is None or found[0] != thousands or found[1] not in (None, decimal):
        return None
    return re.sub(_GROUP_SEPARATOR[thousands], "", text)


def _shown(header: list[str]) -> str:
    """Header names for a message: quoted where spaces around a name, or a space other than ' ', would not show."""
    return some_of(repr(name) if name != " ".join(name.split()) else name for name in header)


def _near_miss(column: str, header: list[str]) -> str:
    """' (the header has ' id', with spaces)' when the config's name is a header name but for spaces or case."""
    near = near_spelling(column, header)
    if near is None:
        return ""
    name, how = near
    return f" (the header has {name!r}" + (f", the same {how})" if how not in (SPACES_AROUND, "but for case") else ")")


def _spaced(text: str) -> str:
    return " ".join(text.split())


SPACE_NAMES = {"\xa0": "a no-break space (U+00A0)", "\u202f": "a narrow no-break space (U+202F)", "\t": "a tab"}


SPACES_AROUND = "but for the spaces around it"


def near_spelling(value: str, known: Iterable[Any]) -> tuple[str, str] | None:
    """The known text ``value`` is but for case or its spaces, and how it differs, else None: ('leve', 'but for
    case'), ('tumor maligno', 'but for a no-break space (U+00A0)') -- a spreadsheet or a web page writes one where a
    space shows, and the two compare different. Case and spaces stay meaningful where texts are compared; this only
    says why one matched nothing."""
    words = _spaced(value)
    for other in known:
        if not isinstance(other, str) or other == value or _spaced(other).casefold() != words.casefold():
            continue
        odd = sorted({c for c in value + other if c.isspace() and c != " "})
        if _spaced(other) != words:
            return other, "but for case" if (value, other) == (words, _spaced(other)) else "but for case and spaces"
        if odd:
            return other, "but for " + SPACE_NAMES.get(odd[0], f"a space U+{ord(odd[0]):04X}")
        return other, SPACES_AROUND if other.strip() == value.strip() else "but for its spaces"
    return None


# A number as a cell spells one: what pandas.to_numeric (ingestion's validation) reads, and no more — Python's float()
# also takes '1_000' and other scripts' digits ('١', '１２'), which validation then refused in a column they had
# made a number.
NUMBER_TEXT = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)\s*", re.IGNORECASE | re.ASCII)


# A number followed by a unit: '124 mg/dL', '94%', '37 °C', '12 U/L' -- not '2A' (a stage or a subtype: a unit
# without a space needs a '/' or is '%').
_UNIT = re.compile(r"(?P<number>[+\-\u2212]?[\d.,]*\d[\d.,]*)\s*(?P<unit>[%‰]|[°µμ]?[^\W\d_]+(?:/[^\W\d_]+)+"
                   r"|\s[°µμ]?[^\W\d_]+)")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+", re.ASCII)


def number_spelling(text: str) -> str | None:
    """How a cell that is no number as read spells one otherwise, for a message (what to write instead follows
    from it), else None: a minus sign '−' (U+2212, as word processors and PDFs write it), a thousands separator, a
    decimal comma, a unit after the number ('124 mg/dL', '94%')."""
    text = text.strip()
    if "\u2212" in text and NUMBER_TEXT.fullmatch(text.replace("\u2212", "-")):
        return "the minus sign '\u2212' (U+2212) where '-' is read"
    found = grouping(text)
    if found:
        return f"a thousands separator {found[0]!r}"
    if _DECIMAL_COMMA.fullmatch(text):
        return "a decimal comma"
    unit = _UNIT.fullmatch(text)
    if unit and NUMBER_TEXT.fullmatch(unit["number"].replace("\u2212", "-").replace(",", ".")):
        return f"a unit after the number ({unit['unit'].strip()!r})"
    return None


def number_counts(values: list[str], decimal: str = ".", thousands: str = "") -> tuple[int, list[str]]:
    """How many of the non-empty ``values`` spell a number, and the others (in order)."""
    numbers, others = 0, []
    for value in values:
        if value == "":
            continue
        text = number_text(value, decimal, thousands)
        if text is not None and NUMBER_TEXT.fullmatch(text):
            numbers += 1
        else:
            others.append(value)
    return numbers, others


def _record_numbers(values: list[str], decimal: str = ".", thousands: str = "") -> bool:
    """``values`` (all numbers) are at least RECORD_NUMBER_MIN_CELLS whole numbers, almost each once, that fill most
    of the even steps between their least and greatest (1000, 1001, ... or 100000, 100003, ...; a few records written
    twice or dropped): a row's number, whatever the order of the file. A measurement repeats its values or leaves
    most of its range's steps empty. (Requiring each number once in one exact step, a record number with one repeat
    or ten gaps stayed a feature: test recall 1.000, new patients 0.25, a re-run probe.)"""
    if len(values) < RECORD_NUMBER_MIN_CELLS:
        return False
    numbers = []
    for value in values:
        text = number_text(value, decimal, thousands)
        try:
            number = float(text) if text is not None else math.nan
        except ValueError:
            return False
        if not number.is_integer() or abs(number) >= EXACT_INTEGER_LIMIT:
            return False
        numbers.append(int(number))
    distinct = sorted(set(numbers))
    if len(distinct) < max(2, RECORD_NUMBER_DISTINCT * len(numbers)):
        return False
    # The smallest gap is the step: the commonest, where every gap is another, was the first one, and 60 birth
    # weights "filled" 109 % of their steps (a probe: a random lab count was an identifier in 20 % of 50-row tables).
    step = min(later - earlier for earlier, later in zip(distinct, distinct[1:]))
    return len(distinct) >= RECORD_NUMBER_FILL * ((distinct[-1] - distinct[0]) // step + 1)


def _all_numeric(values: list[str], decimal: str = ".", thousands: str = "") -> bool:
    numbers, others = number_counts(values, decimal, thousands)
    return numbers > 0 and not others


# How a column no config entry describes is inferred from its first non-empty cells (ingestion samples up to
# SAMPLE_CELLS of them, however many rows down): the kinds below beside 'number' and 'category' are never a model's
# input, or keep their text, and the ingestion report names each such column.
SAMPLE_CELLS = 1_000
CODE_WITH_ZEROS = re.compile(r"[+-]?0\d+", re.ASCII)  # '08001', '007': a code, whose zeros a number would lose
DATE_TEXT = re.compile(r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
                       r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?", re.ASCII)
FREE_TEXT_MIN_CELLS = 20  # fewer non-empty cells say too little to call a column free text
FREE_TEXT_DISTINCT = 0.9  # at least this share of the sampled cells distinct ...
FREE_TEXT_LENGTH = 20  # ... and on average at least this long, or most of them with a space: sentences, not codes
RECORD_NUMBER_MIN_CELLS = 50  # whole numbers in even steps, almost each once: a record number from this many cells on
RECORD_NUMBER_DISTINCT = 0.95  # ... this share of them distinct (a record written twice) ...
RECORD_NUMBER_FILL = 0.9  # ... filling this share of the steps between the least and the greatest (records dropped)


def inferred_kind(values: list[str], decimal: str = ".", thousands: str = "") -> str:
    """What a column not declared in the config holds, from its sampled non-empty cells (``values``, empty cells
    already dropped or skipped): 'number'; 'code' (digits with leading zeros, '08001': a category that keeps its
    text); 'date' (dates or times in any of the common spellings); 'empty' (no cell at all); 'text' (free text:
    almost every cell distinct, and long or with spaces); 'identifier' (a code or a short text almost every cell of
    which is distinct: a record number, 'H-00417'); else 'category'. Dates, free text, identifiers and empty columns
    are kept as metadata, never a feature (one level per row teaches a model nothing, and the endpoint would ask
    for them)."""
    values = [v for v in values if v != ""]
    if not values:
        return "empty"
    numeric = _all_numeric(values, decimal, thousands)
    if numeric and not any(CODE_WITH_ZEROS.fullmatch(v) for v in values):
        # Distinct numbers may be measurements; whole numbers in one even step, each once, are a record number: as a
        # feature, a file sorted by diagnosis taught the model its order (test recall 1.000; new patients' 0.25).
        return "identifier" if _record_numbers(values, decimal, thousands) else "number"
    if not numeric and all(DATE_TEXT.fullmatch(v) for v in values):
        return "date"
    distinct = len(values) >= FREE_TEXT_MIN_CELLS and len(set(values)) >= FREE_TEXT_DISTINCT * len(values)
    if distinct and not numeric and (sum(map(len, values)) >= FREE_TEXT_LENGTH * len(values)
                                     or sum(" " in v.strip() or "\n" in v for v in values) > len(values) / 2):
        return "text"
    if distinct:
        return "identifier"
    return "code" if numeric else "category"


# The field an inferred kind makes (type, role); 'number' and 'category' are features.
INFERRED_FIELDS = {"number": ("number", "feature"), "category": ("category", "feature"),
                   "code": ("category", "feature"), "date": ("string", "metadata"), "text": ("text", "metadata"),
                   "identifier": ("string", "metadata"), "empty": ("string", "metadata")}
