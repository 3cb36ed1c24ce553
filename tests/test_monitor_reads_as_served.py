"""The monitor and retraining read a captured request as the endpoint read it when it answered (review48a findings
1-2): a lone-CR CSV the endpoint answered 200 stopped `diagnosa monitor` and retraining's feedback join with a
csv.Error; a BOM before a CSV's first field name read that field as missing; a JSON body with a BOM, or a CSV with a
blank row, was dropped. Each body is answered by the endpoint's handler and captured as the server captures it."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from diagnosa.lake import DataLake
from inference.capture import DataCapture, capture_line, new_event_id
from inference.feedback import Feedback, store_feedback
from inference.handler import answer, load_service, parse_request
from monitoring.retrain import feedback_records
from monitoring.traffic import read_traffic

ENDPOINT = "diagnosa"
KINDS = {"age": "numeric", "sex": "category", "symptoms": "terms"}
CSV, JSON = "text/csv", "application/json"
BODIES = [  # each answered 200 by the endpoint
    (b"patient_id,age,sex\rp5,40,M\rp6,50,F\r", CSV),  # an old Mac's line ends (the reviewer's 18 bytes)
    (b"\xef\xbb\xbfage,sex,patient_id\n40,M,p12\n", CSV),  # a BOM before a feature's name
    (b'\xef\xbb\xbf{"age": 41, "sex": "F"}', JSON),  # a BOM before JSON, which the endpoint reads past
    (b"age,sex\n40,M\n\n52,F\n", CSV),  # a blank row, skipped as ingestion skips it
    (b"age,sex\n43,M\n,,\n , \n53,F\n", CSV),  # a spreadsheet's empty rows
    (b"age,sex,,\r\n44,M,,\r\n", CSV),  # CRLF, trailing columns without a name
    (b" age ,symptoms\n45,HP:0001250;HP:0001249\n", CSV),
    (b'{"patient_id": "a", "age": 33, "sex": "F", "symptoms": ["HP:0001250"]}', JSON),
    (b'{"instances": [{"age": 20}, {"age": 30, "sex": "M"}], "top_k": 2}', JSON),
    (b'[{"age": 61, "sex": " M "}]', JSON),
]


@pytest.fixture(scope="module")
def service(trained_model_dir):
    return load_service(str(trained_model_dir))


def served(lake: DataLake, service, bodies, accept: str | None = None) -> list[str]:
    """Each body answered by the endpoint's handler (in the media ``accept`` asks for) and captured as the server
    captures it: the event ids."""
    ids = []
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        for body, content_type in bodies:
            output, output_type, patients = answer(service, body, content_type, accept)  # a 200, or this raises
            event = new_event_id()
            assert capture.record(event, None, body, content_type, output, output_type, datetime.now(timezone.utc),
                                  patients)
            ids.append(event)
        assert capture.flush()
    return ids


def as_scored(service, body: bytes, content_type: str) -> list[tuple]:
    """The (age, sex, symptoms) of each patient the endpoint scored for ``body``."""
    return [(r["age"], r["sex"], r["symptoms"]) for r in parse_request(body, content_type, service).records]


def test_the_monitor_reads_each_answered_request_into_the_records_the_endpoint_scored(tmp_path, service):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ids = served(lake, service, BODIES)
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS)
    assert traffic.skipped.total == 0 and not traffic.type_errors, traffic.skipped.to_dict()
    read: dict[str, list[tuple]] = {}
    for row in traffic.rows.sort_values(["event_id", "row"]).itertuples():
        age, sex = (None if value is None or value != value else value for value in (row.age, row.sex))  # NaN: missing
        read.setdefault(row.event_id, []).append((age, sex, list(row.symptoms)))
    for event, (body, content_type) in zip(ids, BODIES):
        assert read.get(event) == as_scored(service, body, content_type), body


def test_requests_answered_in_csv_are_read_as_those_answered_in_json(tmp_path, service):
    # SageMaker captures an answer in the media the endpoint answered in: a request sent with Accept: text/csv was
    # read as JSON, and every patient of it dropped from drift, live quality and retraining ("output has no JSON
    # predictions"), its feedback stored and never used; the endpoint could not count its patients after a restart.
    from inference.capture import captured_patients

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    ids = served(lake, service, BODIES, accept="text/csv")
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS)
    assert traffic.skipped.total == 0 and not traffic.type_errors, traffic.skipped.to_dict()
    patients = {event: len(as_scored(service, *request)) for event, request in zip(ids, BODIES)}
    assert traffic.rows.groupby("event_id").size().to_dict() == patients
    assert traffic.rows["predicted"].isin(service.model.labels).all()
    assert captured_patients(lake, ENDPOINT, ids) == patients
    several = next(event for event, (body, _) in zip(ids, BODIES) if body.startswith(b'{"instances"'))
    store_feedback(lake, ENDPOINT, Feedback(event_id=several, event_row=1, diagnosis="ENFERMEDAD LEVE"))
    records, _, skipped = feedback_records(lake, ENDPOINT)  # retraining's feedback join
    assert [(r["age"], r["sex"]) for r in records] == [(30, "M")] and skipped.total == 0, skipped.to_dict()


def unanswerable(event_id: str, body: bytes, content_type: str) -> dict:
    """A capture line holding a request the endpoint would refuse (SageMaker's capture, a copied or edited object)."""
    return capture_line(event_id, None, body, content_type, b'{"predictions": [{"category": "NO ENFERMO"}]}',
                        JSON, datetime.now(timezone.utc))


def test_monitor_and_feedback_join_count_an_unreadable_line_and_never_crash(tmp_path, service, baseline_dir, capsys):
    lake = DataLake.from_uri(str(tmp_path / "ws" / "lake"))
    lone_cr, bom = served(lake, service, BODIES[:2])
    odd = {"quote": (b'age,sex\n"40,M\n', CSV), "empty": (b"age,sex\n\n", CSV),
           "width": (b"age,sex\n40,M,x\n", CSV), "deep": (b"[" * 50_000 + b"]" * 50_000, JSON),
           "latin1": ("age,sex\n40,\u00d1\n".encode("latin-1"), CSV), "xml": (b"<a/>", "text/xml")}
    lines = [unanswerable(name, *request) for name, request in odd.items()]
    lake.put_bytes(f"capture/{ENDPOINT}/AllTraffic/2026/11/27/10/00-00-000-odd.jsonl",
                   ("\n".join(json.dumps(line) for line in lines) + "\n").encode())
    for event in (lone_cr, bom, "quote"):
        store_feedback(lake, ENDPOINT, Feedback(event_id=event, event_row=0, diagnosis="NO ENFERMO"))
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS)
    assert sorted(set(traffic.rows["event_id"])) == sorted([lone_cr, bom])
    assert dict(traffic.skipped.counts) == {"input is not a readable JSON or CSV request": len(odd)}
    examples = " ".join(traffic.skipped.examples["input is not a readable JSON or CSV request"])
    assert "a quote never closed" in examples and "nested too deeply" in examples  # the endpoint's reasons
    records, _, skipped = feedback_records(lake, ENDPOINT)  # retraining's feedback join
    assert sorted((r["age"], r["sex"]) for r in records) == [(40, "M"), (40, "M")]
    assert dict(skipped.counts) == {"captured request unusable: input is not a readable JSON or CSV request": 1}
    from diagnosa.cli import main

    out = tmp_path / "out"
    assert main(["--lake", lake.uri, "--workspace", str(tmp_path / "ws"), "monitor", "--baseline", str(baseline_dir),
                 "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["traffic"]["patients"] == 3
    assert "input is not a readable JSON or CSV request" in capsys.readouterr().out


def test_the_own_dataset_retraining_reads_a_captured_request_with_the_endpoints_reader():
    # Its feedback rows come from request_records; a body the endpoint reads is read, one it refuses is a ValueError.
    from monitoring.traffic import UnreadableRequest, request_records

    assert request_records(b"\xef\xbb\xbfedad,fumador\r33,si\r\r", CSV) == [{"edad": "33", "fumador": "si"}]
    with pytest.raises(UnreadableRequest, match="a quote never closed"):
        request_records(b'edad\n"33\n', CSV)
