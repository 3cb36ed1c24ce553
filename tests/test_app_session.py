"""The doctors' app across patients and against faulty endpoints, driven with Streamlit's ``AppTest``.

The endpoint is a small scripted HTTP server on a free port (answers given in the test, what it was sent recorded):
what a faulty or hostile endpoint sends cannot be had from the real one. The form is the built-in cohort's or a
model folder's ``metadata.json`` written here (the app reads nothing else of a model).
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from markdown_source import outside_code, read_as
from streamlit.testing.v1 import AppTest

from app.results import Outcome
from diagnosa.labels import CATEGORIES
from inference.feedback import MAX_NOTE

SCRIPT = str(Path(__file__).resolve().parents[1] / "app" / "web" / "diagnosa_app.py")


def answer(category: str = "ENFERMEDAD AGUDA", **extra: Any) -> dict[str, Any]:
    """A well-formed prediction of the cohort's five categories, ``category`` the most probable."""
    probabilities = {c: (0.6 if c == category else 0.1) for c in CATEGORIES}
    top = sorted(probabilities, key=lambda c: -probabilities[c])[:3]
    return {"patient_id": "p", "category": category, "probabilities": probabilities,
            "top_k": [{"category": c, "probability": probabilities[c]} for c in top], "model_version": "v1", **extra}


@dataclass
class Scripted:
    """What the fake endpoint answers, in turn (the last one repeated), and what it was sent."""

    answers: list[tuple[int, Any]] = field(default_factory=list)  # (status, body) of /invocations
    invocations: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    counter: int = 0
    replaced: Any = None  # the /feedback reply's "replaced": the earlier record of the case, null for its first


@pytest.fixture(name="endpoint")
def endpoint_fixture() -> Iterator[tuple[str, Scripted]]:
    """A scripted fake endpoint on a free port (tests/test_app_paste.py uses it too)."""
    script = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/feedback":
                script.feedback.append(data)
                self._send(201, {"event_id": data.get("event_id"), "key": f"feedback/x/{len(script.feedback)}.json",
                                 "replaced": script.replaced})
                return
            script.invocations.append(data)
            status, body = script.answers[min(len(script.invocations), len(script.answers)) - 1]
            script.counter += 1
            self._send(status, body, {"X-Diagnosa-Event-Id": f"event-{script.counter}"} if status == 200 else {})

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()


def _app(monkeypatch, url: str | None, model: Path | None = None, **env: str) -> AppTest:
    for name in ("ENDPOINT_URL", "ENDPOINT_NAME", "MODEL", "REGION", "LAKE", "TOP_K", "DIFFERENTIAL"):
        monkeypatch.delenv(f"DIAGNOSA_APP_{name}", raising=False)
    if url:
        monkeypatch.setenv("DIAGNOSA_APP_ENDPOINT_URL", url)
    if model:
        monkeypatch.setenv("DIAGNOSA_APP_MODEL", str(model))
    monkeypatch.setenv("DIAGNOSA_APP_ATTEMPTS", "1")
    monkeypatch.setenv("DIAGNOSA_APP_TIMEOUT", "5")
    for name, value in env.items():
        monkeypatch.setenv(f"DIAGNOSA_APP_{name}", value)
    at = AppTest.from_file(SCRIPT, default_timeout=60).run()
    assert not at.exception, at.exception
    at.checkbox(key="policy_accepted").check().run()
    return at


def _text(values) -> list[str]:
    """Messages as the doctor reads them (the app writes them as markdown that shows as written)."""
    return [read_as(e.value) for e in values]


def _submit(at: AppTest, **values: str) -> AppTest:
    for name, value in values.items():
        at.text_input(key=f"in-{name}").input(value)
    return at.button(key="submit").click().run()


# ------------------------------------------------------------------------------------------------ 1. across patients

