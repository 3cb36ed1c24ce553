"""Training container end to end on a tiny container layout, plus the hyperparameter tables.

The fixture mimics the preprocessing job's outputs (train.npz, validation.parquet, a fitted transformer
and preprocess.json) for a 3-feature, 5-label toy dataset with an orphan slice, so every family runs the
real ``main()`` in a second or two.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from diagnosa.data.schema import Field, Schema
from diagnosa.labels import CATEGORIES
from diagnosa.model import METADATA_FILE, MODEL_FILE, OOF_FILE, DiagnosaModel, read_oof
from training import train as train_module
from training.models import FAMILIES, PARAMS, WeightedPipeline, check_seed, make_classifier, portable, resolve_hyperparameters

LABELS = list(CATEGORIES)
FEATURES = ["heart_rate", "temperature", "crp"]
SCHEMA = Schema(
    "toy",
    (Field("patient_id", "string", role="id", required=True),
     Field("heart_rate", "number", min=20, max=250, unit="bpm"),
     Field("temperature", "number", min=30, max=45, unit="°C"),
     Field("crp", "number", min=0, max=500, unit="mg/L"),
     Field("label", "category", role="target", required=True, values=tuple(LABELS)),
     Field("is_orphan", "boolean", role="metadata", required=True)),
    tuple(LABELS), slice_column="is_orphan")
# Small settings so each family fits in about a second; defaults are checked separately.
FAST = {"random_forest": {"n_estimators": "60"}, "xgboost": {"n_estimators": "60"},
        "gradient_boosting": {"max_iter": "60"}, "svm": {"n_components": "100"}, "mlp": {},
        "logistic_regression": {}}


@pytest.fixture(autouse=True)
def _one_native_thread():
    """One OpenMP/BLAS thread. On a shared 2-core machine, spinning OpenMP barriers made an xgboost fit
    on this fixture ~400x slower (0.14 s -> 63 s) while another process kept one core busy."""
    with threadpool_limits(limits=1):
        yield


def make_frame(counts: list[int], seed: int, noise: float = 1.0) -> pd.DataFrame:
    """Rows whose three features rise with the label index; ``noise`` scales the class overlap."""
    rng = np.random.default_rng(seed)
    k = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(k)
    n = len(k)
    return pd.DataFrame({
        "patient_id": [f"P{seed}-{i:05d}" for i in range(n)],
        "heart_rate": 70 + 15 * k + rng.normal(0, 5 * noise, n),
        "temperature": 36.5 + 0.6 * k + rng.normal(0, 0.2 * noise, n),
        "crp": 5 + 20 * k + rng.normal(0, 7 * noise, n),
        "label": [LABELS[i] for i in k],
        "is_orphan": rng.random(n) < 0.15,
    })


def make_transformer() -> Pipeline:
    columns = ColumnTransformer([("num", StandardScaler(), FEATURES)], sparse_threshold=0)
    return Pipeline([("columns", columns),
                     ("float32", FunctionTransformer(np.asarray, kw_args={"dtype": np.float32}))])


def write_channels(root: Path, train: pd.DataFrame, validation: pd.DataFrame,
                   weight: np.ndarray | None = None) -> dict[str, Path]:
    """The preprocessing job's three outputs, laid out as SageMaker channels under ``root/input/data``."""
    data = root / "input" / "data"
    dirs = {name: data / name for name in ("train", "validation", "transformer")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    transformer = make_transformer().fit(train)
    X = transformer.transform(train)
    y = np.array([LABELS.index(v) for v in train["label"]], dtype=np.int64)
    w = np.ones(len(y)) if weight is None else weight
    np.savez(dirs["train"] / "train.npz", X=X, y=y, sample_weight=w)
    validation.to_parquet(dirs["validation"] / "validation.parquet", index=False)
    joblib.dump(transformer, dirs["transformer"] / "feature_pipeline.joblib")
    record = {"labels": LABELS, "schema": SCHEMA.to_dict(), "params": {"class_weight": None, "resample": "none"},
              "dataset": {"name": "toy", "version": "v1"}, "feature_names": [f"num__{f}" for f in FEATURES],
              "fingerprint": "0123abcd"}
    (dirs["transformer"] / "preprocess.json").write_text(json.dumps(record), encoding="utf-8")
    return dirs


@pytest.fixture(name="layout")
def layout_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A container filesystem under tmp_path with env vars pointing at it (defaults for the channels)."""
    dirs = write_channels(tmp_path, make_frame([120] * 5, seed=1), make_frame([40] * 5, seed=2))
    (tmp_path / "input" / "config").mkdir(parents=True)
    for key in ("SM_HPS", "SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "SM_CHANNEL_TRANSFORMER",
                "SM_OUTPUT_DATA_DIR", "SM_HOSTS", "SM_CURRENT_HOST"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SM_INPUT_DIR", str(tmp_path / "input"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.setenv("SM_OUTPUT_DIR", str(tmp_path / "output"))
    return {**dirs, "root": tmp_path, "model": tmp_path / "model", "output": tmp_path / "output",
            "config": tmp_path / "input" / "config" / "hyperparameters.json"}


def write_hps(layout: dict[str, Path], hps: dict[str, Any]) -> None:
    """As SageMaker writes them: every value a string (here JSON-encoded, like the SDK does)."""
    layout["config"].write_text(json.dumps({k: json.dumps(v) for k, v in hps.items()}), encoding="utf-8")


def model_files(layout: dict[str, Path]) -> list[str]:
    """The model dir's files, apart from the serving code it carries (code/, tests/test_artifact.py)."""
    folder = layout["model"]
    return sorted(p.name for p in folder.rglob("*") if "code" not in p.relative_to(folder).parts) \
        if folder.exists() else []


# ------------------------------------------------------------------------------------------------
# End to end, every family


@pytest.mark.parametrize("family", FAMILIES)
def test_main_end_to_end_every_family(layout, family, capsys):
    write_hps(layout, {"family": family, "seed": 3, "sagemaker_program": "train.py", **FAST[family]})
    assert train_module.main([]) == 0

    model = DiagnosaModel.load(layout["model"])
    validation = pd.read_parquet(layout["validation"] / "validation.parquet")
    proba = model.predict_proba(validation.drop(columns=["label"]))
    assert proba.shape == (len(validation), len(LABELS))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert model.pipeline.named_steps["features"].__class__.__name__ == "Pipeline"
    assert not isinstance(model.pipeline.named_steps["classifier"], WeightedPipeline)  # stock sklearn only

    meta = model.metadata
    assert meta["family"] == family and meta["seed"] == 3 and meta["labels"] == LABELS
    assert set(meta["hyperparameters"]) == set(PARAMS[family])
    for name, value in FAST[family].items():
        assert meta["hyperparameters"][name] == int(value)
    assert [f["name"] for f in meta["input_schema"]] == FEATURES
    assert meta["input_schema"][0] == {"name": "heart_rate", "type": "number", "unit": "bpm", "min": 20,
                                       "max": 250, "values": None}
    assert meta["dataset"] == {"name": "toy", "version": "v1"}
    assert meta["preprocess_params"] == {"class_weight": None, "resample": "none"}
    assert meta["fingerprint"]["preprocess"] == "0123abcd"
    assert len(meta["fingerprint"]["train_npz_sha256"]) == 64
    assert meta["train_seconds"] > 0
    v = meta["validation"]
    assert v["macro_recall"] > 0.8  # chance is 0.2; the toy classes are nearly separable
    assert set(v["per_class_recall"]) == set(LABELS)
    assert v["worst_class_recall"]["label"] in LABELS
    assert v["worst_class_recall"]["recall"] == min(v["per_class_recall"].values())
    assert v["orphan_macro_recall"] is not None and 0 <= v["orphan_macro_recall"] <= 1

    report = json.loads((layout["output"] / "data" / "validation.json").read_text(encoding="utf-8"))
    assert report["diagnosa"]["macro"]["recall"] == pytest.approx(v["macro_recall"])
    assert report["diagnosa"]["slices"]["orphan"]["n"] == int(validation["is_orphan"].sum())
    out = capsys.readouterr().out
    assert f"validation:macro_recall={v['macro_recall']:.6f}" in out
    assert f"validation:worst_class_recall={v['worst_class_recall']['recall']:.6f}" in out
    assert model_files(layout) == [METADATA_FILE, MODEL_FILE, OOF_FILE]
    # The rows the validation figures were measured on, for Select's ensemble: their probabilities give those figures.
    oof = read_oof(layout["model"] / OOF_FILE)
    assert oof["proba"].shape == (v["n"], len(LABELS)) and np.allclose(oof["proba"].sum(axis=1), 1.0, atol=1e-5)
    assert oof["y"].shape == (v["n"],) and set(np.unique(oof["y"])) <= set(range(len(LABELS)))
    assert (layout["model"] / "code" / "serve_endpoint.py").is_file()
    assert not (layout["output"] / "failure").exists()
    assert not [p for p in layout["root"].iterdir() if p.name.startswith(".model")]  # staging cleaned up


# ------------------------------------------------------------------------------------------------
# Hyperparameters: sources, precedence, parsing


def test_string_hyperparameters_parsed_and_cli_overrides(layout):
    layout["config"].write_text(json.dumps({"family": "\"xgboost\"", "n_estimators": "\"20\"", "max_depth": "6",
                                            "learning_rate": "0.3", "sagemaker_region": "\"eu-west-1\""}))
    assert train_module.main(["--max_depth", "2", "--subsample=0.5", "--seed", "9"]) == 0
    meta = DiagnosaModel.load(layout["model"]).metadata
    assert meta["hyperparameters"]["n_estimators"] == 20
    assert meta["hyperparameters"]["max_depth"] == 2
    assert meta["hyperparameters"]["learning_rate"] == pytest.approx(0.3)
    assert meta["hyperparameters"]["subsample"] == pytest.approx(0.5)
    assert meta["hyperparameters"]["min_child_weight"] == 1.0  # default filled in
    assert meta["seed"] == 9
    assert DiagnosaModel.load(layout["model"]).pipeline.named_steps["classifier"].get_params()["xgboost__max_depth"] == 2


def test_sm_hps_wins_over_file_and_channels_from_env(layout, monkeypatch, tmp_path):
    write_hps(layout, {"family": "xgboost"})
    monkeypatch.setenv("SM_HPS", json.dumps({"family": "logistic_regression", "C": "0.5"}))
    moved = tmp_path / "elsewhere"
    layout["train"].rename(moved)
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(moved))
    assert train_module.main([]) == 0
    meta = DiagnosaModel.load(layout["model"]).metadata
    assert meta["family"] == "logistic_regression" and meta["hyperparameters"]["C"] == 0.5


