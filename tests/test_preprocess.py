"""Preprocessing: split, feature pipeline fitted on train only, resampling of train only, the job."""
from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from diagnosa.data.schema import Field, Schema
from diagnosa.labels import CATEGORIES, TERMINAL
from processing.features import FeatureParams, MultiLabelIndicator, binary_columns, build_feature_pipeline
from processing.preprocess import PreprocessParams, fit_sample, main, preprocess
from processing.resample import resample
from processing.split import GROUPS_FILE, SplitError, read_split, split_dataset, unseen_mask
from processing.trainset import read_train
from training.train import load_train


@pytest.fixture(scope="module")
def data(curated_cohort):
    frame, manifest = curated_cohort
    return frame, Schema.from_dict(manifest["schema"]), manifest


# ------------------------------------------------------------------------------------------------ split

def test_split_is_stratified_disjoint_and_spreads_orphan_diseases(data):
    frame, schema, _ = data
    splits = split_dataset(frame, schema, seed=1)
    sizes = {name: len(part) for name, part in splits.items()}
    assert sum(sizes.values()) == len(frame)
    ids = [set(part["patient_id"]) for _, part in splits.items()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    orphan = frame[frame["is_orphan"]]
    held_out = orphan[~orphan["disease_id"].isin(splits.train_groups)]
    for label in CATEGORIES:
        n = (frame["label"] == label).sum()
        # Whole held-out diseases go to validation/test, so a class may be off its share by their patients.
        slack = (held_out["label"] == label).sum()
        for (name, part), share in zip(splits.items(), (0.7, 0.2, 0.1)):
            assert (part["label"] == label).sum() == pytest.approx(n * share, abs=max(3, 0.03 * n) + slack), \
                (name, label)
    big = orphan["disease_id"].value_counts()
    big = set(big[big >= 3].index) & splits.train_groups  # seen diseases
    assert len(big) > 10
    for _, part in splits.items():
        assert big <= set(part["disease_id"]), "a seen disease with 3+ patients is in every split"
    assert splits.test["is_orphan"].sum() > 0 and splits.validation["is_orphan"].sum() > 0


def test_held_out_orphan_diseases_never_reach_train(data):
    frame, schema, _ = data
    diseases = set(frame.loc[frame["is_orphan"], "disease_id"])
    for seed in (0, 1, 2):
        splits = split_dataset(frame, schema, seed=seed)
        train = set(splits.train.loc[splits.train["is_orphan"], "disease_id"])
        assert train == splits.train_groups
        unseen = diseases - train
        assert len(unseen) == round(0.3 * len(diseases)), "the default share of diseases is held out"
        validation = set(splits.validation.loc[splits.validation["is_orphan"], "disease_id"])
        test = set(splits.test.loc[splits.test["is_orphan"], "disease_id"])
        assert unseen <= validation | test and not (unseen & validation & test), "whole diseases, one split each"
        assert unseen & validation and unseen & test, "both selection and the final test see unseen diseases"
        mask = unseen_mask(splits.test, schema, splits.train_groups)
        assert set(splits.test.loc[mask, "disease_id"]) == unseen & test
        assert not splits.test.loc[mask & ~splits.test["is_orphan"]].shape[0]
    none_held = split_dataset(frame, schema, seed=0, unseen_share=0.0)
    assert set(none_held.train.loc[none_held.train["is_orphan"], "disease_id"]) == diseases
    with pytest.raises(SplitError, match="unseen_share"):
        split_dataset(frame, schema, unseen_share=1.0)
    # A slice without a group column has nothing to hold out.
    plain = replace(schema, group_column=None)
    assert split_dataset(frame, plain, seed=0).train_groups is None


@pytest.mark.parametrize("groups", [2, 3, 4])
def test_with_few_groups_the_one_held_out_is_in_test_where_the_gate_measures_it(data, groups):
    """One group is held out of 2 to 4: it went to validation every time (it is further below its share), the test
    split had no unseen patient, the unseen recall was undefined and the gate failed every run of such a dataset."""
    frame, schema, _ = data
    kept = sorted(set(frame.loc[frame["is_orphan"], "disease_id"]))[:groups]
    few = frame[~frame["is_orphan"] | frame["disease_id"].isin(kept)].reset_index(drop=True)
    for seed in (0, 1, 2):
        splits = split_dataset(few, schema, seed=seed)
        unseen = set(kept) - splits.train_groups
        assert len(unseen) == 1
        assert unseen_mask(splits.test, schema, splits.train_groups).any(), f"seed {seed}: no unseen patient in test"


def test_split_is_deterministic_per_seed(data):
    frame, schema, _ = data
    a, b, c = (split_dataset(frame, schema, seed=s) for s in (4, 4, 5))
    assert a.test["patient_id"].tolist() == b.test["patient_id"].tolist()
    assert a.test["patient_id"].tolist() != c.test["patient_id"].tolist()


def test_split_refuses_what_cannot_be_stratified(data):
    frame, schema, _ = data
    tiny = pd.concat([frame[frame["label"] != TERMINAL], frame[frame["label"] == TERMINAL].head(2)])
    with pytest.raises(SplitError, match=f"class '{TERMINAL}' has 2 rows"):
        split_dataset(tiny, schema)
    with pytest.raises(SplitError, match="appears more than once"):
        split_dataset(pd.concat([frame, frame.head(1)]), schema)
    with pytest.raises(SplitError, match="fractions"):
        split_dataset(frame, schema, fractions=(0.5, 0.5, 0.5))
    odd = frame.copy()
    odd.loc[odd.index[0], "label"] = "ENFERMEDAD RARA"
    with pytest.raises(SplitError, match="ENFERMEDAD RARA"):
        split_dataset(odd, schema)


# ------------------------------------------------------------------------------------------------ features

def test_feature_pipeline_is_fitted_on_train_only(data):
    frame, schema, _ = data
    splits = split_dataset(frame, schema, seed=2)
    pipeline = build_feature_pipeline(schema, FeatureParams())
    pipeline.fit(splits.train)
    numeric = schema.features("number", "integer")
    scaler = pipeline.named_steps["columns"].named_transformers_["numeric"][-1]
    train_values = splits.train[numeric].astype(float)
    expected = train_values.fillna(train_values.median()).mean().to_numpy()
    assert np.allclose(scaler.mean_[: len(numeric)], expected, rtol=1e-6)
    # Refitting on train with validation/test altered beyond recognition changes nothing.
    before = pipeline.transform(splits.test)
    other = build_feature_pipeline(schema, FeatureParams()).fit(splits.train)
    assert sp.issparse(before) and before.format == "csr"  # mostly symptom indicators: kept sparse (issue 16)
    assert np.array_equal(before.toarray(), other.transform(splits.test).toarray())
    assert before.dtype == np.float32 and before.shape[0] == len(splits.test)



def test_the_similarity_columns_are_standardised_over_the_training_rows(data):
    """The knowledge-base similarity spreads far less than the standardised numbers (sd ~0.05-0.25): scaled like
    them, so an L2-penalised or gradient-trained model weighs them like any other column (issue 14)."""
    from processing.phenotype import PhenotypeSimilarity, find_similarity

    frame, schema, _ = data
    splits = split_dataset(frame, schema, seed=2)
    pipeline = build_feature_pipeline(schema, FeatureParams()).fit(splits.train)
    names = list(pipeline.get_feature_names_out())
    columns = [i for i, name in enumerate(names) if name.startswith("phenotype:")]
    assert len(columns) == 33  # 4 categories x (max, top3) + best, then 2 measures x 4 categories x 3
    values = pipeline.transform(splits.train)[:, columns].toarray().astype(float)
    spread = values.std(axis=0)
    varying = spread > 0
    assert varying.sum() >= 30
    np.testing.assert_allclose(values.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(spread[varying], 1.0, rtol=1e-3)
    # The raw similarity is still the one the differential and the knowledge-only reference read.
    similarity, field = find_similarity(pipeline)
    assert isinstance(similarity, PhenotypeSimilarity) and field == "symptoms"
    raw = similarity.features(splits.train["symptoms"].head(50))
    assert raw.min() >= -1.0 and raw.max() <= 1.0 and not np.allclose(raw, values[:50], atol=1e-2)

def test_indicator_columns_need_a_share_of_the_rows_as_well_as_a_count():
    """A fixed count alone let the vocabulary (and every model's cost) grow with the cohort (issue 16)."""
    rows = pd.Series([["I10"]] * 30 + [["E11"]] * 6 + [[]] * 964)
    assert set(MultiLabelIndicator(min_count=5).fit(rows).vocabulary_) == {"I10", "E11"}
    shared = MultiLabelIndicator(min_count=5, min_share=0.01).fit(rows)  # 1 % of 1,000 rows: 10
    assert shared.threshold_ == 10 and set(shared.vocabulary_) == {"I10"}
    assert MultiLabelIndicator(min_count=5, min_share=0.01).fit(rows[:200]).threshold_ == 5  # the count decides
    with pytest.raises(ValueError, match="min_term_share must be in"):
        FeatureParams(min_term_share=1.0).validate()


def test_hpo_rollup_shares_ancestors_and_handles_unseen_terms():
    # Microcytic anemia (HP:0001935) and Macrocytic anemia (HP:0001972) are both under Anemia (HP:0001903).
    train = pd.Series([["HP:0001935"], ["HP:0001972"], ["HP:0001935"], ["HP:0001972"]])
    rolled = MultiLabelIndicator(rollup=True, min_count=2).fit(train)
    assert "HP:0001903" in rolled.vocabulary_ and "HP:0000118" not in rolled.vocabulary_
    flat = MultiLabelIndicator(rollup=False, min_count=2).fit(train)
    assert set(flat.vocabulary_) == {"HP:0001935", "HP:0001972"}
    # An unseen anemia still lights the shared ancestor column; an unknown id lights nothing.
    unseen = rolled.transform(pd.Series([["HP:0001891"], ["HP:9999999"], []])).toarray()
    assert unseen[0, rolled.vocabulary_["HP:0001903"]] == 1
    assert unseen[1].sum() == 0 and unseen[2].sum() == 0
    assert "_cache" not in pickle.loads(pickle.dumps(rolled)).__dict__


def test_a_pipeline_pickled_with_the_former_private_function_names_still_loads():
    from processing import features

    for old, new in (("_to_float32", features.to_float32), ("_fill_missing_category", features.fill_missing_category)):
        assert pickle.loads(f"cprocessing.features\n{old}\n.".encode()) is new  # how an older artifact names it
        assert pickle.loads(pickle.dumps(new)) is new


@pytest.mark.parametrize("reduction, width", [("pca", None), ("lda", 4), ("both", 4)])
def test_reductions(data, reduction, width):
    frame, schema, _ = data
    splits = split_dataset(frame, schema, seed=3)
    y = splits.train["label"].map({c: i for i, c in enumerate(CATEGORIES)}).to_numpy()
    pipeline = build_feature_pipeline(schema, FeatureParams(reduction=reduction))
    X = pipeline.fit_transform(splits.train, y)
    full = build_feature_pipeline(schema, FeatureParams()).fit_transform(splits.train, y)
    assert X.shape[1] == (width or X.shape[1]) and X.shape[1] < full.shape[1]
    assert pipeline.transform(splits.validation).shape == (len(splits.validation), X.shape[1])


def test_feature_params_are_checked():
    with pytest.raises(ValueError, match="reduction must be one of"):
        FeatureParams(reduction="tsne").validate()
    with pytest.raises(ValueError, match="pca_components"):
        FeatureParams(pca_components=1.5).validate()


# ------------------------------------------------------------------------------------------------ resampling

def test_resampling_balances_train_only_and_keeps_indicators_binary(data):
    frame, schema, _ = data
    result = preprocess(frame, schema, PreprocessParams(resampling="smote", seed=0))
    natural = split_dataset(frame, schema, seed=0)
    # Validation and test keep the natural class mix, untouched.
    for name in ("validation", "test"):
        assert getattr(result.splits, name)["patient_id"].tolist() == getattr(natural, name)["patient_id"].tolist()
    counts = np.bincount(result.train.y)
    assert (counts == counts.max()).all() and len(result.train.y) > len(natural.train)
    # Synthetic patients have or have not a symptom.
    original = build_feature_pipeline(schema, FeatureParams()).fit_transform(natural.train)
    indicators = binary_columns(original)
    snapped = result.train.X[:, indicators]
    assert sp.issparse(snapped) and np.isin(snapped.data, (0.0, 1.0)).all()  # CSR: absent entries are 0


@pytest.mark.parametrize("method", ["smote", "adasyn", "undersample", "class_weights", "none"])
def test_each_method_and_tiny_classes(method):
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (60, 3)), rng.normal(0.5, 1, (3, 3)), rng.normal(-1, 1, (30, 3))])
    y = np.array([0] * 60 + [1] * 3 + [2] * 30)
    out = resample(X, y, method, seed=0)
    counts = np.bincount(out.y, minlength=3)
    assert len(out.X) == len(out.y) == len(out.sample_weight)
    if method in ("smote", "adasyn"):
        assert out.info["k_neighbors"] == 2  # a class of 3 samples: k adapts to 2
        assert counts[1] > 3
    elif method == "undersample":
        assert counts.tolist() == [3, 3, 3]
    elif method == "class_weights":
        assert np.allclose(np.bincount(out.y, weights=out.sample_weight), len(y) / 3)
    else:
        assert counts.tolist() == [60, 3, 30] and (out.sample_weight == 1).all()