def test_the_previous_patients_confirmed_diagnosis_is_not_offered_for_the_next(monkeypatch, endpoint):
    # Patient A's confirmed diagnosis, disease id and note stayed selected: pressing Record for patient B filed A's
    # answers under B's case reference.
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer("ENFERMEDAD AGUDA")]}),
                      (200, {"predictions": [answer("NO ENFERMO")]})]
    at = _submit(_app(monkeypatch, url), age="67")
    assert at.text_input(key="fb-event").value == "event-1"
    at.selectbox(key="fb-diagnosis").select("ENFERMEDAD AGUDA")
    at.text_input(key="fb-disease").input("ORPHA:558")
    at.text_area(key="fb-note").input("patient A: confirmed by PCR")
    at.button(key="fb-submit").click().run()
    assert [f["event_id"] for f in script.feedback] == ["event-1"] and at.success
    assert at.selectbox(key="fb-diagnosis").value is None  # recorded: cleared
    assert not at.text_input(key="fb-disease").value and not at.text_area(key="fb-note").value

    at.selectbox(key="fb-diagnosis").select("ENFERMEDAD CRÓNICA")  # chosen, not recorded, then the next patient
    at.text_area(key="fb-note").input("about A")
    at.run()
    _submit(at, age="8")
    assert at.text_input(key="fb-event").value == "event-2"
    assert at.selectbox(key="fb-diagnosis").value is None and not at.text_area(key="fb-note").value
    at.button(key="fb-submit").click().run()  # nothing chosen: nothing sent
    assert len(script.feedback) == 1 and any("Choose the confirmed diagnosis" in e for e in _text(at.error))
    # Beside the form: which case the reference belongs to (its time and predicted category).
    assert any("NO ENFERMO" in c for c in _text(at.caption) if "The diagnosis given at" in c)
    at.text_input(key="fb-event").input("event-1")
    at.button(key="fb-submit").click().run()
    assert any("typed in: an earlier case" in c for c in _text(at.caption))


@pytest.mark.parametrize("failing", ["refused", "not a number", "empty"])
def test_a_request_that_fails_leaves_no_earlier_case_reference(monkeypatch, endpoint, failing):
    # After patient A's diagnosis, patient B's request failed (a 400, a value not a number, nothing to send): the
    # form kept A's case reference beside B's values, and B's confirmed diagnosis was filed under A.
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer()]}),
                      (400, {"error": "1 problem(s)", "errors": [{"row": 0, "field": "age", "problem": "impossible"}]})]
    at = _submit(_app(monkeypatch, url), age="67")
    assert at.text_input(key="fb-event").value == "event-1"
    _submit(at, age={"refused": "400", "not a number": "8 0", "empty": ""}[failing])
    assert not at.text_input(key="fb-event").value
    at.selectbox(key="fb-diagnosis").select("NO ENFERMO")
    at.button(key="fb-submit").click().run()
    assert script.feedback == [] and any("case reference" in e for e in _text(at.error))


# ------------------------------------------------------------------------------------------------ 3. SageMaker

def test_over_sagemaker_a_confirmed_diagnosis_is_recorded_under_the_predictions_inference_id(monkeypatch, tmp_path):
    # SageMaker returns no X-Diagnosa-Event-Id: the form had no case reference to record against (and refused every
    # label of a model of one's own data). The app records under the inference id it gave the prediction, which the
    # capture keeps and the monitor joins (tests/test_monitor.py); without a lake to write to, it says what is needed.
    from diagnosa.lake import DataLake
    from inference.feedback import read_feedback

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    at = _app(monkeypatch, None, REGION="eu-west-1")
    assert not [b for b in at.button if b.key == "fb-submit"]
    assert any("needs the data lake it goes to" in i and "--feedback-lake" in i for i in _text(at.info))

    with sagemaker_answering(answer()) as sent:
        at = _submit(_app(monkeypatch, None, REGION="eu-west-1", LAKE=str(tmp_path / "lake")), age="67")
        [inference_id] = sent  # what SageMaker received, as botocore sent it
        caption = [c for c in _text(at.get_by_key("result").caption) if "Model version" in c][0]
        assert f"case reference {inference_id}" in caption and at.text_input(key="fb-event").value == inference_id
        at.selectbox(key="fb-diagnosis").select("ENFERMEDAD LEVE")
        at.button(key="fb-submit").click().run()
        assert at.success and not at.error
    stored = read_feedback(DataLake.from_uri(str(tmp_path / "lake")), "diagnosa").latest
    assert {k: v.diagnosis for k, v in stored.items()} == {(inference_id, None): "ENFERMEDAD LEVE"}


