"""Live recall from feedback: counts, the significance rule, and the orphan slice."""
from __future__ import annotations

import pandas as pd

from monitoring.quality import BELOW, FEW, SUSPECT, QualityThresholds, live_quality


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
