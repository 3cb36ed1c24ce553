"""Doctors' feedback: validation by field, never overwritten, the endpoint route and the client method."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture
from inference.client import ClientFailure, DiagnosaClient, FeedbackRejected
from inference.server import LocalEndpoint
from monitoring.feedback import FeedbackError, parse_feedback, read_feedback, store_feedback


def test_parse_accepts_the_contract_and_normalises_the_category():
    item = parse_feedback({"event_id": "3f2a-1", "diagnosis": "enfermedad  cro\u0301nica", "note": "x", "source": "HIS"})
    assert item.diagnosis == "ENFERMEDAD CRÓNICA" and item.note == "x" and item.source == "HIS"
    assert parse_feedback({"event_id": "e", "diagnosis": "NO ENFERMO", "disease_id": "ORPHA:558"}).orphan is True
    assert parse_feedback({"event_id": "e", "diagnosis": "NO ENFERMO", "disease_id": "COMMON:flu"}).orphan is False


def test_every_bad_field_is_named_at_once():
    with pytest.raises(FeedbackError) as err:
        parse_feedback({"event_id": "../x", "diagnosis": "SICK", "note": "n" * 1001, "source": 5, "bed": 3})
    assert set(err.value.fields) == {"event_id", "diagnosis", "note", "source", "bed"}
    assert "1001" in err.value.fields["note"] and "unknown field" in err.value.fields["bed"]
    with pytest.raises(FeedbackError) as err:
        parse_feedback([])
    assert set(err.value.fields) == {"body"}
    with pytest.raises(FeedbackError) as err:
        parse_feedback({})
    assert err.value.fields == {"event_id": "required", "diagnosis": "required"}


def test_second_feedback_is_a_new_object_and_the_latest_wins(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    first = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "NO ENFERMO"}))
    second = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD AGUDA"}))
    assert first != second and lake.exists(first) and lake.exists(second)
    lake.put_bytes("feedback/diagnosa/2026/01/01/00/broken.json", b"{oops")
    read = read_feedback(lake, "diagnosa")
    assert read.latest["e1"].diagnosis == "ENFERMEDAD AGUDA"
    assert read.records == 2 and read.superseded == 1
    assert read.problems == {"feedback object is not valid JSON": 1}


@pytest.fixture()
def endpoint(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ep = LocalEndpoint("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None).start()
    yield ep, lake
    ep.stop()


def _post(url, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "/feedback", data=data, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_route_stores_feedback_and_answers_201_with_the_key(endpoint):
    ep, lake = endpoint
    status, body = _post(ep.url, {"event_id": "ev-1", "diagnosis": "ENFERMEDAD TERMINAL", "note": "biopsy"})
    assert status == 201 and body["event_id"] == "ev-1"
    stored = lake.get_json(body["key"])
    assert stored["diagnosis"] == "ENFERMEDAD TERMINAL" and stored["note"] == "biopsy" and stored["endpoint"] == "diagnosa"


def test_route_refuses_bad_bodies_with_the_field_errors(endpoint):
    ep, lake = endpoint
    status, body = _post(ep.url, {"event_id": "ev-1", "diagnosis": "MAYBE"})
    assert status == 400 and set(body["fields"]) == {"diagnosis"} and body["error"]
    assert body["errors"] == [{"row": 0, "field": "diagnosis", "problem": body["fields"]["diagnosis"]}]
    status, body = _post(ep.url, b"{not json")
    assert status == 400 and "body" in body["fields"]
    status, body = _post(ep.url, {"event_id": "e", "diagnosis": "NO ENFERMO"}, "text/csv")
    assert status == 415
    assert lake.list("feedback/") == []


def test_client_sends_feedback_to_the_local_route(endpoint):
    ep, lake = endpoint
    client = DiagnosaClient("diagnosa", endpoint_url=ep.url)
    key = client.send_feedback("ev-9", "ENFERMEDAD LEVE", note="follow-up")
    assert lake.get_json(key)["event_id"] == "ev-9"
    with pytest.raises(FeedbackRejected) as err:
        client.send_feedback("ev-9", "nonsense")
    assert "diagnosis" in err.value.fields


def test_client_without_a_route_writes_to_the_lake_or_says_why_not(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    client = DiagnosaClient("prod-endpoint", region="eu-west-1", lake=lake)
    key = client.send_feedback("ev-2", "NO ENFERMO")
    assert key.startswith("feedback/prod-endpoint/") and lake.get_json(key)["diagnosis"] == "NO ENFERMO"
    with pytest.raises(ClientFailure, match="no feedback route"):
        DiagnosaClient("prod-endpoint", region="eu-west-1").send_feedback("ev-2", "NO ENFERMO")


def test_cli_feedback_file_stores_good_lines_and_names_bad_ones(tmp_path, capsys):
    from diagnosa.cli import main

    path = tmp_path / "fb.jsonl"
    path.write_text('{"event_id": "a", "diagnosis": "NO ENFERMO"}\nnot json\n{"event_id": "b", "diagnosis": "X"}\n')
    assert main(["--lake", str(tmp_path / "lake"), "feedback", "--file", str(path)]) == 2
    out = capsys.readouterr().out
    assert "1 stored, 2 refused" in out and "line 2: not JSON" in out and "line 3: diagnosis" in out
    assert main(["--lake", str(tmp_path / "lake"), "feedback", "c", "ENFERMEDAD AGUDA", "--disease-id", "OMIM:1"]) == 0
    assert set(read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest) == {"a", "c"}
