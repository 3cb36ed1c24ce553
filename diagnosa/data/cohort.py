"""The synthetic patient cohort: deterministic, vectorised, realistic in imbalance and noise.

Who is in it:
- healthy patients (NO ENFERMO) with background complaints, so classes overlap as in a clinic;
- common-disease patients drawn from the curated catalogue (``catalogue/common_diseases.json``);
- orphan-disease patients, a handful per rare disease, drawn from the HPO annotations by the
  rules of :mod:`diagnosa.data.orphan`. They present like real patients: their disease's findings
  at the annotated frequencies (scaled by the patient's stage where the disease has stages), some
  not recorded, some recorded at a less specific HPO level, now and then a finding of another
  disease, and the same background complaints as common-disease patients.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, in a fixed order, so the
same (patients, seed, config) gives the same bytes. What only orphan patients need (stage, reporting
noise, background complaints) comes from a second generator seeded by ``[seed, ORPHAN_STREAM]``, so
those knobs never change a healthy or common-disease patient.
"""
from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from diagnosa.data.hpo import PHENOTYPIC_ABNORMALITY, Ontology, load_ontology
from diagnosa.data.orphan import ATTACK, BETWEEN_ATTACKS, EARLY, LATE, STAGE_RULES, UNSTAGED, OrphanCatalogue, build_catalogue
from diagnosa.data.physiology import BY_NAME, LABS, VARIABLES, VITALS
from diagnosa.labels import ACUTE, CATEGORIES, CHRONIC, HEALTHY, MILD, TERMINAL
from diagnosa.lake import DataLake

MIN_PATIENTS, MAX_PATIENTS = 1_000, 1_000_000

# Complaints healthy people bring to a clinic too (HPO id, name, probability per healthy patient);
# common-disease patients carry them at half the rate, orphan patients at orphan_background_rate
# (half, by default).
BACKGROUND_SYMPTOMS: tuple[tuple[str, str, float], ...] = (
    ("HP:0002315", "Headache", 0.09),
    ("HP:0012378", "Fatigue", 0.10),
    ("HP:0012735", "Cough", 0.05),
    ("HP:0031417", "Rhinorrhea", 0.04),
    ("HP:0003419", "Low back pain", 0.07),
    ("HP:0100785", "Insomnia", 0.05),
    ("HP:0002027", "Abdominal pain", 0.03),
    ("HP:0002829", "Arthralgia", 0.05),
    ("HP:0002018", "Nausea", 0.02),
    ("HP:0002321", "Vertigo", 0.02),
    ("HP:0000739", "Anxiety", 0.05),
    ("HP:0000989", "Pruritus", 0.03),
)

# Background diagnoses in the history (ICD-10 code, adult prevalence at ~65 years, age midpoint).
COMORBIDITIES: tuple[tuple[str, float, float], ...] = (
    ("I10", 0.45, 55),  # essential hypertension
    ("E11", 0.18, 60),  # type 2 diabetes
    ("E78.5", 0.30, 55),  # hyperlipidaemia
    ("E66.9", 0.22, 45),  # obesity
    ("J45", 0.07, 30),  # asthma
    ("F32", 0.08, 40),  # depressive episode
    ("K21", 0.12, 45),  # gastro-oesophageal reflux
)
# Overlap between classes, as in a clinic: disease shifts of vitals and labs are scaled per patient
# by a log-normal severity (some cases barely move), and common-disease symptom frequencies by a
# per-patient typicality drawn from Beta(2, 2) scaled to mean 0.75 (atypical presentations).
SEVERITY_SIGMA = 0.55
TYPICALITY_BETA = 2.0
TYPICALITY_MEAN = 0.75
KNOWN_CONDITION_RATE = 0.5  # a chronic or terminal common condition already appears in the history

# The second generator, for what only orphan patients draw: np.random.default_rng([seed, ORPHAN_STREAM]).
ORPHAN_STREAM = 14
# How an orphan patient's stage (diagnosa.data.orphan.STAGE_RULES) shows: (scale of the annotated
# frequency of every finding, scale of the severity factor of vital and lab shifts). Late-stage and
# attack patients show more findings and larger shifts, early-stage and between-attack ones fewer.
STAGE_PRESENTATION: dict[str, tuple[float, float]] = {
    UNSTAGED: (1.0, 1.0),
    EARLY: (0.6, 0.6),
    LATE: (1.5, 1.7),
    BETWEEN_ATTACKS: (0.8, 0.7),
    ATTACK: (1.2, 2.0),
}
# The CohortConfig field holding the share of the first stage of each rule of STAGE_RULES.
STAGE_SHARE_FIELDS = ("orphan_early_stage_share", "orphan_attack_share")

# Kinds of recording defects the generator can inject, so ingestion's quarantine is exercised on
# every run. Counts are reported so a test can check that ingestion catches each one.
RECORD_DEFECTS = ("unknown_field", "wrong_type", "impossible_value", "unknown_label", "malformed_json", "duplicate")
LAB_DEFECTS = ("lab_wrong_type", "lab_impossible_value", "lab_unknown_patient", "lab_duplicate")


