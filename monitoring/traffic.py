"""Captured traffic → one row per patient: the request's fields, the predicted category, the event.

Reads what ``inference/capture.py`` (or SageMaker's own data capture) wrote. Nothing is dropped
silently: every line or event that cannot be used is counted under a reason (``Skipped``), with a
few examples naming the object and line.
"""
from __future__ import annotations

import csv
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Collection, Iterable, Mapping, NamedTuple

import pandas as pd

from diagnosa.data.schema import FieldNames, clean_text, is_missing_text
from diagnosa.data.validate import LIST_SEPARATOR, boolean_text
from diagnosa.lake import DataLake
from inference.answers import answer_predictions
from inference.capture import (
    LONE_SURROGATE_ID,
    CaptureRead,
    decode_payload,
    lone_surrogate,
    parse_time,
    read_capture,
)
from inference.handler import Body, NotText, RequestError, read_body

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
    # A request's inference id → the event id of its copy kept (:func:`by_inference_id`): feedback recorded under the
    # inference id (the doctors' app over SageMaker, which returns no event id) confirms that event's patient.
    by_inference: dict[str, str] = field(default_factory=dict)
    # Every event id and inference id the capture events read carry (those left out too: a retried copy, a request
    # another version answered or none could read, an inference id two requests carry): :meth:`feedback_ids`.
    seen_ids: set[str] = field(default_factory=set)

    def feedback_ids(self) -> frozenset[str]:
        """The ids feedback about this traffic can be recorded under (``read_feedback(ids=...)``): each event id read
        (kept, dropped, another version's, a retried copy and the copy kept) and each inference id (one naming two
        requests too: its feedback is read and counted as naming no one request, as before)."""
        rows = self.rows["event_id"].unique() if "event_id" in self.rows else ()
        return frozenset({*self.seen_ids, *map(str, rows), *self.dropped,
                          *self.other_models, *self.retried, *self.retried.values(), *self.by_inference})

    def other_versions(self) -> dict[str, Any]:
        """What was left out as answered by another model version: requests, patients, requests by version."""
        return {"requests": len(self.other_models), "patients": self.other_patients,
                "by_version": dict(Counter(self.other_models.values()).most_common())}


class LoneSurrogate(ValueError):
    """A captured text holds a lone UTF-16 surrogate: no table of Arrow strings, report or CSV file can hold it."""


class UnreadableRequest(ValueError):
    """A captured request the endpoint's reader refuses (the reason is its refusal's message)."""


UNREADABLE_INPUT = "input is not a readable JSON or CSV request"
# What reading one captured body may raise, each counted under a reason (never a crash of the monitor or retraining):
# the reader's refusals; a body that is not base64 (binascii.Error is a ValueError) or not text.
READ_ERRORS = (ValueError, UnicodeError, RecursionError, csv.Error)


LONE_SURROGATE = "a lone UTF-16 surrogate (a '\\ud800' escape) in the captured event: no UTF-8 text can hold it"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how one gets into a JSON text written as ASCII


def json_payload(text: str) -> Any:
    """``text`` parsed as JSON; a LoneSurrogate when a string in it decodes to a lone surrogate (JSON allows the
    escape: one such line made the whole table build fail). JSON nested too deeply for the parser is a ValueError
    too, for every reader (a RecursionError from one captured body took down the monitor and retraining)."""
    try:
        payload = json.loads(text)
        if (_SURROGATE_ESCAPE.search(text) or lone_surrogate(text)) and _holds_lone_surrogate(payload):
            raise LoneSurrogate("a text in it holds a lone UTF-16 surrogate")
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    return payload


NO_PREDICTIONS = "output holds no predictions (neither a JSON nor a CSV answer of the endpoint's)"


def _holds_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return lone_surrogate(value)
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(k) or _holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_lone_surrogate(v) for v in value)
    return False


def read_request(body: bytes, content_type: str, fields: Collection[str] = ()) -> Body:
    """A captured request read exactly as the endpoint read it when it answered (inference.handler.read_body: its
    decoding, byte-order mark, line ends, blank CSV rows, JSON): the records it scored and its options. A reader of
    its own here read a lone-CR CSV the endpoint answered as a csv.Error that stopped the monitor, and a BOM before a
    CSV's first field name as a field named '\ufeffage'. A body the endpoint refuses is an UnreadableRequest (a
    LoneSurrogate for a lone UTF-16 surrogate in it), with the endpoint's reason. ``fields``: the model's field names
    (the endpoint takes a header of one of them for a field, not for a ';'-separated header)."""
    try:
        return read_body(body, content_type, frozenset(fields))
    except NotText as err:
        raise LoneSurrogate(err.message) from None
    except RequestError as err:
        raise UnreadableRequest(err.message) from None


