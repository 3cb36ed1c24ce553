"""Orphan patients present like real ones (issue 14): background complaints, under-reported and imprecise
findings, unrelated findings, and a category that follows the patient's stage where the annotations allow."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.cohort import BACKGROUND_SYMPTOMS, FAITHFUL_ORPHANS, CohortConfig, generate
from diagnosa.data.hpo import PHENOTYPIC_ABNORMALITY, load_ontology
from diagnosa.data.orphan import ATTACK, EARLY, LATE, OrphanCatalogue
from diagnosa.labels import ACUTE, CHRONIC, HEALTHY, TERMINAL


@pytest.fixture(scope="module")
def ontology():
    return load_ontology()


def _annotated(orphans: OrphanCatalogue) -> dict[str, set[str]]:
    return orphans.phenotypes.groupby("disease_id")["hpo_id"].agg(set).to_dict()


def _many_orphans(orphans, **knobs):
    return generate(CohortConfig(patients=20_000, seed=13, orphan_fraction=0.3, orphan_patients_per_disease=20,
                                 **knobs), orphans=orphans)


def test_same_config_same_bytes_and_orphan_knobs_move_only_orphan_rows(orphans):
    a = generate(CohortConfig(patients=3_000, seed=3, orphan_fraction=0.1), orphans=orphans)
    b = generate(CohortConfig(patients=3_000, seed=3, orphan_fraction=0.1), orphans=orphans)
    off = generate(CohortConfig(patients=3_000, seed=3, orphan_fraction=0.1, **FAITHFUL_ORPHANS), orphans=orphans)
    assert a.records_bytes() == b.records_bytes() and a.labs_bytes() == b.labs_bytes()
    assert a.records_bytes() != off.records_bytes()
    # Healthy and common-disease patients are exactly what they were before orphan presentation existed:
    # every new draw comes from the orphan generator, not from the main stream.
    common = ~a.records["is_orphan"]
    assert common.sum() > 2_000
    pd.testing.assert_frame_equal(a.records[common], off.records[common])
    ids = a.records.loc[common, "patient_id"]
    pd.testing.assert_frame_equal(a.labs[a.labs["patient_id"].isin(ids)], off.labs[off.labs["patient_id"].isin(ids)])
    assert a.defects == off.defects and a.expected == off.expected
    # The orphan patients themselves differ (symptoms, and so vitals) but not who they are.
    orphan = a.records["is_orphan"]
    assert (a.records.loc[orphan, "disease_id"] == off.records.loc[orphan, "disease_id"]).all()
    assert (a.records.loc[orphan, "symptoms"] != off.records.loc[orphan, "symptoms"]).any()


def test_orphan_patients_carry_background_complaints_at_the_common_rate(orphans):
    # Background complaints are the orphan generator's last draws, so switching them off changes nothing
    # else: the difference is exactly the complaints added (minus the few a disease already showed).
    with_bg = _many_orphans(orphans)
    without = _many_orphans(orphans, orphan_background_rate=0.0)
    orphan = with_bg.records["is_orphan"]
    assert orphan.sum() > 5_000
    background = {b[0] for b in BACKGROUND_SYMPTOMS}
    count = lambda c: c.records.loc[orphan, "symptoms"].map(lambda s: len(background & set(s)))  # noqa: E731
    added = (count(with_bg) - count(without)).mean()
    expected = 0.5 * sum(b[2] for b in BACKGROUND_SYMPTOMS)  # the common-disease rate: half the healthy one
    assert expected * 0.85 < added <= expected + 0.02
    others = with_bg.records["label"] != HEALTHY
    assert (with_bg.records.loc[others & ~orphan, "symptoms"] == without.records.loc[others & ~orphan, "symptoms"]).all()


def test_imprecise_findings_are_ancestors_of_annotated_ones_below_phenotypic_abnormality(orphans, ontology):
    cohort = _many_orphans(orphans, orphan_background_rate=0.0, orphan_unrelated_rate=0.0)
    annotated = _annotated(orphans)
    orphan = cohort.records[cohort.records["is_orphan"]]
    pairs = orphan[["disease_id", "symptoms"]].explode("symptoms")
    assert pairs["symptoms"].notna().all(), "every orphan patient keeps at least one finding"
    vaguer = 0
    for disease, term in zip(pairs["disease_id"], pairs["symptoms"]):
        assert term != PHENOTYPIC_ABNORMALITY and ontology.is_under(term, PHENOTYPIC_ABNORMALITY), term
        if term in annotated[disease]:
            continue
        vaguer += 1
        # a parent or grandparent of an annotated finding, never an organ-system heading
        assert PHENOTYPIC_ABNORMALITY not in ontology.parents.get(term, ()), term
        below = [a for a in annotated[disease] if term in ontology.ancestors(a) and term != a]
        assert below, (disease, term)
        assert any(term in ontology.parents.get(a, ()) or any(term in ontology.parents.get(p, ())
                                                                 for p in ontology.parents.get(a, ()))
                   for a in below), (disease, term)
    # 30% of recorded findings are imprecise; some have no parent to go to, some land on an annotated term.
    assert 0.1 < vaguer / len(pairs) < 0.3


def test_underreporting_lowers_how_many_findings_are_recorded(orphans):
    full = _many_orphans(orphans, **(FAITHFUL_ORPHANS | {"orphan_stages": True}))
    under = _many_orphans(orphans, **(FAITHFUL_ORPHANS | {"orphan_stages": True, "orphan_underreport_rate": 0.15}))
    orphan = full.records["is_orphan"]
    n_full = full.records.loc[orphan, "symptoms"].map(len)
    n_under = under.records.loc[orphan, "symptoms"].map(len)
    assert (n_under <= n_full).all() and (n_under >= 1).all()
    assert n_under.sum() / n_full.sum() == pytest.approx(0.85, abs=0.02)


def test_unrelated_findings_come_from_other_catalogue_diseases(orphans):
    cohort = _many_orphans(orphans, **(FAITHFUL_ORPHANS | {"orphan_unrelated_rate": 0.25}))
    annotated = _annotated(orphans)
    every = set(orphans.phenotypes["hpo_id"])
    orphan = cohort.records[cohort.records["is_orphan"]]
    foreign = [set(s) - annotated[d] for d, s in zip(orphan["disease_id"], orphan["symptoms"])]
    assert all(len(f) <= 1 and f <= every for f in foreign)
    share = np.mean([bool(f) for f in foreign])
    assert 0.18 < share <= 0.25 + 0.02  # the few that coincide with an own annotation do not show


def _staged_catalogue(orphans: OrphanCatalogue) -> OrphanCatalogue:
    d = orphans.diseases
    staged = d[((d["category"] == TERMINAL) & d["course_chronic"]) | ((d["category"] == CHRONIC) & d["course_acute"])]
    return OrphanCatalogue(staged.reset_index(drop=True),
                           orphans.phenotypes[orphans.phenotypes["disease_id"].isin(staged["disease_id"])]
                           .reset_index(drop=True), orphans.release)


def test_catalogue_records_what_the_course_annotations_support(orphans):
    d = orphans.diseases
    assert {"disease_id", "disease_name", "source", "category", "rule", "age_min", "age_max",
            "course_chronic", "course_acute"} <= set(d.columns)
    # Rule 2 places every chronic-course disease that rule 1 did not take, rule 3 every acute-course one left.
    assert (d.loc[d["category"] == CHRONIC, "course_chronic"]).all()
    assert not d.loc[d["category"] == ACUTE, "course_chronic"].any() and d.loc[d["category"] == ACUTE, "course_acute"].all()
    assert ((d["category"] == TERMINAL) & d["course_chronic"]).sum() > 10
    assert ((d["category"] == CHRONIC) & d["course_acute"]).sum() > 0


def test_stage_sets_the_category_and_shows_in_the_presentation(orphans):
    staged = _staged_catalogue(orphans)
    cohort = generate(CohortConfig(patients=20_000, seed=17, orphan_fraction=0.25, orphan_patients_per_disease=120),
                      orphans=staged)
    records = cohort.records
    stage = cohort.orphan_stage
    assert set(stage.index) == set(np.flatnonzero(records["is_orphan"]))
    label = records.loc[stage.index, "label"]
    category = staged.diseases.set_index("disease_id")["category"].reindex(records.loc[stage.index, "disease_id"]).to_numpy()
    terminal = category == TERMINAL
    # A terminal disease with a chronic course: early-stage patients CRÓNICA, late-stage TERMINAL, about half each.
    assert set(label[terminal]) == {CHRONIC, TERMINAL}
    assert (label[stage == EARLY] == CHRONIC).all() and (label[stage == LATE] == TERMINAL).all()
    assert (stage[terminal] == EARLY).mean() == pytest.approx(0.5, abs=0.05)
    # A chronic disease with attacks: about a third of its patients present in an attack, as AGUDA.
    assert (label[stage == ATTACK] == ACUTE).all()
    assert (stage[~terminal] == ATTACK).mean() == pytest.approx(0.35, abs=0.1)
    # The stage is in the presentation: late-stage patients of the same disease show more findings.
    frame = pd.DataFrame({"disease": records.loc[stage.index, "disease_id"], "stage": stage,
                          "findings": records.loc[stage.index, "symptoms"].map(len)})
    means = frame[frame["stage"].isin([EARLY, LATE])].groupby(["disease", "stage"])["findings"].mean().unstack()
    means = means.dropna()
    assert len(means) > 10
    assert (means[LATE] > means[EARLY]).mean() > 0.9
    assert means[LATE].mean() > 1.5 * means[EARLY].mean()
    summary = cohort.summary()["orphan_stages"]
    assert summary[f"{EARLY}|{CHRONIC}"] == (stage == EARLY).sum()
    # Stages switched off: every patient carries the disease's placed category.
    flat = generate(CohortConfig(patients=20_000, seed=17, orphan_fraction=0.25, orphan_patients_per_disease=120,
                                 orphan_stages=False), orphans=staged)
    assert (flat.records.loc[stage.index, "label"].to_numpy() == category).all()


@pytest.mark.parametrize("field, value", [
    ("orphan_background_rate", -0.1), ("orphan_underreport_rate", 1.0), ("orphan_imprecise_rate", 1.5),
    ("orphan_imprecise_two_levels", float("nan")), ("orphan_unrelated_rate", "often"),
    ("orphan_early_stage_share", 2), ("orphan_attack_share", True), ("orphan_stages", "yes"),
])
def test_bad_presentation_knobs_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        CohortConfig(**{field: value}).validate()