@pytest.mark.parametrize("method", ["smote", "adasyn", "undersample", "class_weights", "none"])
def test_csr_rows_resample_as_the_dense_ones_and_stay_csr(method):
    """The feature pipeline's CSR goes through every method as it is: same rows as from the dense matrix."""
    rng = np.random.default_rng(1)
    indicators = (rng.random((93, 60)) < 0.1).astype(float)
    X = np.hstack([rng.normal(0, 1, (93, 3)), indicators])
    y = np.array([0] * 60 + [1] * 3 + [2] * 30)
    mask = binary_columns(X)
    assert mask.tolist() == binary_columns(sp.csr_matrix(X)).tolist() == [False] * 3 + [True] * 60
    dense = resample(X, y, method, seed=0, categorical=mask)
    csr = resample(sp.csr_matrix(X), y, method, seed=0, categorical=mask)
    assert sp.issparse(csr.X) and csr.X.format == "csr" and csr.X.dtype == np.float32
    np.testing.assert_array_equal(csr.y, dense.y)
    np.testing.assert_allclose(csr.X.toarray(), dense.X, atol=1e-6)
    if method == "smote":  # 60 indicator columns: SMOTE, then snapped to 0/1 (no explicit zeros left in the CSR)
        assert "snapped" in csr.info["variant"] and np.isin(csr.X[:, 3:].data, (1.0,)).all()


