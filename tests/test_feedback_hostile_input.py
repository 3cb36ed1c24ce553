"""Feedback against hostile input: objects in the lake nested too deeply or holding thousands of revisions, and
files (`diagnosa feedback --file`) whose lines hold thousands of unknown or repeated keys. Whatever comes in, the
readers count it under a reason that says what it is, and what is written or printed stays bounded."""
from __future__ import annotations

import json
import logging

from feedback_endpoint import endpoint_fixture  # noqa: F401  (the fixture "endpoint")

from diagnosa.lake import DataLake
from inference.feedback import MAX_REVISIONS, parse_feedback, read_feedback, store_feedback
from inference.limits import has_surrogate

DEEP = b"[" * 100_000 + b"]" * 100_000


def _cli(capsys, *argv):
    from diagnosa.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    out.encode("utf-8"), err.encode("utf-8")  # what a UTF-8 terminal must be able to print
    return code, out, err


def _deep_lake(tmp_path) -> DataLake:
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "NO ENFERMO"}))
    lake.put_bytes("feedback/diagnosa/events/e2.json",
                   b'{"event_id": "e2", "diagnosis": "NO ENFERMO", "x": ' + DEEP + b"}")
    return lake


# ------------------------------------------------------------------------------------------------ F1: too deep

def test_a_feedback_object_nested_too_deeply_is_counted_unreadable_by_name_not_a_crash(tmp_path):
    # json.loads raised RecursionError, which read_feedback did not catch: `diagnosa monitor` and retraining ended
    # in a traceback and wrote no report.
    lake = _deep_lake(tmp_path)
    read = read_feedback(lake, "diagnosa")
    assert set(read.latest) == {("e1", None)} and read.records == 1
    assert read.problems == {"feedback object is JSON nested too deeply to read": 1}
    assert read.examples["feedback object is JSON nested too deeply to read"] == ["feedback/diagnosa/events/e2.json"]


def test_retraining_reads_around_a_feedback_object_nested_too_deeply(tmp_path):
    from monitoring.retrain import feedback_records

    records, _, skipped = feedback_records(_deep_lake(tmp_path), "diagnosa")
    assert records == [] and sum(skipped.counts.values()) == 1  # e1: no captured request; e2 not readable


def test_storing_over_an_object_nested_too_deeply_says_so_not_that_it_is_not_json(tmp_path, caplog):
    lake = _deep_lake(tmp_path)
    with caplog.at_level(logging.WARNING, logger="diagnosa.feedback"):
        stored = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e2", "diagnosis": "ENFERMEDAD LEVE"}))
    assert stored.replaced is not None and stored.replaced.unreadable
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "nested too deeply" in said and "not valid JSON" not in said
    assert lake.get_json(stored.key)["diagnosis"] == "ENFERMEDAD LEVE"


# ------------------------------------------------------------------------------------------------ F9: revisions

def test_revisions_are_read_up_to_the_bound_stores_keep_and_a_bad_one_is_a_bad_revision(tmp_path):
    # One object with 20,000 good and 5,000 empty revisions made "60 records" "20,060 records (20,000 superseded)"
    # and counted 5,000 unreadable objects.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    for i in range(60):
        store_feedback(lake, "diagnosa", parse_feedback({"event_id": f"ev-{i}", "diagnosis": "NO ENFERMO"}))
    good = [{"event_id": "ev-7", "diagnosis": "ENFERMEDAD LEVE", "received_at": "2026-11-27T10:00:00+00:00"}] * 20_000
    lake.put_json("feedback/diagnosa/events/ev-7.json", {
        "endpoint": "diagnosa", "event_id": "ev-7", "diagnosis": "NO ENFERMO",
        "received_at": "2026-11-28T10:00:00+00:00", "revisions": good + [{"event_id": "ev-7", "diagnosis": ""}] * 5000})
    lake.put_json("feedback/diagnosa/events/ev-8.json", {
        "endpoint": "diagnosa", "event_id": "ev-8", "diagnosis": "NO ENFERMO",
        "received_at": "2026-11-28T10:00:00+00:00", "revisions": [{"event_id": "ev-8", "diagnosis": ""}] * 3})
    read = read_feedback(lake, "diagnosa")
    assert read.records == 60 + MAX_REVISIONS and read.superseded == MAX_REVISIONS  # ev-8's current record among the 60
    assert read.latest[("ev-7", None)].diagnosis == "NO ENFERMO"
    assert read.problems == {}  # no object is unreadable
    assert read.bad_revisions == {"invalid feedback revision: diagnosis": 3}
    assert read.unread_revisions == 20_000 + 5000 - MAX_REVISIONS


