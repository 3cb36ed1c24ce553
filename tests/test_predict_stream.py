"""`diagnosa predict` on large and bad input: read as a stream, sent in requests of 100, every record answered
or refused (never lost), the problems counted by kind with each kind's first occurrence, the full list in a file.
Against the real local endpoint over loopback."""
from __future__ import annotations

import io
import json
import os

import pytest
from test_client import sagemaker_fixture  # noqa: F401  (the fixture "sagemaker": SageMaker's runtime)

from diagnosa.cli import main
from inference import bulk
from inference.bulk import (
    PREDICT_CHUNK,
    Answered,
    InputRecord,
    PredictionsDocument,
    ProblemSummary,
    Refused,
    predict_stream,
    problem_kind,
    read_records,
)
from inference.client import DiagnosaClient, PredictionRejected
from inference.limits import MAX_BODY_BYTES, MAX_LISTED_PROBLEMS


@pytest.fixture()
def endpoint(local_endpoint):
    return local_endpoint


@pytest.fixture()
def client(endpoint):
    return DiagnosaClient("diagnosa", endpoint_url=endpoint.url)


@pytest.mark.parametrize("field, problem, kind", [
    ("age", "impossible value -1 (possible range 0 to 120 years)", "age: impossible value"),
    ("crp_mg_l", "expected a number, got 'high'", "crp_mg_l: expected a number"),
    ("symptoms", "unknown HPO term 'HP:9999999'", "symptoms: unknown HPO term"),
    ("bed", "unknown field (accepted: patient_id, age)", "bed: unknown field"),
    (None, "the record has none of the model's input fields", "the record has none of the model's input fields"),
    (None, "not JSON: Expecting value", "not JSON"),
])
def test_a_problems_kind_is_its_field_and_the_words_before_any_value(field, problem, kind):
    assert problem_kind(field, problem) == kind


class LinesOnly(io.StringIO):
    """A stream that may be iterated line by line but not read whole: what streaming input means."""

    def read(self, *args):  # noqa: ARG002
        raise AssertionError("the whole input was read at once")