@contextmanager
def sagemaker_answering(*predictions: dict[str, Any]) -> Iterator[list[str]]:
    """SageMaker Runtime under moto answering ``predictions`` in turn, through the app's real botocore client; yields
    the X-Amzn-SageMaker-Inference-Id of each InvokeEndpoint request as botocore sent it (moto keeps no header)."""
    import boto3
    from moto import mock_aws
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    sent: list[str] = []
    with mock_aws():
        boto3.setup_default_session()
        boto3.DEFAULT_SESSION.events.register(
            "before-send.sagemaker-runtime.InvokeEndpoint",
            lambda request, **_: sent.append((request.headers.get("X-Amzn-SageMaker-Inference-Id") or b"").decode()))
        queue = sagemakerruntime_backends["123456789012"]["eu-west-1"].results_queue
        queue.extend((json.dumps({"predictions": [p]}), "application/json", "AllTraffic", "") for p in predictions)
        try:
            yield sent
        finally:
            boto3.DEFAULT_SESSION = None


# ------------------------------------------------------------------------------------------------ 4, 5. bad answers

@pytest.mark.parametrize("body", [
    {"predictions": [{}]},
    {"predictions": "abc"},
    {"predictions": [None]},
    {"predictions": [answer() | {"probabilities": {"ENFERMEDAD AGUDA": None}}]},
    {"predictions": [answer() | {"probabilities": {"ENFERMEDAD AGUDA": 7.5, "NO ENFERMO": -2}}]},
    {"predictions": [answer() | {"top_k": [{"category": "ENFERMEDAD AGUDA"}]}]},
    {"predictions": [answer() | {"differential": [{"name": "A", "score": 0.5}]}]},
    {"predictions": [answer() | {"category": "ENFERMEDAD TERMINAL",
                                 "probabilities": {"NO ENFERMO": 0.9, "ENFERMEDAD LEVE": 0.1}}]},
], ids=["empty", "text", "null", "null-probability", "out-of-range", "top-k-incomplete", "differential-incomplete",
        "category-without-probability"])
def test_an_answer_that_is_not_a_diagnosis_is_a_clear_failure(monkeypatch, endpoint, body):
    url, script = endpoint
    script.answers = [(200, body)]
    at = _submit(_app(monkeypatch, url), age="67")
    assert not at.exception, at.exception
    errors = _text(at.error)
    assert any("answered something that is not a diagnosis" in e or "without a list of predictions" in e
               for e in errors), errors
    assert not [n for n in at.get("flex_container") if getattr(n, "key", None) == "result"]
    assert at.button(key="fb-submit") and not at.text_input(key="fb-event").value


def test_an_answer_with_nan_is_a_clear_failure(monkeypatch, endpoint):
    url, script = endpoint
    script.answers = [(200, json.dumps({"predictions": [answer()]}).replace("0.6", "NaN").encode())]
    at = _submit(_app(monkeypatch, url), age="67")
    assert not at.exception and any("not a diagnosis" in e and "nan" in e for e in _text(at.error))
    assert not any("nan %" in m.value for m in at.markdown)


def test_a_result_that_cannot_be_shown_leaves_the_feedback_form(monkeypatch, endpoint):
    # An exception in the result hid the feedback form and came back on every click until New patient.
    url, _ = endpoint
    at = _app(monkeypatch, url)
    at.session_state["outcome"] = Outcome(result={"category": "A", "probabilities": {"A": "high"}}, event_id="e")
    at.run()
    assert not at.exception, at.exception
    assert any("cannot be shown" in e for e in _text(at.error)) and at.button(key="fb-submit")


def test_a_category_the_forms_model_does_not_have_is_refused_not_shown_as_a_diagnosis(monkeypatch, endpoint):
    # It was shown as the diagnosis (headline, chart, the confirmed-diagnosis form) with one red line under it.
    url, script = endpoint
    script.answers = [(200, {"predictions": [{"category": "MARTIAN FLU", "probabilities": {"MARTIAN FLU": 0.7,
                                                                                          "NO ENFERMO": 0.3},
                                              "top_k": [{"category": "MARTIAN FLU", "probability": 0.7}]}]})]
    at = _submit(_app(monkeypatch, url), age="67")
    assert not at.exception, at.exception
    assert any("answered with another model's categories" in e and "'MARTIAN FLU'" in e for e in _text(at.error))
    assert "result" not in {getattr(element, "key", None) for element in at.main}  # no result shown
    assert not at.session_state["fb-event"]  # the confirmed-diagnosis form is not filled in for it


# ------------------------------------------------------------------------------------------------ 2. ignored inputs