def request_records(body: bytes, content_type: str, fields: Collection[str] = ()) -> list[Any]:
    """The patient records of a captured request, as the endpoint read them (:func:`read_request`)."""
    return read_request(body, content_type, fields).records


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


def named_ids(events: Iterable[Any]) -> set[str]:
    """Every event id and inference id capture events carry."""
    ids: set[str] = set()
    for event in events:
        meta = event.get("eventMetadata") if isinstance(event, dict) else None
        if isinstance(meta, dict):
            ids.update(value for value in (meta.get("eventId"), meta.get("inferenceId")) if isinstance(value, str) and value)
    return ids


def traffic_from_events(events: Iterable[dict[str, Any]], kinds: dict[str, str], skipped: Skipped | None = None,
                        missing: Mapping[str, Iterable[str]] | None = None, model_version: str | None = None,
                        patient: str | None = None) -> Traffic:
    """Rows for the monitor from capture events; ``kinds`` maps each field to numeric/category/boolean/terms,
    ``missing`` to the CSV texts that mean missing (default: none but the empty cell). With ``model_version``, only
    the requests that version answered: those another version answered are left out and counted
    (``Traffic.other_models``); an answer that names no version is kept. ``patient``: the request field naming each
    row's patient (a dataset of visits), read into the column ``PATIENT`` (:func:`patient_key`; None: not named)."""
    markers = {name: frozenset((missing or {}).get(name, ())) for name in kinds}
    columns = ["event_id", "row", "rows_in_event", "inference_time", "predicted", *kinds,
               *([PATIENT] if patient is not None else [])]
    names = FieldNames([*kinds, *([patient] if patient is not None else [])])  # as the endpoint read them
    patient_markers = frozenset((missing or {}).get(patient, ())) if patient is not None else frozenset()
    # Field → the record's key it is read from, per layout of keys: how a name is read depends on the keys alone, and
    # a client sends every request with the same ones (reading each record's names was a tenth of the table's build).
    layouts: dict[tuple[Any, ...], dict[Any, Any]] = {}
    skipped = skipped or Skipped()
    events = list(events)
    count = len(events)
    seen_ids = named_ids(events)  # what feedback about these events may be recorded under (Traffic.feedback_ids)
    type_errors: Counter[str] = Counter()
    rows: list[list[Any]] = []  # in ``columns``' order: a list per patient takes a fifth of a dict's memory
    dropped: dict[str, str] = {}
    events, retried = distinct_requests(events, skipped, dropped)
    other_models: dict[str, str] = {}
    other_patients = 0

    def drop(reason: str, example: str, n: int = 1) -> None:
        skipped.add(reason, example, n)
        dropped[event_id] = reason
    for event in events:
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
            request = read_request(decode_payload(data["endpointInput"]), content_type, kinds)
            records = request.records
        except (LoneSurrogate, UnicodeEncodeError) as err:  # one such line failed the whole table's build
            drop(LONE_SURROGATE, f"{where}: input: {err}")
            continue
        except READ_ERRORS as err:
            drop(UNREADABLE_INPUT, f"{where}: {err}")
            continue
        try:
            # In the media the endpoint answered in: a CSV answer (Accept: text/csv) was read as JSON, and every
            # patient of it dropped from drift, live quality and retraining.
            output = data["endpointOutput"]
            predictions = answer_predictions(decode_payload(output), output.get("observedContentType"), json_payload)
        except (LoneSurrogate, UnicodeEncodeError) as err:
            drop(LONE_SURROGATE, f"{where}: output: {err}")
            continue
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError) as err:
            drop(NO_PREDICTIONS, f"{where}: {err}")
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
        text = request.text  # CSV cells: texts, read as the endpoint read them
        when = meta.get("inferenceTime")
        for i, (record, prediction) in enumerate(zip(records, predictions)):
            if not isinstance(record, dict):
                skipped.add("a patient record is not a JSON object", f"{where} row {i}")
                continue
            category = prediction.get("category") if isinstance(prediction, dict) else None
            row: list[Any] = [event_id, i, len(records), when, category]
            keys = tuple(record)
            layout = layouts.get(keys)
            if layout is None:
                layout = layouts[keys] = names.read({key: key for key in keys})[0]
            for name, kind in kinds.items():
                value = record[layout[name]] if name in layout else None
                # Most values: a JSON number (no bool) is what _coerce makes a float of; a million calls were a fifth.
                if kind == "numeric" and (type(value) is float or type(value) is int):
                    row.append(float(value))
                    continue
                value, ok = _coerce(kind, value, text, markers[name])
                if not ok:
                    type_errors[name] += 1
                row.append(value)
            if patient is not None:
                row.append(patient_key(record[layout[patient]] if patient in layout else None, text, patient_markers))
            rows.append(row)
    return Traffic(pd.DataFrame(rows, columns=columns), count, skipped, type_errors, dropped, other_models,
                   other_patients, retried, by_inference_id(events, retried), seen_ids)


