"""Doctors' feedback: the confirmed diagnosis of a captured prediction, by event id.

A feedback record is validated field by field (every problem reported at once, by field), then
written as the one object of its patient in the lake's ``feedback/`` zone:
``feedback/<endpoint>/events/<event id>.json``, or ``.../events/<event id>/<event row>.json`` for the patient at
``event_row`` (0 = the first) of a request of several patients. A second feedback for the same patient replaces it
atomically (the latest received wins) and the replaced records move into the object's
``revisions`` (newest first, at most MAX_REVISIONS), so repeated feedback cannot grow the zone. An object that
cannot be carried over whole (not UTF-8, not JSON, JSON nested too deeply to read, not a JSON object, revisions that
are not a list: not what store_feedback writes) is never lost when feedback is stored over it: its bytes are moved
aside to ``<its key>.damaged-<UTC time>-<random>`` (counted by the reader, hence the monitor's report), and what can be
read of it (the current record and revisions of a JSON object whose revisions are not a list) is kept as usual.

Which patient of a request a feedback confirms is resolved when it is joined with the captured request
(:func:`patient_row`): the request's only patient when no ``event_row`` is given, else the one at that row.

Lakes written before this layout hold one object per feedback,
``feedback/<endpoint>/YYYY/MM/DD/HH/<event id>--<received UTC>--<random>.json``; the reader takes
both, and the latest received record of an event wins across them.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta, timezone
from typing import Any

from diagnosa.data.schema import RESOURCE_NAME, FieldNames, clean_text
from diagnosa.data.validate import shown
from diagnosa.labels import CATEGORIES
from diagnosa.lake import DataLake, LakeError, ObjectNotFound
from inference.capture import FILING_MARGIN, event_time, fetch_in_order
from inference.limits import (
    MAX_RECORDS,
    RepeatedKeys,
    has_surrogate,
    json_problem,
    not_text,
    printable,
    surrogate_path,
)

log = logging.getLogger("diagnosa.feedback")

ZONE = "feedback"
EVENTS = "events"  # feedback/<endpoint>/events/<event id>.json: one object per event
MAX_REVISIONS = 10  # replaced records kept inside an event's object, for audit
STORE_ATTEMPTS = 50  # reads of an event's object by one store while other writers keep rewriting it
MAX_NOTE = 1000
MAX_SOURCE = 100
MAX_DISEASE_ID = 64
EVENT_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")  # \Z, fullmatch: "$" takes a final "\n"
# Rare-disease knowledge bases: a confirmed disease id from one of these puts the case in the orphan slice.
ORPHAN_PREFIXES = ("ORPHA", "OMIM", "DECIPHER")
DISEASE_ID = re.compile(r"\A[A-Za-z][A-Za-z0-9_]*:[A-Za-z0-9_.-]+\Z")
REQUIRED = ("event_id", "diagnosis")
OPTIONAL = ("event_row", "note", "source", "disease_id")
FEEDBACK_FIELDS = FieldNames(REQUIRED + OPTIONAL)
# Fields a body names that feedback does not accept (unknown, or a name that is not text): the first MAX_NAMED_FIELDS
# are named, the rest counted under MORE_FIELDS. A 16 KB body of 2,000 unknown keys was refused with all 2,000 named
# (twice: a 435 KB reply), and a file's line of 100,000 keys wrote 100,000 problems.
MAX_NAMED_FIELDS = 10
MORE_FIELDS = "…"  # the key of the problem counting the fields not named (the client's key for those it does not keep)


def more_fields(count: int) -> str:
    """The problem under MORE_FIELDS: how many more fields that feedback does not accept were not named."""
    return f"{count:,} more unknown field(s) not named here (accepted: {', '.join(REQUIRED + OPTIONAL)})"


class FeedbackError(ValueError):
    """A feedback body is not acceptable; ``fields`` maps each bad field to its problem (at most MAX_NAMED_FIELDS of
    the fields it does not accept, and then MORE_FIELDS: how many more there are; ``more`` counts them)."""

    def __init__(self, fields: dict[str, str], more: int = 0):
        self.fields = fields
        self.more = more
        super().__init__("invalid feedback: " + "; ".join(f"{k}: {v}" for k, v in fields.items()))


@dataclass(frozen=True)
class Feedback:
    event_id: str
    diagnosis: str
    note: str | None = None
    source: str | None = None
    disease_id: str | None = None
    received_at: str | None = None  # ISO UTC, set when stored
    event_row: int | None = None  # the patient's position in a request of several (0 = first); None: its only one

    @property
    def patient(self) -> tuple[str, int | None]:
        """What the feedback confirms, as given: (event id, event row or None)."""
        return self.event_id, self.event_row

    @property
    def where(self) -> str:
        """The patient as messages name it."""
        return self.event_id if self.event_row is None else f"{self.event_id} row {self.event_row}"

    @property
    def orphan(self) -> bool | None:
        """True for a confirmed rare disease, False for another disease id, None when no id was given."""
        if not self.disease_id:
            return None
        return self.disease_id.split(":", 1)[0].upper() in ORPHAN_PREFIXES

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _label(value: str, labels: Sequence[str] | None) -> str | None:
    """The label a text names: exact, or after Unicode NFC and space normalisation, or the one label it is but for
    case; any non-empty text when ``labels`` is None (feedback read back: its label was checked when stored)."""
    text = " ".join(unicodedata.normalize("NFC", value).split())
    if labels is None:
        return text or None
    if text in labels:
        return text
    folded = [label for label in labels if label.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


def parse_feedback(body: Any, labels: Sequence[str] | None = CATEGORIES) -> Feedback:
    """A validated Feedback from a decoded JSON body; FeedbackError lists every bad field. ``labels``: the model's
    (the built-in cohort's by default; a dataset of your own has its own)."""
    if not isinstance(body, dict):
        raise FeedbackError({"body": f"must be a JSON object, got {type(body).__name__}"})
    problems: dict[str, str] = {}
    others: set[str] = set()  # the fields named that feedback does not accept (at most MAX_NAMED_FIELDS)
    more = 0  # and those counted, not named

    def not_accepted(name: str, problem: str) -> None:
        nonlocal more
        if name in others or len(others) < MAX_NAMED_FIELDS:
            others.add(name)
            problems[name] = problem
        else:
            more += 1

    accepted = REQUIRED + OPTIONAL
    for key in body.repeated if isinstance(body, RepeatedKeys) else ():  # which value was meant is not known
        name = str(key)
        if name in accepted or (not has_surrogate(name) and clean_text(name) in accepted):
            problems[name[:100]] = "given twice"
        # any other key given twice is a field not accepted: named (or counted) as such below, once
    body, twice = FEEDBACK_FIELDS.read(body)  # ' diagnosis ' named as /invocations names a field: trimmed
    problems.update({name: f"given twice (once {how})" for name, how in twice})
    # Text only, as the route's load_json holds a whole body to (this is also the check of the CLI and its files):
    # a lone surrogate in a field's name or value is named (escaped), and that field is not judged further.
    for key, value in body.items():
        name = str(key)
        if has_surrogate(name):
            not_accepted(printable(name)[:100], not_text("the field name"))
        elif name not in accepted:
            not_accepted(name[:100], f"unknown field (accepted: {', '.join(accepted)})")
        elif surrogate_path(value) is not None:
            problems[name] = not_text()
    text = {name: body.get(name) for name in REQUIRED + OPTIONAL if name not in problems}
    event_id = text.get("event_id")
    if "event_id" not in text:
        pass  # named above
    elif event_id is None:
        problems["event_id"] = "required"
    elif not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        problems["event_id"] = ("must be the X-Diagnosa-Event-Id of a prediction (letters, digits, '.', '_', ':', "
                                f"'-'; up to 128), got {shown(event_id, 60)}")
    diagnosis = text.get("diagnosis")
    label = None
    if "diagnosis" not in text:
        pass  # named above
    elif diagnosis is None:
        problems["diagnosis"] = "required"
    elif not isinstance(diagnosis, str) or (label := _label(diagnosis, labels)) is None:
        problems["diagnosis"] = (f"must be one of {', '.join(labels)}; got {shown(diagnosis, 60)}" if labels is not None
                                 else f"must be a non-empty string; got {shown(diagnosis, 60)}")
    for name, limit in (("note", MAX_NOTE), ("source", MAX_SOURCE)):
        value = text.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            problems[name] = f"must be a string of at most {limit} characters" + (
                f" (got {len(value)})" if isinstance(value, str) else f" (got {type(value).__name__})")
    event_row = text.get("event_row")
    if event_row is not None and (isinstance(event_row, bool) or not isinstance(event_row, int)
                                  or not 0 <= event_row < MAX_RECORDS):
        problems["event_row"] = (f"must be the patient's position in the request, a whole number from 0 (the first) "
                                 f"to {MAX_RECORDS - 1:,}; got {_shown_json(event_row)}")
    disease_id = text.get("disease_id")
    if disease_id is not None and (not isinstance(disease_id, str) or len(disease_id) > MAX_DISEASE_ID
                                   or not DISEASE_ID.fullmatch(disease_id)):
        problems["disease_id"] = (f"must look like ORPHA:558 or OMIM:154700 (up to {MAX_DISEASE_ID}), "
                                  f"got {shown(disease_id, 60)}")
    if more:
        problems[MORE_FIELDS] = more_fields(more)
    if problems:
        raise FeedbackError(problems, more)
    assert isinstance(event_id, str) and label is not None  # no problems: both were checked above
    return Feedback(canonical_event_id(event_id), label, body.get("note"), body.get("source"), disease_id, event_row=event_row)


def _shown_json(value: Any, limit: int = 60) -> str:
    """A value as JSON writes it, clipped; its type's name when it cannot be written (a list nested nearly as deep as
    the reader allowed, read back from the lake at a deeper call, raised RecursionError here)."""
    try:
        return json.dumps(value, default=str)[:limit]
    except (RecursionError, ValueError):
        return type(value).__name__


NO_ROW = "feedback names no event_row but its request held several patients (which patient is ambiguous)"
SAME_PATIENT = ("superseded by later feedback for the same patient (once without event_row, once with 0; or on two "
                "copies of a retried request)")


def patient_row(feedback: Feedback, patients: int) -> int | str:
    """The row of the captured request (of ``patients`` patient records) this feedback confirms, or why none."""
    if feedback.event_row is None:
        return 0 if patients == 1 else (NO_ROW if patients else "the captured request holds no patient record")
    if feedback.event_row >= patients:
        return f"event_row is not in the captured request (event_row {feedback.event_row}, {patients} patient(s))"
    return feedback.event_row


def row_problem(feedback: Feedback, patients: int) -> str | None:
    """Why ``feedback`` names no patient of its captured request of ``patients`` records, as told to who sends it
    (the route's 400, `diagnosa feedback` straight to the lake); None when it names one."""
    if patients < 1 or not isinstance(patient_row(feedback, patients), str):
        return None  # an answer not read (UNCOUNTED) or without patients: the monitor counts it when it joins
    if patients == 1:
        return f"event {feedback.event_id} answered one patient: event_row is 0 or left out; got {feedback.event_row}"
    return (f"event {feedback.event_id} answered {patients} patients: name which one with event_row, 0 for the first "
            f"to {patients - 1} for the last" + ("" if feedback.event_row is None else f"; got {feedback.event_row}"))


def confirmed_patients(feedback: Iterable[Feedback], patients: Callable[[Feedback], int | tuple[str, str]],
                       skip: Callable[[str, str], None]) -> dict[tuple[str, int], Feedback]:
    """(event id, row) → the latest feedback of each confirmed patient. ``patients(item)``: how many patient records
    the captured request of ``item`` held, or why it cannot be used (reason, example); ``skip(reason, example)``
    counts every feedback left out, with its reason (the monitor's and retraining's counts). A request's only
    patient may be confirmed without event_row and with event_row 0: one patient, the later received feedback."""
    latest: dict[tuple[str, int], Feedback] = {}
    for item in feedback:
        count = patients(item)
        if isinstance(count, tuple):
            skip(*count)
            continue
        row = patient_row(item, count)
        if isinstance(row, str):
            skip(row, f"{item.where}: {count} patient(s)")
            continue
        known = latest.get((item.event_id, row))
        if known is not None:
            skip(SAME_PATIENT, f"{item.event_id} row {row}")
            if _instant(known.received_at) >= _instant(item.received_at):
                continue
        latest[(item.event_id, row)] = item
    return latest


def canonical_event_id(event_id: str) -> str:
    """A UUID event id (the local endpoint's, SageMaker's) as its captures write it, lower case: one typed or
    exported in capitals names the same event (it was stored as given and never joined with its capture)."""
    lowered = event_id.lower()
    if lowered != event_id and len(event_id) == 36:
        try:
            if str(uuid.UUID(event_id)) == lowered:
                return lowered
        except ValueError:
            pass
    return event_id


def _check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not RESOURCE_NAME.fullmatch(endpoint):
        raise ValueError(f"endpoint name {str(endpoint)[:80]!r} is not a valid SageMaker name")
    return endpoint


def feedback_key(endpoint: str, event_id: str, event_row: int | None = None) -> str:
    """The one object of a patient's feedback: its event's, or its row's in a request of several patients (a
    folder no event id can name: ids hold no '/')."""
    if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
        raise ValueError(f"event id {str(event_id)[:140]!r} is not a valid event id")
    if event_row is not None and (isinstance(event_row, bool) or not isinstance(event_row, int) or event_row < 0):
        raise ValueError(f"event row {event_row!r} is not a row number")
    where = f"{event_id}.json" if event_row is None else f"{event_id}/{event_row}.json"
    return f"{ZONE}/{_check_endpoint(endpoint)}/{EVENTS}/{where}"


_STORE_LOCK = threading.Lock()  # read-modify-write of an event's object within this process
_KEPT = (*REQUIRED, *OPTIONAL, "received_at")


def _entries(obj: dict[str, Any]) -> tuple[list[Any], int, bool]:
    """An event object's current record (its kept fields), then its first MAX_REVISIONS revisions as stored (any
    JSON value: the reader says which are not records); how many revisions are past those, and whether the
    revisions are a list at all (an object written otherwise)."""
    current = {k: v for k, v in obj.items() if k in _KEPT}
    revisions = obj.get("revisions", [])
    if not isinstance(revisions, list):
        return [current], 0, False
    return [current, *revisions[:MAX_REVISIONS]], max(0, len(revisions) - MAX_REVISIONS), True


PATIENT = "patient"  # the event object's KeptPatient: the confirmed patient's captured record (KeptPatient)
_OBJECT_FIELDS = ("endpoint", "revisions", PATIENT)  # the event object's own, not its current record's


def _carried(obj: Any) -> list[dict[str, Any]]:
    """An event object's current record and its first MAX_REVISIONS revisions as a store carries them under the
    record it writes: whole, each with every field it holds. A field a newer Diagnosa wrote is kept for it (readers
    take the fields they know); filtered to the fields this version knows, it was dropped by the next store."""
    if not isinstance(obj, dict):
        return []
    current = {k: v for k, v in obj.items() if k not in _OBJECT_FIELDS}
    revisions = obj.get("revisions", [])
    if not isinstance(revisions, list):
        return [current]
    return [current, *(entry for entry in revisions[:MAX_REVISIONS] if isinstance(entry, dict))]


def _instant(text: str | None) -> datetime:
    """A record's received_at as an instant (its text compared wrongly across offsets and fractions); the earliest
    possible for one missing or unreadable."""
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


MAX_SHOWN = 200  # the most of an earlier record's text a reply carries (what is stored may have been edited)


@dataclass(frozen=True)
class Replaced:
    """The earlier current record a stored feedback replaced: its diagnosis, disease id and when it was received,
    never its note (free text: it may hold private words). ``same``: it confirmed the same diagnosis and disease id
    (the new record is a new revision all the same). ``unreadable``: an object was there but its record could not be
    read (not JSON, not a JSON object, or no diagnosis in it): what it said is not known (one that is not a JSON object
    is replaced without its history)."""

    diagnosis: str | None = None
    disease_id: str | None = None
    received_at: str | None = None  # as stored: ISO UTC
    same: bool = False
    unreadable: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As the feedback route's reply holds it (every key, null when not known)."""
        return asdict(self)

    @classmethod
    def from_reply(cls, value: Any) -> Replaced | None:
        """A reply's ``replaced`` read back (by the client): None for null, missing or not an object."""
        if not isinstance(value, dict):
            return None

        def text(name: str) -> str | None:
            item = value.get(name)
            return item[:MAX_SHOWN] if isinstance(item, str) and item else None

        return cls(text("diagnosis"), text("disease_id"), text("received_at"), value.get("same") is True,
                   value.get("unreadable") is True)

    def describe(self) -> str:
        """The sentence that tells whoever recorded the feedback what it replaced (the app and the CLI say it)."""
        if self.unreadable:
            return "It replaced an earlier record that could not be read: what it said is not known."
        what = (self.diagnosis or "no diagnosis") + (f" ({self.disease_id})" if self.disease_id else "")
        when = f", received {_shown_time(self.received_at)}" if self.received_at else ""
        same = " of the same diagnosis" if self.same else ""
        return f"It replaced an earlier record{same}: {what}{when}."


def _shown_time(text: str) -> str:
    """A received_at as people read it: '2026-11-27 10:00 UTC' (the text itself when it is not a time)."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class StoredFeedback:
    """What :func:`store_feedback` wrote: the lake key of the patient's feedback object, and the earlier record it
    replaced (None: it is the patient's first)."""

    key: str
    replaced: Replaced | None = None


def _replaced(current: dict[str, Any] | None, feedback: Feedback) -> Replaced:
    """What the earlier current record of an object that was there says, compared with the feedback replacing it."""
    current = current or {}
    diagnosis, disease_id, received = current.get("diagnosis"), current.get("disease_id"), current.get("received_at")
    if not isinstance(diagnosis, str) or not diagnosis.strip():
        return Replaced(unreadable=True)
    disease_id = disease_id[:MAX_SHOWN] if isinstance(disease_id, str) and disease_id else None
    return Replaced(diagnosis[:MAX_SHOWN], disease_id, received[:MAX_SHOWN] if isinstance(received, str) else None,
                    same=diagnosis == feedback.diagnosis and disease_id == (feedback.disease_id or None))


MAX_KEPT_BYTES = 65_536  # a kept patient's record as JSON: a clinical record is about 1 KB; larger is not kept
MAX_NAME = 1024  # a request's name (an event or inference id; SageMaker's inference ids: any printable text, 64)


@dataclass(frozen=True)
class KeptPatient:
    """The confirmed patient's captured record, kept in its feedback object (``PATIENT``) so that retraining still
    trains on the feedback once the capture has expired (``capture_expiry_days``: the stack expires ``capture/`` and
    keeps ``feedback/``; 207 feedback records made 207 training rows while the capture was kept, 0 after). Retraining
    writes it (:func:`keep_patients`) when it reads the feedback with its capture; every later store of the
    object carries it over. ``record``: the fields retraining reads, as it read them (the built-in cohort's typed,
    a dataset of your own's as the endpoint read its request)."""

    event_id: str  # the captured event it was read from (a retried request's copy kept; an inference id resolved)
    row: int  # its row in that request
    patients: int  # how many patients that request held
    inference_time: str | None
    record: dict[str, Any]
    # The request's other names, which feedback about it may be recorded under: its earlier copies' event ids (a
    # client's retries) and its inference id, when that names this request alone. A correction stored under one of
    # them once the capture is gone finds the patient by it.
    names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "names": list(self.names)}

    @classmethod
    def from_dict(cls, value: Any) -> KeptPatient | None:
        """The kept patient of an object's ``PATIENT`` field; None when it is not one (written otherwise, or over
        MAX_KEPT_BYTES). Fields a newer Diagnosa adds are passed over, not a reason to rewrite the record."""
        known = [f.name for f in dataclass_fields(cls)]
        if not isinstance(value, dict) or not set(known) - {"names"} <= set(value):
            return None
        event_id, row, patients, when, record, names = (value.get(name, []) for name in known)
        if not (isinstance(event_id, str) and EVENT_ID.fullmatch(event_id) and type(row) is int
                and type(patients) is int and 0 <= row < patients and (when is None or _text(when))
                and isinstance(record, dict) and all(_text(k) and _kept_value(v) for k, v in record.items())
                and isinstance(names, list) and all(_text(n) and 0 < len(n) <= MAX_NAME for n in names)):
            return None
        try:
            if len(json.dumps(value, allow_nan=False)) > MAX_KEPT_BYTES:
                return None
        except (ValueError, RecursionError):
            return None
        return cls(event_id, row, patients, when, record, tuple(names))

    def unkeepable(self) -> bool:
        """Whether :meth:`from_dict` would refuse this record, so it is never written (over MAX_KEPT_BYTES, NaN or
        infinity, a value no patient's field is once read: a dict, a list of numbers); one rule for both sides."""
        return KeptPatient.from_dict(self.to_dict()) != self


def _text(value: Any) -> bool:
    return isinstance(value, str) and not has_surrogate(value)


def _kept_value(value: Any) -> bool:
    """A value a kept record may hold: what a patient's field is once read (a number, a text, a yes/no, none, a list
    of terms); never NaN or infinity (not JSON), a lone surrogate (no UTF-8 text holds it) or anything nested."""
    if value is None or isinstance(value, bool) or _text(value):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, list) and all(_text(term) for term in value)


