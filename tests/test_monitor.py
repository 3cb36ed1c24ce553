"""The monitoring loop on a real local endpoint: captured traffic without drift → no alert; drifted traffic and
feedback where classes fail → an alert naming the features and the classes; feedback becomes training data through
ingestion; and bad input (no captures, malformed lines, unknown event ids) is counted, never a crash. The HTML
report's screenshot is taken as docs/operations.md's refresh command takes it (diagnosa.browser.screenshot)."""
from __future__ import annotations

import html
import json
import math
import os
import re
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from diagnosa import browser
from diagnosa.data.cohort import CohortConfig, apply_drift, generate
from diagnosa.data.schema import Schema
from diagnosa.lake import DataLake
from inference.feedback import parse_feedback, store_feedback
from monitoring.report import insufficient_text, render_html
from monitoring.run import WindowError, parse_window, run_monitor, write_report
from monitoring.traffic import NO_PREDICTIONS
from processing.baseline import load_baseline, prediction_baseline, write_data_baseline, write_json

FEATURES = ("age", "sex", "temperature_c", "heart_rate_bpm", "respiratory_rate_bpm", "systolic_bp_mmhg",
            "diastolic_bp_mmhg", "spo2_pct", "symptoms", "prior_diagnoses", "wbc_10e9_l", "crp_mg_l",
            "hemoglobin_g_dl", "platelets_10e9_l", "glucose_mg_dl", "hba1c_pct", "creatinine_mg_dl", "alt_u_l",
            "sodium_mmol_l", "potassium_mmol_l")


def requests(cohort, n, seed):
    """Single-patient requests as a hospital system would send them, with the truth kept aside."""
    frame = cohort.records.merge(cohort.labs.drop(columns=["collected_at"]), on="patient_id", how="left")
    frame = frame.iloc[np.random.default_rng(seed).choice(len(frame), n, replace=False)]
    out = []
    for _, row in frame.iterrows():
        record = {}
        for name in FEATURES:
            value = row[name]
            if isinstance(value, (list, np.ndarray)):
                record[name] = [str(v) for v in value]
            elif isinstance(value, str):
                record[name] = value
            elif value is not None and not math.isnan(value):
                record[name] = int(value) if name == "age" else float(value)
        out.append((record, row["label"]))
    return out


def captured_event(event_id, when, age=40, category="NO ENFERMO"):
    """One capture line's event as SageMaker's data capture writes it (JSON in, JSON out)."""
    return {"captureData": {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                          "data": json.dumps({"age": age, "sex": "F"})},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                           "data": json.dumps({"predictions": [{"category": category}]})}},
        "eventMetadata": {"eventId": event_id, "inferenceTime": when}, "eventVersion": "0"}


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, curated_cohort, trained_model_dir):
    """The baseline files as the pipeline writes them (preprocess: data; evaluate: predictions)."""
    from diagnosa.model import DiagnosaModel
    from processing.evaluate import evaluate_model
    from processing.split import split_dataset

    frame, manifest = curated_cohort
    schema = Schema.from_dict(manifest["schema"])
    splits = split_dataset(frame, schema, seed=0)  # the preprocess job's split (seed 0)
    folder = tmp_path_factory.mktemp("baseline")
    write_data_baseline(splits.train, schema, folder)
    evaluation = evaluate_model(DiagnosaModel.load(trained_model_dir), splits.test)
    write_json(folder / "prediction_baseline.json", prediction_baseline(evaluation))
    return folder


@pytest.fixture(scope="module")
def baseline(baseline_dir):
    return load_baseline([baseline_dir])


@pytest.fixture(scope="module")
def loop(tmp_path_factory, curated_cohort, trained_model_dir, baseline):
    """Serve the model, send clean then drifted traffic (half of it with doctors' feedback); monitor each."""
    import os

    from inference.capture import DataCapture
    from inference.client import DiagnosaClient
    from inference.server import EndpointServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    lake = DataLake.from_uri(str(tmp_path_factory.mktemp("loop") / "lake"))
    lake.init_zones()
    cohort = generate(CohortConfig(patients=1500, seed=5, orphan_fraction=0.05, defect_rate=0))
    drifted = apply_drift(apply_drift(apply_drift(cohort, "labs", seed=1), "orphan", seed=1), "symptoms", seed=1)
    phases = {}
    with EndpointServer(str(trained_model_dir), capture=DataCapture(lake, "diagnosa", flush_seconds=0.1)) as endpoint:
        endpoint.wait_until_ready()
        client = DiagnosaClient("diagnosa", endpoint_url=endpoint.url)
        for phase, source in (("clean", cohort), ("drift", drifted)):
            # Capture stamps whole seconds: each phase starts on a fresh second so the windows do not overlap.
            start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
            while datetime.now(timezone.utc) < start:
                time.sleep(0.05)
            truth = []
            for i, (record, label) in enumerate(requests(source, 300, seed=len(phases))):
                prediction = client.predict(record)
                if i % 2 == 0:
                    client.send_feedback(prediction.event_id, label)
                    truth.append((prediction.results[0]["category"], label))
            assert endpoint.capture.flush()
            phases[phase] = {"start": start, "truth": truth}
    for phase in phases:
        stop = phases["drift"]["start"] if phase == "clean" else None
        phases[phase]["report"] = run_monitor(lake, "diagnosa", baseline, phases[phase]["start"], stop)
    return lake, phases


def test_clean_traffic_raises_no_alert(loop):
    _, phases = loop
    report = phases["clean"]["report"]
    assert report["traffic"]["patients"] == 300 and report["traffic"]["skipped"]["total"] == 0
    assert report["verdict"] in ("ok", "warn") and report["alerts"] == []
    assert report["drifted_features"] == [] and report["failing_classes"] == []
    assert not report["retrain"]["recommended"]


def test_drifted_traffic_alerts_naming_the_features_and_the_failing_classes(loop):
    _, phases = loop
    report = phases["drift"]["report"]
    assert report["verdict"] == "alert" and report["retrain"]["recommended"]
    # The scenarios moved these fields (labs analyser, haemoglobin dropped, outbreak symptoms).
    assert {"crp_mg_l", "wbc_10e9_l", "glucose_mg_dl", "hemoglobin_g_dl", "symptoms"} <= set(report["drifted_features"])
    assert "age" not in report["drifted_features"] and "sex" not in report["drifted_features"]
    symptoms = next(f for f in report["features"] if f["name"] == "symptoms")
    assert {"HP:0012735", "HP:0001945"} <= {c["term"] for c in symptoms["terms"]["changed"]}
    # Live recall is exactly what the doctors' feedback says about the predictions the client saw.
    truth = phases["drift"]["truth"]
    quality = report["quality"]
    assert quality["n"] == len(truth) and quality["feedback"]["matched"] == len(truth)
    for label, c in quality["per_class"].items():
        mine = [p for p, t in truth if t == label]
        assert c["n"] == len(mine) and c["hits"] == sum(p == label for p in mine)
    assert quality["failing_classes"], "the outbreak makes healthy patients look ill"
    assert "NO ENFERMO" in quality["failing_classes"]
    for label in quality["failing_classes"]:
        c = quality["per_class"][label]
        assert c["recall"] < c["threshold"] and c["interval_95"][1] < c["threshold"]
        assert any(label in alert for alert in report["alerts"])
    assert any("crp_mg_l" in alert for alert in report["alerts"])


def test_feedback_of_the_window_becomes_a_new_curated_version_through_ingestion(tmp_path, loop, curated_cohort):
    from diagnosa.data.cohort import write_raw
    from diagnosa.data.ingest import ingest_cohort, load_curated
    from diagnosa.services import curated_manifest, retraining_input
    from monitoring.retrain import feedback_dataset

    lake, phases = loop
    base = generate(CohortConfig(patients=1000, seed=3, defect_rate=0))
    write_raw(base, lake, "base")
    base_version = ingest_cohort(lake, "base").version
    dataset = feedback_dataset(lake, "diagnosa", base_version=base_version)
    feedback_count = sum(len(p["truth"]) for p in phases.values())
    assert dataset.feedback_rows == feedback_count
    frame, manifest = load_curated(lake, version=dataset.version)
    fed = frame[frame["patient_id"].str.startswith("FB-")]
    assert len(frame) == 1000 + len(fed)
    # Every feedback row is either accepted or quarantined with its reason: none is lost.
    quarantined = manifest["sources"][0]["quarantined"]
    assert len(fed) + quarantined == feedback_count
    assert set(fed["label"]) <= {t for p in phases.values() for _, t in p["truth"]}
    # The retraining run's input names that version, as the local executor finds it in this lake.
    assert curated_manifest(lake, "patients", retraining_input("patients", dataset.version))["version"] == dataset.version


