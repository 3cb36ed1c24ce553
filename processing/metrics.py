"""Evaluation of an ordinal multiclass triage model: metrics, a recall gate and a human-readable report.

Missing a rare class (or an orphan-disease patient) is the costly error, so besides the usual scores this
reports per-class recall, the worst class, orphan/common slices and ordinal distance of the mistakes. The
result is plain JSON (no numpy types, no NaN) so it can be stored as a pipeline property file or registered
as SageMaker model-quality metrics; ``multiclass_classification_metrics`` mirrors SageMaker's own layout.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    fbeta_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from diagnosa.data.schema import BUILTIN_SLICE, seen_slice, unseen_slice
from diagnosa.text import fixed, markdown_literal
from processing.plots import plain_text, tick_labels

# The recall gate's defaults: minimum test recall per class, minimum macro recall on a dataset's slice (the cohort's
# orphan diseases) and on the slice's groups held out of training (docs/model-benchmark.md, "Unseen orphan diseases").
# The pipeline's parameters, the AWS stage's settings and the monitor's live thresholds all start from these.
DEFAULT_RECALL_THRESHOLD = 0.80
DEFAULT_ORPHAN_THRESHOLD = 0.50
DEFAULT_UNSEEN_THRESHOLD = 0.40
SUM_TOLERANCE = 1e-3
CLIP_EPS = 1e-15
_SAGEMAKER_STD = "NaN"  # SageMaker writes the string "NaN" when it did not bootstrap a standard deviation.


def _num(x: Any) -> float | None:
    """A plain float, or None where the metric is undefined (JSON has no NaN)."""
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _validate(y_true: Sequence[str], proba: np.ndarray, labels: Sequence[str],
              orphan: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reject bad input loudly: a silently wrong metric could let a bad model through the gate."""
    labels = list(labels)
    if len(labels) < 2:
        raise ValueError(f"need at least 2 labels, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels contain duplicates: {labels!r}")
    y = list(y_true)
    if len(y) == 0:
        raise ValueError("empty input: y_true has no samples")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in y if v not in index})
    if unknown:
        raise ValueError(f"y_true contains values not in labels: {unknown!r} (labels: {labels!r})")
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape != (len(y), len(labels)):
        raise ValueError(f"proba shape mismatch: expected ({len(y)}, {len(labels)}) "
                         f"(samples, labels), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if np.any(p < 0):
        raise ValueError("proba contains negative probabilities")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if bad.size:
        raise ValueError(f"proba rows must sum to 1 (±{SUM_TOLERANCE}); {bad.size} row(s) do not, "
                         f"first at row {bad[0]} (sum {sums[bad[0]]:.6g})")
    mask = None
    if orphan is not None:
        raw = np.asarray(orphan)
        if raw.ndim != 1 or raw.shape[0] != len(y):
            raise ValueError(f"orphan mask has wrong length: expected {len(y)}, got shape {raw.shape}")
        if raw.dtype != bool and not np.isin(raw, [0, 1]).all():
            raise ValueError("orphan mask must be boolean (or 0/1)")
        mask = raw.astype(bool)
    return np.array([index[v] for v in y]), p, mask


def _wrap(value: float) -> dict[str, Any]:
    return {"value": float(value), "standard_deviation": _SAGEMAKER_STD}


def _sagemaker_section(t: np.ndarray, pred: np.ndarray, labels: list[str], cm: np.ndarray) -> dict[str, Any]:
    """SageMaker ModelQuality multiclass layout, so the numbers can go straight into the Model Registry."""
    ks = list(range(len(labels)))
    const = np.full_like(t, int(np.argmax(np.bincount(t, minlength=len(labels)))))  # ties -> lower index

    def scores(p: np.ndarray, suffix: str) -> dict[str, Any]:
        prec, rec, _, _ = precision_recall_fscore_support(t, p, labels=ks, average="weighted", zero_division=0)
        out = {"accuracy": accuracy_score(t, p), "weighted_recall": rec, "weighted_precision": prec}
        for name, beta in (("weighted_f0_5", 0.5), ("weighted_f1", 1.0), ("weighted_f2", 2.0)):
            out[name] = fbeta_score(t, p, beta=beta, labels=ks, average="weighted", zero_division=0)
        return {f"{k}{suffix}": _wrap(v) for k, v in out.items()}

    section = {**scores(pred, ""), **scores(const, "_best_constant_classifier")}
    section["confusion_matrix"] = {labels[i]: {labels[j]: int(cm[i, j]) for j in ks} for i in ks}
    return section


def slice_scores(t: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Recall per class inside one patient subset; macro over the classes that occur in it."""
    if t.size == 0:
        return {"n": 0, "recall_per_class": {label: None for label in labels}, "macro_recall": None,
                "accuracy": None}
    _, rec, _, _ = precision_recall_fscore_support(t, pred, labels=list(range(len(labels))), average=None,
                                                   zero_division=np.nan)
    present = [r for r in rec if not math.isnan(r)]
    return {"n": int(t.size), "recall_per_class": {label: _num(r) for label, r in zip(labels, rec)},
            "macro_recall": float(np.mean(present)), "accuracy": float(accuracy_score(t, pred))}


def evaluate(y_true: Sequence[str], proba: np.ndarray, labels: Sequence[str], *,
             orphan: np.ndarray | None = None, slice_name: str = BUILTIN_SLICE,
             predicted: ArrayLike | None = None, unseen: np.ndarray | None = None,
             ordinal: bool = True) -> dict[str, Any]:
    """Score predicted probabilities against true labels; ``labels`` order is the ordinal order (``ordinal``
    False: the labels have no order, and no ordinal error is reported: a distance between them means nothing).

    ``orphan`` marks the rows of the dataset's slice, reported as ``slices[slice_name]`` (the built-in
    cohort's slice is ``orphan``) beside ``slices["common"]``, the rows outside it. ``predicted`` (label
    indices) are the model's decisions when they are not the plain argmax of ``proba`` (a model with
    decision weights); threshold-free scores (log loss, average precision) use ``proba``.

    ``unseen`` (a subset of the slice: rows whose group, e.g. orphan disease, had no training patient)
    splits the slice further into ``slices[f"{slice_name}_seen"]`` and ``slices[f"{slice_name}_unseen"]``."""
    t, p, mask = _validate(y_true, proba, labels, orphan)
    labels = [str(label) for label in labels]
    k, n = len(labels), t.size
    ks = list(range(k))
    if predicted is None:
        pred = p.argmax(axis=1)  # ties go to the lower (milder) index
    else:
        pred = np.asarray(predicted, dtype=np.int64)
        if pred.shape != t.shape or pred.min() < 0 or pred.max() >= k:
            raise ValueError(f"predicted must hold {n} label indices in [0, {k})")
    cm = confusion_matrix(t, pred, labels=ks)
    support = cm.sum(axis=1)

    prec, rec, f1, _ = precision_recall_fscore_support(t, pred, labels=ks, average=None, zero_division=np.nan)
    fp = cm.sum(axis=0) - np.diag(cm)
    tn = n - support - fp
    per_class: dict[str, Any] = {}
    for j, label in enumerate(labels):
        negatives = tn[j] + fp[j]
        ap = average_precision_score(t == j, p[:, j]) if support[j] else None
        per_class[label] = {
            "precision": _num(prec[j]), "recall": _num(rec[j]), "f1": _num(f1[j]),
            "specificity": _num(tn[j] / negatives) if negatives else None,
            "average_precision": None if ap is None else float(ap), "support": int(support[j]),
        }

    # Averages run over classes present in y_true; a present class never predicted counts as precision 0
    # (skipping it would flatter a model that ignores a rare class).
    present = [j for j in ks if support[j] > 0]
    averages = {}
    for avg in ("macro", "weighted"):
        ap_, ar_, af_, _ = precision_recall_fscore_support(t, pred, labels=present, average=avg, zero_division=0)
        averages[avg] = {"precision": float(ap_), "recall": float(ar_), "f1": float(af_)}
    worst = min(present, key=lambda j: (rec[j], j))

    clipped = np.clip(p, CLIP_EPS, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)  # rows within tolerance of 1 -> exactly 1 for sklearn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": absent classes are skipped
        balanced = balanced_accuracy_score(t, pred)

    row_sums = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=float), where=row_sums > 0)
    slices: dict[str, Any] = {}
    if mask is not None:
        slices = {slice_name: slice_scores(t[mask], pred[mask], labels), "common": slice_scores(t[~mask], pred[~mask], labels)}
        if unseen is not None:
            unseen = np.asarray(unseen, dtype=bool)
            if unseen.shape != mask.shape or (unseen & ~mask).any():
                raise ValueError("unseen mask must mark a subset of the slice's rows")
            slices[seen_slice(slice_name)] = slice_scores(t[mask & ~unseen], pred[mask & ~unseen], labels)
            slices[unseen_slice(slice_name)] = slice_scores(t[unseen], pred[unseen], labels)

    return {
        "multiclass_classification_metrics": _sagemaker_section(t, pred, labels, cm),
        "diagnosa": {
            "n": int(n), "labels": labels,
            "support": {label: int(s) for label, s in zip(labels, support)},
            "accuracy": float(accuracy_score(t, pred)), "balanced_accuracy": float(balanced),
            "per_class": per_class, **averages,
            "worst_class_recall": {"label": labels[worst], "recall": float(rec[worst])},
            **({"ordinal": {"mse": float(mean_squared_error(t, pred)), "mae": float(mean_absolute_error(t, pred))}}
               if ordinal else {}),
            "log_loss": float(log_loss(t, clipped, labels=ks)),
            "confusion_matrix": {"labels": labels, "counts": cm.astype(int).tolist(),
                                 "row_normalised": normalised.tolist()},
            "slices": slices,
        },
    }


def recall_gate(evaluation: dict, thresholds: Mapping[str, float],
                orphan_threshold: float | None = None, slice_thresholds: Mapping[str, float] | None = None) -> list[dict]:
    """Failed recall checks (empty = pass). Undefined recall fails: we cannot show the class is found.

    ``slice_thresholds`` maps a slice's name to its minimum macro recall (``orphan_threshold`` is the
    ``orphan`` slice's); a slice the evaluation does not have is undefined, so it fails."""
    d = evaluation["diagnosa"]
    unknown = sorted(set(thresholds) - set(d["labels"]))
    if unknown:
        raise ValueError(f"recall thresholds name labels not in the evaluation: {unknown!r} "
                         f"(labels: {d['labels']!r})")
    checks = [(f"recall[{label}]", d["per_class"][label]["recall"], float(th)) for label, th in thresholds.items()]
    slices = dict(slice_thresholds or {})
    if orphan_threshold is not None:
        slices["orphan"] = orphan_threshold
    for name, threshold in slices.items():
        found = d.get("slices", {}).get(name) or {}
        checks.append((f"{name}_macro_recall", found.get("macro_recall"), float(threshold)))
    return [{"check": name, "value": value, "threshold": th, "shortfall": th - (value or 0.0)}
            for name, value, th in checks if value is None or value < th]