DAMAGED = ".damaged-"  # <key>.damaged-<UTC time>-<random>: a damaged object moved aside by store_feedback
_SET_ASIDE = re.compile(r"(?P<object>.+\.json)\.damaged-[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}")  # always fullmatch
SET_ASIDE_REASON = "damaged feedback object set aside when feedback was stored over it"


def store_feedback(lake: DataLake, endpoint: str, feedback: Feedback, *, now: datetime | None = None
                   ) -> StoredFeedback:
    """Write the event's feedback object (replacing it atomically: the latest received wins, earlier
    records kept as bounded revisions); returns its lake key and what it replaced (:class:`Replaced`: the earlier
    current record, or that one was there but could not be read; None when there was none).

    Concurrent writers in one process are serialised; across processes and hosts (the endpoint's workers, the
    CLI, a second endpoint) the write is conditional (``DataLake.put_json_if``): a store that finds the object
    rewritten since it read it reads it again, so every record stored is the current one or a revision. Rewritten
    STORE_ATTEMPTS times in a row, it stores nothing and raises LakeError.
    Feedback for the same patient in the lake's old layout, or under the other form of a one-patient request's
    row (no event_row / event_row 0: another object), is not looked for: not reported as replaced.

    An earlier object that cannot be carried over whole (see the module's docstring) is first moved aside, its bytes
    unchanged, to ``<key>.damaged-<UTC time>-<random>`` (the store fails, replacing nothing, when that write does);
    it used to be replaced and lost. Its records are not dug out of it here (an object nested too deeply is read by
    no JSON reader of the standard library): ``replaced`` says ``unreadable`` and the bytes set aside keep them.
    """
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    record = {**feedback.to_dict(), "received_at": when.isoformat(timespec="microseconds")}
    key = feedback_key(endpoint, feedback.event_id, feedback.event_row)
    with _STORE_LOCK:  # this process's writers take turns; other processes' are met by the conditional write
        for _ in range(STORE_ATTEMPTS):
            replaced, history, kept, tag = _current(lake, key, feedback, when)
            # The record written now is the latest received, whatever the clocks stamped on the earlier ones: sorted
            # by their received_at text, a doctor's correction lost to a record from a host whose clock ran ahead
            # (the correction was said "stored" and sat in the revisions). The patient's kept record is the same
            # patient's whatever the diagnosis: carried over.
            if lake.put_json_if(key, {"endpoint": endpoint, **record, "revisions": history[:MAX_REVISIONS],
                                      **({} if kept is None else {PATIENT: kept})}, tag):
                return StoredFeedback(key, replaced)
            # Another process or host wrote the object since it was read: read it again, keep its record too.
    raise LakeError(f"feedback for event {feedback.event_id} not stored: its object {key} was rewritten by other "
                    f"writers {STORE_ATTEMPTS} times while this was being stored; nothing of it was replaced, send it "
                    "again")