def test_json_lines_and_csv_are_read_as_streams_and_bad_lines_become_problems():
    records, header = read_records(LinesOnly('{"age": 50}\n\n{"age": \n[1]\n'), "jsonl", "x.jsonl")
    assert header is None
    assert list(records) == [InputRecord("line 1", {"age": 50}),
                             InputRecord("line 3", problem="not JSON: Expecting value at character 10"),
                             InputRecord("line 4", [1])]
    text = "\ufeffpatient_id,age,sex\nA,50,F\n\nB,60\nC,1,2,3\n"
    records, header = read_records(LinesOnly(text), "csv", "x.csv")
    assert header == ["patient_id", "age", "sex"]
    assert list(records) == [InputRecord("line 2", {"patient_id": "A", "age": "50", "sex": "F"}),
                             InputRecord("line 4", problem="fewer cells than the header has fields (2, the header 3): "
                                                           "a row is never padded, nor cut where a cell holds something"),
                             InputRecord("line 5", problem="more cells than the header has fields (4, the header 3): "
                                                           "a row is never padded, nor cut where a cell holds something")]
    with pytest.raises(ValueError, match="x.csv has no header row"):
        read_records(io.StringIO(""), "csv", "x.csv")
    for empty in ("", "\ufeff \n"):  # it was "x.json is not valid JSON: Expecting value at line 1"
        with pytest.raises(ValueError, match=r"^x.json: no patient records in the input \(it is empty\)$"):
            read_records(io.StringIO(empty), "json", "x.json")
    # A spreadsheet's export: its header's trailing columns without a name (empty in every row) are not fields, and
    # its formatted empty rows are skipped, as ingestion reads the file; text under such a column is named.
    records, header = read_records(LinesOnly("patient_id,age,,\nA,50,,\n,,,\n , ,\nB,60,,x\n"), "csv", "x.csv")
    assert header == ["patient_id", "age"]
    assert list(records) == [InputRecord("line 2", {"patient_id": "A", "age": "50"}),
                             InputRecord("line 5", problem="text under column 4 of the header, which has no name "
                                                           "('x'): name the column or delete what is under it")]
    with pytest.raises(ValueError, match="^x.csv: column 2 of the header has no name: name it or delete it$"):
        read_records(io.StringIO("patient_id,,age\nA,1,50\n"), "csv", "x.csv")
    # Documents that json cannot read name the file and what is wrong; a byte-order mark is read past.
    deep = "[" * 100_000 + "]" * 100_000
    for text, problem in ((deep, "nested too deeply"), ('{"age": 1' + "0" * 5000 + "}",
                                                         r"a number with too many digits \(over 4,300\)")):
        with pytest.raises(ValueError, match=f"^x.json is not JSON this reads: {problem}$"):
            read_records(io.StringIO(text), "json", "x.json")
        records, _ = read_records(io.StringIO(text + "\n"), "jsonl", "x.jsonl")
        assert list(records) == [InputRecord("line 1", problem=f"not JSON: {problem}".replace("\\", ""))]
    assert [r.record for r in read_records(io.StringIO('\ufeff{"age": 50}'), "json", "x.json")[0]] == [{"age": 50}]
    assert [r.record for r in read_records(io.StringIO('\ufeff{"age": 50}\n'), "jsonl", "x.jsonl")[0]] == [{"age": 50}]
    # A document is read whole, so it is bounded (/dev/zero filled 23 GB): over the bound, JSON Lines is the way.
    endless = io.StringIO(" " * (bulk.MAX_JSON_DOCUMENT_CHARS + 1))
    with pytest.raises(ValueError, match="x.json is over 64 MiB: a JSON document is read whole; write it as JSON Lines"):
        read_records(endless, "json", "x.json")
    # A spreadsheet's ';'-separated export is named for what it is, before any request is sent.
    with pytest.raises(ValueError, match="x.csv: the header is one field, 'patient_id;age;sex': the cells look "
                                         "';'-separated; the endpoint reads comma-separated cells"):
        read_records(io.StringIO("patient_id;age;sex\nA;50,5;F\n"), "csv", "x.csv")


def test_a_json_document_is_one_record_a_list_or_instances():
    for text, count in (('{"age": 5}', 1), ('[{"age": 5}, {"age": 6}]', 2), ('{"instances": [{"age": 5}], "top_k": 2}', 1)):
        records, _ = read_records(io.StringIO(text), "json", "p.json")
        assert [r.where for r in records] == [f"record {n}" for n in range(1, count + 1)]
    with pytest.raises(ValueError, match="p.json is not valid JSON: Expecting"):
        read_records(io.StringIO("{nope"), "json", "p.json")


UNREACHABLE = "http://127.0.0.1:9"  # the discard port: a test that sends a request here fails


@pytest.mark.parametrize("name, text, why", [
    ("empty.json", "[]", "it is an empty list"),
    ("instances.json", '{"instances": [], "top_k": 2}', "its instances are an empty list"),
    ("blank.jsonl", "\n  \n", "only blank lines"),
    ("empty.jsonl", "", "it is empty"),
    ("header.csv", "patient_id,age\n\n", "no rows under the header"),
])
def test_input_without_patient_records_is_refused_not_answered_with_nothing(tmp_path, capsys, name, text, why):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", UNREACHABLE]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"diagnosa: error: {path}: no patient records in the input ({why})\n"


