"""The feedback joins at scale (monitoring/traffic.py ``event_rows``, quality.py ``join_feedback``, retrain.py
``feedback_records``) give what a straightforward computation gives: each feedback's captured patient found by a
filter over the whole table, each table row read field by field with ``FieldNames.read`` and ``_coerce``. The lake is
generated: retried requests, an event captured twice, requests of several patients (one holding a record that is no
JSON object), CSV requests, field names written with spaces, wrong types, another model version's answers; feedback
by event_row, without one for a request of several, beyond the request, on a retried copy, for events never
captured, with a label the model does not have. Behaviour only: the benchmark (benchmarks/bench_monitor.py) times it."""
from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest

from diagnosa.data.physiology import LABS
from diagnosa.data.schema import FieldNames
from diagnosa.labels import CATEGORIES
from diagnosa.lake import DataLake
from inference.capture import capture_line, decode_payload, read_capture
from inference.feedback import NO_ROW, SAME_PATIENT, Feedback, confirmed_patients, parse_feedback, read_feedback, store_feedback
from monitoring.quality import NOT_A_LABEL, OTHER_MODEL_FEEDBACK, join_feedback
from monitoring.retrain import FEEDBACK_ID_PREFIX, KINDS, RECORD_FIELDS, _in_order, _number, feedback_patient, feedback_records
from monitoring.traffic import DUPLICATE, RETRIED, Skipped, _coerce, event_rows, read_traffic, request_records

ENDPOINT = "diagnosa"
START = datetime(2026, 11, 27, 8, tzinfo=timezone.utc)
NOT_CAPTURED = "feedback for an event id not captured in this window"
NOT_AN_OBJECT = "the confirmed patient's captured record is not a JSON object"


def _patient(rng: random.Random, number: int) -> dict[str, Any]:
    record: dict[str, Any] = {"patient_id": f"P-{number}", "age": rng.choice([rng.randint(1, 95), 40.5, None]),
                              "sex": rng.choice(["F", "M", " F ", ""]), "temperature_c": round(rng.uniform(36, 40), 1),
                              "heart_rate_bpm": rng.choice([rng.randint(50, 140), True, "fast"]),
                              "symptoms": rng.choice([["HP:0001945"], [], "HP:0001945", ["HP:0002094", 3]]),
                              "crp_mg_l": rng.choice([12.5, None, 80])}
    if rng.random() < 0.3:
        record[" spo2_pct "] = rng.randint(85, 100)  # a field name written with spaces: the field spo2_pct
    if rng.random() < 0.1:
        record["age "] = 99  # given twice (once with spaces): the later one is dropped
    return record