def keep_patients(lake: DataLake, patients: dict[str, KeptPatient]) -> int:
    """Write each confirmed patient's captured record into its feedback object (``patients``: the object's key, of
    the events/ layout, as read_feedback found it → the record); returns how many objects were written. An object
    that already keeps that record, or is gone or damaged, is left as it is (a store deals with a damaged one).
    The write is conditional, as a store's: an object rewritten meanwhile (a doctor's correction) is read again
    and its new content kept. A lake that refuses one (full, failing, rewritten all along) fails the call."""
    written = 0
    with _STORE_LOCK:
        for key, kept in patients.items():
            value = kept.to_dict()
            for _ in range(STORE_ATTEMPTS):
                try:
                    data, tag = lake.read_tagged(key)
                    body = json.loads(data.decode("utf-8"))
                except (ObjectNotFound, ValueError, UnicodeDecodeError, RecursionError):
                    break
                if not isinstance(body, dict) or not isinstance(body.get("revisions", []), list) \
                        or body.get(PATIENT) == value:
                    break
                if lake.put_json_if(key, {**body, PATIENT: value}, tag):
                    written += 1
                    break
            else:
                raise LakeError(f"the captured record of {kept.event_id} not kept in its feedback object {key}: "
                                f"rewritten by other writers {STORE_ATTEMPTS} times meanwhile")
    return written


