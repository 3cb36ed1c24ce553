"""Feedback keeps training the model after its captured request expires (inference.feedback.KeptPatient).

The stack expires ``capture/`` after ``capture_expiry_days`` (90) and keeps ``feedback/``; retraining read each
feedback's fields from its captured request, so once the capture was gone every feedback was "no captured request"
and the model trained without it (a probe: 207 rows while the capture was kept, 0 after). A retraining's fold now
keeps the confirmed patient's captured record in the feedback object, every later store carries it over, and the
next fold uses it once the capture is gone. The capture's expiry is what S3's lifecycle rule does: its objects
deleted. Real writers (DataCapture, store_feedback), the real fold (folder lake; moto's S3 through the AWS job)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest
import test_retrain_own
from test_retrain_job import cohort, confirmed_cohort, job, result_of, s3, s3_lake  # noqa: F401  (fixtures)

from diagnosa.data.ingest import load_curated
from diagnosa.lake import DataLake
from inference.capture import DataCapture, new_event_id
from inference.feedback import (
    MAX_KEPT_BYTES,
    PATIENT,
    SAME_PATIENT,
    Feedback,
    KeptPatient,
    feedback_key,
    parse_feedback,
    read_feedback,
    store_feedback,
)
from monitoring.retrain import AMBIGUOUS, NothingToFold, feedback_dataset

ENDPOINT = test_retrain_own.ENDPOINT
lake = test_retrain_own.lake  # the fixture: a dataset of one's own (mi_hospital), ingested
ANSWER_OF = {1: b'{"predictions": [{"category": "leve"}]}',
             2: b'{"predictions": [{"category": "leve"}, {"category": "grave"}]}'}


def _expire_capture(lake: DataLake) -> int:
    """What the stack's lifecycle rule does after capture_expiry_days: every captured request gone."""
    keys = lake.list("capture/")
    for key in keys:
        lake.delete(key)
    assert not lake.list("capture/")
    return len(keys)


def _fed(lake: DataLake, dataset: str, id_column: str, version: str) -> pd.DataFrame:
    """The feedback rows of a curated version, by id."""
    frame = load_curated(lake, dataset, version)[0]
    return frame[frame[id_column].str.startswith("FB-")].sort_values(id_column).reset_index(drop=True)


def _kept(lake: DataLake, endpoint: str, event_id: str, event_row: int | None = None) -> dict:
    return json.loads(lake.get_bytes(feedback_key(endpoint, event_id, event_row)))


