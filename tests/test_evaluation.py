"""Evaluation metrics, the recall gate and the written report, checked against hand-computed numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from diagnosa.labels import CATEGORIES
from processing.metrics import evaluate, recall_gate, write_report

ABC = ["A", "B", "C"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def peaked(pred: list[int], k: int, high: float = 0.8) -> np.ndarray:
    """Probabilities with ``high`` on the predicted index and the rest spread evenly."""
    p = np.full((len(pred), k), (1 - high) / (k - 1))
    p[np.arange(len(pred)), pred] = high
    return p


# Hand-worked case. Rows = true, cols = predicted:
#        A  B  C
#   A    2  1  0
#   B    0  1  1
#   C    1  0  2
Y_SMALL = ["A", "A", "A", "B", "B", "C", "C", "C"]
PRED_SMALL = [0, 0, 1, 1, 2, 2, 2, 0]


@pytest.fixture()
def small() -> dict:
    return evaluate(Y_SMALL, peaked(PRED_SMALL, 3), ABC)


def test_hand_computed_confusion_precision_recall_specificity(small):
    d = small["diagnosa"]
    assert d["confusion_matrix"]["counts"] == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert d["confusion_matrix"]["labels"] == ABC
    assert d["confusion_matrix"]["row_normalised"][1] == pytest.approx([0, 0.5, 0.5])
    # A: TP 2, FP 1 (a C), FN 1, TN 4.  B: TP 1, FP 1, FN 1, TN 5.  C: TP 2, FP 1, FN 1, TN 4.
    expected = {"A": (2 / 3, 2 / 3, 4 / 5), "B": (1 / 2, 1 / 2, 5 / 6), "C": (2 / 3, 2 / 3, 4 / 5)}
    for label, (precision, recall, specificity) in expected.items():
        c = d["per_class"][label]
        assert c["precision"] == pytest.approx(precision)
        assert c["recall"] == pytest.approx(recall)
        assert c["specificity"] == pytest.approx(specificity)
        assert c["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert d["support"] == {"A": 3, "B": 2, "C": 3}
    assert d["n"] == 8 and d["accuracy"] == pytest.approx(5 / 8)
    assert d["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert d["macro"]["recall"] == pytest.approx(d["balanced_accuracy"])
    assert d["weighted"]["recall"] == pytest.approx(5 / 8)
    assert d["worst_class_recall"] == {"label": "B", "recall": pytest.approx(0.5)}
    # C -> A is two classes apart: |errors| = 1 + 1 + 2 over 8 samples.
    assert d["ordinal"]["mae"] == pytest.approx(4 / 8)
    assert d["ordinal"]["mse"] == pytest.approx(6 / 8)
    # True class gets 0.8 when right (5 rows) and 0.1 when wrong (3 rows).
    assert d["log_loss"] == pytest.approx(-(5 * math.log(0.8) + 3 * math.log(0.1)) / 8)
    assert d["slices"] == {}


def test_average_precision_uses_class_probability_column():
    # Column 1 ranks the two B samples first -> perfect AP for B even though argmax never picks B.
    proba = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1], [0.95, 0.05]])
    d = evaluate(["B", "B", "A", "A"], proba, ["A", "B"])["diagnosa"]
    assert d["per_class"]["B"]["average_precision"] == pytest.approx(1.0)
    assert d["per_class"]["B"]["recall"] == 0.0
    assert d["per_class"]["B"]["precision"] is None  # never predicted
    assert d["macro"]["precision"] == pytest.approx(0.25)  # never-predicted present class counts as 0


def test_perfect_predictions():
    labels = list(CATEGORIES)
    y = [labels[i % 5] for i in range(20)]
    proba = np.eye(5)[[i % 5 for i in range(20)]]
    d = evaluate(y, proba, labels)["diagnosa"]
    assert all(d["per_class"][lb]["recall"] == 1.0 for lb in labels)
    assert d["accuracy"] == 1.0 and d["balanced_accuracy"] == 1.0
    assert d["ordinal"] == {"mse": 0.0, "mae": 0.0}
    assert 0 <= d["log_loss"] < 1e-6
    assert d["confusion_matrix"]["counts"] == (np.eye(5, dtype=int) * 4).tolist()


def test_ordinal_mae_counts_index_distance():
    labels = list(CATEGORIES)
    y = [labels[0], labels[0], labels[4], labels[2]]
    pred = [2, 0, 4, 4]  # distances 2, 0, 0, 2
    d = evaluate(y, peaked(pred, 5), labels)["diagnosa"]
    assert d["ordinal"]["mae"] == pytest.approx(1.0)
    assert d["ordinal"]["mse"] == pytest.approx(2.0)


def test_labels_without_an_order_get_no_ordinal_error(tmp_path):
    # A dataset config's `ordinal = false` (substances, tissue types): the report said "order: alcohol < cocaína <
    # heroína" with an MAE in label-index units, a distance that means nothing between such labels.
    labels = ["alcohol", "cocaína", "heroína"]
    y = [labels[0], labels[2], labels[1], labels[2]]
    d = evaluate(y, peaked([2, 2, 0, 2], 3), labels, ordinal=False)["diagnosa"]
    assert "ordinal" not in d and d["macro"]["recall"] == pytest.approx(1 / 3)
    report = Path(write_report({"diagnosa": d}, tmp_path)["report"]).read_text(encoding="utf-8")
    assert "Ordinal" not in report and " < " not in report and "Labels not ordered" in report
    ordered = evaluate(y, peaked([2, 2, 0, 2], 3), labels)["diagnosa"]
    report = Path(write_report({"diagnosa": ordered}, tmp_path / "ordered")["report"]).read_text(encoding="utf-8")
    assert ordered["ordinal"]["mae"] == pytest.approx(0.75) and "order: alcohol < cocaína < heroína" in report


def test_slices_use_the_right_subsets():
    orphan = np.array([True, False, False, False, False, True, False, False])
    s = evaluate(Y_SMALL, peaked(PRED_SMALL, 3), ABC, orphan=orphan)["diagnosa"]["slices"]
    # Orphan rows 0 (A->A) and 5 (C->C): no B in the slice.
    assert s["orphan"] == {"n": 2, "recall_per_class": {"A": 1.0, "B": None, "C": 1.0},
                           "macro_recall": 1.0, "accuracy": 1.0}
    # Common rows: A->A, A->B, B->B, B->C, C->C, C->A.
    assert s["common"]["n"] == 6
    assert s["common"]["recall_per_class"] == pytest.approx({"A": 0.5, "B": 0.5, "C": 0.5})
    assert s["common"]["macro_recall"] == pytest.approx(0.5)
    assert s["common"]["accuracy"] == pytest.approx(0.5)


def test_empty_slice_is_none_not_nan():
    s = evaluate(Y_SMALL, peaked(PRED_SMALL, 3), ABC, orphan=np.zeros(8, dtype=bool))["diagnosa"]["slices"]
    assert s["orphan"]["n"] == 0 and s["orphan"]["macro_recall"] is None and s["orphan"]["accuracy"] is None
    assert s["common"]["n"] == 8


def test_class_without_support_is_none_and_json_is_strict():
    result = evaluate(["A", "A", "B", "B"], peaked([0, 1, 1, 1], 3), ABC)
    c = result["diagnosa"]["per_class"]["C"]
    assert c["support"] == 0
    assert c["recall"] is None and c["precision"] is None and c["average_precision"] is None
    assert result["diagnosa"]["worst_class_recall"] == {"label": "A", "recall": 0.5}
    assert result["diagnosa"]["confusion_matrix"]["row_normalised"][2] == [0.0, 0.0, 0.0]
    text = json.dumps(result, allow_nan=False)
    assert "NaN" not in text.replace('"standard_deviation": "NaN"', "")
    assert json.loads(text) == result  # only plain JSON types


def test_sagemaker_section_layout():
    m = evaluate(Y_SMALL, peaked(PRED_SMALL, 3), ABC)["multiclass_classification_metrics"]
    metrics = ["accuracy", "weighted_recall", "weighted_precision", "weighted_f0_5", "weighted_f1", "weighted_f2"]
    assert set(m) == {*metrics, *(f"{x}_best_constant_classifier" for x in metrics), "confusion_matrix"}
    for key, value in m.items():
        if key != "confusion_matrix":
            assert set(value) == {"value", "standard_deviation"} and value["standard_deviation"] == "NaN"
            assert isinstance(value["value"], float)
    assert m["confusion_matrix"] == {"A": {"A": 2, "B": 1, "C": 0}, "B": {"A": 0, "B": 1, "C": 1},
                                     "C": {"A": 1, "B": 0, "C": 2}}
    assert m["accuracy"]["value"] == pytest.approx(5 / 8)
    assert m["weighted_recall"]["value"] == pytest.approx(5 / 8)
    assert m["weighted_precision"]["value"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 3 * 2 / 3) / 8)


def test_best_constant_classifier_is_majority_share():
    y = ["B"] * 6 + ["A"] * 3 + ["C"]
    m = evaluate(y, peaked([0] * 10, 3), ABC)["multiclass_classification_metrics"]
    assert m["accuracy_best_constant_classifier"]["value"] == pytest.approx(0.6)
    assert m["weighted_recall_best_constant_classifier"]["value"] == pytest.approx(0.6)
    # Only B is predicted: its precision is 0.6, weighted by B's share 0.6; other classes count 0.
    assert m["weighted_precision_best_constant_classifier"]["value"] == pytest.approx(0.36)
    assert m["accuracy"]["value"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("y", "proba", "kwargs", "message"),
    [
        ([], np.empty((0, 3)), {}, "empty"),
        (["A", "B"], np.full((2, 2), 0.5), {}, "shape"),
        (["A", "B"], np.full((3, 3), 1 / 3), {}, "shape"),
        (["A", "Z"], np.full((2, 3), 1 / 3), {}, "'Z'"),
        (["A", "B"], np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), {}, "NaN"),
        (["A", "B"], np.array([[-0.1, 0.6, 0.5], [0.2, 0.3, 0.5]]), {}, "negative"),
        (["A", "B"], np.array([[0.2, 0.2, 0.2], [0.2, 0.3, 0.5]]), {}, "sum to 1"),
        (["A", "B"], np.full((2, 3), 1 / 3), {"orphan": np.array([True, False, True])}, "orphan"),
    ],
)
def test_invalid_input_raises(y, proba, kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate(y, proba, ABC, **kwargs)


def test_row_sum_within_tolerance_is_accepted():
    proba = np.array([[0.5004, 0.25, 0.25], [0.2, 0.3, 0.5]])
    assert evaluate(["A", "C"], proba, ABC)["diagnosa"]["accuracy"] == 1.0


def test_recall_gate_pass_and_fail():
    ev = evaluate(Y_SMALL, peaked(PRED_SMALL, 3), ABC, orphan=np.array([1, 0, 0, 0, 0, 1, 0, 0]))
    assert recall_gate(ev, {"A": 0.6, "B": 0.5, "C": 0.0}, orphan_threshold=0.9) == []
    failures = recall_gate(ev, {"A": 0.6, "B": 0.8}, orphan_threshold=0.9)
    assert failures == [{"check": "recall[B]", "value": 0.5, "threshold": 0.8, "shortfall": pytest.approx(0.3)}]


def test_recall_gate_orphan_and_undefined_recall_fail():
    ev = evaluate(["A", "A", "B", "B"], peaked([0, 0, 0, 1], 3), ABC,
                  orphan=np.array([True, True, False, False]))
    failures = {f["check"]: f for f in recall_gate(ev, {"C": 0.5}, orphan_threshold=1.0)}
    assert failures["recall[C]"] == {"check": "recall[C]", "value": None, "threshold": 0.5, "shortfall": 0.5}
    assert "orphan_macro_recall" not in failures  # orphan rows are A, A, both found
    failures = recall_gate(evaluate(["A", "B"], peaked([0, 0], 3), ABC, orphan=np.array([False, True])),
                           {}, orphan_threshold=0.7)
    assert failures == [{"check": "orphan_macro_recall", "value": 0.0, "threshold": 0.7,
                         "shortfall": pytest.approx(0.7)}]
    no_slices = evaluate(["A", "B"], peaked([0, 1], 3), ABC)
    assert recall_gate(no_slices, {}, orphan_threshold=0.5)[0]["value"] is None


def test_recall_gate_unknown_label():
    with pytest.raises(ValueError, match="ENFERMEDAD RARA"):
        recall_gate(evaluate(Y_SMALL, peaked(PRED_SMALL, 3), ABC), {"ENFERMEDAD RARA": 0.5})


@pytest.mark.parametrize("with_slices", [True, False])
def test_write_report(tmp_path, with_slices):
    rng = np.random.default_rng(0)
    labels = list(CATEGORIES)
    y_idx = rng.integers(0, 5, size=200)
    proba = rng.dirichlet(np.ones(5), size=200)
    proba[np.arange(200), y_idx] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    orphan = rng.random(200) < 0.1 if with_slices else None
    ev = evaluate([labels[i] for i in y_idx], proba, labels, orphan=orphan)

    paths = write_report(ev, tmp_path / "out", title="Prueba")
    assert set(paths) == {"report", "confusion_matrix", "per_class_recall"}
    for key in ("confusion_matrix", "per_class_recall"):
        data = Path(paths[key]).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    report = Path(paths["report"]).read_text(encoding="utf-8")
    assert report.startswith("# Prueba")
    for label in labels:
        assert label in report
    assert "](confusion_matrix.png)" in report and "](per_class_recall.png)" in report
    assert ("| orphan | common |" in report) == with_slices
    assert f"{ev['diagnosa']['log_loss']:.4f}" in report


def test_unseen_groups_get_their_own_sub_slices_and_gate():
    labels = ["a", "b"]
    y = ["a", "b", "a", "b", "a", "b"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2], [0.1, 0.9]])
    in_slice = np.array([True, True, True, True, False, False])
    unseen = np.array([False, False, True, True, False, False])  # rows 2-3: groups never in training, both missed
    result = evaluate(y, proba, labels, orphan=in_slice, unseen=unseen)
    slices = result["diagnosa"]["slices"]
    assert list(slices) == ["orphan", "common", "orphan_seen", "orphan_unseen"]
    assert slices["orphan_seen"]["macro_recall"] == 1.0 and slices["orphan_unseen"]["macro_recall"] == 0.0
    assert slices["orphan"]["macro_recall"] == 0.5 and slices["orphan_unseen"]["n"] == 2
    failed = recall_gate(result, {}, slice_thresholds={"orphan_unseen": 0.4})
    assert [f["check"] for f in failed] == ["orphan_unseen_macro_recall"]
    assert recall_gate(result, {}, slice_thresholds={"orphan_seen": 0.9}) == []
    with pytest.raises(ValueError, match="subset of the slice"):
        evaluate(y, proba, labels, orphan=in_slice, unseen=np.array([False] * 5 + [True]))


def test_the_pipelines_recall_thresholds_name_each_label_in_ascii():
    # One JSON argument of every label's threshold outgrew SageMaker's 256 characters per container argument: the
    # pipeline passes --recall-threshold=<label as its parameter spells it>=<value>, one per label.
    from processing.evaluate import main, recall_thresholds

    labels = ["NO ENFERMO", "ENFERMEDAD CRÓNICA", "grave crónica", "肺"]
    assert recall_thresholds(labels, [("EnfermedadCronica", 0.7), ("GraveCronica", 0.3), ("U80ba", 0.5)]) == {
        "ENFERMEDAD CRÓNICA": 0.7, "grave crónica": 0.3, "肺": 0.5}
    with pytest.raises(ValueError, match="--recall-threshold names no label of the model: Cronica \\(its labels are "
                                         "NoEnfermo \\(NO ENFERMO\\), EnfermedadCronica \\(ENFERMEDAD CRÓNICA\\)"):
        recall_thresholds(labels, [("Cronica", 0.7)])
    with pytest.raises(SystemExit):  # argparse's usage error: no number
        main(["--base-dir", "/nonexistent", "--recall-threshold=NoEnfermo=high"])
