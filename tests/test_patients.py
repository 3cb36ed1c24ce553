"""Patients with several rows (visits, admissions, samples): a dataset's ``patient_column`` keeps each patient's rows
in one split, so no model is scored on a patient it was fitted on; ingestion keeps every visit, and the classes are
counted in patients."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from diagnosa.cli import main
from diagnosa.data.ingest import IngestError, ingest_csv, leakage_lines, load_curated
from diagnosa.data.schema import Field, Schema
from diagnosa.lake import DataLake
from processing import preprocess as pre
from processing.calibration import clustered_wilson_interval, wilson_interval
from processing.evaluate import evaluate_model
from processing.preprocess import preprocess
from processing.split import SplitError, patient_keys, read_split, split_dataset
from processing.trainset import read_train, read_train_patients, write_train
from training import tuning
from training.train import train

LABELS = ("a", "b", "c")


def visits_schema(patient_column: str | None = "patient") -> Schema:
    fields = (Field("visit", "string", role="id", required=True), Field("patient", "string", role="metadata"),
              Field("x", "number"), Field("outcome", "category", role="target", required=True, values=LABELS))
    return Schema("visits", fields, LABELS, patient_column=patient_column)


def visits(n_patients: int = 90, seed: int = 0) -> pd.DataFrame:
    """1 to 6 visits per patient; a patient's label mostly holds, and a fifth of them change class once."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = LABELS[p % 3]
        later = LABELS[(p + 1) % 3] if p % 5 == 0 else label
        n = int(rng.integers(1, 7))
        for v in range(n):
            rows.append({"visit": f"p{p}-v{v}", "patient": f"p{p}", "x": float(rng.normal()),
                         "outcome": label if v < (n + 1) // 2 else later})
    return pd.DataFrame(rows)


def patients_of(part: pd.DataFrame) -> set[str]:
    return set(part["patient"].dropna())


@pytest.mark.parametrize("seed", range(5))
def test_a_patients_rows_stay_in_one_split_and_every_class_is_in_every_split(seed):
    frame = visits(seed=seed)
    splits = split_dataset(frame, visits_schema(), seed=seed)
    train, validation, test = (patients_of(part) for _, part in splits.items())
    assert not train & validation and not train & test and not validation & test
    assert sum(len(part) for _, part in splits.items()) == len(frame)
    assert sorted(pd.concat([part for _, part in splits.items()])["visit"]) == sorted(frame["visit"])
    for _, part in splits.items():
        assert set(part["outcome"]) == set(LABELS)
    # Stratified by patient: the training split holds about 70 % of the patients.
    assert 0.6 <= len(train) / frame["patient"].nunique() <= 0.8


def test_without_a_patient_column_the_same_rows_split_across_patients():
    # The case the patient column exists for: rows of one patient on both sides of the split.
    frame = visits()
    splits = split_dataset(frame, visits_schema(None), seed=0)
    train, _, test = (patients_of(part) for _, part in splits.items())
    assert train & test


def test_one_row_per_patient_splits_exactly_as_rows_do():
    frame = visits().drop_duplicates("patient").reset_index(drop=True)
    by_patient = split_dataset(frame, visits_schema(), seed=3)
    by_row = split_dataset(frame, visits_schema(None), seed=3)
    for (_, a), (_, b) in zip(by_patient.items(), by_row.items()):
        assert a["visit"].tolist() == b["visit"].tolist()


def test_a_row_without_a_patient_is_a_patient_of_its_own():
    frame = visits()
    frame.loc[frame.index % 4 == 0, "patient"] = None
    splits = split_dataset(frame, visits_schema(), seed=1)
    placed = pd.concat([part.assign(split=name) for name, part in splits.items()])
    assert len(placed) == len(frame)
    known = placed.dropna(subset=["patient"])
    assert (known.groupby("patient")["split"].nunique() == 1).all()
    # The rows without a patient are not one patient: they land in more than one split.
    assert placed.loc[placed["patient"].isna(), "split"].nunique() == 3


def few_patients() -> pd.DataFrame:
    """Class a: 30 patients of 2 visits; class b: 12 visits of 2 patients; class c: 5 visits of 1 patient."""
    rows = [(f"a{p}-{v}", f"pa{p}", "a") for p in range(30) for v in range(2)]
    rows += [(f"b{i}", f"pb{i % 2}", "b") for i in range(12)] + [(f"c{i}", "pc", "c") for i in range(5)]
    return pd.DataFrame(rows, columns=["visit", "patient", "outcome"]).assign(x=1.5)


def test_classes_with_too_few_patients_are_all_named_in_patients():
    with pytest.raises(SplitError) as err:
        split_dataset(few_patients(), visits_schema(), seed=0)
    said = str(err.value)
    assert "2 classes too small" in said and "class 'b' has 2 patients, class 'c' has 1 patient" in said, said
    assert "at least 3 patients" in said and "'a'" not in said


def test_preprocess_reads_the_patient_column_and_keeps_patients_apart():
    frame = visits(120)
    out = preprocess(frame, visits_schema())
    train, validation, test = (patients_of(part) for _, part in out.splits.items())
    assert not train & validation and not train & test and not validation & test
    assert "patient" not in out.feature_names and not any(name.startswith("patient") for name in out.feature_names)


# ------------------------------------------------------------------------------------------------ ingestion

BASE = 'name = "visits"\nid_column = "visit"\ntarget = "outcome"\nlabels = ["a", "b", "c"]\n'


@pytest.fixture
def lake(tmp_path) -> DataLake:
    return DataLake.from_uri(str(tmp_path / "lake"))


def ingest(lake, tmp_path, config_text: str, frame: pd.DataFrame):
    csv, config = tmp_path / "visits.csv", tmp_path / "visits.toml"
    frame.to_csv(csv, index=False)
    config.write_text(config_text)
    return ingest_csv(lake, csv, config)


def test_every_visit_is_kept_and_the_patient_column_is_metadata_counted_per_class(lake, tmp_path):
    frame = visits()
    report = ingest(lake, tmp_path, BASE + 'patient_column = "patient"\n', frame)
    curated, manifest = load_curated(lake, "visits")
    assert len(curated) == len(frame) == report.rows and not report.reasons
    schema = Schema.from_dict(manifest["schema"])
    assert schema.patient_column == "patient" and schema.field("patient").role == "metadata"
    assert "patient" not in schema.features()
    expected = {label: frame.loc[frame["outcome"] == label, "patient"].nunique() for label in LABELS}
    assert manifest["patient_counts"] == expected
    # A dataset without a patient column keeps its manifest as it was.
    ingest(lake, tmp_path, BASE.replace('"visits"', '"rows"') + 'exclude = ["patient"]\n', frame)
    assert "patient_counts" not in load_curated(lake, "rows")[1]


def test_ingest_refuses_classes_with_too_few_patients_naming_each(lake, tmp_path):
    with pytest.raises(IngestError) as err:
        ingest(lake, tmp_path, BASE + 'patient_column = "patient"\n', few_patients())
    said = str(err.value)
    assert "class 'b' has 2 patients, class 'c' has 1 patient" in said and "one split" in said, said
    assert lake.list("curated/") == []


@pytest.mark.parametrize("config_text, message", [
    (BASE + 'patient_column = "visit"\n', "patient_column 'visit' is also the id_column: the id names each row"),
    (BASE + 'patient_column = "outcome"\n', "patient_column 'outcome' is also the target"),
    (BASE + 'patient_column = "patient"\nexclude = ["patient"]\n', "patient_column 'patient' is also in 'exclude'"),
    (BASE + 'patient_column = "Patient"\n', "patient_column 'Patient'"),
    (BASE + 'patient_column = ""\n', "'patient_column' must be a non-empty string"),
    (BASE + 'patient_column = "patient"\n[columns.patient]\nrole = "feature"\n',
     "[columns.patient] sets role of the patient column"),
    (BASE + 'patient_column = "patient"\n[columns.patient]\nrequired = true\n',
     "never required: a request may name no patient"),
    (BASE + 'patient_column = "patient"\n[columns.patient]\ntype = "number"\n',
     "[columns.patient] type 'number': a patient column is a string, a category or an integer"),
    (BASE + 'patient_column = "x"\n[slice]\ncolumn = "x"\nvalue = 1\n',
     "the patient column 'x' cannot be the slice's column"),
])
def test_a_bad_patient_column_is_refused_naming_what_is_wrong(lake, tmp_path, config_text, message):
    with pytest.raises(IngestError) as err:
        ingest(lake, tmp_path, config_text, visits())
    assert message in str(err.value), str(err.value)
    assert lake.list("curated/") == []


def test_a_patient_named_as_the_id_gets_the_patient_column_as_the_way_out(lake, tmp_path):
    # The patient as id_column: every visit after a patient's first conflicts, and the hint says what to do.
    frame = visits()
    frame = frame[frame["patient"].map(frame["patient"].value_counts()) > 1]
    with pytest.raises(IngestError) as err:
        ingest(lake, tmp_path, BASE.replace('"visit"', '"patient"') + 'exclude = ["visit"]\n', frame)
    said = str(err.value)
    assert "conflicting rows" in said and "name the patient's column in patient_column" in said, said


def test_the_run_checks_patients_per_class_before_any_step(tmp_path, capsys):
    # A curated version whose classes have rows enough but too few patients (edited, or ingested by hand).
    ws = ["--workspace", str(tmp_path / "ws")]
    lake = DataLake.from_uri(str(tmp_path / "ws" / "lake"))
    lake.put_json("curated/visits/00000000a001/manifest.json", {
        "dataset": "visits", "version": "00000000a001", "schema": visits_schema().to_dict(),
        "label_counts": {"a": 40, "b": 12, "c": 9}, "patient_counts": {"a": 20, "b": 2, "c": 3}})
    lake.put_json("curated/visits/LATEST.json", {"version": "00000000a001",
                                                 "manifest": "curated/visits/00000000a001/manifest.json"})
    assert main([*ws, "run", "--local", "--dataset", "visits"]) == 2
    err = capsys.readouterr().err
    assert "curated dataset visits version 00000000a001: 1 class too small" in err
    assert "class 'b' has 2 patients" in err and "'c'" not in err, err


def test_the_schema_round_trips_its_patient_column_and_older_schemas_keep_their_fingerprint():
    schema = visits_schema()
    assert Schema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert "patient_column" not in visits_schema(None).to_dict()
    with pytest.raises(ValueError, match="patient column 'x' must be a declared string, category or integer metadata"):
        Schema("v", visits_schema().fields, LABELS, patient_column="x")


# ------------------------------------------------------------------------------------------------ training's folds


def test_folds_keep_each_patients_rows_on_one_side_and_count_the_classes_in_patients():
    rng = np.random.default_rng(4)
    patients = np.repeat(np.arange(40), rng.integers(1, 6, size=40))
    y = (patients % 3 == 0).astype(int) + (patients % 7 == 0)  # a class per patient; class 2: 6 patients
    plan = tuning.plan_scored_folds(y, np.ones(len(y), dtype=bool), groups=patients * 7919 + 11)
    assert plan.smallest_class == len(set(patients[y == 2])) and plan.repeats == tuning.TINY_REPEATS
    for fit, score in plan.folds:
        assert not set(patients[fit]) & set(patients[score])
    scored = np.concatenate([score for _, score in plan.folds])
    assert np.array_equal(np.bincount(scored, minlength=len(y)), np.full(len(y), plan.repeats))
    # A fitting context (rows never scored) leaves the folds that score its patients.
    context = patients < 10
    plan = tuning.plan_scored_folds(y, ~context, groups=patients)
    for fit, score in plan.folds:
        assert not set(patients[fit]) & set(patients[score])
    with pytest.raises(ValueError, match="one patient key per row"):
        tuning.plan_scored_folds(y, ~context, groups=patients[:5])


def fingerprinted_visits(n_patients: int = 300, seed: int = 0) -> tuple[pd.DataFrame, Schema]:
    """Patients whose visits share a fingerprint (4 values of their own, a little noise from visit to visit) beside
    one weak feature of their class: a model that has seen a patient's other visits recognises the patient."""
    rng = np.random.default_rng(seed)
    shares = np.array([0.5, 0.35, 0.15])  # the rarest class: ~4 validation patients, so training cross-validates
    rows = []
    for p in range(n_patients):
        label = int(rng.choice(3, p=shares))
        print_ = rng.normal(size=4) * 3
        for v in range(int(rng.integers(3, 7))):
            rows.append({"visit": f"p{p}-v{v}", "patient": f"p{p}", "outcome": LABELS[label],
                         "x": label * 0.5 + rng.normal(),
                         **{f"f{i}": print_[i] + 0.05 * rng.normal() for i in range(4)}})
    fields = (Field("visit", "string", role="id", required=True), Field("patient", "string", role="metadata"),
              Field("outcome", "category", role="target", required=True, values=LABELS), Field("x", "number"),
              *(Field(f"f{i}", "number") for i in range(4)))
    return pd.DataFrame(rows), Schema("visits", fields, LABELS, patient_column="patient")


@pytest.fixture(scope="module")
def visits_run(tmp_path_factory):
    frame, schema = fingerprinted_visits()
    root = tmp_path_factory.mktemp("visits")
    source = root / "pre" / "input" / "curated"
    source.mkdir(parents=True)
    frame.to_parquet(source / "data.parquet", index=False)
    (source / "manifest.json").write_text(json.dumps({
        "schema": schema.to_dict(), "version": "v1", "dataset": "visits", "rows": len(frame),
        "data_keys": ["curated/visits/v1/data.parquet"]}), encoding="utf-8")
    assert pre.main(["--base-dir", str(root / "pre"), "--resampling", "class_weights"]) == 0
    return frame, schema, root / "pre" / "output"


def test_preprocess_writes_each_training_rows_patient_beside_it(visits_run):
    frame, schema, out = visits_run
    membership = pd.read_parquet(out / "split" / pre.MEMBERSHIP_FILE)
    train_rows = frame.set_index("visit").loc[membership.loc[membership["split"] == 0, "visit"]].reset_index()
    assert np.array_equal(read_train_patients(out / "train" / "data.npz"), patient_keys(train_rows, schema))


def test_cross_validation_by_patient_reports_what_new_patients_get(visits_run, tmp_path):
    """Scored out of fold by fits that had seen the same patients' other visits, the reported validation recall
    was far above the test split's (new patients); with the patients' keys it estimates it."""
    _, _, out = visits_run
    grouped = train(out / "train", out / "validation", out / "transformer", "random_forest", {}, 0).model
    # The same rows without the keys (a train channel written before they travelled): folds split patients.
    rows = read_train(out / "train" / "data.npz")
    mixed_dir = tmp_path / "train"
    mixed_dir.mkdir()
    write_train(mixed_dir / "data.npz", rows.X, rows.y, rows.sample_weight)
    mixed = train(mixed_dir, out / "validation", out / "transformer", "random_forest", {}, 0).model
    assert grouped.metadata["search"]["regime"] == "cross-validation"
    assert grouped.metadata["search"]["folds_by_patient"] is True
    assert mixed.metadata["search"]["folds_by_patient"] is False
    test = evaluate_model(grouped, read_split(out / "test"))["diagnosa"]["macro"]["recall"]
    reported, leaked = grouped.metadata["validation"]["macro_recall"], mixed.metadata["validation"]["macro_recall"]
    assert leaked > reported + 0.2, (leaked, reported, test)
    assert abs(reported - test) < 0.2, (reported, test)


# ------------------------------------------------------------------------------------------------ the note


def visit_table(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    """A file of visits, a patient's next to each other: a patient number, the patient's sex and age at entry, a lab
    per visit."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        sex, entry, level = "MF"[p % 2], round(float(rng.uniform(20, 80)), 2), rng.normal()
        for _ in range(int(rng.integers(1, 6))):  # a patient's lab stays near the patient's own level
            rows.append({"visit": f"v{len(rows)}", "pid": 1000 + p, "sex": sex, "entry_age": entry,
                         "lab": round(float(level + 0.3 * rng.normal()), 3), "outcome": LABELS[p % 3]})
    return pd.DataFrame(rows)


def test_a_patient_number_over_visits_gets_a_note_naming_patient_column(lake, tmp_path):
    frame = visit_table()
    report = ingest(lake, tmp_path, BASE, frame)
    manifest = load_curated(lake, "visits")[1]
    assert manifest["patient_columns"] == {"pid": {"values": 60, "most_rows": int(frame["pid"].value_counts().max()),
                                                   "constant": ["sex", "entry_age"]}}
    [line] = [x for x in leakage_lines(manifest) if "patient" in x]
    assert "column 'pid' looks like a patient's number over several rows: its 60 values" in line
    assert "sex, entry_age hold one value within each" in line and 'patient_column = "pid"' in line
    assert report.rows == len(frame)  # a note: every row kept


def test_a_patient_number_put_in_exclude_gets_the_note_too(lake, tmp_path):
    # Excluded, it is no feature, yet the split by row is as leaky as with it kept (a probe: +0.25 on pbcseq).
    report = ingest(lake, tmp_path, BASE + 'exclude = ["pid"]\n', visit_table())
    manifest = load_curated(lake, "visits")[1]
    assert manifest["patient_columns"]["pid"]["excluded"] is True
    [line] = [x for x in leakage_lines(manifest) if "patient" in x]
    assert "column 'pid' (excluded) looks like a patient's number" in line
    assert line.endswith('(patient_column = "pid", and take it out of exclude)')
    assert "pid" not in Schema.from_dict(manifest["schema"]).features() and report.rows > 0


def test_a_patient_holding_a_tenth_of_the_rows_or_more_is_noted_a_placeholder_perhaps(lake, tmp_path):
    frame = visits()
    ingest(lake, tmp_path, BASE + 'patient_column = "patient"\n', frame)
    assert "heavy_patients" not in load_curated(lake, "visits")[1]  # 90 patients of 1 to 6 visits: none
    frame.loc[frame.index[::3], "patient"] = "UNKNOWN"
    ingest(lake, tmp_path, BASE + 'patient_column = "patient"\n', frame)
    manifest = load_curated(lake, "visits")[1]
    rows = int((frame["patient"] == "UNKNOWN").sum())
    assert manifest["heavy_patients"] == {"patients": 1, "rows": rows, "of_rows": len(frame),
                                          "examples": [["UNKNOWN", rows]]}
    [line] = [x for x in leakage_lines(manifest) if "hold" in x]
    assert f"1 patient holds {rows:,} of the {len(frame):,} rows ('UNKNOWN' {rows:,})" in line
    assert "far from 70/20/10" in line and "Leave those cells empty" in line


def test_a_patient_column_named_as_the_answers_id_is_refused_with_one_way_out_and_the_note_says_it(lake, tmp_path):
    """The endpoint's answers give each row's id as 'patient_id', and it takes the patient column in requests: a
    patient column so named would read as the visit's id. Each piece of advice leads to renaming it (a probe followed
    the old advice round a circle: make it the id, exclude it, name it in patient_column)."""
    frame = visit_table().rename(columns={"pid": "patient_id"})
    with pytest.raises(IngestError, match=r"the patient column cannot be named 'patient_id'.*Rename the column"):
        ingest(lake, tmp_path, BASE + 'patient_column = "patient_id"\n', frame)
    ingest(lake, tmp_path, BASE + 'exclude = ["patient_id"]\n', frame)
    [line] = [x for x in leakage_lines(load_curated(lake, "visits")[1]) if "patient" in x]
    assert "column 'patient_id' (excluded) looks like a patient's number" in line
    assert "rename it" in line and 'patient_column = "patient", say' in line
    assert 'patient_column = "patient_id"' not in line


@pytest.mark.parametrize("change", ["declared", "shuffled", "sorted_by_a_measurement", "derived_columns",
                                    "one_patient_attribute", "a_doctors_patients"])
def test_no_note_where_rows_are_not_a_patients_visits_or_the_column_is_declared(lake, tmp_path, change):
    frame = visit_table()
    config = BASE
    if change == "declared":
        config += 'patient_column = "pid"\n'
    elif change == "shuffled":  # no longer next to each other: nothing tells visits from patients alike
        frame = frame.sample(frac=1.0, random_state=1)
    elif change == "sorted_by_a_measurement":  # runs of equal ages, within which the sex changes
        rng = np.random.default_rng(2)
        frame = frame.assign(pid=np.sort(rng.integers(20, 80, size=len(frame))),
                             sex=rng.choice(["M", "F"], size=len(frame)))
    elif change == "derived_columns":  # one row per patient sorted by an age, with two columns derived from it
        rng = np.random.default_rng(3)
        frame = frame.assign(pid=np.sort(rng.integers(20, 80, size=len(frame))), sex=rng.choice(["M", "F"], len(frame)))
        frame = frame.assign(sex=frame["pid"] // 10, entry_age=frame["pid"] >= 65)  # an age band, a flag (a probe's)
    elif change == "one_patient_attribute":  # the sex alone stays constant: nothing says these are one patient's
        frame = frame.drop(columns=["entry_age"])
    else:  # a doctor's patients, one row each: the doctor's sex and age, and patients' labs unlike one another
        rng = np.random.default_rng(4)
        frame = frame.assign(lab=rng.normal(size=len(frame)).round(3))
    ingest(lake, tmp_path, config, frame)
    assert "patient_columns" not in load_curated(lake, "visits")[1]


def test_rows_without_a_patient_and_patients_but_for_case_are_noted_and_na_is_missing(lake, tmp_path):
    frame = visits()
    frame.loc[frame.index % 10 == 3, "patient"] = "NA"  # R's write.csv: a missing value, not one patient "NA"
    rows = frame.index[frame["patient"] == "p8"]  # six visits, none of them at an index ending in 3
    assert len(rows) == 6
    frame.loc[rows[1], "patient"] = "P8"  # the same patient, written otherwise at a later visit
    report = ingest(lake, tmp_path, BASE + 'patient_column = "patient"\n', frame)
    curated, manifest = load_curated(lake, "visits")
    assert report.rows == len(frame) and curated["patient"].isna().sum() == (frame["patient"] == "NA").sum()
    assert manifest["rows_without_patient"] == (frame["patient"] == "NA").sum()
    assert manifest["patients_but_for_case"] == {"patients": 1, "examples": [["P8", "p8"]]}
    lines = leakage_lines(manifest)
    assert any(f"{manifest['rows_without_patient']} rows without a patient" in line for line in lines), lines
    assert any("1 patient written otherwise but for case in the patient column ('P8' and 'p8')" in line
               for line in lines), lines
    # The split: the NA rows are patients of their own, not one patient "NA" in one split.
    splits = split_dataset(curated, Schema.from_dict(manifest["schema"]), seed=0)
    assert sum(part["patient"].isna().any() for _, part in splits.items()) == 3


# ------------------------------------------------------------------------------------------------ intervals


def test_the_interval_over_patients_is_wilsons_for_one_row_each_and_wider_for_repeated_visits():
    one_each = clustered_wilson_interval(np.r_[np.ones(30), np.zeros(10)], np.ones(40))
    assert np.allclose(one_each, wilson_interval(30, 40), atol=0.01)
    # 10 patients of 8 visits, each patient all right or all wrong: 10 observations, not 80.
    hits, rows = np.r_[np.full(7, 8.0), np.zeros(3)], np.full(10, 8)
    by_patient, by_row = clustered_wilson_interval(hits, rows), wilson_interval(56, 80)
    assert by_patient[1] - by_patient[0] > 1.8 * (by_row[1] - by_row[0])
    from scipy.stats import t as student

    n_eff = 9.0 * (1.959963984540054 / student.ppf(0.975, 9)) ** 2  # Korn and Graubard's, on 10 - 1 degrees
    assert np.allclose(by_patient, wilson_interval(0.7 * n_eff, n_eff), atol=1e-9)
    # Three patients of 10 visits: one visit missed says little of a variance (a re-run probe: 0.830-0.994 before
    # the degrees of freedom counted, against 0.439-1.000 with none missed).
    all_right = clustered_wilson_interval(np.full(3, 10.0), np.full(3, 10))
    one_missed = clustered_wilson_interval(np.array([10.0, 10.0, 9.0]), np.full(3, 10))
    assert all_right[0] < 0.45 and one_missed[0] < 0.6
    # No variance between patients (all right): as many observations as patients.
    assert clustered_wilson_interval(np.full(5, 4.0), np.full(5, 4)) == wilson_interval(5, 5)
    assert clustered_wilson_interval(np.zeros(0), np.zeros(0)) is None


def test_intervals_over_patients_cover_the_recall_where_intervals_over_rows_do_not():
    rng = np.random.default_rng(0)
    covered = {"patients": 0, "rows": 0}
    for _ in range(400):
        visits_ = rng.integers(1, 9, size=40)
        right = rng.random(40) < 0.7  # a patient is found at every visit or at none: recall 0.7
        hits = np.where(right, visits_, 0)
        for name, (low, high) in (("patients", clustered_wilson_interval(hits, visits_)),
                                  ("rows", wilson_interval(int(hits.sum()), int(visits_.sum())))):
            covered[name] += low <= 0.7 <= high
    assert covered["patients"] / 400 >= 0.9, covered
    assert covered["rows"] / 400 < 0.75, covered


def test_the_evaluation_gives_each_classs_patients_and_intervals_over_them(visits_run):
    _, schema, out = visits_run
    model = train(out / "train", out / "validation", out / "transformer", "logistic_regression", {}, 0).model
    test = read_split(out / "test")
    honest = evaluate_model(model, test)["diagnosa"]["honest"]
    assert honest["intervals"] == "wilson over patients (effective sample size)"
    for label, row in honest["recall"].items():
        mine = test["outcome"] == label
        assert row["patients"] == test.loc[mine, "patient"].nunique() and row["support"] == int(mine.sum())
        low, high = row["recall_ci95"]
        plain_low, plain_high = wilson_interval(row["hits"], row["support"])
        assert high - low >= plain_high - plain_low - 1e-9, (label, row)
    assert evaluate_model(model, test)["diagnosa"]["patients"] == test["patient"].nunique()
    rows_only = evaluate_model(model, test.drop(columns=["patient"]))["diagnosa"]["honest"]
    assert rows_only["intervals"] == "wilson" and "patients" not in rows_only["recall"]["a"]


def test_the_report_says_test_rows_naming_no_patient_may_have_rows_in_training(visits_run, tmp_path):
    """Feedback on a request that named no patient is a patient of its own to the split: the report no longer says of
    such rows that none of their patients had a row in training (a probe: 73 % of a retraining's test rows had)."""
    from processing.metrics import write_report

    _, _, out = visits_run
    model = train(out / "train", out / "validation", out / "transformer", "logistic_regression", {}, 0).model
    test = read_split(out / "test")
    named = evaluate_model(model, test)
    assert named["diagnosa"]["rows_without_patient"] == 0
    report = (tmp_path / "named")
    write_report(named, report)
    assert "(split by patient: none of them had a row in training)" in (report / "report.md").read_text()
    unnamed = test.copy()
    unnamed.loc[unnamed.index[:3], "patient"] = None
    evaluation = evaluate_model(model, unnamed)
    assert evaluation["diagnosa"]["rows_without_patient"] == 3
    write_report(evaluation, tmp_path / "unnamed")
    text = (tmp_path / "unnamed" / "report.md").read_text()
    assert "no patient named had a row in training; 3 rows name no patient" in text
    assert "none of them had a row in training" not in text


def test_the_decision_weights_are_cross_fitted_and_tested_by_patient():
    # 30 patients of 10 visits: halves by row would put every patient in both.
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(30), 10)
    y = np.repeat(np.arange(30) % 3, 10)
    proba = rng.dirichlet(np.ones(3), size=300)
    seen = []
    import processing.decisions as decisions

    real = decisions.fit_decision_weights

    def spy(p, y_, w, **kwargs):
        seen.append([int(np.flatnonzero((proba == row).all(axis=1))[0]) for row in p])
        return real(p, y_, w, **kwargs)

    decisions.fit_decision_weights = spy
    try:
        with_patients = decisions.cross_fitted_predictions(proba, y, patients=patients, seed=1)
    finally:
        decisions.fit_decision_weights = real
    assert len(with_patients) == 300 and len(seen) == 2 and sorted(seen[0] + seen[1]) == list(range(300))
    for rows in seen:  # each half holds every visit of its patients, and none of the others'
        assert all(np.bincount(patients[rows])[np.unique(patients[rows])] == 10)
    # Counted in patients, a gain on 2 patients' 20 visits is no significant gain; counted in rows it was.
    plain = np.zeros(300, dtype=int)
    crossed = plain.copy()
    crossed[(y == 1) & (patients < 6)] = 1  # the worst class (1, never found) found for patients 1 and 4
    assert decisions.weights_pay_off(y, plain, crossed, 3)
    assert not decisions.weights_pay_off(y, plain, crossed, 3, patients=patients)


def test_a_slice_with_groups_and_patients_holds_groups_out_whole_and_keeps_patients_whole():
    rng = np.random.default_rng(5)
    rows = []
    for p in range(150):
        rare = p % 3 == 0  # a third of the patients have one of 8 rare diseases
        disease = f"ORPHA:{p % 8}" if rare else None
        for v in range(int(rng.integers(1, 5))):
            rows.append({"visit": f"p{p}-v{v}", "patient": f"p{p}", "x": float(rng.normal()),
                         "outcome": LABELS[p % 3 if not rare else (p // 3) % 3], "rare": rare, "disease": disease})
    frame = pd.DataFrame(rows)
    fields = (*visits_schema().fields, Field("rare", "boolean", role="metadata"),
              Field("disease", "string", role="metadata"))
    schema = Schema("visits", fields, LABELS, slice_column="rare", group_column="disease", patient_column="patient")
    for seed in range(3):
        splits = split_dataset(frame, schema, seed=seed)
        train, validation, test = (patients_of(part) for _, part in splits.items())
        assert not train & validation and not train & test and not validation & test
        held_out = set(frame["disease"].dropna()) - splits.train_groups
        assert held_out and not held_out & set(splits.train["disease"].dropna())
        assert held_out & set(splits.test["disease"].dropna())  # the gate measures unseen diseases on test


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_table_of_visits_runs_end_to_end_split_trained_and_evaluated_by_patient(tmp_path, capsys):
    """`data ingest` and `run --local --dataset` on a table of visits: the pipeline's Preprocess, Train and Evaluate
    steps (the executor, the jobs' container contract) keep patients apart and say so."""
    frame, _ = fingerprinted_visits(200, seed=2)
    csv, config = tmp_path / "visits.csv", tmp_path / "visits.toml"
    frame.to_csv(csv, index=False)
    config.write_text(BASE + 'patient_column = "patient"\n[gate]\nrecall = 0.0\n')
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "data", "ingest", str(csv), "--config", str(config)]) == 0
    assert main([*ws, "run", "--local", "--dataset", "visits", "--families", "logistic_regression"]) == 0, \
        capsys.readouterr()
    run = next((tmp_path / "ws" / "lake" / "artifacts" / "runs").iterdir())
    membership = pd.read_parquet(run / "split" / pre.MEMBERSHIP_FILE).merge(frame[["visit", "patient"]])
    assert (membership.groupby("patient")["split"].nunique() == 1).all()
    assert sorted(membership["split"].unique()) == [0, 1, 2]
    evaluation = json.loads((run / "evaluation" / "evaluation.json").read_text())
    honest = evaluation["diagnosa"]["honest"]
    assert honest["intervals"] == "wilson over patients (effective sample size)"
    test_patients = membership.loc[membership["split"] == 2, "patient"].nunique()
    assert sum(row["patients"] for row in honest["recall"].values()) == test_patients
    report = (run / "report" / "report.md").read_text()
    assert "the intervals are over patients" in report and evaluation["diagnosa"]["patients"] == test_patients
    assert f"rows of {test_patients} patients (split by patient" in report
    shares = evaluation["diagnosa"]["split"]
    assert shares["rows"] == {name: int((membership["split"] == code).sum()) for code, name in
                              enumerate(("train", "validation", "test"))} and shares["far"] == {}
    assert f"- Split: {shares['rows']['train']:,} training · " in report and "**Note:**" not in report


@pytest.mark.slow
def test_a_split_far_from_the_shares_asked_is_said_in_the_report_and_the_runs_summary(tmp_path, capsys):
    """A placeholder patient on half the rows: the split keeps its rows in one split, so the shares are far from
    70/20/10 whichever split it lands in (a probe's table left training 1,389 of 6,945 rows, and nothing said so)."""
    frame, _ = fingerprinted_visits(200, seed=2)
    frame.loc[frame.index[::2], "patient"] = "UNKNOWN"
    csv, config = tmp_path / "visits.csv", tmp_path / "visits.toml"
    frame.to_csv(csv, index=False)
    config.write_text(BASE + 'patient_column = "patient"\n[gate]\nrecall = 0.0\n')
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "data", "ingest", str(csv), "--config", str(config)]) == 0
    capsys.readouterr()
    assert main([*ws, "run", "--local", "--dataset", "visits", "--families", "logistic_regression"]) == 0
    printed = capsys.readouterr().out
    run = next((tmp_path / "ws" / "lake" / "artifacts" / "runs").iterdir())
    membership = pd.read_parquet(run / "split" / pre.MEMBERSHIP_FILE)
    rows = {name: int((membership["split"] == code).sum()) for code, name in enumerate(("train", "validation", "test"))}
    split = json.loads((run / "evaluation" / "evaluation.json").read_text())["diagnosa"]["split"]
    assert split["rows"] == rows and split["asked"] == [0.7, 0.2, 0.1] and split["unit"] == "patient" and split["far"]
    for name, far in split["far"].items():
        assert far["share"] == round(rows[name] / len(frame), 4) and abs(far["share"] - far["asked"]) > far["asked"] / 3
    report = (run / "report" / "report.md").read_text()
    assert "- **Note:** the split's row shares lie far from those asked (" in report
    [note] = [line for line in printed.splitlines() if line.startswith("  note: the split's row shares")]
    assert "heavy_patients" in note


def test_a_split_far_off_names_what_the_split_keeps_together():
    from processing.metrics import split_lines
    from processing.split import share_departures

    rows = {"train": 500, "validation": 400, "test": 100}
    line, note = split_lines({"rows": rows, "asked": [0.7, 0.2, 0.1], "unit": "row", "groups": True,
                              "far": share_departures(rows, (0.7, 0.2, 0.1))})
    assert line == "500 training · 400 validation · 100 test rows (50 % · 40 % · 10 %; asked 70 · 20 · 10 %)"
    assert note is not None and note.startswith("the split's row shares lie far from those asked (validation 40 %, "
                                                "asked 20 %): it keeps each held-out group")
    assert "patient" not in note
    _, of_patients = split_lines({"rows": rows, "asked": [0.7, 0.2, 0.1], "unit": "patient", "groups": False,
                                  "far": share_departures(rows, (0.7, 0.2, 0.1))})
    assert of_patients is not None and "it keeps each patient's rows in one split" in of_patients
    assert "group" not in of_patients and "heavy_patients" in of_patients


@pytest.mark.parametrize(("rows", "far"), [
    ({"train": 700, "validation": 200, "test": 100}, set()),
    ({"train": 1733, "validation": 420, "test": 203}, set()),  # pbcseq split by patient (a real table)
    ({"train": 1389, "validation": 5365, "test": 191}, {"train", "validation", "test"}),  # one patient of 5,000 rows
    ({"train": 6413, "validation": 353, "test": 179}, {"validation", "test"}),  # the same, on another seed
    ({"train": 720, "validation": 240, "test": 40}, {"test"}),
    ({"train": 850, "validation": 100, "test": 50}, {"validation", "test"}),  # a patient of half the rows (a probe)
    ({"train": 700, "validation": 230, "test": 70}, set()),  # 0.03 away: within a third of either fraction
    ({"train": 0, "validation": 0, "test": 0}, set()),
])
def test_a_splits_share_is_far_when_it_lies_over_a_third_of_its_fraction_away(rows, far):
    from processing.split import share_departures

    found = share_departures(rows, (0.7, 0.2, 0.1))
    assert set(found) == far
    assert all(found[name]["share"] == round(rows[name] / sum(rows.values()), 4) for name in found)


@pytest.mark.parametrize("seed", range(8))
def test_patients_holding_two_classes_still_leave_every_class_in_every_split(seed):
    # A re-run probe's table: class A, 3 patients of 5 rows; class B, one row of each of those and of a fourth; the
    # three were placed by their rarer class B, and on 3 seeds of 8 class A's all landed in one split.
    rows = [(f"p{p}-a{v}", f"p{p}", "a") for p in range(1, 4) for v in range(5)]
    rows += [(f"p{p}-b", f"p{p}", "b") for p in range(1, 5)]
    rows += [(f"q{p}-{v}", f"q{p}", "c") for p in range(200) for v in range(1 + p % 3)]
    frame = pd.DataFrame(rows, columns=["visit", "patient", "outcome"]).assign(x=1.0)
    splits = split_dataset(frame, visits_schema(), seed=seed)
    sets = [patients_of(part) for _, part in splits.items()]
    assert not sets[0] & sets[1] and not sets[0] & sets[2] and not sets[1] & sets[2]
    for _, part in splits.items():
        assert set(part["outcome"]) == set(LABELS)


def test_a_patient_column_of_one_row_each_is_not_offered_as_a_category_to_learn_from(lake, tmp_path):
    frame = visits().drop_duplicates("patient")
    report = ingest(lake, tmp_path, BASE + 'patient_column = "patient"\n', frame)
    assert "patient" not in report.inferred_columns


def test_the_note_needs_no_column_of_one_value_per_patient(lake, tmp_path):
    # Age given at each visit (the usual export): only the sex and a treatment arm stay constant (a re-run probe:
    # pbcseq so written got no note while a rule asked for a column of nearly one value per patient).
    frame = visit_table()
    frame = frame.assign(entry_age=frame["entry_age"] + np.arange(len(frame)) % 5, arm=frame["pid"] % 3 == 0)
    ingest(lake, tmp_path, BASE, frame)
    seen = load_curated(lake, "visits")[1]["patient_columns"]["pid"]
    assert seen["constant"] == ["sex", "arm"]