def test_a_datasets_feedback_trains_the_same_rows_after_its_capture_expired(lake):
    when = datetime(2026, 9, 1, 10, tzinfo=timezone.utc)
    single, csv_request, several, by_app, first, retry = (new_event_id(when) for _ in range(6))
    body = json.dumps({"edad": 71, "temperatura": 38.5}).encode()
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        for event, inference_id, raw, content_type, patients in (
                (single, None, json.dumps({"edad": 64, "temperatura": 39.1, "nombre": "Juan"}).encode(),
                 "application/json", 1),
                (csv_request, None, b"edad ,temperatura\n52,37.25\n", "text/csv", 1),
                (several, None, json.dumps([{"edad": 41}, {"edad": 72, "temperatura": 39.2}]).encode(),
                 "application/json", 2),
                (by_app, "app-prediction-7", json.dumps({"edad": 58, "temperatura": 37.1}).encode(),
                 "application/json", 1),
                (first, "visita-1", body, "application/json", 1),  # a client's retry: one patient, captured twice
                (retry, "visita-1", body, "application/json", 1)):
            assert capture.record(event, inference_id, raw, content_type, ANSWER_OF[patients], "application/json",
                                  when)
            when = when.replace(second=when.second + 1)
        assert capture.flush()
    confirmations = [(single, None, "grave"), (csv_request, None, "leve"), (several, 1, "grave"),
                     ("app-prediction-7", None, "grave"), (first, None, "grave"), (retry, None, "grave")]
    for event, row, diagnosis in confirmations:
        store_feedback(lake, ENDPOINT, Feedback(event_id=event, diagnosis=diagnosis, event_row=row))

    before = feedback_dataset(lake, ENDPOINT)
    assert before.feedback_rows == 5 and dict(before.skipped.counts) == {SAME_PATIENT: 1}
    assert before.records_kept == 6 and before.from_kept == 0  # both copies' feedback keeps the patient
    kept = _kept(lake, ENDPOINT, several, 1)[PATIENT]
    assert KeptPatient.from_dict(kept) == KeptPatient(several, 1, 2, kept["inference_time"],
                                                      {"edad": 72, "temperatura": 39.2})
    # What the dataset excludes (a name) is not kept; the CSV request's 'edad ' is the column edad.
    assert _kept(lake, ENDPOINT, single)[PATIENT]["record"] == {"edad": 64, "temperatura": 39.1}
    assert _kept(lake, ENDPOINT, csv_request)[PATIENT]["record"] == {"edad": "52", "temperatura": "37.25"}
    assert _kept(lake, ENDPOINT, "app-prediction-7")[PATIENT]["event_id"] == by_app
    assert feedback_dataset(lake, ENDPOINT).records_kept == 0  # kept once: no object rewritten again

    assert _expire_capture(lake) > 0
    # A doctor corrects a diagnosis after the capture expired: the object's kept patient is carried over, and no
    # revision copies it.
    store_feedback(lake, ENDPOINT, Feedback(event_id=csv_request, diagnosis="grave"))
    corrected = _kept(lake, ENDPOINT, csv_request)
    assert corrected["diagnosis"] == "grave" and corrected[PATIENT]["record"] == {"edad": "52", "temperatura": "37.25"}
    assert [PATIENT in revision for revision in corrected["revisions"]] == [False]

    after = feedback_dataset(lake, ENDPOINT)
    assert after.feedback_rows == 5 and after.from_kept == 5 and dict(after.skipped.counts) == {SAME_PATIENT: 1}
    rows_before, rows_after = (_fed(lake, "mi_hospital", "paciente", result.version) for result in (before, after))
    assert sorted(rows_after["paciente"]) == sorted(f"FB-{p}" for p in (single, csv_request, f"{several}/1", by_app,
                                                                         retry))
    corrected = rows_after["paciente"] == f"FB-{csv_request}"
    assert rows_before.loc[corrected, "gravedad"].tolist() == ["leve"]
    assert rows_after.loc[corrected, "gravedad"].tolist() == ["grave"]
    rows_after.loc[corrected, "gravedad"] = "leve"
    assert rows_after.equals(rows_before)  # every value the same, from the kept records
    by_id = rows_after.set_index("paciente")
    assert by_id.loc[f"FB-{several}/1", "edad"] == 72 and by_id.loc[f"FB-{csv_request}", "temperatura"] == 37.25
    assert "from the patient's record their feedback object keeps" in after.summary()


def test_feedback_stored_after_the_capture_expired_and_never_kept_is_named_as_before(lake):
    # Feedback whose object never kept a record (no retraining ran while its capture was kept) cannot be used: said.
    (event,) = [new_event_id()]
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        assert capture.record(event, None, b'{"edad": 50}', "application/json", ANSWER_OF[1], "application/json",
                              datetime.now(timezone.utc))
        assert capture.flush()
    _expire_capture(lake)
    store_feedback(lake, ENDPOINT, Feedback(event_id=event, diagnosis="grave"))
    with pytest.raises(NothingToFold, match="1 no captured request for this event id"):
        feedback_dataset(lake, ENDPOINT)


def test_a_correction_stored_while_the_fold_keeps_the_record_is_kept_with_it(lake, monkeypatch):
    (event,) = [new_event_id()]
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        assert capture.record(event, None, b'{"edad": 50, "temperatura": 37.5}', "application/json", ANSWER_OF[1],
                              "application/json", datetime.now(timezone.utc))
        assert capture.flush()
    store_feedback(lake, ENDPOINT, Feedback(event_id=event, diagnosis="leve"))
    key = feedback_key(ENDPOINT, event)
    real, rewritten = lake.read_tagged, []

    def read_then_another_writer(asked: str):
        out = real(asked)
        if asked == key and not rewritten:  # another process stores the doctor's correction after the fold read it
            body = json.loads(out[0])
            lake.put_json(key, {**body, "diagnosis": "grave", "revisions": [{"diagnosis": "leve"}]})
            rewritten.append(True)
        return out

    monkeypatch.setattr(lake, "read_tagged", read_then_another_writer)
    result = feedback_dataset(lake, ENDPOINT)
    stored = _kept(lake, ENDPOINT, event)
    assert rewritten and result.records_kept == 1
    assert stored["diagnosis"] == "grave" and stored[PATIENT]["record"] == {"edad": 50, "temperatura": 37.5}


