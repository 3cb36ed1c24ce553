"""Drift scenarios of the cohort generator: each changes what it says and nothing else; the default is untouched."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.cohort import OUTBREAK_TERMS, CohortConfig, apply_drift, generate
from diagnosa.labels import HEALTHY, TERMINAL


@pytest.fixture(scope="module")
def cohort():
    return generate(CohortConfig(patients=1200, seed=4, orphan_fraction=0.05))


def test_labs_scenario_moves_the_named_analytes_only(cohort):
    drifted = apply_drift(cohort, "labs", seed=1)
    before, after = cohort.labs, drifted.labs
    assert after["crp_mg_l"].mean() < 0.6 * before["crp_mg_l"].mean()
    assert after["glucose_mg_dl"].mean() == pytest.approx(before["glucose_mg_dl"].mean() + 35, abs=1)
    assert after["hemoglobin_g_dl"].isna().mean() > before["hemoglobin_g_dl"].isna().mean() + 0.3
    pd.testing.assert_series_equal(after["sodium_mmol_l"], before["sodium_mmol_l"])
    pd.testing.assert_frame_equal(drifted.records, cohort.records)
    assert drifted.drift["scenario"] == "labs" and "drift" in drifted.summary()
    assert "drift" not in cohort.summary()  # the original (and the default output) is untouched


def test_symptom_scenario_adds_the_outbreak_terms(cohort):
    drifted = apply_drift(cohort, "symptoms", seed=1)
    share = np.mean([OUTBREAK_TERMS[0] in s for s in drifted.records["symptoms"]])
    before = np.mean([OUTBREAK_TERMS[0] in s for s in cohort.records["symptoms"]])
    assert share > before + 0.25
    assert (drifted.records["label"] == cohort.records["label"]).all()


def test_orphan_scenario_raises_one_rare_disease(cohort):
    drifted = apply_drift(cohort, "orphan", seed=1)
    disease = drifted.drift["changed"]["disease_id"]
    count = lambda c: int((c.records["disease_id"] == disease).sum())  # noqa: E731
    assert count(drifted) == count(cohort) + drifted.drift["changed"]["new_cases"]
    assert (drifted.records.loc[drifted.records["disease_id"] == disease, "label"] == TERMINAL).all()
    assert (drifted.records["label"] == HEALTHY).sum() < (cohort.records["label"] == HEALTHY).sum()
    assert drifted.labs["patient_id"].is_unique and drifted.records["patient_id"].equals(cohort.records["patient_id"])


def test_unknown_scenario_or_strength_is_refused(cohort):
    with pytest.raises(ValueError, match="scenarios: labs, symptoms, orphan"):
        apply_drift(cohort, "weather")
    with pytest.raises(ValueError, match="strength"):
        apply_drift(cohort, "labs", strength=0)


def test_cli_generates_a_drifted_batch_that_ingests_cleanly(tmp_path, capsys):
    from diagnosa.cli import main

    lake = str(tmp_path / "lake")
    assert main(["--lake", lake, "data", "generate", "--patients", "1000", "--seed", "3", "--drift", "labs"]) == 0
    assert "generated drifted batch cohort-n1000-s3-drift-labs" in capsys.readouterr().out
    assert main(["--lake", lake, "data", "ingest", "--batch", "cohort-n1000-s3-drift-labs"]) == 0
    out = capsys.readouterr().out
    assert "clinical_records: read 1,000 / accepted 1,000 / quarantined 0" in out
    assert "lab_results:" in out and out.count("quarantined 0") == 2  # a drifted batch carries no defects


def test_a_drifted_batch_refuses_a_card_and_is_written_once(tmp_path, capsys):
    from diagnosa.cli import main

    lake = tmp_path / "lake"
    argv = ["--lake", str(lake), "data", "generate", "--patients", "1000", "--seed", "3", "--drift", "labs"]
    assert main([*argv, "--card", str(tmp_path / "card.md")]) == 2
    assert "a drifted batch has no card of its own" in capsys.readouterr().err
    assert not (tmp_path / "card.md").exists()
    assert main(argv) == 0
    written = sorted(p.relative_to(lake).as_posix() for p in lake.rglob("*") if p.is_file() and "drift" in p.name)
    assert written and not any(name.endswith(".md") for name in written), written  # the JSON summary, no card
    capsys.readouterr()
    assert main(argv) == 0
    assert "already in" in capsys.readouterr().out  # raw data is write-once