def test_a_second_retraining_adds_each_feedback_once_with_the_doctors_latest_diagnosis(loop):
    # The second retraining added all the feedback again to the first one's batch: every feedback record came twice
    # (quarantined as a repeat), and a corrected diagnosis made both rows 'conflicting' (the feedback was lost).
    from dataclasses import replace

    from diagnosa.data.cohort import write_raw
    from diagnosa.data.ingest import ingest_cohort, load_curated
    from inference.feedback import read_feedback
    from monitoring.retrain import feedback_dataset

    lake, _ = loop
    if "again" not in {k.rsplit("/", 1)[-1].removesuffix(".jsonl") for k in lake.list("raw/clinical_records/")}:
        write_raw(generate(CohortConfig(patients=1000, seed=4, defect_rate=0)), lake, "again")
    base_version = ingest_cohort(lake, "again").version
    first = feedback_dataset(lake, "diagnosa", base_version=base_version)
    (event, _), original = sorted(read_feedback(lake, "diagnosa").latest.items())[0]
    corrected = next(label for label in ("NO ENFERMO", "ENFERMEDAD LEVE") if label != original.diagnosis)
    store_feedback(lake, "diagnosa", replace(original, diagnosis=corrected, received_at=None))
    try:
        second = feedback_dataset(lake, "diagnosa", base_version=first.version)
    finally:
        store_feedback(lake, "diagnosa", replace(original, received_at=None))  # the loop's other tests read it
    assert second.base_source == first.base_source == "again"
    frame, manifest = load_curated(lake, version=second.version)
    fed = frame[frame["patient_id"].str.startswith("FB-")]
    first_fed = load_curated(lake, version=first.version)[0].query("patient_id.str.startswith('FB-')")
    assert len(fed) == len(first_fed) and fed["patient_id"].is_unique
    assert fed.loc[fed["patient_id"] == f"FB-{event}", "label"].tolist() == [corrected]
    assert manifest["feedback"] == {"base_batch": "again", "endpoint": "diagnosa", "records": second.feedback_rows}


def test_an_empty_window_reports_no_data(tmp_path, baseline):
    lake = DataLake.from_uri(str(tmp_path))
    report = run_monitor(lake, "diagnosa", baseline)
    assert report["verdict"] == "no data" and report["traffic"]["patients"] == 0
    assert all(f["verdict"] == "insufficient data" for f in report["features"])
    paths = write_report(report, tmp_path / "out")
    assert "no data" in paths["html"].read_text()


def test_malformed_captures_and_unknown_feedback_are_counted_with_reasons(tmp_path, baseline):
    lake = DataLake.from_uri(str(tmp_path))
    good = captured_event("ok-1", "2026-11-27T10:00:00Z")
    bad_output = json.loads(json.dumps(good))
    bad_output["eventMetadata"]["eventId"] = "bad-out"
    bad_output["captureData"]["endpointOutput"]["data"] = "<html>"
    lines = [json.dumps(good), "{truncated", json.dumps({"captureData": {}}), json.dumps(bad_output)]
    lake.put_bytes("capture/diagnosa/AllTraffic/2026/11/27/10/00-00-000-x.jsonl", ("\n".join(lines) + "\n").encode())
    lake.put_bytes("capture/diagnosa/AllTraffic/notes.txt", b"hello")
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "ok-1", "diagnosis": "NO ENFERMO"}))
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "bad-out", "diagnosis": "ENFERMEDAD AGUDA"}))
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "ghost", "diagnosis": "ENFERMEDAD AGUDA"}))
    report = run_monitor(lake, "diagnosa", baseline)
    assert report["traffic"]["patients"] == 1
    skipped = {s["reason"]: s["count"] for s in report["traffic"]["skipped"]["by_reason"]}
    assert skipped == {"malformed capture line: not JSON": 1,
                       "malformed capture line: missing captureData or eventMetadata": 1,
                       NO_PREDICTIONS: 1, "object not in the capture layout": 1}
    fb = report["quality"]["feedback"]
    assert fb["matched"] == 1
    assert {s["reason"]: s["count"] for s in fb["skipped"]["by_reason"]} == \
        {"feedback for an event id not captured in this window": 1}
    assert fb["skipped"]["by_reason"][0]["examples"] == ["bad-out"]  # captured, but its answer could not be read
    assert fb["not_named_by_traffic"] == 1  # 'ghost': no request of the window names it, so it is not read
    # One patient and one confirmed case judge nothing: the verdict says so instead of "ok".
    assert all(f["verdict"] == "insufficient data" for f in report["features"])
    assert report["verdict"] == "insufficient data"
    why = insufficient_text(report)  # and says why, with the way out
    assert why.startswith("nothing could be judged: ") and "only 1 live values (need 30)" in why
    assert why.endswith("Widen the window (--last, --since), or lower --min-rows")
    assert html.escape(why) in render_html(report)