@pytest.mark.parametrize("damage", [7, {"event_id": "x"}, {"event_id": "no/slash", "row": 0, "patients": 1,
                                                           "inference_time": None, "record": {}}],
                         ids=["not-an-object", "fields-missing", "bad-event-id"])
def test_a_kept_record_written_otherwise_is_counted_and_replaced_from_the_capture(lake, damage):
    (event,) = [new_event_id()]
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        assert capture.record(event, None, b'{"edad": 33}', "application/json", ANSWER_OF[1], "application/json",
                              datetime.now(timezone.utc))
        assert capture.flush()
    store_feedback(lake, ENDPOINT, Feedback(event_id=event, diagnosis="grave"))
    key = feedback_key(ENDPOINT, event)
    lake.put_json(key, {**json.loads(lake.get_bytes(key)), PATIENT: damage})
    assert read_feedback(lake, ENDPOINT).unreadable_kept == 1
    result = feedback_dataset(lake, ENDPOINT)
    assert result.feedback_rows == 1 and result.records_kept == 1
    assert _kept(lake, ENDPOINT, event)[PATIENT]["record"] == {"edad": 33}
    assert read_feedback(lake, ENDPOINT).unreadable_kept == 0


def test_the_cohorts_feedback_trains_after_its_capture_expired_through_the_aws_job(tmp_path, s3, cohort):  # noqa: F811  (fixtures)
    lake = s3_lake(s3)
    events = confirmed_cohort(lake, cohort, "diagnosa-dev", 4, tmp_path / "spool")

    assert job(tmp_path / "first", "diagnosa-dev", "--dataset", "patients") == 0
    first = result_of(tmp_path / "first")
    assert first["feedback_rows"] == 4 and first["skipped"] == {}
    assert all(PATIENT in _kept(lake, "diagnosa-dev", event) for event in events)
    assert _expire_capture(lake) > 0
    assert job(tmp_path / "second", "diagnosa-dev", "--dataset", "patients") == 0
    second = result_of(tmp_path / "second")
    assert second["feedback_rows"] == 4 and second["skipped"] == {}  # it was 0: "no captured request" 4 times
    fed = [_fed(lake, "patients", "patient_id", result["version"]) for result in (first, second)]
    assert len(fed[0]) == 4 and fed[0].equals(fed[1])  # the same patients, every value the same


# ------------------------------------------------------------------------------------------------ a probe's findings

def _capture(lake: DataLake, *events: tuple[str, str | None, dict, datetime]) -> dict[str, str]:
    """Capture each (event id, inference id, body, time) as the endpoint does, each in an object of its own (as
    requests minutes apart are shipped): event id → the key of its object."""
    objects = {}
    for event, inference_id, body, when in events:
        before = set(lake.list("capture/"))
        with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
            assert capture.record(event, inference_id, json.dumps(body).encode(), "application/json", ANSWER_OF[1],
                                  "application/json", when)
            assert capture.flush()
        [objects[event]] = set(lake.list("capture/")) - before
    return objects


def _retried(lake: DataLake, visit: str, **later: int) -> tuple[str, str, dict[str, str]]:
    """A request and a client's retry of it under inference id ``visit`` (the same body, 9 s later unless ``later``
    says otherwise): its first copy's event id, the copy kept's, and their capture objects."""
    when = datetime(2026, 9, 1, 10, tzinfo=timezone.utc)
    first, kept_copy = new_event_id(when), new_event_id(when)
    body = {"edad": 71, "temperatura": 38.5}
    return first, kept_copy, _capture(lake, (first, visit, body, when),
                                      (kept_copy, visit, body, when.replace(**(later or {"second": 9}))))


def _confirm(lake: DataLake, event_id: str, diagnosis: str, day: int) -> None:
    store_feedback(lake, ENDPOINT, parse_feedback({"event_id": event_id, "diagnosis": diagnosis}, None),
                   now=datetime(2026, 10, day, tzinfo=timezone.utc))


def _labels(lake: DataLake, result) -> dict[str, str]:
    fed = _fed(lake, "mi_hospital", "paciente", result.version)
    return dict(zip(fed["paciente"], fed["gravedad"]))


@pytest.mark.parametrize(("corrected_under", "visit"), [("inference-id", "visita-1"),
                                                         ("earlier-copy", "visita 1/Ñ#@")])  # any printable text