BYOD_SCHEMA = {"exclude": [], "labels": ["sano", "leve 🙂", "grave*"], "name": "my_data", "slice_column": None,
               "missing_values": ["NA"], "fields": [
                   {"name": "caso", "required": True, "role": "id", "type": "string"},
                   {"max": 120, "min": 0, "name": "edad", "role": "feature", "type": "integer", "unit": "años"},
                   {"name": "region", "role": "feature", "type": "category"},
                   {"name": "resultado", "required": True, "role": "target", "type": "category",
                    "values": ["sano", "leve 🙂", "grave*"]}]}


@pytest.fixture
def byod_model(tmp_path) -> Path:
    """A model folder of a dataset of one's own (its metadata.json: all the app reads): a category 'region' the
    model learned three values of, no rare-disease slice."""
    folder = tmp_path / "byod"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({
        "schema": BYOD_SCHEMA, "labels": BYOD_SCHEMA["labels"], "dataset": {"name": "my_data"},
        "feature_names": ["numeric__edad", "categorical__region_Pediatría", "categorical__region_norte",
                          "categorical__region_sur"]}), encoding="utf-8")
    return folder


def test_inputs_the_model_ignored_are_shown_under_their_field(monkeypatch, endpoint, byod_model):
    # The endpoint's unknown_values and unused_codes were dropped: a typo'd category changed nothing, silently.
    url, script = endpoint
    result = {"category": "sano", "probabilities": {"sano": 0.9, "leve 🙂": 0.05, "grave*": 0.05},
              "top_k": [{"category": "sano", "probability": 0.9}], "unknown_values": {"region": "Norte"}}
    script.answers = [(200, {"predictions": [result]})]
    at = _app(monkeypatch, url, byod_model)
    region = at.selectbox(key="in-region")  # the values the model learned offered (another may be typed)
    assert list(region.options) == ["Pediatría", "norte", "sur"] and region.value is None
    region.select("sur")
    _submit(at, edad="45")
    assert script.invocations[-1]["instances"] == [{"edad": 45, "region": "sur"}]
    # What the endpoint said it did not know, under the field, with the values it knows (AppTest cannot type a value
    # that is not listed; the endpoint's word is what is shown).
    assert _text(at.get_by_key("field-region").warning) == [
        "'Norte' is not a value the model knows: it was counted as none of them, which changes the diagnosis "
        "(known: Pediatría, norte, sur). Check the spelling."]
    assert not at.get_by_key("field-edad").warning


def test_codes_typed_into_the_list_are_sent_in_upper_case_and_unlearned_ones_are_said(monkeypatch, endpoint):
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer(unused_codes={"prior_diagnoses": ["Q87.4"]})]})]
    at = _app(monkeypatch, url)
    at.multiselect(key="in-prior_diagnoses").set_value([" i10", "q87.4"])
    _submit(at, age="60")
    assert script.invocations[-1]["instances"][0]["prior_diagnoses"] == ["I10", "Q87.4"]
    assert _text(at.get_by_key("field-prior_diagnoses").warning) == [
        "Q87.4: not learned by the model (too rare in its training data), so it changed nothing in the diagnosis."]


# ------------------------------------------------------------------------------------------------ 14. minor

def test_the_feedback_form_fits_the_endpoint_and_the_model(monkeypatch, endpoint, byod_model):
    url, script = endpoint
    at = _app(monkeypatch, url)
    note = at.text_area(key="fb-note")  # no widget limit: a paste over it would be dropped whole, silently
    assert not note.max_chars and f"{MAX_NOTE:,} characters" in note.help  # 0: none
    assert at.text_input(key="fb-disease")
    byod = _app(monkeypatch, url, byod_model)  # no rare-disease slice: no disease id asked
    assert not [w for w in byod.text_input if w.key == "fb-disease"]
    assert list(byod.selectbox(key="fb-diagnosis").options) == BYOD_SCHEMA["labels"]


def test_the_endpoints_model_version_and_event_id_cannot_format_the_caption(monkeypatch, endpoint):
    url, _ = endpoint
    at = _app(monkeypatch, url)
    at.session_state["outcome"] = Outcome(result=answer(model_version="`x` [a](http://e.x)"), event_id="e`1")
    at.run()
    caption = [c.value for c in at.get_by_key("result").caption if "Model version" in c.value][0]
    outside = outside_code(caption)  # a code span shows its text as written
    assert "](" not in outside and "`" not in outside.replace("\\`", "")
    assert read_as(caption).endswith("Model version `x` [a](http://e.x) · case reference e`1")


# ------------------------------------------------------------------------------------------------ replaced records