def test_dense_batches_fit_a_bounded_stratified_sample_and_apply_in_row_batches():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import HistGradientBoostingClassifier

    from processing.features import DenseBatches

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], [300, 200, 100])
    X = sp.csr_matrix(np.where(rng.random((600, 10)) < 0.3, rng.normal(y[:, None], 1.0, (600, 10)), 0.0))
    whole = DenseBatches(LinearDiscriminantAnalysis(), batch_rows=64).fit(X, y)  # under the bound: every row
    assert whole.fit_rows_ == 600
    np.testing.assert_allclose(whole.transform(X), LinearDiscriminantAnalysis().fit(X.toarray(), y)
                               .transform(X.toarray()), atol=1e-10)
    bounded = DenseBatches(LinearDiscriminantAnalysis(), max_fit_cells=2_000, batch_rows=64).fit(X, y)
    assert bounded.fit_rows_ == 200  # 2,000 cells of 10 columns
    np.testing.assert_allclose(bounded.estimator_.priors_, [0.5, 1 / 3, 1 / 6], atol=0.01)  # the class mix kept
    assert bounded.transform(X).shape == (600, 2)
    boosted = DenseBatches(HistGradientBoostingClassifier(max_iter=20, random_state=0), batch_rows=64)
    boosted.fit(X, y, sample_weight=np.ones(600))
    alone = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X.toarray(), y)
    np.testing.assert_array_equal(boosted.predict_proba(X), alone.predict_proba(X.toarray()))
    assert boosted.classes_.tolist() == [0, 1, 2] and not hasattr(boosted, "transform")


