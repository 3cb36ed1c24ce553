"""Doctors' feedback: the confirmed diagnosis of a captured prediction, by event id.

A feedback record is validated field by field (every problem reported at once, by field), then
written as its own object in the lake's ``feedback/`` zone — never overwriting: a second feedback
for the same event is a new object, and the monitor takes the latest (both are kept for audit).

Layout: ``feedback/<endpoint>/YYYY/MM/DD/HH/<event id>--<received UTC>--<random>.json`` (the time is
when the feedback arrived; the join with captures is by event id, whatever the dates).
"""
from __future__ import annotations

import json
import re
import unicodedata
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from diagnosa.labels import CATEGORIES
from diagnosa.lake import DataLake

ZONE = "feedback"
MAX_NOTE = 1000
MAX_SOURCE = 100
MAX_DISEASE_ID = 64
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Rare-disease knowledge bases: a confirmed disease id from one of these puts the case in the orphan slice.
ORPHAN_PREFIXES = ("ORPHA", "OMIM", "DECIPHER")
DISEASE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.-]+$")
REQUIRED = ("event_id", "diagnosis")
OPTIONAL = ("note", "source", "disease_id")
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class FeedbackError(ValueError):
    """A feedback body is not acceptable; ``fields`` maps each bad field to its problem."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        super().__init__("invalid feedback: " + "; ".join(f"{k}: {v}" for k, v in fields.items()))


@dataclass(frozen=True)
class Feedback:
    event_id: str
    diagnosis: str
    note: str | None = None
    source: str | None = None
    disease_id: str | None = None
    received_at: str | None = None  # ISO UTC, set when stored

    @property
    def orphan(self) -> bool | None:
        """True for a confirmed rare disease, False for another disease id, None when no id was given."""
        if not self.disease_id:
            return None
        return self.disease_id.split(":", 1)[0].upper() in ORPHAN_PREFIXES

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _label(value: str) -> str | None:
    """The category a text names: exact, or after Unicode NFC and case/space normalisation."""
    text = " ".join(unicodedata.normalize("NFC", value).split()).upper()
    return next((c for c in CATEGORIES if c == text), None)


def parse_feedback(body: Any) -> Feedback:
    """A validated Feedback from a decoded JSON body; FeedbackError lists every bad field."""
    if not isinstance(body, dict):
        raise FeedbackError({"body": f"must be a JSON object, got {type(body).__name__}"})
    problems: dict[str, str] = {}
    for key in body:
        if key not in REQUIRED + OPTIONAL:
            problems[str(key)[:100]] = f"unknown field (accepted: {', '.join(REQUIRED + OPTIONAL)})"
    event_id = body.get("event_id")
    if event_id is None:
        problems["event_id"] = "required"
    elif not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        problems["event_id"] = ("must be the X-Diagnosa-Event-Id of a prediction (letters, digits, '.', '_', ':', "
                                f"'-'; up to 128), got {str(event_id)[:60]!r}")
    diagnosis = body.get("diagnosis")
    label = None
    if diagnosis is None:
        problems["diagnosis"] = "required"
    elif not isinstance(diagnosis, str) or (label := _label(diagnosis)) is None:
        problems["diagnosis"] = f"must be one of {', '.join(CATEGORIES)}; got {str(diagnosis)[:60]!r}"
    for name, limit in (("note", MAX_NOTE), ("source", MAX_SOURCE)):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            problems[name] = f"must be a string of at most {limit} characters" + (
                f" (got {len(value)})" if isinstance(value, str) else f" (got {type(value).__name__})")
    disease_id = body.get("disease_id")
    if disease_id is not None and (not isinstance(disease_id, str) or len(disease_id) > MAX_DISEASE_ID
                                   or not DISEASE_ID.match(disease_id)):
        problems["disease_id"] = f"must look like ORPHA:558 or OMIM:154700 (up to {MAX_DISEASE_ID}), got {str(disease_id)[:60]!r}"
    if problems:
        raise FeedbackError(problems)
    assert label is not None
    return Feedback(event_id, label, body.get("note"), body.get("source"), disease_id)


def _check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not _NAME.match(endpoint):
        raise ValueError(f"endpoint name {endpoint!r} is not a valid SageMaker name")
    return endpoint


def feedback_key(endpoint: str, event_id: str, when: datetime) -> str:
    stamp = when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond:06d}Z"
    return f"{ZONE}/{_check_endpoint(endpoint)}/{when:%Y/%m/%d/%H}/{event_id}--{stamp}--{uuid.uuid4().hex[:12]}.json"


def store_feedback(lake: DataLake, endpoint: str, feedback: Feedback, *, now: datetime | None = None) -> str:
    """Write one feedback object (never overwriting another); returns its lake key."""
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    record = Feedback(**{**asdict(feedback), "received_at": when.isoformat(timespec="microseconds")})
    key = feedback_key(endpoint, feedback.event_id, when)
    if lake.exists(key):  # a random suffix makes this practically impossible; refuse rather than overwrite
        raise FileExistsError(f"feedback object {key} already exists")
    lake.put_json(key, {"endpoint": endpoint, **record.to_dict()})
    return key


@dataclass
class FeedbackRead:
    latest: dict[str, Feedback]  # event id → latest feedback
    records: int  # readable feedback objects
    superseded: int  # older feedback for an event that has a newer one
    problems: Counter[str]  # reason → count of unreadable objects
    examples: dict[str, list[str]]


def read_feedback(lake: DataLake, endpoint: str) -> FeedbackRead:
    """All feedback for ``endpoint``; the latest per event id wins (by received time, then key)."""
    prefix = f"{ZONE}/{_check_endpoint(endpoint)}/"
    problems: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    found: dict[str, list[tuple[str, str, Feedback]]] = {}
    records = 0

    def bad(reason: str, key: str) -> None:
        problems[reason] += 1
        examples.setdefault(reason, [])
        if len(examples[reason]) < 5:
            examples[reason].append(key)

    for key in lake.list(prefix):
        if not key.endswith(".json"):
            bad("not a feedback object (.json)", key)
            continue
        try:
            body = json.loads(lake.get_bytes(key).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            bad("feedback object is not valid JSON", key)
            continue
        if not isinstance(body, dict):
            bad("feedback object is not a JSON object", key)
            continue
        received = body.get("received_at")
        content = {k: v for k, v in body.items() if k in REQUIRED + OPTIONAL}
        try:
            item = parse_feedback(content)
        except FeedbackError as err:
            bad("invalid feedback: " + ", ".join(sorted(err.fields)), key)
            continue
        records += 1
        item = Feedback(**{**asdict(item), "received_at": received if isinstance(received, str) else None})
        found.setdefault(item.event_id, []).append((item.received_at or "", key, item))
    latest = {event: max(items, key=lambda t: (t[0], t[1]))[2] for event, items in found.items()}
    superseded = sum(len(items) - 1 for items in found.values())
    return FeedbackRead(latest, records, superseded, problems, examples)
