"""The doctors' app driven through Streamlit's testing API against a real local endpoint.

Only slowness and a down endpoint are simulated (a tiny server that answers late, a closed port).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from markdown_source import outside_code, read_as
from streamlit.testing.v1 import AppTest

from diagnosa.labels import CATEGORIES

SCRIPT = str(Path(__file__).resolve().parents[1] / "app" / "web" / "diagnosa_app.py")
PATIENT = {"age": 67, "temperature_c": 38.9, "heart_rate_bpm": 112.0, "spo2_pct": 90.0, "crp_mg_l": 180.0}


@pytest.fixture(scope="module")
def endpoint(local_endpoint):
    return local_endpoint


@pytest.fixture(scope="module")
def two_label_endpoint(two_label_model_dir):
    """The local endpoint serving a model of two labels (a dataset of the user's own, not the cohort's five)."""
    from inference.server import EndpointServer

    with EndpointServer(str(two_label_model_dir)) as ep:
        ep.wait_until_ready()
        yield ep


class _Counting(BaseHTTPRequestHandler):
    """An endpoint stand-in that counts requests and answers after ``delay`` seconds (or never in time)."""

    delay = 0.0
    requests: list[str] = []

    def do_POST(self):  # noqa: N802
        self.requests.append(self.path)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        try:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def counting_endpoint():
    servers = []

    def start(delay: float = 0.0):
        handler = type("Handler", (_Counting,), {"delay": delay, "requests": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler.requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _app(monkeypatch, url: str, model_dir, timeout: float = 10.0) -> AppTest:
    monkeypatch.setenv("DIAGNOSA_APP_ENDPOINT_URL", url)
    monkeypatch.setenv("DIAGNOSA_APP_MODEL", str(model_dir))
    monkeypatch.setenv("DIAGNOSA_APP_TIMEOUT", str(timeout))
    monkeypatch.setenv("DIAGNOSA_APP_ATTEMPTS", "1")
    at = AppTest.from_file(SCRIPT, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def _fill(at: AppTest, values: dict, symptom_query: str | None = "fever", symptom: str = "HP_0001945") -> AppTest:
    if symptom_query:
        at.text_input(key="symptom_query").input(symptom_query).run()
        at.button(key=f"add-{symptom}").click().run()
    for name, value in values.items():
        at.text_input(key=f"in-{name}").input(str(value))  # typed as text (a decimal comma is a decimal point)
    at.selectbox(key="in-sex").select("M")
    return at


def _errors(node) -> list[str]:
    """The error messages as the doctor reads them (the app writes them as markdown that shows as written)."""
    return [read_as(e.value) for e in node.error]


def test_nothing_is_sent_until_the_policy_is_accepted(monkeypatch, counting_endpoint, trained_model_dir):
    url, requests = counting_endpoint()
    at = _fill(_app(monkeypatch, url, trained_model_dir), PATIENT).run()
    submit = at.button(key="submit")
    assert submit.disabled
    assert any("Accept the data-use policy" in i.value for i in at.info)
    with pytest.raises(Exception, match="disabled"):
        submit.click()
    assert requests == []
    at.checkbox(key="policy_accepted").check().run()
    assert not at.button(key="submit").disabled
    at.button(key="submit").click().run()
    assert requests == ["/endpoints/diagnosa/invocations"]  # accepted: exactly one call


def test_a_valid_patient_gets_a_diagnosis(monkeypatch, endpoint, trained_model_dir):
    at = _app(monkeypatch, endpoint.url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    assert [b.label for b in at.get_by_key("field-symptoms").button] == []
    _fill(at, PATIENT)
    assert at.button(key="remove-HP_0001945").label == "Fever"
    at.button(key="submit").click().run()
    assert not at.exception and not _errors(at)
    result = at.get_by_key("result")
    headline = [m.value for m in result.markdown if m.value.startswith("### ")][0]
    assert any(category in headline for category in CATEGORIES) and "%" in headline
    assert "supports and does not replace clinical judgement" in result.warning[0].value
    assert len(result.table[0].value) == 3  # top-k
    assert any("vega_lite" in str(getattr(node, "type", "")) for node in result)  # the probability chart
    caption = [re.sub(r"\\(.)", r"\1", c.value) for c in result.caption if "Model version" in c.value][0]
    assert [m.value for m in at.get_by_key("differential").markdown][0] == "**Decision support — not a diagnosis**"
    assert "Model version" in caption and "case reference" in caption
    assert at.text_input(key="fb-event").value in caption  # the feedback form knows the case


def test_an_invalid_value_shows_the_endpoints_error_next_to_the_field(monkeypatch, endpoint, trained_model_dir):
    at = _app(monkeypatch, endpoint.url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT | {"heart_rate_bpm": 400.0}).button(key="submit").click().run()
    assert _errors(at.get_by_key("field-heart_rate_bpm")) == ["impossible value 400 (possible range 20 to 250 beats/min)"]
    assert _errors(at.get_by_key("field-age")) == []
    assert any("did not accept these values" in e for e in _errors(at))
    assert not [n for n in at.get("flex_container") if getattr(n, "key", None) == "result"]
    at.text_input(key="in-heart_rate_bpm").input("112")
    at.button(key="submit").click().run()
    assert _errors(at) == [] and at.get_by_key("result")


def test_an_endpoint_that_is_down_gets_a_clear_message(monkeypatch, trained_model_dir):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    at = _app(monkeypatch, url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT, symptom_query=None).button(key="submit").click().run()
    assert any(e.startswith("Cannot reach the local endpoint") and "running" in e for e in _errors(at))


def test_a_slow_endpoint_gets_its_own_message(monkeypatch, counting_endpoint, trained_model_dir):
    url, requests = counting_endpoint(delay=2.0)
    at = _app(monkeypatch, url, trained_model_dir, timeout=0.5)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT, symptom_query=None).button(key="submit").click().run()
    assert any("did not answer within 0.5 s" in e for e in _errors(at))
    assert len(requests) == 1


def test_no_patient_value_reaches_the_logs(monkeypatch, endpoint, trained_model_dir, caplog):
    caplog.set_level(logging.DEBUG)
    at = _app(monkeypatch, endpoint.url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT | {"temperature_c": 39.37, "crp_mg_l": 123.45}).button(key="submit").click().run()
    assert at.get_by_key("result")
    assert "39.37" not in caplog.text and "123.45" not in caplog.text
    assert "HP:0001945" not in caplog.text


def test_new_patient_clears_the_form_and_the_result(monkeypatch, endpoint, trained_model_dir):
    at = _app(monkeypatch, endpoint.url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT).button(key="submit").click().run()
    at.button(key="new-patient").click().run()
    assert not at.text_input(key="in-age").value and "symptoms" not in at.session_state
    assert not [n for n in at.get("flex_container") if getattr(n, "key", None) == "result"]
    assert at.checkbox(key="policy_accepted").value  # the policy stays accepted for the session


def test_the_confirmed_diagnosis_is_recorded_through_the_feedback_route(monkeypatch, trained_model_dir, tmp_path):
    from diagnosa.lake import DataLake
    from inference.capture import DataCapture
    from inference.server import EndpointServer

    lake = DataLake.from_uri(str(tmp_path / "lake"))
    with EndpointServer(str(trained_model_dir), capture=DataCapture(lake, "diagnosa")) as ep:
        ep.wait_until_ready()
        at = _app(monkeypatch, ep.url, trained_model_dir)
        at.checkbox(key="policy_accepted").check().run()
        _fill(at, PATIENT).button(key="submit").click().run()
        event_id = at.text_input(key="fb-event").value
        assert event_id
        at.button(key="fb-submit").click().run()  # no diagnosis chosen: nothing is assumed, nothing sent
        assert not at.success and any("Choose the confirmed diagnosis" in e for e in _errors(at))
        assert not lake.list("feedback/")
        at.selectbox(key="fb-diagnosis").select("ENFERMEDAD CRÓNICA")
        at.text_input(key="fb-disease").input("ORPHA:558")
        at.text_area(key="fb-note").input("confirmed at follow-up")
        at.button(key="fb-submit").click().run()
        assert any("Confirmed diagnosis recorded" in s.value for s in at.success), [e.value for e in at.error]
        stored = [k for k in lake.list("feedback/")]
        records = [json.loads(lake.get_bytes(k)) for k in stored]
        assert [(r["event_id"], r["diagnosis"], r.get("disease_id")) for r in records] == [
            (event_id, "ENFERMEDAD CRÓNICA", "ORPHA:558")]
        # Recorded: the answers are cleared, not offered again for the next case; the reference stays for a correction.
        assert at.selectbox(key="fb-diagnosis").value is None and not at.text_area(key="fb-note").value
        assert not at.text_input(key="fb-disease").value and at.text_input(key="fb-event").value == event_id
        at.text_input(key="fb-event").input("not an event!")
        at.selectbox(key="fb-diagnosis").select("ENFERMEDAD CRÓNICA")
        at.button(key="fb-submit").click().run()
        assert not at.success and any("not recorded" in e for e in _errors(at))
        assert any("X-Diagnosa-Event-Id" in e for e in _errors(at))  # the field's problem, next to the field


def test_the_confirmed_diagnosis_offers_the_served_models_labels(monkeypatch, two_label_endpoint, two_label_model_dir):
    at = _app(monkeypatch, two_label_endpoint.url, two_label_model_dir)
    assert at.selectbox(key="fb-diagnosis").options == ["NO ENFERMO", "ENFERMO"]


@pytest.mark.parametrize("top_k", [None, "3"])
def test_a_model_of_two_labels_gets_a_diagnosis(monkeypatch, two_label_endpoint, two_label_model_dir, top_k):
    if top_k:  # what `diagnosa app` sent by default: more categories than the model has
        monkeypatch.setenv("DIAGNOSA_APP_TOP_K", top_k)
    at = _app(monkeypatch, two_label_endpoint.url, two_label_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT).button(key="submit").click().run()
    assert not at.exception and _errors(at) == []
    result = at.get_by_key("result")
    assert [row["category"] for row in result.table[0].value.to_dict("records")] in (
        ["NO ENFERMO", "ENFERMO"], ["ENFERMO", "NO ENFERMO"])


def test_a_value_that_is_not_a_number_is_shown_under_its_field_and_nothing_is_sent(monkeypatch, counting_endpoint,
                                                                                  trained_model_dir):
    # The browser's number field dropped what was not a digit: "112 bpm" went as 112, "15,2" as 152.
    url, requests = counting_endpoint()
    at = _app(monkeypatch, url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, PATIENT | {"heart_rate_bpm": "112 lpm", "wbc_10e9_l": "1,500"}, symptom_query=None)
    at.button(key="submit").click().run()
    assert requests == []
    assert _errors(at.get_by_key("field-heart_rate_bpm")) == [
        "'112 lpm' is not a number: write the value in beats/min with digits and at most one decimal mark, e.g. "
        "38.9 or 38,9 (no thousands separators)"]
    assert "could be 1500 or 1.5" in _errors(at.get_by_key("field-wbc_10e9_l"))[0]
    assert _errors(at.get_by_key("field-age")) == []
    # On a phone the fields marked in red are a screen or more above the message: it names them, in the form's order.
    assert "Nothing was sent: correct the fields marked in red (Heart rate (beats/min), White blood cells (10^9/L)) " \
           "and ask again." in _errors(at)
    at.text_input(key="in-heart_rate_bpm").input("112 beats/min")
    at.text_input(key="in-wbc_10e9_l").input("15,2")
    at.button(key="submit").click().run()
    assert len(requests) == 1 and not _errors(at.get_by_key("field-heart_rate_bpm"))


def test_a_form_made_for_another_model_does_not_blame_the_fields(monkeypatch, endpoint, trained_model_dir, tmp_path):
    # The endpoint serves another model than the form's (another dataset's, or restarted with another model): every
    # field was marked "unknown field" and the doctor asked to correct values that no value can fix.
    metadata = json.loads((trained_model_dir / "metadata.json").read_text(encoding="utf-8"))
    for spec in metadata["schema"]["fields"]:
        if spec["name"] == "crp_mg_l":
            spec["name"] = "proteína_c_reactiva"
    (tmp_path / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    at = _app(monkeypatch, endpoint.url, tmp_path)
    at.checkbox(key="policy_accepted").check().run()
    _fill(at, {"age": 67, "temperature_c": 38.9, "proteína_c_reactiva": 180.0}, symptom_query=None)
    at.button(key="submit").click().run()
    assert _errors(at.get_by_key("field-proteína_c_reactiva")) == [] and _errors(at.get_by_key("field-age")) == []
    messages = _errors(at)
    assert any("does not take this form's fields (proteína_c_reactiva)" in e and "another model" in e
               and "Nothing is wrong with the patient's values" in e for e in messages), messages
    assert not any("correct the fields" in e for e in messages)
    assert any(e.startswith("proteína_c_reactiva: unknown field") for e in messages)


def test_the_endpoints_words_are_shown_as_text_not_markdown(monkeypatch, endpoint, trained_model_dir):
    # The endpoint's problem quotes what was typed; st.error renders markdown, so a code typed as a markdown image
    # made the browser fetch it from another host.
    at = _app(monkeypatch, endpoint.url, trained_model_dir)
    at.checkbox(key="policy_accepted").check().run()
    at.text_input(key="in-age").input("67")
    at.multiselect(key="in-prior_diagnoses").set_value(["![x](http://evil.example/t.png)"])
    at.button(key="submit").click().run()
    assert _errors(at.get_by_key("field-prior_diagnoses")) == ["malformed code '![X](HTTP://EVIL.EXAMPLE/T.PNG)'"]
    assert "![" not in outside_code(at.get_by_key("field-prior_diagnoses").error[0].value)  # not an image
