"""Which captured requests a monitoring window holds, and lines no window may crash on.

- A request is in a window by its own inferenceTime, not by the hour folder its object is filed under (SageMaker
  files by write time: a request at 07:59:59 under 08/, one at 23:59:59 under the next day's 00/): it was in no
  window's report but one spanning both hours, and counted nowhere.
- A captured body of deeply nested JSON took down `diagnosa monitor` and `--retrain` with a RecursionError.
- The refusals' reasons named the event id of each feedback for an unknown id: one reason per id.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture, captured_patients, error_line, new_event_id, read_capture, read_errors
from monitoring.traffic import MISFILED, NO_PREDICTIONS, read_traffic, request_records, traffic_from_events

PREFIX = "capture/diagnosa/AllTraffic/"
KINDS = {"age": "numeric"}


def event(event_id: str, when: str, data: str = '{"age": 40}',
          output: str = '{"predictions": [{"category": "NO ENFERMO"}]}') -> dict:
    """One capture line as SageMaker writes it (JSON text bodies)."""
    return {"captureData": {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON", "data": data},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT", "encoding": "JSON",
                           "data": output}},
        "eventMetadata": {"eventId": event_id, "inferenceTime": when}, "eventVersion": "0"}


def put(lake: DataLake, hour: str, *events: dict) -> None:
    """``events`` as one capture object filed under ``hour`` ('2026/12/04/08')."""
    lake.put_bytes(f"{PREFIX}{hour}/00-00-05-{events[0]['eventMetadata']['eventId']}.jsonl",
                   ("\n".join(json.dumps(e) for e in events) + "\n").encode())


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def ids(lake: DataLake, since: str, until: str) -> list[str]:
    return [e["eventMetadata"]["eventId"] for e in read_capture(lake, "diagnosa", at(since), at(until)).events]


def test_a_request_is_in_the_window_of_its_own_time_whatever_hour_its_object_is_filed_under(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    put(lake, "2026/12/04/08", event("late-write", "2026-12-04T07:59:59Z"),  # written after the hour turned
        event("far-east", "2026-12-04T21:59:58+14:00"),  # 07:59:58Z: the offset is read as an instant
        event("own-hour", "2026-12-04T08:10:00Z"))
    put(lake, "2026/12/04/00", event("last-of-day", "2026-12-03T23:59:59Z"))  # the next day's first folder
    put(lake, "2026/12/03/23", event("day-before", "2026-12-03T23:00:00-10:00"))  # 09:00Z of the 4th, skewed
    assert ids(lake, "2026-12-04T07:00:00Z", "2026-12-04T08:00:00Z") == ["far-east", "late-write"]
    assert ids(lake, "2026-12-04T08:00:00Z", "2026-12-04T09:00:00Z") == ["own-hour"]
    # Daily windows: the last second of the 3rd is in the 3rd's report, and in no other.
    assert ids(lake, "2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z") == ["last-of-day"]
    assert "last-of-day" not in ids(lake, "2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z")
    # Through the monitor's reader, with the patients' rows: lines of the neighbouring hours are not problems.
    traffic = read_traffic(lake, "diagnosa", at("2026-12-04T07:00:00Z"), at("2026-12-04T08:00:00Z"), KINDS)
    assert sorted(traffic.rows["event_id"]) == ["far-east", "late-write"] and traffic.skipped.total == 0
    daily = read_traffic(lake, "diagnosa", at("2026-12-04T00:00:00Z"), at("2026-12-05T00:00:00Z"), KINDS)
    assert sorted(daily.rows["event_id"]) == ["day-before", "far-east", "late-write", "own-hour"]


def test_feedback_finds_a_request_filed_under_the_next_hour(tmp_path):
    """The feedback checks (the endpoint's lookup, `feedback --file`'s captured_patients) read an event's own hour
    folder, from its id: a request at 07:59:59 filed under 08/ was "no captured prediction" and its feedback refused."""
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    late, early, far = (new_event_id(at(t)) for t in ("2026-12-04T07:59:59Z", "2026-12-04T09:00:01Z",
                                                      "2026-12-04T05:59:59Z"))
    put(lake, "2026/12/04/08", event(late, "2026-12-04T07:59:59Z"),
        event(early, "2026-12-04T09:00:01Z"))  # a clock a little behind SageMaker's
    put(lake, "2026/12/04/08", event(far, "2026-12-04T05:59:59Z"))  # two hours away: past the margin, as in windows
    assert captured_patients(lake, "diagnosa", [late, early]) == {late: 1, early: 1}
    assert captured_patients(lake, "diagnosa", [far]) == {}
    capture = DataCapture(lake, "diagnosa", spool_dir=tmp_path / "spool")  # a process that did not capture them
    try:
        assert [capture.lookup(e) for e in (late, early, far)] == ["captured", "captured", "unknown"]
    finally:
        capture.close()


def test_a_line_filed_further_than_an_hour_from_its_time_is_counted_when_outside_the_window(tmp_path):
    # 06:30+02:00 is 04:30Z, filed under 06/ (a path written in local time): the 04:00-05:00 report does not read
    # that object, so the windows that do read it say so (and only for this line, not for their neighbours' lines).
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    put(lake, "2026/12/04/06", event("local-path", "2026-12-04T06:30:00+02:00"),
        event("on-time", "2026-12-04T06:20:00Z"))
    put(lake, "2026/12/04/07", event("next-hour", "2026-12-04T07:20:00Z"))
    traffic = read_traffic(lake, "diagnosa", at("2026-12-04T06:00:00Z"), at("2026-12-04T07:00:00Z"), KINDS)
    assert traffic.rows["event_id"].tolist() == ["on-time"]
    assert dict(traffic.skipped.counts) == {MISFILED: 1}
    assert traffic.skipped.examples[MISFILED] == [
        f"{PREFIX}2026/12/04/06/00-00-05-local-path.jsonl:1: inferenceTime 2026-12-04T04:30:00Z"]
    # Its own hour with a wider window finds it; a window holding it does not count it.
    wide = read_traffic(lake, "diagnosa", at("2026-12-04T04:00:00Z"), at("2026-12-04T08:00:00Z"), KINDS)
    assert len(wide.rows) == 3 and wide.skipped.total == 0


DEEP = "[" * 100_000 + "]" * 100_000


def test_a_deeply_nested_captured_body_is_counted_not_a_crash(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    put(lake, "2026/12/04/08", event("deep-input", "2026-12-04T08:00:01Z", data=DEEP),
        event("deep-output", "2026-12-04T08:00:02Z", output=DEEP), event("fine", "2026-12-04T08:00:03Z"))
    traffic = read_traffic(lake, "diagnosa", at("2026-12-04T08:00:00Z"), at("2026-12-04T09:00:00Z"), KINDS)
    assert traffic.rows["event_id"].tolist() == ["fine"]
    assert dict(traffic.skipped.counts) == {"input is not a readable JSON or CSV request": 1,
                                            NO_PREDICTIONS: 1}
    assert traffic.dropped == {"deep-input": "input is not a readable JSON or CSV request",
                               "deep-output": NO_PREDICTIONS}
    assert "nested too deeply" in traffic.skipped.examples["input is not a readable JSON or CSV request"][0]
    # The same through the events alone (retraining's reader).
    events = read_capture(lake, "diagnosa").events
    assert len(traffic_from_events(events, KINDS).rows) == 1
    # And for the own-dataset retraining, which reads the request's records alone: a ValueError like any bad body.
    with pytest.raises(ValueError, match="nested too deeply"):
        request_records(DEEP.encode(), "application/json")


def _unknown(event_id: str) -> str:
    """The feedback route's 404 message (inference/server.py)."""
    return (f"no captured prediction has event id {event_id}: feedback refers to the X-Diagnosa-Event-Id this "
            "endpoint answered (predictions captured elsewhere, e.g. by SageMaker, take feedback through "
            "`diagnosa feedback`, straight to the lake)")