def _answer(rng: random.Random, count: int, version: str) -> bytes:
    return json.dumps({"predictions": [{"category": rng.choice(CATEGORIES), "model_version": version}
                                       for _ in range(count)]}).encode()


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> DataLake:
    rng = random.Random(20261127)
    lake = DataLake.from_uri(str(tmp_path_factory.mktemp("scale") / "lake"))
    lines: list[dict[str, Any]] = []
    sent: list[tuple[str, str | None, bytes, str, bytes, int]] = []  # event, inference id, body, type, answer, patients
    patients = 0
    for i in range(400):
        when = START + timedelta(seconds=7 * i)
        if sent and rng.random() < 0.12:  # a client's retry of a recent request: one patient, scored twice
            _, inference_id, body, content_type, answer, count = sent[-rng.randint(1, min(8, len(sent)))]
        else:
            kind = rng.random()
            if kind < 0.15:
                count = rng.choice((2, 3))
                records: list[Any] = [_patient(rng, patients + n) for n in range(count)]
                if rng.random() < 0.3:
                    records[-1] = 7  # no JSON object: its row is left out of the table
                body, content_type = json.dumps({"instances": records}).encode(), "application/json"
            elif kind < 0.22:
                count = 2
                body = f"age,sex,temperature_c\n{rng.randint(1, 90)},F,38.1\n,M, \n".encode()
                content_type = "text/csv"
            else:
                count = 1
                body, content_type = json.dumps(_patient(rng, patients)).encode(), "application/json"
            patients += count
            inference_id = f"visit-{i}" if rng.random() < 0.9 else None
            answer = _answer(rng, count, "8" if rng.random() < 0.05 else "7")
        event_id = f"ev-{i:05d}"
        lines.append(capture_line(event_id, inference_id, body, content_type, answer, "application/json", when))
        sent.append((event_id, inference_id, body, content_type, answer, count))
    duplicated = lines[10]  # shipped twice: in an object of its own too
    hours: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        hours.setdefault(line["eventMetadata"]["inferenceTime"][:13], []).append(line)
    for hour, events in hours.items():
        day, h = hour.split("T")
        lake.put_bytes(f"capture/{ENDPOINT}/AllTraffic/{day.replace('-', '/')}/{h}/00-00-000-a.jsonl",
                       "".join(json.dumps(e) + "\n" for e in events).encode())
    lake.put_bytes(f"capture/{ENDPOINT}/AllTraffic/2026/11/27/08/59-00-000-b.jsonl", (json.dumps(duplicated) + "\n").encode())

    def store(body: dict[str, Any], n: int, labels: Any = CATEGORIES) -> None:
        store_feedback(lake, ENDPOINT, parse_feedback(body, labels), now=START + timedelta(days=1, seconds=n))

    n = 0
    for event_id, _, _, _, _, count in sent:
        n += 1
        if rng.random() < 0.6:
            body: dict[str, Any] = {"event_id": event_id, "diagnosis": rng.choice(CATEGORIES)}
            choice = rng.random()
            if count > 1 and choice < 0.8:
                body["event_row"] = rng.randrange(count)
            elif choice < 0.1:
                body["event_row"] = count  # beyond the request
            elif count == 1 and choice < 0.2:
                store({**body, "event_row": 0}, n)  # the only patient once with row 0, once without
            if rng.random() < 0.1:
                body["disease_id"] = rng.choice(("ORPHA:558", "OMIM:154700"))
            store(body, n + 10_000)
    for k in range(15):
        store({"event_id": f"never-captured-{k}", "diagnosis": "NO ENFERMO"}, 20_000 + k)
    store({"event_id": sent[3][0], "diagnosis": "marihuana"}, 30_000, ["marihuana"])  # no label of the model's
    return lake


def _reference_rows(lake: DataLake, traffic_rows: pd.DataFrame, kinds: dict[str, str]) -> tuple[pd.DataFrame, Counter]:
    """The table's rows recomputed record by record from the captured requests, as dicts, with the type errors."""
    requests = {}
    for event in read_capture(lake, ENDPOINT).events:
        data = event["captureData"]["endpointInput"]
        requests[event["eventMetadata"]["eventId"]] = (
            request_records(decode_payload(data), data["observedContentType"]), data["observedContentType"] == "text/csv",
            event["eventMetadata"].get("inferenceTime"))
    names, rows, errors = FieldNames(kinds), [], Counter()
    for event_id, row, patients, predicted in traffic_rows[["event_id", "row", "rows_in_event", "predicted"]].values:
        records, text, when = requests[event_id]
        record = names.read(records[row])[0]
        expected = {"event_id": event_id, "row": row, "rows_in_event": patients, "inference_time": when,
                    "predicted": predicted}
        for name, kind in kinds.items():
            expected[name], ok = _coerce(kind, record.get(name), text)
            errors[name] += not ok
        rows.append(expected)
    return pd.DataFrame(rows, columns=list(traffic_rows.columns)), +errors