PATIENT = "\x00patient"  # the traffic table's column of each row's patient: no field of a dataset can be named so


def patient_key(value: Any, text: bool, missing: frozenset[str] = frozenset()) -> str | None:
    """A request's patient value as ingestion read the patient column: text trimmed and its accents composed, a
    whole number as its digits; None for no patient (absent, blank, a CSV cell's missing marker, a value the
    endpoint refuses)."""
    if isinstance(value, str):
        value = clean_text(value)
        return None if not value or (text and value in missing) else value
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return None


class EventPatients(NamedTuple):
    """One captured event's patients in ``Traffic.rows``."""
    patients: int  # how many its request held
    positions: dict[int, int | None]  # row in the request → position in the table (None: listed twice)


EventRows = dict[str, EventPatients]  # event id → its patients


def event_rows(rows: pd.DataFrame) -> EventRows:
    """Where each event's patients are in ``rows`` (a ``Traffic.rows`` table), read once from its columns: the one
    lookup of the monitor's and retraining's feedback joins, which pick a patient's row by its position. (A groupby
    into one small DataFrame per event, then a filter per feedback, took 13 s and 120 MB for 50k events.) A request's
    patient count is its first row's, as the groupby's first row gave it; a row listed twice names no one patient."""
    index: EventRows = {}
    if not len(rows):
        return index
    columns = zip(rows["event_id"].tolist(), rows["row"].tolist(), rows["rows_in_event"].tolist())
    for position, (event_id, row, patients) in enumerate(columns):
        found = index.get(event_id)
        if found is None:
            found = index[event_id] = EventPatients(int(patients), {})
        found.positions[row] = None if row in found.positions else position
    return index


RETRIED = "a retried request (the same inference id captured again later): counted once"
DUPLICATE = "an event captured twice (the same event id and line in two capture objects): counted once"
CONFLICTING = "one event id captured with different contents (which request its feedback is about is unknown)"
MISFILED = ("a capture line filed over an hour away from its inferenceTime's hour, outside this window: a report "
            "of its own hour may not read it")
_NO_TIME = datetime.min.replace(tzinfo=timezone.utc)