def test_an_endpoint_that_cannot_answer_is_exit_status_1_not_bad_input(tmp_path, capsys):
    # Unreachable (or failing, or too slow): the file is fine and the same command sent later may succeed. It was exit
    # status 2, "bad input", as a refused record is, so a script could not tell "fix the file" from "send it again".
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"patient_id": "W1", "age": 67, "sex": "F"}))
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", UNREACHABLE,
                 "--timeout", "2"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("diagnosa: error: could not reach endpoint 'diagnosa'") and err.count("\n") == 1
    assert out == ""
    from diagnosa.data.cohort import CohortConfig, generate, write_raw
    from diagnosa.lake import DataLake

    lake = DataLake.from_uri(str(tmp_path / "ws" / "lake"))
    write_raw(generate(CohortConfig(patients=1000, seed=3)), lake, "b")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", "--batch", "b", "--endpoint-url", UNREACHABLE,
                 "--timeout", "2"]) == 1
    assert "(after 0 patients were answered)" in capsys.readouterr().err


@pytest.mark.parametrize("text, opening", [
    ('[{"age": 50, "sex": "F"}]\n', "["),  # one line: read as a header and no rows, it was answered with nothing
    ('[\n  {"age": 50},\n  {"age": 60}\n]\n', "["),
    ('\ufeff{"age": 50}\n{"age": 60}\n', "{"),
])
def test_json_in_a_csv_file_is_named_for_what_it_is(tmp_path, capsys, text, opening):
    path = tmp_path / "patients.csv"
    path.write_text(text, encoding="utf-8")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", UNREACHABLE]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"diagnosa: error: {path} is read as CSV but looks like JSON (its first line starts "
                                 f"with {opening!r}): give --format json, or --format jsonl for one record per line\n")


def test_a_refused_record_costs_no_other_its_answer(client):
    records = [InputRecord(f"record {i}", {"patient_id": f"P{i}", "age": -1 if i % 3 == 0 else 50, "sex": "F"})
               for i in range(12)]
    outcomes = list(predict_stream(client, records, chunk=5))
    answered = [o.where for o in outcomes if isinstance(o, Answered)]
    refused = [o for o in outcomes if isinstance(o, Refused)]
    assert answered == [f"record {i}" for i in range(12) if i % 3]
    assert [(r.where, r.field) for r in refused] == [(f"record {i}", "age") for i in range(0, 12, 3)]
    assert all(r.kind == "age: impossible value" for r in refused)
    # Each answer is its own record's (the endpoint echoes the id) and names the request that answered it.
    ids = {o.where: o.result["patient_id"] for o in outcomes if isinstance(o, Answered)}
    assert ids == {f"record {i}": f"P{i}" for i in range(12) if i % 3}
    assert all(o.event_id for o in outcomes if isinstance(o, Answered))


def test_every_problem_is_found_when_a_refusal_lists_only_the_first_hundred(client):
    # 60 records with 2 problems each in one request: the endpoint lists 100 and counts the rest.
    bad = [InputRecord(f"line {i}", {"age": -1, "sex": "X"}) for i in range(60)]
    good = [InputRecord(f"line {60 + i}", {"age": 40}) for i in range(40)]
    with pytest.raises(PredictionRejected) as first:
        client.predict([r.record for r in bad + good])
    assert len(first.value.errors) == MAX_LISTED_PROBLEMS and first.value.more_errors == 20
    outcomes = list(predict_stream(client, bad + good, chunk=100))
    refused = [o for o in outcomes if isinstance(o, Refused)]
    assert len(refused) == 120 and {o.where for o in refused} == {f"line {i}" for i in range(60)}
    assert sorted(o.field for o in refused if o.where == "line 49") == ["age", "sex"]  # the one cut in two
    assert [o.where for o in outcomes if isinstance(o, Answered)] == [f"line {i}" for i in range(60, 100)]