def test_lake_text_that_forges_crashes_or_floods_is_reported_bounded_and_printed_escaped(tmp_path, baseline_dir,
                                                                                         capsys, caplog):
    # What others wrote into the lake went raw into the monitor: a refusal's `Infinity` status stopped it, a lone
    # surrogate (in a refusal, or an object name a local folder lists with surrogateescape) left an empty report.json,
    # a 1 MB message was a 1 MB line of the summary and the report, every made-up status its own entry, each cut
    # capture line a warning quoting it whole, and a newline in a reason printed a forged verdict.
    from diagnosa.cli import main

    root = tmp_path / "lake"
    lake = DataLake.from_uri(str(root))
    hour = "2026/11/27/10"

    def refusal(status, error="bad", route="invocations"):
        return json.dumps({"time": "2026-11-27T10:00:00.000Z", "status": status, "route": route, "error": error})

    forged = "x\nverdict: OK (forged)\x1b[2J\u202e"
    lines = [refusal(400, "\ud800 bad"), refusal(400, route="\udc00"), refusal(400, "m" * 1_000_000),
             refusal(400, forged), '{"time": "2026-11-27T10:00:00Z", "status": Infinity, "error": "x"}',
             *(refusal(1000 + n) for n in range(2000)), refusal(True), refusal("400")]
    lake.put_bytes(f"capture-errors/diagnosa/{hour}/00-00-000-x.jsonl", ("\n".join(lines) + "\n").encode())
    cut = json.dumps({"eventMetadata": {"eventId": "e", "inferenceTime": "2026-11-27T10:00:00Z"}})[:30]
    huge_time = json.dumps({"captureData": {"endpointInput": {"mode": "INPUT", "encoding": "JSON", "data": "{}"},
                                            "endpointOutput": {"mode": "OUTPUT", "encoding": "JSON", "data": "{}"}},
                            "eventMetadata": {"eventId": "t", "inferenceTime": "9" * 1_000_000}})
    lake.put_bytes(f"capture/diagnosa/AllTraffic/{hour}/00-00-000-x.jsonl",
                   ("\n".join([cut] * 500 + [huge_time]) + "\n").encode())
    (root / "feedback/diagnosa/events").mkdir(parents=True)
    (root / "feedback/diagnosa/events" / "x\udcff.txt").write_bytes(b"{}")  # a name that is not UTF-8

    out = tmp_path / "out"
    argv = ["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
            "--since", "2026-11-27T10:00:00Z", "--until", "2026-11-27T11:00:00Z", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    refused = report["refusals"]
    assert refused["total"] == 4 and refused["by_status"] == {"400": 4} and refused["malformed"] == 2003
    reasons = [entry["reason"] for entry in refused["by_reason"]]
    assert "400 invocations: \\ud800 bad" in reasons and "400 \\udc00: bad" in reasons
    assert all(len(reason) < 400 for reason in reasons)
    skipped = {s["reason"]: s["count"] for s in report["traffic"]["skipped"]["by_reason"]}
    assert skipped["malformed capture line: not JSON"] == 500 and sum(skipped.values()) == 501
    examples = report["quality"]["feedback"]["skipped"]["by_reason"][0]["examples"]
    assert examples == ["feedback/diagnosa/events/x\\udcff.txt"]  # the object named, its byte as text
    assert len(json.dumps(report)) < 200_000 and (out / "report.html").stat().st_size < 400_000
    assert not any(line.startswith("verdict: OK") for line in printed.out.splitlines())
    assert "\x1b" not in printed.out and "\\nverdict: OK (forged)\\x1b[2J\\u202e" in printed.out
    assert len(printed.out) < 20_000 and len(printed.err) + len(caplog.text) < 50_000


def test_feedback_revisions_that_cannot_be_read_or_are_past_the_bound_are_said_in_the_report(tmp_path, baseline):
    # The reader counted them apart (bad revisions, revisions past MAX_REVISIONS), and the report said nothing.
    from inference.feedback import MAX_REVISIONS

    lake = DataLake.from_uri(str(tmp_path))
    good = captured_event("ok-1", "2026-11-27T10:00:00Z")
    lake.put_bytes("capture/diagnosa/AllTraffic/2026/11/27/10/00-00-000-x.jsonl", (json.dumps(good) + "\n").encode())
    revision = {"event_id": "ok-1", "diagnosis": "ENFERMEDAD LEVE", "received_at": "2026-11-27T10:00:00+00:00"}
    revisions = [{"event_id": "ok-1", "diagnosis": ""}] * 2 + [revision] * (MAX_REVISIONS - 2 + 3)
    lake.put_json("feedback/diagnosa/events/ok-1.json", {
        "endpoint": "diagnosa", "event_id": "ok-1", "diagnosis": "NO ENFERMO",
        "received_at": "2026-11-28T10:00:00+00:00", "revisions": revisions})
    report = run_monitor(lake, "diagnosa", baseline)
    fb = report["quality"]["feedback"]
    assert fb["matched"] == 1 and fb["records"] == MAX_REVISIONS - 1  # the current record and 8 good revisions
    said = {s["reason"]: s["count"] for s in fb["skipped"]["by_reason"]}
    assert said == {"invalid feedback revision: diagnosis": 2,
                    f"feedback revisions beyond the {MAX_REVISIONS} an object keeps, not read": 3}


def test_feedback_recorded_under_an_inference_id_confirms_its_request(tmp_path, baseline):
    """SageMaker returns the client no event id; the doctors' app records the confirmed diagnosis under the inference
    id it gave the prediction, which the capture keeps: the monitor and retraining join it to that request's event
    (its copy kept when retried). An inference id two different requests carry names neither."""
    from monitoring.retrain import AMBIGUOUS, feedback_records
    from monitoring.traffic import by_inference_id

    def event(event_id, inference_id, when, age):
        return {"captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                              "data": json.dumps({"age": age, "sex": "F"})},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                               "data": json.dumps({"predictions": [{"category": "ENFERMEDAD LEVE"}]})}},
            "eventMetadata": {"eventId": event_id, "inferenceId": inference_id, "inferenceTime": when},
            "eventVersion": "0"}

    lake = DataLake.from_uri(str(tmp_path))
    events = [event("e-1", "app-1", "2026-11-27T10:00:01Z", 40), event("e-1b", "app-1", "2026-11-27T10:00:09Z", 40),
              event("e-2", "app-2", "2026-11-27T10:00:02Z", 50), event("e-3", "visit", "2026-11-27T10:00:03Z", 60),
              event("e-4", "visit", "2026-11-27T10:00:04Z", 61)]
    lake.put_bytes("capture/diagnosa/AllTraffic/2026/11/27/10/00-00-000-x.jsonl",
                   ("\n".join(json.dumps(e) for e in events) + "\n").encode())
    assert by_inference_id(events, {"e-1": "e-1b"}) == {"app-1": "e-1b", "app-2": "e-2"}
    for inference_id in ("app-1", "app-2", "visit"):
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": inference_id, "diagnosis": "ENFERMEDAD LEVE"}))
    report = run_monitor(lake, "diagnosa", baseline)
    fb = report["quality"]["feedback"]
    assert fb["matched"] == 2 and report["quality"]["per_class"]["ENFERMEDAD LEVE"]["n"] == 2
    assert {s["reason"]: s["count"] for s in fb["skipped"]["by_reason"]} == {
        "feedback for an event id not captured in this window": 1}  # 'visit' names two requests
    records, _, folded = feedback_records(lake, "diagnosa")
    assert sorted(r["patient_id"] for r in records) == ["FB-e-1b", "FB-e-2"]
    assert dict(folded.counts) == {AMBIGUOUS: 1}  # it said "no captured request", of an id captured twice


def test_the_monitor_reads_only_the_feedback_its_windows_traffic_names(tmp_path, baseline):
    """On AWS the event ids name no time (SageMaker's, or the client's inference ids): every daily job fetched every
    feedback object ever written and listed all of history's as "not captured in this window". The job now reads
    the feedback of the ids its window's capture names — by event id, by inference id (one two requests carry too),
    on a retried copy, on another version's request, on one no reader could use — as before, and counts what it left
    unread without fetching it. The old layout's objects are read as before."""
    import uuid

    from diagnosa.lake import LocalStorage
    from monitoring.quality import OTHER_MODEL_FEEDBACK

    class Counting(LocalStorage):
        def __init__(self, root):
            super().__init__(root)
            self.fetched = []

        def get_bytes(self, key):
            self.fetched.append(key)
            return super().get_bytes(key)

    def event(event_id, inference_id, when, age, version="7", data=None):
        return {"captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                              "data": data or json.dumps({"age": age, "sex": "F"})},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                               "data": json.dumps({"predictions": [{"category": "ENFERMEDAD LEVE",
                                                                    "model_version": version}]})}},
            "eventMetadata": {"eventId": event_id, "inferenceId": inference_id, "inferenceTime": when},
            "eventVersion": "0"}

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    sagemaker = str(uuid.uuid4())  # SageMaker's event id: a UUID4, no time; feedback typed in capitals names it too
    window = [event("e-1", "app-1", "2026-11-27T10:00:01Z", 40), event("e-1b", "app-1", "2026-11-27T10:00:09Z", 40),
              event("e-2", "app-2", "2026-11-27T10:00:02Z", 50), event("e-3", "visit", "2026-11-27T10:00:03Z", 60),
              event("e-4", "visit", "2026-11-27T10:00:04Z", 61), event("e-5", "app-5", "2026-11-27T10:00:05Z", 70, "8"),
              event("e-6", "app-6", "2026-11-27T10:00:06Z", 0, data="{not json"),
              event(sagemaker, "app-7", "2026-11-27T10:00:07Z", 80)]
    later = [event("late-1", "app-8", "2026-11-28T10:00:00Z", 30),  # captured, but in the next day's window
             event("late-2", "app-9", "2026-11-28T10:00:01Z", 31)]
    for hour, events in (("2026/11/27/10", window), ("2026/11/28/10", later)):
        lake.put_bytes(f"capture/diagnosa/AllTraffic/{hour}/00-00-000-x.jsonl",
                       ("\n".join(json.dumps(e) for e in events) + "\n").encode())
    read = {"e-1": "retried copy", "app-2": "inference id", "visit": "inference id of two requests",
            "e-5": "another version's", "e-6": "unreadable request"}
    unread = {"ghost-1": None, "ghost-2": 1, "late-1": None, "app-9": None}  # never captured, or another window's
    for event_id in read:
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": event_id, "diagnosis": "ENFERMEDAD LEVE"}))
    # Stored as typed, in capitals (before ids were stored as their captures write them): it names the event too.
    capitals = f"feedback/diagnosa/events/{sagemaker.upper()}.json"
    lake.put_json(capitals, {"event_id": sagemaker.upper(), "diagnosis": "ENFERMEDAD LEVE",
                             "received_at": "2026-11-27T11:00:00+00:00"})
    for event_id, row in unread.items():
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": event_id, "diagnosis": "ENFERMEDAD LEVE",
                                                         **({} if row is None else {"event_row": row})}))
    legacy = "feedback/diagnosa/2026/11/20/09/ghost-old--2026-11-20T09:00:00Z--ab12.json"  # the old layout
    lake.put_json(legacy, {"event_id": "ghost-old", "diagnosis": "ENFERMEDAD LEVE",
                           "received_at": "2026-11-20T09:00:00+00:00"})

    storage = Counting(lake.storage.root)
    report = run_monitor(DataLake(storage), "diagnosa", baseline, datetime(2026, 11, 27, tzinfo=timezone.utc),
                         datetime(2026, 11, 28, tzinfo=timezone.utc), model_version="7")
    fetched = {key for key in storage.fetched if key.startswith("feedback/")}
    assert fetched == {f"feedback/diagnosa/events/{event_id}.json" for event_id in read} | {capitals, legacy}
    fb = report["quality"]["feedback"]
    assert (fb["records"], fb["not_named_by_traffic"], fb["outside_window"]) == (7, 4, 0)
    # What was read is reported as before: e-1 (confirming e-1b, the copy kept), app-2 (e-2) and the SageMaker id
    # confirm their requests; 'visit' names two requests, e-6's request could not be read, e-5 is version 8's.
    assert fb["matched"] == 3 and report["quality"]["per_class"]["ENFERMEDAD LEVE"]["n"] == 3
    skipped = {s["reason"]: sorted(s["examples"]) for s in fb["skipped"]["by_reason"]}
    assert skipped == {"feedback for an event id not captured in this window": ["e-6", "ghost-old", "visit"],
                       OTHER_MODEL_FEEDBACK: ["e-5: model version 8"]}
    html = write_report(report, tmp_path / "out")["html"].read_text()
    assert "feedback for event ids this window's traffic does not name, not read: 4" in html
    # The next day's job reads late-1's and app-9's (late-2's) feedback, and the old layout's; none of the first day's.
    storage.fetched.clear()
    report = run_monitor(DataLake(storage), "diagnosa", baseline, datetime(2026, 11, 28, tzinfo=timezone.utc),
                         datetime(2026, 11, 29, tzinfo=timezone.utc), model_version="7")
    assert {key for key in storage.fetched if key.startswith("feedback/")} == {
        "feedback/diagnosa/events/late-1.json", "feedback/diagnosa/events/app-9.json", legacy}
    assert report["quality"]["feedback"]["matched"] == 2 and report["quality"]["feedback"]["not_named_by_traffic"] == 8
    # Retraining still folds every feedback there is, whatever window its requests were in.
    from monitoring.retrain import feedback_records

    records, _, _ = feedback_records(lake, "diagnosa")
    assert sorted(r["patient_id"] for r in records) == sorted(
        ["FB-e-1b", "FB-e-2", "FB-e-5", f"FB-{sagemaker}", "FB-late-1", "FB-late-2"])


