"""Retraining with doctors' feedback: a new curated dataset version, then a new pipeline execution.

1. ``feedback_dataset`` materialises the training data of the dataset whose endpoint the feedback is for
   (each dataset deploys to the endpoint of its name, ``resource_name``):
   - the built-in cohort: the raw batch the current curated version was ingested from, plus one clinical
     record (and lab row) per accepted feedback, written as a *new raw batch* (raw is write-once);
   - a dataset of your own: the CSV its current curated version was ingested from, plus one row per
     accepted feedback in the file's own columns, delimiter, decimal mark and encoding, written as a new
     raw file and ingested with the version's own config;
   either way the row is the captured request's fields with the doctor's confirmed diagnosis as the label (once
   the capture has expired, the fields its feedback object keeps: each fold writes them there, ``KeptPatient``), and
   it is ingested through the normal path, so validation and quarantine apply to feedback rows exactly as to
   hospital data (a captured request without an age, say, is quarantined with its reason, not silently dropped).
   The new version takes its base's place among the dataset's ingests: a version ingested while the feedback is
   read (a hospital's new batch) stays the latest, and the feedback is added to it instead (``feedback_dataset``).
2. A pipeline execution on that version follows: locally ``diagnosa monitor --retrain`` starts it as
   ``diagnosa run --local`` does (``diagnosa.services.retraining_input`` names the version as its
   ``InputDataUri``), on AWS the retrain function does. The pipeline's recall gate then decides
   whether the new model is registered (and so whether it replaces the old one).
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from diagnosa.data.ingest import (
    BATCH_NAME,
    IngestError,
    IngestReport,
    asked_now,
    curated_prefix,
    datasets_deploying_to,
    ingest_cohort,
    ingest_csv_data,
    lake_datasets,
    latest_record,
    latest_version,
    parses_as_float,
    raw_keys,
    read_csv_rows,
)
from diagnosa.data.physiology import LABS
from diagnosa.data.schema import (
    BUILTIN_DATASET,
    CsvDialect,
    FieldNames,
    SchemaError,
    check_dataset_config,
    clean_text,
    csv_dialect,
    resource_name,
)
from diagnosa.data.validate import LIST_SEPARATOR
from diagnosa.lake import DataLake
from inference.capture import decode_payload, parse_time, read_capture
from inference.feedback import (
    MAX_KEPT_BYTES,
    Feedback,
    FeedbackRead,
    KeptPatient,
    confirmed_patients,
    keep_patients,
    patient_row,
    read_feedback,
)
from monitoring.traffic import (
    LONE_SURROGATE,
    READ_ERRORS,
    LoneSurrogate,
    Skipped,
    by_inference_id,
    distinct_requests,
    event_rows,
    named_ids,
    onto_kept_copies,
    read_traffic,
    request_records,
)

RECORD_FIELDS = ("age", "sex", "temperature_c", "heart_rate_bpm", "respiratory_rate_bpm", "systolic_bp_mmhg",
                 "diastolic_bp_mmhg", "spo2_pct", "symptoms", "prior_diagnoses")
KINDS = {name: ("terms" if name in ("symptoms", "prior_diagnoses") else "category" if name == "sex" else "numeric")
         for name in (*RECORD_FIELDS, *LABS)}


class RetrainError(ValueError):
    """Retraining cannot start; the message says what is missing."""


class NothingToFold(RetrainError):
    """No accepted feedback could become a row (none at all, or each counted under its reason in ``skipped``): there
    is no new version to train on, which is no fault of the lake's (the retraining job reports it and succeeds)."""

    def __init__(self, skipped: Skipped, dataset: str | None = None, base_version: str | None = None) -> None:
        super().__init__("no accepted feedback to add: " + (", ".join(f"{c} {r}" for r, c in skipped.counts.items())
                                                            or "no feedback in the lake"))
        self.skipped = skipped
        self.dataset, self.base_version = dataset, base_version  # the version there was nothing to add to


