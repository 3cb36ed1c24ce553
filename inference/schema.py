"""The request schema of the endpoint, generated from the model's own metadata.

Serving validates one record at a time in plain Python: a pandas pass costs milliseconds per
request, which a single-patient call cannot afford. The rules are the schema fields the curated
dataset declared (types, limits, allowed values), so what ingestion accepts is what the endpoint
accepts; the problems name the row, the field and what is wrong, for a 4xx body.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from diagnosa.data.hpo import HPO_ID, Ontology, load_ontology
from diagnosa.data.schema import Field, Schema
from diagnosa.data.validate import CODE, FALSE_TEXT, LIST_SEPARATOR, TRUE_TEXT


@dataclass(frozen=True)
class Problem:
    row: int
    field: str | None
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "problem": self.problem}


class RequestSchema:
    """Feature fields (plus the optional id) a request may carry; everything else is refused."""

    def __init__(self, schema: Schema, ontology: Ontology | None = None):
        self.schema = schema
        self.id_field = schema.id_column
        self.fields: dict[str, Field] = {f.name: f for f in schema.fields if f.role == "feature"}
        self._ontology = ontology

    @property
    def accepted(self) -> list[str]:
        return [self.id_field, *self.fields]

    def _terms(self) -> frozenset[str]:
        return (self._ontology or load_ontology()).known_terms

    def to_json_schema(self) -> dict[str, Any]:
        """A JSON Schema of one patient record, for clients and docs."""
        props: dict[str, Any] = {self.id_field: {"type": "string"}}
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
        for key in record:
            if key != self.id_field and key not in self.fields:
                problems.append(Problem(row, str(key), f"unknown field (accepted: {', '.join(self.accepted)})"))
        rid = record.get(self.id_field)
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
            problems.append(Problem(row, self.id_field, f"must be a string, got {type(rid).__name__}"))
        clean[self.id_field] = None if rid is None or rid == "" else str(rid)
        present = 0
        for name, f in self.fields.items():
            value = record.get(name)
            # An empty list says nothing: a record of only "symptoms": [] has no inputs (refused below).
            if value is None or (text and value == "") or (isinstance(value, list) and not value):
                clean[name] = [] if f.type in ("hpo_terms", "codes") else None
                continue
            present += 1
            parsed, problem = self._value(f, value, text)
            if problem:
                problems.append(Problem(row, name, problem))
            clean[name] = parsed
        if not present and not problems:
            problems.append(Problem(row, None, "the record has none of the model's input fields"))
        return clean, problems

    def _value(self, f: Field, value: Any, text: bool) -> tuple[Any, str | None]:
        if f.type in ("number", "integer"):
            if text and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    return None, f"expected a number, got {value!r}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None, f"expected a number, got {type(value).__name__} {str(value)[:40]!r}"
            try:
                number = float(value)
            except OverflowError:
                return None, "number too large"
            if not math.isfinite(number):
                return None, f"expected a finite number, got {number}"
            if f.type == "integer" and not number.is_integer():
                return None, f"expected an integer, got {number:g}"
            if (f.min is not None and number < f.min) or (f.max is not None and number > f.max):
                low = "-inf" if f.min is None else f"{f.min:g}"
                high = "inf" if f.max is None else f"{f.max:g}"
                unit = f" {f.unit}" if f.unit else ""
                return None, f"impossible value {number:g} (possible range {low} to {high}{unit})"
            return number, None
        if f.type == "boolean":
            if text and isinstance(value, str) and value.strip().lower() in TRUE_TEXT | FALSE_TEXT:
                return value.strip().lower() in TRUE_TEXT, None
            if not isinstance(value, bool):
                return None, f"expected true or false, got {value!r}"
            return value, None
        if f.type in ("hpo_terms", "codes"):
            if text and isinstance(value, str):
                value = [x.strip() for x in value.split(LIST_SEPARATOR) if x.strip()]
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                return None, f"expected a list of strings, got {value!r}"
            if f.type == "hpo_terms":
                malformed = [x for x in value if not HPO_ID.match(x)]
                if malformed:
                    return None, f"malformed HPO id {malformed[0]!r} (expected HP:nnnnnnn)"
                unknown = [x for x in value if x not in self._terms()]
                if unknown:
                    return None, f"unknown HPO term {unknown[0]!r}"
            else:
                malformed = [x for x in value if not CODE.match(x)]
                if malformed:
                    return None, f"malformed code {malformed[0]!r}"
            return list(value), None
        if not isinstance(value, str):
            return None, f"expected a string, got {type(value).__name__} {value!r}"
        if f.type == "category" and f.values is not None and value not in f.values:
            return None, f"unknown value {value!r} (expected one of: {', '.join(f.values)})"
        return value, None
