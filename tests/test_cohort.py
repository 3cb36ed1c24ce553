"""The cohort generator: determinism, proportions, orphan symptoms from real annotations, catalogue rules."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.cohort import BACKGROUND_SYMPTOMS, FAITHFUL_ORPHANS, CohortConfig, generate
from diagnosa.data.hpo import load_annotations, load_ontology, parse_frequency
from diagnosa.data.physiology import VARIABLES
from diagnosa.labels import CATEGORIES, HEALTHY, TERMINAL


@pytest.fixture(scope="module")
def cohort(orphans):
    return generate(CohortConfig(patients=20_000, seed=11), orphans=orphans)


def test_same_seed_same_bytes_other_seed_other_bytes(orphans):
    a = generate(CohortConfig(patients=2_000, seed=3), orphans=orphans)
    b = generate(CohortConfig(patients=2_000, seed=3), orphans=orphans)
    c = generate(CohortConfig(patients=2_000, seed=4), orphans=orphans)
    assert a.records_bytes() == b.records_bytes() and a.labs_bytes() == b.labs_bytes()
    assert a.records_bytes() != c.records_bytes()


def test_class_and_slice_proportions(cohort):
    records = cohort.records
    n = len(records)
    config = cohort.config
    assert n == 20_000
    assert records["patient_id"].is_unique
    share = records["label"].value_counts(normalize=True)
    assert set(share.index) == set(CATEGORIES)
    assert share[HEALTHY] == pytest.approx(config.healthy_fraction, abs=0.005)
    assert records["is_orphan"].mean() == pytest.approx(config.orphan_fraction, abs=0.002)
    common = records[~records["is_orphan"] & (records["label"] != HEALTHY)]
    common_share = common["label"].value_counts(normalize=True)
    for label, expected in config.common_mix.items():
        assert common_share[label] == pytest.approx(expected, abs=0.02), label
    # Imbalance like real life: terminal is the rarest class, orphan patients a few per disease.
    assert share.idxmin() == TERMINAL
    per_disease = records.loc[records["is_orphan"], "disease_id"].value_counts()
    assert per_disease.min() >= 2 and per_disease.median() <= 6
    assert len(per_disease) == cohort.orphan_diseases
    # Orphan patients are spread over several categories, not one.
    assert records.loc[records["is_orphan"], "label"].nunique() >= 3


def test_without_presentation_noise_every_orphan_symptom_is_an_annotation_of_its_disease(orphans):
    # Checked against the raw HPO file, independently of the catalogue code.
    cohort = generate(CohortConfig(patients=20_000, seed=11, **FAITHFUL_ORPHANS), orphans=orphans)
    hpoa = load_annotations()
    positive = hpoa[(hpoa["qualifier"] != "NOT") & (hpoa["aspect"] == "P")]
    allowed = set(zip(positive["database_id"], positive["hpo_id"]))
    orphan = cohort.records[cohort.records["is_orphan"]]
    pairs = orphan[["disease_id", "symptoms"]].explode("symptoms")
    assert pairs["symptoms"].notna().all(), "every orphan patient shows at least one sign"
    bad = [(d, s) for d, s in zip(pairs["disease_id"], pairs["symptoms"]) if (d, s) not in allowed]
    assert not bad
    assert len(pairs) > 2 * len(orphan)


def test_orphan_symptom_rates_follow_annotated_frequencies(orphans):
    # With many patients of one disease, each sign appears about as often as annotated.
    big = generate(CohortConfig(patients=50_000, seed=5, orphan_fraction=0.2, orphan_patients_per_disease=2000,
                                **FAITHFUL_ORPHANS), orphans=orphans)
    orphan = big.records[big.records["is_orphan"]]
    disease = orphan["disease_id"].value_counts().index[0]
    patients = orphan[orphan["disease_id"] == disease]
    observed = patients["symptoms"].explode().value_counts() / len(patients)
    annotated = orphans.phenotypes[orphans.phenotypes["disease_id"] == disease].set_index("hpo_id")["probability"]
    assert len(patients) > 1000
    for term, p in annotated.items():
        # forcing one sign per patient can only raise a rate, never lower it
        assert observed.get(term, 0.0) >= p - 0.05, term
        if p < 0.5:
            assert observed.get(term, 0.0) <= p + 0.15, term


def test_healthy_and_common_patients_carry_background_complaints(cohort):
    background = {b[0] for b in BACKGROUND_SYMPTOMS}
    healthy = cohort.records[cohort.records["label"] == HEALTHY]
    flat = healthy["symptoms"].explode().dropna()
    assert set(flat) <= background
    assert 0.3 < (healthy["symptoms"].map(len) > 0).mean() < 0.8


def test_vitals_and_labs_are_possible_noisy_and_sometimes_missing(cohort):
    records, labs = cohort.records, cohort.labs
    for v in VARIABLES:
        column = records[v.name] if v.kind == "vital" else labs[v.name]
        values = column.dropna()
        assert values.between(v.low, v.high).all(), v.name
        assert 0.0 < column.isna().mean() < 0.2, v.name
        assert values.std() > 0, v.name
    assert 0.6 < len(labs) / len(records) < 0.9
    # Disease moves physiology: acute patients run hotter and have higher CRP than healthy ones.
    merged = records.merge(labs, on="patient_id")
    by_label = merged.groupby("label")[["temperature_c", "crp_mg_l"]].median()
    assert by_label.loc["ENFERMEDAD AGUDA", "crp_mg_l"] > 3 * by_label.loc[HEALTHY, "crp_mg_l"]
    assert by_label.loc["ENFERMEDAD AGUDA", "temperature_c"] > by_label.loc[HEALTHY, "temperature_c"]


def test_written_sources_hold_every_record_and_the_injected_defects(cohort):
    lines = cohort.records_bytes().decode("utf-8").splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    assert len(lines) == cohort.expected["records_read"]
    assert len(lines) - len(parsed) == cohort.defects["malformed_json"]
    assert sum(r.get("label") == "ENFERMEDAD RARA" for r in parsed) == cohort.defects["unknown_label"]
    assert sum("bed_number" in r for r in parsed) == cohort.defects["unknown_field"]
    labs_text = cohort.labs_bytes().decode("utf-8")
    assert labs_text.count("\n") == cohort.expected["labs_read"] + 1  # header
    assert labs_text.count(",high,") == cohort.defects["lab_wrong_type"]


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="patients must be between 1,000 and 1,000,000"):
        generate(CohortConfig(patients=10))
    with pytest.raises(ValueError, match="orphan_fraction"):
        CohortConfig(orphan_fraction=1.5).validate()


def test_frequency_parsing():
    values = pd.Series(["HP:0040281", "3/4", "25%", "", "HP:0040285", "0/0"])
    assert parse_frequency(values).tolist() == pytest.approx([0.895, 0.75, 0.25, 0.5, 0.0, 0.5])


def test_orphan_catalogue_rules(orphans):
    ontology = load_ontology()
    diseases = orphans.diseases.set_index("disease_id")
    assert len(diseases) > 1000
    assert set(diseases["category"]) == set(CATEGORIES[1:])
    hpoa = load_annotations()
    positive = hpoa[hpoa["qualifier"] != "NOT"]
    # Every terminal disease has a Mortality/Aging annotation; no unplaced disease is in the catalogue.
    terminal = diseases.index[diseases["category"] == TERMINAL]
    for disease in terminal[:50]:
        terms = positive.loc[positive["database_id"] == disease, "hpo_id"]
        assert any(ontology.is_under(t, "HP:0040006") for t in terms), disease
    # A disease with no course, mortality or severity annotation stays out.
    annotated = set(positive.loc[positive["aspect"].isin(["C"]) | (positive["modifier"] != ""), "database_id"])
    unplaceable = sorted(set(positive["database_id"]) - annotated)[:100]
    assert not set(unplaceable) & set(diseases.index)
    assert (diseases["age_max"] > diseases["age_min"]).all()
    assert np.isin(orphans.phenotypes["disease_id"], diseases.index).all()