@dataclass
class FeedbackDataset:
    dataset: str
    base_version: str
    base_source: str  # the raw batch (the built-in cohort) or raw file (a dataset of your own) feedback was added to
    source: str  # the new raw batch or file: base + feedback
    feedback_rows: int  # feedback turned into records
    skipped: Skipped = field(default_factory=Skipped)
    report: IngestReport | None = None
    base_given: bool = False  # the base version was named (--base-version), not the dataset's latest
    # Folds dropped because another version was ingested while they ran, each (its base, its version, the version
    # ingested meanwhile): the feedback was added again, to the then latest version.
    rebuilt_from: list[tuple[str, str, str]] = field(default_factory=list)
    records_kept: int = 0  # feedback objects given their patient's captured record now (KeptPatient), every attempt's
    from_kept: int = 0  # feedback rows made from the record their object keeps: the captured request is gone
    kept_unreadable: int = 0  # feedback objects whose kept record cannot be read (ignored)
    not_keepable: int = 0  # captured records that cannot be kept: over MAX_KEPT_BYTES, or NaN or infinity in them

    @property
    def version(self) -> str:
        assert self.report is not None
        return self.report.version

    @property
    def overtaken_by(self) -> str | None:
        """The version ingested while the feedback was added that stays the latest instead of ``version``."""
        return None if self.report is None else self.report.overtaken_by

    def summary(self, *, values: bool = True) -> str:
        """What was folded, for a person; ``values=False`` for a job's log: no cell of the ingest report (its examples)."""
        lines = [f"training data with feedback ({self.dataset}): {self.source} = {self.base_source} + "
                 f"{self.feedback_rows} feedback record(s)"]
        for base, version, newer in self.rebuilt_from:
            lines.append(f"  version {newer} of {self.dataset} was ingested while the feedback was added to {base}: "
                         f"it was added to the latest version instead ({version}, built on {base}, was written but "
                         "is not the latest, nor trained on)")
        for count, says in (
                (self.from_kept, "of them from the patient's record their feedback object keeps (the request is no "
                                 "longer in the capture)"),
                (self.records_kept, "feedback object(s) now keep their patient's captured record (for retraining once "
                                    "the capture expires)"),
                (self.kept_unreadable, "feedback object(s) keep a patient record that cannot be read (ignored: their "
                                       "captured request is read instead, while the capture holds it)"),
                (self.not_keepable, f"captured record(s) not kept with their feedback (over {MAX_KEPT_BYTES:,} bytes, "
                                    "or a value a patient's field does not hold: NaN, a dict): they train only while "
                                    "the capture holds them")):
            if count:
                lines.append(f"  {count} {says}")
        for reason, count in self.skipped.counts.most_common():
            lines.append(f"  feedback not used ({count}): {reason}")
        if self.report is not None:
            lines.append(self.report.summary(values=values))
        if self.overtaken_by == self.base_version:
            lines.append(f"  version {self.base_version} of {self.dataset} was ingested again while the feedback was "
                         f"added to it, and stays the latest: {self.version} ({self.base_version} + feedback) is not "
                         "the latest (retrain again to make it so)")
        elif self.overtaken_by:
            why = ("as --base-version asked" if self.base_given else
                   f"the feedback was added {len(self.rebuilt_from) + 1} times, each time overtaken: retrain again")
            lines.append(f"  version {self.overtaken_by} of {self.dataset} was ingested while the feedback was added and "
                         f"stays the latest: {self.version} ({self.base_version} + feedback) is not the latest, and "
                         f"trains without {self.overtaken_by}'s data ({why})")
        return "\n".join(lines)


def _number(value: Any) -> Any:
    return None if value is None else (int(value) if float(value).is_integer() else value)


Kept = dict[tuple[str, int | None], KeptPatient]  # a feedback's (event id, event row as given) → its patient's record


NOT_KEPT = "no captured request (no longer in the capture), and no record of this patient kept with its feedback"
AMBIGUOUS = "an inference id the capture gives to several requests: which one the feedback is about is not known"


