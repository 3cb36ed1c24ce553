"""What a read of captured traffic lists and fetches: the monitor's window reads the day folders of its hours (and
their filing margin) in each variant, fetches the window's objects several at a time, and gives the result a
sequential read of the endpoint's whole history gave. Run on a local folder and on S3 (moto)."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import lake_fixtures
import pytest

from diagnosa.lake import DataLake, InvalidKey, ObjectNotFound, S3Storage
from inference import capture
from inference.capture import (
    capture_line,
    captured_patients,
    new_event_id,
    parse_time,
    read_capture,
)
from inference.feedback import parse_feedback, read_feedback, store_feedback

BUCKET, REGION = lake_fixtures.BUCKET, lake_fixtures.REGION
aws, lake = lake_fixtures.aws, lake_fixtures.lake  # the fixtures, on a folder and on S3

EP = "ep"
A, S = f"capture/{EP}/AllTraffic/", f"capture/{EP}/Shadow/"
START = datetime(2026, 3, 10, 0, 30, tzinfo=timezone.utc)
END = datetime(2026, 3, 11, 0, 30, tzinfo=timezone.utc)


class Recording:
    """The lake's storage, recording what a read asks of it (from the read's threads), each GET taking ``delay``."""

    def __init__(self, storage: Any, delay: float = 0.0, gone: str | None = None) -> None:
        self.storage, self.uri, self.delay, self.gone = storage, storage.uri, delay, gone
        self.lists: list[str] = []
        self.folders: list[str] = []
        self.gets: list[str] = []
        self.lock = threading.Lock()
        self.active = self.most = 0

    def list(self, prefix: str = "") -> list[str]:
        self.lists.append(prefix)
        keys = self.storage.list(prefix)
        if self.gone is not None and self.gone in keys:
            self.storage.delete(self.gone)  # expired (a lifecycle rule) between the listing and the GET
        return keys

    def list_folders(self, prefix: str) -> list[str]:
        self.folders.append(prefix)
        return self.storage.list_folders(prefix)

    def get_bytes(self, key: str) -> bytes:
        with self.lock:
            self.gets.append(key)
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(self.delay)
            return self.storage.get_bytes(key)
        finally:
            with self.lock:
                self.active -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)


def s3_calls(lake: DataLake) -> dict[str, list[dict[str, Any]]] | None:
    """The S3 requests of an S3 lake's client from now on (by operation: their parameters); None for a folder."""
    if not isinstance(lake.storage, S3Storage):
        return None
    calls: dict[str, list[dict[str, Any]]] = {"ListObjectsV2": [], "GetObject": []}
    for operation, seen in calls.items():
        lake.storage.client.meta.events.register(f"provide-client-params.s3.{operation}",
                                                 lambda params, seen=seen, **_: seen.append(dict(params)))
    return calls


def line(event_id: str, when: str, patients: int = 1) -> str:
    answer = json.dumps({"predictions": [{"category": "NO ENFERMO"}] * patients}).encode()
    return json.dumps(capture_line(event_id, None, b'{"age": 40}', "application/json", answer, "application/json",
                                   parse_time(when)))


def put(lake: DataLake, key: str, *lines: str) -> str:
    lake.put_bytes(key, ("\n".join(lines) + "\n").encode())
    return key


def ids(read: Any) -> list[str]:
    return [event["eventMetadata"]["eventId"] for event in read.events]


