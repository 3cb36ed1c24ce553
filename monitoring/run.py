"""The monitoring run: a window of captured traffic + doctors' feedback against the training baseline.

``run_monitor`` returns the report as a plain dict (what ``report.json`` holds);
``write_report`` writes ``report.json``, ``report.html`` and SageMaker's
``constraint_violations.json`` to a folder. The report's ``verdict`` is ``alert`` when a feature
drifted, the predicted-category mix drifted, a class's live recall fell below its gate threshold or
the orphan slice did; ``warn`` for weaker signals; ``ok``; or ``no data`` for an empty window.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from diagnosa.data.validate import clip, shown
from diagnosa.files import write_text_atomic
from diagnosa.lake import DataLake
from inference.capture import parse_time, read_errors
from inference.feedback import MAX_REVISIONS, read_feedback
from inference.limits import has_surrogate, printable
from monitoring.drift import (
    DRIFT,
    INSUFFICIENT,
    OK,
    WARN,
    DriftThresholds,
    data_drift,
    patient_codes,
    patient_rows,
    prediction_drift,
)
from monitoring.identity import ModelFacts, baseline_model
from monitoring.quality import (
    BELOW,
    FEW,
    NONE,
    SUSPECT,
    QualityThresholds,
    join_feedback,
    live_quality,
)
from monitoring.report import render_html
from monitoring.traffic import PATIENT, Skipped, read_traffic, read_traffic_since
from processing.baseline import Baseline
from processing.metrics import DEFAULT_RECALL_THRESHOLD

REPORT_VERSION = 1
ALERT, NO_DATA = "alert", "no data"
_DURATION = re.compile(r"([0-9]+) *([mhdw])")  # always fullmatch
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class WindowError(ValueError):
    """A monitoring window that cannot be used; the message says which bound and why."""


# The instants a window may hold: the reads widen it by their filing margin (an hour or two on each side), which
# overflowed at datetime's ends (--until 9999-12-31T23:59:59Z, --last 24h --until 0001-01-02: a traceback).
_ROOM = timedelta(days=2)
EARLIEST = datetime.min.replace(tzinfo=timezone.utc) + _ROOM
LATEST = datetime.max.replace(tzinfo=timezone.utc) - _ROOM


def _day(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"  # strftime's %Y writes the year 1 as "1"


_RANGE = f"between {_day(EARLIEST)} and {_day(LATEST)}"


def _before(when: datetime, length: timedelta) -> datetime | None:
    """``length`` before ``when``; None when that is before EARLIEST (or before the year 1)."""
    try:
        earlier = when - length
    except OverflowError:
        return None
    return earlier if earlier >= EARLIEST else None


def _instant(text: str, what: str) -> datetime:
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise WindowError(f"{what} {shown(text, 80)} is not an ISO 8601 date or time (e.g. 2026-11-27 or "
                          f"2026-11-27T08:00:00Z)") from None
    try:
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        in_range = EARLIEST <= when <= LATEST
    except OverflowError:  # 9999-12-31T23:00-01:00 is in the year 10000 in UTC
        in_range = False
    if not in_range:
        raise WindowError(f"{what} {shown(text, 80)} is out of range: give an instant {_RANGE} (UTC)")
    return when


def quality_start(start: datetime | None, feedback_lag: timedelta) -> datetime | None:
    """Where live quality's requests start: ``feedback_lag`` before the window's ``start`` (None: open); WindowError
    when that is before the earliest instant a window may hold."""
    if start is None:
        return None
    earlier = _before(start, feedback_lag)
    if earlier is None:
        raise WindowError(f"--feedback-lag {feedback_lag.days}d reaches back before {_day(EARLIEST)} from the window's "
                          "start: give a shorter lag")
    return earlier


def parse_duration(text: str, flag: str, zero: bool = False) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``2w`` (``0`` too with ``zero``) as a timedelta; WindowError naming ``flag``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if zero and text.strip() == "0":
        return timedelta(0)
    digits = match[1].lstrip("0") if match else ""
    if not match or (not digits and not zero):
        raise WindowError(f"{flag} {shown(text, 80)} must be a {'' if zero else 'positive '}duration like 30m, 24h, "
                          "7d or 2w")
    try:
        if len(digits) > 12:  # longer than any timedelta, and int() reads 4,300 digits at most (a bare ValueError)
            raise OverflowError
        return timedelta(**{_UNITS[match[2]]: int(digits or "0")})
    except OverflowError:
        raise WindowError(f"{flag} {shown(text, 80)} reaches back before the year 1: give a shorter window") from None


def parse_window(since: str | None = None, until: str | None = None, last: str | None = None,
                 now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """``[start, end)`` in UTC from ``--since/--until`` (ISO) or ``--last 24h`` (m, h, d, w); None = open."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if last is not None and since is not None:
        raise WindowError("give either --last or --since, not both")
    for flag, value in (("--since", since), ("--until", until)):
        if value is not None and not value.strip():  # an unset shell variable: it read as no bound at all
            raise WindowError(f"{flag} is empty or blank (an unset shell variable?): give an instant such as "
                              f"2026-12-01T00:00:00Z, or leave {flag} out")
    end = _instant(until, "--until") if until else None
    if last is not None:
        length = parse_duration(last, "--last")
        first = _before(end or now, length)  # 999999999d: before year 1
        if first is None:
            raise WindowError(f"--last {shown(last, 80)} reaches back before {_day(EARLIEST)}: give a shorter window")
        return first, end
    start = _instant(since, "--since") if since else None
    if start is not None and end is not None and start >= end:
        raise WindowError(f"--since {shown(since, 80)} is not before --until {shown(until, 80)}")
    if start is not None and end is None and start > now:  # a window of traffic not yet answered: "NO DATA", status 0
        raise WindowError(f"--since {shown(since, 80)} is after now ({now.isoformat(timespec='seconds')}): no traffic "
                          "is there yet (traffic stamped by a clock ahead of this one is read with --until)")
    return start, end


