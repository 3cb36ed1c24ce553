"""A version ingested while retraining folds the feedback (monitoring/retrain.py): reading every capture and feedback
takes minutes on AWS, and a hospital's batch ingested meanwhile became the latest — then the fold's version (the older
base + feedback) replaced it, and the batch's patients were in no later retraining (each built on the fold's base).
The fold's ingest is asked for as of its base (ingestion's overtaken rule): the newer version stays the latest, the
feedback is added again, to it, and the result says so. The race is reproduced deterministically: the read of the
feedback ingests the other batch, as the hospital would meanwhile. Folder lakes, the real writers and readers."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from test_retrain_job import patient_requests, served

import monitoring.retrain as retrain
from diagnosa.data.cohort import CohortConfig, generate, write_raw
from diagnosa.data.ingest import current_latest, ingest_cohort, ingest_csv, load_curated
from diagnosa.lake import DataLake
from inference.feedback import Feedback, store_feedback
from monitoring.retrain import feedback_dataset
from monitoring.retrain_job import main as job_main

EP = "diagnosa"


@pytest.fixture(scope="module")
def cohorts():
    return (generate(CohortConfig(patients=1000, seed=11, defect_rate=0)),
            generate(CohortConfig(patients=1200, seed=12, defect_rate=0)))


@pytest.fixture
def lake(tmp_path, cohorts):
    """Hospital batch A ingested (the latest), three of its patients served and confirmed by a doctor; batch B in raw/,
    not ingested yet."""
    a, b = cohorts
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    write_raw(a, lake, "hospitalA")
    write_raw(b, lake, "hospitalB")
    ingest_cohort(lake, "hospitalA")
    requests = patient_requests(a, 3)
    for event, (_, label) in zip(served(lake, EP, [r for r, _ in requests], tmp_path / "spool"), requests):
        store_feedback(lake, EP, Feedback(event_id=event, diagnosis=label))
    return lake


def ingest_meanwhile(monkeypatch, reader: str, ingest) -> dict:
    """Wrap ``retrain.<reader>`` (the fold's read of capture and feedback) so that its first call runs ``ingest``
    after reading, as a hospital's ingest finishing while the fold reads; ``seen['version']`` its version."""
    real, seen = getattr(retrain, reader), {}

    def slow_read(*args, **kwargs):
        out = real(*args, **kwargs)
        if "version" not in seen:
            seen["version"] = ingest()
        return out

    monkeypatch.setattr(retrain, reader, slow_read)
    return seen


def test_a_batch_ingested_while_the_fold_reads_stays_in_the_latest_and_the_feedback_is_added_to_it(lake, monkeypatch):
    version_a = current_latest(lake, "patients")
    seen = ingest_meanwhile(monkeypatch, "feedback_records", lambda: ingest_cohort(lake, "hospitalB").version)
    folded = feedback_dataset(lake, EP)
    version_b = seen["version"]
    # The fold on A was written, not made the latest; the feedback was added again, to B, and that is the latest.
    assert folded.base_source == "hospitalB" and current_latest(lake, "patients") == folded.version
    [(base, dropped, newer)] = folded.rebuilt_from
    assert (base, newer) == (version_a, version_b) and dropped not in (folded.version, version_b)
    assert folded.base_version == version_b and folded.base_source == "hospitalB" and folded.overtaken_by is None
    assert current_latest(lake, "patients") == folded.version
    frame, manifest = load_curated(lake, "patients", folded.version)
    assert manifest["feedback"]["base_batch"] == "hospitalB" and len(frame) == 1200 + 3  # B's patients + feedback
    summary = folded.summary()
    assert f"version {version_b} of patients was ingested while the feedback was added to {version_a}" in summary
    assert f"{dropped}, built on {version_a}, was written but is not the latest" in summary
    # The next retraining builds on B too.
    monkeypatch.undo()
    assert feedback_dataset(lake, EP).base_source == "hospitalB"


def test_an_ingest_asked_for_before_the_fold_and_finishing_during_it_stays_the_latest(lake, monkeypatch):
    # B's ingest read LATEST (A) before the fold started, and finishes while the fold reads: it merely finished after
    # the fold started, yet the fold built on A, so B must not be replaced by A + feedback.
    version_a = current_latest(lake, "patients")
    b_reading, b_go, reports = threading.Event(), threading.Event(), {}

    def phase(what, detail=""):
        if what == "validating clinical records" and not b_reading.is_set():
            b_reading.set()
            assert b_go.wait(30)

    thread = threading.Thread(target=lambda: reports.setdefault("b", ingest_cohort(lake, "hospitalB", phase=phase)))
    thread.start()
    assert b_reading.wait(30)

    def finish_b():
        b_go.set()
        thread.join(60)
        return reports["b"].version

    seen = ingest_meanwhile(monkeypatch, "feedback_records", finish_b)
    folded = feedback_dataset(lake, EP)
    assert reports["b"].overtaken_by is None and seen["version"] == reports["b"].version
    assert folded.base_source == "hospitalB" and current_latest(lake, "patients") == folded.version
    assert [(base, newer) for base, _, newer in folded.rebuilt_from] == [(version_a, reports["b"].version)]


def test_a_named_base_version_overtaken_is_kept_as_asked_and_says_so(lake, monkeypatch):
    version_a = current_latest(lake, "patients")
    seen = ingest_meanwhile(monkeypatch, "feedback_records", lambda: ingest_cohort(lake, "hospitalB").version)
    folded = feedback_dataset(lake, EP, base_version=version_a)
    version_b = seen["version"]
    assert current_latest(lake, "patients") == version_b  # B stays the latest
    assert folded.base_version == version_a and folded.rebuilt_from == [] and folded.overtaken_by == version_b
    assert (f"version {version_b} of patients was ingested while the feedback was added and stays the latest: "
            f"{folded.version} ({version_a} + feedback) is not the latest, and trains without {version_b}'s data "
            "(as --base-version asked)") in folded.summary()


def test_a_fold_whose_version_exists_already_does_not_take_the_latest_back(lake, monkeypatch):
    # The same feedback on the same base is the same version: ingestion reuses it, and made it the latest again even
    # when another version had been ingested meanwhile.
    version_a = current_latest(lake, "patients")
    first = feedback_dataset(lake, EP)
    assert ingest_cohort(lake, "hospitalA").relatest == first.version  # A the latest again
    seen = ingest_meanwhile(monkeypatch, "feedback_records", lambda: ingest_cohort(lake, "hospitalB").version)
    folded = feedback_dataset(lake, EP)
    assert folded.base_source == "hospitalB" and current_latest(lake, "patients") == folded.version
    assert folded.rebuilt_from == [(version_a, first.version, seen["version"])]


def test_without_an_ingest_meanwhile_the_fold_is_the_latest_as_before(lake):
    version_a = current_latest(lake, "patients")
    folded = feedback_dataset(lake, EP)
    assert folded.base_version == version_a and folded.report.overtaken_by is None
    assert current_latest(lake, "patients") == folded.version and folded.feedback_rows == 3
    assert "ingested while" not in folded.summary() and "not made the latest" not in folded.summary()
    # A batch ingested after the fold is the latest, and the next fold builds on it.
    version_b = ingest_cohort(lake, "hospitalB").version
    assert current_latest(lake, "patients") == version_b
    assert feedback_dataset(lake, EP).base_source == "hospitalB"


def test_the_folding_jobs_result_names_the_version_ingested_meanwhile(lake, tmp_path, monkeypatch):
    version_a = current_latest(lake, "patients")
    seen = ingest_meanwhile(monkeypatch, "feedback_records", lambda: ingest_cohort(lake, "hospitalB").version)
    assert job_main(["--base-dir", str(tmp_path / "job"), "--lake", str(tmp_path / "lake"), "--endpoint-name", EP]) == 0
    result = json.loads((tmp_path / "job" / "output" / "result" / "retraining.json").read_text(encoding="utf-8"))
    # What the retrain function trains on: the feedback added to B, the latest.
    assert result["base_version"] == seen["version"] and result["version"] == current_latest(lake, "patients")
    [rebuilt] = result["rebuilt_from"]
    assert rebuilt["base_version"] == version_a and rebuilt["ingested_meanwhile"] == seen["version"]
    assert result["base_version"] == seen["version"] and result["overtaken_by"] is None
    assert result["version"] == current_latest(lake, "patients") != rebuilt["version"]  # what the function trains on


OWN_CONFIG = 'name = "mi_hospital"\nid_column = "paciente"\ntarget = "gravedad"\nlabels = ["leve", "grave"]\n'


def own_csv(path: Path, patients: int) -> Path:
    rows = [f"P{i:03d},{30 + i % 50},{36 + (i % 7) / 2:.1f},{'grave' if i % 4 == 0 else 'leve'}\n"
            for i in range(patients)]
    path.write_text("paciente,edad,temperatura,gravedad\n" + "".join(rows), encoding="utf-8")
    return path


def test_a_dataset_of_ones_own_ingested_while_the_fold_reads_stays_in_the_latest(tmp_path, monkeypatch):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    config = tmp_path / "mi.toml"
    config.write_text(OWN_CONFIG, encoding="utf-8")
    version_a = ingest_csv(lake, own_csv(tmp_path / "a.csv", 60), config).version
    [event] = served(lake, "mi-hospital", [{"edad": 71, "temperatura": 38.5}], tmp_path / "spool")
    store_feedback(lake, "mi-hospital", Feedback(event_id=event, diagnosis="grave"))
    seen = ingest_meanwhile(monkeypatch, "feedback_lines",
                            lambda: ingest_csv(lake, own_csv(tmp_path / "b.csv", 80), config).version)
    folded = feedback_dataset(lake, "mi-hospital")
    assert folded.base_version == seen["version"] and current_latest(lake, "mi_hospital") == folded.version
    assert len(load_curated(lake, "mi_hospital", folded.version)[0]) == 80 + 1
    assert [(base, newer) for base, _, newer in folded.rebuilt_from] == [(version_a, seen["version"])]
