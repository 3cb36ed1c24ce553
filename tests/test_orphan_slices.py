"""Orphan diseases seen and unseen in training: the evaluation's sub-slices and the knowledge-only reference
(issue 14), on a model the preprocess and train jobs produced."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diagnosa.data.schema import Schema
from diagnosa.model import DiagnosaModel
from processing import evaluate as evaluate_job
from processing.evaluate import evaluate_model
from processing.phenotype import find_similarity
from processing.split import read_split, read_train_groups


@pytest.fixture(scope="module")
def scored(trained_model_dir):
    test_dir = trained_model_dir.parent / "pre" / "output" / "test"
    model = DiagnosaModel.load(trained_model_dir)
    test = read_split(test_dir)
    groups = read_train_groups(test_dir)
    return model, test, groups, evaluate_model(model, test, groups)


def test_the_split_writes_the_training_diseases_and_none_of_the_unseen_are_among_them(trained_model_dir, scored):
    _, test, groups, _ = scored
    train_ids = set(read_split(trained_model_dir.parent / "pre" / "output" / "validation")
                    .pipe(lambda v: v.loc[v["is_orphan"], "disease_id"]))
    assert groups and json.loads((trained_model_dir.parent / "pre" / "output" / "validation" / "groups.json")
                                 .read_text())["in_train"] == sorted(groups)
    unseen = set(test.loc[test["is_orphan"], "disease_id"]) - groups
    assert unseen, "the test split holds diseases no training patient had"
    assert not unseen & train_ids, "a held-out disease is in one of validation and test, not both"


def test_evaluation_reports_seen_unseen_and_common_with_the_reference(scored):
    model, test, groups, result = scored
    d = result["diagnosa"]
    orphan = test["is_orphan"].to_numpy(bool)
    unseen = orphan & ~test["disease_id"].isin(groups).to_numpy()
    assert d["slices"]["orphan_unseen"]["n"] == unseen.sum() > 0
    assert d["slices"]["orphan_seen"]["n"] == (orphan & ~unseen).sum() > 0
    assert d["slices"]["common"]["n"] == (~orphan).sum()
    predicted = np.array(model.predict(test.drop(columns=["label"])), dtype=object)
    truth = test["label"].to_numpy()
    for label, recall in d["slices"]["orphan_unseen"]["recall_per_class"].items():
        rows = unseen & (truth == label)
        assert recall == (None if not rows.any() else pytest.approx(np.mean(predicted[rows] == label)))
    # The reference: the nearest knowledge-base disease other than the patient's own, its category.
    reference = d["knowledge_reference"]
    similarity, field = find_similarity(model.features)
    nearest = np.array(similarity.nearest_category(test.loc[unseen, field], list(test.loc[unseen, "disease_id"])),
                       dtype=object)
    per_class = [np.mean(nearest[truth[unseen] == c] == c) for c in np.unique(truth[unseen])]
    assert reference["slices"]["orphan_unseen"]["macro_recall"] == pytest.approx(np.mean(per_class))
    assert set(reference["slices"]) == {"orphan", "orphan_seen", "orphan_unseen"}
    # The lookup with the patient's own disease left in (what the similarity features see): nothing excluded.
    lookup = reference["own_disease_included"]
    nearest = np.array(similarity.nearest_category(test.loc[unseen, field], [None] * int(unseen.sum())), dtype=object)
    per_class = [np.mean(nearest[truth[unseen] == c] == c) for c in np.unique(truth[unseen])]
    assert lookup["slices"]["orphan_unseen"]["macro_recall"] == pytest.approx(np.mean(per_class))
    assert set(lookup["slices"]) == set(reference["slices"])


def test_the_evaluation_job_reads_the_groups_and_writes_the_reference_into_the_report(tmp_path, trained_model_dir):
    base = tmp_path / "eval"
    (base / "input").mkdir(parents=True)
    (base / "input" / "model").symlink_to(trained_model_dir)
    (base / "input" / "test").symlink_to(trained_model_dir.parent / "pre" / "output" / "test")
    assert evaluate_job.main(["--base-dir", str(base), "--slice-threshold", "orphan_unseen=0.0"]) == 0
    result = json.loads((base / "output" / "evaluation" / "evaluation.json").read_text())
    assert "orphan_unseen" in result["diagnosa"]["slices"] and result["gate"]["passed"]
    report = (base / "output" / "report" / "report.md").read_text()
    assert "Knowledge-only reference" in report and "orphan_unseen" in report
    assert "| lookup, own disease included | " in report
    # Without the groups file there is nothing to tell seen from unseen: no sub-slices, no crash.
    model = DiagnosaModel.load(trained_model_dir)
    test = read_split(trained_model_dir.parent / "pre" / "output" / "test")
    assert set(evaluate_model(model, test)["diagnosa"]["slices"]) == {"orphan", "common"}
    assert Schema.from_dict(model.metadata["schema"]).group_column == "disease_id"