def test_feedback_given_after_its_windows_report_is_joined_by_a_later_report_within_the_feedback_lag(tmp_path,
                                                                                                      baseline):
    """A diagnosis is often confirmed days after the request (a lab result, a specialist). Each daily report joined
    only the feedback of its own day's requests, so feedback given later was counted by no report at all. With a
    feedback lag, live quality judges the requests of the lag before the window too; drift stays the window's."""
    def event(event_id, when, age):
        return {"captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                              "data": json.dumps({"age": age, "sex": "F"})},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                               "data": json.dumps({"predictions": [{"category": "ENFERMEDAD LEVE",
                                                                    "model_version": "7"}]})}},
            "eventMetadata": {"eventId": event_id, "inferenceTime": when}, "eventVersion": "0"}

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    days = {"2026/11/24/10": ["too-old"], "2026/11/25/10": ["mon-1", "mon-2"], "2026/11/26/10": ["tue-1"],
            "2026/11/27/10": ["wed-1", "wed-2", "wed-3"]}
    for hour, ids in days.items():
        when = hour.replace("/", "-", 2).replace("/", "T") + ":00:0"
        lake.put_bytes(f"capture/diagnosa/AllTraffic/{hour}/00-00-000-x.jsonl", ("\n".join(
            json.dumps(event(i, f"{when}{n}Z", 40 + n)) for n, i in enumerate(ids)) + "\n").encode())
    for event_id in ("too-old", "mon-1", "tue-1", "wed-2"):  # Monday's and Tuesday's given after their own report
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": event_id, "diagnosis": "ENFERMEDAD LEVE"}))
    start, end = datetime(2026, 11, 27, tzinfo=timezone.utc), datetime(2026, 11, 28, tzinfo=timezone.utc)

    plain = run_monitor(lake, "diagnosa", baseline, start, end, model_version="7")
    lagged = run_monitor(lake, "diagnosa", baseline, start, end, model_version="7", feedback_lag=timedelta(days=2))
    assert plain["quality"]["feedback"]["matched"] == 1  # wed-2 only: Monday's and Tuesday's were never counted
    assert lagged["quality"]["feedback"]["matched"] == 3  # mon-1, tue-1, wed-2; too-old is before the lag
    assert lagged["quality"]["per_class"]["ENFERMEDAD LEVE"]["n"] == 3
    assert (lagged["quality"]["feedback"]["outside_window"], lagged["quality"]["feedback"]["not_named_by_traffic"]) \
        == (0, 1)
    # Drift (and the traffic counted) is the window's alone, the same with or without the lag.
    assert plain["traffic"]["patients"] == lagged["traffic"]["patients"] == 3
    assert [f["n_live"] for f in plain["features"]] == [f["n_live"] for f in lagged["features"]] != []
    assert plain["quality"]["window"] == {"start": "2026-11-27T00:00:00Z", "end": "2026-11-28T00:00:00Z",
                                          "feedback_lag_seconds": 0, "events": 3, "patients": 3}
    assert lagged["quality"]["window"] == {"start": "2026-11-25T00:00:00Z", "end": "2026-11-28T00:00:00Z",
                                           "feedback_lag_seconds": 172800, "events": 6, "patients": 6}
    assert lagged["window"] == plain["window"]
    html = write_report(lagged, tmp_path / "out")["html"].read_text()
    assert "requests judged: 2026-11-25T00:00:00Z → 2026-11-28T00:00:00Z (6 requests, 6 patients)" in html
    assert "2d of feedback lag" in html
    with pytest.raises(WindowError, match="negative"):
        run_monitor(lake, "diagnosa", baseline, start, end, feedback_lag=timedelta(days=-1))


def test_a_request_retried_with_its_inference_id_is_one_patient(tmp_path, baseline):
    # The doctors' app retries a timed-out prediction with the same InferenceId; SageMaker scores and captures both,
    # and the patient counted twice in every distribution the monitor compares.
    from inference.feedback import SAME_PATIENT
    from monitoring.traffic import RETRIED, retried_copies

    def event(event_id, inference_id, when, category):
        meta = {"eventId": event_id, "inferenceTime": when, **({"inferenceId": inference_id} if inference_id else {})}
        return {"captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                              "data": json.dumps({"age": 40, "sex": "F"})},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                               "data": json.dumps({"predictions": [{"category": category}]})}},
            "eventMetadata": meta, "eventVersion": "0"}

    lake = DataLake.from_uri(str(tmp_path))
    events = [event("first", "visit-1", "2026-11-27T10:00:01Z", "NO ENFERMO"),
              event("retry", "visit-1", "2026-11-27T10:00:11Z", "NO ENFERMO"),  # the answer the app got
              event("other", None, "2026-11-27T10:00:05Z", "ENFERMEDAD LEVE"),
              event("alone", "visit-2", "2026-11-27T10:00:06Z", "ENFERMEDAD LEVE")]
    lake.put_bytes("capture/diagnosa/AllTraffic/2026/11/27/10/00-00-000-x.jsonl",
                   ("\n".join(json.dumps(e) for e in events) + "\n").encode())
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "retry", "diagnosis": "NO ENFERMO"}))
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "first", "diagnosis": "NO ENFERMO"}))
    report = run_monitor(lake, "diagnosa", baseline)
    assert report["traffic"]["events"] == 4 and report["traffic"]["patients"] == 3
    skipped = {s["reason"]: s for s in report["traffic"]["skipped"]["by_reason"]}
    assert skipped[RETRIED]["count"] == 1
    assert skipped[RETRIED]["examples"] == ["event first: inference id 'visit-1' captured again as event retry"]
    fb = report["quality"]["feedback"]
    assert fb["matched"] == 1 and report["quality"]["per_class"]["NO ENFERMO"]["n"] == 1
    # Feedback on both copies is one patient's twice: the later received confirms it.
    assert {s["reason"]: s["examples"] for s in fb["skipped"]["by_reason"]} == {SAME_PATIENT: ["retry row 0"]}
    # Retraining folds the patient in once, from the copy kept.
    from monitoring.retrain import feedback_records

    records, _, folded_skipped = feedback_records(lake, "diagnosa")
    assert len(records) == 1 and folded_skipped.counts == {SAME_PATIENT: 1}
    # Feedback on the earlier copy alone confirms the patient (it was accepted, 201, then never used).
    lake.delete("feedback/diagnosa/events/retry.json")
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "first", "diagnosis": "ENFERMEDAD LEVE"}))
    report = run_monitor(lake, "diagnosa", baseline)
    assert report["quality"]["feedback"]["matched"] == 1 and report["quality"]["per_class"]["ENFERMEDAD LEVE"]["n"] == 1
    assert not report["quality"]["feedback"]["skipped"]["by_reason"]
    records, _, folded_skipped = feedback_records(lake, "diagnosa")
    assert [r["patient_id"] for r in records] == ["FB-retry"] and not folded_skipped.counts
    # The last by inference time is kept, whatever the capture order; a tie keeps the later line.
    assert retried_copies(events[::-1]) == {"first": "retry"}
    tied = [event("a", "x", "2026-11-27T10:00:00Z", "NO ENFERMO"), event("b", "x", "2026-11-27T10:00:00Z", "NO ENFERMO")]
    assert retried_copies(tied) == {"a": "b"}
    # One inference id over different requests (a client naming a visit with it) is not a retry.
    other_body = event("c", "x", "2026-11-27T10:00:01Z", "NO ENFERMO")
    other_body["captureData"]["endpointInput"]["data"] = json.dumps({"age": 41, "sex": "F"})
    assert retried_copies([*tied, other_body]) == {"a": "b"}


def test_the_html_report_lists_refused_requests_without_their_values(tmp_path, baseline):
    # The command printed them; report.html, what an on-call doctor or engineer opens, said nothing.
    from inference.capture import DataCapture

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with DataCapture(lake, "diagnosa", flush_seconds=0.05) as capture:
        for _ in range(2):
            capture.record_error(None, "invocations", 400, "1 problem(s) in the request",
                                 [{"row": 0, "field": "age", "problem": "must be a number, got 'Ramírez-77'"}])
        capture.record_error(None, "invocations", 415, "unsupported content type 'text/xml'")
        assert capture.flush()
    report = run_monitor(lake, "diagnosa", baseline)
    html = write_report(report, tmp_path / "out")["html"].read_text()
    section = html[html.index("id='refused'"):]
    assert "refused requests: 3" in section and "2 × 400, 1 × 415" in section
    assert "Ramírez-77" not in html


