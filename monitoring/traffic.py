"""Captured traffic → one row per patient: the request's fields, the predicted category, the event.

Reads what ``inference/capture.py`` (or SageMaker's own data capture) wrote. Nothing is dropped
silently: every line or event that cannot be used is counted under a reason (``Skipped``), with a
few examples naming the object and line.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

import pandas as pd

from diagnosa.data.schema import FieldNames, clean_text, is_missing_text
from diagnosa.data.validate import LIST_SEPARATOR, boolean_text
from diagnosa.lake import DataLake
from inference.capture import decode_payload, read_capture

MAX_EXAMPLES = 5


@dataclass
class Skipped:
    """Counts of what could not be used, by reason, with up to MAX_EXAMPLES examples each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str, n: int = 1) -> None:
        self.counts[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append(example[:300])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": [{"reason": r, "count": c, "examples": self.examples.get(r, [])}
                                                   for r, c in self.counts.most_common()]}


@dataclass
class Traffic:
    rows: pd.DataFrame  # event_id, row, inference_time, predicted, <fields...>
    events: int  # capture events read (valid lines)
    skipped: Skipped
    type_errors: Counter[str] = field(default_factory=Counter)  # field → values of the wrong type
    dropped: dict[str, str] = field(default_factory=dict)  # event id → why none of its rows is here (counted above)
    # Requests another model version answered, left out (monitoring one version's traffic): event id → its version.
    other_models: dict[str, str] = field(default_factory=dict)
    other_patients: int = 0
    # Requests sent again with the same inference id (a client's retry after a timeout: SageMaker scored and
    # captured both): each earlier copy's event id → the copy kept, the last one, whose answer the client got.
    retried: dict[str, str] = field(default_factory=dict)

    def other_versions(self) -> dict[str, Any]:
        """What was left out as answered by another model version: requests, patients, requests by version."""
        return {"requests": len(self.other_models), "patients": self.other_patients,
                "by_version": dict(Counter(self.other_models.values()).most_common())}


def request_records(body: bytes, content_type: str) -> list[Any]:
    """The patient records of a captured request, as sent (a JSON object or array, ``instances``, or CSV rows)."""
    media = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8")
    if media == "application/json" or media.endswith("+json"):
        payload = json.loads(text)
        if isinstance(payload, dict) and "instances" in payload:
            payload = payload["instances"]
        records = payload if isinstance(payload, list) else [payload]
        return records
    if media == "text/csv":
        reader = csv.DictReader(io.StringIO(text))
        return [dict(row) for row in reader]
    raise ValueError(f"unsupported input content type {content_type!r}")


def _coerce(kind: str, value: Any, text: bool, missing: frozenset[str] = frozenset()) -> tuple[Any, bool]:
    """(value for the monitor, type ok), read as the endpoint read it (inference/schema.py): missing → None (a blank
    text; in CSV text one of ``missing``, the texts ingestion read as missing); text trimmed and its accents
    composed; a boolean's spellings ('sí', 'True') as 'true'/'false', the baseline's buckets."""
    if value is None or (isinstance(value, str) and is_missing_text(value, text, missing)):
        return ([] if kind == "terms" else None), True
    if kind == "numeric":
        if text and isinstance(value, str):
            try:
                return float(value), True
            except ValueError:
                return None, False
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, False
        return float(value), True
    if kind == "terms":
        if text and isinstance(value, str):
            value = [x.strip() for x in value.split(LIST_SEPARATOR) if x.strip()]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            return [], False
        return list(value), True
    if kind == "boolean":
        if isinstance(value, bool):
            return str(value).lower(), True
        truth = boolean_text(value) if text and isinstance(value, str) else None
        return (None, False) if truth is None else (str(truth).lower(), True)
    if isinstance(value, bool):
        return str(value).lower(), True
    if isinstance(value, str):
        return clean_text(value), True
    if isinstance(value, (int, float)):
        return str(value), True
    return None, False


def answered_by(predictions: list[Any]) -> str | None:
    """The model version a captured answer names (every prediction carries the answering model's ``model_version``);
    None when it names none (a capture written before answers carried it)."""
    versions = sorted({str(p["model_version"]) for p in predictions if isinstance(p, dict) and p.get("model_version")})
    return ", ".join(versions) or None


