"""How the endpoint reads a request's bytes, held to what ingestion reads in a CSV file and to hostile input a probe
sent (issue 13's probes): JSON that names a key twice, CSV that repeats a header name or cuts a row short, an old
Mac's line endings, a byte-order mark, digits of other scripts, junk whose problems number in the millions, a lone
surrogate under a long key, an Accept with q=0. Called on the library; tests/test_server.py holds the HTTP part."""
from __future__ import annotations

import json

import pytest

from diagnosa.data.schema import Field, Schema
from inference.bulk import Answered, Refused, predict_stream, read_records
from inference.client import DiagnosaClient
from inference.feedback import FeedbackError, parse_feedback
from inference.handler import RequestError, invoke, load_service, parse_request
from inference.limits import MAX_LISTED_PROBLEMS, loads, surrogate_path
from inference.schema import RequestSchema

JSON, CSV = "application/json", "text/csv"


@pytest.fixture(scope="module")
def service(trained_model_dir):
    return load_service(str(trained_model_dir))


def refusal(service, body, content_type=JSON) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse_request(body, content_type, service)
    return caught.value


def problems(error: RequestError) -> dict[tuple[int, str | None], str]:
    return {(p.row, p.field): p.problem for p in error.errors}


@pytest.mark.parametrize("data, path", [
    ({"instances": [{"age": 1}, {"sex": "\ud800"}]}, "instances[1].sex"),
    ({"a": {"\ud800": 1}}, "a.<key>"),
    ({"\udc00": 1}, "a key"),
    ("\ud800", "the body"),
    ([1, ["x", "\udc00"]], "[1][1]"),
    ({"symptoms": ["HP:1", "\udfff"]}, "symptoms[1]"),
    ({"age": 40, "sex": "M"}, None),
])
def test_a_lone_surrogate_is_found_and_named_by_its_path(data, path):
    assert surrogate_path(data) == path


def test_a_surrogate_beside_a_long_key_over_a_long_list_is_found():
    # The path of every value was built as the search went: 2 GB for this 140 KB body (benchmarks/fuzz_serving.py).
    data = {"z": "\ud800", "A" * 100_000: [0] * 20_000}
    assert surrogate_path(data) == "z"


def test_a_key_given_twice_in_json_is_refused_not_read_as_its_last_value(service):
    # {"age": 200, "age": 40} was scored with 40: the impossible 200 never checked.
    error = refusal(service, b'{"age": 200, "age": 40, "sex": "M", "sex": "F"}')
    assert problems(error) == {(0, "age"): "given twice", (0, "sex"): "given twice"}
    error = refusal(service, b'{"instances": [{"age": 40}, {"age": 40, "age": 41}]}')
    assert problems(error) == {(1, "age"): "given twice"}
    assert refusal(service, b'{"instances": [{"age": 40}], "instances": []}').message == \
        "top-level key(s) given twice: instances"
    assert refusal(service, b'{"instances": [{"age": 40}], "top_k": 5, "top_k": 1}').message == \
        "top-level key(s) given twice: top_k"
    # Feedback too, and its field names are read trimmed as a request's are.
    with pytest.raises(FeedbackError) as caught:
        parse_feedback(loads('{"event_id": "e1", "diagnosis": "bogus", "diagnosis": "NO ENFERMO"}'))
    assert caught.value.fields == {"diagnosis": "given twice"}
    assert parse_feedback(loads('{"event_id": "e1", " diagnosis ": "NO ENFERMO"}')).diagnosis == "NO ENFERMO"


