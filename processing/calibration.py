"""Honest-number metrics: Wilson intervals on recall, calibration error, Brier score, reliability plots.

Pure functions over true label indices ``y`` (ints in ``[0, k)``) and probability rows ``proba``
(n x k). Evaluation uses them for the test report; training uses them to report calibration out of
fold. Conventions: the expected calibration error (ECE) is the top-label one -- rows binned by
their highest probability into ``bins`` equal-width bins, ECE = sum over bins of
(rows in bin / n) * |accuracy in bin - mean top probability in bin| -- and the Brier score is the
multiclass one, mean over rows of sum over classes of (p - onehot)^2 (0 is perfect, 2 the worst).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diagnosa.text import fixed, markdown_literal
from processing.plots import plain_text

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
DEFAULT_BINS = 10


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when n == 0 (nothing to estimate). ``n`` may be an
    effective sample size (``clustered_wilson_interval``), and ``successes`` then its share of it."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def clustered_wilson_interval(hits: np.ndarray, rows: np.ndarray, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson interval for a recall over patients with several rows each (``hits[i]`` of ``rows[i]`` rows of
    patient i right): a patient's visits are not independent draws, and a Wilson interval over the rows was far
    too narrow (a patient seen 16 times counted as 16 patients). The Wilson interval is taken at the effective
    number of rows of Korn and Graubard (1998): n_eff = r (1 - r) / var(r), var(r) the cluster-robust (linearised)
    variance of the ratio r = sum(hits) / sum(rows), at most the rows, times (z / t)^2 with t Student's quantile on
    m - 1 degrees of freedom for m patients (a variance from 3 patients says little: without it, one wrong visit of
    30 made the interval narrower than none did). The number of patients when the rows give no variance (every
    patient all right or all wrong). None without rows."""
    from scipy.stats import t as student

    hits, rows = np.asarray(hits, dtype=float), np.asarray(rows, dtype=float)
    total, m = float(rows.sum()), len(rows)
    if total == 0:
        return None
    r = float(hits.sum()) / total
    variance = m / (m - 1) * float(((hits - r * rows) ** 2).sum()) / total ** 2 if m > 1 else 0.0
    if variance > 0:
        quantile = float(student.ppf(1 - (1 - math.erf(z / math.sqrt(2))) / 2, m - 1))
        n_eff = min(total, r * (1 - r) / variance) * (z / quantile) ** 2
    else:
        n_eff = float(m)
    return wilson_interval(r * n_eff, n_eff, z)