def _recorded(at: AppTest) -> tuple[list[str], list[str]]:
    """The feedback's "recorded" messages: (successes, warnings)."""
    return ([m for m in _text(at.success) if m.startswith("Confirmed diagnosis recorded")],
            [m for m in _text(at.warning) if m.startswith("Confirmed diagnosis recorded")])


def test_a_confirmed_diagnosis_that_replaced_an_earlier_record_says_so(monkeypatch, endpoint):
    # A doctor recording a confirmed diagnosis for a case that had one (perhaps another doctor's) read the same
    # "Confirmed diagnosis recorded" as for the first: never told that an earlier record was replaced.
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer()]})]
    at = _submit(_app(monkeypatch, url), age="67")

    def record() -> tuple[list[str], list[str]]:
        at.selectbox(key="fb-diagnosis").select("ENFERMEDAD AGUDA")
        at.button(key="fb-submit").click().run()
        return _recorded(at)

    assert record() == (["Confirmed diagnosis recorded (feedback/x/1.json)."], [])
    script.replaced = {"diagnosis": "ENFERMEDAD LEVE", "disease_id": "ORPHA:558",
                       "received_at": "2026-11-27T10:05:30.000000+00:00", "same": False, "unreadable": False}
    assert record() == ([], ["Confirmed diagnosis recorded (feedback/x/2.json). It replaced an earlier record: "
                             "ENFERMEDAD LEVE (ORPHA:558), received 2026-11-27 10:05 UTC."])
    script.replaced = {"unreadable": True}
    assert record() == ([], ["Confirmed diagnosis recorded (feedback/x/3.json). It replaced an earlier record that "
                             "could not be read: what it said is not known."])
    # What the endpoint says of the earlier record is text: it cannot format or link.
    script.replaced = {"diagnosis": "[x](http://evil.example) **bold**", "received_at": None}
    record()
    [warning] = [w.value for w in at.warning if "Confirmed diagnosis recorded" in w.value]
    assert "](" not in outside_code(warning) and "\\*\\*bold\\*\\*" in warning
    assert "replaced an earlier record: [x](http://evil.example) **bold**" in read_as(warning)


def test_a_note_over_the_limit_is_refused_by_name_kept_and_nothing_is_sent(monkeypatch, endpoint):
    # The note box had max_chars: a longer paste (a discharge letter) was dropped whole, with no word.
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer()]})]
    at = _submit(_app(monkeypatch, url), age="67")
    before = len(script.feedback)
    letter = "Biopsia compatible. " * 60  # 1,200 characters
    at.selectbox(key="fb-diagnosis").select("ENFERMEDAD AGUDA")
    at.text_area(key="fb-note").set_value(letter)
    at.button(key="fb-submit").click().run()
    assert len(script.feedback) == before  # nothing sent
    assert any("note" in e.value and str(MAX_NOTE) in e.value for e in at.error), [e.value for e in at.error]
    assert at.text_area(key="fb-note").value == letter  # kept, to be shortened


def test_a_second_record_written_to_the_lake_says_what_it_replaced(monkeypatch, tmp_path):
    # Over SageMaker the client writes to the lake itself: store_feedback's answer reaches the doctor the same way.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with sagemaker_answering(answer()) as sent:
        at = _submit(_app(monkeypatch, None, REGION="eu-west-1", LAKE=str(tmp_path / "lake")), age="67")
        recorded = f"Confirmed diagnosis recorded (feedback/diagnosa/events/{sent[0]}.json)."
        said = []
        for diagnosis in ("ENFERMEDAD LEVE", "ENFERMEDAD LEVE", "NO ENFERMO"):
            at.selectbox(key="fb-diagnosis").select(diagnosis)
            at.button(key="fb-submit").click().run()
            said.append(_recorded(at))
    assert said[0] == ([recorded], [])
    when = r" received \d{4}-\d\d-\d\d \d\d:\d\d UTC\."
    assert not said[1][0] and re.fullmatch(re.escape(f"{recorded} It replaced an earlier record of the same diagnosis: "
                                                     "ENFERMEDAD LEVE,") + when, said[1][1][0])
    assert not said[2][0] and re.fullmatch(re.escape(f"{recorded} It replaced an earlier record: ENFERMEDAD LEVE,")
                                           + when, said[2][1][0])


# ------------------------------------------------------------------------------------------------ pasted values

