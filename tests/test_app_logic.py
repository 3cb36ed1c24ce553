"""The doctors' app logic, without Streamlit: configuration, form, symptom search, results, failures."""
from __future__ import annotations

import json
import re
import time
from http.server import BaseHTTPRequestHandler

import pytest

from app.config import AppConfig, ConfigError, model_endpoint_name
from app.form import (
    FieldErrors,
    ValueProblem,
    build_record,
    field_errors,
    form_spec,
    load_form_spec,
    parse_codes,
    parse_number,
    read_numbers,
)
from app.results import (
    CHART_ROW_PX,
    Outcome,
    decision_note,
    diagnose,
    explain_failure,
    feedback_supported,
    headline,
    make_client,
    percent,
    probability_chart,
    probability_rows,
    top_k_rows,
)
from app.terms import TermIndex, build_index, fold
from diagnosa.labels import CATEGORIES

# ------------------------------------------------------------------------------------------------ config

def test_config_round_trips_through_the_environment():
    config = AppConfig(endpoint_url="http://127.0.0.1:8080", model="/m", timeout=2.5, attempts=1, top_k=5)
    assert AppConfig.from_env(config.to_env()) == config
    sagemaker = AppConfig(endpoint_name="triage", region="eu-west-1", lake="/lake")  # the lake: a SageMaker endpoint's
    assert AppConfig.from_env(sagemaker.to_env()) == sagemaker
    assert AppConfig.from_env({}) == AppConfig()
    assert AppConfig.from_env({"DIAGNOSA_APP_ENDPOINT_URL": "http://h:1/"}).endpoint_url == "http://h:1"


def test_config_describes_the_endpoint():
    assert AppConfig(endpoint_url="http://127.0.0.1:8080").description == "local endpoint http://127.0.0.1:8080"
    assert AppConfig(endpoint_name="triage", region="eu-west-1").description == \
        "SageMaker endpoint 'triage' in eu-west-1"


@pytest.mark.parametrize("env, word", [
    ({"DIAGNOSA_APP_TIMEOUT": "soon"}, "DIAGNOSA_APP_TIMEOUT"),
    ({"DIAGNOSA_APP_TIMEOUT": "0"}, "timeout"),
    ({"DIAGNOSA_APP_TOP_K": "0"}, "top_k"),
    ({"DIAGNOSA_APP_ATTEMPTS": "two"}, "DIAGNOSA_APP_ATTEMPTS"),
    ({"DIAGNOSA_APP_ENDPOINT_URL": "127.0.0.1:8080"}, "http://"),
])
def test_bad_configuration_names_the_variable(env, word):
    with pytest.raises(ConfigError, match=word):
        AppConfig.from_env(env)


def test_top_k_asked_is_at_most_the_models_labels():
    two, eight = ("A", "D"), tuple("abcdefgh")
    assert AppConfig().top_k is None and AppConfig().top_k_for(two) is None  # not sent: the endpoint's default
    assert AppConfig(top_k=3).top_k_for(two) == 2  # a model of two labels lists both, it does not refuse 3
    assert AppConfig(top_k=8).top_k_for(eight) == 8 and AppConfig(top_k=8).top_k_for(CATEGORIES) == 5
    assert AppConfig.from_env(AppConfig(top_k=8).to_env()).top_k == 8 and "DIAGNOSA_APP_TOP_K" not in AppConfig().to_env()


