"""The patient form, built from the model's request schema; the request built from the form.

The fields, their types, limits, units and allowed values come from the JSON Schema of the
endpoint's request (:meth:`inference.schema.RequestSchema.to_json_schema`), generated from the
model's own metadata: a model trained on other columns gets another form, with no code change.
The endpoint stays the judge of what is valid; the form does not clamp values, so an impossible
value comes back as the endpoint's field error, shown next to the field it names
(:func:`field_errors`).
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from diagnosa.data.physiology import BY_NAME, LABS, VITALS
from diagnosa.data.schema import Schema, cohort_schema
from diagnosa.labels import CATEGORIES
from diagnosa.model import METADATA_FILE, ModelLoadError, model_labels, read_metadata
from diagnosa.text import some_of
from inference.limits import printable_line
from inference.schema import RequestSchema

Kind = Literal["integer", "number", "choice", "boolean", "terms", "codes", "text"]
GROUPS = ("Patient", "Vital signs", "Lab results", "Other measurements", "Symptoms", "History")
LABELS = {"age": "Age", "sex": "Sex", "symptoms": "Symptoms", "prior_diagnoses": "Prior diagnoses (ICD-10 codes)"}
CHOICE_LABELS = {"sex": {"F": "Female", "M": "Male"}}
BOOLEAN_CHOICES = {"Yes": True, "No": False}
_CODE_SPLIT = re.compile(r"[\s,;]+")
# What a measurement may be: '1234.5678 mmol/L' and room to spare. Longer is refused by parse_number, naming the field;
# never by the widget: Streamlit drops a paste over a text field's max_chars whole, with no message (the field stayed
# empty and the lab was sent as not recorded).
MAX_NUMBER_CHARS = 24
# A measurement as a doctor types it: digits with one decimal mark, a point or a comma (38.9, 38,9, ,5), a sign.
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)$")
_AMBIGUOUS_COMMA = re.compile(r"^[+-]?0*[1-9][0-9]{0,2},[0-9]{3}$")  # 1,500: one and a half, or fifteen hundred?
MAX_SHOWN_CHARS = 200  # of a text quoted in a message (an endpoint's problem, a label, a value typed)
MAX_PROBLEMS = 20  # problems listed per field (and above the form); the message says how many more there were
def display_text(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """``value`` as text a message can quote: at most ``limit`` characters and '…' when cut, each character Python
    would not print as itself written as its escape (inference.limits.printable_line: a newline forged a line of its
    own, a lone surrogate — a JSON "\\ud800" escape decodes to one — made the page a traceback, a right-to-left
    override reversed what follows)."""
    text = value if isinstance(value, str) else str(value)
    return printable_line(text[:limit]) + ("…" if len(text) > limit else "")


class FormError(ValueError):
    """The form cannot be built: no model metadata, or a schema without input fields."""


@dataclass(frozen=True)
class FormField:
    name: str
    kind: Kind
    label: str
    group: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The widget label: the name and, for measurements, the unit."""
        return f"{self.label} ({self.unit})" if self.unit and self.kind in ("integer", "number") else self.label

    @property
    def help(self) -> str | None:
        if self.minimum is None and self.maximum is None:
            return None
        low = "−∞" if self.minimum is None else f"{self.minimum:g}"
        high = "∞" if self.maximum is None else f"{self.maximum:g}"
        unit = f" {self.unit}" if self.unit else ""
        return (f"Possible values: {low} to {high}{unit}. Leave empty if not measured."
                + (" A decimal point or comma: 38.9 or 38,9." if self.kind == "number" else ""))

    def choice_label(self, value: str) -> str:
        return CHOICE_LABELS.get(self.name, {}).get(value, value)


@dataclass(frozen=True)
class FormSpec:
    fields: tuple[FormField, ...]
    id_field: str = "patient_id"
    known_terms: frozenset[str] = frozenset()  # HPO terms the model has a feature for
    known_codes: tuple[str, ...] = ()  # prior-diagnosis codes the model has a feature for
    model_family: str | None = None
    labels: tuple[str, ...] = CATEGORIES  # what the model answers with, in its order: what a confirmed diagnosis may be
    levels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # a category field's values the model learned
    orphan_slice: bool = True  # the model's data has a rare-disease slice a confirmed disease id counts a case in

    def by_name(self, name: str) -> FormField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def groups(self) -> list[tuple[str, list[FormField]]]:
        """Fields by group, in display order; empty groups left out."""
        return [(g, [f for f in self.fields if f.group == g]) for g in GROUPS if any(f.group == g for f in self.fields)]

    @property
    def terms_field(self) -> FormField | None:
        """The first field of HPO terms: the patient's symptoms, which the differential is asked for."""
        return next((f for f in self.fields if f.kind == "terms"), None)

    @property
    def terms_fields(self) -> tuple[FormField, ...]:
        """Every field of HPO terms (a dataset may have several: symptoms, family history), each with its picker."""
        return tuple(f for f in self.fields if f.kind == "terms")


