"""Reading captured traffic once per request (monitoring/traffic.py): retried copies ordered by their instant, an event
captured twice, lines no report can hold (a lone UTF-16 surrogate) and a malformed inference time, each counted under
its own reason. Captures are JSON lines in a real local lake, as SageMaker writes them; the monitor and the built-in
cohort's retraining read them back."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture, read_capture
from inference.feedback import SAME_PATIENT, parse_feedback, store_feedback
from monitoring.retrain import feedback_records
from monitoring.run import run_monitor, write_report
from monitoring.traffic import (
    CONFLICTING,
    DUPLICATE,
    LONE_SURROGATE,
    RETRIED,
    read_traffic,
    retried_copies,
)
from processing.baseline import load_baseline

KEY = "capture/diagnosa/AllTraffic/2026/11/27/10/00-00-000-x.jsonl"


def event(event_id: str, inference_id: str | None = None, when: str = "2026-11-27T10:00:01Z",
          record: object = None, category: str = "NO ENFERMO") -> dict:
    """One capture line as SageMaker writes it (a JSON text body)."""
    meta = {"eventId": event_id, "inferenceTime": when, **({"inferenceId": inference_id} if inference_id else {})}
    return {"captureData": {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON",
                          "data": json.dumps(record if record is not None else {"age": 40, "sex": "F"})},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                           "data": json.dumps({"predictions": [{"category": category}]})}},
        "eventMetadata": meta, "eventVersion": "0"}


def lake_with(root: Path, *objects: list[dict]) -> DataLake:
    """A lake holding each list of events as one capture object (JSON escapes: a lone surrogate stays '\\ud800')."""
    lake = DataLake.from_uri(str(root))
    for number, events in enumerate(objects):
        lake.put_bytes(KEY.replace("-x.", f"-{number}."), ("\n".join(json.dumps(e) for e in events) + "\n").encode())
    return lake


@pytest.mark.parametrize("first, retry", [
    ("2026-11-27T10:00:01Z", "2026-11-27T10:00:01.900Z"),  # a fraction of a second later
    ("2026-11-27T11:59:59+02:00", "2026-11-27T10:00:01Z"),  # another offset: 09:59:59Z, then 10:00:01Z
    ("2026-11-27T10:00:01Z", "2026-11-27 10:00:02Z"),  # a space for the 'T'
    ("2026-11-27T10:00:01", "2026-11-27T09:00:02-01:00"),  # no zone (UTC, as SageMaker stamps), then 10:00:02Z
])
def test_the_copy_kept_of_a_retried_request_is_the_last_in_time_whatever_the_iso_form(tmp_path, first, retry):
    # Compared as text, '10:00:01Z' came after '10:00:01.900Z' (and '+02:00' after 'Z'): the copy whose answer the
    # client never got was kept.
    lake = lake_with(tmp_path, [event("retry", "visit-1", retry), event("first", "visit-1", first)])
    traffic = read_traffic(lake, "diagnosa", None, None, {"age": "numeric"})
    assert traffic.retried == {"first": "retry"} and traffic.rows["event_id"].tolist() == ["retry"]
    events = read_capture(lake, "diagnosa").events
    assert retried_copies(events) == retried_copies(events[::-1]) == {"first": "retry"}
    assert dict(traffic.skipped.counts) == {RETRIED: 1}


def test_an_event_captured_twice_is_one_patient_and_its_feedback_joins(tmp_path, baseline_dir):
    # The same line in two capture objects (an object shipped again, or copied): two patients, and the feedback on it
    # refused as "the captured record is not a JSON object".
    baseline = load_baseline([baseline_dir])
    same, other = event("same", "visit-1"), event("other", None, "2026-11-27T10:00:02Z")
    lake = lake_with(tmp_path, [same, other], [same])
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "same", "diagnosis": "NO ENFERMO"}))
    report = run_monitor(lake, "diagnosa", baseline)
    assert report["traffic"]["events"] == 3 and report["traffic"]["patients"] == 2
    skipped = {s["reason"]: s for s in report["traffic"]["skipped"]["by_reason"]}
    assert skipped.keys() == {DUPLICATE} and skipped[DUPLICATE]["examples"] == ["event same"]
    feedback = report["quality"]["feedback"]
    assert feedback["matched"] == 1 and feedback["skipped"]["total"] == 0
    assert report["quality"]["per_class"]["NO ENFERMO"]["n"] == 1
    records, _, folded = feedback_records(lake, "diagnosa")
    assert [r["patient_id"] for r in records] == ["FB-same"] and not folded.counts


def test_one_event_id_over_different_captures_is_left_out_with_its_reason(tmp_path):
    # Not a copy: which of the two a doctor's feedback is about cannot be known, and neither is one patient.
    lake = lake_with(tmp_path, [event("clash", record={"age": 40}), event("fine", when="2026-11-27T10:00:03Z")],
                     [event("clash", record={"age": 71})])
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "clash", "diagnosis": "NO ENFERMO"}))
    traffic = read_traffic(lake, "diagnosa", None, None, {"age": "numeric"})
    assert traffic.rows["event_id"].tolist() == ["fine"] and dict(traffic.skipped.counts) == {CONFLICTING: 2}
    records, _, folded = feedback_records(lake, "diagnosa")
    assert not records and dict(folded.counts) == {f"captured request unusable: {CONFLICTING}": 1}


def test_a_retried_request_captured_twice_is_still_one_patient(tmp_path):
    # A duplicate line of the earlier copy is neither a second patient nor taken for the copy kept.
    first, retry = event("first", "visit-1"), event("retry", "visit-1", "2026-11-27T10:00:09Z")
    lake = lake_with(tmp_path, [first, retry], [first])
    for event_id in ("first", "retry"):
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": event_id, "diagnosis": "NO ENFERMO"}))
    traffic = read_traffic(lake, "diagnosa", None, None, {"age": "numeric"})
    assert traffic.rows["event_id"].tolist() == ["retry"] and traffic.retried == {"first": "retry"}
    assert dict(traffic.skipped.counts) == {DUPLICATE: 1, RETRIED: 1}
    records, _, folded = feedback_records(lake, "diagnosa")
    assert [r["patient_id"] for r in records] == ["FB-retry"] and dict(folded.counts) == {SAME_PATIENT: 1}


def test_lines_holding_a_lone_surrogate_are_skipped_and_the_rest_monitored(tmp_path, baseline_dir, capsys):
    # JSON allows "\ud800", which decodes to a lone surrogate: one such eventId or body text made building the table
    # (Arrow strings) raise UnicodeEncodeError, and `diagnosa monitor` exit 1 with a traceback.
    events = [event("ok-1", when="2026-11-27T10:00:01Z"),
              event("e\ud800vil", when="2026-11-27T10:00:02Z"),
              event("body", when="2026-11-27T10:00:03Z", record={"age": 40, "sex": "\udfff"}),
              event("answer", when="2026-11-27T10:00:04Z", category="NO \ud800ENFERMO"),
              event("emoji", when="2026-11-27T10:00:05Z", record={"age": 41, "sex": "F \U0001f600"})]  # a pair: fine
    lake = lake_with(tmp_path / "ws" / "lake", events)
    for event_id in ("ok-1", "body"):
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": event_id, "diagnosis": "NO ENFERMO"}))
    report = run_monitor(lake, "diagnosa", load_baseline([baseline_dir]))
    assert report["traffic"]["patients"] == 2
    skipped = {s["reason"]: s for s in report["traffic"]["skipped"]["by_reason"]}
    assert {r: s["count"] for r, s in skipped.items()} == {
        LONE_SURROGATE: 2, "malformed capture line: eventId holds a lone UTF-16 surrogate, which no UTF-8 text can hold": 1}
    assert [e.split(":")[0] for e in skipped[LONE_SURROGATE]["examples"]] == ["event body", "event answer"]
    paths = write_report(report, tmp_path / "out")  # every example is UTF-8 text
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["traffic"]["patients"] == 2
    assert report["quality"]["feedback"]["matched"] == 1
    records, _, folded = feedback_records(lake, "diagnosa")  # retraining reads them the same way
    assert [r["patient_id"] for r in records] == ["FB-ok-1"]
    assert dict(folded.counts) == {f"captured request unusable: {LONE_SURROGATE}": 1}
    # The command prints the reasons and writes its report: no traceback, exit 0.
    from diagnosa.cli import main

    out = tmp_path / "cli-out"
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--out", str(out)]) == 0
    assert "lone UTF-16 surrogate" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["traffic"]["patients"] == 2


def test_the_capture_refuses_to_write_an_id_no_line_can_hold(tmp_path, caplog):
    # The server's ids are UUIDs and printable headers; a lone surrogate would have raised in the spool's encoding,
    # into the request: the event is counted lost instead, and the capture goes on.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    when = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    answer = b'{"predictions": [{"category": "NO ENFERMO"}]}'
    with caplog.at_level(logging.INFO, logger="diagnosa.capture"), \
            DataCapture(lake, "diagnosa", flush_seconds=0.05) as capture:
        assert not capture.record("e\ud800", None, b'{"age": 40}', "application/json", answer, "application/json", when)
        assert not capture.record("e2", "v\udfff", b'{"age": 40}', "application/json", answer, "application/json", when)
        assert capture.record("e3", "visit", b'{"age": 40}', "application/json", answer, "application/json", when)
        assert capture.flush()
        assert capture.lost == 2
    assert [e["eventMetadata"]["eventId"] for e in read_capture(lake, "diagnosa").events] == ["e3"]
    # Each said in one line a UTF-8 log file can hold (the raw id made its handler fail), without a traceback.
    refused = [r for r in caplog.records if "could not be serialised" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in refused] == ["capture event e\\ud800 could not be serialised",
                                                              "capture event e2 could not be serialised"]
    assert all(r.exc_info is None and r.getMessage().isprintable() for r in refused)
    assert "lone UTF-16 surrogate" in refused[1].getMessage()


@pytest.mark.parametrize("when", ["27/11/2026", "2026-11-27T10:00:00+25:00", "0001-01-01T00:00:00+01:00", 1764237600])
def test_a_malformed_inference_time_is_counted_as_such_not_as_json(tmp_path, when):
    # "Invalid isoformat string" matched JSON's "Invalid ..." first; year 1 moved by an offset was an OverflowError
    # out of the reader.
    lake = lake_with(tmp_path, [event("good"), event("bad", when=when)])
    traffic = read_traffic(lake, "diagnosa", None, None, {"age": "numeric"})
    assert traffic.rows["event_id"].tolist() == ["good"]
    assert dict(traffic.skipped.counts) == {"malformed capture line: bad inferenceTime": 1}
    lake.put_bytes(KEY.replace("-x.", "-y."), b'{"captureData": "Invalid \x01"\n{"a": 1 2}\n')
    reasons = read_traffic(lake, "diagnosa", None, None, {"age": "numeric"}).skipped.counts
    assert reasons["malformed capture line: not JSON"] == 2
