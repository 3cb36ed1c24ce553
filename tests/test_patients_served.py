"""A dataset of visits after training: the endpoint takes each record's patient (never a feature), the monitor
counts patients, not visits, in its drift tests and live recall intervals, and a retraining's feedback rows keep
their patient, so the split holds a returning patient's visits together."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from diagnosa.data.schema import Field, Schema
from inference.schema import RequestSchema
from monitoring.drift import DriftThresholds, data_drift, feature_drift, patient_codes, prediction_drift
from monitoring.quality import QualityThresholds, live_quality
from monitoring.stats import ks_weighted
from monitoring.traffic import PATIENT, patient_key, traffic_from_events
from processing.baseline import BaselineError, data_baseline, parse_data_baseline
from processing.split import effective_rows, worth_share

LABELS = ("a", "b")


def visits_schema(kind: str = "string") -> Schema:
    return Schema("visits", (Field("visit", "string", role="id", required=True), Field("patient", kind, role="metadata"),
                             Field("x", "number"), Field("sex", "category", values=("F", "M")),
                             Field("outcome", "category", role="target", required=True, values=LABELS)),
                  LABELS, patient_column="patient", missing_values=("NA",))


# ------------------------------------------------------------------------------------------------ the endpoint

def test_the_endpoint_takes_a_records_patient_checked_as_ingestion_reads_the_column():
    schema = RequestSchema(visits_schema())
    assert schema.accepted == ["visit", "x", "sex", "patient"]
    for patient in ("P-007", 7, " p 7 ", "", None, "Zoë"):
        clean, problems = schema.validate(0, {"x": 1.5, "patient": patient})
        assert problems == [] and "patient" not in clean  # checked, never a feature
    for patient, said in ((True, "got bool"), (7.5, "got float"), ([7], "got list"), ({"id": 7}, "got dict")):
        _, [problem] = schema.validate(0, {"x": 1.5, "patient": patient})
        assert problem.field == "patient" and "the patient's id: expected a string or an integer" in problem.problem
        assert said in problem.problem
    # a field name read as ingestion reads a header ('x ' is x) or an unknown field beside: only that one is named
    assert schema.validate(0, {" x ": 1.5, "patient": "P-007"})[1] == []
    _, [problem] = schema.validate(0, {"x": 1.5, "patient": "P-007", "junk": 1})
    assert problem.field == "junk"
    _, [problem] = schema.validate(0, {"x": 1.5, "patient": "P\x00007"})  # ingestion would refuse its feedback row
    assert problem.field == "patient" and "NUL character" in problem.problem
    _, [problem] = schema.validate(0, {"patient": "P-007"})  # a patient alone is no input of the model
    assert "none of the model's input fields" in problem.problem
    assert schema.to_json_schema()["properties"]["patient"]["type"] == ["string", "null"]


def test_an_integer_patient_column_takes_whole_numbers_and_csv_texts_as_ingestion_reads_them():
    schema = RequestSchema(visits_schema("integer"))
    assert schema.validate(0, {"x": 1.0, "patient": 12})[1] == []
    assert schema.validate(0, {"x": 1.0, "patient": "12"}, text=True)[1] == []  # a CSV cell
    assert schema.validate(0, {"x": 1.0, "patient": "NA"}, text=True)[1] == []  # missing, as ingestion reads NA
    _, [problem] = schema.validate(0, {"x": 1.0, "patient": "P12"})
    assert problem.field == "patient" and "expected a number" in problem.problem
    _, [problem] = schema.validate(0, {"x": 1.0, "patient": 2 ** 60})
    assert "not an exact integer" in problem.problem


def test_the_patient_is_read_from_the_captured_request_as_ingestion_reads_it():
    assert [patient_key(v, text=False) for v in ("P7", " P7 ", "Zoe\u0308", 7, 7.0, "", None, True, [7])] == \
        ["P7", "P7", "Zoë", "7", "7", None, None, None, None]
    assert patient_key("NA", text=True, missing=frozenset({"NA"})) is None
    assert patient_key("NA", text=False, missing=frozenset({"NA"})) == "NA"  # a JSON string is what it says

    def event(i: int, records: list[dict]) -> dict:
        predictions = [{"category": "a", "model_version": "v1"} for _ in records]
        return {"eventMetadata": {"eventId": f"e{i}", "inferenceTime": "2026-12-07T10:00:00Z"},
                "captureData": {"endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                                                  "data": json.dumps({"instances": records}), "encoding": "JSON"},
                                "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                                   "data": json.dumps({"predictions": predictions}),
                                                   "encoding": "JSON"}}}
    traffic = traffic_from_events([event(0, [{"x": 1.0, "patient": "P1"}, {"x": 2.0, "patient": " P1"}]),
                                   event(1, [{"x": 3.0}])], {"x": "numeric"}, patient="patient")
    assert traffic.rows[PATIENT].iloc[:2].tolist() == ["P1", "P1"] and pd.isna(traffic.rows[PATIENT].iloc[2])
    assert PATIENT not in traffic_from_events([event(0, [{"x": 1.0}])], {"x": "numeric"}).rows


# ------------------------------------------------------------------------------------------------ the baseline

def test_the_data_baseline_names_the_patient_column_for_the_monitor():
    frame = pd.DataFrame({"visit": ["v1", "v2", "v3"], "x": [1.0, 2.0, 3.0], "sex": ["F", "M", "F"],
                          "patient": ["p", "p", "q"]})
    statistics, constraints = data_baseline(frame, visits_schema())
    baseline = parse_data_baseline(statistics, constraints)
    assert baseline.patient_column == "patient" and "patient" not in baseline.features
    assert "NA" in baseline.patient_missing_values
    assert baseline.effective_rows == 9 / 5 and baseline.sample_scale == 0.6  # (2 + 1)^2 / (4 + 1) of 3 rows
    no_patients = Schema("one", visits_schema().fields, LABELS)
    assert parse_data_baseline(*data_baseline(frame, no_patients)).patient_column is None
    statistics["dataset"]["diagnosa"]["patient_column"] = "x"  # a feature
    with pytest.raises(BaselineError, match="patient_column"):
        parse_data_baseline(statistics, constraints)


def test_visits_read_as_rows_are_said_from_ingestion_through_the_baseline_to_the_monitors_report(tmp_path, capsys):
    """A table of visits ingested without a patient column: ingestion notes the column that repeats a patient's
    number, Preprocess's baseline records it, and every monitoring report says why its drift tests overcount, and
    what to set: the tests take such rows as independent (60 % of a real table's clean windows called drift)."""
    from test_patients import BASE, visit_table

    from diagnosa.cli import main
    from diagnosa.data.ingest import ingest_csv, load_curated
    from diagnosa.lake import DataLake
    from monitoring.run import run_monitor, write_report
    from processing import preprocess as pre
    from processing.baseline import load_baseline

    frame = visit_table()
    (tmp_path / "v.csv").write_text(frame.to_csv(index=False), encoding="utf-8")
    (tmp_path / "v.toml").write_text(BASE, encoding="utf-8")
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ingest_csv(lake, tmp_path / "v.csv", tmp_path / "v.toml")
    curated, manifest = load_curated(lake, "visits")
    assert list(manifest["patient_columns"]) == ["pid"] and "patient_column" not in manifest["schema"]
    source = tmp_path / "pre" / "input" / "curated"
    source.mkdir(parents=True)
    curated.to_parquet(source / "data.parquet", index=False)
    (source / "manifest.json").write_text(json.dumps({**manifest, "data_keys": [
        f"curated/visits/{manifest['version']}/data.parquet"]}), encoding="utf-8")
    (tmp_path / "pre" / "output" / "baseline").mkdir(parents=True)
    assert pre.main(["--base-dir", str(tmp_path / "pre")]) == 0
    statistics = json.loads((tmp_path / "pre" / "output" / "baseline" / "statistics.json").read_text())
    assert statistics["dataset"]["diagnosa"] == {"unnamed_patient_columns": ["pid"]}
    baseline = load_baseline([tmp_path / "pre" / "output" / "baseline"])
    assert baseline.data.unnamed_patient_columns == ("pid",) and baseline.data.patient_column is None

    report = run_monitor(DataLake.from_uri(str(tmp_path / "traffic")), "visits", baseline)
    assert report["traffic"]["unnamed_patient_columns"] == ["pid"]
    html = write_report(report, tmp_path / "out")["html"].read_text()
    assert "<p id='unnamed-patients'>the model&#x27;s training rows look like visits" in html
    assert "Set patient_column = &quot;pid&quot; in the dataset&#x27;s config" in html
    capsys.readouterr()
    main(["--workspace", str(tmp_path / "ws"), "monitor", "--endpoint-name", "visits", "--baseline",
          str(tmp_path / "pre" / "output" / "baseline"), "--out", str(tmp_path / "out2")])
    [note] = [line for line in capsys.readouterr().out.splitlines() if "look like visits" in line]
    assert note.startswith("  note: the model's training rows look like visits of the same patients (ingestion saw "
                           "'pid' repeat") and 'patient_column = "pid"' in note


def test_a_baseline_with_a_patient_column_or_none_noted_says_nothing_of_unnamed_visits():
    frame = pd.DataFrame({"visit": ["v1", "v2", "v3"], "x": [1.0, 2.0, 3.0], "sex": ["F", "M", "F"],
                          "patient": ["p", "p", "q"]})
    named = parse_data_baseline(*data_baseline(frame, visits_schema(), unnamed_patients=("patient",)))
    assert named.patient_column == "patient" and named.unnamed_patient_columns == ()
    rows = Schema("one", visits_schema().fields, LABELS)
    assert parse_data_baseline(*data_baseline(frame, rows)).unnamed_patient_columns == ()
    statistics, constraints = data_baseline(frame, rows, unnamed_patients=("patient",))
    assert parse_data_baseline(statistics, constraints).unnamed_patient_columns == ("patient",)
    statistics["dataset"]["diagnosa"]["unnamed_patient_columns"] = "patient"  # not a list: passed over, not refused
    assert parse_data_baseline(statistics, constraints).unnamed_patient_columns == ()


# ------------------------------------------------------------------------------------------------ the tests

def _visits(n_patients: int, visits: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A value constant within each patient (an age), ``visits`` rows per patient; and each row's patient."""
    rng = np.random.default_rng(seed)
    ages = rng.normal(60 + shift, 10, n_patients)
    return np.repeat(ages, visits), np.repeat(np.arange(n_patients), visits)


def _baseline(seed: int = 99):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"visit": [f"v{i}" for i in range(5000)], "x": rng.normal(60, 10, 5000),
                          "sex": rng.choice(["F", "M"], 5000), "patient": [f"t{i}" for i in range(5000)]})
    return parse_data_baseline(*data_baseline(frame, visits_schema()))