def test_feedback_on_orphan_diseases_the_model_never_trained_on_raises_its_own_alert(tmp_path, baseline):
    # The gate holds a model to UnseenOrphanRecallThreshold on the orphan diseases its split kept out of training;
    # once it served, nothing watched those patients (feedback carries the disease id, the endpoint did not know
    # which diseases the model had trained on: the prediction baseline now lists them).
    from dataclasses import replace

    from monitoring.cloudwatch import metric_data

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lines = []
    for i in range(16):
        predicted = "ENFERMEDAD TERMINAL" if i < 8 else "ENFERMEDAD LEVE"
        lines.append(json.dumps({"captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                              "data": json.dumps({"age": 40, "sex": "F"})},
            "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                               "data": json.dumps({"predictions": [{"category": predicted}]})}},
            "eventMetadata": {"eventId": f"e{i}", "inferenceTime": "2026-11-27T10:00:00Z"}, "eventVersion": "0"}))
        # Eight patients of a disease it trained on, found; eight of one it never saw, all missed.
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": f"e{i}", "diagnosis": "ENFERMEDAD TERMINAL",
                                                         "disease_id": "ORPHA:558" if i < 8 else "ORPHA:99999"}))
    lake.put_bytes("capture/diagnosa/AllTraffic/2026/11/27/10/00-00-000-x.jsonl", ("\n".join(lines) + "\n").encode())
    predictions = dict(baseline.predictions)
    predictions["orphan"] = {**(predictions["orphan"] or {}), "trained_groups": ["ORPHA:558", "OMIM:100100"]}
    predictions["thresholds"] = {**predictions["thresholds"], "unseen_macro_recall": 0.4}
    report = run_monitor(lake, "diagnosa", replace(baseline, predictions=predictions))
    orphan, unseen = report["quality"]["orphan"], report["quality"]["orphan_unseen"]
    assert (orphan["n"], orphan["macro_recall"], orphan["status"]) == (16, 0.5, "ok")  # the slice as a whole passes
    assert (unseen["n"], unseen["macro_recall"], unseen["threshold"], unseen["status"]) == (8, 0.0, 0.4,
                                                                                           "below threshold")
    assert report["verdict"] == "alert"
    assert "macro recall on orphan diseases absent from training 0.000 < 0.400 (n=8)" in report["alerts"]
    assert "unseen orphan diseases" in report["failing_classes"]
    assert "unseen orphan diseases below threshold" in report["retrain"]["reasons"]
    assert report["thresholds"]["quality"]["trained_groups"] == 2
    published = {d["MetricName"]: d["Value"] for d in metric_data(report, "diagnosa") if d["MetricName"] != "LiveRecall"}
    assert published["LiveUnseenOrphanMacroRecall"] == 0.0 and published["LiveOrphanMacroRecall"] == 0.5
    html = write_report(report, tmp_path / "out")["html"].read_text()
    assert "orphan diseases absent from training</b> (macro)</td><td class='num'>8<" in html


def test_baseline_files_copied_without_evaluation_json_still_name_their_model_version(baseline_dir, trained_model_dir):
    # As the AWS deploy function copies them for the monitoring job: it judged every version's traffic.
    from monitoring.identity import baseline_model, served_model

    assert not (baseline_dir / "evaluation.json").exists()
    assert baseline_model(load_baseline([baseline_dir])).version == served_model(trained_model_dir).version


def test_window_parsing_names_the_bad_bound():
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    assert parse_window(last="24h", now=now) == (datetime(2026, 11, 26, 12, tzinfo=timezone.utc), None)
    assert parse_window("2026-11-27", "2026-11-27T06:00:00Z")[1].hour == 6
    for kwargs, message in (({"last": "soon"}, "--last"), ({"since": "yesterday"}, "--since"),
                            ({"since": "2026-11-28", "until": "2026-11-27"}, "not before"),
                            ({"since": "2026-11-01", "last": "1d"}, "either"),
                            ({"last": "99999999999d"}, "reaches back before the year 1"),  # was an OverflowError
                            # 5,000 digits: Python's own "Exceeds the limit (4300 digits)", naming no flag.
                            ({"last": "9" * 5_000 + "h"}, r"--last '9{70,80}…' reaches back before the year 1"),
                            ({"last": "0" * 5_000 + "1h"}, None),  # leading zeros are no digits
                            # An unset shell variable read as no bound; a start after now, as "NO DATA" with status 0.
                            ({"since": ""}, "--since is empty or blank"), ({"until": " "}, "--until is empty or blank"),
                            ({"since": "9000-12-31T23:59:59Z"}, "is after now")):
        if message is None:
            assert parse_window(**kwargs, now=now)[0] == now - timedelta(hours=1)
            continue
        with pytest.raises(WindowError, match=message):
            parse_window(**kwargs)


@pytest.mark.parametrize("window, said", [
    # Each was a traceback (exit 1): the conversion to UTC, or the reads' filing margin, past datetime's ends.
    (["--since", "2026-12-06T00:00Z", "--until", "9999-12-31T23:59:59-03:00"], re.escape("--until '9999-12-31T23:59:59-03:00' is "
     "out of range: give an instant between 0001-01-03 and 9999-12-29 (UTC)")),
    (["--since", "2026-12-06T00:00Z", "--until", "9999-12-31T23:59:59Z"], "--until '9999-12-31T23:59:59Z' is out of range"),
    (["--last", "24h", "--until", "0001-01-02T00:00Z"], "--until '0001-01-02T00:00Z' is out of range"),
    (["--since", "0001-01-01T00:00:00+05:30"], re.escape("--since '0001-01-01T00:00:00+05:30' is out of range")),
    (["--last", "1h", "--feedback-lag", "800000d"], "--feedback-lag 800000d reaches back before 0001-01-03"),
    (["--since", "0001-01-04T00:00Z", "--feedback-lag", "2d"], "--feedback-lag 2d reaches back before 0001-01-03"),
    (["--last", "3652000d"], "--last '3652000d' reaches back before 0001-01-03"),
    # 100,000 characters: the value was quoted whole up to the 8,000 an error may hold, the hint cut off.
    (["--since", "x" * 100_000], r"--since 'x{70,80}…' is not an ISO 8601 date or time \(e.g. 2026-11-27"),
], ids=["until-year-10000-in-utc", "until-last-second", "until-year-1", "since-year-0-in-utc", "lag-from-now",
        "lag-from-since", "last-from-now", "since-100k-chars"])
