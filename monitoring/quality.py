"""Live model quality: doctors' confirmed diagnoses joined with the captured predictions.

Per class: recall = confirmed cases of the class the model predicted as that class, with the
count and a Wilson 95% interval. A class *fails* (alert) when it has at least ``min_feedback``
confirmed cases and even the interval's upper bound is below its gate threshold — the shortfall
is beyond sampling noise; a point estimate below the threshold whose interval still reaches it is
reported as "below threshold, not significant" (a warning: collect more feedback). With 25
confirmed cases a true recall of 0.80 shows as 0.76 or lower about a third of the time, which is
why the point estimate alone would page doctors for noise. The orphan slice (feedback naming a
rare-disease id) gets its macro recall, as the evaluation job computes it on test, judged by the same rule with an
interval of its own (``macro_interval``: its classes' Wilson intervals combined), and so does its unseen part:
feedback naming a rare disease the served model had no training patient of (the prediction baseline lists the
diseases it had), the patients the recall gate's ``UnseenOrphanRecallThreshold`` guards.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from diagnosa.labels import CATEGORIES
from inference.feedback import Feedback, confirmed_patients
from monitoring.traffic import PATIENT, Skipped, event_rows, onto_kept_copies
from processing.calibration import clustered_wilson_interval, wilson_interval
from processing.metrics import DEFAULT_ORPHAN_THRESHOLD, DEFAULT_RECALL_THRESHOLD, DEFAULT_UNSEEN_THRESHOLD

BELOW, SUSPECT, PASSED, FEW, NONE = ("below threshold", "below threshold, not significant", "ok",
                                     "insufficient feedback", "no feedback")
OTHER_MODEL_FEEDBACK = "feedback for a prediction of another model version (not judged against these baselines)"
NOT_MONITORED = "not monitored"  # the orphan slice of a model whose evaluation had none (a dataset of your own)


@dataclass(frozen=True)
class QualityThresholds:
    recall: Mapping[str, float] = field(default_factory=lambda: {c: DEFAULT_RECALL_THRESHOLD for c in CATEGORIES})
    orphan_macro_recall: float = DEFAULT_ORPHAN_THRESHOLD
    min_feedback: int = 5  # confirmed cases a class needs before its recall can fail it
    labels: tuple[str, ...] = CATEGORIES  # the model's (a dataset of your own has its own)
    # Feedback naming an ORPHA:/OMIM: disease is the orphan slice: only for a model evaluated on one (the cohort's).
    orphan_slice: bool = True
    unseen_macro_recall: float = DEFAULT_UNSEEN_THRESHOLD
    # The orphan diseases the model had training patients of (its split's groups.json); None: not known, and
    # the unseen slice is not monitored.
    trained_groups: frozenset[str] | None = None

    def validate(self) -> None:
        unknown = sorted(set(self.recall) - set(self.labels))
        if unknown:
            raise ValueError(f"recall thresholds name unknown classes: {unknown}")
        for name, value in [*self.recall.items(), ("orphan", self.orphan_macro_recall),
                            ("unseen orphan", self.unseen_macro_recall)]:
            # A baseline file edited by hand may hold anything: a text compared with a number was a TypeError.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"recall threshold for {name} must be a number in [0, 1], got {value!r}")
        if self.min_feedback < 1:
            raise ValueError(f"min_feedback must be at least 1, got {self.min_feedback}")


NOT_A_LABEL = "feedback label not one of the model's labels"


def join_feedback(rows: pd.DataFrame, feedback: Mapping[tuple[str, int | None], Feedback], skipped: Skipped,
                  labels: Iterable[str] | None = None, other_models: Mapping[str, str] | None = None,
                  retried: Mapping[str, str] | None = None, by_inference: Mapping[str, str] | None = None
                  ) -> pd.DataFrame:
    """One row per confirmed patient of a captured event: predicted, confirmed, orphan. ``feedback``: the latest
    per (event id, event row as given); its patient is the request's only one, or the one at its event_row.

    Feedback whose diagnosis is none of ``labels`` (the model's; feedback written straight to the lake, or by AWS
    IAM, is not checked against them) is counted under its reason, not joined: it is no class's confirmed case and
    no miss. ``other_models`` (event id → model version) names the events another model version answered, left
    out of the window: their feedback is counted as such, not as "not captured". ``retried`` (earlier copy → the
    copy kept, ``Traffic.retried``): feedback on a copy left out confirms the copy kept; ``by_inference``
    (``Traffic.by_inference``): feedback naming a request by its inference id confirms its event's patient."""
    columns = ["event_id", "row", "predicted", "confirmed", "orphan", "disease_id",
               *([PATIENT] if PATIENT in rows.columns else [])]  # each confirmed row's patient (a dataset of visits)
    if not feedback:
        return pd.DataFrame(columns=columns)
    known = None if labels is None else set(labels)
    other_models, retried = other_models or {}, retried or {}
    by_event = event_rows(rows)

    def patients(item: Feedback) -> int | tuple[str, str]:
        if known is not None and item.diagnosis not in known:
            return NOT_A_LABEL, f"{item.where}: {item.diagnosis!r}"
        if item.event_id in other_models:
            return OTHER_MODEL_FEEDBACK, f"{item.where}: model version {other_models[item.event_id]}"
        found = by_event.get(item.event_id)
        if found is None:
            return "feedback for an event id not captured in this window", item.where
        return found.patients

    joined = []
    predicted = rows["predicted"] if len(rows) else pd.Series(dtype=object)  # a column taken once, not per patient
    patient = rows[PATIENT] if PATIENT in rows.columns and len(rows) else None
    for (event_id, row), item in confirmed_patients(onto_kept_copies(feedback.values(), retried, by_inference), patients,
                                                          skipped.add).items():
        position = by_event[event_id].positions.get(row)
        if position is None:  # the traffic reader left this patient out (its record was not a JSON object)
            skipped.add("the confirmed patient's captured record is not a JSON object", f"{event_id} row {row}")
            continue
        joined.append({"event_id": event_id, "row": row, "predicted": predicted.iat[position],
                       "confirmed": item.diagnosis, "orphan": item.orphan, "disease_id": item.disease_id,
                       **({PATIENT: patient.iat[position]} if patient is not None else {})})
    return pd.DataFrame(joined, columns=columns)