@dataclass
class KeptRecords:
    """The patients' records the feedback objects keep (``inference.feedback.KeptPatient``), by the request they were
    read from and by every name that request had: a stand-in for a request the capture no longer holds. The capture,
    when it holds the request, is the truth; a kept record is never used over it."""

    patients: dict[tuple[str, int], KeptPatient] = field(default_factory=dict)  # (event id, row) → the record
    counts: dict[str, int] = field(default_factory=dict)  # event id → how many patients its request held
    names: dict[str, str] = field(default_factory=dict)  # a request's event id or other name → its event id
    # Names that name no one request: kept records of different requests claim them (an inference id a client gave
    # again, to another patient), or a feedback's own record says another request than the capture does.
    ambiguous: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, kept: Kept, start: datetime | None, end: datetime | None) -> KeptRecords:
        """The records of ``kept`` whose request is in the window ``[start, end)`` (one whose time cannot be read is
        outside any window), as the capture's requests are."""
        out = cls()
        for record in kept.values():
            if start is not None or end is not None:
                try:
                    when = parse_time(record.inference_time)
                except ValueError:
                    continue
                if (start is not None and when < start) or (end is not None and when >= end):
                    continue
            out.patients[(record.event_id, record.row)] = record
            out.counts[record.event_id] = record.patients
            for name in (record.event_id, *record.names):
                if out.names.setdefault(name, record.event_id) != record.event_id:
                    out.ambiguous.add(name)
        for name in out.ambiguous:
            del out.names[name]
        return out

    def patients_of(self, item: Feedback, named: Collection[str]) -> int | tuple[str, str]:
        """For a feedback the capture holds no usable request of: how many patients its kept request held, else why
        it joins none (reason, example) — an id it names ambiguously, or one neither the capture nor a record knows."""
        if item.event_id in self.counts:
            return self.counts[item.event_id]
        ambiguous = item.event_id in self.ambiguous or item.event_id in named
        return AMBIGUOUS if ambiguous else "no captured request for this event id", item.where

    def onto(self, feedback: list[Feedback], moved: list[Feedback], captured: Collection[str],
             named: Collection[str], kept: Kept) -> list[Feedback]:
        """``moved`` (``feedback`` onto the capture's copies kept, in its order) with each item about a request the
        capture no longer holds moved onto the event of the record kept for it — the item's own, or one whose request
        had the item's id for a name (a correction stored under the inference id, or under an earlier copy's event
        id, once the capture was gone). ``captured``: the capture's events read; ``named``: every id the capture
        names, an inference id several requests carry included (left as it is: no one request). An earlier copy the
        capture still holds whose kept copy is gone is moved onto that copy too: one patient, counted once."""
        out = []
        for item, onto in zip(feedback, moved):
            event_id = onto.event_id
            own = kept.get(item.patient)
            if own is not None and own.event_id not in self.counts:
                own = None  # outside the window
            if event_id in captured:
                target = self.names.get(event_id)
                if target is not None and target != event_id and target not in captured:
                    onto = replace(onto, event_id=target)
                elif own is not None and own.event_id not in captured and own.event_id != event_id \
                        and event_id not in own.names:
                    # Its record says another request, gone from the capture, than the one the capture gives the id
                    # now (an inference id given again, to another patient): it names no one request.
                    self.ambiguous.add(item.event_id)
                    onto = replace(onto, event_id=item.event_id)
            elif event_id not in named and event_id not in self.ambiguous:
                # Onto the request its record names: read from the capture when it still holds it (an earlier copy
                # gone, the copy kept still there), else from the record.
                target = own.event_id if own is not None else self.names.get(event_id)
                if target is not None:
                    onto = replace(onto, event_id=target)
            out.append(onto)
        return out

    def patient(self, event_id: str, number: int, skip: Callable[[str, str], None]) -> KeptPatient | None:
        found = self.patients.get((event_id, number))
        if found is None:
            skip(NOT_KEPT, f"{event_id} row {number}")
        return found


def _other_names(retried: dict[str, str], by_inference: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Event id of a request (its copy kept) → its other names: its earlier copies' event ids, its inference id."""
    names: dict[str, list[str]] = {}
    for copy, kept in retried.items():
        names.setdefault(kept, []).append(copy)
    for inference_id, event_id in by_inference.items():
        names.setdefault(event_id, []).append(inference_id)
    return {event_id: tuple(sorted(set(ids))) for event_id, ids in names.items()}


@dataclass
class Keeping:
    """A fold's work on the kept records: the captured records the feedback objects do not keep yet (``new``, for
    ``keep_patients``), how many rows were made from a kept record, their capture gone (``used``), how many
    objects keep a record that cannot be read (``unreadable``: ignored) and how many captured records the reader
    would refuse, so are not kept (``unkeepable``: KeptPatient.unkeepable)."""

    new: dict[str, KeptPatient] = field(default_factory=dict)  # a feedback object's key → the record to keep in it
    used: int = 0
    unreadable: int = 0
    unkeepable: int = 0


def _to_keep(feedback: list[Feedback], moved: list[Feedback], patients: Callable[[Feedback], int | tuple[str, str]],
             captured: Callable[[str, int], KeptPatient | None], read: FeedbackRead, keeping: Keeping | None,
             windowed: bool) -> None:
    """Into ``keeping.new``: the captured record of each feedback read with its capture (``captured(event id, row)``)
    that its object does not keep yet. Names its object's record knows of the same request are kept (an earlier
    copy whose capture expired first is no longer read: a correction under it found nothing); a retraining for a
    window (``windowed``: a part of the capture) never replaces a record of another request."""
    if keeping is None:
        return
    for item, onto in zip(feedback, moved):
        key = read.keys.get(item.patient)  # None: an object of the old layout, whose records are not kept
        count = patients(onto)
        row = None if isinstance(count, tuple) else patient_row(onto, count)
        record = captured(onto.event_id, row) if isinstance(row, int) else None
        if record is None or key is None:
            continue
        old = read.kept.get(item.patient)
        if old is not None and old.event_id == record.event_id:
            record = replace(record, names=tuple(sorted({*record.names, *old.names})))
        elif old is not None and windowed:
            continue
        if old == record:
            continue
        if record.unkeepable():
            keeping.unkeepable += 1
        else:
            keeping.new[key] = record


def _kinds_problem(record: dict[str, Any]) -> str | None:
    """Which field of a built-in cohort's kept record is not of its kind (a hand edit: 'abc' for an age); None."""
    for name, value in record.items():
        kind = KINDS.get(name)
        if value is None or kind is None:
            continue
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind == "numeric"
              else isinstance(value, list) if kind == "terms" else isinstance(value, str))
        if not ok:
            return f"{name}: {type(value).__name__}"
    return None


