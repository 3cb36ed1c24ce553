"""The request schema of the endpoint, generated from the model's own metadata.

Serving validates one record at a time in plain Python: a pandas pass costs milliseconds per
request, which a single-patient call cannot afford. The rules are the schema fields the curated
dataset declared (types, limits, allowed values), so what ingestion accepts is what the endpoint
accepts; the problems name the row, the field and what is wrong, for a 4xx body.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from diagnosa.data.hpo import HPO_ID, Ontology, load_ontology
from diagnosa.data.schema import (
    EXACT_INTEGER_LIMIT,
    FEATURE_NUMBER_MAX,
    Field,
    FieldNames,
    Schema,
    clean_text,
    is_clean_text,
    near_spelling,
    number_spelling,
)
from diagnosa.data.validate import (
    BOOLEAN_SPELLINGS,
    CODE,
    LIST_SEPARATOR,
    Spread,
    boolean_text,
    clip,
    implausible_reason,
    served_bounds,
)
from diagnosa.data.validate import shown as quoted
from inference.limits import MAX_LISTED_PROBLEMS, RepeatedKeys

LISTED_FIELDS = 30  # an unknown field's problem lists the accepted names up to this many (else the closest ones)
NOT_PLAIN = object()  # what a field's fast check returns for a value it does not vouch for (the full check decides)
EXACT_FLOATS = 2**53  # integers below this convert to float exactly: range checks on either agree
SHOWN_CHARS = 60  # how much of a refused value a message quotes
SHOWN_FIELD_CHARS = 200  # how much of a refused field name (a key of the request) a problem names


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A refused value (a top_k, a header) as the endpoint quotes it: ingestion's bounded quote, at its own length."""
    return quoted(value, limit)


@dataclass(frozen=True)
class Problem:
    row: int
    field: str | None
    problem: str

    def to_dict(self) -> dict[str, Any]:
        # The field may be any key a request sent (a 6 MB one): named clipped, as values are quoted.
        field = self.field if self.field is None else clip(self.field, SHOWN_FIELD_CHARS)
        return {"row": self.row, "field": field, "problem": self.problem}


