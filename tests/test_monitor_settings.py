"""The monitor's thresholds from a prediction baseline (monitoring/run.py ``settings_from_baseline``): a hand-edited or
odd prediction_baseline.json is refused naming the key and what it expected, by the command (exit 2, no traceback) and
by the processing job (its failure file); explicit values, a 0 included, are kept."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import pytest

from diagnosa.data.schema import Schema
from diagnosa.labels import CATEGORIES
from diagnosa.lake import DataLake
from monitoring.run import settings_from_baseline
from processing.baseline import load_baseline, write_data_baseline, write_json

LABELS = list(CATEGORIES)


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, curated_cohort):
    """The cohort's data baseline and a prediction baseline of the five labels, as the pipeline lays them out."""
    frame, manifest = curated_cohort
    folder = tmp_path_factory.mktemp("baseline")
    write_data_baseline(frame, Schema.from_dict(manifest["schema"]), folder)
    write_json(folder / "prediction_baseline.json", {
        "version": 1, "model_version": None, "labels": LABELS, "n": 100,
        "predicted_distribution": {label: 20 for label in LABELS}, "predicted_share": {label: 0.2 for label in LABELS},
        "per_class": {label: {"recall": 0.9, "precision": 0.9, "support": 20} for label in LABELS},
        "orphan": {"n": 10, "macro_recall": 0.6, "recall_per_class": {}, "trained_groups": ["ORPHA:558", "OMIM:100100"]},
        "thresholds": {"recall": {label: 0.7 for label in LABELS}, "orphan_macro_recall": 0.5,
                       "unseen_macro_recall": 0.4}})
    return folder


@pytest.fixture(scope="module")
def baseline(baseline_dir):
    return load_baseline([baseline_dir])


def edited(baseline, **changes):
    """The baseline with its prediction baseline's top-level keys (``orphan``) or thresholds (``thresholds__x``)
    replaced."""
    predictions = json.loads(json.dumps(baseline.predictions))
    for key, value in changes.items():
        if key.startswith("thresholds__"):
            predictions["thresholds"][key.removeprefix("thresholds__")] = value
        elif key.startswith("orphan__"):
            predictions["orphan"][key.removeprefix("orphan__")] = value
        else:
            predictions[key] = value
    return replace(baseline, predictions=predictions)


@pytest.mark.parametrize("changes, message", [
    ({"orphan": ["ORPHA:558"]}, "'orphan' must be an object (or null), got list [\"ORPHA:558\"]"),
    ({"orphan": "yes"}, "'orphan' must be an object (or null), got str \"yes\""),
    ({"thresholds": [0.8]}, "'thresholds' must be an object (or null), got list [0.8]"),
    ({"thresholds__recall": [0.8]}, "'thresholds.recall' must be an object (or null), got list [0.8]"),
    ({"orphan__trained_groups": "ORPHA:558"}, "'orphan.trained_groups' must be a list of non-empty texts, got str"),
    ({"orphan__trained_groups": {"ORPHA:558": 3}}, "'orphan.trained_groups' must be a list of non-empty texts, got dict"),
    ({"orphan__trained_groups": ["ORPHA:558", None]}, "'orphan.trained_groups' must be a list of non-empty texts, "
                                                      "got the entry null"),
    ({"orphan__trained_groups": [558]}, "got the entry 558"),
    ({"orphan__trained_groups": [["ORPHA:1"]]}, "got the entry [\"ORPHA:1\"]"),
    ({"labels": "NO ENFERMO"}, "'labels' must be a list of non-empty texts, got str"),
])
def test_a_malformed_prediction_baseline_is_a_value_error_naming_the_key(baseline, changes, message):
    # An AttributeError or TypeError escaped the command's and the job's handling (both catch ValueError), and a
    # null or a number among the trained diseases became the disease 'None' or '558'.
    with pytest.raises(ValueError, match=re.escape(message)):
        settings_from_baseline(edited(baseline, **changes)).validate()


def test_explicit_thresholds_are_kept_a_zero_included(baseline):
    quality = settings_from_baseline(baseline).quality
    assert (quality.orphan_macro_recall, quality.unseen_macro_recall) == (0.5, 0.4)
    assert quality.recall == {label: 0.7 for label in LABELS}
    assert quality.trained_groups == frozenset({"ORPHA:558", "OMIM:100100"})
    # 0 disables the orphan slice's alert as it does the unseen one's (an `or` made it the default 0.5).
    quality = settings_from_baseline(edited(baseline, thresholds__orphan_macro_recall=0.0)).quality
    assert quality.orphan_macro_recall == 0.0
    # Without per-class thresholds the orphan one still holds (it was ignored).
    quality = settings_from_baseline(edited(baseline, thresholds__recall={}, thresholds__orphan_macro_recall=0.7)).quality
    assert quality.orphan_macro_recall == 0.7 and quality.recall == {label: 0.8 for label in LABELS}
    # Absent or null pieces are a baseline written before them: the defaults, the unseen slice not known.
    quality = settings_from_baseline(edited(baseline, thresholds=None, orphan__trained_groups=None)).quality
    assert (quality.orphan_macro_recall, quality.trained_groups) == (0.5, None) and quality.orphan_slice
    assert not settings_from_baseline(edited(baseline, orphan=None)).quality.orphan_slice


def test_the_command_and_the_job_name_a_malformed_baseline(tmp_path, baseline_dir, capsys):
    from diagnosa.cli import main
    from monitoring import job

    folder = tmp_path / "baseline"
    shutil.copytree(baseline_dir, folder)
    predictions = json.loads((folder / "prediction_baseline.json").read_text())
    predictions["orphan"] = ["ORPHA:558"]
    (folder / "prediction_baseline.json").write_text(json.dumps(predictions))
    said = "'orphan' must be an object (or null), got list"
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(folder),
                 "--out", str(tmp_path / "out")]) == 2
    assert said in capsys.readouterr().err
    base = tmp_path / "job"
    shutil.copytree(folder, base / "input" / "baseline")
    assert job.main(["--base-dir", str(base)]) == 1
    assert said in (base / "output" / "failure").read_text()