def _current(lake: DataLake, key: str, feedback: Feedback, when: datetime
             ) -> tuple[Replaced | None, list[dict[str, Any]], Any, str | None]:
    """The object at ``key`` as a store finds it: what the new record replaces, the records to keep as revisions, its
    kept patient (``PATIENT``, as written: carried over whole) and its tag for the conditional write (None: no
    object). A damaged object is first moved aside, its bytes unchanged."""
    try:
        data, tag = lake.read_tagged(key)
    except ObjectNotFound:
        return None, [], None, None
    damage: str | None = None
    body: Any = None
    try:  # its bytes, as read_feedback reads them: get_json raises LakeError for what is not JSON
        body = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        # What it is: valid JSON nested too deeply was said to be "not valid JSON".
        damage = _unreadable(err)
    else:
        if not isinstance(body, dict):
            damage = "is not a JSON object"
        elif not isinstance(body.get("revisions", []), list):
            damage = "holds revisions that are not a list"
    if damage is not None:
        aside = f"{key}{DAMAGED}{when:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"
        lake.put_bytes(aside, data)  # before the object is replaced: never lost
        log.warning("feedback object %s %s: moved aside to %s, %s", key, damage, aside,
                    "its readable records kept as revisions" if _carried(body) else "nothing of it readable")
    history = _carried(body)
    replaced = (_replaced(history[0], feedback) if history
                else Replaced(unreadable=True) if damage is not None else _replaced(None, feedback))
    return replaced, history, body.get(PATIENT) if isinstance(body, dict) else None, tag