def _group(name: str, kind: Kind) -> str:
    if kind == "terms":
        return "Symptoms"
    if kind == "codes":
        return "History"
    if name in VITALS:
        return "Vital signs"
    if name in LABS:
        return "Lab results"
    if kind in ("integer", "number") and name != "age":
        return "Other measurements"
    return "Patient"


def _label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name in BY_NAME and BY_NAME[name].label:
        return BY_NAME[name].label
    return name.replace("_", " ").capitalize()


def _kind(prop: Mapping[str, Any]) -> Kind:
    types = prop.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "array" in types:
        return "terms" if "pattern" in prop.get("items", {}) else "codes"
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "number"
    if "boolean" in types:
        return "boolean"
    if prop.get("enum"):
        return "choice"
    return "text"


def form_spec(json_schema: Mapping[str, Any], *, id_field: str = "patient_id",
              feature_names: list[str] | tuple[str, ...] = (), model_family: str | None = None,
              labels: Sequence[str] = CATEGORIES, orphan_slice: bool = True) -> FormSpec:
    """The form for one patient record described by a request JSON Schema (the id is not asked). ``feature_names``
    (the model's) tell the symptoms and codes it has a feature for, and the values of each category field it learned
    (``categorical__<field>_<value>``)."""
    fields = []
    for name, prop in json_schema.get("properties", {}).items():
        if name == id_field:
            continue
        kind = _kind(prop)
        choices = tuple(v for v in prop.get("enum", ()) if v is not None) if kind == "choice" else ()
        label = prop["title"] if isinstance(prop.get("title"), str) and prop["title"] else _label(name)
        fields.append(FormField(name, kind, label, _group(name, kind), unit=prop.get("description", ""),
                                minimum=prop.get("minimum"), maximum=prop.get("maximum"), choices=choices))
    if not fields:
        raise FormError("the model's request schema has no input fields")
    terms, codes = set(), []
    texts = sorted((f.name for f in fields if f.kind == "text"), key=len, reverse=True)  # 'a_b' before 'a'
    levels: dict[str, list[str]] = {}
    for feature in feature_names:  # "hpo:<field>__HP:0000001", "codes:<field>__I10", "categorical__<field>_<value>"
        prefix, _, value = feature.partition("__")
        if prefix.startswith("hpo:"):
            terms.add(value)
        elif prefix.startswith("codes:"):
            codes.append(value)
        elif prefix == "categorical":
            name = next((n for n in texts if value.startswith(n + "_") and len(value) > len(n) + 1), None)
            level = value[len(name) + 1:] if name else ""
            if name and level != "infrequent_sklearn" and level not in levels.setdefault(name, []):
                levels[name].append(level)
    return FormSpec(tuple(fields), id_field, frozenset(terms), tuple(sorted(set(codes))), model_family, tuple(labels),
                    {name: tuple(values) for name, values in levels.items()}, orphan_slice)


def load_form_spec(model_dir: str | None = None) -> FormSpec:
    """The form for a model folder's request schema and labels; without a model, the built-in cohort's."""
    if model_dir is None:
        schema, metadata, labels = cohort_schema(), {}, list(cohort_schema().labels)
    else:
        path = Path(model_dir) / METADATA_FILE
        try:
            metadata = read_metadata(model_dir)  # a folder without one, or a FIFO in its place (it hung), refused
        except ModelLoadError as err:
            raise FormError(str(err)) from None
        try:
            schema = Schema.from_dict(metadata["schema"])
        except (ValueError, KeyError, TypeError) as err:
            raise FormError(f"cannot read the model's request schema from {path}: {err}") from None
        try:
            labels = model_labels(model_dir)  # what the endpoint serving this model accepts as a confirmed diagnosis
        except ModelLoadError as err:
            raise FormError(f"cannot read the model's labels: {err}") from None
    orphan_slice = bool(metadata["slice_column"]) if "slice_column" in metadata else bool(schema.slice_column)
    request = RequestSchema(schema)
    # The encoder's names: under a reduction (PCA, LDA) the model's feature_names are its components.
    names = metadata.get("encoded_feature_names") or metadata.get("feature_names")
    return form_spec(request.to_json_schema(), id_field=request.id_field,
                     feature_names=[str(n) for n in names] if isinstance(names, list) else (),
                     model_family=metadata.get("family"), labels=labels, orphan_slice=orphan_slice)


