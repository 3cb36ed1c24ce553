"""A value pasted into a measurement field in Chromium is kept and judged, never dropped (headless Debian Chromium
through Playwright; skipped without it, as tests/test_app_e2e.py).

The field had max_chars 24: Streamlit drops a change longer than that whole, so a pasted "15.2 10^9/L (ref
4.0-11.0)" left the field empty, with no message, and the white count was sent as not recorded."""
from __future__ import annotations

import pytest
from test_app_session import answer, endpoint_fixture  # noqa: F401  (the fixture "endpoint")

from app.e2e import click_get_diagnosis

needs_chromium = pytest.mark.needs("chromium")

PASTED = "15.2 10^9/L (ref 4.0-11.0)"  # a line of a lab report, 26 characters


@needs_chromium
def test_a_value_pasted_into_a_measurement_field_is_kept_and_refused_by_name(endpoint, tmp_path):
    from app.config import AppConfig
    from app.e2e import running_app
    from diagnosa.browser import launch

    url, script = endpoint
    script.answers = [(200, {"predictions": [answer()]})]
    sent = script.invocations
    config = AppConfig(endpoint_url=url, timeout=10, attempts=1)
    with running_app(config, log=tmp_path / "streamlit.log") as app_url, launch() as browser:
        context = browser.new_context(viewport={"width": 1400, "height": 1700})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_url)
        page = context.new_page()
        page.goto(app_url, wait_until="load")
        page.get_by_label("I have read the data-use policy and accept it").check(force=True)
        field = page.locator(".st-key-in-wbc_10e9_l input")
        page.evaluate("text => navigator.clipboard.writeText(text)", PASTED)
        field.click()
        page.keyboard.press("Control+V")  # a paste, as a doctor copies a line of the lab report
        field.press("Tab")
        assert field.input_value() == PASTED  # kept in the field, not dropped
        click_get_diagnosis(page)
        page.locator(".st-key-field-wbc_10e9_l").get_by_text(
            "is too long for White blood cells: a measurement takes at most 24 characters (this is 26)").wait_for()
        assert sent == [] and field.input_value() == PASTED  # nothing sent (not "not recorded"), still there
        field.fill("15.2")
        field.press("Tab")
        click_get_diagnosis(page)
        page.locator(".st-key-result").get_by_text("supports and does not replace clinical judgement").wait_for()
        assert [s["instances"] for s in sent] == [[{"wbc_10e9_l": 15.2}]]


def test_parse_number_refuses_a_value_over_the_limit_naming_the_field_and_the_limit():
    from app.form import MAX_NUMBER_CHARS, ValueProblem, load_form_spec, parse_number

    wbc = load_form_spec(None).by_name("wbc_10e9_l")
    at_limit = "15.2".rjust(MAX_NUMBER_CHARS, "0")
    assert len(at_limit) == MAX_NUMBER_CHARS and parse_number(f"  {at_limit}  ", wbc) == 15.2  # spaces around: not counted
    with pytest.raises(ValueProblem) as err:
        parse_number(PASTED, wbc)
    assert str(err.value) == ("'15.2 10^9/L (ref 4.0-11.0)' is too long for White blood cells: a measurement takes at "
                              "most 24 characters (this is 26); write only the number (its unit, 10^9/L, may follow it)")
    with pytest.raises(ValueProblem, match=r"^'1{30}…' is too long for Age: .* \(this is 200\); write only the number "
                                           r"\(its unit, years, may follow it\)$"):
        parse_number("1" * 200, load_form_spec(None).by_name("age"))