def test_read_hyperparameters_decodes_and_drops_sagemaker_keys(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "hyperparameters.json").write_text(json.dumps(
        {"family": "\"mlp\"", "hidden_layer_sizes": "128,64", "alpha": "1e-3", "sagemaker_program": "\"t.py\""}))
    hps = train_module.read_hyperparameters(["--max-iter", "50"], {"SM_INPUT_DIR": str(tmp_path)})
    assert hps == {"family": "mlp", "hidden_layer_sizes": "128,64", "alpha": 1e-3, "max_iter": 50}
    with pytest.raises(ValueError, match="has no value"):
        train_module.parse_cli(["--family"])
    with pytest.raises(ValueError, match="unexpected command-line argument 'xgboost'"):
        train_module.parse_cli(["xgboost"])


def test_parse_cli_reads_the_toolkits_command_line():
    """What sagemaker_training's own mapping makes of hyperparameters (one dash for a one-character name) parses
    back to them; a value is always a value, whatever it looks like."""
    from sagemaker_training.mapping import to_cmd_args

    hps = {"C": 0.5, "family": "svm", "seed": -1, "max_iter": "-h", "n_components": "--help", "gamma": None}
    argv = to_cmd_args(hps)
    assert "-C" in argv  # the toolkit's form, not --C
    assert train_module.parse_cli(argv) == {"C": "0.5", "family": "svm", "seed": "-1", "max_iter": "-h",
                                            "n_components": "--help", "gamma": ""}
    for bad in (["-CC", "1"], ["--", "1"], ["-", "1"]):  # only one dash + exactly one character
        with pytest.raises(ValueError, match="unexpected command-line argument"):
            train_module.parse_cli(bad)
    with pytest.raises(ValueError, match="'-C' has no value"):
        train_module.parse_cli(["-C"])


def test_C_given_on_the_command_line_as_the_toolkit_gives_it(layout):
    write_hps(layout, {"family": "logistic_regression", "search_max_configs": 1})
    assert train_module.main(["--family", "logistic_regression", "-C", "0.5"]) == 0
    assert DiagnosaModel.load(layout["model"]).metadata["hyperparameters"]["C"] == 0.5