@dataclass(frozen=True)
class MonitorSettings:
    drift: DriftThresholds = field(default_factory=DriftThresholds)
    quality: QualityThresholds = field(default_factory=QualityThresholds)

    def validate(self) -> None:
        self.drift.validate()
        self.quality.validate()

    def to_dict(self) -> dict[str, Any]:
        quality = asdict(self.quality)
        quality["recall"] = dict(self.quality.recall)
        groups = self.quality.trained_groups  # how many, not which: the baseline lists them
        quality["trained_groups"] = None if groups is None else len(groups)
        return {"drift": asdict(self.drift), "quality": quality}


def settings_from_baseline(baseline: Baseline, drift: DriftThresholds | None = None,
                           min_feedback: int | None = None, model: ModelFacts | None = None) -> MonitorSettings:
    """Recall thresholds default to the gate the model passed (kept in the prediction baseline).

    The model's labels, and whether it has an orphan slice, come from its prediction baseline; without one, from what
    is known of the model (``model``: the served model's metadata; else what the baseline files and their run say,
    ``monitoring.identity.baseline_model``). Not known at all is a ValueError asking for the evaluation folder: the
    built-in cohort's five labels judged every other dataset's endpoint on labels it never answers."""
    known = baseline_model(baseline) if baseline.predictions is None else ModelFacts()
    if model is not None:
        known = known.merged(model) if known.dataset is None or known.dataset == model.dataset else known
    predictions = baseline.predictions or {}
    # The model's labels (a dataset of your own has its own: the cohort's five refused every such endpoint).
    labels = tuple(_strings(predictions, "labels") or known.labels or ())
    if not labels:
        raise ValueError(f"the baseline ({', '.join(baseline.sources)}) does not say which labels the model answers "
                         "with: give its evaluation folder too (--baseline <run>/evaluation, which holds "
                         "prediction_baseline.json)")
    # The orphan slice is the cohort's: a model whose evaluation had none (a dataset of your own) is not judged on it.
    orphan = _object(predictions, "orphan")
    orphan_slice = orphan is not None if baseline.predictions else bool(known.orphan_slice)
    # The diseases the model trained on (prediction baselines before them did not list them: unseen not judged).
    trained = _strings(orphan or {}, "trained_groups", "orphan.trained_groups")
    quality = QualityThresholds(recall={label: DEFAULT_RECALL_THRESHOLD for label in labels}, labels=labels,
                                orphan_slice=orphan_slice, trained_groups=None if trained is None else frozenset(trained))
    gate = _object(predictions, "thresholds") or {}
    recall = _object(gate, "recall", "thresholds.recall")
    if recall:
        quality = replace(quality, recall={**quality.recall, **recall})
    # An explicit 0 is a threshold (``or`` made it the default), and it holds without per-class ones too.
    if gate.get("orphan_macro_recall") is not None:
        quality = replace(quality, orphan_macro_recall=gate["orphan_macro_recall"])
    if gate.get("unseen_macro_recall") is not None:
        quality = replace(quality, unseen_macro_recall=gate["unseen_macro_recall"])
    if min_feedback is not None:
        quality = replace(quality, min_feedback=min_feedback)
    return MonitorSettings(drift or DriftThresholds(), quality)