def distinct_requests(events: list[dict[str, Any]], skipped: Skipped, dropped: dict[str, str] | None = None
                      ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(the events, each captured event once, in order; :func:`retried_copies` of them): the one home of what every
    reader of captured traffic (the monitor, both retrainings) counts once. An exact copy of an event (a capture
    object shipped or copied twice) is left out, counted under DUPLICATE: it counted as a second patient, and its
    feedback matched two rows and was refused. Every copy of an event id captured with different contents is left
    out (``dropped``: event id → reason), counted under CONFLICTING: no feedback can say which it is about."""
    first: dict[str, dict[str, Any]] = {}
    conflicting: set[str] = set()
    kept: list[dict[str, Any]] = []
    for event in events:
        event_id = (event.get("eventMetadata") or {}).get("eventId")
        if not isinstance(event_id, str):
            kept.append(event)
            continue
        if event_id not in first:
            first[event_id] = event
            kept.append(event)
        elif event == first[event_id]:
            skipped.add(DUPLICATE, f"event {event_id}")
        else:
            conflicting.add(event_id)
    if conflicting:
        copies = Counter((e.get("eventMetadata") or {}).get("eventId") for e in events)
        for event_id in sorted(conflicting):
            skipped.add(CONFLICTING, f"event {event_id}: {copies[event_id]} captures", copies[event_id])
            if dropped is not None:
                dropped[event_id] = CONFLICTING
        kept = [e for e in kept if (e.get("eventMetadata") or {}).get("eventId") not in conflicting]
    return kept, retried_copies(kept)


def onto_kept_copies(feedback: Iterable[Any], retried: Mapping[str, str],
                     by_inference: Mapping[str, str] | None = None) -> list[Any]:
    """Feedback (``inference.feedback.Feedback``) with an earlier copy of a retried request's event id moved onto the
    copy kept (``retried``: :func:`retried_copies`): one inference id and one body are one patient, so a doctor's
    diagnosis recorded against either copy confirms it. It was accepted (201) and then never used; feedback on both
    copies is one patient's twice, the later received winning. Feedback naming a request by its inference id
    (``by_inference``: :func:`by_inference_id`) is moved onto that request's event the same way."""
    by_inference = by_inference or {}
    return [replace(item, event_id=retried[item.event_id]) if item.event_id in retried
            else replace(item, event_id=by_inference[item.event_id]) if item.event_id in by_inference
            else item for item in feedback]


def by_inference_id(events: list[dict[str, Any]], retried: Mapping[str, str]) -> dict[str, str]:
    """Inference id → the event id of the request it names (its copy kept, ``retried`` left out), for every inference
    id that names one request: SageMaker returns the client no event id, but captures the InferenceId the client gave
    (the doctors' app gives one per prediction), so a confirmed diagnosis recorded under it can be joined. An id
    given to requests with different bodies (a client naming a visit) names no one request: left out."""
    named: dict[str, set[str]] = {}
    for event in events:
        meta = event.get("eventMetadata") or {}
        inference_id, event_id = meta.get("inferenceId"), meta.get("eventId")
        if isinstance(inference_id, str) and inference_id and isinstance(event_id, str) and event_id not in retried:
            named.setdefault(inference_id, set()).add(event_id)
    return {inference_id: next(iter(ids)) for inference_id, ids in named.items() if len(ids) == 1}


def _captured_at(meta: Mapping[str, Any]) -> datetime:
    """The event's inference time as a UTC instant (none or unreadable: before every other)."""
    try:
        return parse_time(meta.get("inferenceTime"))
    except ValueError:
        return _NO_TIME


def retried_copies(events: list[dict[str, Any]]) -> dict[str, str]:
    """Event id → event id of the copy kept, for every capture of one request but its last (by inference time,
    then capture order): the client's retries. One request is one inference id with the same body; events without
    an inference id are distinct, and so are different bodies under one id (a client may name a visit with it).
    Times are compared as instants: as text, '10:00:01Z' came after '10:00:01.900Z', and '+02:00' or a space for
    the 'T' misordered copies too."""
    last: dict[tuple[str, str, str], tuple[datetime, int, str]] = {}
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
        key = (_captured_at(meta), order, event_id)
        if request not in last or key[:2] >= last[request][:2]:
            last[request] = key
    return {event_id: last[request][2] for request, ids in copies.items() if len(ids) > 1
            for event_id in ids if event_id != last[request][2]}


def read_traffic(lake: DataLake, endpoint: str, start: datetime | None, end: datetime | None,
                 kinds: dict[str, str], variant: str | None = None,
                 missing: Mapping[str, Iterable[str]] | None = None, model_version: str | None = None,
                 ids: Collection[str] | None = None, patient: str | None = None) -> Traffic:
    """Captured traffic of ``endpoint`` in ``[start, end)`` with the capture problems counted (with
    ``model_version``: that version's, the others counted; with ``ids``, only the requests they name, as
    :func:`~inference.capture.read_capture` reads them; ``patient``: the field naming each row's patient)."""
    return _traffic(read_capture(lake, endpoint, start, end, variant, ids), kinds, missing, model_version, patient)


def read_traffic_since(lake: DataLake, endpoint: str, start: datetime, earlier: datetime, end: datetime | None,
                       kinds: dict[str, str], missing: Mapping[str, Iterable[str]] | None = None,
                       model_version: str | None = None, patient: str | None = None) -> tuple[Traffic, Traffic]:
    """The traffic of ``[start, end)`` and that of ``[earlier, end)`` (``earlier <= start``), from one read of the
    capture: the monitor judges drift on the first and live quality on the second, whose older requests' feedback
    may have come since their own window's report. The capture problems are counted in both."""
    if earlier > start:
        raise ValueError(f"the quality window's start {earlier.isoformat()} is after the window's {start.isoformat()}")
    read = read_capture(lake, endpoint, earlier, end)
    recent = replace(read, events=[event for event in read.events
                                   if parse_time(event["eventMetadata"].get("inferenceTime")) >= start])
    return (_traffic(recent, kinds, missing, model_version, patient),
            _traffic(read, kinds, missing, model_version, patient))


def _traffic(read: CaptureRead, kinds: dict[str, str], missing: Mapping[str, Iterable[str]] | None,
             model_version: str | None, patient: str | None = None) -> Traffic:
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
    for line in read.misfiled:
        skipped.add(MISFILED, line)
    return traffic_from_events(read.events, kinds, skipped, missing, model_version, patient)


def _reason_kind(why: str) -> str:
    """Group free-text parse errors into a few stable reasons (examples keep the details)."""
    # The time's first: "Invalid isoformat string" starts as JSON's "Invalid control character" does.
    if why.startswith("inferenceTime") or "isoformat" in why:
        return "bad inferenceTime"
    if why.startswith(("Expecting", "Unterminated", "Extra data", "Invalid", "'utf-8'")):
        return "not JSON"
    if why.startswith(LONE_SURROGATE_ID):
        return LONE_SURROGATE_ID
    return why.split(" (")[0][:80]
