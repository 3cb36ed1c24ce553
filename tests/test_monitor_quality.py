"""Live recall from feedback: counts, the significance rule, and the orphan slice."""
from __future__ import annotations

import pandas as pd
import pytest

from monitoring.quality import BELOW, FEW, NOT_MONITORED, PASSED, SUSPECT, QualityThresholds, live_quality


def joined(rows):
    return pd.DataFrame(rows, columns=["event_id", "predicted", "confirmed", "orphan"])


def test_a_class_fails_only_beyond_sampling_noise():
    rows = [(f"a{i}", "NO ENFERMO" if i < 10 else "ENFERMEDAD LEVE", "NO ENFERMO", None) for i in range(40)]
    rows += [(f"b{i}", "ENFERMEDAD AGUDA" if i < 7 else "NO ENFERMO", "ENFERMEDAD AGUDA", None) for i in range(10)]
    rows += [(f"c{i}", "ENFERMEDAD LEVE", "ENFERMEDAD TERMINAL", True) for i in range(6)]
    q = live_quality(joined(rows), QualityThresholds())
    assert q["per_class"]["NO ENFERMO"]["recall"] == 0.25 and q["per_class"]["NO ENFERMO"]["status"] == BELOW
    assert q["per_class"]["ENFERMEDAD AGUDA"]["status"] == SUSPECT  # 0.70 on 10 cases: could still be 0.80
    assert q["failing_classes"] == ["NO ENFERMO", "ENFERMEDAD TERMINAL"]
    assert q["suspect_classes"] == ["ENFERMEDAD AGUDA"]
    assert q["orphan"]["n"] == 6 and q["orphan"]["macro_recall"] == 0.0 and q["orphan"]["status"] == BELOW
    q = live_quality(joined(rows), QualityThresholds(min_feedback=20))
    assert q["per_class"]["ENFERMEDAD TERMINAL"]["status"] == FEW and q["orphan"]["status"] == FEW


@pytest.mark.parametrize("min_feedback, judged", [(6, True), (7, False)])
def test_a_class_with_exactly_min_feedback_cases_is_judged(min_feedback, judged):
    # "fails once it has at least min_feedback confirmed cases": with one case more asked, the alert that starts a
    # retraining waits for the next confirmed case of a rare class, which can be weeks.
    rows = [(f"a{i}", "NO ENFERMO", "NO ENFERMO", None) for i in range(30)]
    rows += [(f"t{i}", "ENFERMEDAD LEVE", "ENFERMEDAD TERMINAL", True) for i in range(6)]  # six cases, all missed
    q = live_quality(joined(rows), QualityThresholds(min_feedback=min_feedback))
    assert q["per_class"]["ENFERMEDAD TERMINAL"]["status"] == (BELOW if judged else FEW)
    assert q["orphan"]["n"] == 6 and q["orphan"]["status"] == (BELOW if judged else FEW)
    assert q["failing_classes"] == (["ENFERMEDAD TERMINAL"] if judged else [])