def _reference_join(rows: pd.DataFrame, feedback: dict[tuple[str, int | None], Feedback], labels: Any,
                    other_models: dict[str, str], retried: dict[str, str]) -> tuple[list[dict[str, Any]], Skipped]:
    """Each feedback's patient found by filtering the whole table."""
    skipped = Skipped()

    def patients(item: Feedback) -> int | tuple[str, str]:
        if item.diagnosis not in labels:
            return NOT_A_LABEL, f"{item.where}: {item.diagnosis!r}"
        if item.event_id in other_models:
            return OTHER_MODEL_FEEDBACK, f"{item.where}: model version {other_models[item.event_id]}"
        mine = rows[rows["event_id"] == item.event_id]
        return (NOT_CAPTURED, item.where) if mine.empty else int(mine["rows_in_event"].iloc[0])

    joined = []
    kept = [replace(item, event_id=retried.get(item.event_id, item.event_id)) for item in feedback.values()]
    for (event_id, row), item in confirmed_patients(kept, patients, skipped.add).items():
        match = rows[(rows["event_id"] == event_id) & (rows["row"] == row)]
        if len(match) != 1:
            skipped.add(NOT_AN_OBJECT, f"{event_id} row {row}")
            continue
        joined.append({"event_id": event_id, "row": row, "predicted": match["predicted"].iloc[0],
                       "confirmed": item.diagnosis, "orphan": item.orphan, "disease_id": item.disease_id})
    return joined, skipped


def _missing_as_none(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def _reference_records(lake: DataLake) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Skipped]:
    """Retraining's records and lab rows, each patient's row found by filtering the whole table."""
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS)
    rows, skipped, records, labs = traffic.rows, Skipped(), [], []

    def patients(item: Feedback) -> int | tuple[str, str]:
        mine = rows[rows["event_id"] == item.event_id]
        if mine.empty:
            return (f"captured request unusable: {traffic.dropped[item.event_id]}" if item.event_id in traffic.dropped
                    else "no captured request for this event id", item.where)
        return int(mine["rows_in_event"].iloc[0])

    for (event_id, number), item in confirmed_patients([replace(item, event_id=traffic.retried.get(item.event_id, item.event_id))
                                                        for item in _in_order(read_feedback(lake, ENDPOINT).latest)],
                                                       patients,
                                                       skipped.add).items():
        match = rows[(rows["event_id"] == event_id) & (rows["row"] == number)]
        if len(match) != 1:
            skipped.add(NOT_AN_OBJECT, f"{event_id} row {number}")
            continue
        row = match.iloc[0]
        patient_id = f"{FEEDBACK_ID_PREFIX}{feedback_patient(event_id, number, int(row['rows_in_event']))}"
        date = str(row["inference_time"] or "")[:10]
        record = {"patient_id": patient_id, "encounter_date": date}
        for name in RECORD_FIELDS:
            value = _missing_as_none(row[name])  # a missing sex was written as JSON's non-standard NaN
            if KINDS[name] == "numeric":
                value = None if value is None or value != value else _number(value)
            if value is not None or name not in ("age", "sex"):
                record[name] = value
        records.append(record | {"note": item.note or "", "label": item.diagnosis, "disease_id": item.disease_id or "",
                                 "disease_name": "", "is_orphan": bool(item.orphan)})
        lab = {name: _missing_as_none(row[name]) for name in LABS}
        if any(v is not None and v == v for v in lab.values()):
            labs.append({"patient_id": patient_id, "collected_at": date, **lab})
    return records, labs, skipped