def _object(parent: Mapping[str, Any], key: str, name: str | None = None) -> dict[str, Any] | None:
    """``parent[key]``: an object, or None when absent or null; anything else (a hand-edited prediction_baseline.json)
    is a ValueError naming it, not an AttributeError traceback that left the job without its failure file."""
    value = parent.get(key)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"prediction_baseline.json: {name or key!r} must be an object (or null), "
                         f"got {type(value).__name__} {_as_written(value)}")
    return value


def _strings(parent: Mapping[str, Any], key: str, name: str | None = None) -> list[str] | None:
    """``parent[key]``: a list of texts, or None when absent or null; else a ValueError naming it (a null or a number
    among them became the disease 'None' or '558')."""
    value = parent.get(key)
    if value is None:
        return None
    expected = f"prediction_baseline.json: {name or key!r} must be a list of non-empty texts"
    if not isinstance(value, list):
        raise ValueError(f"{expected}, got {type(value).__name__} {_as_written(value)}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{expected}, got the entry {_as_written(item)}")
    return value


def _as_written(value: Any) -> str:
    """A value quoted as the JSON file spells it (null, not None), clipped."""
    return clip(json.dumps(value, ensure_ascii=True, default=str), 80)


def _iso(when: datetime | None) -> str | None:
    """UTC, ``Z``; the year in four digits (strftime's ``%Y`` wrote year 1 as ``1``, which fromisoformat cannot read),
    a fraction of a second only where the instant has one (the window is cut there)."""
    if when is None:
        return None
    utc = when.astimezone(timezone.utc) if when.tzinfo is not None else when  # naive: UTC already, as parse_window's
    return utc.replace(tzinfo=None).isoformat(
        timespec="microseconds" if when.microsecond else "seconds") + "Z"


