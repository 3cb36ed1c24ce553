"""What the form shows and what the result is of, in a real browser (headless Chromium, `streamlit run`).

AppTest never involves the browser, which keeps each widget's value under its key and sends it back with the next
rerun, and holds an st.form's values until it is submitted: after *New patient* the fields showed the previous
patient's values and *Get diagnosis* sent them again; a value edited after a diagnosis left that diagnosis on the
screen beside it, unmarked, with its confirmed-diagnosis form. One app for the module, on an endpoint that records
what it is sent and answers for each age (its model version names the age) with an event id per request.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

needs_chromium = pytest.mark.needs("chromium")

LABELS = ("NO ENFERMO", "ENFERMEDAD LEVE", "ENFERMEDAD AGUDA", "ENFERMEDAD CRÓNICA", "ENFERMEDAD TERMINAL")
STALE_HEADING = "Diagnosis of the earlier values"
TIMEOUT_MS = 15_000


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict] = []  # each request's patient record
        self.delay = 0.0  # seconds before answering


class _Handler(BaseHTTPRequestHandler):
    server: Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer({"status": "ok", "model_version": "recorder", "endpoint_name": "diagnosa"})

    def do_POST(self) -> None:
        record = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["instances"][0]
        self.server.received.append(record)
        number = len(self.server.received)
        time.sleep(self.server.delay)
        age = int(record.get("age") or 0)
        probabilities = {label: (0.96 if i == age % 5 else 0.01) for i, label in enumerate(LABELS)}
        top = sorted(probabilities, key=lambda c: -probabilities[c])[:3]
        self._answer({"predictions": [{"patient_id": None, "category": LABELS[age % 5],
                                       "probabilities": probabilities, "model_version": f"age{age}",
                                       "top_k": [{"category": c, "probability": probabilities[c]} for c in top]}]},
                     {"X-Diagnosa-Event-Id": f"case-{number}"})


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(the recording endpoint, a Chromium browser, the app's URL): one `streamlit run` for the module."""
    from app.config import AppConfig
    from app.e2e import running_app
    from diagnosa.browser import launch

    recorder = Recorder()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    config = AppConfig(endpoint_url=f"http://127.0.0.1:{recorder.server_port}", timeout=10, attempts=1)
    log = tmp_path_factory.mktemp("app") / "streamlit.log"
    try:
        with running_app(config, log=log) as url, launch(timeout_ms=TIMEOUT_MS) as browser:
            yield recorder, browser, url
    finally:
        recorder.shutdown()
        recorder.server_close()


@pytest.fixture()
def page(app):
    """A new session of the app (a page of its own), the data-use policy accepted."""
    from playwright.sync_api import expect

    recorder, browser, url = app
    recorder.delay = 0.0
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url, wait_until="load")
    page.get_by_label("I have read the data-use policy and accept it").check(force=True)
    # Wait for the end state, not a time: on a loaded machine the run the acceptance starts may begin after _idle's
    # pause, and while it runs the disabled button and its enabled redraw are both there (CI saw two).
    expect(page.locator(".st-key-submit button:enabled")).to_have_count(1)
    _idle(page)
    expect(page.locator(".st-key-submit button")).to_have_count(1)
    yield page
    page.close()


def _idle(page) -> None:
    """Wait until the page's run is over (while it runs, an element redrawn is there twice for a moment)."""
    from playwright.sync_api import expect

    page.wait_for_timeout(300)
    expect(page.locator("[data-testid=stApp][data-test-script-state=notRunning]")).to_have_count(1)


def _type(page, field: str, text: str, *, wait: bool = True) -> None:
    """Type a value as a doctor does, and leave the field."""
    box = page.locator(f".st-key-in-{field} input")
    box.fill(text)
    box.press("Tab")
    if wait:
        _idle(page)


def _ask(page) -> None:
    from app.e2e import click_get_diagnosis

    click_get_diagnosis(page)


def _diagnosis(page, age: int) -> None:
    """Wait until the result shown is the one of a patient of ``age``."""
    from playwright.sync_api import expect

    expect(page.locator(".st-key-result")).to_contain_text(f"Model version age{age}")
    _idle(page)