def test_a_correction_under_another_name_of_the_patient_after_the_capture_expired_wins(lake, corrected_under, visit):
    # Confirmed by the event id of the copy kept, corrected after the capture expired under the inference id (the
    # doctors' app on SageMaker) or the earlier copy's event id: the correction was "no captured request", and the
    # superseded diagnosis went on training the model. SageMaker takes any printable text for an inference id: a
    # record naming one that does not look like an event id could not be read back.
    first, kept_copy, _ = _retried(lake, visit)
    _confirm(lake, kept_copy, "leve", 1)
    assert _labels(lake, feedback_dataset(lake, ENDPOINT)) == {f"FB-{kept_copy}": "leve"}
    assert _kept(lake, ENDPOINT, kept_copy)[PATIENT]["names"] == sorted([first, visit])
    _expire_capture(lake)
    _confirm(lake, visit if corrected_under == "inference-id" else first, "grave", 2)
    after = feedback_dataset(lake, ENDPOINT)
    assert _labels(lake, after) == {f"FB-{kept_copy}": "grave"}
    assert dict(after.skipped.counts) == {SAME_PATIENT: 1} and after.from_kept == 1


def test_an_inference_id_two_captured_requests_carry_names_neither_whatever_was_kept(lake):
    # A client reusing "visita-1": the first fold kept its only request's record in the id's feedback object; once a
    # second request carried the id, feedback under it joined the first request silently, both still captured.
    when = datetime(2026, 9, 1, 10, tzinfo=timezone.utc)
    young, old = new_event_id(when), new_event_id(when)
    _capture(lake, (young, "visita-1", {"edad": 30, "temperatura": 36.6}, when))
    _confirm(lake, "visita-1", "leve", 1)
    assert _labels(lake, feedback_dataset(lake, ENDPOINT)) == {f"FB-{young}": "leve"}
    _capture(lake, (old, "visita-1", {"edad": 80, "temperatura": 40.2}, when.replace(minute=30)))
    _confirm(lake, "visita-1", "grave", 2)
    with pytest.raises(NothingToFold) as refused:
        feedback_dataset(lake, ENDPOINT)
    assert dict(refused.value.skipped.counts) == {AMBIGUOUS: 1}


def test_a_retried_request_whose_kept_copy_expired_first_is_one_patient_with_the_latest_diagnosis(lake):
    # S3 expires objects by their own dates: the kept (later) copy's object may go first. The fold then counted the
    # earlier copy as a patient of its own, beside the kept record: two rows, opposite labels, for good.
    first, kept_copy, objects = _retried(lake, "visita-1")
    _confirm(lake, first, "leve", 1)
    _confirm(lake, kept_copy, "grave", 2)
    assert _labels(lake, feedback_dataset(lake, ENDPOINT)) == {f"FB-{kept_copy}": "grave"}
    lake.delete(objects[kept_copy])
    partly = feedback_dataset(lake, ENDPOINT)
    assert _labels(lake, partly) == {f"FB-{kept_copy}": "grave"} and partly.records_kept == 0
    _expire_capture(lake)
    assert _labels(lake, feedback_dataset(lake, ENDPOINT)) == {f"FB-{kept_copy}": "grave"}


def test_feedback_on_the_earlier_copy_alone_confirms_the_retried_request(lake):
    # A dataset of one's own read only the requests feedback named, then moved the earlier copy's feedback onto the
    # copy kept, which it had not read: "no captured request" (the built-in cohort's retraining used it).
    first, kept_copy, _ = _retried(lake, "visita-1")
    _confirm(lake, first, "grave", 1)
    assert _labels(lake, feedback_dataset(lake, ENDPOINT)) == {f"FB-{kept_copy}": "grave"}


def test_a_retraining_for_a_window_uses_the_kept_records_of_its_window_only(lake):
    when = datetime(2026, 9, 1, 10, tzinfo=timezone.utc)
    early, late = new_event_id(when), new_event_id(when)
    _capture(lake, (early, None, {"edad": 40}, when), (late, None, {"edad": 50}, when.replace(day=5)))
    _confirm(lake, early, "leve", 1)
    _confirm(lake, late, "grave", 1)
    assert feedback_dataset(lake, ENDPOINT).feedback_rows == 2  # unwindowed: both kept
    windowed = feedback_dataset(lake, ENDPOINT, end=when.replace(day=3))
    assert _labels(lake, windowed) == {f"FB-{early}": "leve"}  # it said 2, the later one "from the kept record"
    assert windowed.from_kept == 0


