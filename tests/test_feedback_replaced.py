"""A feedback record that replaced an earlier one says so: store_feedback's StoredFeedback, the route's 201 reply, the
client, `diagnosa feedback` (one record and --file). A doctor recording a confirmed diagnosis for a case that
already had one (perhaps another doctor's) read the same "recorded" message as for the first."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from feedback_endpoint import captured_event, endpoint_fixture  # noqa: F401  (the fixture "endpoint")
from test_feedback import _post

from diagnosa.lake import DataLake
from inference.client import DiagnosaClient
from inference.feedback import Replaced, StoredFeedback, parse_feedback, store_feedback

WHEN = datetime(2026, 11, 27, 10, 5, 30, tzinfo=timezone.utc)


def _store(lake: DataLake, now: datetime | None = None, **body: str) -> StoredFeedback:
    return store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", **body}), now=now)


def test_store_feedback_says_what_it_replaced_without_the_note(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    first = _store(lake, WHEN, diagnosis="ENFERMEDAD LEVE", disease_id="ORPHA:558", note="Sra. García, cama 3")
    assert first == StoredFeedback("feedback/diagnosa/events/e1.json", None)  # the patient's first record
    second = _store(lake, diagnosis="ENFERMEDAD AGUDA", note="another doctor")
    assert second.key == first.key
    assert second.replaced == Replaced("ENFERMEDAD LEVE", "ORPHA:558", "2026-11-27T10:05:30.000000+00:00")
    assert "García" not in json.dumps(second.replaced.to_dict())  # the note is free text: never in the reply
    assert second.replaced.describe() == ("It replaced an earlier record: ENFERMEDAD LEVE (ORPHA:558), received "
                                          "2026-11-27 10:05 UTC.")
    # The same diagnosis again: a new revision all the same, said to be the same.
    third = _store(lake, WHEN, diagnosis="ENFERMEDAD AGUDA")
    assert third.replaced is not None and third.replaced.same and third.replaced.diagnosis == "ENFERMEDAD AGUDA"
    assert third.replaced.describe().startswith("It replaced an earlier record of the same diagnosis: ENFERMEDAD "
                                                "AGUDA, received ")
    # The same diagnosis with another disease id is not the same record.
    assert not _store(lake, diagnosis="ENFERMEDAD AGUDA", disease_id="OMIM:1").replaced.same
    assert [r["diagnosis"] for r in lake.get_json(first.key)["revisions"]] == [
        "ENFERMEDAD AGUDA", "ENFERMEDAD AGUDA", "ENFERMEDAD LEVE"]


@pytest.mark.parametrize("broken", [b"{oops", b"[1, 2]", b'{"event_id": "e1", "note": "no diagnosis"}', b"\xff\xfe"])
def test_an_earlier_object_that_cannot_be_read_is_said_to_be_replaced_not_absent(tmp_path, broken):
    # store_feedback logged "replaced without its history" and answered as for a first record.
    lake = DataLake.from_uri(str(tmp_path))
    lake.put_bytes("feedback/diagnosa/events/e1.json", broken)
    stored = _store(lake, diagnosis="NO ENFERMO")
    assert stored.replaced == Replaced(unreadable=True)
    assert stored.replaced.describe() == "It replaced an earlier record that could not be read: what it said is not known."
    assert lake.get_json(stored.key)["diagnosis"] == "NO ENFERMO"


def test_a_reply_is_read_back_as_it_was_written_and_a_strange_one_as_not_known():
    replaced = Replaced("NO ENFERMO", None, "2026-11-27T10:05:30.000000+00:00", same=True)
    assert Replaced.from_reply(json.loads(json.dumps(replaced.to_dict()))) == replaced
    assert Replaced.from_reply({"unreadable": True}) == Replaced(unreadable=True)
    for value in (None, "yes", [1], 3):
        assert Replaced.from_reply(value) is None
    assert Replaced.from_reply({"diagnosis": 5, "received_at": ["x"], "same": "true"}) == Replaced()
    assert Replaced("X", received_at="not a time").describe() == "It replaced an earlier record: X, received not a time."
    assert Replaced("X").describe() == "It replaced an earlier record: X."
    assert Replaced("X", received_at="2026-11-27T12:05:00+02:00").describe().endswith("2026-11-27 10:05 UTC.")


def test_the_route_answers_what_the_record_replaced(endpoint):
    ep, lake = endpoint
    event = captured_event(ep)
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "ENFERMEDAD LEVE", "note": "private words"})
    assert status == 201 and body == {"event_id": event, "key": f"feedback/diagnosa/events/{event}.json",
                                      "replaced": None}
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})
    received = lake.get_json(body["key"])["revisions"][0]["received_at"]
    assert status == 201 and body == {"event_id": event, "key": f"feedback/diagnosa/events/{event}.json",
                                      "replaced": {"diagnosis": "ENFERMEDAD LEVE", "disease_id": None,
                                                   "received_at": received, "same": False, "unreadable": False}}
    # The client passes it through.
    stored = DiagnosaClient("diagnosa", endpoint_url=ep.url).send_feedback(event, "NO ENFERMO")
    assert stored.key == body["key"] and stored.replaced is not None
    assert (stored.replaced.diagnosis, stored.replaced.same) == ("NO ENFERMO", True)


def test_the_client_writing_straight_to_the_lake_says_what_it_replaced(tmp_path):
    client = DiagnosaClient("prod-endpoint", region="eu-west-1", lake=DataLake.from_uri(str(tmp_path)))
    assert client.send_feedback("ev-2", "NO ENFERMO").replaced is None
    again = client.send_feedback("ev-2", "ENFERMEDAD LEVE")
    assert again.key == "feedback/prod-endpoint/events/ev-2.json" and again.replaced.diagnosis == "NO ENFERMO"


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from diagnosa.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_feedback_command_says_when_it_replaced_an_earlier_record(tmp_path, capsys):
    lake = ("--lake", tmp_path / "lake")
    code, out, _ = _cli(capsys, *lake, "feedback", "ev-1", "ENFERMEDAD LEVE", "--disease-id", "ORPHA:558")
    assert code == 0 and "stored as feedback/diagnosa/events/ev-1.json" in out and "replaced" not in out
    code, out, _ = _cli(capsys, *lake, "feedback", "ev-1", "NO ENFERMO")
    assert code == 0 and out.splitlines()[1].startswith(
        "It replaced an earlier record: ENFERMEDAD LEVE (ORPHA:558), received 20")


def test_the_feedback_command_through_the_endpoint_says_so_too(endpoint, tmp_path, capsys):
    ep, _ = endpoint
    event = captured_event(ep)
    argv = ("--workspace", tmp_path / "ws", "feedback", event, "ENFERMEDAD AGUDA", "--endpoint-url", ep.url)
    assert _cli(capsys, *argv)[0] == 0
    code, out, err = _cli(capsys, *argv)
    assert code == 0, err
    assert "It replaced an earlier record of the same diagnosis: ENFERMEDAD AGUDA, received " in out


@pytest.mark.parametrize("through", ["lake", "endpoint"])
def test_the_feedback_file_counts_the_records_that_replaced_an_earlier_one(endpoint, tmp_path, capsys, through):
    ep, lake = endpoint
    events = [captured_event(ep) for _ in range(5)]
    assert ep.capture.flush()
    lake.put_bytes(f"feedback/diagnosa/events/{events[3]}.json", b"{oops")  # there, not readable
    lines = [(events[0], "NO ENFERMO"), (events[1], "ENFERMEDAD LEVE"), (events[0], "ENFERMEDAD AGUDA"),
             (events[1], "ENFERMEDAD LEVE"), (events[2], "NO ENFERMO"), (events[3], "NO ENFERMO")]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps({"event_id": e, "diagnosis": d}) + "\n" for e, d in lines))
    where = ("--lake", lake.storage.root) if through == "lake" else ("--workspace", tmp_path / "ws", "--endpoint-url",
                                                                      ep.url)
    code, out, err = _cli(capsys, *where[:2], "feedback", "--file", path, *where[2:])
    assert code == 0, err
    assert (": 6 stored, 0 refused; 3 replaced an earlier record of their patient (1 with the same diagnosis, 1 that "
            "could not be read)") in out
    path.write_text(json.dumps({"event_id": events[4], "diagnosis": "NO ENFERMO"}) + "\n")
    code, out, err = _cli(capsys, *where[:2], "feedback", "--file", path, *where[2:])
    assert code == 0 and out.splitlines()[0].endswith(": 1 stored, 0 refused"), (out, err)  # none replaced: not said