def live_quality(joined: pd.DataFrame, th: QualityThresholds, patients: np.ndarray | None = None) -> dict[str, Any]:
    """Live recall per class (and the orphan slices') from the joined feedback. ``patients``: each joined row's
    patient code (monitoring.drift.patient_codes), where a patient may have several rows (visits): a class's
    interval is then over its patients (clustered_wilson_interval), as Evaluate's is."""
    labels = list(th.labels)
    # Only confirmed cases of the model's labels count, in accuracy too (join_feedback leaves the others out, counted).
    kept = joined["confirmed"].isin(labels).to_numpy()
    joined = joined[kept]
    patients = None if patients is None else np.asarray(patients)[kept]

    def interval(mask: np.ndarray, right: np.ndarray) -> tuple[float, float] | None:
        if patients is None:
            return wilson_interval(int(right[mask].sum()), int(mask.sum()))
        _, codes = np.unique(patients[mask], return_inverse=True)
        return clustered_wilson_interval(np.bincount(codes, weights=right[mask].astype(float)),
                                         np.bincount(codes).astype(float))
    per_class: dict[str, Any] = {}
    failing = []
    for label in labels:
        is_label = (joined["confirmed"] == label).to_numpy()
        right = (joined["predicted"] == label).to_numpy()
        mine = joined[is_label]
        n = len(mine)
        hits = int((mine["predicted"] == label).sum())
        threshold = float(th.recall.get(label, DEFAULT_RECALL_THRESHOLD))
        recall = hits / n if n else None
        if n == 0:
            status = NONE
        elif n < th.min_feedback:
            status = FEW
        elif recall is not None and recall < threshold:
            bounds = interval(is_label, right)
            if bounds is not None and bounds[1] < threshold:
                status = BELOW
                failing.append(label)
            else:
                status = SUSPECT
        else:
            status = PASSED
        predicted_as = dict(Counter(mine["predicted"].fillna("(none)")))
        per_class[label] = {"n": n, "hits": hits, "recall": recall, "interval_95": interval(is_label, right) if n else None,
                            "threshold": threshold, "status": status, "predicted_as": predicted_as}
        if patients is not None:
            per_class[label]["patients"] = int(len(np.unique(patients[is_label])))
    orphan_rows = joined[joined["orphan"] == True]  # noqa: E712  (None means "not stated")
    orphan = _slice_quality(orphan_rows, labels, th.orphan_macro_recall, th.min_feedback,
                            NOT_MONITORED if not th.orphan_slice else None)
    if th.trained_groups is None:
        unseen_rows = orphan_rows.iloc[:0]
    else:
        trained = {disease_key(g) for g in th.trained_groups}
        unseen_rows = orphan_rows[~orphan_rows["disease_id"].map(disease_key).isin(trained)]
    unseen = _slice_quality(unseen_rows, labels, th.unseen_macro_recall, th.min_feedback,
                            NOT_MONITORED if not th.orphan_slice or th.trained_groups is None else None)
    n = len(joined)
    return {"n": n, "accuracy": float((joined["predicted"] == joined["confirmed"]).mean()) if n else None,
            "per_class": per_class, "orphan": orphan, "orphan_unseen": unseen, "failing_classes": failing,
            "suspect_classes": [label for label, c in per_class.items() if c["status"] == SUSPECT],
            "orphan_failing": orphan["status"] == BELOW, "orphan_unseen_failing": unseen["status"] == BELOW}