def test_a_kept_cohort_record_of_the_wrong_kind_is_named_not_a_crash(tmp_path, cohort):  # noqa: F811  (fixture)
    # A hand-edited kept record ('abc' for an age, a lone surrogate) ended `monitor --retrain` in a traceback, and
    # nobody's feedback was folded; a record too large is not kept.
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    events = confirmed_cohort(lake, cohort, "diagnosa", 4, tmp_path / "spool")
    assert feedback_dataset(lake, "diagnosa").records_kept == 4
    _expire_capture(lake)
    for event, change in zip(events, ({"age": "abc"}, {"symptoms": 7}, {"sex": "\ud800"})):
        key = feedback_key("diagnosa", event)
        body = json.loads(lake.get_bytes(key))
        body[PATIENT]["record"].update(change)
        lake.put_bytes(key, json.dumps(body).encode())  # the surrogate as JSON's escape, as a file can hold it
    result = feedback_dataset(lake, "diagnosa")
    assert result.feedback_rows == 1 and result.from_kept == 1 and result.kept_unreadable == 1
    wrong = "the patient's record its feedback object keeps is not one retraining wrote"
    assert dict(result.skipped.counts) == {f"{wrong} (age: str)": 1, f"{wrong} (symptoms: int)": 1,
                                           "no captured request for this event id": 1}
    assert "1 feedback object(s) keep a patient record that cannot be read" in result.summary()


def test_a_captured_record_too_large_is_not_kept(lake):
    (event,) = [new_event_id()]
    _capture(lake, (event, None, {"edad": 50, "temperatura": "3" * (MAX_KEPT_BYTES + 1)}, datetime.now(timezone.utc)))
    _confirm(lake, event, "grave", 1)
    result = feedback_dataset(lake, ENDPOINT)
    assert result.not_keepable == 1 and result.records_kept == 0 and PATIENT not in _kept(lake, ENDPOINT, event)
    assert KeptPatient.from_dict({"event_id": event, "row": 0, "patients": 1, "inference_time": None, "names": [],
                                  "record": {"nota": "x" * MAX_KEPT_BYTES}}) is None
    newer = {"event_id": event, "row": 0, "patients": 1, "inference_time": None, "names": [], "record": {}, "more": 1}
    assert KeptPatient.from_dict(newer) == KeptPatient(event, 0, 1, None, {})  # a newer version's field passed over


# ------------------------------------------------------------------------------------------------ a second probe's

@pytest.mark.parametrize("confirmed_on", ["kept-copy", "earlier-copy"])
def test_a_retried_request_whose_earlier_copy_expires_first_is_read_then_kept_with_both_names(lake, confirmed_on):
    # Expiry in its usual order (the earlier copy first) with a retraining between: the record was rewritten from the
    # capture left, without the earlier copy's id, and a correction under it was dropped again; and a feedback on
    # the earlier copy was "no captured request" while the copy kept was still captured.
    first, kept_copy, objects = _retried(lake, "v-2")
    confirmed, other = (kept_copy, first) if confirmed_on == "kept-copy" else (first, kept_copy)
    _confirm(lake, confirmed, "leve", 1)
    feedback_dataset(lake, ENDPOINT)
    lake.delete(objects[first])
    between = feedback_dataset(lake, ENDPOINT)
    assert _labels(lake, between) == {f"FB-{kept_copy}": "leve"}
    assert between.from_kept == 0 and between.records_kept == 0  # the kept copy is still captured: read, not kept
    assert _kept(lake, ENDPOINT, confirmed)[PATIENT]["names"] == sorted([first, "v-2"])
    _expire_capture(lake)
    _confirm(lake, other, "grave", 2)
    assert _labels(lake, feedback_dataset(lake, ENDPOINT)) == {f"FB-{kept_copy}": "grave"}


def test_a_retraining_for_a_window_never_rewrites_a_record_from_its_part_of_the_capture(lake):
    first, kept_copy, _ = _retried(lake, "v-3", minute=30)
    _confirm(lake, first, "leve", 1)
    feedback_dataset(lake, ENDPOINT)
    kept = _kept(lake, ENDPOINT, first)[PATIENT]
    assert kept["event_id"] == kept_copy
    windowed = feedback_dataset(lake, ENDPOINT, end=datetime(2026, 9, 1, 10, 10, tzinfo=timezone.utc))  # the first copy alone
    assert windowed.records_kept == 0 and _kept(lake, ENDPOINT, first)[PATIENT] == kept  # it flipped to the first