def test_feedback_on_orphan_diseases_absent_from_training_is_judged_on_its_own():
    # Live monitoring had no unseen slice: the gate holds a model to UnseenOrphanRecallThreshold on the orphan
    # diseases its split kept out of training, and nothing watched those patients once it served.
    rows = [(f"s{i}", "ENFERMEDAD TERMINAL", "ENFERMEDAD TERMINAL", True, "ORPHA:558") for i in range(6)]
    rows += [("s6", "ENFERMEDAD TERMINAL", "ENFERMEDAD TERMINAL", True, "orpha:558")]  # the prefix's case is no matter
    rows += [(f"u{i}", "ENFERMEDAD LEVE", "ENFERMEDAD TERMINAL", True, "OMIM:999999") for i in range(6)]
    rows += [(f"c{i}", "NO ENFERMO", "NO ENFERMO", None, None) for i in range(10)]
    frame = pd.DataFrame(rows, columns=["event_id", "predicted", "confirmed", "orphan", "disease_id"])
    q = live_quality(frame, QualityThresholds(trained_groups=frozenset({"ORPHA:558", "OMIM:100100"})))
    assert q["orphan"]["n"] == 13 and q["orphan"]["macro_recall"] == 7 / 13 and q["orphan"]["status"] == PASSED
    unseen = q["orphan_unseen"]
    assert (unseen["n"], unseen["macro_recall"], unseen["threshold"], unseen["status"]) == (6, 0.0, 0.40, BELOW)
    assert unseen["recall_per_class"] == {"ENFERMEDAD TERMINAL": {"n": 6, "recall": 0.0}}
    assert q["orphan_unseen_failing"] and not q["orphan_failing"]
    # Which diseases the model trained on is not known (a baseline from before they were listed): not judged.
    q = live_quality(frame, QualityThresholds())
    assert q["orphan_unseen"]["status"] == NOT_MONITORED and not q["orphan_unseen_failing"]
    # No orphan slice at all (a dataset of your own): neither is judged.
    q = live_quality(frame, QualityThresholds(orphan_slice=False, trained_groups=frozenset({"ORPHA:558"})))
    assert q["orphan"]["status"] == q["orphan_unseen"]["status"] == NOT_MONITORED


@pytest.mark.parametrize("thresholds, message", [
    ({"unseen_macro_recall": "0.4"}, "unseen orphan must be a number in \\[0, 1\\], got '0.4'"),
    ({"unseen_macro_recall": 1.5}, "unseen orphan must be a number in \\[0, 1\\], got 1.5"),
    ({"orphan_macro_recall": True}, "orphan must be a number"),
    ({"recall": {"NO ENFERMO": None}}, "NO ENFERMO must be a number")])
def test_thresholds_from_a_hand_edited_baseline_are_named_when_wrong(thresholds, message):
    # A text threshold (a hand-edited prediction_baseline.json) ended in a TypeError traceback.
    with pytest.raises(ValueError, match=message):
        QualityThresholds(**thresholds).validate()


def test_a_slices_macro_recall_is_judged_by_an_interval_of_its_own():
    # The pooled (micro) interval stood in for the macro recall's: one large class found right hid two classes all
    # missed, "not significant" at any n.
    from monitoring.quality import macro_interval
    from processing.calibration import wilson_interval

    def slice_of(found: int, missed: int) -> pd.DataFrame:
        rows = [(f"c{i}", "ENFERMEDAD CRÓNICA", "ENFERMEDAD CRÓNICA", True, "ORPHA:99") for i in range(found)]
        rows += [(f"{label[11]}{i}", "ENFERMEDAD LEVE", label, True, "ORPHA:99")
                 for label in ("ENFERMEDAD TERMINAL", "ENFERMEDAD AGUDA") for i in range(missed)]
        return pd.DataFrame(rows, columns=["event_id", "predicted", "confirmed", "orphan", "disease_id"])

    th = QualityThresholds(trained_groups=frozenset({"ORPHA:558"}), orphan_macro_recall=0.4)
    q = live_quality(slice_of(950, 25), th)
    for part in ("orphan", "orphan_unseen"):
        found = q[part]
        assert found["n"] == 1000 and abs(found["macro_recall"] - 1 / 3) < 1e-12
        assert found["interval_95_micro"][0] > 0.9  # the pooled figure: what hid the shortfall
        assert found["interval_95_macro"][1] < 0.4 and found["status"] == BELOW
    assert q["orphan_unseen_failing"] and q["orphan_failing"]
    # A few cases per missed class leave the macro recall uncertain: a warning, not an alert.
    assert live_quality(slice_of(950, 3), th)["orphan_unseen"]["status"] == SUSPECT
    # The interval belongs to the macro figure: it holds it, narrows as every class gets cases, and for one class is
    # that class's Wilson interval (the per-class rule).
    wide, narrow = macro_interval([(950, 950), (0, 5), (0, 5)]), macro_interval([(950, 950), (0, 50), (0, 50)])
    assert wide[0] <= 1 / 3 <= wide[1] and narrow[0] <= 1 / 3 <= narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert macro_interval([(7, 10)]) == wilson_interval(7, 10) and macro_interval([]) is None