TICK_CHARS = 32  # of a label on a plot's axis (the report's tables give it whole)


@plain_text
def _plot_confusion(d: dict[str, Any], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = d["confusion_matrix"]["labels"]
    k = len(labels)
    size = max(5.0, 1.1 * k + 2.5)
    fig = Figure(figsize=(2 * size, size), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = (("Counts", np.array(d["confusion_matrix"]["counts"], dtype=float), "{:.0f}"),
              ("Row-normalised\n(recall on the diagonal)", np.array(d["confusion_matrix"]["row_normalised"]),
               "{:.2f}"))
    shown = tick_labels(labels, TICK_CHARS)
    for ax, (name, m, fmt) in zip(axes, panels):
        im = ax.imshow(m, cmap="Blues", vmin=0, vmax=max(float(m.max()), 1e-9))
        ax.set_title(name)
        ax.set_xticks(range(k), shown, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_yticks(range(k), shown, fontsize=8)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        for i in range(k):
            for j in range(k):
                dark = m[i, j] > 0.6 * m.max()
                ax.text(j, i, fmt.format(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{title}: confusion matrix (n={d['n']})")
    fig.savefig(path, dpi=120)


@plain_text
def _plot_recall(d: dict[str, Any], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = d["labels"]
    series = [("all", [d["per_class"][lb]["recall"] for lb in labels])]
    for name in d["slices"]:  # the dataset's slice (the cohort's: orphan), then common
        if name in d["slices"]:
            series.append((name, [d["slices"][name]["recall_per_class"][lb] for lb in labels]))
    fig = Figure(figsize=(max(7.0, 1.6 * len(labels) + 2), 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for s, (name, values) in enumerate(series):
        offs = x + (s - (len(series) - 1) / 2) * width
        heights = [np.nan if v is None else v for v in values]
        ax.bar(offs, heights, width, label=name)
        for xb, v in zip(offs, values):
            ax.text(xb, (v or 0) + 0.01, fixed(v, 2), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, tick_labels(labels, TICK_CHARS), rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("Recall")
    ax.set_title(f"{title}: per-class recall")
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=120)


def _by_patient(d: dict[str, Any]) -> str:
    """What the split by patient says of the test rows: no named patient had a row in training; rows naming no
    patient are each a patient of their own, whose other rows the split could not know."""
    unnamed = int(d.get("rows_without_patient") or 0)
    if not unnamed:
        return "split by patient: none of them had a row in training"
    return (f"split by patient: no patient named had a row in training; {unnamed} row{'s' * (unnamed != 1)} "
            f"name{'s' * (unnamed == 1)} no patient, each counted as a patient of its own, whose other rows may be "
            "in training")


SPLIT_NAMES = {"train": "training", "validation": "validation", "test": "test"}


def split_lines(split: Mapping[str, Any]) -> tuple[str, str | None]:
    """Evaluate's ``split`` section in words: the rows of each split beside the shares asked, and, when a share lies
    far from its fraction, why and what it costs (None otherwise)."""
    rows, asked, far = split["rows"], split["asked"], split.get("far") or {}
    total = sum(rows.values()) or 1
    line = (" · ".join(f"{rows[name]:,} {word}" for name, word in SPLIT_NAMES.items()) + " rows ("
            + " · ".join(f"{100 * rows[name] / total:.0f} %" for name in SPLIT_NAMES) + "; asked "
            + " · ".join(f"{100 * share:g}" for share in asked) + " %)")
    if not far:
        return line, None
    off = "; ".join(f"{SPLIT_NAMES.get(name, name)} {100 * f['share']:.0f} %, asked {100 * f['asked']:g} %"
                    for name, f in far.items())
    kept = ("each patient's rows" + (", and each held-out group of the slice," if split.get("groups") else "")
            if split.get("unit") == "patient" else "each held-out group of the slice" if split.get("groups")
            else "each class's rows in proportion")
    why = (f"it keeps {kept} in one split, so a few that hold many rows move the shares, and these scores rest on "
           "other numbers of rows than planned"
           + (". A placeholder patient (UNKNOWN, 0) is better left empty; ingestion's note heavy_patients names such "
              "patients" if split.get("unit") == "patient" else ""))
    return line, f"the split's row shares lie far from those asked ({off}): {why}"


def write_report(evaluation: dict, out_dir: str | os.PathLike, *,
                 title: str = "Diagnosa evaluation") -> dict[str, str]:
    """Write two PNG plots and a Markdown report for reviewers; returns the three paths."""
    d = evaluation["diagnosa"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.md", "confusion_matrix": out / "confusion_matrix.png",
             "per_class_recall": out / "per_class_recall.png"}
    _plot_confusion(d, paths["confusion_matrix"], title)
    _plot_recall(d, paths["per_class_recall"], title)

    worst = d["worst_class_recall"]
    split = split_lines(d["split"]) if "split" in d else None
    lines = [
        f"# {title}", "",
        f"- Samples: {d['n']}" + (f" rows of {d['patients']} patient{'s' * (d['patients'] != 1)} ({_by_patient(d)})"
                                  if "patients" in d else ""),
        *([f"- Split: {split[0]}"] if split else []),
        *([f"- **Note:** {split[1]}"] if split and split[1] else []),
        f"- Accuracy: {fixed(d['accuracy'])} · balanced accuracy: {fixed(d['balanced_accuracy'])}",
        f"- Macro recall: {fixed(d['macro']['recall'])} · macro F1: {fixed(d['macro']['f1'])} · "
        f"weighted F1: {fixed(d['weighted']['f1'])}",
        f"- Worst class recall: {fixed(worst['recall'])} ({markdown_literal(worst['label'])})",
        f"- Log loss: {fixed(d['log_loss'], 4)}",
        (f"- Ordinal error (label index distance): MAE {fixed(d['ordinal']['mae'])}, MSE {fixed(d['ordinal']['mse'])}"
         if "ordinal" in d else "- Labels not ordered (the dataset's `ordinal = false`): no ordinal error"), "",
        "## Per class", "",
        "| Label | Support | Precision | Recall | F1 | Specificity | Avg. precision |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in d["labels"]:
        c = d["per_class"][label]
        lines.append(f"| {markdown_literal(label, table_cell=True)} | {c['support']} | {fixed(c['precision'])} | "
                     f"{fixed(c['recall'])} | {fixed(c['f1'])} | {fixed(c['specificity'])} | "
                     f"{fixed(c['average_precision'])} |")
    if "honest" in d:  # recall intervals, decision weights and calibration (processing/calibration.py)
        from processing.calibration import report_lines

        extra, extra_paths = report_lines(d["honest"], out, title)
        lines += extra
        paths.update({key: Path(value) for key, value in extra_paths.items()})
    lines += ["", "## Slices", ""]
    if d["slices"]:
        names = list(d["slices"])
        lines += ["| Metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
                  "| n | " + " | ".join(str(d["slices"][s]["n"]) for s in names) + " |",
                  "| Accuracy | " + " | ".join(fixed(d["slices"][s]["accuracy"]) for s in names) + " |",
                  "| Macro recall | " + " | ".join(fixed(d["slices"][s]["macro_recall"]) for s in names) + " |"]
        for label in d["labels"]:
            lines.append(f"| Recall {markdown_literal(label, table_cell=True)} | "
                         + " | ".join(fixed(d["slices"][s]["recall_per_class"][label]) for s in names) + " |")
        reference = d.get("knowledge_reference")
        if reference:
            names = [s for s in reference["slices"] if s in d["slices"]]
            lookup = reference.get("own_disease_included")
            lines += ["", f"Knowledge-only reference: {reference['method']}. The model must beat it."]
            if lookup:
                lines += ["", f"Knowledge lookup: {lookup['method']}. With a generated cohort (its orphan patients "
                              "drawn from their disease's annotations) it is near an upper bound; on real patients, "
                              "how far the phenotype alone names the disease."]
            lines += ["", "| Macro recall | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
                      "| model | " + " | ".join(fixed(d["slices"][s]["macro_recall"]) for s in names) + " |",
                      "| reference | " + " | ".join(fixed(reference["slices"][s]["macro_recall"]) for s in names) + " |"]
            if lookup:
                lines.append("| lookup, own disease included | "
                             + " | ".join(fixed(lookup["slices"][s]["macro_recall"]) for s in names) + " |")
    else:
        lines.append("No slices were evaluated (the dataset has no slice).")
    if "ordinal" in d:
        lines += ["", "## Ordinal errors", "",
                  f"Mean absolute error {fixed(d['ordinal']['mae'])} and mean squared error {fixed(d['ordinal']['mse'])} "
                  "in label-index units (order: " + " < ".join(map(markdown_literal, d["labels"])) + ")."]
    lines += ["", "## Plots", "",
              f"![Confusion matrix]({paths['confusion_matrix'].name})", "",
              f"![Per-class recall]({paths['per_class_recall'].name})", ""]
    paths["report"].write_text("\n".join(lines), encoding="utf-8")
    return {key: str(path) for key, path in paths.items()}
