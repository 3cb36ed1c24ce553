"""Retraining a dataset of your own from doctors' feedback (monitoring/retrain.py): the CSV the curated version came
from + one row per accepted feedback, written as that file is written (a Spanish spreadsheet's ';', decimal commas and
cp1252 here), ingested with the version's own config. Captures and feedback go through the real writers
(``DataCapture``, ``store_feedback``); the rows come back through ingestion's real reader."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from diagnosa.data.ingest import ingest_csv, latest_version, load_curated
from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id
from inference.feedback import NO_ROW, SAME_PATIENT, Feedback, store_feedback
from monitoring.retrain import RetrainError, endpoint_dataset, feedback_dataset
from monitoring.traffic import LONE_SURROGATE

CONFIG = """name = "mi_hospital"
id_column = "paciente"
target = "gravedad"
labels = ["leve", "grave"]
exclude = ["nombre"]

[csv]
delimiter = ";"
decimal = ","
encoding = "cp1252"

[columns.fumador]
type = "boolean"
"""
HEADER = "paciente;nombre;edad;temperatura;fumador;gravedad\r\n"
ENDPOINT = "mi-hospital"  # the dataset's endpoint: its name, '_' written '-'


@pytest.fixture
def lake(tmp_path):
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.init_zones()
    rows = [f"P{i:03d};Nombre {i};{30 + i % 50};{36 + (i % 7) / 2:.1f};{'sí' if i % 3 else 'no'};"
            f"{'grave' if i % 4 == 0 else 'leve'}\r\n".replace(".", ",") for i in range(60)]
    (tmp_path / "mi.csv").write_bytes((HEADER + "".join(rows)).encode("cp1252"))
    (tmp_path / "mi.toml").write_text(CONFIG, encoding="utf-8")
    ingest_csv(lake, tmp_path / "mi.csv", tmp_path / "mi.toml")
    return lake


def _served(lake: DataLake, *requests: tuple[object, str]) -> list[str]:
    """Capture each request body (JSON or CSV, as the endpoint received it) as the endpoint does; the event ids."""
    ids = []
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        for body, content_type in requests:
            event = new_event_id()
            raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else json.dumps(body).encode()
            assert capture.record(event, None, raw, content_type, b'{"predictions": [{"category": "leve"}]}',
                                  "application/json", datetime.now(timezone.utc))
            ids.append(event)
        assert capture.flush()
    return ids


def _confirm(lake: DataLake, event: str, diagnosis: str) -> None:
    store_feedback(lake, ENDPOINT, Feedback(event_id=event, diagnosis=diagnosis))


def test_feedback_becomes_rows_of_the_users_file_written_as_it_is_written(lake):
    first, second, csv_request, several, odd = _served(
        lake,
        ({"edad": 71, "temperatura": 38.5, "fumador": True}, "application/json"),
        ({"instances": [{"edad": 44, "temperatura": 36.9}]}, "application/json"),
        ("edad,temperatura,fumador\n52,37.25,no\n", "text/csv"),
        ([{"edad": 1}, {"edad": 2}], "application/json"),
        ({"edad": 60, "temperatura": {"valor": 37}}, "application/json"),
    )
    for event in (first, second, csv_request, several, odd):
        _confirm(lake, event, "grave")
    _confirm(lake, "20260101T000000Z-unknown", "leve")  # no captured request
    base = latest_version(lake, "mi_hospital")
    result = feedback_dataset(lake, ENDPOINT)
    assert result.dataset == "mi_hospital" and result.base_version == base and result.feedback_rows == 3
    assert result.version != base and latest_version(lake, "mi_hospital") == result.version
    # Every feedback not used is named with its reason.
    assert dict(result.skipped.counts) == {
        "no captured request for this event id": 1,
        NO_ROW: 1,
        "a request field ('temperatura') holds a dict, which no cell can hold": 1}
    frame, manifest = load_curated(lake, "mi_hospital", result.version)
    assert len(frame) == 63 and manifest["feedback"] == {"base_key": result.base_source, "endpoint": ENDPOINT, "rows": 3}
    fed = frame[frame["paciente"].str.startswith("FB-")].set_index("paciente")
    assert fed.loc[f"FB-{first}", ["edad", "temperatura", "fumador", "gravedad"]].tolist() == [71, 38.5, True, "grave"]
    assert fed.loc[f"FB-{second}", "temperatura"] == 36.9 and fed.loc[f"FB-{csv_request}", "temperatura"] == 37.25
    assert fed.loc[f"FB-{csv_request}", "fumador"] == False  # noqa: E712  (a numpy bool)
    # The new raw file is the user's, byte for byte, then the feedback in its dialect and line endings.
    raw = lake.get_bytes(result.source)
    original = lake.get_bytes(result.base_source)
    assert raw.startswith(original) and raw.count(b"\r\n") == raw.count(b"\n") == 64
    assert f"FB-{first};;71;38,5;true;grave\r\n".encode("cp1252") in raw


def test_a_csv_requests_field_names_are_read_as_the_endpoint_read_them(lake):
    # A scoring CSV's header 'edad ,temperatura' (the endpoint reads 'edad ' as edad): its age was lost from the
    # feedback row, an empty cell where the model had been given 52.
    (event,) = _served(lake, ("edad ,temperatura\n52,37.25\n", "text/csv"))
    _confirm(lake, event, "grave")
    result = feedback_dataset(lake, ENDPOINT)
    fed = load_curated(lake, "mi_hospital", result.version)[0].set_index("paciente").loc[f"FB-{event}"]
    assert result.feedback_rows == 1 and (fed["edad"], fed["temperatura"], fed["gravedad"]) == (52, 37.25, "grave")


def test_each_retraining_adds_every_feedback_once_with_its_latest_diagnosis(lake):
    (event,) = _served(lake, ({"edad": 50, "temperatura": 37.0}, "application/json"))
    _confirm(lake, event, "leve")
    first = feedback_dataset(lake, ENDPOINT)
    _confirm(lake, event, "grave")  # the doctor corrects the diagnosis
    second = feedback_dataset(lake, ENDPOINT)
    # Added to the user's file again, not to the first retraining's: one row, the corrected label, none quarantined.
    assert second.base_version == first.version and second.base_source == first.base_source
    frame, manifest = load_curated(lake, "mi_hospital", second.version)
    assert frame.loc[frame["paciente"] == f"FB-{event}", "gravedad"].tolist() == ["grave"]
    assert len(frame) == 61 and manifest["sources"][0]["quarantined"] == 0


def test_feedback_rows_are_validated_and_values_the_file_cannot_hold_are_named(lake):
    no_age, surrogate, euro, mac, snowman = _served(
        lake,
        ({"temperatura": 37.0}, "application/json"),  # edad is no required column: the row is kept
        ('{"edad": 40, "fumador": "\\ud800"}', "application/json"),  # a lone surrogate, as JSON can carry it
        ({"edad": 200, "temperatura": "39,1 €"}, "application/json"),
        ("edad,fumador\n33, si\u0301 \n", "text/csv"),  # 'sí' typed on a Mac: cp1252 has 'í', not 'i' + accent
        ({"edad": 50, "fumador": "\u2603"}, "application/json"),  # a snowman: Unicode, but not cp1252
    )
    for event in (no_age, surrogate, euro, mac, snowman):
        _confirm(lake, event, "grave")
    result = feedback_dataset(lake, ENDPOINT)
    # '€' is in cp1252, a snowman is not, a lone surrogate in no encoding (the monitor skips its request as
    # retraining does): that feedback is named, not written.
    assert dict(result.skipped.counts) == {"a value cannot be written in the file's encoding (cp1252)": 1,
                                           LONE_SURROGATE: 1}
    assert result.feedback_rows == 3
    assert f"FB-{mac};;33;;sí;grave\r\n".encode("cp1252") in lake.get_bytes(result.source)
    frame, manifest = load_curated(lake, "mi_hospital", result.version)
    # The bad temperature is quarantined by ingestion with its reason, as a hospital's row would be.
    assert f"FB-{no_age}" in set(frame["paciente"]) and f"FB-{euro}" not in set(frame["paciente"])
    assert frame.loc[frame["paciente"] == f"FB-{mac}", "fumador"].tolist() == [True]
    [quarantine_key] = manifest["quarantine_keys"]
    entries = [json.loads(line) for line in lake.get_bytes(quarantine_key).decode().splitlines()]
    assert [e["raw"]["paciente"] for e in entries] == [f"FB-{euro}"]
    assert any("temperatura" in reason for reason in entries[0]["reasons"])


def test_an_endpoint_is_mapped_to_its_dataset_and_an_unknown_one_is_named(lake):
    assert endpoint_dataset(lake, ENDPOINT) == "mi_hospital"
    assert endpoint_dataset(lake, "diagnosa") == "patients"
    with pytest.raises(RetrainError, match=r"no dataset in .* deploys to the endpoint 'otro'.*mi-hospital \(mi_hospital\)"):
        feedback_dataset(lake, "otro")
    with pytest.raises(RetrainError, match="no accepted feedback to add: no feedback in the lake"):
        feedback_dataset(lake, ENDPOINT)


def test_a_patient_of_a_request_of_several_is_confirmed_by_its_event_row(lake):
    several, single = _served(lake, ([{"edad": 41, "temperatura": 36.6}, {"edad": 72, "temperatura": 39.2}],
                                     "application/json"),
                              ("edad,temperatura\n33,37.0\n", "text/csv"))
    store_feedback(lake, ENDPOINT, Feedback(event_id=several, diagnosis="grave", event_row=1))
    store_feedback(lake, ENDPOINT, Feedback(event_id=several, diagnosis="leve", event_row=2))  # the request held 2
    # The only patient of a request, confirmed without a row, then corrected naming row 0: one patient, the later word.
    store_feedback(lake, ENDPOINT, Feedback(event_id=single, diagnosis="leve"),
                   now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    store_feedback(lake, ENDPOINT, Feedback(event_id=single, diagnosis="grave", event_row=0),
                   now=datetime(2026, 1, 2, tzinfo=timezone.utc))
    result = feedback_dataset(lake, ENDPOINT)
    assert result.feedback_rows == 2
    assert dict(result.skipped.counts) == {
        "event_row is not in the captured request (event_row 2, 2 patient(s))": 1, SAME_PATIENT: 1}
    frame = load_curated(lake, "mi_hospital", result.version)[0]
    fed = frame[frame["paciente"].str.startswith("FB-")].set_index("paciente")
    assert fed.loc[f"FB-{several}/1", ["edad", "temperatura", "gravedad"]].tolist() == [72, 39.2, "grave"]
    assert fed.loc[f"FB-{single}", ["edad", "gravedad"]].tolist() == [33, "grave"]
    assert len(fed) == 2


def test_feedback_under_the_inference_id_becomes_the_requests_row(lake):
    # The doctors' app over SageMaker gets no event id back: it records the diagnosis under its inference id.
    body = json.dumps({"edad": 58, "temperatura": 37.1}).encode()
    answer = b'{"predictions": [{"category": "leve"}]}'
    event = new_event_id()
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        assert capture.record(event, "app-prediction-7", body, "application/json", answer, "application/json",
                              datetime(2026, 11, 27, 10, tzinfo=timezone.utc))
        assert capture.flush()
    _confirm(lake, "app-prediction-7", "grave")
    result = feedback_dataset(lake, ENDPOINT)
    assert result.feedback_rows == 1 and not result.skipped.counts
    fed = load_curated(lake, "mi_hospital", result.version)[0].set_index("paciente")
    assert fed.loc[f"FB-{event}", ["edad", "gravedad"]].tolist() == [58, "grave"]


def test_a_retried_request_is_one_row_from_the_copy_kept(lake):
    # A client retrying a timed-out call with its InferenceId has the request scored and captured twice; with feedback
    # on both copies, a dataset of your own got two training rows of one patient (the monitor and the built-in
    # cohort's retraining count the request once, from its last copy).
    body = json.dumps({"edad": 71, "temperatura": 38.5}).encode()
    answer = b'{"predictions": [{"category": "leve"}]}'
    first, retry, other = new_event_id(), new_event_id(), new_event_id()
    when = datetime(2026, 11, 27, 10, tzinfo=timezone.utc)
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        for event, inference_id, second in ((retry, "visita-1", 9), (first, "visita-1", 1), (other, "visita-2", 5)):
            assert capture.record(event, inference_id, body, "application/json", answer, "application/json",
                                  when.replace(second=second))
        assert capture.flush()
    for event in (first, retry, other):
        _confirm(lake, event, "grave")
    result = feedback_dataset(lake, ENDPOINT)
    assert result.feedback_rows == 2 and dict(result.skipped.counts) == {SAME_PATIENT: 1}
    fed = load_curated(lake, "mi_hospital", result.version)[0]
    assert sorted(fed.loc[fed["paciente"].str.startswith("FB-"), "paciente"]) == sorted([f"FB-{retry}", f"FB-{other}"])


def test_a_boolean_slice_columns_empty_cells_and_feedback_rows_are_not_in_the_slice_for_train_too(tmp_path):
    # The endpoint never receives a `slice_column` (it is metadata): every feedback row had it empty, ingestion read
    # that as "not in the slice", and Train refused the version ("slice column 'pediatrico' has missing values"), which
    # stayed the latest, so the next plain run failed too. A hospital's empty cells did the same.
    from diagnosa.data.schema import Schema
    from training.train import check_validation_frame

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lake.init_zones()
    rows = [f"P{i:03d};{30 + i % 50};{36 + (i % 7) / 2:.1f};{'' if i % 5 == 0 else 'sí' if i % 3 else 'no'};"
            f"{'grave' if i % 4 == 0 else 'leve'}\n" for i in range(60)]
    (tmp_path / "d.csv").write_text("paciente;edad;temperatura;es_pediatrico;gravedad\n" + "".join(rows), encoding="utf-8")
    (tmp_path / "d.toml").write_text('name = "mi_hospital"\nid_column = "paciente"\ntarget = "gravedad"\nlabels = ["leve", '
                                     '"grave"]\nslice_column = "es_pediatrico"\n[csv]\ndelimiter = ";"\n', encoding="utf-8")
    ingest_csv(lake, tmp_path / "d.csv", tmp_path / "d.toml")
    frame, manifest = load_curated(lake, "mi_hospital")
    schema = Schema.from_dict(manifest["schema"])
    assert frame["es_pediatrico"].isna().sum() == 0 and int((~frame["es_pediatrico"].astype(bool)).sum()) == 12 + 16
    assert check_validation_frame(frame, schema) is not None  # it raised on the gaps
    (event,) = _served(lake, ({"edad": 7, "temperatura": 38.0}, "application/json"))
    _confirm(lake, event, "grave")
    result = feedback_dataset(lake, ENDPOINT)
    fed, _ = load_curated(lake, "mi_hospital", result.version)
    assert fed.loc[fed["paciente"] == f"FB-{event}", "es_pediatrico"].tolist() == [False]
    assert check_validation_frame(fed, schema) is not None