def test_a_request_over_the_body_limit_is_split_and_a_record_over_it_refused(client):
    big_id = "x" * 80_000  # 100 such records: 8 MB, over the 6 MB one request may carry
    records = [InputRecord(f"record {i}", {"patient_id": f"{i}-{big_id}", "age": 40}) for i in range(100)]
    outcomes = list(predict_stream(client, records, chunk=100))
    assert [o.where for o in outcomes] == [r.where for r in records] and all(isinstance(o, Answered) for o in outcomes)
    assert len({o.event_id for o in outcomes}) == 2  # two requests of 50
    huge = InputRecord("record 1", {"patient_id": "y" * (MAX_BODY_BYTES + 1), "age": 40})
    [outcome] = predict_stream(client, [huge])
    assert isinstance(outcome, Refused) and "over the 6 MB an endpoint request may carry" in outcome.problem


def test_a_refusal_of_the_request_itself_ends_the_stream(client):
    with pytest.raises(PredictionRejected, match="differential must be"):
        list(predict_stream(client, [InputRecord("record 1", {"age": 40})], differential=99))


def test_answers_are_written_while_the_input_is_still_being_read(client):
    out = io.StringIO()
    document = PredictionsDocument(out)
    seen_when_reading: list[int] = []

    def records():
        for i in range(PREDICT_CHUNK * 2 + 1):
            if i % PREDICT_CHUNK == 0:
                seen_when_reading.append(out.getvalue().count('"patient_id"'))
            yield InputRecord(f"line {i + 1}", {"patient_id": f"S{i}", "age": 30})

    for outcome in predict_stream(client, records()):
        document.add(outcome)
    document.close()
    assert seen_when_reading == [0, PREDICT_CHUNK, 2 * PREDICT_CHUNK]
    parsed = json.loads(out.getvalue())
    assert [p["patient_id"] for p in parsed["predictions"]] == [f"S{i}" for i in range(2 * PREDICT_CHUNK + 1)]
    assert parsed["event_id"] is None and len({p["event_id"] for p in parsed["predictions"]}) == 3


def test_few_problems_are_all_listed_many_are_counted_by_kind_and_written_out(tmp_path):
    few = ProblemSummary(lambda: pytest.fail("a file for two problems"))
    few.add(Refused("line 2", "age", "impossible value -1"))
    few.add(Refused("line 3", None, "not JSON: Expecting value"))
    assert few.lines() == ["  line 2: age: impossible value -1", "  line 3: not JSON: Expecting value"]
    path = tmp_path / "errors.jsonl"
    many = ProblemSummary(lambda: open(path, "w", encoding="utf-8"))
    for i in range(30):
        many.add(Refused(f"line {i + 2}", "bed", "unknown field (accepted: age)"))
    many.add(Refused("line 40", "age", "impossible value 999 (possible range 0 to 120 years)"))
    many.close()
    assert many.lines() == ["by kind, with its first occurrence:",
                            "       30  bed: unknown field", "           line 2: bed: unknown field (accepted: age)",
                            "        1  age: impossible value",
                            "           line 40: age: impossible value 999 (possible range 0 to 120 years)"]
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 31 and lines[0] == {"where": "line 2", "field": "bed", "problem": "unknown field (accepted: age)"}


def _csv_with_bad_rows(path, rows):
    lines = ["patient_id,age,sex,symptoms"]
    for i in range(rows):
        age = -5 if i % 10 == 3 else 20 + i % 60
        symptoms = "HP:9999999" if i % 25 == 7 else "HP:0001945"
        lines.append(f"R{i},{age},{'MF'[i % 2]},{symptoms}")
    path.write_text("\n".join(lines) + "\nR-extra,1,F,HP:0001945,surplus\n", encoding="utf-8")