def _asked_ids(feedback: FeedbackRead) -> set[str]:
    """The ids whose captured requests retraining reads: those feedback names, and the requests their objects keep
    a record of (the capture, while it holds them, is read rather than the record)."""
    return {event_id for event_id, _ in feedback.latest} | {record.event_id for record in feedback.kept.values()}


def _plain(value: Any) -> Any:
    """A table cell as JSON keeps it: a missing number (NaN) as null, a list of terms as a list."""
    if isinstance(value, float) and value != value:
        return None
    return list(value) if isinstance(value, (list, tuple)) else value


def feedback_records(lake: DataLake, endpoint: str, start: datetime | None = None, end: datetime | None = None,
                     keeping: Keeping | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Skipped]:
    """Clinical records and lab rows (raw-zone shapes) for the accepted feedback of ``endpoint``: each confirmed
    patient's captured record, or the one its feedback object keeps once the capture is gone. ``keeping``: given
    the captured records the feedback objects do not keep yet, and the count of rows made from kept ones."""
    feedback = read_feedback(lake, endpoint)
    # Only the requests feedback names: the whole capture was held, and ran out of memory at 800k requests.
    traffic = read_traffic(lake, endpoint, start, end, KINDS, ids=_asked_ids(feedback))
    skipped = Skipped()
    rows = traffic.rows
    by_event = event_rows(rows)
    records, labs = [], []
    gone = KeptRecords.of(feedback.kept, start, end)
    other_names = _other_names(traffic.retried, traffic.by_inference)

    def patients(item: Feedback) -> int | tuple[str, str]:
        found = by_event.get(item.event_id)
        if found is None:
            if item.event_id in traffic.dropped:
                return f"captured request unusable: {traffic.dropped[item.event_id]}", item.where
            return gone.patients_of(item, traffic.seen_ids)
        return found.patients

    def captured(event_id: str, number: int) -> KeptPatient | None:
        found = by_event.get(event_id)
        position = None if found is None else found.positions.get(number)
        if position is None:
            return None
        row = rows.iloc[position]
        return KeptPatient(event_id, number, int(row["rows_in_event"]), _plain(row["inference_time"]) or None,
                           {name: _plain(row[name]) for name in KINDS}, other_names.get(event_id, ()))

    ordered = _in_order(feedback.latest)
    confirmed = gone.onto(ordered, onto_kept_copies(ordered, traffic.retried, traffic.by_inference),
                          {*by_event, *traffic.dropped}, traffic.seen_ids, feedback.kept)
    _to_keep(ordered, confirmed, patients, captured, feedback, keeping, start is not None or end is not None)
    if keeping is not None:
        keeping.unreadable = feedback.unreadable_kept
    for (event_id, number), item in confirmed_patients(confirmed, patients, skipped.add).items():
        if event_id in by_event:
            patient = captured(event_id, number)
            if patient is None:
                skipped.add("the confirmed patient's captured record is not a JSON object", f"{event_id} row {number}")
                continue
        else:
            patient = gone.patient(event_id, number, skipped.add)
            if patient is None:
                continue
            problem = _kinds_problem(patient.record)
            if problem is not None:
                skipped.add(f"the patient's record its feedback object keeps is not one retraining wrote ({problem})",
                            f"{event_id} row {number}")
                continue
            if keeping is not None:
                keeping.used += 1
        values = patient.record
        patient_id = f"{FEEDBACK_ID_PREFIX}{feedback_patient(event_id, number, patient.patients)}"
        date = str(patient.inference_time or "")[:10]
        record: dict[str, Any] = {"patient_id": patient_id, "encounter_date": date}
        for name in RECORD_FIELDS:
            value = values.get(name)
            if KINDS[name] == "numeric":
                value = None if value is None or value != value else _number(value)
            record[name] = value
        if record["age"] is None:
            del record["age"]  # absent, so ingestion quarantines it as "required" (with the reason)
        if record["sex"] is None:
            del record["sex"]
        record |= {"note": item.note or "", "label": item.diagnosis, "disease_id": item.disease_id or "",
                   "disease_name": "", "is_orphan": bool(item.orphan)}
        records.append(record)
        lab = {name: values.get(name) for name in LABS}
        if any(v is not None and v == v for v in lab.values()):
            labs.append({"patient_id": patient_id, "collected_at": date, **lab})
    return records, labs, skipped