def test_a_window_at_the_ends_of_the_calendar_is_refused_naming_its_flag(tmp_path, loop, baseline_dir, capsys,
                                                                         window, said):
    from diagnosa.cli import main

    lake, _ = loop
    reports = lake.list("artifacts/monitoring/")
    argv = ["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir), *window]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert re.search(said, error), error
    assert len(error) < 400 and "Traceback" not in error
    assert lake.list("artifacts/monitoring/") == reports


def test_a_window_in_the_first_years_is_reported_with_a_four_digit_year_read_back_as_written(tmp_path, loop,
                                                                                           baseline_dir, capsys):
    """strftime's %Y wrote the year 1 as ``1-01-04T00:00:00Z``, which ``datetime.fromisoformat`` cannot read back; and
    a bound with a fraction of a second was printed without it, though the window is cut there."""
    from diagnosa.cli import main

    lake, _ = loop
    out = tmp_path / "out"
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--since", "0001-01-04", "--until", "0001-01-05T00:00:00.25Z", "--out", str(out)]) == 0
    assert "window 0001-01-04T00:00:00Z → 0001-01-05T00:00:00.250000Z" in capsys.readouterr().out
    window = json.loads((out / "report.json").read_text())["window"]
    assert window == {"start": "0001-01-04T00:00:00Z", "end": "0001-01-05T00:00:00.250000Z"}
    assert datetime.fromisoformat(window["end"]) == datetime(1, 1, 5, 0, 0, 0, 250000, tzinfo=timezone.utc)


@pytest.mark.needs("chromium")
def test_html_report_renders_in_chromium_with_verdicts_and_plots(tmp_path, loop):
    _, phases = loop
    paths = write_report(phases["drift"]["report"], tmp_path / "report")
    html = paths["html"].read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: plots are inline data URIs
    with browser.launch() as chromium:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.goto(paths["html"].resolve().as_uri())
        assert "alert" in page.inner_text("#overall")
        assert "drift" in page.inner_text("tr[data-feature='crp_mg_l']")
        assert "NO ENFERMO" in page.inner_text("#alerts")
        images = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert len(images) >= 5 and all(width > 100 for width in images)  # every inline PNG decoded
    shot = browser.screenshot(str(paths["html"]), tmp_path / "report.png", wait_for="#skipped")
    assert shot.read_bytes()[:4] == b"\x89PNG"


def test_cli_monitor_writes_the_report_and_fails_on_alert_when_asked(tmp_path, loop, baseline_dir, capsys):
    from diagnosa.cli import main

    lake, phases = loop
    start = phases["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    argv = ["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--since", start]
    assert main([*argv, "--baseline", str(tmp_path / "nowhere")]) == 2
    assert "baseline folder" in capsys.readouterr().err
    (tmp_path / "statistics.json").write_text("{}")
    assert main([*argv, "--baseline", str(tmp_path / "statistics.json")]) == 2  # a file, not its folder
    assert f"baseline {tmp_path / 'statistics.json'} is a file: give the folder" in capsys.readouterr().err
    for flag, value, said in (("--min-psi", "-1", "--min-psi must be a positive number, got -1.0"),
                              ("--min-psi", "inf", "--min-psi must be a positive number, got inf"),
                              ("--p-value", "2", "--p-value must be in (0, 1), got 2.0"),
                              ("--missing-rate-delta", "inf", "--missing-rate-delta must be in (0, 1], got inf")):
        assert main([*argv, "--baseline", str(baseline_dir), f"{flag}={value}"]) == 2
        assert said in capsys.readouterr().err
    assert main([*argv, "--baseline", str(baseline_dir), "--last", "2h"]) == 2
    assert "either --last or --since" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main([*argv, "--baseline", str(baseline_dir), "--out", str(out), "--fail-on-alert"]) == 3
    printed = capsys.readouterr().out
    assert "verdict: ALERT" in printed and "crp_mg_l" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "alert" and (out / "report.html").is_file()
    violations = json.loads((out / "constraint_violations.json").read_text())["violations"]
    assert {v["feature_name"] for v in violations} >= {"hemoglobin_g_dl"}
    assert [k for k in lake.list("artifacts/monitoring/diagnosa/") if k.endswith("report.json")]
    assert main([*argv, "--baseline", str(baseline_dir), "--out", str(out)]) == 2  # never overwrites a report


def test_cli_monitor_feedback_lag_judges_the_earlier_requests_too(tmp_path, loop, baseline_dir, capsys):
    from diagnosa.cli import main

    lake, phases = loop
    start = phases["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    argv = ["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir)]
    reports = lake.list("artifacts/monitoring/")
    for bad, said in ((["--since", start, "--feedback-lag", "3x"], "--feedback-lag '3x' must be a duration like"),
                      (["--since", start, "--feedback-lag=-1d"], "--feedback-lag '-1d' must be a duration like"),
                      (["--feedback-lag", "1d"], "--feedback-lag goes with a window that has a start")):
        assert main([*argv, *bad]) == 2, bad
        assert said in capsys.readouterr().err
    assert lake.list("artifacts/monitoring/") == reports  # refused before any report was written
    assert main([*argv, "--since", start, "--out", str(tmp_path / "plain")]) == 0
    assert "live quality:" not in capsys.readouterr().out
    assert main([*argv, "--since", start, "--feedback-lag", "1h", "--out", str(tmp_path / "lagged")]) == 0
    printed = capsys.readouterr().out
    plain, lagged = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("plain", "lagged"))
    # The clean phase's requests (just before the window) and their feedback are judged too; drift is unchanged.
    assert (plain["quality"]["feedback"]["matched"], lagged["quality"]["feedback"]["matched"]) == (150, 300)
    assert plain["traffic"] == lagged["traffic"] and plain["drifted_features"] == lagged["drifted_features"]
    assert f"live quality: the requests of {lagged['quality']['window']['start']} → now (600 requests, 600 patients)" \
        f": the window and its 1h of feedback lag" in printed


def test_two_monitor_runs_in_one_second_keep_both_reports(tmp_path, loop, baseline_dir, monkeypatch, capsys):
    """A script running the monitor twice (a report, then a retraining check) within one second: each run has its
    own report folder and lake prefix (named by time, both runs had the same)."""
    from datetime import datetime, timezone

    import diagnosa.commands.monitor as command
    from diagnosa.cli import main

    frozen = datetime(2026, 12, 2, 12, 43, 58, tzinfo=timezone.utc)
    monkeypatch.setattr(command, "datetime", type("Frozen", (), {"now": staticmethod(lambda tz=None: frozen)}))
    lake, phases = loop
    start = phases["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    argv = ["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--since", start,
            "--baseline", str(baseline_dir)]
    assert main(argv) == 0 and main(argv) == 0
    capsys.readouterr()
    folders = sorted((tmp_path / "ws" / "monitoring" / "diagnosa").iterdir())
    assert len(folders) == 2 and all(f.name.startswith("20261202T124358Z-") for f in folders)
    reports = [k for k in lake.list("artifacts/monitoring/diagnosa/20261202T124358Z") if k.endswith("report.json")]
    assert len(reports) == 2