def disease_key(disease_id: object) -> str:
    """'orpha:558' and 'ORPHA:558' are one disease: the prefix's case does not matter, the code's is kept."""
    prefix, sep, code = str(disease_id or "").strip().partition(":")
    return f"{prefix.upper()}{sep}{code}"


def macro_interval(counts: list[tuple[int, int]]) -> tuple[float, float] | None:
    """A 95% interval for the macro recall of classes with ``counts`` (hits, confirmed cases; each class confirmed
    in the slice): their Wilson intervals combined for a mean (MOVER, Zou & Donner 2008): the mean of the recalls
    minus/plus the root of the summed squared distances to each class's bound, over the number of classes. One class:
    its Wilson interval, the per-class rule. It narrows as every class gets cases; a class of few keeps it wide, as it
    keeps the macro recall uncertain. None without a class."""
    if not counts:
        return None
    k = len(counts)
    recalls = [hits / n for hits, n in counts]
    bounds = [wilson_interval(hits, n) or (0.0, 1.0) for hits, n in counts]
    mean = sum(recalls) / k
    below = math.sqrt(sum((r - low) ** 2 for r, (low, _) in zip(recalls, bounds))) / k
    above = math.sqrt(sum((high - r) ** 2 for r, (_, high) in zip(recalls, bounds))) / k
    return max(0.0, mean - below), min(1.0, mean + above)


def _slice_quality(rows: pd.DataFrame, labels: list[str], threshold: float, min_feedback: int,
                   status: str | None = None) -> dict[str, Any]:
    """A slice's live macro recall over its confirmed cases (as the evaluation computes it on test) and its status;
    ``status`` given (NOT_MONITORED) overrides the judgement."""
    found: dict[str, Any] = {"n": len(rows), "threshold": threshold, "recall_per_class": {}}
    counts = []
    for label in labels:
        mine = rows[rows["confirmed"] == label]
        if len(mine):
            hits_of = int((mine["predicted"] == label).sum())
            found["recall_per_class"][label] = {"n": len(mine), "recall": hits_of / len(mine)}
            counts.append((hits_of, len(mine)))
    found["macro_recall"] = sum(h / n for h, n in counts) / len(counts) if counts else None
    found["interval_95_macro"] = macro_interval(counts)
    hits = int((rows["predicted"] == rows["confirmed"]).sum())
    found["interval_95_micro"] = wilson_interval(hits, len(rows))
    # The macro recall is judged by its own interval: the pooled (micro) one let a large class found right hide
    # classes all missed (two at 0/25 beside 950/950: macro 0.33, the pooled interval 0.94-0.96, never significant).
    upper = (found["interval_95_macro"] or (0.0, 1.0))[1]
    if status is None:
        if found["n"] == 0:
            status = NONE
        elif found["n"] < min_feedback:
            status = FEW
        elif found["macro_recall"] < threshold:
            status = BELOW if upper < threshold else SUSPECT
        else:
            status = PASSED
    found["status"] = status
    return found