@pytest.mark.parametrize(("argv", "expected"), [
    (["--family", "logistic_regression", "--max_iter", "-h"], "'max_iter' must be an integer, got '-h'"),
    (["--family", "random_forest", "--n_estimators", "--help"], "'n_estimators' must be an integer, got '--help'"),
    (["--family", "--help"], "unknown model family '--help'"),
    (["--family", "xgboost", "-h"], "'-h' has no value"),
])
def test_help_only_for_a_lone_help_flag(layout, argv, expected, capsys):
    assert train_module.main(argv) == 1
    assert expected in (layout["output"] / "failure").read_text(encoding="utf-8")
    assert "usage:" not in capsys.readouterr().out
    assert model_files(layout) == [] and not layout["model"].exists()
    for flag in ("-h", "--help"):
        assert train_module.main([flag]) == 0 and capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize(("settings", "expected"), [
    ({"search_budget": "1e999"}, "search setting 'search_budget' must be an integer, got '1e999'"),
    ({"search_budget": "2.5"}, "search setting 'search_budget' must be an integer, got '2.5'"),
    ({"cv_max_folds": "2.9"}, "search setting 'cv_max_folds' must be an integer, got '2.9'"),
    ({"search_max_configs": "many"}, "search setting 'search_max_configs' must be an integer, got 'many'"),
    ({"holdout_min_class": True}, "search setting 'holdout_min_class' must be an integer, got True"),
    ({"max_precision_loss": "inf"}, "search setting 'max_precision_loss' must be a finite number, got 'inf'"),
])
def test_search_settings_are_parsed_strictly_naming_the_setting(settings, expected):
    hps = {"C": "1", **settings}
    with pytest.raises(ValueError) as err:
        train_module.SearchSettings.pop_from(hps)
    assert str(err.value) == expected


def test_search_settings_take_integers_as_a_tuner_writes_them():
    hps = {"search_budget": "\"3e4\"", "cv_max_folds": "4.0", "cv_max_rows": 500, "max_precision_loss": "0.1",
           "C": "1"}
    settings = train_module.SearchSettings.pop_from(hps)
    assert (settings.budget, settings.max_folds, settings.cv_max_rows, settings.max_precision_loss) == \
        (30_000, 4, 500, 0.1)
    assert hps == {"C": "1"}  # the family's hyperparameters stay


def test_a_failure_to_write_the_serving_code_leaves_no_model_and_no_validation_report(layout, monkeypatch):
    """write_serving_code failing (here: no pins to ship, as with a bundle without requirements.txt) fails the job
    before anything is in the model dir: the model is staged whole, serving code included, and moved in last."""
    from diagnosa import serving_code

    find_pins, bare = serving_code._requirements, layout["root"] / "bare-bundle"
    bare.mkdir()
    monkeypatch.setattr(serving_code, "_requirements", lambda root: find_pins(bare))  # the packages' folder, bare
    write_hps(layout, {"family": "logistic_regression", "search_max_configs": 1})
    assert train_module.main([]) == 1
    assert "no requirements.txt" in (layout["output"] / "failure").read_text(encoding="utf-8")
    assert not layout["model"].exists() or not any(layout["model"].iterdir())
    assert not (layout["output"] / "data" / "validation.json").exists()
    assert not [p for p in layout["root"].iterdir() if p.name.startswith(".model")]  # staging cleaned up


def test_save_model_into_a_non_empty_model_dir_carries_the_serving_code(layout, tmp_path):
    """/opt/ml/model may be a mount point or hold a stale model: the entries move one by one, the stale code/ is
    replaced, not mixed with the new one."""
    stale = layout["model"]
    (stale / "code").mkdir(parents=True)
    (stale / "code" / "stale.py").write_text("")
    (stale / METADATA_FILE).write_text("{}")
    result = train_module.train(layout["train"], layout["validation"], layout["transformer"], "logistic_regression",
                                settings=train_module.SearchSettings(max_configs=1))
    train_module.save_model(result.model, stale, serving_code=True)
    assert DiagnosaModel.load(stale).metadata["family"] == "logistic_regression"
    assert (stale / "code" / "serve_endpoint.py").is_file() and not (stale / "code" / "stale.py").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


def test_defaults_per_family():
    xgb = make_classifier("xgboost").named_steps["xgboost"]
    assert (xgb.n_estimators, xgb.max_depth, xgb.learning_rate) == (300, 6, 0.1)
    assert xgb.tree_method == "hist" and xgb.n_jobs == -1
    fitted = make_classifier("xgboost", {"n_estimators": "5"}).fit(np.eye(3).repeat(4, axis=0), np.arange(3).repeat(4))
    assert fitted.named_steps["xgboost"].get_xgb_params()["objective"] == "multi:softprob"  # from the labels (3)
    assert make_classifier("logistic_regression").max_iter == 2000
    rf = make_classifier("random_forest")
    assert (rf.n_estimators, rf.max_depth, rf.n_jobs) == (300, None, -1)
    assert make_classifier("mlp").estimator.early_stopping is True
    assert make_classifier("mlp").estimator.hidden_layer_sizes == (128, 64)
    gbm = make_classifier("gradient_boosting")  # dense rows only: a bounded sample, scored in batches
    assert type(gbm.estimator).__name__ == "HistGradientBoostingClassifier" and gbm.max_fit_cells == 2**25
    svm = make_classifier("svm", {"gamma": "0.05", "C": "2"})
    assert svm.named_steps["kernel"].gamma == 0.05 and svm.named_steps["svm"].estimator.C == 2.0
    assert make_classifier("svm").named_steps["kernel"].gamma is None  # 0 -> 1/n_features
    for family in FAMILIES:
        assert hasattr(make_classifier(family), "predict_proba")


def test_kernel_logistic_regression_learns_what_the_linear_one_cannot():
    """kernel_components > 0: the multinomial model on Nystroem RBF features. Three rings around one centre have
    no linear boundary; the linear model stays near chance, the kernel model separates them."""
    linear = make_classifier("logistic_regression")
    kernel = make_classifier("logistic_regression", {"kernel_components": "200"}, seed=1)
    assert kernel.named_steps["kernel"].n_components == 200 and linear.get_params()["C"] == 1.0
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 150)
    angle = rng.uniform(0, 2 * np.pi, len(y))
    radius = 1.0 + y + rng.normal(0, 0.15, len(y))
    X = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    w = np.ones(len(y))
    train, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    accuracy = {name: (model.fit(X[train], y[train], sample_weight=w[train]).predict_proba(X[test]).argmax(axis=1)
                       == y[test]).mean() for name, model in (("linear", linear), ("kernel", kernel))}
    assert accuracy["linear"] < 0.6 and accuracy["kernel"] > 0.9
    assert not isinstance(portable(kernel), WeightedPipeline)  # ships as stock sklearn
    with pytest.raises(ValueError, match="kernel_components"):
        make_classifier("logistic_regression", {"kernel_components": "-1"})


