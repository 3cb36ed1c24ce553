"""Retraining with doctors' feedback: a new curated dataset version, then a new pipeline execution.

1. ``feedback_dataset`` materialises the training data: the raw batch the current curated version
   was ingested from, plus one clinical record (and lab row) per accepted feedback — the captured
   request's fields with the doctor's confirmed diagnosis as the label — written as a *new raw
   batch* (raw is write-once) and ingested through the normal path, so validation and quarantine
   apply to feedback rows exactly as to hospital data (a captured request without an age, say, is
   quarantined with its reason, not silently dropped).
2. A pipeline execution on that version follows: locally ``diagnosa monitor --retrain`` starts it as
   ``diagnosa run --local`` does (``diagnosa.services.retraining_input`` names the version as its
   ``InputDataUri``), on AWS the retrain function does. The pipeline's recall gate then decides
   whether the new model is registered (and so whether it replaces the old one).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from diagnosa.data.ingest import BATCH_NAME, IngestReport, curated_prefix, ingest_cohort, latest_version, raw_keys
from diagnosa.data.physiology import LABS
from diagnosa.data.schema import BUILTIN_DATASET
from diagnosa.lake import DataLake
from inference.feedback import read_feedback
from monitoring.traffic import Skipped, read_traffic

RECORD_FIELDS = ("age", "sex", "temperature_c", "heart_rate_bpm", "respiratory_rate_bpm", "systolic_bp_mmhg",
                 "diastolic_bp_mmhg", "spo2_pct", "symptoms", "prior_diagnoses")
KINDS = {name: ("terms" if name in ("symptoms", "prior_diagnoses") else "category" if name == "sex" else "numeric")
         for name in (*RECORD_FIELDS, *LABS)}


class RetrainError(ValueError):
    """Retraining cannot start; the message says what is missing."""


@dataclass
class FeedbackDataset:
    base_version: str
    base_batch: str
    batch: str
    feedback_rows: int  # feedback turned into records
    skipped: Skipped = field(default_factory=Skipped)
    report: IngestReport | None = None

    @property
    def version(self) -> str:
        assert self.report is not None
        return self.report.version

    def summary(self) -> str:
        lines = [f"training data with feedback: raw batch {self.batch} = {self.base_batch} + {self.feedback_rows} "
                 f"feedback record(s)"]
        for reason, count in self.skipped.counts.most_common():
            lines.append(f"  feedback not used ({count}): {reason}")
        if self.report is not None:
            lines.append(self.report.summary())
        return "\n".join(lines)


def _number(value: Any) -> Any:
    return None if value is None else (int(value) if float(value).is_integer() else value)


def feedback_records(lake: DataLake, endpoint: str, start: datetime | None = None, end: datetime | None = None
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Skipped]:
    """Clinical records and lab rows (raw-zone shapes) for the accepted feedback of ``endpoint``."""
    traffic = read_traffic(lake, endpoint, start, end, KINDS)
    skipped = Skipped()
    feedback = read_feedback(lake, endpoint)
    rows = traffic.rows
    by_event = {event: part for event, part in rows.groupby("event_id", sort=False)} if len(rows) else {}
    records, labs = [], []
    for event_id, item in sorted(feedback.latest.items()):
        part = by_event.get(event_id)
        if part is None:
            skipped.add("no captured request for this event id", event_id)
            continue
        if len(part) != 1:
            skipped.add("feedback for a multi-patient request (which patient is ambiguous)", event_id)
            continue
        row = part.iloc[0]
        patient_id = f"FB-{event_id}"
        date = str(row["inference_time"] or "")[:10]
        record: dict[str, Any] = {"patient_id": patient_id, "encounter_date": date}
        for name in RECORD_FIELDS:
            value = row[name]
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
        lab = {name: row[name] for name in LABS}
        if any(v is not None and v == v for v in lab.values()):
            labs.append({"patient_id": patient_id, "collected_at": date, **lab})
    return records, labs, skipped


def feedback_dataset(lake: DataLake, endpoint: str, *, base_version: str | None = None,
                     start: datetime | None = None, end: datetime | None = None) -> FeedbackDataset:
    """Write base batch + feedback as a new raw batch and ingest it (a new curated version)."""
    base_version = base_version or latest_version(lake, BUILTIN_DATASET)
    manifest_key = f"{curated_prefix(BUILTIN_DATASET, base_version)}/manifest.json"
    if not lake.exists(manifest_key):
        raise RetrainError(f"no curated version {base_version!r} of '{BUILTIN_DATASET}' in {lake.uri}")
    manifest = lake.get_json(manifest_key)
    base_batch = manifest.get("batch")
    if not base_batch:
        raise RetrainError(f"curated version {base_version} was not ingested from a raw cohort batch (records + labs); "
                           "feedback can only be added to such a batch")
    records, labs, skipped = feedback_records(lake, endpoint, start, end)
    if not records:
        raise RetrainError("no accepted feedback to add: " + (", ".join(f"{c} {r}" for r, c in skipped.counts.items())
                                                              or "no feedback in the lake"))
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
    result = FeedbackDataset(base_version, base_batch, batch, len(records), skipped)
    result.report = ingest_cohort(lake, batch)
    return result