def test_a_value_constant_within_each_patient_is_judged_on_its_patients_not_its_visits():
    """Eight visits of 50 patients hold 50 ages: with their patients, the test's p-value is about that of one row per
    patient; counted as 400 rows, far smaller (the false alarms a probe saw on a table of visits)."""
    baseline, th = _baseline(), DriftThresholds()
    values, patients = _visits(50, 8, seed=1, shift=3.0)
    once = feature_drift(baseline.features["x"], pd.Series(values[::8]), th).tests["ks"]["p_value"]
    as_rows = feature_drift(baseline.features["x"], pd.Series(values), th).tests["ks"]["p_value"]
    by_patient = feature_drift(baseline.features["x"], pd.Series(values), th, patients=patients)
    assert by_patient.tests["patients"] == 50 and by_patient.tests["effective_values"] == 50
    assert as_rows < once / 20
    assert once / 3 < by_patient.tests["ks"]["p_value"] < once * 3


def test_visits_of_patients_from_the_training_population_rarely_look_like_drift():
    """200 windows of all the visits of 40 patients drawn from the baseline's population (ages constant within a
    patient, a sex too): counted as rows, drift is called on most windows; counted by patient, on few."""
    baseline, th = _baseline(), DriftThresholds()
    alarms = {"rows": 0, "patients": 0}
    for seed in range(200):
        values, patients = _visits(40, 10, seed)
        sex = np.repeat(np.random.default_rng(seed + 1000).choice(["F", "M"], 40), 10)
        rows = pd.DataFrame({"x": values, "sex": sex})
        for how, codes in (("rows", None), ("patients", pd.Series(patients.astype(str)))):
            alarms[how] += any(f.verdict == "drift" for f in data_drift(baseline, rows, th, patients=codes))
    assert alarms["rows"] > 80 and alarms["patients"] <= 10, alarms