def test_refusals_of_feedback_for_unknown_ids_are_one_reason_without_the_id(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    when = datetime(2026, 12, 4, 9, 3, tzinfo=timezone.utc)
    with DataCapture(lake, "diagnosa", sampling_percentage=0) as capture:
        for event_id in ("not-a-uuid", "MariaLopez1961", "e", "x.y:z"):
            assert capture.record_error(event_id, "feedback", 404, _unknown(event_id), when=when)
    # A record written before the id was cut from the message is grouped the same way.
    old = error_line("older-id", "feedback", 404, "", (), None, when) | {"error": _unknown("older-id")[:300]}
    lake.put_bytes("capture-errors/diagnosa/2026/12/04/09/old.jsonl", (json.dumps(old) + "\n").encode())
    errors = read_errors(lake, "diagnosa")
    stored = [e["error"] for e in errors.events if e["eventId"] != "older-id"]
    assert len(stored) == 4 and len(set(stored)) == 1 and "MariaLopez" not in stored[0]
    assert stored[0].startswith("no captured prediction has event id …: feedback refers to")
    summary = errors.summary()["by_reason"]
    assert len(summary) == 1 and summary[0]["count"] == 5
    assert "older-id" not in summary[0]["reason"] and "not-a-uuid" not in summary[0]["reason"]


def test_a_windows_report_reads_the_feedback_of_its_events_not_all_there_is(tmp_path):
    """A daily monitor read every feedback object ever stored (20,000: 12.6 s, 282 MB for a 2-hour window) and listed
    them all as "not used". Objects whose event id names a time (the local endpoint's UUIDv7) more than the filing
    margin outside the window are counted, not read; ids that name no time are read as before."""
    from inference.capture import new_event_id
    from inference.feedback import parse_feedback, read_feedback, store_feedback

    lake = DataLake.from_uri(str(tmp_path))
    start, end = datetime(2026, 12, 4, 8, tzinfo=timezone.utc), datetime(2026, 12, 4, 10, tzinfo=timezone.utc)
    ids = {when: new_event_id(datetime(2026, 12, when[0], when[1], 30, tzinfo=timezone.utc))
           for when in ((1, 8), (3, 9), (4, 7), (4, 9), (4, 10), (4, 12), (5, 9))}
    for event_id in [*ids.values(), "sagemaker-random-id"]:
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": event_id, "diagnosis": "NO ENFERMO"}))
    read = read_feedback(lake, "diagnosa", (start, end))
    # 07:30 and 10:30 are within the hour's margin (a late filing may hold them); 1st, 3rd, 5th and 12:30 are not.
    assert {event_id for event_id, _ in read.latest} == {ids[(4, 7)], ids[(4, 9)], ids[(4, 10)], "sagemaker-random-id"}
    assert read.outside == 4 and read.records == 4
    everything = read_feedback(lake, "diagnosa")  # retraining reads it all
    assert len(everything.latest) == 8 and everything.outside == 0