def endpoint_dataset(lake: DataLake, endpoint: str) -> str:
    """The dataset whose models an endpoint serves: each dataset deploys to the endpoint of its name
    (``resource_name``: '_' written '-'; the built-in cohort's is diagnosa), and ingestion refuses two that share one."""
    matches = datasets_deploying_to(lake, endpoint)
    if not matches:
        known = ", ".join(f"{resource_name(name)} ({name})" for name in lake_datasets(lake)) or "none"
        raise RetrainError(f"no dataset in {lake.uri} deploys to the endpoint {endpoint!r} (a dataset's endpoint is its "
                           f"name with '_' written '-'; the lake's datasets' endpoints: {known})")
    return matches[0]


FOLD_ATTEMPTS = 3  # folds on the latest version, each overtaken by a version ingested meanwhile, before giving up


def feedback_dataset(lake: DataLake, endpoint: str, *, dataset: str | None = None, base_version: str | None = None,
                     start: datetime | None = None, end: datetime | None = None) -> FeedbackDataset:
    """Write the endpoint's dataset's raw data + feedback as new raw data and ingest it (a new curated version).

    ``dataset``: the dataset the endpoint serves, when its name does not say (an AWS stage's endpoint is
    ``diagnosa-<stage>`` whatever its dataset); else the dataset that deploys to the endpoint of its name.

    Reading the feedback takes minutes on AWS: a version ingested meanwhile (a hospital's new batch) stays the
    latest, and the version built on the older one is not made the latest (its ingest is asked for as of its base:
    ``overtaken_by``). Folded onto the latest version (no ``base_version``), the feedback is then added again, to
    the new latest (``rebuilt_from`` names the folds dropped), up to ``FOLD_ATTEMPTS`` times; onto a named
    ``base_version``, the result stays as asked, ``overtaken_by`` saying which version stays the latest."""
    dataset = dataset or endpoint_dataset(lake, endpoint)
    rebuilt: list[tuple[str, str, str]] = []
    kept = 0  # feedback objects given their record by the attempts dropped: written all the same
    while True:
        if dataset == BUILTIN_DATASET:
            result = _cohort_feedback_dataset(lake, endpoint, base_version=base_version, start=start, end=end)
        else:
            result = own_feedback_dataset(lake, endpoint, dataset, base_version=base_version, start=start, end=end)
        result.base_given, result.rebuilt_from = base_version is not None, rebuilt
        kept = result.records_kept = kept + result.records_kept
        if result.overtaken_by in (None, result.base_version) or base_version is not None \
                or len(rebuilt) + 1 >= FOLD_ATTEMPTS:  # its base asked for again: added again, it would be the same
            return result
        rebuilt = [*rebuilt, (result.base_version, result.version, result.overtaken_by)]


def _asked(lake: DataLake, dataset: str,
           base_version: str | None) -> tuple[str, tuple[str, tuple[str | None, str | None]]]:
    """The version feedback is added to (``base_version``, else the latest), and its ingest's ``asked``: the
    ``latest_record`` read now, before the feedback, and when the ingest is asked for. On the latest version, as of
    the ingest that made it the latest: the fold takes its base's place, so any version ingested since, even one
    asked for before the fold started, stays the latest. On a version named (or a LATEST.json that does not say
    when), now, as an ingest asked for now."""
    before = latest_record(lake, dataset)
    version = base_version or latest_version(lake, dataset)
    asked_at = before[1] if version == before[0] and before[1] is not None else asked_now()
    return version, (asked_at, before)