def test_adasyn_refusal_is_explained():
    X = np.vstack([np.zeros((10, 2)), np.full((4, 2), 50.0)]) + np.arange(14)[:, None] * 0.01
    y = np.array([0] * 10 + [1] * 4)
    with pytest.raises(ValueError, match="adasyn could not resample the training split"):
        resample(X, y, "adasyn")


def test_a_single_sample_class_falls_back_to_duplication():
    X = np.vstack([np.zeros((10, 2)), np.ones((1, 2))])
    y = np.array([0] * 10 + [1])
    out = resample(X, y, "smote")
    assert "random oversampling" in out.info["fallback"] and np.bincount(out.y).tolist() == [10, 10]


# ------------------------------------------------------------------------------------------------ the job

def listing(manifest: dict, names: list[str]) -> dict:
    """``manifest`` listing the parts written (paths in the version), as the ingest lists its own."""
    return {**manifest, "data_keys": [f"curated/{manifest['dataset']}/{manifest['version']}/{n}" for n in names]}


def container(tmp_path: Path, data) -> Path:
    frame, _, manifest = data
    base = tmp_path / "opt" / "ml" / "processing"
    source = base / "input" / "curated"
    source.mkdir(parents=True)
    frame.to_parquet(source / "data.parquet", index=False)
    (source / "manifest.json").write_text(json.dumps(listing(manifest, ["data.parquet"])))
    return base


