"""End-to-end check of the doctors' app in a real browser, and the screenshot in the docs.

Starts the local endpoint (in this process) and ``streamlit run`` of the app (a subprocess, the
same command ``diagnosa app`` runs) on free loopback ports, opens the app in headless Debian
Chromium through Playwright (:mod:`diagnosa.browser`), accepts the policy, searches and adds a
symptom, fills the form, asks for the diagnosis, waits for it, checks that no patient value
reached the browser's storage, and saves a screenshot::

    python -m app.e2e --model path/to/model.tar.gz --out docs/app-diagnosis.png

``tests/test_app_e2e.py`` runs the same function with the test model.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from app.config import AppConfig
from diagnosa.net import free_port, wait_until_ok

if TYPE_CHECKING:  # Playwright is imported where a browser runs
    from playwright.sync_api import Page

# A febrile, tachycardic, hypoxic patient with a high CRP (the docs' example patient).
PATIENT = {"age": "67", "temperature_c": "38.9", "heart_rate_bpm": "112", "respiratory_rate_bpm": "26",
           "spo2_pct": "90", "crp_mg_l": "180", "wbc_10e9_l": "15.2"}
SEX = "Male"
SYMPTOM_QUERY, SYMPTOM = "short breath", "Dyspnea"
STARTUP_TIMEOUT = 60.0


@dataclass
class E2EResult:
    headline: str  # the diagnosis as the page shows it
    screenshot: Path
    seconds: float
    storage: str  # what the page keeps in localStorage and sessionStorage (JSON)


@contextmanager
def running_app(config: AppConfig, *, log: Path | None = None, path: str = "") -> Iterator[str]:
    """``streamlit run`` of the app, exactly as ``diagnosa app`` starts it, under ``path`` (the root when empty);
    yields its URL (without the final ``/``)."""
    from app.launch import app_url, streamlit_command

    port = free_port()
    argv, env = streamlit_command(config.to_env(), host="127.0.0.1", port=port, path=path)
    sink = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    url = app_url("127.0.0.1", port, path).rstrip("/")
    try:
        wait_until_ok(f"{url}/_stcore/health", timeout=STARTUP_TIMEOUT, process=process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not isinstance(sink, int):  # the log file (subprocess.DEVNULL is an int)
            sink.close()


def click_get_diagnosis(page: "Page") -> None:
    """Click "Get diagnosis" once the page shows it once, enabled. While a run redraws the form (the acceptance of
    the policy, a field left) the old button and its redraw are both there for a moment, and a click then is a
    strict-mode error at once; on a loaded machine that run may start well after the event that caused it."""
    from playwright.sync_api import expect

    button = page.locator(".st-key-submit button")
    expect(page.locator(".st-key-submit button:enabled")).to_have_count(1)
    expect(button).to_have_count(1)
    button.click()


def fill_field(page: "Page", name: str, value: str) -> None:
    """Type ``value`` into the form's field ``name`` once the page shows it once: while a run redraws the form (the
    acceptance of the policy) the old field and its redraw are both there for a moment, and a fill then is a
    strict-mode error at once (CI's loaded machine, as for the button: :func:`click_get_diagnosis`)."""
    from playwright.sync_api import expect

    field = page.locator(f".st-key-in-{name} input")
    expect(field).to_have_count(1)
    field.fill(value)


def ask_for_diagnosis(page: "Page") -> str:
    """Fill PATIENT's values in the form on ``page``, ask for the diagnosis and wait for it and its chart: the
    headline the page shows. The form is filled once the run the policy's acceptance started has drawn it (its
    button enabled, once): a value typed into the field that run replaces would be lost."""
    from playwright.sync_api import expect

    expect(page.locator(".st-key-submit button:enabled")).to_have_count(1)
    expect(page.locator(".st-key-submit button")).to_have_count(1)
    for name, value in PATIENT.items():
        fill_field(page, name, value)
    page.locator(".st-key-in-sex").click()
    page.get_by_role("option", name=SEX, exact=True).click()
    click_get_diagnosis(page)
    result = page.locator(".st-key-result")
    result.get_by_text("supports and does not replace clinical judgement").wait_for()
    page.locator(".st-key-result .vega-embed").first.wait_for()  # the chart drew
    return result.locator("h3").nth(1).inner_text()


def drive(url: str, out: Path, *, timeout_ms: int = 30_000) -> tuple[str, str]:
    """Fill the form in headless Chromium, ask for the diagnosis, save a screenshot: (headline, storage)."""
    from diagnosa.browser import launch

    out.parent.mkdir(parents=True, exist_ok=True)
    with launch(timeout_ms=timeout_ms) as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        page.set_default_timeout(timeout_ms)
        page.goto(url, wait_until="load")
        page.get_by_label("I have read the data-use policy and accept it").check(force=True)
        search = page.locator(".st-key-symptom_query input")
        search.fill(SYMPTOM_QUERY)
        search.press("Enter")
        page.locator(".st-key-field-symptoms").get_by_role("button", name=SYMPTOM).first.click()
        page.locator(".st-key-remove-HP_0002094").wait_for()
        search.fill("fever")
        search.press("Enter")
        page.locator(".st-key-add-HP_0001945 button").click()
        page.locator(".st-key-remove-HP_0001945").wait_for()
        search.fill("")
        search.press("Enter")
        headline = ask_for_diagnosis(page)
        page.wait_for_timeout(600)  # let the chart finish its first paint
        storage = page.evaluate("JSON.stringify({local: {...localStorage}, session: {...sessionStorage}})")
        page.screenshot(path=str(out), full_page=False)
    return headline, storage


def run(model_dir: str | Path, out: Path, *, log: Path | None = None) -> E2EResult:
    """Local endpoint + app + browser, end to end; the screenshot goes to ``out``."""
    from inference.server import EndpointServer

    started = time.perf_counter()
    with EndpointServer(str(model_dir)) as endpoint:
        endpoint.wait_until_ready()
        config = AppConfig(endpoint_url=endpoint.url, model=str(model_dir), timeout=10, attempts=1)
        with running_app(config, log=log) as url:
            headline, storage = drive(url, out)
    return E2EResult(headline, out, time.perf_counter() - started, storage)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 with the diagnosis shown; 2 with one line saying why not (no chromium, no model...)."""
    import tempfile

    from diagnosa.browser import MISSING_REASON, BrowserError, chromium_path
    from diagnosa.model import ModelLoadError, unpack_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model folder or a SageMaker model.tar.gz")
    parser.add_argument("--out", default="docs/app-diagnosis.png", help="where to save the screenshot")
    args = parser.parse_args(argv)

    def fail(reason: str) -> int:
        print(f"app.e2e: error: {reason}", file=sys.stderr)
        return 2

    model = Path(args.model)
    if not model.exists():
        return fail(f"model not found: {model} (a model folder or a model.tar.gz)")
    with tempfile.TemporaryDirectory(prefix="diagnosa-e2e-") as unpacked:
        try:
            folder = model if model.is_dir() else unpack_model(model, unpacked)
            if chromium_path() is None:
                return fail(f"{MISSING_REASON}; `make browser` installs it as root")
            result = run(folder, Path(args.out))
        except (ModelLoadError, BrowserError, RuntimeError, TimeoutError) as err:  # a model that does not load too
            return fail(str(err))
    print(f"diagnosis shown: {result.headline}; screenshot {result.screenshot} ({result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
