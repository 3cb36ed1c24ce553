"""Doctors' feedback: validation by field, one object per event (latest wins, bounded revisions), the endpoint
route (captured ids only, size-bounded, optional token) and the client method."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from feedback_endpoint import captured_event, endpoint_fixture  # noqa: F401  (the fixture "endpoint")

from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id, read_errors
from inference.client import ClientFailure, DiagnosaClient, EndpointUnreachable, FeedbackRejected
from inference.feedback import MAX_REVISIONS, FeedbackError, feedback_key, parse_feedback, read_feedback, store_feedback
from inference.server import EndpointServer


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


@pytest.mark.parametrize("field, value", [("event_id", "e1\n"), ("disease_id", "ORPHA:558\n"),
                                          ("disease_id", "ORPHA:558\r\n"), ("event_id", "e1\n\n")])
def test_an_id_with_a_trailing_newline_is_refused_naming_the_field(field, value):
    # "$" matches before a final "\n": 'ORPHA:558\n' was stored as given, 'e1\n' put a newline in a lake key.
    with pytest.raises(FeedbackError) as err:
        parse_feedback({"event_id": "e1", "diagnosis": "NO ENFERMO", field: value})
    assert set(err.value.fields) == {field} and err.value.fields[field].endswith(f"got {value!r}")


def test_the_feedback_key_refuses_an_event_id_or_endpoint_with_a_trailing_newline(tmp_path):
    assert feedback_key("diagnosa", "e1") == "feedback/diagnosa/events/e1.json"
    for endpoint, event_id in (("diagnosa", "e1\n"), ("diagnosa\n", "e1")):
        with pytest.raises(ValueError, match=r"\\n' is not a valid"):
            feedback_key(endpoint, event_id)


def test_second_feedback_replaces_the_events_object_and_the_latest_wins(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    first = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "NO ENFERMO"})).key
    second = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD AGUDA"})).key
    assert first == second == "feedback/diagnosa/events/e1.json" and lake.list("feedback/") == [first]
    stored = lake.get_json(first)
    assert stored["diagnosis"] == "ENFERMEDAD AGUDA" and [r["diagnosis"] for r in stored["revisions"]] == ["NO ENFERMO"]
    lake.put_bytes("feedback/diagnosa/2026/01/01/00/broken.json", b"{oops")
    read = read_feedback(lake, "diagnosa")
    assert read.latest[("e1", None)].diagnosis == "ENFERMEDAD AGUDA"
    assert read.records == 2 and read.superseded == 1
    assert read.problems == {"feedback object is not valid JSON": 1}


def test_a_store_carries_the_fields_it_does_not_know_of_the_records_it_keeps(tmp_path):
    # A newer Diagnosa's field (a clinician, a ward), or a lone surrogate read back from its JSON escape, in the earlier
    # record or a revision: the next store kept only the fields this version knows (the rest was lost), and a
    # surrogate made the store raise UnicodeEncodeError.
    lake = DataLake.from_uri(str(tmp_path))
    key = feedback_key("diagnosa", "e1")
    earlier = {"event_id": "e1", "diagnosis": "NO ENFERMO", "received_at": "2026-12-01T00:00:00+00:00",
               "clinician": {"id": "dr-7"}, "\ud800k": "\ud800"}
    revision = {"event_id": "e1", "diagnosis": "ENFERMEDAD LEVE", "ward": 3}
    lake.put_bytes(key, json.dumps({"endpoint": "diagnosa", **earlier, "revisions": [revision]}).encode())
    stored = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD AGUDA"}))
    assert stored.replaced is not None and stored.replaced.diagnosis == "NO ENFERMO"
    obj = json.loads(lake.get_bytes(key))
    assert obj["diagnosis"] == "ENFERMEDAD AGUDA" and obj["revisions"] == [earlier, revision]
    read = read_feedback(lake, "diagnosa")
    assert read.latest[("e1", None)].diagnosis == "ENFERMEDAD AGUDA" and read.records == 3 and not read.problems


def test_revisions_are_bounded_and_the_record_written_last_wins_whatever_its_clock(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    start = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    labels = ["NO ENFERMO", "ENFERMEDAD AGUDA"]
    for i in range(MAX_REVISIONS + 5):
        key = store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": labels[i % 2]}),
                             now=start + timedelta(minutes=i)).key
    stored = lake.get_json(key)
    assert len(stored["revisions"]) == MAX_REVISIONS and lake.list("feedback/") == [key]
    assert stored["received_at"].startswith("2026-11-27T10:14")
    # A correction written now by a host whose clock runs a day behind the one that wrote the current record: it
    # was said "stored" and kept in the history, and the monitor and retraining used the record it corrected.
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD TERMINAL"}),
                   now=start - timedelta(days=1))
    stored = lake.get_json(key)
    assert stored["diagnosis"] == "ENFERMEDAD TERMINAL" and len(stored["revisions"]) == MAX_REVISIONS
    assert stored["revisions"][0]["diagnosis"] == labels[(MAX_REVISIONS + 4) % 2]
    read = read_feedback(lake, "diagnosa")
    assert read.latest[("e1", None)].diagnosis == "ENFERMEDAD TERMINAL"
    assert read.records == 1 + MAX_REVISIONS and read.superseded == MAX_REVISIONS


def test_old_layout_objects_are_still_read_and_the_latest_wins_across_layouts(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    old = "feedback/diagnosa/2026/11/27/10/e1--20261127T100000000000Z--9c1e2f3a4b5c.json"
    lake.put_json(old, {"endpoint": "diagnosa", "event_id": "e1", "diagnosis": "NO ENFERMO",
                        "received_at": "2026-11-27T10:00:00.000000+00:00"})
    lake.put_json("feedback/diagnosa/2026/11/27/11/e2--x--y.json", {"endpoint": "diagnosa", "event_id": "e2",
                  "diagnosis": "ENFERMEDAD LEVE", "received_at": "2026-11-27T11:00:00.000000+00:00"})
    read = read_feedback(lake, "diagnosa")
    assert read.latest[("e1", None)].diagnosis == "NO ENFERMO" and read.latest[("e2", None)].diagnosis == "ENFERMEDAD LEVE"
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": "e1", "diagnosis": "ENFERMEDAD AGUDA"}),
                   now=datetime(2026, 11, 28, tzinfo=timezone.utc))
    read = read_feedback(lake, "diagnosa")
    assert read.latest[("e1", None)].diagnosis == "ENFERMEDAD AGUDA" and read.records == 3 and read.superseded == 1
    # Between old-layout objects the later instant wins, not the later text ('12:00+02:00' is 10:00 UTC).
    lake.put_json("feedback/diagnosa/2026/11/27/10/e3--a--b.json", {"endpoint": "diagnosa", "event_id": "e3",
                  "diagnosis": "NO ENFERMO", "received_at": "2026-11-27T12:00:00+02:00"})
    lake.put_json("feedback/diagnosa/2026/11/27/10/e3--c--d.json", {"endpoint": "diagnosa", "event_id": "e3",
                  "diagnosis": "ENFERMEDAD LEVE", "received_at": "2026-11-27T10:30:00Z"})
    assert read_feedback(lake, "diagnosa").latest[("e3", None)].diagnosis == "ENFERMEDAD LEVE"


def _post(url, body, content_type="application/json", headers=None, full=False):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "/feedback", data=data, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            result = response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        result = err.code, json.loads(err.read()), dict(err.headers)
    return result if full else result[:2]


def test_route_stores_feedback_and_answers_201_with_the_key(endpoint):
    ep, lake = endpoint
    event = captured_event(ep)
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "ENFERMEDAD TERMINAL", "note": "biopsy"})
    assert status == 201 and body["event_id"] == event
    stored = lake.get_json(body["key"])
    assert stored["diagnosis"] == "ENFERMEDAD TERMINAL" and stored["note"] == "biopsy" and stored["endpoint"] == "diagnosa"


def test_second_feedback_through_the_route_keeps_one_object(endpoint):
    ep, lake = endpoint
    event = captured_event(ep)
    keys = [_post(ep.url, {"event_id": event, "diagnosis": d})[1]["key"] for d in ("NO ENFERMO", "ENFERMEDAD LEVE")]
    assert keys[0] == keys[1] and lake.list("feedback/") == [keys[0]]
    assert read_feedback(lake, "diagnosa").latest[(event, None)].diagnosis == "ENFERMEDAD LEVE"


# Named ids: the values are new at each collection, and pytest-xdist's workers must collect the same tests.
@pytest.mark.parametrize("event", ["never-issued-event-id", str(uuid.uuid4()), new_event_id(),
                                   new_event_id(datetime.now(timezone.utc) + timedelta(days=3))],
                         ids=["not-an-id", "uuid4", "new-id", "new-id-in-3-days"])
def test_feedback_for_an_event_never_captured_is_404(endpoint, event):
    ep, lake = endpoint
    captured_event(ep)
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})
    assert status == 404 and "no captured prediction" in body["error"] and body["event_id"] == event
    assert lake.list("feedback/") == []


def test_feedback_for_an_event_not_sampled_says_so(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer("unused", capture=DataCapture(lake, "diagnosa", sampling_percentage=0),
                       loader=lambda _: None) as ep:
        event = new_event_id()
        assert not ep.capture.record(event, None, b"{}", "application/json", b"{}", "application/json",
                                     datetime.now(timezone.utc))
        status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})
    assert status == 404 and "not sampled" in body["error"]


def test_the_lookup_survives_a_restart(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None) as ep:
        event = captured_event(ep)
    with EndpointServer("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None) as ep:
        assert _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})[0] == 201
        assert _post(ep.url, {"event_id": new_event_id(), "diagnosis": "NO ENFERMO"})[0] == 404
        assert ep.capture.lookup(event) == "captured"


def test_an_oversized_feedback_body_is_413(endpoint):
    ep, lake = endpoint
    status, body = _post(ep.url, {"event_id": captured_event(ep), "diagnosis": "NO ENFERMO", "note": "x" * 20_000})
    assert status == 413 and "16 KB" in body["error"]
    assert lake.list("feedback/") == []


def test_the_feedback_token_is_checked_when_set(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None,
                       feedback_token="s3cret-token") as ep:
        body = {"event_id": captured_event(ep), "diagnosis": "NO ENFERMO"}
        status, answer, headers = _post(ep.url, body, full=True)
        assert status == 401 and "Authorization: Bearer" in answer["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        for wrong in ("Bearer nope", "Basic s3cret-token", "Bearer s3cret-token-and-more"):
            assert _post(ep.url, body, headers={"Authorization": wrong})[0] == 401
        assert _post(ep.url, body, headers={"Authorization": "Bearer s3cret-token"})[0] == 201
        key = DiagnosaClient("diagnosa", endpoint_url=ep.url, feedback_token="s3cret-token").send_feedback(
            body["event_id"], "ENFERMEDAD LEVE").key
        with pytest.raises(ClientFailure, match="401"):
            DiagnosaClient("diagnosa", endpoint_url=ep.url, feedback_token="wrong").send_feedback(
                body["event_id"], "ENFERMEDAD LEVE")
    assert lake.get_json(key)["diagnosis"] == "ENFERMEDAD LEVE"
    assert not any("s3cret" in json.dumps(e) for e in read_errors(lake, "diagnosa").events)


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
    # Every refusal is in the errors stream, by status, without the values sent.
    assert ep.capture.flush()
    errors = read_errors(lake, "diagnosa")
    assert sorted(errors.by_status.items()) == [(400, 2), (415, 1)]
    assert "MAYBE" not in json.dumps(errors.events)
    assert all(e["route"] == "feedback" for e in errors.events)


def test_client_sends_feedback_to_the_local_route(endpoint):
    ep, lake = endpoint
    client = DiagnosaClient("diagnosa", endpoint_url=ep.url)
    event = captured_event(ep)
    key = client.send_feedback(event, "ENFERMEDAD LEVE", note="follow-up").key
    assert lake.get_json(key)["event_id"] == event
    with pytest.raises(FeedbackRejected) as err:
        client.send_feedback(event, "nonsense")
    assert "diagnosis" in err.value.fields
    with pytest.raises(ClientFailure, match="404"):
        client.send_feedback("ev-never", "NO ENFERMO")


def test_the_feedback_command_sends_disease_id_and_source_to_the_endpoint(endpoint, tmp_path, capsys):
    from diagnosa.cli import main

    ep, lake = endpoint
    event = captured_event(ep)
    code = main(["--workspace", str(tmp_path / "ws"), "feedback", event, "ENFERMEDAD CRÓNICA", "--endpoint-url", ep.url,
                 "--disease-id", "ORPHA:558", "--source", "ward-3"])
    assert code == 0, capsys.readouterr().err
    [key] = lake.list("feedback/")
    stored = lake.get_json(key)
    assert (stored["disease_id"], stored["source"], stored["diagnosis"]) == ("ORPHA:558", "ward-3", "ENFERMEDAD CRÓNICA")


def test_the_feedback_command_refuses_an_endpoint_name_the_url_does_not_serve(endpoint, tmp_path, capsys):
    # The name was ignored next to --endpoint-url: the feedback meant for 'ward-b' was stored under the endpoint the
    # URL serves, joined with another model's predictions.
    from diagnosa.cli import main

    ep, lake = endpoint
    event = captured_event(ep)
    argv = ["--workspace", str(tmp_path / "ws"), "feedback", event, "ENFERMEDAD CRÓNICA", "--endpoint-url", ep.url]
    assert main([*argv, "--endpoint-name", "ward-b"]) == 2
    err = capsys.readouterr().err
    assert f"--endpoint-name ward-b, but {ep.url} serves endpoint diagnosa: leave out --endpoint-name" in err
    assert lake.list("feedback/") == []
    assert main([*argv, "--endpoint-name", "diagnosa"]) == 0 and main(argv) == 0, capsys.readouterr().err
    assert len(lake.list("feedback/diagnosa/")) == 1  # the same event twice: one object


def test_client_without_a_route_writes_to_the_lake_or_says_why_not(tmp_path):
    lake = DataLake.from_uri(str(tmp_path))
    client = DiagnosaClient("prod-endpoint", region="eu-west-1", lake=lake)
    key = client.send_feedback("ev-2", "NO ENFERMO").key
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
    assert set(read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest) == {("a", None), ("c", None)}


def test_a_byte_that_is_not_utf8_refuses_its_line_not_the_file(tmp_path, capsys):
    # One latin-1 byte in a note refused the whole export ("'utf-8' codec can't decode byte 0xff"), good lines too.
    from diagnosa.cli import main

    path = tmp_path / "fb.jsonl"
    path.write_bytes(b'{"event_id": "a", "diagnosis": "NO ENFERMO", "note": "caf\xe9"}\n'
                     b'{"event_id": "b", "diagnosis": "ENFERMEDAD LEVE", "note": "caf\xc3\xa9"}\n')
    assert main(["--lake", str(tmp_path / "lake"), "feedback", "--file", str(path)]) == 2
    out = capsys.readouterr().out
    assert "1 stored, 1 refused" in out
    assert "line 1: not UTF-8 text (byte 0xe9 at character 58): export the file as UTF-8" in out
    stored = read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest
    assert set(stored) == {("b", None)} and stored[("b", None)].note == "café"


def test_a_diagnosis_is_held_to_the_labels_of_the_model_it_confirms(tmp_path, capsys):
    # A dataset of your own: its labels, not the built-in cohort's (leve was refused, ENFERMEDAD AGUDA stored).
    from diagnosa.cli import main

    labels = ("leve", "moderado", "grave")
    assert parse_feedback({"event_id": "e", "diagnosis": " Leve "}, labels).diagnosis == "leve"
    with pytest.raises(FeedbackError) as refused:
        parse_feedback({"event_id": "e", "diagnosis": "ENFERMEDAD AGUDA"}, labels)
    assert refused.value.fields["diagnosis"] == "must be one of leve, moderado, grave; got 'ENFERMEDAD AGUDA'"
    # The CLI writing to the lake reads the labels of the model the workspace's local endpoint serves.
    ws = tmp_path / "ws"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "metadata.json").write_text(json.dumps({"labels": list(labels)}))
    (ws / "endpoints" / "toy").mkdir(parents=True)
    (ws / "endpoints" / "toy" / "endpoint.json").write_text(json.dumps(
        {"EndpointName": "toy", "EndpointStatus": "InService", "ModelDir": str(model_dir)}))
    argv = ["--workspace", str(ws), "feedback", "ev-1"]
    assert main([*argv, "grave", "--endpoint-name", "toy"]) == 0
    assert "(grave) stored as feedback/toy/" in capsys.readouterr().out
    assert main([*argv, "ENFERMEDAD AGUDA", "--endpoint-name", "toy"]) == 2
    assert "must be one of leve, moderado, grave" in capsys.readouterr().err
    assert main([*argv, "grave", "--endpoint-name", "other"]) == 2  # its labels are not known here
    assert "no local endpoint other in this workspace" in capsys.readouterr().err
    assert main([*argv, "ENFERMEDAD AGUDA"]) == 0  # the built-in cohort's endpoint keeps its labels


def test_the_endpoint_holds_feedback_to_the_labels_of_the_model_it_serves(two_label_model_dir):
    from inference.server import EndpointServer

    assert EndpointServer(str(two_label_model_dir)).labels == ["NO ENFERMO", "ENFERMO"]


# ------------------------------------------------------------------------------------------------ QA sweep 5

@pytest.mark.parametrize("body, field", [
    ({"note": "a\ud800b"}, "note"), ({"source": "\udcf1"}, "source"), ({"disease_id": "ORPHA:5\udfff"}, "disease_id"),
    ({"diagnosis": "NO\ud800"}, "diagnosis"), ({"event_id": "e\udc80"}, "event_id"), ({"\udfff": 1}, "\\udfff")])
def test_a_lone_surrogate_in_any_field_or_key_is_refused_naming_the_field(body, field):
    # As the route's load_json says it for a whole body; the CLI and its files have no load_json before them.
    with pytest.raises(FeedbackError) as err:
        parse_feedback({"event_id": "e", "diagnosis": "NO ENFERMO", **body})
    assert list(err.value.fields) == [field]
    assert "lone UTF-16 surrogate" in err.value.fields[field]
    str(err.value).encode("utf-8")  # printable: the field's surrogate is shown escaped


def _cli(capsys, *argv):
    from diagnosa.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    out.encode("utf-8"), err.encode("utf-8")  # what a UTF-8 terminal must be able to print
    return code, out, err


def test_a_file_with_surrogates_refuses_those_lines_and_goes_on_to_its_summary(tmp_path, capsys):
    lake_dir = tmp_path / "lake"
    path = tmp_path / "fb.jsonl"
    path.write_text('{"event_id": "a", "diagnosis": "NO ENFERMO"}\n'
                    '{"event_id": "b", "diagnosis": "NO ENFERMO", "note": "a\\ud800b"}\n'
                    '{"event_id": "c", "diagnosis": "NO ENFERMO", "\\udfff": 1}\n'
                    '{"event_id": "d", "diagnosis": "NO ENFERMO", "source": "x\\udcf1"}\n'
                    '{"event_id": "e", "diagnosis": "ENFERMEDAD LEVE"}\n')
    code, out, _ = _cli(capsys, "--lake", lake_dir, "feedback", "--file", path)
    assert code == 2 and "2 stored, 3 refused" in out
    assert "line 2: note: a string holds a lone UTF-16 surrogate" in out
    assert "line 3: \\udfff: the field name holds a lone UTF-16 surrogate" in out and "line 4: source:" in out
    assert set(read_feedback(DataLake.from_uri(str(lake_dir)), "diagnosa").latest) == {("a", None), ("e", None)}


@pytest.mark.parametrize("option", ["--note", "--source", "--disease-id"])
def test_a_command_line_argument_that_is_not_utf8_is_refused_cleanly(endpoint, tmp_path, capsys, option):
    ep, lake = endpoint
    event = captured_event(ep)
    bad = "ca\udcf1a"  # a Latin-1 'ñ' as Python hands it over from a non-UTF-8 terminal
    field = option[2:].replace("-", "_")
    for where, route in ((["--lake", tmp_path / "lake2"], []), (["--workspace", tmp_path / "ws"], ["--endpoint-url", ep.url])):
        code, _, err = _cli(capsys, *where, "feedback", event, "NO ENFERMO", option, bad, *route)
        assert code == 2 and f"{field}: a string holds a lone UTF-16 surrogate" in err
        assert "terminal's encoding" in err and "Traceback" not in err
    assert lake.list("feedback/") == [] and not (tmp_path / "lake2").exists()


def test_a_file_with_endpoint_url_goes_through_the_route_with_its_token(tmp_path, capsys):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    with EndpointServer("unused", capture=DataCapture(lake, "diagnosa"), loader=lambda _: None,
                        feedback_token="s3cret-token") as ep:
        good = captured_event(ep)
        path = tmp_path / "fb.jsonl"
        path.write_text(json.dumps({"event_id": good, "diagnosis": "ENFERMEDAD LEVE", "source": "his"}) + "\n"
                        + json.dumps({"event_id": "never-captured-1", "diagnosis": "NO ENFERMO"}) + "\n"
                        + json.dumps({"event_id": good, "diagnosis": "bajo peso"}) + "\n")
        argv = ["--workspace", tmp_path / "ws", "feedback", "--file", path, "--endpoint-url", ep.url]
        code, out, err = _cli(capsys, *argv, "--feedback-token-file", token)
        assert code == 2, err
        assert f"to {ep.url}: 1 stored, 2 refused" in out
        assert f"line 2: endpoint {ep.url} refused the feedback (404): no captured prediction" in out  # the URL's
        assert "line 3: diagnosis: must be one of" in out  # the served model's labels, judged there
        assert [k.rsplit("/", 1)[1] for k in lake.list("feedback/")] == [f"{good}.json"]  # nothing straight in
        # Without the token the endpoint refuses every line: one message, and the count not sent.
        code, out, err = _cli(capsys, *argv)
        assert code == 1 and "0 stored, 0 refused, 3 not sent" in out
        assert err.count("(401)") == 1 and "stopped at line 1, 3 line(s) from there not sent" in err
        # A token file that cannot be read stops before any line.
        code, out, err = _cli(capsys, *argv, "--feedback-token-file", tmp_path / "missing")
        assert code == 2 and "cannot read the token file" in err and out == ""
    assert lake.get_json(f"feedback/diagnosa/events/{good}.json")["source"] == "his"


def test_an_unreachable_endpoint_stops_the_file_at_once_saying_how_many_lines_were_not_sent(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "fb.jsonl"
    path.write_text("not json\n" + "".join(json.dumps({"event_id": f"ev-{i}", "diagnosis": "NO ENFERMO"}) + "\n\n"
                                           for i in range(4)))
    code, out, err = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", path,
                          "--endpoint-url", f"http://127.0.0.1:{port}")
    assert code == 1 and "0 stored, 1 refused, 4 not sent" in out and "line 1: not JSON" in out
    assert err.count("could not send feedback") == 1 and "stopped at line 2, 4 line(s) from there not sent" in err
    assert not (tmp_path / "lake").exists()  # nothing went straight to the lake
    with pytest.raises(EndpointUnreachable):
        DiagnosaClient("diagnosa", endpoint_url=f"http://127.0.0.1:{port}").send_feedback("ev-1", "NO ENFERMO")


def test_a_feedback_token_without_an_endpoint_url_is_refused(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("t")
    code, _, err = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "ev-1", "NO ENFERMO",
                        "--feedback-token-file", token)
    assert code == 2 and "--feedback-token-file goes with --endpoint-url" in err
    assert not (tmp_path / "lake").exists()


def test_feedback_straight_to_the_lake_warns_of_event_ids_never_captured(endpoint, tmp_path, capsys):
    ep, lake = endpoint
    captured = [captured_event(ep) for _ in range(3)]
    assert ep.capture.flush()
    path = tmp_path / "fb.jsonl"
    ids = [*captured, "not-an-event", new_event_id()]
    path.write_text("".join(json.dumps({"event_id": e, "diagnosis": "NO ENFERMO"}) + "\n" for e in ids))
    root = str(lake.storage.root)
    code, out, err = _cli(capsys, "--lake", root, "feedback", "--file", path)
    assert code == 0 and "5 stored, 0 refused" in out
    assert "warning: 2 event id(s) have no captured request of endpoint diagnosa" in err
    assert "not-an-event" in err and ids[-1] in err and not any(e in err for e in captured)
    code, out, err = _cli(capsys, "--lake", root, "feedback", captured[0], "NO ENFERMO")
    assert code == 0 and "stored as" in out and err == ""
    code, out, err = _cli(capsys, "--lake", root, "feedback", "not-an-event", "NO ENFERMO")
    assert code == 0 and "no captured request" in err and "not-an-event" in err


def test_feedback_straight_to_the_lake_must_name_a_patient_of_its_captured_request(endpoint, tmp_path, capsys):
    # Checked only through the route before: a missing or out-of-range event_row written straight to the lake was
    # stored, and counted as unusable only when the monitor joined it.
    ep, lake = endpoint
    when = datetime.now(timezone.utc)
    three, one = new_event_id(when), new_event_id(when)
    answers = {three: [{"category": "NO ENFERMO"}] * 3, one: [{"category": "NO ENFERMO"}]}
    for event_id, predictions in answers.items():
        assert ep.capture.record(event_id, None, json.dumps([{"age": 40}] * len(predictions)).encode(),
                                 "application/json", json.dumps({"predictions": predictions}).encode(),
                                 "application/json", when)
    assert ep.capture.flush()
    root = str(lake.storage.root)
    code, _, err = _cli(capsys, "--lake", root, "feedback", three, "NO ENFERMO")
    assert code == 2 and f"event_row: event {three} answered 3 patients: name which one with event_row, 0 for the " \
                          "first to 2 for the last" in err
    code, _, err = _cli(capsys, "--lake", root, "feedback", three, "NO ENFERMO", "--event-row", 3)
    assert code == 2 and "to 2 for the last; got 3" in err
    code, _, err = _cli(capsys, "--lake", root, "feedback", one, "NO ENFERMO", "--event-row", 1)
    assert code == 2 and f"event {one} answered one patient: event_row is 0 or left out; got 1" in err
    assert lake.list("feedback/") == []
    code, out, err = _cli(capsys, "--lake", root, "feedback", three, "NO ENFERMO", "--event-row", 2)
    assert code == 0 and f"stored as feedback/diagnosa/events/{three}/2.json" in out and err == ""
    path = tmp_path / "fb.jsonl"
    lines = [{"event_id": three, "diagnosis": "NO ENFERMO", "event_row": 0}, {"event_id": three, "diagnosis": "NO ENFERMO"},
             {"event_id": one.upper(), "diagnosis": "NO ENFERMO"}, {"event_id": one, "diagnosis": "NO ENFERMO", "event_row": 5}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = _cli(capsys, "--lake", root, "feedback", "--file", path)
    assert code == 2 and "2 stored, 2 refused" in out
    assert f"line 2: event_row: event {three} answered 3 patients" in out and "line 4: event_row: event" in out
    assert sorted(lake.list("feedback/")) == sorted(f"feedback/diagnosa/events/{key}.json"
                                                    for key in (f"{three}/0", f"{three}/2", one))


def test_the_capture_is_read_once_for_all_the_event_ids_of_a_file(endpoint):
    from inference.capture import captured_patients

    ep, lake = endpoint
    captured = [captured_event(ep) for _ in range(3)]
    assert ep.capture.flush()
    objects = [k for k in lake.list("capture/diagnosa/") if k.endswith(".jsonl")]
    reads: list[str] = []
    get_bytes = lake.get_bytes
    lake.get_bytes = lambda key: reads.append(key) or get_bytes(key)
    timeless = [f"sagemaker-{i}" for i in range(500)]  # ids without a time: the whole capture, once
    assert captured_patients(lake, "diagnosa", [*captured, *timeless]) == dict.fromkeys(captured, 0)
    assert sorted(reads) == sorted(objects)
    reads.clear()
    later = new_event_id(datetime.now(timezone.utc) - timedelta(days=2))  # a time-stamped id: only its hour is read
    assert captured_patients(lake, "diagnosa", [later]) == {} and reads == []


def test_feedback_for_the_builtin_endpoint_in_a_workspace_without_it_names_the_local_ones(tmp_path, capsys):
    ws = tmp_path / "ws"
    (ws / "endpoints" / "aids-2").mkdir(parents=True)
    (ws / "endpoints" / "aids-2" / "endpoint.json").write_text(json.dumps(
        {"EndpointName": "aids-2", "EndpointStatus": "OutOfService"}))
    code, out, err = _cli(capsys, "--workspace", ws, "feedback", "ev-1", "ENFERMEDAD AGUDA")
    assert code == 0 and "stored as feedback/diagnosa/" in out
    assert "no local endpoint diagnosa" in err and "the local endpoints are aids-2" in err and "--endpoint-name" in err


def test_the_client_tells_a_refused_record_from_a_refused_client(endpoint):
    ep, _ = endpoint
    client = DiagnosaClient("diagnosa", endpoint_url=ep.url)
    with pytest.raises(FeedbackRejected) as err:  # this record's event id: another record may pass
        client.send_feedback("ev-never", "NO ENFERMO")
    assert err.value.status == 404 and "404" in str(err.value)


# ------------------------------------------------------------------------------------------------ several patients

def predict_three(capsys, folder, url: str) -> list[dict]:
    """Three patients (P31, P52, P78) sent by `diagnosa predict` to ``url`` in one request: their answers."""
    patients = folder / "patients.jsonl"
    patients.write_text("".join(json.dumps({"patient_id": f"P{age}", "age": age, "sex": "F", "temperature_c": 37.1})
                                + "\n" for age in (31, 52, 78)))
    code, out, err = _cli(capsys, "--workspace", folder / "ws", "predict", patients, "--endpoint-url", url)
    assert code == 0, err
    return json.loads(out)["predictions"]


def test_a_patient_of_a_multi_patient_request_is_confirmed_by_its_event_row_end_to_end(trained_model_dir, tmp_path,
                                                                                         capsys):
    # `diagnosa predict` sends up to 100 patients a request: their feedback had been stored and never usable.
    from monitoring.retrain import feedback_records

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer(str(trained_model_dir), capture=DataCapture(lake, "diagnosa", flush_seconds=0.05)) as ep:
        ep.wait_until_ready()
        answers = predict_three(capsys, tmp_path, ep.url)
        assert [(a["patient_id"], a["event_row"]) for a in answers] == [("P31", 0), ("P52", 1), ("P78", 2)]
        event = answers[1]["event_id"]
        assert {a["event_id"] for a in answers} == {event}
        feedback = ("--workspace", tmp_path / "ws", "feedback", event, "ENFERMEDAD AGUDA", "--endpoint-url", ep.url)
        # Which patient? The endpoint knows the request held 3 and says so, for a missing row and one beyond them.
        code, _, err = _cli(capsys, *feedback)
        assert code == 2 and f"event_row: event {event} answered 3 patients: name which one with event_row, 0 for " \
                              "the first to 2 for the last" in err
        code, _, err = _cli(capsys, *feedback, "--event-row", 3)
        assert code == 2 and "to 2 for the last; got 3" in err
        code, out, err = _cli(capsys, *feedback, "--event-row", 1)
        assert code == 0, err
        assert f"feedback for event {event} row 1 (ENFERMEDAD AGUDA) stored as feedback/diagnosa/events/{event}/1.json" \
            in out
        assert ep.capture.flush()
    # Retraining reads the confirmed patient's own record from the captured request, with an id of its own.
    records, _, skipped = feedback_records(lake, "diagnosa")
    assert [(r["patient_id"], r["age"], r["label"]) for r in records] == [(f"FB-{event}/1", 52, "ENFERMEDAD AGUDA")]
    assert skipped.total == 0


def test_after_a_restart_feedback_naming_no_row_of_a_request_of_several_patients_is_still_refused(
        trained_model_dir, tmp_path, capsys):
    """The endpoint knew a request's patients only for what its own process captured: restarted (a new version
    deployed, a reboot), it stored row-less feedback for a request of 3 patients, which no report could ever use
    ("ambiguous"). It now reads the count from the lake's capture of the event's hours."""
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer(str(trained_model_dir), capture=DataCapture(lake, "diagnosa", flush_seconds=0.05)) as ep:
        ep.wait_until_ready()
        event = predict_three(capsys, tmp_path, ep.url)[0]["event_id"]
        assert ep.capture.flush()
    with EndpointServer(str(trained_model_dir), capture=DataCapture(lake, "diagnosa", flush_seconds=0.05)) as ep:
        ep.wait_until_ready()
        status, body = _post(ep.url, {"event_id": event, "diagnosis": "ENFERMEDAD AGUDA"})
        assert status == 400, body
        assert body["fields"]["event_row"].startswith(f"event {event} answered 3 patients: name which one with "
                                                      "event_row, 0 for the first to 2 for the last")
        assert _post(ep.url, {"event_id": event, "diagnosis": "ENFERMEDAD AGUDA", "event_row": 3})[0] == 400
        assert _post(ep.url, {"event_id": event, "diagnosis": "ENFERMEDAD AGUDA", "event_row": 1})[0] == 201
    assert lake.list("feedback/diagnosa/") == [f"feedback/diagnosa/events/{event}/1.json"]


def test_an_event_id_in_capitals_names_the_captured_event(endpoint):
    # A UUID typed or exported in capitals was taken (the lake's capture is read case-blind) but stored as given,
    # and the monitor, joining by the capture's lower-case id, counted it as "not captured".
    ep, lake = endpoint
    event = captured_event(ep)
    status, body = _post(ep.url, {"event_id": event.upper(), "diagnosis": "NO ENFERMO"})
    assert status == 201 and body["event_id"] == event and body["key"] == f"feedback/diagnosa/events/{event}.json"
    assert parse_feedback({"event_id": "Ev-1", "diagnosis": "NO ENFERMO"}).event_id == "Ev-1"  # not a UUID: as given


def test_a_file_of_many_refused_lines_is_summarised_by_kind_and_listed_whole_in_the_errors_file(tmp_path, capsys,
                                                                                                 monkeypatch):
    # 5,000 bad lines of an export printed 5,000 lines; now the kinds with their first occurrence, and every line's
    # problems in a file beside the command (the current folder, never beside the export).
    monkeypatch.chdir(tmp_path)
    lines = [json.dumps({"event_id": f"e{i}", "diagnosis": "NO ENFERMO"}) for i in range(3)]
    lines += [json.dumps({"event_id": f"e{i}", "diagnosis": f"grippe {i}"}) for i in range(4000)]
    lines += ["{oops"] * 1000 + [json.dumps({"event_id": "x y", "diagnosis": "MAYBE"})]
    (tmp_path / "export.jsonl").write_text("\n".join(lines) + "\n")
    code, out, _ = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "--file", "export.jsonl")
    assert code == 2 and "3 stored, 5001 refused" in out
    assert len(out.splitlines()) < 20
    assert "4,001  diagnosis: must be one of NO ENFERMO" in out and "1,000  not JSON" in out
    assert "line 4: diagnosis: must be one of" in out and "line 4004: not JSON" in out
    listed = [json.loads(line) for line in (tmp_path / "export.jsonl.errors.jsonl").read_text().splitlines()]
    assert len(listed) == 5001 and listed[-1]["where"] == "line 5004"  # one line per refused line
    assert {p["field"] for p in listed[-1]["problems"]} == {"event_id", "diagnosis"}
    assert {item["where"] for item in listed if any(p["field"] == "event_id" for p in item["problems"])} == {"line 5004"}
    assert str(tmp_path / "export.jsonl.errors.jsonl") in out
    code, _, err = _cli(capsys, "feedback", "e1", "NO ENFERMO", "--errors-file", "x.jsonl")
    assert code == 2 and "--errors-file goes with --file" in err


def test_a_mistyped_diagnosis_with_an_event_row_is_refused_not_a_traceback(tmp_path, capsys):
    # The encoding hint looked for surrogates in every value, the row (an int) too: TypeError.
    code, _, err = _cli(capsys, "--lake", tmp_path / "lake", "feedback", "ev-1", "NO_ENFERMO", "--event-row", 1)
    assert code == 2 and "diagnosis: must be one of NO ENFERMO" in err and "Traceback" not in err


def test_a_row_beyond_a_single_patient_request_and_a_row_that_is_no_number_are_named_as_such(endpoint):
    ep, _ = endpoint
    event = captured_event(ep)
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO", "event_row": 1})
    assert status == 400 and body["fields"]["event_row"] == (f"event {event} answered one patient: event_row is 0 or "
                                                             "left out; got 1")
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO", "event_row": True})
    assert status == 400 and body["fields"]["event_row"].endswith("; got true")  # as JSON wrote it, not Python's True
    assert _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO", "event_row": 0})[0] == 201


# -- review 48a: ids past year 9999 (finding 7), capture that failed (finding 9) --------------------------
BEYOND_9999 = ("ffffffff-ffff-7fff-bfff-ffffffffffff", "e677d21f-dc00-7000-8000-000000000000")


@pytest.mark.parametrize("event", BEYOND_9999)
def test_feedback_for_a_uuid7_past_year_9999_is_a_404_naming_the_problem_not_a_500(endpoint, event):
    from inference.capture import captured_patients, event_time

    ep, lake = endpoint
    assert event_time(event) is None  # was OverflowError: date value out of range
    status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})
    assert status == 404 and "time in the future" in body["error"] and body["event_id"] == event
    # Straight to the lake (no check there): the readers skip its hour instead of raising.
    store_feedback(lake, "diagnosa", parse_feedback({"event_id": event, "diagnosis": "NO ENFERMO"}))
    now = datetime.now(timezone.utc)
    assert (event, None) in read_feedback(lake, "diagnosa", window=(now - timedelta(hours=1), now)).latest
    assert captured_patients(lake, "diagnosa", [event]) == {}


def test_feedback_for_an_answered_request_whose_capture_failed_says_so(tmp_path, trained_model_dir, monkeypatch):
    import errno
    import os

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    capture = DataCapture(lake, "diagnosa")
    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # the disk is full for the capture spool's segment, nothing else
        if fd == capture._capture.fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with EndpointServer(str(trained_model_dir), capture=capture) as ep:
        ep.wait_until_ready(60)
        monkeypatch.setattr(os, "write", write)
        request = urllib.request.Request(ep.url + "/invocations", data=json.dumps({"age": 40}).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:  # answered all the same
            assert response.status == 200
            event = response.headers["X-Diagnosa-Event-Id"]
            assert response.headers["X-Diagnosa-Capture"] == "failed"
        monkeypatch.setattr(os, "write", real_write)
        assert capture.spool_errors == 1 and capture.lookup(event) == "capture failed"
        status, body = _post(ep.url, {"event_id": event, "diagnosis": "NO ENFERMO"})
        assert status == 409 and "capture failed" in body["error"] and body["event_id"] == event
        assert "no captured prediction has" not in body["error"]  # before: "...: feedback refers to the id answered"
        # The client refuses that one record (a batch of feedback goes on with the next), as a 404 or a 413.
        with pytest.raises(FeedbackRejected) as refused:
            DiagnosaClient("diagnosa", endpoint_url=ep.url).send_feedback(event, "NO ENFERMO")
        assert refused.value.status == 409 and "capture failed" in str(refused.value)
        with urllib.request.urlopen(request, timeout=10) as response:  # the disk has room again: captured
            assert response.headers.get("X-Diagnosa-Capture") is None
            assert _post(ep.url, {"event_id": response.headers["X-Diagnosa-Event-Id"],
                                  "diagnosis": "NO ENFERMO"})[0] == 201
    assert lake.list("feedback/") != []


def test_an_id_of_no_capture_does_not_re_read_the_hour_after_each_shipment(tmp_path, monkeypatch):
    # Each shipment (every second under traffic) dropped its hour from the lookup's cache: every feedback post naming
    # a made-up or mistyped id read all the hour's capture objects again (3.8 s at 100 requests a second).
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    reads: list[str] = []
    get_bytes = lake.get_bytes
    monkeypatch.setattr(lake, "get_bytes", lambda key: reads.append(key) or get_bytes(key))
    now = datetime.now(timezone.utc)
    with DataCapture(lake, "diagnosa") as capture:
        first = new_event_id()
        assert capture.record(first, None, b"{}", "application/json", b"{}", "application/json", now)
        assert capture.flush()
        assert capture.lookup(new_event_id()) == "unknown"  # the hour read once: one object
        assert len(reads) == 1
        for _ in range(3):  # more traffic shipped, then an id of no capture again
            later = new_event_id()
            assert capture.record(later, None, b"{}", "application/json", b"{}", "application/json", now)
            assert capture.flush()
            assert capture.lookup(new_event_id()) == "unknown"
        assert len(reads) == 1, reads
        # The ids shipped since are found in the lake's objects by the cached hour, not only in memory.
        with capture._lock:
            capture._recent.clear()
        assert capture.lookup(later) == "captured" and capture.lookup(first) == "captured"
        assert capture._filed_under(later) != capture._filed_under(first)  # each in the object it was shipped in
    assert len(lake.list("capture/")) == 4


def test_an_event_another_server_of_the_endpoint_captured_is_found_once_the_cached_hour_is_old(tmp_path, monkeypatch):
    # Two servers of one endpoint (each its own --capture-spool) file objects into the same hour: a cached hour only
    # learns its own server's, so the other's events were "unknown" (feedback refused) for as long as it stayed cached.
    import inference.capture as capture_module

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    now = datetime.now(timezone.utc)
    with DataCapture(lake, "diagnosa", spool_dir=tmp_path / "a") as a, \
            DataCapture(lake, "diagnosa", spool_dir=tmp_path / "b") as b:
        assert a.lookup(new_event_id()) == "unknown"  # a caches the hour
        event = new_event_id()
        assert b.record(event, None, b"{}", "application/json", b"{}", "application/json", now) and b.flush()
        assert a.lookup(event) == "unknown"  # within HOUR_REREAD_SECONDS: not read again
        monkeypatch.setattr(capture_module, "HOUR_REREAD_SECONDS", 0.0)
        assert a.lookup(event) == "captured"