def history(lake: DataLake) -> dict[str, Any]:
    """Two variants around the window [START, END): objects filed across both day boundaries within the filing
    margin, same-second events in two files, a malformed and a misfiled line, a stray key in a window's day; and days
    of traffic before and after, a key outside the date folders and one of an impossible date."""
    window = {
        "early": put(lake, A + "2026/03/09/23/a.jsonl", line("e1", "2026-03-10T00:40:00Z"),
                     line("e0", "2026-03-09T23:10:00Z")),
        "first": put(lake, A + "2026/03/10/00/a.jsonl", line("e2", "2026-03-10T00:30:00Z"),
                     line("eb", "2026-03-10T00:29:59Z")),
        "noon": put(lake, A + "2026/03/10/12/a.jsonl", line("e3", "2026-03-10T12:00:05Z"),
                    line("e4", "2026-03-10T12:00:05Z"), "{not json", line("old", "2026-01-01T00:00:00Z"), ""),
        "late": put(lake, A + "2026/03/11/00/a.jsonl", line("e7", "2026-03-10T23:59:59Z"),
                    line("e8", "2026-03-11T00:29:59Z"), line("e9", "2026-03-11T00:30:00Z")),
        "shadow": put(lake, S + "2026/03/10/12/s.jsonl", line("e5", "2026-03-10T12:00:05Z"),
                      line("e6", "2026-03-10T11:59:00Z")),
        "after": put(lake, S + "2026/03/11/01/s.jsonl", line("e10", "2026-03-11T00:45:00Z"),
                     line("e11", "2026-03-10T05:00:00Z")),
    }
    stray = put(lake, A + "2026/03/10/notes.txt", "notes")
    listed_only = put(lake, A + "2026/03/11/02/a.jsonl", line("e12", "2026-03-11T02:00:00Z"))  # a window's day
    outside = [put(lake, A + f"2026/03/{day:02d}/12/x.jsonl", line(f"out-{day}", f"2026-03-{day:02d}T12:00:00Z"))
               for day in (1, 5, 8, 12, 20)]
    outside.append(put(lake, S + "2026/03/12/00/x.jsonl", line("out-s", "2026-03-12T00:00:00Z")))
    readme = put(lake, f"capture/{EP}/README.txt", "not a capture")
    impossible = put(lake, A + "2026/02/30/00/x.jsonl", line("never", "2026-02-28T00:00:00Z"))
    return {"window": window, "stray": stray, "listed_only": listed_only, "outside": outside, "readme": readme,
            "impossible": impossible}


EXPECTED = ["e2", "e1", "e11", "e6", "e3", "e4", "e5", "e7", "e8"]  # by time; same second: key, then line order


def test_a_window_reads_its_days_in_every_variant_and_gives_what_reading_all_gave(lake):
    keys = history(lake)
    recording = Recording(lake.storage)
    calls = s3_calls(lake)
    read = read_capture(DataLake(recording), EP, START, END)

    assert ids(read) == EXPECTED
    assert read.malformed == 1
    noon = keys["window"]["noon"]
    assert [problem.split(": ", 1)[0] for problem in read.problems] == [f"{noon}:3", keys["stray"]]
    assert read.problems[1] == f"{keys['stray']}: not in the capture layout"
    assert read.misfiled == [f"{noon}:4: inferenceTime 2026-01-01T00:00:00Z"]
    # Listed: the variants, then the window's days (its first hour's filing margin reaches 03/09 23:00) per variant.
    assert recording.folders == [f"capture/{EP}/"]
    assert sorted(recording.lists) == sorted(v + f"2026/03/{d}/" for v in (A, S) for d in ("09", "10", "11"))
    assert sorted(recording.gets) == sorted(keys["window"].values())  # nothing of another hour is fetched
    if calls is not None:  # the requests S3 served: one folder listing, one listing per day and variant, 6 GETs
        assert [call.get("Delimiter") for call in calls["ListObjectsV2"]].count("/") == 1
        assert len(calls["ListObjectsV2"]) == 7
        assert sorted(call["Key"].rsplit("capture/", 1)[1] for call in calls["GetObject"]) == sorted(
            key.removeprefix("capture/") for key in keys["window"].values())


def test_a_window_of_one_variant_lists_only_that_variants_days(lake):
    keys = history(lake)
    recording = Recording(lake.storage)
    read = read_capture(DataLake(recording), EP, START, END, variant="Shadow")
    assert ids(read) == ["e11", "e6", "e5"] and read.problems == [] and read.misfiled == []
    assert recording.folders == [] and sorted(recording.lists) == [S + f"2026/03/{d}/" for d in ("09", "10", "11")]
    assert sorted(recording.gets) == [keys["window"]["shadow"], keys["window"]["after"]]