def _visit_population(n_patients: int, seed: int, age_shift: float = 0.0) -> pd.DataFrame:
    """Patients of 2 to 12 visits: an age and a sex of their own, a lab near their own level at each visit."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, 13, n_patients)
    ages = rng.normal(60 + age_shift, 10, n_patients)
    levels = rng.normal(5, 2, n_patients)
    patient = np.repeat(np.arange(n_patients), counts)
    return pd.DataFrame({"visit": [f"s{seed}-v{i}" for i in range(len(patient))], "patient": [f"s{seed}-p{p}" for p in patient],
                         "x": ages[patient], "lab": levels[patient] + rng.normal(0, 1, len(patient)),
                         "sex": rng.choice(["F", "M"], n_patients)[patient]})


def test_windows_of_few_patients_from_the_training_population_are_not_called_drift():
    """Both sides are visits: the baseline's training rows (what they are worth is in statistics.json) and the
    window's. A probe saw 58 % of 10-patient windows and 26 % of 32-patient ones called drift when the design effect
    was estimated from the window itself; a window worth fewer than 30 independent values is not judged."""
    schema = Schema("visits", (*visits_schema().fields[:2], Field("x", "number"), Field("lab", "number"),
                               *visits_schema().fields[3:]), LABELS, patient_column="patient")
    training = _visit_population(300, seed=0)
    baseline = parse_data_baseline(*data_baseline(training, schema))
    assert baseline.effective_rows < 300 < len(training)
    th = DriftThresholds()
    for size in (10, 20, 32, 60):
        called = 0
        for seed in range(1, 61):
            window = _visit_population(size, seed)
            drift = data_drift(baseline, window, th, patients=window["patient"])
            called += any(f.verdict == "drift" for f in drift)
        assert called <= 3, (size, called)
    shifted = _visit_population(60, seed=99, age_shift=10.0)
    drift = {f.name: f.verdict for f in data_drift(baseline, shifted, th, patients=shifted["patient"])}
    assert drift["x"] == "drift" and drift["lab"] != "drift"


def test_a_window_of_patients_seen_once_weighs_the_baseline_of_visits_as_one_with_a_repeat_does():
    """The baseline's rows are visits whatever the window holds: a window where no patient repeats takes them for what
    they are worth too, so one repeat visit does not flip a verdict (a probe: drift -> ok in 4 of 5 windows)."""
    schema = Schema("visits", (*visits_schema().fields[:2], Field("x", "number"), Field("lab", "number"),
                               *visits_schema().fields[3:]), LABELS, patient_column="patient")
    baseline = parse_data_baseline(*data_baseline(_visit_population(300, seed=0), schema))
    window = _visit_population(80, seed=7, age_shift=2.5).groupby("patient").head(1).reset_index(drop=True)
    repeat = pd.concat([window, window.iloc[[0]]], ignore_index=True)
    th = DriftThresholds()

    def p_value(rows: pd.DataFrame, patients: pd.Series | None) -> float:
        [x] = [f for f in data_drift(baseline, rows, th, patients=patients) if f.name == "x"]
        return x.tests["ks"]["p_value"]
    once, twice = p_value(window, window["patient"]), p_value(repeat, repeat["patient"])
    assert 0.5 < once / twice < 2
    assert p_value(window, None) < once / 2  # without the patient column: the baseline's 1,900 visits as independent


def test_a_real_shift_is_still_found_when_counted_by_patient():
    baseline, th = _baseline(), DriftThresholds()
    values, patients = _visits(80, 5, seed=3, shift=12.0)
    assert feature_drift(baseline.features["x"], pd.Series(values), th, patients=patients).verdict == "drift"


def test_patient_codes_leave_rows_without_a_patient_alone_and_change_nothing_for_one_row_each():
    assert patient_codes(pd.Series(["p", None, "p", None, "q"])).tolist() == [0, 2, 0, 3, 1]
    assert patient_codes(pd.Series(["p", "q", None])) is None  # no patient with two rows: the plain tests
    assert patient_codes(None) is None


def test_rows_are_worth_their_patients_at_most_and_the_ks_test_takes_what_they_are_worth():
    assert effective_rows(np.arange(300)) == 300  # each row a patient of its own
    assert effective_rows(np.repeat(np.arange(50), 6)) == 50
    assert 30 < effective_rows(np.repeat(np.arange(60), [1] * 30 + [11] * 30)) < 60  # unequal: the big ones weigh more
    one = ks_weighted(np.arange(100.0), np.ones(100), np.arange(50.0) + 30)
    assert ks_weighted(np.arange(100.0), np.ones(100), np.arange(50.0) + 30, live_size=10).p_value > one.p_value
    assert ks_weighted(np.arange(100.0), np.ones(100), np.arange(50.0) + 30, base_size=20).p_value > one.p_value
    # What share of its rows a sample is worth: counts times it (the baselines' effective_rows, effective_n).
    assert worth_share(160, 1413) == 160 / 1413 and worth_share(24.5, 175) == 0.14
    assert worth_share(None, 175) == worth_share(True, 175) == worth_share(0, 175) == worth_share(20, 0) == 1.0
    assert worth_share(500, 175) == 1.0 and worth_share(0.5, 10) == 0.1  # never above 1, nor below one value


def test_predicted_categories_and_live_recall_count_patients():
    th = DriftThresholds()
    base = {"labels": list(LABELS), "predicted_distribution": {"a": 500, "b": 500}}
    predicted = pd.Series(["a"] * 280 + ["b"] * 120)  # 40 patients of 10 visits, each predicted alike
    patients = np.repeat(np.arange(40), 10)
    as_rows = prediction_drift(base, predicted, th, list(LABELS))["tests"]["chi2"]["p_value"]
    by_patient = prediction_drift(base, predicted, th, list(LABELS), patients)
    assert by_patient["sample"] == {"patients": 40, "effective_values": 40.0}
    assert as_rows < 1e-8 and by_patient["tests"]["chi2"]["p_value"] > 1e-3
    few = prediction_drift(base, predicted[:100], th, list(LABELS), patients[:100])  # 10 patients
    assert few["verdict"] == "insufficient data" and "worth 10.0 independent ones (need 30)" in few["reasons"][0]
    patients = np.repeat(np.arange(10), 10)
    joined = pd.DataFrame({"event_id": [f"e{i}" for i in range(100)], "row": 0, "confirmed": "a",
                           "predicted": ["a"] * 90 + ["b"] * 10, "orphan": None, "disease_id": None})
    settings = QualityThresholds(labels=LABELS, recall={"a": 0.9, "b": 0.5}, min_feedback=5)
    rows_low, rows_high = live_quality(joined, settings)["per_class"]["a"]["interval_95"]
    quality = live_quality(joined, settings, patients)["per_class"]["a"]
    assert quality["patients"] == 10 and quality["n"] == 100
    low, high = quality["interval_95"]
    assert low < rows_low and high >= rows_high


def test_a_prediction_baseline_worth_few_values_is_said_beside_the_verdict():
    """pbcseq's test split (175 visits of 30 patients) is worth 24.5 values: its comparison was OK with nothing said
    of how little it could see."""
    th = DriftThresholds()
    predicted = pd.Series(["a"] * 60 + ["b"] * 60)
    small = prediction_drift({"labels": list(LABELS), "predicted_distribution": {"a": 90, "b": 85}, "effective_n": 24.5},
                             predicted, th, list(LABELS), np.arange(120))
    assert small["verdict"] == "ok" and small["baseline_worth"] == 24.5
    assert small["reasons"] == ["the prediction baseline (the test split's predictions) is worth 24.5 independent values, "
                                "fewer than 30: only a large shift of the predicted categories can be seen"]
    tiny_table = prediction_drift({"labels": list(LABELS), "predicted_distribution": {"a": 12, "b": 8}}, predicted, th,
                                  list(LABELS))  # a table of 200 rows: 20 test rows, each its own patient
    assert tiny_table["baseline_worth"] == 20 and "worth 20 independent values" in tiny_table["reasons"][-1]
    enough = prediction_drift({"labels": list(LABELS), "predicted_distribution": {"a": 500, "b": 500}}, predicted, th,
                              list(LABELS))
    assert enough["baseline_worth"] == 1000 and enough["reasons"] == []


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_a_visits_dataset_served_monitored_and_retrained_keeps_its_patients(tmp_path, capsys):
    """`run --local` on a table of visits, then its endpoint scored visits that name their patients, doctors'
    feedback, `monitor` and `monitor --retrain`: the monitor names the patients and tests by them; the retraining's
    feedback rows keep their patient, and its split keeps each patient's rows, old and new, in one split."""
    import time

    from test_patients import BASE, fingerprinted_visits

    from diagnosa.cli import main
    from diagnosa.data.ingest import latest_version, load_curated
    from diagnosa.lake import DataLake
    from diagnosa.services import LOCAL_BUCKET
    from inference.capture import read_capture
    from inference.client import DiagnosaClient
    from pipelines.local_endpoints import LocalEndpoints
    from pipelines.local_jobs import LakeMapping
    from processing import preprocess as pre

    frame, _ = fingerprinted_visits(120, seed=4)
    first, later = frame.groupby("patient").head(3), frame.groupby("patient").tail(-3)  # later visits come as traffic
    csv, config = tmp_path / "visits.csv", tmp_path / "visits.toml"
    first.to_csv(csv, index=False)
    config.write_text(BASE + 'patient_column = "patient"\n[gate]\nrecall = 0.0\n')
    ws = ["--workspace", str(tmp_path / "ws")]
    root, lake = tmp_path / "ws", DataLake.from_uri(str(tmp_path / "ws" / "lake"))
    assert main([*ws, "data", "ingest", str(csv), "--config", str(config)]) == 0
    endpoints = LocalEndpoints(root, LakeMapping(LOCAL_BUCKET, lake))
    try:
        assert main([*ws, "run", "--local", "--dataset", "visits", "--families", "logistic_regression",
                     "--param", "ModelApprovalStatus=Approved", "--port", "0"]) == 0, capsys.readouterr()
        hint = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("curl"))
        assert '"patient": "p' in hint  # the run's hints send the patient, as the monitor needs
        client = DiagnosaClient("visits", endpoint_url=endpoints.describe("visits")["Url"], region="eu-west-1",
                                max_attempts=1)
        records = later.drop(columns=["visit", "outcome"]).to_dict("records")
        answered = [client.predict(records[start:start + 50]) for start in range(0, len(records), 50)]
        lines = [json.dumps({"event_id": answer.event_id, "event_row": i, "diagnosis": label})
                 for start, answer in zip(range(0, len(records), 50), answered)
                 for i, label in enumerate(later["outcome"].iloc[start:start + 50])]
        (tmp_path / "feedback.jsonl").write_text("\n".join(lines) + "\n")
        assert main([*ws, "feedback", "--file", str(tmp_path / "feedback.jsonl"), "--endpoint-name", "visits"]) == 0
        deadline = time.monotonic() + 60  # the endpoint ships its capture spool every second
        while len(read_capture(lake, "visits").events) < len(answered) and time.monotonic() < deadline:
            time.sleep(0.2)
        capsys.readouterr()
        out_dir = tmp_path / "report"
        main([*ws, "monitor", "--endpoint-name", "visits", "--out", str(out_dir)])
        out = capsys.readouterr().out
        assert f"of the rows name {later['patient'].nunique()} patient(s)" in out
        assert f"captured requests, {len(later)} rows," in out  # visits, not patients
        report = json.loads((out_dir / "report.json").read_text())
        named = report["traffic"]["patient_column"]
        assert named == {"name": "patient", "rows_naming_a_patient": len(later),
                         "patients_named": later["patient"].nunique()}
        x = next(f for f in report["features"] if f["name"] == "x")
        assert x["tests"]["patients"] == later["patient"].nunique() >= x["tests"]["effective_values"]
        assert all(c.get("patients", 0) <= c["n"] for c in report["quality"]["per_class"].values())

        served_run = endpoints.describe("visits")["ModelDataUrl"].split("/")[5]  # s3://bucket/artifacts/runs/<id>/
        # No --families: the retraining trains the families of the run that trained the served model, as SageMaker's
        # retraining runs the pipeline as deployed (it trained the four default ones). Read from the run's selection
        # in the lake: the execution's folder may be removed (docs/operations.md, what can be deleted).
        shutil.rmtree(root / "executions" / served_run)
        assert main([*ws, "monitor", "--endpoint-name", "visits", "--retrain", "--force-retrain",
                     "--param", "ModelApprovalStatus=Approved"]) in (0, 1)
        said = capsys.readouterr().out
        assert (f"retraining: candidate families logistic_regression, those run {served_run} chose the served model "
                "among (--families to change)") in said, said
    finally:
        for record in endpoints.list():
            if record["EndpointStatus"] == "InService":
                endpoints.stop(record["EndpointName"])
    retrained, _ = load_curated(lake, "visits", latest_version(lake, "visits"))
    fed = retrained[retrained["visit"].astype(str).str.startswith("FB-")]
    assert len(fed) == len(later) and sorted(fed["patient"]) == sorted(later["patient"])
    runs = sorted((root / "lake" / "artifacts" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    definition = json.loads((root / "executions" / runs[-1].name / "definition.json").read_text())
    assert [s["Name"] for s in definition["Steps"] if s["Type"] == "Training"] == ["Train-logistic_regression"]
    membership = pd.read_parquet(runs[-1] / "split" / pre.MEMBERSHIP_FILE).merge(retrained[["visit", "patient"]])
    assert len(membership) == len(retrained)
    assert (membership.groupby("patient")["split"].nunique() == 1).all()  # old visits and new ones together


def test_the_doctors_form_asks_for_the_patient_by_its_role():
    from app.form import form_spec

    spec = form_spec(RequestSchema(visits_schema()).to_json_schema(), id_field="visit", labels=LABELS)
    patient = spec.by_name("patient")
    assert patient.title == "Patient (patient)" and patient.kind == "text" and not patient.unit
    assert spec.by_name("x").title == "X"  # the inputs keep their labels