def test_a_captured_value_json_cannot_hold_is_not_kept_and_crashes_nothing(lake):
    # A capture line holding NaN (Python's JSON writes and reads it): every retraining crashed on keeping it.
    (event,) = [new_event_id()]
    with DataCapture(lake, ENDPOINT, flush_seconds=0.05) as capture:
        assert capture.record(event, None, b'{"edad": NaN, "temperatura": 37.0}', "application/json", ANSWER_OF[1],
                              "application/json", datetime.now(timezone.utc))
        assert capture.flush()
    _confirm(lake, event, "grave", 1)
    result = feedback_dataset(lake, ENDPOINT)
    assert result.not_keepable == 1 and result.records_kept == 0 and result.feedback_rows == 1


def test_an_inference_id_given_again_to_another_patient_names_neither_and_keeps_the_first_record(lake):
    # R1 under "v-4" confirmed and kept; R1 expires; R2, another patient, is captured under "v-4". The doctor's
    # diagnosis of R1 trained on R2's data, and R1's record was overwritten for good.
    when = datetime(2026, 9, 1, 10, tzinfo=timezone.utc)
    r1, r2 = new_event_id(when), new_event_id(when)
    _capture(lake, (r1, "v-4", {"edad": 30, "temperatura": 36.6}, when))
    _confirm(lake, "v-4", "leve", 1)
    feedback_dataset(lake, ENDPOINT)
    _expire_capture(lake)
    _capture(lake, (r2, "v-4", {"edad": 80, "temperatura": 40.2}, when.replace(month=11)))
    with pytest.raises(NothingToFold) as refused:
        feedback_dataset(lake, ENDPOINT)
    assert dict(refused.value.skipped.counts) == {AMBIGUOUS: 1}
    assert _kept(lake, ENDPOINT, "v-4")[PATIENT]["event_id"] == r1


def test_two_kept_records_claiming_one_name_make_it_name_neither(lake):
    when = datetime(2026, 9, 1, 10, tzinfo=timezone.utc)
    r1, r2 = new_event_id(when), new_event_id(when)
    _capture(lake, (r1, "v-5", {"edad": 30}, when))
    _confirm(lake, r1, "leve", 1)
    feedback_dataset(lake, ENDPOINT)
    _expire_capture(lake)
    _capture(lake, (r2, "v-5", {"edad": 80}, when.replace(month=11)))
    _confirm(lake, r2, "grave", 2)
    feedback_dataset(lake, ENDPOINT)  # r2's record names v-5 too
    _expire_capture(lake)
    _confirm(lake, "v-5", "leve", 3)
    result = feedback_dataset(lake, ENDPOINT)
    assert _labels(lake, result) == {f"FB-{r1}": "leve", f"FB-{r2}": "grave"} and result.skipped.counts[AMBIGUOUS] == 1


def test_an_object_written_under_another_spelling_of_its_id_keeps_its_record(lake):
    # Written through the Python API with a UUID in capitals (the route, the CLI and files write it lower case): the
    # record was written to the key the lower-case id makes, which did not exist, so never kept.
    (event,) = [new_event_id()]
    _capture(lake, (event, None, {"edad": 50}, datetime.now(timezone.utc)))
    store_feedback(lake, ENDPOINT, Feedback(event_id=event.upper(), diagnosis="grave"))
    assert feedback_dataset(lake, ENDPOINT).records_kept == 1
    assert _kept(lake, ENDPOINT, event.upper())[PATIENT]["event_id"] == event


def test_a_record_the_reader_would_refuse_is_never_written(lake):
    # A request with a dict in a field was kept, then refused on every read ("cannot be read", every fold).
    (event,) = [new_event_id()]
    _capture(lake, (event, None, {"edad": 50, "temperatura": {"valor": 37}}, datetime.now(timezone.utc)))
    _confirm(lake, event, "grave", 1)
    with pytest.raises(NothingToFold):  # its row refused too: no cell holds a dict
        feedback_dataset(lake, ENDPOINT)
    assert PATIENT not in _kept(lake, ENDPOINT, event) and read_feedback(lake, ENDPOINT).unreadable_kept == 0