class RequestSchema:
    """Feature fields (plus the optional id) a request may carry; everything else is refused."""

    def __init__(self, schema: Schema, ontology: Ontology | None = None,
                 spreads: Mapping[str, Sequence[float]] | None = None):
        """``spreads``: the model's training spread of each unbounded number (its metadata's ``number_spreads``,
        validate.number_spreads): a value ingestion would quarantine as implausible is refused the same way. A model
        trained before they were recorded has none, and takes any 32-bit number as before."""
        self.schema = schema
        self._spreads: dict[str, Spread] = {name: (float(s[0]), float(s[1]), float(s[2]), float(s[3]), float(s[4]))
                                            for name, s in (spreads or {}).items() if isinstance(s, (list, tuple))
                                            and len(s) == 5}
        self.id_field = schema.id_column
        self.fields: dict[str, Field] = {f.name: f for f in schema.fields if f.role == "feature"}
        # The patient a row belongs to, for a dataset of several rows per patient (visits): never a feature, but
        # checked as ingestion reads the column, so that the captured request gives the monitor its patients and a
        # retraining's feedback rows their patient (the split then keeps a returning patient's visits together).
        self.patient: Field | None = next((f for f in schema.fields if f.name == schema.patient_column), None)
        self._patient_check = None if self.patient is None else (
            self.patient, self._fast_check(self.patient),
            frozenset(schema.missing_values) - set(self.patient.values or ()))
        self._ontology = ontology
        self._keys = frozenset(self.accepted)
        self._names = FieldNames(self.accepted)
        # Per field: (name, field, holds a list, its fast check, the texts a CSV cell means "missing" with as
        # ingestion read the training CSV: never a value the field declares). A batch of 100 records checks ~1,200
        # values: the common valid value is vouched for in a few operations, anything else goes through _value (one
        # home for every rule and message), so the answer is the same either way.
        self._checks: list[tuple[str, Field, bool, Callable[[Any], Any], frozenset[str]]] = [
            (name, f, f.type in ("hpo_terms", "codes"), self._fast_check(f),
             frozenset(schema.missing_values) - set(f.values or ())) for name, f in self.fields.items()]
        # The dataset's columns that are not inputs, named as such when a request carries them (a scoring file in
        # the training file's shape): 'unknown field' alone read like a typo.
        # One text shared by every unknown field's problem (a junk body had one fresh copy per key), when listed.
        self._unknown = (f"unknown field (accepted: {', '.join(self.accepted)})"
                         if len(self.accepted) <= LISTED_FIELDS else None)
        self._not_inputs = {**{f.name: f"the dataset's {f.role}" if f.role == "target" else "metadata of the dataset"
                               for f in schema.fields if f.role in ("target", "metadata") and f is not self.patient},
                            **{name: "a column the dataset's config excludes" for name in schema.exclude}}

    @property
    def accepted(self) -> list[str]:
        return [self.id_field, *self.fields, *([self.patient.name] if self.patient is not None else [])]

    def _terms(self) -> frozenset[str]:
        return (self._ontology or load_ontology()).known_terms

    def _well_formed_terms(self) -> frozenset[str]:
        """The known HPO ids that are also well formed (all of them in the HPO), loaded on first use."""
        found = self.__dict__.get("_well_formed")
        if found is None:
            found = self.__dict__["_well_formed"] = frozenset(t for t in self._terms() if HPO_ID.fullmatch(t))
        return found

    def _fast_check(self, f: Field) -> Callable[[Any], Any]:
        """The value parsed, for a plainly valid value of ``f`` (the JSON types the field expects, in range or
        known); :data:`NOT_PLAIN` for anything else, which :meth:`_value` then judges and explains."""
        if f.type in ("number", "integer"):
            low = -FEATURE_NUMBER_MAX if f.min is None else f.min
            high = FEATURE_NUMBER_MAX if f.max is None else f.max
            if f.name in self._spreads:  # beyond them, the full check explains why
                plausible = served_bounds(self._spreads[f.name])
                low, high = max(low, plausible[0]), min(high, plausible[1])
            integer = f.type == "integer"

            def number(value: Any) -> Any:
                kind = type(value)
                if kind is float:
                    if low <= value <= high and math.isfinite(value) and (
                            not integer or (value.is_integer() and abs(value) < EXACT_INTEGER_LIMIT)):
                        return value
                elif kind is int and -EXACT_FLOATS < value < EXACT_FLOATS and low <= value <= high:
                    return float(value)
                return NOT_PLAIN
            return number
        if f.type == "boolean":
            return lambda value: value if value is True or value is False else NOT_PLAIN
        if f.type == "hpo_terms":
            def terms(value: Any) -> Any:
                if type(value) is list and all(type(x) is str for x in value) \
                        and self._well_formed_terms().issuperset(value):
                    return list(value)
                return NOT_PLAIN
            return terms
        if f.type == "codes":
            match = CODE.fullmatch
            return lambda value: list(value) if type(value) is list and all(
                type(x) is str and match(x) for x in value) else NOT_PLAIN
        allowed = frozenset(f.values) if f.type == "category" and f.values is not None else None
        return lambda value: value if type(value) is str and (value in allowed if allowed is not None else (
            is_clean_text(value) and "\x00" not in value)) else NOT_PLAIN

    def to_json_schema(self) -> dict[str, Any]:
        """A JSON Schema of one patient record, for clients and docs."""
        props: dict[str, Any] = {self.id_field: {"type": "string"}}
        if self.patient is not None:
            # the patient this row belongs to (not an input of the model); no description: clients read it as a unit
            props[self.patient.name] = {"type": ["integer" if self.patient.type == "integer" else "string", "null"],
                                        "title": f"Patient ({self.patient.name})"}
        for f in self.fields.values():
            if f.type in ("number", "integer"):
                prop: dict[str, Any] = {"type": ["number" if f.type == "number" else "integer", "null"]}
                if f.min is not None:
                    prop["minimum"] = f.min
                if f.max is not None:
                    prop["maximum"] = f.max
            elif f.type == "boolean":
                prop = {"type": ["boolean", "null"]}
            elif f.type in ("hpo_terms", "codes"):
                prop = {"type": "array", "items": {"type": "string"}}
                if f.type == "hpo_terms":
                    prop["items"]["pattern"] = HPO_ID.pattern
            else:
                prop = {"type": ["string", "null"]}
                if f.values:
                    prop["enum"] = [*f.values, None]
            if f.unit:
                prop["description"] = f.unit
            props[f.name] = prop
        return {"type": "object", "properties": props, "additionalProperties": False}

    def validate(self, row: int, record: Any, *, text: bool = False) -> tuple[dict[str, Any], list[Problem]]:
        """A clean record (every feature present, missing as None) and the problems found."""
        problems: list[Problem] = []
        if not isinstance(record, dict):
            return {}, [Problem(row, None, f"a patient record must be a JSON object, got {type(record).__name__}")]
        clean: dict[str, Any] = {self.id_field: None}
        if type(record) is RepeatedKeys:  # {"age": 200, "age": 40}: which one was meant is not known
            problems.extend(Problem(row, str(key), "given twice") for key in record.repeated)
        if not self._keys.issuperset(record):
            if len(record) > len(self._keys) + MAX_LISTED_PROBLEMS:  # junk: one problem, not one per key
                return clean, [Problem(row, None, f"the record has {len(record):,} fields; the model has "
                                                  f"{len(self._keys)} inputs")]
            record = self._composed_keys(row, record, problems)
            for key in record:
                if key != self.id_field and key not in self.fields and (self.patient is None or key != self.patient.name):
                    problems.append(Problem(row, str(key), (
                        f"not an input of the model ({self._not_inputs[key]}): leave it out of the request"
                        if key in self._not_inputs else self._unknown_field(key))))
        rid = record.get(self.id_field)
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
            problems.append(Problem(row, self.id_field, f"must be a string, got {type(rid).__name__}"))
        # The id read as ingestion read the training file's ids: trimmed, composed.
        clean[self.id_field] = None if rid is None or (isinstance(rid, str) and (not rid or rid.isspace())) else (
            clean_text(rid) if isinstance(rid, str) else str(rid))
        present = 0
        for name, f, listed, fast, markers in self._checks:
            value = record.get(name)
            kind = type(value)
            # An empty list says nothing: a record of only "symptoms": [] has no inputs (refused below). A blank text
            # is missing in JSON as in CSV: never an unknown category '' (a prediction other than the missing one's).
            # The text test is is_missing_text's, inlined: a call per value cost this loop 11-32 %.
            if value is None or (kind is str and (not value or value.isspace() or (text and value.strip() in markers))) \
                    or (kind is list and not value):
                clean[name] = [] if listed else None
                continue
            present += 1
            parsed = fast(value)
            if parsed is NOT_PLAIN:
                parsed, problem = self._value(f, value, text)
                if problem:
                    problems.append(Problem(row, name, problem))
            clean[name] = parsed
        if self._patient_check is not None:
            problem = self._patient_problem(record, text)
            if problem:
                problems.append(Problem(row, self._patient_check[0].name, problem))
        if not present and not problems:
            problems.append(Problem(row, None, "the record has none of the model's input fields"))
        return clean, problems

    def _patient_problem(self, record: dict[Any, Any], text: bool) -> str | None:
        """What is wrong with the record's patient (None: nothing, or no patient given). A string or category
        column takes a JSON integer too, as the id does (it is written as its digits); the value itself is not
        kept in the clean record: the model never reads it, the captured request holds it."""
        assert self._patient_check is not None
        f, fast, markers = self._patient_check
        value = record.get(f.name)
        if value is None or (type(value) is str and (not value or value.isspace() or (text and value.strip() in markers))):
            return None
        if f.type != "integer" and type(value) is int and f.values is None:
            return None
        if fast(value) is not NOT_PLAIN:
            return None
        if f.type != "integer" and not isinstance(value, str):
            return f"the patient's id: expected a string or an integer, got {type(value).__name__} {shown(value)}"
        return self._value(f, value, text)[1]

    def _unknown_field(self, key: Any) -> str:
        """The problem of a field the model does not know: the accepted names, or for a model with many inputs the
        closest ones (a 172-column dataset's list, repeated by a hundred problems, made a 36 KB reply)."""
        if self._unknown is not None:
            return self._unknown
        close = difflib.get_close_matches(str(key), self.accepted, n=3)
        return f"unknown field (the model has {len(self.accepted)} inputs" + (
            f"; closest: {', '.join(close)})" if close else ")")

    def _composed_keys(self, row: int, record: dict[Any, Any], problems: list[Problem]) -> dict[Any, Any]:
        """The record with its field names read as ingestion read the training CSV's header (:class:`FieldNames`);
        a field given twice so is a problem."""
        out, twice = self._names.read(record)
        problems.extend(Problem(row, name, f"given twice (once {how})") for name, how in twice)
        return out

    def _value(self, f: Field, value: Any, text: bool) -> tuple[Any, str | None]:
        if f.type in ("number", "integer"):
            if text and isinstance(value, str):
                # What ingestion reads as a number (NUMBER_TEXT): float() also reads '1_0' and other scripts' digits.
                # ASCII without '_' is what float() and NUMBER_TEXT both read, at a third of the regex's cost.
                try:
                    if not value.isascii() or "_" in value:
                        raise ValueError(value)
                    value = float(value)
                except ValueError:
                    spelled = number_spelling(value)  # '1,657.0', '10,6', '124 mg/dL': ingestion's [csv] may read them
                    return None, f"expected a number, got {shown(value, 40)}" + (
                        f" ({spelled}; the endpoint reads a number written 1234.5: a decimal point, no thousands "
                        "separator, no unit)" if spelled else "")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None, f"expected a number, got {type(value).__name__} {shown(value, 40)}"
            try:
                number = float(value)
            except OverflowError:
                return None, "number too large"
            if not math.isfinite(number):
                return None, f"expected a finite number, got {number}"
            if abs(number) > FEATURE_NUMBER_MAX:
                return None, f"number out of range: {number:g} (the model's features are 32-bit floats: -3.4e38 to 3.4e38)"
            if f.type == "integer" and not number.is_integer():
                return None, f"expected an integer, got {number:g}"
            if f.type == "integer" and abs(number) >= EXACT_INTEGER_LIMIT:  # as ingestion quarantines it
                return None, (f"not an exact integer: {shown(value, 40)} (from 2^53 on, numbers lose their last "
                              "digits: an identifier or a code is a string)")
            if (f.min is not None and number < f.min) or (f.max is not None and number > f.max):
                low = "-inf" if f.min is None else f"{f.min:g}"
                high = "inf" if f.max is None else f"{f.max:g}"
                unit = f" {f.unit}" if f.unit else ""
                return None, f"impossible value {number:g} (possible range {low} to {high}{unit})"
            spread = self._spreads.get(f.name)
            if spread is not None and not served_bounds(spread)[0] <= number <= served_bounds(spread)[1]:
                # as ingestion quarantines it: 1e12 on a column of single digits got a confident answer
                return None, implausible_reason(f.name, number, spread, training=True)
            return number, None
        if f.type == "boolean":
            truth = boolean_text(value) if text and isinstance(value, str) else None
            if truth is not None:
                return truth, None
            if not isinstance(value, bool):
                return None, (f"expected true or false ({BOOLEAN_SPELLINGS}), got {shown(value)}" if text else
                              f"expected true or false, got {shown(value)}"
                              + (" (a JSON boolean: the text is read so only in a CSV cell)"
                                 if isinstance(value, str) and boolean_text(value) is not None else ""))
            return value, None
        if f.type in ("hpo_terms", "codes"):
            if text and isinstance(value, str):
                value = [x.strip() for x in value.split(LIST_SEPARATOR) if x.strip()]
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                return None, f"expected a list of strings, got {shown(value)}"
            if f.type == "hpo_terms":
                malformed = [x for x in value if not HPO_ID.fullmatch(x)]
                if malformed:
                    return None, f"malformed HPO id {shown(malformed[0])} (expected HP:nnnnnnn)"
                unknown = [x for x in value if x not in self._terms()]
                if unknown:
                    return None, f"unknown HPO term {shown(unknown[0])}"
            else:
                malformed = [x for x in value if not CODE.fullmatch(x)]
                if malformed:
                    return None, f"malformed code {shown(malformed[0])}"
            return list(value), None
        if not isinstance(value, str):
            return None, f"expected a string, got {type(value).__name__} {shown(value)}"
        if "\x00" in value:  # ingestion refuses the row (a damaged file): a retraining could not keep its feedback
            return None, "holds a NUL character (byte 0), which no CSV row keeps"
        value = clean_text(value)  # as ingestion read the training cells: 'M ' is 'M'
        if f.type == "category" and f.values is not None and value not in f.values:
            near = near_spelling(value, f.values)  # case and spaces are meaningful, as in ingestion: say so
            return None, f"unknown value {shown(value)} (expected one of: {', '.join(f.values)})" + (
                f"; {near[0]!r} {near[1]}" if near else "")
        return value, None