# ------------------------------------------------------------------------------------------------ F4: the route

def _post(url, data: bytes):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/feedback", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_refusal_of_feedback_with_thousands_of_unknown_or_repeated_keys_is_bounded(endpoint):
    # A 16 KB body of 2,000 unknown keys got a 435 KB refusal: every key named twice (fields and errors).
    from inference.limits import MAX_LISTED_PROBLEMS, MAX_REFUSAL_BYTES

    ep, _ = endpoint
    unknown = ("{" + ",".join(f'"{i:x}":0' for i in range(2000)) + "}").encode()
    repeated = ("{" + ",".join(f'"{i:x}":0,"{i:x}":1' for i in range(1000)) + ', "diagnosis": "NO ENFERMO", '
                '"diagnosis": "NO ENFERMO"}').encode()
    for body, keys, named in ((unknown, 2000, {"event_id", "diagnosis"}), (repeated, 1000, {"event_id", "diagnosis"})):
        assert len(body) < 16 * 1024
        status, raw = _post(ep.url, body)
        assert status == 400 and len(raw) <= 8 * 1024 < MAX_REFUSAL_BYTES
        reply = json.loads(raw)
        assert len(reply["errors"]) <= MAX_LISTED_PROBLEMS and len(reply["fields"]) <= MAX_LISTED_PROBLEMS
        assert named <= set(reply["fields"]) and "0" in reply["fields"]  # the fields it accepts, and some of the rest
        assert len(reply["errors"]) + reply["more_errors"] == keys + len(named)  # named and counted: every problem
        assert "more" in reply["fields"]["…"] and f"{keys - (len(reply['fields']) - 1 - len(named)):,}" in \
            reply["fields"]["…"]
    status, raw = _post(ep.url, repeated)
    assert json.loads(raw)["fields"]["diagnosis"] == "given twice"


def test_a_client_told_of_a_bounded_refusal_shows_the_count(endpoint):
    from inference.client import DiagnosaClient, FeedbackRejected

    ep, _ = endpoint
    client = DiagnosaClient("diagnosa", endpoint_url=ep.url)
    try:
        client._post_feedback({"event_id": "e1", "diagnosis": "NO ENFERMO", **{f"k{i}": 0 for i in range(1200)}})
    except FeedbackRejected as err:
        assert err.status == 400 and len(str(err)) < 4000 and "1,190 more" in err.fields["…"]
    else:
        raise AssertionError("not refused")


# ------------------------------------------------------------------------------------------------ F5: the CLI file

def test_a_file_line_with_100000_unknown_keys_is_one_bounded_line_of_the_errors_file(tmp_path, capsys, monkeypatch):
    # One 1 MB line wrote 100,002 lines (13.6 MB) to the errors file, and "by kind" listed "k0: unknown field",
    # "k1: unknown field", ... then "99,992 of 99992 other kind(s)".
    monkeypatch.chdir(tmp_path)
    lines = ["{" + ",".join(f'"k{i}":0' for i in range(100_000)) + "}",
             "{" + ",".join(f'"d{i}":0,"d{i}":1' for i in range(50_000)) + "}",
             json.dumps({"event_id": "e1", "diagnosis": "NO ENFERMO"}),
             json.dumps({"event_id": "x y", "diagnosis": "MAYBE", "bed": 3, "\udfffward": 1})]
    (tmp_path / "export.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    code, out, _ = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", "export.jsonl")
    assert code == 2 and "1 stored, 3 refused" in out
    assert len(out) < 4000 and "k1" not in out and "other kind" not in out and not has_surrogate(out)
    assert "(other field): unknown field" in out  # one kind, whatever the names
    errors = (tmp_path / "export.jsonl.errors.jsonl").read_bytes()
    assert len(errors) < 20_000 and not has_surrogate(errors.decode("utf-8"))
    listed = [json.loads(line) for line in errors.decode("utf-8").splitlines()]
    assert [item["where"] for item in listed] == ["line 1", "line 2", "line 4"]  # one line per refused line
    first = {p["field"]: p["problem"] for p in listed[0]["problems"]}
    assert first["event_id"] == "required" and "k0" in first and "99,990 more" in first["…"]
    assert {p["field"] for p in listed[2]["problems"]} >= {"event_id", "diagnosis", "bed"}
