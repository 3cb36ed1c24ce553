"""The orphan-disease catalogue: rare diseases from the HPO annotations, placed in a category by rules.

Rules, first match wins (documented in docs/data.md; ``RULES`` below is the single source):

1. ENFERMEDAD TERMINAL: any annotation in the Mortality/Aging subtree (HP:0040006), e.g. death in
   infancy, childhood or early adulthood: the disease shortens life.
2. ENFERMEDAD CRÓNICA: a clinical course or modifier in the Chronic (HP:0011010) or Progressive
   (HP:0003676) subtrees.
3. ENFERMEDAD AGUDA: a clinical course or modifier in the Acute (HP:0011009), Recurrent (HP:0031796,
   which holds Episodic) or "Triggered by" (HP:0025204) subtrees: the disease shows as attacks.
4. ENFERMEDAD LEVE: at least one phenotype carries the Mild modifier (HP:0012825) and none carries
   Severe (HP:0012828) or Profound (HP:0012829).

Diseases no rule places, or with fewer than ``MIN_PHENOTYPES`` positive phenotype annotations,
stay out of the catalogue. ``NOT`` annotations never count as evidence nor as symptoms.

The placed category is the disease's; a patient's category also follows the stage the patient is
in, where the annotations support stages (``STAGE_RULES``, first match wins):

- a disease placed ENFERMEDAD TERMINAL that also has a Chronic/Progressive course (``course_chronic``)
  is staged: an early-stage patient is ENFERMEDAD CRÓNICA (the disease has not yet shortened life),
  a late-stage patient ENFERMEDAD TERMINAL;
- a disease placed ENFERMEDAD CRÓNICA that also has an Acute/Recurrent/Episodic/Triggered course
  (``course_acute``) is staged: a patient presenting in an attack is ENFERMEDAD AGUDA, one between
  attacks ENFERMEDAD CRÓNICA.

Every other disease is unstaged: its patients carry its placed category.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from diagnosa.data.hpo import PHENOTYPIC_ABNORMALITY, Ontology, load_annotations, load_ontology
from diagnosa.labels import ACUTE, CHRONIC, MILD, TERMINAL

MORTALITY = "HP:0040006"
CHRONIC_TERMS = ("HP:0011010", "HP:0003676")
ACUTE_TERMS = ("HP:0011009", "HP:0031796", "HP:0025204")
MILD_TERM = "HP:0012825"
SEVERE_TERMS = ("HP:0012828", "HP:0012829")
MIN_PHENOTYPES = 3

RULES: tuple[tuple[str, str], ...] = (
    (TERMINAL, "an annotation under Mortality/Aging HP:0040006"),
    (CHRONIC, "a course or modifier under Chronic HP:0011010 or Progressive HP:0003676"),
    (ACUTE, "a course or modifier under Acute HP:0011009, Recurrent/Episodic HP:0031796 or Triggered by HP:0025204"),
    (MILD, "a Mild HP:0012825 modifier and no Severe HP:0012828 / Profound HP:0012829 modifier"),
)

# Stages a patient of a disease can be in, where its course annotations support them (first match).
# Each rule: (placed category, catalogue column that must be true, stage drawn with the cohort's
# share for the rule, its label, the other stage, its label, the rule in words). The share of the
# first stage is a CohortConfig knob (orphan_early_stage_share, orphan_attack_share).
EARLY, LATE, ATTACK, BETWEEN_ATTACKS, UNSTAGED = "early", "late", "attack", "between attacks", "unstaged"
STAGE_RULES: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    (TERMINAL, "course_chronic", EARLY, CHRONIC, LATE, TERMINAL,
     "placed ENFERMEDAD TERMINAL and a Chronic HP:0011010 / Progressive HP:0003676 course or modifier: "
     "an early-stage patient is ENFERMEDAD CRÓNICA, a late-stage patient ENFERMEDAD TERMINAL"),
    (CHRONIC, "course_acute", ATTACK, ACUTE, BETWEEN_ATTACKS, CHRONIC,
     "placed ENFERMEDAD CRÓNICA and an Acute HP:0011009 / Recurrent-Episodic HP:0031796 / Triggered by "
     "HP:0025204 course or modifier: a patient presenting in an attack is ENFERMEDAD AGUDA, one between "
     "attacks ENFERMEDAD CRÓNICA"),
)

# Onset terms → typical age range (years) of the patients we sample for the disease.
ONSET_AGES: dict[str, tuple[float, float]] = {
    "HP:0030674": (0, 1),  # Antenatal onset
    "HP:0011461": (0, 1),  # Fetal onset
    "HP:0003577": (0, 5),  # Congenital onset
    "HP:0003623": (0, 2),  # Neonatal onset
    "HP:0003593": (0, 4),  # Infantile onset
    "HP:0410280": (1, 16),  # Pediatric onset
    "HP:0011463": (2, 14),  # Childhood onset
    "HP:0003621": (6, 20),  # Juvenile onset
    "HP:0011462": (16, 45),  # Young adult onset
    "HP:0025708": (16, 25),  # Early young adult onset
    "HP:0025709": (20, 35),  # Intermediate young adult onset
    "HP:0025710": (30, 45),  # Late young adult onset
    "HP:0003581": (18, 70),  # Adult onset
    "HP:0003596": (40, 65),  # Middle age onset
    "HP:0003584": (55, 90),  # Late onset
}
DEFAULT_AGES = (0.0, 70.0)


@dataclass(frozen=True)
class OrphanCatalogue:
    """Placed rare diseases and the phenotype annotations patients are sampled from."""

    # disease_id, disease_name, source, category, rule, age_min, age_max, and what the annotations
    # support beside the placing rule: course_chronic (a Chronic/Progressive course or modifier),
    # course_acute (an Acute/Recurrent/Episodic/Triggered course or modifier)
    diseases: pd.DataFrame
    phenotypes: pd.DataFrame  # disease_id, hpo_id, probability (positive P-aspect annotations)
    release: str

    def __len__(self) -> int:
        return len(self.diseases)


def _subtree_hits(terms: pd.Series, roots: tuple[str, ...], ontology: Ontology) -> pd.Series:
    unique = terms.dropna().unique()
    hit = {t: any(ontology.is_under(t, r) for r in roots) for t in unique}
    return terms.map(hit).fillna(False).astype(bool)


def build_catalogue(annotations: pd.DataFrame | None = None, ontology: Ontology | None = None) -> OrphanCatalogue:
    annotations = load_annotations() if annotations is None else annotations
    ontology = load_ontology() if ontology is None else ontology
    positive = annotations[annotations["qualifier"] != "NOT"]

    # Every HPO term a disease carries as annotation or modifier, one row each.
    modifiers = positive[["database_id", "modifier"]].assign(term=positive["modifier"].str.split(";"))
    modifiers = modifiers.explode("term")
    modifiers = modifiers[modifiers["term"].fillna("") != ""][["database_id", "term"]]
    annotated = positive[["database_id", "hpo_id", "aspect"]].rename(columns={"hpo_id": "term"})
    course = pd.concat([annotated[annotated["aspect"] == "C"][["database_id", "term"]], modifiers])
    every = pd.concat([annotated[["database_id", "term"]], modifiers])

    def diseases_with(frame: pd.DataFrame, roots: tuple[str, ...]) -> set[str]:
        return set(frame.loc[_subtree_hits(frame["term"], roots, ontology).to_numpy(), "database_id"])

    terminal = diseases_with(every, (MORTALITY,))
    chronic = diseases_with(course, CHRONIC_TERMS)
    acute = diseases_with(course, ACUTE_TERMS)
    mild = set(modifiers.loc[modifiers["term"] == MILD_TERM, "database_id"])
    severe = set(modifiers.loc[modifiers["term"].isin(SEVERE_TERMS), "database_id"])

    phenotypes = positive[positive["aspect"] == "P"]
    keep = _subtree_hits(phenotypes["hpo_id"], (PHENOTYPIC_ABNORMALITY,), ontology).to_numpy()
    phenotypes = phenotypes[keep & (phenotypes["probability"].to_numpy() > 0)]
    phenotypes = (
        phenotypes.groupby(["database_id", "hpo_id"])["probability"].max().reset_index()
        .rename(columns={"database_id": "disease_id"})
    )
    counts = phenotypes.groupby("disease_id").size()
    eligible = set(counts[counts >= MIN_PHENOTYPES].index)

    placed: dict[str, tuple[str, str]] = {}
    evidence = (terminal, chronic, acute, mild - severe)
    for (category, rule), members in zip(RULES, evidence):
        for disease in sorted(members & eligible):
            placed.setdefault(disease, (category, rule))

    names = positive.drop_duplicates("database_id").set_index("database_id")["disease_name"]
    onset = positive[positive["hpo_id"].isin(list(ONSET_AGES))]
    ages = onset.assign(
        lo=onset["hpo_id"].map(lambda t: ONSET_AGES[t][0]), hi=onset["hpo_id"].map(lambda t: ONSET_AGES[t][1])
    ).groupby("database_id").agg(age_min=("lo", "min"), age_max=("hi", "max"))

    ids = sorted(placed)
    diseases = pd.DataFrame(
        {
            "disease_id": ids,
            "disease_name": names.reindex(ids).to_numpy(),
            "source": [i.split(":", 1)[0] for i in ids],
            "category": [placed[i][0] for i in ids],
            "rule": [placed[i][1] for i in ids],
        }
    )
    diseases = diseases.join(ages, on="disease_id")
    diseases["age_min"] = diseases["age_min"].fillna(DEFAULT_AGES[0]).astype(float)
    diseases["age_max"] = np.maximum(diseases["age_max"].fillna(DEFAULT_AGES[1]), diseases["age_min"] + 1.0)
    diseases["course_chronic"] = np.isin(ids, sorted(chronic))
    diseases["course_acute"] = np.isin(ids, sorted(acute))
    phenotypes = phenotypes[phenotypes["disease_id"].isin(placed)].reset_index(drop=True)
    return OrphanCatalogue(diseases=diseases, phenotypes=phenotypes, release=annotations.attrs.get("release", ""))