def test_job_end_to_end_in_the_container_layout(tmp_path, data):
    base = container(tmp_path, data)
    assert main(["--base-dir", str(base), "--resampling", "class_weights", "--reduction", "pca"]) == 0
    out = base / "output"
    X, _, weight, _ = load_train(out / "train", len(CATEGORIES))
    summary = json.loads((out / "transformer" / "preprocess.json").read_text())
    assert X.shape == (summary["rows"]["train"], len(summary["feature_names"]))
    assert weight.std() > 0  # class weights delivered as sample weights
    assert summary["params"]["reduction"] == "pca" and summary["labels"] == list(CATEGORIES)
    pipeline = joblib.load(out / "transformer" / "feature_pipeline.joblib")
    test = read_split(out / "test")
    assert pipeline.transform(test).shape[1] == X.shape[1]
    assert summary["rows"]["test"] == len(test)
    # The validation split's features, transformed once here for every training job.
    tables = sorted((out / "validation").glob("*.parquet"))
    assert [p.stem for p in tables] == [p.stem for p in sorted((out / "validation").glob("*.npz"))]
    for table in tables:  # each part's rows and its features, row for row
        features = read_train(table.with_suffix(".npz"))
        validation = pd.read_parquet(table)
        dense = features.X.toarray() if sp.issparse(features.X) else features.X
        np.testing.assert_allclose(dense, np.asarray(pipeline.transform(validation).todense()
                                                     if sp.issparse(features.X) else pipeline.transform(validation)),
                                   rtol=1e-6)
        assert features.y.tolist() == [summary["labels"].index(v) for v in validation["label"]]
    # Running again into the same outputs is refused: no run overwrites another's.
    assert main(["--base-dir", str(base)]) == 1
    assert "refusing to overwrite" in (out / "failure").read_text()