def _cohort_feedback_dataset(lake: DataLake, endpoint: str, *, base_version: str | None = None,
                             start: datetime | None = None, end: datetime | None = None) -> FeedbackDataset:
    """The built-in cohort's raw batch the curated version came from + one record (and lab row) per accepted feedback,
    as a new raw batch, ingested."""
    base_version, asked = _asked(lake, BUILTIN_DATASET, base_version)
    manifest_key = f"{curated_prefix(BUILTIN_DATASET, base_version)}/manifest.json"
    if not lake.exists(manifest_key):
        raise RetrainError(f"no curated version {base_version!r} of '{BUILTIN_DATASET}' in {lake.uri}")
    manifest = lake.get_json(manifest_key)
    # Feedback is added to the batch the hospital's data came from, never to an earlier retraining's (whose feedback
    # records, added again, would be quarantined as repeats, or with a corrected diagnosis as conflicting rows).
    base_batch = (manifest.get("feedback") or {}).get("base_batch") or manifest.get("batch")
    if not base_batch:
        raise RetrainError(f"curated version {base_version} was not ingested from a raw cohort batch (records + labs); "
                           "feedback can only be added to such a batch")
    keeping = Keeping()
    records, labs, skipped = feedback_records(lake, endpoint, start, end, keeping)
    written = keep_patients(lake, keeping.new)
    if not records:
        raise NothingToFold(skipped, BUILTIN_DATASET, base_version)
    records_key, labs_key = raw_keys(base_batch)
    base_records, base_labs = lake.get_bytes(records_key), lake.get_bytes(labs_key)
    extra_records = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    header = next(csv.reader(io.StringIO(base_labs.decode("utf-8").split("\n", 1)[0])))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    for lab in labs:
        writer.writerow({k: ("" if v is None or v != v else v) for k, v in lab.items()})
    extra_labs = buffer.getvalue().encode("utf-8")
    digest = hashlib.sha256(base_records + b"\0" + base_labs + b"\0" + extra_records + b"\0" + extra_labs).hexdigest()
    batch = f"{base_batch[:80]}.fb-{digest[:12]}"
    if not BATCH_NAME.match(batch):
        raise RetrainError(f"cannot name the feedback batch after {base_batch!r}")
    new_records_key, new_labs_key = raw_keys(batch)
    separator = b"" if base_records.endswith(b"\n") or not base_records else b"\n"
    lake.put_bytes_once(new_records_key, base_records + separator + extra_records)
    lab_separator = b"" if base_labs.endswith(b"\n") else b"\n"
    lake.put_bytes_once(new_labs_key, base_labs + lab_separator + extra_labs)
    result = FeedbackDataset(BUILTIN_DATASET, base_version, base_batch, batch, len(records), skipped,
                             records_kept=written, from_kept=keeping.used, kept_unreadable=keeping.unreadable,
                             not_keepable=keeping.unkeepable)
    result.report = ingest_cohort(lake, batch, feedback={"base_batch": base_batch, "endpoint": endpoint,
                                                         "records": len(records)}, asked=asked)
    return result


# ------------------------------------------------------------------------------------------------ a dataset of your own

FEEDBACK_ID_PREFIX = "FB-"
FEEDBACK_INTEGER_IDS = 10**15  # an integer id column's feedback ids: from here up (an event's hash), below 2^53


def own_feedback_dataset(lake: DataLake, endpoint: str, dataset: str, *, base_version: str | None = None,
                         start: datetime | None = None, end: datetime | None = None) -> FeedbackDataset:
    """The CSV a dataset's curated version came from + one row per accepted feedback, ingested with its config.

    Feedback is added to the file the user ingested, never to an earlier retraining's: each retraining adds all the
    feedback, each event's latest word, so a doctor's corrected diagnosis replaces the first (as two rows with one id
    and other content, both would be quarantined) and no row is added twice. A version ingested while it ran stays
    the latest (``overtaken_by``; ``feedback_dataset`` adds the feedback to it)."""
    base_version, asked = _asked(lake, dataset, base_version)
    manifest_key = f"{curated_prefix(dataset, base_version)}/manifest.json"
    if not lake.exists(manifest_key):
        raise RetrainError(f"no curated version {base_version!r} of '{dataset}' in {lake.uri}")
    manifest = lake.get_json(manifest_key)
    where = f"the config of curated version {base_version} of '{dataset}'"
    try:
        config = check_dataset_config(manifest.get("config"), where)
    except SchemaError as err:
        raise RetrainError(str(err)) from None
    base_key = (manifest.get("feedback") or {}).get("base_key") or manifest["sources"][0]["key"]
    data = lake.get_bytes(base_key)
    dialect = csv_dialect(config)
    try:
        header = [str(name) for name in read_csv_rows(data, base_key, dialect).frame.columns]
    except IngestError as err:
        raise RetrainError(str(err)) from None
    # Field names as the header is read now (trimmed): a version ingested before that kept 'age ' as written.
    schema = {**manifest["schema"], "fields": [{**f, "name": clean_text(f["name"])} for f in manifest["schema"]["fields"]]}
    types = {f["name"]: f["type"] for f in schema["fields"]}
    config = typed_as_before(config, schema, header)
    keeping = Keeping()
    rows, skipped = feedback_lines(lake, endpoint, header, config, types, dialect, start, end, keeping)
    written = keep_patients(lake, keeping.new)
    if not rows:
        raise NothingToFold(skipped, dataset, base_version)
    combined = _appended(data, rows, dialect)
    stem = f"{base_key.rsplit('/', 1)[-1].removesuffix('.csv')[:80]}.fb"
    result = FeedbackDataset(dataset, base_version, base_key, "", len(rows), skipped, records_kept=written,
                             from_kept=keeping.used, kept_unreadable=keeping.unreadable,
                             not_keepable=keeping.unkeepable)
    try:
        result.report = ingest_csv_data(lake, combined, stem, config, source=f"{base_key} + feedback",
                                        config_source=where, feedback={"base_key": base_key, "endpoint": endpoint,
                                                                       "rows": len(rows)}, asked=asked)
    except IngestError as err:
        raise RetrainError(str(err)) from None
    result.source = next(s.key for s in result.report.sources)
    return result