# The orphan presentation knobs all off: orphan patients then show exactly their disease's annotations at
# the annotated frequencies and take its category (the cohort before issue 14; tests and comparisons).
FAITHFUL_ORPHANS: dict[str, Any] = {"orphan_background_rate": 0.0, "orphan_underreport_rate": 0.0,
                                    "orphan_imprecise_rate": 0.0, "orphan_unrelated_rate": 0.0,
                                    "orphan_stages": False}


@dataclass(frozen=True)
class CohortConfig:
    patients: int = 20_000
    seed: int = 7
    healthy_fraction: float = 0.40
    orphan_fraction: float = 0.02
    # Share of common-disease patients (the rest of the cohort) in each category.
    common_mix: dict[str, float] = field(
        default_factory=lambda: {MILD: 0.45, ACUTE: 0.28, CHRONIC: 0.23, TERMINAL: 0.04}
    )
    orphan_patients_per_disease: float = 4.0  # mean; at least 2 each while patients allow
    defect_rate: float = 0.001  # fraction of records with an injected recording defect
    vital_missing_rate: float = 0.03
    lab_panel_rate_healthy: float = 0.5  # share of healthy patients who had blood drawn
    lab_panel_rate_ill: float = 0.9
    lab_missing_rate: float = 0.08  # a single test missing from a drawn panel
    start_date: str = "2025-01-01"
    # How orphan patients present (see docs/data.md, "How patients are made"):
    orphan_background_rate: float = 0.5  # background complaints at this multiple of the healthy rate
    orphan_underreport_rate: float = 0.15  # a drawn disease finding is not recorded
    orphan_imprecise_rate: float = 0.3  # a recorded disease finding is recorded as a random is_a parent
    orphan_imprecise_two_levels: float = 0.3  # ... and of those, this share one level further up
    orphan_unrelated_rate: float = 0.25  # a patient also shows one finding of another catalogue disease
    orphan_stages: bool = True  # stage patients where the annotations support it (orphan.STAGE_RULES)
    orphan_early_stage_share: float = 0.5  # staged TERMINAL disease: share of early-stage (CRÓNICA) patients
    orphan_attack_share: float = 0.35  # staged CHRONIC disease: share of patients in an attack (AGUDA)

    def validate(self) -> None:
        if not MIN_PATIENTS <= self.patients <= MAX_PATIENTS:
            raise ValueError(f"patients must be between {MIN_PATIENTS:,} and {MAX_PATIENTS:,}, got {self.patients:,}")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")
        for name in ("healthy_fraction", "orphan_fraction", "defect_rate", "vital_missing_rate", "lab_missing_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.healthy_fraction + self.orphan_fraction >= 1.0:
            raise ValueError("healthy_fraction + orphan_fraction must leave room for common diseases")
        if set(self.common_mix) != {MILD, ACUTE, CHRONIC, TERMINAL} or min(self.common_mix.values()) < 0:
            raise ValueError(f"common_mix needs a non-negative share for each of {MILD}, {ACUTE}, {CHRONIC}, {TERMINAL}")
        for name in ("orphan_background_rate", "orphan_underreport_rate", "orphan_imprecise_rate",
                     "orphan_imprecise_two_levels", "orphan_unrelated_rate", *STAGE_SHARE_FIELDS):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if self.orphan_underreport_rate == 1.0:
            raise ValueError("orphan_underreport_rate must be below 1: a patient keeps at least one finding")
        if not isinstance(self.orphan_stages, bool):
            raise ValueError(f"orphan_stages must be true or false, got {self.orphan_stages!r}")

    @property
    def batch(self) -> str:
        return f"cohort-n{self.patients}-s{self.seed}"


@dataclass
class Cohort:
    """The cohort and the plan of its recording defects; ``write_*`` serialise it as the sources arrive."""

    records: pd.DataFrame  # one clinical record per patient (clean)
    labs: pd.DataFrame  # one lab panel per patient who had blood drawn (clean)
    record_defects: dict[int, str]  # row of ``records`` → defect injected when written
    lab_defects: dict[int, str]  # row of ``labs`` → defect injected when written
    defects: dict[str, int]
    expected: dict[str, int]  # what ingestion must read, accept and quarantine
    config: CohortConfig
    orphan_diseases: int
    hpo_release: str
    drift: dict[str, Any] | None = None  # set by apply_drift: the scenario and what it changed
    # The stage of each generated orphan patient (index: row of ``records``); metadata for tests and
    # the card, never a record field.
    orphan_stage: pd.Series | None = None

    def summary(self) -> dict[str, Any]:
        counts = self.records.groupby(["label", "is_orphan"]).size()
        extra = {"drift": self.drift} if self.drift is not None else {}
        stages = {}
        if self.orphan_stage is not None:  # "stage|label" → orphan patients
            pairs = pd.DataFrame({"stage": self.orphan_stage, "label": self.records["label"].reindex(self.orphan_stage.index)})
            sizes = pairs.groupby(["stage", "label"]).size()
            stages = {"orphan_stages": {f"{s}|{lab}": int(v) for (s, lab), v in zip(sizes.index, sizes)}}
        return extra | {
            "batch": self.config.batch,
            "config": asdict(self.config),
            "hpo_release": self.hpo_release,
            "patients": len(self.records),
            "lab_panels": len(self.labs),
            "per_class": {k: int(v) for k, v in self.records["label"].value_counts().reindex(CATEGORIES, fill_value=0).items()},
            "per_class_slice": {f"{label}|{'orphan' if orphan else 'common'}": int(v)
                                for (label, orphan), v in zip(counts.index, counts)},
            "orphan_patients": int(self.records["is_orphan"].sum()),
            "orphan_diseases_sampled": self.orphan_diseases,
            "defects": self.defects,
            "expected_ingestion": self.expected,
        } | stages

    def write_records(self, out: BinaryIO, chunk: int = 100_000) -> None:
        """JSON Lines, in chunks so a million records never sit in memory as one string."""
        duplicates: list[str] = []
        for start in range(0, len(self.records), chunk):
            text = self.records.iloc[start:start + chunk].to_json(
                orient="records", lines=True, force_ascii=False, double_precision=4)
            lines = text.rstrip("\n").split("\n")
            for row in (r for r in self.record_defects if start <= r < start + chunk):
                kind = self.record_defects[row]
                if kind == "duplicate":  # the same record delivered twice: the copy is quarantined
                    duplicates.append(lines[row - start])
                else:
                    lines[row - start] = _break_record(lines[row - start], kind, row)
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
        if duplicates:
            out.write(("\n".join(duplicates) + "\n").encode("utf-8"))

    def write_labs(self, out: BinaryIO) -> None:
        """CSV; rows with an injected defect (and duplicate copies) come after the clean rows."""
        victims = np.array(sorted(self.lab_defects), dtype=int)
        clean = self.labs.drop(index=victims.tolist())
        out.write(clean.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        if len(victims):
            broken = self.labs.loc[victims].astype(object).where(self.labs.loc[victims].notna(), "")
            extra = []
            for row, kind in sorted(self.lab_defects.items()):
                if kind == "lab_wrong_type":
                    broken.loc[row, "crp_mg_l"] = "high"
                elif kind == "lab_impossible_value":
                    broken.loc[row, "potassium_mmol_l"] = 45.0
                elif kind == "lab_unknown_patient":
                    broken.loc[row, "patient_id"] = f"X{row:07d}"
                else:
                    extra.append(broken.loc[row])
            if extra:
                broken = pd.concat([broken, pd.DataFrame(extra)])
            out.write(broken.to_csv(index=False, header=False, lineterminator="\n").encode("utf-8"))

    def records_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write_records(buffer)
        return buffer.getvalue()

    def labs_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.write_labs(buffer)
        return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ drift

# Scenarios for showing the monitoring loop end to end (docs/operations.md): the same cohort, changed
# the way a hospital's population or practice changes after a model ships.
DRIFT_SCENARIOS: dict[str, str] = {
    "labs": "a new laboratory analyser: CRP reads at 35% and WBC at 60% of the old assay (acute infections "
            "look milder), glucose +35 mg/dL, and haemoglobin is dropped from the panel for half the patients",
    "symptoms": "a respiratory outbreak: cough, fever and sore throat added to 45% of patients, whatever "
                "their category",
    "orphan": "a rise of one orphan disease: 8% of the healthy patients replaced by new cases of the cohort's "
              "most frequent rare disease of the ENFERMEDAD TERMINAL class (features copied from its patients, "
              "with noise)",
}
OUTBREAK_TERMS = ("HP:0012735", "HP:0001945", "HP:0033050")  # cough, fever, sore throat


def apply_drift(cohort: Cohort, scenario: str, *, seed: int = 0, strength: float = 1.0) -> Cohort:
    """A drifted copy of ``cohort`` (``DRIFT_SCENARIOS``); the original is not modified.

    A drifted batch is clean: recording defects are not injected (it stands for traffic the
    endpoint accepted), so its expected ingestion counts are all-accepted. ``strength`` in (0, 1]
    scales how many patients or how far values move.
    """
    if scenario not in DRIFT_SCENARIOS:
        raise ValueError(f"unknown drift scenario {scenario!r}; scenarios: {', '.join(DRIFT_SCENARIOS)}")
    if not 0 < strength <= 1:
        raise ValueError(f"drift strength must be in (0, 1], got {strength}")
    rng = np.random.default_rng([seed, list(DRIFT_SCENARIOS).index(scenario), 7919])
    records = cohort.records.copy(deep=True)
    labs = cohort.labs.copy(deep=True)
    changed: dict[str, Any] = {}
    if scenario == "labs":
        def scale(name: str, factor: float) -> None:
            v = BY_NAME[name]
            span = v.high - v.low
            labs[name] = np.round(np.clip(labs[name] * (1 - strength * (1 - factor)), v.low + 0.01 * span,
                                          v.high - 0.01 * span), v.decimals)
        scale("crp_mg_l", 0.35)
        scale("wbc_10e9_l", 0.60)
        glucose = BY_NAME["glucose_mg_dl"]
        labs["glucose_mg_dl"] = np.round(np.clip(labs["glucose_mg_dl"] + 35 * strength, glucose.low, glucose.high * 0.99),
                                         glucose.decimals)
        dropped = rng.random(len(labs)) < 0.5 * strength
        labs.loc[dropped, "hemoglobin_g_dl"] = np.nan
        changed = {"crp_mg_l": "x0.35", "wbc_10e9_l": "x0.60", "glucose_mg_dl": "+35",
                   "hemoglobin_g_dl": f"missing for {int(dropped.sum())} more panels"}
    elif scenario == "symptoms":
        hit = np.flatnonzero(rng.random(len(records)) < 0.45 * strength)
        symptoms = records["symptoms"].tolist()
        for i in hit:
            symptoms[i] = sorted(set(symptoms[i]) | {t for t in OUTBREAK_TERMS if rng.random() < 0.8})
        records["symptoms"] = symptoms
        changed = {"patients_with_outbreak_terms": int(hit.size), "terms": list(OUTBREAK_TERMS)}
    else:
        orphan = records[records["is_orphan"] & (records["label"] == TERMINAL)]
        if orphan.empty:
            raise ValueError("the cohort has no ENFERMEDAD TERMINAL orphan patients to spread: raise --orphan-fraction")
        disease = orphan["disease_id"].value_counts().sort_index(kind="stable").idxmax()
        sources = records.index[records["disease_id"] == disease].to_numpy()
        healthy = records.index[records["label"] == HEALTHY].to_numpy()
        targets = np.sort(rng.choice(healthy, size=max(1, round(len(healthy) * 0.08 * strength)), replace=False))
        picks = rng.choice(sources, size=targets.size)
        copied = [c for c in records.columns if c not in ("patient_id", "encounter_date")]
        for target, source in zip(targets, picks):
            for column in copied:
                # pandas-stubs: .at reads values (np.bool_, Period, Interval) its setter's type does not admit
                records.at[target, column] = records.at[source, column]  # type: ignore[assignment]
        for name in VITALS:
            v = BY_NAME[name]
            noise = rng.normal(0, 0.05 * v.sd, targets.size) if not v.lognormal else 0.0
            records.loc[targets, name] = np.round(np.clip(records.loc[targets, name] + noise, v.low, v.high), v.decimals)
        lab_of = {pid: i for i, pid in enumerate(labs["patient_id"])}
        new_labs = labs[~labs["patient_id"].isin(records.loc[targets, "patient_id"])]
        extra = []
        for target, source in zip(targets, picks):
            row = lab_of.get(records.at[source, "patient_id"])
            if row is not None:
                copy = labs.iloc[row].copy()
                copy["patient_id"] = records.at[target, "patient_id"]
                copy["collected_at"] = records.at[target, "encounter_date"]
                extra.append(copy)
        labs = pd.concat([new_labs, pd.DataFrame(extra)], ignore_index=True) if extra else new_labs.reset_index(drop=True)
        labs = labs.sort_values("patient_id", kind="stable").reset_index(drop=True)
        changed = {"disease_id": disease, "disease_name": str(records.at[int(sources[0]), "disease_name"]),
                   "new_cases": int(targets.size)}
    expected = {"records_read": len(records), "records_quarantined": 0, "records_accepted": len(records),
                "labs_read": len(labs), "labs_quarantined": 0, "labs_accepted": len(labs)}
    drift = {"scenario": scenario, "description": DRIFT_SCENARIOS[scenario], "strength": strength, "seed": seed,
             "changed": changed}
    return Cohort(records, labs, {}, {}, {k: 0 for k in cohort.defects}, expected, cohort.config,
                  cohort.orphan_diseases, cohort.hpo_release, drift, cohort.orphan_stage)


def _break_record(line: str, kind: str, row: int) -> str:
    record = json.loads(line)
    if kind == "unknown_field":
        record["bed_number"] = row % 40
    elif kind == "wrong_type":
        record["age"] = "forty-two"
    elif kind == "impossible_value":
        record["heart_rate_bpm"] = 900
    elif kind == "unknown_label":
        record["label"] = "ENFERMEDAD RARA"
    text = json.dumps(record, ensure_ascii=False)
    return text[: len(text) // 2] if kind == "malformed_json" else text


@lru_cache(maxsize=1)
def load_common_catalogue() -> dict[str, Any]:
    return json.loads((files("diagnosa.data") / "catalogue" / "common_diseases.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def load_phenotype_effects() -> dict[str, Any]:
    return json.loads((files("diagnosa.data") / "catalogue" / "phenotype_effects.json").read_text(encoding="utf-8"))


def _effect_matrix(terms: np.ndarray, ontology: Ontology) -> np.ndarray:
    """Shift of every variable caused by each term (sum of the effects of its listed ancestors)."""
    effects = {e["hpo_id"]: e["shifts"] for e in load_phenotype_effects()["effects"]}
    column = {v.name: i for i, v in enumerate(VARIABLES)}
    matrix = np.zeros((len(terms), len(VARIABLES)))
    for row, term in enumerate(terms):
        for ancestor in ontology.ancestors(term) & effects.keys():
            for name, shift in effects[ancestor].items():
                matrix[row, column[name]] += shift
    return matrix


def _sample_symptoms(rng: np.random.Generator, patients: np.ndarray, terms: np.ndarray, probability: np.ndarray,
                     force_one: bool) -> tuple[np.ndarray, np.ndarray]:
    """Bernoulli draw of each annotated term for each patient of one disease → (patient, term) pairs."""
    hits = rng.random((len(patients), len(terms))) < probability  # probability: per term, or per patient × term
    if force_one:  # a patient who consults shows at least the disease's most frequent sign
        empty = ~hits.any(axis=1)
        most_frequent = np.broadcast_to(probability, hits.shape).argmax(axis=1)
        hits[np.flatnonzero(empty), most_frequent[empty]] = True
    rows, cols = np.nonzero(hits)
    return patients[rows], terms[cols]


def generate(config: CohortConfig | None = None, *, orphans: OrphanCatalogue | None = None,
             ontology: Ontology | None = None) -> Cohort:
    config = config or CohortConfig()
    config.validate()
    ontology = ontology or load_ontology()
    orphans = orphans or build_catalogue(ontology=ontology)
    common = load_common_catalogue()["conditions"]
    rng = np.random.default_rng(config.seed)
    n = config.patients

    # 1. Who is who: healthy, common (by category, then condition by weight), orphan (few per disease).
    n_orphan = round(n * config.orphan_fraction)
    n_healthy = round(n * config.healthy_fraction)
    categories = [MILD, ACUTE, CHRONIC, TERMINAL]
    shares = np.array([config.common_mix[c] for c in categories], dtype=float)
    n_common_by_cat = rng.multinomial(n - n_orphan - n_healthy, shares / shares.sum())
    condition = []
    for category, count in zip(categories, n_common_by_cat):
        idx = [i for i, c in enumerate(common) if c["category"] == category]
        weights = np.array([common[i]["weight"] for i in idx], dtype=float)
        condition.append(rng.choice(idx, size=count, p=weights / weights.sum()))
    common_idx = np.concatenate(condition).astype(int)

    n_diseases = min(len(orphans), max(1, round(n_orphan / config.orphan_patients_per_disease)))
    chosen = np.sort(rng.choice(len(orphans), size=n_diseases, replace=False)) if n_orphan else np.array([], int)
    base = min(2, n_orphan // max(n_diseases, 1))
    per_disease = np.full(n_diseases, base) + np.bincount(
        rng.integers(0, n_diseases, size=n_orphan - base * n_diseases), minlength=n_diseases
    ) if n_orphan else np.array([], int)
    orphan_idx = np.repeat(chosen, per_disease)

    kind = np.concatenate([np.zeros(n_healthy, int), np.ones(len(common_idx), int), np.full(len(orphan_idx), 2)])
    disease = np.concatenate([np.full(n_healthy, -1), common_idx, orphan_idx])
    order = rng.permutation(n)  # ids in arrival order carry no information about the class
    kind, disease = kind[order], disease[order]
    is_healthy, is_common, is_orphan = kind == 0, kind == 1, kind == 2

    diseases = orphans.diseases
    label = np.full(n, HEALTHY, dtype=object)
    label[is_common] = [common[i]["category"] for i in disease[is_common]]
    label[is_orphan] = diseases["category"].to_numpy()[disease[is_orphan]]
    orphan_rows = np.flatnonzero(is_orphan)
    orng = np.random.default_rng([config.seed, ORPHAN_STREAM])  # only orphan patients draw from it
    stage = _orphan_stages(orng, diseases, disease[orphan_rows], config)
    label[orphan_rows] = _stage_labels(diseases, disease[orphan_rows], stage)
    frequency_scale = np.ones(n)
    frequency_scale[orphan_rows] = [STAGE_PRESENTATION[s][0] for s in stage]
    disease_id = np.full(n, "", dtype=object)
    disease_id[is_common] = [common[i]["id"] for i in disease[is_common]]
    disease_id[is_orphan] = diseases["disease_id"].to_numpy()[disease[is_orphan]]
    disease_name = np.full(n, "", dtype=object)
    disease_name[is_common] = [common[i]["name"] for i in disease[is_common]]
    disease_name[is_orphan] = diseases["disease_name"].to_numpy()[disease[is_orphan]]

    # 2. Age and sex.
    age = np.clip(rng.normal(42, 20, n), 0, 95)
    female_p = np.full(n, 0.5)
    if is_common.any():
        ages = np.array([[c["age"]["mean"], c["age"]["sd"], c["age"]["min"], c["age"]["max"]] for c in common])[
            disease[is_common]
        ]
        age[is_common] = np.clip(rng.normal(ages[:, 0], ages[:, 1]), ages[:, 2], ages[:, 3])
        female_p[is_common] = np.array([c["female_fraction"] for c in common])[disease[is_common]]
    else:
        rng.normal(size=0)
    lo = diseases["age_min"].to_numpy()[disease[is_orphan]]
    hi = diseases["age_max"].to_numpy()[disease[is_orphan]]
    age[is_orphan] = rng.uniform(lo, hi)
    age = np.floor(age).astype(int)
    sex = np.where(rng.random(n) < female_p, "F", "M")

    # 3. Symptoms: (patient, term) pairs, drawn per disease from annotated frequencies.
    pairs_p: list[np.ndarray] = []
    pairs_t: list[np.ndarray] = []
    background = np.array([b[0] for b in BACKGROUND_SYMPTOMS])
    background_p = np.array([b[2] for b in BACKGROUND_SYMPTOMS])
    for patients, rate in ((np.flatnonzero(is_healthy), 1.0), (np.flatnonzero(is_common), 0.5)):
        p, t = _sample_symptoms(rng, patients, background, background_p * rate, force_one=False)
        pairs_p.append(p)
        pairs_t.append(t)
    for i, c in enumerate(common):
        patients = np.flatnonzero(is_common & (disease == i))
        terms = np.array([s["hpo_id"] for s in c["symptoms"]])
        # Presentations vary: a per-patient typicality scales how many of the textbook signs show.
        typicality = rng.beta(TYPICALITY_BETA, TYPICALITY_BETA, size=len(patients)) * 2 * TYPICALITY_MEAN
        frequency = np.array([s["frequency"] for s in c["symptoms"]])
        p, t = _sample_symptoms(rng, patients, terms, np.clip(typicality[:, None] * frequency, 0, 1), True)
        pairs_p.append(p)
        pairs_t.append(t)
    phenotypes = orphans.phenotypes
    starts = phenotypes["disease_id"].searchsorted(diseases["disease_id"].to_numpy(), side="left")
    ends = phenotypes["disease_id"].searchsorted(diseases["disease_id"].to_numpy(), side="right")
    found_p: list[np.ndarray] = []  # an orphan patient's findings (recorded or not): they move vitals and labs
    found_t: list[np.ndarray] = []
    for d in np.unique(disease[is_orphan]):
        patients = orphan_rows[disease[orphan_rows] == d]
        block = phenotypes.iloc[starts[d]:ends[d]]
        # The stage scales how many findings show (the uniforms drawn do not depend on it).
        probability = np.clip(frequency_scale[patients][:, None] * block["probability"].to_numpy()[None, :], 0, 1)
        p, t = _sample_symptoms(rng, patients, block["hpo_id"].to_numpy(), probability, True)
        found_p.append(p)
        found_t.append(t)
    found_p_all = np.concatenate(found_p) if found_p else np.array([], int)
    found_t_all = np.concatenate(found_t) if found_t else np.array([], object)
    # What is recorded: findings under-reported or recorded less precisely, another disease's finding
    # now and then, and background complaints (all from the orphan generator).
    recorded_p, recorded_t = _report_findings(orng, found_p_all, found_t_all, ontology, config)
    extra_p, extra_t = _unrelated_findings(orng, orphan_rows, disease[orphan_rows], phenotypes, starts, ends, config)
    background_p_o, background_t_o = _sample_symptoms(orng, orphan_rows, background,
                                                      background_p * config.orphan_background_rate, force_one=False)
    pairs_p += [recorded_p, extra_p, background_p_o]
    pairs_t += [recorded_t, extra_t, background_t_o]
    all_p = np.concatenate(pairs_p) if pairs_p else np.array([], int)
    all_t = np.concatenate(pairs_t) if pairs_t else np.array([], object)
    # Deduplicate (a background complaint may repeat a disease sign) and order by patient then term.
    pairs = pd.DataFrame({"p": all_p, "t": all_t}).drop_duplicates().sort_values(["p", "t"], kind="stable")
    symptom_counts = np.bincount(pairs["p"].to_numpy(), minlength=n)
    offsets = np.concatenate([[0], np.cumsum(symptom_counts)])
    flat_terms = pairs["t"].to_numpy()
    symptoms = [flat_terms[offsets[i]:offsets[i + 1]].tolist() for i in range(n)]

    # 4. Vitals and labs: healthy reference by age/sex, plus disease shifts scaled by a severity factor.
    values = np.empty((n, len(VARIABLES)))
    for j, v in enumerate(VARIABLES):
        if v.lognormal:
            values[:, j] = np.log(v.mean) + v.sd * rng.standard_normal(n)
        else:
            values[:, j] = v.mean + v.sd * rng.standard_normal(n)
    col = {v.name: j for j, v in enumerate(VARIABLES)}
    values[:, col["systolic_bp_mmhg"]] += 0.45 * np.maximum(age - 40, 0)  # pressure rises with age
    values[:, col["hemoglobin_g_dl"]] += np.where(sex == "F", -0.9, 0.6)
    values[:, col["creatinine_mg_dl"]] += np.where(sex == "F", -0.12, 0.1)
    child = age < 12
    values[child, col["heart_rate_bpm"]] += 25 - 2 * age[child]
    values[child, col["respiratory_rate_bpm"]] += 10 - 0.8 * age[child]

    severity = rng.lognormal(0.0, SEVERITY_SIGMA, n)
    shifts = np.zeros((n, len(VARIABLES)))
    if len(common):
        table = np.array([[c.get("shifts", {}).get(v.name, 0.0) for v in VARIABLES] for c in common])
        shifts[is_common] = table[disease[is_common]]
    # An orphan patient's own findings (recorded or not) and an unrelated finding move physiology.
    physiology = pd.DataFrame({"p": np.concatenate([found_p_all, extra_p]), "t": np.concatenate([found_t_all, extra_t])})
    physiology = physiology.drop_duplicates()
    orphan_p, orphan_t = physiology["p"].to_numpy(dtype=int), physiology["t"].to_numpy(dtype=object)
    if len(orphan_p):
        unique_terms, inverse = np.unique(orphan_t, return_inverse=True)
        np.add.at(shifts, orphan_p, _effect_matrix(unique_terms, ontology)[inverse])
    severity[orphan_rows] *= [STAGE_PRESENTATION[s][1] for s in stage]  # after the draw: the stream is unchanged
    shifts *= severity[:, None]
    for j, v in enumerate(VARIABLES):
        if v.lognormal:  # shift the arithmetic value, keep the skew of the analyte
            values[:, j] = np.exp(values[:, j]) + shifts[:, j] * rng.lognormal(0.0, 0.3, n)
        else:
            values[:, j] += shifts[:, j]
        # Stay strictly inside the possible: only injected defects may break the limits.
        span = v.high - v.low
        values[:, j] = np.round(np.clip(values[:, j], v.low + 0.01 * span, v.high - 0.01 * span), v.decimals)
    spo2 = col["spo2_pct"]
    values[:, spo2] = np.minimum(values[:, spo2], 100.0)
    sbp, dbp = col["systolic_bp_mmhg"], col["diastolic_bp_mmhg"]
    values[:, dbp] = np.minimum(values[:, dbp], values[:, sbp] - 15)

    vital_idx = [col[name] for name in VITALS]
    vitals = values[:, vital_idx]
    vitals[rng.random(vitals.shape) < config.vital_missing_rate] = np.nan
    lab_idx = [col[name] for name in LABS]
    labs = values[:, lab_idx]
    labs[rng.random(labs.shape) < config.lab_missing_rate] = np.nan
    drawn = rng.random(n) < np.where(is_healthy, config.lab_panel_rate_healthy, config.lab_panel_rate_ill)

    # 5. History, encounter date, identifiers and a short note.
    history = np.zeros((n, len(COMORBIDITIES)), dtype=bool)
    for j, (_, prevalence, midpoint) in enumerate(COMORBIDITIES):
        p = prevalence / (1 + np.exp(-(age - midpoint) / 10))
        history[:, j] = rng.random(n) < p
    known = is_common & np.isin(label, [CHRONIC, TERMINAL]) & (rng.random(n) < KNOWN_CONDITION_RATE)
    codes = [c[0] for c in COMORBIDITIES]
    icd = [c["icd10"] for c in common]
    prior = [[codes[j] for j in np.flatnonzero(row)] for row in history]
    for i in np.flatnonzero(known).tolist():
        if icd[disease[i]] not in prior[i]:
            prior[i].append(icd[disease[i]])
    date = (np.datetime64(config.start_date) + rng.integers(0, 365, n)).astype(str)
    patient_id = np.char.add("P", np.char.zfill(np.arange(1, n + 1).astype(str), 7))
    names = {t: ontology.name(t) for t in pd.unique(flat_terms)}
    notes = [_note(int(a), s, sym, names) for a, s, sym in zip(age, sex, symptoms)]

    records = pd.DataFrame({"patient_id": patient_id, "encounter_date": date, "age": age, "sex": sex})
    for k, name in enumerate(VITALS):
        records[name] = vitals[:, k]
    records["symptoms"] = symptoms
    records["prior_diagnoses"] = prior
    records["note"] = notes
    records["label"] = label
    records["disease_id"] = disease_id
    records["disease_name"] = disease_name
    records["is_orphan"] = is_orphan
    lab_frame = pd.DataFrame({"patient_id": patient_id, "collected_at": date})
    for k, name in enumerate(LABS):
        lab_frame[name] = labs[:, k]
    lab_frame = lab_frame[drawn].reset_index(drop=True)

    record_defects, lab_defects, defects, expected = _plan_defects(records, lab_frame, config, rng)
    return Cohort(records, lab_frame, record_defects, lab_defects, defects, expected, config, n_diseases,
                  orphans.release or ontology.release, orphan_stage=pd.Series(stage, index=orphan_rows, name="stage"))


def _orphan_stages(rng: np.random.Generator, diseases: pd.DataFrame, disease: np.ndarray,
                   config: CohortConfig) -> np.ndarray:
    """Each orphan patient's stage (``orphan.STAGE_RULES``, first match; UNSTAGED where none applies)."""
    u = rng.random(len(disease))  # drawn whatever the config, so later draws do not move
    stage = np.full(len(disease), UNSTAGED, dtype=object)
    if not config.orphan_stages or not len(disease):
        return stage
    category = diseases["category"].to_numpy()[disease]
    for (placed, column, first, _, second, _, _), share_field in zip(STAGE_RULES, STAGE_SHARE_FIELDS):
        match = (stage == UNSTAGED) & (category == placed) & diseases[column].to_numpy(dtype=bool)[disease]
        share = getattr(config, share_field)
        stage[match] = np.where(u[match] < share, first, second)
    return stage


def _stage_labels(diseases: pd.DataFrame, disease: np.ndarray, stage: np.ndarray) -> np.ndarray:
    label = diseases["category"].to_numpy()[disease].copy()
    for _, _, first, first_label, second, second_label, _ in STAGE_RULES:
        label[stage == first] = first_label
        label[stage == second] = second_label
    return label


def _vaguer_terms(term: str, ontology: Ontology) -> tuple[str, ...]:
    """The is_a parents a finding may be recorded as: strictly below Phenotypic abnormality and not an
    organ-system heading (a direct child of it), sorted; empty when there is none."""
    return tuple(sorted(
        p for p in ontology.parents.get(ontology.primary(term), ())
        if p != PHENOTYPIC_ABNORMALITY and ontology.is_under(p, PHENOTYPIC_ABNORMALITY)
        and PHENOTYPIC_ABNORMALITY not in ontology.parents.get(p, ())
    ))


def _report_findings(rng: np.random.Generator, patients: np.ndarray, terms: np.ndarray, ontology: Ontology,
                     config: CohortConfig) -> tuple[np.ndarray, np.ndarray]:
    """Findings as recorded: each under-reported with ``orphan_underreport_rate`` (a patient keeps at
    least the first drawn), each kept one recorded as a random is_a parent with
    ``orphan_imprecise_rate`` (and of those, ``orphan_imprecise_two_levels`` one level further up)."""
    m = len(patients)
    dropped = rng.random(m) < config.orphan_underreport_rate
    imprecise = rng.random(m) < config.orphan_imprecise_rate
    two_levels = rng.random(m) < config.orphan_imprecise_two_levels
    picks = rng.random((m, 2))
    if not m:
        return patients, terms
    _, first = np.unique(patients, return_index=True)
    kept = np.bincount(patients[~dropped], minlength=patients.max() + 1)
    dropped[first[kept[patients[first]] == 0]] = False  # at least one disease finding per patient
    terms = terms.copy()
    for i in np.flatnonzero(imprecise & ~dropped):
        for level in range(2 if two_levels[i] else 1):
            parents = _vaguer_terms(terms[i], ontology)
            if parents:
                terms[i] = parents[int(picks[i, level] * len(parents))]
    return patients[~dropped], terms[~dropped]


def _unrelated_findings(rng: np.random.Generator, rows: np.ndarray, disease: np.ndarray, phenotypes: pd.DataFrame,
                        starts: np.ndarray, ends: np.ndarray, config: CohortConfig) -> tuple[np.ndarray, np.ndarray]:
    """With ``orphan_unrelated_rate``, one phenotype of another random catalogue disease per patient."""
    m, n_diseases = len(rows), len(starts)
    hit = rng.random(m) < config.orphan_unrelated_rate
    other = (disease + 1 + rng.integers(0, max(n_diseases - 1, 1), size=m)) % max(n_diseases, 1)
    pick = rng.random(m)
    if n_diseases < 2:
        return rows[:0], np.array([], dtype=object)
    index = starts[other] + np.floor(pick * (ends[other] - starts[other])).astype(int)
    terms = phenotypes["hpo_id"].to_numpy()[index]
    return rows[hit], terms[hit].astype(object)


def _note(age: int, sex: str, symptoms: list[str], names: dict[str, str]) -> str:
    person = ("woman" if sex == "F" else "man") if age >= 18 else ("girl" if sex == "F" else "boy")
    who = f"{age}-year-old {person}"
    if not symptoms:
        return f"{who}, routine visit, no complaints."
    shown = [names.get(s, s).lower() for s in symptoms[:3]]
    more = f" and {len(symptoms) - 3} more findings" if len(symptoms) > 3 else ""
    return f"{who} presenting with {', '.join(shown)}{more}."


def _plan_defects(records: pd.DataFrame, labs: pd.DataFrame, config: CohortConfig, rng: np.random.Generator
                  ) -> tuple[dict[int, str], dict[int, str], dict[str, int], dict[str, int]]:
    """Which rows get which recording defect, and what ingestion must then accept and quarantine."""
    n = len(records)
    victims = rng.choice(n, size=min(round(n * config.defect_rate), n), replace=False)
    record_defects = {int(row): RECORD_DEFECTS[i % len(RECORD_DEFECTS)] for i, row in enumerate(victims)}
    broken_ids = set(records["patient_id"].to_numpy()[[r for r, k in record_defects.items() if k != "duplicate"]])
    clean_labs = np.flatnonzero(~labs["patient_id"].isin(broken_ids).to_numpy())
    lab_victims = rng.choice(clean_labs, size=min(round(len(labs) * config.defect_rate), len(clean_labs)), replace=False)
    lab_defects = {int(row): LAB_DEFECTS[i % len(LAB_DEFECTS)] for i, row in enumerate(lab_victims)}
    counts = Counter(record_defects.values()) + Counter(lab_defects.values())
    expected = {
        "records_read": n + counts["duplicate"],
        "records_quarantined": len(broken_ids) + counts["duplicate"],
        "records_accepted": n - len(broken_ids),
        "labs_read": len(labs) + counts["lab_duplicate"],
        # labs of a quarantined record cannot be joined, so they are quarantined with it
        # (a duplicated row's original is accepted; its copy is quarantined)
        "labs_quarantined": len(lab_defects) + int(labs["patient_id"].isin(broken_ids).sum()),
    }
    expected["labs_accepted"] = expected["labs_read"] - expected["labs_quarantined"]
    return record_defects, lab_defects, {k: counts.get(k, 0) for k in RECORD_DEFECTS + LAB_DEFECTS}, expected


def write_raw(cohort: Cohort, lake: DataLake, batch: str) -> tuple[str, str]:
    """Publish both sources into the raw zone, write-once, through temp files (bounded memory)."""
    import tempfile

    from diagnosa.data.ingest import raw_keys

    records_key, labs_key = raw_keys(batch)
    with tempfile.TemporaryDirectory(prefix="diagnosa-raw-") as tmp:
        records_path, labs_path = f"{tmp}/records.jsonl", f"{tmp}/labs.csv"
        with open(records_path, "wb") as out:
            cohort.write_records(out)
        with open(labs_path, "wb") as out:
            cohort.write_labs(out)
        lake.put_file_once(records_path, records_key)
        lake.put_file_once(labs_path, labs_key)
    return records_key, labs_key