def _unreadable(err: BaseException) -> str:
    """What a feedback object whose bytes ``json.loads`` refused is, after "feedback object ..."."""
    if isinstance(err, RecursionError):  # valid JSON: "not valid JSON" said otherwise
        return "is JSON nested too deeply to read"
    if isinstance(err, (UnicodeDecodeError, json.JSONDecodeError)):
        return "is not valid JSON"
    return f"is JSON this cannot read ({json_problem(err)})"  # a number of over 4,300 digits


@dataclass
class FeedbackRead:
    latest: dict[tuple[str, int | None], Feedback]  # (event id, event row as given) → latest feedback
    records: int  # readable feedback records: each object's current record, and its revisions read
    superseded: int  # older feedback for an event that has a newer one
    problems: Counter[str]  # reason → count of unreadable objects (their current record included)
    examples: dict[str, list[str]]
    outside: int = 0  # objects not read: their event id's time is outside the window asked for
    # Objects not read: ``ids`` was given and their event id is none of them (the window's traffic does not name it;
    # an id that names no time may be of a request never captured: not said to be outside the window).
    not_named: int = 0
    # Revisions (the replaced records an object keeps) that could not be read: reason → count, of the MAX_REVISIONS
    # read per object; the object itself is read. Each used to count as an unreadable object, and every revision
    # was read: one object of 20,000 made "60 records" "20,060 records".
    bad_revisions: Counter[str] = field(default_factory=Counter)
    # Revisions beyond the MAX_REVISIONS that store_feedback keeps (an object written otherwise): not read.
    unread_revisions: int = 0
    # (event id, event row as given) → the confirmed patient's captured record its object keeps (KeptPatient)
    kept: dict[tuple[str, int | None], KeptPatient] = field(default_factory=dict)
    unreadable_kept: int = 0  # objects whose PATIENT field is not a KeptPatient (ignored: the capture is read)
    # (event id, event row as given) → the key of the events/ object its current record was read from: where its
    # patient's record is kept (an object written under another spelling of its id is found as it is)
    keys: dict[tuple[str, int | None], str] = field(default_factory=dict)


