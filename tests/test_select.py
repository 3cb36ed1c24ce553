"""Champion selection: the ranking rule, and the processing job over SageMaker-style model tarballs."""
from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from diagnosa.model import METADATA_FILE, MODEL_FILE, DiagnosaModel
from processing.select import RULE, SELECTION, main, select_champion, selection_families

LABELS = ["low", "mid", "high"]


def cand(name: str, macro: float, worst: float, label: str = "high") -> dict[str, Any]:
    return {"name": name, "validation": {"macro_recall": macro, "worst_class_recall": {"label": label, "recall": worst}}}


# ------------------------------------------------------------------------------------------------
# The rule


def test_ranking_by_macro_recall():
    result = select_champion([cand("a", 0.70, 0.6), cand("b", 0.82, 0.5), cand("c", 0.75, 0.7)])
    assert result["champion"] == "b"
    assert [r["name"] for r in result["ranking"]] == ["b", "c", "a"]
    assert result["ranking"][0] == {"name": "b", "macro_recall": 0.82,
                                    "worst_class_recall": {"label": "high", "recall": 0.5}}
    assert result["rule"] == RULE and "macro recall" in RULE


def test_tie_broken_by_worst_class_then_name():
    tied = 0.8
    result = select_champion([cand("zeta", tied, 0.55), cand("alpha", tied + 1e-12, 0.50),
                              cand("beta", tied, 0.55), cand("low", 0.79, 0.9)])
    # alpha's macro recall is higher only by 1e-12 (a tie), and its worst class is worse
    assert [r["name"] for r in result["ranking"]] == ["beta", "zeta", "alpha", "low"]
    assert result["champion"] == "beta"


def test_a_real_difference_beats_a_better_worst_class():
    result = select_champion([cand("a", 0.80, 0.9), cand("b", 0.80 + 1e-6, 0.1)])
    assert result["champion"] == "b"


def test_order_of_candidates_does_not_matter():
    pool = [cand("x", 0.8, 0.5), cand("y", 0.8, 0.5), cand("z", 0.8, 0.6), cand("w", 0.7, 0.9)]
    expected = select_champion(pool)["ranking"]
    assert select_champion(pool[::-1])["ranking"] == expected
    assert [r["name"] for r in expected] == ["z", "x", "y", "w"]


@pytest.mark.parametrize(("candidates", "message"), [
    ([], "no candidates"),
    ([{"name": "a"}], "candidate 'a' has no validation metrics"),
    ([{"name": "a", "validation": {"worst_class_recall": {"label": "x", "recall": 0.5}}}],
     "candidate 'a' has no validation metric macro_recall"),
    ([{"name": "a", "validation": {"macro_recall": 0.5}}], "no validation metric worst_class_recall.recall"),
    ([cand("a", float("nan"), 0.5)], "must be a finite number"),
    ([cand("a", 0.5, 0.5), cand("a", 0.6, 0.5)], "appears twice"),
])
def test_bad_candidates(candidates, message):
    with pytest.raises(ValueError, match=message):
        select_champion(candidates)


# ------------------------------------------------------------------------------------------------
# The processing job


def saved_model(folder: Path, macro: float, worst: float, family: str = "logistic_regression",
                fingerprint: str = "fp1") -> Path:
    """A real DiagnosaModel saved the way training saves it, with validation metrics in its metadata."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    y = np.arange(60) % 3
    pipeline = Pipeline([("features", StandardScaler()), ("classifier", LogisticRegression())]).fit(frame, y)
    meta = {"family": family, "hyperparameters": {"C": 1.0}, "seed": 0,
            "fingerprint": {"preprocess": fingerprint, "train_npz_sha256": "0" * 64},
            "validation": {"macro_recall": macro, "worst_class_recall": {"label": "high", "recall": worst}}}
    DiagnosaModel(pipeline, LABELS, meta).save(folder)
    return folder


def tar_model(model_dir: Path, tarball: Path, *, skip: str | None = None) -> Path:
    """SageMaker's model.tar.gz: the model dir's files at the archive root."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            if path.name != skip:
                tar.add(path, arcname=path.name)
    return tarball


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    root = tmp_path / "processing"
    (root / "input" / "candidates").mkdir(parents=True)
    return root


def add_tar_candidate(base: Path, tmp_path: Path, name: str, macro: float, worst: float, *,
                      skip: str | None = None, **kwargs: Any) -> Path:
    model_dir = saved_model(tmp_path / "models" / name, macro, worst, **kwargs)
    return tar_model(model_dir, base / "input" / "candidates" / name / "model.tar.gz", skip=skip)