def _check(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, proba = np.asarray(y), np.asarray(proba, dtype=float)
    if proba.ndim != 2 or y.ndim != 1 or len(y) != len(proba) or len(y) == 0:
        raise ValueError(f"need n labels and an n x k probability matrix, got {y.shape} and {proba.shape}")
    if y.min() < 0 or y.max() >= proba.shape[1]:
        raise ValueError(f"label indices must lie in [0, {proba.shape[1]})")
    return y.astype(np.int64), proba


def reliability_bins(y: np.ndarray, proba: np.ndarray, bins: int = DEFAULT_BINS,
                     predicted: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per non-empty bin of confidence: its edges, row count, mean confidence and accuracy. The
    confidence of a row is the probability of its decision: ``predicted`` (e.g. decision weights'
    choices), else the top label."""
    y, proba = _check(y, proba)
    decision = proba.argmax(axis=1) if predicted is None else np.asarray(predicted, dtype=np.int64)
    if decision.shape != y.shape:
        raise ValueError(f"need one decision per row, got {decision.shape} for {y.shape}")
    confidence, correct = proba[np.arange(len(y)), decision], decision == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(in_bin.sum()),
                        "confidence": float(confidence[in_bin].mean()), "accuracy": float(correct[in_bin].mean())})
    return out


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = DEFAULT_BINS,
                               predicted: np.ndarray | None = None) -> float:
    """Top-label ECE (see the module docstring), of ``predicted`` decisions when given; 0 for a predictor
    whose confidence matches its accuracy."""
    y, proba = _check(y, proba)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(y, proba, bins, predicted)) / len(y))


def brier_score(y: np.ndarray, proba: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of the squared distance to the one-hot truth."""
    y, proba = _check(y, proba)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((proba - onehot) ** 2).sum(axis=1).mean())


def calibration_summary(y: np.ndarray, proba: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """ECE, Brier score, mean top probability, accuracy and the reliability bins, as plain JSON."""
    y, proba = _check(y, proba)
    return {"ece": expected_calibration_error(y, proba, bins), "brier": brier_score(y, proba),
            "mean_confidence": float(proba.max(axis=1).mean()),
            "accuracy": float((proba.argmax(axis=1) == y).mean()), "bins": reliability_bins(y, proba, bins)}


def calibration_numbers(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """:func:`calibration_summary` without the bins: what a model's metadata keeps of its out-of-fold calibration."""
    summary = calibration_summary(y, proba)
    return {key: summary[key] for key in ("ece", "brier", "mean_confidence", "accuracy")}


def recall_table(y: np.ndarray, pred: np.ndarray, labels: Sequence[str],
                 patients: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per label: support, hits, recall (None without support) and its 95 % Wilson interval. ``patients`` (a
    patient key per row, a dataset with several rows per patient): the interval is over patients
    (``clustered_wilson_interval``), and each label's row says how many patients its rows are."""
    y, pred = np.asarray(y), np.asarray(pred)
    out = {}
    for j, label in enumerate(labels):
        mine = y == j
        n = int(mine.sum())
        hits = int((mine & (pred == j)).sum())
        row: dict[str, Any] = {"support": n, "hits": hits, "recall": hits / n if n else None}
        if patients is None:
            interval = wilson_interval(hits, n)
        else:
            keys, index = np.unique(np.asarray(patients)[mine], return_inverse=True)
            interval = clustered_wilson_interval(np.bincount(index, weights=(pred[mine] == j).astype(float),
                                                             minlength=len(keys)),
                                                 np.bincount(index, minlength=len(keys)))
            row["patients"] = int(len(keys))
        row["recall_ci95"] = list(interval) if interval else None
        out[str(label)] = row
    return out


@plain_text
def plot_reliability(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike,
                     title: str = "Reliability") -> Path:
    """A reliability diagram: accuracy against mean confidence per bin, one line per named curve."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, bins in curves.items():
        xs = [b["confidence"] for b in bins]
        ys = [b["accuracy"] for b in bins]
        sizes = [12 + 60 * math.sqrt(b["n"] / max(1, max(bb["n"] for bb in bins))) for b in bins]
        ax.plot(xs, ys, marker="o", label=name)
        ax.scatter(xs, ys, s=sizes, alpha=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Mean top probability (confidence)")
    ax.set_ylabel("Accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


TRAINING_FITTED = "out of fold at training"
VOTE_FITTED = "on the vote's own out-of-fold probabilities, by Select"


def honest_section(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, decided: np.ndarray,
                   labels: Sequence[str], decision_weights: Sequence[float] | None = None,
                   calibration: Mapping[str, Any] | None = None, patients: np.ndarray | None = None, *,
                   vote: bool = False) -> dict[str, Any]:
    """What evaluation.json adds for honest numbers: per-class recall with its Wilson interval and support,
    with and without the decision weights, and calibration before (raw) and after (served probabilities).
    ``patients``: each row's patient key, when patients have several rows (the intervals are then over them).
    ``vote``: the model is Select's vote of candidates, whose calibration Select fitted on the vote's own
    out-of-fold probabilities (its raw probabilities: the weighted mean of its members' calibrated ones)."""
    y = np.asarray(y)
    plain = np.asarray(calibrated).argmax(axis=1)
    with_weights, without = recall_table(y, decided, labels, patients), recall_table(y, plain, labels, patients)

    def macro(table: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        present = {k: v["recall"] for k, v in table.items() if v["support"]}
        worst = min(present, key=lambda k: present[k])
        return {"macro_recall": float(np.mean(list(present.values()))),
                "worst_class_recall": {"label": worst, "recall": present[worst]}}

    return {
        "recall": with_weights,
        "recall_without_decision_weights": without,
        "with_decision_weights": macro(with_weights),
        "without_decision_weights": macro(without),
        "intervals": "wilson" if patients is None else "wilson over patients (effective sample size)",
        "decision_weights": (None if decision_weights is None
                             else {str(label): float(w) for label, w in zip(labels, decision_weights)}),
        "calibration": {"method": dict(calibration) if calibration else None,
                        "fitted": VOTE_FITTED if vote else TRAINING_FITTED,
                        "before": calibration_summary(y, raw), "after": calibration_summary(y, calibrated)},
        # The calibration rows score the top probability; the endpoint answers the decision weights' category. With
        # weights [1, 1, 3] the table said accuracy 0.65 where the answers were right 0.49 of the time (a probe).
        "decisions": {"accuracy": float(np.mean(np.asarray(decided) == y)) if len(y) else None,
                      "top_probability_agreement": float(np.mean(np.asarray(decided) == plain)) if len(y) else None},
    }


def report_lines(section: Mapping[str, Any], out_dir: str | os.PathLike, title: str = "") -> tuple[list[str],
                                                                                                    dict[str, str]]:
    """Markdown for the report (recall with intervals, with/without decision weights, calibration) and the
    reliability plot it links, written into ``out_dir``."""
    path = Path(out_dir) / "reliability.png"
    cal = section["calibration"]
    plot_reliability({f"before calibration (ECE {cal['before']['ece']:.3f})": cal["before"]["bins"],
                      f"served, calibrated (ECE {cal['after']['ece']:.3f})": cal["after"]["bins"]},
                     path, f"{title}: reliability" if title else "Reliability")
    by_patient = any("patients" in row for row in section["recall"].values())
    lines = ["", "## Recall per class, with 95 % Wilson intervals", "",
             *(["The patients have several rows each: the intervals are over patients (a Wilson interval at the "
                "effective number of rows, the patient's rows not being independent), and the support says how many "
                "patients its rows are.", ""] if by_patient else []),
             "| Label | Support | Recall (decision weights) | 95 % interval | Recall (plain argmax) | Weight |",
             "|---|---:|---:|---|---:|---:|"]
    weights = section.get("decision_weights") or {}
    for label, row in section["recall"].items():
        ci = row["recall_ci95"]
        plain = section["recall_without_decision_weights"][label]["recall"]
        support = (f"{row['support']} ({row['patients']} patient{'s' * (row['patients'] != 1)})" if "patients" in row
                   else str(row["support"]))
        lines.append(f"| {markdown_literal(label, table_cell=True)} | {support} | {fixed(row['recall'])} | "
                     f"{'n/a' if ci is None else f'{ci[0]:.3f}–{ci[1]:.3f}'} | {fixed(plain)} | "
                     f"{fixed(weights.get(label), 2)} |")
    w, wo = section["with_decision_weights"], section["without_decision_weights"]
    worst, worst_plain = w["worst_class_recall"], wo["worst_class_recall"]
    lines += ["", f"Macro recall {fixed(w['macro_recall'])} with the decision weights, {fixed(wo['macro_recall'])} "
              f"without; worst class {markdown_literal(worst['label'])} {fixed(worst['recall'])} with, "
              f"{markdown_literal(worst_plain['label'])} {fixed(worst_plain['recall'])} without. "
              "A small class's interval is wide: read its recall with it.", "",
              "## Calibration", "",
              "| Probabilities | ECE | Brier | Mean top probability | Accuracy |", "|---|---:|---:|---:|---:|"]
    vote = cal.get("fitted") == VOTE_FITTED
    for name, key in (("before calibration (the members' weighted mean)" if vote else "before calibration (classifier)",
                       "before"), ("served (calibrated)", "after")):
        c = cal[key]
        lines.append(f"| {name} | {c['ece']:.4f} | {c['brier']:.4f} | {c['mean_confidence']:.3f} | "
                     f"{c['accuracy']:.3f} |")
    decisions = section.get("decisions") or {}
    if decisions.get("accuracy") is not None:
        lines += ["", f"The table's accuracy is the top probability's. The category the endpoint answers is the "
                  f"decision weights' choice: the top probability's in {decisions['top_probability_agreement']:.1%} "
                  f"of the test rows, and right in {decisions['accuracy']:.1%} of them."]
    method = cal.get("method")
    if method:
        lines += ["", f"Calibration: {method.get('method')}, temperature {method.get('temperature', 1.0):.3f}"
                  + (", per-class bias " + ", ".join(f"{b:+.2f}" for b in method["bias"]) if method.get("bias")
                     else "") + f" (fitted {cal.get('fitted') or TRAINING_FITTED})."]
    lines += ["", f"![Reliability]({path.name})", ""]
    return lines, {"reliability": str(path)}