def typed_as_before(config: dict[str, Any], schema: dict[str, Any], header: list[str]) -> dict[str, Any]:
    """``config`` with each feature column its ``schema`` inferred (a number or a category) declared as such: the
    feedback rows must not retype a column (one '39,1 €' among the numbers made a category of it, and the model
    another model), they are validated against it instead, and quarantined as a hospital's row would be."""
    columns = {name: dict(spec) for name, spec in (config.get("columns") or {}).items()}
    for f in schema["fields"]:
        if f.get("role", "feature") == "feature" and f["name"] in header and "type" not in columns.get(f["name"], {}) \
                and "values" not in columns.get(f["name"], {}):
            columns.setdefault(f["name"], {})["type"] = f["type"]
    return {**config, "columns": columns} if columns else config


def feedback_lines(lake: DataLake, endpoint: str, header: list[str], config: dict[str, Any], types: dict[str, str],
                   dialect: CsvDialect, start: datetime | None = None, end: datetime | None = None,
                   keeping: Keeping | None = None) -> tuple[list[list[str]], Skipped]:
    """One CSV row (the header's columns, as the file writes them) per confirmed patient of ``endpoint``: the captured
    record's fields (or those its feedback object keeps, once the capture is gone), the confirmed diagnosis as the
    target, ``FB-<event id>`` as the id (``FB-<event id>/<row>`` for a patient of a request of several), the excluded
    columns and those the request did not carry empty. Feedback that cannot become a row is counted under its reason.
    ``keeping``: given the captured records the feedback objects do not keep yet (the header's columns but the id,
    the target and the excluded ones), and the count of rows made from kept ones."""
    skipped = Skipped()
    feedback = read_feedback(lake, endpoint)
    # Each request once, as the monitor and the built-in cohort's retraining count it (monitoring.traffic): a retried
    # request's copies, each with feedback, were two training rows of one patient.
    dropped: dict[str, str] = {}
    asked = _asked_ids(feedback)
    read = read_capture(lake, endpoint, start, end, ids=asked).events
    named = named_ids(read)
    events, retried = distinct_requests(read, Skipped(), dropped)
    by_inference = by_inference_id(events, retried)
    # A feedback on an earlier copy of a retried request confirms the copy kept: read that one (it was not, and
    # such feedback was "no captured request").
    wanted = {retried.get(name, name) for name in (by_inference.get(event_id, event_id) for event_id in asked)}
    requests: dict[str, list[Any] | tuple[str, str]] = {}  # event id → its patient records, or why not (reason, detail)
    times: dict[str, str | None] = {}
    for event in events:
        meta = event.get("eventMetadata", {})
        if meta.get("eventId") not in wanted or meta["eventId"] in retried:
            continue
        data = event["captureData"]["endpointInput"]
        content_type = data.get("observedContentType") or ""
        when = meta.get("inferenceTime")
        times[meta["eventId"]] = when if isinstance(when, str) else None
        try:
            # Read as the endpoint read it (monitoring.traffic.read_request): one unreadable line is counted, never a crash.
            requests[meta["eventId"]] = request_records(decode_payload(data), content_type, header)
        except (LoneSurrogate, UnicodeEncodeError) as err:
            requests[meta["eventId"]] = (LONE_SURROGATE, str(err))
        except (*READ_ERRORS, KeyError) as err:
            requests[meta["eventId"]] = ("captured request is not a readable JSON or CSV request", str(err))

    gone = KeptRecords.of(feedback.kept, start, end)
    other_names = _other_names(retried, by_inference)

    def patients(item: Feedback) -> int | tuple[str, str]:
        if item.event_id in dropped:
            return f"captured request unusable: {dropped[item.event_id]}", item.where
        records = requests.get(item.event_id)
        if records is None:
            return gone.patients_of(item, named)
        if isinstance(records, tuple):
            return records[0], f"{item.where}: {records[1]}"
        return len(records)

    kept_columns = set(header) - set(config.get("exclude") or ()) - {config["id_column"], config["target"]}

    def captured(event_id: str, number: int) -> KeptPatient | None:
        records = requests.get(event_id)
        if not isinstance(records, list) or not isinstance(records[number], dict):
            return None
        values = FieldNames(header).read(records[number])[0]
        return KeptPatient(event_id, number, len(records), times.get(event_id),
                           {name: value for name, value in values.items() if name in kept_columns},
                           other_names.get(event_id, ()))

    rows = []
    ordered = _in_order(feedback.latest)
    captured_events = {*requests, *dropped, *(event["eventMetadata"]["eventId"] for event in events)}
    confirmed = gone.onto(ordered, onto_kept_copies(ordered, retried, by_inference), captured_events, named,
                          feedback.kept)
    _to_keep(ordered, confirmed, patients, captured, feedback, keeping, start is not None or end is not None)
    if keeping is not None:
        keeping.unreadable = feedback.unreadable_kept
    for (event_id, number), item in confirmed_patients(confirmed, patients, skipped.add).items():
        records = requests.get(event_id)
        if records is None:
            kept = gone.patient(event_id, number, skipped.add)
            if kept is None:
                continue
            record, count = kept.record, kept.patients
            if keeping is not None:
                keeping.used += 1
        else:
            assert not isinstance(records, tuple)  # the unreadable ones were left out above
            record, count = records[number], len(records)
        where = event_id if count == 1 else f"{event_id} row {number}"
        if not isinstance(record, dict):
            skipped.add("the captured patient record is not a JSON object", where)
            continue
        patient = feedback_patient(event_id, number, count)
        try:
            cells = feedback_cells(record, item, patient, header, config, types, dialect)
        except ValueError as err:
            skipped.add(str(err), where)
            continue
        try:
            for cell in cells:
                cell.encode(dialect.encoding)
        except UnicodeEncodeError as err:
            skipped.add(f"a value cannot be written in the file's encoding ({dialect.encoding})",
                        f"{where}: {cell[err.start:err.end]!r}")
            continue
        rows.append(cells)
    return rows, skipped