def test_main_end_to_end_over_tarballs(base, tmp_path):
    add_tar_candidate(base, tmp_path, "logreg", 0.71, 0.40)
    champion_tar = add_tar_candidate(base, tmp_path, "xgb", 0.83, 0.66, family="xgboost")
    assert main(["--base-dir", str(base)]) == 0

    copied = base / "output" / "champion" / "model.tar.gz"
    assert copied.read_bytes() == champion_tar.read_bytes()  # copied intact, not rebuilt
    extracted = tmp_path / "extracted"
    with tarfile.open(copied) as tar:
        tar.extractall(extracted, filter="data")
    model = DiagnosaModel.load(extracted)
    assert model.metadata["family"] == "xgboost"
    assert model.predict_proba(pd.DataFrame({"a": [0.1], "b": [-0.2]})).shape == (1, 3)

    selection = json.loads((base / "output" / "selection" / "selection.json").read_text(encoding="utf-8"))
    assert selection["champion"] == "xgb"
    assert selection["rule"] == RULE
    assert selection["ranking"] == [
        {"name": "xgb", "macro_recall": 0.83, "worst_class_recall": {"label": "high", "recall": 0.66}},
        {"name": "logreg", "macro_recall": 0.71, "worst_class_recall": {"label": "high", "recall": 0.40}},
    ]
    assert selection["candidates"]["logreg"]["family"] == "logistic_regression"
    assert selection["candidates"]["xgb"]["source"] == "tarball"
    assert selection["fingerprint"]["preprocess"] == "fp1"
    # What a local retraining trains again (diagnosa.services.LocalWorkspace.served_families), read back from the file.
    assert sorted(selection_families(selection)) == ["logistic_regression", "xgboost"]
    assert json.loads((base / "output" / SELECTION).read_text(encoding="utf-8")) == selection  # where it is read


@pytest.mark.parametrize("selection", [None, [], {}, {"candidates": {}}, {"candidates": []},
                                       {"candidates": {"a": {"family": 3}}}, {"candidates": {"a": "xgboost"}}])
def test_a_selection_that_does_not_say_its_families_gives_none(selection):
    assert selection_families(selection) is None


def test_extracted_model_dir_champion_is_tarred_at_root(base, tmp_path):
    add_tar_candidate(base, tmp_path, "weak", 0.5, 0.2)
    saved_model(base / "input" / "candidates" / "strong", 0.9, 0.8)
    assert main(["--base-dir", str(base)]) == 0
    with tarfile.open(base / "output" / "champion" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == [METADATA_FILE, MODEL_FILE]
        meta = json.load(tar.extractfile(METADATA_FILE))
    assert meta["validation"]["macro_recall"] == 0.9


def test_a_second_run_into_the_same_outputs_is_refused_and_leaves_them(base, tmp_path, caplog):
    # Every other job refuses a non-empty output folder; Select overwrote the champion another run had written.
    add_tar_candidate(base, tmp_path, "logreg", 0.71, 0.40)
    assert main(["--base-dir", str(base)]) == 0
    written = {p: p.read_bytes() for p in (base / "output").rglob("*") if p.is_file()}
    add_tar_candidate(base, tmp_path, "xgb", 0.93, 0.86, family="xgboost")
    with caplog.at_level(logging.ERROR, logger="processing.select"):
        assert main(["--base-dir", str(base)]) == 1
    assert "output folder" in caplog.text and "is not empty: refusing to overwrite another run's outputs" in caplog.text
    assert {p: p.read_bytes() for p in (base / "output").rglob("*") if p.is_file() and p.name != "failure"} == written
    assert json.loads((base / "output" / "selection" / "selection.json").read_text())["champion"] == "logreg"


def _fails(base: Path, caplog: pytest.LogCaptureFixture, fragment: str) -> None:
    with caplog.at_level(logging.ERROR, logger="processing.select"):
        assert main(["--base-dir", str(base)]) == 1
    assert fragment in caplog.text
    assert not (base / "output" / "champion" / "model.tar.gz").exists()
    assert not (base / "output" / "selection" / "selection.json").exists()


def test_no_candidates(base, caplog):
    _fails(base, caplog, "no candidates found")


def test_missing_candidates_dir(tmp_path, caplog):
    _fails(tmp_path / "nothing", caplog, "does not exist")


def test_tarball_without_metadata(base, tmp_path, caplog):
    add_tar_candidate(base, tmp_path, "good", 0.8, 0.5)
    add_tar_candidate(base, tmp_path, "broken", 0.9, 0.5, skip=METADATA_FILE)
    _fails(base, caplog, "has no metadata.json at its root")


def test_candidate_without_validation_metrics(base, tmp_path, caplog):
    folder = saved_model(tmp_path / "models" / "old", 0.8, 0.5)
    meta = json.loads((folder / METADATA_FILE).read_text())
    del meta["validation"]
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    tar_model(folder, base / "input" / "candidates" / "old" / "model.tar.gz")
    _fails(base, caplog, "candidate 'old' has no validation metrics")


def test_candidates_trained_on_different_data_are_refused(base, tmp_path, caplog):
    add_tar_candidate(base, tmp_path, "a", 0.8, 0.5, fingerprint="fp1")
    add_tar_candidate(base, tmp_path, "b", 0.9, 0.5, fingerprint="fp2")
    _fails(base, caplog, "preprocessing fingerprint differ")


def test_empty_candidate_folder(base, caplog):
    (base / "input" / "candidates" / "ghost").mkdir()
    _fails(base, caplog, "candidate 'ghost'")


def test_not_a_tarball(base, caplog):
    folder = base / "input" / "candidates" / "junk"
    folder.mkdir()
    (folder / "model.tar.gz").write_bytes(b"not a tarball")
    _fails(base, caplog, "not a readable gzip tar")