def test_predict_a_large_bad_csv_answers_the_rest_and_summarises_the_problems(endpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "in" / "ward.csv"
    source.parent.mkdir()
    _csv_with_bad_rows(source, 1_000)
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(source), "--endpoint-url", endpoint.url]) == 2
    out, err = capsys.readouterr()
    answered = json.loads(out)["predictions"]
    bad_age = {f"R{i}" for i in range(1_000) if i % 10 == 3}
    bad_symptoms = {f"R{i}" for i in range(1_000) if i % 25 == 7}
    assert {p["patient_id"] for p in answered} == {f"R{i}" for i in range(1_000)} - bad_age - bad_symptoms
    refused = len(bad_age | bad_symptoms) + 1
    assert err.startswith(f"diagnosa: error: {refused} of 1,001 patient record(s) of {source} refused "
                          f"({len(bad_age) + len(bad_symptoms) + 1} problem(s)); the other {len(answered)} answered")
    assert f"      {len(bad_age)}  age: impossible value\n           line 5: age: impossible value -5" in err
    assert f"       {len(bad_symptoms)}  symptoms: unknown HPO term\n           line 9: symptoms:" in err
    assert "        1  more cells than the header has fields\n           line 1002:" in err
    errors_file = tmp_path / "ward.csv.errors.jsonl"  # in the current folder, not beside the input
    assert f"every problem, one JSON line each: {errors_file}" in err and len(err) < 2_000
    listed = [json.loads(line) for line in errors_file.read_text(encoding="utf-8").splitlines()]
    assert len(listed) == refused and {p["where"] for p in listed} == {f"line {int(r[1:]) + 2}" for r in
                                                                        bad_age | bad_symptoms} | {"line 1002"}
    assert not (source.parent / "ward.csv.errors.jsonl").exists()


def test_predict_streams_json_lines_in_requests_of_a_hundred(endpoint, tmp_path, capsys):
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps({"patient_id": f"J{i}", "age": 20 + i % 70}) + "\n" for i in range(250)))
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url]) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert [p["patient_id"] for p in document["predictions"]] == [f"J{i}" for i in range(250)]
    assert document["event_id"] is None and len({p["event_id"] for p in document["predictions"]}) == 3
    assert err == "250 patients answered in 3 requests\n"


def test_one_request_keeps_its_event_id_at_the_top(endpoint, tmp_path, capsys):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"patient_id": "A1", "age": 67}))
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url]) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["event_id"] and document["predictions"][0]["event_id"] == document["event_id"] and not err


def test_a_damaged_local_endpoint_is_the_endpoints_failure_not_bad_input(tmp_path, capsys):
    ws = tmp_path / "ws"
    record = ws / "endpoints" / "diagnosa" / "endpoint.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"EndpointName": "diagnosa", "EndpointStatus": "InSer')  # truncated by a full disk
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"patient_id": "W1", "age": 67}))
    assert main(["--workspace", str(ws), "predict", str(path), "--endpoint-name", "diagnosa"]) == 1
    out, err = capsys.readouterr()
    assert not out and err.startswith("diagnosa: error: the local endpoint diagnosa (workspace ")
    assert "cannot be used: " in err and "`diagnosa endpoint stop diagnosa`" in err and err.count("\n") == 1


def test_without_a_url_the_workspaces_local_endpoint_of_that_name_is_used(endpoint, tmp_path, monkeypatch, capsys):
    from pipelines import local_endpoints

    ws = tmp_path / "ws"
    record = ws / "endpoints" / "diagnosa" / "endpoint.json"  # as `diagnosa run --local` or an approval records it
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"EndpointName": "diagnosa", "EndpointStatus": "InService", "Url": endpoint.url,
                                  "Pid": 4321}))
    monkeypatch.setattr(local_endpoints, "_alive", lambda pid, *_: pid == 4321)  # as if `diagnosa serve` ran as 4321
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"patient_id": "W1", "age": 67}))
    assert main(["--workspace", str(ws), "predict", str(path)]) == 0
    assert [p["patient_id"] for p in json.loads(capsys.readouterr().out)["predictions"]] == ["W1"]
    # Its server gone, the endpoint is named as not running (it used to be asked of SageMaker, without credentials);
    # the endpoint, not the input: exit status 1 as for a SageMaker endpoint that is down (it was 2, "bad input").
    monkeypatch.setattr(local_endpoints, "_alive", lambda *_: False)
    assert main(["--workspace", str(ws), "predict", str(path), "--endpoint-name", "diagnosa"]) == 1
    out, err = capsys.readouterr()
    assert not out and err.startswith(f"diagnosa: error: the local endpoint diagnosa (workspace {ws} (from "
                                      "--workspace)) is not running (OutOfService): `diagnosa endpoint start "
                                      "diagnosa` starts it again; `diagnosa endpoint list`")
    assert err.count("\n") == 1
    # A name no local endpoint has, with no AWS region either: the local ones are named (it asked for AWS credentials).
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert main(["--workspace", str(ws), "predict", str(path), "--endpoint-name", "diagnos"]) == 2
    err = capsys.readouterr().err
    assert "no local endpoint diagnos (" in err and "did you mean diagnosa? (the local endpoints are diagnosa)" in err
    assert err.count("\n") == 1