def read_feedback(lake: DataLake, endpoint: str, window: tuple[datetime | None, datetime | None] | None = None,
                  margin: timedelta = FILING_MARGIN, *, ids: Collection[str] | None = None) -> FeedbackRead:
    """All feedback for ``endpoint``; the latest per (event id, event row) wins (by received time, then key).

    ``window`` (start, end): only the objects of events that may be in it are read — an event id that names its
    time (the local endpoint's UUIDv7) more than ``margin`` outside it is counted in ``outside``, unread. A daily
    monitor read every feedback ever given (20,000 objects: 12.6 s, 282 MB for a 2-hour window) and listed it all
    as "not used"; ids that name no time (SageMaker's) were always read, so on AWS every daily job fetched every
    feedback object ever written. ``ids`` (the monitor's: every event and inference id the window's capture names,
    ``Traffic.feedback_ids``): an object of the ``events/`` layout whose event id is one of them (compared without
    case: a UUID's feedback is stored lower case) is read whatever its time; one whose id is none of them is not
    read, counted in ``outside`` when its id's time is outside the window, else in ``not_named``. Objects of the
    old layout are always read (their event id is not checked). Retraining gives neither: it reads all."""
    prefix = f"{ZONE}/{_check_endpoint(endpoint)}/"
    problems: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    found: dict[tuple[str, int | None], list[tuple[bool, datetime, str, Feedback]]] = {}
    records = outside = not_named = unread_revisions = unreadable_kept = 0
    bad_revisions: Counter[str] = Counter()
    patients: dict[tuple[str, int | None], KeptPatient] = {}
    keys: dict[tuple[str, int | None], str] = {}
    start, end = window or (None, None)
    named = None if ids is None else {str(event_id).lower() for event_id in ids}

    def bad(reason: str, key: str) -> None:
        problems[reason] += 1
        examples.setdefault(reason, [])
        if len(examples[reason]) < 5:
            examples[reason].append(key)

    def left_out(key: str) -> bool:
        """Whether the object ``key`` of an event (the events/ layout) is not read for the window or ids asked."""
        nonlocal outside, not_named
        if (window is None and named is None) or not key.startswith(f"{prefix}{EVENTS}/"):
            return False
        event_id = key[len(f"{prefix}{EVENTS}/"):].split("/")[0].removesuffix(".json")
        if named is not None and event_id.lower() in named:
            return False  # an event (or inference id) of the window's traffic: its feedback is read
        if window is not None and (when := event_time(event_id)) is not None and (
                (start is not None and when < start - margin) or (end is not None and when >= end + margin)):
            outside += 1
            return True
        if named is not None:
            not_named += 1
            return True
        return False

    plan: list[tuple[str, str | None]] = []  # in key order: (key, None: read; else the reason it is reported)
    for key in lake.list(prefix):
        if not key.endswith(".json"):
            aside = _SET_ASIDE.fullmatch(key)
            if aside is None:
                plan.append((key, "not a feedback object (.json)"))
            elif not left_out(aside["object"]):  # said with its event's feedback, as the object it was
                plan.append((key, SET_ASIDE_REASON))
            continue
        if not left_out(key):
            plan.append((key, None))
    # Fetched FETCH_WORKERS at a time (a window's few hundred objects, one GET after another, took seconds on S3),
    # read in key order as before: the same examples, the same tie-break between records.
    with closing(fetch_in_order(lake, [key for key, reason in plan if reason is None])) as fetched:
        for key, reason in plan:
            if reason is not None:
                bad(reason, key)
                continue
            try:
                body = json.loads(next(fetched).result().decode("utf-8"))
            except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested thousands deep
                bad(f"feedback object {_unreadable(err)}", key)
                continue
            if not isinstance(body, dict):
                bad("feedback object is not a JSON object", key)
                continue
            # One record per object in the old layout; the current record and its revisions in the new one, as many
            # as store_feedback keeps (MAX_REVISIONS).
            entries: list[Any] = [body]
            kept: KeptPatient | None = None
            if key.startswith(f"{prefix}{EVENTS}/"):
                if PATIENT in body:
                    kept = KeptPatient.from_dict(body[PATIENT])
                    unreadable_kept += kept is None
                entries, past, listed = _entries(body)
                unread_revisions += past
                if not listed:
                    bad_revisions["feedback object's revisions are not a list"] += 1
            for number, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    bad_revisions["feedback revision is not a JSON object"] += 1
                    continue
                received = entry.get("received_at")
                content = {k: v for k, v in entry.items() if k in REQUIRED + OPTIONAL}
                try:
                    item = parse_feedback(content, labels=None)  # its label was held to the model's when stored
                except (FeedbackError, RecursionError) as err:  # RecursionError: a value nested nearly too deep
                    fields = ", ".join(sorted(err.fields)) if isinstance(err, FeedbackError) else "nested too deeply"
                    if number:
                        bad_revisions[f"invalid feedback revision: {fields}"] += 1
                    else:
                        bad(f"invalid feedback: {fields}", key)
                    continue
                records += 1
                item = Feedback(**{**asdict(item), "received_at": received if isinstance(received, str) else None})
                # An event object's current record is its latest (store_feedback puts the one received last there);
                # its revisions are superseded. Between objects (the old layout's), the later instant wins.
                found.setdefault(item.patient, []).append((number == 0, _instant(item.received_at), f"{key}#{number:03d}",
                                                           item))
                if number == 0 and key.startswith(f"{prefix}{EVENTS}/"):
                    keys[item.patient] = key
                    if kept is not None:
                        patients[item.patient] = kept
    latest = {event: max(items, key=lambda t: t[:3])[3] for event, items in found.items()}
    superseded = sum(len(items) - 1 for items in found.values())
    return FeedbackRead(latest, records, superseded, problems, examples, outside, not_named, bad_revisions,
                        unread_revisions, patients, unreadable_kept, keys)