def parse_codes(text: str) -> list[str]:
    """'I10, E11.9; J45' → ['I10', 'E11.9', 'J45'] (upper case, order kept, duplicates dropped)."""
    # A dict, not a list: 'code not in out' made a paste of 30,000 codes take 7 s, one of megabytes hours.
    return list(dict.fromkeys(code.upper() for code in _CODE_SPLIT.split(text.strip()) if code))


class ValueProblem(ValueError):
    """A measurement typed so that it is not a number, or not one number only (the message says how to write it)."""


def _strip_unit(text: str, unit: str) -> str:
    """The number typed, without the field's unit after it ('38.9 °C', '112 beats/min', '150 mm Hg', '90 %'), and
    without the spaces around it; the spaces inside it are kept (to be refused: '15 2' is not 152). A unit that starts
    with a digit needs a space or nothing else before it to be told apart: '15 10^9/L' is 15, '1510^9/L' is refused."""
    folded = text.casefold().strip()
    units = {unit.casefold().replace(" ", "")} if unit else set()
    units |= {u.lstrip("°º") for u in units if u[:1] in "°º"}  # '38.9 C' for °C
    for u in sorted((u for u in units if u), key=len, reverse=True):
        for start in range(1, len(folded)):
            if folded[start] == " " or folded[start:].replace(" ", "") != u:
                continue
            if u[0].isdigit() and folded[start - 1].isdigit():
                return folded  # digits of the unit glued to the number's: not read
            return folded[:start].strip()
    return folded


def parse_number(text: str, f: FormField) -> float | int | None:
    """A measurement as the doctor typed it in a text field: None when empty, else the number.

    A decimal comma reads as a decimal point (38,9 is 38.9: the browser's number field dropped the comma and sent
    389, or 152 for a white count of 15,2), the field's unit may follow the number, and anything else is refused
    (:class:`ValueProblem`), never guessed: letters, two marks (1.234,5), a comma that may separate thousands
    (1,500), not-a-number and infinities. The value is not clamped: the endpoint judges the range.
    """
    raw = unicodedata.normalize("NFKC", str(text)).strip().replace("\u2212", "-")  # full-width digits; '−' minus
    if not raw:
        return None
    shown = display_text(raw, 30)  # a newline or a lone surrogate pasted: escaped, never shown as it is
    if len(raw) > MAX_NUMBER_CHARS:  # a pasted line of a lab report: '15.2 10^9/L (ref 4.0-11.0)'
        unit = f" (its unit, {f.unit}, may follow it)" if f.unit else ""
        raise ValueProblem(f"'{shown}' is too long for {f.label}: a measurement takes at most {MAX_NUMBER_CHARS} "
                           f"characters (this is {len(raw)}); write only the number{unit}")
    number = _strip_unit(raw, f.unit)
    glued = re.sub(r"\s+", "", number)
    if glued != number and _NUMBER.fullmatch(glued):  # '15 2', '1 80': a slip, or a space between thousands
        parts = number.split()
        decimal = f" or {parts[0]}.{parts[1]}" if len(parts) == 2 and all(p.isdecimal() for p in parts) else ""
        raise ValueProblem(f"'{shown}' has a space inside the number: write it as {glued}{decimal}, with no space "
                           "between the digits (a space may only separate the number from its unit)")
    if not _NUMBER.fullmatch(number):
        unit = f" in {f.unit}" if f.unit else ""
        raise ValueProblem(f"'{shown}' is not a number: write the value{unit} with digits and at most one decimal "
                           "mark, e.g. 38.9 or 38,9 (no thousands separators)")
    if _AMBIGUOUS_COMMA.fullmatch(number):
        thousands, decimal = number.replace(",", ""), f"{float(number.replace(',', '.')):g}"
        raise ValueProblem(f"'{shown}' could be {thousands} or {decimal}: write {thousands} or {decimal} "
                           "(no thousands separators)")
    value = float(number.replace(",", "."))
    if not math.isfinite(value):
        raise ValueProblem(f"'{shown}' is not a number")
    if f.kind == "integer":
        if not value.is_integer():
            raise ValueProblem(f"'{shown}' is not a whole number")
        return int(value)
    return value