def test_job_fails_at_once_on_bad_input(tmp_path, data, capsys, caplog):
    base = container(tmp_path, data)
    with pytest.raises(SystemExit):
        main(["--base-dir", str(base), "--reduction", "tsne"])
    assert "invalid choice: 'tsne'" in capsys.readouterr().err
    assert main(["--base-dir", str(base), "--pca-components", "2.5"]) == 1
    assert "pca_components" in (base / "output" / "failure").read_text()
    shutil.rmtree(base / "input")
    caplog.clear()
    assert main(["--base-dir", str(base)]) == 1
    said = (base / "output" / "failure").read_text()
    assert said.startswith("input ") and "does not exist" in said  # as written, not "FileNotFoundError: …"
    failed = [r for r in caplog.records if "preprocessing failed" in r.getMessage()]
    assert failed and not any(r.exc_info for r in failed)  # no traceback of the job's own code


# ------------------------------------------------------------------------------------------------ scale-out

def curated_in_parts(base: Path, data, rows: int) -> list[Path]:
    """The cohort as the ingest lays it out (data/part-NNNNN.parquet + manifest.json), in parts of ``rows``."""
    frame, _, manifest = data
    source = base / "input" / "curated"
    (source / "data").mkdir(parents=True)
    parts = []
    for number, start in enumerate(range(0, len(frame), rows)):
        parts.append(source / "data" / f"part-{number:05d}.parquet")
        frame.iloc[start:start + rows].to_parquet(parts[-1], index=False)
    (source / "manifest.json").write_text(json.dumps(listing(manifest, [p.relative_to(source).as_posix() for p in parts])))
    return parts


def outputs_of(folders: list[Path]) -> dict[str, dict[str, bytes]]:
    """Each transform output's files across ``folders`` (the instances' output roots), by split and name."""
    found: dict[str, dict[str, bytes]] = {}
    for root in folders:
        for split in ("train", "validation", "test"):
            for path in sorted((root / split).iterdir()):
                value = path.read_bytes() if path.suffix != ".npz" else path
                seen = found.setdefault(split, {}).setdefault(path.name, value)
                # Only the groups file comes from every instance, the same bytes (one S3 key written alike).
                assert seen is value or (path.name == GROUPS_FILE and seen == value), f"{path.name} from two instances"
    return found