@needs_chromium
def test_new_patient_then_get_diagnosis_sends_nothing_of_the_previous_patient(app, page):
    from playwright.sync_api import expect

    recorder = app[0]
    _type(page, "age", "11")
    _type(page, "temperature_c", "39.9")
    page.locator(".st-key-in-sex").click()
    page.get_by_role("option", name="Male", exact=True).click()
    _idle(page)
    _ask(page)
    _diagnosis(page, 11)
    assert recorder.received[-1] == {"age": 11, "sex": "M", "temperature_c": 39.9}

    page.get_by_role("button", name="New patient").click()
    _idle(page)
    expect(page.locator(".st-key-result")).to_have_count(0)
    # The fields are empty on the screen, not only on the server (the browser kept and showed 11, 39.9 and Male).
    expect(page.locator(".st-key-in-age input")).to_have_value("")
    expect(page.locator(".st-key-in-temperature_c input")).to_have_value("")
    expect(page.get_by_role("combobox", name="Sex")).to_have_value("")
    _type(page, "age", "50")
    _ask(page)
    _diagnosis(page, 50)
    assert recorder.received[-1] == {"age": 50}  # nothing of the previous patient (it sent sex M, 39.9 °C again)


@needs_chromium
def test_an_edit_after_a_diagnosis_marks_it_and_withholds_its_confirmed_diagnosis_form(page):
    from playwright.sync_api import expect

    _type(page, "age", "40")
    _ask(page)
    _diagnosis(page, 40)
    result, record = page.locator(".st-key-result"), page.locator(".st-key-fb-submit button")
    expect(result.locator("h3").first).to_have_text("Diagnosis")
    expect(record).to_be_enabled()

    _type(page, "temperature_c", "39.5")  # edited, not asked again
    expect(result.locator("h3").first).to_have_text(STALE_HEADING)
    expect(result).to_contain_text("The values have changed since this diagnosis")
    expect(result).to_contain_text("Changed: Temperature.")
    expect(record).to_be_disabled()  # its case is no longer the values on the screen
    expect(page.get_by_text("Not for these values")).to_be_visible()

    _type(page, "temperature_c", "")  # the change undone: the diagnosis is of these values again
    expect(result.locator("h3").first).to_have_text("Diagnosis")
    expect(record).to_be_enabled()


@needs_chromium
def test_a_value_edited_while_the_diagnosis_is_asked_for_marks_the_result(app, page):
    from playwright.sync_api import expect

    recorder = app[0]
    recorder.delay = 3.0
    _type(page, "age", "77")
    _ask(page)
    expect(page.locator(".stApp[data-test-script-state=running]")).to_have_count(1)
    page.wait_for_timeout(300)
    _type(page, "age", "88", wait=False)  # while the request is out: the page runs again, and says a diagnosis is coming
    expect(page.get_by_text("A diagnosis is being asked for")).to_be_visible()
    _diagnosis(page, 77)  # the answer to what was sent is shown when it comes (it was lost)
    assert recorder.received[-1] == {"age": 77}
    expect(page.locator(".st-key-result h3").first).to_have_text(STALE_HEADING)  # and is not taken for 88's
    expect(page.locator(".st-key-in-age input")).to_have_value("88")
    expect(page.get_by_text("A diagnosis is being asked for")).to_have_count(0)  # the request is over


@needs_chromium
def test_a_new_diagnosis_starts_its_confirmed_diagnosis_form_empty_on_the_screen(page):
    # The answers were deleted on the server only: the browser kept the note typed for the case before, and
    # "Record confirmed diagnosis" would have filed it under the new case.
    from playwright.sync_api import expect

    _type(page, "age", "40")
    _ask(page)
    _diagnosis(page, 40)
    note = page.locator(".st-key-fb-note textarea")
    note.fill("the first patient's note")
    note.press("Tab")
    _type(page, "age", "41")
    _ask(page)
    _diagnosis(page, 41)
    expect(note).to_have_value("")
    reference = page.locator(".st-key-fb-event input").input_value()
    assert reference.startswith("case-") and reference in page.locator(".st-key-result").inner_text()