def test_a_window_without_an_end_reads_every_later_folder_but_no_earlier_day(lake):
    """No end (``--last 24h``): the window holds every later event, also one filed by a clock ahead of ours in a
    folder of a later day, month or year; the days before it are not listed."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(hours=20)
    written = {}
    for name, when in (("before", start - timedelta(days=3)), ("in", start + timedelta(hours=1)),
                       ("soon", now + timedelta(days=2)), ("month", now + timedelta(days=40)),
                       ("year", now + timedelta(days=400))):
        written[name] = put(lake, A + f"{when:%Y/%m/%d/%H}/x.jsonl", line(name, f"{when:%Y-%m-%dT%H:%M:%SZ}"))
    recording = Recording(lake.storage)
    read = read_capture(DataLake(recording), EP, start, None)
    assert ids(read) == ["in", "soon", "month", "year"]
    assert written["before"] not in recording.gets
    assert not [prefix for prefix in recording.lists if written["before"].startswith(prefix)]


def test_a_window_without_a_start_reads_all_as_before_fetching_several_objects_at_a_time(lake):
    keys = history(lake)
    recording = Recording(lake.storage, delay=0.02)
    read = read_capture(DataLake(recording), EP)
    assert recording.lists == [f"capture/{EP}/"]  # the whole history, as ever
    assert ids(read) == ["old", "out-1", "out-5", "out-8", "e0", "eb"] + EXPECTED + ["e9", "e10", "e12", "out-s",
                                                                                     "out-12", "out-20"]
    assert read.malformed == 1
    assert f"{keys['readme']}: not in the capture layout" in read.problems
    assert f"{keys['impossible']}: impossible date in the path" in read.problems
    assert recording.most > 1  # fetched concurrently...
    assert recording.most <= capture.FETCH_WORKERS  # ... within the bound
    until = read_capture(DataLake(Recording(lake.storage)), EP, None, END)
    assert ids(until) == ["old", "out-1", "out-5", "out-8", "e0", "eb"] + EXPECTED


def test_a_fetch_that_fails_fails_the_read_as_it_did(lake):
    """An object listed and gone when fetched (expired by a lifecycle rule, deleted by hand): the read raises as the
    sequential read did — a window's traffic is never reported without it."""
    keys = history(lake)
    recording = Recording(lake.storage, gone=keys["window"]["late"])
    with pytest.raises(ObjectNotFound):
        read_capture(DataLake(recording), EP, START, END)
    assert all(prefix.count("/") == 6 for prefix in recording.lists)  # only day folders were listed