def test_a_csv_body_is_read_as_ingestion_reads_a_csv_file(service):
    # A header name twice: which cell was meant is not known (it was the last).
    assert refusal(service, "age,age\n200,40\n", CSV).message == \
        "the header names a field more than once: 'age'"
    # A row cut short was scored with its missing cells as missing values; ingestion quarantines it.
    assert refusal(service, "age,sex,temperature_c\n40,M,37\n40,M\n", CSV).message == (
        "CSV row 2 (line 3) has fewer cells than the header has fields (2, the header 3): a row is never padded, nor "
        "cut where a cell holds something")
    assert "row 1 (line 2) has more cells" in refusal(service, "age,sex\n40,M,37\n", CSV).message
    # A spreadsheet's export: delimiters at the end of every line (its header's columns without a name, empty in
    # every row) and a formatted empty row are read as ingestion reads them, not a refusal of the whole request.
    request = parse_request("\ufeffage,sex,,\r\n40,M,,\r\n,,,\r\n , ,\r\n50,F\r\n", CSV, service)
    assert [(r["age"], r["sex"]) for r in request.records] == [(40.0, "M"), (50.0, "F")]
    # Text under a column without a name, or a column without a name before named ones, is named as such.
    assert refusal(service, "age,sex,,\n40,M,,x\n", CSV).message == (
        "CSV row 1 (line 2) has text under column 4 of the header, which has no name ('x'): name the column or delete "
        "what is under it")
    assert refusal(service, "age,,sex,\n40,1,M\n", CSV).message == \
        "column 2 of the header has no name: name it or delete it"
    assert refusal(service, ",,\n40,M\n", CSV).message == "a CSV request needs a header row naming the fields"
    # An old Mac's lone CR ends a line, as in ingestion.
    request = parse_request("age,sex\r40,M\r50,F\r", CSV, service)
    assert [(r["age"], r["sex"]) for r in request.records] == [(40.0, "M"), (50.0, "F")]
    # A quote never closed is named so, not read as the rest of the body in one cell.
    assert refusal(service, 'age,sex\n40,"M\n50,F\n', CSV).message == "malformed CSV: a quote never closed (line 3)"
    # A cell over the csv module's limit, in words (Python's own were 'field larger than field limit (131072)').
    assert refusal(service, "age,sex\n40," + "M" * 140_000 + "\n", CSV).message == \
        "malformed CSV: a cell over 131,072 characters (the most one cell may hold) (line 2)"
    assert refusal(service, '{"age": 40}', CSV).message == (
        "the CSV body starts with '{': it looks like JSON; send it as application/json")
    assert refusal(service, "age,sex\n", CSV).message == "no patient records in the request: the CSV has a header and no rows"


@pytest.mark.parametrize("cell", ["1_0", "٦٧", "６７", "4O", "0x1A"])
def test_a_csv_number_is_what_ingestion_reads_as_one(service, cell):
    # float() reads '1_0' as 10 and other scripts' digits as numbers: ingestion refuses them.
    assert problems(refusal(service, f"age\n{cell}\n", CSV)) == {(0, "age"): f"expected a number, got {cell!r}"}


def test_json_with_a_byte_order_mark_is_read_and_other_charsets_are_refused(service):
    assert parse_request(b'\xef\xbb\xbf{"age": 40}', JSON, service).records[0]["age"] == 40.0
    with pytest.raises(RequestError) as caught:
        parse_request('{"age": 40}'.encode("utf-16"), "application/json; charset=utf-16", service)
    assert caught.value.status == 415 and caught.value.message == (
        "unsupported charset 'utf-16': send the body as UTF-8 (charset=utf-8)")
    assert parse_request(b'{"age": 40}', 'application/json; charset="UTF-8"', service).records
    too_long = refusal(service, b'{"age": 1' + b"0" * 5000 + b"}")
    assert too_long.message == "malformed JSON: a number with too many digits (over 4,300)"


@pytest.mark.parametrize("accept, answer", [
    ("text/csv;q=0, application/json", JSON),
    ("text/csv;q=0.5, application/json;q=0.9", JSON),
    ("application/json;q=0.1, text/csv", CSV),
    ("text/*", CSV),
    ("application/json;q=0, */*", CSV),
    (None, JSON),
])
def test_the_answer_is_in_the_most_preferred_acceptable_type(service, accept, answer):
    _, media = invoke(service, b'{"age": 40}', JSON, accept)
    assert media == answer


@pytest.mark.parametrize("accept", ["text/html, */*;q=0", "application/json;q=0", "image/png"])
def test_an_accept_that_refuses_both_types_is_406(service, accept):
    with pytest.raises(RequestError) as caught:
        invoke(service, b'{"age": 40}', JSON, accept)
    assert caught.value.status == 406


