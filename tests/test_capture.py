"""Data capture: SageMaker's line and key layout, asynchronous batched writes, sampling, reading back."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture, capture_line, decode_payload, read_capture

WHEN = datetime(2026, 11, 27, 17, 5, 9, 123456, tzinfo=timezone.utc)
KEY = re.compile(r"^capture/diagnosa/AllTraffic/2026/11/27/17/05-09-123-[0-9a-f-]{36}\.jsonl$")


@pytest.fixture
def lake(tmp_path):
    return DataLake.from_uri(str(tmp_path / "lake"))


def _record(capture: DataCapture, i: int, when: datetime = WHEN, **kw) -> bool:
    return capture.record(kw.get("event_id", f"event-{i}"), kw.get("inference_id"), f'{{"age": {i}}}'.encode(),
                          "application/json", b'{"predictions": []}', "application/json", when)


def test_a_line_has_exactly_sagemakers_layout():
    line = capture_line("e-1", "inf-1", b'{"age": 40}', "application/json", b"patient_id,category\n,LEVE\n",
                        "text/csv", WHEN)
    assert line == {
        "captureData": {
            "endpointInput": {"observedContentType": "application/json", "mode": "INPUT", "data": '{"age": 40}',
                              "encoding": "JSON"},
            "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                               "data": "patient_id,category\n,LEVE\n", "encoding": "CSV"},
        },
        "eventMetadata": {"eventId": "e-1", "inferenceId": "inf-1", "inferenceTime": "2026-11-27T17:05:09Z"},
        "eventVersion": "0",
    }
    assert "inferenceId" not in capture_line("e-2", None, b"{}", "application/json", b"{}", "application/json",
                                             WHEN)["eventMetadata"]


@pytest.mark.parametrize("body, content_type, encoding", [
    (b'{"a": "\xc3\xb3"}', "application/json; charset=utf-8", "JSON"),
    (b"a,b\n1,2\n", "text/csv", "CSV"),
    (b"\xff\xfe{}", "application/json", "BASE64"),  # not UTF-8: bytes kept exactly
    (b"hello", "application/octet-stream", "BASE64"),  # not a JSON/CSV content type
    (b"hello", None, "BASE64"),
])
def test_payloads_are_text_when_json_or_csv_and_base64_otherwise(body, content_type, encoding):
    block = capture_line("e", None, body, content_type, b"{}", "application/json", WHEN)["captureData"]["endpointInput"]
    assert block["encoding"] == encoding
    assert decode_payload(block) == body
    if encoding == "BASE64":
        assert base64.b64decode(block["data"]) == body


def test_records_are_written_asynchronously_one_object_per_flush(lake):
    capture = DataCapture(lake, "diagnosa", flush_seconds=60)
    try:
        for i in range(5):
            assert _record(capture, i)
        # The request path only queued them: nothing is in the lake until the writer flushes.
        assert lake.list("capture/") == []
        assert capture.flush()
        keys = lake.list("capture/")
        assert len(keys) == 1 and KEY.match(keys[0]), keys
        lines = lake.get_bytes(keys[0]).decode().splitlines()
        assert [json.loads(line)["eventMetadata"]["eventId"] for line in lines] == [f"event-{i}" for i in range(5)]
        assert capture.written == 5 and capture.sampled == 5
    finally:
        capture.close()


def test_the_writer_flushes_by_itself_after_flush_seconds(lake):
    capture = DataCapture(lake, "diagnosa", flush_seconds=0.05)
    try:
        _record(capture, 1)
        done = threading.Event()
        for _ in range(100):
            if lake.list("capture/"):
                done.set()
                break
            done.wait(0.05)
        assert done.is_set(), "the writer never flushed on its own"
    finally:
        capture.close()


def test_a_batch_spanning_two_hours_goes_to_two_hour_folders(lake):
    with DataCapture(lake, "diagnosa", flush_seconds=60) as capture:
        _record(capture, 1, WHEN)
        _record(capture, 2, WHEN + timedelta(hours=1))
        capture.flush()
        hours = sorted(key.split("/")[6] for key in lake.list("capture/"))
    assert hours == ["17", "18"]


def test_close_drains_the_queue_and_later_records_are_refused(lake):
    capture = DataCapture(lake, "diagnosa", flush_seconds=60)
    for i in range(3):
        _record(capture, i)
    capture.close()
    capture.close()  # idempotent
    assert len(read_capture(lake, "diagnosa").events) == 3
    assert not _record(capture, 9) and capture.dropped == 1


def test_naive_and_non_utc_times_are_stored_in_utc(lake):
    with DataCapture(lake, "diagnosa") as capture:
        _record(capture, 1, datetime(2026, 11, 27, 17, 0, 0))
        _record(capture, 2, datetime(2026, 11, 27, 19, 0, 1, tzinfo=timezone(timedelta(hours=2))))
    events = read_capture(lake, "diagnosa").events
    assert [e["eventMetadata"]["inferenceTime"] for e in events] == ["2026-11-27T17:00:00Z", "2026-11-27T17:00:01Z"]


def test_sampling_zero_captures_nothing(lake):
    with DataCapture(lake, "diagnosa", sampling_percentage=0) as capture:
        assert not any(_record(capture, i) for i in range(50))
    assert lake.list("capture/") == []


def test_sampling_fifty_with_a_seed_keeps_about_half_reproducibly(lake):
    def kept(seed: int) -> list[bool]:
        capture = DataCapture(lake, "diagnosa", sampling_percentage=50, seed=seed, flush_seconds=60)
        try:
            return [capture._sample() for _ in range(1000)]
        finally:
            capture.close()

    first = kept(7)
    assert 420 <= sum(first) <= 580
    assert kept(7) == first and kept(8) != first
    with DataCapture(lake, "diagnosa", sampling_percentage=50, seed=3) as capture:
        queued = sum(_record(capture, i) for i in range(200))
    assert 70 <= queued <= 130
    assert len(read_capture(lake, "diagnosa").events) == queued


@pytest.mark.parametrize("bad", [-1, 101, 50.5, True, "50", None])
def test_sampling_percentage_is_validated(lake, bad):
    with pytest.raises(ValueError, match="sampling_percentage"):
        DataCapture(lake, "diagnosa", sampling_percentage=bad)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "-lead", "x" * 64, "with space"])
def test_endpoint_and_variant_names_are_validated(lake, name):
    with pytest.raises(ValueError, match="endpoint_name"):
        DataCapture(lake, name)
    with pytest.raises(ValueError, match="variant"):
        DataCapture(lake, "diagnosa", variant=name)


class _BlockingLake:
    """A lake whose writes wait for a gate: the writer thread is stuck, the request path must not be."""

    def __init__(self, lake: DataLake):
        self.lake = lake
        self.gate = threading.Event()
        self.entered = threading.Event()

    def put_bytes(self, key: str, data: bytes) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.lake.put_bytes(key, data)


def test_record_never_blocks_even_when_the_writer_is_stuck(lake, tmp_path):
    slow = _BlockingLake(lake)
    capture = DataCapture(slow, "diagnosa", flush_seconds=0.01, spool_dir=tmp_path / "spool")  # type: ignore[arg-type]
    try:
        _record(capture, 0)
        assert slow.entered.wait(5)  # the shipper is now blocked inside a write
        started = time.perf_counter()
        results = [_record(capture, i) for i in range(1, 6)]  # spooled at once, shipping or not
        assert time.perf_counter() - started < 1.0
        assert results == [True] * 5 and capture.dropped == 0
    finally:
        slow.gate.set()
        capture.close()
    assert len(read_capture(lake, "diagnosa").events) == 6


def test_a_full_spool_drops_and_counts(lake, tmp_path):
    slow = _BlockingLake(lake)
    line = len(b"%d " % 0) + 16 + len(json.dumps(capture_line("event-1", None, b'{"age": 1}', "application/json",
                                                                 b'{"predictions": []}', "application/json", WHEN),
                                                    separators=(",", ":")))
    capture = DataCapture(slow, "diagnosa", flush_seconds=60, max_spool_bytes=3 * line,  # type: ignore[arg-type]
                          spool_dir=tmp_path / "spool")
    try:
        results = [_record(capture, i) for i in range(1, 6)]
        assert results == [True, True, True, False, False] and capture.dropped == 2
    finally:
        slow.gate.set()
        capture.close()
    assert len(read_capture(lake, "diagnosa").events) == 3


class _FlakyLake:
    def __init__(self, lake: DataLake, failures: int):
        self.lake = lake
        self.failures = failures

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("S3 is having a bad day")
        self.lake.put_bytes(key, data)


def test_a_failed_write_is_retried_at_the_next_flush(lake, caplog, tmp_path):
    flaky = _FlakyLake(lake, failures=1)
    with DataCapture(flaky, "diagnosa", flush_seconds=60,  # type: ignore[arg-type]
                     spool_dir=tmp_path / "spool") as capture:
        _record(capture, 1)
        assert not capture.flush()
        assert "not written (attempt 1)" in caplog.text
        assert capture.flush()
    assert len(read_capture(lake, "diagnosa").events) == 1 and capture.lost == 0


def test_a_write_that_keeps_failing_stays_in_the_spool_for_the_next_start(lake, tmp_path):
    flaky = _FlakyLake(lake, failures=100)
    capture = DataCapture(flaky, "diagnosa", flush_seconds=60, spool_dir=tmp_path / "spool")  # type: ignore[arg-type]
    _record(capture, 1)
    _record(capture, 2)
    for _ in range(3):
        assert not capture.flush()
    capture.close()
    assert capture.lost == 0 and capture.written == 0 and capture.pending() == 1
    with DataCapture(lake, "diagnosa", flush_seconds=60, spool_dir=tmp_path / "spool") as again:
        assert again.recovered == 2 and again.flush()
    assert [e["eventMetadata"]["eventId"] for e in read_capture(lake, "diagnosa").events] == ["event-1", "event-2"]


def test_read_capture_orders_filters_and_counts_malformed_lines(lake):
    with DataCapture(lake, "diagnosa", flush_seconds=60) as capture:
        for i, minutes in enumerate([90, 0, 30, 150]):  # written out of time order, across hours
            _record(capture, i, WHEN + timedelta(minutes=minutes))
            capture.flush()
    with DataCapture(lake, "other", flush_seconds=60) as other:
        _record(other, 99)
    # Damage one object: a garbage line, a JSON line that is not an event, and a blank line (ignored).
    key = lake.list("capture/diagnosa/")[0]
    lake.put_bytes(key, lake.get_bytes(key) + b"{not json\n[1, 2]\n\n")
    lake.put_bytes("capture/diagnosa/AllTraffic/notes.txt", b"hello")

    events, malformed = read_capture(lake, "diagnosa")
    assert [e["eventMetadata"]["eventId"] for e in events] == ["event-1", "event-2", "event-0", "event-3"]
    assert malformed == 2
    result = read_capture(lake, "diagnosa")
    assert any("notes.txt" in p for p in result.problems) and sum(":" in p for p in result.problems) >= 2

    # Bounds compare with the stored inferenceTime, which has whole seconds: start inclusive, end exclusive.
    second = WHEN.replace(microsecond=0)
    window = read_capture(lake, "diagnosa", start=second + timedelta(minutes=30), end=second + timedelta(minutes=150))
    assert [e["eventMetadata"]["eventId"] for e in window.events] == ["event-2", "event-0"]
    assert read_capture(lake, "diagnosa", variant="AllTraffic").events == events
    assert read_capture(lake, "nobody").events == []


def test_refusals_go_to_the_errors_stream_without_values(lake):
    from inference.capture import MAX_ERROR_PROBLEMS, read_errors, redact

    problems = [(0, "age", "expected a number, got 'Maria Lopez 1961'"),
                {"row": 1, "field": "sex", "problem": "unknown value 'X' (expected one of: F, M)"},
                {"row": 2, "field": "Maria Lopez", "problem": "unknown field (accepted: age, sex)"}]
    problems += [(3 + i, "age", "expected an integer, got 3.5") for i in range(30)]
    with DataCapture(lake, "diagnosa", sampling_percentage=0) as capture:  # refusals are never sampled out
        assert capture.record_error("e-1", "invocations", 400, "33 problem(s) in the request", problems,
                                    fields=["age", "sex"], when=WHEN)
        assert capture.record_error(None, "feedback", 413, "the body is 20,000 bytes; the limit is 16,384", when=WHEN)
    errors = read_errors(lake, "diagnosa")
    assert lake.list("capture-errors/diagnosa/2026/11/27/17/") and not lake.list("capture/")
    text = json.dumps(errors.events)
    assert "Maria" not in text and "3.5" not in text and "'X'" not in text
    first = errors.events[0]
    assert first["route"] == "invocations" and first["status"] == 400 and first["eventId"] == "e-1"
    assert first["problems"][:3] == [{"row": 0, "field": "age", "problem": "expected a number"},
                                     {"row": 1, "field": "sex", "problem": "unknown value '…' (expected one of: F, M)"},
                                     {"row": 2, "field": "(other field)", "problem": "unknown field (accepted: age, sex)"}]
    assert len(first["problems"]) == MAX_ERROR_PROBLEMS and first["moreProblems"] == 33 - MAX_ERROR_PROBLEMS
    assert errors.summary()["by_status"] == {"400": 1, "413": 1}
    assert redact("unknown top-level keys: patient_name, dob (allowed: instances)") == \
        "unknown top-level keys (allowed: instances)"
    assert len(redact("x" * 5000)) <= 300


def test_events_whose_capture_failed_are_remembered_as_such(lake, monkeypatch):
    # Review 48a, finding 9: the client got its answer, so feedback for the id must hear "capture failed", not
    # "never captured". Each way a sampled line is not written: the spool full, a failing write, capture closed.
    import errno
    import os

    capture = DataCapture(lake, "diagnosa", flush_seconds=60, max_spool_bytes=1_000)
    assert not _record(capture, 1, event_id="too-big-for-the-spool" + "x" * 2_000)
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if fd == capture._capture.fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert not _record(capture, 2, event_id="disk-full")
    monkeypatch.setattr(os, "write", real_write)
    assert _record(capture, 3, event_id="written")
    capture.close()
    assert not _record(capture, 4, event_id="after-close")
    assert capture.dropped == 3 and capture.spool_errors == 1
    for event in ("too-big-for-the-spool" + "x" * 2_000, "disk-full", "after-close"):
        assert capture.lookup(event) == "capture failed"
        assert capture.patients(event) is None
    assert capture.lookup("written") == "captured" and capture.lookup("never-seen") == "unknown"