def dense(X):
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def test_sharded_transform_gives_the_single_instance_output(tmp_path, data):
    """The fit once; the transform over 2 instances, each holding every other part (S3 sharding by key):
    the union of their outputs is the single instance's, file by file and value by value."""
    single = tmp_path / "single" / "processing"
    parts = curated_in_parts(single, data, rows=700)
    assert len(parts) >= 4
    assert main(["--base-dir", str(single), "--resampling", "class_weights"]) == 0

    fitted = tmp_path / "fit" / "processing"
    curated_in_parts(fitted, data, rows=700)
    assert main(["--base-dir", str(fitted), "--stage", "fit", "--transform-instances", "2"]) == 0
    hosts = []
    for index in range(2):
        host = tmp_path / f"algo-{index + 1}" / "processing"
        (host / "input" / "curated" / "data").mkdir(parents=True)
        for part in parts[index::2]:
            shutil.copy(part, host / "input" / "curated" / "data" / part.name)
        for name in ("transformer", "split"):
            shutil.copytree(fitted / "output" / name, host / "input" / name)
        (host.parent / "config").mkdir()
        (host.parent / "config" / "resourceconfig.json").write_text(
            json.dumps({"current_host": f"algo-{index + 1}", "hosts": ["algo-1", "algo-2"]}))
        assert main(["--base-dir", str(host), "--stage", "transform"]) == 0
        hosts.append(host / "output")

    one, two = outputs_of([single / "output"]), outputs_of(hosts)
    assert {k: sorted(v) for k, v in one.items()} == {k: sorted(v) for k, v in two.items()}
    for split in ("validation", "test"):
        for name in one[split]:
            if name.endswith(".npz"):  # a validation part's features: the same arrays
                a, b = read_train(one[split][name]), read_train(two[split][name])
                np.testing.assert_array_equal(dense(a.X), dense(b.X), err_msg=f"{split}/{name} differs")
                np.testing.assert_array_equal(a.y, b.y)
            else:
                assert one[split][name] == two[split][name], f"{split}/{name} differs"
    X1, y1, w1, _ = load_train(single / "output" / "train", len(CATEGORIES))
    merged = tmp_path / "merged-train"
    merged.mkdir()
    for path in two["train"].values():
        shutil.copy(path, merged / path.name)
    X2, y2, w2, _ = load_train(merged, len(CATEGORIES))
    np.testing.assert_array_equal(dense(X1), dense(X2))
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(w1, w2)
    # ...and the parts read in name order are the whole training split, as the in-memory preprocess makes it.
    frame, schema, _ = data
    whole = preprocess(frame, schema, PreprocessParams())
    np.testing.assert_allclose(dense(X1), dense(whole.train.X), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(w1, whole.train.sample_weight)
    pd.testing.assert_frame_equal(read_split(single / "output" / "validation"), whole.splits.validation)


def test_joint_resampling_is_refused_across_instances(tmp_path, data):
    base = tmp_path / "processing"
    curated_in_parts(base, data, rows=1000)
    assert main(["--base-dir", str(base), "--stage", "fit", "--resampling", "smote", "--transform-instances", "2"]) == 1
    failure = (base / "output" / "failure").read_text()
    assert "resampling smote needs every training row in one process" in failure and "ProcessingInstanceCount=1" in failure


def test_the_pipeline_is_fitted_on_a_bounded_sample_that_keeps_the_slice(data):
    frame, schema, _ = data
    keys = frame[[schema.id_column, schema.target, schema.slice_column, schema.group_column]]
    train = split_dataset(keys, schema).train
    chosen = fit_sample(train, schema, max_rows=1000, seed=0)
    in_slice = train[schema.slice_column].to_numpy(dtype=bool)
    assert len(chosen) == 1000 and (np.diff(chosen) > 0).all()
    assert in_slice[chosen].sum() == in_slice.sum()  # every slice row (rare diseases) is fitted on
    assert (fit_sample(train, schema, max_rows=len(train), seed=0) == np.arange(len(train))).all()
    fitted = preprocess(frame, schema, PreprocessParams(fit_max_rows=1000))
    assert len(fitted.train.y) == len(train)  # every training row transformed, the pipeline fitted on 1000


def test_missing_value_indicators_can_stay_zero_one_beside_the_scaled_numbers():
    """Standardised, an indicator of a value missing in 2 % of the rows became a column of ~7s that an L2-penalised
    model leaned on almost for free (pbc lost 0.05 macro recall); 0/1 it is a plain flag."""
    from diagnosa.data.schema import Field

    schema = Schema("labs", (Field("id", "string", role="id"), Field("y", "category", role="target"),
                             Field("albumin", "number"), Field("age", "number")), labels=("a", "b"))
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"id": [str(i) for i in range(200)], "y": ["a", "b"] * 100,
                          "albumin": rng.normal(3.5, 0.4, 200), "age": rng.normal(50, 10, 200)})
    train.loc[:3, "albumin"] = np.nan  # 2 % missing; age never is
    scaled = build_feature_pipeline(schema).fit(train)  # the default: standardised with the numbers
    column = np.asarray(scaled.transform(train))[:, list(scaled.get_feature_names_out()).index(
        "numeric__missingindicator_albumin")]
    assert column.max() == pytest.approx(np.sqrt(196 / 4), rel=1e-3)  # a 2 % gap: a column of ~7s there
    pipeline = build_feature_pipeline(schema, FeatureParams(missing_indicators="binary")).fit(train)
    X = np.asarray(pipeline.transform(train))
    names = list(pipeline.get_feature_names_out())
    flag = names.index("numeric__missingindicator_albumin")
    assert set(np.unique(X[:, flag])) == {0.0, 1.0} and X[:, flag].sum() == 4
    for number in ("numeric__albumin", "numeric__age"):
        assert abs(X[:, names.index(number)].mean()) < 1e-5 and X[:, names.index(number)].std() == pytest.approx(1, rel=1e-3)
    assert not any("age" in name and "missing" in name for name in names)  # a flag only where training had gaps
    # A patient missing a value that training always had: imputed, no error, no new column (serving must answer).
    served = np.asarray(pipeline.transform(train.head(1).assign(age=np.nan)))
    assert served.shape == (1, X.shape[1]) and np.isfinite(served).all()