@pytest.fixture
def dataset_model(trained_model_dir, tmp_path):
    """A model folder of a dataset of the user's own, 'aids_2' (its metadata.json: all the app reads)."""
    metadata = json.loads((trained_model_dir / "metadata.json").read_text(encoding="utf-8"))
    metadata["dataset"] = {"name": "aids_2", "version": "d86e0bcb2830"}
    (tmp_path / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    return tmp_path


def test_the_endpoint_is_the_models_datasets_unless_named(dataset_model, trained_model_dir):
    assert model_endpoint_name(str(dataset_model)) == "aids-2"  # diagnosa.data.schema.resource_name: '_' -> '-'
    assert model_endpoint_name(str(trained_model_dir)) == model_endpoint_name(None) == "diagnosa"  # the cohort's
    local = {"DIAGNOSA_APP_ENDPOINT_URL": "http://127.0.0.1:8080", "DIAGNOSA_APP_MODEL": str(dataset_model)}
    assert AppConfig.from_env(local).endpoint_name == "aids-2"
    assert AppConfig.from_env(local | {"DIAGNOSA_APP_ENDPOINT_NAME": "triage"}).endpoint_name == "triage"
    with pytest.raises(ConfigError, match="metadata.json"):
        AppConfig.from_env({"DIAGNOSA_APP_MODEL": str(dataset_model / "nowhere")})


# ------------------------------------------------------------------------------------------------ form

def test_form_comes_from_the_models_request_schema(trained_model_dir):
    spec = load_form_spec(str(trained_model_dir))
    assert "patient_id" not in spec.names
    assert {"age", "sex", "temperature_c", "crp_mg_l", "symptoms", "prior_diagnoses"} <= set(spec.names)
    hr = spec.by_name("heart_rate_bpm")
    assert (hr.kind, hr.group, hr.title, hr.minimum, hr.maximum) == \
        ("number", "Vital signs", "Heart rate (beats/min)", 20, 250)
    assert "20 to 250 beats/min" in hr.help
    assert spec.by_name("sex").choices == ("F", "M") and spec.by_name("sex").choice_label("F") == "Female"
    assert spec.by_name("age").kind == "integer" and spec.by_name("crp_mg_l").group == "Lab results"
    assert spec.terms_field.name == "symptoms" and spec.known_terms and all(t.startswith("HP:") for t in spec.known_terms)
    assert "I10" in spec.known_codes
    assert [g for g, _ in spec.groups()] == ["Patient", "Vital signs", "Lab results", "Symptoms", "History"]


def test_form_knows_the_models_labels_not_only_the_cohorts(two_label_model_dir, trained_model_dir):
    assert load_form_spec(str(two_label_model_dir)).labels == ("NO ENFERMO", "ENFERMO")
    assert load_form_spec(str(trained_model_dir)).labels == load_form_spec(None).labels == CATEGORIES


def test_form_follows_any_schema_not_hard_coded_fields():
    schema = {"properties": {"rid": {"type": "string"}, "ferritin": {"type": ["number", "null"], "minimum": 0,
                                                                     "description": "ng/mL"},
                             "smoker": {"type": ["boolean", "null"]},
                             "ward": {"type": ["string", "null"], "enum": ["A", "B", None]}}}
    spec = form_spec(schema, id_field="rid")
    assert [(f.name, f.kind, f.group) for f in spec.fields] == [
        ("ferritin", "number", "Other measurements"), ("smoker", "boolean", "Patient"), ("ward", "choice", "Patient")]
    assert spec.by_name("ferritin").title == "Ferritin (ng/mL)" and spec.by_name("ward").choices == ("A", "B")
    assert build_record(spec, {"ferritin": 30.0, "smoker": "No", "ward": None}) == {"ferritin": 30.0, "smoker": False}


def test_record_holds_only_given_values_typed_as_the_schema_says():
    spec = load_form_spec(None)
    values = {"age": 67.0, "sex": "M", "temperature_c": 38.9, "heart_rate_bpm": None, "spo2_pct": "",
              "symptoms": ["HP:0001945", "HP:0001945", "HP:0012735"], "prior_diagnoses": ["I10", "I10", "E11.9"]}
    record = build_record(spec, values)
    assert record == {"age": 67, "sex": "M", "temperature_c": 38.9, "symptoms": ["HP:0001945", "HP:0012735"],
                      "prior_diagnoses": ["I10", "E11.9"]}
    assert isinstance(record["age"], int)
    assert build_record(spec, {"heart_rate_bpm": 400.0}) == {"heart_rate_bpm": 400.0}  # not clamped: the endpoint judges
    assert build_record(spec, {}) == {}
    assert parse_codes(" i10, E11.9;J45  i10 ") == ["I10", "E11.9", "J45"]


@pytest.mark.parametrize("field, typed, value", [
    ("wbc_10e9_l", "15,2", 15.2),  # a decimal comma: the browser's number field sent 152
    ("temperature_c", "38,9", 38.9), ("temperature_c", " 38.9 ", 38.9), ("temperature_c", "38,9 °C", 38.9),
    ("temperature_c", "38.9 C", 38.9), ("heart_rate_bpm", "112 beats/min", 112.0), ("spo2_pct", "90 %", 90.0),
    ("creatinine_mg_dl", "0,004", 0.004), ("creatinine_mg_dl", ",5", 0.5), ("crp_mg_l", "１８０", 180.0),
    ("potassium_mmol_l", "−1", -1.0), ("alt_u_l", "1.500", 1.5), ("age", "67", 67), ("age", "67,0", 67),
    ("crp_mg_l", "", None), ("crp_mg_l", "   ", None),
])
def test_a_measurement_is_read_as_the_doctor_wrote_it(field, typed, value):
    spec = load_form_spec(None)
    parsed = parse_number(typed, spec.by_name(field))
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("field, typed, says", [
    ("heart_rate_bpm", "112 bpm", "not a number: write the value in beats/min"),
    ("crp_mg_l", "nan", "not a number"), ("crp_mg_l", "inf", "not a number"), ("crp_mg_l", "1e3", "not a number"),
    ("crp_mg_l", "1.234,5", "no thousands separators"), ("crp_mg_l", "12..5", "not a number"),
    ("alt_u_l", "1,500", "could be 1500 or 1.5"), ("crp_mg_l", "٣", "not a number"),
    ("age", "67.5", "not a whole number"), ("temperature_c", "101 °F", "in °C"), ("crp_mg_l", "x" * 500, "…"),
])
def test_a_measurement_that_is_not_one_number_is_refused_saying_how_to_write_it(field, typed, says):
    spec = load_form_spec(None)
    with pytest.raises(ValueProblem, match=re.escape(says)):
        parse_number(typed, spec.by_name(field))
    values, problems = read_numbers(spec, {field: typed, "sex": "M"})
    assert list(problems) == [field] and values[field] is None and values["sex"] == "M"
    assert len(problems[field][0]) < 200  # a long paste is not echoed whole


def test_endpoint_errors_map_onto_the_form_fields():
    spec = load_form_spec(None)
    errors = [{"row": 0, "field": "heart_rate_bpm", "problem": "impossible value 400"},
              {"row": 0, "field": "heart_rate_bpm", "problem": "second"},
              {"row": 0, "field": "mystery", "problem": "unknown field"},
              {"row": 0, "field": None, "problem": "the record has none of the model's input fields"}]
    mapped = field_errors(spec, errors, "2 problem(s)")
    assert mapped.by_field == {"heart_rate_bpm": ["impossible value 400", "second"]}
    assert mapped.general == ["mystery: unknown field", "the record has none of the model's input fields"]
    assert field_errors(spec, [], "malformed JSON").general == ["malformed JSON"]
    assert not FieldErrors()


# ------------------------------------------------------------------------------------------------ symptom search

@pytest.fixture(scope="module")
def index() -> TermIndex:
    return build_index(preferred=["HP:0012735"])


def test_search_finds_terms_by_name_synonym_prefix_and_id(index):
    assert index.search("fever")[0].id == "HP:0001945"
    assert index.search("Fever")[0].synonym is None
    hypertension = index.search("high blood pressure")[0]
    assert (hypertension.id, hypertension.synonym) == ("HP:0000822", "High blood pressure")
    assert "High blood pressure" in hypertension.label and "HP:0000822" in hypertension.label
    assert index.search("abd pain")[0].name == "Abdominal pain"
    assert index.search("pyrexia")[0].id == "HP:0001945"
    assert [t.id for t in index.search("HP:0001945")] == [t.id for t in index.search("0001945")] == ["HP:0001945"]
    assert index.search("HP:9999999") == [] and index.search("") == [] and index.search("zzqx") == []
    assert len(index.search("pain", limit=5)) == 5


def test_search_covers_phenotypes_only_and_folds_accents(index):
    assert "HP:0000006" not in index  # Autosomal dominant inheritance: not a symptom
    assert "HP:0000118" not in index
    assert fold("Fiébre AGUDA") == "fiebre aguda"
    assert TermIndex({"HP:0000001": "Dolor torácico"}).search("toracico")[0].name == "Dolor torácico"


def test_search_prefers_the_terms_the_model_knows_on_ties():
    names = {"HP:0000001": "Pain in leg", "HP:0000002": "Pain in arm"}
    assert TermIndex(names).search("pain")[0].id == "HP:0000002"  # shorter name... equal length: alphabetical
    assert TermIndex(names, preferred=["HP:0000001"]).search("pain")[0].id == "HP:0000001"


def test_one_letter_waits_for_a_second(index):
    # The search's speed (a few ms a query) is a benchmark figure: benchmarks/bench_app_search.py.
    assert index.search("a") == [] and index.search("ab")


# ------------------------------------------------------------------------------------------------ results

RESULT = {"category": "ENFERMEDAD AGUDA", "model_version": "abc",
          "probabilities": {"ENFERMEDAD TERMINAL": 0.00001, "NO ENFERMO": 0.02, "ENFERMEDAD LEVE": 0.03,
                            "ENFERMEDAD AGUDA": 0.94999, "ENFERMEDAD CRÓNICA": 0.0},
          "top_k": [{"category": "ENFERMEDAD AGUDA", "probability": 0.94999},
                    {"category": "ENFERMEDAD LEVE", "probability": 0.03}]}


def test_results_are_formatted_in_clinical_order():
    assert [r["category"] for r in probability_rows(RESULT)] == list(CATEGORIES)
    assert probability_rows(RESULT)[-1]["label"] == "under 0.1 %"
    assert top_k_rows(RESULT) == [{"rank": 1, "category": "ENFERMEDAD AGUDA", "probability": "95.0 %"},
                                  {"rank": 2, "category": "ENFERMEDAD LEVE", "probability": "3.0 %"}]
    assert headline(RESULT) == "ENFERMEDAD AGUDA (95.0 %)"
    assert (percent(0.5), percent(0.001), percent(0.999), percent(0.99999)) == ("50.0 %", "0.1 %", "99.9 %",
                                                                                 "over 99.9 %")
    chart = probability_chart(probability_rows(RESULT)).to_dict()
    assert all(layer["encoding"]["y"]["sort"] == list(CATEGORIES) for layer in chart["layer"])


def test_a_rounded_probability_never_reads_as_a_certainty():
    # The endpoint rounds to six decimals: a very sick patient's answer held 1.0 and four 0.0, which read
    # "ENFERMEDAD TERMINAL (100.0 %)" and "0.0 %" for the other categories: a model's estimate shown as a certainty.
    certain = {"category": "ENFERMEDAD TERMINAL", "probabilities": {c: 0.0 for c in CATEGORIES} | {"ENFERMEDAD TERMINAL": 1.0},
               "top_k": [{"category": "ENFERMEDAD TERMINAL", "probability": 1.0}, {"category": "NO ENFERMO", "probability": 0.0}]}
    assert headline(certain) == "ENFERMEDAD TERMINAL (over 99.9 %)"
    assert [r["label"] for r in probability_rows(certain)] == ["under 0.1 %"] * 4 + ["over 99.9 %"]
    assert [r["probability"] for r in top_k_rows(certain)] == ["over 99.9 %", "under 0.1 %"]
    assert (percent(0.0), percent(1.0), percent(0.00095)) == ("under 0.1 %", "over 99.9 %", "under 0.1 %")


def test_the_chart_says_each_probability_to_a_screen_reader():
    # The chart's accessible name was its axis ticks run together ("0% 20% ... NO ENFERMO ... 0.0 %") and each bar's
    # "probability: 100.000000%": now the category with the percentage as the page writes it.
    chart = probability_chart(probability_rows(RESULT)).to_dict()
    assert chart["description"] == ("Probability of each category: NO ENFERMO: 2.0 %; ENFERMEDAD LEVE: 3.0 %; "
                                    "ENFERMEDAD AGUDA: 95.0 %; ENFERMEDAD CRÓNICA: under 0.1 %; "
                                    "ENFERMEDAD TERMINAL: under 0.1 %")
    [bars] = [layer for layer in chart["layer"] if "description" in layer["encoding"]]
    assert bars["mark"]["type"] == "bar" and bars["encoding"]["x"]["field"] == "probability"
    assert bars["encoding"]["description"] == {"field": "aria", "type": "nominal"}
    assert bars["transform"] == [{"calculate": "datum.category + ': ' + datum.label", "as": "aria"}]


def test_the_chart_names_every_category_of_any_model():
    three = {"category": "bajo peso", "probabilities": {"normal": 0.094, "límite": 0.007, "bajo peso": 0.899}}
    chart = probability_chart(probability_rows(three)).to_dict()
    [names] = [layer for layer in chart["layer"] if layer["mark"]["type"] == "text"]
    assert names["encoding"]["y"]["sort"] == ["normal", "límite", "bajo peso"]
    # Each row's own text mark names it (the y axis's labels, which Vega hid when they overlapped, are gone).
    assert names["transform"] == [{"calculate": "datum.category + ': ' + datum.label", "as": "text"}]
    assert all(layer["encoding"]["y"]["axis"] is None for layer in chart["layer"])
    # Each row keeps its height: Streamlit's default autosize ("fit") squeezed the rows into what the axes left.
    assert chart["height"] == {"step": CHART_ROW_PX} and chart["autosize"]["type"] == "fit-x"


def test_a_category_that_is_not_the_most_probable_says_so():
    assert decision_note(RESULT) is None  # the category is the most probable one: nothing to explain
    weighed = {"category": "D", "probabilities": {"A": 0.5047, "D": 0.4953},
               "top_k": [{"category": "A", "probability": 0.5047}, {"category": "D", "probability": 0.4953}]}
    note = decision_note(weighed)
    assert headline(weighed) == "D (49.5 %)" and note.startswith("A is more probable (50.5 %)")
    assert "model's decision" in note
    assert decision_note({"category": "A", "probabilities": {"A": 0.5, "D": 0.5}}) is None  # a tie is no contradiction


class _Stub(BaseHTTPRequestHandler):
    """A stand-in endpoint: slow, or failing the way SageMaker reports a model's 5xx."""

    delay = 0.0
    status, body, headers = 200, b"{}", {}

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        try:
            self.send_response(self.status)
            for k, v in {**self.headers_out, "Content-Length": str(len(self.body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(self.body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def stub(http_server):
    def start(**attrs):
        return http_server(_Stub, **attrs)[0]

    return start


@pytest.mark.parametrize("status, headers_out, kind, says", [
    (503, {"Content-Type": "text/html"}, "unavailable", "is busy or still starting: ask again in a moment"),
    (302, {"Location": "https://sso.example/login?next=/invocations&token=s3cr3t"}, "not_found",
     "answered something that is not the endpoint (a redirect, or another server's page)"),
    (404, {"Content-Type": "text/html"}, "not_found", "check the app's endpoint address"),
], ids=["proxy-503", "redirect", "other-404"])
def test_another_servers_answer_is_not_taken_for_the_endpoints(stub, caplog, status, headers_out, kind, says):
    # A proxy's 503 page was explained as "its model is still loading", a redirect to a sign-in page (http:// for an
    # https:// address) and another server's 404 page as "could not give a diagnosis".
    import logging

    page = b"<html><head><title>Service Temporarily Unavailable</title></head><body>nginx</body></html>"
    with caplog.at_level(logging.INFO, logger="app.results"):
        outcome = _outcome(stub(status=status, body=page, headers_out=headers_out))
    assert outcome.failure.kind == kind and says in outcome.failure.message, outcome.failure.message
    assert "loading" not in outcome.failure.message and "s3cr3t" not in caplog.text + outcome.failure.message
    if status == 302:
        assert "redirect (HTTP 302 to 'https://sso.example')" in caplog.text


def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _outcome(url: str, record=None, **config) -> Outcome:
    cfg = AppConfig(endpoint_url=url, attempts=1, **({"timeout": 2.0} | config))
    return diagnose(make_client(cfg), record or {"age": 40}, cfg, load_form_spec(None))


def test_each_failure_has_its_own_message(stub):
    down = _outcome(_closed_port_url())
    slow = _outcome(stub(delay=2.0, headers_out={}), timeout=0.5)
    model_error = {"message": "Received server error (500)", "OriginalStatusCode": 500,
                   "OriginalMessage": json.dumps({"error": "internal error"})}
    broken = _outcome(stub(status=424, body=json.dumps(model_error).encode(),
                           headers_out={"x-amzn-ErrorType": "ModelError", "Content-Type": "application/json"}))
    loading = _outcome(stub(status=503, body=b'{"message": "the model is not loaded yet"}',
                            headers_out={"x-amzn-ErrorType": "ServiceUnavailable", "Content-Type": "application/json"}))
    kinds = {o.failure.kind: o.failure.message for o in (down, slow, broken, loading)}
    assert list(kinds) == ["unreachable", "timeout", "server_error", "unavailable"]
    assert "Cannot reach" in kinds["unreachable"] and "within 0.5 s" in kinds["timeout"]
    assert "HTTP 500" in kinds["server_error"] and "loading" in kinds["unavailable"]
    assert len(set(kinds.values())) == 4
    # SageMaker's own 60 s limit on the model's answer (a ModelError, original status 0) was told as a refused request.
    message = "Your invocation timed out while waiting for a response from container primary."
    timed_out = {"message": f'Received server error (0) from primary with message "{message}"',
                 "OriginalStatusCode": 0, "OriginalMessage": message}
    late = _outcome(stub(status=424, body=json.dumps(timed_out).encode(),
                         headers_out={"x-amzn-ErrorType": "ModelError", "Content-Type": "application/json"}))
    assert late.failure.kind == "timeout" and "took longer than the endpoint allows" in late.failure.message
    assert "refused" not in late.failure.message and late.failure.message not in kinds.values()


def test_nothing_is_sent_for_an_empty_form(stub):
    outcome = diagnose(None, {}, AppConfig(), load_form_spec(None))  # no client needed: nothing is sent
    assert outcome.failure.kind == "rejected" and "at least one value" in outcome.failure.message


@pytest.fixture(scope="module")
def endpoint(local_endpoint):
    return local_endpoint


def test_real_endpoint_answers_and_refuses_with_field_errors(endpoint):
    ok = _outcome(endpoint.url, {"age": 67, "sex": "M", "temperature_c": 38.9, "symptoms": ["HP:0001945"]})
    assert ok.ok and ok.result["category"] in CATEGORIES and ok.event_id
    bad = _outcome(endpoint.url, {"age": 67, "heart_rate_bpm": 400.0, "symptoms": ["HP:0001945"]})
    assert bad.failure.kind == "rejected"
    assert bad.failure.fields.by_field == {"heart_rate_bpm": ["impossible value 400 (possible range 20 to 250 beats/min)"]}
    unknown = _outcome(endpoint.url, {"age": 67}, endpoint_name="nope")
    assert unknown.failure.kind == "not_found"
    failure = explain_failure(RuntimeError("boom"), AppConfig(), load_form_spec(None))
    assert failure.kind == "failed"


def test_a_refusal_naming_no_field_does_not_blame_the_fields():
    from inference.client import PredictionRejected

    spec = load_form_spec(None)
    settings = explain_failure(PredictionRejected("top_k must be an integer from 1 to 2, got 3", 400), AppConfig(), spec)
    assert settings.kind == "rejected" and "fields" not in settings.message and "not a value in the form" in settings.message
    assert settings.fields.general == ["top_k must be an integer from 1 to 2, got 3"] and not settings.fields.by_field
    value = explain_failure(PredictionRejected("1 problem(s) in the request", 400,
                                               [{"row": 0, "field": "age", "problem": "impossible value 400"}]),
                            AppConfig(), spec)
    assert "correct the fields marked in red (Age (years)) and ask again" in value.message
    assert value.fields.by_field == {"age": ["impossible value 400"]}


def test_a_form_for_another_model_than_the_served_one_blames_no_field():
    # The endpoint answers "unknown field" for every input its model does not have (the form is another dataset's
    # model's, or the endpoint was restarted with another model): no value the doctor could type fixes that.
    from inference.client import PredictionRejected

    spec = load_form_spec(None)
    err = PredictionRejected("2 problem(s) in the request", 400, [
        {"row": 0, "field": "age", "problem": "unknown field (the model has 37 inputs)"},
        {"row": 0, "field": "symptoms", "problem": "unknown field (the model has 37 inputs; closest: sintomas)"}])
    failure = explain_failure(err, AppConfig(endpoint_url="http://127.0.0.1:8080"), spec)
    assert failure.kind == "rejected" and not failure.fields.by_field
    assert "does not take this form's fields (age, symptoms)" in failure.message and "another model" in failure.message
    assert "correct the fields" not in failure.message
    assert failure.fields.general == ["age: unknown field (the model has 37 inputs)",
                                      "symptoms: unknown field (the model has 37 inputs; closest: sintomas)"]


def test_feedback_is_offered_only_when_the_client_can_send_it():
    assert not feedback_supported(object())


# ------------------------------------------------------------------------------------------------ command

def test_app_command_runs_streamlit_headless_with_the_endpoint_configuration():
    from app.launch import script_path, streamlit_command

    config = AppConfig(endpoint_url="http://127.0.0.1:8080", model="/m")
    argv, env = streamlit_command(config.to_env(), host="127.0.0.1", port=8599,
                                  base_env={"PATH": "/bin", "DIAGNOSA_APP_REGION": "stale"})
    assert argv[1:5] == ["-P", "-m", "streamlit", "run"] and argv[5] == str(script_path()) and script_path().is_file()
    for option in ("--server.headless=true", "--browser.gatherUsageStats=false", "--server.fileWatcherType=none",
                   "--logger.level=error", "--server.port=8599", "--server.address=127.0.0.1"):
        assert option in argv
    assert AppConfig.from_env(env) == config and env["PATH"] == "/bin" and "DIAGNOSA_APP_REGION" not in env


def test_the_app_imports_diagnosas_packages_whatever_folder_it_is_started_from(tmp_path):
    # `python -m` puts the working folder first on sys.path: started beside a folder of the user's own named app/,
    # the app imported that one (installed from a wheel, its page said "No module named 'app.config'").
    import subprocess

    import app
    from app.launch import streamlit_command

    for shadow in ("app", "inference", "diagnosa"):
        (tmp_path / shadow).mkdir()
        (tmp_path / shadow / "__init__.py").write_text("", encoding="utf-8")
    argv, env = streamlit_command({}, host="127.0.0.1", port=8599)
    interpreter = argv[:argv.index("-m")]  # the interpreter and its flags, as the app is started
    found = subprocess.run([*interpreter, "-c", "import app, diagnosa, inference; print(app.__file__); "
                            "print(diagnosa.__file__); print(inference.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert str(tmp_path) not in found.stdout and found.stdout.splitlines()[0] == app.__file__


def test_app_command_calls_the_endpoint_of_the_models_dataset(dataset_model, monkeypatch, capsys):
    import os

    from diagnosa.cli import main

    started = []
    monkeypatch.delenv("DIAGNOSA_APP_ENDPOINT_NAME", raising=False)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(env))
    assert main(["app", "--endpoint-url", "http://127.0.0.1:8080", "--model", str(dataset_model)]) == 0
    assert AppConfig.from_env(started[0]).endpoint_name == "aids-2"
    assert "local endpoint http://127.0.0.1:8080, endpoint 'aids-2'" in capsys.readouterr().out
    assert main(["app", "--endpoint-url", "http://127.0.0.1:8080", "--model", str(dataset_model),
                 "--endpoint-name", "diagnosa"]) == 0
    assert AppConfig.from_env(started[1]).endpoint_name == "diagnosa"


def test_app_command_shapes_the_form_from_the_model_a_local_endpoint_serves(dataset_model, tmp_path, monkeypatch,
                                                                            capsys):
    # `diagnosa app --endpoint-name aids-2` without --model showed the built-in cohort's form, whose fields the
    # dataset's endpoint refuses.
    import os

    from diagnosa.cli import main

    ws = tmp_path / "ws"
    (ws / "endpoints" / "aids-2").mkdir(parents=True)
    (ws / "endpoints" / "aids-2" / "endpoint.json").write_text(json.dumps(
        {"EndpointName": "aids-2", "EndpointStatus": "InService", "ModelDir": str(dataset_model),
         "Url": "http://127.0.0.1:8080"}))
    started = []
    monkeypatch.delenv("DIAGNOSA_APP_MODEL", raising=False)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(env))
    argv = ["--workspace", str(ws), "app", "--endpoint-url", "http://127.0.0.1:8080"]
    assert main([*argv, "--endpoint-name", "aids-2"]) == 0
    assert AppConfig.from_env(started[0]).model == str(dataset_model)
    assert f"form from the model local endpoint 'aids-2' serves ({dataset_model})" in capsys.readouterr().out
    assert main([*argv, "--endpoint-name", "elsewhere"]) == 0  # no such local endpoint: the built-in form, as before
    assert AppConfig.from_env(started[1]).model is None
    # Another server than the one recorded, or a model folder gone since: the built-in form, the app starts.
    assert main([*argv[:-1], "http://127.0.0.1:9090", "--endpoint-name", "aids-2"]) == 0
    assert AppConfig.from_env(started[2]).model is None
    (dataset_model / "metadata.json").unlink()
    assert main([*argv, "--endpoint-name", "aids-2"]) == 0
    assert AppConfig.from_env(started[3]).model is None and "which is gone" in capsys.readouterr().err


def test_app_command_asks_the_server_at_its_url_which_endpoint_it_serves(trained_model_dir, dataset_model, tmp_path,
                                                                         monkeypatch, capsys):
    # As `predict` and `feedback` do (GET /ping): the app started as endpoint 'diagnosa' with the built-in cohort's
    # form at a dataset's endpoint, and every diagnosis was refused ("Endpoint diagnosa ... not found"); a name or a
    # --model of another endpoint than the URL's started too.
    import os

    from diagnosa.cli import main
    from inference.server import EndpointServer

    started = []
    for name in ("DIAGNOSA_APP_ENDPOINT_NAME", "DIAGNOSA_APP_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(env))
    with EndpointServer(str(trained_model_dir), endpoint_name="aids-2") as served:
        served.wait_until_ready()
        ws = tmp_path / "ws"
        (ws / "endpoints" / "aids-2").mkdir(parents=True)
        (ws / "endpoints" / "aids-2" / "endpoint.json").write_text(json.dumps(
            {"EndpointName": "aids-2", "EndpointStatus": "InService", "ModelDir": str(dataset_model),
             "Url": served.url}))
        assert main(["--workspace", str(ws), "app", "--endpoint-url", served.url]) == 0
        config = AppConfig.from_env(started[0])
        assert (config.endpoint_name, config.model) == ("aids-2", str(dataset_model))
        assert main(["--workspace", str(ws), "app", "--endpoint-url", served.url, "--endpoint-name", "diagnosa"]) == 2
        assert f"--endpoint-name diagnosa, but {served.url} serves endpoint aids-2" in capsys.readouterr().err
        assert main(["--workspace", str(ws), "app", "--endpoint-url", served.url, "--model", str(trained_model_dir)]) == 2
        assert (f"--model {trained_model_dir}: a model of diagnosa (its endpoint), but {served.url} serves endpoint "
                "aids-2: leave out --model, or give the URL of diagnosa") in capsys.readouterr().err
    assert len(started) == 1


def test_app_command_without_a_url_or_region_calls_the_workspaces_local_endpoint_as_predict_does(
        model_workspace, monkeypatch, capsys):
    # `diagnosa app --endpoint-name NAME` took its form from the workspace's local endpoint NAME and sent every
    # diagnosis to SageMaker's endpoint of that name, in no region at all; `predict` and `feedback` call the local one.
    import os

    from test_endpoint_deploy_races import _register

    from diagnosa.cli import main

    started = []
    for name in ("DIAGNOSA_APP_ENDPOINT_NAME", "DIAGNOSA_APP_MODEL", "DIAGNOSA_APP_ENDPOINT_URL", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(env))
    serving = model_workspace.deploy_approved(_register(model_workspace), port=0)
    app = ["--workspace", str(model_workspace.root), "--lake", model_workspace.lake.uri, "app"]
    for named in (["--endpoint-name", "diagnosa"], []):  # the built-in cohort's endpoint when none is named
        assert main([*app, *named]) == 0
        config = AppConfig.from_env(started[-1])
        assert (config.endpoint_url, config.endpoint_name, config.model) == (
            serving["Url"], "diagnosa", serving["ModelDir"])
        assert f"local endpoint {serving['Url']}, endpoint 'diagnosa'" in capsys.readouterr().out
    assert main([*app, "--endpoint-name", "Diagnosa"]) == 2  # a mistyped name beside a local endpoint
    assert "did you mean diagnosa?" in capsys.readouterr().err
    assert main([*app, "--region", "eu-west-1"]) == 0  # --region: SageMaker's endpoint, as before
    assert AppConfig.from_env(started[-1]).endpoint_url is None
    assert main([*app[:-1], "endpoint", "stop", "diagnosa"]) == 0
    capsys.readouterr()
    assert main(app) == 1  # recorded but not running: refused at start, not at every diagnosis
    err = capsys.readouterr().err
    assert "the local endpoint diagnosa" in err and "is not running" in err
    assert len(started) == 3


def test_app_command_refuses_the_built_in_form_for_a_hand_started_server_of_another_dataset(
        trained_model_dir, tmp_path, monkeypatch, capsys):
    # `diagnosa serve MODEL --endpoint-name pbc`, then `diagnosa app --endpoint-url URL`: no workspace record says
    # what the model's form holds, and the app showed the built-in cohort's form, whose fields that endpoint refuses.
    import os
    import shutil

    from diagnosa.cli import main
    from inference.server import EndpointServer

    for name in ("DIAGNOSA_APP_ENDPOINT_NAME", "DIAGNOSA_APP_MODEL"):
        monkeypatch.delenv(name, raising=False)
    started = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append(env))
    own = tmp_path / "own-model"
    shutil.copytree(trained_model_dir, own)
    metadata = json.loads((own / "metadata.json").read_text(encoding="utf-8"))
    metadata["dataset"] = {"name": "aids_2", "version": "d86e0bcb2830"}
    (own / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    app = ["--workspace", str(tmp_path / "ws"), "app"]
    with EndpointServer(str(own), endpoint_name="aids-2") as served:
        served.wait_until_ready()
        assert main([*app, "--endpoint-url", served.url]) == 2
        assert (f"{served.url} serves a model of the dataset aids_2" in capsys.readouterr().err)
        assert main([*app, "--endpoint-url", served.url, "--model", str(own)]) == 0  # its own form
    with EndpointServer(str(trained_model_dir), endpoint_name="triage") as served:  # the cohort's, named otherwise
        served.wait_until_ready()
        assert main([*app, "--endpoint-url", served.url]) == 0
        assert AppConfig.from_env(started[-1]).endpoint_name == "triage"
    assert len(started) == 2


def test_app_command_takes_its_settings_from_the_environment_and_prints_the_port_it_listens_on(monkeypatch, capsys):
    # $DIAGNOSA_APP_TIMEOUT, _ATTEMPTS and _TOP_K, as docs/app.md lists them, were overridden by the flags' fixed
    # defaults; a bad $DIAGNOSA_APP_DIFFERENTIAL stopped every diagnosa command with a traceback; --port 0 printed
    # 'http://127.0.0.1:0'.
    import os
    import socket

    from diagnosa.cli import main

    started = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.append((argv, env)))
    for name, value in {"TIMEOUT": "30", "ATTEMPTS": "1", "TOP_K": "2", "DIFFERENTIAL": "0"}.items():
        monkeypatch.setenv(f"DIAGNOSA_APP_{name}", value)
    assert main(["app", "--endpoint-url", "http://127.0.0.1:8080"]) == 0
    config = AppConfig.from_env(started[0][1])
    assert (config.timeout, config.attempts, config.top_k, config.differential) == (30, 1, 2, 0)
    assert main(["app", "--endpoint-url", "http://127.0.0.1:8080", "--timeout", "5", "--attempts", "3",
                 "--top-k", "4", "--differential", "7", "--port", "0"]) == 0
    argv, env = started[1]
    config = AppConfig.from_env(env)
    assert (config.timeout, config.attempts, config.top_k, config.differential) == (5, 3, 4, 7)
    [port] = [int(a.removeprefix("--server.port=")) for a in argv if a.startswith("--server.port=")]
    assert port > 0 and f"Diagnosa app on http://127.0.0.1:{port}/ " in capsys.readouterr().out
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free for Streamlit to take
    monkeypatch.setenv("DIAGNOSA_APP_DIFFERENTIAL", "many")
    assert main(["app", "--endpoint-url", "http://127.0.0.1:8080"]) == 2
    assert "DIAGNOSA_APP_DIFFERENTIAL must be an integer, got 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # the other commands are not concerned (the parser used to crash)
        main(["registry", "--help"])
    assert done.value.code == 0


def test_app_command_refuses_a_bad_configuration(tmp_path, capsys):
    from diagnosa.cli import main

    assert main(["app", "--model", str(tmp_path)]) == 2
    assert "metadata.json" in capsys.readouterr().err
    assert main(["app", "--endpoint-url", "localhost:8080"]) == 2
    assert "http://" in capsys.readouterr().err


@pytest.mark.parametrize("errors", ["bad", [None], [1], {"a": 1}, [None, {"field": "age", "problem": "impossible"}]])
def test_a_refusal_whose_errors_are_not_problem_objects_is_a_failure_not_an_exception(stub, errors):
    # A proxy or another server answering 4xx with any JSON: diagnose() (documented never to raise) raised
    # AttributeError from the field errors it read.
    refusal = {"message": "Received client error (400)", "OriginalStatusCode": 400,
               "OriginalMessage": json.dumps({"error": "1 problem(s) in the request", "errors": errors})}
    outcome = _outcome(stub(status=424, body=json.dumps(refusal).encode(),
                            headers_out={"x-amzn-ErrorType": "ModelError", "Content-Type": "application/json"}))
    assert outcome.failure is not None and outcome.failure.kind in ("rejected", "failed")
    assert "HTTP 400" in outcome.failure.message or "could not" in outcome.failure.message
    # Built by hand too: no problem object is read as one, and the app still explains the refusal.
    from inference.client import PredictionRejected

    err = PredictionRejected("1 problem(s) in the request", 400, errors)
    assert str(err).startswith("1 problem(s) in the request")
    failure = explain_failure(err, AppConfig(), load_form_spec(None))
    assert failure.kind == "rejected" and "HTTP 400" in failure.message


def test_a_failure_while_explaining_a_failure_is_the_generic_failure(stub, monkeypatch):
    import app.results

    def broken(*args, **kwargs):
        raise KeyError("x")

    monkeypatch.setattr(app.results, "explain_failure", broken)
    outcome = _outcome(_closed_port_url())
    assert outcome.failure.kind == "failed" and "could not be read (KeyError)" in outcome.failure.message


# ------------------------------------------------------------------------------------------------ over SageMaker
# The app's real client against a real HTTP server answering as SageMaker's runtime does (tests/test_client.py).
from test_client import ACCOUNT, ANSWER, answering, aws_error, model_error, sagemaker_fixture  # noqa: E402, F401

ACCESS_DENIED = (f"User: arn:aws:sts::{ACCOUNT}:assumed-role/diagnosa-app/i-0abc is not authorized to perform: "
                 f"sagemaker:InvokeEndpoint on resource: arn:aws:sagemaker:eu-west-1:{ACCOUNT}:endpoint/diagnosa because "
                 "no identity-based policy allows the sagemaker:InvokeEndpoint action")


def _over_sagemaker(sagemaker, *replies, **config) -> Outcome:
    sagemaker(*replies)
    cfg = AppConfig("diagnosa", region="eu-west-1", **({"attempts": 1} | config))
    return diagnose(make_client(cfg), {"age": 40}, cfg, load_form_spec(None))


def _on_the_page(outcome: Outcome) -> str:
    failure = outcome.failure
    assert failure is not None, outcome
    return " ".join([failure.message, *failure.fields.general,
                     *(p for problems in failure.fields.by_field.values() for p in problems)])


@pytest.mark.parametrize("reply, kind, says, logged", [
    (aws_error(403, "AccessDeniedException", ACCESS_DENIED), "not_authorized",
     "The app is not authorized to call the SageMaker endpoint 'diagnosa' in eu-west-1", ACCESS_DENIED),
    (aws_error(400, "ExpiredTokenException", "The security token included in the request is expired"),
     "not_authorized", "its AWS credentials are missing, expired or invalid. Tell the administrator",
     "The security token included in the request is expired"),
    (aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid."),
     "not_authorized", "its AWS credentials are missing, expired or invalid", "UnrecognizedClientException"),
    (aws_error(403, "InvalidSignatureException", "The request signature we calculated does not match the signature "
                                                 "you provided."),
     "not_authorized", "its AWS credentials are missing, expired or invalid", "InvalidSignatureException"),
    (aws_error(400, "ValidationError", f"1 validation error detected in account {ACCOUNT}: Value at 'inferenceId' "
                                       "failed to satisfy constraint"),
     "failed", "could not give a diagnosis. Tell the administrator", f"validation error detected in account {ACCOUNT}"),
    ({"status": 200, "body": f"<html><body>Sign in to account {ACCOUNT}</body></html>".encode(),
      "headers": {"Content-Type": "text/html"}},
     "failed", "answered something that is not a diagnosis (not JSON)", f"Sign in to account {ACCOUNT}"),
    (model_error(415, json.dumps({"message": "Content type application/json is not supported"})), "rejected",
     "refused the request (HTTP 415)", None),
], ids=["access-denied", "expired-token", "unrecognized-client", "invalid-signature", "validation", "html", "model-415"])
def test_what_aws_says_of_the_apps_account_and_role_is_logged_not_shown(sagemaker, caplog, reply, kind, says, logged):
    # The page showed AccessDenied's text (the assumed role, the account id), SageMaker's ModelError Message (the
    # account and a CloudWatch URL), an HTML page's text.
    import logging

    with caplog.at_level(logging.INFO, logger="app.results"):
        outcome = _over_sagemaker(sagemaker, reply)
    page = _on_the_page(outcome)
    assert outcome.failure.kind == kind and says in outcome.failure.message, page
    assert ACCOUNT not in page and "arn:" not in page and "cloudwatch" not in page.lower() and "Sign in" not in page
    if logged:
        assert logged in caplog.text


@pytest.mark.parametrize("reply", [
    model_error(429, json.dumps({"code": 429, "message": "Too Many Requests: model worker queue is full"})),
    model_error(408, json.dumps({"error": "the body did not arrive in time: silent for 10 s"})),
    aws_error(429, "ModelNotReadyException", "Model for endpoint diagnosa variant AllTraffic is not ready; try again."),
    aws_error(400, "ThrottlingException", "Rate exceeded"),
], ids=["queue-full", "request-timeout", "model-not-ready", "throttled"])
def test_a_busy_endpoint_asks_the_doctor_to_ask_again_in_a_moment(sagemaker, reply):
    # The container's 429 read "refused the request... the configuration may not match"; ModelNotReady and throttling
    # read "could not give a diagnosis: ... ThrottlingException Rate exceeded".
    outcome = _over_sagemaker(sagemaker, reply)
    message = outcome.failure.message
    assert outcome.failure.kind == "unavailable" and "is busy or still starting: ask again in a moment" in message
    assert "refused" not in message and "Exception" not in message and not outcome.failure.fields.general


def test_no_aws_credentials_tell_the_doctor_to_tell_the_administrator(sagemaker, monkeypatch):
    sagemaker(answering(ANSWER))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    cfg = AppConfig("diagnosa", region="eu-west-1", attempts=1)
    failure = diagnose(make_client(cfg), {"age": 40}, cfg, load_form_spec(None)).failure
    assert failure.kind == "not_authorized" and "Tell the administrator" in failure.message
    assert "AWS_PROFILE" not in failure.message  # the doctor configures nothing


def _failing_credential_process(monkeypatch, tmp_path) -> None:
    """The AWS configuration of an app whose credential_process fails (an expired SSO login behind it)."""
    config = tmp_path / "aws-config"
    config.write_text('[default]\ncredential_process = /bin/sh -c "echo token expired >&2; exit 1"\n')
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


def test_a_failing_credential_provider_is_a_failure_not_an_exception(sagemaker, monkeypatch, tmp_path, caplog):
    # botocore resolves the credentials as it makes its client: make_client raised at page load.
    import logging

    from app.results import Failure, make_client_or_failure

    sagemaker(answering(ANSWER))
    _failing_credential_process(monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO, logger="app.results"):
        failure = make_client_or_failure(AppConfig("diagnosa", region="eu-west-1"))
    assert isinstance(failure, Failure) and failure.kind == "not_authorized"
    assert "its AWS credentials are missing, expired or invalid. Tell the administrator" in failure.message
    assert "token expired" in caplog.text and "custom-process" not in failure.message
    # A local endpoint checks no signature: a failing provider does not stop the app from calling it.
    assert not isinstance(make_client_or_failure(AppConfig(endpoint_url="http://127.0.0.1:8080")), Failure)


def test_an_answer_of_another_number_of_predictions_is_a_model_failure(sagemaker):
    outcome = _over_sagemaker(sagemaker, answering(ANSWER, ANSWER))
    assert not outcome.ok and outcome.failure.kind == "failed"
    assert "answered something that is not a diagnosis (it answered 2 predictions for 1 patient)" in \
        outcome.failure.message


@pytest.mark.parametrize("reply, kind, says, not_says", [
    (aws_error(400, "ValidationError", f"Endpoint diagnosa of account {ACCOUNT} not found."), "not_found",
     "SageMaker has no endpoint named 'diagnosa' in eu-west-1: check the app's endpoint name",
     "at the SageMaker endpoint"),
    (aws_error(503, "ServiceUnavailable", "The service is unavailable."), "unavailable",
     "SageMaker's service is unavailable at the moment", "loading"),
    ({**answering(ANSWER), "cut": True}, "unreachable",
     "The connection to the SageMaker endpoint 'diagnosa' in eu-west-1 broke after the request was sent", "down"),
    ({"close": True}, "unreachable", "broke after the request was sent", "address is wrong"),
], ids=["not-found", "service-unavailable", "cut-in-the-answer", "closed-before-the-answer"])
def test_each_failure_over_sagemaker_is_said_truly(sagemaker, reply, kind, says, not_says):
    # "There is no endpoint named 'diagnosa' at the SageMaker endpoint 'diagnosa'"; SageMaker's own 503 read "the
    # model may still be loading"; a connection broken after the request was sent read "down or the address is wrong".
    outcome = _over_sagemaker(sagemaker, reply)
    assert outcome.failure.kind == kind and says in outcome.failure.message, outcome.failure
    assert not_says not in outcome.failure.message and ACCOUNT not in outcome.failure.message


def test_a_slow_model_is_asked_once_per_click_and_waited_for_past_sagemakers_limit(sagemaker):
    # 10 s x 2 attempts, the read timeout retried: a model taking 10 to 60 s ran twice per click, and SageMaker's own
    # timeout answer (a ModelError at 60 s) was never waited for.
    import time

    handler = sagemaker({**answering(ANSWER), "delay": 2.5}, answering(ANSWER))
    cfg = AppConfig("diagnosa", region="eu-west-1", timeout=1, attempts=2)
    outcome = diagnose(make_client(cfg), {"age": 40}, cfg, load_form_spec(None))
    assert outcome.failure.kind == "timeout" and "did not answer within 1 s" in outcome.failure.message
    time.sleep(2)
    assert len(handler.received) == 1
    assert AppConfig().timeout == 70 and AppConfig.from_env({}).timeout == 70
    assert make_client(AppConfig("diagnosa", region="eu-west-1")).runtime.meta.config.read_timeout == 70


class _BuggyClient:
    """A client with a bug: its error quotes a patient's value, as a library's ValueError quotes the cell."""

    endpoint_url = "http://127.0.0.1:1"

    name, value = "Juana Pérez", "41.7 mg/L"

    def predict(self, *args, **kwargs):
        raise TypeError(f"cannot add {self.name!r} and {self.value!r}")

    def send_feedback(self, *args, **kwargs):
        raise KeyError(self.name)


def test_an_unexpected_error_is_logged_for_operators_without_the_patients_values(caplog):
    # The page named only the error's kind and nothing was logged: a bug in the doctors' path left no trace.
    from app.results import diagnose, record_feedback

    config = AppConfig(endpoint_url="http://127.0.0.1:1")
    with caplog.at_level("ERROR", logger="app.results"):
        outcome = diagnose(_BuggyClient(), {"age": 40}, config, load_form_spec(None))
        feedback = record_feedback(_BuggyClient(), "e-1", "NO ENFERMO", None, config)
    assert outcome.failure is not None and "(TypeError)" in outcome.failure.message
    assert feedback.message == "The confirmed diagnosis was not recorded (KeyError)."
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and "Traceback" in logged[0] and "builtins.TypeError" in logged[0], logged
    assert "builtins.KeyError" in logged[1] and not any("Juana" in m or "41.7" in m for m in logged), logged