def run_monitor(lake: DataLake, endpoint: str, baseline: Baseline, start: datetime | None = None,
                end: datetime | None = None, settings: MonitorSettings | None = None,
                now: datetime | None = None, model_version: str | None = None,
                feedback_lag: timedelta = timedelta(0)) -> dict[str, Any]:
    """The report of the window ``[start, end)``. ``model_version``: the version of the model the baselines are of
    (default: the one their files and run name, ``monitoring.identity.baseline_model``, when they name one). Only
    the requests that version answered are judged; those of other versions are left out and counted — one model's
    traffic is never compared with another's baselines (in AWS the window also starts when the serving model did).

    ``feedback_lag``: how long after a request its feedback may still come. Drift is judged on the window's requests;
    live quality on those of ``[start - feedback_lag, end)``, so a diagnosis confirmed days after the request (a lab
    result, a specialist's visit) is joined by a later report. Without it, a daily report joined only the feedback
    given within the day of the request, and later feedback was never counted by any report."""
    settings = settings or settings_from_baseline(baseline)
    settings.validate()
    if feedback_lag < timedelta(0):
        raise WindowError(f"the feedback lag {feedback_lag} is negative")
    if model_version is None:
        model_version = baseline_model(baseline).version
    kinds = {name: "boolean" if fb.field_type == "boolean" else fb.kind for name, fb in baseline.data.features.items()}
    missing = {name: fb.missing_values for name, fb in baseline.data.features.items()}
    patient = baseline.data.patient_column  # a dataset of visits: the request field naming each row's patient
    if patient is not None:
        missing[patient] = baseline.data.patient_missing_values
    quality_from = quality_start(start, feedback_lag)
    if start is None or quality_from is None or quality_from == start:  # an open window holds every older request
        traffic = judged = read_traffic(lake, endpoint, start, end, kinds, missing=missing, model_version=model_version,
                                        patient=patient)
    else:
        traffic, judged = read_traffic_since(lake, endpoint, start, quality_from, end, kinds, missing=missing,
                                             model_version=model_version, patient=patient)
    rows = traffic.rows
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    ahead = _ahead_of(rows, now)
    patients_of_rows = rows[PATIENT] if patient is not None else None
    features = data_drift(baseline.data, rows, settings.drift, traffic.type_errors, patients_of_rows)
    predictions = prediction_drift(baseline.predictions, rows["predicted"], settings.drift,
                                   settings.quality.labels, patient_rows(patients_of_rows))

    # The feedback of the window's events (by event or inference id), not all there is: on AWS the event ids name no
    # time, and every daily job fetched every feedback object ever written and listed it all as not captured.
    feedback = read_feedback(lake, endpoint, (quality_from, end), ids=judged.feedback_ids())
    fb_skipped = Skipped()
    for reason, count in feedback.problems.items():
        for example in feedback.examples.get(reason, []):
            fb_skipped.add(reason, example, 0)
        fb_skipped.counts[reason] += count
    # Revisions (records an object's current one replaced) never count as feedback; said, not joined.
    for reason, count in feedback.bad_revisions.items():
        fb_skipped.counts[reason] += count
    if feedback.unread_revisions:
        fb_skipped.counts[f"feedback revisions beyond the {MAX_REVISIONS} an object keeps, not read"] += \
            feedback.unread_revisions
    joined = join_feedback(judged.rows, feedback.latest, fb_skipped, settings.quality.labels, judged.other_models,
                           judged.retried, judged.by_inference)
    quality = live_quality(joined, settings.quality, patient_codes(joined[PATIENT]) if patient is not None else None)
    # The requests whose feedback was joined: the window's, and those of the feedback lag before it.
    quality["window"] = {"start": _iso(quality_from), "end": _iso(end), "feedback_lag_seconds":
                         int(feedback_lag.total_seconds()) if start is not None else 0,
                         "events": judged.events, "patients": len(judged.rows)}
    quality["feedback"] = {"records": feedback.records, "superseded": feedback.superseded, "latest": len(feedback.latest),
                           "matched": len(joined), "skipped": fb_skipped.to_dict(),
                           "outside_window": feedback.outside, "not_named_by_traffic": feedback.not_named}

    drifted = [f.name for f in features if f.verdict == DRIFT]
    alerts = []
    if drifted:
        alerts.append(f"data drift in {len(drifted)} feature(s): {', '.join(drifted)}")
    if predictions["verdict"] == DRIFT:
        alerts.append("the mix of predicted categories drifted (" + "; ".join(predictions["reasons"]) + ")")
    for label in quality["failing_classes"]:
        c = quality["per_class"][label]
        alerts.append(f"live recall of {label} {c['recall']:.3f} < {c['threshold']:.3f} "
                      f"({c['hits']} of {c['n']} confirmed cases predicted right)")
    o, u = quality["orphan"], quality["orphan_unseen"]
    if o["status"] == BELOW:
        alerts.append(f"orphan-slice macro recall {o['macro_recall']:.3f} < {o['threshold']:.3f} (n={o['n']})")
    if u["status"] == BELOW:
        alerts.append(f"macro recall on orphan diseases absent from training {u['macro_recall']:.3f} < "
                      f"{u['threshold']:.3f} (n={u['n']})")
    patients = len(rows)
    if alerts:
        verdict = ALERT
    elif patients == 0 and quality["n"] == 0:
        verdict = NO_DATA
    elif all(f.verdict == INSUFFICIENT for f in features) and predictions["verdict"] == INSUFFICIENT \
            and not any(c["status"] not in (NONE, FEW) for c in quality["per_class"].values()):
        verdict = INSUFFICIENT  # traffic, but too little to judge anything: not "ok"
    elif any(f.verdict == WARN for f in features) or predictions["verdict"] == WARN or quality["suspect_classes"] \
            or SUSPECT in (o["status"], u["status"]):
        verdict = WARN
    else:
        verdict = OK
    reasons = []
    if drifted:
        reasons.append(f"drift: {', '.join(drifted)}")
    if quality["failing_classes"]:
        reasons.append(f"live recall below threshold: {', '.join(quality['failing_classes'])}")
    if o["status"] == BELOW:
        reasons.append("orphan slice below threshold")
    if u["status"] == BELOW:
        reasons.append("unseen orphan diseases below threshold")
    if predictions["verdict"] == DRIFT:
        reasons.append("predicted-category mix drifted")
    violations = [{"feature_name": f.name, **v} for f in features for v in f.violations]
    return _unicode_only({
        "version": REPORT_VERSION,
        "endpoint": endpoint,
        "window": {"start": _iso(start), "end": _iso(end)},
        "generated_at": _iso(now),
        "baseline": {"sources": baseline.sources, "item_count": baseline.data.item_count,
                     "has_prediction_baseline": baseline.predictions is not None},
        "thresholds": settings.to_dict(),
        "verdict": verdict,
        "alerts": alerts,
        "drifted_features": drifted,
        "failing_classes": list(quality["failing_classes"]) + (["orphan slice"] if o["status"] == BELOW else [])
        + (["unseen orphan diseases"] if u["status"] == BELOW else []),
        "retrain": {"recommended": bool(reasons), "reasons": reasons},
        "traffic": {"events": traffic.events, "patients": patients, "skipped": traffic.skipped.to_dict(),
                    **({"patient_column": _patient_column(patient, patients_of_rows)} if patient is not None else {}),
                    # A dataset of visits read as rows (ingestion's note, no patient column): said, not fixed here.
                    **({"unnamed_patient_columns": list(baseline.data.unnamed_patient_columns)}
                       if patient is None and baseline.data.unnamed_patient_columns else {}),
                    # the version judged (None: not known, every request judged) and the requests others answered
                    "model_version": model_version, "other_versions": traffic.other_versions(),
                    # Requests stamped after the report's time: an endpoint whose clock runs ahead of this machine's.
                    "ahead_of_now": ahead},
        # Requests the local endpoint refused in the window (its capture-errors/ stream; none on SageMaker).
        "refusals": read_errors(lake, endpoint, start, end, keep_events=False).summary(),
        "features": [f.to_dict() for f in features],
        "predictions": predictions,
        "quality": quality,
        "constraint_violations": violations,
    })