def test_mlp_fits_dense_rows_and_stops_early_only_when_its_holdout_holds_20_rows_of_every_class():
    from training.models import adapt_to_rows

    mlp = make_classifier("mlp")
    assert type(mlp).__name__ == "DenseBatches" and mlp.max_fit_cells == 2**27
    assert adapt_to_rows(mlp, np.r_[np.zeros(100), np.ones(5)].astype(int)).estimator.early_stopping is False

    def early_stopping(counts):
        return adapt_to_rows(make_classifier("mlp"), np.repeat(np.arange(len(counts)), counts)).estimator.early_stopping

    # sklearn's holdout is 10 %: 200 rows of a class put 20 there.
    assert early_stopping([5000, 200, 200]) is True
    assert early_stopping([5000, 199, 200]) is False
    assert early_stopping([100] * 5) is False  # indo_rct's 71 rare rows: the stop was one epoch's luck


def _rare_findings(n: int = 3000, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Rows like the cohort's features: a few numbers with NaN, and many 0/1 indicators, most of rare findings."""
    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=(n, 4))
    numbers[rng.random((n, 4)) < 0.2] = np.nan
    rates = np.r_[np.full(20, 0.2), np.full(60, 0.004), np.full(20, 0.0)]  # common, rare (~12 rows), never present
    indicators = (rng.random((n, rates.size)) < rates).astype(float)
    signal = np.nan_to_num(numbers[:, 0]) + indicators[:, :3].sum(axis=1) + 3 * indicators[:, 20:25].sum(axis=1)
    y = np.digitize(signal + rng.normal(0, 0.5, n), [-0.5, 0.5, 1.5])
    X = sp.hstack([sp.csr_matrix(np.nan_to_num(numbers, nan=0.0)), sp.csr_matrix(indicators)], format="csr")
    X = X.tolil()
    for j in range(4):  # the NaNs as stored values, as the transform writes them
        for i in np.flatnonzero(np.isnan(numbers[:, j])):
            X[i, j] = np.nan
    return X.tocsr(), y, np.where(y == 3, 4.0, 1.0)


@pytest.mark.parametrize("min_samples_leaf", [20, 5])
def test_gradient_boosting_leaves_out_the_columns_no_tree_can_split_and_is_the_same_model(min_samples_leaf):
    # A column whose rows other than its most common value are fewer than min_samples_leaf is never split on: left
    # out, the fit costs what the columns kept cost (100k cohort: 546 of 1,245 kept, 49.7 -> 25.5 s), same model.
    from processing.features import splittable_columns

    X, y, w = _rare_findings()
    pruned = make_classifier("gradient_boosting", {"min_samples_leaf": min_samples_leaf, "max_iter": 60}, seed=3)
    whole = make_classifier("gradient_boosting", {"min_samples_leaf": min_samples_leaf, "max_iter": 60}, seed=3)
    whole.set_params(min_leaf_rows=0)
    pruned.fit(X, y, sample_weight=w)
    whole.fit(X, y, sample_weight=w)
    assert whole.columns_ is None and pruned.columns_ is not None
    kept = set(pruned.columns_.tolist())
    assert set(range(24)) <= kept and not kept & set(range(84, 104))  # never-present indicators left out
    assert (len(kept) < 84) == (min_samples_leaf == 20)  # ~12 rows of each rare one: kept only for 5
    assert pruned.estimator_.n_features_in_ == len(kept)
    Xt, _, _ = _rare_findings(seed=1)
    np.testing.assert_array_equal(pruned.predict_proba(Xt), whole.predict_proba(Xt))
    np.testing.assert_array_equal(pruned.predict_proba(Xt.toarray()), whole.predict_proba(Xt))  # dense rows alike
    # Sparse and dense rows count the same; stored zeros are zeros; NaN is one value.
    dense = X.toarray()
    assert splittable_columns(X, min_samples_leaf).tolist() == splittable_columns(dense, min_samples_leaf).tolist()
    stored = X.tolil()
    stored[:, 30] = 0.0  # written explicitly
    stored = stored.tocsr()
    assert 30 not in splittable_columns(stored, 1).tolist() and 30 in splittable_columns(X, 1).tolist()
    assert splittable_columns(np.array([[np.nan], [np.nan], [1.0]]), 1).tolist() == [0]
    assert splittable_columns(np.array([[np.nan], [np.nan], [1.0]]), 2).tolist() == []


def test_a_dense_batches_model_pickled_before_min_leaf_rows_loads_and_serves(tmp_path):
    # Every MLP and gradient-boosting model trained before: a load calls get_params (to limit the model's threads),
    # which raised AttributeError, so no such registered version could be served again.
    from sklearn.base import clone

    X, y, w = _rare_findings(n=600)
    model = make_classifier("gradient_boosting", {"max_iter": 10}, seed=0).fit(X, y, sample_weight=w)
    expected = model.predict_proba(X)
    old = model.__dict__.copy()
    model.__dict__.pop("min_leaf_rows")
    model.__dict__.pop("columns_")
    model.estimator_ = make_classifier("gradient_boosting", {"max_iter": 10}, seed=0).set_params(
        min_leaf_rows=0).fit(X, y, sample_weight=w).estimator_  # an old model's classifier saw every column
    joblib.dump(model, tmp_path / "old.joblib")
    loaded = joblib.load(tmp_path / "old.joblib")
    assert loaded.get_params()["min_leaf_rows"] == 0 and loaded.columns_ is None
    assert repr(loaded) and clone(loaded).min_leaf_rows == 0 and "estimator__max_iter" in loaded.get_params(deep=True)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)  # the same model, pruned or not
    assert set(old) >= {"min_leaf_rows", "columns_"}


def test_cv_folds_stop_early_as_the_shipped_model_does():
    """A fold of a 250-row class holds 200 of them (4 of 5 folds): the rule follows the shipped model's rows, so the
    fold models that calibrate it train as it will; the SVM's calibration folds still follow the fold's own rows."""
    from training.models import adapt_to_rows

    shipped = np.repeat([0, 1], [2000, 250])
    fold = np.repeat([0, 1], [1600, 150])
    assert adapt_to_rows(make_classifier("mlp"), fold).estimator.early_stopping is False
    assert adapt_to_rows(make_classifier("mlp"), fold, shipped=shipped).estimator.early_stopping is True
    assert adapt_to_rows(make_classifier("mlp"), fold, shipped=np.repeat([0, 1], [2000, 199])).estimator.early_stopping \
        is False
    svm = adapt_to_rows(make_classifier("svm"), np.repeat([0, 1], [50, 2]), shipped=np.repeat([0, 1], [60, 3]))
    assert svm.steps[-1][1].cv == 2