def test_junk_problems_are_counted_but_only_the_first_hundred_kept(service):
    # 100,000 unknown columns over 56 rows were 5.6 million problems (3 GB, 25 s of a worker) for a 6 MB body.
    header = ",".join(f"c{i}" for i in range(5_000))
    error = refusal(service, header + "\n" + ("," * 4_999 + "x\n") * 10, CSV)
    inputs = len(service.schema.accepted)
    assert problems(error) == {(row, None): f"the record has 5,000 fields; the model has {inputs} inputs"
                               for row in range(10)}
    many = [{"age": 40, "bed": i} for i in range(250)]
    error = refusal(service, json.dumps(many).encode())
    assert error.message == "250 problem(s) in the request"
    body = error.body()
    assert len(body["errors"]) == MAX_LISTED_PROBLEMS and body["more_errors"] == 150
    assert body["errors"][0] == {"row": 0, "field": "bed", "problem": error.errors[0].problem}
    assert body["errors"][0]["problem"].startswith("unknown field (accepted: patient_id, age, ")


def test_a_model_with_many_inputs_names_the_closest_ones_not_all():
    fields = (Field("case", "string", role="id"), *(Field(f"lab_{i:02d}", "number") for i in range(40)),
              Field("dx", "category", role="target", values=("a", "b")))
    requests = RequestSchema(Schema("x", fields, ("a", "b")))
    _, found = requests.validate(0, {"Lab_07": 1.0, "zzz": 2}, text=False)
    assert {p.field: p.problem for p in found} == {
        "Lab_07": "unknown field (the model has 41 inputs; closest: lab_07, lab_37, lab_30)",
        "zzz": "unknown field (the model has 41 inputs)"}


def test_a_patient_id_is_read_trimmed_as_ingestion_read_the_ids(service):
    assert parse_request(b'{"patient_id": "  A1  ", "age": 40}', JSON, service).ids == ["A1"]


def test_predict_refuses_a_record_it_cannot_send_as_read_and_answers_the_others(local_endpoint, tmp_path):
    # A lone surrogate made the endpoint refuse the whole request naming no record: the file stopped, unanswered.
    lines = '{"age": 40}\n{"age": 41, "sex": "\\ud800"}\n{"age": 42, "age": 43}\n{"age": 44}\n'
    records, _ = read_records(iter(lines.splitlines(keepends=True)), "jsonl", "x.jsonl")  # type: ignore[arg-type]
    outcomes = list(predict_stream(DiagnosaClient("diagnosa", endpoint_url=local_endpoint.url), records))
    assert [o.where for o in outcomes if isinstance(o, Answered)] == ["line 1", "line 4"]
    refused = [(o.where, o.field, o.problem) for o in outcomes if isinstance(o, Refused)]
    assert refused == [("line 2", "sex", "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not "
                                         "Unicode text"),
                       ("line 3", "age", "given twice")]
    with pytest.raises(ValueError, match="the header names a field more than once: 'age'"):
        read_records(iter(["age,sex,age\n", "1,M,2\n"]), "csv", "x.csv")  # type: ignore[arg-type]


@pytest.mark.parametrize("cell, spelled", [
    ("1,657.0", "a thousands separator ','"), ("10,6", "a decimal comma"), ("\u22122.7", "the minus sign '\u2212' (U+2212)"),
    ("124 mg/dL", "a unit after the number ('mg/dL')"), ("94%", "a unit after the number ('%')")])
def test_a_csv_number_spelled_as_a_spreadsheet_may_says_how_the_endpoint_reads_one(service, cell, spelled):
    # Ingestion's [csv] reads '1,657.0' with thousands = ","; the endpoint reads one spelling, and says which.
    problem = problems(refusal(service, f'age\n"{cell}"\n', CSV))[(0, "age")]
    assert problem.startswith(f"expected a number, got {cell!r} ({spelled}")
    assert problem.endswith("the endpoint reads a number written 1234.5: a decimal point, no thousands separator, "
                            "no unit)")
    assert problems(refusal(service, 'age\n"2A"\n', CSV)) == {(0, "age"): "expected a number, got '2A'"}