def test_processing_job_reads_the_container_contract(tmp_path, loop, baseline_dir, capsys):
    import shutil

    from monitoring import job

    lake, _ = loop
    base = tmp_path / "job"
    shutil.copytree(baseline_dir, base / "input" / "baseline")
    assert job.main(["--base-dir", str(base)]) == 0  # no capture mounted: a "no data" report, not a crash
    assert "monitor:alert=0" in capsys.readouterr().out
    assert job.main(["--base-dir", str(base)]) == 1  # never overwrites a report
    assert "not empty" in (base / "output" / "failure").read_text()
    shutil.rmtree(base / "output")
    root = lake.storage.root
    for zone in ("capture", "feedback"):
        shutil.copytree(root / zone, base / "input" / "lake" / zone)
    assert job.main(["--base-dir", str(base)]) == 0
    printed = capsys.readouterr().out
    assert "monitor:alert=1" in printed and "monitor:drifted_features=0" not in printed
    report = json.loads((base / "output" / "report" / "report.json").read_text())
    assert report["verdict"] == "alert"

    # The monitor function's feedback lag (whole minutes): the window's drift, live quality of the lag before it too.
    shutil.rmtree(base / "output")
    start = loop[1]["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert job.main(["--base-dir", str(base), "--since", start, "--feedback-lag", "10080m"]) == 0
    lagged = json.loads((base / "output" / "report" / "report.json").read_text())
    assert lagged["quality"]["window"]["feedback_lag_seconds"] == 7 * 86400
    assert lagged["quality"]["feedback"]["matched"] == 300  # both phases' 150 feedback, not the window's alone
    shutil.rmtree(base / "output")
    assert job.main(["--base-dir", str(base), "--since", start, "--feedback-lag", "7 days"]) == 1
    assert "--feedback-lag '7 days' must be a duration" in (base / "output" / "failure").read_text()
    capsys.readouterr()

    # In AWS the job also publishes the verdict where the CDK app's drift alarm looks for it.
    import boto3
    from moto import mock_aws

    from diagnosa.labels import ascii_words
    from monitoring.cloudwatch import drift_score

    shutil.rmtree(base / "output")
    with mock_aws():
        assert job.main(["--base-dir", str(base), "--metrics-namespace", "Diagnosa/Monitoring"]) == 0
        cloudwatch = boto3.client("cloudwatch", region_name="eu-west-1")
        listed = cloudwatch.list_metrics(Namespace="Diagnosa/Monitoring")["Metrics"]
        endpoint = [{"Name": "EndpointName", "Value": "diagnosa"}]
        verdict = {m["MetricName"] for m in listed if m["MetricName"] != "LiveRecall"}
        assert verdict == {"DriftScore", "RetrainRecommended", "DriftedFeatures", "FailingClasses"} | {
            metric for key, metric in (("orphan", "LiveOrphanMacroRecall"), ("orphan_unseen", "LiveUnseenOrphanMacroRecall"))
            if report["quality"][key]["macro_recall"] is not None}
        assert all(m["Dimensions"] == endpoint for m in listed if m["MetricName"] != "LiveRecall")
        # Live recall per class with feedback in the window, for the dashboard (the gate's live counterpart).
        # A class is named in ASCII (EnfermedadCronica): CloudWatch refuses the whole call for one accented value.
        live = {m["Dimensions"][1]["Value"] for m in listed if m["MetricName"] == "LiveRecall"}
        assert live == {ascii_words(label) for label, c in report["quality"]["per_class"].items() if c["n"]} and live
        assert all(value.isascii() for value in live)
        assert all(m["Dimensions"][:1] == endpoint for m in listed if m["MetricName"] == "LiveRecall")
    score = drift_score(report)
    assert score == len(report["drifted_features"]) / len(report["features"]) and 0 < score <= 1
    assert drift_score({**report, "drifted_features": [], "retrain": {"recommended": True}}) == 1.0
    assert drift_score({**report, "drifted_features": [], "retrain": {"recommended": False}}) == 0.0



def test_on_aws_the_job_reads_only_its_windows_traffic_from_the_lake(tmp_path, loop, baseline_dir, capsys):
    """The monitor function's job reads the lake itself (``--lake s3://<lake>``): a ProcessingInput of
    ``capture/<endpoint>/`` downloaded every request ever captured on every daily run. Given a month of older
    traffic, the job fetches none of it, and its report is the one the same window gives read from a folder."""
    import re
    import shutil

    import boto3
    from moto import mock_aws

    from monitoring import job

    lake, phases = loop
    since = phases["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    reports = {}
    for name in ("folder", "s3", "gone"):
        shutil.copytree(baseline_dir, tmp_path / name / "input" / "baseline")
    for zone in ("capture", "feedback"):
        shutil.copytree(lake.storage.root / zone, tmp_path / "folder" / "input" / "lake" / zone)
    assert job.main(["--base-dir", str(tmp_path / "folder"), "--since", since]) == 0
    reports["folder"] = json.loads((tmp_path / "folder" / "output" / "report" / "report.json").read_text())

    with mock_aws():
        boto3.setup_default_session(region_name="eu-west-1")  # the job's client comes from the default session
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for key in lake.list("capture/") + lake.list("feedback/"):
            s3.put_object(Bucket="lake", Key=key, Body=lake.get_bytes(key))
        older = set()
        for key in lake.list("capture/diagnosa/"):  # the same objects, filed 30 days earlier
            folder, hour, name = re.fullmatch(r"(capture/diagnosa/[^/]+/)([0-9/]{13})(/.+)", key).groups()
            old = folder + (datetime.strptime(hour, "%Y/%m/%d/%H") - timedelta(days=30)).strftime("%Y/%m/%d/%H") + name
            s3.put_object(Bucket="lake", Key=old, Body=lake.get_bytes(key))
            older.add(old)
        fetched: list[str] = []
        boto3.DEFAULT_SESSION.events.register("before-parameter-build.s3.GetObject",
                                              lambda params, **_: fetched.append(params["Key"]))
        try:
            assert job.main(["--base-dir", str(tmp_path / "s3"), "--lake", "s3://lake", "--since", since]) == 0
            assert job.main(["--base-dir", str(tmp_path / "gone"), "--lake", "s3://no-such-lake", "--since", since]) == 1
        finally:
            boto3.DEFAULT_SESSION = None
    reports["s3"] = json.loads((tmp_path / "s3" / "output" / "report" / "report.json").read_text())
    assert fetched and not older & set(fetched)  # nothing of the older month was read
    assert {key for key in fetched if key.startswith("capture/")} <= set(lake.list("capture/"))
    assert reports["s3"]["traffic"] == reports["folder"]["traffic"] and reports["s3"]["traffic"]["events"] == 300
    for part in ("verdict", "alerts", "drifted_features", "quality"):
        assert reports["s3"][part] == reports["folder"][part], part
    failure = (tmp_path / "gone" / "output" / "failure").read_text()
    assert "NoSuchBucket" in failure  # the job's status names why it could not read the lake
    capsys.readouterr()


@pytest.mark.slow
def test_retraining_runs_the_pipeline_on_the_feedback_version_and_the_gate_decides(tmp_path, loop, baseline_dir,
                                                                                   capsys):
    """The end of the loop: `diagnosa monitor --retrain` on the drifted window → a new curated version holding the
    feedback → a local pipeline execution on it → the recall gate registers the new model or stops it."""
    from diagnosa.cli import main
    from diagnosa.data.cohort import write_raw
    from diagnosa.data.ingest import ingest_cohort, latest_version
    from pipelines.executor import list_executions

    lake, phases = loop
    base = generate(CohortConfig(patients=1000, seed=3, defect_rate=0))
    write_raw(base, lake, "base")
    base_version = ingest_cohort(lake, "base").version
    workspace = tmp_path / "ws"
    start = phases["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    code = main(["--lake", lake.uri, "--workspace", str(workspace), "monitor", "--baseline", str(baseline_dir),
                 "--since", start, "--retrain", "--base-version", base_version, "--families", "logistic_regression"])
    printed = capsys.readouterr().out
    assert "verdict: ALERT" in printed and "retraining: starting a local pipeline execution" in printed
    version = latest_version(lake, "patients")
    assert version != base_version
    (execution,) = list_executions(workspace / "executions")
    assert execution["Parameters"]["InputDataUri"] == f"s3://diagnosa-local/curated/patients/{version}"
    steps = execution["Steps"]
    assert {"Preprocess", "Evaluate", "RecallGate"} <= set(steps)
    # The gate decided: either the new model was registered, or the run stopped at the gate's FailStep.
    if execution["PipelineExecutionStatus"] == "Succeeded":
        assert code == 0 and "Register" in steps
    else:
        assert code == 1 and "RecallGateFailed" in steps and "Register" not in steps


@pytest.mark.parametrize("families, said", [
    (["--families", "logistic_regression"], "logistic_regression, as --families names"),
    # No endpoint in this workspace names the run that trained the served model: the definition's defaults.
    ([], "mlp, logistic_regression, xgboost, gradient_boosting, the default ones (this workspace does not say which "
         "run trained the served model)")])
def test_retraining_with_no_feedback_to_add_trains_on_the_version_as_it_is_as_on_aws(tmp_path, baseline_dir, capsys,
                                                                                     monkeypatch, families, said):
    # The AWS retrain function trains on the version the folding job found nothing to add to; locally the same
    # report's retraining stopped with "retraining not started" and exit status 2, as if the command were wrong.
    from diagnosa.cli import main
    from diagnosa.commands import local
    from diagnosa.data.cohort import write_raw
    from diagnosa.data.ingest import ingest_cohort

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    write_raw(generate(CohortConfig(patients=1000, seed=3, defect_rate=0)), lake, "base")
    version = ingest_cohort(lake, "base").version
    started = []
    monkeypatch.setattr(local, "run_pipeline", lambda *args, **kwargs: started.append(kwargs) or 0)
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--last", "1h", "--retrain", "--force-retrain", *families]) == 0
    printed = capsys.readouterr().out
    assert (f"retraining: no accepted feedback to add: no feedback in the lake; training on curated version {version} "
            "of patients as it is") in printed
    assert f"retraining: candidate families {said}" in printed
    [run] = started
    assert run["dataset"] == "patients" and run["families"] == (("logistic_regression",) if families else None)
    assert run["overrides"] == {"InputDataUri": f"s3://diagnosa-local/curated/patients/{version}"}


@pytest.mark.parametrize("version", ["0123456789ab", "../x"])
def test_a_base_version_that_is_not_there_is_refused_before_the_report(tmp_path, baseline_dir, capsys, version):
    # It was checked only on the day an alert started a retraining: a cron job's typo passed, exit 0, until then.
    from diagnosa.cli import main
    from diagnosa.data.cohort import write_raw
    from diagnosa.data.ingest import ingest_cohort

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    write_raw(generate(CohortConfig(patients=1000, seed=3, defect_rate=0)), lake, "base")
    ingest_cohort(lake, "base")
    before = sorted(lake.list(""))
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--last", "1h", "--retrain", "--base-version", version]) == 2
    out, err = capsys.readouterr()
    assert f"retraining not started: --base-version {version!r} is no curated version of patients (the folders of " \
           "curated/patients/ in the lake; leave it out for the latest)" in err and not out
    assert sorted(lake.list("")) == before  # no report, no feedback version


def test_retraining_options_are_checked_before_anything_is_written(tmp_path, loop, baseline_dir, capsys):
    # A typo in --param or --families was found only after the feedback version had been written and made the
    # dataset's latest: the next plain `run --local` trained on it. Without --retrain they were not checked at all.
    from diagnosa.cli import main

    lake, phases = loop
    workspace = tmp_path / "ws"
    before = sorted(lake.list("raw/")), sorted(lake.list("curated/"))
    start = phases["drift"]["start"].strftime("%Y-%m-%dT%H:%M:%SZ")
    common = ["--lake", lake.uri, "--workspace", str(workspace), "monitor", "--baseline", str(baseline_dir),
              "--since", start]
    for extra, says in ((["--param", "Bogus"], "--param takes NAME=VALUE, got 'Bogus'"),
                        (["--param", "Foo=1"], "Foo"),
                        (["--families", "nope"], "nope")):
        assert main([*common, "--retrain", "--force-retrain", *extra]) == 2
        out, err = capsys.readouterr()
        assert says in err and "retraining: starting" not in out
        assert (sorted(lake.list("raw/")), sorted(lake.list("curated/"))) == before
    assert main([*common, "--families", "logistic_regression", "--force-retrain"]) == 2
    assert "--families, --force-retrain go with --retrain" in capsys.readouterr().err
    # An --out that is a file is a bad path: exit status 2, as docs/operations.md says (it was 1).
    (tmp_path / "afile").write_text("x")
    assert main([*common, "--out", str(tmp_path / "afile")]) == 2
    assert f"cannot write the report to {tmp_path / 'afile'}: it is a file, not a folder" in capsys.readouterr().err
    os.mkfifo(tmp_path / "fifo")  # called "a file" before
    assert main([*common, "--out", str(tmp_path / "fifo")]) == 2
    assert f"report to {tmp_path / 'fifo'}: it is a named pipe (FIFO), not a folder" in capsys.readouterr().err


def test_a_dataset_of_your_own_is_monitored_against_its_own_labels():
    # The cohort's five categories were the only labels: every endpoint of a dataset of your own was refused
    # ("recall thresholds name unknown classes").
    import pandas as pd

    from monitoring.quality import live_quality
    from monitoring.run import settings_from_baseline
    from processing.baseline import Baseline

    baseline = Baseline(data=None, sources=[], predictions={  # type: ignore[arg-type]
        "labels": ["leve", "grave"], "thresholds": {"recall": {"leve": 0.5}, "orphan_macro_recall": 0.4}})
    quality = settings_from_baseline(baseline, min_feedback=1).quality
    quality.validate()
    assert quality.labels == ("leve", "grave") and dict(quality.recall) == {"leve": 0.5, "grave": 0.8}
    joined = pd.DataFrame({"event_id": ["a", "b", "c"], "predicted": ["leve", "leve", "grave"],
                           "confirmed": ["leve", "grave", "grave"], "orphan": [None, None, None]})
    report = live_quality(joined, quality)
    assert {label: c["recall"] for label, c in report["per_class"].items()} == {"leve": 1.0, "grave": 0.5}
    # Its evaluation had no orphan slice: the report had an 'orphan slice' row (0, no feedback) all the same.
    assert quality.orphan_slice is False and report["orphan"]["status"] == "not monitored"
    assert not report["orphan_failing"]
    cohort = settings_from_baseline(Baseline(data=None, sources=[], predictions={  # type: ignore[arg-type]
        "labels": ["leve", "grave"], "orphan": {"n": 3, "macro_recall": 0.5}, "thresholds": {}}), min_feedback=1)
    assert cohort.quality.orphan_slice is True


def test_captured_requests_are_read_as_the_endpoint_read_them():
    # Requests the endpoint accepted and cleaned (' otra ', a Mac's decomposed 'sí', CSV cells 'NA', a decomposed
    # field name) were new categories, type errors and drift (p = 3e-116 from 2 requests of 75).
    from datetime import datetime, timezone

    import pandas as pd

    from diagnosa.data.schema import Field, Schema
    from inference.capture import capture_line
    from monitoring.traffic import traffic_from_events
    from processing.baseline import data_baseline, parse_data_baseline

    schema = Schema("x", (Field("id", "string", role="id"), Field("raza", "category"), Field("fumadora", "boolean"),
                          Field("hipertensión", "boolean"), Field("edad", "number"),
                          Field("y", "category", role="target", values=("a", "b"))), ("a", "b"),
                    missing_values=("NA", "NaN"))
    frame = pd.DataFrame({"raza": ["otra", "blanca"] * 10, "fumadora": [True, False] * 10,
                          "hipertensión": [False] * 20, "edad": [30.0, 40.0] * 10})
    data = parse_data_baseline(*data_baseline(frame, schema))
    assert data.features["edad"].missing_values == ("NA", "NaN") and data.features["fumadora"].field_type == "boolean"
    kinds = {name: "boolean" if fb.field_type == "boolean" else fb.kind for name, fb in data.features.items()}
    missing = {name: fb.missing_values for name, fb in data.features.items()}
    when = datetime(2026, 12, 2, tzinfo=timezone.utc)
    answer = b'{"predictions": [{"category": "a"}]}'
    events = [capture_line("e1", None, json.dumps({"raza": " otra ", "fumadora": True, "edad": 30}).encode(),
                           "application/json", answer, "application/json", when),
              capture_line("e2", None, "raza,fumadora,hipertensio\u0301n,edad\notra,si\u0301,No,NA\n".encode(),
                           "text/csv", answer, "application/json", when),
              # blank texts: missing values, as the endpoint read them (not a category '', not a type error)
              capture_line("e3", None, json.dumps({"raza": "   ", "fumadora": "", "edad": " "}).encode(),
                           "application/json", answer, "application/json", when),
              # (a row of blank cells alone is a blank row, which the endpoint skips: one with an id is read)
              capture_line("e4", None, "id,raza,edad\nx4,  ,  \n".encode(), "text/csv", answer, "application/json",
                           when)]
    traffic = traffic_from_events(events, kinds, missing=missing)
    rows = traffic.rows.set_index("event_id")
    assert rows.loc["e1", "raza"] == rows.loc["e2", "raza"] == "otra"
    assert rows.loc[["e3", "e4"], ["raza", "fumadora", "edad"]].isna().all().all()
    assert rows.loc["e2", "fumadora"] == "true" and rows.loc["e2", "hipertensión"] == "false"
    assert rows.loc["e1", "fumadora"] == "true" and rows.loc["e1", "edad"] == 30.0 and pd.isna(rows.loc["e2", "edad"])
    assert not traffic.type_errors


def test_requests_stamped_after_the_reports_time_are_counted_and_said(tmp_path, baseline_dir, capsys):
    """An endpoint whose clock runs 3 h ahead: a window with no end reads its requests (they happened), and the next
    daily window counts them again. The report says how many and up to when, rather than hide it."""
    from test_monitor_windows import event, put

    from diagnosa.cli import main

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    now = datetime.now(timezone.utc)
    for name, when in (("on-time", now - timedelta(hours=1)), ("ahead", now + timedelta(hours=3))):
        put(lake, f"{when:%Y/%m/%d/%H}", event(name, when.isoformat(timespec="milliseconds").replace("+00:00", "Z")))
    out = tmp_path / "out"
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--last", "24h", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    ahead = json.loads((out / "report.json").read_text())["traffic"]["ahead_of_now"]
    assert ahead["events"] == 1 and ahead["patients"] == 1
    assert abs(datetime.fromisoformat(ahead["latest"]) - (now + timedelta(hours=3))) < timedelta(seconds=1)
    assert (f"1 of them (1 patients) stamped after this report's time, up to {ahead['latest']}: the endpoint's clock "
            "runs ahead of this machine's") in printed
    assert "1 of these requests (1 patients) are stamped after this report's time" in (out / "report.html").read_text()
    # A window that ends before now holds none of them, and says nothing of it.
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--last", "24h", "--until", (now - timedelta(minutes=1)).isoformat(), "--out", str(tmp_path / "b")]) == 0
    assert "stamped after" not in capsys.readouterr().out
    assert "ahead-of-now" not in (tmp_path / "b" / "report.html").read_text()
    assert json.loads((tmp_path / "b" / "report.json").read_text())["traffic"]["ahead_of_now"]["events"] == 0


def test_retraining_trains_the_dataset_of_the_model_the_endpoint_serves(tmp_path):
    # Another dataset's model may serve on an endpoint once the first was stopped (`registry approve` says how): the
    # retraining trained the dataset the endpoint is named after, writing the other model's feedback into its raw data.
    from diagnosa.data.cohort import write_raw
    from diagnosa.data.ingest import ingest_cohort, ingest_csv
    from diagnosa.services import LocalWorkspace
    from monitoring.retrain import NothingToFold, feedback_dataset

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    write_raw(generate(CohortConfig(patients=1000, seed=3, defect_rate=0)), lake, "base")
    ingest_cohort(lake, "base")
    rows = "".join(f"P{i};{30 + i % 40};{'grave' if i % 3 == 0 else 'leve'}\n" for i in range(60))
    (tmp_path / "u.csv").write_text("id;edad;gravedad\n" + rows, encoding="utf-8")
    (tmp_path / "u.toml").write_text('name = "urgencias"\nid_column = "id"\ntarget = "gravedad"\nlabels = ["leve", '
                                     '"grave"]\n[csv]\ndelimiter = ";"\n', encoding="utf-8")
    version = ingest_csv(lake, tmp_path / "u.csv", tmp_path / "u.toml").version
    model = tmp_path / "ws" / "endpoints" / "diagnosa" / "models" / "m1"
    model.mkdir(parents=True)
    (model / "metadata.json").write_text(json.dumps({"dataset": {"name": "urgencias"}, "labels": ["leve", "grave"]}))
    (model.parents[1] / "endpoint.json").write_text(json.dumps({  # stopped: `endpoint stop` leaves it so
        "EndpointName": "diagnosa", "EndpointStatus": "OutOfService", "ModelDir": str(model)}))
    served = LocalWorkspace(tmp_path / "ws", lake).endpoint_dataset("diagnosa")
    assert served == "urgencias" and LocalWorkspace(tmp_path / "ws", lake).endpoint_dataset("other") is None
    with pytest.raises(NothingToFold) as nothing:  # `monitor --retrain` names it (diagnosa/commands/monitor.py)
        feedback_dataset(lake, "diagnosa", dataset=served)
    assert (nothing.value.dataset, nothing.value.base_version) == ("urgencias", version)
