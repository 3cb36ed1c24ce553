"""Data drift of a window of captured traffic against the training baseline, with a verdict per feature.

Per feature kind:
- numbers: PSI over the baseline's deciles and a two-sample Kolmogorov–Smirnov test;
- categories: PSI and a chi-square goodness-of-fit test over the categories;
- term sets (symptoms, prior diagnoses): PSI and chi-square over the distribution of mentions
  (the baseline's most frequent terms + "other"), plus a two-proportion test per term
  (Bonferroni-corrected) naming the terms whose frequency changed, and terms never seen in training;
- every feature: the missing-value rate against the baseline's (two-proportion test) and
  SageMaker-style constraint checks (data type, completeness, domain, baseline distance).

Verdicts: ``drift`` when the test is significant (p < p_value) and PSI ≥ min_psi, or the missing
rate moved by ≥ missing_rate_delta significantly; ``warn`` when the test is significant with PSI <
min_psi, or a constraint is violated; ``insufficient data`` below min_rows live values; else ``ok``.
PSI alone makes no verdict: in small samples it is large by chance (see ``_verdict``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from diagnosa.labels import CATEGORIES
from monitoring.stats import (
    binned,
    chi_square,
    clustered_chi_square,
    ks_weighted,
    psi,
    quantile_edges,
    share_tests,
    two_proportions,
)
from processing.baseline import DataBaseline, FeatureBaseline
from processing.split import effective_rows, worth_share

OK, WARN, DRIFT, INSUFFICIENT = "ok", "warn", "drift", "insufficient data"
_RANK = {INSUFFICIENT: 0, OK: 1, WARN: 2, DRIFT: 3}
TOP_TERMS = 30


@dataclass(frozen=True)
class DriftThresholds:
    min_psi: float = 0.10  # the population stability index a significant shift needs to be drift
    p_value: float = 0.01
    min_rows: int = 30  # live values a feature needs before a verdict
    missing_rate_delta: float = 0.10  # absolute change of the missing-value rate that counts as drift

    def validate(self) -> None:
        if not 0 < self.min_psi < math.inf:
            raise ValueError(f"min_psi must be a positive number, got {self.min_psi}")
        if not 0 < self.p_value < 1:
            raise ValueError(f"p_value must be in (0, 1), got {self.p_value}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be at least 1, got {self.min_rows}")
        if not 0 < self.missing_rate_delta <= 1:
            raise ValueError(f"missing_rate_delta must be in (0, 1], got {self.missing_rate_delta}")


def worst(verdicts: list[str]) -> str:
    return max(verdicts, key=_RANK.__getitem__) if verdicts else INSUFFICIENT


@dataclass
class FeatureDrift:
    name: str
    kind: str
    verdict: str
    n_live: int
    n_present: int
    reasons: list[str] = field(default_factory=list)
    tests: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, Any] = field(default_factory=dict)
    violations: list[dict[str, str]] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)  # bins, baseline and live shares
    terms: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "verdict": self.verdict, "n_live": self.n_live,
                "n_present": self.n_present, "reasons": self.reasons, "tests": self.tests,
                "missing": self.missing, "violations": self.violations, "distribution": self.plot,
                **({"terms": self.terms} if self.terms else {})}


def _verdict(psi_value: float, p: float, th: DriftThresholds, what: str, reasons: list[str]) -> str:
    """``drift`` needs a significant test (p < p_value) and a shift that matters (PSI ≥ min_psi); a significant
    test with a small PSI (a large window's slight shift) is ``warn``; a test that is not significant is ``ok``,
    whatever the PSI.

    PSI alone cannot tell drift in a small sample: n live values drawn from the baseline itself over k bins have
    PSI ≈ (k − 1)/n by chance (0.3 at n = 30, and an empty live bin adds 0.3 more), so PSI ≥ 0.25 alone called
    three clean samples of 30 in four 'drift', and as a warning it warned in 95 % of them. The test's p-value
    accounts for the sample size."""
    if p >= th.p_value:
        return OK
    if psi_value >= th.min_psi:
        reasons.append(f"{what}: PSI {psi_value:.3f} ≥ {th.min_psi} and p = {p:.2g} < {th.p_value}")
        return DRIFT
    reasons.append(f"{what}: significant (p = {p:.2g}) but small (PSI {psi_value:.3f})")
    return WARN


MIN_EXPECTED = 5.0  # live count a category must be expected to have to be its own cell of the chi-square test


RARE_CELL = "(rare categories)"


def _rare(expected: Mapping[str, float], observed: Mapping[str, float]) -> set[str]:
    """The categories :func:`_pooled` pools (none unless at least two are rare)."""
    total_e, total_o = sum(expected.values()), sum(observed.values())
    if total_e <= 0 or total_o <= 0:
        return set()
    rare = {k for k in set(expected) | set(observed) if expected.get(k, 0.0) / total_e * total_o < MIN_EXPECTED}
    return rare if len(rare) >= 2 else set()


def _pooled(expected: Mapping[str, float], observed: Mapping[str, float]
            ) -> tuple[dict[str, float], dict[str, float]]:
    """Categories the live sample is expected to hold fewer than MIN_EXPECTED times of (rare ones, new ones) pooled
    into one cell, the usual condition of the chi-square approximation: with 30 values, one patient of a 0.2 %
    category gave p < 0.001 by itself. A category new or rare in bulk still moves the pooled cell."""
    rare = _rare(expected, observed)
    if not rare:
        return dict(expected), dict(observed)
    pool = RARE_CELL
    e = {k: float(v) for k, v in expected.items() if k not in rare}
    o = {k: float(v) for k, v in observed.items() if k not in rare}
    e[pool] = float(sum(expected.get(k, 0.0) for k in rare))
    o[pool] = float(sum(observed.get(k, 0.0) for k in rare))
    return e, o


@dataclass(frozen=True)
class Sample:
    """A feature's live values where a patient may have several rows (visits), and what they are worth."""
    patients: int
    rows: int
    worth: float  # independent values they are worth at most (processing.split.effective_rows)
    base_scale: float  # the baseline's counts times this: what they are worth (DataBaseline.sample_scale)

    def to_dict(self) -> dict[str, Any]:
        return {"patients": self.patients, "effective_values": round(self.worth, 1)}


def _effective(expected: Mapping[str, float], observed: Mapping[str, float], sample: Sample | None
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Category counts as what they are worth: each side's counts times its share of independent draws."""
    if sample is None:
        return dict(expected), dict(observed)
    live = sample.worth / max(sample.rows, 1)
    return ({k: v * sample.base_scale for k, v in expected.items()}, {k: v * live for k, v in observed.items()})


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _numeric(fb: FeatureBaseline, live: np.ndarray, th: DriftThresholds, result: FeatureDrift,
             config: Mapping[str, Any], sample: Sample | None = None) -> str:
    if fb.values.size == 0:
        result.reasons.append("the baseline has no values for this feature")
        return INSUFFICIENT
    edges = quantile_edges(fb.values, fb.weights)
    base_counts = binned(fb.values, edges, fb.weights)
    live_counts = binned(live, edges)
    value = psi(base_counts, live_counts)
    ks = ks_weighted(fb.values, fb.weights, live, None if sample is None else sample.worth,
                     None if sample is None else float(fb.weights.sum()) * sample.base_scale)
    result.tests = {"psi": round(value, 6), "ks": {"statistic": round(ks.statistic, 6), "p_value": ks.p_value},
                    "baseline_mean": fb.mean, "live_mean": float(live.mean()),
                    "baseline_std": fb.std_dev, "live_std": float(live.std())}
    if sample is not None:
        result.tests.update(sample.to_dict())
    labels = ["≤ %.4g" % edges[0]] + [f"({a:.4g}, {b:.4g}]" for a, b in zip(edges[:-1], edges[1:])] + \
             (["> %.4g" % edges[-1]] if edges.size else [])
    result.plot = {"type": "bins", "bins": labels if edges.size else ["all"], "baseline": _shares(base_counts),
                   "live": _shares(live_counts)}
    threshold = float(config.get("distribution_constraints", {}).get("comparison_threshold", 0.1))
    if ks.statistic > threshold:
        result.violations.append({"constraint_check_type": "baseline_drift_check",
                                  "description": f"distance {ks.statistic:.3f} exceeds threshold {threshold}"})
    if fb.is_non_negative and (live < 0).any():
        result.violations.append({"constraint_check_type": "data_type_check",
                                  "description": f"{int((live < 0).sum())} negative values; the baseline had none"})
    return _verdict(value, ks.p_value, th, "distribution", result.reasons)


def _category(fb: FeatureBaseline, live: pd.Series, th: DriftThresholds, result: FeatureDrift,
              config: Mapping[str, Any], sample: Sample | None = None) -> str:
    observed = {str(k): int(v) for k, v in live.value_counts().items()}  # live: the values as str
    keys = sorted(set(fb.counts) | set(observed))
    base = np.array([fb.counts.get(k, 0.0) for k in keys])
    now = np.array([float(observed.get(k, 0)) for k in keys])
    value = psi(base, now)
    chi = chi_square(*_pooled(*_effective(fb.counts, observed, sample)))
    base_share, live_share = np.array(_shares(base)), np.array(_shares(now))
    linf = float(np.max(np.abs(base_share - live_share)))
    result.tests = {"psi": round(value, 6), "chi2": {"statistic": round(chi.statistic, 6), "p_value": chi.p_value},
                    "l_infinity": round(linf, 6), **(sample.to_dict() if sample is not None else {})}
    result.plot = {"type": "categories", "bins": keys, "baseline": list(base_share), "live": list(live_share)}
    dist = config.get("distribution_constraints", {})
    if linf > float(dist.get("categorical_comparison_threshold", 0.1)):
        result.violations.append({"constraint_check_type": "baseline_drift_check",
                                  "description": f"L-infinity distance {linf:.3f} exceeds threshold "
                                                 f"{dist.get('categorical_comparison_threshold', 0.1)}"})
    if fb.domain:
        outside = {k: int(v) for k, v in observed.items() if k not in fb.domain}
        if outside:
            share = sum(outside.values()) / max(1, int(now.sum()))
            result.violations.append({"constraint_check_type": "categorical_values_check",
                                      "description": f"{sum(outside.values())} values ({share:.1%}) outside the "
                                                     f"domain: {', '.join(sorted(outside))[:200]}"})
    return _verdict(value, chi.p_value, th, "categories", result.reasons)


def _terms(fb: FeatureBaseline, lists: pd.Series, th: DriftThresholds, result: FeatureDrift,
           patients: np.ndarray | None = None, base_scale: float = 1.0) -> str:
    n_live = len(lists)
    live_counts: dict[str, int] = {}
    for terms in lists:
        for term in set(terms):
            live_counts[term] = live_counts.get(term, 0) + 1
    top = [t for t, _ in sorted(fb.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_TERMS]]
    rest_base = sum(c for t, c in fb.counts.items() if t not in top)
    rest_live = sum(c for t, c in live_counts.items() if t not in top)
    base = np.array([fb.counts[t] for t in top] + [rest_base], dtype=float)
    now = np.array([live_counts.get(t, 0) for t in top] + [rest_live], dtype=float)
    if now.sum() == 0:
        result.reasons.append("no terms in the live window")
        result.tests = {"mentions": 0}
        return INSUFFICIENT
    value = psi(base, now)
    chi = _term_mix_test(top, base * base_scale, now, lists, patients)
    result.tests = {"psi": round(value, 6), "chi2": {"statistic": round(chi.statistic, 6), "p_value": chi.p_value},
                    "mentions_per_patient": {"baseline": float(sum(fb.counts.values()) / max(fb.item_count, 1)),
                                             "live": float(sum(live_counts.values()) / max(n_live, 1))}}
    result.plot = {"type": "categories", "bins": top + ["(other)"], "baseline": _shares(base), "live": _shares(now)}
    # Which terms changed: per-term share of patients, by an exact test (a normal approximation named a term one
    # patient of 60 had beside 1 training patient in 2,350), Bonferroni over the terms tested.
    tested = sorted(fb.counts)  # a term training never had is listed as new below, not as a changed frequency
    alpha = th.p_value / max(1, len(tested))
    base_k = np.array([fb.counts[t] for t in tested], dtype=float)
    live_k = np.array([live_counts.get(t, 0) for t in tested], dtype=float)
    # A patient's visits mention its terms again and again: each term's share is judged on what the rows are worth.
    live_scale = 1.0 if patients is None else effective_rows(patients) / max(n_live, 1)
    p_values = share_tests(base_k * base_scale, fb.item_count * base_scale, live_k * live_scale,
                           n_live * live_scale) if tested else np.array([])
    changed: list[dict[str, Any]] = [
        {"term": term, "baseline_share": kb / fb.item_count, "live_share": kl / n_live, "p_value": float(p)}
        for term, kb, kl, p in zip(tested, base_k, live_k, p_values) if p < alpha]
    changed.sort(key=lambda c: -abs(c["live_share"] - c["baseline_share"]))
    new_terms = sorted(t for t in live_counts if t not in fb.counts)
    result.terms = {"changed": changed[:15], "changed_count": len(changed), "new_terms": new_terms[:20],
                    "new_terms_count": len(new_terms)}
    verdict = _verdict(value, chi.p_value, th, "term mix", result.reasons)
    if changed:
        shown = ", ".join(f"{c['term']} {c['baseline_share']:.1%}→{c['live_share']:.1%}" for c in changed[:3])
        result.reasons.append(f"{len(changed)} term(s) changed frequency: {shown}")
    if new_terms:
        result.reasons.append(f"{len(new_terms)} term(s) never seen in training (e.g. {', '.join(new_terms[:3])})")
    return verdict


def _term_mix_test(top: list[str], base: np.ndarray, now: np.ndarray, lists: pd.Series,
                   patients: np.ndarray | None = None) -> Any:
    """The live term mix against the baseline's, with each patient's terms as one cluster (clustered_chi_square):
    rare cells pooled as for a category, a patient with no term left out; ``patients``: each row's patient (its
    rows' terms one cluster), where a patient may have several rows."""
    cells = top + ["(other)"]
    rare = _rare(dict(zip(cells, base)), dict(zip(cells, now)))
    keys = [c for c in cells if c not in rare] + ([RARE_CELL] if rare else [])
    column = {c: (RARE_CELL if c in rare else c) for c in cells}
    index = {k: i for i, k in enumerate(keys)}
    in_top = set(top)
    units = np.zeros((sum(bool(terms) for terms in lists), len(keys)))
    row = 0
    for terms in lists:
        if not terms:
            continue
        for term in set(terms):
            units[row, index[column[term if term in in_top else "(other)"]]] += 1
        row += 1
    if patients is not None:  # the rows with terms, summed per patient
        with_terms = np.asarray(patients)[np.fromiter((bool(terms) for terms in lists), dtype=bool, count=len(lists))]
        _, codes = np.unique(with_terms, return_inverse=True)
        grouped = np.zeros((int(codes.max()) + 1 if len(codes) else 0, len(keys)))
        np.add.at(grouped, codes, units)
        units = grouped
    expected: dict[str, float] = {}
    for cell, count in zip(cells, base):
        expected[column[cell]] = expected.get(column[cell], 0.0) + float(count)
    return clustered_chi_square(expected, units, keys)


def feature_drift(fb: FeatureBaseline, column: pd.Series, th: DriftThresholds, type_errors: int = 0,
                  config: Mapping[str, Any] | None = None, patients: np.ndarray | None = None,
                  base_scale: float = 1.0) -> FeatureDrift:
    """Drift of one feature's live values (numbers as float/None, categories as str/None, terms as lists).
    ``patients``: each row's patient as a code from 0 (:func:`patient_codes`), where a patient may have several rows
    (visits): a patient's rows are not independent draws (its age is the same at each visit, its labs alike), so
    each test takes the rows for what they are worth at most, Kish's effective size with a patient's rows alike
    (processing.split.effective_rows), and a verdict needs ``min_rows`` of that; None: every row a patient of its own.
    ``base_scale``: the baseline's counts times it are what they are worth (DataBaseline.sample_scale)."""
    config = config or {}
    n = len(column)
    if fb.kind == "terms":
        present_mask = column.map(lambda v: bool(v)).to_numpy(dtype=bool) if n else np.array([], bool)
    else:
        present_mask = column.notna().to_numpy(dtype=bool)
    n_present = int(present_mask.sum())
    result = FeatureDrift(fb.name, fb.kind, OK, n, n_present)
    # Missing values (an empty term list counts as "none", reported but not a completeness problem).
    live_missing = (n - n_present) / n if n else None
    result.missing = {"baseline_rate": round(fb.missing_rate, 6), "live_rate": live_missing}
    verdicts = []
    worth = n if patients is None or not n else effective_rows(patients)
    if worth >= th.min_rows and fb.num_present + fb.num_missing > 0:
        assert live_missing is not None  # n >= min_rows >= 1
        scale = worth / n
        z = two_proportions(fb.num_missing * base_scale, (fb.num_present + fb.num_missing) * base_scale,
                            (n - n_present) * scale, n * scale)
        result.missing["p_value"] = z.p_value
        delta = live_missing - fb.missing_rate
        if abs(delta) >= th.missing_rate_delta and z.p_value < th.p_value:
            what = "empty" if fb.kind == "terms" else "missing"
            result.reasons.append(f"{what} rate {fb.missing_rate:.1%} → {live_missing:.1%}")
            verdicts.append(DRIFT)
        if fb.completeness is not None and fb.kind != "terms" and \
                1 - live_missing < fb.completeness - th.missing_rate_delta:
            result.violations.append({"constraint_check_type": "completeness_check",
                                      "description": f"completeness {1 - live_missing:.3f} below the baseline's "
                                                     f"{fb.completeness:.3f} (tolerance {th.missing_rate_delta})"})
        if n_present == 0 and fb.num_present > 0 and fb.kind != "terms":
            result.violations.append({"constraint_check_type": "missing_column_check",
                                      "description": "the feature is absent from every live record"})
    if type_errors:
        share = type_errors / max(n, 1)
        limit = float(config.get("datatype_check_threshold", 0.1))
        result.violations.append({"constraint_check_type": "data_type_check",
                                  "description": f"{type_errors} values ({share:.1%}) not of type {fb.inferred_type}"
                                                 + (f" (over the {limit} threshold)" if share > limit else "")})
    sample = None if patients is None else Sample(
        int(len(np.unique(patients[present_mask]))), n_present, effective_rows(patients[present_mask]), base_scale)
    if (n_present if sample is None else sample.worth) < th.min_rows:
        result.reasons.append(f"only {n_present} live values (need {th.min_rows})" if sample is None else
                              f"only {n_present} live values of {sample.patients} patients, worth {sample.worth:.1f} "
                              f"independent values (need {th.min_rows}): a patient's visits are alike")
        result.verdict = worst(verdicts) if verdicts else INSUFFICIENT
        return result
    values = column[present_mask]
    if fb.kind == "numeric":
        verdicts.append(_numeric(fb, values.to_numpy(dtype=float), th, result, config, sample))
    elif fb.kind == "category":
        verdicts.append(_category(fb, values.astype(str), th, result, config, sample))
    else:
        verdicts.append(_terms(fb, column, th, result, patients, base_scale))
    # SageMaker's baseline_drift_check (a distance over a fixed threshold) is listed as its report lists it, but
    # judges nothing: the distance test of the same two distributions did (by chance a 30-value sample's KS distance
    # is over 0.1 nine times in ten). The other constraints (types, completeness, domain) do.
    judged = [v["constraint_check_type"] for v in result.violations if v["constraint_check_type"] != "baseline_drift_check"]
    if judged and worst(verdicts) == OK:
        verdicts.append(WARN)
        result.reasons.append("constraint violated: " + ", ".join(judged))
    result.verdict = worst(verdicts)
    return result


def data_drift(baseline: DataBaseline, rows: pd.DataFrame, th: DriftThresholds,
               type_errors: Mapping[str, int] | None = None, patients: pd.Series | None = None) -> list[FeatureDrift]:
    """Each feature's drift; ``patients``: each row's patient (None where not named), for a dataset of visits."""
    type_errors = type_errors or {}
    codes = patient_rows(patients)
    out = []
    for name, fb in baseline.features.items():
        column = rows[name] if name in rows.columns else pd.Series([None] * len(rows), dtype=object)
        out.append(feature_drift(fb, column, th, int(type_errors.get(name, 0)), baseline.monitoring_config, codes,
                                 baseline.sample_scale))
    return out


def patient_rows(patients: pd.Series | Sequence[Any] | None) -> np.ndarray | None:
    """Each row's patient as a code from 0 (:func:`patient_codes`), every row its own when no patient has two: the
    baseline's rows are visits whatever the window holds, so its counts are still taken for what they are worth.
    None: no patient column (the tests for independent rows on both sides)."""
    if patients is None:
        return None
    codes = patient_codes(patients)
    return np.arange(len(patients)) if codes is None else codes


def patient_codes(patients: pd.Series | Sequence[Any] | None) -> np.ndarray | None:
    """Each row's patient as a code from 0, a row without a patient (None) a patient of its own; None when no
    patient has two rows (then every test is the one for independent rows, unchanged)."""
    if patients is None or not len(patients):
        return None
    codes, named = pd.factorize(pd.Series(patients, dtype=object))  # None and NaN: -1
    unnamed = codes < 0
    codes[unnamed] = len(named) + np.arange(int(unnamed.sum()))
    return codes if len(named) + int(unnamed.sum()) < len(codes) else None


def prediction_drift(predictions: Mapping[str, Any] | None, predicted: pd.Series, th: DriftThresholds,
                     labels: Sequence[str] | None = None, patients: np.ndarray | None = None) -> dict[str, Any]:
    """The live distribution of predicted categories against the test-time one (without a prediction baseline, the
    live counts over ``labels``, the model's: default the built-in cohort's). ``patients``: each row's patient code
    (:func:`patient_codes`): the rows count for what they are worth, as in :func:`feature_drift`."""
    labels = list(predictions["labels"]) if predictions else list(labels or CATEGORIES)
    live = predicted.dropna().astype(str).value_counts()
    live_counts = {label: int(live.get(label, 0)) for label in labels}
    unknown = {k: int(v) for k, v in live.items() if k not in labels}
    result: dict[str, Any] = {"labels": labels, "live_counts": live_counts, "n_live": int(live.sum()),
                              "unknown_categories": unknown, "reasons": []}
    if predictions is None:
        result.update(verdict=INSUFFICIENT, reasons=["no prediction baseline given"])
        return result
    base = {label: float(predictions["predicted_distribution"].get(label, 0) or 0) for label in labels}
    result["baseline_counts"] = base
    # Only predictions of the baseline's labels can be compared with it: another model's categories (a baseline not of
    # the served model) are counted as unknown above, never a crash.
    known = sum(live_counts.values())
    sample = None
    if patients is not None:  # visits: each side's counts as what they are worth (Sample)
        known_rows = predicted.notna().to_numpy() & predicted.astype(str).isin(labels).to_numpy()
        sample = Sample(int(len(np.unique(patients[known_rows]))), int(known_rows.sum()),
                        effective_rows(patients[known_rows]) if known_rows.any() else 0.0,
                        worth_share(predictions.get("effective_n"), sum(base.values())))
        result["sample"] = sample.to_dict()
    if (known if sample is None else sample.worth) < th.min_rows:
        short = [f"only {known} live predictions of the baseline's labels (need {th.min_rows})" if sample is None else
                 f"only {known} live predictions of the baseline's labels, of {sample.patients} patients, worth "
                 f"{sample.worth:.1f} independent ones (need {th.min_rows})"]
        if unknown:
            short.append(f"{sum(unknown.values())} live predictions are none of the baseline's labels "
                           f"({', '.join(sorted(map(str, unknown)))[:200]}): is it the baseline of the model that "
                           "answered?")
        result.update(verdict=INSUFFICIENT, reasons=short)
        return result
    if sum(base.values()) <= 0 or any(v < 0 for v in base.values()):
        result.update(verdict=INSUFFICIENT, reasons=["the prediction baseline holds no predicted categories"])
        return result
    b = np.array([base[label] for label in labels])
    l_ = np.array([live_counts[label] for label in labels], dtype=float)
    value = psi(b, l_)
    chi = chi_square(*_pooled(*_effective(base, live_counts, sample)))
    result["tests"] = {"psi": round(value, 6), "chi2": {"statistic": round(chi.statistic, 6), "p_value": chi.p_value}}
    result["baseline_share"] = _shares(b)
    result["live_share"] = _shares(l_)
    reasons: list[str] = []
    result["verdict"] = _verdict(value, chi.p_value, th, "predicted categories", reasons)
    shifts = sorted(((label, s2 - s1) for label, s1, s2 in zip(labels, result["baseline_share"], result["live_share"])),
                    key=lambda t: -abs(t[1]))
    if result["verdict"] != OK:
        reasons.append("largest shifts: " + ", ".join(f"{label} {d:+.1%}" for label, d in shifts[:2]))
    # The baseline is the test split's predictions: a small test split (a small table, or few patients' visits) is
    # worth few values, and the test sees only a large shift. Said beside any verdict, not only an alarm.
    result["baseline_worth"] = round(float(b.sum()) * (sample.base_scale if sample is not None else 1.0), 1)
    if result["baseline_worth"] < th.min_rows:
        reasons.append(f"the prediction baseline (the test split's predictions) is worth {result['baseline_worth']:g} "
                       f"independent values, fewer than {th.min_rows}: only a large shift of the predicted categories "
                       "can be seen")
    result["reasons"] = reasons
    return result