def _same(found: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Equal, NaN equal to NaN, and of the same types."""
    assert len(found) == len(expected)
    for got, want in zip(found, expected):
        assert got.keys() == want.keys()
        for key in got:
            a, b = got[key], want[key]
            assert type(a) is type(b) and (a == b or (a != a and b != b)), (key, a, b)


def test_the_lake_holds_every_case_the_joins_must_count(lake):
    # Otherwise the comparisons below would prove little.
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS, model_version="7")
    assert traffic.retried and traffic.other_models and traffic.type_errors
    assert {RETRIED, DUPLICATE, "a patient record is not a JSON object"} <= set(traffic.skipped.counts)
    assert (traffic.rows["rows_in_event"] > 1).any()
    skipped = Skipped()
    join_feedback(traffic.rows, read_feedback(lake, ENDPOINT).latest, skipped, CATEGORIES, traffic.other_models,
                  traffic.retried)
    assert {NOT_A_LABEL, OTHER_MODEL_FEEDBACK, NOT_CAPTURED, NOT_AN_OBJECT, NO_ROW,
            SAME_PATIENT} <= set(skipped.counts)
    assert any(reason.startswith("event_row is not in the captured request") for reason in skipped.counts)


@pytest.mark.parametrize("model_version", [None, "7"])
def test_the_table_is_each_record_read_field_by_field(lake, model_version):
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS, model_version=model_version)
    expected, errors = _reference_rows(lake, traffic.rows, KINDS)
    # The frame a list of dicts makes, dtypes included; the lists are values of the terms columns.
    pd.testing.assert_frame_equal(traffic.rows, expected, check_exact=True)
    assert +traffic.type_errors == errors


@pytest.mark.parametrize("model_version", [None, "7"])
@pytest.mark.parametrize("labels", [CATEGORIES, None])
def test_join_feedback_finds_each_patient_as_a_filter_over_the_table_does(lake, model_version, labels):
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS, model_version=model_version)
    feedback = read_feedback(lake, ENDPOINT).latest
    skipped = Skipped()
    joined = join_feedback(traffic.rows, feedback, skipped, labels, traffic.other_models, traffic.retried)
    known = set(labels or {item.diagnosis for item in feedback.values()})  # None: every label is the model's
    expected, expected_skipped = _reference_join(traffic.rows, feedback, known, traffic.other_models, traffic.retried)
    assert len(joined) > 100
    _same(joined.to_dict("records"), pd.DataFrame(expected, columns=list(joined.columns)).to_dict("records"))
    assert skipped.counts == expected_skipped.counts and skipped.examples == expected_skipped.examples


def test_feedback_records_are_each_patient_found_as_a_filter_over_the_table_finds_it(lake):
    records, labs, skipped = feedback_records(lake, ENDPOINT)
    expected, expected_labs, expected_skipped = _reference_records(lake)
    assert len(records) > 100 and labs
    _same(records, expected)
    _same(labs, expected_labs)
    assert skipped.counts == expected_skipped.counts and skipped.examples == expected_skipped.examples
    # The monitor, judging every version's answers and every label as retraining does, confirms the same patients.
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS)
    joined = join_feedback(traffic.rows, read_feedback(lake, ENDPOINT).latest, Skipped(), None, {}, traffic.retried)
    index = event_rows(traffic.rows)
    assert sorted(FEEDBACK_ID_PREFIX + feedback_patient(event_id, row, index[event_id][0])
                  for event_id, row in zip(joined["event_id"], joined["row"])) == sorted(r["patient_id"] for r in records)


@pytest.mark.parametrize("model_version", [None, "7"])
def test_a_window_reads_the_feedback_of_the_ids_its_traffic_names_and_joins_it_as_reading_all_did(lake, model_version):
    # The event ids name no time (as SageMaker's): the monitor read all of history's feedback for every window.
    class Counting:
        def __init__(self, storage: Any) -> None:
            self.storage, self.fetched = storage, []

        def get_bytes(self, key: str) -> bytes:
            self.fetched.append(key)
            return self.storage.get_bytes(key)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.storage, name)

    start, end = START + timedelta(minutes=10), START + timedelta(minutes=30)
    traffic = read_traffic(lake, ENDPOINT, start, end, KINDS, model_version=model_version)
    ids = traffic.feedback_ids()
    storage = Counting(lake.storage)
    windowed = read_feedback(DataLake(storage), ENDPOINT, (start, end), ids=ids)
    everything = read_feedback(lake, ENDPOINT)
    objects = lake.list(f"feedback/{ENDPOINT}/")
    named = [key for key in objects if key.split("/")[3].removesuffix(".json") in ids]
    assert 0 < len(named) < len(objects) // 2
    assert sorted(storage.fetched) == sorted(named)  # nothing else was fetched
    assert (windowed.not_named, windowed.outside) == (len(objects) - len(named), 0)
    assert windowed.latest == {patient: item for patient, item in everything.latest.items() if patient[0] in ids}
    # Joined, it confirms the same patients as all the feedback did; only what was left unread is no longer counted.
    found, expected = Skipped(), Skipped()
    joined = join_feedback(traffic.rows, windowed.latest, found, CATEGORIES, traffic.other_models, traffic.retried,
                           traffic.by_inference)
    reference = join_feedback(traffic.rows, everything.latest, expected, CATEGORIES, traffic.other_models,
                              traffic.retried, traffic.by_inference)
    assert len(joined) > 20
    pd.testing.assert_frame_equal(joined, reference)
    assert SAME_PATIENT in found.counts and (OTHER_MODEL_FEEDBACK in found.counts) == bool(model_version)
    assert any(event_id in traffic.retried for event_id, _ in windowed.latest)  # a retried copy's feedback
    unread = {NOT_CAPTURED, NOT_A_LABEL}  # what feedback of an event not in the window was counted under
    assert {r: c for r, c in found.counts.items() if r not in unread} == {
        r: c for r, c in expected.counts.items() if r not in unread}
    assert expected.counts[NOT_CAPTURED] > found.counts[NOT_CAPTURED]


def test_whole_numbers_are_a_column_of_floats_as_every_other_number(tmp_path):
    # A request's ages all whole numbers: still the monitor's floats, not integers (the baseline's statistics are).
    lake = DataLake.from_uri(str(tmp_path / "lake"))
    lines = [capture_line(f"ev-{i}", None, json.dumps({"age": age, "sex": "F", " spo2_pct": 97}).encode(),
                          "application/json", _answer(random.Random(i), 1, "7"), "application/json",
                          START + timedelta(seconds=i)) for i, age in enumerate((40, 71, 3))]
    lake.put_bytes(f"capture/{ENDPOINT}/AllTraffic/2026/11/27/08/00-00-000-a.jsonl",
                   "".join(json.dumps(line) + "\n" for line in lines).encode())
    traffic = read_traffic(lake, ENDPOINT, None, None, KINDS)
    assert traffic.rows["age"].tolist() == [40.0, 71.0, 3.0] and traffic.rows["age"].dtype == "float64"
    assert traffic.rows["spo2_pct"].tolist() == [97.0] * 3
    pd.testing.assert_frame_equal(traffic.rows, _reference_rows(lake, traffic.rows, KINDS)[0], check_exact=True)


def test_event_rows_reads_each_event_once_and_a_row_listed_twice_names_no_patient():
    rows = pd.DataFrame({"event_id": ["m", "m", "s", "m", "d", "d"], "row": [0, 1, 0, 2, 0, 0],
                         "rows_in_event": [3, 3, 1, 3, 1, 1], "predicted": ["a", "b", "c", "d", "e", "f"]},
                        index=[10, 11, 12, 13, 14, 15])  # positions, not labels
    assert event_rows(rows) == {"m": (3, {0: 0, 1: 1, 2: 3}), "s": (1, {0: 2}), "d": (1, {0: None})}
    assert event_rows(rows.iloc[:0]) == {} and event_rows(pd.DataFrame()) == {}
    skipped = Skipped()
    feedback = {(e, None): parse_feedback({"event_id": e, "diagnosis": "NO ENFERMO"}) for e in ("s", "d")}
    joined = join_feedback(rows, feedback, skipped)
    assert joined[["event_id", "predicted"]].values.tolist() == [["s", "c"]]
    assert dict(skipped.counts) == {NOT_AN_OBJECT: 1}