def test_an_errors_file_that_cannot_be_written_is_named(endpoint, tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps({"age": -1}) + "\n" for _ in range(20)))
    target = tmp_path / "missing" / "errors.jsonl"
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url,
                 "--errors-file", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the list of refused records to {target}: No such file or directory" in err
    assert "--errors-file" in err and err.count("\n") == 1
    # A full disk as it is written: "No space left on device" named no file.
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url,
                 "--errors-file", "/dev/full"]) == 1
    assert ("diagnosa: error: No space left on device: the list of refused records (/dev/full) could not be written "
            "whole: it stops where the disk filled") in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_an_errors_file_that_is_the_input_itself_is_refused_before_it_is_read(endpoint, tmp_path, capsys, suffix):
    # `predict x.json --errors-file x.json` replaced the patients with their problems (a JSON Lines file was cut short
    # as it was read); under another name of the same file too.
    path = tmp_path / f"patients{suffix}"
    records = [{"age": -1}] * 20
    text = json.dumps(records) if suffix == ".json" else "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text)
    os.link(path, tmp_path / "hard-link")
    for errors in (path, tmp_path / "hard-link"):
        assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url,
                     "--errors-file", str(errors)]) == 2
        out, err = capsys.readouterr()
        assert not out and "is the file of patients being read: it would be overwritten" in err and err.count("\n") == 1
        assert path.read_text() == text


def test_a_spreadsheet_export_with_a_byte_order_mark_quoted_header_and_empty_trailing_cells_is_read(endpoint,
                                                                                                   tmp_path, capsys):
    # R's write.csv and Excel: every row had been refused ('"patient_id": unknown field'; 'more cells than the
    # header'), where ingestion reads the same file; a row spanning lines is named by its first line, as ingestion.
    path = tmp_path / "export.csv"
    path.write_bytes(b'\xef\xbb\xbf"patient_id","age","sex"\r\n"A1",67,"M",,\r\n"A2",41,"F"\r\n'
                     b'"A\n3","old","F"\r\n"A4",50,"F",x\r\n')
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", endpoint.url]) == 2
    out, err = capsys.readouterr()
    assert [p["patient_id"] for p in json.loads(out)["predictions"]] == ["A1", "A2"]
    assert "line 4: age:" in err and "line 6: more cells than the header has fields (4, the header 3)" in err
    # The endpoint reads the empty trailing cells alike, and still refuses a cut that would lose a value.
    client = DiagnosaClient(endpoint.endpoint_name, endpoint_url=endpoint.url)
    assert len(client.predict_csv("patient_id,age\nB1,30,,\n").results) == 1
    with pytest.raises(PredictionRejected, match="more cells than the header"):
        client.predict_csv("patient_id,age\nB1,30,x\n")