def test_hyperparameter_parsing():
    assert make_classifier("mlp", {"hidden_layer_sizes": "64, 32,16"}).estimator.hidden_layer_sizes == (64, 32, 16)
    assert make_classifier("mlp", {"hidden_layer_sizes": [8]}).estimator.hidden_layer_sizes == (8,)
    assert make_classifier("xgboost", {"n_estimators": "\"300\""}).named_steps["xgboost"].n_estimators == 300
    assert make_classifier("xgboost", {"n_estimators": "3e2"}).named_steps["xgboost"].n_estimators == 300
    assert make_classifier("xgboost", {"learning_rate": "1"}).named_steps["xgboost"].learning_rate == 1.0
    assert make_classifier("random_forest", {"max_depth": 12.0}).max_depth == 12
    assert resolve_hyperparameters("logistic_regression", {"C": "0.25"}) == {"C": 0.25, "max_iter": 2000,
                                                                          "kernel_components": 0}
    assert check_seed("\"7\"") == 7


@pytest.mark.parametrize(("family", "hps", "expected"), [
    ("catboost", {}, ["unknown model family 'catboost'", "xgboost"]),
    ("xgboost", {"max_dept": 3}, ["xgboost", "'max_dept'", "allowed: n_estimators, max_depth"]),
    ("xgboost", {"learning_rate": "0"}, ["xgboost", "'learning_rate'", "out of range", "(0, 1]"]),
    ("xgboost", {"max_depth": "21"}, ["xgboost", "'max_depth'", "out of range", "[1, 20]"]),
    ("random_forest", {"n_estimators": "many"}, ["random_forest", "'n_estimators'", "must be an integer"]),
    ("random_forest", {"n_estimators": "2.5"}, ["'n_estimators'", "must be an integer"]),
    ("logistic_regression", {"C": "nan"}, ["'C'", "finite number"]),
    ("logistic_regression", {"max_iter": True}, ["'max_iter'", "must be an integer"]),
    ("mlp", {"hidden_layer_sizes": "128,0"}, ["mlp", "'hidden_layer_sizes'", "out of range"]),
    ("mlp", {"hidden_layer_sizes": "a,b"}, ["'hidden_layer_sizes'", "comma-separated integers"]),
])
def test_bad_hyperparameters_name_the_problem(family, hps, expected):
    with pytest.raises(ValueError) as err:
        make_classifier(family, hps)
    for fragment in expected:
        assert fragment in str(err.value)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed out of range"):
        make_classifier("xgboost", seed=-1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        check_seed("abc")


# ------------------------------------------------------------------------------------------------
# Failures: exit 1, a reason in /opt/ml/output/failure, no model written


def _replace_npz(layout: dict[str, Path], **changes: Any) -> None:
    path = layout["train"] / "train.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def _drop_feature_names(layout: dict[str, Path]) -> None:
    path = layout["transformer"] / "preprocess.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    del record["feature_names"]
    path.write_text(json.dumps(record), encoding="utf-8")


BAD_INPUTS = {
    "unknown family": (lambda lay: None, {"family": "catboost"}, ["unknown model family 'catboost'"]),
    "unknown hyperparameter": (lambda lay: None, {"family": "xgboost", "depth": 3},
                               ["xgboost", "'depth'", "allowed:"]),
    "out of range": (lambda lay: None, {"family": "xgboost", "n_estimators": 0},
                     ["xgboost", "'n_estimators'", "out of range"]),
    "missing family": (lambda lay: None, {"C": 1}, ["missing required hyperparameter 'family'"]),
    "null family": (lambda lay: None, {"family": None}, ["'family' is empty or null", ", ".join(FAMILIES)]),
    "empty family": (lambda lay: None, {"family": ""}, ["'family' is empty or null", ", ".join(FAMILIES)]),
    "search setting not an integer": (lambda lay: None, {"family": "xgboost", "search_budget": "1e999"},
                                      ["search setting 'search_budget' must be an integer, got inf"]),
    "bad seed": (lambda lay: None, {"family": "xgboost", "seed": "x"}, ["seed must be an integer"]),
    "missing train.npz": (lambda lay: (lay["train"] / "train.npz").unlink(), {"family": "logistic_regression"},
                          ["train channel: no training data (*.npz)"]),
    "parts of different widths": (lambda lay: np.savez(lay["train"] / "z-part.npz", X=np.zeros((5, 4), np.float32),
                                                       y=np.zeros(5, np.int64), sample_weight=np.ones(5)),
                                  {"family": "logistic_regression"}, ["parts have different numbers of columns [3, 4]"]),
    "X/y mismatch": (lambda lay: _replace_npz(lay, y=np.zeros(599, dtype=np.int64)),
                     {"family": "logistic_regression"}, ["X has 600 rows but y has 599"]),
    "label out of range": (lambda lay: _replace_npz(lay, y=np.full(600, 7, dtype=np.int64)),
                           {"family": "logistic_regression"}, ["out of range [0, 5)", "[7]"]),
    "non-finite X": (lambda lay: _replace_npz(lay, X=np.full((600, 3), np.nan, dtype=np.float32)),
                     {"family": "logistic_regression"}, ["non-finite"]),
    "missing target": (lambda lay: pd.read_parquet(lay["validation"] / "validation.parquet").drop(columns=["label"])
                       .to_parquet(lay["validation"] / "validation.parquet"),
                       {"family": "logistic_regression"}, ["target column 'label' missing"]),
    "missing slice column": (lambda lay: pd.read_parquet(lay["validation"] / "validation.parquet")
                             .drop(columns=["is_orphan"]).to_parquet(lay["validation"] / "validation.parquet"),
                             {"family": "logistic_regression"}, ["slice column 'is_orphan' missing"]),
    "feature_names/X width mismatch": (lambda lay: _replace_npz(lay, X=np.zeros((600, 4), dtype=np.float32)),
                                       {"family": "logistic_regression"},
                                       ["X has 4 columns but preprocess.json names 3 features"]),
    "transformer/X width mismatch": (lambda lay: (_replace_npz(lay, X=np.zeros((600, 4), dtype=np.float32)),
                                                  _drop_feature_names(lay)),
                                     {"family": "logistic_regression"},
                                     ["makes 3 feature(s) but the training rows have 4 columns"]),
    "missing transformer": (lambda lay: (lay["transformer"] / "feature_pipeline.joblib").unlink(),
                            {"family": "logistic_regression"}, ["feature_pipeline.joblib not found"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_failures_exit_1_with_reason_and_no_model(layout, case):
    damage, hps, expected = BAD_INPUTS[case]
    damage(layout)
    write_hps(layout, hps)
    assert train_module.main([]) == 1
    failure = (layout["output"] / "failure").read_text(encoding="utf-8")
    for fragment in expected:
        assert fragment in failure
    assert model_files(layout) == []
    assert not (layout["output"] / "data" / "validation.json").exists()


def test_save_model_replaces_a_stale_model(layout, tmp_path):
    stale = layout["model"]
    stale.mkdir()
    (stale / METADATA_FILE).write_text("{}")
    (stale / MODEL_FILE).write_bytes(b"old")
    result = train_module.train(layout["train"], layout["validation"], layout["transformer"], "logistic_regression")
    train_module.save_model(result.model, stale)
    assert DiagnosaModel.load(stale).metadata["family"] == "logistic_regression"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


# ------------------------------------------------------------------------------------------------
# Sample weights and determinism, through the pure train()


@pytest.mark.parametrize("family", FAMILIES)
def test_upweighting_a_rare_class_raises_its_recall(family):
    """Class weights arrive as sample weights; every family's fit must honour them (trees less than linear).

    Checked on the estimators themselves: train() recomputes balanced weights over train + validation and
    adds out-of-fold decision weights on top, which lift the rare class whatever train.npz's weights say."""
    rare = LABELS.index(CATEGORIES[-1])
    train = make_frame([300, 300, 300, 300, 25], seed=5, noise=2.0)
    validation = make_frame([100] * 5, seed=6, noise=2.0)
    transformer = make_transformer().fit(train)
    X, X_val = transformer.transform(train), transformer.transform(validation)
    y = np.array([LABELS.index(v) for v in train["label"]])
    y_val = np.array([LABELS.index(v) for v in validation["label"]])
    recalls = []
    for weight in (np.ones(len(y)), np.where(y == rare, 12.0, 1.0)):
        classifier = make_classifier(family, FAST[family], seed=0).fit(X, y, sample_weight=weight)
        recalls.append(float((classifier.predict_proba(X_val).argmax(axis=1)[y_val == rare] == rare).mean()))
    assert recalls[1] > recalls[0] + 0.05, recalls


def test_train_searches_calibrates_and_ships_decision_weights(tmp_path):
    """A rare class of 12 training rows: the search cross-validates (5 folds, k set by the smallest class),
    keeps given hyperparameters fixed, and the artifact carries calibration and decision weights."""
    train = make_frame([300, 300, 300, 300, 12], seed=5, noise=2.0)
    validation = make_frame([100, 100, 100, 100, 4], seed=6, noise=2.0)
    dirs = write_channels(tmp_path, train, validation)
    settings = train_module.SearchSettings(budget=40_000, max_configs=3)  # 1,616 rows x 4 fits per configuration
    result = train_module.train(dirs["train"], dirs["validation"], dirs["transformer"], "logistic_regression",
                                {"max_iter": "500"}, seed=0, settings=settings)
    meta = result.model.metadata
    assert meta["search"]["folds"] == 5 and meta["search"]["smallest_class"] == 16
    assert meta["search"]["pool_rows"] == len(train) + len(validation) == meta["n_train"]
    assert len(meta["search"]["trials"]) == 3  # the budget allows 6; max_configs caps at 3
    assert all(t["hyperparameters"]["max_iter"] == 500 for t in meta["search"]["trials"])
    assert meta["calibration"]["method"] == "temperature"  # 16 rows: too few for a bias per class
    assert set(meta["decision_weights"]) == set(LABELS)
    assert meta["validation"]["method"].startswith("cross-validation") and meta["search"]["resampling"] == "none"
    assert meta["calibration_oof"]["after"]["ece"] <= meta["calibration_oof"]["before"]["ece"] + 1e-9
    frame = validation.drop(columns=["label"])
    raw, served = result.model.predict_proba_raw(frame), result.model.predict_proba(frame)
    assert not np.allclose(raw, served)  # the served probabilities are the calibrated ones
    weights = np.array([meta["decision_weights"][label] for label in LABELS])
    assert result.model.predict(frame) == [LABELS[i] for i in (served * weights).argmax(axis=1)]


def test_enough_validation_rows_per_class_select_on_the_split_and_ship_the_model_fitted_on_train(tmp_path):
    """Every class with >= holdout_min_class validation rows: no cross-validation, no refit; the shipped
    classifier is the one fitted on the training rows and scored on validation."""
    train = make_frame([200, 200, 200, 200, 60], seed=5, noise=2.0)
    validation = make_frame([60, 60, 60, 60, 20], seed=6, noise=2.0)
    dirs = write_channels(tmp_path, train, validation)
    holdout = train_module.train(dirs["train"], dirs["validation"], dirs["transformer"], "logistic_regression",
                                 seed=0, settings=train_module.SearchSettings(holdout_min_class=20))
    meta = holdout.model.metadata
    assert meta["search"]["regime"] == "holdout" and meta["search"]["rows"] == len(validation)
    # How the training rows were balanced (all weights 1 here), not the regime's words, which overwrote it.
    assert meta["search"]["resampling"] == "none"
    assert meta["n_train"] == len(train) and meta["validation"]["method"].startswith("validation split")
    fitted = make_classifier("logistic_regression", meta["hyperparameters"], seed=0)
    with np.load(dirs["train"] / "train.npz") as npz:
        fitted.fit(npz["X"], npz["y"], sample_weight=npz["sample_weight"])
    X_val = holdout.model.features.transform(validation.drop(columns=["label"]))
    np.testing.assert_allclose(holdout.model.predict_proba_raw(validation.drop(columns=["label"])),
                               fitted.predict_proba(X_val), atol=1e-9)
    # one validation row fewer than asked for in the smallest class: cross-validation on train + validation
    crossed = train_module.train(dirs["train"], dirs["validation"], dirs["transformer"], "logistic_regression",
                                 seed=0, settings=train_module.SearchSettings(holdout_min_class=21))
    assert crossed.model.metadata["search"]["regime"] == "cross-validation"
    assert crossed.model.metadata["n_train"] == len(train) + len(validation)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_when_the_pool_has_classes_of_two_and_three_rows(tmp_path, family):
    """flchain's shape (docs/benchmark-real.md): classes of 3 and 2 rows in train + validation. The search's
    folds fit on fewer rows of them than the pool has (2 of 3, 1 of 2), and each fold's copy of the estimator
    must suit its own rows: the SVM's internal 3-fold calibration once stopped the job there
    ("Requesting 2-fold cross-validation but provided less than 2 examples")."""
    train = make_frame([80, 80, 80, 2, 1], seed=7)
    validation = make_frame([20, 20, 20, 1, 1], seed=8)
    dirs = write_channels(tmp_path, train, validation)
    result = train_module.train(dirs["train"], dirs["validation"], dirs["transformer"], family, FAST[family],
                                seed=0, settings=train_module.SearchSettings(max_configs=1))
    search = result.model.metadata["search"]
    assert search["regime"] == "cross-validation" and search["smallest_class"] == 2
    proba = result.model.predict_proba(validation.drop(columns=["label"]))
    assert proba.shape == (len(validation), len(LABELS)) and np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_predictions(layout, family):
    validation = pd.read_parquet(layout["validation"] / "validation.parquet")
    runs = [train_module.train(layout["train"], layout["validation"], layout["transformer"], family,
                               FAST[family], seed=seed).model.predict_proba(validation) for seed in (4, 4, 5)]
    np.testing.assert_array_equal(runs[0], runs[1])
    if family in ("random_forest", "mlp", "svm"):  # families whose fit draws random numbers
        assert not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_fits_a_two_label_dataset(family):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=120) > 0).astype(int)
    proba = make_classifier(family, FAST[family], seed=0).fit(X, y, sample_weight=np.ones(120)).predict_proba(X)
    assert proba.shape == (120, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1) == y).mean() > 0.65  # learns something (classes are about even)


# ------------------------------------------------------------------------------------------------
# XGBoost on mostly-zero rows (issue 16: its cost followed rows x columns, and the columns grow with the cohort)


def indicator_rows(n: int = 800, width: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """0/1 indicator columns, ~10 % ones (like the symptom block), three classes driven by a few columns."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n, width)) < 0.1).astype(np.float32)
    y = (X[:, :4].sum(axis=1) > 0).astype(int) + (X[:, 4:7].sum(axis=1) > 0)
    return X, y


def mixed_rows(n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indicator columns and continuous ones, some exactly 0 (a standardised value at the mean), some NaN."""
    rng = np.random.default_rng(seed)
    X, y = indicator_rows(n, seed=seed)
    continuous = rng.normal(size=(n, 3)).astype(np.float32)
    continuous[rng.random((n, 3)) < 0.2] = 0.0
    continuous[rng.random((n, 3)) < 0.05] = np.nan
    y = np.where(np.nan_to_num(continuous[:, 0]) > 1.0, 2, y)
    return np.hstack([X, continuous]), y


def test_the_sparse_encoding_keeps_continuous_zeros_and_drops_only_indicator_zeros():
    from processing.features import SparseIndicators

    X, _ = mixed_rows()
    encoder = SparseIndicators(chunk_rows=128).fit(X)
    assert encoder.indicator_.tolist() == [True] * 40 + [False] * 3
    S = encoder.transform(X)
    np.testing.assert_array_equal(np.nan_to_num(S.toarray(), nan=-9), np.nan_to_num(X, nan=-9))
    stored = S.tocsc()
    assert stored[:, 40:].nnz == X.shape[0] * 3  # every continuous entry stored, its zeros included
    assert stored[:, :40].nnz == int((X[:, :40] != 0).sum())  # an indicator stores its ones only
    assert encoder.transform(X[:0]).shape == (0, 43)
    with pytest.raises(ValueError, match="expected 43 feature columns, got 42"):
        encoder.transform(X[:, :42])


def test_the_sparse_encoding_of_csr_rows_is_that_of_the_dense_rows():
    """The feature pipeline's CSR leaves every zero out, continuous ones too: the encoding puts those back."""
    from processing.features import SparseIndicators

    X, _ = mixed_rows(seed=2)
    X[5, :] = 0.0  # a row with nothing stored
    csr = sp.csr_matrix(X)
    assert csr.nnz < int((X[:, 40:] == X[:, 40:]).sum() + (X[:, :40] != 0).sum())  # continuous zeros absent
    encoder = SparseIndicators(chunk_rows=128).fit(csr)
    assert encoder.indicator_.tolist() == SparseIndicators().fit(X).indicator_.tolist()
    got, expected = encoder.transform(csr), encoder.transform(X)
    for name in ("indices", "indptr"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    np.testing.assert_array_equal(got.data, expected.data)  # NaN in the same places (assert_array_equal: NaN == NaN)
    assert encoder.transform(csr[:0]).shape == (0, 43)


def test_xgboost_on_the_sparse_encoding_is_the_dense_model_exactly():
    """The same trees as xgboost on the dense matrix (0 a value, NaN absent), continuous zeros included:
    the speed-up changes no prediction."""
    from xgboost import XGBClassifier

    X, y = mixed_rows(seed=3)
    w = np.where(y == 2, 3.0, 1.0)
    ours = make_classifier("xgboost", {"n_estimators": "30", "max_depth": "4"}, seed=0).fit(X, y, sample_weight=w)
    params = ours.named_steps["xgboost"].get_params()
    dense = XGBClassifier(**params).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(ours.predict_proba(X), dense.predict_proba(X))


def test_the_shipped_xgboost_model_carries_the_encoding_and_predicts_dense_rows(layout, tmp_path):
    result = train_module.train(layout["train"], layout["validation"], layout["transformer"], "xgboost",
                                FAST["xgboost"], seed=0)
    result.model.save(tmp_path / "saved")
    loaded = DiagnosaModel.load(tmp_path / "saved")
    classifier = loaded.pipeline.steps[-1][1]
    assert [name for name, _ in classifier.steps] == ["sparse", "xgboost"]
    frame = pd.read_parquet(layout["validation"] / "validation.parquet").drop(columns=["label"])
    np.testing.assert_array_equal(loaded.predict_proba(frame), result.model.predict_proba(frame))


# ------------------------------------------------------------------------------------------------
# Across instances (training/distributed.py)


def test_the_collective_fit_is_xgboosts_own_fit_on_one_host():
    """fit_xgboost fixes the class count and calls xgboost.train itself (a shard may lack a class); on one host
    it must be exactly what XGBClassifier.fit does: same parameters, same matrix, same trees."""
    from training.distributed import fit_xgboost
    from training.models import make_classifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 8)).astype(np.float32)
    X[:, 4:] = X[:, 4:] > 0.4  # indicator columns: the sparse step leaves their zeros out
    for k in (2, 4):
        y = np.minimum((X[:, 0] > 0).astype(int) + (X[:, 1] > 0.8) + (X[:, 2] > 1.2), k - 1)
        w = rng.random(600) + 0.5
        reference = make_classifier("xgboost", {"n_estimators": 20}, seed=3).fit(X, y, sample_weight=w)
        fitted = fit_xgboost(make_classifier("xgboost", {"n_estimators": 20}, seed=3), X, y, w, k)
        np.testing.assert_array_equal(fitted.predict_proba(X), reference.predict_proba(X))


def test_the_cluster_comes_from_the_toolkits_variables():
    from training.distributed import cluster_from_env

    cluster = cluster_from_env({"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2"})
    assert cluster.hosts == ("algo-1", "algo-2") and cluster.rank == 1 and not cluster.is_leader
    assert cluster_from_env({}).size == 1 and cluster_from_env({}).is_leader
    for environ, message in (({"SM_HOSTS": "algo-1"}, "not a JSON list"), ({"SM_HOSTS": "[]"}, "at least one host"),
                             ({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-9"}, "not one of SM_HOSTS")):
        with pytest.raises(ValueError, match=message):
            cluster_from_env(environ)


def test_only_xgboost_trains_across_instances(layout, monkeypatch):
    monkeypatch.setenv("SM_HOSTS", '["algo-1", "algo-2"]')
    monkeypatch.setenv("SM_CURRENT_HOST", "algo-1")
    layout["config"].write_text(json.dumps({"family": "logistic_regression"}))
    assert train_module.main([]) == 1  # refused before any host waits for another
    assert "family logistic_regression trains on one instance; only xgboost trains across 2" in \
        (layout["output"] / "failure").read_text()


def test_training_parts_are_read_in_name_order_as_one_split(layout, tmp_path):
    """The Transform step writes one .npz per curated part: the channel's parts are the training rows, in order."""
    X, y, w, digests = train_module.load_train(layout["train"], len(LABELS))
    split = tmp_path / "parts"
    split.mkdir()
    for name, rows in (("data-part-00000.npz", slice(0, 250)), ("data-part-00001.npz", slice(250, None))):
        np.savez(split / name, X=X[rows], y=y[rows], sample_weight=w[rows])
    X2, y2, w2, digests2 = train_module.load_train(split, len(LABELS))
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert sorted(digests2) == ["data-part-00000.npz", "data-part-00001.npz"] and list(digests) == ["train.npz"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no training data"):
        train_module.load_train(empty, len(LABELS))
    assert train_module.load_train(empty, len(LABELS), empty_width=3)[0].shape == (0, 3)  # a host without a part


# ------------------------------------------------------------------------------------------------
# Every family on the feature pipeline's CSR rows (issue 16)


@pytest.fixture(scope="module")
def cohort_rows(curated_cohort):
    """The small cohort through Preprocess: CSR training rows (class weights) and CSR test rows."""
    from processing.preprocess import PreprocessParams, preprocess

    frame, manifest = curated_cohort
    result = preprocess(frame, Schema.from_dict(manifest["schema"]), PreprocessParams())
    return result.train, result.pipeline.transform(result.splits.test)


# Families whose fit on CSR is their fit on the dense rows exactly (mlp and gradient_boosting are fitted on
# dense rows); svm agrees to float32 rounding (sparse vs dense matrix products); lbfgs stops at its tolerance
# a few iterations apart (73 vs 69 here): one probability of 2,005 then differs by 0.0206 (with the knowledge-base
# columns weighted by the chance of the match, processing/phenotype.py; under 0.02 before); the decisions agree below.
EXACT_ON_SPARSE = ("xgboost", "random_forest", "gradient_boosting", "mlp")
WITHIN = {"logistic_regression": 0.03}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_predicts_from_csr_rows_as_from_the_dense_ones(cohort_rows, family):
    train, X_test = cohort_rows
    assert sp.issparse(train.X) and sp.issparse(X_test)
    with_csr = make_classifier(family, FAST[family], seed=0).fit(train.X, train.y, sample_weight=train.sample_weight)
    dense = make_classifier(family, FAST[family], seed=0).fit(train.X.toarray(), train.y,
                                                               sample_weight=train.sample_weight)
    got, expected = with_csr.predict_proba(X_test), dense.predict_proba(X_test.toarray())
    if family in EXACT_ON_SPARSE:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, atol=WITHIN.get(family, 1e-4))
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).mean() >= 0.995
    # Serving's compiled feature path hands the classifier dense rows: the same answer.
    np.testing.assert_allclose(with_csr.predict_proba(X_test.toarray()), got, atol=1e-5)


@pytest.fixture(scope="module")
def cohort_channels(tmp_path_factory, curated_cohort):
    """The Preprocess job's outputs for the small cohort, as the training job's channels."""
    from processing import preprocess as preprocess_job

    frame, manifest = curated_cohort
    base = tmp_path_factory.mktemp("preprocessed")
    source = base / "input" / "curated"
    (source / "data").mkdir(parents=True)
    half = len(frame) // 2  # two curated parts: each split is written a part at a time
    frame.iloc[:half].to_parquet(source / "data" / "part-00000.parquet", index=False)
    frame.iloc[half:].to_parquet(source / "data" / "part-00001.parquet", index=False)
    [key] = manifest["data_keys"]  # the manifest lists exactly the parts the input holds (processing.preprocess)
    keys = [key.replace("part-00000", f"part-{i:05d}") for i in (0, 1)]
    (source / "manifest.json").write_text(json.dumps({**manifest, "data_keys": keys}))
    assert preprocess_job.main(["--base-dir", str(base)]) == 0
    return {name: base / "output" / name for name in ("train", "validation", "transformer")}


def test_training_reads_the_validation_features_preprocess_wrote_and_refuses_foreign_ones(cohort_channels, tmp_path):
    """validation/<part>.npz (transformed once by Preprocess) gives the model the transformer gives, and features
    of other rows, or of some parts only, are refused rather than scored against the wrong labels."""
    import shutil

    channels = {name: tmp_path / name for name in cohort_channels}
    for name, folder in cohort_channels.items():
        shutil.copytree(folder, channels[name])
    parts = sorted(channels["validation"].glob("*.npz"))
    assert [p.name for p in parts] == ["data-part-00000.npz", "data-part-00001.npz"]
    run = lambda: train_module.train(channels["train"], channels["validation"], channels["transformer"],  # noqa: E731
                                     "logistic_regression", seed=0)
    with_file = run()
    frame = pd.concat([pd.read_parquet(p.with_suffix(".parquet")) for p in parts]).drop(columns=["label"])
    kept = tmp_path / "kept"
    kept.mkdir()
    parts[1].rename(kept / parts[1].name)
    with pytest.raises(ValueError, match=r"the features of 1 part\(s\) are missing \(data-part-00001.npz\)"):
        run()
    parts[0].rename(kept / parts[0].name)
    without = run()
    np.testing.assert_array_equal(with_file.model.predict_proba(frame), without.model.predict_proba(frame))
    assert with_file.model.metadata["validation"] == without.model.metadata["validation"]
    for part in parts:
        shutil.copy(kept / part.name, part)
    features = parts[0]
    with np.load(kept / features.name) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(features, **{**arrays, "y": np.roll(arrays["y"], 1)})
    with pytest.raises(ValueError, match=r"the features \(.npz\) do not belong to the rows \(.parquet\)"):
        run()
    features.write_bytes(b"broken")
    with pytest.raises(ValueError, match="validation channel: data-part-00000.npz is not a readable .npz file"):
        run()