def test_a_measurement_too_long_is_refused_under_its_field_and_not_sent(monkeypatch, endpoint):
    # The field took at most 24 characters: Chromium's paste of a longer lab line was dropped whole (the field stayed
    # empty) and the lab went as not recorded (tests/test_app_paste.py drives the paste in Chromium).
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer()]})]
    at = _app(monkeypatch, url)
    assert not at.text_input(key="in-wbc_10e9_l").max_chars  # the widget keeps whatever is pasted
    _submit(at, age="67", wbc_10e9_l="15.2 10^9/L (ref 4.0-11.0)")
    assert script.invocations == []
    assert _text(at.get_by_key("field-wbc_10e9_l").error) == [
        "'15.2 10^9/L (ref 4.0-11.0)' is too long for White blood cells: a measurement takes at most 24 characters "
        "(this is 26); write only the number (its unit, 10^9/L, may follow it)"]
    assert at.text_input(key="in-wbc_10e9_l").value == "15.2 10^9/L (ref 4.0-11.0)"  # kept, to be corrected
    _submit(at, wbc_10e9_l="15.2 10^9/L")
    assert script.invocations[-1]["instances"] == [{"age": 67, "wbc_10e9_l": 15.2}]


# ------------------------------------------------------------------------------------------------ stale result

def test_a_result_says_when_the_values_changed_since_it_was_asked_for(monkeypatch, endpoint):
    # The symptoms are chosen outside the form: adding one left the diagnosis of the values before beside them.
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer()]})]
    at = _submit(_app(monkeypatch, url), age="67")

    def stale() -> bool:
        return any("The values have changed since this diagnosis" in c for c in _text(at.get_by_key("result").warning))

    assert not stale()
    at.session_state["symptoms"] = ["HP:0001945"]  # as the symptom picker's add button does
    at.run()
    assert stale()
    at.session_state["symptoms"] = []  # removed again: the values of the diagnosis
    at.run()
    assert not stale()
    at.session_state["symptoms"] = ["HP:0001945"]
    _submit(at)  # asked again: the result is of these values
    assert not stale() and script.invocations[-1]["instances"][0]["symptoms"] == ["HP:0001945"]
    at.button(key="new-patient").click().run()
    assert "outcome_values" not in at.session_state


# ------------------------------------------------------------------------------------------------ 6. AWS credentials

from test_client import ANSWER, answering, sagemaker_fixture  # noqa: E402, F401  (the fixture "sagemaker")


def test_credentials_that_cannot_be_obtained_leave_the_form_and_say_whom_to_tell(monkeypatch, tmp_path, sagemaker):
    # A credential_process exiting 1 (an expired SSO login behind it): botocore raised as the client was made, at page
    # load, and the page showed only the exception's name, no form.
    handler = sagemaker(answering(ANSWER))
    config = tmp_path / "aws-config"
    config.write_text('[default]\ncredential_process = /bin/sh -c "echo token expired >&2; exit 1"\n')
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    # An endpoint name of its own: a client another test made for its configuration is kept (st.cache_resource).
    at = _app(monkeypatch, None, REGION="eu-west-1", ENDPOINT_NAME="no-credentials")  # no exception: the page renders
    said = "its AWS credentials are missing, expired or invalid. Tell the administrator"
    assert any(said in e for e in _text(at.error)) and at.button(key="submit")
    at = _submit(at, age="67")
    assert not at.exception, at.exception
    assert any(said in e for e in _text(at.error)) and at.text_input(key="in-age").value == "67"
    assert not handler.received  # nothing was sent


def test_probabilities_that_do_not_sum_to_one_are_no_diagnosis(monkeypatch, endpoint):
    # 0.95, 0.9 and 0.8 were shown as they came, each category 'probable'.
    url, script = endpoint
    script.answers = [(200, {"predictions": [answer("ENFERMEDAD LEVE") | {
        "probabilities": {"NO ENFERMO": 0.95, "ENFERMEDAD LEVE": 0.9, "ENFERMEDAD AGUDA": 0.8},
        "top_k": [{"category": "NO ENFERMO", "probability": 0.95}]}]})]
    at = _submit(_app(monkeypatch, url), age="67")
    assert not at.exception, at.exception
    assert any("not a diagnosis (its probabilities sum to 2.65, not 1)" in e for e in _text(at.error)), _text(at.error)
    assert not [n for n in at.get("flex_container") if getattr(n, "key", None) == "result"]