def test_predict_with_only_a_url_asks_the_server_which_endpoint_it_is(two_label_model_dir, tmp_path, capsys):
    # A dataset's endpoint is not 'diagnosa': the URL `endpoint list` printed was refused as "Endpoint diagnosa of
    # account 000000000000 not found."
    from inference.server import EndpointServer

    path = tmp_path / "one.json"
    path.write_text(json.dumps({"patient_id": "A1", "age": 67}))
    with EndpointServer(str(two_label_model_dir), endpoint_name="ill-or-not") as served:
        served.wait_until_ready()
        assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", served.url]) == 0
        assert json.loads(capsys.readouterr().out)["predictions"][0]["category"] in ("NO ENFERMO", "ENFERMO")
        code = main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-url", served.url,
                     "--endpoint-name", "diagnosa"])
        assert code == 2 and f"--endpoint-name diagnosa, but {served.url} serves endpoint ill-or-not" \
            in capsys.readouterr().err


def test_a_file_that_is_no_utf8_text_is_named_for_what_it_is(endpoint, tmp_path, capsys):
    # A compressed export was told to save it as 'CSV UTF-8', as a cp1252 file is.
    import gzip

    packed, windows = tmp_path / "export.csv.gz", tmp_path / "export.csv"
    packed.write_bytes(gzip.compress(b"age,sex\n40,M\n"))
    windows.write_bytes("age,región\n40,Sur\n".encode("cp1252"))
    for path, says in ((packed, f"{packed} is not a text file: it is gzip-compressed (a .gz file): decompress it "
                                "first (gunzip)"),
                       (windows, f"{windows} is not UTF-8 text (byte 8 of a block read): the endpoint reads UTF-8; a "
                                 "spreadsheet saved on Windows is often cp1252")):
        assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--format", "csv",
                     "--endpoint-url", endpoint.url]) == 2
        assert says in capsys.readouterr().err


def test_a_csv_answered_with_fewer_predictions_than_rows_loses_no_patient_silently(tmp_path, capsys, sagemaker):
    # zip(records, predictions) stopped at the shorter: a patient went without an answer, and the command said 0.
    from test_client import ANSWER, answering

    sagemaker(answering(ANSWER))
    path = tmp_path / "patients.csv"
    path.write_text("patient_id,age\nA1,50\nA2,60\n", encoding="utf-8")
    assert main(["--workspace", str(tmp_path / "ws"), "predict", str(path), "--endpoint-name", "diagnosa", "--region",
                 "eu-west-1", "--errors-file", str(tmp_path / "errors.jsonl")]) == 1
    out, err = capsys.readouterr()
    assert "answered 1 prediction for 2 patients" in err and out == ""
    # Without the count, the client counts a CSV's rows as the endpoint does: blank ones (',,') are none.
    client = DiagnosaClient("diagnosa", region="eu-west-1", max_attempts=1)
    assert len(client.predict_csv("patient_id,age\n\nA1,50\n,\n").results) == 1
    from inference.client import ClientFailure

    with pytest.raises(ClientFailure, match="answered 1 prediction for 2 patients"):
        client.predict_csv("patient_id,age\nA1,50\nA2,60\n")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux), a device every write to fails "
                                                           "as a full disk's")
def test_answers_to_a_full_disk_say_they_are_cut_not_that_nothing_half_written_is_read(endpoint, tmp_path):
    # The message was the lake's ("what was written whole is kept, and nothing half-written is read") and named no
    # file, while standard output ended mid-JSON.
    import subprocess
    import sys

    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps({"patient_id": f"J{i}", "age": 20 + i % 70}) + "\n" for i in range(250)))
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-B", "-m", "diagnosa.cli", "--workspace", str(tmp_path / "ws"),
                               "predict", str(path), "--endpoint-url", endpoint.url], stdout=full, cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("diagnosa: error: No space left on device: the answers (standard output) could not "
                                  "be written whole: it stops where the disk filled"), done.stderr
    assert "patient(s) were answered before it. Free space and send" in done.stderr
    assert "nothing half-written is read" not in done.stderr and "Traceback" not in done.stderr