def feedback_cells(record: dict[str, Any], item: Feedback, patient: str, header: list[str], config: dict[str, Any],
                   types: dict[str, str], dialect: CsvDialect) -> list[str]:
    """A feedback's row as CSV cell texts, in ``header``'s order, written as the file writes them; the captured
    record's field names read as the endpoint read them ('age ' in a CSV request's header is the column age).
    ``patient``: which captured patient (:func:`feedback_patient`), what its id is made from."""
    record = FieldNames(header).read(record)[0]
    exclude = set(config.get("exclude") or ())
    group = (config.get("slice") or {}).get("group")
    cells = []
    for column in header:
        if column == config["id_column"]:
            cells.append(feedback_id(patient, types.get(column) == "integer"))
        elif column == config["target"]:
            cells.append(item.diagnosis)
        elif column == group and item.disease_id:
            cells.append(item.disease_id)  # the confirmed disease, as the cohort's feedback records carry it
        elif column in exclude or record.get(column) is None:
            cells.append("")
        else:
            cells.append(cell_text(record[column], column, types.get(column), dialect))
    return cells


def feedback_patient(event_id: str, row: int, patients: int) -> str:
    """A confirmed patient of a captured request, as its feedback row's id names it: the event id for the only patient
    of a request (as ever), ``<event id>/<row>`` for one of several ('/' is in no event id)."""
    return event_id if patients == 1 else f"{event_id}/{row}"


def feedback_id(patient: str, integer: bool) -> str:
    """The id of a feedback row: ``FB-<patient>``; for an integer id column, a number the patient hashes to."""
    if not integer:
        return f"{FEEDBACK_ID_PREFIX}{patient}"
    return str(FEEDBACK_INTEGER_IDS + int(hashlib.sha256(patient.encode("utf-8")).hexdigest()[:12], 16))


def _in_order(latest: dict[tuple[str, int | None], Feedback]) -> list[Feedback]:
    """Feedback in the order of its event id, then row (no row first): the rows it becomes are in that order."""
    return [latest[key] for key in sorted(latest, key=lambda key: (key[0], -1 if key[1] is None else key[1]))]


def cell_text(value: Any, column: str, kind: str | None, dialect: CsvDialect) -> str:
    """A request's value as the dataset's CSV writes it: text as the endpoint read it (trimmed, accents composed),
    its decimal mark for numbers, a list's items joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value) if isinstance(value, float) else str(value)
    elif isinstance(value, str):
        text = clean_text(value)  # as the endpoint read it: a Mac's decomposed 'í' is cp1252's 'í'
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        return LIST_SEPARATOR.join(clean_text(x) for x in value)
    else:
        raise ValueError(f"a request field ('{column}') holds a {type(value).__name__}, which no cell can hold")
    if dialect.decimal != "." and kind in ("number", "integer") and parses_as_float(text):
        return text.replace(".", dialect.decimal)
    return text


def _appended(data: bytes, rows: list[list[str]], dialect: CsvDialect) -> bytes:
    """``data`` (a CSV in ``dialect``) with ``rows`` after its last row, in its delimiter, line endings and
    encoding."""
    text = data.decode(dialect.decoding)
    ending = "\r\n" if "\r\n" in text else "\r" if "\r" in text and "\n" not in text else "\n"
    separator = "" if text.endswith(("\n", "\r")) else ending
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=dialect.delimiter, lineterminator=ending).writerows(rows)
    combined = text + separator + buffer.getvalue()
    if dialect.utf8:
        return (codecs.BOM_UTF8 if data.startswith(codecs.BOM_UTF8) else b"") + combined.encode("utf-8")
    return combined.encode(dialect.encoding)