def traffic_from_events(events: Iterable[dict[str, Any]], kinds: dict[str, str], skipped: Skipped | None = None,
                        missing: Mapping[str, Iterable[str]] | None = None, model_version: str | None = None) -> Traffic:
    """Rows for the monitor from capture events; ``kinds`` maps each field to numeric/category/boolean/terms,
    ``missing`` to the CSV texts that mean missing (default: none but the empty cell). With ``model_version``, only
    the requests that version answered: those another version answered are left out and counted
    (``Traffic.other_models``); an answer that names no version is kept."""
    markers = {name: frozenset((missing or {}).get(name, ())) for name in kinds}
    names = FieldNames(kinds)  # the record's field names read as the endpoint read them
    skipped = skipped or Skipped()
    events = list(events)
    retried = retried_copies(events)
    type_errors: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    dropped: dict[str, str] = {}
    other_models: dict[str, str] = {}
    other_patients = 0
    count = 0

    def drop(reason: str, example: str, n: int = 1) -> None:
        skipped.add(reason, example, n)
        dropped[event_id] = reason
    for event in events:
        count += 1
        meta = event.get("eventMetadata", {})
        event_id = meta.get("eventId", "?")
        where = f"event {event_id}"
        if event_id in retried:  # one patient scored twice would count twice in every distribution
            drop(RETRIED, f"{where}: inference id {meta.get('inferenceId')!r} captured again as event "
                          f"{retried[event_id]}")
            continue
        data = event["captureData"]
        try:
            content_type = data["endpointInput"].get("observedContentType") or ""
            records = request_records(decode_payload(data["endpointInput"]), content_type)
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            drop("input is not a readable JSON or CSV request", f"{where}: {err}")
            continue
        try:
            output = json.loads(decode_payload(data["endpointOutput"]).decode("utf-8"))
            predictions = output["predictions"]
            if not isinstance(predictions, list):
                raise TypeError("'predictions' is not a list")
        except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:
            drop("output has no JSON predictions", f"{where}: {err}")
            continue
        if len(predictions) != len(records):
            drop("input and output hold different numbers of patients",
                 f"{where}: {len(records)} records, {len(predictions)} predictions", len(records) or 1)
            continue
        answered = answered_by(predictions) if model_version is not None else None
        if answered is not None and answered != model_version:
            other_models[event_id] = answered
            other_patients += len(records)
            continue
        text = content_type.split(";", 1)[0].strip().lower() == "text/csv"
        when = meta.get("inferenceTime")
        for i, (record, prediction) in enumerate(zip(records, predictions)):
            if not isinstance(record, dict):
                skipped.add("a patient record is not a JSON object", f"{where} row {i}")
                continue
            category = prediction.get("category") if isinstance(prediction, dict) else None
            row: dict[str, Any] = {"event_id": event_id, "row": i, "rows_in_event": len(records),
                                   "inference_time": when, "predicted": category}
            record = names.read(record)[0]
            for name, kind in kinds.items():
                value, ok = _coerce(kind, record.get(name), text, markers[name])
                if not ok:
                    type_errors[name] += 1
                row[name] = value
            rows.append(row)
    columns = ["event_id", "row", "rows_in_event", "inference_time", "predicted", *kinds]
    return Traffic(pd.DataFrame(rows, columns=columns), count, skipped, type_errors, dropped, other_models,
                   other_patients, retried)


RETRIED = "a retried request (the same inference id captured again later): counted once"
RETRIED_FEEDBACK = "feedback for an earlier copy of a retried request (its patient is judged on the copy kept)"


def retried_copies(events: list[dict[str, Any]]) -> dict[str, str]:
    """Event id → event id of the copy kept, for every capture of one request but its last (by inference time,
    then capture order): the client's retries. One request is one inference id with the same body; events without
    an inference id are distinct, and so are different bodies under one id (a client may name a visit with it)."""
    last: dict[tuple[str, str, str], tuple[str, int, str]] = {}
    copies: dict[tuple[str, str, str], list[str]] = {}
    for order, event in enumerate(events):
        meta = event.get("eventMetadata") or {}
        inference_id = meta.get("inferenceId")
        if not isinstance(inference_id, str) or not inference_id:
            continue
        body = (event.get("captureData") or {}).get("endpointInput") or {}
        request = (inference_id, str(body.get("data")), str(body.get("encoding")))
        event_id = str(meta.get("eventId", "?"))
        copies.setdefault(request, []).append(event_id)
        key = (str(meta.get("inferenceTime") or ""), order, event_id)
        if request not in last or key[:2] >= last[request][:2]:
            last[request] = key
    return {event_id: last[request][2] for request, ids in copies.items() if len(ids) > 1
            for event_id in ids if event_id != last[request][2]}


def read_traffic(lake: DataLake, endpoint: str, start: datetime | None, end: datetime | None,
                 kinds: dict[str, str], variant: str | None = None,
                 missing: Mapping[str, Iterable[str]] | None = None, model_version: str | None = None) -> Traffic:
    """Captured traffic of ``endpoint`` in ``[start, end)`` with the capture problems counted (with
    ``model_version``: that version's, the others counted)."""
    read = read_capture(lake, endpoint, start, end, variant)
    skipped = Skipped()
    for problem in read.problems:
        if problem.endswith(": not in the capture layout"):
            skipped.add("object not in the capture layout", problem)
        elif problem.endswith(": impossible date in the path"):
            skipped.add("impossible date in the capture path", problem)
        else:
            key, _, why = problem.partition(": ")
            reason = "malformed capture line: " + _reason_kind(why)
            skipped.add(reason, problem)
    return traffic_from_events(read.events, kinds, skipped, missing, model_version)


def _reason_kind(why: str) -> str:
    """Group free-text parse errors into a few stable reasons (examples keep the details)."""
    if why.startswith(("Expecting", "Unterminated", "Extra data", "Invalid", "'utf-8'")):
        return "not JSON"
    if why.startswith("inferenceTime") or "isoformat" in why or "Invalid isoformat" in why:
        return "bad inferenceTime"
    return why.split(" (")[0][:80]