def _patient_column(name: str, patients: Any) -> dict[str, Any]:
    """What the window's requests say of their patients, for a dataset of several rows per patient: the rows that
    name one, how many patients they name, and a note when none does (each row then counts as a patient of its own,
    and a few patients' many visits look like drift)."""
    named = patients.dropna()
    out: dict[str, Any] = {"name": name, "rows_naming_a_patient": int(len(named)),
                           "patients_named": int(named.nunique())}
    if len(patients) and not len(named):
        out["note"] = (f"no request names its patient ('{name}'): each row is judged as a patient of its own, so the "
                       f"visits of a few patients can look like drift; send '{name}' with each patient record")
    return out


def _ahead_of(rows: Any, now: datetime) -> dict[str, Any]:
    """How many of the window's requests (and patients) are stamped after ``now``, and the latest stamp: an endpoint
    whose clock runs ahead files them where a window with no end reads them, so the next such window (a daily
    ``--last 24h``) counts them again. Said, not hidden: the clocks need setting right (NTP)."""
    events = patients = 0
    latest: datetime | None = None
    if len(rows):
        per_event = rows.groupby("event_id", sort=False)["inference_time"].agg(["first", "size"])
        for text, size in zip(per_event["first"], per_event["size"]):
            try:
                when = parse_time(text)
            except ValueError:
                continue
            if when > now:
                events, patients = events + 1, patients + int(size)
                latest = when if latest is None or when > latest else latest
    return {"events": events, "patients": patients, "latest": _iso(latest)}


def _unicode_only(value: Any) -> Any:
    """``value`` with each lone surrogate in its strings (keys too) written as its ``\\udXXX`` escape text: a report
    quotes what the lake holds (a refusal's message, an object's name a local folder listed with surrogateescape),
    and one surrogate failed the UTF-8 write of report.json, leaving it empty."""
    if isinstance(value, str):
        return printable(value) if has_surrogate(value) else value
    if isinstance(value, dict):
        return {_unicode_only(key): _unicode_only(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unicode_only(item) for item in value]
    return value


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """report.json, report.html and constraint_violations.json (SageMaker's layout) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "html": out_dir / "report.html",
             "violations": out_dir / "constraint_violations.json"}
    # Each whole or not at all: a report that failed to write was left as an empty report.json.
    write_text_atomic(paths["json"], json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    write_text_atomic(paths["html"], render_html(report))
    write_text_atomic(paths["violations"], json.dumps({"violations": report["constraint_violations"]}, indent=2,
                                                      ensure_ascii=False) + "\n")
    return paths


def run_name(now: datetime) -> str:
    """A monitoring run's name: its time and a random suffix, as executions are named, so two runs in one second
    (a script's, or a report and a retraining) never share a report folder or lake prefix."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def report_prefix(endpoint: str, name: str) -> str:
    """Lake prefix for a run's outputs: artifacts/monitoring/<endpoint>/<run name>/."""
    return f"artifacts/monitoring/{endpoint}/{name}"