def test_missing_value_flags_stack_into_a_sparse_matrix_beside_one_hot_categories():
    """A table of many category levels is stacked as CSR; the flags must be numbers for that (the covid table
    stopped with MissingIndicator's bool columns: 'all columns should be a numeric')."""
    from diagnosa.data.schema import Field

    schema = Schema("visits", (Field("id", "string", role="id"), Field("y", "category", role="target"),
                               Field("crp", "number"), Field("ward", "category")), labels=("a", "b"))
    frame = pd.DataFrame({"id": [str(i) for i in range(300)], "y": ["a", "b"] * 150,
                          "crp": [np.nan if i % 7 == 0 else float(i) for i in range(300)],
                          "ward": [f"w{i % 30}" for i in range(300)]})
    binary = FeatureParams(missing_indicators="binary")
    X = build_feature_pipeline(schema, binary).fit_transform(frame)
    assert sp.issparse(X) and X.dtype == np.float32
    names = list(build_feature_pipeline(schema, binary).fit(frame).get_feature_names_out())
    assert X[:, names.index("numeric__missingindicator_crp")].toarray().ravel().tolist() == \
        [1.0 if i % 7 == 0 else 0.0 for i in range(300)]


def test_an_unknown_missing_indicator_mode_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="missing_indicators must be one of scaled, binary, got 'unscaled'"):
        FeatureParams(missing_indicators="unscaled").validate()
    with pytest.raises(SystemExit):
        main(["--missing-indicators", "unscaled"])


def test_the_key_columns_are_read_checking_each_parts_columns_once(tmp_path, monkeypatch):
    # Each declared column re-read the part's Parquet footer: a table of 2,000 features took 38 s to start.
    import pyarrow.parquet as pq

    from processing import preprocess as job

    features = [Field(f"g{i}", "number") for i in range(300)]
    schema = Schema("wide", (Field("id", "string", role="id", required=True),
                             Field("label", "category", role="target", required=True, values=("a", "b")), *features),
                    ("a", "b"))
    parts = []
    for number in range(2):
        frame = pd.DataFrame({"id": [f"p{number}-{i}" for i in range(4)], "label": ["a", "b"] * 2,
                              **{f.name: np.arange(4.0) for f in features}})
        parts.append(tmp_path / f"part-{number}.parquet")
        frame.to_parquet(parts[-1], index=False)
    reads = []
    real = pq.read_schema
    monkeypatch.setattr(job.pq, "read_schema", lambda path, *a, **k: reads.append(path) or real(path, *a, **k))
    keys = job.read_keys(parts, schema)
    assert list(keys.columns) == ["id", "label"] and keys["id"].tolist()[4] == "p1-0" and len(keys) == 8
    assert reads == parts
    pd.DataFrame({"id": ["x"], "label": ["a"]}).to_parquet(parts[1], index=False)
    with pytest.raises(ValueError, match=r"part-1.parquet lacks columns the schema declares: g0, g1, g2"):
        job.read_keys(parts, schema)