def read_numbers(spec: FormSpec, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The widgets' values with the measurements typed as text read as numbers (:func:`parse_number`), and the
    problems by field: a field that is not a number is left out and named, so nothing is sent until it is corrected."""
    out = dict(values)
    problems: dict[str, list[str]] = {}
    for f in spec.fields:
        value = values.get(f.name)
        if f.kind in ("integer", "number") and isinstance(value, str):
            try:
                out[f.name] = parse_number(value, f)
            except ValueProblem as err:
                out[f.name] = None
                problems[f.name] = [str(err)]
    return out, problems


def build_record(spec: FormSpec, values: Mapping[str, Any]) -> dict[str, Any]:
    """The patient record to send: only the fields given a value, typed as the schema says.

    ``values`` maps field names to what the widgets hold (None or "" for empty). Numbers are
    passed through unclamped (the endpoint judges them); a whole float in an integer field becomes
    an int; booleans come as "Yes"/"No"; codes as a list or as text separated by commas, spaces
    or semicolons.
    """
    record: dict[str, Any] = {}
    for f in spec.fields:
        value = values.get(f.name)
        if value is None or value == "" or value == []:
            continue
        if f.kind in ("integer", "number"):
            if isinstance(value, float) and f.kind == "integer" and value.is_integer():
                value = int(value)
        elif f.kind == "boolean":
            if isinstance(value, str):
                if value not in BOOLEAN_CHOICES:
                    continue
                value = BOOLEAN_CHOICES[value]
        elif f.kind == "terms":
            value = list(dict.fromkeys(value))
        elif f.kind == "codes":  # typed into the multiselect too: upper case, as the text form ('i10' was unused)
            value = parse_codes(value) if isinstance(value, str) else \
                list(dict.fromkeys(str(c).strip().upper() for c in value if str(c).strip()))
            if not value:
                continue
        elif isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        record[f.name] = value
    return record


@dataclass(frozen=True)
class FieldErrors:
    """A 4xx body's problems: those naming a form field, and the rest (shown above the form)."""

    by_field: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general)


def to_correct(spec: FormSpec, errors: FieldErrors) -> str:
    """The message's request to correct the fields ``errors`` blame, naming them by title in the form's order: on a
    phone the fields marked in red are a screen or more above the message, which named none."""
    titles = [f.title for f in spec.fields if f.name in errors.by_field]
    return "correct the fields marked in red" + (f" ({some_of(titles, 5)})" if titles else "")


def field_errors(spec: FormSpec, errors: Sequence[Mapping[str, Any]], message: str | None = None) -> FieldErrors:
    """Map the endpoint's ``errors`` (row, field, problem) onto the form's fields.

    The form sends one patient, so every problem is row 0's. A problem naming no field, or a field
    the form does not show, goes to ``general``; so does ``message`` when no problem is listed. What is not a
    problem object (``"bad"``, ``null``, a number: whatever answered was not a Diagnosa endpoint) is skipped.

    Each problem is quoted as text that cannot forge a line (:func:`display_text`), and at most MAX_PROBLEMS are listed
    per field and above the form, with how many more there were: 100,000 problems were 1.5 million characters of
    messages.
    """
    names = set(spec.names)
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    counts: dict[str | None, int] = {}
    for error in errors if isinstance(errors, (list, tuple)) else ():
        if not isinstance(error, Mapping):
            continue
        name = error.get("field")
        where = str(name) if name in names else None
        counts[where] = counts.get(where, 0) + 1
        if counts[where] > MAX_PROBLEMS:
            continue  # counted, said below
        problem = display_text(error.get("problem") or error.get("message") or "invalid")
        if where is not None:
            by_field.setdefault(where, []).append(problem)
        elif name:
            general.append(f"{display_text(name, 80)}: {problem}")
        else:
            general.append(problem)
    for where, count in counts.items():
        if count > MAX_PROBLEMS:
            (general if where is None else by_field[where]).append(
                f"… and {count - MAX_PROBLEMS:,} more problems, not listed")
    if not by_field and not general and message:
        general.append(display_text(message))
    return FieldErrors(by_field, general)