def test_the_feedback_of_a_window_is_fetched_several_objects_at_a_time(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    for n in range(40):
        store_feedback(lake, EP, parse_feedback({"event_id": f"ev-{n}", "diagnosis": "ENFERMEDAD LEVE"}))
    lake.put_bytes(f"feedback/{EP}/events/broken.json", b"{not json")
    lake.put_bytes(f"feedback/{EP}/events/notes.txt", b"-")
    everything = read_feedback(lake, EP)
    recording = Recording(lake.storage, delay=0.01)
    read = read_feedback(DataLake(recording), EP)
    assert recording.most > 1
    assert recording.most <= capture.FETCH_WORKERS
    assert read == everything and read.records == 40
    assert dict(read.problems) == {"feedback object is not valid JSON": 1, "not a feedback object (.json)": 1}


def test_captured_patients_lists_the_days_of_the_ids_it_is_asked_about(lake):
    when = datetime(2026, 3, 10, 23, 59, 58, tzinfo=timezone.utc)
    asked, other = new_event_id(when), new_event_id(when - timedelta(days=30))
    put(lake, A + "2026/03/11/00/a.jsonl", line(asked, f"{when:%Y-%m-%dT%H:%M:%SZ}", patients=3))
    put(lake, A + "2026/02/08/23/a.jsonl", line(other, "2026-02-08T23:59:58Z"))
    put(lake, S + "2026/03/10/23/s.jsonl", line("shadow", "2026-03-10T23:00:00Z"))
    put(lake, A + "2026/03/10/05/a.jsonl", line("morning", "2026-03-10T05:00:00Z"))  # its day is listed, not fetched
    put(lake, A + "2026/03/01/23/a.jsonl", line("another", "2026-03-01T23:00:00Z"))
    recording = Recording(lake.storage)
    assert captured_patients(DataLake(recording), EP, [asked, other]) == {asked: 3, other: 1}
    assert recording.folders == [f"capture/{EP}/"]
    assert sorted(recording.lists) == sorted(v + d for v in (A, S)
                                             for d in ("2026/02/08/", "2026/02/09/", "2026/03/10/", "2026/03/11/"))
    assert sorted(recording.gets) == [A + "2026/02/08/23/a.jsonl", A + "2026/03/11/00/a.jsonl",
                                      S + "2026/03/10/23/s.jsonl"]


def test_list_folders_names_one_level_of_folders(lake):
    for key in (A + "2026/03/10/00/a.jsonl", S + "2026/03/10/00/a.jsonl", f"capture/{EP}/README.txt",
                "capture/other/AllTraffic/2026/03/10/00/a.jsonl"):
        lake.put_bytes(key, b"x")
    assert lake.list_folders(f"capture/{EP}/") == [A, S]  # not the file beside them
    assert lake.list_folders(A) == [A + "2026/"]
    assert lake.list_folders("capture/") == [f"capture/{EP}/", "capture/other/"]
    assert lake.list_folders(f"capture/{EP}/none/") == []
    for bad in (f"capture/{EP}", "nozone/", "capture//", ""):
        with pytest.raises(InvalidKey):
            lake.list_folders(bad)
    assert lake.storage.list_folders("") == ["capture/"]


def test_list_folders_and_a_days_listing_page_on_s3(aws):
    """S3 answers 1000 keys (or common prefixes) a request: a day of more objects, and more variants than a page
    holds, are read whole."""
    lake = DataLake.from_uri(f"s3://{BUCKET}/team/lake", s3_client=aws)
    calls = s3_calls(lake)
    assert calls is not None
    for n in range(1005):
        put(lake, A + f"2026/03/10/{n % 24:02d}/{n:04d}.jsonl", line(f"n-{n:04d}", f"2026-03-10T{n % 24:02d}:00:00Z"))
    read = read_capture(lake, EP, datetime(2026, 3, 10, 2, tzinfo=timezone.utc), datetime(2026, 3, 10, 22,
                                                                                           tzinfo=timezone.utc))
    assert len(read.events) == sum(1 for n in range(1005) if 2 <= n % 24 < 22)
    day = [call for call in calls["ListObjectsV2"] if call["Prefix"].endswith("2026/03/10/")]
    assert len(day) == 2  # two pages of the day
    assert len(calls["GetObject"]) == sum(1 for n in range(1005) if 1 <= n % 24 < 23)  # the hours and their margin

    aws.meta.events.register("provide-client-params.s3.ListObjectsV2", lambda params, **_: params.update(MaxKeys=2))
    for variant in ("v1", "v2", "v3", "v4", "v5"):
        put(lake, f"capture/{EP}/{variant}/2026/03/10/00/a.jsonl", line(variant, "2026-03-10T00:10:00Z"))
    assert lake.list_folders(f"capture/{EP}/") == [A] + [f"capture/{EP}/v{n}/" for n in range(1, 6)]
    window = read_capture(lake, EP, datetime(2026, 3, 10, tzinfo=timezone.utc), datetime(2026, 3, 10, 1,
                                                                                         tzinfo=timezone.utc))
    # The same second: key order (AllTraffic's objects, then each variant's); then the variants' later events.
    assert ids(window) == [f"n-{n:04d}" for n in range(0, 1005, 24)] + ["v1", "v2", "v3", "v4", "v5"]


def test_the_refusals_stream_is_fetched_several_objects_at_a_time_in_time_order(tmp_path):
    # The monitor's refusals summary read every capture-errors object one GET after another.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    written = []
    for hour in range(24):
        lines = []
        for n, status in enumerate((400, 413, 415)):
            when = f"2026-03-10T{hour:02d}:{59 - n:02d}:00Z"  # within an object, newest first
            lines.append(json.dumps({"time": when, "status": status, "route": "/invocations", "error": f"e{hour}"}))
            written.append((when, status))
        lake.put_bytes(f"capture-errors/{EP}/2026/03/10/{hour:02d}/part.jsonl", "\n".join(lines).encode())
    lake.put_bytes(f"capture-errors/{EP}/2026/03/10/05/broken.jsonl", b'{"time": "2026-03-10T05:00:00Z"}\nnot json')
    recording = Recording(lake.storage, delay=0.01)
    read = capture.read_errors(DataLake(recording), EP, datetime(2026, 3, 10, 1, tzinfo=timezone.utc),
                               datetime(2026, 3, 10, 23, tzinfo=timezone.utc))
    assert recording.most > 1 and recording.most <= capture.FETCH_WORKERS
    expected = sorted((when, status) for when, status in written if "T01" <= when[10:13] < "T23")
    assert [(event["time"], event["status"]) for event in read.events] == expected
    assert read.malformed == 2 and dict(read.by_status) == {400: 22, 413: 22, 415: 22}


def test_the_refusals_of_a_window_are_read_from_its_days_and_counted_without_holding_them(lake, monkeypatch):
    # The monitor's daily summary of refusals listed and fetched every capture-errors object ever written, and held
    # every refusal of its window in memory to count them.
    def refusal(when: str, error: str, status: int = 400) -> str:
        return json.dumps({"time": when, "status": status, "route": "/invocations", "error": error})

    errors = f"capture-errors/{EP}/"
    old = [put(lake, errors + f"2026/{month:02d}/{day:02d}/12/old.jsonl", refusal(f"2026-{month:02d}-{day:02d}T12:00:00Z",
                                                                                   "old"))
           for month in (1, 2) for day in (3, 17)]
    window = [put(lake, errors + "2026/03/09/23/a.jsonl", refusal("2026-03-09T23:59:00Z", "just before"),
                  refusal("2026-03-10T00:30:00Z", "filed an hour early")),
              put(lake, errors + "2026/03/10/12/a.jsonl", *(refusal("2026-03-10T12:00:00Z", f"field f{n}")
                                                              for n in range(6)), "{cut by a kill"),
              put(lake, errors + "2026/03/11/00/a.jsonl", refusal("2026-03-11T00:10:00Z", "in", 413),
                  refusal("2026-03-11T00:40:00Z", "after")),
              put(lake, errors + "2026/03/10/12/notes.jsonl.txt", "not a stream object")]
    after = put(lake, errors + "2026/03/11/03/a.jsonl", refusal("2026-03-11T03:00:00Z", "hours after"))
    recording = Recording(lake.storage)
    monkeypatch.setattr(capture, "MAX_REASONS", 4)
    held = capture.read_errors(DataLake(recording), EP, START, END)
    counted = capture.read_errors(DataLake(recording), EP, START, END, keep_events=False)
    assert [event["error"] for event in held.events] == ["filed an hour early"] + [f"field f{n}" for n in range(6)] \
        + ["in"]
    assert counted.events == [] and counted.total == held.total == 8
    assert counted.summary(top=100) == held.summary(top=100) == {
        "total": 8, "by_status": {"400": 7, "413": 1}, "malformed": 1,
        "strays": 1, "stray_examples": [errors + "2026/03/10/12/notes.jsonl.txt"],  # counted, not read (not .jsonl)
        "by_reason": [{"reason": capture.OTHER_REASONS, "count": 4}]
        + [{"reason": f"400 /invocations: {text}", "count": 1} for text in ("filed an hour early", "field f0",
                                                                            "field f1", "field f2")]}
    fetched = set(recording.gets)
    assert fetched == set(window[:3]) and not fetched & set(old + [after])
    assert all(listed.startswith(errors + "2026/03/") for listed in recording.lists)
    assert capture.read_errors(lake, EP).total == 15  # no window: every object, as before


# ------------------------------------------------------------------------------------------------ retraining's ids

def test_a_read_for_ids_gives_their_requests_and_a_retrys_later_copies_and_parses_no_other_line(lake, monkeypatch):
    # Retraining held every captured request of the endpoint's history (about 1 GB a 200,000) to join a few thousand
    # feedback; it now reads the events its feedback names (read_capture's ids), with what the full read's readers
    # need of them: a retry's other copies (its inference id), an id written with a JSON escape, any case.
    when = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    body = b'{"age": 40}'

    def line(event_id: str, inference_id: str | None, second: int, data: bytes = body) -> bytes:
        return json.dumps(capture_line(event_id, inference_id, data, "application/json", b'{"predictions": []}',
                                       "application/json", when + timedelta(seconds=second))).encode()

    escaped = line("ev-e", None, 5).replace(b'"ev-e"', b'"ev-\\u0065"')  # the same event id, one letter escaped
    lines = [line("ev-a", "visit-1", 0), line("ev-c", "visit-2", 1), line("ev-d", None, 2),
             line("ev-b", "visit-1", 3),  # the client's retry of ev-a: later, the copy the readers keep
             line("ev-f", "visit-3", 4, b'{"age": 41}'), escaped, b'{"eventMetadata": {"eventId": "ev-g"', b"not json"]
    lake.put_bytes(f"{A}2026/11/27/10/00-00-000-x.jsonl", b"\n".join(lines) + b"\n")
    parsed = []
    real_loads = capture.json.loads

    def loads(data, *args, **kwargs):
        if isinstance(data, bytes) and data:  # a capture line (boto's own JSON: text, or b"")
            parsed.append(data)
        return real_loads(data, *args, **kwargs)

    monkeypatch.setattr(capture.json, "loads", loads)

    def ids_read(*ids: str) -> list[str]:
        parsed.clear()
        return [event["eventMetadata"]["eventId"] for event in read_capture(lake, EP, ids=ids).events]

    assert ids_read("EV-A") == ["ev-a", "ev-b"]  # any case; the retry found by its inference id
    # ev-a, ev-b; the line naming no id and the escaped id's line (neither shows an id plainly), the latter in each
    # pass (the second looks for ids the first learned); no other, not even the cut line that names ev-g.
    assert len(parsed) == 5, parsed
    assert ids_read("ev-b") == ["ev-a", "ev-b"] and len(parsed) == 5  # the earlier copy by a second pass, once
    assert ids_read("visit-2") == ["ev-c"] and ids_read("ev-d", "visit-3") == ["ev-d", "ev-f"]
    assert ids_read("ev-e") == ["ev-e"]  # the escaped id is parsed, then judged
    assert ids_read() == [] and ids_read("nobody") == []
    full = read_capture(lake, EP)
    assert [e["eventMetadata"]["eventId"] for e in full.events] == ["ev-a", "ev-c", "ev-d", "ev-b", "ev-f", "ev-e"]
    # Malformed lines are counted among those parsed: the full read's 2, the line naming no id when read for ids.
    assert (full.malformed, read_capture(lake, EP, ids=["ev-a"]).malformed) == (2, 1)


def test_a_read_for_ids_finds_an_earlier_copy_whose_inference_id_is_escaped(lake):
    # Its line could not be passed over by its bytes, so the first pass parsed it (not asked for yet) and the second
    # skipped it as read: the copy was missing, and with it a name of the request.
    when = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    lines = [json.dumps(capture_line(event_id, 'visit "4"', b'{"age": 40}', "application/json", b'{"predictions": []}',
                                     "application/json", when + timedelta(seconds=second)))
             for event_id, second in (("ev-h", 0), ("ev-i", 5))]
    lake.put_bytes(f"{A}2026/11/27/10/00-00-000-y.jsonl", ("\n".join(lines) + "\n").encode())
    assert [e["eventMetadata"]["eventId"] for e in read_capture(lake, EP, ids=["ev-i"]).events] == ["ev-h", "ev-i"]
